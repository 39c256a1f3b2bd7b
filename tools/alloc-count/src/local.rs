//! Allocations and time per local call through the vm (no threads).
//!
//! Runs single-process PingPong games. Per call a behavior builds its
//! message, `List[Str tag, Nat, Nat, ObjectRef]` (a Vec and a String), and
//! the vm boxes the reply in `Just`: those are the *value* allocations,
//! counted by building the same values alone. The rest is the runtime's
//! (frames, continuations, tables).

use std::hint::black_box;
use std::time::Instant;

use avm::demo::pingpong;
use avm::vm::{
    BehaviorRegistry, MachineId, ObjectId, Output, PureRegistry, TraceMode, Val, Vm, VmConfig,
};

use crate::{measure, Count};

fn game(vm: &mut Vm, out: &mut Vec<Output>, rounds: u64, pong: ObjectId) {
    vm.start_program(pingpong::orchestrator(rounds, pong), 0)
        .unwrap();
    vm.run(out);
    assert!(matches!(
        out.last(),
        Some(Output::Finished { result: Ok(_), .. })
    ));
    out.clear();
}

pub fn run() {
    let mut reg = BehaviorRegistry::new();
    pingpong::register(&mut reg);
    let mut cfg = VmConfig::new(MachineId::new("local"), 1);
    cfg.trace = TraceMode::Counting;
    let mut vm = Vm::new(cfg, reg, PureRegistry::new());
    let pong = vm.create_object("pong").unwrap();
    let mut out = Vec::with_capacity(16);

    // A game of 0 rounds: the fixed cost of a game (tx, create ping, chain).
    let rounds = 1000;
    game(&mut vm, &mut out, rounds, pong); // warm-up: grows frame buffers
    let ((), fixed, fixed_bytes) = measure(|| game(&mut vm, &mut out, 0, pong));

    let games = 200;
    let c0 = Count::now();
    let t0 = Instant::now();
    for _ in 0..games {
        game(&mut vm, &mut out, rounds, pong);
    }
    let elapsed = t0.elapsed();
    let calls = games * rounds; // beyond the fixed game cost
    let (total, bytes) = c0.per(calls);
    let per_call = total - (games * fixed) as f64 / calls as f64;
    let bytes = bytes - (games * fixed_bytes) as f64 / calls as f64;
    // The values of one call, built alone.
    let (_, value, value_bytes) =
        measure(|| black_box(Val::just(pingpong::msg("Ping", 1, 2, pong))));

    println!("local call (vm only): {games} PingPong games x {rounds} rounds, trace Counting");
    println!(
        "  time per local call: {:.0} ns",
        elapsed.as_nanos() as f64 / (games * (rounds + 1)) as f64
    );
    println!("  fixed allocations per game (tx + create + chain): {fixed}");
    println!(
        "  allocations per call: {per_call:.3} = values {value} (List + tag Str + Just) \
         + runtime {:.3}; bytes per call {bytes:.0} (values {value_bytes})",
        per_call - value as f64
    );
}
