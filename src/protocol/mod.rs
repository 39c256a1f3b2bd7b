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
//!             handle_closed / handle_polling / handle_timeout(now)      │
//!   interpreter (through the node's handoff):                           │
//!             call / reply / broadcast_* / send_snapshot / shutdown ──▶ │
//!                                                                       ▼
//!   ◀── poll_action (Dial, Close)   poll_dirty + unsent/advance (bytes to write)
//!   ◀── take_events (Inbound, Reply, LateAdoptAnswer, Notice, PeerUp, ...)   poll_timeout
//!   reactor, once per iteration: pump_snapshots(now) (snapshot_ready: do not block)
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
//! Files: this one holds the types and the reactor-facing accessors;
//! `peers` the connection lifecycle (hello, tie, dialling, keepalive,
//! closing); `traffic` what crosses a greeted connection (calls, answers,
//! notices, probes, call timeouts); `conn` one connection's state and
//! write buffer; `table` the generational id tables.
//!
//! Invariants: every call we sent is in exactly one connection's table
//! and counted in `calls::ChainClock`; when a connection closes, each of
//! its calls fails with an [`Event::Reply`] error at once, so no chain
//! waits forever; `active` maps a machine to a greeted, open connection;
//! a directory snapshot never has more than [`SNAPSHOT_CHUNK`] (plus one
//! step) waiting to be written, and one `pump_snapshots` queues at most
//! one step of it per connection; an `adopt`'s request_id stays in its
//! connection's `adopts` until its answer comes or the connection closes,
//! so a move in doubt gets at most one [`Event::LateAdoptAnswer`].

pub mod auth;
mod calls;
mod conn;
mod dial;
mod hello;
mod observed;
mod peers;
mod table;
mod timer;
mod traffic;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::warn;
use slab::Slab;

use crate::codec::{self, DecodeError, FrameError, Message};
use crate::vm::{self, ChainId, IdHasher, MachineId, ObjectId, SuspendToken, Val};

pub use crate::vm::Notice;

use calls::ChainClock;
use conn::{Conn, Phase};
use dial::{DialSlot, Rng};
use table::IdTable;
use timer::{Timer, Timers};

pub use conn::HELLO_MAX_FRAME;
pub use dial::{BACKOFF_CAP, BACKOFF_FIRST, REFUSAL_WINDOW};
pub use hello::{Peer, Refusal, VERSION};

/// A streaming directory snapshot is topped up while less than this waits
/// to be written: the socket paces it, and it never looks like a stuck
/// peer to the write-buffer limit.
pub const SNAPSHOT_CHUNK: usize = 256 << 10;

/// Keepalive intervals without a byte taken after which a peer over the
/// write limit counts as not reading (see [`Core::check_backlog`]).
pub const STALL_INTERVALS: u32 = 3;

/// A backlog this many times the write limit is cut even from a peer that
/// reads: memory per peer stays bounded however fast the node produces.
pub const HARD_CAP: usize = 2;

/// At most this much of a snapshot is queued per [`Core::pump_snapshots`]
/// (one reactor iteration: about 170 `create_notify`s, or 204 `objects`
/// entries, see [`SNAPSHOT_OBJECT_COST`]) on a node serving
/// no calls: the snapshot streams flat out, yet any other work waits for
/// one step, never a whole chunk. Topping a chunk up at once, as the socket
/// took bytes, held the reactor for 0.5-4.6 ms at a time.
pub const SNAPSHOT_STEP: usize = 16 << 10;

/// A node that sent or received a call this recently is serving traffic:
/// its snapshots stream paced, at [`SNAPSHOT_PACED_RATE`], not flat out.
pub const SNAPSHOT_YIELD_FOR: Duration = Duration::from_millis(20);

/// Bytes per microsecond a snapshot streams at while the node serves calls:
/// 16 MB/s, a million objects in about 6 s as JSON (5 s as `objects`
/// entries, each counted as [`SNAPSHOT_OBJECT_COST`] bytes). Flat out, a million-object
/// snapshot and the joiner learning it keep more than a core busy for most
/// of a second, and on a small machine every other call waits on the
/// scheduler meanwhile: a client's p99 went from ~85 us to 2.4-7.8 ms.
/// At 16 MB/s it stays within about 2x, at 32 MB/s 2.5-4x
/// (`examples/late_joiner.rs`; BENCHMARKS.md has the steps and rates tried).
pub const SNAPSHOT_PACED_RATE: usize = 16;

/// A paced step waits until this much has accrued: small steps matter
/// more than the rate, as each is a burst of work on both nodes that the
/// next call may land behind. Measured again for `objects` entries (25 a
/// step at this size): 1, 8 and 16 KiB all gave a worse client p99
/// (BENCHMARKS.md, eighth pass).
pub const SNAPSHOT_PACED_STEP: usize = 2 << 10;

/// The most a paced step takes at once: a millisecond's worth, the
/// coarsest wake-up the reactor's poll gives (it rounds timeouts up to
/// whole milliseconds), so the rate holds when calls are sparse too.
pub const SNAPSHOT_PACED_MAX: usize = 16 << 10;

/// What one entry of an `objects` frame (compact version 2) counts for
/// against a snapshot's step and pace, in bytes. It is 11 bytes on the
/// wire, but the work it makes on both nodes (above all the receiver's
/// directory insert) is what the pace is for. Counted at 80, a paced
/// snapshot carries 200,000 objects a second (a million in 5 s, against
/// 6 s as JSON), and the p99 of a client calling the host beside it
/// (`examples/late_joiner`, 100,000 objects) measured as at the JSON
/// pace: median x1.93 over ten runs, against x2.04 over five; counted at
/// 40 (twice the rate), median x2.46 over five. Flat out, a step is 204
/// entries.
pub const SNAPSHOT_OBJECT_COST: usize = 80;

/// Why this node's own calls fail as it shuts down (the end of their
/// reason): said of this node, so no log reads as if the peer had gone.
pub const SHUTTING_DOWN: &str = "this node is shutting down";

/// A connection must finish its hellos and proofs this soon after it
/// opens, or it is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Accepted connections that may be in their handshake at once. Past
/// this the oldest is closed for the new one: strangers that connect and
/// say nothing cannot take every file descriptor (and the node's own
/// dials with them), and a real peer, whose handshake takes a round trip
/// or two, is not shut out unless 64 others arrive meanwhile.
pub const MAX_STRANGERS: usize = 64;

/// Retire timers re-check at this interval.
pub const RETIRE_CHECK: Duration = Duration::from_millis(200);
/// A retired connection stays at least this long: the peer may have
/// chosen it for calls before the other connection's hellos reached it,
/// and such calls arrive up to a round trip after we retired it.
pub const RETIRE_GRACE: Duration = Duration::from_secs(2);

/// A retired connection waits for the peer's directory snapshot to end
/// (it may stream on it), and for the peer to stop calling on it, at most
/// this long after the tie: for a peer that never sends `snapshot_end`,
/// or never stops.
pub const RETIRE_LONGEST: Duration = Duration::from_secs(60);

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
    /// The cluster's shared secret: a peer must prove it knows it.
    pub key: auth::ClusterKey,
    /// This node's life: different every time it starts (peers tell a
    /// restart from a second connection by it).
    pub boot: u64,
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
    /// The handshake did not finish in time (`what` never came).
    Handshake {
        what: &'static str,
    },
    /// The oldest of [`MAX_STRANGERS`] accepted connections in their
    /// handshake, closed for a newer one.
    Crowded,
    ReadFailed(String),
    WriteFailed(String),
    ConnectFailed(String),
    /// The TLS session failed: a bad or untrusted certificate, a peer not
    /// speaking TLS, a broken record (rustls's error).
    Tls(String),
    NotReading {
        unsent: usize,
        limit: usize,
        /// How long it took nothing; `None`: it took bytes, but the
        /// backlog passed [`HARD_CAP`] times the limit.
        idle: Option<Duration>,
    },
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed the connection"),
            CloseReason::EofMidFrame => f.write_str("connection closed in the middle of a frame"),
            CloseReason::ShuttingDown => f.write_str(SHUTTING_DOWN),
            CloseReason::Retired => f.write_str("duplicate connection retired"),
            CloseReason::Protocol(why) => write!(f, "protocol error: {why}"),
            CloseReason::Silent { what, limit } => {
                write!(f, "{what} for {limit:?} (3 keepalive intervals)")
            }
            CloseReason::Handshake { what } => {
                write!(f, "no {what} within {} s", HANDSHAKE_TIMEOUT.as_secs())
            }
            CloseReason::Crowded => write!(
                f,
                "the oldest of {MAX_STRANGERS} connections in their handshake, closed for a newer one"
            ),
            CloseReason::ReadFailed(e) => write!(f, "read failed: {e}"),
            CloseReason::WriteFailed(e) => write!(f, "write failed: {e}"),
            CloseReason::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            CloseReason::Tls(e) => write!(f, "TLS failed: {e}"),
            CloseReason::NotReading {
                unsent,
                limit,
                idle: Some(idle),
            } => write!(
                f,
                "peer is not reading: {unsent} bytes wait to be sent (limit {limit}, \
                 --max-write-buffer), and it took none for {idle:.1?}"
            ),
            CloseReason::NotReading {
                unsent,
                limit,
                idle: None,
            } => write!(
                f,
                "peer is not reading fast enough: {unsent} bytes wait to be sent, over \
                 {HARD_CAP} times the limit ({limit}, --max-write-buffer)"
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
        /// A `meta` message's operation (`Vm::serve_op`), not a call.
        op: Option<vm::RemoteOp>,
    },
    /// The answer to [`Core::call`]: `Err` when it failed anywhere
    /// (unreachable machine, lost connection, timeout, the callee's error).
    /// `lost`: the call left, but its answer never came (the connection
    /// closed, or the call timed out), so it may have run there.
    Reply {
        token: SuspendToken,
        result: Result<Val, String>,
        lost: bool,
    },
    /// The answer to a move's `adopt` that came after the call timed out
    /// (its [`Event::Reply`] said lost), on the connection it left on:
    /// the move waits in doubt, and this is the new home's word on it
    /// ([`Vm::late_adopt_answer`](crate::vm::Vm::late_adopt_answer)).
    LateAdoptAnswer {
        token: SuspendToken,
        result: Result<Val, String>,
    },
    Notice {
        from: MachineId,
        notice: Notice,
    },
    /// The first connection to `machine` finished its hellos. Its
    /// directory snapshot follows; ours is owed ([`Core::send_snapshot`],
    /// given `up`: how many times `machine` has come up, which names this
    /// time, so a snapshot taken for an earlier one is not sent on a later
    /// connection).
    PeerUp {
        machine: MachineId,
        prefix: u16,
        up: u64,
    },
    /// The last connection to `machine` closed.
    PeerDown {
        machine: MachineId,
        reason: CloseReason,
    },
    /// `machine`'s connection closed and a spare one took over without it
    /// going down: our directory snapshot is owed again, on the spare
    /// ([`Core::send_snapshot`], given `up`), since what went out on the
    /// closed one may not have arrived.
    SnapshotOwed {
        machine: MachineId,
        up: u64,
    },
    /// `machine`'s directory snapshot is complete: it announced `objects`.
    Synced {
        machine: MachineId,
        objects: u64,
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

/// The connection calls to each machine go out on, with the last lookup
/// kept: calls come in runs to one machine, and a `MachineId` the vm hands
/// out is a clone of its directory's, so the same name is the same
/// pointer. A hit costs a pointer compare instead of hashing and comparing
/// the name (about 100 instructions per remote call). Any change forgets
/// the kept lookup.
#[derive(Debug, Default)]
struct Active {
    conns: HashMap<MachineId, ConnId, BuildHasherDefault<IdHasher>>,
    last: Option<(MachineId, ConnId)>,
}

impl Active {
    fn get(&self, machine: &MachineId) -> Option<&ConnId> {
        self.conns.get(machine)
    }

    fn contains_key(&self, machine: &MachineId) -> bool {
        self.conns.contains_key(machine)
    }

    fn values(&self) -> impl Iterator<Item = &ConnId> {
        self.conns.values()
    }

    /// As `get`, for the call path: remembers the answer.
    fn conn_for(&mut self, machine: &MachineId) -> Option<ConnId> {
        if let Some((m, conn)) = &self.last {
            if m.same_name_as(machine) {
                return Some(*conn);
            }
        }
        let conn = *self.conns.get(machine)?;
        self.last = Some((machine.clone(), conn));
        Some(conn)
    }

    fn insert(&mut self, machine: MachineId, conn: ConnId) {
        self.last = None;
        self.conns.insert(machine, conn);
    }

    fn remove(&mut self, machine: &MachineId) {
        self.last = None;
        self.conns.remove(machine);
    }
}

/// The node's side of the peer protocol. See the module docs.
#[derive(Debug)]
pub struct Core {
    config: Config,
    us: Peer,
    conns: Slab<Conn>,
    /// Said that strangers crowd out older ones ([`MAX_STRANGERS`]),
    /// until there is room again.
    crowded_warned: bool,
    /// The reactor's last poll ([`Core::handle_polling`]): sockets ready
    /// by then have been read. `None`: up to `now`.
    read_through: Option<Instant>,
    next_serial: u32,
    /// The connection calls to each machine go out on.
    active: Active,
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
    /// Connections with a directory snapshot still to queue.
    streaming: Vec<ConnId>,
    /// Machines whose directory snapshot ended (`snapshot_end`) since they
    /// last came up.
    synced: HashSet<MachineId>,
    /// When a call was last sent or received (snapshots yield to calls).
    calls_seen_at: Option<Instant>,
    /// When the last paced snapshot step was taken (the next one's
    /// allowance accrues from here).
    paced_at: Instant,
    next_nonce: u64,
    last_ping: Instant,
    rng: Rng,
    stopping: bool,
    observed: observed::Observed,
    clock: observed::MicroClock,
    /// Strangers' mistakes this node warned of (TLS mismatches, protocol
    /// errors before a handshake completed), by address and kind, and when.
    strangers_said: HashMap<(std::net::IpAddr, Box<str>), Instant>,
}

impl Core {
    pub fn new(config: Config, now: Instant) -> Core {
        let mut timers = Timers::default();
        timers.schedule(
            now + peers::keepalive_tick(config.keepalive),
            Timer::Keepalive,
        );
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
            active: Active::default(),
            dials,
            outbound_total: 0,
            chains: ChainClock::default(),
            timeouts_armed: None,
            inbound: IdTable::new(config.max_pending),
            timers,
            actions: VecDeque::new(),
            events: Vec::with_capacity(64),
            dirty: Vec::with_capacity(16),
            streaming: Vec::new(),
            synced: HashSet::new(),
            calls_seen_at: None,
            paced_at: now,
            next_nonce: 1,
            last_ping: now,
            rng: Rng::new(config.seed),
            stopping: false,
            crowded_warned: false,
            read_through: None,
            observed: observed::Observed::default(),
            clock: observed::MicroClock::new(now),
            strangers_said: HashMap::new(),
            config,
        }
    }

    /// The next thing the reactor must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Moves the events for the interpreter into `into`.
    pub fn take_events(&mut self, into: &mut Vec<Event>) {
        self.take_events_as(into, |e| e);
    }

    /// Moves the events for the interpreter into `into`, each wrapped in
    /// the caller's own event type: one copy per event, where taking them
    /// and then wrapping them would be two.
    pub fn take_events_as<T>(&mut self, into: &mut Vec<T>, wrap: impl FnMut(Event) -> T) {
        into.extend(self.events.drain(..).map(wrap));
        // A burst (a peer's million-object snapshot) gives its memory back.
        if self.events.capacity() > 4096 {
            self.events.shrink_to(64);
        }
    }

    /// Events waiting to be taken (the reactor bounds its backlog with it).
    pub fn events_waiting(&self) -> usize {
        self.events.len()
    }

    /// A connection with bytes queued since the last call, to flush.
    pub fn poll_dirty(&mut self) -> Option<ConnId> {
        let conn = self.dirty.pop()?;
        if let Some(c) = self.conn_mut(conn) {
            c.dirty = false;
        }
        Some(conn)
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
    /// `max_write_buffer` unread that has taken nothing for
    /// [`STALL_INTERVALS`] keepalive intervals is not reading, and is cut;
    /// so is one with more than [`HARD_CAP`] times the limit unread,
    /// whatever it takes. A peer that takes bytes while a burst (a mass
    /// create's notices, large answers) outruns it is only slow: it gets
    /// the burst late, not a cut connection and a directory resync.
    pub fn check_backlog(&mut self, conn: ConnId, now: Instant) {
        let stall = self.config.keepalive * STALL_INTERVALS;
        let limit = self.config.max_write_buffer;
        let Some(c) = self.conn_mut(conn) else { return };
        if c.traffic.bytes_out != c.taken {
            (c.taken, c.taken_at) = (c.traffic.bytes_out, now);
        }
        let unsent = c.unsent().len();
        let idle = now.saturating_duration_since(c.taken_at);
        let idle = (idle >= stall).then_some(idle);
        if unsent > limit && (idle.is_some() || unsent > limit.saturating_mul(HARD_CAP)) {
            let reason = CloseReason::NotReading {
                unsent,
                limit,
                idle,
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

    /// The node is idle (the reactor is about to block): the queues and
    /// the chain clock give back what a burst grew. Steady traffic that
    /// needs them keeps them while it lasts: nothing shrinks under 64 slots.
    pub fn shrink_when_idle(&mut self) {
        crate::heap::shrink_when_idle(&mut self.events);
        crate::heap::shrink_when_idle(&mut self.dirty);
        crate::heap::shrink_when_idle(&mut self.actions);
        self.chains.shrink_when_idle();
    }

    /// When [`Core::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next_at(), self.snapshot_step_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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

    /// This node's id prefix.
    pub fn node_prefix(&self) -> u16 {
        self.config.node_prefix
    }

    /// Calls from peers the interpreter has yet to answer.
    pub fn calls_owed(&self) -> usize {
        self.inbound.len()
    }

    /// Bytes the peer connections' write buffers hold (their capacity).
    pub fn write_buffer_bytes(&self) -> usize {
        self.conns.iter().map(|(_, c)| c.out_capacity()).sum()
    }

    /// The reactor is about to poll, at `at`: the sockets ready by then
    /// are read before the timers of this iteration run. Silence and call
    /// timeouts are measured up to `at`, not to `now`: a stall of the
    /// reactor thread after its poll (a loaded machine, SIGSTOP) must not
    /// count against peers whose bytes wait unread. (Bytes the reactor
    /// does not read, on a connection paused for backpressure or past its
    /// read budget, are not covered: a paused connection is not declared
    /// silent, but its calls' timeouts run on.)
    pub fn handle_polling(&mut self, at: Instant) {
        self.read_through = Some(at);
    }

    /// Up to when silence counts: see [`Core::handle_polling`].
    pub(super) fn heard_until(&self, now: Instant) -> Instant {
        self.read_through.map_or(now, |at| at.min(now))
    }

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

    pub(super) fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(id.key()).filter(|c| c.id == id)
    }

    pub(super) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id.key()).filter(|c| c.id == id)
    }

    pub(super) fn add_conn(
        &mut self,
        remote: SocketAddr,
        dial_slot: Option<usize>,
        now: Instant,
    ) -> ConnId {
        let entry = self.conns.vacant_entry();
        let id = ConnId {
            key: entry.key() as u32,
            serial: self.next_serial,
        };
        self.next_serial = self.next_serial.wrapping_add(1).max(1);
        let nonce = auth::fresh_nonce();
        let mut conn = Conn::new(
            id,
            remote,
            dial_slot,
            self.config.max_frame,
            self.config.max_pending,
            *nonce.as_ref().unwrap_or(&[0; auth::NONCE_LEN]),
            now,
        );
        let hello = Message::Hello(codec::Hello {
            version: VERSION,
            machine_id: self.us.machine.as_str().into(),
            node_prefix: self.us.prefix,
            nonce: Some(auth::to_hex(&conn.nonce).into()),
            boot: Some(self.config.boot),
            compact: Some(codec::compact::VERSION),
        });
        conn.queue(&hello).expect("a hello always fits in a frame");
        entry.insert(conn);
        self.mark_dirty(id);
        if let Err(e) = nonce {
            // Never challenge with a guessable nonce: no connection at all.
            log::error!("no random bytes for a connection's challenge: {e}");
            self.close(id, CloseReason::ConnectFailed(e), false, now);
        }
        id
    }

    pub(super) fn mark_dirty(&mut self, conn: ConnId) {
        if let Some(c) = self.conn_mut(conn).filter(|c| !c.dirty) {
            c.dirty = true;
            self.dirty.push(conn);
        }
    }

    pub(super) fn queue(&mut self, conn: ConnId, msg: &Message<'_>) {
        if let Some(c) = self.conn_mut(conn) {
            if let Err(e) = c.queue(msg) {
                warn!("{}: {} not sent: {e}", c.label(), msg.type_name());
                return;
            }
            self.mark_dirty(conn);
        }
    }
}

/// Input that could not be decoded into a message.
#[derive(Clone, Copy, Debug)]
pub enum BadInput {
    Frame(FrameError),
    Message(DecodeError),
}
