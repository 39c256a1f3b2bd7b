//! Reflection, reification, controllers and teleport: one test per rule.
use super::*;

/// The registry of `vm()`, plus `seer` (may reflect) and `blind` (may
/// not), both answering `reify_context()` or `reflect(input)`.
fn reflecting_vm() -> Vm {
    let mut reg = registry();
    let look = |input: Val| match input {
        Val::ObjectRef(id) => reflect(id),
        _ => reify_context(),
    };
    reg.register("seer", look);
    reg.register("blind", look);
    assert!(reg.allow_reflection("seer"));
    assert!(!reg.allow_reflection("no-such-behavior"));
    Vm::new(VmConfig::new(MachineId::new("alpha"), 1), reg, pures())
}

fn field<'v>(record: &'v Val, key: &str) -> &'v Val {
    record
        .as_list()
        .and_then(|items| {
            items.iter().find_map(|i| match i {
                Val::Pair(k, v) if k.as_str() == Some(key) => Some(&**v),
                _ => None,
            })
        })
        .unwrap_or_else(|| panic!("no {key} in {record}"))
}

#[test]
fn reflect_answers_a_local_objects_metadata() {
    let mut vm = reflecting_vm();
    let p = prog! {
        let o <- create_obj_for("cell", ControllerId(7));
        let Val::ObjectRef(id) = o else { return done(o) };
        reflect(id)
    };
    let Ok(Val::Just(meta)) = run_program(&mut vm, p) else {
        panic!("reflect answered nothing")
    };
    assert_eq!(field(&meta, "behavior"), &Val::str("cell"));
    assert_eq!(field(&meta, "machine"), &Val::str("alpha"));
    assert_eq!(field(&meta, "controller"), &Val::just(Val::Nat(7)));
    assert_eq!(field(&meta, "version"), &Val::Nat(0));
    assert_eq!(
        run_program(&mut vm, reflect(ObjectId(1 << 48 | 999))),
        Ok(Val::Nothing)
    );
}

#[test]
fn only_behaviors_allowed_to_reflect_may() {
    let mut vm = reflecting_vm();
    let seer = vm.create_object("seer").unwrap();
    let blind = vm.create_object("blind").unwrap();
    let ctx = run_call(&mut vm, seer, Val::Nat(5)).unwrap();
    assert_eq!(field(&ctx, "self"), &Val::ObjectRef(seer));
    assert_eq!(field(&ctx, "input"), &Val::Nat(5));
    assert_eq!(field(&ctx, "machine"), &Val::str("alpha"));
    assert_eq!(field(&ctx, "chain"), &Val::Nat(0xabc));
    let refused = run_call(&mut vm, blind, Val::Nat(5)).unwrap_err();
    assert!(
        refused.to_string().contains("not allowed to reflect"),
        "{refused}"
    );
}

#[test]
fn scry_meta_matches_local_objects_by_behavior_machine_and_controller() {
    let mut vm = reflecting_vm();
    let a = vm.create_object("cell").unwrap();
    let p = create_obj_for("cell", ControllerId(3));
    let Ok(Val::ObjectRef(b)) = run_program(&mut vm, p) else {
        panic!()
    };
    let scry = |vm: &mut Vm, filter: Vec<(&str, Val)>| {
        let f = filter
            .into_iter()
            .map(|(k, v)| Val::pair(Val::str(k), v))
            .collect();
        run_program(vm, scry_meta(Val::List(f)))
    };
    let refs = |ids: &[ObjectId]| Ok(Val::List(ids.iter().map(|i| Val::ObjectRef(*i)).collect()));
    assert_eq!(
        scry(&mut vm, vec![("behavior", Val::str("cell"))]),
        refs(&[a, b])
    );
    assert_eq!(
        scry(&mut vm, vec![("machine", Val::str("beta"))]),
        refs(&[])
    );
    assert_eq!(
        scry(&mut vm, vec![("machine", Val::str("alpha"))]),
        refs(&[a, b])
    );
    assert_eq!(scry(&mut vm, vec![("controller", Val::Nat(3))]), refs(&[b]));
    assert!(scry(&mut vm, vec![("colour", Val::Nat(1))]).is_err());
}

#[test]
fn scry_meta_asks_every_other_node() {
    let mut net = super::reentrance::Net::of(&["alpha", "beta", "gamma"], TraceMode::Off);
    // Each vm knows the others said hello (what a node's directory sees).
    let names = ["alpha", "beta", "gamma"];
    for (i, vm) in net.vms.iter_mut().enumerate() {
        for (j, name) in names.iter().enumerate() {
            if i != j {
                vm.directory_mut()
                    .peer_up(&MachineId::new(name), j as u16 + 1);
            }
        }
    }
    let here = net.create(0, "cell");
    net.start(1, create_obj_for("cell", ControllerId(6)), 1);
    net.start(2, create_obj_for("cell", ControllerId(6)), 2);
    net.start(2, create_obj("echo"), 3);
    net.settle();
    let obj = |net: &super::reentrance::Net, o| match net.result(o) {
        Some(Ok(Val::ObjectRef(id))) => *id,
        other => panic!("{other:?}"),
    };
    let (on_beta, on_gamma) = (obj(&net, 1), obj(&net, 2));
    let filter = |k: &str, v: Val| Val::List(vec![Val::pair(Val::str(k), v)]);
    net.start(0, scry_meta(filter("controller", Val::Nat(6))), 10);
    net.start(0, scry_meta(filter("behavior", Val::str("cell"))), 11);
    net.start(0, scry_meta(filter("machine", Val::str("gamma"))), 12);
    net.settle();
    let mut both = vec![on_beta, on_gamma];
    both.sort_unstable_by_key(|id| id.0);
    let refs =
        |ids: Vec<ObjectId>| Some(Ok(Val::List(ids.into_iter().map(Val::ObjectRef).collect())));
    assert_eq!(net.result(10).cloned(), refs(both.clone()));
    let mut cells = vec![here, on_beta, on_gamma];
    cells.sort_unstable_by_key(|id| id.0);
    assert_eq!(net.result(11).cloned(), refs(cells));
    let Some(Ok(Val::List(on_g))) = net.result(12) else {
        panic!("{:?}", net.result(12))
    };
    assert_eq!(on_g.len(), 2, "gamma's cell and echo: {on_g:?}");
}

#[test]
fn a_chain_runs_under_its_transactions_controller_or_its_objects() {
    let mut vm = reflecting_vm();
    assert_eq!(
        run_program(&mut vm, get_current_controller()),
        Ok(Val::Nothing)
    );
    let p = prog! {
        let tx <- begin_tx(Some(ControllerId(9)));
        let Val::TxRef(tx) = tx else { return done(tx) };
        let c <- get_current_controller();
        commit_tx(tx);
        done(c)
    };
    assert_eq!(run_program(&mut vm, p), Ok(Val::just(Val::Nat(9))));
    let p = prog! {
        let o <- create_obj_for("cell", ControllerId(4));
        let Val::ObjectRef(id) = o else { return done(o) };
        get_controller(id)
    };
    assert_eq!(run_program(&mut vm, p), Ok(Val::just(Val::Nat(4))));
}

#[test]
fn teleport_stays_put_or_says_why_and_is_an_error_in_a_transaction() {
    let mut vm = reflecting_vm();
    assert_eq!(run_program(&mut vm, teleport("alpha")), Ok(Val::Bool(true)));
    assert_eq!(run_program(&mut vm, teleport("beta")), Ok(Val::Bool(false)));
    let p = prog! {
        let tx <- begin_tx(None);
        let Val::TxRef(_tx) = tx else { return done(tx) };
        teleport("alpha")
    };
    let e = run_program(&mut vm, p).unwrap_err();
    assert!(
        e.to_string().contains("teleport inside a transaction"),
        "{e}"
    );
}

/// The two-vm harness with `keeper` on beta: alpha's chains act on
/// beta's objects through meta operations.
fn two() -> (super::reentrance::Net, ObjectId, ObjectId) {
    let mut net = super::reentrance::Net::of(&["alpha", "beta"], TraceMode::Off);
    net.start(1, create_obj_for("cell", ControllerId(5)), 1);
    net.start(1, create_obj("cell"), 2);
    net.settle();
    let obj = |net: &super::reentrance::Net, origin| match net.result(origin) {
        Some(Ok(Val::ObjectRef(id))) => *id,
        other => panic!("{other:?}"),
    };
    let (owned, free) = (obj(&net, 1), obj(&net, 2));
    (net, owned, free)
}

#[test]
fn remote_get_controller_and_reflect_answer_from_the_objects_node() {
    let (mut net, owned, free) = two();
    net.start(0, get_controller(owned), 10);
    net.start(0, get_controller(free), 11);
    net.start(0, reflect(owned), 12);
    net.settle();
    assert_eq!(net.result(10), Some(&Ok(Val::just(Val::Nat(5)))));
    assert_eq!(net.result(11), Some(&Ok(Val::Nothing)));
    let Some(Ok(Val::Just(meta))) = net.result(12) else {
        panic!("{:?}", net.result(12))
    };
    assert_eq!(field(meta, "machine"), &Val::str("beta"));
    assert_eq!(field(meta, "controller"), &Val::just(Val::Nat(5)));
}

#[test]
fn remote_destroy_and_transfer_need_the_objects_controller() {
    let (mut net, owned, free) = two();
    // No controller: refused for the owned object, allowed for the free one.
    net.start(0, destroy_obj(owned), 10);
    net.start(0, transfer_obj(free, ControllerId(8)), 11);
    net.settle();
    assert_eq!(net.result(10), Some(&Ok(Val::Bool(false))));
    assert_eq!(net.result(11), Some(&Ok(Val::Bool(true))));
    assert!(net.vms[1].hosts(owned), "refused: still there");
    assert_eq!(net.vms[1].controller(free), Some(ControllerId(8)));
    // Under the owner's controller (a transaction begun with it): allowed.
    let p = prog! {
        let tx <- begin_tx(Some(ControllerId(5)));
        let Val::TxRef(tx) = tx else { return done(tx) };
        let gone <- destroy_obj(owned);
        commit_tx(tx);
        done(gone)
    };
    net.start(0, p, 12);
    net.settle();
    assert_eq!(net.result(12), Some(&Ok(Val::Bool(true))));
    assert!(!net.vms[1].hosts(owned), "destroyed on beta");
}

#[test]
fn a_local_controlled_object_is_destroyed_only_under_its_controller() {
    let mut vm = reflecting_vm();
    let Ok(Val::ObjectRef(id)) = run_program(&mut vm, create_obj_for("cell", ControllerId(4)))
    else {
        panic!()
    };
    assert_eq!(run_program(&mut vm, destroy_obj(id)), Ok(Val::Bool(false)));
    assert_eq!(
        run_program(&mut vm, transfer_obj(id, ControllerId(1))),
        Ok(Val::Bool(false))
    );
    assert!(vm.hosts(id));
    let p = prog! {
        let tx <- begin_tx(Some(ControllerId(4)));
        let Val::TxRef(tx) = tx else { return done(tx) };
        let gone <- destroy_obj(id);
        commit_tx(tx);
        done(gone)
    };
    assert_eq!(run_program(&mut vm, p), Ok(Val::Bool(true)));
    assert!(!vm.hosts(id));
}

/// beta owns a cell under controller 5 (state [1]) and an uncontrolled
/// one; alpha fetches.
fn replicated() -> (super::reentrance::Net, ObjectId, ObjectId) {
    let (mut net, owned, free) = two();
    net.vms[1].set_state(owned, vec![Val::Nat(1)]).unwrap();
    net.start(0, fetch(owned), 20);
    net.start(0, fetch(free), 21);
    net.settle();
    assert_eq!(net.result(20), Some(&Ok(Val::Bool(true))));
    assert_eq!(
        net.result(21),
        Some(&Ok(Val::Nothing)),
        "uncontrolled: no replica"
    );
    (net, owned, free)
}

fn set(id: ObjectId, n: u64) -> Program {
    call(id, Val::List(vec![Val::str("set"), Val::Nat(n)]))
}

#[test]
fn a_replica_serves_calls_here_and_keeps_its_writes_apart_until_freeze() {
    let (mut net, owned, _) = replicated();
    assert!(net.vms[0].is_replica(owned));
    assert_eq!(net.vms[0].state(owned), Some(&[Val::Nat(1)][..]));
    assert!(
        net.vms[0].local_objects().all(|(id, _)| id != owned),
        "not announced"
    );
    net.start(0, set(owned, 7), 22);
    net.settle();
    assert_eq!(
        net.vms[0].state(owned),
        Some(&[Val::Nat(7)][..]),
        "written here"
    );
    assert_eq!(
        net.vms[1].state(owned),
        Some(&[Val::Nat(1)][..]),
        "not at the owner"
    );
    assert_eq!(
        run_program(&mut net.vms[0], get_machine(owned)),
        Ok(Val::just(Val::str("beta"))),
        "a replica's machine is its owner's"
    );
    net.start(0, freeze(owned), 23);
    net.settle();
    assert_eq!(net.result(23), Some(&Ok(Val::just(Val::Bool(true)))));
    assert_eq!(
        net.vms[1].state(owned),
        Some(&[Val::Nat(7)][..]),
        "applied at the owner"
    );
    // Fresh again: a second freeze with no write applies nothing new.
    net.start(0, freeze(owned), 24);
    net.settle();
    assert_eq!(net.result(24), Some(&Ok(Val::just(Val::Bool(true)))));
}

#[test]
fn a_freeze_after_the_owner_moved_on_discards_the_replicas_writes() {
    let (mut net, owned, _) = replicated();
    net.start(0, set(owned, 7), 22);
    net.start(1, set(owned, 9), 23);
    net.settle();
    net.start(0, freeze(owned), 24);
    net.settle();
    assert_eq!(net.result(24), Some(&Ok(Val::just(Val::Bool(false)))));
    assert_eq!(
        net.vms[1].state(owned),
        Some(&[Val::Nat(9)][..]),
        "the owner's stands"
    );
    assert_eq!(
        net.vms[0].state(owned),
        Some(&[Val::Nat(9)][..]),
        "the replica is refreshed from the owner"
    );
    // Writing again from the refreshed version applies.
    net.start(0, set(owned, 11), 25);
    net.start(0, freeze(owned), 26);
    net.settle();
    assert_eq!(net.result(26), Some(&Ok(Val::just(Val::Bool(true)))));
    assert_eq!(net.vms[1].state(owned), Some(&[Val::Nat(11)][..]));
}

/// A replica's `freeze` is not applied while a chain is inside the owner's
/// object: that chain holds its turn across a remote call, with the state
/// it read, and would write over the frozen state when it resumes (the
/// bank's plain transfer does exactly that). The replica is told `false`
/// and given the owner's record, as for any refused freeze.
#[test]
fn a_freeze_is_refused_while_a_chain_is_inside_the_object() {
    let mut reg = registry();
    demo::bank::register(&mut reg);
    let mut vm = Vm::new(VmConfig::new(MachineId::new("alpha"), 1), reg, pures());
    let (x, far) = (ObjectId(1 << 48 | 5), ObjectId(2 << 48 | 1));
    let record = ObjectRecord {
        behavior: demo::bank::ACCOUNT,
        controller: Some(ControllerId(7)),
        version: 0,
        state: &[Val::Nat(100)],
        epoch: 0,
        leaving: None,
    };
    vm.restore_object(x, record).unwrap();
    vm.directory_mut()
        .insert(far, MachineId::new("beta"), Some("account"));
    vm.start_call(
        StartCall {
            target: x,
            input: demo::bank::transfer(far, 10),
            sender: None,
            chain: None,
        },
        1,
    );
    let mut out = Vec::new();
    vm.run(&mut out);
    let token = remote_calls(&mut out)[0].token;
    let frozen = Val::pair(Val::Nat(0), Val::List(vec![Val::Nat(500)]));
    let answer = vm.serve_op(RemoteOp::Freeze, x, &frozen);
    let Val::Just(answer) = answer else {
        panic!("{answer}")
    };
    let Val::Pair(applied, _) = &*answer else {
        panic!("{answer}")
    };
    assert_eq!(**applied, Val::Bool(false), "applied under a held turn");
    vm.resume(token, Ok(Val::List(vec![Val::str("ok"), Val::Nat(10)])))
        .unwrap();
    vm.run(&mut out);
    assert_eq!(vm.state(x), Some(&[Val::Nat(90)][..]));
    // Free again, a freeze from the current version applies.
    let frozen = Val::pair(Val::Nat(1), Val::List(vec![Val::Nat(500)]));
    let answer = format!("{}", vm.serve_op(RemoteOp::Freeze, x, &frozen));
    assert!(answer.contains("true"), "{answer}");
    assert_eq!(vm.state(x), Some(&[Val::Nat(500)][..]));
}

/// A replica is its owner's object, not this node's: `scry_meta` asked of
/// the replica's node does not list it (the owner's node does).
#[test]
fn scry_meta_does_not_count_a_replica_as_its_nodes_own() {
    let (mut net, owned, _) = replicated();
    assert!(net.vms[0].is_replica(owned));
    let by_controller = Val::List(vec![Val::pair(Val::str("controller"), Val::Nat(5))]);
    assert_eq!(
        net.vms[0].serve_op(RemoteOp::Scry, owned, &by_controller),
        Val::List(Vec::new()),
        "the replica's node"
    );
    assert_eq!(
        net.vms[1].serve_op(RemoteOp::Scry, owned, &by_controller),
        Val::List(vec![Val::ObjectRef(owned)]),
        "the owner's node"
    );
}

/// An account's replica record as beta, its owner, sends it.
fn account_record(version: u64, balance: u64) -> Val {
    Val::List(vec![
        Val::str(demo::bank::ACCOUNT),
        Val::just(Val::Nat(7)),
        Val::Nat(version),
        Val::List(vec![Val::Nat(balance)]),
    ])
}

/// alpha fetched a replica of beta's account `x` at version 5, balance
/// 100, and a transfer from it is inside, waiting on its deposit to
/// `far`: the vm, `x`, the deposit's token and the outputs.
fn transfer_inside_a_replica() -> (Vm, ObjectId, SuspendToken, Vec<Output>) {
    let mut reg = registry();
    demo::bank::register(&mut reg);
    let mut vm = Vm::new(VmConfig::new(MachineId::new("alpha"), 1), reg, pures());
    let (x, far) = (ObjectId(2 << 48 | 5), ObjectId(2 << 48 | 1));
    let beta = MachineId::new("beta");
    vm.directory_mut().insert(x, beta.clone(), Some("account"));
    vm.directory_mut().insert(far, beta, Some("account"));
    let mut out = Vec::new();
    vm.start_program(fetch(x), 1).unwrap();
    vm.run(&mut out);
    let fetched = remote_calls(&mut out)[0].token;
    vm.resume(fetched, Ok(Val::just(account_record(5, 100))))
        .unwrap();
    vm.run(&mut out);
    assert!(vm.is_replica(x));
    vm.start_call(
        StartCall {
            target: x,
            input: demo::bank::transfer(far, 10),
            sender: None,
            chain: None,
        },
        2,
    );
    vm.run(&mut out);
    let deposit = remote_calls(&mut out)[0].token;
    (vm, x, deposit, out)
}

/// The deposit answers, the transfer writes 90, and a freeze goes out:
/// its input (the base it names, and the state).
fn deposit_then_freeze(
    vm: &mut Vm,
    x: ObjectId,
    deposit: SuspendToken,
    out: &mut Vec<Output>,
) -> Val {
    vm.resume(deposit, Ok(Val::List(vec![Val::str("ok"), Val::Nat(10)])))
        .unwrap();
    vm.run(out);
    assert_eq!(vm.state(x), Some(&[Val::Nat(90)][..]));
    vm.start_program(freeze(x), 4).unwrap();
    vm.run(out);
    remote_calls(out).remove(0).input
}

/// A replica is not refreshed while a chain is inside it: that chain read
/// the old state and writes from it when its remote call comes back. A
/// refresh under it gave that write the owner's newer version as its
/// base, and the next `freeze` applied it over the owner's change (the
/// bank lost a deposit made at the owner meanwhile).
#[test]
fn a_replica_is_not_refreshed_under_a_chain_inside_it() {
    let (mut vm, x, deposit, mut out) = transfer_inside_a_replica();
    // Meanwhile the owner took a deposit (version 6, 150), and another
    // chain fetches: refused, the transfer is inside.
    vm.start_program(fetch(x), 3).unwrap();
    vm.run(&mut out);
    let refetched = remote_calls(&mut out)[0].token;
    vm.resume(refetched, Ok(Val::just(account_record(6, 150))))
        .unwrap();
    vm.run(&mut out);
    assert_eq!(
        vm.state(x),
        Some(&[Val::Nat(100)][..]),
        "refreshed under the transfer"
    );
    // The freeze still names version 5, so the owner (at 6) refuses it.
    assert_eq!(
        deposit_then_freeze(&mut vm, x, deposit, &mut out),
        Val::pair(Val::Nat(5), Val::List(vec![Val::Nat(90)])),
        "the freeze's base"
    );
}

/// A freeze the owner applied while a call is inside the replica moves
/// the replica's base on all the same (the owner holds what was sent);
/// the call's write, made after, goes with the next freeze from there.
/// Left on the old base, that next freeze conflicted and the write was
/// discarded, and a replica frozen from inside itself never recovered.
#[test]
fn an_applied_freeze_moves_the_base_on_under_a_chain_inside() {
    let (mut vm, x, deposit, mut out) = transfer_inside_a_replica();
    // Another chain freezes; the owner applies it (now at version 6).
    vm.start_program(freeze(x), 3).unwrap();
    vm.run(&mut out);
    let frozen = remote_calls(&mut out).remove(0);
    assert_eq!(
        frozen.input,
        Val::pair(Val::Nat(5), Val::List(vec![Val::Nat(100)]))
    );
    let applied = Val::just(Val::pair(Val::Bool(true), account_record(6, 100)));
    vm.resume(frozen.token, Ok(applied)).unwrap();
    vm.run(&mut out);
    assert_eq!(
        deposit_then_freeze(&mut vm, x, deposit, &mut out),
        Val::pair(Val::Nat(6), Val::List(vec![Val::Nat(90)])),
        "the next freeze's base"
    );
}

/// A refetched replica counts its version on from its own, not from the
/// owner's: one write here and one at the owner leave both at the same
/// number, and a transaction that read the replica before the refetch
/// must see a change (its commit compares versions).
#[test]
fn a_refetched_replica_gets_a_version_it_never_had() {
    let (mut net, owned, _) = replicated();
    let version = |net: &mut super::reentrance::Net| net.vms[0].version_here(owned);
    net.start(0, set(owned, 7), 22);
    net.start(1, set(owned, 9), 23);
    net.settle();
    let written_here = version(&mut net);
    assert_eq!(
        written_here,
        net.vms[1].version_here(owned),
        "the same number"
    );
    net.start(0, fetch(owned), 24);
    net.settle();
    assert_eq!(net.result(24), Some(&Ok(Val::Bool(true))));
    assert_eq!(net.vms[0].state(owned), Some(&[Val::Nat(9)][..]));
    assert_ne!(
        version(&mut net),
        written_here,
        "the refreshed state's version"
    );
}

#[test]
fn fetch_and_freeze_of_what_is_not_a_replica_answer_nothing() {
    let (mut net, _, free) = two();
    let mine = net.create(0, "cell");
    assert_eq!(run_program(&mut net.vms[0], fetch(mine)), Ok(Val::Nothing));
    assert_eq!(run_program(&mut net.vms[0], freeze(mine)), Ok(Val::Nothing));
    net.start(0, freeze(free), 30);
    net.settle();
    assert_eq!(
        net.result(30),
        Some(&Ok(Val::Nothing)),
        "no replica of it here"
    );
}
