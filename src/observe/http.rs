//! The HTTP/1.1 side of a node, sans-IO: bytes and the time go in,
//! requests to answer and bytes to write come out. The reactor owns the
//! sockets; this file owns every rule about them.
//!
//! ```text
//!   reactor: accept ──▶ HttpServer::accept          -> key (or refused: at the limit)
//!            read   ──▶ HttpServer::received(key)    -> Some(Request) when one is whole
//!            (reactor answers: respond / subscribe)
//!            write  ◀── unsent(key) / advance(key, n)
//!            close  ◀── poll_close()                 (bad input, done, slow, idle)
//! ```
//!
//! Invariants and bounds:
//! - At most `max_conns` connections; one more is refused at accept.
//! - A request is at most `max_request` bytes of head, with at most
//!   [`MAX_HEADERS`] headers, and must arrive whole within `idle` of the
//!   previous one (or of the accept): a slow or oversized sender is
//!   answered 400 or 431 and closed, and a connection that sends nothing
//!   for `idle` is closed. Requests have no body: a request with
//!   `Content-Length` or `Transfer-Encoding` is answered 400.
//! - Requests are parsed (httparse) from the connection's own buffer:
//!   the method, path and query are borrowed from it, nothing is copied
//!   until a route keeps its filter.
//! - On a connection that reached the node at a loopback address
//!   ([`HttpServer::accept_on`]), a request whose `Host` is a name other
//!   than `localhost` (or a `.localhost` name) is refused (403): a web
//!   page the user visits could otherwise rebind its own name to
//!   127.0.0.1 and read the node's `/events` (DNS rebinding). IP
//!   literals, `localhost`, and requests without a `Host` (not from a
//!   browser) pass. A listener on every address (`0.0.0.0`) is guarded
//!   on its loopback connections alone.
//! - A response is written whole into the connection's out buffer; a
//!   client that does not read its response within `idle` is closed.
//! - A subscriber (`/events`) gets one `data:` line per event while its
//!   out buffer holds under `max_stream_buffer` bytes; past that, events
//!   are dropped and counted, and once it has room again it gets an
//!   `event: dropped` with the count before the next event. Its buffer
//!   never grows past the bound (what it has read is dropped from the
//!   front). After `heartbeat` without an event it gets a comment line,
//!   so that a client can tell a quiet node from a lost one. It may send
//!   nothing: input on a stream closes it. At most `max_subscribers`
//!   stream at once; one more is answered 503.

use std::time::{Duration, Instant};

use slab::Slab;

/// Most headers in a request.
pub const MAX_HEADERS: usize = 32;

/// The bounds an [`HttpServer`] holds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Well under a process's usual 1024 descriptors, which the peers and
    /// the store need too.
    pub max_conns: usize,
    pub max_request: usize,
    pub max_stream_buffer: usize,
    pub max_subscribers: usize,
    /// A request must arrive whole, and a response be read, within this;
    /// a connection silent this long is closed.
    pub idle: Duration,
    /// A stream quiet this long gets a comment line.
    pub heartbeat: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_conns: 256,
            max_request: 8 << 10,
            max_stream_buffer: 256 << 10,
            max_subscribers: 64,
            idle: Duration::from_secs(10),
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// A whole request, borrowed from the connection's buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// What follows `?` in the target ("" when none).
    pub query: &'a str,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Reading a request (keep-alive: the next one after a response).
    Reading,
    /// A request was handed out; its answer is awaited.
    Answering,
    /// Streaming events until the client goes.
    Streaming,
    /// Write what is queued, then close.
    Closing,
}

#[derive(Debug)]
struct HttpConn {
    inbuf: Vec<u8>,
    /// Bytes of `inbuf` that belong to the request handed out.
    consumed: usize,
    out: Vec<u8>,
    written: usize,
    state: State,
    /// Since when the connection waits for the other side (a request to
    /// arrive, or its response to be read).
    waiting_since: Instant,
    /// Events dropped since the subscriber last had room.
    dropped: u64,
    /// The subscriber's filter, when streaming.
    filter: Option<crate::observe::events::Filter>,
    /// The client asked to close after this answer (`Connection: close`,
    /// or HTTP/1.0).
    close_after: bool,
    /// In the dirty list, until polled.
    dirty: bool,
    /// Reached at a loopback address: `Host` is checked (module docs).
    local_only: bool,
}

impl HttpConn {
    fn unsent(&self) -> &[u8] {
        &self.out[self.written..]
    }
}

/// Every HTTP connection of a node. See the module docs.
#[derive(Debug)]
pub struct HttpServer {
    limits: Limits,
    conns: Slab<HttpConn>,
    to_close: Vec<usize>,
    dirty: Vec<usize>,
    subscribers: usize,
    /// The subscribers' keys: an event visits these, not every
    /// connection (most are idle keep-alives, up to the limit).
    streaming: Vec<usize>,
}

/// Status lines the server writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeadersTooLarge,
    ServiceUnavailable,
    Forbidden,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::HeadersTooLarge => "431 Request Header Fields Too Large",
            Status::ServiceUnavailable => "503 Service Unavailable",
            Status::Forbidden => "403 Forbidden",
        }
    }
}

impl HttpServer {
    pub fn new(limits: Limits) -> HttpServer {
        HttpServer {
            limits,
            conns: Slab::new(),
            to_close: Vec::new(),
            dirty: Vec::new(),
            subscribers: 0,
            streaming: Vec::new(),
        }
    }

    /// A new connection's key, or `None` at `max_conns` (close it).
    pub fn accept(&mut self, now: Instant) -> Option<usize> {
        self.accept_on(now, false)
    }

    /// [`accept`](Self::accept) for a connection that reached the node at
    /// a loopback address (`local_only`): its requests' `Host` is checked.
    pub fn accept_on(&mut self, now: Instant, local_only: bool) -> Option<usize> {
        if self.conns.len() >= self.limits.max_conns {
            return None;
        }
        Some(self.conns.insert(HttpConn {
            inbuf: Vec::new(),
            consumed: 0,
            out: Vec::new(),
            written: 0,
            state: State::Reading,
            waiting_since: now,
            dropped: 0,
            filter: None,
            close_after: false,
            dirty: false,
            local_only,
        }))
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Whether `key` is done with requests: it only writes what is
    /// queued, then closes, or it is closed already (what it receives
    /// meanwhile is dropped).
    pub fn is_closing(&self, key: usize) -> bool {
        self.conns
            .get(key)
            .is_none_or(|c| c.state == State::Closing)
    }

    /// Subscribers streaming events now.
    pub fn subscribers(&self) -> usize {
        self.subscribers
    }

    /// The vm trace kinds some subscriber's filter can pass.
    pub fn stream_kinds(&self) -> u32 {
        self.streaming
            .iter()
            .filter_map(|&key| self.conns.get(key)?.filter.as_ref())
            .fold(0, |mask, f| mask | f.trace_kinds())
    }

    /// Bytes arrived on `key`. Answers the request they complete, if any,
    /// once; the caller answers it with [`respond`](Self::respond) or
    /// [`subscribe`](Self::subscribe) before reading more.
    pub fn received(&mut self, key: usize, bytes: &[u8], now: Instant) -> Option<Request<'_>> {
        let limits = self.limits;
        let conn = self.conns.get_mut(key)?;
        match conn.state {
            State::Reading => {}
            // A subscriber only reads: one that sends is not one.
            State::Streaming => {
                log::debug!("http: a subscriber sent bytes; closing");
                self.close(key);
                return None;
            }
            // Bytes from a closing client are ignored; the next request
            // of a keep-alive client waits its turn.
            State::Closing => return None,
            State::Answering => {
                conn.inbuf.extend_from_slice(bytes);
                return None;
            }
        }
        conn.inbuf.extend_from_slice(bytes);
        self.next_request(key, now, limits)
    }

    /// Parses the request at the front of `key`'s buffer, if whole.
    fn next_request(&mut self, key: usize, now: Instant, limits: Limits) -> Option<Request<'_>> {
        let conn = self.conns.get_mut(key)?;
        // Where the method and target lie in `inbuf`, or why it is refused.
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            let at = |part: &str| {
                let start = part.as_ptr() as usize - conn.inbuf.as_ptr() as usize;
                start..start + part.len()
            };
            match request.parse(&conn.inbuf) {
                Ok(httparse::Status::Partial) if conn.inbuf.len() > limits.max_request => {
                    Err((Status::HeadersTooLarge, "request head too large"))
                }
                Ok(httparse::Status::Partial) => return None,
                Err(httparse::Error::TooManyHeaders) => {
                    Err((Status::HeadersTooLarge, "too many headers"))
                }
                Err(_) => Err((Status::BadRequest, "malformed request")),
                Ok(httparse::Status::Complete(_)) if !has_no_body(request.headers) => {
                    Err((Status::BadRequest, "requests carry no body here"))
                }
                Ok(httparse::Status::Complete(n)) if n > limits.max_request => {
                    Err((Status::HeadersTooLarge, "request head too large"))
                }
                Ok(httparse::Status::Complete(_))
                    if conn.local_only && !local_host(request.headers) =>
                {
                    Err((
                        Status::Forbidden,
                        "Host must be an IP address or localhost on this loopback address",
                    ))
                }
                Ok(httparse::Status::Complete(n)) => Ok((
                    n,
                    at(request.method.unwrap_or("")),
                    at(request.path.unwrap_or("")),
                    request.version == Some(0) || asks_to_close(request.headers),
                )),
            }
        };
        let (n, method, target, close_after) = match parsed {
            Ok(parts) => parts,
            Err((status, why)) => {
                log::debug!("http: {why}; closing");
                conn.inbuf.clear();
                self.finish(key, status, "text/plain", why.as_bytes(), true, now);
                return None;
            }
        };
        conn.consumed = n;
        conn.close_after = close_after;
        conn.state = State::Answering;
        let conn = &self.conns[key];
        let text = |range: std::ops::Range<usize>| {
            // httparse checked both are tokens: ASCII.
            std::str::from_utf8(&conn.inbuf[range]).unwrap_or("")
        };
        let (method, target) = (text(method), text(target));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Some(Request {
            method,
            path,
            query,
        })
    }

    /// Answers `key`'s request with `body`; the connection stays open for
    /// the next request (HTTP/1.1 keep-alive) unless `close`.
    pub fn respond(
        &mut self,
        key: usize,
        status: Status,
        content_type: &str,
        body: &[u8],
        now: Instant,
    ) {
        self.finish(key, status, content_type, body, false, now);
    }

    fn finish(
        &mut self,
        key: usize,
        status: Status,
        content_type: &str,
        body: &[u8],
        close: bool,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let close = close || conn.close_after || status != Status::Ok;
        use std::io::Write;
        let _ = write!(
            conn.out,
            "HTTP/1.1 {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
             cache-control: no-store\r\n{}connection: {}\r\n\r\n",
            status.line(),
            body.len(),
            if status == Status::MethodNotAllowed {
                "allow: GET\r\n"
            } else {
                ""
            },
            if close { "close" } else { "keep-alive" }
        );
        conn.out.extend_from_slice(body);
        conn.waiting_since = now;
        conn.inbuf.drain(..conn.consumed.min(conn.inbuf.len()));
        conn.consumed = 0;
        conn.state = if close {
            State::Closing
        } else {
            State::Reading
        };
        // A pipelined request already buffered: the reactor asks for it
        // with `pending`.
        mark_dirty(&mut self.dirty, conn, key);
    }

    /// A keep-alive client's next request, already buffered.
    pub fn pending(&mut self, key: usize, now: Instant) -> Option<Request<'_>> {
        let conn = self.conns.get(key)?;
        if conn.state != State::Reading || conn.inbuf.is_empty() {
            return None;
        }
        let limits = self.limits;
        self.next_request(key, now, limits)
    }

    /// Turns `key` into an event stream with `filter`; at
    /// `max_subscribers` answers 503 instead.
    pub fn subscribe(&mut self, key: usize, filter: crate::observe::events::Filter, now: Instant) {
        if self.subscribers >= self.limits.max_subscribers {
            let why = format!(
                "at most {} subscribers at once",
                self.limits.max_subscribers
            );
            self.finish(
                key,
                Status::ServiceUnavailable,
                "text/plain",
                why.as_bytes(),
                true,
                now,
            );
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // A heartbeat at once: it tells a client that this node sends
        // them (older ones do not), so it may count silence from now.
        conn.out.extend_from_slice(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n\
              connection: close\r\n\r\n: avm trace stream\n\n: heartbeat\n\n",
        );
        conn.inbuf.clear();
        conn.consumed = 0;
        conn.state = State::Streaming;
        conn.filter = Some(filter);
        conn.waiting_since = now;
        self.subscribers += 1;
        self.streaming.push(key);
        mark_dirty(&mut self.dirty, conn, key);
    }

    /// Offers one event to every subscriber: `line` is its JSON, and
    /// `matches` says whether a subscriber's filter wants it.
    pub fn publish(
        &mut self,
        line: &[u8],
        matches: impl Fn(&crate::observe::events::Filter) -> bool,
        now: Instant,
    ) {
        if self.subscribers == 0 {
            return;
        }
        let cap = self.limits.max_stream_buffer;
        for &key in &self.streaming {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if !conn.filter.as_ref().is_some_and(&matches) {
                continue;
            }
            if conn.unsent().len() + line.len() > cap {
                conn.dropped += 1;
                continue;
            }
            if conn.unsent().is_empty() {
                // The subscriber has this long to read it from now, not
                // from whenever it last had something to read.
                conn.waiting_since = now;
            }
            if conn.dropped > 0 {
                let note = format!("event: dropped\ndata: {{\"dropped\":{}}}\n\n", conn.dropped);
                conn.out.extend_from_slice(note.as_bytes());
                conn.dropped = 0;
            }
            conn.out.extend_from_slice(b"data: ");
            conn.out.extend_from_slice(line);
            conn.out.extend_from_slice(b"\n\n");
            mark_dirty(&mut self.dirty, conn, key);
        }
    }

    /// `n` events were lost before they reached the server: each
    /// subscriber counts them as dropped (told before its next event).
    pub fn dropped_for_all(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        for &key in &self.streaming {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.dropped += n;
            }
        }
    }

    /// A connection with bytes queued since the last call.
    pub fn poll_dirty(&mut self) -> Option<usize> {
        let key = self.dirty.pop()?;
        if let Some(conn) = self.conns.get_mut(key) {
            conn.dirty = false;
        }
        Some(key)
    }

    /// What `key` has left to write.
    pub fn unsent(&self, key: usize) -> &[u8] {
        self.conns.get(key).map_or(&[], HttpConn::unsent)
    }

    /// `n` bytes of `key`'s unsent bytes were written.
    pub fn advance(&mut self, key: usize, n: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.written += n;
        if conn.written > 0 {
            conn.waiting_since = now;
        }
        if conn.written >= 4 << 10 && conn.written * 2 >= conn.out.len() {
            // A reader that keeps up only partly never empties its buffer:
            // what it has read goes, so the buffer holds only what it has not.
            conn.out.drain(..conn.written);
            conn.written = 0;
        }
        if conn.written == conn.out.len() {
            conn.out.clear();
            conn.written = 0;
            if conn.out.capacity() > 64 << 10 {
                conn.out.shrink_to(4 << 10);
            }
            if conn.state == State::Closing {
                self.close(key);
            }
        }
    }

    /// The client of `key` closed, or its socket failed.
    pub fn closed(&mut self, key: usize) {
        if let Some(conn) = self.conns.try_remove(key) {
            if conn.state == State::Streaming {
                self.subscribers -= 1;
                self.streaming.retain(|&k| k != key);
            }
        }
    }

    fn close(&mut self, key: usize) {
        self.closed(key);
        self.to_close.push(key);
    }

    /// A connection the reactor must close now (its key is free again).
    pub fn poll_close(&mut self) -> Option<usize> {
        self.to_close.pop()
    }

    /// Closes connections that waited past `idle`: a request that does
    /// not arrive whole, a response not read, a client that sends nothing.
    /// Subscribers are kept while they read (a full buffer drops events
    /// instead), cut when they stop reading for `idle`, and sent a
    /// heartbeat comment after `heartbeat` without an event.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Limits {
            idle, heartbeat, ..
        } = self.limits;
        let mut stale = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            let waited = now.saturating_duration_since(conn.waiting_since);
            let late = waited > idle;
            let cut = match conn.state {
                State::Reading => late,
                State::Answering => false,
                State::Closing => late && !conn.unsent().is_empty(),
                State::Streaming if conn.unsent().is_empty() && waited >= heartbeat => {
                    conn.out.extend_from_slice(b": heartbeat\n\n");
                    conn.waiting_since = now;
                    mark_dirty(&mut self.dirty, conn, key);
                    false
                }
                State::Streaming => late && !conn.unsent().is_empty(),
            };
            if cut {
                stale.push(key);
            }
        }
        for key in stale {
            log::debug!("http: connection {key} idle too long; closing");
            self.close(key);
        }
    }
}

/// Marks `key` as having bytes to write, once until polled: the reactor
/// polls only while subscribers stream, so a node scraped for `/health`
/// and never watched would otherwise keep a key per answer for ever. A
/// flag, not a search of the list: one event marks every subscriber.
fn mark_dirty(dirty: &mut Vec<usize>, conn: &mut HttpConn, key: usize) {
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(key);
    }
}

/// Whether a connection that reached us at `local` came over loopback,
/// and so gets its `Host` checked ([`HttpServer::accept_on`]). A
/// dual-stack listener (`[::]`) sees an IPv4 loopback client at
/// `::ffff:127.0.0.1`, which `Ipv6Addr::is_loopback` alone calls remote.
pub fn reached_at_loopback(local: std::net::IpAddr) -> bool {
    local.to_canonical().is_loopback()
}

/// Whether the client asked for the connection to close after the answer
/// (`close` among the `Connection` header's tokens).
fn asks_to_close(headers: &[httparse::Header<'_>]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// Whether the request's `Host` (if any) names this machine the way only
/// a user can: an IP literal or `localhost`, with or without a port. A
/// page's own name that was rebound to 127.0.0.1 does not.
fn local_host(headers: &[httparse::Header<'_>]) -> bool {
    let Some(host) = headers.iter().find(|h| h.name.eq_ignore_ascii_case("host")) else {
        return true;
    };
    let Ok(host) = std::str::from_utf8(host.value) else {
        return false;
    };
    let host = host.trim();
    if let Some(v6) = host.strip_prefix('[') {
        return v6
            .split(']')
            .next()
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    // A fully qualified form (`localhost.`) is the same name.
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    // `.localhost` names are loopback by definition (RFC 6761): no page
    // can own one to rebind it.
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Whether the headers announce no body (`Content-Length: 0` is none).
fn has_no_body(headers: &[httparse::Header<'_>]) -> bool {
    !headers.iter().any(|h| {
        (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::events::Filter;

    fn server() -> (HttpServer, Instant) {
        (HttpServer::new(Limits::default()), Instant::now())
    }

    fn take_out(s: &mut HttpServer, key: usize, now: Instant) -> String {
        let out = String::from_utf8(s.unsent(key).to_vec()).unwrap();
        s.advance(key, out.len(), now);
        out
    }

    #[test]
    fn a_request_split_anywhere_is_parsed_once_whole() {
        let raw = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        for split in 1..raw.len() {
            let (mut s, now) = server();
            let key = s.accept(now).unwrap();
            assert!(
                s.received(key, &raw[..split], now).is_none(),
                "split {split}"
            );
            let req = s.received(key, &raw[split..], now).expect("whole");
            assert_eq!(
                req,
                Request {
                    method: "GET",
                    path: "/metrics",
                    query: "x=1"
                }
            );
        }
    }

    #[test]
    fn answers_never_polled_for_keep_one_dirty_mark_per_connection() {
        let (mut s, now) = server();
        let key = s.accept(now).unwrap();
        for _ in 0..1000 {
            assert!(s
                .received(key, b"GET /health HTTP/1.1\r\n\r\n", now)
                .is_some());
            s.respond(key, Status::Ok, "text/plain", b"ok", now);
            let out = s.unsent(key).len();
            s.advance(key, out, now);
        }
        assert_eq!(s.poll_dirty(), Some(key));
        assert_eq!(s.poll_dirty(), None);
    }

    #[test]
    fn keep_alive_serves_a_pipelined_second_request() {
        let (mut s, now) = server();
        let key = s.accept(now).unwrap();
        let both = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(s.received(key, both, now).unwrap().path, "/a");
        s.respond(key, Status::Ok, "text/plain", b"A", now);
        let out = take_out(&mut s, key, now);
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("connection: keep-alive") && out.ends_with("\r\n\r\nA"));
        assert_eq!(s.pending(key, now).unwrap().path, "/b");
        s.respond(key, Status::Ok, "text/plain", b"B", now);
        assert!(take_out(&mut s, key, now).ends_with("B"));
        assert!(s.poll_close().is_none());
    }

    #[test]
    fn connection_close_and_http_1_0_close_after_the_answer() {
        for raw in [
            &b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nConnection: TE, Close\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
        ] {
            let (mut s, now) = server();
            let key = s.accept(now).unwrap();
            s.received(key, raw, now).unwrap();
            s.respond(key, Status::Ok, "text/plain", b"bye", now);
            assert!(take_out(&mut s, key, now).contains("connection: close"));
            assert_eq!(s.poll_close(), Some(key));
        }
    }

    #[test]
    fn bad_requests_get_their_status_and_a_close() {
        let cases: [(&[u8], &str); 4] = [
            (b"\x00\x01garbage\r\n\r\n", "400 Bad Request"),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", "400 Bad Request"),
            (&[b'A'; 9000], "431"),
            (
                b"GET / HTTP/1.1\r\na:1\r\nb:1\r\nc:1\r\nd:1\r\ne:1\r\nf:1\r\ng:1\r\nh:1\r\ni:1\r\nj:1\r\nk:1\r\nl:1\r\nm:1\r\nn:1\r\no:1\r\np:1\r\nq:1\r\nr:1\r\ns:1\r\nt:1\r\nu:1\r\nv:1\r\nw:1\r\nx:1\r\ny:1\r\nz:1\r\naa:1\r\nbb:1\r\ncc:1\r\ndd:1\r\nee:1\r\nff:1\r\ngg:1\r\n\r\n",
                "431",
            ),
        ];
        for (raw, status) in cases {
            let (mut s, now) = server();
            let key = s.accept(now).unwrap();
            assert!(s.received(key, raw, now).is_none());
            let out = take_out(&mut s, key, now);
            assert!(out.contains(status), "{status}: {out}");
            assert!(out.contains("connection: close"), "{out}");
            assert_eq!(s.poll_close(), Some(key));
            assert!(s.is_empty());
        }
    }

    /// IPv4 loopback seen through a dual-stack listener is loopback.
    #[test]
    fn loopback_is_loopback_through_a_dual_stack_listener() {
        let mapped: std::net::IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(reached_at_loopback(mapped));
        for local in ["127.0.0.1", "::1", "127.3.2.1"] {
            assert!(reached_at_loopback(local.parse().unwrap()), "{local}");
        }
        for other in ["::ffff:10.0.0.1", "10.0.0.1", "::2"] {
            assert!(!reached_at_loopback(other.parse().unwrap()), "{other}");
        }
    }

    /// On a loopback connection, a `Host` that is a name other than
    /// `localhost` is refused (a rebound page name); addresses, `localhost`
    /// and no `Host` pass. Off loopback every `Host` passes.
    #[test]
    fn a_rebound_host_name_is_refused_on_loopback() {
        let now = Instant::now();
        let ask = |loopback: bool, host: &str| {
            let mut s = HttpServer::new(Limits::default());
            let key = s.accept_on(now, loopback).unwrap();
            let raw = format!("GET /events HTTP/1.1\r\n{host}\r\n");
            s.received(key, raw.as_bytes(), now).is_some()
        };
        for host in [
            "Host: 127.0.0.1:9102\r\n",
            "Host: localhost:9102\r\n",
            "host: LOCALHOST\r\n",
            "Host: localhost.:9102\r\n",
            "Host: node.localhost\r\n",
            "Host: [::1]:9102\r\n",
            "",
        ] {
            assert!(ask(true, host), "{host:?} refused");
        }
        for host in [
            "Host: evil.example:9102\r\n",
            "Host: localhost.evil.example\r\n",
            "Host: 127.0.0.1.evil.example\r\n",
        ] {
            assert!(!ask(true, host), "{host:?} passed");
            assert!(ask(false, host), "{host:?} refused off loopback");
        }
        let mut s = HttpServer::new(Limits::default());
        let key = s.accept_on(now, true).unwrap();
        s.received(key, b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n", now);
        assert!(take_out(&mut s, key, now).starts_with("HTTP/1.1 403 Forbidden"));
        assert_eq!(s.poll_close(), Some(key));
    }

    #[test]
    fn connections_past_the_limit_are_refused() {
        let limits = Limits {
            max_conns: 2,
            ..Limits::default()
        };
        let mut s = HttpServer::new(limits);
        let now = Instant::now();
        assert!(s.accept(now).is_some() && s.accept(now).is_some());
        assert!(s.accept(now).is_none());
    }

    /// A slow sender, a slow reader and a client that sends nothing are
    /// all cut after `idle`: silent connections would otherwise hold the
    /// slots (and descriptors) for ever. One that is served stays.
    #[test]
    fn slow_senders_slow_readers_and_silent_clients_are_cut() {
        let (mut s, now) = server();
        let slow_sender = s.accept(now).unwrap();
        let slow_reader = s.accept(now).unwrap();
        let silent = s.accept(now).unwrap();
        let served = s.accept(now).unwrap();
        s.received(slow_sender, b"GET / HT", now);
        s.received(slow_reader, b"GET / HTTP/1.1\r\n\r\n", now)
            .unwrap();
        s.respond(slow_reader, Status::Ok, "text/plain", b"unread", now);
        let later = now + Duration::from_secs(9);
        s.received(served, b"GET / HTTP/1.1\r\n\r\n", later)
            .unwrap();
        s.respond(served, Status::Ok, "text/plain", b"read", later);
        take_out(&mut s, served, later);
        s.handle_timeout(now + Duration::from_secs(11));
        let mut closed: Vec<_> = std::iter::from_fn(|| s.poll_close()).collect();
        closed.sort();
        assert_eq!(closed, vec![slow_sender, slow_reader, silent]);
        assert_eq!(s.len(), 1, "{served}, served 2 s ago, stays");
    }

    /// A subscriber, its response head and opening heartbeat read: a
    /// stream begins with one, so a client knows heartbeats will come.
    fn subscriber(s: &mut HttpServer, now: Instant) -> usize {
        let key = s.accept(now).unwrap();
        s.received(key, b"GET /events HTTP/1.1\r\n\r\n", now)
            .unwrap();
        s.subscribe(key, Filter::default(), now);
        let head = take_out(s, key, now);
        assert!(
            head.ends_with("\r\n\r\n: avm trace stream\n\n: heartbeat\n\n"),
            "{head}"
        );
        key
    }

    /// A stream quiet for a while gets a heartbeat, and an event after a
    /// long quiet is the subscriber's to read from then: neither cuts a
    /// subscriber that reads.
    #[test]
    fn a_quiet_stream_gets_heartbeats_and_is_not_cut_by_its_next_event() {
        let (mut s, now) = server();
        let key = subscriber(&mut s, now);
        let at = |secs| now + Duration::from_secs(secs);
        s.handle_timeout(at(6));
        assert_eq!(take_out(&mut s, key, at(6)), ": heartbeat\n\n");
        // 11 s of quiet after the heartbeat, then an event, then a sweep
        // before it is written.
        s.publish(b"{}", |_| true, at(17));
        s.handle_timeout(at(17));
        assert_eq!(s.poll_close(), None, "cut at its first event");
        assert_eq!(take_out(&mut s, key, at(17)), "data: {}\n\n");
        // One that stops reading is still cut.
        s.publish(b"{}", |_| true, at(18));
        s.handle_timeout(at(29));
        assert_eq!(s.poll_close(), Some(key));
    }

    /// A subscriber that reads only part of each batch never empties its
    /// buffer; what it has read is dropped, so the buffer stays bounded.
    #[test]
    fn a_partial_reader_holds_only_what_it_has_not_read() {
        let (mut s, now) = server();
        let key = subscriber(&mut s, now);
        let event = [b'x'; 1000];
        for _ in 0..1000 {
            for _ in 0..3 {
                s.publish(&event, |_| true, now);
            }
            let unsent = s.unsent(key).len();
            s.advance(key, unsent - 1, now);
        }
        let conn = &s.conns[key];
        assert!(conn.out.len() < 16 << 10, "{} bytes held", conn.out.len());
    }

    /// A subscriber only reads: bytes from one close it. Past
    /// `max_subscribers`, a subscription is answered 503 and closed.
    #[test]
    fn subscribers_send_nothing_and_are_bounded() {
        let limits = Limits {
            max_subscribers: 1,
            ..Limits::default()
        };
        let mut s = HttpServer::new(limits);
        let now = Instant::now();
        let first = subscriber(&mut s, now);
        let second = s.accept(now).unwrap();
        s.received(second, b"GET /events HTTP/1.1\r\n\r\n", now)
            .unwrap();
        s.subscribe(second, Filter::default(), now);
        assert!(take_out(&mut s, second, now).starts_with("HTTP/1.1 503"));
        assert_eq!(s.poll_close(), Some(second));
        assert_eq!(s.subscribers(), 1);
        assert!(s.received(first, b"more", now).is_none());
        assert_eq!(s.poll_close(), Some(first));
        assert_eq!(s.subscribers(), 0);
    }

    /// Events go to subscribers only: not to a connection that took a
    /// closed subscriber's key, nor to one reading requests.
    #[test]
    fn events_reach_subscribers_only_when_keys_are_reused() {
        let mut s = HttpServer::new(Limits::default());
        let now = Instant::now();
        let gone = subscriber(&mut s, now);
        let stays = subscriber(&mut s, now);
        s.closed(gone);
        let plain = s.accept(now).unwrap();
        assert_eq!(plain, gone, "the slab hands the key out again");
        s.publish(b"{}", |_| true, now);
        assert!(
            s.unsent(plain).is_empty(),
            "a plain connection got an event"
        );
        assert!(take_out(&mut s, stays, now).ends_with("data: {}\n\n"));
        // The reused key subscribes: it gets each event once.
        s.received(plain, b"GET /events HTTP/1.1\r\n\r\n", now)
            .unwrap();
        s.subscribe(plain, Filter::default(), now);
        take_out(&mut s, plain, now);
        s.publish(b"{}", |_| true, now);
        let got = take_out(&mut s, plain, now);
        assert_eq!(got.matches("data: {}").count(), 1, "{got}");
        s.closed(stays);
        s.closed(plain);
        assert_eq!(s.subscribers(), 0);
        assert_eq!(s.stream_kinds(), 0);
    }

    /// Events lost before they reached the server (the interpreter's
    /// bound) are told to every subscriber before its next event.
    #[test]
    fn events_lost_on_the_way_are_told_to_every_subscriber() {
        let mut s = HttpServer::new(Limits::default());
        let now = Instant::now();
        let (a, b) = (subscriber(&mut s, now), subscriber(&mut s, now));
        s.dropped_for_all(40);
        s.publish(b"{}", |_| true, now);
        for key in [a, b] {
            let out = take_out(&mut s, key, now);
            assert!(
                out.ends_with("event: dropped\ndata: {\"dropped\":40}\n\ndata: {}\n\n"),
                "{out}"
            );
        }
    }

    #[test]
    fn a_subscriber_that_falls_behind_loses_events_and_is_told_how_many() {
        let limits = Limits {
            max_stream_buffer: 300,
            ..Limits::default()
        };
        let mut s = HttpServer::new(limits);
        let now = Instant::now();
        let key = s.accept(now).unwrap();
        s.received(key, b"GET /events HTTP/1.1\r\n\r\n", now)
            .unwrap();
        s.subscribe(key, Filter::default(), now);
        assert_eq!(s.subscribers(), 1);
        take_out(&mut s, key, now);
        let event = [b'x'; 100];
        for _ in 0..5 {
            s.publish(&event, |_| true, now);
        }
        let first = take_out(&mut s, key, now);
        assert_eq!(first.matches("data: ").count(), 2, "{first}");
        s.publish(&event, |_| true, now);
        let second = take_out(&mut s, key, now);
        assert!(
            second.starts_with("event: dropped\ndata: {\"dropped\":3}\n\n"),
            "{second}"
        );
        assert_eq!(second.matches("data: x").count(), 1);
        s.closed(key);
        assert_eq!(s.subscribers(), 0);
    }
}
