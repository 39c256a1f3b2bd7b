//! Round trips: avm's remote call against the blocking floor, in one group.
//!
//! ```text
//! cargo bench --bench round_trip                  # unpinned
//! taskset -c 0 cargo bench --bench round_trip     # every thread on one core
//! AVM_SPIN_US=0,50,100,200 cargo bench --bench round_trip   # spin sweep
//! ```
//!
//! What each case times, per call (criterion group `round_trip`):
//!
//! ```text
//!  floor/1     bench thread ──call frame──▶ echo thread ──reply frame──▶ bench thread
//!              std TcpStream, TCP_NODELAY, one frame at a time (blocking reads)
//!  floor/32    the same with 32 frames in flight (sliding window)
//!  remote/1    alpha/interp ─▶ alpha/reactor ─▶ TCP ─▶ beta/reactor ─▶ beta/interp
//!              (echo) ─▶ beta/reactor ─▶ TCP ─▶ alpha/reactor ─▶ alpha/interp
//!              one chain: ONE submitted program making N sequential calls
//!  remote/32   32 such chains in flight at once
//!  local       a `Vm` driven directly (no threads, no sockets): N local calls
//! ```
//!
//! The floor is the cheapest thing that moves the same bytes: the frames
//! are `avm::codec::encode`d `call` and `call_response` messages, and the
//! echo thread reads a whole frame and answers with one write. Machines
//! differ by more than any change we make, so every result is printed as
//! a ratio to the floor of the same run (a summary after criterion's own
//! output), and a latency pass prints p50/p99 per round trip for floor and
//! remote side by side, in alternating blocks so that noise from other
//! processes lands on both. Last, the CPU an idle pair of nodes uses.
//!
//! The latency pass adds two more floors that split the gap between
//! `floor/1` and `remote/1`: `floor/poll`, the same echo with both ends
//! polling instead of sleeping (the socket hops alone, no wake-ups), and
//! `design/1`, avm's four threads and hand-offs with nothing in them
//! (`common/design_floor.rs`). `design/1` over `floor/1` is what the design
//! costs on this machine; `remote/1` over `design/1` is what our code adds.
//!
//! The remote loop adds no thread hop of its own: the chain's next call
//! is issued by the interpreter that receives the previous reply. Its
//! continuations capture nothing (the target is read from [`TARGET`]),
//! so the only allocations a call makes are the runtime's and the `Just`
//! box of its answer. Per-call times for `remote/1` come from a pure
//! function `lap` that the program calls between calls: it reads the
//! clock on alpha's interpreter thread, so submitting the program and
//! returning its result are not timed.

/// The nodes run on the allocator `avm-node` runs on.
#[global_allocator]
static HEAP: avm::heap::SmallBlocks = avm::heap::SmallBlocks;

#[path = "common/design_floor.rs"]
mod design_floor;
#[path = "common/floor.rs"]
mod floor;
#[path = "common/poll_floor.rs"]
mod poll_floor;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use avm::node::{Node, NodeConfig};
use avm::vm::{
    call, call_pure, create_obj, done, BehaviorRegistry, MachineId, ObjectId, Output, Program,
    PureRegistry, Val, Vm, VmConfig,
};
use design_floor::DesignFloor;
use floor::Floor;
use poll_floor::PollFloor;

/// Chains (or frames) in flight for the throughput cases.
const IN_FLIGHT: usize = 32;
/// Round trips per side in the latency pass, in blocks of [`BLOCK`].
const LATENCY_SAMPLES: usize = 20_000;
const BLOCK: usize = 2_000;

// ---------------------------------------------------------------- programs

/// The object the loops call. A static, so continuations capture nothing
/// and cost no allocation.
static TARGET: AtomicU64 = AtomicU64::new(0);

fn target() -> ObjectId {
    // ORDERING: set before the program is submitted; the submit queue's
    // lock orders the store before this load.
    ObjectId(TARGET.load(Ordering::Relaxed))
}

fn set_target(id: ObjectId) {
    // ORDERING: see `target`.
    TARGET.store(id.0, Ordering::Relaxed);
}

/// `echo`: answers its input (taken by value, so the vm keeps no copy).
fn behaviors() -> BehaviorRegistry {
    let mut b = BehaviorRegistry::new();
    b.register_consuming("echo", done);
    b
}

/// `n` sequential calls to [`target`]; the input counts down to 0.
fn call_loop(n: u64) -> Program {
    match n {
        0 => done(Val::Nat(0)),
        n => call(target(), Val::Nat(n - 1)).bind(next_call),
    }
}

fn next_call(answer: Val) -> Program {
    match answer {
        Val::Just(reply) => match *reply {
            Val::Nat(0) => done(Val::Nat(0)),
            Val::Nat(n) => call(target(), Val::Nat(n - 1)).bind(next_call),
            other => done(Val::str(format!("unexpected reply {other}"))),
        },
        _ => done(Val::str("call failed")),
    }
}

/// Per-call times, taken on the interpreter thread by the pure `lap`.
#[derive(Debug, Default)]
struct Laps {
    last: Option<Instant>,
    remaining: u64,
    samples: Vec<Duration>,
}

impl Laps {
    fn reset(&mut self, calls: u64) {
        self.last = None;
        self.remaining = calls;
        self.samples.clear();
    }

    /// Records the time since the last lap; answers the calls still to make.
    fn lap(&mut self) -> Val {
        let now = Instant::now();
        if let Some(last) = self.last {
            self.samples.push(now - last);
        }
        self.last = Some(now);
        let left = self.remaining;
        self.remaining = left.saturating_sub(1);
        Val::Nat(left)
    }
}

/// `lap`, call, `lap`, call, ... until `lap` answers 0 (see [`Laps::reset`]).
fn lap_loop() -> Program {
    call_pure("lap", Vec::new()).bind(after_lap)
}

fn after_lap(answer: Val) -> Program {
    match answer {
        Val::Just(left) if *left == Val::Nat(0) => done(Val::Nat(0)),
        Val::Just(left) => call(target(), *left).bind(after_call),
        _ => done(Val::str("lap failed")),
    }
}

fn after_call(answer: Val) -> Program {
    match answer {
        Val::Just(_) => lap_loop(),
        _ => done(Val::str("call failed")),
    }
}

// ---------------------------------------------------------------- nodes

/// Two nodes in this process on loopback; beta hosts `echo`.
struct Pair {
    alpha: Node,
    beta: Node,
    echo: ObjectId,
    laps: Arc<Mutex<Laps>>,
}

impl Pair {
    fn start(spin: Option<Duration>) -> Pair {
        let config = |name: &str, peers: Vec<String>| {
            let mut c = NodeConfig::new(name);
            c.bind = IpAddr::from([127, 0, 0, 1]);
            c.peers = peers;
            if let Some(spin) = spin {
                c.spin = spin;
            }
            c
        };
        let laps = Arc::new(Mutex::new(Laps::default()));
        let mut pures = PureRegistry::new();
        let l = Arc::clone(&laps);
        pures.register("lap", move |_| Some(l.lock().unwrap().lap()));
        let beta = Node::start(config("beta", vec![]), behaviors(), PureRegistry::new())
            .expect("start beta");
        let alpha = Node::start(
            config("alpha", vec![beta.local_addr().to_string()]),
            BehaviorRegistry::new(),
            pures,
        )
        .expect("start alpha");
        let echo = match run(&beta, create_obj("echo")) {
            Val::ObjectRef(id) => id,
            other => panic!("create_obj answered {other}"),
        };
        // alpha learns where `echo` lives from beta's create_notify; until
        // then its call fails.
        let deadline = Instant::now() + Duration::from_secs(20);
        while try_run(&alpha, call(echo, Val::Nat(0))).is_err() {
            assert!(Instant::now() < deadline, "alpha never found echo");
            std::thread::sleep(Duration::from_millis(10));
        }
        Pair {
            alpha,
            beta,
            echo,
            laps,
        }
    }

    /// Times `calls` sequential remote calls with `lap`; the per-call samples
    /// stay in `self.laps`.
    fn timed_calls(&self, calls: u64) -> Duration {
        set_target(self.echo);
        self.laps.lock().unwrap().reset(calls);
        assert_eq!(run(&self.alpha, lap_loop()), Val::Nat(0));
        self.laps.lock().unwrap().samples.iter().sum()
    }

    /// `calls` remote calls spread over [`IN_FLIGHT`] chains; the wall time
    /// from the first submit to the last result, scaled to `calls`.
    fn parallel_calls(&self, calls: u64) -> Duration {
        set_target(self.echo);
        let per_chain = calls.div_ceil(IN_FLIGHT as u64);
        let start = Instant::now();
        let results: Vec<_> = (0..IN_FLIGHT)
            .map(|_| self.alpha.submit(call_loop(per_chain)))
            .collect();
        for r in results {
            assert_eq!(r.recv().unwrap(), Ok(Val::Nat(0)));
        }
        start
            .elapsed()
            .mul_f64(calls as f64 / (per_chain * IN_FLIGHT as u64) as f64)
    }

    fn shutdown(self) {
        self.alpha.shutdown();
        self.beta.shutdown();
    }
}

/// Runs `program` on `node` and waits for its value.
fn run(node: &Node, program: Program) -> Val {
    try_run(node, program).expect("the program succeeds")
}

/// Runs `program` on `node` and waits for its result.
fn try_run(node: &Node, program: Program) -> Result<Val, String> {
    node.submit(program)
        .recv_timeout(Duration::from_secs(20))
        .expect("the program finishes")
}

/// A vm with a local `echo`, driven on this thread.
struct Local {
    vm: Vm,
    echo: ObjectId,
    out: Vec<Output>,
}

impl Local {
    fn new() -> Local {
        let config = VmConfig::new(MachineId::new("local"), 1);
        let mut vm = Vm::new(config, behaviors(), PureRegistry::new());
        let echo = vm.create_object("echo").unwrap();
        Local {
            vm,
            echo,
            out: Vec::with_capacity(16),
        }
    }

    fn calls(&mut self, n: u64) -> Duration {
        set_target(self.echo);
        let start = Instant::now();
        self.vm.start_program(call_loop(n), 0).unwrap();
        self.vm.run(&mut self.out);
        let elapsed = start.elapsed();
        assert!(matches!(
            self.out.last(),
            Some(Output::Finished {
                result: Ok(Val::Nat(0)),
                ..
            })
        ));
        self.out.clear();
        elapsed
    }
}

// ---------------------------------------------------------------- the group

/// Per-call times of every criterion sample, by case.
#[derive(Default)]
struct Recorder {
    cases: Vec<(String, Vec<f64>)>,
}

impl Recorder {
    fn record(&mut self, case: &str, iters: u64, elapsed: Duration) -> Duration {
        let per_call = elapsed.as_nanos() as f64 / iters as f64;
        match self.cases.iter_mut().find(|(c, _)| c == case) {
            Some((_, v)) => v.push(per_call),
            None => self.cases.push((case.to_owned(), vec![per_call])),
        }
        elapsed
    }

    /// Median ns per call over the measured samples (criterion calls the
    /// routine for warm-up first, then exactly `SAMPLES` times); `None`
    /// for a case a command-line filter left out.
    fn median(&self, case: &str) -> Option<f64> {
        let (_, v) = self.cases.iter().find(|(c, _)| c == case)?;
        Some(median(&v[v.len().saturating_sub(SAMPLES)..]))
    }
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

const SAMPLES: usize = 20;

/// Spin durations to measure: `AVM_SPIN_US=0,50,100` or, unset, the
/// node's default (`None`).
fn spins() -> Vec<Option<Duration>> {
    match std::env::var("AVM_SPIN_US") {
        Ok(list) => list
            .split(',')
            .map(|us| {
                Some(Duration::from_micros(
                    us.trim().parse().expect("AVM_SPIN_US"),
                ))
            })
            .collect(),
        Err(_) => vec![None],
    }
}

fn suffix(spin: Option<Duration>) -> String {
    spin.map_or(String::new(), |s| format!("/spin={}us", s.as_micros()))
}

fn round_trip(c: &mut Criterion) {
    if std::env::var_os("RUST_LOG").is_none() {
        // The nodes' connection chatter would bury the summary.
        std::env::set_var("RUST_LOG", "warn");
    }
    avm::logger::init();
    let mut rec = Recorder::default();
    let mut floor = Floor::start();
    let mut local = Local::new();
    let spins = spins();
    let pairs: Vec<_> = spins.iter().map(|&s| (suffix(s), Pair::start(s))).collect();

    let mut group = c.benchmark_group("round_trip");
    group
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("floor/1", |b| {
        b.iter_custom(|n| {
            let start = Instant::now();
            for _ in 0..n {
                floor.round_trip();
            }
            rec.record("floor/1", n, start.elapsed())
        })
    });
    for (suffix, pair) in &pairs {
        let case = format!("remote/1{suffix}");
        group.bench_function(&case, |b| {
            b.iter_custom(|n| rec.record(&case, n, pair.timed_calls(n)))
        });
    }
    group.bench_function("floor/32", |b| {
        b.iter_custom(|n| rec.record("floor/32", n, floor.pipelined(n, IN_FLIGHT as u64)))
    });
    for (suffix, pair) in &pairs {
        let case = format!("remote/32{suffix}");
        group.bench_function(&case, |b| {
            b.iter_custom(|n| rec.record(&case, n, pair.parallel_calls(n)))
        });
    }
    group.bench_function("local", |b| {
        b.iter_custom(|n| rec.record("local", n, local.calls(n)))
    });
    group.finish();

    summary(&rec);
    let latencies = latency(&mut floor, &pairs);
    drop(floor);
    for (_, pair) in pairs {
        pair.shutdown();
    }
    print_latency(&latencies);
    idle_cpu();
}

/// The criterion medians as ratios to the floor of this run.
fn summary(rec: &Recorder) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nround_trip summary: {cores} core(s) usable; median of {SAMPLES} samples per case");
    println!(
        "load average now (other processes compete for the cores): {}",
        load.trim()
    );
    println!("{:<24} {:>12}  ratio", "case", "ns/call");
    for (case, _) in &rec.cases {
        let t = rec.median(case).unwrap();
        let ratio = match case.split('/').nth(1) {
            _ if case.starts_with("floor/") => "1 (floor)".to_owned(),
            Some("32") => match rec.median("floor/32") {
                Some(floor) => format!("{:.2}x floor/32 rate", floor / t),
                None => "(floor/32 not run)".to_owned(),
            },
            _ => match rec.median("floor/1") {
                Some(floor) => format!("{:.4}x floor/1 time", t / floor),
                None => "(floor/1 not run)".to_owned(),
            },
        };
        println!("{case:<24} {t:>12.1}  {ratio}");
    }
}

/// Per-round-trip times in us: the three floors', then each pair's.
struct Latencies {
    floor: Vec<f64>,
    poll: Vec<f64>,
    design: Vec<f64>,
    remote: Vec<(String, Vec<f64>)>,
}

/// Round trips timed one by one, floors and remote in alternating blocks.
fn latency(floor: &mut Floor, pairs: &[(String, Pair)]) -> Latencies {
    let mut poll = PollFloor::start();
    let mut design = DesignFloor::start(NodeConfig::new("default").spin);
    let mut lat = Latencies {
        floor: Vec::with_capacity(LATENCY_SAMPLES),
        poll: Vec::with_capacity(LATENCY_SAMPLES),
        design: Vec::with_capacity(LATENCY_SAMPLES),
        remote: pairs
            .iter()
            .map(|(s, _)| (s.clone(), Vec::with_capacity(LATENCY_SAMPLES)))
            .collect(),
    };
    for _ in 0..LATENCY_SAMPLES / BLOCK {
        lat.floor.extend(floor.latencies(BLOCK));
        lat.poll.extend(poll.latencies(BLOCK));
        lat.design.extend(design.latencies(BLOCK));
        for ((_, pair), (_, samples)) in pairs.iter().zip(&mut lat.remote) {
            pair.timed_calls(BLOCK as u64);
            let laps = pair.laps.lock().unwrap();
            samples.extend(laps.samples.iter().map(|d| d.as_nanos() as f64 / 1e3));
        }
    }
    lat
}

fn print_latency(lat: &Latencies) {
    let (p50, p99) = (median(&lat.floor), percentile(&lat.floor, 0.99));
    let design50 = median(&lat.design);
    println!("\nlatency per round trip, {LATENCY_SAMPLES} each, alternating blocks of {BLOCK}");
    println!("{:<24} {:>9} {:>9}", "case", "p50 us", "p99 us");
    println!(
        "{:<24} {p50:>9.1} {p99:>9.1}  the blocking floor",
        "floor/1"
    );
    let row = |case: &str, v: &[f64], what: &str| {
        let (r50, r99) = (median(v), percentile(v, 0.99));
        println!(
            "{case:<24} {r50:>9.1} {r99:>9.1}  p50 {:.2}x, p99 {:.2}x floor/1{what}",
            r50 / p50,
            r99 / p99
        );
    };
    row("floor/poll", &lat.poll, ": the two socket hops alone");
    row(
        "design/1",
        &lat.design,
        ": avm's threads and hand-offs, empty",
    );
    for (suffix, v) in &lat.remote {
        let what = format!("; {:.2}x design/1", median(v) / design50);
        row(&format!("remote/1{suffix}"), v, &what);
    }
}

/// CPU time of this process (all threads), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the parenthesized command: state is 0, utime 11, stime 12.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux ABI std targets.
    Duration::from_millis(ticks * 10)
}

/// Two connected nodes, after one call, left without calls: 1 s to settle,
/// then 3 s measured. Everything else in the process has ended by now.
fn idle_cpu() {
    let pair = Pair::start(None);
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, t0) = (cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    pair.shutdown();
    println!(
        "\nidle: two nodes, {:.1} s without calls: {} ms CPU = {:.2}% of a core (tick 10 ms)",
        wall.as_secs_f64(),
        cpu.as_millis(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
