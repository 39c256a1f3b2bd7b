//! How long a two-node deadlock lasts before its victim fails.
//!
//! ```text
//! cargo run --release --example deadlock_latency
//! ```
//!
//! Two embedded nodes on loopback. Object `x` lives on alpha, `y` on beta;
//! each is a `cross` object: called with `[gate, other]` it first calls
//! `gate` (an echo on the other node: one round trip, so that both chains
//! hold their first object before either crosses), then `other`. Chain 1
//! calls `x` with `[gate on beta, y]` while chain 2 calls `y` with
//! `[gate on alpha, x]`: each ends up holding one object and waiting for
//! the other's, a cycle across the two nodes, until the deadlock probe
//! finds it and the victim's call fails. Each round is timed from the two
//! submissions to the last answer, against a round of the same calls made
//! one chain after the other (no cycle).

use std::time::{Duration, Instant};

use avm::node::Node;
use avm::vm::{call, done, BehaviorRegistry, ObjectId, Program, Val};

mod common;

use common::create;

const ROUNDS: usize = 400;

fn cross(input: Val) -> Program {
    let Some([Val::ObjectRef(gate), Val::ObjectRef(other)]) = input.as_list() else {
        return done(Val::Nothing);
    };
    let other = *other;
    call(*gate, Val::Nat(0)).then(call(other, Val::Nat(0)))
}

fn node(name: &str, peers: Vec<String>) -> Node {
    let mut behaviors = BehaviorRegistry::new();
    behaviors.register("cross", cross);
    behaviors.register("echo", done);
    common::node_with(name, peers, behaviors)
}

fn input(gate: ObjectId, other: ObjectId) -> Val {
    Val::List(vec![Val::ObjectRef(gate), Val::ObjectRef(other)])
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let beta = node("beta", vec![]);
    let alpha = node("alpha", vec![beta.local_addr().to_string()]);
    let (x, gate_a) = (create(&alpha, "cross"), create(&alpha, "echo"));
    let (y, gate_b) = (create(&beta, "cross"), create(&beta, "echo"));
    // Until each node knows the other's objects.
    while alpha.query(|vm| vm.directory().len()).recv().unwrap() < 2
        || beta.query(|vm| vm.directory().len()).recv().unwrap() < 2
    {
        std::thread::sleep(Duration::from_millis(5));
    }

    let (mut crossed, mut apart) = (Vec::new(), Vec::new());
    let (mut deadlocks, mut clean) = (0, 0);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let one = alpha.submit(call(x, input(gate_b, y)));
        let two = beta.submit(call(y, input(gate_a, x)));
        let answers = [one.recv().unwrap().unwrap(), two.recv().unwrap().unwrap()];
        let took = t.elapsed();
        // The victim's `cross` answers Nothing (its second call failed).
        let failed = answers
            .iter()
            .filter(|a| **a == Val::just(Val::Nothing))
            .count();
        match failed {
            1 => {
                deadlocks += 1;
                crossed.push(took);
            }
            0 => clean += 1,
            n => panic!("{n} victims in one cycle: {answers:?}"),
        }

        let t = Instant::now();
        alpha
            .submit(call(x, input(gate_b, y)))
            .recv()
            .unwrap()
            .unwrap();
        beta.submit(call(y, input(gate_a, x)))
            .recv()
            .unwrap()
            .unwrap();
        apart.push(t.elapsed());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("deadlock_latency: {ROUNDS} rounds on {cores} core(s)");
    println!(
        "  rounds that deadlocked: {deadlocks} (one victim each); rounds that did not: {clean}"
    );
    if !crossed.is_empty() {
        let (c, a) = (median(&mut crossed), median(&mut apart));
        println!(
            "  two chains crossing, deadlock found and broken: median {:.0} us",
            c.as_secs_f64() * 1e6
        );
        println!(
            "  the same calls one chain after the other:       median {:.0} us",
            a.as_secs_f64() * 1e6
        );
        println!(
            "  ratio: {:.2}x (the cycle costs a few round trips, not a timeout)",
            c.as_secs_f64() / a.as_secs_f64()
        );
    }
    alpha.shutdown();
    beta.shutdown();
}
