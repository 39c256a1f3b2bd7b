//! How long a node that joins late takes to learn a host's directory, and
//! what the host's other callers see meanwhile.
//!
//! ```text
//! cargo run --release --example late_joiner            # 100,000 objects
//! AVM_OBJECTS=1000000 cargo run --release --example late_joiner
//! AVM_HOG=2 cargo run --release --example late_joiner       # the control
//! ```
//!
//! Embedded nodes on loopback. The host creates N objects, and a first
//! joiner is timed learning them with no other traffic (the snapshot
//! streams flat out). Then a client node connects, learns them, and calls
//! one of them, one call at a time, throughout. Its round trips are timed
//! for two seconds with no joiner (the baseline), then while a second
//! joiner learns all N (the host serving calls, its snapshot streams
//! paced: `protocol::SNAPSHOT_PACE`). Printed: both joiners' times to
//! know all N, and the client's p50 and p99 in both windows, with their
//! ratio (issue 16's goal: the p99 during the snapshot within 2x the
//! baseline's).
//!
//! The control, `AVM_HOG=N`: no joiner, but N threads spinning on nothing
//! for 0.8 s, to show what any busy thread does to the client's p99 on
//! this machine (the joiner itself keeps about a core busy while it learns).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use avm::node::Node;
use avm::vm::{call, ObjectId, Val};
use common::{create, create_on, node};

/// Calls `target` from `client` one at a time until `stop`; the round
/// trips, each from submit to answer.
fn probe(client: &Node, target: ObjectId, stop: &AtomicBool) -> Vec<Duration> {
    let mut times = Vec::new();
    // ORDERING: Relaxed: a flag; the thread's join orders the rest.
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let answer = client.submit(call(target, Val::Nat(1))).recv().unwrap();
        times.push(t.elapsed());
        assert!(answer.is_ok(), "{answer:?}");
    }
    times
}

/// The `p`th percentile of `times` (sorted here).
fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort_unstable();
    times[((times.len() - 1) as f64 * p / 100.0).round() as usize]
}

fn main() {
    let n: u64 = std::env::var("AVM_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let host = node("host", vec![]);
    let t = Instant::now();
    create_on(&host, n);
    let target = create(&host, "thing");
    println!(
        "late_joiner: host created {n} objects in {:.2?}",
        t.elapsed()
    );
    // First with no other traffic: the snapshot streams flat out.
    let synced = join(&host, "joiner", n);
    println!("late_joiner: a joiner knew all {n} objects {synced:.2?} after it started (no other traffic)");

    let client = Arc::new(node("client", vec![host.local_addr().to_string()]));
    while (client.query(|vm| vm.directory().len()).recv().unwrap() as u64) < n + 1 {
        std::thread::sleep(Duration::from_millis(5));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (client, stop) = (Arc::clone(&client), Arc::clone(&stop));
        std::thread::spawn(move || probe(&client, target, &stop))
    };
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let mut baseline = prober.join().unwrap();

    stop.store(false, Ordering::Relaxed);
    let prober = {
        let (client, stop) = (Arc::clone(&client), Arc::clone(&stop));
        std::thread::spawn(move || probe(&client, target, &stop))
    };
    let hogs = common::env_u64("AVM_HOG", 0);
    if hogs > 0 {
        let spin = || {
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(800) {
                std::hint::spin_loop();
            }
        };
        let threads: Vec<_> = (0..hogs).map(|_| std::thread::spawn(spin)).collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        stop.store(true, Ordering::Relaxed);
        let mut during = prober.join().unwrap();
        let (b99, d99) = (
            percentile(&mut baseline, 99.0),
            percentile(&mut during, 99.0),
        );
        println!(
            "late_joiner: control, no joiner: the client's p99 {b99:.1?} alone, {d99:.1?} \
             beside {hogs} spinning thread(s) ({} calls); p99 x{:.2}",
            during.len(),
            d99.as_secs_f64() / b99.as_secs_f64()
        );
        return;
    }
    let synced = join(&host, "joiner2", n);
    stop.store(true, Ordering::Relaxed);
    let mut during = prober.join().unwrap();
    println!(
        "late_joiner: a joiner knew all {n} objects {synced:.2?} after it started (the host serving the client's calls)"
    );

    let (b50, b99) = (
        percentile(&mut baseline, 50.0),
        percentile(&mut baseline, 99.0),
    );
    let (d50, d99) = (percentile(&mut during, 50.0), percentile(&mut during, 99.0));
    println!(
        "late_joiner: the client's calls to the host, one at a time: without a joiner \
         p50 {b50:.1?} p99 {b99:.1?} ({} calls); while the snapshot streamed p50 {d50:.1?} \
         p99 {d99:.1?} ({} calls); p99 x{:.2}",
        baseline.len(),
        during.len(),
        d99.as_secs_f64() / b99.as_secs_f64()
    );
    client.shutdown();
    host.shutdown();
}

/// Starts a node `name` that dials `host` and waits until its directory holds
/// the host's `n` objects (and the probe's target); answers how long that
/// took from its start, and shuts it down.
fn join(host: &Node, name: &str, n: u64) -> Duration {
    let t = Instant::now();
    let joiner = node(name, vec![host.local_addr().to_string()]);
    let deadline = t + Duration::from_secs(120);
    loop {
        let known = joiner.query(|vm| vm.directory().len()).recv().unwrap();
        if known as u64 > n {
            break;
        }
        assert!(Instant::now() < deadline, "only {known} of {n} after 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t.elapsed();
    joiner.shutdown();
    took
}
