//! The two queues between the interpreter thread and the reactor thread.
//!
//! ```text
//!   interpreter ──Command──▶ commands (Mutex<Vec>) ──mio::Waker──▶ reactor
//!   interpreter ◀──Event─── events   (Mutex<Vec>) ◀──unpark────── reactor
//! ```
//!
//! Each side batches: it fills a local `Vec`, then moves the whole batch in
//! under one lock and rings the other side once. The consumer swaps its
//! empty `Vec` for the shared one, so in steady state the three `Vec`s of
//! each direction keep their capacity and nothing is allocated per message.
//! The locks are held for an `append` or a `swap`, never across work: they
//! are uncontended in practice and cost one uncontended CAS each.
//!
//! Wake-ups: the reactor is woken by `mio::Waker` (an eventfd write), the
//! interpreter by `Thread::unpark`. Both threads spin briefly (yielding)
//! after activity before they block, because waking a thread on an idle
//! vCPU costs tens of microseconds, more than a whole round trip otherwise
//! takes. So the waker is rung only when the reactor says it is really
//! blocked (`reactor_sleeping`); the flag and the queue are checked in
//! opposite orders on the two sides, with `SeqCst` fences between, so one of
//! them always sees the other (the store-buffering pattern):
//!
//! ```text
//!   interpreter: push command; fence; if sleeping { wake }
//!   reactor:     sleeping = true; fence; if queue empty { poll(block) }
//! ```
//! `park` may return spuriously and an
//! `unpark` that comes before `park` makes the next `park` return at once,
//! so the interpreter parks in a loop that re-checks the queue: a wake-up
//! is never lost.

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;

use mio::Waker;

use crate::vm::{ChainId, MachineId, ObjectId, Program, RemoteCall, SuspendToken, Val};

/// Identifies an inbound call until the interpreter replies to it. Minted
/// by the reactor; opaque to the interpreter, which passes it to the vm as
/// the chain's origin and hands it back with the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InboundId(pub u64);

/// Interpreter -> reactor.
#[derive(Debug)]
pub enum Command {
    /// Send a call to the machine the vm named; answer with `Event::Reply`.
    Call(RemoteCall),
    /// The answer to an inbound call.
    Reply {
        inbound: InboundId,
        result: Result<Val, String>,
    },
    /// A local object was created: broadcast `create_notify`.
    Created { id: ObjectId, behavior: Arc<str> },
    /// A local object was destroyed: broadcast `destroy_notify`.
    Destroyed { id: ObjectId },
    /// Close everything and end the reactor thread.
    Shutdown,
}

/// Reactor -> interpreter.
#[derive(Debug)]
pub enum Event {
    /// A peer calls one of our objects.
    Inbound {
        inbound: InboundId,
        target: ObjectId,
        input: Val,
        sender: ObjectId,
        sender_machine: MachineId,
        chain: Option<ChainId>,
    },
    /// The answer to a `Command::Call` (an `Err` when it failed anywhere:
    /// unreachable machine, lost connection, the callee's error).
    Reply {
        token: SuspendToken,
        result: Result<Val, String>,
    },
    /// `create_notify`: an object lives on `machine`.
    Located {
        id: ObjectId,
        machine: MachineId,
        behavior: Option<Arc<str>>,
    },
    /// `destroy_notify` from `machine`: forget `id` if it was placed there.
    Gone { id: ObjectId, machine: MachineId },
    /// The first connection to `machine` completed its hellos.
    PeerUp { machine: MachineId },
    /// The last connection to `machine` closed.
    PeerDown { machine: MachineId, reason: String },
    /// The reactor thread ended (after `Command::Shutdown`, or on a fatal
    /// error, which `reason` names).
    ReactorStopped { reason: Option<String> },
    /// Not from the reactor: a program submitted through `Node::submit`,
    /// whose result goes back on `reply`.
    Run {
        program: Program,
        reply: Sender<Result<Val, String>>,
    },
}

/// The shared half of the handoff. One per node, in an `Arc`.
#[derive(Debug)]
pub struct Handoff {
    commands: Mutex<Vec<Command>>,
    waker: Waker,
    /// The reactor is in (or about to enter) a blocking `poll`.
    reactor_sleeping: AtomicBool,
    events: Mutex<Vec<Event>>,
    /// Events handed to the interpreter and not yet taken: the reactor
    /// stops reading sockets while this is over its limit.
    backlog: AtomicUsize,
    /// The reactor paused reading: the interpreter rings the waker once it
    /// has taken the backlog.
    reactor_paused: AtomicBool,
    interpreter: OnceLock<Thread>,
    /// The interpreter thread has ended: nobody takes events any more.
    interpreter_gone: AtomicBool,
}

impl Handoff {
    pub fn new(waker: Waker) -> Arc<Handoff> {
        Arc::new(Handoff {
            commands: Mutex::new(Vec::with_capacity(64)),
            waker,
            reactor_sleeping: AtomicBool::new(false),
            events: Mutex::new(Vec::with_capacity(64)),
            backlog: AtomicUsize::new(0),
            reactor_paused: AtomicBool::new(false),
            interpreter: OnceLock::new(),
            interpreter_gone: AtomicBool::new(false),
        })
    }

    /// Interpreter, as it ends: from now on whoever queues an event drains
    /// the queue itself ([`Handoff::events_unclaimed`]). Returns what was
    /// still queued.
    pub fn interpreter_ended(&self) -> Vec<Event> {
        self.interpreter_gone.store(true, Ordering::Relaxed);
        // ORDERING: pairs with the fence in `events_unclaimed`: either the
        // other side sees the flag, or we see its event here.
        fence(Ordering::SeqCst);
        std::mem::take(&mut *lock(&self.events))
    }

    /// After queueing events: if the interpreter has ended, takes them back
    /// (and anything else queued), since nobody else will.
    pub fn events_unclaimed(&self) -> Vec<Event> {
        // ORDERING: pairs with the fence in `interpreter_ended`.
        fence(Ordering::SeqCst);
        if self.interpreter_gone.load(Ordering::Relaxed) {
            std::mem::take(&mut *lock(&self.events))
        } else {
            Vec::new()
        }
    }

    /// Called once by the interpreter thread before it first parks.
    pub fn register_interpreter(&self) {
        let _ = self.interpreter.set(std::thread::current());
    }

    /// Interpreter: moves `batch` (left empty, capacity kept) to the
    /// reactor and wakes it. Does nothing for an empty batch.
    pub fn send_commands(&self, batch: &mut Vec<Command>) {
        if batch.is_empty() {
            return;
        }
        lock(&self.commands).append(batch);
        // ORDERING: SeqCst fence between our push and our load of the flag,
        // paired with the one in `reactor_may_sleep`: either the reactor
        // sees the command, or we see it sleeping and wake it.
        fence(Ordering::SeqCst);
        if self.reactor_sleeping.load(Ordering::Relaxed) {
            self.wake_reactor();
        }
    }

    /// Rings the reactor's waker unconditionally.
    pub fn wake_reactor(&self) {
        if let Err(e) = self.waker.wake() {
            // The reactor's poll is gone: it has stopped, and the
            // interpreter learns that from `Event::ReactorStopped`.
            log::debug!("waking the reactor failed: {e}");
        }
    }

    /// Reactor, before a blocking poll: announces it and answers whether
    /// it may really block (`false`: commands arrived meanwhile, poll
    /// without blocking). Call `reactor_awake` after the poll.
    pub fn reactor_may_sleep(&self) -> bool {
        self.reactor_sleeping.store(true, Ordering::Relaxed);
        // ORDERING: pairs with the fence in `send_commands`.
        fence(Ordering::SeqCst);
        if lock(&self.commands).is_empty() {
            true
        } else {
            self.reactor_sleeping.store(false, Ordering::Relaxed);
            false
        }
    }

    pub fn reactor_awake(&self) {
        // ORDERING: Relaxed is enough: a stale `true` seen by the
        // interpreter costs one spurious wake, never a lost one.
        self.reactor_sleeping.store(false, Ordering::Relaxed);
    }

    /// Interpreter: whether events are waiting (for its spin loop).
    pub fn has_events(&self) -> bool {
        !lock(&self.events).is_empty()
    }

    /// Reactor: swaps the pending commands into `into`, which must be
    /// empty (its capacity goes back to the shared side).
    pub fn take_commands(&self, into: &mut Vec<Command>) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut *lock(&self.commands), into);
    }

    /// Reactor: moves `batch` to the interpreter and unparks it.
    pub fn send_events(&self, batch: &mut Vec<Event>) {
        if batch.is_empty() {
            return;
        }
        let mut events = lock(&self.events);
        // ORDERING: Relaxed: the count is only compared with a limit; the
        // lock orders it with the events themselves.
        self.backlog.fetch_add(batch.len(), Ordering::Relaxed);
        events.append(batch);
        drop(events);
        self.unpark_interpreter();
    }

    /// Events handed over and not yet taken by the interpreter.
    pub fn backlog(&self) -> usize {
        // ORDERING: SeqCst, after the reactor's SeqCst store of the pause
        // flag: with `take_events`' SeqCst load, one side always sees the
        // other (a missed wake would still be caught by the next timer).
        self.backlog.load(Ordering::SeqCst)
    }

    /// Reactor: it stopped reading until the backlog drains.
    pub fn set_reactor_paused(&self, paused: bool) {
        // ORDERING: SeqCst, ordered before the reactor's next SeqCst load of
        // `backlog`, against `take_events`' SeqCst load of this flag.
        self.reactor_paused.store(paused, Ordering::SeqCst);
    }

    /// Wakes the interpreter without an event (used to ask it to stop).
    pub fn unpark_interpreter(&self) {
        if let Some(t) = self.interpreter.get() {
            t.unpark();
        }
    }

    /// Interpreter: swaps the pending events into `into` (must be empty).
    pub fn take_events(&self, into: &mut Vec<Event>) {
        debug_assert!(into.is_empty());
        {
            let mut events = lock(&self.events);
            std::mem::swap(&mut *events, into);
            // ORDERING: Relaxed: updated under the lock, like the add.
            self.backlog.fetch_sub(into.len(), Ordering::Relaxed);
        }
        // ORDERING: SeqCst pairs with the reactor's SeqCst store: if it
        // paused after seeing a full backlog, we see the flag here.
        if !into.is_empty() && self.reactor_paused.load(Ordering::SeqCst) {
            self.wake_reactor();
        }
    }
}

/// A poisoned queue only means the other thread panicked mid-append; the
/// `Vec` itself is still valid, so keep going rather than cascade.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    #[test]
    fn commands_sent_before_poll_wake_the_reactor() {
        let mut poll = Poll::new().unwrap();
        let waker = Waker::new(poll.registry(), Token(1)).unwrap();
        let h = Handoff::new(waker);
        assert!(h.reactor_may_sleep());
        let mut batch = vec![Command::Destroyed { id: ObjectId(1) }, Command::Shutdown];
        h.send_commands(&mut batch);
        assert!(batch.is_empty());
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == Token(1)));
        let mut got = Vec::new();
        h.take_commands(&mut got);
        assert_eq!(got.len(), 2);
        assert!(matches!(got[1], Command::Shutdown));
    }

    #[test]
    fn commands_sent_while_reactor_decides_to_sleep_are_seen() {
        let poll = Poll::new().unwrap();
        let waker = Waker::new(poll.registry(), Token(1)).unwrap();
        let h = Handoff::new(waker);
        // Nothing queued: the reactor may block.
        assert!(h.reactor_may_sleep());
        h.reactor_awake();
        // A command already queued: it must not block.
        h.send_commands(&mut vec![Command::Shutdown]);
        assert!(!h.reactor_may_sleep());
    }

    #[test]
    fn sleeping_reactor_is_woken_by_a_command() {
        let mut poll = Poll::new().unwrap();
        let waker = Waker::new(poll.registry(), Token(1)).unwrap();
        let h = Handoff::new(waker);
        assert!(h.reactor_may_sleep());
        h.send_commands(&mut vec![Command::Shutdown]);
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(
            events.iter().any(|e| e.token() == Token(1)),
            "the waker rang"
        );
    }

    #[test]
    fn unpark_before_park_is_not_lost() {
        let poll = Poll::new().unwrap();
        let waker = Waker::new(poll.registry(), Token(1)).unwrap();
        let h = Handoff::new(waker);
        let h2 = Arc::clone(&h);
        let (tx, rx) = std::sync::mpsc::channel();
        let interp = std::thread::spawn(move || {
            h2.register_interpreter();
            tx.send(()).unwrap();
            let mut got = Vec::new();
            // The reactor may send before this thread parks: the unpark
            // token makes park return, and the loop finds the event.
            loop {
                h2.take_events(&mut got);
                if !got.is_empty() {
                    return got.len();
                }
                std::thread::park();
            }
        });
        rx.recv().unwrap();
        h.send_events(&mut vec![Event::Gone {
            id: ObjectId(7),
            machine: MachineId::new("beta"),
        }]);
        assert_eq!(interp.join().unwrap(), 1);
    }
}
