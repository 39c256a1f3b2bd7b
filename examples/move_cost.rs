//! What `move_object` costs, against calls that carry the same bytes, and
//! what a stale directory adds to the first call after a move.
//!
//! ```text
//! cargo run --release --example move_cost
//! AVM_MOVES_KIB=200 AVM_MOVES_MIB=40 AVM_STALE_SAMPLES=1000 cargo run --release --example move_cost
//! RUST_LOG=info cargo run --release --example move_cost     # avm's log, e.g. why a move was refused
//! ```
//!
//! Embedded nodes on loopback (alpha and beta, then gamma for part 2),
//! every figure from one run so that the ratios hold on a noisy machine.
//!
//! 1. **Move against call.** A `cargo` object whose state is one string of
//!    1 KiB (then 1 MiB) moves alpha -> beta, beta -> alpha, ... (each move
//!    submitted on the node that hosts it, so each one is a real move: one
//!    `adopt` round trip carrying the record, then a `move_notify` to the
//!    peer). Each move is timed from `Node::submit` to its answer.
//!    Interleaved with the moves, alpha calls objects on beta with an input
//!    of the same string: `sink` answers a number (the bytes cross once, as
//!    in a move) and `echo` answers its input (the bytes cross twice).
//!    Ratio: move / call of the same bytes. A small call made right after
//!    each move, and one made after the sink and echo calls, show what a
//!    move leaves behind for the next call.
//! 2. **Stale directory.** A small `cargo` object moves alpha <-> beta;
//!    after each move, once gamma's directory has followed it (the
//!    `move_notify`), gamma calls it. On every other sample gamma's
//!    directory is first pointed back at the old home (`follow_move` with
//!    the previous epoch, as if gamma had missed the notice), so the call
//!    goes to the old home, which forwards it to the new one and relays the
//!    answer. Ratio: stale / fresh, medians.
//!
//! Settings: `AVM_MOVES_KIB` (50), `AVM_MOVES_MIB` (10) moves in part 1,
//! `AVM_STALE_SAMPLES` (200, half stale, half fresh) in part 2.

use std::time::{Duration, Instant};

use avm::node::Node;
use avm::vm::{
    call, done, move_object, set_state, BehaviorRegistry, MachineId, ObjectId, Program, Val,
};

mod common;

use common::{create, env_u64};

/// Moves (and calls) of each kind made before timing: the first frames of
/// a size grow the connections' buffers, which later ones reuse.
const WARMUP: usize = 3;

/// The object that moves. A `List` input becomes its state; anything else
/// is answered as it came (part 2's small call).
fn cargo(input: Val) -> Program {
    match input {
        Val::List(state) => set_state(state).then(done(Val::Nothing)),
        other => done(other),
    }
}

/// Answers the size of its input, a `Str`: the payload crosses one way.
fn sink(input: Val) -> Program {
    let len = input.as_str().map_or(0, str::len);
    done(Val::Nat(len as u64))
}

/// A node on loopback (the default bind, a free port, the default cluster
/// key as the other examples use) that knows all three behaviors: a move
/// is refused by a target that does not have the object's behavior.
fn node(name: &str, peers: Vec<String>) -> Node {
    let mut behaviors = BehaviorRegistry::new();
    behaviors.register_consuming("cargo", cargo);
    behaviors.register_consuming("sink", sink);
    behaviors.register_consuming("echo", done);
    common::node_with(name, peers, behaviors)
}

/// Runs `program` on `node`, timed from the submission to the answer.
fn timed(node: &Node, program: Program) -> (Duration, Val) {
    let t = Instant::now();
    let answer = node.submit(program).recv().expect("node running");
    let took = t.elapsed();
    match answer {
        Ok(v) => (took, v),
        Err(e) => panic!("on {}: {e}", node.name()),
    }
}

/// Moves `id` from `from` (which hosts it) to `to`; the time it took.
fn move_timed(from: &Node, id: ObjectId, to: &Node) -> Duration {
    let (took, answer) = timed(from, move_object(id, to.name()));
    assert_eq!(
        answer,
        Val::Bool(true),
        "move of {id} from {} to {} refused (RUST_LOG=info says why)",
        from.name(),
        to.name()
    );
    took
}

/// Blocks until every node sees the others connected: a move needs its
/// target to be a connected peer.
fn until_mesh(nodes: &[&Node]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for a in nodes {
        for b in nodes.iter().filter(|b| b.name() != a.name()) {
            loop {
                let peer = MachineId::new(b.name());
                let up = a.query(move |vm| vm.directory().is_up(&peer));
                if up.recv().unwrap() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} never saw {}",
                    a.name(),
                    b.name()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Blocks until `node`'s directory places `id` on `machine`; its epoch there.
fn until_placed(node: &Node, id: ObjectId, machine: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let want = MachineId::new(machine);
        let placed = node
            .query(move |vm| {
                let d = vm.directory();
                (d.machine_of(id) == Some(&want)).then(|| d.epoch_of(id))
            })
            .recv()
            .unwrap();
        if let Some(epoch) = placed {
            return epoch;
        }
        assert!(
            Instant::now() < deadline,
            "{} never placed {id} on {machine}",
            node.name()
        );
        // Not a sleep: part 2 times the call that comes next, and a
        // pause would let the nodes' threads fall asleep first.
        std::thread::yield_now();
    }
}

/// Median and 90th percentile.
fn stats(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort_unstable();
    (v[v.len() / 2], v[(v.len() * 9 / 10).min(v.len() - 1)])
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// Medians and 90th percentiles of one payload size in part 1.
struct Row {
    label: &'static str,
    n: usize,
    moves: (Duration, Duration),
    sinks: (Duration, Duration),
    echoes: (Duration, Duration),
    /// A small call alpha -> beta made right after the move, and one made
    /// right after the sink and echo calls.
    after_move: (Duration, Duration),
    after_call: (Duration, Duration),
}

/// Part 1 for one payload size: `n` moves of a `bytes`-sized state,
/// interleaved with `n` sink calls and `n` echo calls of the same bytes
/// from alpha.
fn move_vs_call(label: &'static str, bytes: usize, n: usize, alpha: &Node, beta: &Node) -> Row {
    let payload = "x".repeat(bytes);
    let object = create(alpha, "cargo");
    let state = Val::List(vec![Val::Str(payload.clone())]);
    timed(alpha, call(object, state));
    let (sink_on_beta, echo_on_beta) = (create(beta, "sink"), create(beta, "echo"));
    until_placed(alpha, sink_on_beta, beta.name());
    until_placed(alpha, echo_on_beta, beta.name());
    let small = || call(echo_on_beta, Val::Nat(0));

    let mut samples: [Vec<Duration>; 5] = Default::default();
    // Where the object is now, and where it goes next.
    let (mut here, mut there) = (alpha, beta);
    for i in 0..WARMUP + n {
        let moved = move_timed(here, object, there);
        (here, there) = (there, here);
        // The first call after a move is slower than later ones (see the
        // second table): a small call takes that hit, so that the sink
        // and echo figures are those of calls, not of a move's wake.
        let (after_move, _) = timed(alpha, small());
        // The input is copied before the clock starts: building it is
        // the caller's business, not the call's.
        let (to_sink, to_echo) = (
            call(sink_on_beta, Val::Str(payload.clone())),
            call(echo_on_beta, Val::Str(payload.clone())),
        );
        let (sunk, answer) = timed(alpha, to_sink);
        assert_eq!(answer, Val::just(Val::Nat(bytes as u64)), "sink");
        let (echoed, answer) = timed(alpha, to_echo);
        assert!(
            matches!(&answer, Val::Just(v) if v.as_str().map(str::len) == Some(bytes)),
            "echo"
        );
        let (after_call, _) = timed(alpha, small());
        if i >= WARMUP {
            for (kind, took) in [moved, sunk, echoed, after_move, after_call]
                .into_iter()
                .enumerate()
            {
                samples[kind].push(took);
            }
        }
    }
    // The state crossed intact every time.
    let state = here
        .query(move |vm| vm.state(object).map(<[Val]>::to_vec))
        .recv()
        .unwrap();
    assert_eq!(
        state,
        Some(vec![Val::Str(payload)]),
        "state after the moves"
    );
    let [moves, sinks, echoes, after_move, after_call] = samples.map(|mut v| stats(&mut v));
    Row {
        label,
        n,
        moves,
        sinks,
        echoes,
        after_move,
        after_call,
    }
}

/// Part 2: `n` first calls from gamma after a move, alternately through a
/// stale directory and a fresh one; (stale medians, fresh medians).
fn stale_vs_fresh(n: usize, alpha: &Node, beta: &Node, gamma: &Node) -> [(Duration, Duration); 2] {
    let object = create(alpha, "cargo");
    until_placed(gamma, object, alpha.name());
    let (mut stale, mut fresh) = (Vec::new(), Vec::new());
    let (mut here, mut there) = (alpha, beta);
    for i in 0..2 * WARMUP + n {
        move_timed(here, object, there);
        let old_home = MachineId::new(here.name());
        (here, there) = (there, here);
        // Wait for the move_notify, so that it cannot land after the
        // call and so that both kinds of sample start from the same state.
        let epoch = until_placed(gamma, object, here.name());
        let make_stale = i % 2 == 0;
        // One query either way, so both kinds wake gamma's interpreter
        // the same way before the timed call.
        gamma
            .query(move |vm| {
                if make_stale {
                    // As if gamma had missed this move's notice.
                    vm.directory_mut()
                        .follow_move(object, &old_home, epoch.wrapping_sub(1));
                }
            })
            .recv()
            .unwrap();
        let (took, answer) = timed(gamma, call(object, Val::Nat(i as u64)));
        assert_eq!(answer, Val::just(Val::Nat(i as u64)), "probe call");
        if i >= 2 * WARMUP {
            if make_stale {
                stale.push(took);
            } else {
                fresh.push(took);
            }
        }
    }
    [stats(&mut stale), stats(&mut fresh)]
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        avm::logger::init();
    }
    let kib_moves = env_u64("AVM_MOVES_KIB", 50) as usize;
    let mib_moves = env_u64("AVM_MOVES_MIB", 10) as usize;
    let stale_samples = env_u64("AVM_STALE_SAMPLES", 200) as usize;

    // Part 1 on two nodes: a move's notice then goes only to the other
    // end, as the calls it is compared with do.
    let alpha = node("alpha", vec![]);
    let beta = node("beta", vec![alpha.local_addr().to_string()]);
    until_mesh(&[&alpha, &beta]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("move_cost: embedded nodes on loopback, {cores} core(s)");
    println!();

    let rows = [
        move_vs_call("1 KiB", 1 << 10, kib_moves, &alpha, &beta),
        move_vs_call("1 MiB", 1 << 20, mib_moves, &alpha, &beta),
    ];
    println!("## Moving an object alpha <-> beta, against calls alpha -> beta with the same bytes");
    println!();
    println!("| state | moves | move p50 | p90 | sink call p50 | p90 | echo call p50 | p90 | move / sink | move / echo |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let ((m50, m90), (s50, s90), (e50, e90)) = (r.moves, r.sinks, r.echoes);
        println!(
            "| {} | {} | {m50:.2?} | {m90:.2?} | {s50:.2?} | {s90:.2?} | {e50:.2?} | {e90:.2?} | {:.2} | {:.2} |",
            r.label,
            r.n,
            ratio(m50, s50),
            ratio(m50, e50)
        );
    }
    println!();
    println!(
        "sink: the payload goes in, a number comes back (the bytes cross once, as in a move);"
    );
    println!("echo: the payload goes in and comes back (the bytes cross twice).");
    println!();
    println!("| small call alpha -> beta, during | right after a move p50 | p90 | right after calls p50 | p90 | after move / after calls |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        let ((a50, a90), (c50, c90)) = (r.after_move, r.after_call);
        println!(
            "| {} moves | {a50:.2?} | {a90:.2?} | {c50:.2?} | {c90:.2?} | {:.2} |",
            r.label,
            ratio(a50, c50)
        );
    }
    println!();

    // Part 2 needs a third node, gamma, connected to both.
    let gamma = node(
        "gamma",
        vec![
            alpha.local_addr().to_string(),
            beta.local_addr().to_string(),
        ],
    );
    until_mesh(&[&alpha, &beta, &gamma]);
    println!("## First call from gamma after a move: stale directory (old home forwards) vs fresh");
    println!();
    let [(s50, s90), (f50, f90)] = stale_vs_fresh(stale_samples, &alpha, &beta, &gamma);
    println!("| gamma's directory | samples | p50 | p90 |");
    println!("|---|---:|---:|---:|");
    println!(
        "| stale (old home) | {} | {s50:.2?} | {s90:.2?} |",
        stale_samples.div_ceil(2)
    );
    println!(
        "| fresh (new home) | {} | {f50:.2?} | {f90:.2?} |",
        stale_samples / 2
    );
    println!();
    println!("stale / fresh (p50): {:.2}", ratio(s50, f50));

    for node in [gamma, beta, alpha] {
        node.shutdown();
        node.wait();
    }
}
