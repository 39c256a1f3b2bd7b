//! One test per transaction rule.
use super::*;

fn tx_of(v: Val) -> TxId {
    match v {
        Val::TxRef(t) => t,
        v => panic!("not a TxRef: {v}"),
    }
}

fn obj(v: &Val) -> ObjectId {
    v.as_object()
        .unwrap_or_else(|| panic!("not an ObjectRef: {v}"))
}

fn list(items: &[Val]) -> Val {
    Val::List(items.to_vec())
}

#[test]
fn tx_creates_are_invisible_until_commit() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let remote = ObjectId(2 << 48 | 1);
    vm.directory_mut()
        .insert(remote, MachineId::new("beta"), None);
    let p = prog! {
        let tx <- begin_tx(None);
        let cell <- create_obj("cell");
        // Suspend mid-transaction so the test can look at the vm.
        call(remote, cell.clone());
        let ok <- commit_tx(tx_of(tx));
        done(Val::List(vec![ok, cell]))
    };
    let chain = vm.start_program(p, 1).unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    let [Output::RemoteCall(rc)] = &out[..] else {
        panic!("{out:?}")
    };
    let cell = obj(&rc.input);
    assert!(!vm.hosts(cell), "a tx create is not visible before commit");
    vm.resume(rc.token, Ok(Val::Nothing)).unwrap();
    out.clear();
    vm.run(&mut out);
    assert!(matches!(out[0], Output::Created { id, .. } if id == cell));
    let result = finished(&mut out, chain).unwrap();
    assert_eq!(
        result,
        Val::List(vec![Val::Bool(true), Val::ObjectRef(cell)])
    );
    assert!(vm.hosts(cell));
}

#[test]
fn tx_commit_applies_creates_transfers_states_destroys_in_order() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let victim = vm.create_object("cell").unwrap();
    let p = prog! {
        let tx <- begin_tx(Some(ControllerId(7)));
        let a <- create_obj("cell");
        let a = obj(&a);
        call(a, list(&[s("set"), Val::Nat(1)]));
        call(a, list(&[s("transfer"), Val::ObjectRef(a), Val::Nat(9)]));
        call(a, list(&[s("destroy"), Val::ObjectRef(victim)]));
        // The chain's own reads see the overlay.
        let seen <- call(a, list(&[s("get")]));
        let ok <- commit_tx(tx_of(tx));
        done(Val::List(vec![ok, Val::ObjectRef(a), seen]))
    };
    let result = run_program(&mut vm, p).unwrap();
    let Val::List(r) = result else { panic!() };
    let a = obj(&r[1]);
    assert_eq!(r[0], Val::Bool(true));
    assert_eq!(r[2], Val::just(list(&[Val::Nat(1)])));
    assert_eq!(vm.state(a).unwrap(), [Val::Nat(1)]);
    assert_eq!(vm.controller(a), Some(ControllerId(9)));
    assert!(!vm.hosts(victim));
    let order: Vec<EventKind> = vm
        .trace()
        .events()
        .iter()
        .map(|e| e.event.kind())
        .filter(|k| *k != EventKind::ObjectCalled)
        .collect();
    use EventKind::*;
    assert_eq!(
        order,
        [
            ObjectCreated, // victim (host-side)
            TransactionStarted,
            ObjectCreated,
            StateUpdated,
            ObjectDestroyed,
            TransactionCommitted
        ]
    );
}

#[test]
fn tx_create_inherits_the_tx_controller() {
    let mut vm = vm("alpha", 1, TraceMode::Counting);
    let p = prog! {
        let tx <- begin_tx(Some(ControllerId(7)));
        let a <- create_obj("cell");
        commit_tx(tx_of(tx));
        done(a)
    };
    let a = obj(&run_program(&mut vm, p).unwrap());
    assert_eq!(vm.controller(a), Some(ControllerId(7)));
}

#[test]
fn tx_commit_fails_when_an_observed_object_was_destroyed_outside() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let watched = vm.create_object("cell").unwrap();
    let killer = vm.create_object("cell").unwrap();
    let remote = ObjectId(2 << 48 | 1);
    vm.directory_mut()
        .insert(remote, MachineId::new("beta"), None);
    let p = prog! {
        let tx <- begin_tx(None);
        call(watched, list(&[s("get")]));
        let fresh <- create_obj("cell");
        call(remote, Val::Nothing);
        let ok <- commit_tx(tx_of(tx));
        done(Val::List(vec![ok, fresh]))
    };
    let chain = vm.start_program(p, 1).unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    let Some(Output::RemoteCall(rc)) = out.pop() else {
        panic!()
    };
    // Another chain destroys the watched object while the tx waits.
    let killed = run_call(
        &mut vm,
        killer,
        list(&[s("destroy"), Val::ObjectRef(watched)]),
    );
    assert_eq!(killed, Ok(Val::Bool(true)));
    vm.resume(rc.token, Ok(Val::Nothing)).unwrap();
    out.clear();
    vm.run(&mut out);
    let Val::List(r) = finished(&mut out, chain).unwrap() else {
        panic!()
    };
    assert_eq!(r[0], Val::Bool(false));
    assert!(!vm.hosts(obj(&r[1])), "nothing applied");
    assert!(!out.iter().any(|o| matches!(o, Output::Created { .. })));
    assert_eq!(vm.trace().count(EventKind::TransactionAborted), 1);
}

#[test]
fn tx_abort_discards_everything() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let keep = vm.create_object("cell").unwrap();
    vm.set_state(keep, vec![Val::Nat(5)]).unwrap();
    let p = prog! {
        let tx <- begin_tx(None);
        let a <- create_obj("cell");
        call(keep, list(&[s("set"), Val::Nat(6)]));
        call(keep, list(&[s("transfer"), Val::ObjectRef(keep), Val::Nat(3)]));
        call(keep, list(&[s("destroy"), Val::ObjectRef(keep)]));
        abort_tx(tx_of(tx));
        done(a)
    };
    let a = obj(&run_program(&mut vm, p).unwrap());
    assert!(!vm.hosts(a));
    assert!(vm.hosts(keep));
    assert_eq!(vm.state(keep).unwrap(), [Val::Nat(5)]);
    assert_eq!(vm.controller(keep), None);
    assert_eq!(vm.trace().count(EventKind::TransactionAborted), 1);
}

#[test]
fn tx_second_begin_is_an_error() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let p = begin_tx(None).then(begin_tx(None));
    assert_eq!(
        run_program(&mut vm, p),
        Err(VmError::TxAlreadyOpen(TxId(1)))
    );
    // The chain ended with its transaction open: it was aborted.
    assert_eq!(vm.trace().count(EventKind::TransactionAborted), 1);
}

#[test]
fn tx_commit_or_abort_of_a_foreign_tx_is_an_error() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    assert_eq!(
        run_program(&mut vm, commit_tx(TxId(4))),
        Err(VmError::NoSuchTx(TxId(4)))
    );
    let p = begin_tx(None).then(abort_tx(TxId(9)));
    assert_eq!(run_program(&mut vm, p), Err(VmError::NoSuchTx(TxId(9))));
}

#[test]
fn tx_belongs_to_its_chain() {
    // A second chain does not see the first chain's open transaction.
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let remote = ObjectId(2 << 48 | 1);
    vm.directory_mut()
        .insert(remote, MachineId::new("beta"), None);
    let holder = prog! {
        let tx <- begin_tx(None);
        call(remote, Val::Nothing);
        commit_tx(tx_of(tx))
    };
    let first = vm.start_program(holder, 1).unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    let Some(Output::RemoteCall(rc)) = out.pop() else {
        panic!()
    };
    let own = begin_tx(None).bind(|tx| abort_tx(tx_of(tx.clone())).then(done(tx)));
    let other = run_program(&mut vm, own);
    assert_eq!(other, Ok(Val::TxRef(TxId(2))));
    vm.resume(rc.token, Ok(Val::Nothing)).unwrap();
    vm.run(&mut out);
    assert_eq!(finished(&mut out, first), Ok(Val::Bool(true)));
}

#[test]
fn a_remote_call_inside_a_transaction_is_marked_in_the_trace() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let remote = ObjectId(2 << 48 | 1);
    vm.directory_mut()
        .insert(remote, MachineId::new("beta"), None);
    let p = prog! {
        let tx <- begin_tx(None);
        call(remote, Val::Nothing);
        abort_tx(tx_of(tx))
    };
    vm.start_program(p, 1).unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    let suspended: Vec<Option<TxId>> = vm
        .trace()
        .events()
        .iter()
        .filter_map(|e| match &e.event {
            Event::CallSuspended { in_tx, .. } => Some(*in_tx),
            _ => None,
        })
        .collect();
    assert_eq!(
        suspended,
        vec![Some(TxId(1))],
        "runs now, not undone by abort"
    );
}

/// A transaction's call that had to wait for the object's turn records
/// the object's version when it enters, not when it queued: the chain
/// that held the turn wrote the object before giving it up, and the
/// transaction saw that write, so it commits (it used to conflict every
/// time it had waited).
#[test]
fn a_transaction_that_waited_for_a_turn_commits_over_what_came_before() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    let tally = vm.create_object("tally").unwrap();
    let far = ObjectId(2 << 48 | 1);
    vm.directory_mut().insert(far, MachineId::new("beta"), None);
    // Another chain holds tally's turn across a remote call, then counts.
    vm.start_program(call(tally, Val::ObjectRef(far)), 1)
        .unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    let token = remote_calls(&mut out)[0].token;
    let p = prog! {
        let tx <- begin_tx(None);
        let n <- call(tally, Val::Nothing);
        let ok <- commit_tx(tx_of(tx));
        done(Val::List(vec![n, ok]))
    };
    vm.start_program(p, 2).unwrap();
    vm.run(&mut out);
    assert_eq!(vm.waiting_count(), 1, "the transaction waits for the turn");
    vm.resume(token, Ok(Val::Nat(1))).unwrap();
    out.clear();
    vm.run(&mut out);
    let result = out.iter().find_map(|o| match o {
        Output::Finished {
            origin: 2, result, ..
        } => Some(result.clone()),
        _ => None,
    });
    let counted_twice = list(&[Val::just(Val::Nat(2)), Val::Bool(true)]);
    assert_eq!(result, Some(Ok(counted_twice)));
    assert_eq!(vm.state(tally), Some(&[Val::Nat(2)][..]));
}

/// A commit conflicts while another chain holds the turn of an object the
/// transaction writes: that chain may have read the object before a
/// remote call and will write it back over the commit.
#[test]
fn a_commit_conflicts_while_another_chain_holds_a_written_objects_turn() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let remote = ObjectId(2 << 48 | 1);
    vm.directory_mut()
        .insert(remote, MachineId::new("beta"), None);
    let t = vm.create_object("tally").unwrap();
    let z = vm.start_program(tx_calling(t, remote), 1).unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    let token = out
        .iter()
        .find_map(|o| match o {
            Output::RemoteCall(rc) => Some(rc.token),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{out:?}"));
    // Another chain enters the tally and holds its turn, waiting on beta.
    start_call(&mut vm, t, Val::ObjectRef(remote), ChainId(0x77));
    out.clear();
    vm.run(&mut out);
    assert!(matches!(&out[..], [Output::RemoteCall(_)]), "{out:?}");
    assert_eq!(answered(&mut vm, token, z), Ok(Val::Bool(false)));
}

/// A transaction that read a replica commits over nothing it read once
/// the object itself has come here in its place, even at the same
/// version: the copy it read may have been stale.
#[test]
fn a_commit_conflicts_when_a_replica_it_read_became_the_object() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let x = ObjectId(2 << 48 | 7);
    // A replica of x, at the owner's version.
    fetch_replica(&mut vm, x, Val::just(Val::Nat(7)));
    let far = ObjectId(2 << 48 | 1);
    vm.directory_mut().insert(far, MachineId::new("beta"), None);
    let mut out = Vec::new();
    // A transaction calls the replica, then waits on beta.
    let z = vm.start_program(tx_calling(x, far), 2).unwrap();
    out.clear();
    vm.run(&mut out);
    let token = remote_calls(&mut out)
        .first()
        .unwrap_or_else(|| panic!("{out:?}"))
        .token;
    // Meanwhile x itself moves here, at the version the replica had.
    assert_eq!(
        vm.serve_op(RemoteOp::Adopt, x, &adopt_record(1)),
        Val::Bool(true)
    );
    assert!(vm.owns(x));
    assert_eq!(answered(&mut vm, token, z), Ok(Val::Bool(false)));
}

/// Inside a transaction, an object it gave to another controller is no
/// longer the old controller's: giving it again, or destroying it,
/// answers false, and the commit applies only the first gift.
#[test]
fn a_tx_cannot_act_again_on_an_object_it_gave_away() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let made = prog! {
        let tx <- begin_tx(Some(ControllerId(7)));
        let a <- create_obj("cell");
        let ok <- commit_tx(tx_of(tx));
        done(Val::List(vec![ok, a]))
    };
    let Val::List(r) = run_program(&mut vm, made).unwrap() else {
        panic!()
    };
    let a = obj(&r[1]);
    assert_eq!(vm.controller(a), Some(ControllerId(7)));
    let p = prog! {
        let tx <- begin_tx(Some(ControllerId(7)));
        let gave <- transfer_obj(a, ControllerId(9));
        let again <- transfer_obj(a, ControllerId(8));
        let destroyed <- destroy_obj(a);
        let ok <- commit_tx(tx_of(tx));
        done(Val::List(vec![gave, again, destroyed, ok]))
    };
    let answers = run_program(&mut vm, p).unwrap();
    let [t, f] = [Val::Bool(true), Val::Bool(false)];
    assert_eq!(answers, list(&[t.clone(), f.clone(), f, t]));
    assert_eq!(vm.controller(a), Some(ControllerId(9)));
    assert!(vm.hosts(a));
}

/// Resumes the call `token` (answered `Nothing`), runs, and answers how
/// chain `z` finished.
fn answered(vm: &mut Vm, token: SuspendToken, z: ChainId) -> Result<Val, VmError> {
    vm.resume(token, Ok(Val::Nothing)).unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    finished(&mut out, z)
}

/// A waiter handed the turn of an object the transaction wrote has read
/// nothing yet: the commit is not refused for it (the bank's atomic
/// transfer into a busy account would otherwise never commit).
#[test]
fn a_commit_is_not_refused_for_a_call_that_has_not_begun() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let remote = ObjectId(2 << 48 | 1);
    vm.directory_mut()
        .insert(remote, MachineId::new("beta"), None);
    let t = vm.create_object("tally").unwrap();
    let mut out = Vec::new();
    // X holds the tally's turn, waiting on beta.
    start_call(&mut vm, t, Val::ObjectRef(remote), ChainId(0x77));
    vm.run(&mut out);
    let x = remote_calls(&mut out)[0].token;
    // Z's transaction calls the tally (queued behind X), then commits;
    // W's call queues behind Z's.
    let p = prog! {
        let tx <- begin_tx(None);
        call(t, Val::Nat(0));
        let ok <- commit_tx(tx_of(tx));
        done(ok)
    };
    let z = vm.start_program(p, 1).unwrap();
    vm.run(&mut out);
    start_call(&mut vm, t, Val::Nat(0), ChainId(0x78));
    vm.run(&mut out);
    // X answers and leaves; Z enters, writes, leaves (the turn passes to
    // W, which has not run) and commits.
    assert_eq!(answered(&mut vm, x, z), Ok(Val::Bool(true)));
}

/// A transaction that calls `inside`, then waits on `far` (suspended, so
/// the test can act meanwhile), then commits, answering the commit's word.
fn tx_calling(inside: ObjectId, far: ObjectId) -> Program {
    prog! {
        let tx <- begin_tx(None);
        call(inside, Val::Nat(0));
        call(far, Val::Nat(0));
        let ok <- commit_tx(tx_of(tx));
        done(ok)
    }
}

/// A state event carries the state written, unless the host said it
/// renders none (a node that only streams its trace): then no copy of
/// the state is made at every write.
#[test]
fn state_events_carry_the_state_only_when_it_is_wanted() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let cell = vm.create_object("cell").unwrap();
    let set = |n: u64| Val::List(vec![Val::str("set"), Val::Nat(n)]);
    let written = |vm: &Vm| {
        vm.trace()
            .events()
            .iter()
            .rev()
            .find_map(|e| match &e.event {
                Event::StateUpdated { state, .. } => Some(state.clone()),
                _ => None,
            })
    };
    run_call(&mut vm, cell, set(4)).unwrap();
    assert_eq!(written(&vm), Some(vec![Val::Nat(4)]));
    vm.trace_mut().keep_state_payloads(false);
    run_call(&mut vm, cell, set(5)).unwrap();
    assert_eq!(
        written(&vm),
        Some(Vec::new()),
        "recorded, without the state"
    );
    assert_eq!(vm.state(cell), Some(&[Val::Nat(5)][..]));
}
