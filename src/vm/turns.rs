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
//!   release: holds -= 1; at 0 the first waiter becomes the owner (holds 1),
//!            not yet `entered`: its call runs when its chain's turn to run comes
//! ```
//!
//! Invariants: an object's turn is taken (`holds > 0`) exactly while some
//! call of its owner chain is inside it; a waiter is in exactly one queue,
//! and `waits` maps its chain to that object; granting a turn hands it
//! straight to the first waiter (no chain can overtake the queue).
//!
//! Cost: an object's entry is made by its first call and kept while the
//! object lives (`forget` drops it when the object is destroyed), so
//! taking and giving back a free turn is one lookup each, with no insert,
//! no removal and no allocation; the queue is allocated only when a call
//! has to wait. An emptied queue is freed at once if a burst grew it past
//! [`SMALL_QUEUE`], and otherwise when the node goes idle: two chains
//! taking turns on one object do not allocate at every wait, and no
//! object keeps a queue for its life. An entry is 24 bytes.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use super::ids::{shrink_if_sparse, ChainId, IdHasher, ObjectId};
use crate::heap;

/// A call waiting for a turn: its chain's slab key in the vm, and its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Waiter {
    pub(crate) key: usize,
    pub(crate) chain: ChainId,
}

#[derive(Debug)]
struct Turn {
    /// Meaningful while `holds > 0`.
    owner: ChainId,
    holds: u32,
    /// The owner's call has begun inside the object (a waiter handed the
    /// turn has not, until it runs): only then may it have read state.
    entered: bool,
    /// The object was destroyed while its turn was taken: drop the entry
    /// when the turn comes free.
    forget_when_free: bool,
    /// Boxed on purpose: an empty `VecDeque` is 32 bytes inline, and most
    /// objects never have a call wait for them; the box keeps every entry
    /// at 24 bytes and allocates only for the first waiter.
    #[allow(clippy::box_collection)]
    queue: Option<Box<VecDeque<Waiter>>>,
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

/// An emptied queue with room for more waiters than this is freed at once.
const SMALL_QUEUE: usize = 16;

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

    /// Gives back what a burst of calls grew, while no turn is held or
    /// waited for ([`heap::shrink_when_idle`]); answers whether it did.
    /// Empty queues go too, whatever their size.
    pub(crate) fn shrink_when_idle(&mut self) -> bool {
        let mut gave = false;
        for turn in self.held.values_mut() {
            if turn.queue.as_ref().is_some_and(|q| q.is_empty()) {
                turn.queue = None;
                gave = true;
            }
        }
        gave |= heap::shrink_when_idle(&mut self.held);
        heap::shrink_when_idle(&mut self.waits) | gave
    }

    /// A call of `chain` (vm chain `key`) asks for `object`'s turn.
    pub(crate) fn take(&mut self, object: ObjectId, chain: ChainId, key: usize) -> Take {
        let Some(turn) = self.held.get_mut(&object) else {
            self.held.insert(
                object,
                Turn {
                    owner: chain,
                    holds: 1,
                    entered: true,
                    forget_when_free: false,
                    queue: None,
                },
            );
            return Take::Granted;
        };
        if turn.holds == 0 || turn.owner == chain {
            turn.owner = chain;
            turn.holds += 1;
            turn.entered = true;
            return Take::Granted;
        }
        let queue = turn.queue.get_or_insert_with(Box::default);
        if queue.len() >= self.bound {
            return Take::Busy;
        }
        queue.push_back(Waiter { key, chain });
        self.waits.insert(chain, object);
        Take::Queued
    }

    /// A call inside `object` answered or failed. When that was the last
    /// hold, the turn passes to the first waiter, which is returned (its
    /// call may now enter; it already owns the turn).
    pub(crate) fn release(&mut self, object: ObjectId) -> Option<Waiter> {
        let turn = self.held.get_mut(&object)?;
        turn.holds = turn.holds.saturating_sub(1);
        if turn.holds > 0 {
            return None;
        }
        let next = turn.queue.as_mut().and_then(|q| q.pop_front());
        turn.free_empty_queue();
        match next {
            Some(next) => {
                turn.owner = next.chain;
                turn.holds = 1;
                turn.entered = false;
                self.waits.remove(&next.chain);
                Some(next)
            }
            None => {
                if turn.forget_when_free {
                    self.held.remove(&object);
                }
                None
            }
        }
    }

    /// The call handed `object`'s turn (a waiter) begins inside it now.
    pub(crate) fn entered(&mut self, object: ObjectId) {
        if let Some(turn) = self.held.get_mut(&object) {
            turn.entered = true;
        }
    }

    /// The chain whose call is inside `object` now: one that holds its
    /// turn and has begun there (not a waiter handed the turn that has not
    /// run yet).
    pub(crate) fn inside(&self, object: ObjectId) -> Option<ChainId> {
        self.held
            .get(&object)
            .filter(|t| t.holds > 0 && t.entered)
            .map(|t| t.owner)
    }

    /// True when `object`'s turn is held once: the next
    /// [`Turns::release`] gives it up (whoever waits next, whatever its
    /// chain).
    pub(crate) fn last_hold(&self, object: ObjectId) -> bool {
        self.held.get(&object).is_some_and(|t| t.holds == 1)
    }

    /// `object` was destroyed: its entry goes (at once, or when its turn
    /// comes free). Its waiters must have been drained first.
    pub(crate) fn forget(&mut self, object: ObjectId) {
        match self.held.get_mut(&object) {
            Some(turn) if turn.holds > 0 => turn.forget_when_free = true,
            Some(_) => {
                self.held.remove(&object);
                shrink_if_sparse(&mut self.held);
            }
            None => {}
        }
    }

    /// Objects with an entry (for tests of `forget`).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.held.len()
    }

    /// The chain holding `object`'s turn.
    pub(crate) fn owner(&self, object: ObjectId) -> Option<ChainId> {
        self.held
            .get(&object)
            .filter(|t| t.holds > 0)
            .map(|t| t.owner)
    }

    /// The object `chain` waits for, if it waits here.
    pub(crate) fn waiting_for(&self, chain: ChainId) -> Option<ObjectId> {
        self.waits.get(&chain).copied()
    }

    /// Takes `chain`'s call out of `object`'s queue (it fails instead);
    /// its waiter, if it was there.
    pub(crate) fn withdraw(&mut self, object: ObjectId, chain: ChainId) -> Option<Waiter> {
        let turn = self.held.get_mut(&object)?;
        let queue = turn.queue.as_mut()?;
        let i = queue.iter().position(|w| w.chain == chain)?;
        let waiter = queue.remove(i)?;
        turn.free_empty_queue();
        self.waits.remove(&chain);
        Some(waiter)
    }

    /// Every call waiting for `object` (destroyed: they fail).
    pub(crate) fn drain_queue(&mut self, object: ObjectId) -> Vec<Waiter> {
        let Some(queue) = self.held.get_mut(&object).and_then(|t| t.queue.take()) else {
            return Vec::new();
        };
        let waiters: Vec<Waiter> = queue.into_iter().collect();
        for w in &waiters {
            self.waits.remove(&w.chain);
        }
        waiters
    }

    /// Calls waiting, all objects together.
    pub(crate) fn waiting(&self) -> usize {
        self.waits.len()
    }

    /// Whether `object` has a waiting queue allocated (for tests).
    #[cfg(test)]
    fn has_queue(&self, object: ObjectId) -> bool {
        self.held.get(&object).is_some_and(|t| t.queue.is_some())
    }
}

impl Turn {
    /// An empty queue that a burst grew is freed now; a small one waits
    /// for [`Turns::shrink_when_idle`].
    fn free_empty_queue(&mut self) {
        if self
            .queue
            .as_ref()
            .is_some_and(|q| q.is_empty() && q.capacity() > SMALL_QUEUE)
        {
            self.queue = None;
        }
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
        // A free turn is taken again without a new entry.
        assert_eq!(t.take(A, ChainId(9), 0), Take::Granted);
        assert_eq!(t.owner(A), Some(ChainId(9)));
        assert_eq!(t.entries(), 1);
    }

    #[test]
    fn a_destroyed_objects_entry_goes_now_or_when_its_turn_is_free() {
        let mut t = Turns::new(8);
        let b = ObjectId(2);
        t.take(A, ChainId(1), 0);
        t.release(A);
        t.take(b, ChainId(1), 0);
        t.forget(A);
        assert_eq!(t.entries(), 1, "A was free: gone at once");
        t.forget(b);
        assert_eq!(t.entries(), 1, "b is taken: it stays until released");
        t.release(b);
        assert_eq!(t.entries(), 0);
    }

    /// A burst of waiters does not keep its queue's peak: the queue goes
    /// when it empties (by release, withdrawal or drain), a small one when
    /// the node is idle.
    #[test]
    fn an_emptied_queue_is_freed() {
        let mut t = Turns::new(2000);
        t.take(A, ChainId(1), 0);
        for i in 2..1002 {
            assert_eq!(t.take(A, ChainId(i), i as usize), Take::Queued);
        }
        assert!(t.has_queue(A));
        for _ in 2..1002 {
            assert!(t.release(A).is_some());
        }
        assert!(!t.has_queue(A), "released to the last waiter");
        // A small queue stays while turns pass (no allocation per wait)
        // and goes when the node is idle.
        for i in 0..3 {
            t.take(A, ChainId(5000 + i), 1);
            assert!(t.release(A).is_some());
            assert!(t.has_queue(A), "kept while small");
        }
        t.take(A, ChainId(6000), 1);
        t.withdraw(A, ChainId(6000));
        t.take(A, ChainId(6001), 1);
        t.drain_queue(A);
        assert!(!t.has_queue(A), "drained");
        t.take(A, ChainId(6002), 1);
        t.withdraw(A, ChainId(6002));
        assert!(t.has_queue(A));
        assert_eq!(t.release(A), None);
        assert!(t.shrink_when_idle());
        assert!(!t.has_queue(A), "gone when idle");
        assert_eq!(t.waiting(), 0);
    }

    #[test]
    fn a_turn_entry_is_small() {
        assert_eq!(std::mem::size_of::<Turn>(), 24);
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
