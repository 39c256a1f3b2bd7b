//! Single-process PingPong through the vm.
//!
//! ```text
//! cargo run --release --example pingpong_local -- 1000000
//! bash -c 'ulimit -s 512; target/release/examples/pingpong_local 1000000'
//! ```
//!
//! Prints the elapsed time, the number of trace events, and, as its last
//! line, `result: <Val>`. Call depth lives in the vm's heap frames, so the
//! run needs no big stack.

use std::time::Instant;

use avm::demo::pingpong;
use avm::vm::{BehaviorRegistry, MachineId, Output, PureRegistry, Vm, VmConfig};

fn main() {
    let rounds: u64 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 1000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("usage: pingpong_local [ROUNDS]: {e}");
            std::process::exit(2);
        }
    };
    let mut reg = BehaviorRegistry::new();
    pingpong::register(&mut reg);
    let mut vm = Vm::new(
        VmConfig::new(MachineId::new("local"), 1),
        reg,
        PureRegistry::new(),
    );
    let pong = vm.create_object("pong").expect("pong is registered");

    let started = Instant::now();
    let chain = vm
        .start_program(pingpong::orchestrator(rounds, pong), 0)
        .expect("fresh vm has ids");
    let mut out = Vec::new();
    vm.run(&mut out);
    let elapsed = started.elapsed();

    let result = out.into_iter().find_map(|o| match o {
        Output::Finished {
            chain: c, result, ..
        } if c == chain => Some(result),
        _ => None,
    });
    // rounds + 1 calls: the orchestrator's call to ping, then one per round.
    let calls = rounds + 1;
    println!(
        "elapsed: {:?} ({:.0} ns per local call)",
        elapsed,
        elapsed.as_nanos() as f64 / calls as f64
    );
    println!("trace events: {}", vm.trace().len());
    match result {
        Some(Ok(v)) => println!("result: {v}"),
        Some(Err(e)) => println!("result: error: {e}"),
        None => println!("result: did not finish"),
    }
}
