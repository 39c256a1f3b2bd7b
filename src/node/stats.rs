//! Counters a running node keeps, readable from any thread.
//!
//! Written by the interpreter thread on the call path, so each is a plain
//! atomic with `Relaxed` ordering (one uncontended add, no lock, no
//! allocation); readers get a consistent-enough snapshot for reports and
//! metrics. The one lock guards the first failure's reason, touched only
//! when a call fails.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::observe::FailureKind;

#[derive(Debug, Default)]
pub struct NodeStats {
    calls_out: AtomicU64,
    calls_in: AtomicU64,
    failures: AtomicU64,
    store_commits: AtomicU64,
    store_objects: AtomicU64,
    first_failure: Mutex<Option<String>>,
    /// Failed calls (remote calls of ours, and calls that failed here),
    /// by `FailureKind`, in `FailureKind::ALL` order.
    failed_by: [AtomicU64; FailureKind::ALL.len()],
    deadlocks: AtomicU64,
    /// Gauges the interpreter sets after each batch.
    gauges: [AtomicU64; GAUGES],
    /// `/events` subscribers, set by the reactor: the interpreter streams
    /// its trace while this is not 0.
    subscribers: AtomicUsize,
    /// The trace kinds they want (bit `EventKind as usize`).
    stream_kinds: AtomicU32,
    /// Trace events the interpreter handed the reactor that it has not
    /// published yet (see [`MAX_TRACE_IN_FLIGHT`]).
    trace_in_flight: AtomicUsize,
    /// Objects the directory places on each peer, refreshed by the
    /// interpreter every [`HOSTED_EVERY`](Self::HOSTED_EVERY) at most.
    hosted: Mutex<Vec<(String, u64)>>,
}

/// Trace events that may wait between the interpreter and the reactor;
/// past this the interpreter drops a batch's events and counts them, and
/// subscribers get an `event: dropped` with the count. A vm making local
/// calls outruns the reactor rendering them, and nothing else bounded
/// that queue.
pub const MAX_TRACE_IN_FLIGHT: usize = 1 << 16;

/// The interpreter's side of [`MAX_TRACE_IN_FLIGHT`]: which batches of
/// trace events go to the reactor, and how many were dropped before each.
#[derive(Debug, Default)]
pub(crate) struct TraceGate {
    dropped: u64,
}

impl TraceGate {
    /// A batch of `n` events, with `in_flight` already on their way:
    /// `Some(events dropped before it)` when it goes, `None` when it is
    /// dropped (and counted) or empty. A batch goes whatever its size when
    /// nothing is in flight.
    pub(crate) fn admit(&mut self, n: usize, in_flight: usize) -> Option<u64> {
        if n == 0 {
            return None;
        }
        if in_flight > 0 && in_flight + n > MAX_TRACE_IN_FLIGHT {
            self.dropped += n as u64;
            return None;
        }
        Some(std::mem::take(&mut self.dropped))
    }
}

/// How many gauges [`Gauges`] has.
const GAUGES: usize = 5;

/// What the interpreter reports of the vm after each batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub objects: u64,
    pub suspended: u64,
    pub waiting_for_turns: u64,
    pub directory_entries: u64,
    /// Calls this node's code made to its own objects (`Vm::local_calls`).
    pub local_calls: u64,
}

/// A snapshot of [`NodeStats`]; subtract two to count what happened between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Calls this node sent to other nodes.
    pub calls_out: u64,
    /// Calls other nodes sent to this node.
    pub calls_in: u64,
    /// Remote calls of this node that failed (unreachable, lost, timed out, refused).
    pub failures: u64,
    /// Durable transactions the store committed (with `--data-dir`): each
    /// is one group commit, one fsync.
    pub store_commits: u64,
    /// Object records those transactions wrote or deleted.
    pub store_objects: u64,
}

impl std::ops::Sub for StatsSnapshot {
    type Output = StatsSnapshot;
    fn sub(self, earlier: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            calls_out: self.calls_out - earlier.calls_out,
            calls_in: self.calls_in - earlier.calls_in,
            failures: self.failures - earlier.failures,
            store_commits: self.store_commits - earlier.store_commits,
            store_objects: self.store_objects - earlier.store_objects,
        }
    }
}

impl NodeStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        // ORDERING: Relaxed: independent counters, read for reports.
        StatsSnapshot {
            calls_out: self.calls_out.load(Ordering::Relaxed),
            calls_in: self.calls_in.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            store_commits: self.store_commits.load(Ordering::Relaxed),
            store_objects: self.store_objects.load(Ordering::Relaxed),
        }
    }

    /// The reason of the first remote call that failed since the last
    /// `take_first_failure` (or the start), clearing it.
    pub fn take_first_failure(&self) -> Option<String> {
        self.first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub(crate) fn count_call_out(&self) {
        // ORDERING: Relaxed: a counter, see the module docs.
        self.calls_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_call_in(&self) {
        // ORDERING: Relaxed: a counter.
        self.calls_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Failed calls by reason so far, in `FailureKind::ALL` order.
    pub fn failed_by(&self) -> [u64; FailureKind::ALL.len()] {
        // ORDERING: Relaxed: counters.
        std::array::from_fn(|i| self.failed_by[i].load(Ordering::Relaxed))
    }

    /// Deadlocks this node broke.
    pub fn deadlocks(&self) -> u64 {
        // ORDERING: Relaxed: a counter.
        self.deadlocks.load(Ordering::Relaxed)
    }

    pub fn gauges(&self) -> Gauges {
        // ORDERING: Relaxed: independent gauges, read for reports.
        let g = |i: usize| self.gauges[i].load(Ordering::Relaxed);
        Gauges {
            objects: g(0),
            suspended: g(1),
            waiting_for_turns: g(2),
            directory_entries: g(3),
            local_calls: g(4),
        }
    }

    pub(crate) fn set_gauges(&self, gauges: Gauges) {
        let values = [
            gauges.objects,
            gauges.suspended,
            gauges.waiting_for_turns,
            gauges.directory_entries,
            gauges.local_calls,
        ];
        for (gauge, value) in self.gauges.iter().zip(values) {
            // ORDERING: Relaxed: a gauge.
            gauge.store(value, Ordering::Relaxed);
        }
    }

    /// How often the interpreter refreshes [`NodeStats::hosted`].
    pub const HOSTED_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

    /// Objects the directory places on each peer (as of the last refresh).
    pub fn hosted(&self) -> Vec<(String, u64)> {
        self.hosted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_hosted(&self, hosted: Vec<(String, u64)>) {
        *self.hosted.lock().unwrap_or_else(|e| e.into_inner()) = hosted;
    }

    /// Trace events handed to the reactor, not yet published.
    pub fn trace_in_flight(&self) -> usize {
        // ORDERING: Relaxed: a bound that may be passed by one batch.
        self.trace_in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn trace_sent(&self, n: usize) {
        // ORDERING: Relaxed, see `trace_in_flight`.
        self.trace_in_flight.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn trace_published(&self, n: usize) {
        // ORDERING: Relaxed, see `trace_in_flight`.
        self.trace_in_flight.fetch_sub(n, Ordering::Relaxed);
    }

    /// `/events` subscribers now.
    pub fn subscribers(&self) -> usize {
        // ORDERING: Relaxed: the interpreter acts on a change within a
        // batch or two; no data hangs on it.
        self.subscribers.load(Ordering::Relaxed)
    }

    /// The trace kinds `/events` subscribers want now.
    pub fn stream_kinds(&self) -> u32 {
        // ORDERING: Relaxed, see `subscribers`.
        self.stream_kinds.load(Ordering::Relaxed)
    }

    pub(crate) fn set_subscribers(&self, n: usize, kinds: u32) {
        // ORDERING: Relaxed, see `subscribers`.
        self.stream_kinds.store(kinds, Ordering::Relaxed);
        self.subscribers.store(n, Ordering::Relaxed);
    }

    pub(crate) fn count_deadlock(&self) {
        // ORDERING: Relaxed: a counter.
        self.deadlocks.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call that failed on this node (its chain's error), by reason.
    pub(crate) fn count_failed_here(&self, reason: &str) {
        let kind = FailureKind::of(reason) as usize;
        // ORDERING: Relaxed: a counter.
        self.failed_by[kind].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a durable store transaction of `objects` records.
    pub(crate) fn count_store_commit(&self, objects: u64) {
        // ORDERING: Relaxed: counters.
        self.store_commits.fetch_add(1, Ordering::Relaxed);
        self.store_objects.fetch_add(objects, Ordering::Relaxed);
    }

    /// Counts a failed remote call; answers how many have failed in all.
    pub(crate) fn count_failure(&self, reason: &str) -> u64 {
        // ORDERING: Relaxed: counters.
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        self.failed_by[FailureKind::of(reason) as usize].fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_failure.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(reason.to_owned());
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the bound a batch is dropped and counted; the next batch that
    /// goes carries the count (subscribers are told), and the count
    /// starts again from 0.
    #[test]
    fn trace_batches_past_the_bound_are_dropped_and_counted() {
        let mut gate = TraceGate::default();
        assert_eq!(gate.admit(0, 0), None, "nothing to send");
        assert_eq!(gate.admit(100, 0), Some(0));
        assert_eq!(gate.admit(100, MAX_TRACE_IN_FLIGHT - 100), Some(0));
        assert_eq!(gate.admit(100, MAX_TRACE_IN_FLIGHT - 99), None);
        assert_eq!(gate.admit(7, MAX_TRACE_IN_FLIGHT), None);
        assert_eq!(gate.admit(5, 10), Some(107));
        assert_eq!(gate.admit(5, 10), Some(0));
        assert_eq!(gate.admit(MAX_TRACE_IN_FLIGHT * 2, 0), Some(0), "alone");
    }
}
