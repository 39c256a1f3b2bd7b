//! `Vm`: the driver-facing interpreter.
//!
//! The driver (a node's interpreter thread, or a test) owns a `Vm` and
//! loops: hand in work (`start_call`, `start_program`, `resume`), call
//! [`Vm::run`], act on the [`Output`]s. The vm never blocks, never touches
//! a socket or a thread; a chain that calls an object on another machine
//! *suspends* with an [`Output::RemoteCall`] and waits, as data, until the
//! driver calls `resume` with its token. Meanwhile the driver may start
//! other chains, including calls into objects whose chains are suspended
//! (re-entrance), and resume suspended chains in any order.
//!
//! A node's interpreter loop is, in outline:
//!
//! ```text
//! loop {
//!     for event in inbox.drain(..) {            // from the reactor
//!         match event {
//!             Inbound { req, call } => vm.start_call(call, req),
//!             Reply { token, result } => vm.resume(token, result)?, // stale: log it
//!         }
//!     }
//!     vm.run(&mut out);                          // `out` reused, never reallocated
//!     for o in out.drain(..) {
//!         match o {
//!             Output::RemoteCall(rc) => send a `call` to rc.machine, remember rc.token,
//!             Output::Finished { origin, result, .. } => answer inbound `origin`, or log,
//!             Output::Created { .. } | Output::Destroyed { .. } => notify peers,
//!         }
//!     }
//!     park until the reactor has news;
//! }
//! ```
//!
//! The same, for real, with two vms wired by hand:
//!
//! ```
//! use avm::vm::*;
//!
//! fn registry() -> BehaviorRegistry {
//!     let mut reg = BehaviorRegistry::new();
//!     // "front" forwards its input to the object named in it.
//!     reg.register("front", |input: Val| match input.as_object() {
//!         Some(back) => call(back, Val::Nat(41)),
//!         None => done(Val::Nothing),
//!     });
//!     reg.register("back", |input: Val| done(Val::Nat(input.as_nat().unwrap() + 1)));
//!     reg
//! }
//! let mut alpha = Vm::new(VmConfig::new(MachineId::new("alpha"), 1), registry(), PureRegistry::new());
//! let mut beta = Vm::new(VmConfig::new(MachineId::new("beta"), 2), registry(), PureRegistry::new());
//! let front = alpha.create_object("front").unwrap();
//! let back = beta.create_object("back").unwrap();
//! alpha.directory_mut().insert(back, beta.machine().clone(), Some("back"));
//!
//! let mut out = Vec::new();
//! alpha.start_call(StartCall { target: front, input: Val::ObjectRef(back), sender: None, chain: None }, 7);
//! alpha.run(&mut out);
//! // The call to `back` suspended: the driver forwards it to beta.
//! let Some(Output::RemoteCall(rc)) = out.pop() else { panic!("expected a remote call") };
//! assert_eq!(alpha.suspended_count(), 1);
//! beta.start_call(StartCall { target: rc.target, input: rc.input, sender: Some(rc.sender), chain: Some(rc.chain) }, rc.token.0);
//! out.clear();
//! beta.run(&mut out);
//! let reply = out.drain(..).find_map(|o| match o {
//!     Output::Finished { origin, result, .. } if origin == rc.token.0 => Some(result),
//!     _ => None,
//! }).unwrap();
//! // ... and hands beta's answer back to alpha.
//! alpha.resume(rc.token, reply.map_err(|e| e.to_string())).unwrap();
//! alpha.run(&mut out);
//! let Some(Output::Finished { origin: 7, result: Ok(v), .. }) = out.pop() else { panic!() };
//! assert_eq!(v, Val::just(Val::Nat(42)));
//! ```
//!
//! Allocation: the `Vec<Output>` is the caller's and reused; chains live
//! boxed in a `Slab` (entering and leaving the table moves a pointer, not
//! the chain) and a finished chain goes back to a small pool whole, its
//! frame and continuation `Vec`s with it, so steady-state local calls and
//! remote round trips allocate only for the values the behaviors build.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use slab::Slab;
use smallvec::SmallVec;

use super::deadlock;
use super::directory::{epoch_newer, next_epoch, Directory};
use super::error::{Cycle, RemoteFailure, VmError};
use super::exec::{self, Chain, Chains, Frame, Next, Status};
use super::ids::{ChainId, ControllerId, FreshIdGen, MachineId, ObjectId, SuspendToken};
use super::output::{ObjectRecord, Output, OwnedObjects, Probe, RemoteOp, StartCall};
use super::program::{ContFn, Program};
use super::registry::{BehaviorRegistry, PureRegistry};
use super::trace::{Event, EventKind, Trace, TraceMode};
use super::turns::Turns;
use super::value::Val;
use super::world::{ChainKeys, GoneCounts, IdMap, InDoubt, Obj, World, RESTORED_MOVER};
use crate::heap;

/// How to build a [`Vm`].
#[derive(Clone, Debug)]
pub struct VmConfig {
    pub machine: MachineId,
    /// Top 16 bits of every object and chain id this vm mints.
    pub node_prefix: u16,
    /// First counter value for minted ids (a restarted node skips its past).
    pub first_counter: u64,
    pub trace: TraceMode,
    /// Most frames all chains together may hold (a frame is a local call
    /// in progress, so this bounds the deepest nesting of one chain too).
    /// A call past it fails (the `call` answers `Nothing`, the trace gets
    /// [`VmError::TooDeep`]; a chain's root call past it finishes the chain
    /// with `Err(TooDeep)`), so behaviors that recurse without end, or
    /// peers that point PingPong at itself, cost bounded memory however
    /// many such chains run side by side.
    pub max_depth: usize,
    /// Most calls that may wait for one object's turn; one more fails at
    /// once with [`VmError::Busy`] naming the object.
    pub max_waiting: usize,
}

/// [`VmConfig::max_waiting`]'s default.
pub const DEFAULT_MAX_WAITING: usize = 1024;

/// [`VmConfig::max_depth`]'s default: 4M frames, about 200 MB of chain
/// for PingPong, four times the deepest game the tests play.
pub const DEFAULT_MAX_DEPTH: usize = 1 << 22;

impl VmConfig {
    /// `first_counter` 1, trace `Counting`, `max_depth` [`DEFAULT_MAX_DEPTH`].
    pub fn new(machine: MachineId, node_prefix: u16) -> VmConfig {
        VmConfig {
            machine,
            node_prefix,
            first_counter: 1,
            trace: TraceMode::Counting,
            max_depth: DEFAULT_MAX_DEPTH,
            max_waiting: DEFAULT_MAX_WAITING,
        }
    }
}

/// Finished chains kept for reuse, and their bounds. A node serving many
/// callers at once starts a chain per inbound call: with fewer spares
/// than calls in a burst (it was 32), most of them allocated their frame
/// and input buffers afresh, 1.75 allocations per call at 256 in flight.
/// Up to 1,024 spares are kept, within [`SPARE_BYTES`] all together; a
/// deep chain's buffers are cut back to [`SPARE_CAPACITY`] slots, so
/// steady traffic of chains up to that deep never reallocates.
const SPARE_CHAINS: usize = 1024;
const SPARE_CAPACITY: usize = 4096;
/// What the spare pool may hold in all: 1,024 one-call chains take about
/// 570 KiB of it.
const SPARE_BYTES: usize = 1 << 20;
/// Spares kept once the node is idle ([`Vm::release_idle_memory`]).
const SPARE_CHAINS_IDLE: usize = 32;
/// Past this many slots, an empty table is given back when idle.
const IDLE_SLOTS: usize = 64;

/// What a spare chain holds, in bytes: itself and its buffers.
fn spare_bytes(chain: &Chain) -> usize {
    use std::mem::size_of;
    size_of::<Chain>()
        + chain.frames.capacity() * size_of::<Frame>()
        + chain.conts.capacity() * size_of::<Box<ContFn>>()
        + chain.inputs.capacity() * size_of::<Val>()
}

/// The interpreter. See the module docs for the driver loop.
pub struct Vm {
    world: World,
    chains: Chains,
    runnable: VecDeque<usize>,
    /// Outputs of host-side actions, emitted by the next `run`.
    pending: Vec<Output>,
    /// Finished chains, emptied, for new chains to reuse. Boxed as the
    /// table holds them: a spare goes back into it as it is.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Chain>>,
    /// What `spare` holds, in bytes (bounded by [`SPARE_BYTES`]).
    spare_bytes: usize,
}

impl fmt::Debug for Vm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("machine", &self.world.machine)
            .field("objects", &self.world.objects.len())
            .field("chains", &self.chains.len())
            .field("suspended", &self.suspended_count())
            .finish_non_exhaustive()
    }
}

impl Vm {
    pub fn new(config: VmConfig, behaviors: BehaviorRegistry, pures: PureRegistry) -> Vm {
        let first = config.first_counter;
        Vm {
            world: World {
                machine: config.machine.clone(),
                objects: IdMap::default(),
                changed: None,
                replicas: IdMap::default(),
                epochs: IdMap::default(),
                moving: Default::default(),
                in_doubt: IdMap::default(),
                heard_while_moving: Default::default(),
                superseded: Default::default(),
                departed: Vec::new(),
                ids: FreshIdGen::with_prefix_from(config.node_prefix, first),
                chain_ids: FreshIdGen::with_prefix_from(config.node_prefix, first),
                next_tx: 0,
                next_gen: 0,
                max_depth: config.max_depth.max(1),
                frames_total: 0,
                local_calls: 0,
                directory: {
                    let mut d = Directory::new();
                    d.set_local_machine(config.machine.clone());
                    d
                },
                turns: Turns::new(config.max_waiting.max(1)),
                woken: Vec::new(),
                to_fail: Vec::new(),
                new_waits: Vec::new(),
                chain_keys: ChainKeys::default(),
                chain_gone: GoneCounts::default(),
                behaviors,
                pures,
                trace: Trace::new(config.trace),
                program_name: Arc::from("<program>"),
            },
            chains: Slab::new(),
            runnable: VecDeque::new(),
            pending: Vec::new(),
            spare: Vec::new(),
            spare_bytes: 0,
        }
    }

    pub fn machine(&self) -> &MachineId {
        &self.world.machine
    }

    /// Host-side create (node setup). Emits `Output::Created` on the next `run`.
    pub fn create_object(&mut self, behavior: &str) -> Result<ObjectId, VmError> {
        let b = self
            .world
            .behaviors
            .index_of(behavior)
            .ok_or_else(|| VmError::UnknownBehavior(Arc::from(behavior)))?;
        let id = self.world.ids.next_object()?;
        let obj = Obj::new(b, None);
        exec::insert_object(&mut self.world, id, obj, &mut self.pending);
        Ok(id)
    }

    /// Host-side state write (setup and tests), outside any transaction.
    pub fn set_state(&mut self, id: ObjectId, state: Vec<Val>) -> Result<(), VmError> {
        match self.world.objects.get_mut(&id) {
            Some(o) => {
                o.state = state;
                o.version = o.version.wrapping_add(1);
                self.world.mark_changed(id);
                Ok(())
            }
            None => Err(VmError::UnknownObject(id)),
        }
    }

    /// Puts back an object a durable node stored in an earlier life, as it
    /// was: no `Output::Created` (the directory snapshot announces it), no
    /// change to write back. Fails when this vm has no such behavior.
    ///
    /// An object stored on its way to another machine (`record.leaving`:
    /// the last life sent its `adopt` and did not learn the answer, or
    /// learned it but died before storing that the object left) comes back
    /// frozen, as a move in doubt: calls to it wait, and nothing changes
    /// it, until that machine's word settles the move, as for a live move
    /// whose answer was lost (see [`Vm::resume_lost`]). Served meanwhile,
    /// it could take writes that vanish when the machine that took it
    /// says so, or be moved to a third machine as a second owner.
    pub fn restore_object(
        &mut self,
        id: ObjectId,
        record: ObjectRecord<'_>,
    ) -> Result<(), VmError> {
        let behavior = self
            .world
            .behaviors
            .index_of(record.behavior)
            .ok_or_else(|| VmError::UnknownBehavior(Arc::from(record.behavior)))?;
        let mut obj = Obj::new(behavior, record.controller);
        obj.state = record.state.to_vec();
        obj.version = record.version;
        self.world.objects.insert(id, obj);
        if record.epoch != 0 {
            self.world.epochs.insert(id, record.epoch);
        }
        if let Some(to) = record.leaving {
            let to = MachineId::new(to);
            log::warn!(
                "{id} was on its way to {to} when this node last stopped; it stays frozen until \
                 {to} says whether it took it"
            );
            self.world.moving.insert(id, to.clone());
            let ups = self.world.directory.ups(&to);
            let mover = None;
            self.world.in_doubt.insert(id, InDoubt { mover, to, ups });
            self.world.turns.take(id, RESTORED_MOVER, usize::MAX);
        }
        Ok(())
    }

    /// From now on, remember which objects change, for
    /// [`Vm::drain_changes`]. A node without a store never turns it on, and
    /// pays nothing.
    pub fn track_changes(&mut self) {
        self.world.changed.get_or_insert_with(Default::default);
    }

    /// Hands `write` every object changed since the last drain: its record,
    /// or `None` when it was destroyed. Each object once, whatever number
    /// of changes it saw; committed changes only (a transaction's reach
    /// here at its commit, all in the same drain). Order is unspecified.
    pub fn drain_changes(&mut self, mut write: impl FnMut(ObjectId, Option<ObjectRecord<'_>>)) {
        let Some(mut changed) = self.world.changed.take() else {
            return;
        };
        let reg = &self.world.behaviors;
        let (epochs, moving) = (&self.world.epochs, &self.world.moving);
        for id in changed.drain() {
            let record = self.world.objects.get(&id).map(|o| ObjectRecord {
                behavior: &reg.get(o.behavior).name,
                controller: o.controller,
                version: o.version,
                state: &o.state,
                epoch: epochs.get(&id).copied().unwrap_or(0),
                // Almost always none moving: no lookup per write then.
                leaving: (!moving.is_empty())
                    .then(|| moving.get(&id).map(MachineId::as_str))
                    .flatten(),
            });
            write(id, record);
        }
        // A batch is bounded by the driver's step budget; only a host-side
        // burst (a mass create) leaves a set this large to give back.
        if changed.capacity() > 8192 {
            changed.shrink_to(1024);
        }
        self.world.changed = Some(changed);
    }

    /// Marks `id` changed again, so the next drain reports it as it is
    /// then (a durable node whose write failed retries this way). Nothing
    /// when tracking is off.
    pub fn mark_changed(&mut self, id: ObjectId) {
        self.world.mark_changed(id);
    }

    /// The counter the next object id will carry (stored by a durable
    /// node, so that its next life mints past it).
    pub fn next_object_counter(&self) -> u64 {
        self.world.ids.next_counter()
    }

    /// The committed state of a local object.
    pub fn state(&self, id: ObjectId) -> Option<&[Val]> {
        self.world.objects.get(&id).map(|o| &o.state[..])
    }

    /// The controller of a local object (`None` when uncontrolled or unknown).
    pub fn controller(&self, id: ObjectId) -> Option<ControllerId> {
        self.world.objects.get(&id).and_then(|o| o.controller)
    }

    /// How many objects this vm hosts.
    pub fn object_count(&self) -> usize {
        self.world.objects.len()
    }

    /// The chain a suspended call's token belongs to, while it waits.
    pub fn chain_of(&self, token: SuspendToken) -> Option<ChainId> {
        let key = token.slot();
        self.chains
            .get(key)
            .filter(|c| c.token == Some(token))
            .map(|c| c.id)
    }

    pub fn hosts(&self, id: ObjectId) -> bool {
        self.world.objects.contains_key(&id)
    }

    /// Every object this node owns (replicas, which other nodes own, are
    /// not in it), for its directory snapshot.
    pub fn snapshot_objects(&self) -> OwnedObjects {
        let owned = self
            .world
            .objects
            .len()
            .saturating_sub(self.world.replicas.len());
        let mut objects = Vec::with_capacity(owned);
        objects.extend(self.world.owned().map(|(id, o)| (*id, o.behavior)));
        let reg = &self.world.behaviors;
        let behaviors = (0..reg.len() as u32)
            .map(|i| reg.get(i).name.clone())
            .collect();
        OwnedObjects { objects, behaviors }
    }

    /// (id, behavior name) of every object this node owns (replicas,
    /// which other nodes own, are not in it).
    pub fn local_objects(&self) -> impl Iterator<Item = (ObjectId, &Arc<str>)> + '_ {
        let reg = &self.world.behaviors;
        self.world
            .owned()
            .map(move |(id, o)| (*id, &reg.get(o.behavior).name))
    }

    /// The epoch of local object `id`: how many times it moved (0: never,
    /// or not here). The directory snapshot announces it.
    pub fn epoch(&self, id: ObjectId) -> u16 {
        self.world.epochs.get(&id).copied().unwrap_or(0)
    }

    /// (id, epoch) of every local object that moved here (epoch above 0),
    /// for the directory snapshot.
    pub fn moved_objects(&self) -> Vec<(ObjectId, u16)> {
        self.world.epochs.iter().map(|(id, e)| (*id, *e)).collect()
    }

    /// Whether `id` is this node's own object (hosted here, not a replica).
    pub fn owns(&self, id: ObjectId) -> bool {
        self.world.owns(id)
    }

    /// Whether `id` is served here as a replica of another node's object.
    pub fn is_replica(&self, id: ObjectId) -> bool {
        self.world.replicas.contains_key(&id)
    }

    /// The version of the object hosted here as `id` (a replica's own).
    #[cfg(test)]
    pub(crate) fn version_here(&self, id: ObjectId) -> Option<u32> {
        self.world.objects.get(&id).map(|o| o.version)
    }

    pub fn directory(&self) -> &Directory {
        &self.world.directory
    }

    pub fn directory_mut(&mut self) -> &mut Directory {
        &mut self.world.directory
    }

    fn new_chain(&mut self, id: ChainId, origin: u64, next: Next) -> usize {
        let mut chain = match self.spare.pop() {
            Some(spare) => {
                self.spare_bytes -= spare_bytes(&spare);
                spare
            }
            None => Box::new(Chain::empty()),
        };
        debug_assert!(chain.next.is_none() && chain.token.is_none() && chain.frames.is_empty());
        chain.id = id;
        chain.origin = origin;
        chain.next = Some(next);
        let keys = self.world.chain_keys.entry(id).or_default();
        chain.key_slot = u32::try_from(keys.len()).expect("fewer chains than frames");
        let key = self.chains.insert(chain);
        keys.push(key);
        self.runnable.push_back(key);
        key
    }

    /// Queue a chain calling `call.target`. If the target is not hosted
    /// here, the chain finishes with `Err(UnknownObject)`, unless it moved
    /// away (its directory entry has an epoch): then the call is forwarded
    /// to its new home and the answer relayed as it comes.
    /// If all chains hold [`VmConfig::max_depth`] frames when it starts,
    /// it finishes with `Err(TooDeep)`.
    pub fn start_call(&mut self, call: StartCall, origin: u64) {
        let minted = match call.chain {
            Some(c) => Ok(c),
            None => self.world.chain_ids.next_chain(),
        };
        let (id, next) = match minted {
            Ok(id) => (
                id,
                Next::Enter {
                    target: call.target,
                    input: call.input,
                    sender: call.sender.unwrap_or(ObjectId(0)),
                    granted: false,
                },
            ),
            Err(e) => (ChainId(0), Next::Fail(e.into())),
        };
        self.new_chain(id, origin, next);
    }

    /// Runs a distribution-layer operation another node asked of local
    /// object `target` (a `meta` message); the answer goes back as a
    /// `call_response`. Destroy and transfer happen only for a caller
    /// under the object's controller (or on an uncontrolled object): any
    /// other gets `Bool(false)` and a log line.
    pub fn serve_op(&mut self, op: RemoteOp, target: ObjectId, input: &Val) -> Val {
        if op == RemoteOp::Scry {
            return match exec::scry_here(&self.world, input) {
                Ok(found) => Val::List(found.into_iter().map(Val::ObjectRef).collect()),
                Err(e) => {
                    self.world.trace.error(&e);
                    Val::List(Vec::new())
                }
            };
        }
        if op == RemoteOp::Adopt {
            let adopted = exec::adopt(&mut self.world, target, input, &mut self.pending);
            return Val::Bool(adopted);
        }
        // Only this node's own objects: a replica answers for nothing.
        let owner = if self.world.owns(target) {
            self.world.objects.get(&target).map(|o| o.controller)
        } else {
            None
        };
        let Some(owner) = owner else {
            return match op {
                RemoteOp::Destroy | RemoteOp::Transfer => Val::Bool(false),
                _ => Val::Nothing,
            };
        };
        // A fetch too: its answer could reach the new home after the
        // object, and make a replica of what it owns.
        let changes = matches!(
            op,
            RemoteOp::Destroy | RemoteOp::Transfer | RemoteOp::Freeze | RemoteOp::Fetch
        );
        if changes && exec::refused_while_moving(&mut self.world, target) {
            log::info!("remote {} of {target} refused: it is moving", op.name());
            return match op {
                RemoteOp::Freeze | RemoteOp::Fetch => Val::Nothing,
                _ => Val::Bool(false),
            };
        }
        let controller_of = |v: &Val| match v {
            Val::Just(c) => c.as_nat().map(ControllerId),
            _ => None,
        };
        let answer = match op {
            RemoteOp::Reflect => {
                let o = &self.world.objects[&target];
                Val::just(exec::meta_of(&self.world, o))
            }
            RemoteOp::GetController => exec::controller_val(owner),
            RemoteOp::Scry | RemoteOp::Adopt => unreachable!("answered above"),
            RemoteOp::Move => {
                log::warn!("a `move` operation given to serve_op; use start_op");
                Val::Bool(false)
            }
            // Only controlled objects are replicated.
            RemoteOp::Fetch | RemoteOp::Freeze if owner.is_none() => Val::Nothing,
            RemoteOp::Fetch => {
                let o = &self.world.objects[&target];
                Val::just(exec::replica_record(&self.world, o))
            }
            RemoteOp::Freeze => {
                let (base, state) = match input {
                    Val::Pair(base, state) => (base.as_nat(), state.as_list()),
                    _ => (None, None),
                };
                let (Some(base), Some(state)) = (base, state) else {
                    return Val::Nothing;
                };
                // Not while a chain is inside it: that chain may have read
                // the state and write it back when it resumes (a turn is
                // held across remote calls), and would undo this.
                let busy = self.world.turns.owner(target).is_some();
                let o = self.world.objects.get_mut(&target).expect("owned");
                let applied = u64::from(o.version) == base && !busy;
                if applied {
                    o.state = state.to_vec();
                    o.version = o.version.wrapping_add(1);
                    self.world.mark_changed(target);
                }
                let o = &self.world.objects[&target];
                let record = exec::replica_record(&self.world, o);
                Val::just(Val::pair(Val::Bool(applied), record))
            }
            RemoteOp::Destroy => {
                let caller = controller_of(input);
                if !exec::authorized(owner, caller) {
                    log::info!("remote destroy_obj of {target} refused: not its controller");
                    return Val::Bool(false);
                }
                exec::remove_object(&mut self.world, target, &mut self.pending);
                Val::Bool(true)
            }
            RemoteOp::Transfer => {
                let (caller, to) = match input {
                    Val::Pair(caller, to) => (controller_of(caller), to.as_nat()),
                    _ => (None, None),
                };
                let Some(to) = to else {
                    return Val::Bool(false);
                };
                if !exec::authorized(owner, caller) {
                    log::info!("remote transfer_obj of {target} refused: not its controller");
                    return Val::Bool(false);
                }
                exec::transfer(&mut self.world, target, ControllerId(to));
                Val::Bool(true)
            }
        };
        self.apply_effects();
        answer
    }

    /// Starts the chain that runs an operation another node asked for and
    /// that is not answered at once ([`RemoteOp::answers_at_once`]; today
    /// `move`, which waits for the object's turn). Its answer comes back
    /// in the chain's `Output::Finished`, under `origin`, like a call's.
    pub fn start_op(
        &mut self,
        op: RemoteOp,
        target: ObjectId,
        input: &Val,
        chain: Option<ChainId>,
        origin: u64,
    ) {
        let minted = match chain {
            Some(c) => Ok(c),
            None => self.world.chain_ids.next_chain(),
        };
        let next = match (op, input) {
            (RemoteOp::Move, Val::Pair(caller, to)) if to.as_str().is_some() => {
                let caller = match &**caller {
                    Val::Just(c) => c.as_nat().map(ControllerId),
                    _ => None,
                };
                let to = MachineId::new(to.as_str().expect("checked"));
                Next::Move(Box::new(exec::MoveStep {
                    target,
                    to,
                    caller,
                    granted: false,
                }))
            }
            _ => Next::Fail(VmError::Unsupported("an operation input that is not one")),
        };
        match minted {
            Ok(id) => self.new_chain(id, origin, next),
            Err(e) => self.new_chain(ChainId(0), origin, Next::Fail(e.into())),
        };
    }

    /// Notes in the trace that a call from `machine` to `target` arrived,
    /// on `chain` (before [`Vm::start_call`] runs it).
    pub fn note_arrival(&mut self, target: ObjectId, chain: Option<ChainId>, machine: &MachineId) {
        let trace = &mut self.world.trace;
        trace.set_chain(chain);
        trace.record(EventKind::CallArrived, || Event::CallArrived {
            id: target,
            machine: machine.clone(),
        });
        trace.set_chain(None);
    }

    /// Calls that code running on this vm made to its own objects, as
    /// they entered: every call but a chain's first, which a host starts
    /// ([`Vm::start_call`], as a node does for a call from another node).
    /// A program's calls all count ([`Vm::start_program`]).
    pub fn local_calls(&self) -> u64 {
        self.world.local_calls
    }

    /// Frames all chains hold now: local calls in progress, each one
    /// counted against [`VmConfig::max_depth`].
    pub fn frames_held(&self) -> usize {
        self.world.frames_total
    }

    /// Queue a chain running a top-level program (no self object).
    pub fn start_program(&mut self, program: Program, origin: u64) -> Result<ChainId, VmError> {
        let id = self.world.chain_ids.next_chain()?;
        let key = self.new_chain(id, origin, Next::Run(program));
        let chain = &mut self.chains[key];
        let frame = Frame::program(chain.conts.len());
        exec::push_frame(&mut self.world.frames_total, chain, frame);
        Ok(id)
    }

    /// Answer a suspended remote call. `Err(reason)` makes the `call`
    /// instruction answer `Nothing` (the reason goes to the trace). An
    /// unknown or stale token is `Err(UnknownToken)`.
    pub fn resume(
        &mut self,
        token: SuspendToken,
        result: Result<Val, String>,
    ) -> Result<(), VmError> {
        let key = token.slot();
        let chain = match self.chains.get_mut(key) {
            Some(c) if c.token == Some(token) => c,
            _ => return Err(VmError::UnknownToken(token)),
        };
        chain.token = None;
        let ok = result.is_ok();
        self.world
            .trace
            .record(EventKind::CallResumed, || Event::CallResumed { token, ok });
        if let Some(mut scry) = chain.scry.take() {
            // One node's answer to a scry_meta; then the next node.
            chain.remote_op = None;
            match result {
                Ok(Val::List(items)) => {
                    scry.found.extend(items.iter().filter_map(Val::as_object));
                }
                Ok(other) => log::debug!("scry_meta: a node answered {other}; skipped"),
                Err(reason) => {
                    self.world
                        .trace
                        .error(&VmError::RemoteFailed(Box::new(RemoteFailure {
                            target: ObjectId(0),
                            reason,
                        })))
                }
            }
            // Suspended again on the next node, or done with an answer.
            if let exec::Flow::Go(next) =
                exec::scry_next(&mut self.world, chain, key, scry, &mut self.pending)
            {
                chain.next = Some(next);
                self.runnable.push_back(key);
            }
            return Ok(());
        }
        if chain.remote_op == Some(RemoteOp::Adopt) {
            let target = chain.remote_target;
            let result = match result {
                // The new home announced the object before it answered no
                // (its store write failed, say): it holds the object, and
                // serves it. Thawing ours too would make two live copies.
                Err(reason) if self.world.heard_while_moving.contains(&target) => {
                    log::warn!(
                        "move of {target}: the new home announced it, then answered `{reason}`; \
                         it holds the object, so the move was made"
                    );
                    Ok(Val::Bool(true))
                }
                result => result,
            };
            let answer = exec::finish_move(&mut self.world, chain, result, &mut self.pending);
            chain.next = Some(Next::Answer(answer));
            self.runnable.push_back(key);
            self.apply_effects();
            return Ok(());
        }
        if chain.frames.is_empty() && chain.remote_op.is_none() {
            // A root call forwarded to where its object moved: the answer
            // is relayed as it came, failure included.
            chain.next = Some(match result {
                Ok(v) => Next::Answer(v),
                Err(reason) => Next::Fail(VmError::Relayed(reason.into())),
            });
            self.runnable.push_back(key);
            return Ok(());
        }
        chain.next = Some(match result {
            Ok(v) if chain.remote_op.is_none() => Next::Reply(v),
            result => Next::Answer(exec::resumed_answer(&mut self.world, chain, result)),
        });
        self.runnable.push_back(key);
        Ok(())
    }

    /// Like [`Vm::resume`] with `Err(reason)`, for a call that left and
    /// whose answer never came (its connection closed, or it timed out):
    /// it may have run there. For a move's `adopt` that means the new home
    /// may hold the object now, so the object stays frozen here, its
    /// mover waiting, until the new home's word: [`Vm::announced_elsewhere`]
    /// (it took it), [`Vm::peer_synced`] (it did not), or the answer itself
    /// come late ([`Vm::late_adopt_answer`]).
    pub fn resume_lost(&mut self, token: SuspendToken, reason: String) -> Result<(), VmError> {
        let key = token.slot();
        match self.chains.get_mut(key) {
            Some(c) if c.token == Some(token) && c.remote_op == Some(RemoteOp::Adopt) => {
                c.token = None;
                self.world
                    .trace
                    .record(EventKind::CallResumed, || Event::CallResumed {
                        token,
                        ok: false,
                    });
                let target = c.remote_target;
                exec::park_lost_adopt(&mut self.world, c, key, token);
                let to = &self.world.in_doubt[&target].to;
                if self.world.heard_while_moving.contains(&target) {
                    log::info!("move of {target} to {to}: its answer was lost ({reason}), but it announced the object already; the move was made");
                    self.settle_doubt(target, Ok(Val::Bool(true)));
                    self.apply_effects();
                } else {
                    log::warn!("move of {target} to {to}: the adopt's answer was lost ({reason}); the object stays frozen here until {to} answers after all, or its directory says whether it took it");
                }
                Ok(())
            }
            _ => self.resume(token, Err(reason)),
        }
    }

    /// Another node announced object `id` at `epoch` (its `create_notify`).
    /// If this node owns `id` at an older epoch, the object moved on
    /// through a move of ours whose answer was lost: a move in doubt ends
    /// as made (its mover gets `true`), and a copy not in doubt (this node
    /// restarted from its store before the answer came) is dropped, unless
    /// a call is inside it. Answers whether the object left; the driver
    /// then applies the notice to the directory as usual.
    pub fn announced_elsewhere(&mut self, id: ObjectId, from: &MachineId, epoch: u16) -> bool {
        let ours = self.world.epochs.get(&id).copied().unwrap_or(0);
        if !self.world.owns(id) || !epoch_newer(epoch, ours) {
            return false;
        }
        if let Some(d) = self.world.in_doubt.get(&id) {
            // The new home holds it at the epoch the move gave it (ours
            // plus one); another node only at a later one (the new home
            // moved it on). A third node's word for that epoch is no word.
            if *from != d.to && !epoch_newer(epoch, next_epoch(ours)) {
                log::warn!(
                    "move of {id} to {}: {from} announces it at epoch {epoch}, which only {} \
                     can hold; not believed, the move stays in doubt",
                    d.to,
                    d.to
                );
                return false;
            }
            log::info!("move of {id}: {from} announces it at epoch {epoch}; the move was made");
            self.settle_doubt(id, Ok(Val::Bool(true)));
        } else if self.world.moving.contains_key(&id) {
            // The new home's word before its answer: kept, in case the
            // answer is lost (or is an error after all). Only the new
            // home's at the move's own epoch, as for a move in doubt.
            let to_sender = self.chains.iter().any(|(_, c)| {
                c.remote_op == Some(RemoteOp::Adopt)
                    && c.remote_target == id
                    && c.moving_to.as_ref() == Some(from)
            });
            if to_sender || epoch_newer(epoch, next_epoch(ours)) {
                self.world.heard_while_moving.insert(id);
            }
            return false;
        } else if self.world.turns.inside(id).is_none() {
            // No call inside (a waiter handed the turn but not yet run is
            // not): the copy goes now, and its waiters follow the object.
            log::warn!(
                "{id} is here at epoch {ours}, and {from} announces it at epoch {epoch}: it moved \
                 on, this copy is dropped"
            );
            exec::leave(&mut self.world, id, from.clone(), epoch, &mut self.pending);
        } else {
            // A call is inside: it ends here, and the copy leaves then,
            // before the next call runs in it (those follow it).
            let newest = match self.world.superseded.get(&id) {
                Some((_, known)) => epoch_newer(epoch, *known),
                None => true,
            };
            if newest {
                log::warn!(
                    "{id} is here at epoch {ours}, and {from} announces it at epoch {epoch}: it \
                     moved on, this copy is dropped when the call inside it ends"
                );
                self.world.superseded.insert(id, (from.clone(), epoch));
            }
            return false;
        }
        self.apply_effects();
        true
    }

    /// `from` says it destroyed object `id` (its `destroy_notify`). If a
    /// move of `id` to `from` is in doubt here, `from` held it, so the
    /// move was made: it ends as for [`Vm::announced_elsewhere`], and the
    /// driver then applies the notice to the directory as usual.
    pub fn destroyed_elsewhere(&mut self, id: ObjectId, from: &MachineId) {
        if self.world.in_doubt.get(&id).is_some_and(|d| d.to == *from) {
            log::info!("move of {id}: {from} destroyed it; the move was made");
            self.settle_doubt(id, Ok(Val::Bool(true)));
            self.apply_effects();
        }
        // A replica of it goes with it (unless a call is inside: it stays
        // a copy of nothing until fetched again or dropped by its owner's
        // next word).
        let owner_says = self.world.directory.machine_of(id) == Some(from);
        if owner_says
            && self.world.replicas.contains_key(&id)
            && self.world.turns.owner(id).is_none()
        {
            self.world.replicas.remove(&id);
            self.world.objects.remove(&id);
            self.world.turns.forget(id);
            log::debug!("replica of {id} dropped: {from}, its owner, destroyed it");
        }
    }

    /// `from` says object `id` moved on from it at `epoch` (its
    /// `move_notify`). If a move of `id` to `from` is in doubt here and
    /// that epoch is past the one the move gave it, `from` held it and
    /// moved it on: the move was made (its snapshot, which skips objects
    /// that left, will not say so). The driver then applies the notice.
    pub fn moved_elsewhere(&mut self, id: ObjectId, from: &MachineId, epoch: u16) {
        let ours = self.world.epochs.get(&id).copied().unwrap_or(0);
        let in_doubt_to_sender = self.world.in_doubt.get(&id).is_some_and(|d| d.to == *from);
        if in_doubt_to_sender && epoch_newer(epoch, next_epoch(ours)) {
            log::info!("move of {id}: {from} moved it on at epoch {epoch}; the move was made");
            self.settle_doubt(id, Ok(Val::Bool(true)));
            self.apply_effects();
        }
    }

    /// `machine`'s directory snapshot to this node ended ("directory
    /// synced"). A move to it still in doubt did not land there: its
    /// snapshot would have announced the object first. The object stays
    /// here and thaws, and its mover gets `false`.
    pub fn peer_synced(&mut self, machine: &MachineId) {
        // Only a snapshot from a connection newer than the lost answer's:
        // an older one may have been listed before the adopt landed.
        let ups = self.world.directory.ups(machine);
        let stayed: Vec<ObjectId> = self
            .world
            .in_doubt
            .iter()
            .filter(|(_, d)| d.to == *machine && d.ups != ups)
            .map(|(&id, _)| id)
            .collect();
        for id in stayed {
            log::info!("move of {id} to {machine}: it did not take it; the object stays here");
            let reason = format!(
                "the adopt's answer was lost, and {machine}'s directory, synced since, does not hold it"
            );
            self.settle_doubt(id, Err(reason));
        }
        self.apply_effects();
    }

    /// The answer to the `adopt` that left with `token` came after all:
    /// the call had timed out, and its connection stayed up. If that move
    /// is still in doubt (the new home's notices did not settle it first),
    /// the answer settles it: `true`, the move was made; anything else,
    /// the object stays here and thaws, and its mover gets `false`.
    pub fn late_adopt_answer(&mut self, token: SuspendToken, result: Result<Val, String>) {
        let mover_of = |d: &InDoubt| d.mover.map(|(_, t)| t);
        let doubt = self
            .world
            .in_doubt
            .iter()
            .find(|(_, d)| mover_of(d) == Some(token));
        let Some((&id, d)) = doubt else {
            return;
        };
        let verdict = match result {
            Ok(Val::Bool(true)) => "took it; the move was made",
            _ => "did not take it; the object stays here",
        };
        log::info!(
            "move of {id} to {}: its late answer says it {verdict}",
            d.to
        );
        self.settle_doubt(id, result);
        self.apply_effects();
    }

    /// Ends the move of `id` in doubt with the answer its `adopt` would
    /// have had; the mover runs on (a move restored from the store has
    /// none: the object leaves or thaws, and its waiting calls go on).
    fn settle_doubt(&mut self, id: ObjectId, answer: Result<Val, String>) {
        let Some(doubt) = self.world.in_doubt.remove(&id) else {
            return;
        };
        let Some((key, _)) = doubt.mover else {
            let _ = exec::settle_move(&mut self.world, id, doubt.to, answer, &mut self.pending);
            return;
        };
        let chain = self
            .chains
            .get_mut(key)
            .expect("a parked mover is never runnable, so never finishes");
        let moved = exec::finish_move(&mut self.world, chain, answer, &mut self.pending);
        chain.next = Some(Next::Answer(moved));
        self.runnable.push_back(key);
    }

    /// Run every runnable chain until it finishes or suspends, appending
    /// outputs in the order their effects happened. A chain that never
    /// finishes or suspends keeps this from returning: a driver that must
    /// stay responsive uses [`Vm::run_for`].
    pub fn run(&mut self, out: &mut Vec<Output>) {
        while self.run_for(u32::MAX, out) {}
    }

    /// Moves into `out` what operations served outside a run
    /// ([`Vm::serve_op`], notices) have to say, so that it can leave before
    /// the operation's answer; a run takes it too.
    pub fn take_pending(&mut self, out: &mut Vec<Output>) {
        out.append(&mut self.pending);
    }

    /// Whether local object `id` is on its way to another node (its move's
    /// answer not come yet, or lost).
    pub fn is_moving(&self, id: ObjectId) -> bool {
        self.world.moving.contains_key(&id)
    }

    /// Whether a run would do anything: a chain ready to run, or output
    /// waiting (after [`Vm::resume`] outside a run, say).
    pub fn has_work(&self) -> bool {
        !self.runnable.is_empty() || !self.pending.is_empty()
    }

    /// Like [`Vm::run`], but returns once chains have taken about `steps`
    /// steps in all (one step is one instruction, answer or call entry),
    /// answering whether runnable work is left. Each chain's turn lasts
    /// until it finishes or suspends, or for `steps` steps at most: a
    /// chain that runs longer without suspending goes to the back of the
    /// queue, so one that loops for ever delays the others by at most
    /// `steps` steps a turn instead of starving them. A chain's local work
    /// is never interleaved with another chain's before that point, so
    /// read-modify-write sequences shorter than `steps` stay atomic.
    pub fn run_for(&mut self, steps: u32, out: &mut Vec<Output>) -> bool {
        out.append(&mut self.pending);
        let mut spent: u32 = 0;
        while spent < steps {
            let Some(key) = self.runnable.pop_front() else {
                break;
            };
            let Some(chain) = self.chains.get_mut(key) else {
                continue;
            };
            let mut budget = steps;
            self.world.trace.set_chain(Some(chain.id));
            let status = exec::drive(&mut self.world, chain, key, out, &mut budget);
            self.world.trace.set_chain(None);
            spent = spent.saturating_add(steps - budget);
            if self.world.has_effects() {
                self.apply_effects();
                out.append(&mut self.pending);
            }
            let result = match status {
                Status::Finished(result) => result,
                Status::Suspended | Status::Waiting => continue,
                Status::Paused => {
                    self.runnable.push_back(key);
                    continue;
                }
            };
            let mut chain = self.chains.remove(key);
            let w = &mut self.world;
            forget_chain_key(
                &mut w.chain_keys,
                &mut w.chain_gone,
                &mut self.chains,
                &chain,
                key,
            );
            self.world.frames_total -= chain.frames.len();
            if let Some(tx) = chain.tx.take() {
                // A chain that ends with its transaction open aborts it.
                exec::abort(&mut self.world, *tx);
            }
            out.push(Output::Finished {
                origin: chain.origin,
                chain: chain.id,
                result,
                last_failure: chain.last_failure.take(),
            });
            self.recycle(chain);
        }
        !self.runnable.is_empty()
    }

    /// A deadlock probe from another node (the `probe` message).
    pub fn handle_probe(&mut self, probe: Probe) {
        deadlock::on_probe(&mut self.world, &self.chains, probe, &mut self.pending);
        self.apply_effects();
    }

    /// Another node found a deadlock whose victim may wait here (the
    /// `deadlock` message): its waiting call fails if it still waits.
    pub fn handle_victim(&mut self, cycle: Cycle) {
        deadlock::on_victim(&mut self.world, cycle, &mut self.pending);
        self.apply_effects();
    }

    /// Acts on what the engine left in the world: calls that started
    /// waiting (checked for deadlocks), calls given their turn (runnable
    /// again), waiting calls that must fail.
    fn apply_effects(&mut self) {
        loop {
            let waits = std::mem::take(&mut self.world.new_waits);
            for (_, chain, object) in &waits {
                deadlock::on_wait(
                    &mut self.world,
                    &self.chains,
                    *chain,
                    *object,
                    &mut self.pending,
                );
            }
            let mut waits = waits;
            waits.clear();
            self.world.new_waits = waits;
            for (key, e) in self.world.to_fail.drain(..) {
                if let Some(c) = self.chains.get_mut(key) {
                    c.next = Some(match c.next {
                        // A waiting move answers false, as moves do.
                        Some(Next::Move(_)) => {
                            self.world.trace.error(&e);
                            c.last_failure = Some(e);
                            Next::Answer(Val::Bool(false))
                        }
                        _ => Next::CallFailed(e),
                    });
                    self.runnable.push_back(key);
                }
            }
            for (id, machine, epoch) in self.world.departed.drain(..) {
                self.pending.push(Output::Moved { id, machine, epoch });
            }
            self.runnable.extend(self.world.woken.drain(..));
            if !self.world.has_effects() {
                return;
            }
        }
    }

    /// The objects map's capacity (for tests: memory comes back).
    #[cfg(test)]
    pub(crate) fn object_capacity(&self) -> usize {
        self.world.objects.capacity()
    }

    /// Spare chains kept, and the chain table's slots (for
    /// tests: a burst's memory comes back when idle).
    #[cfg(test)]
    pub(crate) fn spare_and_chain_slots(&self) -> (usize, usize) {
        (self.spare.len(), self.chains.capacity())
    }

    /// The most frame slots a spare holds (for tests: deep chains reuse).
    #[cfg(test)]
    pub(crate) fn spare_frame_slots(&self) -> usize {
        self.spare
            .iter()
            .map(|s| s.frames.capacity())
            .max()
            .unwrap_or(0)
    }

    /// Chain ids with chains here, or with gone places counted (for
    /// tests: both must empty).
    #[cfg(test)]
    pub(crate) fn chain_ids_tracked(&self) -> usize {
        self.world.chain_keys.len().max(self.world.chain_gone.len())
    }

    /// Places the index keeps for chain `id`, live or `GONE` (for tests).
    #[cfg(test)]
    pub(crate) fn chain_key_places(&self, id: ChainId) -> usize {
        self.world.chain_keys.get(&id).map_or(0, |keys| keys.len())
    }

    /// Objects with a turn entry (for tests: entries must not outlive objects).
    #[cfg(test)]
    pub(crate) fn turn_entries(&self) -> usize {
        self.world.turns.entries()
    }

    /// Calls waiting for an object's turn, all objects together.
    pub fn waiting_count(&self) -> usize {
        self.world.turns.waiting()
    }

    /// Empties a finished chain into the spare pool, if there is room.
    fn recycle(&mut self, mut chain: Box<Chain>) {
        if self.spare.len() >= SPARE_CHAINS {
            return;
        }
        // Field by field, as `Chain::empty` leaves them: no field is
        // missed (the pattern names them all) and the chain never moves.
        let Chain {
            id,
            origin,
            frames,
            conts,
            inputs,
            next,
            token,
            remote_target,
            tx,
            last_failure,
            remote_op,
            scry,
            moving_to,
            key_slot,
        } = &mut *chain;
        (*id, *origin, *remote_target) = (ChainId(0), 0, ObjectId(0));
        *key_slot = 0;
        frames.clear();
        conts.clear();
        inputs.clear();
        frames.shrink_to(SPARE_CAPACITY);
        conts.shrink_to(SPARE_CAPACITY);
        inputs.shrink_to(SPARE_CAPACITY);
        *next = None;
        *token = None;
        *tx = None;
        *last_failure = None;
        *remote_op = None;
        *scry = None;
        *moving_to = None;
        let bytes = spare_bytes(&chain);
        if self.spare_bytes + bytes <= SPARE_BYTES {
            self.spare_bytes += bytes;
            self.spare.push(chain);
        }
    }

    /// Gives back what a burst of chains left: the spare chains past a
    /// few, and the chain tables once no chain is left. For a host that
    /// finds the vm idle (the node's interpreter, once it has been idle a
    /// while): under steady traffic these stay as they are and nothing
    /// reallocates. Answers whether anything was given back.
    pub fn release_idle_memory(&mut self) -> bool {
        let spares = self.spare.len();
        self.spare.truncate(SPARE_CHAINS_IDLE);
        self.spare.shrink_to(SPARE_CHAINS_IDLE);
        self.spare_bytes = self.spare.iter().map(|c| spare_bytes(c)).sum();
        let mut gave = self.spare.len() < spares;
        if self.chains.is_empty() && self.chains.capacity() > IDLE_SLOTS {
            self.chains = Slab::new();
            gave = true;
        }
        gave |= heap::shrink_when_idle(&mut self.runnable);
        let w = &mut self.world;
        gave |= heap::shrink_when_idle(&mut w.chain_keys);
        gave |= heap::shrink_when_idle(&mut w.chain_gone);
        gave |= w.turns.shrink_when_idle();
        gave |= heap::shrink_when_idle(&mut w.woken);
        gave |= heap::shrink_when_idle(&mut w.to_fail);
        gave |= heap::shrink_when_idle(&mut w.new_waits);
        gave | heap::shrink_when_idle(&mut self.pending)
    }

    /// Chains waiting on a remote answer.
    pub fn suspended_count(&self) -> usize {
        self.chains.len() - self.runnable.len()
    }

    /// The trace, to switch its mode or take its events.
    pub fn trace_mut(&mut self) -> &mut Trace {
        &mut self.world.trace
    }

    pub fn trace(&self) -> &Trace {
        &self.world.trace
    }
}

/// Chain `key` finished: it leaves the index of its id's chains. Its
/// place there becomes [`GONE`] (so the others keep theirs), and gone
/// places at the end are dropped, so the last place is always a live
/// chain's, the innermost. Chains of one id end innermost first in the
/// normal run of things, and then nothing is left behind; when a lost
/// connection fails thousands of them at once in another order, each
/// still leaves in O(1) (a search and shift per chain made that
/// quadratic: 21 s of a node's time after a 288k-deep game's peer died).
///
/// `gone` counts each id's `GONE` places that are not at the end. Calls
/// on one id that overlap and end oldest first (a client reusing an id,
/// retries after timeouts) would otherwise leave a place per call for as
/// long as one of them runs: once the list is [`COMPACT_FROM`] long and
/// more than half of it is gone, it is compacted (amortized O(1), and
/// never for a list without gone places, however deep).
fn forget_chain_key(
    index: &mut ChainKeys,
    gone: &mut GoneCounts,
    chains: &mut Chains,
    chain: &Chain,
    key: usize,
) {
    let id = chain.id;
    let Some(keys) = index.get_mut(&id) else {
        return;
    };
    let slot = chain.key_slot as usize;
    if slot + 1 == keys.len() {
        keys.pop();
        let mut dropped = 0;
        while keys.last() == Some(&GONE) {
            keys.pop();
            dropped += 1;
        }
        if dropped > 0 {
            if let Some(n) = gone.get_mut(&id) {
                *n -= dropped;
            }
        }
    } else if let Some(place) = keys.get_mut(slot) {
        debug_assert_eq!(*place, key, "a chain's key_slot holds its key");
        *place = GONE;
        let n = gone.entry(id).or_insert(0);
        *n += 1;
        if keys.len() >= COMPACT_FROM && *n as usize * 2 > keys.len() {
            compact_chain_keys(keys, chains);
            *n = 0;
        }
    }
    let empty = keys.is_empty();
    if empty {
        index.remove(&id);
    }
    // Almost always empty: chains of one id end innermost first.
    if !gone.is_empty() && (empty || gone.get(&id) == Some(&0)) {
        gone.remove(&id);
    }
}

/// A place in `World::chain_keys` whose chain has ended (no slab key is
/// this large).
const GONE: usize = usize::MAX;

/// The shortest list of one id's chains that is compacted (see
/// [`forget_chain_key`]).
const COMPACT_FROM: usize = 32;

/// Drops the `GONE` places of one id's chains, keeping the others in
/// order, and tells each live chain its new place.
fn compact_chain_keys(keys: &mut SmallVec<[usize; 2]>, chains: &mut Chains) {
    keys.retain(|key| *key != GONE);
    for (slot, &key) in keys.iter().enumerate() {
        if let Some(chain) = chains.get_mut(key) {
            chain.key_slot = slot as u32;
        }
    }
}
