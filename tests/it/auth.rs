//! The cluster-key handshake (protocol version 2): a peer that does not
//! prove it holds the key gets nothing (no call answered, no notice taken,
//! no directory snapshot) and is closed with a log line saying why, while
//! the node goes on serving peers that do. Nodes with different keys never
//! connect; a node given no key file keeps one under `$HOME/.avm`.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{
    assert_demo_done, assert_start_refused, hex, interrupt_demo, temp_dir, test_key, test_key_file,
    unique_bytes, with_picked_ports, write_key_file, NodeProc, ENDLESS_ROUNDS, KEY_FLAG,
};
use crate::wire::{auth, greet, handshake, proof_of, recv, send, Greeted};

const WAIT: Duration = Duration::from_secs(10);
const STARTUP: Duration = Duration::from_secs(30);

/// How long a node waits for a peer's proof (protocol version 2).
const PROOF_WAIT: Duration = Duration::from_secs(3);

/// A connection to the node on `port`, reads timing out after [`WAIT`].
fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Every frame the node sends until it closes the connection; panics,
/// naming `case` and what came, if it stays open for [`WAIT`].
fn frames_until_closed(s: &mut TcpStream, case: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{case}: connection not closed: {e}; after {frames:?}"),
        }
        while buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            let Some(body) = buf.get(4..4 + len) else {
                break;
            };
            frames.push(serde_json::from_slice(body).expect("a JSON frame"));
            buf.drain(..4 + len);
        }
    }
    frames
}

/// Asserts the node closed `s` having sent nothing a peer gets only once
/// proven: no directory snapshot, no answer, no call. (Its hello, its
/// proof, a keepalive `ping` while it waits for ours, and the `close`
/// saying why carry nothing: the `close` names no peer of the node's,
/// here `holder`.) Answers the `close`'s reason, if one came.
fn closed_unproven(s: &mut TcpStream, case: &str) -> Option<String> {
    let frames = frames_until_closed(s, case);
    for frame in &frames {
        let kind = frame["type"].as_str().unwrap_or_default();
        assert!(
            ["hello", "auth", "ping", "close"].contains(&kind),
            "{case}: the node sent `{kind}` to an unproven peer: {frames:?}"
        );
    }
    let reason = frames
        .iter()
        .find(|f| f["type"] == "close")
        .map(|f| f["reason"].as_str().expect("a reason").to_owned());
    if let Some(r) = &reason {
        assert!(!r.contains("holder"), "{case}: the close names a peer: {r}");
    }
    reason
}

/// `call` of pong with a one-round game, from `machine`.
fn call_pong(pong: u64, machine: &str) -> Value {
    json!({"type":"call","request_id":1,"target":pong,
           "input":{"List":[{"Str":"Ping"},{"Nat":1},{"Nat":1},{"ObjectRef":pong}]},
           "sender":0,"sender_machine":machine})
}

/// Runs the demo of `rounds` rounds from a fresh alpha against the node at
/// `beta_addr`; asserts it ends with `["done", rounds]`.
fn demo_against(beta_addr: &str) {
    let mut alpha = NodeProc::start(
        "alpha",
        0,
        &["--peer", beta_addr, "--demo", "--rounds", "3"],
    );
    assert_demo_done(&mut alpha, 3, Duration::from_secs(60));
}

/// The key every node of these tests shares: 64 lowercase hex chars in a
/// file only its owner may read.
#[test]
fn the_test_key_file_is_private_and_holds_the_key() {
    let path = test_key_file();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim_end_matches('\n').as_bytes(), test_key());
    assert_eq!(test_key().len(), 64);
    assert!(test_key().iter().all(|b| b"0123456789abcdef".contains(b)));
    assert_eq!(test_key_file(), path, "one key for the whole test process");
}

/// Each way of failing the handshake closes that connection, with a log
/// line naming it and the reason, before the node has acted on anything
/// the peer sent; then the same beta serves a normal demo.
#[test]
fn each_failed_handshake_is_refused_and_the_node_serves_on() {
    // At debug: a stranger's second error of one kind (the replayed
    // proof's `bad proof`) is logged there, the first at WARN.
    let beta = NodeProc::start_logging("beta", 0, &["--demo"], "debug");
    let pong: u64 = beta.log_value("created pong", STARTUP).parse().unwrap();
    let port = beta.port();
    // Runs one case: `act` does it on a fresh connection; then the node
    // must close it unproven, with `log` on a line naming it.
    let case = |name: &str, log: &str, act: &dyn Fn(&mut TcpStream)| {
        let mark = beta.log_mark();
        let mut s = connect(port);
        let me = s.local_addr().unwrap().to_string();
        act(&mut s);
        let told = closed_unproven(&mut s, name);
        let line = beta.wait_for_log_after(mark, log, WAIT);
        assert!(line.contains(&me), "{name}: `{line}` does not name {me}");
        told
    };

    let told = case("no handshake", "first frame was `call`", &|s| {
        send(s, &call_pong(pong, "nobody"));
    });
    assert_eq!(
        told.as_deref(),
        Some("first frame was `call`, not `hello`"),
        "the peer is told why"
    );

    // A hello with a connected peer's prefix is refused before any proof:
    // the stranger is told why, but not which peer holds the prefix.
    let mut holder = connect(port);
    handshake(&mut holder, "holder", 504);
    let told = case(
        "a prefix a connected peer holds",
        "already used by connected peer `holder`",
        &|s| {
            greet(s, "taker", 504);
        },
    );
    let told = told.expect("a close");
    assert!(
        told.contains("already used by another connected peer"),
        "{told}"
    );

    case("a v1 hello", "protocol version 1", &|s| {
        send(
            s,
            &json!({"type":"hello","version":1,"machine_id":"old","node_prefix":500}),
        );
    });

    let told = case("a proof under another key", "bad proof", &|s| {
        let other_key = hex(&unique_bytes()).into_bytes();
        let greeted = greet(s, "stranger", 501);
        send(s, &auth(&greeted.our_proof(&other_key)));
    });
    assert!(told.is_some_and(|t| t.starts_with("bad proof")), "told why");

    // The node proves itself only after we have: a stranger that says
    // hello gets no proof to reflect or to test key guesses against, and
    // is closed when its own proof does not come.
    let mut mirror = connect(port);
    greet(&mut mirror, "mirror", 502);
    let frames = frames_until_closed(&mut mirror, "the node's proof before ours");
    assert!(
        frames.iter().all(|f| f["type"] != "auth"),
        "the node sent its proof before ours: {frames:?}"
    );
    let told = frames.iter().find(|f| f["type"] == "close");
    assert_eq!(
        told.and_then(|f| f["reason"].as_str()),
        Some("no proof within 3 s"),
        "{frames:?}"
    );

    // A whole good handshake recorded, then replayed on a new connection,
    // our hello (nonce and all) and our proof byte for byte: the node's
    // fresh nonce makes the old proof worthless.
    let mark = beta.log_mark();
    let mut first = connect(port);
    let recorded: Greeted = greet(&mut first, "replayer", 503);
    let old_proof = recorded.our_proof(&test_key());
    send(&mut first, &auth(&old_proof));
    assert_eq!(
        proof_of(&recv(&mut first)),
        recorded.their_proof(&test_key())
    );
    let snapshot = recv(&mut first);
    assert_eq!(snapshot["type"], "create_notify", "{snapshot}");
    let named = recv(&mut first);
    assert_eq!(named["type"], "name_notify", "{named}");
    let end = recv(&mut first);
    assert_eq!(end["type"], "snapshot_end", "{end}");
    // Gone before the replay, so that its machine_id is free again.
    drop(first);
    beta.wait_for_log_after(mark, "peer closed the connection", WAIT);
    case("a replayed proof", "bad proof", &|s| {
        send(s, &recorded.dialler.hello());
        let hello = recv(s);
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_ne!(
            hello["nonce"], recorded.hello["nonce"],
            "the node reused its nonce"
        );
        send(s, &auth(&old_proof));
    });

    // Frames before the proof are not acted on: the call is not answered
    // (closed_unproven) and the object not placed (below).
    let ghost = (504u64 << 48) | 1;
    case("a call before the proof", "`call` before the proof", &|s| {
        greet(s, "early", 504);
        send(s, &call_pong(pong, "early"));
        send(
            s,
            &json!({"type":"create_notify","object_id":ghost,"machine_id":"early","behavior":"ghost"}),
        );
    });
    case(
        "a create_notify before the proof",
        "`create_notify` before the proof",
        &|s| {
            greet(s, "early2", 505);
            send(
                s,
                &json!({"type":"create_notify","object_id":(505u64 << 48) | 1,
                        "machine_id":"early2","behavior":"ghost"}),
            );
        },
    );

    // Silence after the hellos: closed once the proof is 3 s late.
    let started = Instant::now();
    case("a proof that never comes", "no proof within 3 s", &|s| {
        greet(s, "quiet", 506);
    });
    let took = started.elapsed();
    // 3 s, and room for a loaded machine.
    assert!(
        took >= PROOF_WAIT - Duration::from_millis(100),
        "closed after {took:?}: before the proof was due"
    );
    // No upper bound here: the exact 3 s is the protocol core's, tested
    // on a virtual clock (src/protocol/tests.rs); this machine's load is not.
    eprintln!("a silent peer was closed after {took:?}");

    demo_against(&beta.addr());

    // The early create_notify placed nothing: beta has no such object.
    let (mut s, _) = crate::wire::hello_beta(port, "after", 507);
    send(
        &mut s,
        &json!({"type":"call","request_id":9,"target":ghost,"input":"Nothing",
                "sender":0,"sender_machine":"after"}),
    );
    let resp = loop {
        let msg = recv(&mut s);
        if msg["type"] == "call_response" {
            break msg;
        }
    };
    let err = resp["result"]["Err"].as_str().unwrap_or_default();
    assert!(err.contains("object not found"), "{resp}");
}

/// Two nodes with different keys: each refuses the other's proof, so
/// alpha never learns of pong and its demo gives up.
#[test]
fn nodes_with_different_keys_never_connect() {
    let (beta_dir, alpha_dir) = (temp_dir("avm-it-key-beta"), temp_dir("avm-it-key-alpha"));
    let (beta_key, _) = write_key_file(&beta_dir);
    let (alpha_key, _) = write_key_file(&alpha_dir);
    let beta_key = beta_key.to_str().unwrap();
    let alpha_key = alpha_key.to_str().unwrap();
    let beta = NodeProc::start("beta", 0, &["--demo", KEY_FLAG, beta_key]);
    beta.wait_for_log("created pong", STARTUP);
    let mark = beta.log_mark();
    let mut alpha = NodeProc::start(
        "alpha",
        0,
        &[
            "--peer",
            &beta.addr(),
            "--demo",
            "--rounds",
            "3",
            "--demo-wait",
            "3",
            KEY_FLAG,
            alpha_key,
        ],
    );
    beta.wait_for_log_after(mark, "bad proof", WAIT);
    let status = alpha.wait_exit(STARTUP);
    let log = alpha.stderr();
    assert!(!status.success(), "alpha's demo ran:\n{log}");
    assert!(log.contains("no `pong` object appeared"), "{log}");
}

/// A key file others may read is refused: the node does not start.
#[test]
fn key_file_others_can_read_is_refused_at_start() {
    let dir = temp_dir("avm-it-key-open");
    let (path, _) = write_key_file(&dir);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_start_refused("beta", &[KEY_FLAG, path.to_str().unwrap()], "chmod 600");
}

/// The README's two terminals, on one machine with no key flag: the first
/// node makes `$HOME/.avm/cluster-key` (mode 0600), the second uses it,
/// and the demo runs. `HOME` is a temp dir of the test's own.
#[test]
fn without_a_key_flag_the_key_is_made_in_home_and_the_demo_runs() {
    let home = temp_dir("avm-it-home");
    let env = [("HOME", &*home)];
    let (mut alpha, beta) = with_picked_ports(1, |ports| {
        let peer_alpha = format!("127.0.0.1:{}", ports[0]);
        let beta = NodeProc::start_without_key("beta", 0, &["--peer", &peer_alpha, "--demo"], &env);
        beta.wait_for_log("created pong", STARTUP);
        let alpha = NodeProc::try_start_without_key_on(
            "alpha",
            ports[0],
            &["--peer", &beta.addr(), "--demo", "--rounds", "3"],
            &env,
        )?;
        Some((alpha, beta))
    });
    let status = alpha.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "{}\nalpha log:\n{}\nbeta log:\n{}",
        alpha.stdout(),
        alpha.stderr(),
        beta.stderr()
    );
    assert!(
        alpha.stdout().contains("result: [\"done\", 3]"),
        "{}",
        alpha.stdout()
    );
    let key = home.join(".avm").join("cluster-key");
    let meta = std::fs::metadata(&key).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{} has mode {:o}",
        key.display(),
        meta.permissions().mode() & 0o777
    );
}

/// A second node named `alpha` (same cluster key, another port and so
/// another prefix) does not cut the real alpha: beta refuses it while the
/// real one is connected, and the real pair's game goes on, no call
/// failed, while the impostor keeps retrying.
#[test]
fn a_second_node_with_a_connected_name_does_not_cut_the_first() {
    // Beta logs each call it takes at `debug`: the test sees the game go on.
    let beta = NodeProc::start_logging("beta", 0, &["--demo"], "debug");
    beta.wait_for_log("created pong", WAIT);
    let peer = format!("127.0.0.1:{}", beta.port());
    let mark = beta.log_mark();
    let mut alpha = NodeProc::start(
        "alpha",
        0,
        &["--peer", &peer, "--demo", "--rounds", ENDLESS_ROUNDS],
    );
    beta.wait_for_count_after(mark, "<- alpha for object", 100, WAIT);
    let mark = beta.log_mark();
    let _impostor = NodeProc::start("alpha", 0, &["--peer", &peer]);
    beta.wait_for_log_after(mark, "collides with connected peer", WAIT);
    let mark = beta.log_mark();
    beta.wait_for_count_after(mark, "<- alpha for object", 100, WAIT);
    interrupt_demo(&mut alpha);
}
