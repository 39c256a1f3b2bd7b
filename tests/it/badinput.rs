//! Every kind of bad input, sent by a raw client to a `--demo` beta: each
//! gets a log line naming the peer and the reason and closes only its own
//! connection (or is answered or ignored, where the protocol says so);
//! afterwards beta still serves a normal demo. Bad frames come after a
//! whole handshake, bad hellos in it; what fails the handshake itself is
//! in tests/it/auth.rs.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::time::Duration;

use avm::node::{Node, NodeConfig};
use avm::vm::{create_obj, BehaviorRegistry, Program, PureRegistry, Val};
use serde_json::{json, Value};

use crate::util::{assert_demo_done, keyed, test_key, with_picked_ports, NodeProc};
use crate::wire::{auth, handshake, proof, recv, send, Side};

/// A connection to the node on `port`, reads timing out after 10 s.
fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn json_frame(v: &Value) -> Vec<u8> {
    frame(&serde_json::to_vec(v).unwrap())
}

/// A version 1 `hello` (no nonce), as nodes before version 2 sent.
fn hello_v1(machine: &str, prefix: u64) -> Vec<u8> {
    json_frame(&json!({"type":"hello","version":1,"machine_id":machine,"node_prefix":prefix}))
}

/// A version 2 `hello` with a fresh nonce, for bytes that follow a
/// handshake (a second `hello`).
fn hello(machine: &str, prefix: u64) -> Vec<u8> {
    json_frame(&Side::fresh(machine, prefix).hello())
}

/// The next frame, or `None` once the node has closed the connection.
fn try_recv(s: &mut TcpStream) -> Option<Value> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
    s.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// Sends `hello` (the thing under test) as `us`; if the node answers with
/// its own `hello` rather than closing, sends our proof under the test key
/// too, so that the case is the same whether the node judges a `hello`
/// when it comes or once the peer has proven itself.
fn hello_and_proof(s: &mut TcpStream, us: &Side, hello: &Value) {
    send(s, hello);
    let Some(theirs) = try_recv(s) else { return };
    if theirs["type"] != "hello" || !theirs["nonce"].is_string() {
        return;
    }
    let node = Side::of_hello(&theirs);
    let ours = proof(&test_key(), true, us.parts(), node.parts());
    // The node may close meanwhile: then this write fails, as it may.
    let _ = s.write_all(&json_frame(&auth(&ours)));
}

/// Reads frames until the node closes the connection; panics if it stays
/// open for 10 s.
fn expect_closed(s: &mut TcpStream, case: &str) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{case}: connection not closed: {e}"),
        }
    }
}

/// Proves the connection is still open and in step: ping, await the pong.
fn expect_open(s: &mut TcpStream, case: &str) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    send(s, &json!({"type":"ping","nonce":4242}));
    loop {
        let msg = recv(s);
        if msg["type"] == "pong" && msg["nonce"] == 4242 {
            return;
        }
        assert!(msg["type"] != "call_response", "{case}: unexpected {msg}");
    }
}

/// How a case's connection begins, before its bytes are written.
enum Opening {
    /// With the bytes themselves.
    Raw,
    /// With the whole handshake, as this machine with this prefix.
    Handshake(&'static str, u64),
    /// With a version 2 `hello` of this machine, prefix and version (the
    /// thing under test), and our proof if the node answers it.
    Hello(&'static str, u64, u32),
}

enum Expect {
    /// Closed, with this in the log.
    Closed(&'static str),
    /// Closed, with the first in the log line and not the second.
    ClosedWithout(&'static str, &'static str),
    /// Still open, with this in the log.
    Open(&'static str),
}

#[test]
fn each_bad_input_is_logged_and_closes_only_its_connection() {
    // Over the 4 KiB a stranger may send before its `hello`, so that the
    // two limits are told apart.
    let max_frame = 8192u32;
    let beta = NodeProc::start(
        "beta",
        0,
        &["--demo", "--max-frame", &max_frame.to_string()],
    );
    beta.wait_for_log("created pong", Duration::from_secs(30));
    let port = beta.port();

    let mut deep = json!({"Nat": 1});
    for _ in 0..200 {
        deep = json!({ "Just": deep });
    }
    let own_prefix = u64::from(port);
    let mut truncated = (100u32).to_be_bytes().to_vec();
    truncated.extend_from_slice(b"{\"type\":\"p");

    use Opening::{Handshake, Hello, Raw};
    // One case a line: the table reads down.
    #[rustfmt::skip]
    let cases: Vec<(&str, Opening, Vec<u8>, Expect)> = vec![
        ("no hello first", Raw, json_frame(&json!({"type":"ping","nonce":1})), Expect::Closed("first frame was `ping`")),
        ("unknown type before hello", Raw, json_frame(&json!({"type":"gossip"})), Expect::Closed("first frame was not `hello`: unknown message type `gossip`")),
        ("frame over 4 KiB before hello", Raw, 5000u32.to_be_bytes().to_vec(), Expect::Closed("bad frame before the handshake completed: frame length 5000 over the maximum 4096 (no hello came first: is it an avm node?)")),
        ("frame over 4 KiB after the hello, before the proof", Raw, [hello("c20", 320), 5000u32.to_be_bytes().to_vec()].concat(), Expect::ClosedWithout("bad frame before the handshake completed: frame length 5000 over the maximum 4096", "no hello came first")),
        ("unknown type after the hello, before the proof", Raw, [hello("c21", 321), json_frame(&json!({"type":"gossip"}))].concat(), Expect::Closed("unknown message type `gossip` before the proof")),
        ("second hello", Handshake("c2", 302), hello("c2", 302), Expect::Closed("a second `hello`")),
        ("length 0", Handshake("c3", 303), vec![0, 0, 0, 0], Expect::Closed("frame length 0")),
        ("length over the maximum", Handshake("c4", 304), (max_frame + 1).to_be_bytes().to_vec(), Expect::Closed("over the maximum")),
        ("invalid UTF-8", Handshake("c5", 305), frame(&[0xff, 0xfe, 0x7b]), Expect::Closed("not UTF-8")),
        ("invalid JSON", Handshake("c6", 306), frame(b"{\"type\":"), Expect::Closed("invalid JSON")),
        ("wrong field type", Handshake("c7", 307), json_frame(&json!({"type":"ping","nonce":"x"})), Expect::Closed("field `nonce` has the wrong type")),
        ("missing field", Handshake("c8", 308), json_frame(&json!({"type":"call","request_id":1})), Expect::Closed("missing field")),
        ("Val nested deeper than 128", Handshake("c9", 309), json_frame(&json!({"type":"call","request_id":1,"target":1,"input":deep,"sender":0,"sender_machine":"c9"})), Expect::Closed("nests too deep")),
        ("hello with version 3", Hello("c10", 310, 3), vec![], Expect::Closed("unsupported protocol version 3")),
        ("a v1 hello", Raw, hello_v1("c19", 319), Expect::Closed("protocol version 1")),
        ("hello with an empty machine_id", Hello("", 311, 2), vec![], Expect::Closed("empty machine_id")),
        ("hello with beta's own machine_id", Hello("beta", 312, 2), vec![], Expect::Closed("our own machine_id")),
        ("hello with beta's own node_prefix", Hello("c13", own_prefix, 2), vec![], Expect::Closed("has our node_prefix")),
        ("call_response for an unknown request_id", Handshake("c14", 314), json_frame(&json!({"type":"call_response","request_id":999,"result":{"Ok":"Nothing"}})), Expect::Open("unknown request_id")),
        ("unknown type", Handshake("c15", 315), json_frame(&json!({"type":"gossip","about":"x"})), Expect::Open("ignoring a message: unknown message type `gossip`")),
        ("create_notify placing an object elsewhere", Handshake("c17", 317), json_frame(&json!({"type":"create_notify","object_id":(317u64 << 48) | 1,"machine_id":"ghost"})), Expect::Open("not on the sender; ignored")),
        ("a frame up to --max-frame after the handshake", Handshake("c18", 318), json_frame(&json!({"type":"gossip","pad":"x".repeat(6000)})), Expect::Open("ignoring a message: unknown message type `gossip`")),
    ];
    // Each case looks for its line only among those written after it
    // connected, and a closing line must name its connection.
    let wait = Duration::from_secs(10);
    for (case, opening, bytes, expect) in cases {
        let mark = beta.log_mark();
        let mut s = connect(port);
        let me = s.local_addr().unwrap().to_string();
        match opening {
            Raw => {}
            Handshake(machine, prefix) => {
                handshake(&mut s, machine, prefix);
            }
            Hello(machine, prefix, version) => {
                let us = Side::fresh(machine, prefix);
                let mut hello = us.hello();
                hello["version"] = version.into();
                hello_and_proof(&mut s, &us, &hello);
            }
        }
        // After a refused `hello` the node may have closed already.
        let written = s.write_all(&bytes);
        match expect {
            Expect::Closed(log) => {
                expect_closed(&mut s, case);
                let line = beta.wait_for_log_after(mark, log, wait);
                assert!(line.contains(&me), "{case}: `{line}` does not name {me}");
            }
            Expect::ClosedWithout(log, not) => {
                expect_closed(&mut s, case);
                let line = beta.wait_for_log_after(mark, log, wait);
                assert!(line.contains(&me), "{case}: `{line}` does not name {me}");
                assert!(!line.contains(not), "{case}: `{line}` says `{not}`");
            }
            Expect::Open(log) => {
                written.unwrap_or_else(|e| panic!("{case}: {e}"));
                expect_open(&mut s, case);
                beta.wait_for_log_after(mark, log, wait);
            }
        }
    }

    // EOF in the middle of a frame.
    let mark = beta.log_mark();
    let mut s = connect(port);
    handshake(&mut s, "c16", 316);
    s.write_all(&truncated).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    expect_closed(&mut s, "EOF mid-frame");
    beta.wait_for_log_after(mark, "in the middle of a frame", wait);

    // Two connections claiming one machine_id, and one reusing a connected
    // peer's node_prefix: the newcomer is refused, the first stays.
    let mut first = connect(port);
    handshake(&mut first, "twin", 401);
    expect_open(&mut first, "first twin");
    let mark = beta.log_mark();
    let mut second = connect(port);
    let me = second.local_addr().unwrap().to_string();
    let us = Side::fresh("twin", 402);
    hello_and_proof(&mut second, &us, &us.hello());
    expect_closed(&mut second, "second twin");
    let line = beta.wait_for_log_after(mark, "collides with connected peer", wait);
    assert!(line.contains(&me), "`{line}` does not name {me}");
    let mark = beta.log_mark();
    let mut third = connect(port);
    let me = third.local_addr().unwrap().to_string();
    let us = Side::fresh("other", 401);
    hello_and_proof(&mut third, &us, &us.hello());
    expect_closed(&mut third, "prefix reuse");
    let line = beta.wait_for_log_after(mark, "already used by connected peer `twin`", wait);
    assert!(line.contains(&me), "`{line}` does not name {me}");
    expect_open(&mut first, "first twin after the refusals");

    // After all that, beta serves a normal demo.
    let mut alpha = NodeProc::start(
        "alpha",
        0,
        &[
            "--peer",
            &format!("127.0.0.1:{port}"),
            "--demo",
            "--rounds",
            "3",
        ],
    );
    assert_demo_done(&mut alpha, 3, Duration::from_secs(60));
}

fn boom(_input: Val) -> Program {
    panic!("boom went the behavior");
}

/// A behavior that panics answers its caller with an Err naming it; the
/// node keeps serving.
#[test]
fn panicking_behavior_answers_err_naming_it() {
    let mut behaviors = BehaviorRegistry::new();
    behaviors.register("boom", boom);
    let mut config = NodeConfig::new("beta");
    config.bind = IpAddr::from([127, 0, 0, 1]);
    keyed(&mut config);
    let beta = Node::start(config, behaviors, PureRegistry::new()).unwrap();
    let id = match beta.submit(create_obj("boom")).recv().unwrap() {
        Ok(Val::ObjectRef(id)) => id.0,
        other => panic!("{other:?}"),
    };
    let mut s = TcpStream::connect(beta.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    handshake(&mut s, "client", 77);
    for request_id in [1, 2] {
        send(
            &mut s,
            &json!({"type":"call","request_id":request_id,"target":id,"input":"Nothing",
                    "sender":0,"sender_machine":"client"}),
        );
        let resp = loop {
            let msg = recv(&mut s);
            if msg["type"] == "call_response" {
                break msg;
            }
        };
        assert_eq!(resp["request_id"], request_id);
        let err = resp["result"]["Err"].as_str().unwrap_or_default();
        assert!(err.contains("boom"), "{resp}");
    }
    beta.shutdown();
}

/// A `--peer` naming the node itself is dialled once, recognised, and
/// dropped, instead of being redialled forever.
#[test]
fn peer_that_is_the_node_itself_is_dropped_not_redialled() {
    let node = with_picked_ports(1, |ports| {
        let me = format!("127.0.0.1:{}", ports[0]);
        NodeProc::try_start_on("solo", ports[0], &["--peer", &me])
    });
    node.wait_for_log(
        "is this node itself; not dialling it again",
        Duration::from_secs(10),
    );
    // The sleep is the thing under test: over a second and a half (a
    // dozen first backoffs), the node must not dial itself again.
    std::thread::sleep(Duration::from_millis(1500));
    let dials = node.stderr().matches("connected to 127.0.0.1").count();
    assert_eq!(dials, 1, "redialled itself:\n{}", node.stderr());
}

/// Strangers that connect and say nothing hold at most 64 slots: the
/// 65th connection is served (it gets the node's `hello`), and the
/// oldest is closed for it, told why. The reason tells this close from
/// the 3 s handshake limit, whatever the machine's speed.
#[test]
fn the_oldest_of_64_silent_strangers_makes_room_for_the_next() {
    let mut config = NodeConfig::new("beta");
    config.bind = IpAddr::from([127, 0, 0, 1]);
    keyed(&mut config);
    let beta = Node::start(config, BehaviorRegistry::new(), PureRegistry::new()).unwrap();
    let mut held: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(beta.local_addr()).unwrap())
        .collect();
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let first = recv(s);
        assert_eq!(
            first["type"], "hello",
            "each of the first 64 is served: {first}"
        );
    }
    let mut newest = TcpStream::connect(beta.local_addr()).unwrap();
    newest
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(recv(&mut newest)["type"], "hello", "the 65th is served");
    let close = recv(&mut held[0]);
    assert_eq!(close["type"], "close", "{close}");
    let reason = close["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("the oldest of 64"), "{reason}");
    drop(held);
    beta.shutdown();
}
