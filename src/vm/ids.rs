//! Identifiers. Each is its own type so an `ObjectId` can never be passed
//! where a `TxId` is meant.
//!
//! Invariant: an `ObjectId` minted by a node carries that node's prefix in
//! bits 63..48 and a per-node counter in bits 47..0, so ids are unique
//! across the cluster without coordination. The counter never wraps: when
//! it would pass 2^48 - 1, `FreshIdGen::next` fails instead of minting an id
//! in another node's range.

use std::fmt;
use std::hash::Hasher;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Bits of an id below the node prefix.
pub const COUNTER_BITS: u32 = 48;
/// Largest counter value a node may mint.
pub const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;

/// An object, cluster-wide. On the wire: a JSON unsigned integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectId(pub u64);

impl ObjectId {
    /// The prefix of the node that minted this id.
    pub fn node_prefix(self) -> u16 {
        (self.0 >> COUNTER_BITS) as u16
    }

    /// The counter part (bits 47..0).
    pub fn counter(self) -> u64 {
        self.0 & COUNTER_MAX
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A transaction, local to the vm that began it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TxId(pub u64);

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx {}", self.0)
    }
}

/// Who controls an object or a transaction (an owner tag; opaque to the vm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ControllerId(pub u64);

/// A call chain, cluster-wide: minted where the chain began as
/// `node_prefix << 48 | counter` and carried unchanged into nested calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChainId(pub u64);

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chain {:#x}", self.0)
    }
}

/// Names one suspended remote call; the driver hands it back to
/// [`Vm::resume`](super::Vm::resume) with the answer.
///
/// Minted by the vm alone: the low 32 bits are the suspended chain's slot,
/// the high 32 a generation that changes with every suspension, so a stale
/// token never matches a later suspension that reuses the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SuspendToken(pub u64);

impl SuspendToken {
    pub(crate) fn new(generation: u32, slot: usize) -> SuspendToken {
        SuspendToken((u64::from(generation) << 32) | slot as u64)
    }

    /// The chain slot it was minted for.
    pub(crate) fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
}

/// A machine (a node), named by its `machine_id` string.
///
/// Backed by `Arc<str>`: cloning it for every remote call costs a reference
/// count, not an allocation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MachineId(Arc<str>);

/// Why a name cannot be a `machine_id` (see [`MachineId::fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameFault {
    Empty,
    /// It would forge lines in the logs that quote it.
    ControlCharacters,
    /// Over [`MachineId::MAX_LEN`] bytes: compact frames and stored
    /// records name a machine in at most that many.
    TooLong,
}

impl MachineId {
    pub fn new(name: &str) -> MachineId {
        MachineId(Arc::from(name))
    }

    /// The longest `machine_id`, in bytes.
    pub const MAX_LEN: usize = 255;

    /// What makes `name` unfit to be a `machine_id`, which every node
    /// refuses in a `hello` and so in its own configuration.
    pub fn fault(name: &str) -> Option<NameFault> {
        if name.is_empty() {
            Some(NameFault::Empty)
        } else if name.len() > MachineId::MAX_LEN {
            Some(NameFault::TooLong)
        } else if name.chars().any(char::is_control) {
            Some(NameFault::ControlCharacters)
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when both are clones of one `MachineId`: then they are equal,
    /// known without comparing the names (false says nothing).
    pub(crate) fn same_name_as(&self, other: &MachineId) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for MachineId {
    fn from(s: &str) -> MachineId {
        MachineId::new(s)
    }
}

impl Serialize for MachineId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MachineId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(MachineId::new(&s))
    }
}

/// The node-prefixed counter ran out: minting more would collide with
/// another node's range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterExhausted {
    pub prefix: u16,
}

impl fmt::Display for CounterExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "id counter exhausted for node prefix {} (2^48 ids minted)",
            self.prefix
        )
    }
}

impl std::error::Error for CounterExhausted {}

/// Mints `prefix << 48 | counter` ids; the counter starts at 1 (0 is never
/// minted, so `ObjectId(0)` can mean "no object").
#[derive(Clone, Debug)]
pub struct FreshIdGen {
    prefix: u16,
    /// The first counter of this generator's life; `first..next` were minted.
    first: u64,
    next: u64,
}

impl FreshIdGen {
    pub fn with_prefix(prefix: u16) -> FreshIdGen {
        FreshIdGen::with_prefix_from(prefix, 1)
    }

    /// Starts the counter at `first` (a restarted node skips the range its
    /// previous life used). `first` is clamped to at least 1.
    pub fn with_prefix_from(prefix: u16, first: u64) -> FreshIdGen {
        let first = first.max(1);
        FreshIdGen {
            prefix,
            first,
            next: first,
        }
    }

    /// Whether this generator handed out `raw` (in this life: a restarted
    /// node's generator starts past its previous life's ids).
    pub fn minted(&self, raw: u64) -> bool {
        raw >> COUNTER_BITS == u64::from(self.prefix)
            && (self.first..self.next).contains(&(raw & COUNTER_MAX))
    }

    pub fn prefix(&self) -> u16 {
        self.prefix
    }

    /// The counter the next id will carry: a restarted node starts at or
    /// past the last value its previous life stored.
    pub fn next_counter(&self) -> u64 {
        self.next
    }

    /// The next raw id.
    pub fn next_raw(&mut self) -> Result<u64, CounterExhausted> {
        if self.next > COUNTER_MAX {
            return Err(CounterExhausted {
                prefix: self.prefix,
            });
        }
        let id = (u64::from(self.prefix) << COUNTER_BITS) | self.next;
        self.next += 1;
        Ok(id)
    }

    pub fn next_object(&mut self) -> Result<ObjectId, CounterExhausted> {
        self.next_raw().map(ObjectId)
    }

    pub fn next_chain(&mut self) -> Result<ChainId, CounterExhausted> {
        self.next_raw().map(ChainId)
    }
}

/// A hasher for our own keys: ids, which are already unique integers, and
/// short names (machines, behaviors, pure functions) chosen by us or by a
/// peer that passed the handshake. Nobody can flood a map with colliding
/// keys, so SipHash's resistance buys nothing, and it was a measurable
/// part of every remote call (the machine's connection, looked up per call).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    /// Eight bytes per multiply (a name is hashed on every call that
    /// looks up a pure function or a peer's connection).
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.mix(u64::from_le_bytes(word.try_into().expect("eight bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let tail = rest
                .iter()
                .enumerate()
                .fold(0, |t, (i, &b)| t | u64::from(b) << (8 * i));
            // The length in the top byte, which a tail of at most seven
            // bytes leaves free: "ab" and "ab\0" differ.
            self.mix(tail | (rest.len() as u64) << 56);
        }
        // A multiply carries bits only upward, and names that differ in
        // their last bytes differ in the high bytes of the last word: fold
        // the high half down to the low bits, which pick the bucket.
        self.0 ^= self.0 >> 32;
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (x ^ (x >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl IdHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Gives a map's memory back after mass removal: once it is under a
/// quarter full (and past a small size), it shrinks to twice its length.
/// The factor keeps a steady create/destroy rhythm from rehashing.
pub(crate) fn shrink_if_sparse<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) {
    if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hash_apart() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = |s: &str| BuildHasherDefault::<IdHasher>::default().hash_one(s);
        let mut names: Vec<String> = ["", "a", "ab", "ab\0", "ba", "count", "counu"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // Every length around a word, and node names as users pick them.
        names.extend((0..20).map(|n| "x".repeat(n)));
        names.extend((0..1000).map(|i| format!("node-{i}")));
        names.extend((0..1000).map(|i| format!("12345678{i}")));
        let mut hashes: Vec<u64> = names.iter().map(|n| hash(n)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(
            hashes.len(),
            names.len() - 1,
            "only \"\" repeats (in the x run)"
        );
        // A table picks the bucket from the low bits: 900 similar names in
        // 2^11 buckets should land in about as many as random would (728).
        let buckets: std::collections::HashSet<u64> = (100..1000)
            .map(|i| hash(&format!("node-{i}")) & 0x7FF)
            .collect();
        assert!(buckets.len() > 650, "{} buckets", buckets.len());
    }

    #[test]
    fn prefix_lands_in_top_bits() {
        let mut g = FreshIdGen::with_prefix(9002);
        let id = g.next_object().unwrap();
        assert_eq!(id.node_prefix(), 9002);
        assert_eq!(id.counter(), 1);
        assert_eq!(id.0, (9002u64 << 48) | 1);
    }

    #[test]
    fn counter_exhaustion_is_an_error_not_a_wrap() {
        let mut g = FreshIdGen::with_prefix_from(7, COUNTER_MAX);
        let last = g.next_object().unwrap();
        assert_eq!(last.node_prefix(), 7);
        assert_eq!(last.counter(), COUNTER_MAX);
        assert_eq!(g.next_object(), Err(CounterExhausted { prefix: 7 }));
        assert_eq!(g.next_object(), Err(CounterExhausted { prefix: 7 }));
    }

    #[test]
    fn machine_id_serializes_as_string() {
        let m = MachineId::new("alpha");
        assert_eq!(serde_json::to_string(&m).unwrap(), r#""alpha""#);
        let back: MachineId = serde_json::from_str(r#""al\"pha""#).unwrap();
        assert_eq!(back.as_str(), "al\"pha");
    }
}
