//! Calls per second between two nodes with K chains in flight, or among
//! N nodes all-to-all.
//!
//! ```text
//! cargo run --release --example pair_throughput              # K = 1, 32, 256, 1024
//! AVM_SECONDS=5 cargo run --release --example pair_throughput
//! AVM_NODES=4 cargo run --release --example pair_throughput  # 4 nodes, all-to-all
//! AVM_K=1024 cargo run --release --example pair_throughput   # one K only
//! AVM_SPIN_US=20 cargo run --release --example pair_throughput  # NodeConfig::spin
//! AVM_FLOOR=1 cargo run --release --example pair_throughput  # and the design's floor
//! ```
//!
//! Embedded nodes on loopback. With two (the default), alpha runs K
//! programs at once, each calling an echo object of its own on beta in a
//! loop (its own object, so the K chains never wait for each other's
//! turns). With N, every node is connected to every other, and each runs
//! K programs calling echo objects on the others in turn, so calls cross
//! every link both ways. Every answer is counted. Per K: calls per second
//! over the measured window, and the CPU the process used per wall second
//! (200% is both cores of this machine).
//!
//! With `AVM_FLOOR=1` (two nodes only), each K is then run through the
//! design's floor (`benches/common/design_floor.rs`: the same four threads
//! and hand-offs, moving the same frames with no codec and no vm), and the
//! line ends with avm's rate as a fraction of it, measured minutes apart
//! rather than hours: the machine's speed changes by the hour.

mod common;
// Only the pipelined floor and the frames it sends are used here.
#[allow(dead_code)]
#[path = "../benches/common/design_floor.rs"]
mod design_floor;
#[allow(dead_code)]
#[path = "../benches/common/floor.rs"]
mod floor;

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
    let spin = common::env_u64("AVM_SPIN_US", config.spin.as_micros() as u64);
    config.spin = std::time::Duration::from_micros(spin);
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
    let seconds = common::env_u64("AVM_SECONDS", 3);
    let n = common::env_u64("AVM_NODES", 2).max(2) as usize;
    // Node i dials every node before it: a full mesh.
    let mut nodes: Vec<Arc<Node>> = Vec::new();
    for i in 0..n {
        let peers = nodes.iter().map(|p| p.local_addr().to_string()).collect();
        nodes.push(Arc::new(node(&format!("n{i}"), peers)));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shape = if n == 2 {
        "alpha -> beta".to_string()
    } else {
        format!("{n} nodes, all-to-all")
    };
    println!("pair_throughput: {shape}; {cores} core(s), {seconds} s per K");
    // With two nodes only the first calls (the pair); with more, all do.
    let callers = if n == 2 { 1 } else { n };
    let mut design = (n == 2 && common::env_u64("AVM_FLOOR", 0) == 1)
        .then(|| design_floor::DesignFloor::start(NodeConfig::new("default").spin));
    let ks = match common::env_u64("AVM_K", 0) {
        0 => vec![1usize, 32, 256, 1024],
        k => vec![k as usize],
    };
    for k in ks {
        // Each caller's K chains target echoes on the other nodes in turn.
        let mut plans: Vec<(usize, ObjectId)> = Vec::new();
        for c in 0..callers {
            for j in 0..k {
                let host = (c + 1 + j % (n - 1)) % n;
                let echo = match nodes[host].submit(create_obj("echo")).recv().unwrap() {
                    Ok(Val::ObjectRef(id)) => id,
                    other => panic!("{other:?}"),
                };
                plans.push((c, echo));
            }
        }
        for &(c, echo) in &plans {
            let known = move |vm: &mut avm::vm::Vm| vm.directory().machine_of(echo).is_some();
            while !nodes[c].query(known).recv().unwrap() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        STOP.store(false, Ordering::Relaxed);
        let runs: Vec<_> = plans
            .iter()
            .map(|(c, e)| nodes[*c].submit(pound(*e)))
            .collect();
        std::thread::sleep(Duration::from_millis(300)); // warm up
        let (c0, t0, n0) = (cpu(), Instant::now(), CALLS.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_secs(seconds));
        let (c1, t1, n1) = (cpu(), Instant::now(), CALLS.load(Ordering::Relaxed));
        STOP.store(true, Ordering::Relaxed);
        for run in runs {
            run.recv().unwrap().unwrap();
        }
        let wall = (t1 - t0).as_secs_f64();
        let rate = (n1 - n0) as f64 / wall;
        let floor = match &mut design {
            Some(design) => {
                let floor = design.throughput(k, Duration::from_secs(seconds));
                format!("; design floor {floor:>9.0}, avm x{:.2}", rate / floor)
            }
            None => String::new(),
        };
        println!(
            "  K = {k:>4}{}: {rate:>9.0} calls/s, CPU {:>3.0}%{floor}",
            if callers > 1 { " per node" } else { "" },
            (c1 - c0).as_secs_f64() / wall * 100.0
        );
    }
    // For instruction counts per call (valgrind): every call answered.
    println!("  calls in all: {}", CALLS.load(Ordering::Relaxed));
}
