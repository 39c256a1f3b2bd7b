//! The avm core: values, programs, a sans-IO interpreter.
//!
//! - [`ids`], [`value`]: what crosses between objects and machines.
//! - `error` ([`VmError`]): what went wrong; [`trace`]: what happened.
//! - [`program`]: programs as interaction trees, and the builder API
//!   (`trigger`, `bind`, [`prog!`](crate::prog)) behaviors are written in.
//! - [`registry`]: behaviors and pure functions by name.
//! - `directory` ([`Directory`]): where objects on other machines live.
//! - `turns`: an object runs one call at a time; others wait in a queue.
//! - `world`: everything a vm holds but its chains (objects, id counters,
//!   registries, directory, trace).
//! - `tx`: transaction overlays.
//! - `output`: what the driver hands in ([`StartCall`]) and gets back
//!   ([`Output`], [`RemoteCall`]).
//! - `exec` and `interp` ([`Vm`]): the interpreter. Call depth lives in
//!   heap frames; a remote call suspends its chain as data.
//! - `deadlock`: waits for turns that form a cycle, found here or by
//!   probes that follow them across nodes.
//!
//! Nothing here knows about sockets or threads: the driver hands work in
//! and acts on [`Output`]s.
//!
//! # The modules form a line
//!
//! Invariant: a module imports (`use super::…`) only modules before it in
//! this line, so there is no import cycle, and each module can be read
//! knowing only the ones before it (`a → b`: `b` may import `a`):
//!
//! ```text
//! ids → value → error → trace → program → registry → directory
//!     → turns → world → tx → output → exec → deadlock → interp
//! ```
//!
//! Who imports whom: an `x` means the row's module imports the column's;
//! every `x` lies left of the diagonal (`\`).
//!
//! ```text
//!            ids val err trc prg reg dir trn wld tx  out exe ddl
//! ids        \
//! value      x   \
//! error      x       \
//! trace      x   x   x   \
//! program    x   x           \
//! registry   x   x           x   \
//! directory  x                       \
//! turns      x                           \
//! world      x   x   x   x       x   x   x   \
//! tx         x   x                           x   \
//! output     x   x   x                               \
//! exec       x   x   x   x   x   x   x   x   x   x   x   \
//! deadlock   x       x                       x       x   x   \
//! interp     x   x   x   x   x   x   x   x   x       x   x   x
//! ```
//!
//! Items are imported from the module that defines them, never through the
//! re-exports below. `tests::layers` checks all of this, this picture
//! included, against the sources.
mod deadlock;
mod directory;
mod error;
mod exec;
pub mod ids;
mod interp;
mod output;
pub mod program;
pub mod registry;
pub mod trace;
mod turns;
mod tx;
pub mod value;
mod world;

#[cfg(test)]
mod tests;

pub use directory::{epoch_newer, next_epoch, Directory, Notice, Refused, LEARNED_PER_PEER};
pub use error::{Cycle, RemoteFailure, VmError, WaitEdge};
pub(crate) use ids::IdHasher;
pub use ids::{
    ChainId, ControllerId, CounterExhausted, FreshIdGen, MachineId, NameFault, ObjectId,
    SuspendToken, TxId,
};
pub use interp::{Vm, VmConfig, DEFAULT_MAX_DEPTH, DEFAULT_MAX_WAITING};
pub use output::{
    ObjectRecord, Output, OwnedObjects, Probe, RemoteCall, RemoteOp, StartCall, MAX_PROBE_HOPS,
};
pub use program::{
    abort_tx, begin_tx, call, call_pure, commit_tx, create_obj, create_obj_for, destroy_obj, done,
    fetch, freeze, get_controller, get_current_controller, get_current_machine, get_input,
    get_machine, get_self, get_sender, get_state, move_object, reflect, register_name,
    reify_context, scry_meta, set_state, teleport, transfer_obj, trigger, unregister_name, whereis,
    Cont, ContFn, Instr, Program,
};
pub use registry::{BehaviorFn, BehaviorRegistry, Ctx, PureFn, PureRegistry, MAX_BEHAVIOR_NAME};
pub use trace::{Event, EventKind, Trace, TraceEvent, TraceMode, ALL_KINDS};
pub use value::Val;
