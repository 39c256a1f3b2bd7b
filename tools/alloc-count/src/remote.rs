//! Allocations per steady-state remote round trip, both nodes together.
//!
//! Two nodes in this process on loopback: beta hosts `echo` (answers its
//! input), alpha runs one submitted program making N sequential calls to
//! it. The difference between runs of N1 and N2 calls, divided by
//! N2 - N1, is the cost of one round trip: submitting the program and
//! collecting its result cancel out.
//!
//! Per round trip the values are the input (built on alpha, decoded on
//! beta), the reply (decoded on alpha) and the `Just` box of the answer.
//! With a `Nat` input only the `Just` box needs heap memory; with the
//! PingPong `List[Str, Nat, Nat, ObjectRef]` each of the three copies of
//! the list needs two. Both are counted by building the values alone.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use avm::demo::pingpong::{self, Msg};
use avm::node::{Node, NodeConfig};
use avm::vm::{call, create_obj, done, BehaviorRegistry, ObjectId, Program, PureRegistry, Val};

use crate::{measure, Count};

const N1: u64 = 10_000;
const N2: u64 = 60_000;

/// The object the loop calls; a static so continuations capture nothing.
static TARGET: AtomicU64 = AtomicU64::new(0);

fn target() -> ObjectId {
    // ORDERING: stored before the program is submitted; the submit queue
    // orders the store before this load.
    ObjectId(TARGET.load(Ordering::Relaxed))
}

/// The input carrying countdown `n`: a `Nat`, or a PingPong list.
fn input<const LIST: bool>(n: u64) -> Val {
    if LIST {
        pingpong::msg("Ping", n, 0, ObjectId(0))
    } else {
        Val::Nat(n)
    }
}

/// `n` sequential calls to [`target`]; the input counts down to 0.
fn call_loop<const LIST: bool>(n: u64) -> Program {
    match n {
        0 => done(Val::Nat(0)),
        n => call(target(), input::<LIST>(n - 1)).bind(next_call::<LIST>),
    }
}

fn next_call<const LIST: bool>(answer: Val) -> Program {
    let left = match &answer {
        Val::Just(reply) => match &**reply {
            Val::Nat(n) => Some(*n),
            list => Msg::parse(list).map(|m| m.count),
        },
        _ => None,
    };
    match left {
        Some(0) => done(Val::Nat(0)),
        Some(n) => call(target(), input::<LIST>(n - 1)).bind(next_call::<LIST>),
        None => done(Val::str(format!("unexpected answer {answer}"))),
    }
}

fn run_on(node: &Node, program: Program) -> Val {
    node.submit(program)
        .recv_timeout(Duration::from_secs(60))
        .expect("the program finishes")
        .expect("the program succeeds")
}

/// Allocations and bytes per round trip with the given input shape.
fn per_round_trip<const LIST: bool>(alpha: &Node) -> (f64, f64) {
    assert_eq!(run_on(alpha, call_loop::<LIST>(N1)), Val::Nat(0)); // warm-up
    let c1 = Count::now();
    run_on(alpha, call_loop::<LIST>(N1));
    let (a1, b1) = c1.per(1);
    let c2 = Count::now();
    run_on(alpha, call_loop::<LIST>(N2));
    let (a2, b2) = c2.per(1);
    let n = (N2 - N1) as f64;
    ((a2 - a1) / n, (b2 - b1) / n)
}

pub fn run() {
    let config = |name: &str, peers: Vec<String>| {
        let mut c = NodeConfig::new(name);
        c.bind = IpAddr::from([127, 0, 0, 1]);
        c.peers = peers;
        c
    };
    let mut behaviors = BehaviorRegistry::new();
    behaviors.register_consuming("echo", done);
    let beta = Node::start(config("beta", vec![]), behaviors, PureRegistry::new()).unwrap();
    let alpha = Node::start(
        config("alpha", vec![beta.local_addr().to_string()]),
        BehaviorRegistry::new(),
        PureRegistry::new(),
    )
    .unwrap();
    let Val::ObjectRef(echo) = run_on(&beta, create_obj("echo")) else {
        panic!("create_obj failed");
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    // Until alpha knows echo, the call fails ("object not found"), and
    // `submit` answers that failure as an Err.
    let found = |alpha: &Node| {
        let answer = alpha.submit(call(echo, Val::Nat(0)));
        let answer = answer.recv_timeout(Duration::from_secs(60));
        matches!(answer.expect("the program finishes"), Ok(v) if v != Val::Nothing)
    };
    while !found(&alpha) {
        assert!(Instant::now() < deadline, "alpha never found echo");
        std::thread::sleep(Duration::from_millis(10));
    }
    // ORDERING: see `target`.
    TARGET.store(echo.0, Ordering::Relaxed);

    println!(
        "remote round trip (two nodes in this process, both counted; {} calls):",
        N2 - N1
    );
    let (_, just, just_bytes) = measure(|| black_box(Val::just(Val::Nat(1))));
    let (a, b) = per_round_trip::<false>(&alpha);
    println!(
        "  Nat input: {a:.3} allocations, {b:.1} bytes = values {just} (the answer's Just box, \
         {just_bytes} bytes) + runtime {:.3} allocations, {:.1} bytes",
        a - just as f64,
        b - just_bytes as f64
    );
    let (_, list, list_bytes) = measure(|| black_box(input::<true>(1)));
    let (value, value_bytes) = (3 * list + just, 3 * list_bytes + just_bytes);
    let (a, b) = per_round_trip::<true>(&alpha);
    println!(
        "  PingPong List input: {a:.3} allocations, {b:.1} bytes = values {value} (3 copies of \
         the list + Just, {value_bytes} bytes) + runtime {:.3} allocations, {:.1} bytes",
        a - value as f64,
        b - value_bytes as f64
    );
    alpha.shutdown();
    beta.shutdown();
}
