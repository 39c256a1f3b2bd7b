//! Calls per second between two nodes with K chains in flight.
//!
//! ```text
//! cargo run --release --example pair_throughput              # K = 1, 32, 256, 1024
//! AVM_SECONDS=5 cargo run --release --example pair_throughput
//! ```
//!
//! Two embedded nodes on loopback. alpha runs K programs at once, each
//! calling an echo object of its own on beta in a loop (its own object, so
//! the K chains never wait for each other's turns); every answer is
//! counted. Per K: calls per second over the measured window, and the CPU
//! the process used per wall second (200% is both cores of this machine).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use avm::node::{Node, NodeConfig};
use avm::vm::{
    call, call_pure, create_obj, done, BehaviorRegistry, ObjectId, Program, PureRegistry, Val,
};

static CALLS: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

/// Calls `echo` until told to stop, counting each answer.
fn pound(echo: ObjectId) -> Program {
    call(echo, Val::Nat(1)).bind(move |_| {
        call_pure("count", Vec::new()).bind(move |go| match go {
            Val::Just(_) => pound(echo),
            _ => done(Val::Nothing),
        })
    })
}

fn node(name: &str, peers: Vec<String>) -> Node {
    let mut behaviors = BehaviorRegistry::new();
    behaviors.register("echo", done);
    let mut pures = PureRegistry::new();
    pures.register("count", |_: &[Val]| {
        // ORDERING: Relaxed: a counter and a flag read for a report.
        CALLS.fetch_add(1, Ordering::Relaxed);
        (!STOP.load(Ordering::Relaxed)).then_some(Val::Nothing)
    });
    let mut config = NodeConfig::new(name);
    config.peers = peers;
    Node::start(config, behaviors, pures).expect("start")
}

/// CPU time this process has used (user + system), from /proc.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn main() {
    let seconds: u64 = std::env::var("AVM_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let beta = node("beta", vec![]);
    let alpha = Arc::new(node("alpha", vec![beta.local_addr().to_string()]));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("pair_throughput: {cores} core(s), {seconds} s per K");
    for k in [1usize, 32, 256, 1024] {
        let echoes: Vec<ObjectId> = (0..k)
            .map(|_| match beta.submit(create_obj("echo")).recv().unwrap() {
                Ok(Val::ObjectRef(id)) => id,
                other => panic!("{other:?}"),
            })
            .collect();
        while alpha.query(|vm| vm.directory().len()).recv().unwrap() < echoes.len() {
            std::thread::sleep(Duration::from_millis(5));
        }
        STOP.store(false, Ordering::Relaxed);
        let runs: Vec<_> = echoes.iter().map(|e| alpha.submit(pound(*e))).collect();
        std::thread::sleep(Duration::from_millis(300)); // warm up
        let (c0, t0, n0) = (cpu(), Instant::now(), CALLS.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_secs(seconds));
        let (c1, t1, n1) = (cpu(), Instant::now(), CALLS.load(Ordering::Relaxed));
        STOP.store(true, Ordering::Relaxed);
        for run in runs {
            run.recv().unwrap().unwrap();
        }
        let wall = (t1 - t0).as_secs_f64();
        println!(
            "  K = {k:>4}: {:>9.0} calls/s, CPU {:>3.0}%",
            (n1 - n0) as f64 / wall,
            (c1 - c0).as_secs_f64() / wall * 100.0
        );
    }
}
