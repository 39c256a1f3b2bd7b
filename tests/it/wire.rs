//! A client written from the protocol page alone, with hand-built JSON:
//! no avm code on this side of the socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::util::{hex, test_key, unhex, unique_bytes, NodeProc};

const PREFIX: u64 = 77;
const OUR_OBJECT: u64 = (PREFIX << 48) | 1;

pub fn send(s: &mut TcpStream, msg: &Value) {
    send_together(s, std::slice::from_ref(msg));
}

/// Sends `msgs` in one write, so the node reads them together: a test
/// that needs the second there while the first still runs does not depend
/// on the test thread being scheduled between two writes.
pub fn send_together(s: &mut TcpStream, msgs: &[Value]) {
    let mut frames = Vec::new();
    for msg in msgs {
        let body = serde_json::to_vec(msg).unwrap();
        frames.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frames.extend_from_slice(&body);
    }
    s.write_all(&frames).unwrap();
}

/// Takes the first whole frame off the front of `buf` (bytes read from a
/// node, in order), parsed; `None` until one is complete.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<Value> {
    let head: [u8; 4] = buf.get(..4)?.try_into().unwrap();
    let len = u32::from_be_bytes(head) as usize;
    let body = buf.get(4..4 + len)?;
    let msg = serde_json::from_slice(body).expect("a JSON frame");
    buf.drain(..4 + len);
    Some(msg)
}

/// The next frame that is not the node's keepalive `ping`, parsed (see
/// [`recv_answering_pings`]): the node pings every ready connection once
/// a second on its own schedule, so one can come before any frame a test
/// waits for, even the directory snapshot right after the hellos.
pub fn recv(s: &mut TcpStream) -> Value {
    serde_json::from_slice(&recv_answering_pings(s)).unwrap()
}

/// The next frame's payload, as bytes.
pub fn recv_payload(s: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
    s.read_exact(&mut body).unwrap();
    body
}

/// The next payload that is not the node's keepalive `ping` (which can
/// come between any two frames, once a second): each ping on the way is
/// answered with its `pong`.
pub fn recv_answering_pings(s: &mut TcpStream) -> Vec<u8> {
    loop {
        let payload = recv_payload(s);
        if payload.starts_with(br#"{"type":"ping""#) {
            let ping: Value = serde_json::from_slice(&payload).unwrap();
            send(s, &json!({"type":"pong","nonce":ping["nonce"]}));
            continue;
        }
        return payload;
    }
}

/// What the proof transcript starts with (protocol version 2).
const PROOF_LABEL: &[u8] = b"avm cluster proof v2";

/// One end of a connection as its `hello` describes it: what a proof
/// covers.
#[derive(Clone, Debug)]
pub struct Side {
    pub machine: String,
    pub prefix: u16,
    pub nonce: [u8; 32],
}

impl Side {
    /// As [`proof`] takes it.
    pub fn parts(&self) -> (&str, u16, &[u8; 32]) {
        (&self.machine, self.prefix, &self.nonce)
    }

    /// Our `hello` (version 2) for this side.
    pub fn hello(&self) -> Value {
        json!({"type":"hello","version":2,"machine_id":self.machine,
               "node_prefix":self.prefix,"nonce":hex(&self.nonce)})
    }

    /// The side a node's `hello` describes; panics, naming it, if it is not
    /// a well-formed version 2 `hello`.
    pub fn of_hello(hello: &Value) -> Side {
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["version"], 2, "{hello}");
        let machine = hello["machine_id"].as_str().expect("a machine_id");
        let prefix = hello["node_prefix"].as_u64().expect("a node_prefix");
        let nonce = hello["nonce"].as_str().expect("a nonce");
        assert!(
            nonce.len() == 64
                && nonce
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "the nonce is not 64 lowercase hex chars: {hello}"
        );
        Side {
            machine: machine.to_owned(),
            prefix: u16::try_from(prefix).expect("a u16 node_prefix"),
            nonce: unhex(nonce).unwrap().try_into().unwrap(),
        }
    }

    /// A side with a fresh nonce.
    pub fn fresh(machine: &str, prefix: u64) -> Side {
        Side {
            machine: machine.to_owned(),
            prefix: u16::try_from(prefix).expect("node_prefix fits in 16 bits"),
            nonce: unique_bytes(),
        }
    }
}

/// The proof (protocol version 2) of whichever end `prover_is_dialler`
/// says, on the connection `dialler` opened to `acceptor`: HMAC-SHA256
/// under `key` of the label, the prover's role byte (`D` or `A`), then
/// for the dialler and the acceptor in turn: u16 BE length of the
/// machine_id, the machine_id, u16 BE node_prefix, the 32 nonce bytes.
pub fn proof(
    key: &[u8],
    prover_is_dialler: bool,
    dialler: (&str, u16, &[u8; 32]),
    acceptor: (&str, u16, &[u8; 32]),
) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(PROOF_LABEL);
    mac.update(if prover_is_dialler { b"D" } else { b"A" });
    for (machine, prefix, nonce) in [dialler, acceptor] {
        let len = u16::try_from(machine.len()).expect("a machine_id under 64 KiB");
        mac.update(&len.to_be_bytes());
        mac.update(machine.as_bytes());
        mac.update(&prefix.to_be_bytes());
        mac.update(nonce);
    }
    mac.finalize().into_bytes().into()
}

/// The `auth` frame carrying `proof`.
pub fn auth(proof: &[u8; 32]) -> Value {
    json!({"type":"auth","proof":hex(proof)})
}

/// The proof an `auth` frame carries; panics, naming it, if it is not an
/// `auth` with 64 hex chars.
pub fn proof_of(msg: &Value) -> [u8; 32] {
    assert_eq!(msg["type"], "auth", "{msg}");
    msg["proof"]
        .as_str()
        .and_then(unhex)
        .and_then(|p| p.try_into().ok())
        .unwrap_or_else(|| panic!("not a 32-byte hex proof: {msg}"))
}

/// The hellos of one connection we dialled: ours sent, the node's read.
#[derive(Clone, Debug)]
pub struct Greeted {
    /// Us.
    pub dialler: Side,
    /// The node.
    pub acceptor: Side,
    /// The node's `hello` as it came.
    pub hello: Value,
}

impl Greeted {
    /// Our proof, as dialler, under `key`.
    pub fn our_proof(&self, key: &[u8]) -> [u8; 32] {
        proof(key, true, self.dialler.parts(), self.acceptor.parts())
    }

    /// The node's proof, as acceptor, under `key`.
    pub fn their_proof(&self, key: &[u8]) -> [u8; 32] {
        proof(key, false, self.dialler.parts(), self.acceptor.parts())
    }
}

/// The first half of a handshake on a connection we dialled: sends our
/// `hello` (version 2, a fresh nonce) as `machine` with `prefix`, reads
/// the node's. Nothing is proven yet.
pub fn greet(s: &mut TcpStream, machine: &str, prefix: u64) -> Greeted {
    let dialler = Side::fresh(machine, prefix);
    send(s, &dialler.hello());
    let hello = recv(s);
    Greeted {
        dialler,
        acceptor: Side::of_hello(&hello),
        hello,
    }
}

/// The whole handshake (protocol version 2) on a connection we dialled,
/// with the test key: hellos, then our proof, then the node's, which must
/// be right. Returns the node's `hello`; what follows is its directory
/// snapshot.
pub fn handshake(s: &mut TcpStream, machine: &str, prefix: u64) -> Value {
    let key = test_key();
    let greeted = greet(s, machine, prefix);
    send(s, &auth(&greeted.our_proof(&key)));
    let theirs = proof_of(&recv(s));
    assert!(
        theirs == greeted.their_proof(&key),
        "{}'s proof is not the acceptor's proof under the test key",
        greeted.acceptor.machine
    );
    greeted.hello
}

/// The handshake on a connection the node dialled to us: reads its
/// `hello`, sends ours as `machine` with `prefix`, sends our proof (as
/// acceptor), reads the node's (as dialler), which must be right. Returns
/// the node's `hello`.
pub fn handshake_as_acceptor(s: &mut TcpStream, machine: &str, prefix: u64) -> Value {
    let key = test_key();
    let hello = recv(s);
    let dialler = Side::of_hello(&hello);
    let acceptor = Side::fresh(machine, prefix);
    send(s, &acceptor.hello());
    send(
        s,
        &auth(&proof(&key, false, dialler.parts(), acceptor.parts())),
    );
    let theirs = proof_of(&recv(s));
    assert!(
        theirs == proof(&key, true, dialler.parts(), acceptor.parts()),
        "{}'s proof is not the dialler's proof under the test key",
        dialler.machine
    );
    hello
}

/// Connects to a `--demo` beta, does the handshake, and returns the stream
/// and pong's id from beta's directory snapshot.
fn connect_to_beta() -> (NodeProc, TcpStream, u64) {
    let beta = NodeProc::start("beta", 0, &["--demo"]);
    beta.wait_for_log("created pong", Duration::from_secs(30));
    let (s, pong) = hello_beta(beta.port(), "client", PREFIX);
    (beta, s, pong)
}

/// Does the handshake with the `--demo` beta on `port` as `machine`;
/// returns the stream and pong's id from beta's snapshot.
pub fn hello_beta(port: u16, machine: &str, prefix: u64) -> (TcpStream, u64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let hello = handshake(&mut s, machine, prefix);
    assert_eq!(hello["machine_id"], "beta");
    let notify = recv(&mut s);
    assert_eq!(notify["type"], "create_notify", "{notify}");
    assert_eq!(notify["behavior"], "pong");
    assert_eq!(notify["machine_id"], "beta");
    let pong = notify["object_id"].as_u64().unwrap();
    assert_eq!(pong >> 48, port as u64, "default node_prefix is the port");
    // Then the names its objects hold: the demo names pong `pong`.
    let named = recv(&mut s);
    assert_eq!(
        named,
        json!({"type":"name_notify","name":"pong","object_id":pong,"machine_id":"beta"})
    );
    // The snapshot says it is complete: one object.
    let end = recv(&mut s);
    assert_eq!(end, json!({"type":"snapshot_end","objects":1}));
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

/// Compact frames as the protocol page lays them out, built by hand.
mod compact {
    pub fn nat(n: u64) -> Vec<u8> {
        [&[0x01][..], &n.to_le_bytes()].concat()
    }

    pub fn object(id: u64) -> Vec<u8> {
        [&[0x02][..], &id.to_le_bytes()].concat()
    }

    pub fn str(s: &str) -> Vec<u8> {
        let len = s.len() as u32;
        [&[0x06][..], &len.to_le_bytes(), s.as_bytes()].concat()
    }

    pub fn list(items: &[Vec<u8>]) -> Vec<u8> {
        let count = items.len() as u32;
        [vec![0x09], count.to_le_bytes().to_vec(), items.concat()].concat()
    }

    /// A whole `call` frame, header included, with a chain.
    pub fn call(request_id: u64, target: u64, sender: u64, chain: u64, input: &[u8]) -> Vec<u8> {
        let machine = b"client";
        let payload = [
            &[0x01, 0x01][..],
            &request_id.to_le_bytes(),
            &target.to_le_bytes(),
            &sender.to_le_bytes(),
            &chain.to_le_bytes(),
            &[machine.len() as u8],
            machine,
            input,
        ]
        .concat();
        [&(payload.len() as u32).to_be_bytes()[..], &payload].concat()
    }

    /// A whole `call_response` frame (an `Ok` result), header included.
    pub fn answer(request_id: u64, result: &[u8]) -> Vec<u8> {
        let payload = [&[0x02][..], &request_id.to_le_bytes(), result].concat();
        [&(payload.len() as u32).to_be_bytes()[..], &payload].concat()
    }
}

/// A `--demo` beta, and a connection to it that offered compact frames up
/// to `compact` in its `hello` and passed the handshake (beta offers 2,
/// and its proof checks out); nothing of the snapshot is read yet.
fn greeted_by_demo_beta_offering(compact: u32) -> (NodeProc, TcpStream) {
    let beta = NodeProc::start("beta", 0, &["--demo"]);
    beta.wait_for_log("created pong", Duration::from_secs(30));
    let mut s = TcpStream::connect(("127.0.0.1", beta.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let key = test_key();
    let dialler = Side::fresh("client", PREFIX);
    let mut hello = dialler.hello();
    hello["compact"] = json!(compact);
    send(&mut s, &hello);
    let theirs = recv(&mut s);
    assert_eq!(theirs["compact"], 2, "beta offers compact frames: {theirs}");
    let acceptor = Side::of_hello(&theirs);
    send(
        &mut s,
        &auth(&proof(&key, true, dialler.parts(), acceptor.parts())),
    );
    assert_eq!(
        proof_of(&recv(&mut s)),
        proof(&key, false, dialler.parts(), acceptor.parts())
    );
    (beta, s)
}

/// The same game as `protocol_client_plays_alpha_against_demo_beta`, by a
/// client that offers compact frames in its `hello` and builds and reads
/// them by hand from the protocol page: beta, which offers them too,
/// calls it back and answers it compact.
#[test]
fn compact_client_plays_alpha_against_demo_beta() {
    let (_beta, mut s) = greeted_by_demo_beta_offering(1);
    // We offered version 1: the snapshot stays JSON (pong, its name, the
    // end), no `objects`.
    let pong = recv(&mut s)["object_id"]
        .as_u64()
        .expect("pong's create_notify");
    assert_eq!(recv(&mut s)["type"], "name_notify");
    assert_eq!(recv(&mut s)["type"], "snapshot_end");

    let chain = (PREFIX << 48) | 1;
    let msg = |tag: &str, n: u64| {
        compact::list(&[
            compact::str(tag),
            compact::nat(n),
            compact::nat(3),
            compact::object(pong),
        ])
    };
    s.write_all(&compact::call(1, pong, OUR_OBJECT, chain, &msg("Pong", 1)))
        .unwrap();
    // pong calls us back, compact: 01, flags (chain), request_id, target,
    // sender, chain, "beta", then the value.
    let back = recv_answering_pings(&mut s);
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert_eq!(&back[..2], &[0x01, 0x01], "a compact call with a chain");
    let back_id = u64_at(&back, 2);
    assert_eq!(u64_at(&back, 10), OUR_OBJECT);
    assert_eq!(u64_at(&back, 18), pong);
    assert_eq!(u64_at(&back, 26), chain, "the chain id is carried");
    assert_eq!(&back[34..39], b"\x04beta");
    assert_eq!(&back[39..], msg("Ping", 2).as_slice());
    // As ping: call pong with count 3 in the same chain, then answer
    // pong's call with that reply.
    s.write_all(&compact::call(2, pong, OUR_OBJECT, chain, &msg("Pong", 3)))
        .unwrap();
    let done = compact::list(&[compact::str("done"), compact::nat(3)]);
    let inner = recv_answering_pings(&mut s);
    assert_eq!(inner, compact::answer(2, &done)[4..]);
    s.write_all(&compact::answer(back_id, &done)).unwrap();
    let outer = recv_answering_pings(&mut s);
    assert_eq!(outer, compact::answer(1, &done)[4..]);
}

/// A client that offers compact version 2 gets beta's snapshot objects
/// as one `objects` frame, laid out as the protocol page says (pong, with
/// behavior `pong`, epoch 0), then pong's name and the end marker; and a
/// call to the id it read there is answered.
#[test]
fn a_compact_2_client_gets_the_snapshot_as_objects() {
    let (_beta, mut s) = greeted_by_demo_beta_offering(2);
    let objects = recv_answering_pings(&mut s);
    // 03, one name of 4 bytes, "pong", count 1, then the entry.
    assert_eq!(
        &objects[..11],
        b"\x03\x01\x04pong\x01\x00\x00\x00",
        "{objects:?}"
    );
    assert_eq!(objects.len(), 11 + 11, "{objects:?}");
    let pong = u64::from_le_bytes(objects[11..19].try_into().unwrap());
    assert_eq!(&objects[19..], [0, 0, 0], "behavior 0, epoch 0");
    let named: Value = serde_json::from_slice(&recv_answering_pings(&mut s)).unwrap();
    assert_eq!(named["type"], "name_notify");
    assert_eq!(named["object_id"], pong);
    let end: Value = serde_json::from_slice(&recv_answering_pings(&mut s)).unwrap();
    assert_eq!(end, json!({"type":"snapshot_end","objects":1}));
    send(
        &mut s,
        &json!({"type":"call","request_id":1,"target":pong,"input":"Nothing",
                "sender":0,"sender_machine":"client","chain":(PREFIX << 48) | 1}),
    );
    let answer = recv_answering_pings(&mut s);
    assert_eq!(answer[0], 0x02, "answered (compact): {answer:?}");
}

/// Does the handshake with a `--demo` beta on two connections as `aaa` (which sorts
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
    let hello = handshake_as_acceptor(&mut spare, "aaa", PREFIX);
    assert_eq!(hello["machine_id"], "beta");
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

/// [`proof`] against a vector computed apart from it (Python's `hmac`
/// over the transcript as the protocol page lays it out), so that a
/// handshake failing in these tests is not this client's fault.
#[test]
fn proof_matches_an_independent_computation() {
    let key = "0123456789abcdef".repeat(4).into_bytes();
    let dn: [u8; 32] = std::array::from_fn(|i| i as u8);
    let an: [u8; 32] = std::array::from_fn(|i| 32 + i as u8);
    let dialler = ("alpha", 9001, &dn);
    let acceptor = ("beta", 9002, &an);
    assert_eq!(
        hex(&proof(&key, true, dialler, acceptor)),
        "6806d26efe3ff783d713674dd976b0d56d996f3d43ed0ef639052c24462b1e25"
    );
    assert_eq!(
        hex(&proof(&key, false, dialler, acceptor)),
        "2a3c930dbe943644f62b5d4e6f2dc919ca23ccab49f574b209e428d387210217"
    );
    assert_eq!(unhex(&hex(&dn)).as_deref(), Some(&dn[..]));
    assert_eq!(unhex("0g"), None);
    assert_eq!(unhex("+1"), None);
    assert_ne!(unique_bytes(), unique_bytes());
}
