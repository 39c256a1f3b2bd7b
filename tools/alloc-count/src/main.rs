//! Allocations and time per local call through the vm.
//!
//! ```text
//! cd tools/alloc-count && CARGO_TARGET_DIR=../../target cargo run --release --offline
//! ```
//!
//! Runs single-process PingPong games with a counting global allocator and
//! splits allocations into *value* allocations (the ones a behavior makes
//! building its `Val`s: the message list and its tag string, and the
//! `Just` box of each call's answer) and *runtime* allocations (everything
//! else: frames, continuations, tables).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use avm::demo::pingpong;
use avm::vm::{BehaviorRegistry, MachineId, Output, PureRegistry, TraceMode, Vm, VmConfig};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // ORDERING: a statistic read on the same thread; no synchronization.
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // ORDERING: as above.
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    // ORDERING: as above.
    ALLOCS.load(Ordering::Relaxed)
}

fn game(vm: &mut Vm, out: &mut Vec<Output>, rounds: u64, pong: avm::vm::ObjectId) {
    vm.start_program(pingpong::orchestrator(rounds, pong), 0)
        .unwrap();
    vm.run(out);
    assert!(matches!(
        out.last(),
        Some(Output::Finished { result: Ok(_), .. })
    ));
    out.clear();
}

fn main() {
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
    let a0 = allocs();
    game(&mut vm, &mut out, 0, pong);
    let fixed = allocs() - a0;

    let games = 200;
    let a0 = allocs();
    let t0 = Instant::now();
    for _ in 0..games {
        game(&mut vm, &mut out, rounds, pong);
    }
    let elapsed = t0.elapsed();
    let total = allocs() - a0;
    let calls = games * rounds; // beyond the fixed game cost
    let per_call = (total - games * fixed) as f64 / calls as f64;
    // Per call, the behavior builds List[Str, ..] (2 allocations) and the
    // vm boxes the reply in Just (1): 3 value allocations.
    let value = 3.0;
    println!("games: {games} x {rounds} rounds (warm vm, trace Counting)");
    println!(
        "time per local call: {:.0} ns",
        elapsed.as_nanos() as f64 / (games * (rounds + 1)) as f64
    );
    println!("fixed allocations per game (tx + create + chain): {fixed}");
    println!(
        "allocations per local call: {per_call:.3} (value {value:.0}, runtime {:.3})",
        per_call - value
    );
}
