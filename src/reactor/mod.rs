//! The reactor: one thread, one `mio::Poll`, all the node's sockets.
//!
//! It owns the listener, every peer connection with its read and write
//! buffers, the table of calls awaiting a `call_response`, the table of
//! inbound calls awaiting the interpreter's answer, and the timers. This is
//! the only module that imports `mio::net`; the vm and the codec never see a
//! socket.
//!
//! ```text
//!              ┌────────────── reactor thread ───────────────┐
//!  peers ◀──▶  │ listener  conns: Slab<Conn>  timers         │
//!   TCP        │ pending: IdTable<Pending>   (request_id)    │
//!              │ inbound: IdTable<Inbound>   (InboundId)     │
//!              └───────▲──────────────────────────┬──────────┘
//!             Command + Waker                 Event + unpark
//!              ┌───────┴──────────────────────────▼──────────┐
//!              │ interpreter thread: the Vm                  │
//!              └─────────────────────────────────────────────┘
//! ```
//!
//! One loop iteration: poll; handle each ready source (accept, read and
//! parse frames, drain commands); fire due timers; flush every connection
//! that has queued bytes (all frames queued in the iteration leave in one
//! `write`); hand the batch of events to the interpreter. Readiness is
//! edge-triggered, so every read and write runs until `WouldBlock`.
//!
//! Every request in flight on a connection fails with an `Event::Reply`
//! error the moment that connection closes, so no call chain waits forever.
//!
//! Files: `handoff` (the queues to and from the interpreter), `conn` (one
//! connection and its buffers), `traffic` (reading frames, flushing writes),
//! `peers` (dialling, hellos, the tie rule, closing), `health` (keepalive,
//! call timeouts, backpressure, signals), `pending` (the generational
//! request tables), `timer` (deadlines).

mod conn;
pub mod handoff;
mod health;
mod peers;
mod pending;
mod timer;
mod traffic;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::codec::{self, Message};
use crate::node::defaults;
use crate::vm::{ChainId, MachineId, ObjectId, SuspendToken};
use log::{debug, error, info, warn};

use conn::{Conn, Phase};
use handoff::{Command, Event, Handoff, InboundId};
use health::{keepalive_tick, sweep_interval};
use peers::DialSlot;
use pending::IdTable;
use timer::{Timer, Timers};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
/// Connection `k` of the slab is registered as `Token(FIRST_CONN + k)`.
const FIRST_CONN: usize = 3;

/// What the reactor needs to know about its node.
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    pub machine: MachineId,
    pub node_prefix: u16,
    /// `host:port` of every peer to dial (and redial).
    pub peers: Vec<String>,
    pub max_frame: usize,
    /// Most calls in flight to other nodes at once; more fail at once.
    pub max_pending: usize,
    /// How long to keep polling without blocking after the last activity
    /// (yielding the CPU between polls). Zero: block at once.
    pub spin: Duration,
    /// Ping interval; a peer silent for 3 intervals is down.
    pub keepalive: Duration,
    /// A call unanswered this long fails with a timeout error.
    pub call_timeout: Duration,
    /// A peer whose unsent bytes pass this is not reading: disconnect it.
    pub max_write_buffer: usize,
    /// Stop reading sockets while this many events wait for the interpreter.
    pub max_backlog: usize,
}

impl ReactorConfig {
    /// Defaults for everything but identity and peers.
    pub fn new(machine: MachineId, node_prefix: u16) -> ReactorConfig {
        ReactorConfig {
            machine,
            node_prefix,
            peers: Vec::new(),
            max_frame: defaults::MAX_FRAME,
            max_pending: defaults::MAX_PENDING,
            spin: defaults::SPIN,
            keepalive: defaults::KEEPALIVE,
            call_timeout: defaults::CALL_TIMEOUT,
            max_write_buffer: defaults::MAX_WRITE_BUFFER,
            max_backlog: defaults::MAX_BACKLOG,
        }
    }
}

/// Poll and waker, created before the threads so the waker can go into
/// the `Handoff` that both threads share.
pub struct ReactorSetup {
    poll: Poll,
    listener: TcpListener,
    handoff: Arc<Handoff>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
}

impl std::fmt::Debug for ReactorSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactorSetup").finish_non_exhaustive()
    }
}

impl ReactorSetup {
    /// Wraps an already bound listener (binding early lets the caller
    /// report "address in use" before any thread starts). With
    /// `handle_signals`, SIGINT and SIGTERM are caught from here on (before
    /// any thread starts, so none is lost) and shut the reactor down.
    pub fn new(listener: std::net::TcpListener, handle_signals: bool) -> io::Result<ReactorSetup> {
        listener.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let signals = if handle_signals {
            use signal_hook::consts::{SIGINT, SIGTERM};
            let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM])?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        Ok(ReactorSetup {
            poll,
            listener,
            handoff: Handoff::new(waker),
            signals,
        })
    }

    pub fn handoff(&self) -> &Arc<Handoff> {
        &self.handoff
    }
}

/// A call we sent and await the answer to.
#[derive(Debug)]
struct Pending {
    conn: usize,
    serial: u64,
    token: SuspendToken,
    target: ObjectId,
    chain: ChainId,
    sent_at: Instant,
}

/// A call we received and owe an answer to.
#[derive(Debug)]
struct Inbound {
    conn: usize,
    serial: u64,
    request_id: u64,
}

pub struct Reactor {
    config: ReactorConfig,
    poll: Poll,
    listener: TcpListener,
    handoff: Arc<Handoff>,
    conns: Slab<Conn>,
    next_serial: u64,
    /// The connection calls to each machine go out on.
    active: HashMap<MachineId, usize>,
    dials: Vec<DialSlot>,
    pending: IdTable<Pending>,
    inbound: IdTable<Inbound>,
    /// Our objects, kept from `Command::Created`, for the snapshot of
    /// `create_notify`s every new peer gets after the hellos.
    local_objects: HashMap<ObjectId, Arc<str>>,
    timers: Timers,
    /// Connections with bytes queued since the last flush.
    dirty: Vec<usize>,
    commands: Vec<Command>,
    events: Vec<Event>,
    /// Commands handled so far (tells the spin loop there was work).
    commands_seen: u64,
    /// Connections not read from while the interpreter's backlog is full.
    paused: Vec<usize>,
    /// When each call chain last showed progress here (a call of it sent
    /// or received, an answer received). A call times out only after its
    /// chain has shown none for the call timeout: the outermost call of a
    /// deep PingPong legitimately waits as long as the whole game.
    chain_activity: HashMap<ChainId, Instant>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    next_nonce: u64,
    last_ping: Instant,
    stopping: bool,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("machine", &self.config.machine)
            .field("conns", &self.conns.len())
            .field("pending", &self.pending.len())
            .field("inbound", &self.inbound.len())
            .finish_non_exhaustive()
    }
}

impl Reactor {
    pub fn new(setup: ReactorSetup, config: ReactorConfig) -> Reactor {
        let now = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(now + keepalive_tick(config.keepalive), Timer::Keepalive);
        timers.schedule(
            now + sweep_interval(config.call_timeout),
            Timer::CallTimeouts,
        );
        let dials = config
            .peers
            .iter()
            .enumerate()
            .map(|(slot, spec)| {
                timers.schedule(now, Timer::Redial { slot, attempt: 0 });
                DialSlot::new(spec.clone())
            })
            .collect();
        Reactor {
            poll: setup.poll,
            listener: setup.listener,
            handoff: setup.handoff,
            conns: Slab::with_capacity(16),
            next_serial: 1,
            active: HashMap::new(),
            dials,
            pending: IdTable::new(config.max_pending),
            inbound: IdTable::new(config.max_pending),
            local_objects: HashMap::new(),
            timers,
            dirty: Vec::with_capacity(16),
            commands: Vec::with_capacity(64),
            events: Vec::with_capacity(64),
            commands_seen: 0,
            paused: Vec::new(),
            chain_activity: HashMap::new(),
            signals: setup.signals,
            next_nonce: 1,
            last_ping: now,
            stopping: false,
            config,
        }
    }

    /// Runs until `Command::Shutdown` (or a fatal poll error), then tells
    /// the interpreter it stopped.
    pub fn run(mut self) {
        let reason = match self.event_loop() {
            Ok(()) => None,
            Err(e) => {
                error!("reactor failed: {e}");
                Some(format!("reactor failed: {e}"))
            }
        };
        self.close_all("node shutting down");
        self.events.push(Event::ReactorStopped { reason });
        self.handoff.send_events(&mut self.events);
    }

    fn event_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut spin_until = Instant::now();
        while !self.stopping {
            let now = Instant::now();
            let spinning = now < spin_until;
            let timeout = if spinning || !self.handoff.reactor_may_sleep() {
                Some(Duration::ZERO)
            } else {
                self.timers.timeout(now)
            };
            let polled = self.poll.poll(&mut events, timeout);
            self.handoff.reactor_awake();
            if let Err(e) = polled {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // While spinning the interpreter does not ring the waker, so
            // look at the queue every time round.
            let commands_before = self.commands_seen;
            self.drain_commands();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {} // drained above
                    SIGNALS => self.handle_signals(),
                    Token(t) => self.handle_conn_event(t - FIRST_CONN),
                }
            }
            self.resume_paused();
            if !events.is_empty() || self.commands_seen != commands_before {
                spin_until = Instant::now() + self.config.spin;
            } else if spinning {
                std::thread::yield_now();
            }
            self.fire_timers(Instant::now());
            self.flush_dirty();
            self.handoff.send_events(&mut self.events);
        }
        Ok(())
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, addr)) => {
                    info!("accepted a connection from {addr}");
                    self.add_conn(stream, addr, None);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: log and try again on the next
                    // readiness rather than spin.
                    warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Registers a new connection and queues our `hello` on it.
    fn add_conn(
        &mut self,
        stream: mio::net::TcpStream,
        addr: SocketAddr,
        dial_slot: Option<usize>,
    ) -> Option<usize> {
        if let Err(e) = stream.set_nodelay(true) {
            // Without NODELAY, small frames wait for Nagle: slow, still correct.
            warn!("TCP_NODELAY on {addr}: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let serial = self.next_serial;
        self.next_serial += 1;
        let mut conn = Conn::new(stream, addr, serial, self.config.max_frame, dial_slot);
        let interest = conn.wanted_interest();
        conn.write_interest = interest.is_writable();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut conn.stream, Token(FIRST_CONN + key), interest)
        {
            warn!("registering the connection to {addr} failed: {e}");
            return None;
        }
        let hello = Message::Hello(codec::Hello {
            version: 1,
            machine_id: self.config.machine.as_str().into(),
            node_prefix: self.config.node_prefix,
        });
        conn.queue(&hello).expect("a hello always fits in a frame");
        entry.insert(conn);
        self.mark_dirty(key);
        Some(key)
    }

    fn drain_commands(&mut self) {
        let mut commands = std::mem::take(&mut self.commands);
        self.handoff.take_commands(&mut commands);
        self.commands_seen += commands.len() as u64;
        for command in commands.drain(..) {
            match command {
                Command::Call(call) => self.send_call(call),
                Command::Reply { inbound, result } => self.send_reply(inbound, result),
                Command::Created { id, behavior } => {
                    let machine = self.config.machine.clone();
                    let notify = Message::CreateNotify(codec::CreateNotify {
                        object_id: id,
                        machine_id: machine.as_str().into(),
                        behavior: Some(behavior.as_ref().into()),
                    });
                    self.broadcast(&notify);
                    self.local_objects.insert(id, behavior);
                }
                Command::Destroyed { id } => {
                    self.local_objects.remove(&id);
                    let notify = Message::DestroyNotify(codec::DestroyNotify { object_id: id });
                    self.broadcast(&notify);
                }
                Command::Shutdown => self.stopping = true,
            }
        }
        self.commands = commands;
    }

    fn send_call(&mut self, call: crate::vm::RemoteCall) {
        let Some(&key) = self.active.get(&call.machine) else {
            self.events.push(Event::Reply {
                token: call.token,
                result: Err(format!(
                    "machine {} is not connected (call to object {})",
                    call.machine, call.target
                )),
            });
            return;
        };
        let serial = self.conns[key].serial;
        let now = Instant::now();
        self.chain_activity.insert(call.chain, now);
        let Some(request_id) = self.pending.insert(Pending {
            conn: key,
            serial,
            token: call.token,
            target: call.target,
            chain: call.chain,
            sent_at: now,
        }) else {
            self.events.push(Event::Reply {
                token: call.token,
                result: Err(format!(
                    "too many calls in flight ({}); call to object {} refused",
                    self.config.max_pending, call.target
                )),
            });
            return;
        };
        debug!(
            "call #{request_id:#x} -> {} object {} chain {}",
            call.machine, call.target, call.chain
        );
        let msg = Message::Call(codec::Call {
            request_id,
            target: call.target,
            input: call.input,
            sender: call.sender,
            sender_machine: self.config.machine.as_str().into(),
            chain: Some(call.chain),
        });
        let conn = &mut self.conns[key];
        match conn.queue(&msg) {
            Ok(()) => {
                conn.calls_out += 1;
                self.mark_dirty(key);
            }
            Err(e) => {
                self.pending.remove(request_id);
                self.events.push(Event::Reply {
                    token: call.token,
                    result: Err(format!("call to object {} not sent: {e}", call.target)),
                });
            }
        }
    }

    fn send_reply(&mut self, inbound: InboundId, result: Result<crate::vm::Val, String>) {
        let Some(entry) = self.inbound.remove(inbound.0) else {
            debug!("reply to unknown inbound call {:#x} dropped", inbound.0);
            return;
        };
        let Some(conn) = self.conns.get_mut(entry.conn) else {
            debug!(
                "reply to call #{:#x} dropped: its connection closed",
                entry.request_id
            );
            return;
        };
        if conn.serial != entry.serial {
            debug!(
                "reply to call #{:#x} dropped: its connection closed",
                entry.request_id
            );
            return;
        }
        conn.calls_in = conn.calls_in.saturating_sub(1);
        let msg = Message::CallResponse(codec::CallResponse {
            request_id: entry.request_id,
            result: result.map_err(Into::into),
        });
        if let Err(e) = conn.queue(&msg) {
            // The answer is too large for a frame: tell the caller so
            // rather than leave it waiting.
            let msg = Message::CallResponse(codec::CallResponse {
                request_id: entry.request_id,
                result: Err(format!("reply not sent: {e}").into()),
            });
            let _ = conn.queue(&msg);
        }
        self.mark_dirty(entry.conn);
    }

    /// Queues `msg` on every connection past its hellos, retired ones
    /// included: a retired connection is promoted back if the winner
    /// closes first, and must not have missed a notice meanwhile. The peer
    /// then sees a notice twice, which is harmless: notices are idempotent.
    fn broadcast(&mut self, msg: &Message<'_>) {
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Ready)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            if let Err(e) = self.conns[key].queue(msg) {
                warn!("broadcast of {} failed: {e}", msg.type_name());
                continue;
            }
            self.mark_dirty(key);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Redial { slot, attempt } => self.redial(slot, attempt, now),
                Timer::Retire { conn, serial } => self.check_retired(conn, serial, now),
                Timer::Keepalive => self.keepalive(now),
                Timer::CallTimeouts => self.expire_calls(now),
            }
        }
    }

    /// Fails every call awaiting an answer on `key`.
    fn fail_pending_on(&mut self, key: usize, serial: u64, reason: &str) {
        let events = &mut self.events;
        self.pending.drain_where(
            |p| p.conn == key && p.serial == serial,
            |p| {
                events.push(Event::Reply {
                    token: p.token,
                    result: Err(reason.to_owned()),
                })
            },
        );
    }

    fn close_all(&mut self, reason: &str) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.flush_conn(key);
            self.close(key, reason);
        }
    }
}

/// The close reason for an orderly EOF from the peer.
pub const PEER_CLOSED: &str = "peer closed the connection";

/// Retire timers re-check at this interval.
const RETIRE_CHECK: Duration = Duration::from_millis(200);
/// A retired connection stays at least this long: the peer may have
/// chosen it for calls before the other connection's hellos reached it,
/// and such calls arrive up to a round trip after we retired it.
const RETIRE_GRACE: Duration = Duration::from_secs(2);
