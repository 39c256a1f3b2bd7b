//! What crosses between the vm and its driver: the calls it is handed
//! ([`StartCall`]) and what it hands back ([`Output`], [`RemoteCall`]).
//!
//! Plain data, no behavior: the driver (a node's interpreter thread, or a
//! test) matches on these; the engine builds them.
//!
//! Invariants:
//! - a chain yields one [`Output::Finished`] when it ends, and nothing
//!   after; it carries the `origin` the driver started the chain with;
//! - a [`RemoteCall`]'s token resumes its chain once: afterwards it is
//!   stale, and `resume` refuses it.

use std::sync::Arc;

use super::error::VmError;
use super::ids::{ChainId, MachineId, ObjectId, SuspendToken};
use super::value::Val;

/// A call for the vm to run as a new chain.
#[derive(Clone, Debug, PartialEq)]
pub struct StartCall {
    pub target: ObjectId,
    pub input: Val,
    pub sender: Option<ObjectId>,
    /// `None`: the vm mints one (`node_prefix << 48 | counter`).
    pub chain: Option<ChainId>,
}

/// What the driver must act on after [`Vm::run`](super::Vm::run).
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Forward this call to `machine`, then `resume` with the answer.
    RemoteCall(RemoteCall),
    /// A chain ended. `origin` is what the driver passed when starting it.
    Finished {
        origin: u64,
        chain: ChainId,
        result: Result<Val, VmError>,
    },
    /// An object was created here (in a transaction: only on commit).
    Created { id: ObjectId, behavior: Arc<str> },
    /// An object here was destroyed (in a transaction: only on commit).
    Destroyed { id: ObjectId },
}

/// A call the vm cannot answer locally.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteCall {
    pub token: SuspendToken,
    pub machine: MachineId,
    pub target: ObjectId,
    pub input: Val,
    /// The calling object; `ObjectId(0)` when the caller is a top-level program.
    pub sender: ObjectId,
    pub chain: ChainId,
}
