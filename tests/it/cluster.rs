//! Three embedded nodes, many chains at once, calls hopping between all
//! three: nested remote calls in every direction, each chain re-entering
//! its objects (on every node) while its outer calls are suspended there,
//! and every answer accounted for. Each chain has objects of its own:
//! objects take turns, so chains crossing shared objects in different
//! orders would deadlock (tests/it/bank.rs covers that).

use std::time::{Duration, Instant};

use avm::node::Node;
use avm::vm::{call, create_obj, done, BehaviorRegistry, Program, Val};

/// `[Nat n, List targets]`: at 0 answers 0; otherwise calls target
/// `n % len` with `[n - 1, targets]` and answers its reply plus one. So
/// the answer is `n`, after `n` nested calls spread over every node.
fn hop(input: Val) -> Program {
    let (n, targets) = match input.as_list() {
        Some([Val::Nat(n), Val::List(targets)]) if !targets.is_empty() => (*n, targets.clone()),
        _ => return done(Val::str("hop: unexpected input")),
    };
    if n == 0 {
        return done(Val::Nat(0));
    }
    let Some(Val::ObjectRef(next)) = targets.get(n as usize % targets.len()).cloned() else {
        return done(Val::str("hop: bad target"));
    };
    call(next, hop_input(n - 1, targets)).bind(|answer| match answer {
        Val::Just(reply) => match *reply {
            Val::Nat(m) => done(Val::Nat(m + 1)),
            other => done(other),
        },
        _ => done(Val::str("hop: call failed")),
    })
}

fn hop_input(n: u64, targets: Vec<Val>) -> Val {
    Val::List(vec![Val::Nat(n), Val::List(targets)])
}

fn start(name: &str, peers: Vec<String>) -> Node {
    let mut behaviors = BehaviorRegistry::new();
    behaviors.register("hop", hop);
    crate::util::embedded(name, peers, behaviors)
}

fn run(node: &Node, program: Program) -> Val {
    node.submit(program)
        .recv_timeout(Duration::from_secs(60))
        .expect("the program finishes")
        .expect("the program succeeds")
}

#[test]
fn many_chains_hop_across_three_nodes() {
    let c = start("c", vec![]);
    let b = start("b", vec![c.local_addr().to_string()]);
    let a = start(
        "a",
        vec![b.local_addr().to_string(), c.local_addr().to_string()],
    );
    let nodes = [&a, &b, &c];
    const CHAINS: usize = 120;
    // Each chain's three hop objects, one on each node.
    let targets: Vec<Vec<Val>> = (0..CHAINS)
        .map(|_| {
            nodes
                .iter()
                .map(|node| match run(node, create_obj("hop")) {
                    Val::ObjectRef(id) => Val::ObjectRef(id),
                    other => panic!("create_obj answered {other}"),
                })
                .collect()
        })
        .collect();

    // Wait until every node knows where every other node's objects are
    // (create_notify): 2 * CHAINS remote objects each.
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in nodes {
        loop {
            let known = node
                .query(|vm| vm.directory().len())
                .recv_timeout(Duration::from_secs(20))
                .unwrap();
            if known >= 2 * CHAINS {
                break;
            }
            assert!(Instant::now() < deadline, "only {known} objects known");
            // Polling, with the deadline above.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // 40 chains per node at once, each 30..70 calls deep across all three.
    let mut pending = Vec::new();
    for (k, chain_targets) in targets.iter().enumerate() {
        let i = k % 3;
        let n = 30 + (k as u64 * 7 + i as u64) % 40;
        let start = chain_targets[i].as_object().unwrap();
        let rx = nodes[i].submit(call(start, hop_input(n, chain_targets.clone())));
        pending.push((n, rx));
    }
    for (n, rx) in pending {
        let answer = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("every chain finishes")
            .expect("and succeeds");
        assert_eq!(answer, Val::just(Val::Nat(n)));
    }
    for node in nodes {
        node.shutdown();
    }
}
