//! `IdTable`: a bounded slab whose keys carry a generation.
//!
//! The protocol core keeps one per connection for the requests it sent
//! there and awaits a `call_response` for (the id is the wire
//! `request_id`), and one for inbound calls the interpreter has yet to
//! answer (the id is an [`InboundId`](super::InboundId)).
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
    /// The generation has wrapped at least once: every generation has been
    /// handed out.
    wrapped: bool,
    capacity: usize,
}

impl<T> IdTable<T> {
    /// Preallocates `min(capacity, 1024)` slots; grows up to `capacity`.
    pub fn new(capacity: usize) -> IdTable<T> {
        IdTable {
            slab: Slab::with_capacity(capacity.min(1024)),
            generation: 0,
            wrapped: false,
            capacity,
        }
    }

    /// Stores `value`; `None` when the table is full.
    pub fn insert(&mut self, value: T) -> Option<u64> {
        if self.slab.len() >= self.capacity {
            return None;
        }
        self.wrapped |= self.generation == GEN_MASK;
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

    #[cfg(test)]
    pub fn get(&self, id: u64) -> Option<&T> {
        let (gen, key) = split(id)?;
        match self.slab.get(key) {
            Some((g, v)) if *g == gen => Some(v),
            _ => None,
        }
    }

    /// Whether `id` could have been handed out by this table (so an
    /// answer to it that finds no entry is late, not made up).
    pub fn was_issued(&self, id: u64) -> bool {
        split(id).is_some_and(|(gen, _)| self.wrapped || gen <= self.generation)
    }

    /// Removes every entry, handing each to `f`.
    pub fn drain(&mut self, mut f: impl FnMut(T)) {
        for (_, v) in self.slab.drain() {
            f(v);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
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
    fn ids_issued_before_the_generation_wrapped_still_count_as_issued() {
        let mut t = IdTable::new(4);
        t.generation = GEN_MASK - 1;
        let old = t.insert(()).unwrap(); // generation GEN_MASK
        t.remove(old);
        let new = t.insert(()).unwrap(); // wrapped to generation 1
        assert_eq!(new >> 32, 1);
        assert!(
            t.was_issued(old),
            "an id from before the wrap is late, not made up"
        );
        assert!(t.was_issued(new));
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
    fn drain_takes_everything_and_ids_stay_stale() {
        let mut t = IdTable::new(8);
        let ids: Vec<u64> = (0..6).map(|i| t.insert(i).unwrap()).collect();
        let mut taken = Vec::new();
        t.drain(|v| taken.push(v));
        taken.sort();
        assert_eq!(taken, vec![0, 1, 2, 3, 4, 5]);
        assert!(t.is_empty());
        assert!(ids
            .iter()
            .all(|&id| t.get(id).is_none() && t.was_issued(id)));
    }
}
