//! The avm core: values, programs, a sans-IO interpreter.
//!
//! - [`value`], [`ids`]: what crosses between objects and machines.
//! - [`program`]: programs as interaction trees, and the builder API
//!   (`trigger`, `bind`, [`prog!`](crate::prog)) behaviors are written in.
//! - [`registry`]: behaviors and pure functions by name.
//! - `interp` ([`Vm`]) and `exec`: the interpreter. Call depth lives in
//!   heap frames; a remote call suspends its chain as data.
//! - `tx`: transaction overlays; [`trace`]: what happened.
//!
//! Nothing here knows about sockets or threads: the driver hands work in
//! and acts on [`Output`]s.
mod directory;
mod error;
mod exec;
pub mod ids;
mod interp;
mod output;
pub mod program;
pub mod registry;
pub mod trace;
mod tx;
pub mod value;
mod world;

#[cfg(test)]
mod tests;

pub use directory::Directory;
pub use error::{RemoteFailure, VmError};
pub use ids::{
    ChainId, ControllerId, CounterExhausted, FreshIdGen, MachineId, ObjectId, SuspendToken, TxId,
};
pub use interp::{Vm, VmConfig, DEFAULT_MAX_DEPTH};
pub use output::{Output, RemoteCall, StartCall};
pub use program::{
    abort_tx, begin_tx, call, call_pure, commit_tx, create_obj, create_obj_for, destroy_obj, done,
    get_current_machine, get_input, get_machine, get_self, get_sender, get_state, set_state,
    transfer_obj, trigger, Cont, ContFn, Instr, Program,
};
pub use registry::{BehaviorFn, BehaviorRegistry, Ctx, PureFn, PureRegistry};
pub use trace::{Event, EventKind, Trace, TraceEvent, TraceMode};
pub use value::Val;
