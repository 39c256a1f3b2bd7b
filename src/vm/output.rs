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

use super::error::{Cycle, VmError, WaitEdge};
use super::ids::{ChainId, ControllerId, MachineId, ObjectId, SuspendToken};
use super::value::Val;

/// The objects a node owns, as its directory snapshot lists them (see
/// [`Vm::snapshot_objects`](super::Vm::snapshot_objects)): each id with
/// the index of its behavior's name in `behaviors`. An index, not a clone
/// of the name: for a million objects the clones cost a million atomic
/// increments on the interpreter, and as many decrements on the reactor
/// when the snapshot is done.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnedObjects {
    pub objects: Vec<(ObjectId, u32)>,
    pub behaviors: Vec<Arc<str>>,
}

impl OwnedObjects {
    /// The behavior name of `objects[i]`.
    pub fn behavior(&self, i: usize) -> &str {
        let index = self.objects[i].1 as usize;
        self.behaviors.get(index).map_or("", |b| b)
    }
}

/// A local object's committed record, as a durable node stores it (see
/// [`Vm::drain_changes`](super::Vm::drain_changes)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ObjectRecord<'a> {
    pub behavior: &'a str,
    pub controller: Option<ControllerId>,
    pub version: u32,
    pub state: &'a [Val],
    /// Times it moved (0: never); see `move_object`.
    pub epoch: u16,
    /// The machine it is on its way to: its `adopt` left (or leaves once
    /// this record is durable) and the answer is not known here. A node
    /// restarted from such a record does not serve the object until that
    /// machine's word settles the move (see `Vm::restore_object`).
    pub leaving: Option<&'a str>,
}

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
    /// `last_failure`: why a call failed (its `call` answered `Nothing`),
    /// if one did after the chain's last other instruction: a failure the
    /// program went on from (it issued another instruction) explains
    /// nothing about its result.
    Finished {
        origin: u64,
        chain: ChainId,
        result: Result<Val, VmError>,
        last_failure: Option<VmError>,
    },
    /// A local object took `name`: tell every peer (`name_notify`).
    Named { name: Arc<str>, id: ObjectId },
    /// `name` no longer names local object `id`: tell every peer.
    Unnamed { name: Arc<str>, id: ObjectId },
    /// Object `id` moved here from another node (its `adopt`), at
    /// `epoch`: tell every peer (`create_notify` with the epoch), so a
    /// peer that misses the old home's `move_notify` learns it anyway.
    Adopted {
        id: ObjectId,
        behavior: Arc<str>,
        epoch: u16,
    },
    /// Local object `id` moved to `machine`, where its epoch is `epoch`:
    /// tell every peer (`move_notify`). Its names went with it.
    Moved {
        id: ObjectId,
        machine: MachineId,
        epoch: u16,
    },
    /// An object was created here (in a transaction: only on commit).
    Created { id: ObjectId, behavior: Arc<str> },
    /// An object here was destroyed (in a transaction: only on commit).
    Destroyed { id: ObjectId },
    /// Deadlock detection: send this probe to `machine` (a `probe`
    /// message); hand what comes back to `Vm::handle_probe` there.
    Probe { machine: MachineId, probe: Probe },
    /// A deadlock was found whose victim waits on `machine`: tell it (a
    /// `deadlock` message; `Vm::handle_victim` there).
    Victim {
        machine: MachineId,
        cycle: Box<Cycle>,
    },
    /// A deadlock was broken here: the victim's waiting call failed (for
    /// logs and metrics).
    DeadlockBroken(Box<Cycle>),
}

/// A deadlock probe, chasing waits from node to node (edge chasing): the
/// receiver looks at what chain `blocked` waits for there, extends `path`,
/// and either finds `initiator` holding the turn awaited last (a cycle),
/// or passes the probe on to where the chain it follows waits next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub initiator: ChainId,
    pub blocked: ChainId,
    /// The waits so far, first the initiator's.
    pub path: Vec<WaitEdge>,
    /// Times the probe was passed on; it is dropped past
    /// [`MAX_PROBE_HOPS`], so no probe circulates for ever.
    pub hops: u32,
}

/// The most waits a cycle is followed through, and the most times a probe
/// is passed on.
pub const MAX_PROBE_HOPS: u32 = 64;

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
    /// `None`: call the object. Otherwise a distribution-layer operation
    /// on it, run by its node's vm ([`Vm::serve_op`](super::Vm::serve_op)).
    pub op: Option<RemoteOp>,
}

/// The distribution layer's operations on an object another node hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteOp {
    /// `reflect`; input `Nothing`; answers `Just(meta)` or `Nothing`.
    Reflect,
    /// `get_controller`; input `Nothing`; answers `Just(Nat)` or `Nothing`.
    GetController,
    /// `destroy_obj`; input: the caller's controller (`Just(Nat)` or
    /// `Nothing`); answers `Bool`.
    Destroy,
    /// `transfer_obj`; input `Pair(caller's controller, Nat new)`;
    /// answers `Bool`.
    Transfer,
    /// `scry_meta`'s question to one node; input the filter; answers
    /// `List[ObjectRef]` of that node's own matching objects (`target`
    /// is not used).
    Scry,
    /// `fetch`; input `Nothing`; answers `Just(record)` (see
    /// [`Vm::serve_op`](super::Vm::serve_op)), or `Nothing` when the
    /// object has no controller or is not there.
    Fetch,
    /// `freeze`; input `Pair(Nat base version, List state)`; answers
    /// `Just(Pair(Bool applied, record))`, or `Nothing` as for `Fetch`.
    Freeze,
    /// `move_object` asked of the object's node; input `Pair(caller's
    /// controller, Str machine)`; answers `Bool`. Not answered at once:
    /// the object's node runs it as a chain ([`Vm::start_op`](super::Vm::start_op)),
    /// which waits for the object's turn.
    Move,
    /// The object's node hands it to its new home; input the object's
    /// record `List[Str behavior, controller, Nat version, List state,
    /// Nat epoch, List[Str] names]`; answers `Bool(true)` once it is
    /// installed there.
    Adopt,
}

impl RemoteOp {
    pub const ALL: [RemoteOp; 9] = [
        RemoteOp::Reflect,
        RemoteOp::GetController,
        RemoteOp::Destroy,
        RemoteOp::Transfer,
        RemoteOp::Scry,
        RemoteOp::Fetch,
        RemoteOp::Freeze,
        RemoteOp::Move,
        RemoteOp::Adopt,
    ];

    /// The wire's `op`.
    pub fn name(self) -> &'static str {
        match self {
            RemoteOp::Reflect => "reflect",
            RemoteOp::GetController => "get_controller",
            RemoteOp::Destroy => "destroy",
            RemoteOp::Transfer => "transfer",
            RemoteOp::Scry => "scry",
            RemoteOp::Fetch => "fetch",
            RemoteOp::Freeze => "freeze",
            RemoteOp::Move => "move",
            RemoteOp::Adopt => "adopt",
        }
    }

    /// Whether the object's node answers it at once
    /// ([`Vm::serve_op`](super::Vm::serve_op)) rather than as a chain
    /// ([`Vm::start_op`](super::Vm::start_op)).
    pub fn answers_at_once(self) -> bool {
        self != RemoteOp::Move
    }

    pub fn from_name(name: &str) -> Option<RemoteOp> {
        RemoteOp::ALL.into_iter().find(|op| op.name() == name)
    }
}
