//! Trying a listener again after a failed `accept` (out of file
//! descriptors). Readiness is edge-triggered: the connections waiting in
//! the backlog raise no new event, so without a retry they would wait for
//! yet another connection to arrive. Trying again at once would spin; so
//! the listener is tried every [`ACCEPT_RETRY`], and the failure is said
//! once per spell (until the backlog drains).

use std::time::{Duration, Instant};

/// How long after a failed `accept` the listener is tried again.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// One listener's retry state.
#[derive(Debug, Default)]
pub struct AcceptRetry {
    at: Option<Instant>,
    warned: bool,
}

impl AcceptRetry {
    /// When the listener is to be tried again, if it is.
    pub fn at(&self) -> Option<Instant> {
        self.at
    }

    /// Whether the retry is due by `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.at.is_some_and(|at| now >= at)
    }

    /// An accept pass begins: the retry it was is spent.
    pub fn begin(&mut self) {
        self.at = None;
    }

    /// The backlog is drained: the spell is over.
    pub fn drained(&mut self) {
        self.at = None;
        self.warned = false;
    }

    /// `accept` failed at `now`: tried again after [`ACCEPT_RETRY`].
    /// Answers whether to say so (the first failure of a spell).
    pub fn failed(&mut self, now: Instant) -> bool {
        self.at = Some(now + ACCEPT_RETRY);
        !std::mem::replace(&mut self.warned, true)
    }
}
