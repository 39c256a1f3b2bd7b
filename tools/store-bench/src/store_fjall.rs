//! Adapter 2: fjall 3.x — one keyspace, one WriteBatch per batch, made durable on
//! return by PersistMode::SyncData (fdatasync of the journal inside commit()).
use crate::{Batch, Result, Store};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::collections::HashMap;
use std::path::Path;

pub const PERSIST_MODE: PersistMode = PersistMode::SyncData;

pub struct FjallStore {
    db: Database,
    objects: Keyspace,
}

impl Store for FjallStore {
    const NAME: &'static str = "fjall";

    fn open(dir: &Path) -> Result<Self> {
        let db = Database::builder(dir.join("fjall")).open()?;
        let objects = db.keyspace("objects", KeyspaceCreateOptions::default)?;
        Ok(Self { db, objects })
    }

    fn commit(&mut self, batch: &Batch) -> Result<()> {
        let mut wb = self.db.batch().durability(Some(PERSIST_MODE));
        for (id, value) in batch {
            // Big-endian keys so the LSM's lexicographic order == numeric order.
            wb.insert(&self.objects, id.to_be_bytes(), value.as_slice());
        }
        wb.commit()?;
        Ok(())
    }

    fn load_all(&mut self) -> Result<HashMap<u64, Vec<u8>>> {
        let mut out = HashMap::new();
        for guard in self.objects.iter() {
            let (key, value) = guard.into_inner()?;
            let id = u64::from_be_bytes(key.as_ref().try_into()?);
            out.insert(id, value.to_vec());
        }
        Ok(out)
    }
}
