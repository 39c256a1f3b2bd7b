//! The engine: runs one chain until it finishes or suspends.
//!
//! A chain is plain data: a stack of [`Frame`]s (one per active call) and
//! one shared stack of continuations, each frame owning the continuations
//! above its `cont_base`. Calling an object pushes a frame; returning pops
//! it. Nothing here recurses on the Rust stack: `drive` is a loop over
//! [`Next`], so call depth costs heap, never stack, and a suspended chain
//! is just this data waiting for `Vm::resume`.
//!
//! Invariants:
//! - `frames[i].cont_base <= frames[i+1].cont_base <= conts.len()`;
//! - `inputs.len()` is the number of frames with `input_kept`, and the top
//!   frame's kept input, if any, is `inputs.last()`;
//! - a chain with `token: Some(_)` is suspended and has `next: None`;
//!   a runnable chain has `next: Some(_)` and `token: None`; a chain
//!   waiting for a turn has `next: Some(Next::Enter { granted: true, .. })`
//!   (or a `Next::Move` with `granted`) and is in neither the runnable
//!   queue nor suspended on a token;
//! - a chain moving an object holds its turn from the grant until the new
//!   home's answer to `adopt` (`moving_to` is set meanwhile);
//! - every frame of an object holds one hold of that object's turn
//!   (`World::turns`), taken before the frame is pushed and given back when
//!   it is popped;
//! - behavior and continuation code runs inside `catch_unwind`: a panic
//!   fails that call only, and the vm's own data is never borrowed by
//!   user code, so it stays consistent.

use log::warn;
use std::sync::Arc;

use super::directory::{epoch_newer, next_epoch};
use super::error::{RemoteFailure, VmError};
use super::ids::{
    shrink_if_sparse, ChainId, ControllerId, MachineId, ObjectId, SuspendToken, TxId,
};
use super::output::{Output, RemoteCall, RemoteOp};
use super::program::{Cont, ContFn, Instr, Program};
use super::registry::Ctx;
use super::trace::{Event, EventKind};
use super::turns::Take;
use super::tx::Tx;
use super::value::Val;
use super::world::{InDoubt, Obj, Replica, World};

/// No object: ids are never minted as 0.
const NONE: ObjectId = ObjectId(0);
/// Behavior index of a top-level program's frame.
pub(crate) const PROGRAM: u32 = u32::MAX;

/// One active call.
#[derive(Debug)]
pub(crate) struct Frame {
    self_id: ObjectId,
    sender: ObjectId,
    behavior: u32,
    /// Continuations at or above this index belong to this frame.
    cont_base: u32,
    /// Whether `get_input` may read the kept input (the behavior keeps it).
    input_visible: bool,
    /// Whether a copy of the input (for `get_input` or a `Full` trace) is
    /// on top of `Chain::inputs` for this frame. Kept out of line so a
    /// frame stays 32 bytes: a million-deep chain is 32 MB of frames.
    input_kept: bool,
}

impl Frame {
    pub(crate) fn program(cont_base: usize) -> Frame {
        Frame {
            self_id: NONE,
            sender: NONE,
            behavior: PROGRAM,
            cont_base: cont_base as u32,
            input_visible: false,
            input_kept: false,
        }
    }
}

/// What a runnable chain does next.
pub(crate) enum Next {
    Run(Program),
    /// Feed a value to the current frame's top continuation, or return it.
    Answer(Val),
    /// A remote call's answer, fed as `Just(answer)`. Boxed when the
    /// chain runs rather than as the answer is handed in: a batch of
    /// answers resumes hundreds of chains before any runs, and boxing
    /// them all first overran the allocator's per-thread cache (about 80
    /// instructions per call on the caller's interpreter).
    Reply(Val),
    /// Fail the current frame.
    Fail(VmError),
    /// Call local object `target`: the root call of a chain started by
    /// `Vm::start_call` (`granted: false`, the turn is asked for first),
    /// or a call whose turn came after waiting (`granted: true`).
    Enter {
        target: ObjectId,
        input: Val,
        sender: ObjectId,
        granted: bool,
    },
    /// A call that never entered failed (busy, deadlock victim, object
    /// destroyed while it waited): its caller gets `Nothing`; a root call
    /// fails its chain.
    CallFailed(VmError),
    /// Move local object `target` to `to` (`move_object`, or a `move`
    /// operation another node asked for, under `caller`'s controller):
    /// takes the object's turn first, like a call (`granted` once given).
    Move(Box<MoveStep>),
}

/// A `move_object` on its way: see `Next::Move`.
pub(crate) struct MoveStep {
    pub(crate) target: ObjectId,
    pub(crate) to: MachineId,
    pub(crate) caller: Option<ControllerId>,
    pub(crate) granted: bool,
}

/// The vm's chains by key. Boxed, so a chain's 248 bytes stay where they
/// are as it enters and leaves the table (three copies per inbound call,
/// when they were inline), and a finished one goes to the spare pool whole.
pub(crate) type Chains = slab::Slab<Box<Chain>>;

pub(crate) struct Chain {
    pub(crate) id: ChainId,
    pub(crate) origin: u64,
    pub(crate) frames: Vec<Frame>,
    pub(crate) conts: Vec<Box<ContFn>>,
    /// Kept inputs, one per frame with `input_kept`, in frame order.
    pub(crate) inputs: Vec<Val>,
    pub(crate) next: Option<Next>,
    pub(crate) token: Option<SuspendToken>,
    /// Target of the remote call this chain waits on (for error messages).
    pub(crate) remote_target: ObjectId,
    /// Boxed: most chains run no transaction, and every chain in flight
    /// and every spare pays for the chain's size (it was 392 bytes with
    /// the transaction inline).
    pub(crate) tx: Option<Box<Tx>>,
    /// Why the chain's last failed call failed (that `call` answered
    /// `Nothing`); the driver may report it with the chain's result.
    pub(crate) last_failure: Option<VmError>,
    /// The operation the chain waits on, when its remote call is one.
    pub(crate) remote_op: Option<RemoteOp>,
    /// A `scry_meta` asking the other nodes one after another.
    pub(crate) scry: Option<Box<Scry>>,
    /// Where the object this chain moves is being adopted (its remote
    /// call is the `adopt`; the chain holds the object's turn meanwhile).
    pub(crate) moving_to: Option<MachineId>,
    /// Where its key sits in `World::chain_keys` for its id, so that it
    /// leaves that list in O(1) whichever of the id's chains ends first.
    pub(crate) key_slot: u32,
}

impl Chain {
    /// A chain with no id and nothing to run, as a spare is (`Vm::recycle`
    /// resets one to this, keeping its buffers' capacity).
    pub(crate) fn empty() -> Chain {
        Chain {
            id: ChainId(0),
            origin: 0,
            frames: Vec::new(),
            conts: Vec::new(),
            inputs: Vec::new(),
            next: None,
            token: None,
            remote_target: ObjectId(0),
            tx: None,
            last_failure: None,
            remote_op: None,
            scry: None,
            moving_to: None,
            key_slot: 0,
        }
    }
}

/// A `scry_meta` on its way round the cluster.
pub(crate) struct Scry {
    pub(crate) filter: Val,
    /// Nodes still to ask.
    pub(crate) machines: Vec<MachineId>,
    /// Matches so far.
    pub(crate) found: Vec<ObjectId>,
}

pub(crate) enum Status {
    Suspended,
    /// Waiting for an object's turn; `c.next` holds the call.
    Waiting,
    Finished(Result<Val, VmError>),
    /// The step budget ran out; `c.next` holds where to go on.
    Paused,
}

pub(crate) enum Flow {
    Go(Next),
    Suspend,
    Wait(Next),
    Finish(Result<Val, VmError>),
}

/// The only ways frames come and go, so `World::frames_total` (checked
/// against `max_depth`) always equals the frames all chains hold.
/// (They take the counter rather than the `World`, whose behaviors table
/// is often borrowed at the same time.)
pub(crate) fn push_frame(frames_total: &mut usize, c: &mut Chain, frame: Frame) {
    *frames_total += 1;
    c.frames.push(frame);
}

fn pop_frame(frames_total: &mut usize, c: &mut Chain) -> Option<Frame> {
    let frame = c.frames.pop()?;
    *frames_total -= 1;
    Some(frame)
}

/// Run `c` (slab key `key`) until it finishes, suspends, or has taken
/// `budget` steps (each step takes one from it).
pub(crate) fn drive(
    w: &mut World,
    c: &mut Chain,
    key: usize,
    out: &mut Vec<Output>,
    budget: &mut u32,
) -> Status {
    // The step in hand stays in a local while the chain runs, and goes
    // back into `c.next` only when the chain stops: moving it in and out
    // of the chain at every step cost a drop check and two copies.
    let Some(mut next) = c.next.take() else {
        return Status::Suspended;
    };
    loop {
        if *budget == 0 {
            c.next = Some(next);
            return Status::Paused;
        }
        *budget -= 1;
        let flow = match next {
            Next::Run(Program::Done(v)) | Next::Answer(v) => answer(w, c, v),
            Next::Reply(v) => answer(w, c, Val::just(v)),
            Next::Run(Program::Step(instr, cont)) => {
                match cont {
                    Cont::Return => {}
                    Cont::Then(k) => c.conts.push(k),
                    Cont::Seq(ks) => c.conts.extend(ks),
                }
                exec(w, c, key, instr, out)
            }
            Next::Fail(e) => fail(w, c, e),
            Next::CallFailed(e) => call_failed(w, c, e),
            Next::Enter {
                target,
                input,
                sender,
                granted,
            } => match resolve(w, c.tx.as_deref(), target) {
                Ok(b) => call_local(w, c, key, target, b, input, sender, granted),
                Err(e) => {
                    if granted {
                        release_turn(w, target);
                    }
                    match w.directory.machine_of(target) {
                        // It moved away (while this call waited, or before
                        // the caller knew): forwarded to its new home. Only
                        // a moved object's: a node relays no other calls.
                        Some(m) if w.directory.epoch_of(target) > 0 => {
                            let m = m.clone();
                            suspend(w, c, key, m, target, input, sender, None, out)
                        }
                        _ => call_failed(w, c, e),
                    }
                }
            },
            Next::Move(step) => move_local(w, c, key, step, out),
        };
        match flow {
            Flow::Go(n) => next = n,
            Flow::Suspend => return Status::Suspended,
            Flow::Wait(n) => {
                c.next = Some(n);
                return Status::Waiting;
            }
            Flow::Finish(r) => return Status::Finished(r),
        }
    }
}

fn behavior_name(w: &World, index: u32) -> Arc<str> {
    if index == PROGRAM {
        w.program_name.clone()
    } else {
        w.behaviors.get(index).name.clone()
    }
}

fn answer(w: &mut World, c: &mut Chain, v: Val) -> Flow {
    let Some(frame) = c.frames.last() else {
        return Flow::Finish(Ok(v));
    };
    if c.conts.len() > frame.cont_base as usize {
        let k = c.conts.pop().expect("checked non-empty above");
        return match crate::quiet_panic::catch(move || k(v)) {
            Ok(p) => Flow::Go(Next::Run(p)),
            Err(why) => {
                let name = behavior_name(w, frame.behavior);
                warn!(
                    "behavior {name} panicked in object {}: {why}",
                    frame.self_id
                );
                Flow::Go(Next::Fail(VmError::BehaviorPanicked(name)))
            }
        };
    }
    if c.tx.as_deref().is_some_and(|tx| tx.depth == c.frames.len()) {
        // The call that began the transaction returns with it open.
        let tx = abort(w, *c.tx.take().expect("checked above"));
        return Flow::Go(Next::Fail(VmError::TxLeftOpen(tx)));
    }
    let frame = pop_frame(&mut w.frames_total, c).expect("checked above");
    let input = if frame.input_kept {
        c.inputs.pop()
    } else {
        None
    };
    if frame.self_id != NONE {
        release_turn(w, frame.self_id);
        w.trace
            .record(EventKind::ObjectCalled, || Event::ObjectCalled {
                id: frame.self_id,
                input: input.unwrap_or(Val::Nothing),
                output: v.clone(),
            });
    }
    if c.frames.is_empty() {
        Flow::Finish(Ok(v))
    } else {
        Flow::Go(Next::Answer(Val::just(v)))
    }
}

fn fail(w: &mut World, c: &mut Chain, e: VmError) -> Flow {
    w.trace.error(&e);
    if c.tx.as_deref().is_some_and(|tx| tx.depth == c.frames.len()) {
        // The call that began the transaction fails: so does the transaction.
        abort(w, *c.tx.take().expect("checked above"));
    }
    if let Some(frame) = pop_frame(&mut w.frames_total, c) {
        c.conts.truncate(frame.cont_base as usize);
        if frame.input_kept {
            c.inputs.pop();
        }
        if frame.self_id != NONE {
            release_turn(w, frame.self_id);
        }
    }
    if c.frames.is_empty() {
        Flow::Finish(Err(e))
    } else {
        c.last_failure = Some(e);
        Flow::Go(Next::Answer(Val::Nothing))
    }
}

/// A call that never entered its object failed: the caller's `call`
/// answers `Nothing`, or, for a chain's root call, the chain fails.
fn call_failed(w: &mut World, c: &mut Chain, e: VmError) -> Flow {
    w.trace.error(&e);
    if c.frames.is_empty() {
        Flow::Finish(Err(e))
    } else {
        c.last_failure = Some(e);
        Flow::Go(Next::Answer(Val::Nothing))
    }
}

/// Gives back one hold of `object`'s turn; the next waiter, if the turn
/// passes to it, becomes runnable.
fn release_turn(w: &mut World, object: ObjectId) {
    if !w.superseded.is_empty() && w.turns.last_hold(object) {
        // The call inside a copy announced elsewhere ends: the copy leaves
        // now, so no call enters it again (not even this chain's next);
        // the waiting ones follow it.
        if let Some((to, epoch)) = w.superseded.remove(&object) {
            if depart(w, object, &to, epoch) {
                w.departed.push((object, to, epoch));
            }
        }
    }
    if let Some(next) = w.turns.release(object) {
        w.woken.push(next.key);
    }
}

/// A call to local object `target` (behavior `b`): takes its turn (or
/// re-enters it), waits for it, or is refused, then enters.
#[allow(clippy::too_many_arguments)]
fn call_local(
    w: &mut World,
    c: &mut Chain,
    key: usize,
    target: ObjectId,
    b: u32,
    input: Val,
    sender: ObjectId,
    granted: bool,
) -> Flow {
    let moving = !w.moving.is_empty() && w.moving.contains_key(&target);
    if !granted && moving && w.turns.owner(target) == Some(c.id) {
        // The moving chain itself re-entering (its id came back from
        // another node): the record is on its way, or in doubt, so nothing
        // may run inside it, and waiting would wait on itself.
        return Flow::Go(Next::CallFailed(VmError::Moving(target)));
    }
    if !granted {
        match w.turns.take(target, c.id, key) {
            Take::Granted => {}
            Take::Queued => {
                w.new_waits.push((key, c.id, target));
                return Flow::Wait(Next::Enter {
                    target,
                    input,
                    sender,
                    granted: true,
                });
            }
            Take::Busy => return Flow::Go(Next::CallFailed(VmError::Busy(target))),
        }
    } else {
        w.turns.entered(target);
    }
    enter(w, c, target, b, input, sender)
}

/// `move_object` of `step.target`: at its node, takes its turn (waiting
/// like a call), then hands its record to the new home (an `adopt`) and
/// holds the turn until the answer (see `finish_move`). Elsewhere, asks
/// its node (a `move` operation).
fn move_local(
    w: &mut World,
    c: &mut Chain,
    key: usize,
    mut step: Box<MoveStep>,
    out: &mut Vec<Output>,
) -> Flow {
    let target = step.target;
    if !w.owns(target) {
        if step.granted {
            release_turn(w, target);
        }
        // A replica here, or it moved away while this waited: its node moves it.
        let Some(m) = w.directory.machine_of(target).cloned() else {
            let e = if w.objects.contains_key(&target) || w.ids.minted(target.0) {
                VmError::DestroyedObject(target)
            } else {
                VmError::UnknownObject(target)
            };
            return refuse_move(w, c, &step, false, e);
        };
        let input = Val::pair(
            controller_val(step.caller),
            Val::Str(step.to.as_str().to_owned()),
        );
        let sender = c.frames.last().map_or(NONE, |f| f.self_id);
        return suspend(
            w,
            c,
            key,
            m,
            target,
            input,
            sender,
            Some(RemoteOp::Move),
            out,
        );
    }
    let owner = w.objects[&target].controller;
    if !authorized(owner, step.caller) {
        log::info!("move_object of {target} refused: not its controller");
        let e = VmError::Refused("move_object by a chain not under the object's controller");
        return refuse_move(w, c, &step, step.granted, e);
    }
    if step.to == w.machine {
        if step.granted {
            release_turn(w, target);
        }
        return Flow::Go(Next::Answer(Val::Bool(true)));
    }
    if !w.directory.is_up(&step.to) {
        let e = VmError::Refused("move_object to a machine that is not a connected peer");
        return refuse_move(w, c, &step, step.granted, e);
    }
    if !step.granted {
        if w.turns.owner(target) == Some(c.id) {
            // Its frame, on this chain (here or suspended), cannot cross.
            let e = VmError::Refused("move_object of an object running on the moving chain");
            return refuse_move(w, c, &step, false, e);
        }
        match w.turns.take(target, c.id, key) {
            Take::Granted => step.granted = true,
            Take::Queued => {
                w.new_waits.push((key, c.id, target));
                step.granted = true;
                return Flow::Wait(Next::Move(step));
            }
            Take::Busy => return refuse_move(w, c, &step, false, VmError::Busy(target)),
        }
    }
    // The turn is ours: no call is inside the object until the answer.
    // The replica record, then the epoch it will have there and its names.
    let Val::List(mut record) = replica_record(w, &w.objects[&target]) else {
        unreachable!("a record is a list")
    };
    let epoch = next_epoch(w.epochs.get(&target).copied().unwrap_or(0));
    let names = w.directory.names_of(target);
    record.push(Val::Nat(u64::from(epoch)));
    record.push(Val::List(
        names.iter().map(|n| Val::Str(n.to_string())).collect(),
    ));
    let record = Val::List(record);
    c.moving_to = Some(step.to.clone());
    w.moving.insert(target, step.to.clone());
    // A durable node stores where the object is going before the adopt
    // leaves (outgoing calls wait for the disk): a life restarted after the
    // new home took it must not serve this copy meanwhile.
    w.mark_changed(target);
    suspend(
        w,
        c,
        key,
        step.to,
        target,
        record,
        NONE,
        Some(RemoteOp::Adopt),
        out,
    )
}

/// A move that does not happen: `Bool(false)`, its reason traced and kept
/// on the chain; the turn given back if `holding` it.
fn refuse_move(w: &mut World, c: &mut Chain, step: &MoveStep, holding: bool, e: VmError) -> Flow {
    if holding {
        release_turn(w, step.target);
    }
    w.trace.error(&e);
    c.last_failure = Some(e);
    Flow::Go(Next::Answer(Val::Bool(false)))
}

/// The new home answered a move's `adopt`: on `Bool(true)` the object
/// leaves (its directory entry, names and waiting calls now point at the
/// new home; peers are told by `Output::Moved`); otherwise it stays. The
/// turn is given back either way, and the answer is `move_object`'s.
pub(crate) fn finish_move(
    w: &mut World,
    c: &mut Chain,
    result: Result<Val, String>,
    out: &mut Vec<Output>,
) -> Val {
    let target = c.remote_target;
    let to = c
        .moving_to
        .take()
        .expect("a chain awaiting adopt knows where");
    c.remote_op = None;
    match settle_move(w, target, to, result, out) {
        Ok(()) => Val::Bool(true),
        Err(e) => {
            c.last_failure = Some(e);
            Val::Bool(false)
        }
    }
}

/// Ends the move of `target` to `to` with the new home's answer (or what
/// stands for it): made on `Bool(true)`, and the object leaves; otherwise
/// it stays, and the error says why. Either way it is no longer moving
/// (a durable node stores it again, without `to`) and its turn is given
/// back, to its mover's chain or to [`RESTORED_MOVER`](super::world::RESTORED_MOVER).
pub(crate) fn settle_move(
    w: &mut World,
    target: ObjectId,
    to: MachineId,
    result: Result<Val, String>,
    out: &mut Vec<Output>,
) -> Result<(), VmError> {
    w.moving.remove(&target);
    w.in_doubt.remove(&target);
    w.heard_while_moving.remove(&target);
    let adopted = matches!(result, Ok(Val::Bool(true)));
    let outcome = if adopted {
        let epoch = next_epoch(w.epochs.get(&target).copied().unwrap_or(0));
        leave(w, target, to, epoch, out);
        Ok(())
    } else {
        w.mark_changed(target);
        let e = match result {
            Err(reason) => VmError::RemoteFailed(Box::new(RemoteFailure { target, reason })),
            Ok(_) => VmError::Refused(
                "move_object: the target node did not adopt the object (its log says why: its \
                 behavior not registered there, an older copy than it knows of, ...)",
            ),
        };
        w.trace.error(&e);
        Err(e)
    };
    release_turn(w, target);
    outcome
}

/// Object `target` lives on `to` now, at `epoch`: it leaves here. Its
/// directory entry and names point there, peers are told (`Output::Moved`),
/// and calls waiting for its turn wake one by one and follow it.
pub(crate) fn leave(
    w: &mut World,
    target: ObjectId,
    to: MachineId,
    epoch: u16,
    out: &mut Vec<Output>,
) {
    if depart(w, target, &to, epoch) {
        out.push(Output::Moved {
            id: target,
            machine: to,
            epoch,
        });
    }
}

/// [`leave`] but for telling peers (`Output::Moved`), which the caller
/// owes when this answers true (the object was here).
fn depart(w: &mut World, target: ObjectId, to: &MachineId, epoch: u16) -> bool {
    let Some(o) = w.objects.remove(&target) else {
        return false;
    };
    shrink_if_sparse(&mut w.objects);
    w.epochs.remove(&target);
    let behavior = w.behaviors.get(o.behavior).name.clone();
    w.mark_changed(target);
    w.directory.moved_away(target, to, &behavior, epoch);
    w.trace
        .record(EventKind::ObjectMoved, || Event::ObjectMoved {
            id: target,
            machine: to.clone(),
        });
    w.turns.forget(target);
    true
}

/// A move's `adopt` left, and its answer was lost (the connection closed,
/// or it timed out): the new home may hold the object now. It stays
/// frozen here (still `moving`, its turn held by the mover, parked under
/// `key`) until the new home's word settles it.
pub(crate) fn park_lost_adopt(w: &mut World, c: &Chain, key: usize, token: SuspendToken) {
    let target = c.remote_target;
    let to = c
        .moving_to
        .clone()
        .expect("a chain awaiting adopt knows where");
    let ups = w.directory.ups(&to);
    w.in_doubt.insert(
        target,
        InDoubt {
            mover: Some((key, token)),
            to,
            ups,
        },
    );
}

/// Installs an object another node moved here (`adopt`): answers whether
/// it now lives here. Refused when the record is not one (an epoch past
/// u16 included), its behavior is not registered here, the id is 0 or
/// this node already owns it, a call is inside a replica of it here, or
/// the directory knows the object at a newer epoch than the record's.
pub(crate) fn adopt(w: &mut World, id: ObjectId, record: &Val, out: &mut Vec<Output>) -> bool {
    const NOT_ONE: &str = "an adopt record that is not one";
    let fields = record.as_list().unwrap_or_default();
    let [_, _, _, _, Val::Nat(epoch), Val::List(names)] = fields else {
        w.trace.error(&VmError::Unsupported(NOT_ONE));
        return false;
    };
    // Epochs are u16 on the wire: a larger one is no record of ours.
    let Ok(epoch) = u16::try_from(*epoch) else {
        w.trace.error(&VmError::Unsupported(NOT_ONE));
        return false;
    };
    // A call inside a replica of it here would keep writing apart.
    if w.owns(id) || id.0 == 0 || w.turns.owner(id).is_some() {
        return false;
    }
    // A copy no newer than the object this node knows of would be a
    // second owner: one restored from a store after the object moved on,
    // or one moved from there to here while another node holds the object
    // at the same epoch (each epoch is given by one move, to one node).
    if w.directory
        .known_epoch(id)
        .is_some_and(|known| !epoch_newer(epoch, known))
    {
        w.trace.error(&VmError::Refused(
            "adopt of a copy no newer than the object this node knows of",
        ));
        return false;
    }
    let Some(obj) = obj_from_record(w, fields, NOT_ONE) else {
        return false;
    };
    // A replica of it here becomes the object itself.
    w.replicas.remove(&id);
    w.objects.insert(id, obj);
    if epoch == 0 {
        w.epochs.remove(&id);
    } else {
        w.epochs.insert(id, epoch);
    }
    let names: Vec<Arc<str>> = names
        .iter()
        .filter_map(|n| n.as_str().map(Arc::from))
        .collect();
    let names = w.directory.moved_here(id, &names);
    w.mark_changed(id);
    let behavior = w.behaviors.get(w.objects[&id].behavior).name.clone();
    out.push(Output::Adopted {
        id,
        behavior,
        epoch,
    });
    // Its names, as this node's now: a peer that missed the old home's
    // notices learns them here, not at the next snapshot. (After the
    // create_notify: a receiver places the object first.)
    for name in names {
        out.push(Output::Named { name, id });
    }
    w.trace
        .record(EventKind::ObjectMoved, || Event::ObjectMoved {
            id,
            machine: w.machine.clone(),
        });
    true
}

/// Remembers, in an open transaction, that it depends on `id` as it is now.
fn observe(w: &World, c: &mut Chain, id: ObjectId) {
    if let Some(tx) = &mut c.tx {
        let version = w.objects.get(&id).map_or(0, |o| o.version);
        tx.observe(id, version, w.owns(id));
    }
}

/// The behavior index of a live local object, as `tx` sees it.
fn resolve(w: &World, tx: Option<&Tx>, id: ObjectId) -> Result<u32, VmError> {
    if let Some(tx) = tx {
        if tx.is_destroyed(id) {
            return Err(VmError::DestroyedObject(id));
        }
        if let Some(o) = tx.created(id) {
            return Ok(o.behavior);
        }
    }
    match w.objects.get(&id) {
        Some(o) => Ok(o.behavior),
        // Ours, minted in this life, and gone: ids are never reused, so no
        // set of destroyed ids needs keeping (it would grow forever).
        None if w.ids.minted(id.0) => Err(VmError::DestroyedObject(id)),
        None => Err(VmError::UnknownObject(id)),
    }
}

/// Push a frame for a call to local object `target`, whose turn this call
/// holds, and run its behavior.
fn enter(
    w: &mut World,
    c: &mut Chain,
    target: ObjectId,
    b: u32,
    input: Val,
    sender: ObjectId,
) -> Flow {
    if w.frames_total >= w.max_depth {
        let e = VmError::TooDeep(w.max_depth);
        w.trace.error(&e);
        release_turn(w, target);
        // A nested call fails like any other: its caller gets `Nothing`.
        // A chain's root call (`Next::Enter`) has no caller frame to answer:
        // the chain fails, as when its target is unknown.
        return if c.frames.is_empty() {
            Flow::Finish(Err(e))
        } else {
            c.last_failure = Some(e);
            Flow::Go(Next::Answer(Val::Nothing))
        };
    }
    // The version as the call enters, not as it asked for the turn: a
    // chain that held the turn meanwhile may have written it, and what
    // this transaction sees comes after that.
    observe(w, c, target);
    // A chain's first frame is the host's call (one from another node, on
    // a node); under a frame, the call is this node's code calling.
    w.local_calls += u64::from(!c.frames.is_empty());
    let behavior = w.behaviors.get(b);
    let input_kept = behavior.keeps_input || w.trace.wants(EventKind::ObjectCalled);
    if input_kept {
        c.inputs.push(input.clone());
    }
    let frame = Frame {
        self_id: target,
        sender,
        behavior: b,
        cont_base: c.conts.len() as u32,
        input_visible: behavior.keeps_input,
        input_kept,
    };
    push_frame(&mut w.frames_total, c, frame);
    let ctx = Ctx {
        me: target,
        sender: (sender != NONE).then_some(sender),
    };
    match crate::quiet_panic::catch(|| (behavior.run)(ctx, input)) {
        Ok(p) => Flow::Go(Next::Run(p)),
        Err(why) => {
            warn!(
                "behavior {} panicked in object {target}: {why}",
                behavior.name
            );
            Flow::Go(Next::Fail(VmError::BehaviorPanicked(behavior.name.clone())))
        }
    }
}

fn exec(w: &mut World, c: &mut Chain, key: usize, instr: Instr, out: &mut Vec<Output>) -> Flow {
    // Moved on from any earlier failure (see `Output::Finished`).
    c.last_failure = None;
    if let Instr::ScryMeta(filter) = instr {
        return scry_meta(w, c, key, filter, out);
    }
    if let Instr::MoveObject(target, to) = instr {
        if c.tx.is_some() {
            return Flow::Go(Next::Fail(VmError::Unsupported(
                "move_object inside a transaction (a move cannot be rolled back)",
            )));
        }
        let step = MoveStep {
            target,
            to: MachineId::new(&to),
            caller: current_controller(w, c),
            granted: false,
        };
        return Flow::Go(Next::Move(Box::new(step)));
    }
    if let Some((id, op, input)) = remote_op(w, c, &instr) {
        if op == RemoteOp::Reflect {
            if let Err(e) = may_reflect(w, c.frames.last()) {
                return Flow::Go(Next::Fail(e));
            }
        }
        let machine = w
            .directory
            .machine_of(id)
            .expect("remote_op checked")
            .clone();
        let sender = c.frames.last().map_or(NONE, |f| f.self_id);
        return suspend(w, c, key, machine, id, input, sender, Some(op), out);
    }
    let Instr::Call { target, input } = instr else {
        return match exec_local(w, c, instr, out) {
            Ok(v) => Flow::Go(Next::Answer(v)),
            Err(e) => Flow::Go(Next::Fail(e)),
        };
    };
    let sender = c.frames.last().map_or(NONE, |f| f.self_id);
    match resolve(w, c.tx.as_deref(), target) {
        Ok(b) => call_local(w, c, key, target, b, input, sender, false),
        Err(e) => {
            // Unknown here, or moved away from here: the directory knows
            // where (one lookup: this is every remote call's path).
            if let VmError::UnknownObject(_) | VmError::DestroyedObject(_) = e {
                if let Some(machine) = w.directory.machine_of(target) {
                    let machine = machine.clone();
                    return suspend(w, c, key, machine, target, input, sender, None, out);
                }
            }
            w.trace.error(&e);
            c.last_failure = Some(e);
            Flow::Go(Next::Answer(Val::Nothing))
        }
    }
}

/// Suspends the chain on a call (or operation) to `target` on `machine`.
#[allow(clippy::too_many_arguments)]
fn suspend(
    w: &mut World,
    c: &mut Chain,
    key: usize,
    machine: MachineId,
    target: ObjectId,
    input: Val,
    sender: ObjectId,
    op: Option<RemoteOp>,
    out: &mut Vec<Output>,
) -> Flow {
    // Generation in the high half: a stale token never matches a later
    // suspension that reuses the slab slot.
    let token = SuspendToken::new(w.next_gen, key);
    w.next_gen = w.next_gen.wrapping_add(1);
    c.token = Some(token);
    c.remote_target = target;
    c.remote_op = op;
    w.trace
        .record(EventKind::CallSuspended, || Event::CallSuspended {
            token,
            machine: machine.clone(),
            target,
            in_tx: c.tx.as_deref().map(|tx| tx.id),
        });
    out.push(Output::RemoteCall(RemoteCall {
        token,
        machine,
        target,
        input,
        sender,
        chain: c.id,
        op,
    }));
    Flow::Suspend
}

/// The remote operation `instr` is, when its object lives on another
/// machine: (object, operation, the input it carries).
fn remote_op(w: &World, c: &Chain, instr: &Instr) -> Option<(ObjectId, RemoteOp, Val)> {
    let (id, op) = match instr {
        Instr::Reflect(id) => (*id, RemoteOp::Reflect),
        Instr::GetController(id) => (*id, RemoteOp::GetController),
        Instr::DestroyObj(id) => (*id, RemoteOp::Destroy),
        Instr::TransferObj(id, _) => (*id, RemoteOp::Transfer),
        Instr::Fetch(id) => (*id, RemoteOp::Fetch),
        Instr::Freeze(id) => (*id, RemoteOp::Freeze),
        _ => return None,
    };
    // A replica is not this node's: these go to its owner.
    let here = w.owns(id) || c.tx.as_deref().is_some_and(|tx| tx.created(id).is_some());
    if here || w.directory.machine_of(id).is_none() {
        return None;
    }
    let caller = controller_val(current_controller(w, c));
    let input = match instr {
        Instr::DestroyObj(_) => caller,
        Instr::TransferObj(_, to) => Val::pair(caller, Val::Nat(to.0)),
        Instr::Freeze(_) => {
            let (replica, obj) = (w.replicas.get(&id)?, w.objects.get(&id)?);
            Val::pair(
                Val::Nat(u64::from(replica.base)),
                Val::List(obj.state.clone()),
            )
        }
        _ => Val::Nothing,
    };
    Some((id, op, input))
}

/// A replica's record as its owner sends it: `List[Str behavior,
/// controller (Just(Nat) | Nothing), Nat version, List state]`.
pub(crate) fn replica_record(w: &World, o: &Obj) -> Val {
    Val::List(vec![
        Val::Str(w.behaviors.get(o.behavior).name.to_string()),
        controller_val(o.controller),
        Val::Nat(u64::from(o.version)),
        Val::List(o.state.clone()),
    ])
}

/// Installs or refreshes the replica of `id` from its owner's `record`;
/// false when the record is not one, or its behavior is not registered
/// here (the reason traced).
fn install_replica(w: &mut World, id: ObjectId, record: &Val) -> bool {
    // It moved here while the answer was on its way (the `adopt` came
    // first): made a replica, it would belong to no one.
    if w.owns(id) {
        w.trace.error(&VmError::Refused(
            "a replica of an object that moved here meanwhile; it stays this node's own",
        ));
        return false;
    }
    // A chain inside the replica read its state and will write from it.
    // Refreshed under it, that write would carry the owner's newer
    // version as its base, and the next `freeze` would apply it over the
    // owner's change. Kept as it is, the next `freeze` conflicts (and
    // refreshes, once the replica is free).
    if w.turns.inside(id).is_some() {
        w.trace.error(&VmError::Refused(
            "a replica is not refreshed while a call is inside it",
        ));
        return false;
    }
    let fields = record.as_list().unwrap_or_default();
    let Some(mut obj) = obj_from_record(w, fields, "a replica record that is not one") else {
        return false;
    };
    let base = obj.version;
    // A refreshed replica counts on from its own version, not the owner's:
    // the owner's may equal the one a transaction read here (both moved
    // on by one write), and that transaction must still conflict.
    if let Some(old) = w.objects.get(&id) {
        obj.version = old.version.wrapping_add(1);
    }
    w.objects.insert(id, obj);
    w.replicas.insert(id, Replica { base });
    true
}

/// An object built from a record's first four fields (`replica_record`'s
/// layout; an `adopt` record has two more); `None`, with the reason
/// traced, when they are not one or the behavior is not registered here.
fn obj_from_record(w: &mut World, fields: &[Val], not_one: &'static str) -> Option<Obj> {
    let [Val::Str(behavior), controller, Val::Nat(version), Val::List(state), ..] = fields else {
        w.trace.error(&VmError::Unsupported(not_one));
        return None;
    };
    let Some(b) = w.behaviors.index_of(behavior) else {
        w.trace
            .error(&VmError::UnknownBehavior(Arc::from(behavior.as_str())));
        return None;
    };
    let controller = match controller {
        Val::Just(c) => c.as_nat().map(ControllerId),
        _ => None,
    };
    let mut obj = Obj::new(b, controller);
    obj.state = state.clone();
    obj.version = u32::try_from(*version).unwrap_or(u32::MAX);
    Some(obj)
}

/// Whether a chain under `caller` may destroy or transfer an object
/// controlled by `owner`: anyone may, an uncontrolled object; only a
/// chain under its controller, a controlled one.
pub(crate) fn authorized(owner: Option<ControllerId>, caller: Option<ControllerId>) -> bool {
    owner.is_none() || owner == caller
}

/// Reflection is allowed to top-level programs (host code) and to
/// behaviors registered with `BehaviorRegistry::allow_reflection`.
fn may_reflect(w: &World, frame: Option<&Frame>) -> Result<(), VmError> {
    match frame {
        Some(f) if f.self_id != NONE && !w.behaviors.get(f.behavior).reflective => Err(
            VmError::Unsupported("reflection by a behavior not allowed to reflect (BehaviorRegistry::allow_reflection)"),
        ),
        _ => Ok(()),
    }
}

pub(crate) fn controller_val(c: Option<ControllerId>) -> Val {
    c.map_or(Val::Nothing, |c| Val::just(Val::Nat(c.0)))
}

/// The controller a chain runs under: its transaction's, if begun with
/// one, else the running object's.
fn current_controller(w: &World, c: &Chain) -> Option<ControllerId> {
    c.tx.as_deref().and_then(|tx| tx.controller).or_else(|| {
        let me = c.frames.last().map_or(NONE, |f| f.self_id);
        w.objects.get(&me).and_then(|o| o.controller)
    })
}

/// `reflect`'s record of a local object.
pub(crate) fn meta_of(w: &World, o: &Obj) -> Val {
    let field = |k: &str, v: Val| Val::pair(Val::str(k), v);
    Val::List(vec![
        field(
            "behavior",
            Val::Str(w.behaviors.get(o.behavior).name.to_string()),
        ),
        field("machine", Val::Str(w.machine.as_str().to_owned())),
        field("controller", controller_val(o.controller)),
        field("version", Val::Nat(u64::from(o.version))),
    ])
}

/// `scry_meta`: this node's matches, then each other node's, asked one
/// after another (a `scry` operation each); a node that cannot answer is
/// skipped, its reason traced.
fn scry_meta(w: &mut World, c: &mut Chain, key: usize, filter: Val, out: &mut Vec<Output>) -> Flow {
    if let Err(e) = may_reflect(w, c.frames.last()) {
        return Flow::Go(Next::Fail(e));
    }
    let found = match scry_here(w, &filter) {
        Ok(found) => found,
        Err(e) => return Flow::Go(Next::Fail(e)),
    };
    let wanted = machine_wanted(&filter);
    let machines: Vec<MachineId> = w
        .directory
        .peer_machines()
        .filter(|m| wanted.as_deref().is_none_or(|want| want == m.as_str()))
        .cloned()
        .collect();
    let scry = Box::new(Scry {
        filter,
        machines,
        found,
    });
    scry_next(w, c, key, scry, out)
}

/// Asks the next node, or answers what was found when none is left.
pub(crate) fn scry_next(
    w: &mut World,
    c: &mut Chain,
    key: usize,
    mut scry: Box<Scry>,
    out: &mut Vec<Output>,
) -> Flow {
    let Some(machine) = scry.machines.pop() else {
        let mut found = scry.found;
        found.sort_unstable_by_key(|id| id.0);
        found.dedup();
        return Flow::Go(Next::Answer(Val::List(
            found.into_iter().map(Val::ObjectRef).collect(),
        )));
    };
    let input = scry.filter.clone();
    let sender = c.frames.last().map_or(NONE, |f| f.self_id);
    c.scry = Some(scry);
    suspend(
        w,
        c,
        key,
        machine,
        NONE,
        input,
        sender,
        Some(RemoteOp::Scry),
        out,
    )
}

/// The `machine` a filter names, if any.
fn machine_wanted(filter: &Val) -> Option<String> {
    filter.as_list()?.iter().find_map(|item| match item {
        Val::Pair(k, v) if k.as_str() == Some("machine") => v.as_str().map(str::to_owned),
        _ => None,
    })
}

/// This node's own objects matching `filter` (a `List` of `Pair`s:
/// behavior, machine, controller).
pub(crate) fn scry_here(w: &World, filter: &Val) -> Result<Vec<ObjectId>, VmError> {
    let bad = || {
        VmError::Unsupported(
            "scry_meta filter: a List of (\"behavior\"|\"machine\"|\"controller\", value) pairs",
        )
    };
    let (mut behavior, mut machine, mut controller) = (None, None, None);
    for item in filter.as_list().ok_or_else(bad)? {
        let Val::Pair(k, v) = item else {
            return Err(bad());
        };
        match (k.as_str(), &**v) {
            (Some("behavior"), Val::Str(b)) => behavior = Some(b.as_str()),
            (Some("machine"), Val::Str(m)) => machine = Some(m.as_str()),
            (Some("controller"), Val::Nat(c)) => controller = Some(ControllerId(*c)),
            _ => return Err(bad()),
        }
    }
    if machine.is_some_and(|m| m != w.machine.as_str()) {
        return Ok(Vec::new());
    }
    // Owned only: a replica here is its owner's object.
    Ok(w.owned()
        .filter_map(|(id, o)| {
            let b = &w.behaviors.get(o.behavior).name;
            let ok = behavior.is_none_or(|want| want == &**b)
                && controller.is_none_or(|want| o.controller == Some(want));
            ok.then_some(*id)
        })
        .collect())
}

/// The current frame's object, for instructions that need one.
fn self_of(c: &Chain, what: &'static str) -> Result<ObjectId, VmError> {
    match c.frames.last() {
        Some(f) if f.self_id != NONE => Ok(f.self_id),
        _ => Err(VmError::Unsupported(what)),
    }
}

/// Every instruction but `call`: answers at once, never suspends.
fn exec_local(
    w: &mut World,
    c: &mut Chain,
    instr: Instr,
    out: &mut Vec<Output>,
) -> Result<Val, VmError> {
    let frame = c.frames.last();
    Ok(match instr {
        Instr::Call { .. } | Instr::MoveObject(..) => unreachable!("handled by exec"),
        Instr::Pure(v) => v,
        Instr::GetSelf => match frame {
            Some(f) if f.self_id != NONE => Val::ObjectRef(f.self_id),
            _ => Val::Nothing,
        },
        Instr::GetSender => match frame {
            Some(f) if f.sender != NONE => Val::just(Val::ObjectRef(f.sender)),
            _ => Val::Nothing,
        },
        Instr::GetInput => match frame {
            Some(f) if f.self_id == NONE => Val::Nothing,
            Some(f) if f.input_visible => c.inputs.last().cloned().unwrap_or(Val::Nothing),
            Some(f) => return Err(VmError::InputNotKept(behavior_name(w, f.behavior))),
            None => Val::Nothing,
        },
        Instr::GetCurrentMachine => Val::Str(w.machine.as_str().to_owned()),
        Instr::RegisterName { name, id } => {
            if !w.owns(id) {
                w.trace.error(&VmError::Unsupported(
                    "register_name of an object not hosted here (register it on its node)",
                ));
                return Ok(Val::Bool(false));
            }
            if names_frozen(w, id) {
                return Ok(Val::Bool(false));
            }
            if !w.directory.register_local(name.clone(), id) {
                return Ok(Val::Bool(false));
            }
            out.push(Output::Named { name, id });
            Val::Bool(true)
        }
        Instr::Whereis(name) => match w.directory.whereis(&name) {
            Some(id) => Val::just(Val::ObjectRef(id)),
            None => Val::Nothing,
        },
        Instr::UnregisterName(name)
            if w.directory
                .whereis(&name)
                .is_some_and(|id| names_frozen(w, id)) =>
        {
            Val::Bool(false)
        }
        Instr::UnregisterName(name) => match w.directory.unregister_local(&name) {
            Some(id) => {
                out.push(Output::Unnamed { name, id });
                Val::Bool(true)
            }
            None => Val::Bool(false),
        },
        Instr::Reflect(id) => {
            may_reflect(w, frame)?;
            match w.objects.get(&id) {
                Some(o) => Val::just(meta_of(w, o)),
                None => Val::Nothing,
            }
        }
        Instr::ScryMeta(_) => unreachable!("handled by exec"),
        Instr::ReifyContext => {
            may_reflect(w, frame)?;
            let me = frame.map_or(NONE, |f| f.self_id);
            let input = match frame {
                Some(f) if f.self_id != NONE && f.input_visible => {
                    c.inputs.last().cloned().unwrap_or(Val::Nothing)
                }
                _ => Val::Nothing,
            };
            let sender = frame.map_or(NONE, |f| f.sender);
            let field = |k: &str, v: Val| Val::pair(Val::str(k), v);
            Val::List(vec![
                field(
                    "self",
                    if me == NONE {
                        Val::Nothing
                    } else {
                        Val::ObjectRef(me)
                    },
                ),
                field("input", input),
                field(
                    "sender",
                    if sender == NONE {
                        Val::Nothing
                    } else {
                        Val::just(Val::ObjectRef(sender))
                    },
                ),
                field("machine", Val::Str(w.machine.as_str().to_owned())),
                field("controller", controller_val(current_controller(w, c))),
                field("chain", Val::Nat(c.id.0)),
            ])
        }
        Instr::GetController(id) => controller_val(w.objects.get(&id).and_then(|o| o.controller)),
        Instr::GetCurrentController => controller_val(current_controller(w, c)),
        Instr::Fetch(id) | Instr::Freeze(id) => {
            // Not routed to an owner: this node's own object, or unknown.
            let why = if w.owns(id) {
                "fetch/freeze of an object this node owns"
            } else {
                "freeze with no replica here, or fetch of an object no node is known to host"
            };
            w.trace.error(&VmError::Unsupported(why));
            Val::Nothing
        }
        Instr::Teleport(machine) => {
            if c.tx.is_some() {
                return Err(VmError::Unsupported("teleport inside a transaction"));
            }
            if *machine == *w.machine.as_str() {
                Val::Bool(true)
            } else {
                w.trace.error(&VmError::Unsupported(
                    "teleport across nodes: a chain's continuation is code, and code never \
                     crosses the network (call an object on that node instead)",
                ));
                Val::Bool(false)
            }
        }
        Instr::GetMachine(id) => {
            // A replica's machine is its owner's.
            let local = w.owns(id) || c.tx.as_deref().is_some_and(|tx| tx.created(id).is_some());
            match (local, w.directory.machine_of(id)) {
                (true, _) => Val::just(Val::Str(w.machine.as_str().to_owned())),
                (false, Some(m)) => Val::just(Val::Str(m.as_str().to_owned())),
                (false, None) => Val::Nothing,
            }
        }
        Instr::GetState => {
            let id = self_of(c, "get_state outside an object")?;
            resolve(w, c.tx.as_deref(), id)?;
            observe(w, c, id);
            let overlay =
                c.tx.as_deref()
                    .and_then(|tx| tx.state_of(id).map(<[Val]>::to_vec));
            Val::List(overlay.unwrap_or_else(|| w.objects[&id].state.clone()))
        }
        Instr::SetState(state) => {
            let id = self_of(c, "set_state outside an object")?;
            resolve(w, c.tx.as_deref(), id)?;
            observe(w, c, id);
            match &mut c.tx {
                Some(tx) => tx.set_state(id, state),
                None => set_state(w, id, state),
            }
            Val::Bool(true)
        }
        Instr::CreateObj {
            behavior,
            controller,
        } => {
            let b = w
                .behaviors
                .index_of(&behavior)
                .ok_or_else(|| VmError::UnknownBehavior(Arc::from(&*behavior)))?;
            let id = w.ids.next_object()?;
            let controller = controller.or(c.tx.as_deref().and_then(|tx| tx.controller));
            let obj = Obj::new(b, controller);
            match &mut c.tx {
                Some(tx) => tx.creates.push((id, obj)),
                None => insert_object(w, id, obj, out),
            }
            Val::ObjectRef(id)
        }
        Instr::DestroyObj(id) => Val::Bool(destroy(w, c, id, out)?),
        Instr::TransferObj(id, to) => {
            if let Err(e) = resolve(w, c.tx.as_deref(), id) {
                if w.directory.machine_of(id).is_some() {
                    return Err(VmError::Unsupported("transfer_obj of a remote object"));
                }
                w.trace.error(&e);
                return Ok(Val::Bool(false));
            }
            if refused_while_moving(w, id) || refused_as_replica(w, id) {
                return Ok(Val::Bool(false));
            }
            let caller = current_controller(w, c);
            if !authorized(object_controller(w, c, id), caller) {
                log::info!(
                    "transfer_obj of {id} refused: the chain does not run under its controller"
                );
                return Ok(Val::Bool(false));
            }
            observe(w, c, id);
            match &mut c.tx {
                Some(tx) => tx.transfers.push((id, to)),
                None => transfer(w, id, to),
            }
            Val::Bool(true)
        }
        Instr::BeginTx(controller) => {
            if let Some(tx) = &c.tx {
                return Err(VmError::TxAlreadyOpen(tx.id));
            }
            w.next_tx += 1;
            let id = TxId(w.next_tx);
            c.tx = Some(Box::new(Tx::new(id, controller, c.frames.len())));
            w.trace.record(EventKind::TransactionStarted, || {
                Event::TransactionStarted { tx: id }
            });
            Val::TxRef(id)
        }
        Instr::CommitTx(id) => match c.tx.take() {
            Some(tx) if tx.id == id => Val::Bool(commit(w, *tx, c.id, out)),
            other => {
                c.tx = other;
                return Err(VmError::NoSuchTx(id));
            }
        },
        Instr::AbortTx(id) => match c.tx.take() {
            Some(tx) if tx.id == id => {
                abort(w, *tx);
                Val::Bool(true)
            }
            other => {
                c.tx = other;
                return Err(VmError::NoSuchTx(id));
            }
        },
        Instr::CallPure { name, args } => match w.pures.get(&name) {
            None => {
                w.trace.error(&VmError::UnknownPure(Arc::from(&*name)));
                Val::Nothing
            }
            Some((name, f)) => match crate::quiet_panic::catch(|| f(&args)) {
                Ok(Some(v)) => Val::just(v),
                Ok(None) => Val::Nothing,
                Err(why) => {
                    warn!("pure function {name} panicked: {why}");
                    return Err(VmError::PurePanicked(name.clone()));
                }
            },
        },
    })
}

pub(crate) fn insert_object(w: &mut World, id: ObjectId, obj: Obj, out: &mut Vec<Output>) {
    let behavior = w.behaviors.get(obj.behavior).name.clone();
    w.objects.insert(id, obj);
    w.mark_changed(id);
    w.trace
        .record(EventKind::ObjectCreated, || Event::ObjectCreated {
            id,
            behavior: behavior.clone(),
        });
    out.push(Output::Created { id, behavior });
}

fn set_state(w: &mut World, id: ObjectId, state: Vec<Val>) {
    let full = w.trace.wants(EventKind::StateUpdated);
    let obj = w.objects.get_mut(&id).expect("resolved");
    let copy = if full { state.clone() } else { Vec::new() };
    obj.state = state;
    obj.version = obj.version.wrapping_add(1);
    w.mark_changed(id);
    w.trace
        .record(EventKind::StateUpdated, || Event::StateUpdated {
            id,
            state: copy,
        });
}

pub(crate) fn transfer(w: &mut World, id: ObjectId, to: ControllerId) {
    if let Some(o) = w.objects.get_mut(&id) {
        o.controller = Some(to);
        o.version = o.version.wrapping_add(1);
        w.mark_changed(id);
    }
}

/// Destroys a local object; the calls waiting for its turn fail.
pub(crate) fn remove_object(w: &mut World, id: ObjectId, out: &mut Vec<Output>) {
    if w.objects.remove(&id).is_some() {
        shrink_if_sparse(&mut w.objects);
        w.epochs.remove(&id);
        w.mark_changed(id);
        for name in w.directory.drop_names_of(id) {
            out.push(Output::Unnamed { name, id });
        }
        w.trace
            .record(EventKind::ObjectDestroyed, || Event::ObjectDestroyed { id });
        out.push(Output::Destroyed { id });
        for waiter in w.turns.drain_queue(id) {
            w.to_fail.push((waiter.key, VmError::DestroyedObject(id)));
        }
        w.turns.forget(id);
    }
}

/// `destroy_obj`: false (with the reason traced) when already gone.
fn destroy(
    w: &mut World,
    c: &mut Chain,
    id: ObjectId,
    out: &mut Vec<Output>,
) -> Result<bool, VmError> {
    if let Err(e) = resolve(w, c.tx.as_deref(), id) {
        if matches!(e, VmError::UnknownObject(_)) && w.directory.machine_of(id).is_some() {
            return Err(VmError::Unsupported("destroy_obj of a remote object"));
        }
        w.trace.error(&e);
        return Ok(false);
    }
    if refused_while_moving(w, id) || refused_as_replica(w, id) {
        return Ok(false);
    }
    let caller = current_controller(w, c);
    let owner = object_controller(w, c, id);
    if !authorized(owner, caller) {
        log::info!("destroy_obj of {id} refused: the chain does not run under its controller");
        return Ok(false);
    }
    observe(w, c, id);
    match &mut c.tx {
        Some(tx) => tx.destroys.push(id),
        None => remove_object(w, id, out),
    }
    Ok(true)
}

/// Whether `id`'s record is on its way to a new home (see
/// `World::moving`): then nothing may change it, and the refusal is traced.
pub(crate) fn refused_while_moving(w: &mut World, id: ObjectId) -> bool {
    if w.moving.contains_key(&id) {
        w.trace.error(&VmError::Refused(
            "destroy, transfer, fetch, freeze or commit of an object that is moving",
        ));
        return true;
    }
    // A copy announced elsewhere (rule 8) leaves as its call ends: what
    // the call does to it stays behind, and it is not this node's to
    // destroy (peers would forget the real one).
    if !w.superseded.is_empty() && w.superseded.contains_key(&id) {
        w.trace.error(&VmError::Refused(
            "destroy, transfer, freeze or commit of an object that moved on elsewhere",
        ));
        return true;
    }
    false
}

/// Whether `id`'s names may not change now: its record (names included)
/// is on its way to another node, or it moved on and this copy is
/// leaving. A change made here would not reach the new home as the
/// object's own (it would keep a dropped name, or never own a new one).
fn names_frozen(w: &mut World, id: ObjectId) -> bool {
    let frozen = w.moving.contains_key(&id) || w.superseded.contains_key(&id);
    if frozen {
        w.trace.error(&VmError::Refused(
            "register_name or unregister_name of an object that is moving or moved on",
        ));
    }
    frozen
}

/// A replica reaches destroy or transfer only when its owner is not placed
/// here now (the owner's are sent to it): the copy is not this node's,
/// and destroying it here would tell every peer the object is gone.
fn refused_as_replica(w: &mut World, id: ObjectId) -> bool {
    let replica = w.replicas.contains_key(&id);
    if replica {
        w.trace.error(&VmError::Refused(
            "destroy or transfer of a replica whose owner is not placed here now",
        ));
    }
    replica
}

/// The controller of object `id` as chain `c` sees it (its transaction's
/// creations and transfers included: an object the transaction gave away
/// is no longer the old controller's to destroy or give again).
fn object_controller(w: &World, c: &Chain, id: ObjectId) -> Option<ControllerId> {
    if let Some(tx) = c.tx.as_deref() {
        if let Some((_, to)) = tx.transfers.iter().rev().find(|(o, _)| *o == id) {
            return Some(*to);
        }
        if let Some(o) = tx.created(id) {
            return o.controller;
        }
    }
    w.objects.get(&id).and_then(|o| o.controller)
}

/// Discards `tx`: its objects never existed outside it, so their turn
/// entries (taken by calls inside it) go too. Answers its id.
pub(crate) fn abort(w: &mut World, tx: Tx) -> TxId {
    for (id, _) in &tx.creates {
        w.turns.forget(*id);
    }
    let id = tx.id;
    w.trace.record(EventKind::TransactionAborted, || {
        Event::TransactionAborted { tx: id }
    });
    id
}

/// Validate the read set, then apply creates, transfers, states, destroys.
/// `chain` commits: another chain inside an object whose state the
/// transaction writes is a conflict too, since that chain may have read
/// the state and will write it back over the commit (versions move only
/// on writes, so they cannot tell). A waiter handed the turn that has not
/// run yet has read nothing, and a chain inside writes back only state.
fn commit(w: &mut World, tx: Tx, chain: ChainId, out: &mut Vec<Output>) -> bool {
    let id = tx.id;
    let changed = |(o, version, owned): &(ObjectId, u32, bool)| {
        w.objects.get(o).map(|obj| obj.version) != Some(*version) || w.owns(*o) != *owned
    };
    // Every object a transaction touched is in its read set.
    // A copy that moved on elsewhere (rule 8) leaves as its call ends:
    // what a commit wrote there would be dropped with it.
    let moving =
        |(o, ..): &(ObjectId, u32, bool)| w.moving.contains_key(o) || w.superseded.contains_key(o);
    let inside_elsewhere = |o: &ObjectId| w.turns.inside(*o).is_some_and(|in_it| in_it != chain);
    let mut written = tx.states.iter().map(|(o, _)| o);
    if tx.reads.iter().any(changed) || tx.reads.iter().any(moving) || written.any(inside_elsewhere)
    {
        abort(w, tx);
        return false;
    }
    for (oid, obj) in tx.creates {
        insert_object(w, oid, obj, out);
    }
    for (oid, to) in tx.transfers {
        transfer(w, oid, to);
    }
    for (oid, state) in tx.states {
        if w.objects.contains_key(&oid) {
            set_state(w, oid, state);
        }
    }
    for oid in tx.destroys {
        remove_object(w, oid, out);
    }
    w.trace.record(EventKind::TransactionCommitted, || {
        Event::TransactionCommitted { tx: id }
    });
    true
}

/// The answer a resumed call gets, tracing (and keeping on the chain) a
/// failure's reason.
pub(crate) fn resumed_answer(w: &mut World, c: &mut Chain, result: Result<Val, String>) -> Val {
    let op = c.remote_op.take();
    match (op, &result) {
        (Some(RemoteOp::Fetch), Ok(Val::Just(record))) => {
            return if install_replica(w, c.remote_target, record) {
                Val::Bool(true)
            } else {
                Val::Nothing
            };
        }
        (Some(RemoteOp::Freeze), Ok(Val::Just(answer))) => {
            let Val::Pair(applied, record) = &**answer else {
                return Val::Nothing;
            };
            let Val::Bool(applied) = **applied else {
                return Val::Nothing;
            };
            if applied {
                // The owner holds what was sent: the replica goes on from
                // the owner's new version, keeping its state (a write
                // made here since the freeze left stays on top of it).
                let version = record.as_list().and_then(|f| match f.get(2) {
                    Some(Val::Nat(v)) => u32::try_from(*v).ok(),
                    _ => None,
                });
                if let (Some(r), Some(v)) = (w.replicas.get_mut(&c.remote_target), version) {
                    r.base = v;
                }
            } else {
                w.trace.error(&VmError::Refused(
                    "freeze conflict: the owner's version moved on; the replica's writes are discarded",
                ));
                let record = (**record).clone();
                install_replica(w, c.remote_target, &record);
            }
            return Val::just(Val::Bool(applied));
        }
        (Some(RemoteOp::Fetch | RemoteOp::Freeze), Ok(_)) => return Val::Nothing,
        _ => {}
    }
    match result {
        // An operation's answer is the instruction's own; a call's is `Just`.
        Ok(v) if op.is_some() => v,
        Ok(v) => Val::just(v),
        Err(reason) => {
            let e = VmError::RemoteFailed(Box::new(RemoteFailure {
                target: c.remote_target,
                reason,
            }));
            w.trace.error(&e);
            c.last_failure = Some(e);
            match op {
                Some(RemoteOp::Destroy | RemoteOp::Transfer | RemoteOp::Move) => Val::Bool(false),
                _ => Val::Nothing,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_32_bytes() {
        // Pinned: a chain's depth costs this (plus 16 bytes of continuation).
        assert_eq!(std::mem::size_of::<Frame>(), 32);
    }

    #[test]
    fn a_chain_fits_in_four_cache_lines() {
        // Every chain in flight, and every spare, costs this: rare parts
        // (a transaction, a scry) stay boxed.
        assert!(
            std::mem::size_of::<Chain>() <= 256,
            "{}",
            std::mem::size_of::<Chain>()
        );
    }
}
