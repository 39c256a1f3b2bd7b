//! A client written from the protocol page alone, with hand-built JSON:
//! no avm code on this side of the socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::NodeProc;

const PREFIX: u64 = 77;
const OUR_OBJECT: u64 = (PREFIX << 48) | 1;

pub fn send(s: &mut TcpStream, msg: &Value) {
    let body = serde_json::to_vec(msg).unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.write_all(&frame).unwrap();
}

pub fn recv(s: &mut TcpStream) -> Value {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
    s.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Connects to a `--demo` beta, exchanges hellos, and returns the stream
/// and pong's id from beta's directory snapshot.
fn connect_to_beta() -> (NodeProc, TcpStream, u64) {
    let beta = NodeProc::start("beta", 0, &["--demo"]);
    beta.wait_for_log("created pong", Duration::from_secs(30));
    let (s, pong) = hello_beta(beta.port(), "client", PREFIX);
    (beta, s, pong)
}

/// Says hello to the `--demo` beta on `port` as `machine`; returns the
/// stream and pong's id from beta's snapshot.
pub fn hello_beta(port: u16, machine: &str, prefix: u64) -> (TcpStream, u64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    send(
        &mut s,
        &json!({"type":"hello","version":1,"machine_id":machine,"node_prefix":prefix}),
    );
    let hello = recv(&mut s);
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["machine_id"], "beta");
    assert_eq!(hello["version"], 1);
    let notify = recv(&mut s);
    assert_eq!(notify["type"], "create_notify", "{notify}");
    assert_eq!(notify["behavior"], "pong");
    assert_eq!(notify["machine_id"], "beta");
    let pong = notify["object_id"].as_u64().unwrap();
    assert_eq!(pong >> 48, port as u64, "default node_prefix is the port");
    (s, pong)
}

#[test]
fn call_to_unknown_object_gets_an_err_naming_it() {
    let (_beta, mut s, _pong) = connect_to_beta();
    send(
        &mut s,
        &json!({"type":"call","request_id":8,"target":12345,"input":"Nothing",
                "sender":OUR_OBJECT,"sender_machine":"client"}),
    );
    let resp = recv(&mut s);
    assert_eq!(resp["type"], "call_response");
    assert_eq!(resp["request_id"], 8);
    let err = resp["result"]["Err"].as_str().expect("an Err");
    assert!(err.contains("12345"), "{err}");
}

#[test]
fn ping_is_answered_with_pong() {
    let (_beta, mut s, _pong) = connect_to_beta();
    send(&mut s, &json!({"type":"ping","nonce":99}));
    let resp = recv(&mut s);
    assert_eq!(resp, json!({"type":"pong","nonce":99}));
}

/// The client plays alpha: it calls pong, answers pong's call back as
/// `ping` would, and gets `["done", 3]`.
#[test]
fn protocol_client_plays_alpha_against_demo_beta() {
    let (_beta, mut s, pong) = connect_to_beta();
    let msg =
        |tag: &str, n: u64| json!({"List":[{"Str":tag},{"Nat":n},{"Nat":3},{"ObjectRef":pong}]});
    // ping at count 0 calls pong with count 1.
    send(
        &mut s,
        &json!({"type":"call","request_id":1,"target":pong,"input":msg("Pong",1),
                "sender":OUR_OBJECT,"sender_machine":"client","chain":(PREFIX << 48) | 1}),
    );
    // pong calls its sender (us) back with count 2.
    let back = recv(&mut s);
    assert_eq!(back["type"], "call", "{back}");
    assert_eq!(back["target"], OUR_OBJECT);
    assert_eq!(back["sender"], pong);
    assert_eq!(back["sender_machine"], "beta");
    assert_eq!(back["chain"], (PREFIX << 48) | 1, "the chain id is carried");
    assert_eq!(back["input"], msg("Ping", 2));
    // As ping: count 2 < 3, so call pong with count 3, in the same chain
    // (pong's turn belongs to it: a call of another chain would wait)...
    send(
        &mut s,
        &json!({"type":"call","request_id":2,"target":pong,"input":msg("Pong",3),
                "sender":OUR_OBJECT,"sender_machine":"client","chain":(PREFIX << 48) | 1}),
    );
    let done = json!({"List":[{"Str":"done"},{"Nat":3}]});
    let inner = recv(&mut s);
    assert_eq!(
        inner,
        json!({"type":"call_response","request_id":2,"result":{"Ok":done}})
    );
    // ...and answer pong's call with that reply, flat.
    send(
        &mut s,
        &json!({"type":"call_response","request_id":back["request_id"],"result":{"Ok":done}}),
    );
    let outer = recv(&mut s);
    assert_eq!(
        outer,
        json!({"type":"call_response","request_id":1,"result":{"Ok":done}})
    );
}

/// Says hello to a `--demo` beta on two connections as `aaa` (which sorts
/// before `beta`): the one we dial survives the tie rule, the one beta
/// dials to us (through `--peer`) is retired. Returns beta, pong's id, the
/// kept connection and the retired one.
fn two_connections_to_beta(extra: &[&str]) -> (NodeProc, u64, TcpStream, TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let our_port = listener.local_addr().unwrap().port();
    let peer = format!("127.0.0.1:{our_port}");
    let args: Vec<&str> = ["--demo", "--peer", &peer]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let beta = NodeProc::start("beta", 0, &args);
    beta.wait_for_log("created pong", Duration::from_secs(30));
    let mark = beta.log_mark();
    let (kept, pong) = hello_beta(beta.port(), "aaa", PREFIX);
    let (mut spare, _) = listener.accept().unwrap();
    spare
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(recv(&mut spare)["type"], "hello");
    send(
        &mut spare,
        &json!({"type":"hello","version":1,"machine_id":"aaa","node_prefix":PREFIX}),
    );
    beta.wait_for_log_after(
        mark,
        "keeping the one dialled by aaa",
        Duration::from_secs(10),
    );
    (beta, pong, kept, spare)
}

/// Calls pong on `s` with a game that ends at once; asserts `["done", 1]`.
fn one_shot_on(s: &mut TcpStream, pong: u64, request_id: u64) {
    let input = json!({"List":[{"Str":"Ping"},{"Nat":1},{"Nat":1},{"ObjectRef":pong}]});
    send(
        s,
        &json!({"type":"call","request_id":request_id,"target":pong,"input":input,
                "sender":0,"sender_machine":"aaa"}),
    );
    let answer = loop {
        let msg = recv(s);
        if msg["type"] == "call_response" {
            break msg;
        }
    };
    let done = json!({"List":[{"Str":"done"},{"Nat":1}]});
    assert_eq!(answer["request_id"], request_id, "{answer}");
    assert_eq!(answer["result"], json!({ "Ok": done }), "{answer}");
}

/// The tie rule's loser is not cut while a slow peer may still use it. A
/// peer that saw our hello on the losing connection before the other
/// connection's hellos may send a call on it up to a round trip after the
/// node retired it; that call is answered.
#[test]
fn call_on_the_retired_connection_from_a_slow_peer_is_answered() {
    let (_beta, pong, _kept, mut spare) = two_connections_to_beta(&[]);
    // The sleep is the thing under test: the call comes half a second
    // after the retirement, as from across a slow link.
    std::thread::sleep(Duration::from_millis(500));
    one_shot_on(&mut spare, pong, 1);
}

/// When the survivor closes first, the retired connection takes over and
/// stays: its old retirement timer must not close it once idle.
#[test]
fn retired_connection_promoted_after_the_survivor_closes_stays() {
    let (beta, pong, kept, mut spare) = two_connections_to_beta(&["--keepalive-ms", "10000"]);
    let mark = beta.log_mark();
    drop(kept);
    beta.wait_for_log_after(mark, "peer closed the connection", Duration::from_secs(10));
    // The sleep is the thing under test: the promoted connection must
    // outlive the retirement grace and the check after it, which close a
    // connection still retired.
    std::thread::sleep(Duration::from_millis(2600));
    one_shot_on(&mut spare, pong, 1);
    // Over the whole log: aaa was never lost.
    let log = beta.stderr();
    assert!(!log.contains("peer aaa left"), "{log}");
}
