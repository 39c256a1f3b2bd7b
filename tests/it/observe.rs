//! `--http`: health, metrics, the trace stream and bad requests, over raw
//! HTTP on loopback, against real `avm-node` processes playing PingPong.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{assert_demo_done, NodeProc};

const LIMIT: Duration = Duration::from_secs(60);

/// The port of the node's `http on 127.0.0.1:PORT` log line.
pub fn http_port(node: &NodeProc) -> u16 {
    let addr = node.log_value("http on ", LIMIT);
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in `{addr}`"))
}

/// One raw request; answers (status line, body).
pub fn request(port: u16, raw: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to --http");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(raw).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text)
        .expect("the node closes after answering");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

pub fn get(port: u16, path: &str) -> String {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let (status, body) = request(port, raw.as_bytes());
    assert_eq!(status, "HTTP/1.1 200 OK", "GET {path}: {body}");
    body
}

/// Subscribes to `/events?query`, its lines read with `timeout`; the
/// status line is read (and checked) already.
fn subscribe(port: u16, query: &str, timeout: Duration) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let raw = format!("GET /events?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(raw.as_bytes()).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut lines = BufReader::new(stream);
    let mut status = String::new();
    lines.read_line(&mut status).unwrap();
    assert_eq!(status.trim(), "HTTP/1.1 200 OK");
    lines
}

pub fn health(port: u16) -> Value {
    serde_json::from_str(&get(port, "/health")).expect("/health is JSON")
}

/// The value of one sample line of `/metrics` (`name{labels} value`).
fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no `{sample}` in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

fn calls(text: &str) -> f64 {
    metric(text, "avm_calls_total{direction=\"out\",kind=\"remote\"}")
        + metric(text, "avm_calls_total{direction=\"in\",kind=\"remote\"}")
}

/// beta serving pong with `--http 0`, and its HTTP port.
pub fn beta_with_http() -> (NodeProc, u16) {
    let beta = NodeProc::start("beta", 0, &["--demo", "--http", "0"]);
    beta.wait_for_log("serving", LIMIT);
    let port = http_port(&beta);
    (beta, port)
}

fn play(beta: &NodeProc, rounds: u64) {
    let peer = beta.addr();
    let rounds_text = rounds.to_string();
    let mut alpha = NodeProc::start(
        "alpha",
        0,
        &["--peer", &peer, "--demo", "--rounds", &rounds_text],
    );
    assert_demo_done(&mut alpha, rounds, LIMIT);
}

#[test]
fn health_and_metrics_count_a_1000_round_demo() {
    let (beta, port) = beta_with_http();
    let before = get(port, "/metrics");
    let h = health(port);
    assert_eq!(h["name"], "beta");
    assert_eq!(h["objects"], 1, "pong: {h}");
    play(&beta, 1000);

    let after = get(port, "/metrics");
    let grew = calls(&after) - calls(&before);
    assert!(grew >= 1000.0, "remote calls grew by {grew}:\n{after}");
    // Every call beta sent came back: one round trip each in the histogram.
    let out = metric(&after, "avm_calls_total{direction=\"out\",kind=\"remote\"}");
    assert_eq!(metric(&after, "avm_remote_call_seconds_count"), out);
    assert_eq!(
        metric(&after, "avm_remote_call_seconds_bucket{le=\"+Inf\"}"),
        out
    );
    assert!(
        metric(
            &after,
            "avm_peer_frames_total{peer=\"alpha\",direction=\"in\"}"
        ) >= 500.0
    );
    assert_eq!(metric(&after, "avm_objects"), 1.0);

    let h = health(port);
    let alpha = h["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["machine"] == "alpha"))
        .unwrap_or_else(|| panic!("alpha among beta's peers: {h}"));
    assert!(
        alpha["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{h}"
    );
    assert_eq!(h["remote_call_latency"]["count"].as_f64(), Some(out), "{h}");
    // pong's calls go to ping, on alpha: none stays on beta, and the
    // calls that came in are not counted again as local.
    assert_eq!(h["calls"]["local"], 0, "{h}");
}

#[test]
fn events_stream_the_demo_calls_with_their_chain() {
    let (beta, port) = beta_with_http();
    let mut lines = subscribe(port, "kind=call_in,call_out", Duration::from_secs(5));
    play(&beta, 20);
    let mut events = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while events.len() < 20 && Instant::now() < deadline {
        let mut line = String::new();
        if lines.read_line(&mut line).is_err() {
            break;
        }
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            events.push(serde_json::from_str::<Value>(data).expect("an event is JSON"));
        }
    }
    // 20 rounds: beta receives 10 calls and makes 10, all in one chain.
    assert_eq!(events.len(), 20, "{events:?}");
    let chain = events[0]["chain"].as_u64().expect("a chain id");
    for e in &events {
        assert_eq!(e["chain"].as_u64(), Some(chain), "{e}");
        assert_eq!(e["machine"], "alpha", "{e}");
        assert_eq!(e["node"], "beta", "{e}");
    }
    let ins = events.iter().filter(|e| e["kind"] == "call_in").count();
    assert_eq!(ins, 10, "{events:?}");
}

#[test]
fn bad_requests_get_their_status_and_leave_the_peers_alone() {
    let (beta, port) = beta_with_http();
    let cases: [(&[u8], &str); 6] = [
        (
            b"POST /health HTTP/1.1\r\n\r\n",
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (b"GET /nope HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (
            b"GET /events?kind=nope HTTP/1.1\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
        ),
        (b"\x16\x03\x01garbage\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "HTTP/1.1 400 Bad Request",
        ),
        (
            &[b'x'; 20_000],
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
    ];
    for (raw, want) in cases {
        let (status, body) = request(port, raw);
        assert_eq!(status, want, "{body}");
    }
    play(&beta, 10);
    assert!(health(port)["calls"]["remote_in"].as_u64() >= Some(5));
}

#[test]
fn two_hundred_idle_http_connections_do_not_stop_the_demo() {
    let (beta, port) = beta_with_http();
    // Under the node's 256: room is left for the requests below. (Past
    // it a connection is closed at once, and silent ones go after 10 s:
    // observe::http's tests.)
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("an idle connection"))
        .collect();
    // Counted now: silent ones are cut after 10 s, which a slow demo
    // below may outlast.
    let metrics = get(port, "/metrics");
    assert!(metric(&metrics, "avm_connections{kind=\"http\"}") >= 200.0);
    let started = Instant::now();
    play(&beta, 1000);
    eprintln!(
        "observe: 1,000-round demo beside {} idle HTTP connections: {:.2?}",
        idle.len(),
        started.elapsed()
    );
    let h = health(port);
    assert!(h["calls"]["remote_in"].as_u64() >= Some(500), "{h}");
}

/// `avm-node tail`'s function: it prints the node's events as lines,
/// refuses a kind the node would refuse before it connects, and when the
/// node goes, says so (an error: the binary exits 1), instead of
/// returning as if the stream had simply ended.
#[test]
fn tail_prints_events_and_says_when_the_node_goes() {
    let (beta, port) = beta_with_http();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let bogus = avm::observe::cli::tail(addr, "kind=call_in,bogus", std::io::sink());
    assert!(
        bogus.as_ref().is_err_and(|e| e.contains("kind=bogus")),
        "{bogus:?}"
    );
    let out = Shared::default();
    let tail = {
        let out = out.clone();
        std::thread::spawn(move || avm::observe::cli::tail(addr, "kind=call_in", out))
    };
    // Subscribed before the demo: /metrics shows the subscriber.
    let deadline = Instant::now() + LIMIT;
    let subscribers = || {
        metric(
            &get(port, "/metrics"),
            "avm_connections{kind=\"subscriber\"}",
        )
    };
    while subscribers() < 1.0 {
        assert!(Instant::now() < deadline, "tail never subscribed");
        // Polling, with the deadline above.
        std::thread::sleep(Duration::from_millis(20));
    }
    play(&beta, 4);
    // 4 rounds: 2 calls into beta, printed within the stream's flush.
    let deadline = Instant::now() + LIMIT;
    while out.text().lines().count() < 2 {
        assert!(Instant::now() < deadline, "tail printed {:?}", out.text());
        // Polling, with the deadline above.
        std::thread::sleep(Duration::from_millis(20));
    }
    // The node goes (SIGKILL): the stream ends without a word.
    drop(beta);
    let ended = tail.join().unwrap();
    assert!(
        ended
            .as_ref()
            .is_err_and(|e| e.contains("closed the stream")),
        "{ended:?}"
    );
    let text = out.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines.iter().all(|l| l.starts_with("beta call_in")),
        "{text}"
    );
}

/// A writer whose bytes another thread can read meanwhile.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Shared {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A burst of big frames grows a connection's read buffer (reading ahead,
/// up to 64 KiB); once the node has been idle a moment, `/health` shows
/// it back at its first size while the connection stays open.
#[test]
fn read_buffers_come_back_after_a_burst() {
    let (beta, port) = beta_with_http();
    let (mut s, _pong) = crate::wire::hello_beta(beta.port(), "client", 77);
    let idle = health(port)["buffers"]["read_bytes"].as_u64().unwrap();
    assert!(
        idle > 0 && idle <= 8 << 10,
        "one connection's buffer: {idle}"
    );
    // 64 calls of 30 KB each to an object nobody hosts, in one write: each
    // is answered with an error, and the reads fill the buffer.
    let big = "x".repeat(30_000);
    let mut burst = Vec::new();
    for i in 0..64 {
        let body = serde_json::to_vec(&serde_json::json!({"type":"call","request_id":i,
            "target":12345,"input":{"Str":big},"sender":(77u64 << 48) | 1,
            "sender_machine":"client"}))
        .unwrap();
        burst.extend_from_slice(&(body.len() as u32).to_be_bytes());
        burst.extend_from_slice(&body);
    }
    s.write_all(&burst).unwrap();
    for _ in 0..64 {
        let answer = crate::wire::recv(&mut s);
        assert!(answer["result"]["Err"].is_string(), "{answer}");
    }
    // Idle for well over `heap::IDLE_AFTER` (100 ms), connection open (a
    // client that answers no ping is dropped after a few seconds: the
    // check comes well before).
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = health(port)["buffers"]["read_bytes"].as_u64().unwrap();
        assert!(now > 0, "the connection closed");
        if now <= 8 << 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the read buffer stayed at {now} bytes (it was {idle} before the burst)"
        );
    }
}

/// A node embedded with `TraceMode::Full` (it keeps every event, for
/// `Node::query`) streams to `/events` too: subscribers get copies of the
/// events recorded after they subscribed, and the node's own record stays
/// whole.
#[test]
fn a_node_that_keeps_its_whole_trace_streams_it_too() {
    use avm::node::{Node, NodeConfig};
    use avm::vm::{create_obj, BehaviorRegistry, PureRegistry, TraceMode, Val};
    let mut behaviors = BehaviorRegistry::new();
    behaviors.register("thing", |_| avm::vm::done(Val::Nothing));
    let mut config = NodeConfig::new("keeper");
    config.bind = std::net::IpAddr::from([127, 0, 0, 1]);
    config.http = Some("127.0.0.1:0".parse().unwrap());
    config.trace = TraceMode::Full;
    crate::util::keyed(&mut config);
    let node = Node::start(config, behaviors, PureRegistry::new()).expect("start keeper");
    let run = |p| node.submit(p).recv_timeout(LIMIT).expect("an answer");
    run(create_obj("thing")).expect("created before subscribing");
    let port = node.http_addr().expect("http").port();
    let mut lines = subscribe(port, "kind=create", Duration::from_secs(10));
    // The subscription reaches the interpreter between batches: create
    // until one is streamed, then count three more.
    let deadline = Instant::now() + LIMIT;
    let mut streamed = 0;
    while streamed < 4 {
        assert!(Instant::now() < deadline, "{streamed} events streamed");
        run(create_obj("thing")).expect("created");
        let mut line = String::new();
        lines
            .read_line(&mut line)
            .expect("an event within the limit");
        if line.starts_with("data: ") {
            streamed += 1;
        }
    }
    // The record keeps what the subscriber's filter leaves out too.
    let thing = match run(create_obj("thing")) {
        Ok(Val::ObjectRef(id)) => id,
        other => panic!("{other:?}"),
    };
    run(avm::vm::call(thing, Val::Nothing)).expect("called");
    let calls = node
        .query(|vm| {
            let called = avm::vm::EventKind::ObjectCalled;
            vm.trace()
                .events()
                .iter()
                .filter(|e| e.event.kind() == called)
                .count()
        })
        .recv_timeout(LIMIT)
        .unwrap();
    assert_eq!(calls, 1, "the node's own record lost its calls");
}

/// A client that pipelines requests and never reads the answers neither
/// grows the node's memory nor keeps its reactor busy: the node answers
/// one request at a time and reads the next only once the answer is
/// written, so the client's own writes stall once the sockets' buffers
/// are full. Other clients are served meanwhile.
#[test]
fn pipelined_requests_that_are_never_read_stall_the_client_not_the_node() {
    let (beta, port) = beta_with_http();
    let before = beta.rss_kib();
    let mut greedy = TcpStream::connect(("127.0.0.1", port)).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let batch = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(1000);
    let mut written = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match greedy.write(&batch) {
            Ok(n) => written += n,
            Err(_) => break, // stalled: the node stopped reading
        }
    }
    // What the sockets' buffers hold, and not much more.
    let requests = written / 36;
    assert!(requests < 1_000_000, "{requests} requests written");
    let grown = beta.rss_kib().saturating_sub(before);
    assert!(grown < 32 * 1024, "beta grew by {grown} KiB");
    // Served meanwhile.
    assert!(health(port)["calls"].is_object());
    drop(greedy);
}

/// A client that pipelines requests and reads every answer as fast as it
/// comes keeps its connection's input queued for ever: the node answers
/// it a budget at a time, and serves everyone else between. (Answered to
/// the end of its input at once, it held the reactor: a second client
/// got nothing, and peers' keepalives and calls waited with it.)
#[test]
fn a_client_that_pipelines_and_reads_does_not_hold_the_node() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (_beta, port) = beta_with_http();
    let greedy = TcpStream::connect(("127.0.0.1", port)).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    greedy
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (mut s, stop) = (greedy.try_clone().unwrap(), Arc::clone(&stop));
        let batch = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(2000);
        std::thread::spawn(move || {
            // ORDERING: Relaxed: a flag; the joins order the rest.
            while !stop.load(Ordering::Relaxed) {
                let _ = s.write(&batch);
            }
        })
    };
    let reader = {
        let (mut s, stop, answers) = (
            greedy.try_clone().unwrap(),
            Arc::clone(&stop),
            Arc::clone(&answers),
        );
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 << 10];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = s.read(&mut buf) {
                    let heads = buf[..n].windows(4).filter(|w| w == b"HTTP").count();
                    answers.fetch_add(heads, Ordering::Relaxed);
                }
            }
        })
    };
    // The greedy client is being answered...
    let deadline = Instant::now() + LIMIT;
    while answers.load(Ordering::Relaxed) < 1000 {
        assert!(
            Instant::now() < deadline,
            "the greedy client got no answers"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // ...and so is another, promptly, each time.
    for _ in 0..5 {
        let mut other = TcpStream::connect(("127.0.0.1", port)).unwrap();
        other
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        other
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        let read = other.read_to_string(&mut text);
        assert!(
            read.is_ok() && text.starts_with("HTTP/1.1 200"),
            "a second client got no answer while the first pipelined: {read:?} {text:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _ = greedy.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
    reader.join().unwrap();
}

/// The HTTP listener out of file descriptors: the connections that wait
/// in its backlog meanwhile are served once descriptors are free again,
/// without another connection arriving to wake it (readiness is edge
/// triggered: it tries the listener again on its own, as the peer
/// listener does).
#[test]
fn http_connections_that_waited_out_a_descriptor_shortage_are_served() {
    let (beta, port) = beta_with_http();
    let room = 4;
    crate::util::leave_descriptors(beta.pid(), room);
    let mark = beta.log_mark();
    let ask = |s: &mut TcpStream| {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
    };
    let answered = |s: &mut TcpStream, within: Duration| {
        s.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 64];
        s.read(&mut buf).is_ok_and(|n| n > 0)
    };
    let mut first: Vec<TcpStream> = (0..room)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    for s in &mut first {
        ask(s);
    }
    let mut waiting: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    for s in &mut waiting {
        ask(s);
    }
    beta.wait_for_log_after(mark, "http: accept failed", LIMIT);
    for s in &mut first {
        assert!(
            answered(s, Duration::from_secs(5)),
            "served before the limit"
        );
    }
    assert!(
        !answered(&mut waiting[0], Duration::from_millis(300)),
        "served past the limit: it did not bite"
    );
    // Descriptors free again: beta closes the first ones (we leave).
    drop(first);
    for s in &mut waiting {
        assert!(
            answered(s, Duration::from_secs(5)),
            "a waiting connection was never served:\n{}",
            beta.stderr()
        );
    }
    let warned = beta.stderr().matches("http: accept failed").count();
    assert_eq!(warned, 1, "said once per spell:\n{}", beta.stderr());
}

/// A client that sends a request the node refuses and half-closes (as
/// `nc -N` does) is closed cleanly, and its slot does not take the next
/// connection down with it: a keep-alive client that gets the slot next
/// is served again after the sweep has run.
#[test]
fn a_refused_request_that_half_closes_leaves_the_next_client_alone() {
    let (_beta, port) = beta_with_http();
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.write_all(b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }
    let mut keep = TcpStream::connect(("127.0.0.1", port)).unwrap();
    keep.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ask = |s: &mut TcpStream| {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte)?;
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        s.read_exact(&mut body)?;
        Ok::<String, std::io::Error>(head)
    };
    assert!(ask(&mut keep).unwrap().starts_with("HTTP/1.1 200"));
    // The sweep runs every 500 ms: a stale close would come now.
    std::thread::sleep(Duration::from_millis(1200));
    let again = ask(&mut keep);
    assert!(
        again.as_ref().is_ok_and(|h| h.starts_with("HTTP/1.1 200")),
        "the keep-alive client was cut: {again:?}"
    );
}
