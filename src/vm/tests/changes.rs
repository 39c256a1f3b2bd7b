//! Change tracking, as a durable node drains it after each batch.
use super::*;

/// What a drain reports: (id, Some(state) | None when destroyed), sorted.
fn drain(vm: &mut Vm) -> Vec<(ObjectId, Option<Vec<Val>>)> {
    let mut seen = Vec::new();
    vm.drain_changes(|id, record| seen.push((id, record.map(|r| r.state.to_vec()))));
    seen.sort_by_key(|(id, _)| id.0);
    seen
}

fn cell_call(vm: &mut Vm, id: ObjectId, items: &[Val]) -> Result<Val, VmError> {
    run_call(vm, id, Val::List(items.to_vec()))
}

#[test]
fn nothing_is_tracked_until_asked() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    let a = vm.create_object("cell").unwrap();
    cell_call(&mut vm, a, &[s("set"), Val::Nat(1)]).unwrap();
    assert!(drain(&mut vm).is_empty());
}

#[test]
fn creates_writes_and_destroys_are_drained_once_each() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    vm.track_changes();
    let a = vm.create_object("cell").unwrap();
    let b = vm.create_object("cell").unwrap();
    cell_call(&mut vm, a, &[s("set"), Val::Nat(1)]).unwrap();
    cell_call(&mut vm, a, &[s("set"), Val::Nat(2)]).unwrap();
    assert_eq!(
        drain(&mut vm),
        vec![(a, Some(vec![Val::Nat(2)])), (b, Some(vec![]))],
        "the last committed state, once per object"
    );
    assert!(drain(&mut vm).is_empty(), "a drain empties the set");

    cell_call(&mut vm, a, &[s("destroy"), Val::ObjectRef(b)]).unwrap();
    assert_eq!(drain(&mut vm), vec![(b, None)]);
}

#[test]
fn a_transaction_reaches_the_drain_whole_at_commit_and_never_on_abort() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    vm.track_changes();
    let a = vm.create_object("cell").unwrap();
    let b = vm.create_object("cell").unwrap();
    drain(&mut vm);
    let write_both = |commit: bool| {
        prog! {
            let tx <- begin_tx(None);
            let Val::TxRef(tx) = tx else { return done(tx) };
            call(a, Val::List(vec![s("set"), Val::Nat(10)]));
            call(b, Val::List(vec![s("set"), Val::Nat(20)]));
            if commit { commit_tx(tx) } else { abort_tx(tx) }
        }
    };
    run_program(&mut vm, write_both(false)).unwrap();
    assert!(
        drain(&mut vm).is_empty(),
        "an aborted transaction wrote nothing"
    );
    run_program(&mut vm, write_both(true)).unwrap();
    assert_eq!(
        drain(&mut vm),
        vec![(a, Some(vec![Val::Nat(10)])), (b, Some(vec![Val::Nat(20)]))]
    );
}

#[test]
fn a_restored_object_is_served_as_stored_and_not_written_back() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    vm.track_changes();
    let id = ObjectId(1 << 48 | 77);
    let state = [Val::Nat(5)];
    let record = ObjectRecord {
        behavior: "cell",
        controller: Some(ControllerId(3)),
        version: 9,
        state: &state,
        epoch: 0,
        leaving: None,
    };
    vm.restore_object(id, record).unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    assert!(
        out.is_empty(),
        "no create_notify for a restored object: {out:?}"
    );
    assert!(drain(&mut vm).is_empty());
    assert_eq!(vm.controller(id), Some(ControllerId(3)));
    assert_eq!(
        cell_call(&mut vm, id, &[s("get")]).unwrap(),
        Val::List(vec![Val::Nat(5)])
    );

    let unknown = ObjectRecord {
        behavior: "no-such-behavior",
        ..record
    };
    assert!(matches!(
        vm.restore_object(ObjectId(1 << 48 | 78), unknown),
        Err(VmError::UnknownBehavior(_))
    ));
}
