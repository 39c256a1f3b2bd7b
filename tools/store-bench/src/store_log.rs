//! Adapter 3: minimal hand-written append-only log.
//! File = sequence of groups: [u32 len BE][u32 crc32 BE][payload];
//! payload = records: [u64 id BE][u32 value_len BE][value bytes].
//! One group per batch: write_all + File::sync_data().
//! Recovery: read the file, verify each group's crc, replay records into a HashMap
//! (later records win). Stops at the first short or bad group (treated as a torn tail).
use crate::{Batch, Result, Store};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

pub struct LogStore {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
}

impl Store for LogStore {
    const NAME: &'static str = "append-log";

    fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("objects.log");
        let existed = path.exists();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if !existed {
            File::open(dir)?.sync_all()?; // make the new directory entry durable
        }
        Ok(Self { path, file, buf: Vec::new() })
    }

    fn commit(&mut self, batch: &Batch) -> Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; 8]);
        for (id, value) in batch {
            self.buf.extend_from_slice(&id.to_be_bytes());
            self.buf.extend_from_slice(&(value.len() as u32).to_be_bytes());
            self.buf.extend_from_slice(value);
        }
        let len = (self.buf.len() - 8) as u32;
        let crc = crc32(&self.buf[8..]);
        self.buf[0..4].copy_from_slice(&len.to_be_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_be_bytes());
        self.file.write_all(&self.buf)?;
        self.file.sync_data()?;
        Ok(())
    }

    fn load_all(&mut self) -> Result<HashMap<u64, Vec<u8>>> {
        let data = std::fs::read(&self.path)?;
        let be32 = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().unwrap());
        let mut out = HashMap::new();
        let mut pos = 0;
        while pos + 8 <= data.len() {
            let len = be32(&data[pos..]) as usize;
            let crc = be32(&data[pos + 4..]);
            let Some(payload) = data.get(pos + 8..pos + 8 + len) else { break };
            if crc32(payload) != crc {
                break;
            }
            let mut p = 0;
            while p + 12 <= payload.len() {
                let id = u64::from_be_bytes(payload[p..p + 8].try_into()?);
                let vlen = be32(&payload[p + 8..]) as usize;
                let value = payload.get(p + 12..p + 12 + vlen).ok_or("bad record")?;
                out.insert(id, value.to_vec());
                p += 12 + vlen;
            }
            pos += 8 + len;
        }
        Ok(out)
    }
}
