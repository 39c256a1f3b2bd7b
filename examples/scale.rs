//! Memory that comes back: resident memory of a node pair (both in this
//! process) before, during and after 5M short chains, and after 1M
//! objects are created and destroyed.
//!
//! ```text
//! cargo run --release --example scale                  # 5M chains, 1M objects
//! AVM_CHAINS=1000000 AVM_OBJECTS=100000 cargo run --release --example scale
//! AVM_GLIBC_DYNAMIC_TRIM=1 cargo run --release --example scale  # without avm::heap's setting
//! ```
//!
//! A short chain is one submitted program making one remote call: each
//! leaves bookkeeping on both nodes (the caller's chain clock, the
//! callee's inbound table, the vm's chain slab) that must be gone when it
//! ends. 256 chains are in flight at once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

mod common;

use avm::vm::{call, destroy_obj, done, get_machine, ObjectId, Program, Val};
use common::{create_on, node};

/// Resident memory of this process, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Destroys every id in `ids`, one after another.
fn destroy_all(ids: Vec<ObjectId>) -> Program {
    fn next(mut ids: Vec<ObjectId>) -> Program {
        match ids.pop() {
            None => done(Val::Nothing),
            Some(id) => destroy_obj(id).bind(move |_| next(ids)),
        }
    }
    next(ids)
}

/// Chains run before the steady state is measured.
const WARM_UP: u64 = 10_000;

/// Runs `chains` short chains against `thing`, 256 in flight; calls
/// `sample(submitted, rss)` about once a second.
fn run_chains(
    caller: &avm::node::Node,
    thing: ObjectId,
    chains: u64,
    mut sample: impl FnMut(u64, f64),
) {
    let mut in_flight = VecDeque::new();
    let mut next_sample = Instant::now() + Duration::from_secs(1);
    let mut submitted = 0;
    while submitted < chains || !in_flight.is_empty() {
        while submitted < chains && in_flight.len() < 256 {
            in_flight.push_back(caller.submit(call(thing, Val::Nat(submitted))));
            submitted += 1;
        }
        let answer = in_flight.pop_front().expect("in flight").recv().unwrap();
        assert!(answer.is_ok(), "{answer:?}");
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(1);
            sample(submitted, rss_mib());
        }
    }
}

fn main() {
    let chains = common::env_u64("AVM_CHAINS", 5_000_000);
    let objects = common::env_u64("AVM_OBJECTS", 1_000_000);
    // As avm-node does at start-up; AVM_GLIBC_DYNAMIC_TRIM=1 leaves glibc's
    // dynamic trim threshold on, to measure what the setting gives back.
    if common::env_u64("AVM_GLIBC_DYNAMIC_TRIM", 0) == 0 {
        let took = avm::heap::return_freed_memory();
        println!("heap::return_freed_memory: {took}");
    }

    let host = node("host", vec![]);
    let caller = node("caller", vec![host.local_addr().to_string()]);
    let thing = match host.submit(avm::vm::create_obj("thing")).recv().unwrap() {
        Ok(Val::ObjectRef(id)) => id,
        other => panic!("create answered {other:?}"),
    };
    while caller.submit(get_machine(thing)).recv().unwrap() == Ok(Val::Nothing) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let cold = rss_mib();
    // The steady state: both nodes (and this driver) after serving the
    // same traffic briefly, then idle for as long as the burst's "after".
    run_chains(&caller, thing, WARM_UP, |_, _| {});
    std::thread::sleep(Duration::from_secs(5));
    let before = rss_mib();
    println!("## {chains} short chains (256 in flight), RSS of both nodes");
    println!();
    println!("| when | RSS MiB |");
    println!("|---|---:|");
    println!("| cold, before any chain | {cold:.1} |");
    println!("| steady: after {WARM_UP} chains, 5 s idle | {before:.1} |");

    let started = Instant::now();
    let mut peak: f64 = before;
    run_chains(&caller, thing, chains, |submitted, now| {
        peak = peak.max(now);
        println!(
            "| during, {:.0} s, {submitted} chains | {now:.1} |",
            started.elapsed().as_secs_f64()
        );
    });
    let took = started.elapsed();
    let at_end = rss_mib();
    std::thread::sleep(Duration::from_secs(5));
    let after = rss_mib();
    println!("| at the end | {at_end:.1} |");
    println!("| 5 s after | {after:.1} |");
    println!();
    println!(
        "{chains} chains in {took:.1?} ({:.0}/s); peak {peak:.1} MiB; 5 s after: {:.2}x the steady state, {:.2}x cold",
        chains as f64 / took.as_secs_f64(),
        after / before,
        after / cold
    );
    println!();

    println!("## {objects} objects created, then destroyed, on the host");
    println!();
    let before = rss_mib();
    create_on(&host, objects);
    let created = rss_mib();
    let ids: Vec<ObjectId> = host
        .query(|vm| vm.local_objects().map(|(id, _)| id).collect())
        .recv()
        .unwrap();
    drop(host.submit(destroy_all(ids)).recv().unwrap());
    std::thread::sleep(Duration::from_secs(2));
    let destroyed = rss_mib();
    std::thread::sleep(Duration::from_secs(3));
    let settled = rss_mib();
    println!("| when | RSS MiB |");
    println!("|---|---:|");
    println!("| before | {before:.1} |");
    println!("| {objects} created (and known to the caller) | {created:.1} |");
    println!("| all destroyed, 2 s later | {destroyed:.1} |");
    println!("| all destroyed, 5 s later | {settled:.1} |");
    println!();
    println!(
        "after destroying: {:.2}x the RSS before creating 2 s later, {:.2}x 5 s later",
        destroyed / before,
        settled / before
    );
}
