//! Deadlines of the protocol core, in a min-heap.
//!
//! Time is passed in (`now`), never read here, so the logic is testable
//! without sleeping. Timers are not cancelled: a handler re-checks the
//! state it was set for (a connection's serial, a dial slot's attempt) and
//! ignores a timer that no longer applies. That keeps cancellation free,
//! and the heap small: at most one entry per dial slot and per retired
//! connection, plus the two periodic ones (one call-timeout entry stands
//! for every call in flight; see `calls::ChainClock`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::ConnId;

/// What to do when a deadline passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Dial peer slot `slot` again (attempt number `attempt`).
    Redial { slot: usize, attempt: u64 },
    /// See whether a retired duplicate connection can be closed.
    Retire { conn: ConnId },
    /// Ping every peer; close the ones silent for 3 intervals. Periodic.
    Keepalive,
    /// Fail the calls of chains idle for the call timeout: due when the
    /// least recently active chain's deadline passes.
    CallTimeouts,
}

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub fn schedule(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// When the next timer is due: `None` when no timer is set.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Every timer set, with its deadline (in no order), for tests.
    #[cfg(test)]
    pub fn deadlines(&self) -> impl Iterator<Item = (Instant, Timer)> + '_ {
        self.heap.iter().map(|Reverse(entry)| *entry)
    }

    /// The next timer due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, t))| t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_timers_come_out_in_deadline_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let late = Timer::Redial {
            slot: 1,
            attempt: 0,
        };
        let early = Timer::Retire {
            conn: ConnId { key: 3, serial: 9 },
        };
        timers.schedule(t0 + Duration::from_millis(20), late);
        timers.schedule(t0 + Duration::from_millis(10), early);
        assert_eq!(timers.next_at(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(15)), Some(early));
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(15)), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(25)), Some(late));
        assert_eq!(timers.next_at(), None);
    }
}
