//! The trace: what happened, with a logical timestamp.
//!
//! Three sinks, chosen in [`VmConfig`](super::VmConfig):
//! - `Off`: nothing is recorded, not even counts;
//! - `Counting`: one counter per event kind (constant memory: a
//!   1,000,000-round run costs a few words);
//! - `Full`: every event with its payload (debugging and tests).
//!
//! Invariant: the timestamp of an event is the number of events recorded
//! before it, so timestamps are dense, start at 0 and strictly increase.
//! Event payloads are built lazily (a closure), so `Counting` pays for a
//! counter increment, never for cloning a value.

use std::sync::Arc;

use super::error::VmError;
use super::ids::{ChainId, MachineId, ObjectId, SuspendToken, TxId};
use super::value::Val;

/// Which sink records events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TraceMode {
    Off,
    #[default]
    Counting,
    Full,
}

/// What an event is about, without its payload (the `Counting` key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    ObjectCreated,
    ObjectDestroyed,
    ObjectCalled,
    StateUpdated,
    TransactionStarted,
    TransactionCommitted,
    TransactionAborted,
    CallSuspended,
    CallResumed,
    ErrorOccurred,
    CallArrived,
    ObjectMoved,
}

const KINDS: usize = 12;

/// Every kind's bit.
pub const ALL_KINDS: u32 = (1 << KINDS) - 1;

/// One event, with its payload.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    ObjectCreated {
        id: ObjectId,
        behavior: Arc<str>,
    },
    ObjectDestroyed {
        id: ObjectId,
    },
    /// A local call returned `output` for `input`.
    ObjectCalled {
        id: ObjectId,
        input: Val,
        output: Val,
    },
    StateUpdated {
        id: ObjectId,
        state: Vec<Val>,
    },
    TransactionStarted {
        tx: TxId,
    },
    TransactionCommitted {
        tx: TxId,
    },
    TransactionAborted {
        tx: TxId,
    },
    /// A call to an object on `machine` left this node. `in_tx`: it was
    /// made inside that transaction, and runs now: neither `abort_tx` nor
    /// a failed commit undoes it.
    CallSuspended {
        token: SuspendToken,
        machine: MachineId,
        target: ObjectId,
        in_tx: Option<TxId>,
    },
    CallResumed {
        token: SuspendToken,
        ok: bool,
    },
    ErrorOccurred(VmError),
    /// A call from `machine` to local object `id` arrived (the driver
    /// notes it, [`Vm::note_arrival`](super::Vm::note_arrival)).
    CallArrived {
        id: ObjectId,
        machine: MachineId,
    },
    /// Object `id` moved: to `machine` (recorded by its old home), or here
    /// (recorded by its new home, `machine` being this node).
    ObjectMoved {
        id: ObjectId,
        machine: MachineId,
    },
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::ObjectCreated { .. } => EventKind::ObjectCreated,
            Event::ObjectDestroyed { .. } => EventKind::ObjectDestroyed,
            Event::ObjectCalled { .. } => EventKind::ObjectCalled,
            Event::StateUpdated { .. } => EventKind::StateUpdated,
            Event::TransactionStarted { .. } => EventKind::TransactionStarted,
            Event::TransactionCommitted { .. } => EventKind::TransactionCommitted,
            Event::TransactionAborted { .. } => EventKind::TransactionAborted,
            Event::CallSuspended { .. } => EventKind::CallSuspended,
            Event::CallResumed { .. } => EventKind::CallResumed,
            Event::ErrorOccurred(_) => EventKind::ErrorOccurred,
            Event::CallArrived { .. } => EventKind::CallArrived,
            Event::ObjectMoved { .. } => EventKind::ObjectMoved,
        }
    }
}

/// An event, its logical time, and the chain it happened in (`None` for
/// host-side actions and effects between chains).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEvent {
    pub at: u64,
    pub chain: Option<ChainId>,
    pub event: Event,
}

/// The vm's trace sink.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    mode: TraceMode,
    /// In `Full` mode, the kinds whose payload is kept (bit `kind as
    /// usize`); the others are only counted. All by default.
    keep: u32,
    /// Whether `StateUpdated` events carry the state (a copy of it, at
    /// every write). A node that only streams its trace renders no state.
    state_payloads: bool,
    /// The chain the vm is running now (stamped on `Full` events).
    chain: Option<ChainId>,
    clock: u64,
    counts: [u64; KINDS],
    events: Vec<TraceEvent>,
}

impl Trace {
    pub fn new(mode: TraceMode) -> Trace {
        Trace {
            mode,
            keep: ALL_KINDS,
            state_payloads: true,
            ..Trace::default()
        }
    }

    /// In `Full` mode, keep payloads only of the kinds in `kinds` (bit
    /// `EventKind as usize`), counting the rest: a node streaming only
    /// calls that cross machines does not clone every local call's values.
    pub fn keep_only(&mut self, kinds: u32) {
        self.keep = kinds;
    }

    /// Whether `StateUpdated` events carry the state written (the
    /// default); without, they carry an empty state.
    pub fn keep_state_payloads(&mut self, keep: bool) {
        self.state_payloads = keep;
    }

    /// Whether an event of `kind` would be kept with its payload.
    pub(crate) fn wants(&self, kind: EventKind) -> bool {
        let payload = kind != EventKind::StateUpdated || self.state_payloads;
        payload && self.mode == TraceMode::Full && self.keep & (1 << kind as u32) != 0
    }

    pub fn mode(&self) -> TraceMode {
        self.mode
    }

    /// Switches the sink from now on (a node streams its trace while it
    /// has subscribers). Counts and the clock carry on; leaving `Full`
    /// drops the events not yet taken.
    pub fn set_mode(&mut self, mode: TraceMode) {
        self.mode = mode;
        if mode != TraceMode::Full {
            self.events = Vec::new();
        }
    }

    /// Moves the recorded events into `into` (a streaming driver takes
    /// them after each batch, so `Full` holds only one batch's worth).
    pub fn take_events(&mut self, into: &mut Vec<TraceEvent>) {
        into.append(&mut self.events);
    }

    /// Which chain the next events belong to.
    pub(crate) fn set_chain(&mut self, chain: Option<ChainId>) {
        self.chain = chain;
    }

    /// Events recorded so far (0 when `Off`).
    pub fn len(&self) -> u64 {
        self.clock
    }

    pub fn is_empty(&self) -> bool {
        self.clock == 0
    }

    /// Events of one kind recorded so far.
    pub fn count(&self, kind: EventKind) -> u64 {
        self.counts[kind as usize]
    }

    /// The events themselves (empty unless `Full`).
    pub fn events(&self) -> &[TraceEvent] {
        &self.events
    }

    /// Record an event of `kind`; `make` runs only in `Full` mode.
    #[inline]
    pub(crate) fn record(&mut self, kind: EventKind, make: impl FnOnce() -> Event) {
        match self.mode {
            TraceMode::Off => return,
            TraceMode::Counting => {}
            TraceMode::Full if self.keep & (1 << kind as u32) == 0 => {}
            TraceMode::Full => {
                let event = make();
                debug_assert_eq!(event.kind(), kind);
                self.events.push(TraceEvent {
                    at: self.clock,
                    chain: self.chain,
                    event,
                });
            }
        }
        self.counts[kind as usize] += 1;
        self.clock += 1;
    }

    /// Records an error, and logs it at debug with its chain: a call that
    /// answered `Nothing` says why somewhere, whatever the trace mode.
    pub(crate) fn error(&mut self, e: &VmError) {
        match self.chain {
            Some(chain) => log::debug!("{chain}: {e}"),
            None => log::debug!("{e}"),
        }
        self.record(EventKind::ErrorOccurred, || Event::ErrorOccurred(e.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_keeps_no_payload_and_full_stamps_densely() {
        let mut t = Trace::new(TraceMode::Counting);
        t.record(EventKind::ObjectDestroyed, || unreachable!());
        assert_eq!((t.len(), t.events().len()), (1, 0));

        let mut t = Trace::new(TraceMode::Full);
        for i in 0..3 {
            t.record(EventKind::ObjectDestroyed, || Event::ObjectDestroyed {
                id: ObjectId(i),
            });
        }
        let at: Vec<u64> = t.events().iter().map(|e| e.at).collect();
        assert_eq!(at, [0, 1, 2]);
        assert_eq!(t.count(EventKind::ObjectDestroyed), 3);

        let mut t = Trace::new(TraceMode::Off);
        t.record(EventKind::ObjectDestroyed, || unreachable!());
        assert!(t.is_empty());
    }
}
