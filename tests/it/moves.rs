//! `move_object` across three real `avm-node` processes, driven by raw
//! protocol clients (`meta` op `move`, as docs/protocol.md describes it).
//!
//! - An account on alpha moves to beta while gamma's account keeps
//!   transferring money to it: every transfer is answered exactly once,
//!   every one is done, no money is lost or made, a call sent to alpha
//!   afterwards is forwarded, and every node's directory places it on beta.
//! - pong, named `pong` on beta, moves to gamma: a demo that starts later
//!   on alpha finds it on gamma by its name and plays.
//! - A new home (a raw client) answers `adopt` only after alpha's call
//!   timed out, on a connection that stayed up: the move waits in doubt,
//!   and the late answer settles it.
//! - A durable alpha killed while its `adopt` is out comes back with the
//!   object frozen, not served, until the new home's snapshot says it
//!   took it; then calls follow the object there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bank::Client;
use crate::observe::{health, http_port};
use crate::util::{assert_demo_done, temp_dir, NodeProc};

const LIMIT: Duration = Duration::from_secs(60);
const OPENING: u64 = 1_000_000;
/// Transfers gamma makes to the moving account, and how many are in
/// flight at once.
const TRANSFERS: usize = 2000;
const WINDOW: usize = 8;
/// The move is asked for once this many transfers are answered.
const MOVE_AFTER: usize = 300;

fn transfer(to: u64, n: u64) -> Value {
    json!({"List":[{"Str":"transfer"},{"ObjectRef":to},{"Nat":n}]})
}

fn balance_of(result: &Value) -> u64 {
    result["Ok"]["List"][1]["Nat"]
        .as_u64()
        .unwrap_or_else(|| panic!("not a balance: {result}"))
}

fn move_to(machine: &str) -> Value {
    json!({"Pair":["Nothing",{"Str":machine}]})
}

/// Objects the node's directory places on `machine` (`/health`, as the
/// interpreter last published them).
fn placed_on(http: u16, machine: &str) -> Option<u64> {
    let h = health(http);
    h["peers"]
        .as_array()?
        .iter()
        .find(|p| p["machine"] == machine)
        .and_then(|p| p["objects"].as_u64())
}

fn until_placed(node: &str, http: u16, machine: &str, want: u64) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = placed_on(http, machine);
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{node} places {got:?} objects on {machine}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_account_moved_while_gamma_pays_into_it_answers_every_transfer_once() {
    let bank = ["--bank-accounts", "1", "--bank-balance", "1000000"];
    fn with<'a>(bank: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [bank, &["--http", "0"], extra].concat()
    }
    let gamma = NodeProc::start("gamma", 0, &with(&bank, &[]));
    let gp = gamma.addr();
    let beta = NodeProc::start("beta", 0, &with(&bank, &["--peer", &gp]));
    let bp = beta.addr();
    let alpha = NodeProc::start("alpha", 0, &with(&bank, &["--peer", &gp, "--peer", &bp]));
    let ports = [alpha.port(), beta.port(), gamma.port()];
    let https = [http_port(&alpha), http_port(&beta), http_port(&gamma)];
    for node in [&alpha, &beta, &gamma] {
        node.wait_for_log("bank: created 1 accounts", LIMIT);
    }
    // Every node knows every account before the game starts.
    for (node, http) in [("alpha", https[0]), ("beta", https[1]), ("gamma", https[2])] {
        for machine in ["alpha", "beta", "gamma"] {
            if machine != node {
                until_placed(node, http, machine, 1);
            }
        }
    }

    // Raw clients read (and answer keepalives) only while in use: each
    // connects when its part starts.
    let one = ("account", 1);
    let (mut at_gamma, g) = Client::connect_expecting("gamma", ports[2], "client", 77, one);
    let (at_alpha, x) = Client::connect_expecting("alpha", ports[0], "client", 77, one);
    let (g, x) = (g[0], x[0]);

    // The move, from another thread, once MOVE_AFTER transfers are in;
    // the thread then keeps alpha's connection alive until `stop`.
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mover = {
        let answered = answered.clone();
        let stop = stop.clone();
        let mut at_alpha = at_alpha;
        std::thread::spawn(move || {
            let deadline = Instant::now() + LIMIT;
            while answered.load(Ordering::Relaxed) < MOVE_AFTER {
                assert!(Instant::now() < deadline, "transfers stalled");
                std::thread::sleep(Duration::from_millis(1));
            }
            let request = at_alpha.meta("move", x, &move_to("beta"));
            let (mut answer, mut notice) = (None, None);
            while answer.is_none() || notice.is_none() {
                let msg = at_alpha
                    .next(deadline)
                    .expect("the move's answer and notice");
                match msg["type"].as_str() {
                    Some("call_response") if msg["request_id"] == request => {
                        answer = Some(msg["result"].clone())
                    }
                    Some("move_notify") => notice = Some(msg),
                    _ => {}
                }
            }
            while !stop.load(Ordering::Relaxed) {
                let soon = Instant::now() + Duration::from_millis(100);
                let _ = at_alpha.next(soon);
            }
            (answer.unwrap(), notice.unwrap(), at_alpha)
        })
    };

    // gamma's account pays 1 into x, TRANSFERS times, WINDOW at a time.
    let deadline = Instant::now() + LIMIT;
    let mut outcomes: HashMap<u64, Value> = HashMap::new();
    let (mut sent, mut in_flight) = (0, 0);
    while outcomes.len() < TRANSFERS {
        while in_flight < WINDOW && sent < TRANSFERS {
            at_gamma.call(g, &transfer(x, 1));
            sent += 1;
            in_flight += 1;
        }
        let msg = at_gamma
            .next(deadline)
            .unwrap_or_else(|| panic!("{} of {TRANSFERS} answered", outcomes.len()));
        if msg["type"] != "call_response" {
            continue;
        }
        let id = msg["request_id"].as_u64().expect("a request id");
        let again = outcomes.insert(id, msg["result"].clone());
        assert!(again.is_none(), "request {id} answered twice");
        in_flight -= 1;
        answered.store(outcomes.len(), Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    let (moved, notice, mut at_alpha) = mover.join().expect("the mover thread");
    assert_eq!(moved, json!({"Ok":{"Bool":true}}), "the move's answer");
    assert_eq!(notice["object_id"], x, "{notice}");
    assert_eq!(notice["machine_id"], "beta", "{notice}");
    assert_eq!(notice["epoch"], 1, "{notice}");

    let done = json!({"Ok":{"List":[{"Str":"done"}]}});
    let not_done: Vec<_> = outcomes.values().filter(|r| **r != done).collect();
    assert!(
        not_done.is_empty(),
        "{} not done: {:?}",
        not_done.len(),
        &not_done[..not_done.len().min(5)]
    );

    // The money: x has every transfer, once; g paid each, once.
    let balance = json!({"List":[{"Str":"balance"}]});
    let (mut at_beta, _) =
        Client::connect_expecting("beta", ports[1], "client", 77, ("account", 2));
    let on_beta = at_beta.call(x, &balance);
    let x_balance = balance_of(&at_beta.answer(on_beta, LIMIT));
    assert_eq!(x_balance, OPENING + TRANSFERS as u64);
    let via_alpha = at_alpha.call(x, &balance);
    assert_eq!(
        balance_of(&at_alpha.answer(via_alpha, LIMIT)),
        x_balance,
        "alpha forwards a call to its old object to beta"
    );
    let request = at_gamma.call(g, &balance);
    let g_balance = balance_of(&at_gamma.answer(request, LIMIT));
    assert_eq!(g_balance + x_balance, 2 * OPENING, "no money lost or made");

    // Every directory places x on beta: beta hosts 2 accounts now.
    until_placed("alpha", https[0], "beta", 2);
    until_placed("gamma", https[2], "beta", 2);
    until_placed("gamma", https[2], "alpha", 0);
    assert_eq!(health(https[1])["objects"], 2, "beta hosts both");
    assert_eq!(health(https[0])["objects"], 0, "alpha hosts none");
}

#[test]
fn a_named_pong_moved_to_gamma_is_found_there_by_a_later_demo() {
    let beta = NodeProc::start("beta", 0, &["--demo"]);
    let bp = beta.addr();
    let gamma = NodeProc::start("gamma", 0, &["--peer", &bp]);
    let gp = gamma.addr();
    beta.wait_for_log("peer gamma is up", LIMIT);
    let (mut client, pong) =
        Client::connect_expecting("beta", beta.port(), "client", 77, ("pong", 1));
    let pong = pong[0];

    // Nowhere to go: false, and pong stays (the move below, made by beta,
    // could not be made otherwise).
    let request = client.meta("move", pong, &move_to("nowhere"));
    assert_eq!(client.answer(request, LIMIT), json!({"Ok":{"Bool":false}}));
    let request = client.meta("move", pong, &move_to("gamma"));
    assert_eq!(client.answer(request, LIMIT), json!({"Ok":{"Bool":true}}));
    gamma.wait_for_log("peer beta is up", LIMIT);

    let mut alpha = NodeProc::start(
        "alpha",
        0,
        &["--demo", "--rounds", "3", "--peer", &bp, "--peer", &gp],
    );
    assert_demo_done(&mut alpha, 3, LIMIT);
    let found = alpha.log_value("demo: found pong ", LIMIT);
    assert_eq!(found, format!("{pong} on gamma"));
}

/// The answer to `adopt` comes after alpha's call timeout (300 ms), the
/// connection staying up, as from a new home whose interpreter was held
/// up: the move waits in doubt, the account frozen, a deposit queued
/// behind it. The late `false` settles it: the mover hears `false`, and
/// the deposit is served at alpha.
#[test]
fn a_late_no_to_adopt_thaws_the_object_at_the_old_home() {
    let alpha = NodeProc::start(
        "alpha",
        0,
        &[
            "--bank-accounts",
            "1",
            "--bank-balance",
            "1000000",
            "--call-timeout-ms",
            "300",
        ],
    );
    let expect = ("account", 1);
    let (mut home, ids) = Client::connect_expecting("alpha", alpha.port(), "slowhome", 77, expect);
    let (mut asker, _) = Client::connect_expecting("alpha", alpha.port(), "asker", 78, expect);
    let account = ids[0];
    let mark = alpha.log_mark();
    let moving = asker.meta("move", account, &move_to("slowhome"));
    let deadline = Instant::now() + LIMIT;
    let adopt = loop {
        let msg = home.next(deadline).expect("no adopt reached the new home");
        if msg["type"] == "meta" && msg["op"] == "adopt" {
            break msg;
        }
    };
    assert_eq!(adopt["target"], account, "{adopt}");
    alpha.wait_for_log_after(mark, "the adopt's answer was lost", LIMIT);
    let deposit = asker.call(account, &json!({"List":[{"Str":"deposit"},{"Nat":5}]}));

    home.respond(&adopt["request_id"], json!({"Ok":{"Bool":false}}));
    // Both answers, in whichever order they come.
    let mut answers = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answers.len() < 2 {
        let Some(msg) = asker.next(deadline) else {
            panic!("answers so far {answers:?}\n{}", alpha.stderr());
        };
        if msg["type"] == "call_response" {
            answers.insert(msg["request_id"].as_u64().unwrap(), msg["result"].clone());
        }
    }
    assert_eq!(answers[&moving], json!({"Ok":{"Bool":false}}));
    assert_eq!(
        answers[&deposit],
        json!({"Ok":{"List":[{"Str":"ok"},{"Nat":OPENING + 5}]}}),
        "{}",
        alpha.stderr()
    );
    alpha.wait_for_log_after(mark, "its late answer says it did not take it", LIMIT);
}

/// alpha (durable) sends the account's `adopt` to slowhome, a raw client,
/// and is killed before any answer. Restarted, it must not serve its copy:
/// slowhome may hold the object now, and a write acknowledged here would
/// vanish when slowhome's snapshot drops the copy (or, moved on to a third
/// node, the copy would be a second owner). A deposit waits; slowhome's
/// snapshot, naming the account at epoch 1, settles the move as made; the
/// deposit then goes to slowhome.
#[test]
fn a_durable_node_killed_mid_move_does_not_serve_the_copy_it_restarts_with() {
    let dir = temp_dir("avm-it-move-kill");
    let args = [
        "--data-dir",
        &dir.display().to_string(),
        "--node-prefix",
        "4242",
        "--bank-accounts",
        "1",
        "--bank-balance",
        "1000000",
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut alpha = NodeProc::start("alpha", 0, &args);
    let expect = ("account", 1);
    let (mut home, ids) = Client::connect_expecting("alpha", alpha.port(), "slowhome", 77, expect);
    let (mut asker, _) = Client::connect_expecting("alpha", alpha.port(), "asker", 78, expect);
    let account = ids[0];
    asker.meta("move", account, &move_to("slowhome"));
    let deadline = Instant::now() + LIMIT;
    loop {
        let msg = home.next(deadline).expect("no adopt reached the new home");
        if msg["type"] == "meta" && msg["op"] == "adopt" {
            break;
        }
    }
    alpha.signal("KILL");
    alpha.wait_exit(LIMIT);

    let alpha = NodeProc::start("alpha", 0, &args);
    alpha.wait_for_log("was on its way to slowhome", LIMIT);
    let (mut asker, _) = Client::connect_expecting("alpha", alpha.port(), "asker", 79, expect);
    let deposit = asker.call(account, &json!({"List":[{"Str":"deposit"},{"Nat":5}]}));
    let wait = Instant::now() + Duration::from_secs(1);
    while let Some(msg) = asker.next(wait) {
        assert_ne!(
            msg["type"],
            "call_response",
            "the copy served a call while slowhome may hold the object: {msg}\n{}",
            alpha.stderr()
        );
    }
    // slowhome comes back: its snapshot names the account, at the epoch
    // the move gave it.
    let (mut home, _) = Client::connect_expecting("alpha", alpha.port(), "slowhome", 77, expect);
    home.send(
        &json!({"type":"create_notify","object_id":account,"machine_id":"slowhome",
                      "behavior":"account","epoch":1}),
    );
    home.send(&json!({"type":"snapshot_end","objects":1}));
    // The deposit follows the object to slowhome (this client refuses
    // every call made to it), and is not answered by alpha's copy.
    let deadline = Instant::now() + LIMIT;
    let answer = loop {
        assert!(
            Instant::now() < deadline,
            "no answer to the deposit:\n{}",
            alpha.stderr()
        );
        let soon = || Instant::now() + Duration::from_millis(20);
        // slowhome reads (and refuses) the call, and answers pings.
        let _ = home.next(soon());
        match asker.next(soon()) {
            Some(msg) if msg["type"] == "call_response" && msg["request_id"] == deposit => {
                break msg["result"].clone()
            }
            _ => {}
        }
    };
    assert_eq!(
        answer,
        json!({"Err":"the test client hosts no object"}),
        "{}",
        alpha.stderr()
    );
    alpha.wait_for_log("the move was made", LIMIT);
}
