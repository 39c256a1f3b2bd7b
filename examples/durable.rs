//! What durability costs: acknowledged writes per second with group
//! commit against a bare loop of the store writing the same batches,
//! recovery time, and the PingPong demo with and without a data dir. All
//! figures in one run, so the ratios hold on a noisy machine.
//!
//! ```text
//! cargo run --release --example durable                 # 100k objects recovered
//! AVM_OBJECTS=1000000 cargo run --release --example durable
//! ```
//!
//! Data dirs go under the system temp dir and are removed at the end.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

mod common;

use avm::demo;
use avm::node::{Node, NodeConfig};
use avm::store::{Batch, Store};
use avm::vm::{
    call, done, BehaviorRegistry, ControllerId, ObjectId, ObjectRecord, PureRegistry, Val,
};
use common::create_on;

/// How long each throughput measurement runs.
const RUN: Duration = Duration::from_secs(2);

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("avm-durable-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn behaviors() -> BehaviorRegistry {
    let mut behaviors = BehaviorRegistry::new();
    demo::bank::register(&mut behaviors);
    demo::pingpong::register(&mut behaviors);
    behaviors.register("thing", done);
    behaviors
}

fn start(name: &str, data_dir: Option<&Path>, peers: Vec<String>) -> Node {
    let mut config = NodeConfig::new(name);
    config.data_dir = data_dir.map(Path::to_path_buf);
    config.peers = peers;
    Node::start(config, behaviors(), PureRegistry::new()).expect("start")
}

/// (calls/s, p50, p99, objects per store commit) of deposits, `k` in
/// flight, each to its own account.
fn deposits(node: &Node, k: usize) -> (f64, Duration, Duration, f64) {
    let accounts = demo::bank::open(node, k as u64, 0).expect("accounts");
    let mut in_flight: std::collections::VecDeque<(Instant, Receiver<_>)> = Default::default();
    let mut latencies = Vec::new();
    let before = node.stats().snapshot();
    let started = Instant::now();
    let mut next = 0;
    while started.elapsed() < RUN || !in_flight.is_empty() {
        while started.elapsed() < RUN && in_flight.len() < k {
            let target = accounts[next % k];
            next += 1;
            let program = call(target, demo::bank::deposit(1));
            in_flight.push_back((Instant::now(), node.submit(program)));
        }
        let (sent, answer) = in_flight.pop_front().expect("in flight");
        answer.recv().expect("answer").expect("deposit");
        latencies.push(sent.elapsed());
    }
    let elapsed = started.elapsed();
    let stats = node.stats().snapshot() - before;
    latencies.sort_unstable();
    let per_commit = if stats.store_commits == 0 {
        0.0
    } else {
        stats.store_objects as f64 / stats.store_commits as f64
    };
    (
        latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        per_commit,
    )
}

/// Records/s of a bare loop committing batches of `per_commit` account
/// records (rounded up, at least 1) straight to a store.
fn bare_store(dir: &Path, per_commit: f64) -> f64 {
    let mut store = Store::open(dir, "bare", None, 1).expect("store");
    let n = per_commit.ceil().max(1.0) as u64;
    let mut written = 0u64;
    let mut round = 0u64;
    let started = Instant::now();
    while started.elapsed() < RUN {
        let mut batch = Batch::default();
        for i in 0..n {
            let state = [Val::Nat(round)];
            let record = ObjectRecord {
                behavior: demo::bank::ACCOUNT,
                controller: None::<ControllerId>,
                version: round as u32,
                state: &state,
                epoch: 0,
                leaving: None,
            };
            batch.add(ObjectId(i + 1), Some(record)).expect("encode");
        }
        batch.set_next_counter(n + 1);
        store.commit(&[batch]).expect("commit");
        written += n;
        round += 1;
    }
    written as f64 / started.elapsed().as_secs_f64()
}

fn throughput() {
    println!("## Acknowledged deposits: group commit against the bare store");
    println!();
    println!("| in flight | memory calls/s | durable calls/s | p50 | p99 | objects/commit | bare store records/s | durable / bare |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for k in [1usize, 16, 256] {
        let memory = start("mem", None, vec![]);
        let (mem_rate, ..) = deposits(&memory, k);
        memory.shutdown();
        memory.wait();

        let dir = temp(&format!("calls-{k}"));
        let node = start("vault", Some(&dir), vec![]);
        let (rate, p50, p99, per_commit) = deposits(&node, k);
        node.shutdown();
        node.wait();
        let bare_dir = temp(&format!("bare-{k}"));
        let bare = bare_store(&bare_dir, per_commit);
        println!(
            "| {k} | {mem_rate:.0} | {rate:.0} | {p50:.2?} | {p99:.2?} | {per_commit:.1} | {bare:.0} | {:.2} |",
            rate / bare
        );
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&bare_dir);
    }
    println!();
}

fn recovery(n: u64) {
    let dir = temp("recovery");
    let node = start("keeper", Some(&dir), vec![]);
    let t = Instant::now();
    create_on(&node, n);
    let created = t.elapsed();
    node.shutdown();
    node.wait();
    let size = std::fs::metadata(dir.join(avm::store::FILE_NAME)).map_or(0, |m| m.len());
    let t = Instant::now();
    let node = start("keeper", Some(&dir), vec![]);
    let recovered = t.elapsed();
    let hosted = node.query(|vm| vm.local_objects().count()).recv().unwrap();
    assert_eq!(hosted as u64, n, "every object came back");
    node.shutdown();
    node.wait();
    println!(
        "| {n} | {created:.2?} | {:.1} MiB | {recovered:.2?} |",
        size as f64 / (1 << 20) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Per-call time of the PingPong demo between two nodes.
fn pingpong(durable: bool, rounds: u64) -> Duration {
    let (beta_dir, alpha_dir) = (temp("beta"), temp("alpha"));
    let dirs = durable.then_some((&beta_dir, &alpha_dir));
    let beta = start("beta", dirs.map(|d| d.0.as_path()), vec![]);
    demo::serve(&beta).expect("pong");
    let alpha = start(
        "alpha",
        dirs.map(|d| d.1.as_path()),
        vec![beta.local_addr().to_string()],
    );
    let report = demo::orchestrate(&alpha, rounds, Duration::from_secs(10)).expect("demo");
    assert!(report.succeeded(), "{report}");
    for node in [alpha, beta] {
        node.shutdown();
        node.wait();
    }
    let _ = std::fs::remove_dir_all(&beta_dir);
    let _ = std::fs::remove_dir_all(&alpha_dir);
    // Each round is two calls: ping -> pong, pong -> ping.
    report.elapsed / (2 * rounds as u32)
}

fn main() {
    let n: u64 = std::env::var("AVM_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    throughput();

    println!("## Recovery: objects created, then the node restarted on its data dir");
    println!();
    println!("| objects | created in | store file | restart (load) |");
    println!("|---:|---:|---:|---:|");
    recovery(n);
    println!();

    println!("## PingPong demo, 10,000 rounds");
    println!();
    let memory = pingpong(false, 10_000);
    let durable = pingpong(true, 10_000);
    println!("| nodes | per call |");
    println!("|---|---:|");
    println!("| in memory | {memory:.2?} |");
    println!("| --data-dir on both | {durable:.2?} |");
    println!(
        "\ndurable / memory: {:.2}",
        durable.as_secs_f64() / memory.as_secs_f64()
    );
}
