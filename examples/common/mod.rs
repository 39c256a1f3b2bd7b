//! What the examples share: nodes that host plain `thing` objects, a
//! program that creates them in bulk, and settings from the environment.
//! Each example uses a part of it.
#![allow(dead_code)]

use avm::node::{Node, NodeConfig};
use avm::vm::{create_obj, done, BehaviorRegistry, ObjectId, Program, PureRegistry, Val};

/// The examples run on the allocator `avm-node` runs on, so what they
/// measure (calls per second, RSS) is what the node does.
#[global_allocator]
static HEAP: avm::heap::SmallBlocks = avm::heap::SmallBlocks;

/// Objects created per submitted program: large enough to amortise the
/// handoff, small enough that progress is visible.
pub const BATCH: u64 = 10_000;

/// A program that creates `n` `thing` objects, one after another.
pub fn create_many(n: u64) -> Program {
    if n == 0 {
        return done(Val::Nothing);
    }
    create_obj("thing").bind(move |_| create_many(n - 1))
}

/// Creates `n` `thing` objects on `node`, [`BATCH`] per submitted program.
pub fn create_on(node: &Node, n: u64) {
    let mut left = n;
    while left > 0 {
        let batch = left.min(BATCH);
        node.submit(create_many(batch)).recv().unwrap().unwrap();
        left -= batch;
    }
}

/// A node on loopback (the default bind) that knows the `thing` behavior.
pub fn node(name: &str, peers: Vec<String>) -> Node {
    let mut behaviors = BehaviorRegistry::new();
    behaviors.register("thing", done);
    node_with(name, peers, behaviors)
}

/// A node on loopback (the default bind) with these behaviors.
pub fn node_with(name: &str, peers: Vec<String>, behaviors: BehaviorRegistry) -> Node {
    let mut config = NodeConfig::new(name);
    config.peers = peers;
    Node::start(config, behaviors, PureRegistry::new()).expect("start")
}

/// Creates one object of `behavior` on `node`.
pub fn create(node: &Node, behavior: &'static str) -> ObjectId {
    match node.submit(create_obj(behavior)).recv().unwrap() {
        Ok(Val::ObjectRef(id)) => id,
        other => panic!("create {behavior} on {}: {other:?}", node.name()),
    }
}

/// The number in environment variable `key`, or `default`.
pub fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
