//! The reactor's HTTP sockets: `--http ADDR`'s listener and connections,
//! moved by the same poll as the peers. Every rule lives in
//! `observe::http::HttpServer`; this file reads, writes, routes and
//! gathers what `/health` and `/metrics` show.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::accept::{AcceptRetry, ACCEPT_RETRY};
use crate::node::handoff::Handoff;
use crate::node::NodeStats;
use crate::observe::events::{self, Filter};
use crate::observe::http::{self, HttpServer, Limits, Status};
use crate::observe::{self, NodeView};
use crate::protocol::Core;
use crate::vm::TraceEvent;

/// The cluster page: one HTML file, plain JS, shipped in the binary.
const PAGE: &str = include_str!("../observe/page.html");

/// HTTP connection `k` is registered as `Token(HTTP_FIRST + k)`; peer
/// connections stay far below.
pub const HTTP_FIRST: usize = 1 << 40;

/// How often idle and slow HTTP connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Input read and dropped from a connection that is to be closed, at
/// most, before it is (see [`HttpSide::handle`]).
const CLOSING_DRAIN: usize = 64 << 10;

/// What one connection gets per reactor iteration: this many requests
/// answered, or [`HANDLE_BUDGET_BYTES`] read, whichever comes first. The
/// rest waits for the next iteration ([`HttpSide::handle_unfinished`]):
/// a client that pipelines requests and reads the answers as fast as they
/// come would otherwise keep the reactor in one connection for ever,
/// while peers' keepalives and calls waited.
const HANDLE_BUDGET_REQUESTS: usize = 32;

/// See [`HANDLE_BUDGET_REQUESTS`].
const HANDLE_BUDGET_BYTES: usize = 64 << 10;

/// Connections accepted per reactor iteration, at most; the rest wait in
/// the backlog for the next one (a connect flood does not hold the loop).
const ACCEPT_BUDGET: usize = 64;

/// How long streamed events may wait for their subscriber's socket: a
/// page does not see 20 ms, a call path would see a write per batch.
const STREAM_FLUSH_EVERY: Duration = Duration::from_millis(20);

/// What an `--http` node needs to serve.
#[derive(Debug)]
pub struct HttpSetup {
    pub listener: std::net::TcpListener,
    pub stats: Arc<NodeStats>,
    pub started: Instant,
}

/// A request, owned once parsed (the server's buffer is free again).
enum Route {
    Page,
    Health,
    Metrics,
    Events(Filter),
    Refused(Status, String),
}

impl Route {
    fn of(method: &str, path: &str, query: &str) -> Route {
        if method != "GET" {
            return Route::Refused(
                Status::MethodNotAllowed,
                format!("{method} not allowed: only GET"),
            );
        }
        match path {
            "/" | "/index.html" => Route::Page,
            "/health" => Route::Health,
            "/metrics" => Route::Metrics,
            "/events" => match Filter::parse(query) {
                Ok(filter) => Route::Events(filter),
                Err(why) => Route::Refused(Status::BadRequest, why),
            },
            other => Route::Refused(
                Status::NotFound,
                format!("{other}: not found (/, /health, /metrics, /events)"),
            ),
        }
    }
}

pub struct HttpSide {
    listener: TcpListener,
    server: HttpServer,
    sockets: Vec<Option<TcpStream>>,
    stats: Arc<NodeStats>,
    started: Instant,
    name: String,
    next_sweep: Instant,
    buf: Vec<u8>,
    renderer: events::Renderer,
    /// When the events queued for subscribers get written.
    stream_flush_at: Option<Instant>,
    /// Connections that used their budget with input left to read; and
    /// whether the listener may have connections left to accept. Edge
    /// triggered, neither gets another event: the reactor calls back.
    unfinished: Vec<usize>,
    accept_unfinished: bool,
    /// Trying the listener again after `accept` failed.
    accept_retry: AcceptRetry,
}

/// What `/health` and `/metrics` read besides the HTTP side itself.
pub struct Sources<'a> {
    pub core: &'a Core,
    pub handoff: &'a Handoff,
    /// Bytes the peer sockets' read buffers hold (their capacity), summed
    /// only when a view is built.
    pub read_buffer_bytes: &'a dyn Fn() -> usize,
}

impl HttpSide {
    pub fn new(
        setup: HttpSetup,
        registry: &Registry,
        token: Token,
        name: &str,
    ) -> io::Result<Self> {
        setup.listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(setup.listener);
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(HttpSide {
            listener,
            server: HttpServer::new(Limits::default()),
            sockets: Vec::new(),
            stats: setup.stats,
            started: setup.started,
            name: name.to_string(),
            next_sweep: setup.started,
            buf: vec![0; 16 << 10],
            renderer: events::Renderer::default(),
            stream_flush_at: None,
            unfinished: Vec::new(),
            accept_unfinished: false,
            accept_retry: AcceptRetry::default(),
        })
    }

    /// Accepts up to [`ACCEPT_BUDGET`] connections; more wait for
    /// [`handle_unfinished`](Self::handle_unfinished).
    pub fn accept_all(&mut self, registry: &Registry, now: Instant) {
        self.accept_unfinished = false;
        self.accept_retry.begin();
        for _ in 0..ACCEPT_BUDGET {
            let (mut stream, addr) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.accept_retry.drained();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if self.accept_retry.failed(now) {
                        warn!("http: accept failed: {e}; trying again every {ACCEPT_RETRY:?}");
                    }
                    return;
                }
            };
            // Reached at a loopback address, the page is for this
            // machine's user alone: guarded against pages that rebind their
            // own name (see observe::http).
            let loopback = stream
                .local_addr()
                .is_ok_and(|a| http::reached_at_loopback(a.ip()));
            let Some(key) = self.server.accept_on(now, loopback) else {
                debug!("http: {addr} refused: too many connections");
                continue; // dropping the stream closes it
            };
            let token = Token(HTTP_FIRST + key);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = registry.register(&mut stream, token, interest) {
                warn!("http: registering {addr} failed: {e}");
                self.server.closed(key);
                continue;
            }
            if self.sockets.len() <= key {
                self.sockets.resize_with(key + 1, || None);
            }
            self.sockets[key] = Some(stream);
        }
        self.accept_unfinished = true;
    }

    /// Whether a connection or the listener stopped at its budget with
    /// work left: the reactor must poll without blocking and call
    /// [`handle_unfinished`](Self::handle_unfinished).
    pub fn has_unfinished(&self) -> bool {
        self.accept_unfinished || !self.unfinished.is_empty()
    }

    /// [`has_unfinished`](Self::has_unfinished), or an accept to try
    /// again by now.
    pub fn has_work(&self, now: Instant) -> bool {
        self.has_unfinished() || self.accept_retry.due(now)
    }

    /// Goes on where the budgets stopped the last iteration, and tries
    /// the listener again once a failed accept's wait is over.
    pub fn handle_unfinished(&mut self, registry: &Registry, from: &Sources, now: Instant) {
        if self.accept_unfinished || self.accept_retry.due(now) {
            self.accept_all(registry, now);
        }
        for key in std::mem::take(&mut self.unfinished) {
            self.handle(key, registry, from, now);
        }
    }

    /// Readable or writable: write what is queued, answer the next whole
    /// request, read what came. A connection is read only once its answers
    /// are written, one request at a time: a client that pipelines
    /// requests and never reads the answers fills its own socket, not our
    /// memory, and then waits (the idle sweep cuts it). One that is to be
    /// closed is read, and what comes dropped, up to [`CLOSING_DRAIN`]
    /// bytes before it is: closed with unread input, it would reach the
    /// client as a reset, which can destroy the answer before it is read.
    /// Past its budget ([`HANDLE_BUDGET_REQUESTS`]) a connection waits for
    /// the next iteration.
    pub fn handle(&mut self, key: usize, registry: &Registry, from: &Sources, now: Instant) {
        let mut dropped = 0;
        let (mut answered, mut read) = (0, 0);
        loop {
            self.write_out(key, registry, now);
            if !self.server.unsent(key).is_empty() {
                break; // writable wakes us
            }
            // Written out, a closing connection has left the server (it
            // waits in `close_finished`'s list): only its input is left.
            let closing = self.server.is_closing(key);
            if closing && dropped > CLOSING_DRAIN {
                break;
            }
            if answered >= HANDLE_BUDGET_REQUESTS || read >= HANDLE_BUDGET_BYTES {
                if !self.unfinished.contains(&key) {
                    self.unfinished.push(key);
                }
                break;
            }
            let pending = self.server.pending(key, now);
            if let Some(route) = pending.map(|r| Route::of(r.method, r.path, r.query)) {
                self.answer(key, route, from, now);
                answered += 1;
                continue;
            }
            let Some(stream) = self.sockets.get_mut(key).and_then(Option::as_mut) else {
                break;
            };
            match stream.read(&mut self.buf) {
                // Not `return`: a key closed above must still go through
                // `close_finished`, before the slab hands it out again.
                Ok(0) => {
                    self.drop_socket(key, registry);
                    break;
                }
                Ok(n) if closing => dropped += n,
                Ok(n) => {
                    read += n;
                    let route = self
                        .server
                        .received(key, &self.buf[..n], now)
                        .map(|r| Route::of(r.method, r.path, r.query));
                    if let Some(route) = route {
                        self.answer(key, route, from, now);
                        answered += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_socket(key, registry);
                    break;
                }
            }
        }
        self.close_finished(registry);
    }

    fn answer(&mut self, key: usize, route: Route, from: &Sources, now: Instant) {
        let (status, kind, body) = match route {
            Route::Page => (
                Status::Ok,
                "text/html; charset=utf-8",
                PAGE.as_bytes().to_vec(),
            ),
            Route::Health => (
                Status::Ok,
                "application/json",
                observe::render_health(&self.view(from, now)),
            ),
            Route::Metrics => (
                Status::Ok,
                "text/plain; version=0.0.4",
                observe::render_metrics(&self.view(from, now)),
            ),
            Route::Events(filter) => {
                self.server.subscribe(key, filter, now);
                self.tell_subscribers();
                return;
            }
            Route::Refused(status, why) => (status, "text/plain", why.into_bytes()),
        };
        self.server.respond(key, status, kind, &body, now);
    }

    /// Hands each event to the subscribers whose filter wants it. The
    /// bytes wait in their buffers until [`flush_streams`](Self::flush_streams):
    /// a write per batch per subscriber would sit on every call's path.
    /// `dropped` events were lost on the way here: every subscriber is
    /// told so before the next event it gets.
    pub fn publish(&mut self, trace: Vec<TraceEvent>, dropped: u64, now: Instant) {
        self.stats.trace_published(trace.len());
        self.server.dropped_for_all(dropped);
        for event in &trace {
            let rendered = self.renderer.render(&self.name, event);
            self.server
                .publish(&rendered.json, |f| f.matches(rendered), now);
        }
        if self.stream_flush_at.is_none() && self.server.subscribers() > 0 {
            self.stream_flush_at = Some(now + STREAM_FLUSH_EVERY);
        }
    }

    /// When the reactor must wake: to write streamed events, if any wait,
    /// to try a failed accept again, and, while connections are open, for
    /// the sweep (idle cuts and heartbeats must come on a node with no
    /// other traffic too).
    pub fn deadline(&self) -> Option<Instant> {
        let sweep = (!self.server.is_empty()).then_some(self.next_sweep);
        let wakes = [self.stream_flush_at, sweep, self.accept_retry.at()];
        wakes.into_iter().flatten().min()
    }

    /// Writes what waits for subscribers, once its time has come.
    pub fn flush_streams(&mut self, registry: &Registry, now: Instant) {
        if self.stream_flush_at.is_some_and(|at| now >= at) {
            self.stream_flush_at = None;
            self.flush_dirty(registry, now);
        }
    }

    /// Writes every connection with bytes queued, closes those done.
    pub fn flush_dirty(&mut self, registry: &Registry, now: Instant) {
        while let Some(key) = self.server.poll_dirty() {
            self.flush(key, registry, now);
        }
        self.close_finished(registry);
    }

    fn flush(&mut self, key: usize, registry: &Registry, now: Instant) {
        self.write_out(key, registry, now);
        self.close_finished(registry);
    }

    /// Writes what `key` has queued, as far as the socket takes it.
    fn write_out(&mut self, key: usize, registry: &Registry, now: Instant) {
        loop {
            let Some(stream) = self.sockets.get_mut(key).and_then(Option::as_mut) else {
                return;
            };
            let unsent = self.server.unsent(key);
            if unsent.is_empty() {
                break;
            }
            match stream.write(unsent) {
                Ok(0) => return self.drop_socket(key, registry),
                Ok(n) => self.server.advance(key, n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.drop_socket(key, registry),
            }
        }
    }

    /// Every so often: cuts slow and idle-mid-request connections.
    pub fn sweep(&mut self, registry: &Registry, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_EVERY;
        self.server.handle_timeout(now);
        // Heartbeats queued: out now.
        self.flush_dirty(registry, now);
    }

    fn close_finished(&mut self, registry: &Registry) {
        let mut closed = false;
        while let Some(key) = self.server.poll_close() {
            closed = true;
            if let Some(mut stream) = self.sockets.get_mut(key).and_then(Option::take) {
                let _ = registry.deregister(&mut stream);
            }
        }
        // Only a close can change who subscribes; looking costs a pass
        // over every connection, so not after every write.
        if closed {
            self.tell_subscribers();
        }
    }

    fn drop_socket(&mut self, key: usize, registry: &Registry) {
        self.server.closed(key);
        if let Some(mut stream) = self.sockets.get_mut(key).and_then(Option::take) {
            let _ = registry.deregister(&mut stream);
        }
        self.tell_subscribers();
    }

    /// Tells the interpreter who subscribes now, and to what.
    fn tell_subscribers(&self) {
        let kinds = self.server.stream_kinds();
        self.stats.set_subscribers(self.server.subscribers(), kinds);
    }

    fn view(&self, from: &Sources, now: Instant) -> NodeView {
        let core = from.core;
        let snapshot = self.stats.snapshot();
        let gauges = self.stats.gauges();
        let mut peers = core.peer_views(now);
        for (machine, n) in self.stats.hosted() {
            if let Some(peer) = peers.iter_mut().find(|p| p.machine == machine) {
                peer.objects = n;
            }
        }
        NodeView {
            name: self.name.clone(),
            prefix: core.node_prefix(),
            uptime: now.saturating_duration_since(self.started),
            peers,
            objects: gauges.objects,
            suspended: gauges.suspended,
            waiting_for_turns: gauges.waiting_for_turns,
            directory_entries: gauges.directory_entries,
            events_queued: from.handoff.backlog() as u64,
            commands_queued: from.handoff.commands_queued() as u64,
            calls_in_flight: core.calls_in_flight() as u64,
            calls_owed: core.calls_owed() as u64,
            read_buffer_bytes: (from.read_buffer_bytes)() as u64,
            write_buffer_bytes: core.write_buffer_bytes() as u64,
            connections: core.connections() as u64,
            http_connections: self.server.len() as u64,
            subscribers: self.server.subscribers() as u64,
            remote_calls_out: snapshot.calls_out,
            remote_calls_in: snapshot.calls_in,
            local_calls: gauges.local_calls,
            failures: self.stats.failed_by(),
            deadlocks: self.stats.deadlocks(),
            rtt: core.rtt().clone(),
            protocol_errors: core.protocol_errors().to_vec(),
            store_commits: snapshot.store_commits,
            store_objects: snapshot.store_objects,
        }
    }
}
