//! Counters a running node keeps, readable from any thread.
//!
//! Written by the interpreter thread on the call path, so each is a plain
//! atomic with `Relaxed` ordering (one uncontended add, no lock, no
//! allocation); readers get a consistent-enough snapshot for reports and
//! metrics. The one lock guards the first failure's reason, touched only
//! when a call fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct NodeStats {
    calls_out: AtomicU64,
    calls_in: AtomicU64,
    failures: AtomicU64,
    store_commits: AtomicU64,
    store_objects: AtomicU64,
    first_failure: Mutex<Option<String>>,
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

    /// Counts a durable store transaction of `objects` records.
    pub(crate) fn count_store_commit(&self, objects: u64) {
        // ORDERING: Relaxed: counters.
        self.store_commits.fetch_add(1, Ordering::Relaxed);
        self.store_objects.fetch_add(objects, Ordering::Relaxed);
    }

    /// Counts a failed remote call; answers how many have failed in all.
    pub(crate) fn count_failure(&self, reason: &str) -> u64 {
        // ORDERING: Relaxed: a counter.
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let mut first = self.first_failure.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(reason.to_owned());
        }
        n
    }
}
