//! Calls in flight and when they time out.
//!
//! A call we sent lives in its connection's [`IdTable`](super::table::IdTable)
//! (so a closing connection fails exactly its own calls) and is counted
//! against its chain here. A call times out when its *chain* has shown no
//! progress for the call timeout (a call of it sent or received, an
//! answer received): the outermost call of a deep PingPong legitimately
//! waits as long as the whole game.
//!
//! [`ChainClock`] keeps the chains that have calls in flight on this node
//! in a list ordered by last progress (least recent first), threaded
//! through a slab: progress moves a chain to the back in O(1), the front
//! is the only deadline that can be due, and a chain leaves when its last
//! call is answered. So the bookkeeping is bounded by the calls in flight,
//! and one timer (for the front) stands for all of them.

use std::collections::hash_map::{self, HashMap};
use std::hash::BuildHasherDefault;
use std::time::Instant;

use slab::Slab;
use smallvec::SmallVec;

use crate::vm::{ChainId, IdHasher, ObjectId, SuspendToken};

use super::ConnId;

/// A call we sent and await the answer to.
#[derive(Debug)]
pub struct Outbound {
    pub token: SuspendToken,
    pub target: ObjectId,
    pub chain: ChainId,
    /// When it left, in the core's microseconds (its answer's round trip
    /// goes into the histogram).
    pub sent_us: u64,
}

/// Where one call in flight is: its connection and wire request_id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallRef {
    pub conn: ConnId,
    pub request_id: u64,
}

const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Entry {
    chain: ChainId,
    last: Instant,
    /// Usually one: a chain waits on one call at a time, except when it
    /// re-enters this node (PingPong: one per round on each node).
    calls: SmallVec<[CallRef; 1]>,
    prev: usize,
    next: usize,
}

/// Chains with calls in flight, least recently active first.
#[derive(Debug, Default)]
pub struct ChainClock {
    entries: Slab<Entry>,
    index: HashMap<ChainId, usize, BuildHasherDefault<IdHasher>>,
    head: Option<usize>,
    tail: Option<usize>,
}

impl ChainClock {
    /// `chain` made progress at `now`, if it has calls in flight here.
    pub fn touch(&mut self, chain: ChainId, now: Instant) {
        if let Some(&key) = self.index.get(&chain) {
            self.entries[key].last = now;
            self.move_to_back(key);
        }
    }

    /// `call` of `chain` was sent at `now`. (Each of these calls probes
    /// the index once: a remote call pays for one `add` and one
    /// `answered`.)
    pub fn add(&mut self, chain: ChainId, call: CallRef, now: Instant) {
        match self.index.entry(chain) {
            hash_map::Entry::Occupied(at) => {
                let key = *at.get();
                self.entries[key].last = now;
                self.entries[key].calls.push(call);
                self.move_to_back(key);
            }
            hash_map::Entry::Vacant(at) => {
                let key = self.entries.insert(Entry {
                    chain,
                    last: now,
                    calls: SmallVec::from_buf([call]),
                    prev: NIL,
                    next: NIL,
                });
                at.insert(key);
                self.link_back(key);
            }
        }
    }

    /// `call` of `chain` was answered at `now`: no longer in flight, and
    /// progress for the chain if it has other calls here.
    pub fn answered(&mut self, chain: ChainId, call: CallRef, now: Instant) {
        let hash_map::Entry::Occupied(at) = self.index.entry(chain) else {
            return;
        };
        let key = *at.get();
        let calls = &mut self.entries[key].calls;
        // Nested calls are answered innermost first: search from the back.
        if let Some(i) = calls.iter().rposition(|c| *c == call) {
            calls.swap_remove(i);
        }
        if calls.is_empty() {
            at.remove();
            self.unlink(key);
            self.entries.remove(key);
        } else {
            self.entries[key].last = now;
            self.move_to_back(key);
        }
    }

    /// `conn` closed: `chain` no longer waits on any call sent there.
    pub fn forget_conn(&mut self, chain: ChainId, conn: ConnId) {
        let Some(&key) = self.index.get(&chain) else {
            return;
        };
        let calls = &mut self.entries[key].calls;
        calls.retain(|c| c.conn != conn);
        if calls.is_empty() {
            self.unlink(key);
            self.entries.remove(key);
            self.index.remove(&chain);
        }
    }

    /// The least recently active chain and when it last made progress.
    pub fn oldest(&self) -> Option<(ChainId, Instant)> {
        self.head
            .map(|k| (self.entries[k].chain, self.entries[k].last))
    }

    /// Forgets `chain`, handing back its calls in flight.
    pub fn take(&mut self, chain: ChainId) -> SmallVec<[CallRef; 1]> {
        let Some(key) = self.index.remove(&chain) else {
            return SmallVec::new();
        };
        self.unlink(key);
        self.entries.remove(key).calls
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// With no chain left, gives back the tables a burst grew.
    pub fn shrink_when_idle(&mut self) {
        if self.entries.is_empty() && self.entries.capacity() > 64 {
            self.entries = Slab::new();
            self.index = HashMap::default();
        }
    }

    fn move_to_back(&mut self, key: usize) {
        if self.tail != Some(key) {
            self.unlink(key);
            self.link_back(key);
        }
    }

    fn link_back(&mut self, key: usize) {
        let e = &mut self.entries[key];
        e.prev = self.tail.unwrap_or(NIL);
        e.next = NIL;
        match self.tail {
            Some(t) => self.entries[t].next = key,
            None => self.head = Some(key),
        }
        self.tail = Some(key);
    }

    fn unlink(&mut self, key: usize) {
        let (prev, next) = (self.entries[key].prev, self.entries[key].next);
        match prev {
            NIL => self.head = (next != NIL).then_some(next),
            p => self.entries[p].next = next,
        }
        match next {
            NIL => self.tail = (prev != NIL).then_some(prev),
            n => self.entries[n].prev = prev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn call(request_id: u64) -> CallRef {
        CallRef {
            conn: ConnId { key: 0, serial: 1 },
            request_id,
        }
    }

    #[test]
    fn the_oldest_chain_is_the_least_recently_active() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut clock = ChainClock::default();
        clock.add(ChainId(1), call(1), at(0));
        clock.add(ChainId(2), call(2), at(1));
        clock.add(ChainId(3), call(3), at(2));
        assert_eq!(clock.oldest(), Some((ChainId(1), at(0))));
        clock.touch(ChainId(1), at(5));
        assert_eq!(clock.oldest(), Some((ChainId(2), at(1))));
        clock.touch(ChainId(99), at(6)); // no calls in flight: ignored
        assert_eq!(clock.len(), 3);
        clock.answered(ChainId(2), call(2), at(6));
        assert_eq!(clock.oldest(), Some((ChainId(3), at(2))));
        assert_eq!(clock.take(ChainId(3)).as_slice(), &[call(3)]);
        assert_eq!(clock.oldest(), Some((ChainId(1), at(5))));
        clock.answered(ChainId(1), call(1), at(7));
        assert_eq!(clock.oldest(), None);
        assert_eq!(clock.len(), 0);
    }

    #[test]
    fn an_idle_clock_gives_back_a_burst_of_chains() {
        let t0 = Instant::now();
        let mut clock = ChainClock::default();
        for id in 1..=500 {
            clock.add(ChainId(id), call(id), t0);
        }
        clock.shrink_when_idle();
        assert_eq!(clock.len(), 500, "chains in flight are kept");
        for id in 1..=500 {
            clock.answered(ChainId(id), call(id), t0);
        }
        assert!(clock.entries.capacity() >= 500);
        clock.shrink_when_idle();
        assert!(clock.entries.capacity() <= 64);
        assert!(clock.index.capacity() <= 64);
        clock.add(ChainId(1), call(1), t0);
        assert_eq!(clock.oldest(), Some((ChainId(1), t0)));
    }

    #[test]
    fn an_answer_is_progress_for_the_chain_while_it_has_calls_left() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut clock = ChainClock::default();
        clock.add(ChainId(1), call(1), at(0));
        clock.add(ChainId(1), call(2), at(1));
        clock.add(ChainId(2), call(3), at(2));
        clock.answered(ChainId(1), call(2), at(3));
        assert_eq!(clock.oldest(), Some((ChainId(2), at(2))));
        clock.answered(ChainId(2), call(3), at(4));
        assert_eq!(clock.oldest(), Some((ChainId(1), at(3))));
        clock.answered(ChainId(1), call(1), at(5));
        assert_eq!((clock.oldest(), clock.len()), (None, 0));
    }

    #[test]
    fn a_chain_stays_while_any_of_its_calls_is_in_flight() {
        let t0 = Instant::now();
        let mut clock = ChainClock::default();
        for id in 1..=3 {
            clock.add(ChainId(7), call(id), t0);
        }
        clock.answered(ChainId(7), call(3), t0);
        clock.answered(ChainId(7), call(1), t0);
        assert_eq!(clock.len(), 1);
        clock.answered(ChainId(7), call(2), t0);
        assert_eq!(clock.len(), 0);
        assert_eq!(clock.oldest(), None);
    }
}
