//! What watching costs: the PingPong demo's per-call time with `--http`
//! off, on with nobody looking, on with an `/events` subscriber on each
//! node reading every event, and on with the cluster page's subscription
//! (the calls that cross machines, errors, creates and destroys). The
//! runs alternate, several times, so that the machine's noise lands on
//! all of them.
//!
//! ```text
//! cargo run --release --example observe_overhead          # 20,000 rounds, 5 runs each
//! AVM_ROUNDS=100000 AVM_RUNS=3 cargo run --release --example observe_overhead
//! ```

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use avm::demo;
use avm::node::{Node, NodeConfig};
use avm::vm::{BehaviorRegistry, PureRegistry};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Watch {
    Off,
    HttpIdle,
    StreamAll,
    StreamPage,
}

/// What the cluster page subscribes to (`src/observe/page.html`).
const PAGE_KINDS: &str = "kind=call_out,call_in,error,create,destroy";

fn start(name: &str, watch: Watch, peers: Vec<String>) -> Node {
    let mut behaviors = BehaviorRegistry::new();
    demo::pingpong::register(&mut behaviors);
    let mut config = NodeConfig::new(name);
    config.peers = peers;
    if watch != Watch::Off {
        config.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    Node::start(config, behaviors, PureRegistry::new()).expect("start")
}

/// Reads `/events` from `addr` on a thread of its own until the node
/// closes it, counting the bytes.
fn subscribe(addr: SocketAddr, query: &str, read: Arc<AtomicU64>) {
    let mut stream = TcpStream::connect(addr).expect("connect to /events");
    write!(
        stream,
        "GET /events?{query} HTTP/1.1\r\nHost: bench\r\n\r\n"
    )
    .unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            read.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
}

/// One game; answers the per-call time and the bytes streamed.
fn game(watch: Watch, rounds: u64) -> (Duration, u64) {
    let beta = start("beta", watch, vec![]);
    demo::serve(&beta).expect("pong");
    let alpha = start("alpha", watch, vec![beta.local_addr().to_string()]);
    let streamed = Arc::new(AtomicU64::new(0));
    let query = match watch {
        Watch::StreamAll => Some(""),
        Watch::StreamPage => Some(PAGE_KINDS),
        _ => None,
    };
    if let Some(query) = query {
        for node in [&alpha, &beta] {
            subscribe(
                node.http_addr().expect("http"),
                query,
                Arc::clone(&streamed),
            );
        }
        // Let both subscriptions reach their reactors first.
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = demo::orchestrate(&alpha, rounds, Duration::from_secs(10)).expect("demo");
    assert!(report.succeeded(), "{report}");
    for node in [alpha, beta] {
        node.shutdown();
        node.wait();
    }
    (
        report.elapsed / u32::try_from(rounds).unwrap(),
        streamed.load(Ordering::Relaxed),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let rounds = common::env_u64("AVM_ROUNDS", 20_000);
    let runs = common::env_u64("AVM_RUNS", 5);
    let watches = [
        Watch::Off,
        Watch::HttpIdle,
        Watch::StreamAll,
        Watch::StreamPage,
    ];
    let mut times: [Vec<Duration>; 4] = Default::default();
    let mut streamed = 0;
    for run in 0..runs {
        for (i, watch) in watches.iter().enumerate() {
            let (per_call, bytes) = game(*watch, rounds);
            times[i].push(per_call);
            if *watch == Watch::StreamAll {
                streamed = streamed.max(bytes);
            }
            eprintln!("run {run}: {watch:?} {per_call:.2?} per call");
        }
    }
    let off = median(times[0].clone());
    println!("PingPong, {rounds} rounds, median of {runs} alternating runs, per call:");
    println!("| --http | per call | ÷ off |");
    println!("|---|---:|---:|");
    for (watch, t) in watches.iter().zip(times) {
        let m = median(t);
        println!(
            "| {watch:?} | {m:.2?} | {:.3} |",
            m.as_secs_f64() / off.as_secs_f64()
        );
    }
    println!(
        "(a StreamAll run carried {} KiB of events to its two subscribers)",
        streamed >> 10
    );
}
