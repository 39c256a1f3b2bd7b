//! The issue's final check in one run: the two-process PingPong demo's time
//! per remote call against the blocking floor's p50, measured around it.
//!
//! ```text
//! cargo build --release && cargo run --release --example demo_vs_floor
//! cargo run --release --example demo_vs_floor -- --rounds 20000 --spin-us 50
//! taskset -c 0 target/release/examples/demo_vs_floor      # everything on one core
//! ```
//!
//! 1. The floor (`benches/common/floor.rs`): 20,000 blocking std-TCP echoes
//!    of a call frame, p50.
//! 2. `target/release/avm-node` as two processes on loopback: beta
//!    `--demo` on a free port (read back from its log), then alpha
//!    `--demo --rounds N` (default 100,000) dialling it; alpha's line
//!    `elapsed: X ms (Y us per remote call)` gives the time per call.
//! 3. The floor again, so that a change in machine load during the demo
//!    shows as a gap between the two floors.
//!
//! Prints both and the ratio to the mean of the two floor p50s; exits 1
//! when it is above the goal of 0.6. Arguments other than `--rounds N` go
//! to both nodes (e.g. `--spin-us 50`).
//!
//! Beside the floor, and measured around the demo the same way, the
//! design's floor (`benches/common/design_floor.rs`: avm's four threads
//! and hand-offs moving the same frames with no codec and no vm, in this
//! process), so that the demo's gap splits into what the design costs on
//! this machine and what avm adds to it.

#[path = "../benches/common/design_floor.rs"]
mod design_floor;
#[path = "../benches/common/floor.rs"]
mod floor;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use std::time::Duration;

use design_floor::DesignFloor;
use floor::Floor;

const GOAL: f64 = 0.6;
const FLOOR_SAMPLES: usize = 20_000;

fn main() -> ExitCode {
    let mut rounds = 100_000u64;
    let mut node_args = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|r| r.parse().ok())
                    .expect("--rounds N")
            }
            _ => node_args.push(arg),
        }
    }
    let bin = node_binary();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release` first",
        bin.display()
    );

    let spin = spin_of(&node_args);
    let (before, design_before) = (floor_p50(), design_p50(spin));
    let per_call = demo(&bin, rounds, &node_args);
    let (after, design_after) = (floor_p50(), design_p50(spin));
    let floor = (before + after) / 2.0;
    let design = (design_before + design_after) / 2.0;
    let ratio = per_call / floor;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("cores usable: {cores}");
    println!("floor p50: {before:.1} us before the demo, {after:.1} us after (mean {floor:.1})");
    println!(
        "design floor p50: {design_before:.1} us before, {design_after:.1} us after \
         (mean {design:.1}, {:.2}x the floor)",
        design / floor
    );
    println!("demo: {rounds} rounds, {per_call:.1} us per remote call");
    println!(
        "ratio: {ratio:.2}x the floor's p50 (goal <= {GOAL}); {:.2}x the design floor's",
        per_call / design
    );
    if ratio <= GOAL {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `avm-node` next to this example's directory (`target/<profile>/`).
fn node_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|examples| examples.parent())
        .expect("run from target/<profile>/examples")
        .join("avm-node")
}

fn floor_p50() -> f64 {
    let mut floor = Floor::start();
    floor.latencies(1_000); // warm-up
    p50(floor.latencies(FLOOR_SAMPLES))
}

fn design_p50(spin: Duration) -> f64 {
    let mut design = DesignFloor::start(spin);
    design.latencies(1_000); // warm-up
    p50(design.latencies(FLOOR_SAMPLES))
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The nodes' spin: `--spin-us` if given, else `NodeConfig`'s default.
fn spin_of(node_args: &[String]) -> Duration {
    node_args
        .iter()
        .position(|a| a == "--spin-us")
        .and_then(|i| node_args.get(i + 1)?.parse().ok())
        .map_or(avm::node::NodeConfig::new("default").spin, |us| {
            Duration::from_micros(us)
        })
}

/// Runs beta and alpha; alpha's microseconds per remote call.
fn demo(bin: &PathBuf, rounds: u64, node_args: &[String]) -> f64 {
    let mut beta = Command::new(bin)
        .args([
            "--name",
            "beta",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--demo",
        ])
        .args(node_args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start beta");
    let mut log = BufReader::new(beta.stderr.take().unwrap()).lines();
    let addr = log
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| Some(line.split_once("listening on ")?.1.trim().to_owned()))
        .expect("beta logs its address");
    // Keep draining beta's log so that it never blocks on a full pipe.
    let drain = std::thread::spawn(move || log.for_each(drop));

    let alpha = Command::new(bin)
        .args([
            "--name",
            "alpha",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--demo",
        ])
        .args(["--peer", &addr, "--rounds", &rounds.to_string()])
        .args(node_args)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .expect("run alpha");
    let _ = beta.kill();
    let _ = beta.wait();
    let _ = drain.join();
    let stdout = String::from_utf8_lossy(&alpha.stdout);
    assert!(alpha.status.success(), "alpha failed: {stdout}");
    // elapsed: X ms (Y us per remote call)
    stdout
        .lines()
        .find_map(|l| {
            let us = l.strip_prefix("elapsed: ")?.split_once('(')?.1;
            us.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no `elapsed:` line in alpha's output: {stdout}"))
}
