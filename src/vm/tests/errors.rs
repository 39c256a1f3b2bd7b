//! Each error names what it is about, and none takes the vm down.
use super::*;
use crate::vm::ids::COUNTER_MAX;

#[test]
fn unknown_object() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let ghost = ObjectId(42);
    assert_eq!(
        run_program(&mut vm, call(ghost, Val::Nat(1))),
        Ok(Val::Nothing)
    );
    assert_eq!(errors(&vm), [VmError::UnknownObject(ghost)]);
    let err = run_call(&mut vm, ghost, Val::Nat(1)).unwrap_err();
    assert_eq!(err.to_string(), "object not found: 42");
}

#[test]
fn unknown_behavior() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    assert_eq!(
        vm.create_object("nope"),
        Err(VmError::UnknownBehavior("nope".into()))
    );
    let got = run_program(&mut vm, create_obj("nope"));
    assert_eq!(got, Err(VmError::UnknownBehavior("nope".into())));
}

#[test]
fn destroyed_object() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let cell = vm.create_object("cell").unwrap();
    let p = prog! {
        let first <- destroy_obj(cell);
        let second <- destroy_obj(cell);
        let called <- call(cell, Val::Nat(1));
        done(Val::List(vec![first, second, called]))
    };
    let want = Val::List(vec![Val::Bool(true), Val::Bool(false), Val::Nothing]);
    assert_eq!(run_program(&mut vm, p), Ok(want));
    assert_eq!(
        errors(&vm),
        [
            VmError::DestroyedObject(cell),
            VmError::DestroyedObject(cell)
        ]
    );
    assert_eq!(
        run_call(&mut vm, cell, Val::Nat(1)),
        Err(VmError::DestroyedObject(cell))
    );
}

/// "Destroyed" is told from "not found" by the id generator alone: only
/// ids this vm minted in this life can have been destroyed here.
#[test]
fn ids_never_minted_here_are_not_found_not_destroyed() {
    let mut cfg = VmConfig::new(MachineId::new("alpha"), 3);
    cfg.first_counter = 1000;
    let mut vm = Vm::new(cfg, registry(), pures());
    let cell = vm.create_object("cell").unwrap();
    assert_eq!(cell.counter(), 1000);
    let earlier_life = ObjectId((3 << 48) | 999);
    let not_yet = ObjectId((3 << 48) | 1001);
    let other_prefix = ObjectId((4 << 48) | 1000);
    for id in [earlier_life, not_yet, other_prefix] {
        assert_eq!(
            run_call(&mut vm, id, Val::Nat(1)),
            Err(VmError::UnknownObject(id))
        );
    }
    run_program(&mut vm, destroy_obj(cell)).unwrap();
    assert_eq!(
        run_call(&mut vm, cell, Val::Nat(1)),
        Err(VmError::DestroyedObject(cell))
    );
}

/// A chain that nests past `max_depth` has its deepest call fail (it
/// answers `Nothing`) and unwinds normally: bounded memory, no hang.
#[test]
fn recursion_past_max_depth_fails_the_deepest_call() {
    let mut cfg = VmConfig::new(MachineId::new("alpha"), 1);
    cfg.max_depth = 100;
    cfg.trace = TraceMode::Full;
    let mut vm = Vm::new(cfg, registry(), pures());
    let dive = vm.create_object("dive").unwrap();
    let echo = vm.create_object("echo").unwrap();
    let input = Val::List(vec![Val::Nat(1000), Val::ObjectRef(echo)]);
    let mut v = run_call(&mut vm, dive, input).unwrap();
    // Each of the 99 frames above the failed call wraps its answer in `Just`.
    let mut justs = 0;
    while let Val::Just(inner) = v {
        v = *inner;
        justs += 1;
    }
    assert_eq!((justs, v), (99, Val::Nothing));
    assert_eq!(errors(&vm), [VmError::TooDeep(100)]);
}

/// The limit counts the frames of all chains together: two recursions
/// growing side by side (taking turns) stay under it between them.
#[test]
fn the_frame_limit_bounds_all_chains_together() {
    let mut cfg = VmConfig::new(MachineId::new("alpha"), 1);
    cfg.max_depth = 100;
    let mut vm = Vm::new(cfg, registry(), pures());
    let dive = vm.create_object("dive").unwrap();
    let echo = vm.create_object("echo").unwrap();
    for chain in [ChainId(1), ChainId(2)] {
        let input = Val::List(vec![Val::Nat(1000), Val::ObjectRef(echo)]);
        start_call(&mut vm, dive, input, chain);
    }
    let mut out = Vec::new();
    let mut peak = 0;
    while vm.run_for(10, &mut out) {
        peak = peak.max(vm.frames_held());
        assert!(vm.frames_held() <= 100, "{} frames held", vm.frames_held());
    }
    assert!(
        peak > 90,
        "the chains grew side by side to the limit: {peak}"
    );
    assert_eq!(vm.frames_held(), 0);
    let finished = out
        .iter()
        .filter(|o| matches!(o, Output::Finished { result: Ok(_), .. }))
        .count();
    assert_eq!(finished, 2);
}

/// A chain whose root call the frame limit refuses fails with `TooDeep`.
/// It must not finish with `Ok(Nothing)`: a remote caller would take that
/// for the object's answer (`Just(Nothing)`). Only a nested call answers
/// `Nothing`, to its caller.
#[test]
fn a_root_call_past_the_frame_limit_fails_its_chain() {
    let mut cfg = VmConfig::new(MachineId::new("alpha"), 1);
    cfg.max_depth = 4;
    cfg.trace = TraceMode::Full;
    let mut vm = Vm::new(cfg, registry(), pures());
    let dive = vm.create_object("dive").unwrap();
    let echo = vm.create_object("echo").unwrap();
    let far = ObjectId(2 << 48 | 1);
    vm.directory_mut().insert(far, MachineId::new("beta"), None);
    // Chain 1 dives 3 deep, then waits on `far`, holding all 4 frames.
    let input = Val::List(vec![Val::Nat(3), Val::ObjectRef(far)]);
    start_call(&mut vm, dive, input, ChainId(1));
    let mut out = Vec::new();
    vm.run(&mut out);
    let Some(Output::RemoteCall(rc)) = out.pop() else {
        panic!("chain 1 should wait on far: {out:?}")
    };
    assert_eq!(vm.frames_held(), 4);

    // Chain 2's root call finds no frame left: the chain fails.
    start_call(&mut vm, echo, Val::Nat(7), ChainId(2));
    vm.run(&mut out);
    assert_eq!(finished(&mut out, ChainId(2)), Err(VmError::TooDeep(4)));
    assert_eq!(errors(&vm), [VmError::TooDeep(4)]);

    // Chain 1 is untouched, and once it gives its frames back the same
    // call goes through.
    vm.resume(rc.token, Ok(Val::Nat(8))).unwrap();
    vm.run(&mut out);
    let answer = (0..4).fold(Val::Nat(8), |v, _| Val::just(v));
    assert_eq!(finished(&mut out, ChainId(1)), Ok(answer));
    assert_eq!(vm.frames_held(), 0);
    assert_eq!(run_call(&mut vm, echo, Val::Nat(7)), Ok(Val::Nat(7)));
}

/// `n` steps that do nothing (each reads its own id).
fn pad(n: usize) -> Program {
    (0..n).fold(done(Val::Nothing), |p, _| get_self().then(p))
}

/// "add": reads its state (a list with one Nat), waits a few steps, adds
/// its input, writes the sum back: a read-modify-write some 30 steps long.
fn add(input: Val) -> Program {
    prog! {
        let state <- get_state();
        let _waited <- pad(10);
        let n = match (state.as_list(), input.as_nat()) {
            (Some([Val::Nat(n)]), Some(d)) => n + d,
            (_, Some(d)) => d,
            _ => return done(Val::Nothing),
        };
        set_state(vec![Val::Nat(n)]).then(done(Val::Nat(n)))
    }
}

/// A chain's turn is its own `steps`, not what earlier chains left of a
/// shared budget: a read-modify-write shorter than a turn is never cut in
/// the middle (which would lose the update of a chain run in between).
#[test]
fn a_short_read_modify_write_is_not_interleaved() {
    let mut reg = registry();
    reg.register("add", add);
    let mut vm = Vm::new(VmConfig::new(MachineId::new("alpha"), 1), reg, pures());
    let counter = vm.create_object("add").unwrap();
    let steps = 64;
    let adds = 32;
    // Before each add, a program of another length, so that adds start at
    // every offset into a turn.
    for n in 0..adds {
        vm.start_program(pad(n), 1000 + n as u64).unwrap();
        start_call(&mut vm, counter, Val::Nat(1), ChainId(n as u64));
    }
    let mut out = Vec::new();
    while vm.run_for(steps, &mut out) {}
    assert_eq!(
        run_call(&mut vm, counter, Val::Nat(0)),
        Ok(Val::Nat(adds as u64)),
        "an update was lost"
    );
}

/// `run_for` hands the vm back after its step budget; a chain that runs
/// long goes to the back of the queue, so one started after it finishes
/// first.
#[test]
fn run_for_lets_a_short_chain_pass_a_long_one() {
    let mut vm = vm("alpha", 1, TraceMode::Counting);
    let dive = vm.create_object("dive").unwrap();
    let echo = vm.create_object("echo").unwrap();
    let (long, short) = (ChainId(1), ChainId(2));
    // Deep enough to outlast two turns of 1000 steps, shallow enough that
    // its answer (one `Just` per level) drops on a test thread's stack.
    let deep = Val::List(vec![Val::Nat(5_000), Val::ObjectRef(echo)]);
    start_call(&mut vm, dive, deep, long);
    start_call(&mut vm, echo, Val::Nat(7), short);
    let done = |out: &[Output], id: ChainId| {
        out.iter()
            .any(|o| matches!(o, Output::Finished { chain, .. } if *chain == id))
    };
    let mut out = Vec::new();
    let mut turns = 0;
    while !done(&out, short) {
        assert!(
            vm.run_for(1000, &mut out),
            "work left while the long chain runs"
        );
        turns += 1;
        assert!(turns <= 2, "the short chain waited {turns} turns");
    }
    assert!(!done(&out, long));
    vm.run(&mut out);
    assert!(done(&out, long));
}

#[test]
fn counter_exhausted() {
    let mut cfg = VmConfig::new(MachineId::new("alpha"), 3);
    cfg.first_counter = COUNTER_MAX;
    let mut vm = Vm::new(cfg, registry(), pures());
    vm.create_object("cell").unwrap();
    let want = VmError::CounterExhausted(CounterExhausted { prefix: 3 });
    assert_eq!(vm.create_object("cell"), Err(want.clone()));
    // The one chain id left goes to this program; its create fails.
    assert_eq!(run_program(&mut vm, create_obj("cell")), Err(want.clone()));
    assert_eq!(vm.start_program(done(Val::Nothing), 0), Err(want));
}

#[test]
fn unsupported_instruction_in_context() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let got = run_program(&mut vm, get_state());
    assert_eq!(
        got,
        Err(VmError::Unsupported("get_state outside an object"))
    );
    // A remote object's destroy_obj is no longer unsupported: it becomes
    // a `destroy` operation for its node (see tests::reflect).
    let remote = ObjectId(2 << 48 | 1);
    vm.directory_mut()
        .insert(remote, MachineId::new("beta"), None);
    vm.start_program(destroy_obj(remote), 1).unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    let [Output::RemoteCall(rc)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (rc.op, rc.target, &rc.input),
        (Some(RemoteOp::Destroy), remote, &Val::Nothing)
    );
}

#[test]
fn behavior_panic_fails_the_call_not_the_vm() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let boom = vm.create_object("boom").unwrap();
    let later = vm.create_object("boom_later").unwrap();
    let relay = vm.create_object("relay").unwrap();
    // Through a caller: the call answers Nothing.
    assert_eq!(
        run_call(&mut vm, relay, Val::ObjectRef(boom)),
        Ok(Val::Nothing)
    );
    // As the chain root: the chain fails, naming the behavior.
    let got = run_call(&mut vm, later, Val::Nat(0));
    assert_eq!(got, Err(VmError::BehaviorPanicked("boom_later".into())));
    assert_eq!(
        errors(&vm),
        [
            VmError::BehaviorPanicked("boom".into()),
            VmError::BehaviorPanicked("boom_later".into())
        ]
    );
    let got = run_program(&mut vm, call_pure("bad", vec![]));
    assert_eq!(got, Err(VmError::PurePanicked("bad".into())));
    // Still serving.
    let echo = vm.create_object("echo").unwrap();
    assert_eq!(run_call(&mut vm, echo, Val::Nat(8)), Ok(Val::Nat(8)));
}

#[test]
fn get_input_of_a_consuming_behavior_names_it() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let greedy = vm.create_object("greedy").unwrap();
    let got = run_call(&mut vm, greedy, Val::Nat(1));
    assert_eq!(got, Err(VmError::InputNotKept("greedy".into())));
}

#[test]
fn stale_or_unknown_token_is_an_error() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let t = SuspendToken(12345);
    assert_eq!(
        vm.resume(t, Ok(Val::Nothing)),
        Err(VmError::UnknownToken(t))
    );
}

/// A failed call's reason explains a program's `Nothing` only if the
/// program did nothing after it: one that went on to another instruction
/// (here a `whereis` that legitimately answers `Nothing`) finishes with no
/// failure attached, or the node would report that `Nothing` as the old
/// failure.
#[test]
fn a_failure_explains_nothing_once_the_program_went_on() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    let ghost = ObjectId(42);
    let finished = |vm: &mut Vm, program: Program| {
        vm.start_program(program, 7).unwrap();
        let mut out = Vec::new();
        vm.run(&mut out);
        out.into_iter()
            .find_map(|o| match o {
                Output::Finished {
                    result,
                    last_failure,
                    ..
                } => Some((result, last_failure)),
                _ => None,
            })
            .expect("finished")
    };
    let (result, why) = finished(&mut vm, call(ghost, Val::Nat(1)));
    assert_eq!(result, Ok(Val::Nothing));
    assert_eq!(why, Some(VmError::UnknownObject(ghost)));
    let went_on = call(ghost, Val::Nat(1)).bind(|_| whereis("nobody"));
    let (result, why) = finished(&mut vm, went_on);
    assert_eq!(result, Ok(Val::Nothing));
    assert_eq!(why, None, "the failure was left behind");
}

/// `local_calls` counts the calls code running here made to objects
/// here: a program's calls and the calls behaviors make, not the first
/// call of a chain a host starts (a call from another node), whether it
/// entered, failed or was not found.
#[test]
fn local_calls_count_what_this_nodes_code_called() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    let cell = vm.create_object("cell").unwrap();
    let mut out = Vec::new();
    for (i, target) in [cell, ObjectId(1 << 48 | 999)].into_iter().enumerate() {
        let call = StartCall {
            target,
            input: Val::List(vec![Val::str("get")]),
            sender: None,
            chain: None,
        };
        vm.start_call(call, i as u64);
    }
    vm.run(&mut out);
    assert_eq!(vm.local_calls(), 0, "the host's calls");
    let get = || call(cell, Val::List(vec![Val::str("get")]));
    run_program(&mut vm, get().then(get()).then(get())).unwrap();
    assert_eq!(vm.local_calls(), 3);
}
