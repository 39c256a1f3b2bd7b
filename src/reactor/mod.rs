//! The reactor: one thread, one `mio::Poll`, all the node's sockets.
//!
//! It is the thin shell around the protocol core (`crate::protocol`): it
//! owns the listener, every peer socket and its read buffer, the waker and
//! the signal handler, and moves bytes; the core decides what the bytes
//! mean and what to send. This is the only module that imports
//! `mio::net`; the vm, the codec and the protocol core never see a socket.
//!
//! ```text
//!              ┌────────────── reactor thread ───────────────────┐
//!  peers ◀──▶  │ listener  sockets (FrameDecoder each)  resolver │
//!   TCP        │        ▲ bytes ▼           ▲ actions            │
//!              │   protocol::Core: conns, calls, timers, rules   │
//!              └───────▲──────────────────────────┬──────────────┘
//!             Command + Waker                 Event + unpark
//!              ┌───────┴──────────────────────────▼──────────────┐
//!              │ interpreter thread: the Vm (crate::node)        │
//!              └─────────────────────────────────────────────────┘
//! ```
//!
//! One loop iteration: poll; take the interpreter's commands into the
//! core; handle each ready source (accept, read and decode frames into the
//! core); fire the core's due timers; carry out its actions (dial, close)
//! and write every connection it queued bytes on (all frames queued in
//! the iteration leave in one `write`); hand the core's events to the
//! interpreter. Readiness is edge-triggered, so every read and write runs
//! until `WouldBlock`.
//!
//! With TLS (`NodeConfig::tls`), every socket carries a rustls session:
//! the server side on accepted sockets, the client side on dialled ones
//! (verifying the peer's certificate against the host it dialled). rustls
//! is sans-IO too, so the same loop drives it: reading goes stream →
//! rustls → decoder, writing core → rustls → stream, and WRITABLE stays
//! registered while rustls or the core has bytes to send. A session that
//! fails (a peer without TLS, a certificate the CA did not sign) closes
//! its connection with `CloseReason::Tls`. Plaintext sockets take exactly
//! the path they take without TLS.
//!
//! Files: `socket` (one socket, its read buffer and TLS session),
//! `resolve` (name lookups on a thread of their own), `tls` (the TLS
//! configuration, loaded once from PEM files), `accept` (trying a
//! listener again after a failed accept), `http` (the `--http` sockets),
//! `closing` (sockets drained in order when the node stops).

mod accept;
mod closing;
mod http;
mod resolve;
mod socket;
mod tls;

use accept::ACCEPT_RETRY;
pub use http::HttpSetup;
pub use tls::TlsConfig;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::codec;
use crate::heap;
use crate::node::handoff::{shrink_after_burst, Command, Event, Handoff};
use crate::protocol::{Action, BadInput, CloseReason, ConnId, Core, Status};

use resolve::{Resolved, Resolver};
use socket::{ReadOutcome, Socket};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const HTTP_LISTENER: Token = Token(3);
/// Connection key `k` is registered as `Token(FIRST_CONN + k)`; HTTP
/// connections as `Token(http::HTTP_FIRST + k)`, far above.
const FIRST_CONN: usize = 4;
/// Events decoded from one read burst before they are handed over
/// mid-read (`Reactor::pass_along_midway`). Measured at K = 1024 in flight
/// (`examples/pair_throughput`): 256 beat 64 and 16; a single call never
/// reaches it, so latency is untouched.
const HAND_OVER_EVERY: usize = 256;

/// See `Reactor::signalled_at`.
pub const SECOND_SIGNAL: Duration = Duration::from_secs(1);

/// After a stop request (a signal, or `Node::shutdown`), how long the
/// reactor serves on while the interpreter finishes (its last answers,
/// held for the disk on a durable node, go out before the connections
/// close); past it, it stops without them.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Bytes one connection may have read per reactor iteration before the
/// others, the timers and the writes get a turn: a peer that writes
/// frames needing no interpreter (pings, say) faster than they parse
/// would otherwise keep the reactor reading it for as long as it writes.
/// The rest is read in the next iteration (`unfinished`).
const READ_BUDGET: usize = 1 << 20;

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

pub struct Reactor {
    core: Core,
    poll: Poll,
    /// `None` once the node stops: closed, so that connections are
    /// refused rather than queued and reset.
    listener: Option<TcpListener>,
    handoff: Arc<Handoff>,
    /// By connection key; a slot's socket belongs to the `ConnId` it holds.
    sockets: Vec<Option<Socket>>,
    resolver: Resolver,
    resolved: Vec<Resolved>,
    commands: Vec<Command>,
    events: Vec<Event>,
    /// Commands handled so far (tells the spin loop there was work).
    commands_seen: u64,
    /// When to give back what the last burst grew, if the reactor has
    /// been idle since (see `shrink_if_idle`).
    shrink_at: Option<Instant>,
    /// Connections not read from while the interpreter's backlog is full.
    paused: Vec<ConnId>,
    /// Connections that used their [`READ_BUDGET`] with bytes still to
    /// read: read on in the next iteration (edge-triggered, no new event
    /// would say so).
    unfinished: Vec<ConnId>,
    /// Trying the listener again after `accept` failed.
    accept_retry: accept::AcceptRetry,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    /// How long to keep polling without blocking after the last activity.
    spin: Duration,
    /// Stop reading sockets while this many events wait for the interpreter.
    max_backlog: usize,
    /// Mutual TLS on every connection; `None`: plain TCP.
    tls: Option<TlsConfig>,
    /// `--http`: the observation endpoint, on this same poll.
    http: Option<http::HttpSide>,
    /// The loop is to end: `Command::Shutdown` came (the interpreter has
    /// sent its last output), or a second signal, or the grace ran out.
    stopping: bool,
    /// Sockets the stop closed, to drain before they are dropped.
    closing: Vec<closing::Closing>,
    /// Whether to drain them: not after a stop that was to be at once.
    drain: bool,
    /// When a signal first asked the node to stop. Another signal at least
    /// [`SECOND_SIGNAL`] later stops it at once; one sooner is the same
    /// stop delivered twice (a terminal's Ctrl-C that a wrapper such as
    /// `just` forwards as well), and changes nothing.
    signalled_at: Option<Instant>,
    /// When the node was asked to stop, by a signal or `Node::shutdown`
    /// (the interpreter knows, and the reactor waits for its
    /// `Command::Shutdown`, up to [`STOP_GRACE`]).
    stop_asked: Option<Instant>,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl Reactor {
    /// `name` names the resolver thread (`<name>/resolve-<slot>`). With `tls`,
    /// every connection runs inside a mutual TLS session; with `http`, the
    /// node serves its health, metrics, trace and page there.
    pub fn new(
        setup: ReactorSetup,
        core: Core,
        name: &str,
        spin: Duration,
        max_backlog: usize,
        tls: Option<TlsConfig>,
        http: Option<HttpSetup>,
    ) -> io::Result<Reactor> {
        let http = http
            .map(|h| http::HttpSide::new(h, setup.poll.registry(), HTTP_LISTENER, name))
            .transpose()?;
        Ok(Reactor {
            core,
            poll: setup.poll,
            listener: Some(setup.listener),
            resolver: Resolver::new(Arc::clone(&setup.handoff), format!("{name}/resolve")),
            handoff: setup.handoff,
            sockets: Vec::with_capacity(16),
            resolved: Vec::new(),
            commands: Vec::with_capacity(64),
            events: Vec::with_capacity(64),
            commands_seen: 0,
            shrink_at: None,
            paused: Vec::new(),
            unfinished: Vec::new(),
            accept_retry: accept::AcceptRetry::default(),
            signals: setup.signals,
            spin,
            max_backlog,
            tls,
            http,
            stopping: false,
            closing: Vec::new(),
            drain: true,
            signalled_at: None,
            stop_asked: None,
        })
    }

    /// Runs until `Command::Shutdown` (the interpreter's last word after a
    /// stop request), a second signal, the end of [`STOP_GRACE`], or a
    /// fatal poll error; then closes every connection (draining them, see
    /// `closing`) and tells the interpreter it stopped.
    /// A panic (a bug) also tells the interpreter, so that the node stops
    /// and its callers get answers instead of waiting on a dead thread;
    /// its connections then just drop.
    pub fn run(mut self) {
        let reason = match crate::quiet_panic::catch_printed(|| self.event_loop()) {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                error!("reactor failed: {e}");
                Some(format!("reactor failed: {e}"))
            }
            Err(why) => {
                error!("reactor panicked: {why}; the node stops");
                self.events.clear();
                self.events.push(Event::ReactorStopped {
                    reason: Some(format!("reactor panicked: {why}")),
                });
                self.handoff.send_events(&mut self.events);
                return;
            }
        };
        // Whatever ended the loop: no connection is queued to be reset.
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.core.shutdown(Instant::now());
        self.settle(Instant::now());
        self.drain_closing();
        self.hand_over();
        self.events.push(Event::ReactorStopped { reason });
        self.handoff.send_events(&mut self.events);
    }

    /// The sockets the stop closed, drained (see `closing`) for at most
    /// [`closing::DRAIN_MOST`], woken by their events (or every 50 ms).
    /// Not after a stop that was to be at once (a second signal, or the
    /// interpreter not finishing within [`STOP_GRACE`]).
    fn drain_closing(&mut self) {
        let mut scratch = vec![0u8; 16 << 10];
        if !self.drain {
            // One round each: the last frames (the `close`) as far as the
            // sockets take them without waiting.
            for c in &mut self.closing {
                c.step(&mut scratch);
            }
            self.closing.clear();
            return;
        }
        let deadline = Instant::now() + closing::DRAIN_MOST;
        let mut events = Events::with_capacity(64);
        loop {
            self.closing.retain_mut(|c| !c.step(&mut scratch));
            let now = Instant::now();
            if self.closing.is_empty() || now >= deadline {
                break;
            }
            let wait = Duration::from_millis(50).min(deadline.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
        }
        self.closing.clear();
    }

    fn event_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut spin_until = Instant::now();
        while !self.stopping {
            let now = Instant::now();
            let spinning = now < spin_until;
            // A snapshot with room to stream, or a read cut short, is work:
            // poll without blocking.
            let busy = spinning
                || !self.unfinished.is_empty()
                || self.core.snapshot_ready(now)
                || self
                    .http
                    .as_ref()
                    .is_some_and(http::HttpSide::has_unfinished);
            let timeout = if busy || !self.handoff.reactor_may_sleep() {
                Some(Duration::ZERO)
            } else {
                let http = self.http.as_ref().and_then(http::HttpSide::deadline);
                let wake = [
                    self.core.poll_timeout(),
                    http,
                    self.shrink_if_idle(now),
                    self.accept_retry.at(),
                    self.stop_asked.map(|at| at + STOP_GRACE),
                ]
                .into_iter()
                .flatten()
                .min();
                wake.map(|at| at.saturating_duration_since(now))
            };
            self.core.handle_polling(now);
            let polled = self.poll.poll(&mut events, timeout);
            self.handoff.reactor_awake();
            if let Err(e) = polled {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // One clock reading for the whole iteration.
            let now = Instant::now();
            // While spinning the interpreter does not ring the waker, so
            // look at the queue every time round.
            let commands_before = self.commands_seen;
            self.drain_commands(now);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(now),
                    WAKER => self.take_resolved(now),
                    SIGNALS => self.handle_signals(),
                    HTTP_LISTENER => self.http_accept(now),
                    Token(t) if t >= http::HTTP_FIRST => self.http_event(t - http::HTTP_FIRST, now),
                    Token(t) => self.handle_socket_event(t - FIRST_CONN, now),
                }
            }
            self.resume_paused(now);
            self.read_unfinished(now);
            self.http_unfinished(now);
            if self.accept_retry.due(now) {
                self.accept_retry.begin();
                self.accept_all(now);
            }
            if !events.is_empty() || self.commands_seen != commands_before {
                spin_until = now + self.spin;
                self.shrink_at = Some(now + heap::IDLE_AFTER);
            } else if spinning {
                std::thread::yield_now();
            }
            self.core.handle_timeout(now);
            if !self.stopping && self.stop_asked.is_some_and(|at| now >= at + STOP_GRACE) {
                warn!(
                    "the interpreter did not finish within {STOP_GRACE:?} of the stop request; \
                     stopping without its last answers"
                );
                self.stopping = true;
                self.drain = false;
            }
            // One step of each streaming snapshot per iteration, so calls
            // and answers interleave with it.
            self.core.pump_snapshots(now);
            self.settle(now);
            self.hand_over();
            if let Some(http) = &mut self.http {
                http.flush_streams(self.poll.registry(), now);
                http.sweep(self.poll.registry(), now);
            }
        }
        Ok(())
    }

    fn http_accept(&mut self, now: Instant) {
        if let Some(http) = &mut self.http {
            http.accept_all(self.poll.registry(), now);
        }
    }

    fn http_event(&mut self, key: usize, now: Instant) {
        self.with_http(|http, registry, from| http.handle(key, registry, from, now));
    }

    /// Goes on with HTTP connections (and accepts) that used their budget,
    /// and tries the HTTP listener again after a failed accept.
    fn http_unfinished(&mut self, now: Instant) {
        if self.http.as_ref().is_some_and(|h| h.has_work(now)) {
            self.with_http(|http, registry, from| http.handle_unfinished(registry, from, now));
        }
    }

    /// Runs `f` on the HTTP side, with what `/health` reads of the rest.
    fn with_http(&mut self, f: impl FnOnce(&mut http::HttpSide, &Registry, &http::Sources)) {
        if let Some(http) = &mut self.http {
            let sockets = &self.sockets;
            let read_buffer_bytes = || {
                let buffers = sockets.iter().flatten();
                buffers.map(|s| s.decoder.capacity()).sum()
            };
            let from = http::Sources {
                core: &self.core,
                handoff: &self.handoff,
                read_buffer_bytes: &read_buffer_bytes,
            };
            f(http, self.poll.registry(), &from);
        }
    }

    /// Carries out the core's actions and writes what it queued, until
    /// neither leaves more to do (a failed write closes a connection,
    /// which is an action).
    fn settle(&mut self, now: Instant) {
        loop {
            let mut acted = false;
            while let Some(action) = self.core.poll_action() {
                acted = true;
                match action {
                    Action::Dial { slot, spec } => self.dial(slot, spec, now),
                    Action::Close { conn, linger } => self.drop_socket(conn, &linger),
                }
            }
            while let Some(conn) = self.core.poll_dirty() {
                acted = true;
                self.flush(conn, now);
            }
            if !acted {
                return;
            }
        }
    }

    /// In the middle of a long read: once [`HAND_OVER_EVERY`] events wait,
    /// the interpreter gets them, and what it sent back meanwhile is
    /// written, before reading on. Otherwise a wave of calls crosses the
    /// four threads of a node pair one stage at a time (this reactor
    /// decoding it all, then its interpreter running it all, ...), and
    /// under load half the machine idles.
    fn pass_along_midway(&mut self, now: Instant) {
        if self.core.events_waiting() >= HAND_OVER_EVERY {
            self.hand_over();
            self.drain_commands(now);
            self.settle(now);
        }
    }

    /// Moves the core's events to the interpreter.
    fn hand_over(&mut self) {
        self.core.take_events_as(&mut self.events, Event::Peer);
        self.handoff.send_events(&mut self.events);
        shrink_after_burst(&mut self.events);
    }

    /// About to block: once nothing has happened for [`heap::IDLE_AFTER`],
    /// what the last burst grew goes back. Answers when to wake for that,
    /// if it is still to come.
    fn shrink_if_idle(&mut self, now: Instant) -> Option<Instant> {
        let at = self.shrink_at?;
        if now < at {
            return Some(at);
        }
        self.shrink_at = None;
        heap::shrink_when_idle(&mut self.events);
        heap::shrink_when_idle(&mut self.commands);
        heap::shrink_when_idle(&mut self.resolved);
        self.core.shrink_when_idle();
        for socket in self.sockets.iter_mut().flatten() {
            socket.decoder.shrink_when_idle();
        }
        None
    }

    fn drain_commands(&mut self, now: Instant) {
        let mut commands = std::mem::take(&mut self.commands);
        self.handoff.take_commands(&mut commands);
        self.commands_seen += commands.len() as u64;
        for command in commands.drain(..) {
            match command {
                Command::Call(call) => self.core.call(call, now),
                Command::Reply { inbound, result } => self.core.reply(inbound, result),
                Command::Created {
                    id,
                    behavior,
                    epoch,
                } => self.core.broadcast_created(id, &behavior, epoch),
                Command::Destroyed { id } => self.core.broadcast_destroyed(id),
                Command::Snapshot {
                    machine,
                    up,
                    objects,
                    names,
                    epochs,
                } => self
                    .core
                    .send_snapshot(&machine, up, objects, names, epochs),
                Command::Moved { id, machine, epoch } => {
                    self.core.broadcast_moved(id, &machine, epoch)
                }
                Command::Named { name, id } => self.core.broadcast_named(&name, id),
                Command::Unnamed { name, id } => self.core.broadcast_unnamed(&name, id),
                Command::Probe { machine, probe } => self.core.send_probe(&machine, &probe),
                Command::Victim { machine, cycle } => self.core.send_victim(&machine, &cycle),
                Command::Trace { events, dropped } => {
                    if let Some(http) = &mut self.http {
                        http.publish(events, dropped, now);
                    }
                }
                Command::StopAsked => self.ask_stop(None),
                Command::Shutdown => self.stopping = true,
            }
        }
        shrink_after_burst(&mut commands);
        self.commands = commands;
    }

    fn accept_all(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => {
                    let conn = self.core.handle_accepted(addr, now);
                    let tls = self.tls.as_ref().map(TlsConfig::accept);
                    self.add_socket(conn, stream, addr, false, tls, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.accept_retry.drained();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends (see `accept`).
                    if self.accept_retry.failed(now) {
                        warn!("accept failed: {e}; trying again every {ACCEPT_RETRY:?}");
                    }
                    return;
                }
            }
        }
    }

    fn dial(&mut self, slot: usize, spec: Arc<str>, now: Instant) {
        if let Ok(addr) = spec.parse::<SocketAddr>() {
            return self.connect(slot, &spec, addr, now);
        }
        if let Err(e) = self.resolver.request(slot, spec) {
            self.core.handle_dial_failed(slot, &e, now);
        }
    }

    fn take_resolved(&mut self, now: Instant) {
        self.resolver.take(&mut self.resolved);
        let mut resolved = std::mem::take(&mut self.resolved);
        for (slot, spec, answer) in resolved.drain(..) {
            match answer {
                Ok(addr) => self.connect(slot, &spec, addr, now),
                Err(e) => self.core.handle_dial_failed(slot, &e, now),
            }
        }
        self.resolved = resolved;
    }

    /// Dials `addr`, which `spec` named (with TLS, the peer's certificate
    /// must name `spec`'s host).
    fn connect(&mut self, slot: usize, spec: &str, addr: SocketAddr, now: Instant) {
        let tls = match self.tls.as_ref().map(|tls| tls.dial(spec)).transpose() {
            Ok(tls) => tls.map(Ok),
            Err(e) => return self.core.handle_dial_failed(slot, &e, now),
        };
        let stream = match mio::net::TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(e) => return self.core.handle_dial_failed(slot, &e.to_string(), now),
        };
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(e) => return self.core.handle_dial_failed(slot, &e.to_string(), now),
        };
        let conn = self.core.handle_dialled(slot, addr, local, now);
        self.add_socket(conn, stream, addr, true, tls, now);
    }

    /// `tls`: the connection's TLS session (or why none could be made),
    /// when the node has TLS.
    fn add_socket(
        &mut self,
        conn: ConnId,
        mut stream: mio::net::TcpStream,
        addr: SocketAddr,
        connecting: bool,
        tls: Option<Result<rustls::Connection, String>>,
        now: Instant,
    ) {
        let tls = match tls.transpose() {
            Ok(tls) => tls.map(Box::new),
            Err(e) => return self.core.handle_closed(conn, CloseReason::Tls(e), now),
        };
        if let Err(e) = stream.set_nodelay(true) {
            // Without NODELAY, small frames wait for Nagle: slow, still correct.
            warn!("TCP_NODELAY on {addr}: {e}");
        }
        let token = Token(FIRST_CONN + conn.key());
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            let reason = CloseReason::ConnectFailed(format!("registering the socket failed: {e}"));
            return self.core.handle_closed(conn, reason, now);
        }
        if self.sockets.len() <= conn.key() {
            self.sockets.resize_with(conn.key() + 1, || None);
        }
        let socket = Socket::new(conn, stream, connecting, self.core.max_frame(), tls);
        // The slot's previous connection may be closed in the core with its
        // `Close` not carried out yet (both in one iteration): let its
        // socket go now, deregistered, rather than overwrite it.
        if let Some(mut old) = self.sockets[conn.key()].take() {
            let _ = self.poll.registry().deregister(&mut old.stream);
            self.paused.retain(|p| *p != old.conn);
            self.unfinished.retain(|p| *p != old.conn);
        }
        self.sockets[conn.key()] = Some(socket);
    }

    /// The core forgot `conn`: one last try at its unsent bytes, then the
    /// socket goes.
    fn drop_socket(&mut self, conn: ConnId, linger: &[u8]) {
        if socket_of(&mut self.sockets, conn).is_none() {
            return;
        }
        let mut socket = self.sockets[conn.key()].take().expect("checked above");
        self.paused.retain(|p| *p != conn);
        self.unfinished.retain(|p| *p != conn);
        if self.stopping && !socket.connecting {
            // Written whole and closed in order once the loop has ended.
            self.closing
                .push(closing::Closing::new(socket, linger.to_vec()));
            return;
        }
        if !socket.connecting {
            socket.say_goodbye(linger);
        }
        let _ = self.poll.registry().deregister(&mut socket.stream);
    }

    fn handle_socket_event(&mut self, key: usize, now: Instant) {
        let Some(socket) = self.sockets.get_mut(key).and_then(Option::as_mut) else {
            return; // closed earlier in this batch of events
        };
        let conn = socket.conn;
        if socket.connecting {
            match socket.check_connected() {
                Ok(false) => return,
                Ok(true) => {
                    socket.connecting = false;
                    self.core.handle_connected(conn, now);
                }
                Err(e) => {
                    let reason = CloseReason::ConnectFailed(e.to_string());
                    return self.core.handle_closed(conn, reason, now);
                }
            }
        }
        if !self.paused.contains(&conn) {
            self.read(conn, now);
        }
        self.flush(conn, now);
    }

    /// Reads on where [`READ_BUDGET`] stopped the last iteration.
    fn read_unfinished(&mut self, now: Instant) {
        if self.unfinished.is_empty() {
            return;
        }
        for conn in std::mem::take(&mut self.unfinished) {
            if !self.paused.contains(&conn) {
                self.read(conn, now);
                self.flush(conn, now);
            }
        }
    }

    /// Reads and hands frames to the core until the socket would block,
    /// the connection closes, the interpreter's backlog is full, or the
    /// connection used its [`READ_BUDGET`] for this iteration.
    fn read(&mut self, conn: ConnId, now: Instant) {
        let mut taken = 0;
        loop {
            if self.backlog_full() && self.pause(conn, now) {
                return;
            }
            let Some(socket) = socket_of(&mut self.sockets, conn) else {
                return;
            };
            let done = socket.read_some();
            if done.is_none() {
                let bytes = std::mem::take(&mut socket.read_bytes);
                taken += bytes;
                self.core.handle_heard(conn, bytes, now);
            }
            loop {
                let status = match socket.decoder.next_frame() {
                    Ok(Some(payload)) => match codec::decode(payload) {
                        Ok(msg) => self.core.handle_message(conn, msg, now),
                        Err(e) => self.core.handle_bad_input(conn, BadInput::Message(e), now),
                    },
                    Ok(None) => break,
                    Err(e) => self.core.handle_bad_input(conn, BadInput::Frame(e), now),
                };
                match status {
                    Status::Open => {}
                    Status::Greeted => socket.decoder.raise_max_frame(self.core.max_frame()),
                    Status::Closed => return,
                }
            }
            let reason = match done {
                None if taken >= READ_BUDGET => {
                    if !self.unfinished.contains(&conn) {
                        self.unfinished.push(conn);
                    }
                    return;
                }
                None => {
                    self.pass_along_midway(now);
                    continue;
                }
                Some(ReadOutcome::Open) => return,
                Some(ReadOutcome::Eof) if socket.decoder.buffered() > 0 => CloseReason::EofMidFrame,
                Some(ReadOutcome::Eof) => CloseReason::PeerClosed,
                Some(ReadOutcome::Broken(e)) => CloseReason::ReadFailed(e),
                Some(ReadOutcome::Tls(e)) => CloseReason::Tls(e),
            };
            return self.core.handle_closed(conn, reason, now);
        }
    }

    /// Writes what the core queued on `conn`, then keeps the write
    /// interest in step with what is left.
    fn flush(&mut self, conn: ConnId, now: Instant) {
        let Some(socket) = socket_of(&mut self.sockets, conn) else {
            return;
        };
        if socket.connecting {
            return;
        }
        loop {
            let unsent = self.core.unsent(conn);
            if unsent.is_empty() && !socket.tls_wants_write() {
                break;
            }
            let written = if socket.tls.is_some() {
                socket.write_some_tls(unsent)
            } else {
                socket.write_some(unsent)
            };
            match written {
                Ok(0) => break,
                Ok(n) => self.core.advance(conn, n),
                Err(e) => {
                    return self.core.handle_closed(
                        conn,
                        CloseReason::WriteFailed(e.to_string()),
                        now,
                    )
                }
            }
        }
        let wants_write = self.core.wants_write(conn);
        let write_interest = wants_write || socket.tls_wants_write();
        if write_interest != socket.write_interest {
            socket.write_interest = write_interest;
            let interest = if write_interest {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(FIRST_CONN + conn.key());
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut socket.stream, token, interest)
            {
                let reason = CloseReason::WriteFailed(format!("reregister failed: {e}"));
                return self.core.handle_closed(conn, reason, now);
            }
        }
        if wants_write {
            self.core.check_backlog(conn, now);
        }
    }

    /// Events produced and not yet taken by the interpreter.
    fn backlog(&self) -> usize {
        self.events.len() + self.core.events_waiting() + self.handoff.backlog()
    }

    fn backlog_full(&self) -> bool {
        self.backlog() >= self.max_backlog
    }

    /// Stops reading `conn` until the interpreter catches up (the bytes
    /// stay in the kernel and TCP pushes back on the sender). `false`: the
    /// interpreter caught up meanwhile; read on.
    fn pause(&mut self, conn: ConnId, now: Instant) -> bool {
        self.hand_over();
        if !self.handoff.pause_reactor(self.max_backlog) {
            return false;
        }
        if !self.paused.contains(&conn) {
            self.paused.push(conn);
            self.core.set_paused(conn, true, now);
        }
        true
    }

    /// Reads the paused connections again once the backlog is half gone.
    fn resume_paused(&mut self, now: Instant) {
        if self.paused.is_empty() || self.backlog() > self.max_backlog / 2 {
            return;
        }
        self.handoff.resume_reactor();
        for conn in std::mem::take(&mut self.paused) {
            self.core.set_paused(conn, false, now);
            self.read(conn, now);
            self.flush(conn, now);
        }
    }

    /// SIGINT or SIGTERM: stop accepting, then shut down like
    /// `Command::Shutdown`.
    fn handle_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let now = Instant::now();
        for signal in signals.pending() {
            let name = if signal == signal_hook::consts::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            match self.signalled_at {
                Some(at) if now.saturating_duration_since(at) >= SECOND_SIGNAL => {
                    info!("received {name} again: stopping now");
                    self.stopping = true;
                    self.drain = false;
                    return;
                }
                Some(_) => debug!("received {name} again at once: the same stop"),
                None => {
                    info!("received {name}: shutting down");
                    self.signalled_at = Some(now);
                    self.ask_stop(Some(Event::StopAsked));
                }
            }
        }
    }

    /// The node is to stop: no more connections are accepted, and the
    /// loop ends at the interpreter's `Command::Shutdown`, which follows
    /// its last output, or [`STOP_GRACE`] from now. `tell` goes to the
    /// interpreter (a signal's news; `Node::shutdown` told it already).
    fn ask_stop(&mut self, tell: Option<Event>) {
        if self.stop_asked.is_some() {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.stop_asked = Some(Instant::now());
        self.events.extend(tell);
    }
}

/// `conn`'s socket, if the slot still holds that connection's. A free
/// function rather than a method, so the core can be borrowed meanwhile.
fn socket_of(sockets: &mut [Option<Socket>], conn: ConnId) -> Option<&mut Socket> {
    sockets
        .get_mut(conn.key())
        .and_then(Option::as_mut)
        .filter(|s| s.conn == conn)
}
