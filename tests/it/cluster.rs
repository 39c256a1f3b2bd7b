//! Three embedded nodes, many chains at once, calls hopping between all
//! three: nested remote calls in every direction, re-entrance into objects
//! whose chains are suspended, and every answer accounted for.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use avm::node::{Node, NodeConfig};
use avm::vm::{call, create_obj, done, BehaviorRegistry, ObjectId, Program, PureRegistry, Val};

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
    let mut config = NodeConfig::new(name);
    config.bind = IpAddr::from([127, 0, 0, 1]);
    config.peers = peers;
    Node::start(config, behaviors, PureRegistry::new()).unwrap()
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
    let targets: Vec<Val> = nodes
        .iter()
        .map(|node| match run(node, create_obj("hop")) {
            Val::ObjectRef(id) => Val::ObjectRef(id),
            other => panic!("create_obj answered {other}"),
        })
        .collect();

    // Wait until every node can reach every object (create_notify).
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in nodes {
        for t in &targets {
            let Val::ObjectRef(id) = t else {
                unreachable!()
            };
            let probe = || call(*id, hop_input(0, targets.clone()));
            while run(node, probe()) != Val::just(Val::Nat(0)) {
                assert!(
                    Instant::now() < deadline,
                    "object {id} never became reachable"
                );
                // Polling, with the deadline above.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    // 40 chains per node at once, each 30..70 calls deep across all three.
    let mut pending = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for k in 0..40u64 {
            let n = 30 + (k * 7 + i as u64) % 40;
            let start: ObjectId = match &targets[i] {
                Val::ObjectRef(id) => *id,
                _ => unreachable!(),
            };
            let rx = node.submit(call(start, hop_input(n, targets.clone())));
            pending.push((n, rx));
        }
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
