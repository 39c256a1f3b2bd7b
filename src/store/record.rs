//! One stored object, as bytes: the value of the `objects` table.
//!
//! ```text
//!   0      1             5      6              14      16     18         18+n
//!   ┌──────┬─────────────┬──────┬──────────────┬───────┬──────┬──────────┬──────────────┐
//!   │ fmt  │ version u32 │ ctl? │ controller   │ epoch │ n    │ behavior │ state: JSON  │
//!   │ = 2  │ big-endian  │ 0/1  │ u64 BE (or 0)│ u16   │ u16  │ n bytes  │ array of Val │
//!   └──────┴─────────────┴──────┴──────────────┴───────┴──────┴──────────┴──────────────┘
//! ```
//!
//! Format 3 is format 2 with, between the behavior and the state, the
//! machine the object is on its way to (`move_object`: its `adopt` has
//! left, or is about to, and its answer is not yet known here): a length
//! byte `m` (1 to 255) and `m` bytes of its name. Only such a record is
//! written in format 3, so a store no object of which is on its way is
//! still read by builds that know only format 2.
//!
//! Format 1 (written before objects could move) has no epoch: `n` is at
//! 14 and the behavior at 16. It is still read, as epoch 0.
//!
//! The state is the wire's Val JSON (`[{"Nat":5}]`), so a stored record
//! can be read by eye and by any JSON library. Decoding never panics: a
//! record that is short, from a newer format, or not valid JSON is an
//! error naming what is wrong.

use serde::Deserialize;

use crate::vm::{ControllerId, ObjectRecord, Val};

/// The newest record layout this build writes and reads.
pub const RECORD_FORMAT: u8 = 3;

/// The layout of a record not on its way anywhere.
const FORMAT_AT_HOME: u8 = 2;

/// Bytes before the behavior name (format 2; format 1 has no epoch).
const FIXED: usize = 18;
const FIXED_V1: usize = 16;

/// A decoded record: owned, since it outlives the read transaction only
/// as long as the vm takes to copy it in.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub behavior: String,
    pub controller: Option<ControllerId>,
    pub version: u32,
    pub state: Vec<Val>,
    pub epoch: u16,
    pub leaving: Option<String>,
}

impl Decoded {
    pub fn as_record(&self) -> ObjectRecord<'_> {
        ObjectRecord {
            behavior: &self.behavior,
            controller: self.controller,
            version: self.version,
            state: &self.state,
            epoch: self.epoch,
            leaving: self.leaving.as_deref(),
        }
    }
}

/// Appends `record`'s bytes to `out`. Fails only when the behavior name
/// is longer than 65,535 bytes (registries never hold one), or the machine
/// it is leaving for is empty or longer than 255 (nodes refuse such names).
pub fn encode(record: &ObjectRecord<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    let name = record.behavior.as_bytes();
    let name_len =
        u16::try_from(name.len()).map_err(|_| format!("behavior name of {} bytes", name.len()))?;
    let leaving = match record.leaving {
        None => None,
        Some(machine) => match u8::try_from(machine.len()) {
            Ok(len) if len > 0 => Some((len, machine.as_bytes())),
            _ => return Err(format!("machine name of {} bytes", machine.len())),
        },
    };
    out.push(if leaving.is_some() {
        RECORD_FORMAT
    } else {
        FORMAT_AT_HOME
    });
    out.extend_from_slice(&record.version.to_be_bytes());
    let controller = record.controller.map_or(0, |c| c.0);
    out.push(u8::from(record.controller.is_some()));
    out.extend_from_slice(&controller.to_be_bytes());
    out.extend_from_slice(&record.epoch.to_be_bytes());
    out.extend_from_slice(&name_len.to_be_bytes());
    out.extend_from_slice(name);
    if let Some((len, machine)) = leaving {
        out.push(len);
        out.extend_from_slice(machine);
    }
    serde_json::to_writer(&mut *out, record.state).map_err(|e| e.to_string())
}

/// Reads a record written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let Some((&format, _)) = bytes.split_first() else {
        return Err("empty record".into());
    };
    let fixed = match format {
        1 => FIXED_V1,
        FORMAT_AT_HOME | RECORD_FORMAT => FIXED,
        _ => {
            return Err(format!(
                "record format {format}; this build reads 1 to {RECORD_FORMAT}"
            ))
        }
    };
    if bytes.len() < fixed {
        return Err(format!("record of {} bytes is truncated", bytes.len()));
    }
    let version = u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes"));
    let controller = match bytes[5] {
        0 => None,
        1 => Some(ControllerId(u64::from_be_bytes(
            bytes[6..14].try_into().expect("8 bytes"),
        ))),
        flag => return Err(format!("controller flag {flag}")),
    };
    let epoch = match format {
        1 => 0,
        _ => u16::from_be_bytes([bytes[14], bytes[15]]),
    };
    let name_len = usize::from(u16::from_be_bytes([bytes[fixed - 2], bytes[fixed - 1]]));
    let Some(name) = bytes.get(fixed..fixed + name_len) else {
        return Err("behavior name runs past the record".into());
    };
    let behavior = std::str::from_utf8(name)
        .map_err(|_| "behavior name is not UTF-8".to_string())?
        .to_string();
    let mut rest = &bytes[fixed + name_len..];
    let leaving = if format == RECORD_FORMAT {
        let Some((&len, after)) = rest.split_first().filter(|(&len, _)| len > 0) else {
            return Err("no machine it is leaving for".into());
        };
        let Some(machine) = after.get(..usize::from(len)) else {
            return Err("machine it is leaving for runs past the record".into());
        };
        rest = &after[usize::from(len)..];
        let machine = std::str::from_utf8(machine)
            .map_err(|_| "machine it is leaving for is not UTF-8".to_string())?;
        Some(machine.to_string())
    } else {
        None
    };
    let mut json = serde_json::Deserializer::from_slice(rest);
    // A state is as deep as the behaviors made it; the loader runs on a
    // node-sized stack (`node::THREAD_STACK`), as the vm that built it did.
    json.disable_recursion_limit();
    let state = Vec::<Val>::deserialize(&mut json)
        .and_then(|state| json.end().map(|()| state))
        .map_err(|e| format!("state: {e}"))?;
    Ok(Decoded {
        behavior,
        controller,
        version,
        state,
        epoch,
        leaving,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Decoded {
        Decoded {
            behavior: "account".into(),
            controller: Some(ControllerId(7)),
            version: 42,
            state: vec![Val::Nat(100), Val::str("x"), Val::just(Val::Bool(true))],
            epoch: 3,
            leaving: None,
        }
    }

    fn on_its_way() -> Decoded {
        Decoded {
            leaving: Some("gamma".into()),
            ..sample()
        }
    }

    #[test]
    fn a_record_on_its_way_names_the_machine_and_only_it_is_format_3() {
        let at_home = bytes_of(&sample());
        assert_eq!(at_home[0], 2, "readable by builds that know format 2");
        let leaving = bytes_of(&on_its_way());
        assert_eq!(leaving[0], 3);
        assert_eq!(decode(&leaving).unwrap(), on_its_way());
        let too_long = "m".repeat(256);
        let sample = sample();
        let record = ObjectRecord {
            leaving: Some(&too_long),
            ..sample.as_record()
        };
        assert!(encode(&record, &mut Vec::new()).is_err());
    }

    #[test]
    fn a_format_1_record_reads_as_epoch_0() {
        let d = sample();
        let v2 = bytes_of(&d);
        // Format 1: no epoch field, the rest the same.
        let mut v1 = vec![1];
        v1.extend_from_slice(&v2[1..14]);
        v1.extend_from_slice(&v2[16..]);
        assert_eq!(decode(&v1).unwrap(), Decoded { epoch: 0, ..d });
    }

    fn bytes_of(d: &Decoded) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&d.as_record(), &mut out).unwrap();
        out
    }

    #[test]
    fn a_record_round_trips_with_and_without_a_controller() {
        let with = sample();
        assert_eq!(decode(&bytes_of(&with)).unwrap(), with);
        let without = Decoded {
            controller: None,
            state: vec![],
            ..sample()
        };
        assert_eq!(decode(&bytes_of(&without)).unwrap(), without);
    }

    #[test]
    fn every_truncation_and_a_newer_format_are_errors_not_panics() {
        let bytes = bytes_of(&sample());
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated at {len}");
        }
        let leaving = bytes_of(&on_its_way());
        for len in 0..leaving.len() {
            assert!(decode(&leaving[..len]).is_err(), "truncated at {len}");
        }
        let mut newer = bytes.clone();
        newer[0] = RECORD_FORMAT + 1;
        assert!(decode(&newer).unwrap_err().contains("this build reads 1"));
        let mut trailing = bytes;
        trailing.extend_from_slice(b" junk");
        assert!(decode(&trailing).is_err(), "bytes after the state");
    }

    #[test]
    fn a_flipped_bit_is_an_error_or_another_record_never_a_panic() {
        for original in [sample(), on_its_way()] {
            flipped_bits_of(original);
        }
    }

    fn flipped_bits_of(original: Decoded) {
        let bytes = bytes_of(&original);
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert_ne!(
                    decode(&b).ok(),
                    Some(original.clone()),
                    "byte {i} bit {bit}"
                );
            }
        }
    }
}
