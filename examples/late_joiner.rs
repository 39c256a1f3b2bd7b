//! How long a node that joins late takes to learn a host's directory.
//!
//! ```text
//! cargo run --release --example late_joiner            # 100,000 objects
//! AVM_OBJECTS=1000000 cargo run --release --example late_joiner
//! ```
//!
//! Two embedded nodes on loopback. The host creates N objects first; then
//! the joiner starts, dials it, and is timed from its start until its
//! directory holds all N (the host's snapshot streams after the
//! handshake, a chunk at a time as the socket takes it).

use std::time::{Duration, Instant};

mod common;

use common::{create_on, node};

fn main() {
    let n: u64 = std::env::var("AVM_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let host = node("host", vec![]);
    let t = Instant::now();
    create_on(&host, n);
    println!(
        "late_joiner: host created {n} objects in {:.2?}",
        t.elapsed()
    );

    let t = Instant::now();
    let joiner = node("joiner", vec![host.local_addr().to_string()]);
    let deadline = t + Duration::from_secs(120);
    loop {
        let known = joiner.query(|vm| vm.directory().len()).recv().unwrap();
        if known as u64 >= n {
            break;
        }
        assert!(Instant::now() < deadline, "only {known} of {n} after 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "late_joiner: the joiner knew all {n} objects {:.2?} after it started",
        t.elapsed()
    );
    joiner.shutdown();
    host.shutdown();
}
