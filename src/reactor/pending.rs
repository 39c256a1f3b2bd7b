//! `IdTable`: a bounded slab whose keys carry a generation.
//!
//! The reactor keeps two: requests it sent and awaits a `call_response`
//! for (the id is the wire `request_id`), and inbound calls the interpreter
//! has yet to answer (the id is an [`InboundId`](super::handoff::InboundId)).
//!
//! An id is `generation << 32 | slab key`. Slab keys are reused as soon as
//! an entry leaves, so a late answer to a freed slot would otherwise reach
//! whoever holds that key now; the generation (a counter bumped on every
//! insert, 31 bits, never 0) makes such an id miss instead. A stale id
//! collides only after 2^31 inserts land on the same key.
//!
//! Invariant: `len() <= capacity`; at capacity `insert` refuses rather than
//! grow without bound, and the caller fails the request.

use slab::Slab;

const GEN_MASK: u32 = (1 << 31) - 1;

#[derive(Debug)]
pub struct IdTable<T> {
    slab: Slab<(u32, T)>,
    generation: u32,
    capacity: usize,
}

impl<T> IdTable<T> {
    /// Preallocates `min(capacity, 1024)` slots; grows up to `capacity`.
    pub fn new(capacity: usize) -> IdTable<T> {
        IdTable {
            slab: Slab::with_capacity(capacity.min(1024)),
            generation: 0,
            capacity,
        }
    }

    /// Stores `value`; `None` when the table is full.
    pub fn insert(&mut self, value: T) -> Option<u64> {
        if self.slab.len() >= self.capacity {
            return None;
        }
        self.generation = (self.generation % GEN_MASK) + 1;
        let key = self.slab.insert((self.generation, value));
        Some(u64::from(self.generation) << 32 | key as u64)
    }

    /// Takes the entry out if `id` still names it.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let (gen, key) = split(id)?;
        match self.slab.get(key) {
            Some((g, _)) if *g == gen => self.slab.try_remove(key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get(&self, id: u64) -> Option<&T> {
        let (gen, key) = split(id)?;
        match self.slab.get(key) {
            Some((g, v)) if *g == gen => Some(v),
            _ => None,
        }
    }

    /// Removes every entry for which `pred` holds, handing each to `f`.
    pub fn drain_where(&mut self, mut pred: impl FnMut(&T) -> bool, mut f: impl FnMut(T)) {
        let keys: Vec<usize> = self
            .slab
            .iter()
            .filter(|(_, (_, v))| pred(v))
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            f(self.slab.remove(key).1);
        }
    }

    /// Whether `id` could have been handed out by this table (so an
    /// answer to it that finds no entry is late, not made up).
    pub fn was_issued(&self, id: u64) -> bool {
        split(id).is_some_and(|(gen, _)| gen <= self.generation)
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }
}

fn split(id: u64) -> Option<(u32, usize)> {
    let gen = (id >> 32) as u32;
    let key = (id & u64::from(u32::MAX)) as usize;
    (gen != 0 && gen <= GEN_MASK).then_some((gen, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_answer_to_a_reused_slot_misses() {
        let mut t = IdTable::new(4);
        let first = t.insert("first").unwrap();
        assert_eq!(t.remove(first), Some("first"));
        let second = t.insert("second").unwrap();
        // Same slab key, new generation.
        assert_eq!(first & 0xffff_ffff, second & 0xffff_ffff);
        assert_eq!(t.remove(first), None);
        assert_eq!(t.get(second), Some(&"second"));
    }

    #[test]
    fn issued_ids_are_told_from_made_up_ones() {
        let mut t = IdTable::new(4);
        let id = t.insert(()).unwrap();
        t.remove(id);
        assert!(t.was_issued(id));
        assert!(!t.was_issued(999));
        assert!(!t.was_issued(id + (5 << 32)));
    }

    #[test]
    fn refuses_at_capacity_instead_of_growing() {
        let mut t = IdTable::new(2);
        let a = t.insert(1).unwrap();
        t.insert(2).unwrap();
        assert_eq!(t.insert(3), None);
        t.remove(a);
        assert!(t.insert(3).is_some());
    }

    #[test]
    fn garbage_ids_never_panic() {
        let mut t: IdTable<u8> = IdTable::new(2);
        t.insert(1).unwrap();
        for id in [0, 1, u64::MAX, 2 << 32, (1 << 32) | 1, (1 << 63) | 1] {
            assert_eq!(t.get(id), None);
            assert_eq!(t.remove(id), None);
        }
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn drain_where_takes_only_matching() {
        let mut t = IdTable::new(8);
        for i in 0..6 {
            t.insert(i).unwrap();
        }
        let mut taken = Vec::new();
        t.drain_where(|v| v % 2 == 0, |v| taken.push(v));
        taken.sort();
        assert_eq!(taken, vec![0, 2, 4]);
        assert_eq!(t.len(), 3);
    }
}
