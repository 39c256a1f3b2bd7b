//! The interpreter thread: drains events into the vm, runs it, and turns
//! its outputs into reactor commands.
//!
//! ```text
//!   loop {
//!       vm.run_for(budget, &mut outputs) -> Command::{Call, Reply, Created, Destroyed}
//!       handoff.send_commands            (one wake of the reactor per batch)
//!       handoff.take_events              -> Inbound starts a chain, Reply resumes one,
//!                                           notices go through the directory's rules
//!       nothing to do? park              (re-checks the queue on every wake-up)
//!   }
//! ```
//!
//! The thread never blocks on one reply: a chain waiting on a remote call
//! is plain data inside the vm, so an inbound call (pong calling ping back
//! while ping waits on pong) starts and runs here in the meantime. It
//! knows nothing of any application: programs come from `Node::submit`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use slab::Slab;

use crate::heap;
use crate::protocol::{self, CloseReason};
use crate::vm::{MachineId, Notice, Output, StartCall, TraceMode, Val, Vm, ALL_KINDS};

use super::durable::{Durable, ResultSender};
use super::handoff::{shrink_after_burst, Command, Event, Handoff};
use super::stats::{Gauges, NodeStats, TraceGate};

/// Steps the vm takes between hand-offs to and from the reactor: a chain
/// that runs long (or for ever) on this node delays inbound calls, replies
/// and shutdown by at most this many steps (about a tenth of a
/// millisecond), and under load the reactor gets each batch of outgoing
/// calls sooner, so the threads overlap instead of taking turns: with 1024
/// chains in flight (`examples/pair_throughput`) 1,000 steps carried
/// 365-430k calls/s where 10,000 carried 240-265k.
const STEP_BUDGET: u32 = 1_000;

/// The answer to a program submitted to a node that has stopped.
pub const NODE_STOPPED: &str = "node stopped";

/// Answers every `Event::Run` in `events` with [`NODE_STOPPED`]; drops the
/// rest (the interpreter that would have handled them has ended).
pub fn refuse_runs(events: Vec<Event>) {
    for event in events {
        if let Event::Run { reply, .. } = event {
            let _ = reply.send(Err(NODE_STOPPED.into()));
        }
    }
}

/// A submitted program's result: `Nothing` after a failed call is that
/// call's failure, so the submitter learns why (`Node::submit`).
fn explained(
    result: Result<Val, crate::vm::VmError>,
    last_failure: Option<crate::vm::VmError>,
) -> Result<Val, String> {
    match (result, last_failure) {
        (Ok(Val::Nothing), Some(why)) => Err(why.to_string()),
        (result, _) => result.map_err(|e| e.to_string()),
    }
}

/// Origin tags of chains, as the vm hands them back in `Output::Finished`:
/// inbound ids from the protocol core have a 31-bit generation in their
/// top half, so bit 63 is free to mark programs submitted on this node.
const LOCAL_ORIGIN: u64 = 1 << 63;
/// Remote-call failures logged at `warn` before the rest go to `debug`
/// (a lost peer fails every nested call of a deep chain at once).
const LOUD_FAILURES: u64 = 5;

/// How the interpreter ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Shut down on request (or by a signal).
    Stopped,
    /// The reactor thread failed; the reason.
    Failed(String),
}

pub struct Interpreter {
    vm: Vm,
    handoff: Arc<Handoff>,
    stop: Arc<AtomicBool>,
    stats: Arc<NodeStats>,
    outcome: Option<Outcome>,
    events: Vec<Event>,
    outputs: Vec<Output>,
    commands: Vec<Command>,
    /// Where the results of submitted programs go, keyed by origin.
    submitted: Slab<ResultSender>,
    /// Results of submitted programs, sent once this round's commands are.
    results: Vec<(ResultSender, Result<Val, String>)>,
    /// How long to yield-spin for events after activity before parking.
    spin: Duration,
    /// When each peer came up, until its snapshot is complete.
    peer_up_at: HashMap<MachineId, Instant>,
    /// Group commit, on a node with a data dir: output waits for the disk.
    durable: Option<Durable>,
    /// The trace mode the node was configured with; while `/events` has
    /// subscribers the vm records `Full` and its events are streamed.
    trace_mode: TraceMode,
    streaming: bool,
    /// With `trace_mode` `Full`: the trace's events before this index went
    /// to subscribers already (the trace keeps them all).
    streamed: usize,
    /// Bounds the trace events waiting for the reactor.
    trace_gate: TraceGate,
    stream_kinds: u32,
    /// When the per-peer object counts were last published.
    hosted_at: Instant,
    /// The directory changed since: set wherever it is changed (notices,
    /// peer events, learned senders, moves).
    hosted_stale: bool,
    /// The last remote-call failure line (at whatever level it went; the
    /// same line again goes to debug).
    failure_said: Option<String>,
    /// When events were last handled, until the thread has been idle long
    /// enough to give back what they grew.
    worked_at: Option<Instant>,
    /// Memory was given back since the last [`heap::trim`], which is owed
    /// once due.
    trim_owed: bool,
    /// Local objects and directory entries at the last idle moment.
    held_at_idle: usize,
    /// When [`heap::trim`] last ran (or the thread started).
    trimmed_at: Instant,
}

/// The allocator's free pages go back at most this often (a trim walks
/// its free lists: cheap after a burst, wasted on every idle moment of
/// light traffic).
const TRIM_EVERY: Duration = Duration::from_secs(1);

impl Interpreter {
    /// `spin` is ignored on a single CPU, where spinning only delays the
    /// reactor this thread is waiting for.
    pub fn new(
        vm: Vm,
        handoff: Arc<Handoff>,
        stop: Arc<AtomicBool>,
        stats: Arc<NodeStats>,
        spin: Duration,
        durable: Option<Durable>,
    ) -> Self {
        let trace_mode = vm.trace().mode();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spin = if cpus > 1 { spin } else { Duration::ZERO };
        Interpreter {
            vm,
            handoff,
            stop,
            stats,
            outcome: None,
            events: Vec::with_capacity(64),
            outputs: Vec::with_capacity(64),
            commands: Vec::with_capacity(64),
            submitted: Slab::new(),
            results: Vec::new(),
            spin,
            trace_mode,
            streaming: false,
            streamed: 0,
            trace_gate: TraceGate::default(),
            stream_kinds: ALL_KINDS,
            hosted_at: Instant::now(),
            hosted_stale: true,
            failure_said: None,
            worked_at: None,
            trim_owed: false,
            held_at_idle: 0,
            trimmed_at: Instant::now(),
            peer_up_at: HashMap::new(),
            durable,
        }
    }

    pub fn run(mut self) -> Outcome {
        self.handoff.register_interpreter();
        let outcome = match crate::quiet_panic::catch_printed(|| self.event_loop()) {
            Ok(outcome) => outcome,
            Err(why) => {
                // A bug: the vm may be half way through a step, so nothing
                // more of its output goes out (not even what waits for the
                // disk). The reactor stops too: peers see the node leave,
                // not a node that answers pings and never calls.
                error!("interpreter panicked: {why}; the node stops");
                // Their programs hear that the node stopped, as below.
                let held = self.durable.take().map(Durable::abandon);
                let unsent = self.results.drain(..).map(|(reply, _)| reply);
                for reply in held.into_iter().flatten().chain(unsent) {
                    let _ = reply.send(Err(NODE_STOPPED.into()));
                }
                self.commands.clear();
                Outcome::Failed(format!("interpreter panicked: {why}"))
            }
        };
        if let Some(durable) = &mut self.durable {
            // What is on its way to disk gets there, and its output out.
            durable.finish(&mut self.vm, &mut self.commands, &mut self.results);
        }
        // The reactor stops after writing what this thread sent last (the
        // answers the disk was holding, say): it waits for this, not for
        // the stop request, so those answers reach their callers.
        self.commands.push(Command::Shutdown);
        self.handoff.send_commands(&mut self.commands);
        // After the commands, as in the event loop: a program's effects are
        // on their way before its result.
        for (reply, result) in self.results.drain(..) {
            let _ = reply.send(result);
        }
        // Nobody will answer programs submitted now or still running.
        refuse_runs(self.handoff.interpreter_ended());
        for reply in self.submitted.drain() {
            let _ = reply.send(Err(NODE_STOPPED.into()));
        }
        outcome
    }

    fn event_loop(&mut self) -> Outcome {
        let mut spin_until = Instant::now();
        loop {
            self.follow_subscribers();
            let mut more = self.vm.run_for(STEP_BUDGET, &mut self.outputs);
            // One clock reading for the iteration's bookkeeping.
            let now = Instant::now();
            self.route_outputs();
            self.report(now);
            if let Some(durable) = &mut self.durable {
                durable.gate(&mut self.vm, &mut self.commands, &mut self.results);
                // A failed write fails the calls it held in their chains,
                // which are then ready to run: no parking on them.
                more |= self.vm.has_work();
            }
            if !(self.commands.is_empty() && self.results.is_empty()) {
                // Output out means answers, or new work, come back soon.
                spin_until = now + self.spin;
            }
            self.handoff.send_commands(&mut self.commands);
            // After the commands: a program's effects (its objects'
            // create_notify, say) are on their way before its result is.
            for (reply, result) in self.results.drain(..) {
                // The submitter may have given up waiting: fine.
                let _ = reply.send(result);
            }
            shrink_after_burst(&mut self.outputs);
            shrink_after_burst(&mut self.commands);
            if let Some(outcome) = self.outcome.take() {
                return outcome;
            }
            // ORDERING: Acquire pairs with the Release store in
            // `Node::shutdown`.
            if self.stop.load(Ordering::Acquire) {
                return Outcome::Stopped;
            }
            self.handoff.take_events(&mut self.events);
            if self.events.is_empty() {
                if more {
                    continue;
                }
                let now = Instant::now();
                if now < spin_until {
                    std::thread::yield_now();
                    continue;
                }
                let trim_in = self.go_idle(now);
                // Publish the counts once due, even if nothing else comes.
                let hosted_in = self.hosted_stale.then_some(NodeStats::HOSTED_EVERY);
                // What a failed write left unwritten goes again even if
                // nothing else comes.
                let retry_in = self.durable.as_ref().and_then(Durable::retry_in);
                let wake_in = trim_in.into_iter().chain(hosted_in).chain(retry_in).min();
                match wake_in {
                    Some(wait) => std::thread::park_timeout(wait),
                    None => std::thread::park(),
                }
                continue;
            }
            let mut events = std::mem::take(&mut self.events);
            for event in events.drain(..) {
                self.handle_event(event);
            }
            shrink_after_burst(&mut events);
            self.events = events;
            let now = Instant::now();
            self.worked_at = Some(now);
            spin_until = now + self.spin;
        }
    }

    /// Before parking: once idle for [`heap::IDLE_AFTER`] after work, gives
    /// back what the work grew (queues, the vm's spare chains and empty
    /// tables), then, if that or fewer objects freed anything, the
    /// allocator's free pages ([`heap::trim`], at most once per
    /// [`TRIM_EVERY`]). Answers when to wake for what is still to come.
    fn go_idle(&mut self, now: Instant) -> Option<Duration> {
        if let Some(at) = self.worked_at {
            let quiet = now.saturating_duration_since(at);
            if quiet < heap::IDLE_AFTER {
                return Some(heap::IDLE_AFTER - quiet);
            }
            self.worked_at = None;
            let mut gave = heap::shrink_when_idle(&mut self.events);
            gave |= heap::shrink_when_idle(&mut self.outputs);
            gave |= heap::shrink_when_idle(&mut self.commands);
            gave |= heap::shrink_when_idle(&mut self.results);
            gave |= self.vm.release_idle_memory();
            gave |= self.handoff.shrink_when_idle();
            // Objects destroyed, or a peer's directory forgotten, free
            // memory the vm's own maps gave back as they went.
            let held = self.vm.object_count() + self.vm.directory().len();
            let fell = held < self.held_at_idle;
            self.held_at_idle = held;
            // Light traffic that only pauses gives nothing back and owes
            // no trim.
            self.trim_owed |= heap::trimming() && (gave || fell);
        }
        if !self.trim_owed {
            return None;
        }
        let due = self.trimmed_at + TRIM_EVERY;
        if now < due {
            return Some(due - now);
        }
        heap::trim();
        self.trimmed_at = now;
        self.trim_owed = false;
        None
    }

    /// Streams the trace while `/events` has subscribers: `Full` records
    /// every event (and costs a clone of each value); without subscribers
    /// the configured mode costs what it always did.
    fn follow_subscribers(&mut self) {
        let wanted = self.stats.subscribers() > 0;
        if wanted != self.streaming {
            self.streaming = wanted;
            // Events dropped before are no news to whoever watches next.
            self.trace_gate = TraceGate::default();
            // Subscribers get what happens from now on.
            self.streamed = self.vm.trace().events().len();
            let mode = if wanted {
                TraceMode::Full
            } else {
                self.trace_mode
            };
            self.vm.trace_mut().set_mode(mode);
            // The stream renders a state event without its state: no copy
            // of it at every write, unless the node keeps its own record.
            let payloads = !wanted || self.trace_mode == TraceMode::Full;
            self.vm.trace_mut().keep_state_payloads(payloads);
        }
        // A node configured to keep every event keeps them all whatever
        // subscribers filter (`Node::query` reads its record).
        let kinds = if wanted && self.trace_mode != TraceMode::Full {
            self.stats.stream_kinds()
        } else {
            ALL_KINDS
        };
        if kinds != self.stream_kinds {
            // Only what some subscriber's filter can pass is kept whole.
            self.stream_kinds = kinds;
            self.vm.trace_mut().keep_only(kinds);
        }
    }

    /// After a batch: the gauges `/health` and `/metrics` read, and the
    /// batch's trace events for subscribers.
    fn report(&mut self, now: Instant) {
        self.stats.set_gauges(Gauges {
            objects: self.vm.object_count() as u64,
            suspended: self.vm.suspended_count() as u64,
            waiting_for_turns: self.vm.waiting_count() as u64,
            directory_entries: self.vm.directory().len() as u64,
            local_calls: self.vm.local_calls(),
        });
        if self.hosted_stale
            && now.saturating_duration_since(self.hosted_at) >= NodeStats::HOSTED_EVERY
        {
            self.hosted_at = now;
            self.hosted_stale = false;
            let hosted = self.vm.directory().hosted();
            let hosted = hosted.map(|(m, n)| (m.as_str().to_string(), n)).collect();
            self.stats.set_hosted(hosted);
        }
        if self.streaming {
            let mut events = Vec::new();
            if self.trace_mode == TraceMode::Full {
                // Configured to keep every event (for `Node::query`):
                // subscribers get copies of the new ones.
                let all = self.vm.trace().events();
                events.extend_from_slice(&all[self.streamed.min(all.len())..]);
                self.streamed = all.len();
            } else {
                self.vm.trace_mut().take_events(&mut events);
            }
            if let Some(dropped) = self
                .trace_gate
                .admit(events.len(), self.stats.trace_in_flight())
            {
                self.stats.trace_sent(events.len());
                self.commands.push(Command::Trace { events, dropped });
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Peer(event) => self.handle_peer_event(event),
            Event::Run { program, reply } => {
                let key = self.submitted.insert(reply);
                if let Err(e) = self.vm.start_program(program, LOCAL_ORIGIN | key as u64) {
                    let reply = self.submitted.remove(key);
                    let _ = reply.send(Err(e.to_string()));
                }
            }
            Event::Query(query) => {
                // The embedder's code: a panic there drops its answer (the
                // receiver sees the channel close) and nothing else.
                if let Err(why) = crate::quiet_panic::catch_printed(|| query(&mut self.vm)) {
                    warn!("a query panicked, and was not answered: {why}");
                }
            }
            Event::StopAsked => {
                self.outcome.get_or_insert(Outcome::Stopped);
            }
            Event::ReactorStopped { reason } => {
                self.outcome = Some(reason.map_or(Outcome::Stopped, Outcome::Failed));
            }
        }
    }

    fn handle_peer_event(&mut self, event: protocol::Event) {
        match event {
            protocol::Event::Inbound {
                inbound,
                target,
                input,
                sender_machine,
                chain,
                op: Some(op),
                ..
            } => {
                self.stats.count_call_in();
                debug!("{sender_machine} asks {} of object {target}", op.name());
                if op.answers_at_once() {
                    let answer = self.vm.serve_op(op, target, &input);
                    // What the op announces (an adopt's create_notify, a
                    // destroy's destroy_notify) leaves before its answer:
                    // whoever hears the answer has heard the notice.
                    self.vm.take_pending(&mut self.outputs);
                    self.route_outputs();
                    self.commands.push(Command::Reply {
                        inbound,
                        result: Ok(answer),
                    });
                } else {
                    self.vm.start_op(op, target, &input, chain, inbound.0);
                }
            }
            protocol::Event::Inbound {
                inbound,
                target,
                input,
                sender,
                sender_machine,
                chain,
                op: None,
            } => {
                self.stats.count_call_in();
                self.vm.note_arrival(target, chain, &sender_machine);
                if let Some(sender) = sender {
                    if !self.vm.hosts(sender) {
                        self.hosted_stale |= self
                            .vm
                            .directory_mut()
                            .learn_sender(sender, &sender_machine);
                    }
                }
                let call = StartCall {
                    target,
                    input,
                    sender,
                    chain,
                };
                self.vm.start_call(call, inbound.0);
            }
            protocol::Event::Reply {
                token,
                result,
                lost,
            } => {
                if let Err(reason) = &result {
                    let failures = self.stats.count_failure(reason);
                    let chain = self
                        .vm
                        .chain_of(token)
                        .map_or_else(|| "chain ?".into(), |c| c.to_string());
                    // Failed by our own shutdown: expected, not a warning.
                    let ours = reason.ends_with(protocol::SHUTTING_DOWN);
                    let line = format!("remote call failed ({chain}): {reason}");
                    // The nested calls of one chain fail together, alike:
                    // one line says it.
                    let again = self.failure_said.as_deref() == Some(line.as_str());
                    if failures <= LOUD_FAILURES && !ours && !again {
                        warn!("{line}");
                    } else {
                        debug!("{line}");
                    }
                    self.failure_said = Some(line);
                }
                let resumed = match result {
                    Err(reason) if lost => self.vm.resume_lost(token, reason),
                    result => self.vm.resume(token, result),
                };
                if let Err(e) = resumed {
                    warn!("reply for a chain the vm does not know: {e}");
                }
            }
            protocol::Event::LateAdoptAnswer { token, result } => {
                self.vm.late_adopt_answer(token, result);
            }
            protocol::Event::Notice { from, notice } => {
                self.hosted_stale = true;
                if let Notice::Created {
                    id, epoch, machine, ..
                } = &notice
                {
                    // Ours, unless it moved on through a move of ours whose
                    // answer was lost (a newer epoch, from its holder): the
                    // directory names others only.
                    let moved_on =
                        *machine == from && self.vm.announced_elsewhere(*id, &from, *epoch);
                    if self.vm.owns(*id) && !moved_on {
                        debug!("directory: {from} announces {id}, which is here; ignored");
                        return;
                    }
                }
                if let Notice::Named { id, name, .. } = &notice {
                    // The new home names an object it adopted before its
                    // answer reaches us: ours until then, as for Created.
                    if self.vm.is_moving(*id) {
                        debug!("directory: {from} names {id} `{name}`, moving there; ignored");
                        return;
                    }
                }
                if let Notice::Destroyed { id } = &notice {
                    self.vm.destroyed_elsewhere(*id, &from);
                }
                if let Notice::Moved { id, epoch, .. } = &notice {
                    self.vm.moved_elsewhere(*id, &from, *epoch);
                }
                // Cloned only to be logged: a snapshot is a million of these.
                let shown = log::log_enabled!(log::Level::Debug).then(|| format!("{notice:?}"));
                match self.vm.directory_mut().apply(&from, notice) {
                    Ok(_) => debug!("directory: {from}: {}", shown.unwrap_or_default()),
                    Err(refused) if refused.is_forgery() => warn!("{from}: {refused}"),
                    Err(refused) => debug!("{from}: {refused}"),
                }
            }
            protocol::Event::PeerUp {
                machine,
                prefix,
                up,
            } => {
                self.hosted_stale = true;
                let forgot = self.vm.directory_mut().peer_up(&machine, prefix);
                self.peer_up_at.insert(machine.clone(), Instant::now());
                info!("peer {machine} is up");
                if forgot > 0 {
                    debug!("directory: forgot {forgot} objects of {machine}; its snapshot follows");
                }
                self.send_snapshot(machine, up);
            }
            protocol::Event::SnapshotOwed { machine, up } => {
                info!("peer {machine}: on a spare connection now; sending the directory snapshot again");
                self.send_snapshot(machine, up);
            }
            protocol::Event::Synced { machine, objects } => {
                // Moved objects kept from before it came up may go now.
                self.hosted_stale = true;
                self.vm.directory_mut().mark_synced(&machine);
                self.vm.peer_synced(&machine);
                let objects = match objects {
                    1 => "1 object".to_string(),
                    n => format!("{n} objects"),
                };
                match self.peer_up_at.remove(&machine) {
                    Some(at) => info!(
                        "directory: learned {objects} from {machine} in {:.2?}",
                        at.elapsed()
                    ),
                    None => info!("directory: learned {objects} from {machine}"),
                }
            }
            protocol::Event::Probe(probe) => self.vm.handle_probe(probe),
            protocol::Event::Victim(cycle) => self.vm.handle_victim(*cycle),
            protocol::Event::PeerDown { machine, reason } => {
                let names = self.vm.directory_mut().peer_down(&machine);
                if names > 0 {
                    debug!("names: forgot {names} held on {machine}, which is down");
                }
                match reason {
                    CloseReason::PeerClosed | CloseReason::ShuttingDown => {
                        info!("peer {machine} left: {reason}")
                    }
                    reason => warn!("peer {machine} is down: {reason}"),
                }
            }
        }
    }

    /// Our directory snapshot, for `machine` (owed after its `up`th
    /// coming up).
    fn send_snapshot(&mut self, machine: MachineId, up: u64) {
        let objects = self.vm.snapshot_objects();
        let names = self.vm.directory().local_names();
        let epochs = self.vm.moved_objects();
        self.commands.push(Command::Snapshot {
            machine,
            up,
            objects,
            names,
            epochs,
        });
    }

    fn route_outputs(&mut self) {
        for output in self.outputs.drain(..) {
            match output {
                Output::RemoteCall(call) => {
                    self.stats.count_call_out();
                    self.commands.push(Command::Call(call));
                }
                Output::Finished {
                    chain,
                    result: Err(e),
                    origin,
                    ..
                } if origin & LOCAL_ORIGIN == 0 => {
                    let reason = e.to_string();
                    debug!("inbound call failed here ({chain}): {reason}");
                    self.stats.count_failed_here(&reason);
                    self.commands.push(Command::Reply {
                        inbound: protocol::InboundId(origin),
                        result: Err(reason),
                    });
                }
                Output::Finished {
                    origin,
                    result,
                    last_failure,
                    ..
                } if origin & LOCAL_ORIGIN != 0 => {
                    if let Err(e) = &result {
                        self.stats.count_failed_here(&e.to_string());
                    }
                    let key = (origin & !LOCAL_ORIGIN) as usize;
                    if let Some(reply) = self.submitted.try_remove(key) {
                        self.results.push((reply, explained(result, last_failure)));
                    }
                }
                Output::Finished { origin, result, .. } => {
                    self.commands.push(Command::Reply {
                        inbound: protocol::InboundId(origin),
                        result: result.map_err(|e| e.to_string()),
                    });
                }
                Output::Created { id, behavior } => {
                    debug!("created object {id} ({behavior})");
                    self.commands.push(Command::Created {
                        id,
                        behavior,
                        epoch: 0,
                    })
                }
                Output::Adopted {
                    id,
                    behavior,
                    epoch,
                } => {
                    info!("object {id} moved here");
                    self.hosted_stale = true;
                    self.commands.push(Command::Created {
                        id,
                        behavior,
                        epoch,
                    })
                }
                Output::Named { name, id } => {
                    debug!("object {id} took the name `{name}`");
                    self.commands.push(Command::Named { name, id })
                }
                Output::Unnamed { name, id } => {
                    debug!("object {id} no longer has the name `{name}`");
                    self.commands.push(Command::Unnamed { name, id })
                }
                Output::Destroyed { id } => {
                    debug!("destroyed object {id}");
                    self.commands.push(Command::Destroyed { id })
                }
                Output::Moved { id, machine, epoch } => {
                    info!("object {id} moved to {machine}");
                    self.hosted_stale = true;
                    self.commands.push(Command::Moved { id, machine, epoch })
                }
                Output::DeadlockBroken(cycle) => {
                    self.stats.count_deadlock();
                    debug!("deadlock broken: {cycle}")
                }
                Output::Probe { machine, probe } => {
                    self.commands.push(Command::Probe { machine, probe })
                }
                Output::Victim { machine, cycle } => {
                    self.commands.push(Command::Victim { machine, cycle })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::node::{Node, NodeConfig};
    use crate::vm::{
        call, done, move_object, BehaviorRegistry, MachineId, Notice, ObjectId, PureRegistry,
        RemoteCall, RemoteOp, SuspendToken, Val, VmConfig, VmError,
    };

    /// An interpreter on `name` (prefix `prefix`), hosting tallies, with
    /// `peer` (prefix `peer_prefix`) up.
    fn interpreter(poll: &mio::Poll, name: &str, prefix: u16, peer: (&str, u16)) -> Interpreter {
        let mut behaviors = BehaviorRegistry::new();
        behaviors.register("tally", done);
        let config = VmConfig::new(MachineId::new(name), prefix);
        let mut vm = Vm::new(config, behaviors, PureRegistry::new());
        vm.directory_mut().peer_up(&MachineId::new(peer.0), peer.1);
        let waker = mio::Waker::new(poll.registry(), mio::Token(1)).unwrap();
        let handoff = Handoff::new(waker);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(NodeStats::default());
        Interpreter::new(vm, handoff, stop, stats, Duration::ZERO, None)
    }

    /// An interpreter on alpha, with beta up, and a tally on its way to
    /// beta: the adopt is out, its token returned.
    fn moving(poll: &mio::Poll) -> (Interpreter, ObjectId, SuspendToken) {
        let (interp, t, adopt) = moving_call(poll);
        (interp, t, adopt.token)
    }

    /// [`moving`], answering the whole adopt call.
    fn moving_call(poll: &mio::Poll) -> (Interpreter, ObjectId, RemoteCall) {
        let mut interp = interpreter(poll, "alpha", 1, ("beta", 2));
        let t = interp.vm.create_object("tally").unwrap();
        interp.vm.start_program(move_object(t, "beta"), 0).unwrap();
        interp.vm.run(&mut interp.outputs);
        let adopt = interp
            .outputs
            .drain(..)
            .find_map(|o| match o {
                Output::RemoteCall(rc) if rc.op == Some(RemoteOp::Adopt) => Some(rc),
                _ => None,
            })
            .expect("the adopt");
        (interp, t, adopt)
    }

    /// The new home announces an adopted object before it answers the
    /// adopt: a node that hears the answer has heard the create_notify.
    #[test]
    fn the_new_home_announces_before_it_answers_the_adopt() {
        let poll = mio::Poll::new().unwrap();
        let (_alpha, t, adopt) = moving_call(&poll);
        let beta_poll = mio::Poll::new().unwrap();
        let mut beta = interpreter(&beta_poll, "beta", 2, ("alpha", 1));
        beta.handle_peer_event(protocol::Event::Inbound {
            inbound: protocol::InboundId(7),
            target: t,
            input: adopt.input,
            sender: None,
            sender_machine: MachineId::new("alpha"),
            chain: Some(adopt.chain),
            op: Some(RemoteOp::Adopt),
        });
        let said: Vec<&str> = beta
            .commands
            .iter()
            .map(|c| match c {
                Command::Created { id, .. } if *id == t => "create_notify",
                Command::Reply {
                    result: Ok(Val::Bool(true)),
                    ..
                } => "adopted",
                _ => "something else",
            })
            .collect();
        assert_eq!(said, ["create_notify", "adopted"]);
    }

    fn lose(interp: &mut Interpreter, token: SuspendToken) {
        interp.handle_peer_event(protocol::Event::Reply {
            token,
            result: Err("connection to beta lost".into()),
            lost: true,
        });
        interp.vm.run(&mut interp.outputs);
    }

    /// beta's create_notify for `t` at epoch 1: the new home's word.
    fn announced_by_beta(interp: &mut Interpreter, t: ObjectId) {
        let beta = MachineId::new("beta");
        interp.handle_peer_event(protocol::Event::Notice {
            from: beta.clone(),
            notice: Notice::Created {
                id: t,
                machine: beta,
                behavior: Some("tally".into()),
                epoch: 1,
            },
        });
    }

    /// beta's connection comes up again (its second life of `up`).
    fn beta_comes_up_again(interp: &mut Interpreter) {
        interp.handle_peer_event(protocol::Event::PeerUp {
            machine: MachineId::new("beta"),
            prefix: 2,
            up: 2,
        });
    }

    /// Runs, then: the move of `t` was made (its mover got `true`), and
    /// the directory places `t` on `machine`.
    fn made_to(interp: &mut Interpreter, t: ObjectId, machine: &MachineId) {
        interp.vm.run(&mut interp.outputs);
        assert_eq!(moved(interp), Some(Ok(Val::Bool(true))));
        assert!(!interp.vm.hosts(t));
        assert_eq!(interp.vm.directory().machine_of(t), Some(machine));
    }

    /// The move's answer, once it has one.
    fn moved(interp: &mut Interpreter) -> Option<Result<Val, VmError>> {
        interp.outputs.drain(..).find_map(|o| match o {
            Output::Finished { result, .. } => Some(result),
            _ => None,
        })
    }

    /// The node's side of a move in doubt: a lost reply parks it (the
    /// object stays), and beta's create_notify at the new epoch, applied
    /// as a notice, ends it as made and places the object on beta.
    #[test]
    fn a_lost_adopt_reply_parks_the_move_and_the_new_homes_notice_ends_it() {
        let poll = mio::Poll::new().unwrap();
        let (mut interp, t, adopt) = moving(&poll);
        lose(&mut interp, adopt);
        assert!(interp.vm.owns(t), "in doubt, it stays");
        assert_eq!(moved(&mut interp), None, "the mover waits");
        let beta = MachineId::new("beta");
        announced_by_beta(&mut interp, t);
        made_to(&mut interp, t, &beta);
    }

    /// Events dropped while nobody watched are not reported to the next
    /// subscriber: the gate's count starts again when streaming starts.
    #[test]
    fn a_new_subscriber_is_not_told_of_drops_before_it() {
        let poll = mio::Poll::new().unwrap();
        let mut interp = interpreter(&poll, "alpha", 1, ("beta", 2));
        let full = crate::node::stats::MAX_TRACE_IN_FLIGHT;
        interp.stats.set_subscribers(1, ALL_KINDS);
        interp.follow_subscribers();
        assert_eq!(interp.trace_gate.admit(5, full), None, "dropped, counted");
        interp.stats.set_subscribers(0, ALL_KINDS);
        interp.follow_subscribers();
        interp.stats.set_subscribers(1, ALL_KINDS);
        interp.follow_subscribers();
        assert!(interp.streaming);
        assert_eq!(interp.trace_gate.admit(1, 0), Some(0), "no old drops");
    }

    /// The per-peer object counts of `/health` follow a snapshot's end: a
    /// moved object kept across beta's reconnect, and not named again by
    /// its snapshot, is no longer counted as beta's.
    #[test]
    fn hosted_counts_are_refreshed_when_a_snapshot_ends() {
        let poll = mio::Poll::new().unwrap();
        let (mut interp, t, adopt) = moving(&poll);
        lose(&mut interp, adopt);
        let beta = MachineId::new("beta");
        announced_by_beta(&mut interp, t);
        made_to(&mut interp, t, &beta);
        let beta_count = |interp: &Interpreter| {
            let hosted = interp.stats.hosted();
            hosted
                .iter()
                .find(|(m, _)| m == "beta")
                .map_or(0, |&(_, n)| n)
        };
        let mut now = Instant::now() + NodeStats::HOSTED_EVERY;
        interp.report(now);
        assert_eq!(beta_count(&interp), 1, "t moved to beta");
        beta_comes_up_again(&mut interp);
        now += NodeStats::HOSTED_EVERY;
        interp.report(now);
        assert_eq!(beta_count(&interp), 1, "kept until beta's snapshot ends");
        interp.handle_peer_event(protocol::Event::Synced {
            machine: beta.clone(),
            objects: 0,
        });
        assert_eq!(interp.vm.directory().machine_of(t), None, "dropped");
        now += NodeStats::HOSTED_EVERY;
        interp.report(now);
        assert_eq!(beta_count(&interp), 0, "the count follows the directory");
    }

    /// A third node's word at the move's own epoch is no word: gamma's
    /// announcement, then beta's error answer, leaves the object here.
    #[test]
    fn an_adopt_refused_after_a_third_nodes_announcement_thaws() {
        let poll = mio::Poll::new().unwrap();
        let (mut interp, t, adopt) = moving(&poll);
        let gamma = MachineId::new("gamma");
        interp.handle_peer_event(protocol::Event::Notice {
            from: gamma.clone(),
            notice: Notice::Created {
                id: t,
                machine: gamma,
                behavior: Some("tally".into()),
                epoch: 1,
            },
        });
        interp.handle_peer_event(protocol::Event::Reply {
            token: adopt,
            result: Err("not durable: disk full".into()),
            lost: false,
        });
        interp.vm.run(&mut interp.outputs);
        assert_eq!(moved(&mut interp), Some(Ok(Val::Bool(false))));
        assert!(interp.vm.owns(t));
    }

    /// The new home's name_notify for an object still moving there (it
    /// comes before the adopt's answer) changes nothing here: the name
    /// stays this node's until the move is made.
    #[test]
    fn the_new_homes_name_notice_waits_for_the_move() {
        let poll = mio::Poll::new().unwrap();
        // "zeta" sorts after "beta": a name notice from beta would win.
        let mut interp = interpreter(&poll, "zeta", 1, ("beta", 2));
        // An object of beta's, hosted here (moved here once), named `n`.
        let t = ObjectId(2 << 48 | 7);
        let record = Val::List(vec![
            Val::str("tally"),
            Val::Nothing,
            Val::Nat(3),
            Val::List(vec![Val::Nat(1)]),
            Val::Nat(1),
            Val::List(vec![Val::str("n")]),
        ]);
        assert_eq!(
            interp.vm.serve_op(RemoteOp::Adopt, t, &record),
            Val::Bool(true)
        );
        interp.vm.start_program(move_object(t, "beta"), 0).unwrap();
        interp.vm.run(&mut interp.outputs);
        assert!(interp.vm.is_moving(t));
        interp.handle_peer_event(protocol::Event::Notice {
            from: MachineId::new("beta"),
            notice: Notice::Named {
                name: "n".into(),
                id: t,
                machine: MachineId::new("beta"),
            },
        });
        assert_eq!(interp.vm.directory().name_holder("n"), None, "still ours");
        assert_eq!(interp.vm.directory().whereis("n"), Some(t));
    }

    /// beta, holding the object, moved it on (its move_notify at a later
    /// epoch) before its snapshot after the reconnect could announce it:
    /// the move was made, and alpha's copy does not thaw at the snapshot's
    /// end into a second owner.
    #[test]
    fn a_lost_adopt_reply_is_settled_by_the_new_homes_move_on() {
        let poll = mio::Poll::new().unwrap();
        let (mut interp, t, adopt) = moving(&poll);
        lose(&mut interp, adopt);
        let beta = MachineId::new("beta");
        beta_comes_up_again(&mut interp);
        interp.handle_peer_event(protocol::Event::Notice {
            from: beta.clone(),
            notice: Notice::Moved {
                id: t,
                machine: MachineId::new("gamma"),
                epoch: 2,
            },
        });
        interp.handle_peer_event(protocol::Event::Synced {
            machine: beta,
            objects: 0,
        });
        made_to(&mut interp, t, &MachineId::new("gamma"));
    }

    /// The same, but beta reconnects and its snapshot ends without the
    /// object: the move did not happen, and the object serves again.
    #[test]
    fn a_lost_adopt_reply_thaws_after_the_new_homes_next_snapshot() {
        let poll = mio::Poll::new().unwrap();
        let (mut interp, t, adopt) = moving(&poll);
        lose(&mut interp, adopt);
        let beta = MachineId::new("beta");
        beta_comes_up_again(&mut interp);
        interp.handle_peer_event(protocol::Event::Synced {
            machine: beta,
            objects: 0,
        });
        interp.vm.run(&mut interp.outputs);
        assert_eq!(moved(&mut interp), Some(Ok(Val::Bool(false))));
        assert!(interp.vm.owns(t));
        let destroy = interp.vm.serve_op(RemoteOp::Destroy, t, &Val::Nothing);
        assert_eq!(destroy, Val::Bool(true), "thawed: no longer moving");
    }

    /// beta announced the object, then answered the adopt with an error
    /// (its store write failed): it holds the object, so the move was
    /// made, and alpha's copy leaves instead of thawing into a second one.
    #[test]
    fn an_adopt_refused_after_its_announcement_counts_as_made() {
        let poll = mio::Poll::new().unwrap();
        let (mut interp, t, adopt) = moving(&poll);
        let beta = MachineId::new("beta");
        announced_by_beta(&mut interp, t);
        interp.handle_peer_event(protocol::Event::Reply {
            token: adopt,
            result: Err("not durable: store beta.redb: cannot write: disk full".into()),
            lost: false,
        });
        made_to(&mut interp, t, &beta);
    }

    /// The adopt timed out with beta still connected, and beta's answer
    /// comes late: a no thaws the object (the mover gets `false`), a yes
    /// ends the move as made. An answer naming another token, or coming
    /// after the doubt was settled, changes nothing.
    #[test]
    fn a_late_adopt_answer_settles_the_move_in_doubt() {
        let beta = MachineId::new("beta");
        let late = |interp: &mut Interpreter, token, result| {
            interp.handle_peer_event(protocol::Event::LateAdoptAnswer { token, result });
            interp.vm.run(&mut interp.outputs);
        };

        let poll = mio::Poll::new().unwrap();
        let (mut interp, t, adopt) = moving(&poll);
        lose(&mut interp, adopt);
        late(
            &mut interp,
            SuspendToken(adopt.0 ^ 1 << 40),
            Ok(Val::Bool(true)),
        );
        assert_eq!(moved(&mut interp), None, "not this move's answer");
        late(&mut interp, adopt, Ok(Val::Bool(false)));
        assert_eq!(moved(&mut interp), Some(Ok(Val::Bool(false))));
        assert!(interp.vm.owns(t));
        let destroy = interp.vm.serve_op(RemoteOp::Destroy, t, &Val::Nothing);
        assert_eq!(destroy, Val::Bool(true), "thawed: no longer moving");

        let poll = mio::Poll::new().unwrap();
        let (mut interp, t, adopt) = moving(&poll);
        lose(&mut interp, adopt);
        late(&mut interp, adopt, Ok(Val::Bool(true)));
        made_to(&mut interp, t, &beta);
        late(&mut interp, adopt, Ok(Val::Bool(false)));
        assert_eq!(moved(&mut interp), None, "settled already");
        assert_eq!(interp.vm.directory().machine_of(t), Some(&beta));
    }

    /// A burst of chains leaves its buffers for reuse, and the interpreter
    /// gives them back once the node has been idle for `heap::IDLE_AFTER`.
    #[test]
    fn an_idle_node_gives_back_a_burst() {
        let mut behaviors = BehaviorRegistry::new();
        behaviors.register("echo", done);
        let mut config = NodeConfig::new("solo");
        // A key of its own: no test reads or writes the real ~/.avm.
        config.cluster_key = Some(crate::node::key::ClusterKey::from_bytes(b"a test key").unwrap());
        let node = Node::start(config, behaviors, PureRegistry::new()).unwrap();
        let burst = node.query(|vm| {
            let echo = vm.create_object("echo").unwrap();
            for n in 0..600 {
                vm.start_program(call(echo, Val::Nat(n)), 0).unwrap();
            }
            vm.run(&mut Vec::new());
            vm.spare_and_chain_slots()
        });
        let (spares, slots) = burst.recv().unwrap();
        assert!(
            spares >= 600 && slots >= 600,
            "{spares} spares, {slots} slots"
        );
        // Each look is work too, so look less often than the idle delay.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let (spares, slots) = node.query(|vm| vm.spare_and_chain_slots()).recv().unwrap();
            if spares <= 32 && slots <= 64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still {spares} spares and {slots} slots"
            );
        }
        // And it serves on.
        let echo: ObjectId = node
            .query(|vm| vm.local_objects().map(|(id, _)| id).next().unwrap())
            .recv()
            .unwrap();
        assert_eq!(
            node.submit(call(echo, Val::Nat(7))).recv().unwrap(),
            Ok(Val::just(Val::Nat(7)))
        );
        node.shutdown();
    }
}
