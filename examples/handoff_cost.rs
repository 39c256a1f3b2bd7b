//! What thread hand-offs cost on this machine, with no I/O at all: the
//! scheduling part of a remote round trip.
//!
//! ```text
//! cargo run --release --example handoff_cost
//! taskset -c 0 target/release/examples/handoff_cost    # every thread on one CPU
//! ```
//!
//! Threads pass a turn counter around; each waits for its turn by
//! yield-spinning (`yield_now` between looks), as avm's threads do after
//! activity. Two patterns:
//!
//! - `2 threads`: a ping-pong, two hops per round.
//! - `avm's 4 threads`: the hops of one remote call, in order: alpha's
//!   interpreter -> alpha's reactor -> beta's reactor -> beta's interpreter
//!   -> beta's reactor -> alpha's reactor -> alpha's interpreter; six hops
//!   per round, of which the two reactor-to-reactor ones stand for the
//!   socket hops (here they cost only a hand-off, no syscall).
//!
//! With more busy threads than CPUs, every hop to a thread that shares a
//! CPU with another spinner waits for that spinner's `yield`: this is the
//! part of `design/1` and `remote/1` (`benches/round_trip.rs`) that no
//! code inside the threads can remove.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// alpha interp = 0, alpha reactor = 1, beta reactor = 2, beta interp = 3.
const REMOTE_CALL: [usize; 6] = [0, 1, 2, 3, 2, 1];
const PING_PONG: [usize; 2] = [0, 1];

/// Runs `rounds` rounds of `order` (thread ids, in turn order); returns
/// nanoseconds per round.
fn ring(order: &'static [usize], rounds: usize) -> f64 {
    let threads = order.iter().max().unwrap() + 1;
    let turn = Arc::new(AtomicUsize::new(0));
    let total = rounds * order.len();
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|me| {
            let turn = Arc::clone(&turn);
            std::thread::spawn(move || loop {
                // ORDERING: Acquire/Release hand the turn (and nothing
                // else) from one thread to the next.
                let t = turn.load(Ordering::Acquire);
                if t >= total {
                    return;
                }
                if order[t % order.len()] == me {
                    turn.store(t + 1, Ordering::Release);
                } else {
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed().as_nanos() as f64 / rounds as f64
}

fn main() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("cpus usable: {cpus}");
    for _ in 0..3 {
        let pp = ring(&PING_PONG, 200_000);
        let rc = ring(&REMOTE_CALL, 50_000);
        println!(
            "2 threads: {:6.0} ns per round ({:5.0} per hop) | avm's 4 threads: {:6.0} ns per round ({:5.0} per hop)",
            pp,
            pp / 2.0,
            rc,
            rc / 6.0
        );
    }
}
