//! Cluster-wide names across real nodes: beta (an `avm-node` process
//! serving the demo) names its pong `pong`; alpha and gamma (nodes
//! embedded here, on loopback) find it by name, and lose it when beta is
//! killed.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use avm::node::{Node, NodeConfig};
use avm::vm::{whereis, BehaviorRegistry, PureRegistry, Val};

use crate::util::{keyed, NodeProc};

const LIMIT: Duration = Duration::from_secs(20);

fn embedded(name: &str, peer: &str) -> Node {
    let mut config = NodeConfig::new(name);
    config.bind = IpAddr::from([127, 0, 0, 1]);
    config.peers = vec![peer.to_string()];
    keyed(&mut config);
    Node::start(config, BehaviorRegistry::new(), PureRegistry::new()).expect("start")
}

fn lookup(node: &Node, name: &'static str) -> Val {
    node.submit(whereis(name))
        .recv_timeout(LIMIT)
        .expect("an answer")
        .expect("whereis answers")
}

/// Polls `whereis(name)` on `node` until it answers `want`.
fn until(node: &Node, name: &'static str, want: &Val) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = lookup(node, name);
        if got == *want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: whereis({name}) stayed {got}",
            node.name()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_name_on_beta_is_found_from_alpha_and_gamma_and_gone_when_beta_dies() {
    let beta = NodeProc::start("beta", 0, &["--demo"]);
    let pong: u64 = beta
        .log_value("created pong ", LIMIT)
        .parse()
        .expect("pong's id in beta's log");
    let peer = beta.addr();
    let alpha = embedded("alpha", &peer);
    let gamma = embedded("gamma", &peer);
    let found = Val::just(Val::ObjectRef(avm::vm::ObjectId(pong)));
    until(&alpha, "pong", &found);
    until(&gamma, "pong", &found);
    assert_eq!(lookup(&alpha, "nobody"), Val::Nothing);

    drop(beta); // SIGKILL
    until(&alpha, "pong", &Val::Nothing);
    until(&gamma, "pong", &Val::Nothing);
}
