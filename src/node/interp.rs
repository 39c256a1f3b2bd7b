//! The interpreter thread: drains reactor events into the vm, runs it, and
//! turns its outputs into reactor commands.
//!
//! ```text
//!   loop {
//!       vm.run(&mut outputs)      -> Command::{Call, Reply, Created, Destroyed}
//!       handoff.send_commands     (one wake of the reactor per batch)
//!       handoff.take_events       -> Inbound starts a chain, Reply resumes one
//!       nothing to do? park       (re-checks the queue on every wake-up)
//!   }
//! ```
//!
//! The thread never blocks on one reply: a chain waiting on a remote call
//! is plain data inside the vm, so an inbound call (pong calling ping back
//! while ping waits on pong) starts and runs here in the meantime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::reactor::handoff::{Command, Event, Handoff};
use crate::reactor::PEER_CLOSED;
use slab::Slab;

use crate::vm::{MachineId, ObjectId, Output, StartCall, Val, Vm};
use log::{debug, info, warn};

use super::demo::{DemoReport, DemoRole};
use super::Outcome;

/// Steps the vm takes between looks at the queue from the reactor: a
/// chain that runs long (or for ever) on this node delays inbound calls,
/// replies and shutdown by at most this many steps, about a millisecond.
const STEP_BUDGET: u32 = 10_000;

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

/// When the orchestrator stops waiting for a `pong`; `None`: never (a wait
/// too long to add to an `Instant`, such as `--demo-wait` 2^64-1).
fn give_up(since: Instant, wait: Duration) -> Option<Instant> {
    since.checked_add(wait)
}

/// Origin tags of chains, as the vm hands them back in `Output::Finished`:
/// inbound ids from the reactor have a 31-bit generation in their top
/// half, so bit 63 is free to mark chains started on this node.
const LOCAL_ORIGIN: u64 = 1 << 63;
/// The demo's orchestrator chain.
const DEMO_ORIGIN: u64 = u64::MAX;
/// Remote-call failures logged at `warn` before the rest go to `debug`
/// (a lost peer fails every nested call of a deep chain at once).
const LOUD_FAILURES: u64 = 5;

enum DemoState {
    None,
    WaitingForPong {
        since: Instant,
        wait: Duration,
        next_note: Instant,
        rounds: u64,
    },
    Running {
        started: Instant,
        rounds: u64,
        pong_machine: MachineId,
    },
}

pub struct Interpreter {
    vm: Vm,
    handoff: Arc<Handoff>,
    stop: Arc<AtomicBool>,
    role: Option<DemoRole>,
    demo: DemoState,
    outcome: Option<Outcome>,
    events: Vec<Event>,
    outputs: Vec<Output>,
    commands: Vec<Command>,
    calls_out: u64,
    calls_in: u64,
    failures: u64,
    first_failure: Option<String>,
    /// Where the results of submitted programs go, keyed by origin.
    submitted: Slab<Sender<Result<Val, String>>>,
    /// How long to yield-spin for events after activity before parking.
    spin: Duration,
}

impl Interpreter {
    /// `spin` is ignored on a single CPU, where spinning only delays the
    /// reactor this thread is waiting for.
    pub fn new(
        vm: Vm,
        handoff: Arc<Handoff>,
        stop: Arc<AtomicBool>,
        role: Option<DemoRole>,
        spin: Duration,
    ) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spin = if cpus > 1 { spin } else { Duration::ZERO };
        Interpreter {
            vm,
            handoff,
            stop,
            role,
            demo: DemoState::None,
            outcome: None,
            events: Vec::with_capacity(64),
            outputs: Vec::with_capacity(64),
            commands: Vec::with_capacity(64),
            calls_out: 0,
            calls_in: 0,
            failures: 0,
            first_failure: None,
            submitted: Slab::new(),
            spin,
        }
    }

    pub fn run(mut self) -> Outcome {
        self.handoff.register_interpreter();
        self.start_role();
        let outcome = self.event_loop();
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
            let more = self.vm.run_for(STEP_BUDGET, &mut self.outputs);
            self.route_outputs();
            self.handoff.send_commands(&mut self.commands);
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
                if Instant::now() < spin_until {
                    std::thread::yield_now();
                    continue;
                }
                match self.wake_deadline() {
                    Some(at) => {
                        std::thread::park_timeout(at.saturating_duration_since(Instant::now()))
                    }
                    None => std::thread::park(),
                }
                self.check_demo_wait(Instant::now());
                continue;
            }
            let mut events = std::mem::take(&mut self.events);
            for event in events.drain(..) {
                self.handle_event(event);
            }
            self.events = events;
            spin_until = Instant::now() + self.spin;
        }
    }

    fn start_role(&mut self) {
        match self.role.clone() {
            None => {}
            Some(DemoRole::Serve) => match self.vm.create_object("pong") {
                Ok(id) => info!("demo: created pong {id}; serving"),
                Err(e) => self.outcome = Some(Outcome::DemoFailed(format!("creating pong: {e}"))),
            },
            Some(DemoRole::Orchestrate { rounds, wait }) => {
                let now = Instant::now();
                info!("demo: waiting for a `pong` object to appear in the directory");
                self.demo = DemoState::WaitingForPong {
                    since: now,
                    wait,
                    next_note: now + Duration::from_secs(5),
                    rounds,
                };
                self.check_demo_wait(now);
            }
        }
    }

    /// When the interpreter must wake even without events.
    fn wake_deadline(&self) -> Option<Instant> {
        match &self.demo {
            DemoState::WaitingForPong {
                since,
                wait,
                next_note,
                ..
            } => Some(give_up(*since, *wait).map_or(*next_note, |g| g.min(*next_note))),
            _ => None,
        }
    }

    /// Starts the orchestrator once a `pong` is known; gives up after the wait.
    fn check_demo_wait(&mut self, now: Instant) {
        let DemoState::WaitingForPong {
            since,
            wait,
            next_note,
            rounds,
        } = self.demo
        else {
            return;
        };
        if let Some(pong) = self.vm.directory().find_by_behavior("pong") {
            let pong_machine = self
                .vm
                .directory()
                .machine_of(pong)
                .cloned()
                .expect("just found");
            info!("demo: found pong {pong} on {pong_machine}; running {rounds} rounds");
            let program = crate::demo::pingpong::orchestrator(rounds, pong);
            match self.vm.start_program(program, DEMO_ORIGIN) {
                Ok(_) => {
                    self.demo = DemoState::Running {
                        started: Instant::now(),
                        rounds,
                        pong_machine,
                    }
                }
                Err(e) => {
                    self.outcome = Some(Outcome::DemoFailed(format!(
                        "starting the orchestrator: {e}"
                    )))
                }
            }
        } else if give_up(since, wait).is_some_and(|g| now >= g) {
            self.outcome = Some(Outcome::DemoFailed(format!(
                "no `pong` object appeared within {wait:?}; is the serving node (--demo without --rounds) running and reachable?"
            )));
        } else if now >= next_note {
            info!(
                "demo: still waiting for a `pong` object ({:.0?} so far)",
                now - since
            );
            if let DemoState::WaitingForPong { next_note, .. } = &mut self.demo {
                *next_note = now + Duration::from_secs(5);
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Inbound {
                inbound,
                target,
                input,
                sender,
                sender_machine,
                chain,
            } => {
                self.calls_in += 1;
                let sender = (sender != ObjectId(0)).then_some(sender);
                if let Some(sender) = sender {
                    // A caller that never announced itself (a client written
                    // from the protocol page alone) can still be called back.
                    if !self.vm.hosts(sender) && self.vm.directory().machine_of(sender).is_none() {
                        self.vm.directory_mut().insert(sender, sender_machine, None);
                    }
                }
                self.vm.start_call(
                    StartCall {
                        target,
                        input,
                        sender,
                        chain,
                    },
                    inbound.0,
                );
            }
            Event::Reply { token, result } => {
                if let Err(reason) = &result {
                    self.failures += 1;
                    if self.first_failure.is_none() {
                        self.first_failure = Some(reason.clone());
                    }
                    if self.failures <= LOUD_FAILURES {
                        warn!("remote call failed: {reason}");
                    } else {
                        debug!("remote call failed: {reason}");
                    }
                }
                if let Err(e) = self.vm.resume(token, result) {
                    warn!("reply for a chain the vm does not know: {e}");
                }
            }
            Event::Located {
                id,
                machine,
                behavior,
            } => {
                info!(
                    "directory: object {id} ({}) is on {machine}",
                    behavior.as_deref().unwrap_or("?")
                );
                self.vm
                    .directory_mut()
                    .insert(id, machine, behavior.as_deref());
                self.check_demo_wait(Instant::now());
            }
            Event::Gone { id, machine } => {
                // Only the object's own machine may retire it.
                if self.vm.directory().machine_of(id) == Some(&machine) {
                    self.vm.directory_mut().remove(id);
                    info!("directory: object {id} on {machine} was destroyed");
                }
            }
            Event::Run { program, reply } => {
                let key = self.submitted.insert(reply);
                if let Err(e) = self.vm.start_program(program, LOCAL_ORIGIN | key as u64) {
                    let reply = self.submitted.remove(key);
                    let _ = reply.send(Err(e.to_string()));
                }
            }
            Event::PeerUp { machine } => {
                // Forget what we knew of its objects: its snapshot follows,
                // and after a restart its old objects are gone.
                let stale: Vec<ObjectId> = self.vm.directory().on_machine(&machine).collect();
                for id in stale {
                    self.vm.directory_mut().remove(id);
                }
                info!("peer {machine} is up");
            }
            Event::PeerDown { machine, reason } if reason == PEER_CLOSED => {
                info!("peer {machine} left: {reason}")
            }
            Event::PeerDown { machine, reason } => warn!("peer {machine} is down: {reason}"),
            Event::ReactorStopped { reason } => {
                self.outcome = Some(match (reason, &self.demo) {
                    (Some(reason), _) => Outcome::DemoFailed(reason),
                    (None, DemoState::Running { .. } | DemoState::WaitingForPong { .. }) => {
                        Outcome::DemoFailed("the node shut down before the demo finished".into())
                    }
                    (None, DemoState::None) => Outcome::Stopped,
                });
            }
        }
    }

    fn route_outputs(&mut self) {
        for output in self.outputs.drain(..) {
            match output {
                Output::RemoteCall(call) => {
                    self.calls_out += 1;
                    self.commands.push(Command::Call(call));
                }
                Output::Finished {
                    origin: DEMO_ORIGIN,
                    result,
                    ..
                } => {
                    let DemoState::Running {
                        started,
                        rounds,
                        pong_machine,
                    } = std::mem::replace(&mut self.demo, DemoState::None)
                    else {
                        continue;
                    };
                    self.outcome = Some(match result {
                        Ok(result) => Outcome::Demo(DemoReport {
                            rounds,
                            result,
                            pong_machine,
                            our_machine: self.vm.machine().clone(),
                            calls_out: self.calls_out,
                            calls_in: self.calls_in,
                            elapsed: started.elapsed(),
                            first_failure: self.first_failure.take(),
                        }),
                        Err(e) => Outcome::DemoFailed(format!("the orchestrator failed: {e}")),
                    });
                }
                Output::Finished { origin, result, .. } if origin & LOCAL_ORIGIN != 0 => {
                    let key = (origin & !LOCAL_ORIGIN) as usize;
                    if let Some(reply) = self.submitted.try_remove(key) {
                        // The submitter may have given up waiting: fine.
                        let _ = reply.send(result.map_err(|e| e.to_string()));
                    }
                }
                Output::Finished { origin, result, .. } => {
                    self.commands.push(Command::Reply {
                        inbound: crate::reactor::handoff::InboundId(origin),
                        result: result.map_err(|e| e.to_string()),
                    });
                }
                Output::Created { id, behavior } => {
                    self.commands.push(Command::Created { id, behavior })
                }
                Output::Destroyed { id } => self.commands.push(Command::Destroyed { id }),
            }
        }
    }
}
