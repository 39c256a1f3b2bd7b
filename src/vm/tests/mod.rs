//! Scenario tests for the interpreter, driven by hand as a node would.
mod changes;
mod errors;
mod layers;
mod moves;
mod names;
mod pingpong;
mod reentrance;
mod reflect;
mod turns;
mod tx;

use crate::demo;
use crate::prog;
use crate::vm::*;

/// Every behavior the scenarios use.
pub(super) fn registry() -> BehaviorRegistry {
    let mut reg = BehaviorRegistry::new();
    demo::pingpong::register(&mut reg);
    demo::battleship::register(&mut reg);
    // "cell": ["set", v..] writes its state, ["get"] reads it,
    // ["destroy", id] / ["transfer", id, Nat c] / ["create", Str b] act on others.
    reg.register("cell", |input: Val| {
        let Val::List(mut items) = input else {
            return done(Val::Nothing);
        };
        let rest = items.split_off(1);
        match (items[0].as_str().unwrap_or(""), &rest[..]) {
            ("set", _) => set_state(rest),
            ("get", _) => get_state(),
            ("destroy", [Val::ObjectRef(id)]) => destroy_obj(*id),
            ("transfer", [Val::ObjectRef(id), Val::Nat(c)]) => transfer_obj(*id, ControllerId(*c)),
            ("create", [Val::Str(b)]) => create_obj(b.clone()),
            _ => done(Val::Nothing),
        }
    });
    // "relay": calls the object its input names, answering the call's answer.
    reg.register("relay", |input: Val| match input {
        Val::ObjectRef(to) => call(to, Val::Nat(1)),
        Val::List(items) => match &items[..] {
            [Val::ObjectRef(to), v] => call(*to, v.clone()),
            _ => done(Val::Nothing),
        },
        _ => done(Val::Nothing),
    });
    reg.register("echo", done);
    // "tx_across": [ObjectRef far]: begins a transaction, writes its own
    // state in it, calls `far`, then commits, answering the commit's word.
    reg.register("tx_across", |input: Val| {
        let Val::ObjectRef(far) = input else {
            return done(Val::Nothing);
        };
        prog! {
            let tx <- begin_tx(None);
            set_state(vec![Val::Nat(9)]);
            call(far, Val::Nat(1));
            commit_tx(tx.as_tx().unwrap())
        }
    });
    // "tally": counts its calls in its state and answers the count; given
    // an ObjectRef, calls it first (holding its turn while that runs).
    reg.register("tally", |input: Val| {
        let first = match input {
            Val::ObjectRef(o) => call(o, Val::Nat(1)),
            _ => done(Val::Nothing),
        };
        first.then(get_state().bind(|state| {
            let n = match state.as_list() {
                Some([Val::Nat(n)]) => n + 1,
                _ => 1,
            };
            set_state(vec![Val::Nat(n)]).then(done(Val::Nat(n)))
        }))
    });
    // "mover": [ObjectRef id, Str machine] moves id there (under this
    // object's controller); [Str machine] moves itself.
    reg.register("mover", |input: Val| match input.as_list() {
        Some([Val::ObjectRef(id), Val::Str(m)]) => move_object(*id, m.as_str()),
        Some([Val::Str(m)]) => {
            let m = m.clone();
            get_self().bind(move |me| move_object(me.as_object().unwrap(), m))
        }
        _ => done(Val::Nothing),
    });
    // "dive": [Nat n, ObjectRef far] calls itself n times, then `far`.
    reg.register_consuming("dive", |input: Val| match input.as_list() {
        Some([Val::Nat(0), Val::ObjectRef(far)]) => call(*far, Val::Nat(0)),
        Some([Val::Nat(n), far]) => {
            let next = Val::List(vec![Val::Nat(n - 1), far.clone()]);
            get_self().bind(move |me| call(me.as_object().unwrap(), next))
        }
        _ => done(Val::Nothing),
    });
    reg.register("inspect", |_| {
        prog! {
            let input <- get_input();
            let sender <- get_sender();
            let me <- get_self();
            let here <- get_current_machine();
            done(Val::List(vec![input, sender, me, here]))
        }
    });
    // "lock": Nat n answers n; ObjectRef o calls o (holding this object's
    // turn while it waits) and answers ["after", o's answer].
    // [ObjectRef a, ObjectRef b] calls a, then b, answering ["after", b's answer].
    reg.register("lock", |input: Val| match input {
        Val::ObjectRef(o) => call(o, Val::Nat(1)).bind(|a| done(Val::pair(Val::str("after"), a))),
        Val::List(items) => match &items[..] {
            [Val::ObjectRef(a), Val::ObjectRef(b)] => {
                let b = *b;
                call(*a, Val::Nat(1))
                    .then(call(b, Val::Nat(1)).bind(|a| done(Val::pair(Val::str("after"), a))))
            }
            _ => done(Val::Nothing),
        },
        other => done(other),
    });
    // "hop": [Nat n, List targets] calls targets[n % len] with n - 1 until
    // 0, answering n: n nested calls in one chain.
    reg.register("hop", |input: Val| {
        let Some([Val::Nat(n), Val::List(targets)]) = input.as_list() else {
            return done(Val::Nothing);
        };
        if *n == 0 {
            return done(Val::Nat(0));
        }
        let n = *n;
        let Some(Val::ObjectRef(next)) = targets.get(n as usize % targets.len()).cloned() else {
            return done(Val::Nothing);
        };
        let rest = Val::List(vec![Val::Nat(n - 1), Val::List(targets.clone())]);
        call(next, rest).bind(move |a| match a {
            Val::Just(inner) if matches!(*inner, Val::Nat(_)) => done(Val::Nat(n)),
            other => done(other),
        })
    });
    // "opener": begins a transaction and returns with it open.
    reg.register("opener", |_| begin_tx(None));
    reg.register("boom", |_| panic!("boom behaves badly"));
    reg.register("boom_later", |_| {
        get_self().bind(|_| panic!("continuation panics"))
    });
    reg.register_consuming("greedy", |_| get_input());
    reg
}

pub(super) fn pures() -> PureRegistry {
    let mut p = PureRegistry::new();
    p.register("add", |args: &[Val]| match args {
        [Val::Nat(a), Val::Nat(b)] => a.checked_add(*b).map(Val::Nat),
        _ => None,
    });
    p.register("bad", |_: &[Val]| panic!("pure panics"));
    p
}

pub(super) fn vm(name: &str, prefix: u16, mode: TraceMode) -> Vm {
    let mut cfg = VmConfig::new(MachineId::new(name), prefix);
    cfg.trace = mode;
    Vm::new(cfg, registry(), pures())
}

/// Start `program`, run, and return its result (it must not suspend).
pub(super) fn run_program(vm: &mut Vm, program: Program) -> Result<Val, VmError> {
    let chain = vm.start_program(program, 99).unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    finished(&mut out, chain)
}

/// Queue a host call of `target` (no sender) as chain `chain`, whose
/// number is also its origin.
pub(super) fn start_call(vm: &mut Vm, target: ObjectId, input: Val, chain: ChainId) {
    let call = StartCall {
        target,
        input,
        sender: None,
        chain: Some(chain),
    };
    vm.start_call(call, chain.0);
}

/// Start a host call of `target`, run, and return its result.
/// An `adopt` record of a `tally` at `epoch`, as an old home sends it
/// (its first four fields are a `fetch` answer's record).
pub(super) fn adopt_record(epoch: u64) -> Val {
    let mut fields = vec![
        Val::str("tally"),
        Val::just(Val::Nat(7)),
        Val::Nat(3),
        Val::List(vec![Val::Nat(1)]),
    ];
    fields.extend([Val::Nat(epoch), Val::List(Vec::new())]);
    Val::List(fields)
}

/// Makes `vm` hold a replica of `x`, which beta owns (beta up, `x` placed
/// there): a `fetch` answered with `adopt_record`'s record, its
/// controller set to `controller`.
pub(super) fn fetch_replica(vm: &mut Vm, x: ObjectId, controller: Val) {
    let beta = MachineId::new("beta");
    vm.directory_mut().peer_up(&beta, 2);
    vm.directory_mut().insert(x, beta, Some("tally"));
    vm.start_program(fetch(x), 1).unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    let token = remote_calls(&mut out)[0].token;
    let Val::List(mut record) = adopt_record(0) else {
        unreachable!()
    };
    record.truncate(4);
    record[1] = controller;
    vm.resume(token, Ok(Val::just(Val::List(record)))).unwrap();
    vm.run(&mut out);
    assert!(vm.is_replica(x));
}

pub(super) fn run_call(vm: &mut Vm, target: ObjectId, input: Val) -> Result<Val, VmError> {
    let chain = ChainId(0xabc);
    start_call(vm, target, input, chain);
    let mut out = Vec::new();
    vm.run(&mut out);
    finished(&mut out, chain)
}

pub(super) fn finished(out: &mut Vec<Output>, id: ChainId) -> Result<Val, VmError> {
    let i = out
        .iter()
        .position(|o| matches!(o, Output::Finished { chain, .. } if *chain == id))
        .unwrap_or_else(|| panic!("{id} did not finish: {out:?}"));
    match out.remove(i) {
        Output::Finished { result, .. } => result,
        _ => unreachable!(),
    }
}

/// Takes the remote calls out of `out`.
pub(super) fn remote_calls(out: &mut Vec<Output>) -> Vec<RemoteCall> {
    let mut calls = Vec::new();
    out.retain(|o| match o {
        Output::RemoteCall(rc) => {
            calls.push(rc.clone());
            false
        }
        _ => true,
    });
    calls
}

pub(super) fn errors(vm: &Vm) -> Vec<VmError> {
    vm.trace()
        .events()
        .iter()
        .filter_map(|e| match &e.event {
            Event::ErrorOccurred(err) => Some(err.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn s(x: &str) -> Val {
    Val::str(x)
}

#[test]
fn vm_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Vm>();
    assert_send::<Program>();
    assert_send::<Output>();
}

#[test]
fn battleship_hit_miss_sunk() {
    use demo::battleship::{cell, fire, place};
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let board = vm.create_object("board").unwrap();
    assert_eq!(
        run_call(&mut vm, board, place(&[(1, 1), (1, 2)])),
        Ok(Val::Nat(2))
    );
    assert_eq!(vm.state(board).unwrap(), [cell(1, 1), cell(1, 2)]);
    assert_eq!(run_call(&mut vm, board, fire(0, 0)), Ok(s("miss")));
    assert_eq!(run_call(&mut vm, board, fire(1, 2)), Ok(s("hit")));
    assert_eq!(run_call(&mut vm, board, fire(1, 2)), Ok(s("miss")));
    assert_eq!(run_call(&mut vm, board, fire(1, 1)), Ok(s("sunk")));
    assert_eq!(vm.state(board).unwrap(), []);
    assert_eq!(
        run_call(&mut vm, board, Val::Nat(3)),
        Ok(s("board: unexpected input"))
    );
}

#[test]
fn introspection_instructions() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let inspect = vm.create_object("inspect").unwrap();
    let relay = vm.create_object("relay").unwrap();
    let got = run_call(
        &mut vm,
        relay,
        Val::List(vec![Val::ObjectRef(inspect), Val::Nat(7)]),
    );
    let expected = Val::List(vec![
        Val::Nat(7),
        Val::just(Val::ObjectRef(relay)),
        Val::ObjectRef(inspect),
        s("alpha"),
    ]);
    assert_eq!(got, Ok(Val::just(expected)));
    // A top-level program has no self, sender or input.
    let p = prog! {
        let me <- get_self();
        let sender <- get_sender();
        let input <- get_input();
        done(Val::List(vec![me, sender, input]))
    };
    let none = Val::List(vec![Val::Nothing, Val::Nothing, Val::Nothing]);
    assert_eq!(run_program(&mut vm, p), Ok(none));
}

#[test]
fn get_machine_answers_from_the_directory() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let local = vm.create_object("echo").unwrap();
    let remote = ObjectId(2 << 48 | 1);
    vm.directory_mut()
        .insert(remote, MachineId::new("beta"), Some("pong"));
    let p = prog! {
        let a <- get_machine(local);
        let b <- get_machine(remote);
        let c <- get_machine(ObjectId(77));
        done(Val::List(vec![a, b, c]))
    };
    let want = Val::List(vec![
        Val::just(s("alpha")),
        Val::just(s("beta")),
        Val::Nothing,
    ]);
    assert_eq!(run_program(&mut vm, p), Ok(want));
}

#[test]
fn call_pure_answers_just_or_nothing() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let p = prog! {
        let a <- call_pure("add", vec![Val::Nat(2), Val::Nat(3)]);
        let b <- call_pure("add", vec![Val::Nat(u64::MAX), Val::Nat(1)]);
        let c <- call_pure("missing", vec![]);
        done(Val::List(vec![a, b, c]))
    };
    let want = Val::List(vec![Val::just(Val::Nat(5)), Val::Nothing, Val::Nothing]);
    assert_eq!(run_program(&mut vm, p), Ok(want));
    assert_eq!(errors(&vm), [VmError::UnknownPure("missing".into())]);
}

#[test]
fn long_bind_loops_run_on_a_small_stack() {
    // A loop written as recursion through `bind`: the vm drives it.
    fn countdown(n: u64) -> Program {
        if n == 0 {
            return done(s("liftoff"));
        }
        done(Val::Nat(n)).bind(move |_| countdown(n - 1))
    }
    let handle = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(|| {
            let mut vm = vm("alpha", 1, TraceMode::Counting);
            run_program(&mut vm, countdown(200_000))
        })
        .unwrap();
    assert_eq!(handle.join().unwrap(), Ok(s("liftoff")));
}

#[test]
fn created_output_precedes_a_later_remote_call() {
    let mut vm = vm("alpha", 1, TraceMode::Counting);
    let remote = ObjectId(2 << 48 | 1);
    vm.directory_mut()
        .insert(remote, MachineId::new("beta"), None);
    let p = prog! {
        let _obj <- create_obj("echo");
        call(remote, Val::Nat(1))
    };
    vm.start_program(p, 1).unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    assert!(
        matches!(out[..], [Output::Created { .. }, Output::RemoteCall(_)]),
        "{out:?}"
    );
}
