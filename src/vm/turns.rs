//! Turns: an object runs one call at a time.
//!
//! A call takes its object's turn when it enters and gives it back when it
//! answers (or fails), holding it meanwhile, also while suspended on a
//! remote call or paused by the step budget. A call of the chain that
//! holds the turn re-enters at once (the turn counts its holds): that is
//! how `pong` calls `ping` back inside the chain `ping` is serving, at any
//! depth of A -> B -> A -> B. Any other call waits in the object's FIFO
//! queue, bounded by `bound`; past it the call is refused (`busy`).
//!
//! ```text
//!   object ──▶ Turn { owner: chain, holds: n ≥ 1, queue: [waiter, ...] }
//!   release: holds -= 1; at 0 the first waiter becomes the owner (holds 1)
//! ```
//!
//! Invariants: an object is in `held` exactly while some call of its owner
//! chain is inside it; a waiter is in exactly one queue, and `waits` maps
//! its chain to that object; granting a turn hands it straight to the
//! first waiter (no chain can overtake the queue). Free objects cost
//! nothing here: the table holds only taken turns, and an object's first
//! call inserts an entry without allocating (an empty queue).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use super::ids::{ChainId, IdHasher, ObjectId};

/// A call waiting for a turn: its chain's slab key in the vm, and its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Waiter {
    pub(crate) key: usize,
    pub(crate) chain: ChainId,
}

#[derive(Debug)]
struct Turn {
    owner: ChainId,
    holds: u32,
    queue: VecDeque<Waiter>,
}

/// What asking for a turn gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// The call may enter now (a free turn, or its own chain's).
    Granted,
    /// The call waits in the queue.
    Queued,
    /// The queue is full: the call fails.
    Busy,
}

type ChainMap<V> = HashMap<ChainId, V, BuildHasherDefault<IdHasher>>;
type ObjectMap<V> = HashMap<ObjectId, V, BuildHasherDefault<IdHasher>>;

#[derive(Debug)]
pub(crate) struct Turns {
    held: ObjectMap<Turn>,
    /// Which object each waiting chain waits for.
    waits: ChainMap<ObjectId>,
    bound: usize,
}

impl Turns {
    pub(crate) fn new(bound: usize) -> Turns {
        Turns {
            held: ObjectMap::default(),
            waits: ChainMap::default(),
            bound,
        }
    }

    /// A call of `chain` (vm chain `key`) asks for `object`'s turn.
    pub(crate) fn take(&mut self, object: ObjectId, chain: ChainId, key: usize) -> Take {
        let Some(turn) = self.held.get_mut(&object) else {
            self.held.insert(
                object,
                Turn {
                    owner: chain,
                    holds: 1,
                    queue: VecDeque::new(),
                },
            );
            return Take::Granted;
        };
        if turn.owner == chain {
            turn.holds += 1;
            return Take::Granted;
        }
        if turn.queue.len() >= self.bound {
            return Take::Busy;
        }
        turn.queue.push_back(Waiter { key, chain });
        self.waits.insert(chain, object);
        Take::Queued
    }

    /// A call inside `object` answered or failed. When that was the last
    /// hold, the turn passes to the first waiter, which is returned (its
    /// call may now enter; it already owns the turn).
    pub(crate) fn release(&mut self, object: ObjectId) -> Option<Waiter> {
        let turn = self.held.get_mut(&object)?;
        turn.holds -= 1;
        if turn.holds > 0 {
            return None;
        }
        match turn.queue.pop_front() {
            Some(next) => {
                turn.owner = next.chain;
                turn.holds = 1;
                self.waits.remove(&next.chain);
                Some(next)
            }
            None => {
                self.held.remove(&object);
                None
            }
        }
    }

    /// The chain holding `object`'s turn.
    pub(crate) fn owner(&self, object: ObjectId) -> Option<ChainId> {
        self.held.get(&object).map(|t| t.owner)
    }

    /// The object `chain` waits for, if it waits here.
    pub(crate) fn waiting_for(&self, chain: ChainId) -> Option<ObjectId> {
        self.waits.get(&chain).copied()
    }

    /// Takes `chain`'s call out of `object`'s queue (it fails instead);
    /// its waiter, if it was there.
    pub(crate) fn withdraw(&mut self, object: ObjectId, chain: ChainId) -> Option<Waiter> {
        let turn = self.held.get_mut(&object)?;
        let i = turn.queue.iter().position(|w| w.chain == chain)?;
        let waiter = turn.queue.remove(i)?;
        self.waits.remove(&chain);
        Some(waiter)
    }

    /// Every call waiting for `object` (destroyed: they fail).
    pub(crate) fn drain_queue(&mut self, object: ObjectId) -> Vec<Waiter> {
        let Some(turn) = self.held.get_mut(&object) else {
            return Vec::new();
        };
        let waiters: Vec<Waiter> = turn.queue.drain(..).collect();
        for w in &waiters {
            self.waits.remove(&w.chain);
        }
        waiters
    }

    /// Calls waiting, all objects together.
    pub(crate) fn waiting(&self) -> usize {
        self.waits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ObjectId = ObjectId(1);

    fn w(key: usize, chain: u64) -> Waiter {
        Waiter {
            key,
            chain: ChainId(chain),
        }
    }

    #[test]
    fn the_owner_re_enters_and_others_wait_in_order() {
        let mut t = Turns::new(8);
        assert_eq!(t.take(A, ChainId(1), 10), Take::Granted);
        assert_eq!(t.take(A, ChainId(1), 11), Take::Granted, "re-entrance");
        assert_eq!(t.take(A, ChainId(2), 12), Take::Queued);
        assert_eq!(t.take(A, ChainId(3), 13), Take::Queued);
        assert_eq!(t.waiting_for(ChainId(2)), Some(A));
        assert_eq!(t.release(A), None, "still held once");
        assert_eq!(t.release(A), Some(w(12, 2)), "first come, first served");
        assert_eq!(t.owner(A), Some(ChainId(2)));
        assert_eq!(t.waiting_for(ChainId(2)), None);
        assert_eq!(t.release(A), Some(w(13, 3)));
        assert_eq!(t.release(A), None);
        assert_eq!(t.owner(A), None);
        assert_eq!(t.waiting(), 0);
    }

    #[test]
    fn a_full_queue_refuses() {
        let mut t = Turns::new(1);
        t.take(A, ChainId(1), 0);
        assert_eq!(t.take(A, ChainId(2), 1), Take::Queued);
        assert_eq!(t.take(A, ChainId(3), 2), Take::Busy);
    }

    #[test]
    fn withdrawn_and_drained_waiters_leave_the_queue() {
        let mut t = Turns::new(8);
        t.take(A, ChainId(1), 0);
        t.take(A, ChainId(2), 1);
        t.take(A, ChainId(3), 2);
        t.take(A, ChainId(4), 3);
        assert_eq!(t.withdraw(A, ChainId(3)), Some(w(2, 3)));
        assert_eq!(t.withdraw(A, ChainId(3)), None);
        assert_eq!(t.drain_queue(A), vec![w(1, 2), w(3, 4)]);
        assert_eq!(t.waiting(), 0);
        assert_eq!(t.release(A), None);
        assert_eq!(t.owner(A), None);
    }
}
