//! What an object costs in memory: hosted, and as a peer's directory entry.
//!
//! ```text
//! cargo run --release --example memory_per_object          # 1,000,000 objects
//! AVM_OBJECTS=200000 cargo run --release --example memory_per_object
//! ```
//!
//! One process, two embedded nodes on loopback. The resident set size is
//! read from `/proc/self/status` before and after the host creates N
//! objects (the cost of a hosted object), then before and after a second
//! node joins and learns all N (the cost of a directory entry, plus what
//! its snapshot left behind). Figures are per object, rounded; the
//! allocator keeps some slack, so they are upper bounds.

use std::time::Duration;

mod common;

use common::{create_on, node};

/// Resident set size in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

fn main() {
    let n: u64 = std::env::var("AVM_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // As avm-node does: memory freed after the snapshot's burst goes back.
    let trimmed =
        std::env::var_os("AVM_GLIBC_DYNAMIC_TRIM").is_none() && avm::heap::return_freed_memory();
    let host = node("host", vec![]);
    std::thread::sleep(Duration::from_millis(100));
    let before = rss();
    create_on(&host, n);
    let hosted = rss();
    let joiner = node("joiner", vec![host.local_addr().to_string()]);
    while (joiner.query(|vm| vm.directory().len()).recv().unwrap() as u64) < n {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let the buffers of the snapshot's burst go back.
    std::thread::sleep(Duration::from_millis(200));
    let joined = rss();
    println!("memory_per_object: {n} objects (heap::return_freed_memory: {trimmed})");
    println!(
        "  hosted object:   {} bytes each (RSS +{} MiB)",
        (hosted - before) / n,
        (hosted - before) >> 20
    );
    println!(
        "  directory entry: {} bytes each (RSS +{} MiB, the joiner's node included)",
        joined.saturating_sub(hosted) / n,
        joined.saturating_sub(hosted) >> 20
    );
    joiner.shutdown();
    host.shutdown();
}
