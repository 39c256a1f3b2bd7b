//! Objects take turns: one call at a time, re-entrance by chain, FIFO
//! waiting, the queue bound, destroy with waiters, deadlocks found here
//! and across vms with one victim, and transactions that isolate.
use super::reentrance::Net;
use super::*;

fn list(items: Vec<Val>) -> Val {
    Val::List(items)
}

/// A chain holding an object while it waits on another vm keeps it: a
/// second chain calling the object waits, and runs after the first.
#[test]
fn a_second_chain_waits_for_a_busy_object_and_runs_after_it() {
    let mut alpha = vm("alpha", 1, TraceMode::Full);
    let remote = ObjectId(2 << 48 | 1);
    alpha
        .directory_mut()
        .insert(remote, MachineId::new("beta"), None);
    let relay = alpha.create_object("relay").unwrap();
    let mut out = Vec::new();
    let input = |n| list(vec![Val::ObjectRef(remote), Val::Nat(n)]);
    start_call(&mut alpha, relay, input(1), ChainId(10));
    start_call(&mut alpha, relay, input(2), ChainId(20));
    alpha.run(&mut out);
    let calls = remote_calls(&mut out);
    assert_eq!(calls.len(), 1, "the second call waits for relay's turn");
    assert_eq!(calls[0].chain, ChainId(10));
    assert_eq!(alpha.waiting_count(), 1);
    alpha.resume(calls[0].token, Ok(Val::Nat(100))).unwrap();
    alpha.run(&mut out);
    assert_eq!(
        finished(&mut out, ChainId(10)),
        Ok(Val::just(Val::Nat(100)))
    );
    // Now the second enters, and sends its own call.
    let Some(Output::RemoteCall(second)) = out.pop() else {
        panic!("the second chain runs after the first: {out:?}")
    };
    assert_eq!(
        (second.chain, second.input.clone()),
        (ChainId(20), Val::Nat(2))
    );
    alpha.resume(second.token, Ok(Val::Nat(200))).unwrap();
    alpha.run(&mut out);
    assert_eq!(
        finished(&mut out, ChainId(20)),
        Ok(Val::just(Val::Nat(200)))
    );
    assert_eq!(alpha.waiting_count(), 0);
}

/// PingPong 1000 rounds deep: pong calls ping back inside the chain ping
/// is serving, and each re-enters its object at once, 500 times each.
#[test]
fn the_same_chain_re_enters_at_depth_1000() {
    let mut net = Net::of(&["alpha", "beta"], TraceMode::Counting);
    let pong = net.create(1, "pong");
    net.start(0, demo::pingpong::orchestrator(1000, pong), 1);
    net.settle();
    assert_eq!(net.result(1), Some(&Ok(demo::pingpong::done_msg(1000))));
    assert!(net.broken.is_empty());
}

/// A -> B -> C -> A -> ... across three vms, in one chain, 30 calls deep.
#[test]
fn a_chain_through_three_vms_and_back_completes() {
    let mut net = Net::of(&["a", "b", "c"], TraceMode::Counting);
    let targets: Vec<Val> = (0..3)
        .map(|i| Val::ObjectRef(net.create(i, "hop")))
        .collect();
    let first = targets[0].as_object().unwrap();
    let input = list(vec![Val::Nat(30), Val::List(targets)]);
    net.start(0, call(first, input), 1);
    net.settle();
    assert_eq!(net.result(1), Some(&Ok(Val::just(Val::Nat(30)))));
}

/// Two chains each hold an object the other waits for, across two vms:
/// one victim fails, the other completes; the victim's call answers
/// Nothing and its chain goes on.
#[test]
fn a_two_chain_cycle_across_vms_has_one_victim() {
    let mut net = Net::of(&["alpha", "beta"], TraceMode::Full);
    let x = net.create(0, "lock");
    let y = net.create(1, "lock");
    let c1 = net.start(0, call(x, Val::ObjectRef(y)), 1);
    let c2 = net.start(1, call(y, Val::ObjectRef(x)), 2);
    net.settle();
    assert_eq!(net.broken.len(), 1, "one victim: {:?}", net.broken);
    let (_, cycle) = &net.broken[0];
    let chains: Vec<ChainId> = cycle.edges.iter().map(|e| e.chain).collect();
    assert!(chains.contains(&c1) && chains.contains(&c2), "{cycle}");
    let objects: Vec<ObjectId> = cycle.edges.iter().map(|e| e.object).collect();
    assert!(objects.contains(&x) && objects.contains(&y), "{cycle}");
    let victim = cycle.victim;
    assert_eq!(victim, c1.max(c2), "the youngest chain");
    let failed = Val::just(Val::pair(Val::str("after"), Val::Nothing));
    let passed = Val::just(Val::pair(Val::str("after"), Val::just(Val::Nat(1))));
    let (v, o) = if victim == c1 { (1, 2) } else { (2, 1) };
    assert_eq!(net.result(v), Some(&Ok(failed)));
    assert_eq!(net.result(o), Some(&Ok(passed)));
    let deadlocks = net
        .vms
        .iter()
        .flat_map(errors)
        .filter(|e| matches!(e, VmError::Deadlock(_)))
        .count();
    assert_eq!(deadlocks, 1, "the victim's error is in the trace");
}

/// The same cycle on one vm is found the moment the second call waits.
#[test]
fn a_local_cycle_is_found_when_the_call_starts_waiting() {
    let mut alpha = vm("alpha", 1, TraceMode::Full);
    let remote = ObjectId(2 << 48 | 1);
    alpha
        .directory_mut()
        .insert(remote, MachineId::new("beta"), None);
    let x = alpha.create_object("lock").unwrap();
    let y = alpha.create_object("lock").unwrap();
    let mut out = Vec::new();
    // c1 holds x, c2 holds y, both wait on beta; then c1 calls y and c2 x.
    let both = |a: ObjectId| list(vec![Val::ObjectRef(remote), Val::ObjectRef(a)]);
    start_call(&mut alpha, x, both(y), ChainId(1));
    start_call(&mut alpha, y, both(x), ChainId(2));
    alpha.run(&mut out);
    let calls: Vec<SuspendToken> = remote_calls(&mut out).iter().map(|rc| rc.token).collect();
    assert_eq!(calls.len(), 2);
    alpha.resume(calls[0], Ok(Val::Nothing)).unwrap();
    alpha.run(&mut out);
    assert!(
        out.iter().all(|o| !matches!(o, Output::DeadlockBroken(_))),
        "not yet a cycle"
    );
    alpha.resume(calls[1], Ok(Val::Nothing)).unwrap();
    alpha.run(&mut out);
    let broken: Vec<&Cycle> = out
        .iter()
        .filter_map(|o| match o {
            Output::DeadlockBroken(c) => Some(&**c),
            _ => None,
        })
        .collect();
    assert_eq!(broken.len(), 1, "{out:?}");
    assert_eq!(broken[0].victim, ChainId(2));
    assert!(broken[0]
        .edges
        .iter()
        .all(|e| e.machine.as_str() == "alpha"));
    assert_eq!(
        finished(&mut out, ChainId(1)),
        Ok(Val::pair(Val::str("after"), Val::just(Val::Nat(1))))
    );
    assert_eq!(
        finished(&mut out, ChainId(2)),
        Ok(Val::pair(Val::str("after"), Val::Nothing))
    );
    assert!(
        matches!(&errors(&alpha)[..], [VmError::Deadlock(c)] if c.victim == ChainId(2)),
        "{:?}",
        errors(&alpha)
    );
}

/// Three chains, three objects on three vms: x -> y -> z -> x.
#[test]
fn a_three_object_cycle_across_three_vms_has_one_victim() {
    let mut net = Net::of(&["a", "b", "c"], TraceMode::Counting);
    let x = net.create(0, "lock");
    let y = net.create(1, "lock");
    let z = net.create(2, "lock");
    net.start(0, call(x, Val::ObjectRef(y)), 1);
    net.start(1, call(y, Val::ObjectRef(z)), 2);
    net.start(2, call(z, Val::ObjectRef(x)), 3);
    net.settle();
    assert_eq!(net.broken.len(), 1, "{:?}", net.broken);
    assert_eq!(net.broken[0].1.edges.len(), 3, "{}", net.broken[0].1);
    let failed = Val::just(Val::pair(Val::str("after"), Val::Nothing));
    let results: Vec<&Val> = (1..=3)
        .map(|o| net.result(o).unwrap().as_ref().unwrap())
        .collect();
    assert_eq!(
        results.iter().filter(|r| ***r == failed).count(),
        1,
        "{results:?}"
    );
}

/// Many chains crossing the same objects in every order, but never in a
/// cycle (each takes its objects in id order): no deadlock is reported.
#[test]
fn heavy_traffic_without_a_cycle_reports_no_deadlock() {
    let mut net = Net::of(&["a", "b", "c"], TraceMode::Counting);
    let mut objects: Vec<ObjectId> = (0..6).map(|i| net.create(i % 3, "hop")).collect();
    objects.sort();
    for origin in 0..60u64 {
        // A chain hopping through a rising run of objects: n calls, each
        // to targets[n % len], so the order is fixed by the list.
        let start = (origin % 3) as usize;
        let run: Vec<Val> = objects[start..start + 3]
            .iter()
            .map(|o| Val::ObjectRef(*o))
            .collect();
        let input = list(vec![Val::Nat(2), Val::List(run.clone())]);
        let first = run[2].as_object().unwrap();
        net.start((origin % 3) as usize, call(first, input), origin + 1);
    }
    net.settle();
    assert!(net.broken.is_empty(), "{:?}", net.broken);
    assert_eq!(net.finished.len(), 60);
    assert!(
        net.vms.iter().all(|vm| vm.chain_ids_tracked() == 0),
        "the chain index empties"
    );
    assert!(
        net.finished
            .iter()
            .all(|(_, r)| *r == Ok(Val::just(Val::Nat(2)))),
        "{:?}",
        net.finished
    );
}

fn relay_holder(alpha: &mut Vm) -> (ObjectId, Vec<Output>) {
    let remote = ObjectId(2 << 48 | 1);
    alpha
        .directory_mut()
        .insert(remote, MachineId::new("beta"), None);
    let relay = alpha.create_object("relay").unwrap();
    let mut out = Vec::new();
    start_call(alpha, relay, Val::ObjectRef(remote), ChainId(1));
    alpha.run(&mut out);
    (relay, out)
}

fn edge(chain: u64, object: ObjectId, machine: &str) -> WaitEdge {
    WaitEdge {
        chain: ChainId(chain),
        object,
        machine: MachineId::new(machine),
    }
}

/// A probe that left beta when chain 1 waited there arrives late: chain 1
/// has since run on and holds `relay` here, which chain 2 waits for. That
/// is no cycle unless chain 1 still waits on beta, so nothing fails here:
/// the probe goes back to beta to be confirmed.
#[test]
fn a_late_probe_is_confirmed_where_its_first_wait_was_before_anything_fails() {
    let mut alpha = vm("alpha", 1, TraceMode::Full);
    let (relay, mut out) = relay_holder(&mut alpha);
    out.clear();
    start_call(&mut alpha, relay, Val::Nat(1), ChainId(2));
    alpha.run(&mut out);
    assert_eq!(alpha.waiting_count(), 1);
    let on_beta = ObjectId(2 << 48 | 9);
    alpha.handle_probe(Probe {
        initiator: ChainId(1),
        blocked: ChainId(2),
        path: vec![edge(1, on_beta, "beta")],
        hops: 1,
    });
    alpha.run(&mut out);
    assert!(
        out.iter().all(|o| !matches!(o, Output::DeadlockBroken(_))),
        "{out:?}"
    );
    assert_eq!(alpha.waiting_count(), 1, "chain 2 still waits");
    let confirm = out.iter().find_map(|o| match o {
        Output::Probe { machine, probe } if probe.initiator == ChainId(1) => {
            Some((machine.as_str(), probe))
        }
        _ => None,
    });
    let (to, probe) = confirm.expect("a probe back to beta");
    assert_eq!((to, probe.blocked), ("beta", ChainId(1)));
    assert_eq!(
        probe.path,
        vec![edge(1, on_beta, "beta"), edge(2, relay, "alpha")]
    );
}

/// At the node of the first wait, a confirming probe closes the cycle
/// only if that wait is still as the path says.
#[test]
fn a_confirming_probe_closes_the_cycle_only_while_the_first_wait_holds() {
    for still_waits in [true, false] {
        // On gamma, chain 1 holds `relay` (suspended on beta), and chain
        // 9 waits for it: the first wait of a probe chain 9 sent.
        let mut gamma = vm("gamma", 3, TraceMode::Full);
        let (relay, mut out) = relay_holder(&mut gamma);
        out.clear();
        start_call(&mut gamma, relay, Val::Nat(1), ChainId(9));
        gamma.run(&mut out);
        assert_eq!(gamma.waiting_count(), 1);
        // The path's holder of relay: chain 1, or (stale) another chain.
        let holder = if still_waits { 1 } else { 7 };
        let on_beta = ObjectId(2 << 48 | 4);
        let path = vec![edge(9, relay, "gamma"), edge(holder, on_beta, "beta")];
        gamma.handle_probe(Probe {
            initiator: ChainId(9),
            blocked: ChainId(9),
            path,
            hops: 2,
        });
        gamma.run(&mut out);
        let cycle_found = out
            .iter()
            .any(|o| matches!(o, Output::DeadlockBroken(_) | Output::Victim { .. }));
        assert_eq!(cycle_found, still_waits, "{out:?}");
    }
}

/// Past the queue bound a call fails at once with `busy` naming the object.
#[test]
fn a_full_queue_refuses_with_busy() {
    let mut cfg = VmConfig::new(MachineId::new("alpha"), 1);
    cfg.max_waiting = 2;
    cfg.trace = TraceMode::Full;
    let mut alpha = Vm::new(cfg, registry(), pures());
    let (relay, mut out) = relay_holder(&mut alpha);
    for chain in 2..=4 {
        start_call(&mut alpha, relay, Val::Nat(1), ChainId(chain));
    }
    alpha.run(&mut out);
    assert_eq!(alpha.waiting_count(), 2);
    assert_eq!(finished(&mut out, ChainId(4)), Err(VmError::Busy(relay)));
    assert!(VmError::Busy(relay)
        .to_string()
        .contains(&relay.to_string()));
}

/// Destroying an object fails the calls waiting for its turn.
#[test]
fn destroy_fails_the_waiting_calls() {
    let mut alpha = vm("alpha", 1, TraceMode::Full);
    let (relay, mut out) = relay_holder(&mut alpha);
    start_call(&mut alpha, relay, Val::Nat(1), ChainId(2));
    alpha.run(&mut out);
    assert_eq!(alpha.waiting_count(), 1);
    let cell = alpha.create_object("cell").unwrap();
    let destroy = list(vec![s("destroy"), Val::ObjectRef(relay)]);
    start_call(&mut alpha, cell, destroy, ChainId(3));
    alpha.run(&mut out);
    assert_eq!(finished(&mut out, ChainId(3)), Ok(Val::Bool(true)));
    assert_eq!(
        finished(&mut out, ChainId(2)),
        Err(VmError::DestroyedObject(relay))
    );
    assert_eq!(alpha.waiting_count(), 0);
}

/// A transaction that observed an object another chain changed before
/// its commit answers false and applies nothing; without the change it
/// commits.
#[test]
fn commit_fails_on_a_version_conflict_and_succeeds_without_one() {
    for interfere in [true, false] {
        let mut alpha = vm("alpha", 1, TraceMode::Full);
        let remote = ObjectId(2 << 48 | 1);
        alpha
            .directory_mut()
            .insert(remote, MachineId::new("beta"), None);
        let cell = alpha.create_object("cell").unwrap();
        let other = alpha.create_object("cell").unwrap();
        let txn = prog! {
            let tx <- begin_tx(None);
            call(cell, list(vec![s("get")]));
            call(other, list(vec![s("set"), Val::Nat(5)]));
            // Suspends: other chains run meanwhile.
            call(remote, Val::Nothing);
            commit_tx(tx.as_tx().unwrap())
        };
        let chain = alpha.start_program(txn, 1).unwrap();
        let mut out = Vec::new();
        alpha.run(&mut out);
        let Some(Output::RemoteCall(rc)) = out.pop() else {
            panic!("{out:?}")
        };
        if interfere {
            let set = list(vec![s("set"), Val::Nat(9)]);
            assert_eq!(run_call(&mut alpha, cell, set), Ok(Val::Bool(true)));
        }
        alpha.resume(rc.token, Ok(Val::Nothing)).unwrap();
        alpha.run(&mut out);
        assert_eq!(finished(&mut out, chain), Ok(Val::Bool(!interfere)));
        let want: &[Val] = if interfere { &[] } else { &[Val::Nat(5)] };
        assert_eq!(alpha.state(other).unwrap(), want);
    }
}

/// A callee that returns with its transaction open fails its call (the
/// caller gets Nothing) and the transaction is aborted.
#[test]
fn a_transaction_left_open_by_a_callee_fails_its_call() {
    let mut alpha = vm("alpha", 1, TraceMode::Full);
    let opener = alpha.create_object("opener").unwrap();
    let p = call(opener, Val::Nothing)
        .bind(|a| begin_tx(None).bind(move |tx| abort_tx(tx.as_tx().unwrap()).then(done(a))));
    assert_eq!(run_program(&mut alpha, p), Ok(Val::Nothing));
    assert!(
        errors(&alpha)
            .iter()
            .any(|e| matches!(e, VmError::TxLeftOpen(_))),
        "{:?}",
        errors(&alpha)
    );
    assert_eq!(alpha.trace().count(EventKind::TransactionAborted), 2);
}

/// An object created in a transaction that is aborted never exists: the
/// turn entry a call inside the transaction made goes with it.
#[test]
fn aborted_transactions_leave_no_turn_entries() {
    let mut alpha = vm("alpha", 1, TraceMode::Counting);
    for _ in 0..3 {
        let p = prog! {
            let tx <- begin_tx(None);
            let o <- create_obj("echo");
            call(o.as_object().unwrap(), Val::Nat(1));
            abort_tx(tx.as_tx().unwrap())
        };
        assert_eq!(run_program(&mut alpha, p), Ok(Val::Bool(true)));
    }
    assert_eq!(alpha.turn_entries(), 0);
}

/// Waits among many chains: finding what a holder waits for is a lookup,
/// not a scan of every chain, so n waiters cost about n, not n². Prints
/// the times (an ignored measurement: `cargo test --release --lib
/// waits_cost -- --ignored --nocapture`); asserts only that doubling n
/// does not quadruple the time.
#[test]
#[ignore]
fn waits_cost_about_linear_in_waiters() {
    let mut times = Vec::new();
    for n in [4_000u64, 8_000, 16_000] {
        let mut cfg = VmConfig::new(MachineId::new("alpha"), 1);
        cfg.max_waiting = 1 << 20;
        let mut alpha = Vm::new(cfg, registry(), pures());
        let remote = ObjectId(2 << 48 | 1);
        alpha
            .directory_mut()
            .insert(remote, MachineId::new("beta"), None);
        let mut out = Vec::new();
        // n chains suspended on beta, each holding its own relay.
        for c in 0..n {
            let r = alpha.create_object("relay").unwrap();
            start_call(&mut alpha, r, Val::ObjectRef(remote), ChainId(100 + c));
        }
        let hot = alpha.create_object("relay").unwrap();
        start_call(&mut alpha, hot, Val::ObjectRef(remote), ChainId(1));
        alpha.run(&mut out);
        out.clear();
        let t = std::time::Instant::now();
        for c in 0..n {
            start_call(&mut alpha, hot, Val::Nat(1), ChainId(1_000_000 + c));
        }
        alpha.run(&mut out);
        let took = t.elapsed();
        eprintln!("{n} waiters among {} chains: {took:?}", 2 * n);
        times.push(took);
    }
    assert!(times[2] < times[0] * 8, "{times:?}");
}

/// After mass destruction the objects map (and each object's turn entry)
/// gives its memory back.
#[test]
fn memory_comes_back_after_mass_destruction() {
    let mut alpha = vm("alpha", 1, TraceMode::Counting);
    let ids: Vec<ObjectId> = (0..20_000)
        .map(|_| alpha.create_object("echo").unwrap())
        .collect();
    let killer = alpha.create_object("cell").unwrap();
    for id in &ids {
        // A call first, so each object has a turn entry too.
        assert_eq!(run_call(&mut alpha, *id, Val::Nat(1)), Ok(Val::Nat(1)));
    }
    let grown = alpha.object_capacity();
    assert!(grown >= 20_000);
    for id in &ids {
        let destroy = list(vec![s("destroy"), Val::ObjectRef(*id)]);
        assert_eq!(run_call(&mut alpha, killer, destroy), Ok(Val::Bool(true)));
    }
    assert!(
        alpha.object_capacity() < grown / 8,
        "{} of {grown}",
        alpha.object_capacity()
    );
    assert!(
        alpha.turn_entries() <= 1,
        "only the killer's turn entry may stay"
    );
}

/// A burst of calls served at once reuses finished chains' buffers (up
/// to 1,024 kept), and an idle vm gives the burst's tables back.
#[test]
fn a_burst_of_chains_is_given_back_when_idle() {
    let mut alpha = vm("alpha", 1, TraceMode::Counting);
    let echo = alpha.create_object("echo").unwrap();
    let mut out = Vec::new();
    for round in 0..2 {
        for c in 0..600 {
            start_call(
                &mut alpha,
                echo,
                Val::Nat(c),
                ChainId(10_000 * (round + 1) + c),
            );
        }
        alpha.run(&mut out);
        let answered = out
            .iter()
            .filter(|o| matches!(o, Output::Finished { result: Ok(_), .. }))
            .count();
        assert_eq!(answered, 600);
        out.clear();
    }
    let (spares, slots) = alpha.spare_and_chain_slots();
    assert!(spares >= 600, "the burst's chains kept for reuse: {spares}");
    assert!(slots >= 600, "{slots}");
    alpha.release_idle_memory();
    let (spares, slots) = alpha.spare_and_chain_slots();
    assert!(spares <= 32, "{spares}");
    assert!(slots <= 64, "{slots}");
    // And it serves on as before.
    assert_eq!(run_call(&mut alpha, echo, Val::Nat(7)), Ok(Val::Nat(7)));
}

/// A deep chain's buffers are kept whole for the next (up to 4,096 slots):
/// steady traffic of deep chains does not reallocate them each time.
#[test]
fn a_deep_chain_leaves_its_buffers_whole() {
    let mut alpha = vm("alpha", 1, TraceMode::Counting);
    let dive = alpha.create_object("dive").unwrap();
    let echo = alpha.create_object("echo").unwrap();
    let input = Val::List(vec![Val::Nat(40), Val::ObjectRef(echo)]);
    // 40 calls of dive and echo's, each answer wrapped once more.
    let mut want = Val::Nat(0);
    for _ in 0..=40 {
        want = Val::just(want);
    }
    assert_eq!(run_call(&mut alpha, dive, input), Ok(want));
    assert!(
        alpha.spare_frame_slots() > 40,
        "{}",
        alpha.spare_frame_slots()
    );
}
