//! Deadlines for the reactor, in a min-heap.
//!
//! Time is passed in (`now`), never read here, so the logic is testable
//! without sleeping. Timers are not cancelled: a handler re-checks the
//! state it was set for (a connection's serial, a dial slot's attempt) and
//! ignores a timer that no longer applies. That keeps cancellation free and
//! the heap small enough in practice (one entry per dial slot or
//! connection at a time).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What to do when a deadline passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Dial peer slot `slot` again (attempt number `attempt`).
    Redial { slot: usize, attempt: u64 },
    /// See whether a retired duplicate connection can be closed.
    Retire { conn: usize, serial: u64 },
    /// Ping every peer; close the ones silent for 3 intervals. Periodic.
    Keepalive,
    /// Fail calls older than the call timeout. Periodic.
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

    /// How long `poll` may sleep: `None` when no timer is set.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(now))
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

    #[test]
    fn due_timers_come_out_in_deadline_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let late = Timer::Redial {
            slot: 1,
            attempt: 0,
        };
        let early = Timer::Retire { conn: 3, serial: 9 };
        timers.schedule(t0 + Duration::from_millis(20), late);
        timers.schedule(t0 + Duration::from_millis(10), early);
        assert_eq!(timers.timeout(t0), Some(Duration::from_millis(10)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(15)), Some(early));
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(15)), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(25)), Some(late));
        assert_eq!(timers.timeout(t0), None);
    }
}
