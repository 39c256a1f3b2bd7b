//! The peer protocol, sans-IO: every rule of talking to other nodes, as a
//! state machine fed events and the time, with no socket and no clock.
//!
//! Like quinn-proto's `Connection`, [`Core`] contains no networking code.
//! The reactor (`crate::reactor`) owns the sockets and moves bytes; the
//! core decides everything else:
//!
//! ```text
//!             handle_accepted / handle_dialled / handle_dial_failed
//!   reactor ─ handle_connected / handle_message / handle_bad_input ──▶ Core
//!             handle_closed / handle_timeout(now)                       │
//!   interpreter (through the node's handoff):                           │
//!             call / reply / broadcast_* / send_snapshot / shutdown ──▶ │
//!                                                                       ▼
//!   ◀── poll_action (Dial, Close)   poll_dirty + unsent/advance (bytes to write)
//!   ◀── take_events (Inbound, Reply, Notice, PeerUp, PeerDown)   poll_timeout
//! ```
//!
//! The rules it owns: the hello exchange and its validation (`hello`), the
//! tie rule between two connections to one machine and the retiring of the
//! loser, keepalive and down detection, redial backoff (`dial`), call
//! timeouts by chain progress (`calls`), and which notices reach the
//! interpreter (only from greeted peers; *what* a notice may change is the
//! directory's rule, `vm::Directory`). Time is always passed in, so each
//! rule is a unit test with an injected clock (`tests`).
//!
//! Invariants: every call we sent is in exactly one connection's table
//! and counted in [`calls::ChainClock`]; when a connection closes, each of
//! its calls fails with an [`Event::Reply`] error at once, so no chain
//! waits forever; `active` maps a machine to a greeted, open connection.

mod calls;
mod conn;
mod dial;
mod hello;
mod table;
mod timer;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use slab::Slab;

use crate::codec::{self, DecodeError, FrameError, Message};
use crate::vm::{self, ChainId, MachineId, ObjectId, RemoteCall, SuspendToken, Val};

pub use crate::vm::Notice;

use calls::{CallRef, ChainClock, Outbound};
use conn::{Conn, Phase};
use dial::{DialSlot, DialState, Rng};
use table::IdTable;
use timer::{Timer, Timers};

pub use conn::HELLO_MAX_FRAME;
pub use dial::{BACKOFF_CAP, BACKOFF_FIRST, REFUSAL_WINDOW};
pub use hello::{Peer, Refusal, VERSION};

/// Retire timers re-check at this interval.
pub const RETIRE_CHECK: Duration = Duration::from_millis(200);
/// A retired connection stays at least this long: the peer may have
/// chosen it for calls before the other connection's hellos reached it,
/// and such calls arrive up to a round trip after we retired it.
pub const RETIRE_GRACE: Duration = Duration::from_secs(2);
/// Silence checks per keepalive interval: a silent peer is found at most
/// a twentieth of an interval late.
const KEEPALIVE_TICKS: u32 = 20;

/// What the core needs to know about its node.
#[derive(Clone, Debug)]
pub struct Config {
    pub machine: MachineId,
    pub node_prefix: u16,
    /// The port we listen on (a dial that reaches it from our own address
    /// is this node itself).
    pub listen_port: u16,
    /// `HOST:PORT` of every peer to dial (and redial).
    pub peers: Vec<String>,
    pub max_frame: usize,
    /// Most calls in flight to other nodes at once, and most inbound calls
    /// awaiting our answer; more fail at once.
    pub max_pending: usize,
    /// Ping interval; a peer silent for 3 intervals is down.
    pub keepalive: Duration,
    /// A call whose chain shows no progress this long fails.
    pub call_timeout: Duration,
    /// A peer whose unsent bytes pass this is not reading: disconnect it.
    pub max_write_buffer: usize,
    /// Seeds the backoff jitter.
    pub seed: u64,
}

/// A connection, as the core and the reactor both name it: `key` is its
/// slot (the reactor's socket slot and mio token follow it), `serial` tells
/// it from a later connection in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    key: u32,
    serial: u32,
}

impl ConnId {
    pub fn key(self) -> usize {
        self.key as usize
    }
}

/// Identifies an inbound call until the interpreter answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InboundId(pub u64);

/// Something the reactor must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to `spec` (`HOST:PORT`) for dial slot `slot`,
    /// then report [`Core::handle_dialled`] or [`Core::handle_dial_failed`].
    Dial { slot: usize, spec: Arc<str> },
    /// Write what it can of `linger` without blocking, then drop the
    /// socket. The core has already forgotten the connection.
    Close { conn: ConnId, linger: Vec<u8> },
}

/// Why a connection closed. Crosses to the interpreter in
/// [`Event::PeerDown`]; displays as the log lines say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// An orderly EOF from the peer.
    PeerClosed,
    EofMidFrame,
    ShuttingDown,
    /// The loser of the tie rule, idle and past its grace.
    Retired,
    /// A frame or message the protocol forbids, or a refused hello.
    Protocol(String),
    /// Nothing heard for 3 keepalive intervals (`what` was awaited).
    Silent {
        what: &'static str,
        limit: Duration,
    },
    ReadFailed(String),
    WriteFailed(String),
    ConnectFailed(String),
    NotReading {
        unsent: usize,
        limit: usize,
    },
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed the connection"),
            CloseReason::EofMidFrame => f.write_str("connection closed in the middle of a frame"),
            CloseReason::ShuttingDown => f.write_str("node shutting down"),
            CloseReason::Retired => f.write_str("duplicate connection retired"),
            CloseReason::Protocol(why) => write!(f, "protocol error: {why}"),
            CloseReason::Silent { what, limit } => {
                write!(f, "{what} for {limit:?} (3 keepalive intervals)")
            }
            CloseReason::ReadFailed(e) => write!(f, "read failed: {e}"),
            CloseReason::WriteFailed(e) => write!(f, "write failed: {e}"),
            CloseReason::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            CloseReason::NotReading { unsent, limit } => write!(
                f,
                "peer is not reading: {unsent} bytes wait to be sent (limit {limit}, --max-write-buffer)"
            ),
        }
    }
}

/// Something for the interpreter.
#[derive(Debug)]
pub enum Event {
    /// A peer calls one of our objects; answer with [`Core::reply`].
    Inbound {
        inbound: InboundId,
        target: ObjectId,
        input: Val,
        /// `None` when the caller was a top-level program (`sender` 0).
        sender: Option<ObjectId>,
        /// The connection's peer: the requester hosts the sender, and only
        /// this connection is known to reach it.
        sender_machine: MachineId,
        chain: Option<ChainId>,
    },
    /// The answer to [`Core::call`]: `Err` when it failed anywhere
    /// (unreachable machine, lost connection, timeout, the callee's error).
    Reply {
        token: SuspendToken,
        result: Result<Val, String>,
    },
    Notice {
        from: MachineId,
        notice: Notice,
    },
    /// The first connection to `machine` finished its hellos. Its
    /// directory snapshot follows; ours is owed ([`Core::send_snapshot`]).
    PeerUp {
        machine: MachineId,
        prefix: u16,
    },
    /// The last connection to `machine` closed.
    PeerDown {
        machine: MachineId,
        reason: CloseReason,
    },
    /// A deadlock probe (for `vm::Vm::handle_probe`).
    Probe(vm::Probe),
    /// A deadlock whose victim may wait here (for `vm::Vm::handle_victim`).
    Victim(Box<vm::Cycle>),
}

/// What became of a connection after the core handled its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Open,
    /// The peer's hello was accepted just now: frames up to `max_frame`
    /// may follow (the reactor raises its decoder's limit).
    Greeted,
    Closed,
}

/// An inbound call awaiting the interpreter's answer.
#[derive(Debug)]
struct Inbound {
    conn: ConnId,
    request_id: u64,
}

/// The node's side of the peer protocol. See the module docs.
#[derive(Debug)]
pub struct Core {
    config: Config,
    us: Peer,
    conns: Slab<Conn>,
    next_serial: u32,
    /// The connection calls to each machine go out on.
    active: HashMap<MachineId, ConnId>,
    dials: Vec<DialSlot>,
    /// Calls in flight on all connections together (bounded by `max_pending`).
    outbound_total: usize,
    chains: ChainClock,
    /// When the one `Timer::CallTimeouts` in the heap is due, if any.
    timeouts_armed: Option<Instant>,
    inbound: IdTable<Inbound>,
    timers: Timers,
    actions: VecDeque<Action>,
    events: Vec<Event>,
    /// Connections with bytes queued since the reactor last looked.
    dirty: Vec<ConnId>,
    next_nonce: u64,
    last_ping: Instant,
    rng: Rng,
    stopping: bool,
}

impl Core {
    pub fn new(config: Config, now: Instant) -> Core {
        let mut timers = Timers::default();
        timers.schedule(now + keepalive_tick(config.keepalive), Timer::Keepalive);
        let dials = config
            .peers
            .iter()
            .enumerate()
            .map(|(slot, spec)| {
                timers.schedule(now, Timer::Redial { slot, attempt: 0 });
                DialSlot::new(spec)
            })
            .collect();
        Core {
            us: Peer {
                machine: config.machine.clone(),
                prefix: config.node_prefix,
            },
            conns: Slab::with_capacity(16),
            next_serial: 1,
            active: HashMap::new(),
            dials,
            outbound_total: 0,
            chains: ChainClock::default(),
            timeouts_armed: None,
            inbound: IdTable::new(config.max_pending),
            timers,
            actions: VecDeque::new(),
            events: Vec::with_capacity(64),
            dirty: Vec::with_capacity(16),
            next_nonce: 1,
            last_ping: now,
            rng: Rng::new(config.seed),
            stopping: false,
            config,
        }
    }

    // ------------------------------------------------------------ output

    /// The next thing the reactor must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Moves the events for the interpreter into `into`.
    pub fn take_events(&mut self, into: &mut Vec<Event>) {
        into.append(&mut self.events);
    }

    /// Events waiting to be taken (the reactor bounds its backlog with it).
    pub fn events_waiting(&self) -> usize {
        self.events.len()
    }

    /// A connection with bytes queued since the last call, to flush.
    pub fn poll_dirty(&mut self) -> Option<ConnId> {
        self.dirty.pop()
    }

    /// The bytes waiting to be written on `conn` (empty if it is gone or
    /// still connecting).
    pub fn unsent(&self, conn: ConnId) -> &[u8] {
        match self.conn(conn) {
            Some(c) if c.phase != Phase::Connecting => c.unsent(),
            _ => &[],
        }
    }

    /// `n` bytes of [`Core::unsent`] were written.
    pub fn advance(&mut self, conn: ConnId, n: usize) {
        if let Some(c) = self.conn_mut(conn) {
            c.advance(n);
        }
    }

    /// After a flush that left bytes behind: a peer with more than
    /// `max_write_buffer` unread is not reading, and is cut.
    pub fn check_backlog(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conn(conn) else { return };
        let unsent = c.unsent().len();
        if unsent > self.config.max_write_buffer {
            let reason = CloseReason::NotReading {
                unsent,
                limit: self.config.max_write_buffer,
            };
            warn!("{}: {reason}; disconnecting", c.label());
            self.close(conn, reason, false, now);
        }
    }

    /// Whether the reactor should wait for `conn` to become writable.
    pub fn wants_write(&self, conn: ConnId) -> bool {
        self.conn(conn)
            .is_some_and(|c| c.phase == Phase::Connecting || !c.unsent().is_empty())
    }

    /// When [`Core::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_at()
    }

    /// The largest frame a greeted peer may send.
    pub fn max_frame(&self) -> usize {
        self.config.max_frame
    }

    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conn(conn).is_some()
    }

    /// Calls we sent and await answers to, on all connections.
    pub fn calls_in_flight(&self) -> usize {
        self.outbound_total
    }

    /// Chains waiting here on a call to another node.
    pub fn chains_waiting(&self) -> usize {
        self.chains.len()
    }

    /// Calls from peers the interpreter has yet to answer.
    pub fn calls_owed(&self) -> usize {
        self.inbound.len()
    }

    // ------------------------------------------------------- connections

    /// The reactor accepted a connection from `remote`.
    pub fn handle_accepted(&mut self, remote: SocketAddr, now: Instant) -> ConnId {
        info!("accepted a connection from {remote}");
        self.add_conn(remote, None, now)
    }

    /// The reactor started a TCP connect for dial slot `slot` (after
    /// [`Action::Dial`]); `local` is our end of it.
    pub fn handle_dialled(
        &mut self,
        slot: usize,
        remote: SocketAddr,
        local: SocketAddr,
        now: Instant,
    ) -> ConnId {
        let id = self.add_conn(remote, Some(slot), now);
        self.conns[id.key()].local = Some(local);
        if let Some(dial) = self.dials.get_mut(slot) {
            dial.state = DialState::Connected(id);
        }
        id
    }

    /// Resolving or connecting for `slot` failed before a connection existed.
    pub fn handle_dial_failed(&mut self, slot: usize, why: &str, now: Instant) {
        if slot < self.dials.len() {
            self.schedule_redial(slot, now, why);
        }
    }

    /// A dialled connection's TCP handshake finished.
    pub fn handle_connected(&mut self, conn: ConnId) {
        if let Some(c) = self.conn_mut(conn) {
            if c.phase == Phase::Connecting {
                c.phase = Phase::AwaitHello;
                info!("connected to {}", c.remote);
                self.mark_dirty(conn);
            }
        }
    }

    /// Bytes arrived on `conn`.
    pub fn handle_heard(&mut self, conn: ConnId, now: Instant) {
        if let Some(c) = self.conn_mut(conn) {
            c.last_heard = now;
        }
    }

    /// The reactor stopped (or resumed) reading `conn` because the
    /// interpreter is behind; a paused connection is not declared silent.
    pub fn set_paused(&mut self, conn: ConnId, paused: bool, now: Instant) {
        if let Some(c) = self.conn_mut(conn) {
            c.paused = paused;
            if !paused {
                // Bytes may have waited a while: that was us, not the peer.
                c.last_heard = now;
            }
        }
    }

    /// The socket ended (EOF or an error); the reactor drops it.
    pub fn handle_closed(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        self.close(conn, reason, true, now);
    }

    /// A frame or message that could not be decoded. An unknown message
    /// type after the hellos is ignored (a newer peer may send types we do
    /// not know); anything else closes the connection.
    pub fn handle_bad_input(&mut self, conn: ConnId, bad: BadInput, now: Instant) -> Status {
        let Some(c) = self.conn(conn) else {
            return Status::Closed;
        };
        let greeted = c.peer.is_some();
        let why = match bad {
            BadInput::Message(e) if e.is_unknown_type() && greeted => {
                warn!("{}: ignoring a message: {e}", c.label());
                return Status::Open;
            }
            // Lifecycle rule 1: the first frame must be `hello`, even where
            // an unknown type would later be ignored.
            BadInput::Message(e) if e.is_unknown_type() => {
                format!("first frame was not `hello`: {e}")
            }
            BadInput::Message(e) => format!("bad message: {e}"),
            BadInput::Frame(e) if greeted => format!("bad frame: {e}"),
            BadInput::Frame(e) => format!("bad frame before `hello`: {e}"),
        };
        self.protocol_error(conn, why, now);
        Status::Closed
    }

    /// One decoded message from `conn`.
    pub fn handle_message(&mut self, conn: ConnId, msg: Message<'_>, now: Instant) -> Status {
        let Some(c) = self.conn(conn) else {
            return Status::Closed;
        };
        let Some(peer) = c.peer.clone() else {
            let result = match msg {
                Message::Hello(hello) => self.handle_hello(conn, hello, now),
                other => Err(format!(
                    "first frame was `{}`, not `hello`",
                    other.type_name()
                )),
            };
            return match result {
                Ok(()) if self.is_open(conn) => Status::Greeted,
                Ok(()) => Status::Closed,
                Err(why) => {
                    self.protocol_error(conn, why, now);
                    Status::Closed
                }
            };
        };
        match msg {
            Message::Hello(_) => {
                self.protocol_error(conn, "a second `hello`".into(), now);
                return Status::Closed;
            }
            Message::Call(call) => self.handle_call(conn, &peer, call, now),
            Message::CallResponse(resp) => self.handle_response(conn, &peer, resp, now),
            Message::CreateNotify(notify) => {
                let machine = if *notify.machine_id == *peer.machine.as_str() {
                    peer.machine.clone()
                } else {
                    MachineId::new(&notify.machine_id)
                };
                self.events.push(Event::Notice {
                    from: peer.machine,
                    notice: Notice::Created {
                        id: notify.object_id,
                        machine,
                        behavior: notify.behavior.map(|b| Arc::from(&*b)),
                    },
                });
            }
            Message::DestroyNotify(notify) => self.events.push(Event::Notice {
                from: peer.machine,
                notice: Notice::Destroyed {
                    id: notify.object_id,
                },
            }),
            Message::Ping(ping) => {
                self.queue(conn, &Message::Pong(codec::Pong { nonce: ping.nonce }));
            }
            Message::Probe(probe) => self.events.push(Event::Probe(vm::Probe {
                initiator: probe.initiator,
                blocked: probe.blocked,
                path: vm_edges(probe.path),
                hops: probe.hops,
            })),
            Message::Deadlock(d) => self.events.push(Event::Victim(Box::new(vm::Cycle {
                edges: vm_edges(d.cycle),
                victim: d.victim,
            }))),
            Message::Pong(_) => {}
        }
        Status::Open
    }

    // ------------------------------------------------- from the interpreter

    /// Sends `call` to the machine the vm named; the answer comes back as
    /// [`Event::Reply`] (at once, as an error, if it cannot be sent).
    pub fn call(&mut self, call: RemoteCall, now: Instant) {
        let conn = match self.active.get(&call.machine) {
            Some(&conn) => conn,
            None => {
                return self.fail_call(
                    call.token,
                    format!(
                        "machine {} is not connected (call to object {})",
                        call.machine, call.target
                    ),
                )
            }
        };
        if self.outbound_total >= self.config.max_pending {
            return self.fail_call(
                call.token,
                format!(
                    "too many calls in flight ({}); call to object {} refused",
                    self.config.max_pending, call.target
                ),
            );
        }
        let c = &mut self.conns[conn.key()];
        let Some(request_id) = c.outbound.insert(Outbound {
            token: call.token,
            target: call.target,
            chain: call.chain,
        }) else {
            return self.fail_call(call.token, "too many calls in flight".into());
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
            sender_machine: self.us.machine.as_str().into(),
            chain: Some(call.chain),
        });
        if let Err(e) = c.queue(&msg) {
            c.outbound.remove(request_id);
            return self.fail_call(
                call.token,
                format!("call to object {} not sent: {e}", call.target),
            );
        }
        self.outbound_total += 1;
        self.chains
            .add(call.chain, CallRef { conn, request_id }, now);
        self.arm_call_timeouts(now);
        self.mark_dirty(conn);
    }

    /// The interpreter's answer to an inbound call.
    pub fn reply(&mut self, inbound: InboundId, result: Result<Val, String>) {
        let Some(entry) = self.inbound.remove(inbound.0) else {
            debug!("reply to unknown inbound call {:#x} dropped", inbound.0);
            return;
        };
        let Some(c) = self.conn_mut(entry.conn) else {
            debug!(
                "reply to call #{:#x} dropped: its connection closed",
                entry.request_id
            );
            return;
        };
        c.calls_in = c.calls_in.saturating_sub(1);
        let msg = Message::CallResponse(codec::CallResponse {
            request_id: entry.request_id,
            result: result.map_err(Into::into),
        });
        if let Err(e) = c.queue(&msg) {
            // The answer is too large for a frame: tell the caller so
            // rather than leave it waiting.
            let msg = Message::CallResponse(codec::CallResponse {
                request_id: entry.request_id,
                result: Err(format!("reply not sent: {e}").into()),
            });
            let _ = c.queue(&msg);
        }
        self.mark_dirty(entry.conn);
    }

    /// A local object was created: `create_notify` to every greeted peer.
    pub fn broadcast_created(&mut self, id: ObjectId, behavior: &str) {
        let us = self.us.machine.clone();
        let notify = Message::CreateNotify(codec::CreateNotify {
            object_id: id,
            machine_id: us.as_str().into(),
            behavior: Some(behavior.into()),
        });
        self.broadcast(&notify);
    }

    /// A local object was destroyed: `destroy_notify` to every greeted peer.
    pub fn broadcast_destroyed(&mut self, id: ObjectId) {
        self.broadcast(&Message::DestroyNotify(codec::DestroyNotify {
            object_id: id,
        }));
    }

    /// Our directory snapshot for `machine` (owed after its
    /// [`Event::PeerUp`]): one `create_notify` per local object.
    pub fn send_snapshot(&mut self, machine: &MachineId, objects: &[(ObjectId, Arc<str>)]) {
        let Some(&conn) = self.active.get(machine) else {
            return; // gone again: its next PeerUp asks anew
        };
        let c = &mut self.conns[conn.key()];
        for (id, behavior) in objects {
            let notify = Message::CreateNotify(codec::CreateNotify {
                object_id: *id,
                machine_id: self.us.machine.as_str().into(),
                behavior: Some(behavior.as_ref().into()),
            });
            if let Err(e) = c.queue(&notify) {
                warn!("create_notify for {id} not sent: {e}");
            }
        }
        self.mark_dirty(conn);
    }

    /// Sends a deadlock `probe` to `machine` (dropped if it is not
    /// connected: the call it follows has failed then, or soon will).
    pub fn send_probe(&mut self, machine: &MachineId, probe: &vm::Probe) {
        let Some(&conn) = self.active.get(machine) else {
            return;
        };
        let msg = Message::Probe(codec::Probe {
            initiator: probe.initiator,
            blocked: probe.blocked,
            path: wire_edges(&probe.path),
            hops: probe.hops,
        });
        self.queue(conn, &msg);
    }

    /// Tells `machine` that its waiting chain is a deadlock's victim.
    pub fn send_victim(&mut self, machine: &MachineId, cycle: &vm::Cycle) {
        let Some(&conn) = self.active.get(machine) else {
            return;
        };
        let Some(edge) = cycle.edges.iter().find(|e| e.chain == cycle.victim) else {
            return;
        };
        let msg = Message::Deadlock(codec::Deadlock {
            victim: cycle.victim,
            object: edge.object,
            cycle: wire_edges(&cycle.edges),
        });
        self.queue(conn, &msg);
    }

    /// Closes every connection (their unsent bytes linger for one last
    /// write) and stops dialling.
    pub fn shutdown(&mut self, now: Instant) {
        self.stopping = true;
        let all: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for conn in all {
            self.close(conn, CloseReason::ShuttingDown, true, now);
        }
    }

    // -------------------------------------------------------------- time

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Redial { slot, attempt } => self.redial(slot, attempt),
                Timer::Retire { conn } => self.check_retired(conn, now),
                Timer::Keepalive => self.keepalive(now),
                Timer::CallTimeouts => self.expire_calls(now),
            }
        }
    }

    // ---------------------------------------------------------- internals

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(id.key()).filter(|c| c.id == id)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id.key()).filter(|c| c.id == id)
    }

    fn add_conn(&mut self, remote: SocketAddr, dial_slot: Option<usize>, now: Instant) -> ConnId {
        let entry = self.conns.vacant_entry();
        let id = ConnId {
            key: entry.key() as u32,
            serial: self.next_serial,
        };
        self.next_serial = self.next_serial.wrapping_add(1).max(1);
        let mut conn = Conn::new(
            id,
            remote,
            dial_slot,
            self.config.max_frame,
            self.config.max_pending,
            now,
        );
        let hello = Message::Hello(codec::Hello {
            version: VERSION,
            machine_id: self.us.machine.as_str().into(),
            node_prefix: self.us.prefix,
        });
        conn.queue(&hello).expect("a hello always fits in a frame");
        entry.insert(conn);
        self.mark_dirty(id);
        id
    }

    fn mark_dirty(&mut self, conn: ConnId) {
        if !self.dirty.contains(&conn) {
            self.dirty.push(conn);
        }
    }

    fn queue(&mut self, conn: ConnId, msg: &Message<'_>) {
        if let Some(c) = self.conn_mut(conn) {
            if let Err(e) = c.queue(msg) {
                warn!("{}: {} not sent: {e}", c.label(), msg.type_name());
                return;
            }
            self.mark_dirty(conn);
        }
    }

    /// Queues `msg` on every connection past its hellos, retired ones
    /// included: a retired connection is promoted back if the winner
    /// closes first, and must not have missed a notice meanwhile. The peer
    /// then sees a notice twice, which is harmless: notices are idempotent.
    fn broadcast(&mut self, msg: &Message<'_>) {
        let mut sent = smallvec::SmallVec::<[ConnId; 8]>::new();
        for (_, c) in self.conns.iter_mut().filter(|(_, c)| c.is_ready()) {
            match c.queue(msg) {
                Ok(()) => sent.push(c.id),
                Err(e) => warn!("broadcast of {} failed: {e}", msg.type_name()),
            }
        }
        for conn in sent {
            self.mark_dirty(conn);
        }
    }

    fn fail_call(&mut self, token: SuspendToken, reason: String) {
        self.events.push(Event::Reply {
            token,
            result: Err(reason),
        });
    }

    fn protocol_error(&mut self, conn: ConnId, why: String, now: Instant) {
        if let Some(c) = self.conn(conn) {
            warn!(
                "protocol error from {}: {why}; closing this connection",
                c.label()
            );
        }
        self.close(conn, CloseReason::Protocol(why), false, now);
    }

    fn handle_call(&mut self, conn: ConnId, peer: &Peer, call: codec::Call<'_>, now: Instant) {
        let Some(id) = self.inbound.insert(Inbound {
            conn,
            request_id: call.request_id,
        }) else {
            let answer = Message::CallResponse(codec::CallResponse {
                request_id: call.request_id,
                result: Err("node overloaded: too many calls in flight".into()),
            });
            return self.queue(conn, &answer);
        };
        self.conns[conn.key()].calls_in += 1;
        if let Some(chain) = call.chain {
            self.chains.touch(chain, now);
        }
        debug!(
            "call #{:#x} <- {} for object {}",
            call.request_id, peer.machine, call.target
        );
        if *call.sender_machine != *peer.machine.as_str() {
            // The requester hosts the sender, and only this connection
            // reaches it: a call naming another machine would place its
            // sender where we may never connect.
            debug!(
                "{}: call #{:#x} names sender_machine `{}`; placing its sender on {} instead",
                peer.machine, call.request_id, call.sender_machine, peer.machine
            );
        }
        self.events.push(Event::Inbound {
            inbound: InboundId(id),
            target: call.target,
            input: call.input,
            sender: (call.sender != ObjectId(0)).then_some(call.sender),
            sender_machine: peer.machine.clone(),
            chain: call.chain,
        });
    }

    fn handle_response(
        &mut self,
        conn: ConnId,
        peer: &Peer,
        resp: codec::CallResponse<'_>,
        now: Instant,
    ) {
        let c = &mut self.conns[conn.key()];
        match c.outbound.remove(resp.request_id) {
            Some(p) => {
                self.outbound_total -= 1;
                self.chains.remove(
                    p.chain,
                    CallRef {
                        conn,
                        request_id: resp.request_id,
                    },
                );
                self.chains.touch(p.chain, now);
                self.events.push(Event::Reply {
                    token: p.token,
                    result: resp.result.map_err(|e| e.into_owned()),
                });
            }
            None if c.outbound.was_issued(resp.request_id) => debug!(
                "{}: late call_response for request_id {:#x} dropped (timed out or failed already)",
                peer.machine, resp.request_id
            ),
            None => warn!(
                "{}: call_response for unknown request_id {} dropped",
                peer.machine, resp.request_id
            ),
        }
    }

    fn handle_hello(
        &mut self,
        conn: ConnId,
        hello: codec::Hello<'_>,
        now: Instant,
    ) -> Result<(), String> {
        let connected = self
            .active
            .values()
            .filter_map(|a| self.conns[a.key()].peer.clone());
        let peer = match hello::check(&hello, &self.us, connected) {
            Ok(peer) => peer,
            Err(refusal) => {
                if matches!(refusal, Refusal::OurMachineId(_)) {
                    self.abandon_if_self(conn);
                }
                return Err(refusal.to_string());
            }
        };
        let machine = peer.machine.clone();
        let c = &mut self.conns[conn.key()];
        let dialled_by_us = c.dial_slot.is_some();
        c.peer = Some(peer.clone());
        c.phase = Phase::Ready;
        c.hello_at = Some(now);
        info!("hello from {} (node_prefix {})", c.label(), peer.prefix);
        let Some(&other) = self.active.get(&machine) else {
            self.active.insert(machine.clone(), conn);
            self.events.push(Event::PeerUp {
                machine,
                prefix: peer.prefix,
            });
            return Ok(());
        };
        let other_dialled_by_us = self.conns[other.key()].dial_slot.is_some();
        let same_prefix =
            self.conns[other.key()].peer.as_ref().map(|p| p.prefix) == Some(peer.prefix);
        let tie = match same_prefix {
            // The tie rule is for two connections between the same two
            // nodes; another prefix under a connected name is another node.
            true => hello::tie(
                &self.us.machine,
                &machine,
                dialled_by_us,
                other_dialled_by_us,
            ),
            false => hello::Tie::Collision,
        };
        let (winner, loser) = match tie {
            hello::Tie::Collision => {
                self.conns[conn.key()].peer = None;
                return Err(Refusal::Collision {
                    machine,
                    label: self.conns[other.key()].label(),
                }
                .to_string());
            }
            hello::Tie::KeepNew => (conn, other),
            hello::Tie::KeepOld => (other, conn),
        };
        let lower = std::cmp::min(&self.us.machine, &machine);
        info!(
            "two connections to {machine}: keeping the one dialled by {lower}, retiring {}",
            self.conns[loser.key()].remote
        );
        self.active.insert(machine, winner);
        let l = &mut self.conns[loser.key()];
        l.retired = true;
        l.retired_at = Some(now);
        self.timers
            .schedule(now + RETIRE_CHECK, Timer::Retire { conn: loser });
        Ok(())
    }

    /// A connection that says it is us: if we dialled it and it reached
    /// our own listener from our own address, the `--peer` is this node,
    /// and is never dialled again (as opposed to another node with our name).
    fn abandon_if_self(&mut self, conn: ConnId) {
        let c = &self.conns[conn.key()];
        let (Some(slot), Some(local)) = (c.dial_slot, c.local) else {
            return;
        };
        if c.remote.port() == self.config.listen_port && c.remote.ip() == local.ip() {
            log::error!(
                "peer {} is this node itself; not dialling it again",
                self.dials[slot].spec
            );
            self.dials[slot].state = DialState::Abandoned;
        }
    }

    fn check_retired(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conn(conn) else { return };
        // Promoted back (the winner closed first): it is the connection now.
        if !c.retired {
            return;
        }
        let graced = c
            .retired_at
            .is_some_and(|t| now.saturating_duration_since(t) >= RETIRE_GRACE);
        if graced && c.outbound.is_empty() && c.calls_in == 0 && c.unsent().is_empty() {
            self.close(conn, CloseReason::Retired, true, now);
        } else {
            self.timers
                .schedule(now + RETIRE_CHECK, Timer::Retire { conn });
        }
    }

    fn redial(&mut self, slot: usize, attempt: u64) {
        let dial = &mut self.dials[slot];
        if dial.attempt != attempt || dial.state != DialState::Waiting || self.stopping {
            return; // a stale timer
        }
        dial.state = DialState::Dialling;
        self.actions.push_back(Action::Dial {
            slot,
            spec: Arc::clone(&dial.spec),
        });
    }

    fn schedule_redial(&mut self, slot: usize, now: Instant, why: &str) {
        let dial = &mut self.dials[slot];
        if self.stopping || dial.state == DialState::Abandoned {
            return;
        }
        dial.failures += 1;
        dial.attempt += 1;
        dial.state = DialState::Waiting;
        let delay = dial::backoff(dial.failures, &mut self.rng);
        if dial.failures == 1 {
            info!(
                "peer {} not reachable yet ({why}); retrying with backoff up to {:?}",
                dial.spec, BACKOFF_CAP
            );
        } else {
            debug!(
                "peer {} still not reachable ({why}); next try in {delay:?}",
                dial.spec
            );
        }
        let attempt = dial.attempt;
        self.timers
            .schedule(now + delay, Timer::Redial { slot, attempt });
    }

    /// Re-arms every slot that was covered by `machine`'s connection.
    fn rearm_covered(&mut self, machine: &MachineId, now: Instant) {
        for (slot, dial) in self.dials.iter_mut().enumerate() {
            if matches!(&dial.state, DialState::Covered(m) if m == machine) {
                dial.failures = 0;
                dial.attempt += 1;
                dial.state = DialState::Waiting;
                let attempt = dial.attempt;
                self.timers.schedule(now, Timer::Redial { slot, attempt });
            }
        }
    }

    /// Pings every peer once an interval; closes the ones silent for 3.
    fn keepalive(&mut self, now: Instant) {
        let limit = self.config.keepalive * 3;
        let ping_due = now.saturating_duration_since(self.last_ping) >= self.config.keepalive;
        if ping_due {
            self.last_ping = now;
        }
        let mut dead = Vec::new();
        let mut alive = Vec::new();
        for (_, c) in &self.conns {
            let (since, what) = match c.phase {
                Phase::Ready => (c.last_heard, "no data or keepalive answer"),
                Phase::AwaitHello => (c.opened, "no hello"),
                Phase::Connecting => (c.opened, "TCP connect not finished"),
            };
            if now.saturating_duration_since(since) > limit && !c.paused {
                dead.push((c.id, CloseReason::Silent { what, limit }));
            } else if c.is_ready() && ping_due {
                alive.push(c.id);
            }
        }
        for conn in alive {
            let ping = Message::Ping(codec::Ping {
                nonce: self.next_nonce,
            });
            self.next_nonce += 1;
            self.queue(conn, &ping);
        }
        for (conn, reason) in dead {
            warn!(
                "{}: {reason}; declaring it down",
                self.conns[conn.key()].label()
            );
            self.close(conn, reason, false, now);
        }
        self.timers.schedule(
            now + keepalive_tick(self.config.keepalive),
            Timer::Keepalive,
        );
    }

    /// Makes sure a `CallTimeouts` timer is in the heap while calls are in
    /// flight. One is enough: the oldest chain's deadline is the earliest.
    fn arm_call_timeouts(&mut self, now: Instant) {
        if self.timeouts_armed.is_none() {
            let at = now + self.config.call_timeout;
            self.timeouts_armed = Some(at);
            self.timers.schedule(at, Timer::CallTimeouts);
        }
    }

    /// Fails every call whose chain has shown no progress for the call
    /// timeout. A late answer then finds no entry and is dropped.
    fn expire_calls(&mut self, now: Instant) {
        self.timeouts_armed = None;
        let timeout = self.config.call_timeout;
        while let Some((chain, last)) = self.chains.oldest() {
            let due = last + timeout;
            if due > now {
                self.timeouts_armed = Some(due);
                self.timers.schedule(due, Timer::CallTimeouts);
                return;
            }
            for call in self.chains.take(chain) {
                let Some(c) = self
                    .conns
                    .get_mut(call.conn.key())
                    .filter(|c| c.id == call.conn)
                else {
                    continue;
                };
                let Some(p) = c.outbound.remove(call.request_id) else {
                    continue;
                };
                self.outbound_total -= 1;
                let label = c.label();
                self.events.push(Event::Reply {
                    token: p.token,
                    result: Err(format!(
                        "call to object {} on {label} timed out: its chain showed no progress for {timeout:?}",
                        p.target
                    )),
                });
            }
        }
    }

    /// Closes one connection: fails its calls in flight, updates the
    /// machine's reachability, and re-arms dialling where needed. `log`:
    /// say why at the level the reason deserves (false: the caller did).
    fn close(&mut self, conn: ConnId, reason: CloseReason, log: bool, now: Instant) {
        let Some(mut c) = self.conns.try_remove(conn.key()).filter(|c| c.id == conn) else {
            return;
        };
        let label = c.label();
        // A connection that outlived the refusal window was a working one:
        // its loss restarts the backoff. One closed sooner keeps growing it.
        let lasted = c
            .hello_at
            .is_some_and(|t| now.saturating_duration_since(t) >= REFUSAL_WINDOW);
        if let (true, Some(slot)) = (lasted, c.dial_slot) {
            self.dials[slot].failures = 0;
            self.dials[slot].warned_refusal = false;
        }
        if log {
            self.log_close(&c, &label, &reason, now);
        }
        let lost = format!("connection to {label} lost: {reason}");
        let events = &mut self.events;
        let chains = &mut self.chains;
        let mut failed = 0;
        c.outbound.drain(|p| {
            failed += 1;
            chains.forget_conn(p.chain, conn);
            events.push(Event::Reply {
                token: p.token,
                result: Err(lost.clone()),
            });
        });
        self.outbound_total -= failed;
        self.actions.push_back(Action::Close {
            conn,
            linger: c.take_unsent(),
        });

        if let Some(peer) = &c.peer {
            if self.active.get(&peer.machine) == Some(&conn) {
                self.active.remove(&peer.machine);
                let spare = self
                    .conns
                    .iter_mut()
                    .find(|(_, o)| o.is_ready() && o.machine() == Some(&peer.machine));
                if let Some((_, spare)) = spare {
                    spare.retired = false;
                    self.active.insert(peer.machine.clone(), spare.id);
                } else {
                    self.events.push(Event::PeerDown {
                        machine: peer.machine.clone(),
                        reason: reason.clone(),
                    });
                    self.rearm_covered(&peer.machine, now);
                }
            }
        }
        if let Some(slot) = c.dial_slot {
            match c.peer {
                Some(peer) if self.active.contains_key(&peer.machine) => {
                    self.dials[slot].state = DialState::Covered(peer.machine)
                }
                _ => self.schedule_redial(slot, now, &reason.to_string()),
            }
        }
    }

    fn log_close(&mut self, c: &Conn, label: &str, reason: &CloseReason, now: Instant) {
        let soon_after_hello = c
            .hello_at
            .is_some_and(|t| now.saturating_duration_since(t) < REFUSAL_WINDOW);
        if c.retired || *reason == CloseReason::ShuttingDown {
            debug!("closed {label}: {reason}");
        } else if c.is_ready()
            && *reason == CloseReason::PeerClosed
            && c.retired_at.is_none()
            && soon_after_hello
            && c.calls_in == 0
            && c.outbound.is_empty()
        {
            let Some(slot) = c.dial_slot else {
                return info!("connection to {label} closed: {reason}");
            };
            let warned = std::mem::replace(&mut self.dials[slot].warned_refusal, true);
            let level = if warned {
                log::Level::Debug
            } else {
                log::Level::Warn
            };
            log::log!(
                level,
                "connection to {label} closed right after the hellos ({reason}): the peer probably \
                 refused us (is our machine_id or node_prefix already in use there? see its log)"
            );
        } else if c.is_ready() {
            info!("connection to {label} closed: {reason}");
        } else {
            debug!("connection to {label} closed before hello: {reason}");
        }
    }
}

/// Input that could not be decoded into a message.
#[derive(Clone, Copy, Debug)]
pub enum BadInput {
    Frame(FrameError),
    Message(DecodeError),
}

/// A wait path as the wire carries it.
fn wire_edges(edges: &[vm::WaitEdge]) -> Vec<codec::WaitEdge<'_>> {
    edges
        .iter()
        .map(|e| codec::WaitEdge {
            chain: e.chain,
            object: e.object,
            machine: e.machine.as_str().into(),
        })
        .collect()
}

/// A wait path from the wire.
fn vm_edges(edges: Vec<codec::WaitEdge<'_>>) -> Vec<vm::WaitEdge> {
    edges
        .into_iter()
        .map(|e| vm::WaitEdge {
            chain: e.chain,
            object: e.object,
            machine: MachineId::new(&e.machine),
        })
        .collect()
}

fn keepalive_tick(interval: Duration) -> Duration {
    (interval / KEEPALIVE_TICKS).max(Duration::from_millis(1))
}
