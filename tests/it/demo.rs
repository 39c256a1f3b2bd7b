//! The distributed PingPong demo between real processes.

use std::time::Duration;

use crate::util::{interrupt_demo, with_picked_ports, NodeProc, ENDLESS_ROUNDS};

const EXIT: Duration = Duration::from_secs(120);
const STARTUP: Duration = Duration::from_secs(30);

/// Starts beta (pong) and alpha (ping, orchestrator) in the given order,
/// each naming the other as `--peer`, and returns both after alpha exited.
/// The first binds port 0 and the second is told where it is; the second's
/// port is picked beforehand, since the first must name it.
fn run_demo(rounds: u64, alpha_first: bool) -> (NodeProc, NodeProc) {
    let rounds_s = rounds.to_string();
    let (mut alpha, beta) = with_picked_ports(1, |ports| {
        let second = format!("127.0.0.1:{}", ports[0]);
        if alpha_first {
            let alpha = NodeProc::start(
                "alpha",
                0,
                &["--peer", &second, "--demo", "--rounds", &rounds_s],
            );
            // Let alpha fail to reach beta at least once: the redial path.
            alpha.wait_for_log("not reachable yet", STARTUP);
            let beta =
                NodeProc::try_start_on("beta", ports[0], &["--peer", &alpha.addr(), "--demo"])?;
            Some((alpha, beta))
        } else {
            let beta = NodeProc::start("beta", 0, &["--peer", &second, "--demo"]);
            beta.wait_for_log("created pong", STARTUP);
            let alpha = NodeProc::try_start_on(
                "alpha",
                ports[0],
                &["--peer", &beta.addr(), "--demo", "--rounds", &rounds_s],
            )?;
            Some((alpha, beta))
        }
    });
    let status = alpha.wait_exit(EXIT);
    assert!(
        status.success(),
        "alpha failed ({status})\nstdout:\n{}\nalpha log:\n{}\nbeta log:\n{}",
        alpha.stdout(),
        alpha.stderr(),
        beta.stderr()
    );
    (alpha, beta)
}

fn assert_done(alpha: &NodeProc, rounds: u64) {
    let out = alpha.stdout();
    assert!(
        out.contains(&format!("result: [\"done\", {rounds}]")),
        "unexpected result:\n{out}"
    );
    assert!(
        out.contains(&format!("calls across the network: {rounds} ")),
        "each round is one remote call:\n{out}"
    );
}

#[test]
fn demo_zero_rounds_answers_without_crossing() {
    let (alpha, _beta) = run_demo(0, false);
    assert_done(&alpha, 0);
}

#[test]
fn demo_one_round() {
    let (alpha, _beta) = run_demo(1, false);
    assert_done(&alpha, 1);
}

#[test]
fn demo_three_rounds_beta_first() {
    let (alpha, _beta) = run_demo(3, false);
    assert_done(&alpha, 3);
    let out = alpha.stdout();
    assert!(out.contains("alpha -> beta: 2, beta -> alpha: 1"), "{out}");
}

#[test]
fn demo_three_rounds_alpha_first() {
    let (alpha, _beta) = run_demo(3, true);
    assert_done(&alpha, 3);
}

#[test]
fn demo_thousand_rounds() {
    let (alpha, _beta) = run_demo(1000, false);
    assert_done(&alpha, 1000);
}

/// 100,000 nested remote calls, alternating direction: 50,000 chains wait
/// on each node at the deepest point.
#[test]
fn demo_hundred_thousand_rounds_deep_reentrant_chain() {
    let (alpha, _beta) = run_demo(100_000, true);
    assert_done(&alpha, 100_000);
}

/// A third node that joins after the others learns where pong is from the
/// directory snapshot, and calls it.
#[test]
fn late_joiner_learns_pong_and_calls_it() {
    let (_alpha, beta) = run_demo(3, false);
    let mut gamma = NodeProc::start(
        "gamma",
        0,
        &["--peer", &beta.addr(), "--demo", "--rounds", "5"],
    );
    let status = gamma.wait_exit(EXIT);
    assert!(
        status.success(),
        "gamma failed\n{}\n{}",
        gamma.stdout(),
        gamma.stderr()
    );
    assert_done(&gamma, 5);
    assert!(
        gamma.stderr().contains("found pong")
            && gamma.stderr().contains(" on beta; running 5 rounds"),
        "{}",
        gamma.stderr()
    );
}

#[test]
fn orchestrator_without_pong_gives_up_with_a_clear_error() {
    let mut alpha = NodeProc::start("alpha", 0, &["--demo", "--rounds", "3", "--demo-wait", "1"]);
    let status = alpha.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        alpha.stderr().contains("no `pong` object appeared"),
        "{}",
        alpha.stderr()
    );
}

/// A wait too long to add to a clock reading means "wait for ever", not a
/// panic of the interpreter thread.
#[test]
fn orchestrator_with_an_endless_wait_keeps_waiting() {
    let mut alpha = NodeProc::start(
        "alpha",
        0,
        &[
            "--demo",
            "--rounds",
            "3",
            "--demo-wait",
            &u64::MAX.to_string(),
        ],
    );
    alpha.wait_for_log("waiting for a `pong`", STARTUP);
    // The sleep is the thing under test: a while after it began to wait,
    // through the idle wake-ups that compute its (endless) deadline, the
    // node is still waiting, neither gone nor given up.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!alpha.exited(), "{}", alpha.stderr());
    alpha.signal("TERM");
    alpha.wait_exit(Duration::from_secs(30));
    assert!(!alpha.stderr().contains("panicked"), "{}", alpha.stderr());
}

/// Both nodes dial each other, so each sees two connections to the other,
/// and both must keep the same one (the one dialled by `alpha`, the lower
/// machine_id), without failing any call.
///
/// Two connections really form: beta starts first, naming alpha while
/// alpha is down, so it is in redial backoff; alpha then starts naming
/// beta and dials it at once, and beta's next redial reaches alpha, so
/// both connections finish their hellos. Alpha's game runs until both
/// nodes have decided and calls have gone on after, whenever beta's
/// redial comes (a fixed number of rounds once ended before it did).
#[test]
fn simultaneous_dials_agree_on_one_connection() {
    let (mut alpha, beta) = with_picked_ports(1, |ports| {
        let peer_a = format!("127.0.0.1:{}", ports[0]);
        // At `debug`, beta logs each call it takes: the test sees the game.
        let beta = NodeProc::start_logging("beta", 0, &["--peer", &peer_a, "--demo"], "debug");
        beta.wait_for_log("created pong", STARTUP);
        beta.wait_for_log("not reachable yet", STARTUP);
        let alpha = NodeProc::try_start_on(
            "alpha",
            ports[0],
            &["--peer", &beta.addr(), "--demo", "--rounds", ENDLESS_ROUNDS],
        )?;
        Some((alpha, beta))
    });
    // Each node holds both connections, so each decides, and both keep
    // the same one.
    for node in [&alpha, &beta] {
        node.wait_for_log("two connections to", STARTUP);
    }
    let mark = beta.log_mark();
    beta.wait_for_count_after(mark, "<- alpha for object", 100, STARTUP);
    interrupt_demo(&mut alpha);
    for (name, log) in [("alpha", alpha.stderr()), ("beta", beta.stderr())] {
        let ties: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("two connections to"))
            .collect();
        assert!(!ties.is_empty(), "{name} never saw two connections:\n{log}");
        for line in ties {
            assert!(line.contains("keeping the one dialled by alpha"), "{line}");
        }
    }
}
