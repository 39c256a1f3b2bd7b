//! Peers that die, restart, stall, stop reading, or are told to stop.

use std::io::Write;
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use avm::node::{Node, NodeConfig};
use avm::vm::{call, get_machine, BehaviorRegistry, ObjectId, Program, PureRegistry, Val};
use serde_json::json;

use crate::util::{interrupt_demo, keyed, NodeProc, ENDLESS_ROUNDS};
use crate::wire::{handshake, hello_beta, recv, send, send_together};

const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

fn embedded(name: &str, peers: Vec<String>, tweak: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut config = NodeConfig::new(name);
    config.bind = IpAddr::from(LOOPBACK);
    config.peers = peers;
    keyed(&mut config);
    tweak(&mut config);
    Node::start(config, BehaviorRegistry::new(), PureRegistry::new()).unwrap()
}

/// The program's answer; a failed call, which ends the program with
/// `Err(reason)` (`Node::submit`), reads as the `Nothing` its `call`
/// answered: these tests ask only whether it failed, and log why.
fn run(node: &Node, program: Program) -> Val {
    let result = node
        .submit(program)
        .recv_timeout(Duration::from_secs(20))
        .expect("the program finishes");
    result.unwrap_or_else(|why| {
        eprintln!("(a call failed: {why})");
        Val::Nothing
    })
}

/// `["Ping", 1, 1, pong]`: pong answers `["done", 1]` without calling back.
fn one_shot(pong: u64) -> Program {
    let input = Val::List(vec![
        Val::str("Ping"),
        Val::Nat(1),
        Val::Nat(1),
        Val::ObjectRef(ObjectId(pong)),
    ]);
    call(ObjectId(pong), input)
}

fn done_1() -> Val {
    Val::just(Val::List(vec![Val::str("done"), Val::Nat(1)]))
}

/// A `--demo` beta on `port` (0: any), and its pong's id.
fn demo_beta(port: u16) -> (NodeProc, u64) {
    let beta = if port == 0 {
        NodeProc::start("beta", 0, &["--demo"])
    } else {
        NodeProc::try_start_on("beta", port, &["--demo"]).unwrap_or_else(|| {
            panic!("port {port} was taken while beta was down: cannot restart it there")
        })
    };
    let pong = beta
        .log_value("created pong", Duration::from_secs(30))
        .parse()
        .unwrap();
    (beta, pong)
}

/// An embedded alpha dialling the beta on `port`, once it has reached
/// `pong`. Its call timeout is 2 minutes: no call in these tests ends by
/// timing out within their deadlines, so each ending is the one tested.
fn alpha_reaching(port: u16, pong: u64) -> Node {
    let alpha = embedded("alpha", vec![format!("127.0.0.1:{port}")], |c| {
        c.call_timeout = Duration::from_secs(120)
    });
    let within = Duration::from_secs(20);
    assert_eq!(
        eventually(&alpha, || one_shot(pong), &done_1(), within),
        done_1()
    );
    alpha
}

/// `Just(machine)`, as `get_machine` answers for an object on `machine`.
fn on(machine: &str) -> Val {
    Val::just(Val::str(machine))
}

/// Retries `program` until it answers `want` or `within` passes.
fn eventually(node: &Node, make: impl Fn() -> Program, want: &Val, within: Duration) -> Val {
    let deadline = Instant::now() + within;
    loop {
        let got = run(node, make());
        if &got == want || Instant::now() > deadline {
            return got;
        }
        // Polling, with the deadline above.
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Calls beta must have served before it is interrupted: the game is well
/// under way, a chain some thousand calls deep waiting across both nodes.
const CALLS_BEFORE_INTERRUPT: usize = 500;

/// Starts beta, then an alpha running a game far too long to finish, both
/// with `extra` flags; once it runs, sends `signal` to beta and returns
/// alpha's log and how long alpha took to give up.
fn interrupt_long_demo(signal: &str, extra: &[&str]) -> (String, Duration) {
    // Beta logs each call it takes at `debug`: that is how the test sees
    // the game under way.
    let beta = NodeProc::start_logging("beta", 0, &[&["--demo"], extra].concat(), "debug");
    beta.wait_for_log("created pong", Duration::from_secs(30));
    let peer_b = beta.addr();
    let alpha_args = [
        &["--peer", &peer_b, "--demo", "--rounds", ENDLESS_ROUNDS],
        extra,
    ]
    .concat();
    let mark = beta.log_mark();
    let mut alpha = NodeProc::start("alpha", 0, &alpha_args);
    beta.wait_for_count_after(
        mark,
        "<- alpha for object",
        CALLS_BEFORE_INTERRUPT,
        Duration::from_secs(30),
    );
    let sent = Instant::now();
    beta.signal(signal);
    let status = alpha.wait_exit(Duration::from_secs(30));
    let took = sent.elapsed();
    if signal == "STOP" {
        beta.signal("CONT");
    }
    let log = alpha.stderr();
    assert!(!status.success(), "alpha must fail:\n{log}");
    assert!(
        log.contains("demo ended with") && log.contains("beta"),
        "{log}"
    );
    (log, took)
}

/// A peer killed mid-game is noticed by its closed connection, not by
/// keepalive or call timeout: with both set far past the 30 s alpha is
/// given to exit, only the closed connection can end the game in time.
#[test]
fn killed_peer_fails_a_running_demo_by_its_closed_connection() {
    let patient = ["--keepalive-ms", "60000", "--call-timeout-ms", "600000"];
    let (_, took) = interrupt_long_demo("KILL", &patient);
    eprintln!("kill -9 to alpha's exit: {took:?}");
}

/// A node that keeps running across its peer's restart: calls fail fast
/// while the peer is gone and work again once it is back; ids of the old
/// life are never reused.
#[test]
fn restarted_peer_is_reached_again_without_restarting_anyone() {
    let (beta, pong1) = demo_beta(0);
    let pb = beta.port();
    let alpha = alpha_reaching(pb, pong1);
    let within = Duration::from_secs(20);

    drop(beta); // SIGKILL
    assert_eq!(
        eventually(&alpha, || one_shot(pong1), &Val::Nothing, within),
        Val::Nothing
    );
    // Failing fast: refused at once for the peer it names, not timed out
    // (alpha's calls time out only after 2 minutes).
    let t = Instant::now();
    let refused = alpha
        .submit(one_shot(pong1))
        .recv_timeout(Duration::from_secs(20))
        .expect("an answer, not a wait for the call timeout");
    let why = refused.expect_err("a call to a down peer fails");
    assert!(why.contains("machine beta is not connected"), "{why}");
    eprintln!("a call to a down peer failed in {:?}", t.elapsed());

    let (_beta, pong2) = demo_beta(pb);
    assert_ne!(pong1, pong2, "a new life mints new ids");
    assert!(pong2 > pong1, "boot-epoch counters grow across lives");
    assert_eq!(
        eventually(&alpha, || one_shot(pong2), &done_1(), within),
        done_1()
    );

    // The old life's pong is gone for good: "object not found", never
    // delivered to the new one.
    let (mut s, _) = hello_beta(pb, "probe", 91);
    send(
        &mut s,
        &json!({"type":"call","request_id":3,"target":pong1,"input":"Nothing",
                "sender":0,"sender_machine":"probe"}),
    );
    let resp = recv(&mut s);
    let err = resp["result"]["Err"].as_str().unwrap_or_default();
    assert!(
        err.contains("object not found") && err.contains(&pong1.to_string()),
        "{resp}"
    );
    alpha.shutdown();
}

/// A peer that takes calls and never answers: the call fails after the
/// timeout; the late answer is dropped and the connection stays up.
#[test]
fn unanswered_call_times_out_and_late_answer_is_dropped() {
    let alpha = embedded("alpha", vec![], |c| {
        // Long enough that the second call's answer, sent at once, beats
        // it on a loaded machine; short enough to wait out once.
        c.call_timeout = Duration::from_secs(1)
    });
    let mut s = TcpStream::connect(alpha.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mute = (55u64 << 48) | 1;
    handshake(&mut s, "silent", 55);
    send(
        &mut s,
        &json!({"type":"create_notify","object_id":mute,"machine_id":"silent","behavior":"mute"}),
    );
    // Alpha's interpreter knows where `mute` is before the call is made.
    let within = Duration::from_secs(20);
    assert_eq!(
        eventually(
            &alpha,
            || get_machine(ObjectId(mute)),
            &on("silent"),
            within
        ),
        on("silent")
    );

    let asked = Instant::now();
    let rx = alpha.submit(call(ObjectId(mute), Val::Nat(1)));
    let request_id = loop {
        let msg = recv(&mut s);
        if msg["type"] == "call" {
            assert_eq!(msg["target"], mute);
            break msg["request_id"].clone();
        }
    };
    let answer = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let took = asked.elapsed();
    let why = answer.expect_err("a timed-out call fails, and the result says why");
    assert!(why.contains("timed out"), "{why}");
    assert!(
        took >= Duration::from_millis(950),
        "timed out too early: {took:?}"
    );
    eprintln!("a 1 s call timeout fired after {took:?}");

    // A second call is out when the first one's answer comes, late: that
    // answer is dropped (it would otherwise answer the second call), and
    // the second gets its own.
    let rx = alpha.submit(call(ObjectId(mute), Val::Nat(2)));
    let second_id = loop {
        let msg = recv(&mut s);
        if msg["type"] == "call" {
            break msg["request_id"].clone();
        }
    };
    assert_ne!(second_id, request_id, "a request_id was reused");
    send(
        &mut s,
        &json!({"type":"call_response","request_id":request_id,"result":{"Ok":{"Nat":7}}}),
    );
    send(
        &mut s,
        &json!({"type":"call_response","request_id":second_id,"result":{"Ok":{"Nat":42}}}),
    );
    let answer = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(answer, Ok(Val::just(Val::Nat(42))));
    ping_pong(&mut s, 5);
    alpha.shutdown();
}

/// Sends a ping and waits for its pong, skipping the node's own pings.
fn ping_pong(s: &mut TcpStream, nonce: u64) {
    send(s, &json!({"type":"ping","nonce":nonce}));
    loop {
        let msg = recv(s);
        if msg["type"] == "pong" {
            assert_eq!(msg["nonce"], nonce);
            return;
        }
    }
}

/// mallory (a peer that proved the cluster key) sends alpha `notice`
/// about beta's pong, then announces one of its own objects: alpha takes
/// one connection's messages in order, so once it knows that object it
/// has judged the notice. Answers where alpha then places pong.
fn after_mallorys_notice(alpha: &Node, prefix: u64, notice: serde_json::Value) -> Val {
    let mut s = TcpStream::connect(alpha.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    handshake(&mut s, "mallory", prefix);
    send(&mut s, &notice);
    let own = (prefix << 48) | 1;
    send(
        &mut s,
        &json!({"type":"create_notify","object_id":own,"machine_id":"mallory","behavior":"mute"}),
    );
    let within = Duration::from_secs(20);
    let placed = eventually(alpha, || get_machine(ObjectId(own)), &on("mallory"), within);
    assert_eq!(placed, on("mallory"));
    let pong = notice["object_id"].as_u64().unwrap();
    run(alpha, get_machine(ObjectId(pong)))
}

/// A peer announces and retires only its own objects: a stranger's
/// `destroy_notify` for beta's pong leaves alpha's directory as it was.
#[test]
fn a_peer_cannot_retire_another_machines_object() {
    let (beta, pong) = demo_beta(0);
    let alpha = alpha_reaching(beta.port(), pong);
    let notice = json!({"type":"destroy_notify","object_id":pong});
    assert_eq!(after_mallorys_notice(&alpha, 66, notice), on("beta"));
    assert_eq!(
        run(&alpha, one_shot(pong)),
        done_1(),
        "a stranger's destroy_notify made alpha forget pong"
    );
    alpha.shutdown();
}

/// A peer that proved the cluster key still cannot claim another node's
/// object: mallory's `create_notify` placing beta's pong on itself is
/// refused, pong stays on beta, and a call to it still reaches beta.
#[test]
fn a_peer_cannot_claim_another_machines_object() {
    let (beta, pong) = demo_beta(0);
    let alpha = alpha_reaching(beta.port(), pong);
    let notice =
        json!({"type":"create_notify","object_id":pong,"machine_id":"mallory","behavior":"pong"});
    assert_eq!(after_mallorys_notice(&alpha, 67, notice), on("beta"));
    assert_eq!(
        run(&alpha, one_shot(pong)),
        done_1(),
        "the call to pong went to mallory"
    );
    alpha.shutdown();
}

/// A node its peer refuses (its name is taken there) is redialled with a
/// growing backoff, as an unreachable one is, not every 100 ms.
#[test]
fn refused_node_backs_off() {
    let beta = NodeProc::start("beta", 0, &["--demo", "--keepalive-ms", "10000"]);
    beta.wait_for_log("created pong", Duration::from_secs(30));
    // A raw client holds the name `twin` at beta.
    let (_holder, _) = hello_beta(beta.port(), "twin", 401);
    let mark = beta.log_mark();
    let twin = NodeProc::start("twin", 0, &["--peer", &beta.addr()]);
    beta.wait_for_log_after(
        mark,
        "collides with connected peer",
        Duration::from_secs(30),
    );
    // The sleep is the thing under test: the redials counted are those
    // of the 3 s after the first refusal.
    std::thread::sleep(Duration::from_secs(3));
    let refusals = beta
        .log_after(mark)
        .matches("collides with connected peer")
        .count();
    // 100 ms doubling to 2 s: 4 or 5 attempts in 3 s, 30 without backoff,
    // 1 if twin gave up.
    assert!(
        (3..=8).contains(&refusals),
        "twin was refused {refusals} times in 3 s:\n{}",
        beta.stderr()
    );
    // Twin says why, as beta told it, once, not at every attempt.
    let warnings = twin
        .stderr()
        .matches("the peer said: machine_id `twin` collides with connected peer")
        .count();
    assert_eq!(warnings, 1, "{}", twin.stderr());
}

/// A peer that points pong at itself (`sender` = pong, no end to the
/// game) starts a local recursion with no end. The node stays responsive
/// (chains take turns on the interpreter, so a call to another object is
/// answered meanwhile) and the recursion stops at the call-depth limit
/// with an answer, instead of running until memory ends. (A second call
/// to pong itself would wait for pong's turn: objects run one call at a
/// time.)
#[test]
fn endless_local_recursion_from_a_peer_is_bounded_and_does_not_starve_others() {
    let beta = NodeProc::start(
        "beta",
        0,
        &[
            "--demo",
            "--max-call-depth",
            "200000",
            "--bank-accounts",
            "1",
        ],
    );
    beta.wait_for_log("bank: created 1 accounts", Duration::from_secs(30));
    let mut s = TcpStream::connect(("127.0.0.1", beta.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    handshake(&mut s, "mallory", 92);
    let (mut pong, mut account) = (None, None);
    while pong.is_none() || account.is_none() {
        let msg = recv(&mut s);
        if msg["type"] == "create_notify" {
            let id = msg["object_id"].as_u64();
            match msg["behavior"].as_str() {
                Some("pong") => pong = id,
                Some("account") => account = id,
                _ => {}
            }
        }
    }
    let (pong, account) = (pong.unwrap(), account.unwrap());
    let game = |count: u64, max: u64| json!({"List":[{"Str":"Ping"},{"Nat":count},{"Nat":max},{"ObjectRef":pong}]});
    send_together(
        &mut s,
        &[
            json!({"type":"call","request_id":1,"target":pong,"input":game(0, u64::MAX),
                   "sender":pong,"sender_machine":"mallory"}),
            json!({"type":"call","request_id":2,"target":account,"input":{"List":[{"Str":"balance"}]},
                   "sender":0,"sender_machine":"mallory"}),
        ],
    );
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let msg = recv(&mut s);
        if msg["type"] == "call_response" {
            answers.push(msg);
        }
    }
    assert_eq!(
        answers[0]["request_id"], 2,
        "the short call waited: {answers:?}"
    );
    assert_eq!(
        answers[0]["result"],
        json!({"Ok":{"List":[{"Str":"balance"},{"Nat":1000}]}})
    );
    // The deepest call failed at the limit; each pong above passed that on.
    assert_eq!(answers[1]["request_id"], 1);
    assert_eq!(
        answers[1]["result"],
        json!({"Ok":{"Str":"pong: call failed"}})
    );
}

#[test]
fn sigterm_and_sigint_exit_zero_promptly() {
    for signal in ["TERM", "INT"] {
        let mut beta = NodeProc::start("beta", 0, &["--demo"]);
        beta.wait_for_log("created pong", Duration::from_secs(30));
        let mark = beta.log_mark();
        let sent = Instant::now();
        beta.signal(signal);
        // A node that ignored the signal would overrun this and fail.
        let status = beta.wait_exit(Duration::from_secs(10));
        let took = sent.elapsed();
        assert!(status.success(), "SIG{signal}: {status}\n{}", beta.stderr());
        beta.wait_for_log_after(
            mark,
            &format!("received SIG{signal}"),
            Duration::from_secs(5),
        );
        eprintln!("SIG{signal} to exit: {took:?}");
    }
}

/// SIGINT to the orchestrator in the middle of its game: the stop it was
/// asked for, exit 0 and said so, without blaming its peer. (Its calls
/// failed "node shutting down", which read as if beta had gone: WARN
/// lines, then "the demo ended with ... connection to beta ... lost", exit 1.)
#[test]
fn sigint_to_the_orchestrator_mid_game_exits_zero_and_blames_no_peer() {
    let beta = NodeProc::start_logging("beta", 0, &["--demo"], "debug");
    beta.wait_for_log("created pong", Duration::from_secs(30));
    let peer_b = beta.addr();
    let mark = beta.log_mark();
    let mut alpha = NodeProc::start(
        "alpha",
        0,
        &["--peer", &peer_b, "--demo", "--rounds", ENDLESS_ROUNDS],
    );
    beta.wait_for_count_after(mark, "<- alpha for object", 200, Duration::from_secs(30));
    interrupt_demo(&mut alpha);
}

/// A SIGTERM while the node is still making its bank's accounts (a
/// million, so it takes seconds) is the clean stop it asks for: exit 0,
/// and the log says it stopped before it finished starting.
#[test]
fn sigterm_while_starting_up_exits_zero() {
    let mut vault = NodeProc::start("vault", 0, &["--bank-accounts", "1000000"]);
    vault.wait_for_log("listening on", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(100));
    vault.signal("TERM");
    let status = vault.wait_exit(Duration::from_secs(30));
    let log = vault.stderr();
    assert!(
        !log.contains("bank: created"),
        "the accounts were all made before the signal; the test proves nothing:\n{log}"
    );
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("stopped before it finished starting"), "{log}");
}

/// A `--demo` beta whose write limit is 1 MiB, its port, a log mark, and
/// a connection from `machine` (prefix `prefix`) that passed the handshake,
/// with pong's id.
fn beta_with_a_1_mib_write_limit(
    machine: &str,
    prefix: u64,
) -> (NodeProc, u16, crate::util::LogMark, TcpStream, u64) {
    let beta = NodeProc::start(
        "beta",
        0,
        &[
            "--demo",
            "--max-write-buffer",
            "1048576",
            "--max-frame",
            "1048576",
        ],
    );
    beta.wait_for_log("created pong", Duration::from_secs(30));
    let port = beta.port();
    let mark = beta.log_mark();
    let (s, pong) = hello_beta(port, machine, prefix);
    (beta, port, mark, s, pong)
}

/// A client that floods calls and never reads the answers is cut off once
/// its unsent answers pass the write limit; the node's memory stays bounded
/// and it goes on serving.
#[test]
fn client_that_never_reads_is_disconnected_and_memory_stays_bounded() {
    let (beta, port, mark, mut s, pong) = beta_with_a_1_mib_write_limit("flood", 71);
    let calls = (0..1000u64).map(|i| {
        json!({"type":"call","request_id":i,"target":pong,
            "input":{"List":[{"Str":"Ping"},{"Nat":1},{"Nat":1},{"ObjectRef":pong}]},
            "sender":0,"sender_machine":"flood"})
    });
    let (_, mut peak_rss) = flood(&mut s, calls, &beta, Duration::from_secs(60));
    beta.wait_for_log_after(mark, "peer is not reading", Duration::from_secs(30));
    let mut beta = beta;
    assert!(!beta.exited(), "beta survived the flood");
    peak_rss = peak_rss.max(beta.rss_kib());
    assert!(peak_rss < 100 * 1024, "beta's RSS reached {peak_rss} KiB");
    eprintln!("flooded beta's peak RSS: {peak_rss} KiB");
    // Still serving.
    let (mut s2, _) = hello_beta(port, "after", 72);
    send(&mut s2, &json!({"type":"ping","nonce":1}));
    assert_eq!(recv(&mut s2)["type"], "pong");
}

/// Writes `frames` (framed JSON) to `s` again and again, without reading,
/// until a write fails (beta cut it, or stopped reading) or `limit`
/// passes; answers how long, and beta's peak RSS in KiB meanwhile.
fn flood(
    s: &mut TcpStream,
    frames: impl Iterator<Item = serde_json::Value>,
    beta: &NodeProc,
    limit: Duration,
) -> (Duration, u64) {
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut batch = Vec::new();
    for frame in frames {
        let body = serde_json::to_vec(&frame).unwrap();
        batch.extend_from_slice(&(body.len() as u32).to_be_bytes());
        batch.extend_from_slice(&body);
    }
    let started = Instant::now();
    let mut peak_rss = 0;
    for round in 0.. {
        if s.write_all(&batch).is_err() || started.elapsed() > limit {
            break;
        }
        if round % 20 == 0 {
            peak_rss = peak_rss.max(beta.rss_kib());
        }
    }
    (started.elapsed(), peak_rss)
}

/// A keyed client that floods pings (frames that need no interpreter, so
/// they never fill its backlog) and never reads the pongs does not keep
/// beta's reactor reading it for as long as it writes: beta reads a
/// bounded amount per turn, writes between turns, and so cuts the client
/// once its unsent pongs pass the write limit. Memory stays bounded.
#[test]
fn a_ping_flood_that_never_reads_the_pongs_is_cut() {
    let (beta, port, mark, mut s, _) = beta_with_a_1_mib_write_limit("pinger", 73);
    let pings = (0..10_000u64).map(|nonce| json!({"type":"ping","nonce":nonce}));
    let (flooded, mut peak_rss) = flood(&mut s, pings, &beta, Duration::from_secs(30));
    let cut = beta.wait_for_log_after(mark, "peer is not reading", Duration::from_secs(10));
    assert!(cut.contains("pinger"), "{cut}");
    assert!(
        flooded < Duration::from_secs(20),
        "the client wrote for {flooded:?} before it was cut"
    );
    let mut beta = beta;
    assert!(!beta.exited(), "beta survived the flood");
    peak_rss = peak_rss.max(beta.rss_kib());
    assert!(peak_rss < 100 * 1024, "beta's RSS reached {peak_rss} KiB");
    let (mut s2, _) = hello_beta(port, "after", 74);
    send(&mut s2, &json!({"type":"ping","nonce":1}));
    assert_eq!(recv(&mut s2)["type"], "pong");
}

/// A node out of file descriptors cannot accept; the connections that
/// wait meanwhile are accepted once descriptors are free again, without
/// waiting for yet another connection to arrive (readiness is
/// edge-triggered: the node tries the listener again on its own).
#[test]
fn connections_that_waited_out_a_descriptor_shortage_are_accepted() {
    use std::io::Read;
    let beta = NodeProc::start("beta", 0, &["--demo"]);
    beta.wait_for_log("created pong", Duration::from_secs(30));
    let port = beta.port();
    let room = 4;
    crate::util::leave_descriptors(beta.pid(), room);
    let mark = beta.log_mark();
    // Each accepted connection gets beta's hello at once.
    let greeted = |s: &mut TcpStream, within: Duration| {
        s.set_read_timeout(Some(within)).unwrap();
        let mut header = [0u8; 4];
        s.read_exact(&mut header).is_ok()
    };
    let mut first: Vec<TcpStream> = (0..room)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut waiting: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    beta.wait_for_log_after(mark, "accept failed", Duration::from_secs(10));
    for s in &mut first {
        assert!(
            greeted(s, Duration::from_secs(5)),
            "accepted before the limit"
        );
    }
    assert!(
        !greeted(&mut waiting[0], Duration::from_millis(300)),
        "accepted past the limit: it did not bite"
    );
    // Descriptors free again: beta closes the first ones (we leave).
    drop(first);
    for s in &mut waiting {
        assert!(
            greeted(s, Duration::from_secs(5)),
            "a waiting connection was never accepted:\n{}",
            beta.stderr()
        );
    }
    let warned = beta.stderr().matches("accept failed").count();
    assert_eq!(warned, 1, "said once per spell:\n{}", beta.stderr());
}

/// A peer that hangs (SIGSTOP: its sockets stay open, nothing answers) is
/// declared down after 3 missed keepalive intervals, and the calls waiting
/// on it fail.
#[test]
fn hung_peer_is_declared_down_after_three_keepalive_intervals() {
    // The call timeout far past alpha's 30 s to exit: only keepalive can
    // end the game in time.
    let flags = ["--keepalive-ms", "200", "--call-timeout-ms", "600000"];
    let (log, took) = interrupt_long_demo("STOP", &flags);
    assert!(log.contains("3 keepalive intervals"), "{log}");
    // 3 intervals of 200 ms, found at most a twentieth of one late.
    assert!(
        took >= Duration::from_millis(550),
        "declared down too early: {took:?}"
    );
    eprintln!("SIGSTOP to alpha's exit (keepalive 200 ms): {took:?}");
}

/// A stopping node closes its listener at once: a connection attempt
/// while it finishes (here, while it waits up to 1 s for a peer that
/// keeps its connection open to end the stream) is refused, not queued
/// and then reset.
#[test]
fn a_stopping_node_refuses_new_connections() {
    let mut beta = NodeProc::start("beta", 0, &["--demo"]);
    beta.wait_for_log("created pong", Duration::from_secs(30));
    let port = beta.port();
    // Held open, never closed by us: the node's stop waits for it.
    let (_held, _) = hello_beta(port, "holder", 93);
    let mark = beta.log_mark();
    beta.signal("TERM");
    beta.wait_for_log_after(mark, "received SIGTERM", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_millis(800);
    let refused = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break true,
            _ if Instant::now() >= deadline => break false,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    assert!(
        !beta.exited(),
        "the node was to wait for the held connection"
    );
    assert!(refused, "a connection was accepted by a stopping node");
    assert!(beta.wait_exit(Duration::from_secs(10)).success());
}
