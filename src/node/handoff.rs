//! The two queues between the interpreter thread and the reactor thread.
//!
//! ```text
//!   interpreter ──Command──▶ commands (Mutex<Vec>) ──mio::Waker──▶ reactor
//!   interpreter ◀──Event─── events   (Mutex<Vec>) ◀──unpark────── reactor
//! ```
//!
//! Each side batches: it fills a local `Vec`, then moves the whole batch in
//! under one lock (a swap when the shared `Vec` is empty, as it usually is,
//! else an append) and rings the other side once. The consumer swaps its
//! empty `Vec` for the shared one, so in steady state the three `Vec`s of
//! each direction trade places, keep their capacity, and nothing is
//! allocated or copied per message.
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
//!
//! The same pattern pauses reading while the interpreter is behind:
//!
//! ```text
//!   reactor:     paused = true; fence; if backlog still full { stop reading }
//!   interpreter: take events (backlog -= n); fence; if paused { wake }
//! ```
//!
//! `park` may return spuriously and an
//! `unpark` that comes before `park` makes the next `park` return at once,
//! so the interpreter parks in a loop that re-checks the queue: a wake-up
//! is never lost.

use std::fmt;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;

use mio::Waker;

use crate::heap;
use crate::protocol::{self, InboundId};
use crate::vm::{Cycle, MachineId, ObjectId, OwnedObjects, Probe, Program, RemoteCall, Val, Vm};

/// Gives a burst's memory back: an empty queue `Vec` that grew past 4,096
/// slots (a mass create or destroy passes through these queues at once)
/// goes back to 256. Steady traffic never grows one that far, so it never
/// reallocates.
pub(crate) fn shrink_after_burst<T>(queue: &mut Vec<T>) {
    if queue.is_empty() && queue.capacity() > 4096 {
        queue.shrink_to(256);
    }
}

/// Moves `batch` (left empty) onto the end of `shared`: in the usual case,
/// `shared` empty, the two Vecs trade places and nothing is copied (their
/// capacities circulate among the three Vecs of one direction).
fn move_batch<T>(shared: &mut Vec<T>, batch: &mut Vec<T>) {
    if shared.is_empty() {
        std::mem::swap(shared, batch);
    } else {
        shared.append(batch);
    }
}

/// Interpreter -> reactor.
#[derive(Debug)]
pub enum Command {
    /// Send a call to the machine the vm named; answered by a
    /// `protocol::Event::Reply`.
    Call(RemoteCall),
    /// The answer to an inbound call.
    Reply {
        inbound: InboundId,
        result: Result<Val, String>,
    },
    /// A local object was created (`epoch` 0), or moved here: broadcast
    /// `create_notify`.
    Created {
        id: ObjectId,
        behavior: Arc<str>,
        epoch: u16,
    },
    /// A local object was destroyed: broadcast `destroy_notify`.
    Destroyed { id: ObjectId },
    /// Our directory snapshot, owed to `machine` after its `PeerUp` `up`.
    Snapshot {
        machine: MachineId,
        up: u64,
        objects: OwnedObjects,
        names: Vec<(Arc<str>, ObjectId)>,
        /// Epochs of the objects that moved here (the rest are at 0).
        epochs: Vec<(ObjectId, u16)>,
    },
    /// A local object moved to `machine`: broadcast `move_notify`.
    Moved {
        id: ObjectId,
        machine: MachineId,
        epoch: u16,
    },
    /// A local object took a name: broadcast `name_notify`.
    Named { name: Arc<str>, id: ObjectId },
    /// A local object's name was dropped: broadcast `name_drop`.
    Unnamed { name: Arc<str>, id: ObjectId },
    /// Deadlock detection: send a `probe` to `machine`.
    Probe { machine: MachineId, probe: Probe },
    /// Deadlock detection: tell `machine` its waiting chain is the victim.
    Victim {
        machine: MachineId,
        cycle: Box<Cycle>,
    },
    /// Trace events for `/events` subscribers (sent only while there are
    /// some), after `dropped` events the interpreter could not hand over
    /// (`node::stats::MAX_TRACE_IN_FLIGHT`).
    Trace {
        events: Vec<crate::vm::TraceEvent>,
        dropped: u64,
    },
    /// The node was asked to stop (`Node::shutdown`): stop accepting, and
    /// wait for `Shutdown` at most [`STOP_GRACE`](crate::reactor::STOP_GRACE),
    /// as after a signal, then close the connections anyway.
    StopAsked,
    /// Close everything and end the reactor thread.
    Shutdown,
}

/// Work for the interpreter thread, run with its vm.
pub type Query = Box<dyn FnOnce(&mut Vm) + Send>;

/// Reactor (or `Node`) -> interpreter.
pub enum Event {
    /// From the peer protocol: calls, answers, notices, peers up and down.
    Peer(protocol::Event),
    /// A program submitted through `Node::submit`, whose result goes back
    /// on `reply`.
    Run {
        program: Program,
        reply: Sender<Result<Val, String>>,
    },
    /// `Node::query`: a look at (or a host-side change to) the vm.
    Query(Query),
    /// A signal asked the node to stop: the interpreter ends as for
    /// `Node::shutdown`, and its last output goes out before the reactor
    /// closes the connections (it ends with `Command::Shutdown`).
    StopAsked,
    /// The reactor thread ended (after `Command::Shutdown`, or on a fatal
    /// error, which `reason` names).
    ReactorStopped { reason: Option<String> },
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Peer(e) => f.debug_tuple("Peer").field(e).finish(),
            Event::Run { program, .. } => f.debug_struct("Run").field("program", program).finish(),
            Event::Query(_) => f.write_str("Query"),
            Event::StopAsked => f.write_str("StopAsked"),
            Event::ReactorStopped { reason } => f
                .debug_struct("ReactorStopped")
                .field("reason", reason)
                .finish(),
        }
    }
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
        move_batch(&mut lock(&self.commands), batch);
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

    /// Commands waiting for the reactor (for `/health`: one lock, taken
    /// only when asked).
    pub fn commands_queued(&self) -> usize {
        lock(&self.commands).len()
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
        move_batch(&mut events, batch);
        drop(events);
        self.unpark_interpreter();
    }

    /// Events handed over and not yet taken by the interpreter.
    pub fn backlog(&self) -> usize {
        // ORDERING: Relaxed: a hint for when to pause; the decision to
        // stay paused goes through `pause_reactor`.
        self.backlog.load(Ordering::Relaxed)
    }

    /// Reactor: it is about to stop reading because the backlog is at
    /// `limit`. Raises the pause flag, then looks at the backlog again:
    /// `true` means stay paused (the interpreter will ring the waker when
    /// it takes events), `false` means the interpreter drained enough
    /// meanwhile and the flag is down again.
    pub fn pause_reactor(&self, limit: usize) -> bool {
        self.reactor_paused.store(true, Ordering::Relaxed);
        // ORDERING: the store-buffering pattern again, paired with the
        // fence in `take_events`: we store the flag then load the backlog,
        // the interpreter lowers the backlog then loads the flag. With a
        // SeqCst fence between each pair, at least one side sees the
        // other's write: either we see the drained backlog here, or the
        // interpreter sees the flag and wakes us.
        fence(Ordering::SeqCst);
        if self.backlog.load(Ordering::Relaxed) >= limit {
            true
        } else {
            self.reactor_paused.store(false, Ordering::Relaxed);
            false
        }
    }

    /// Reactor: it reads again.
    pub fn resume_reactor(&self) {
        // ORDERING: Relaxed: a stale `true` seen by the interpreter costs
        // one spurious wake, never a lost one.
        self.reactor_paused.store(false, Ordering::Relaxed);
    }

    /// Interpreter, going idle: the shared queues give back a burst's
    /// slots (each lock is taken once, briefly); answers whether any did.
    pub fn shrink_when_idle(&self) -> bool {
        let events = heap::shrink_when_idle(&mut *lock(&self.events));
        heap::shrink_when_idle(&mut *lock(&self.commands)) | events
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
            // ORDERING: updated under the lock, like the add; ordered
            // before the flag's load below by the fence.
            self.backlog.fetch_sub(into.len(), Ordering::Relaxed);
        }
        if into.is_empty() {
            return;
        }
        // ORDERING: pairs with the fence in `pause_reactor`: if the reactor
        // paused after seeing a full backlog, we see its flag here.
        fence(Ordering::SeqCst);
        if self.reactor_paused.load(Ordering::Relaxed) {
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
    #[test]
    fn a_burst_queue_gives_its_memory_back_and_a_steady_one_keeps_it() {
        let mut burst: Vec<u64> = Vec::with_capacity(100_000);
        burst.push(1);
        shrink_after_burst(&mut burst);
        assert!(burst.capacity() >= 100_000, "not while it holds items");
        burst.clear();
        shrink_after_burst(&mut burst);
        assert!(burst.capacity() <= 256, "{}", burst.capacity());
        let mut steady: Vec<u64> = Vec::with_capacity(1024);
        shrink_after_burst(&mut steady);
        assert_eq!(steady.capacity(), 1024, "steady traffic never reallocates");
    }

    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::{Duration, Instant};

    const WAKER: Token = Token(1);

    fn handoff() -> (Poll, Arc<Handoff>) {
        let poll = Poll::new().unwrap();
        let waker = Waker::new(poll.registry(), WAKER).unwrap();
        (poll, Handoff::new(waker))
    }

    fn event() -> Event {
        Event::Peer(protocol::Event::Notice {
            from: MachineId::new("beta"),
            notice: protocol::Notice::Destroyed { id: ObjectId(7) },
        })
    }

    #[test]
    fn commands_sent_to_a_sleeping_reactor_ring_the_waker() {
        let (mut poll, h) = handoff();
        assert!(h.reactor_may_sleep());
        let mut batch = vec![Command::Destroyed { id: ObjectId(1) }, Command::Shutdown];
        h.send_commands(&mut batch);
        assert!(batch.is_empty());
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == WAKER), "the waker rang");
        let mut got = Vec::new();
        h.take_commands(&mut got);
        assert_eq!(got.len(), 2);
        assert!(matches!(got[1], Command::Shutdown));
    }

    #[test]
    fn a_reactor_with_commands_queued_may_not_sleep() {
        let (_poll, h) = handoff();
        assert!(h.reactor_may_sleep());
        h.reactor_awake();
        h.send_commands(&mut vec![Command::Shutdown]);
        assert!(!h.reactor_may_sleep());
    }

    /// The race of the waker: the interpreter sends while the reactor
    /// decides to sleep, ten thousand times on two threads. A lost wake-up
    /// leaves the reactor in `poll` until its 5 s timeout; every round must
    /// come back far sooner.
    #[test]
    fn command_racing_the_reactor_going_to_sleep_is_never_lost() {
        let (mut poll, h) = handoff();
        let h2 = Arc::clone(&h);
        const ROUNDS: usize = 10_000;
        let (ack, acked) = std::sync::mpsc::channel();
        let reactor = std::thread::spawn(move || {
            let mut events = Events::with_capacity(4);
            let mut got = Vec::new();
            let mut slowest = Duration::ZERO;
            let mut seen = 0;
            while seen < ROUNDS {
                let t = Instant::now();
                if h2.reactor_may_sleep() {
                    poll.poll(&mut events, Some(Duration::from_secs(5)))
                        .unwrap();
                }
                h2.reactor_awake();
                h2.take_commands(&mut got);
                if !got.is_empty() {
                    slowest = slowest.max(t.elapsed());
                }
                seen += got.len();
                for _ in got.drain(..) {
                    ack.send(()).unwrap();
                }
            }
            slowest
        });
        for _ in 0..ROUNDS {
            h.send_commands(&mut vec![Command::Shutdown]);
            acked
                .recv_timeout(Duration::from_secs(10))
                .expect("acknowledged");
        }
        let slowest = reactor.join().unwrap();
        assert!(
            slowest < Duration::from_secs(2),
            "a wake-up was lost: {slowest:?}"
        );
    }

    /// The race of the unpark: the reactor sends events while the
    /// interpreter decides to park, ten thousand times. A lost unpark
    /// would leave the interpreter parked for good.
    #[test]
    fn event_racing_the_interpreter_going_to_park_is_never_lost() {
        let (_poll, h) = handoff();
        let h2 = Arc::clone(&h);
        const ROUNDS: usize = 10_000;
        let (ready, is_ready) = std::sync::mpsc::channel();
        let (ack, acked) = std::sync::mpsc::channel();
        let interp = std::thread::spawn(move || {
            h2.register_interpreter();
            ready.send(()).unwrap();
            let mut got = Vec::new();
            let mut seen = 0;
            while seen < ROUNDS {
                h2.take_events(&mut got);
                if got.is_empty() {
                    std::thread::park_timeout(Duration::from_secs(5));
                    continue;
                }
                seen += got.len();
                for _ in got.drain(..) {
                    ack.send(Instant::now()).unwrap();
                }
            }
        });
        is_ready.recv().unwrap();
        let mut slowest = Duration::ZERO;
        for _ in 0..ROUNDS {
            let sent = Instant::now();
            h.send_events(&mut vec![event()]);
            let at = acked.recv_timeout(Duration::from_secs(10)).expect("taken");
            slowest = slowest.max(at - sent);
        }
        interp.join().unwrap();
        assert!(
            slowest < Duration::from_secs(2),
            "an unpark was lost: {slowest:?}"
        );
    }

    /// The race of the pause: the reactor pauses on a full backlog while
    /// the interpreter drains it. Either the reactor sees the drained
    /// backlog and does not pause, or the interpreter sees the flag and
    /// rings the waker: a paused reactor is always woken.
    #[test]
    fn pause_racing_the_interpreter_draining_is_always_woken() {
        const ROUNDS: usize = 5_000;
        for _ in 0..ROUNDS / 1000 {
            let (mut poll, h) = handoff();
            let h2 = Arc::clone(&h);
            let drainer = std::thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..1000 {
                    while h2.backlog() == 0 {
                        std::hint::spin_loop();
                    }
                    h2.take_events(&mut got);
                    got.clear();
                }
            });
            let mut events = Events::with_capacity(4);
            for _ in 0..1000 {
                h.send_events(&mut vec![event()]);
                if h.pause_reactor(1) {
                    // Paused: the drainer must wake us.
                    poll.poll(&mut events, Some(Duration::from_secs(5)))
                        .unwrap();
                    assert!(
                        events.iter().any(|e| e.token() == WAKER),
                        "a paused reactor was not woken"
                    );
                    h.resume_reactor();
                }
                while h.backlog() != 0 {
                    std::hint::spin_loop();
                }
            }
            drainer.join().unwrap();
        }
    }
}
