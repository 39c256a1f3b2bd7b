//! Names: one test per rule of register_name, whereis and unregister_name,
//! on one vm and across vms (the two-vm harness plays name_notify).
use super::reentrance::Net;
use super::*;

fn outputs(vm: &mut Vm, program: Program) -> (Result<Val, VmError>, Vec<Output>) {
    let chain = vm.start_program(program, 1).unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    let result = finished(&mut out.clone(), chain);
    (result, out)
}

fn named(out: &[Output]) -> Vec<(String, ObjectId, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Named { name, id } => Some((name.to_string(), *id, true)),
            Output::Unnamed { name, id } => Some((name.to_string(), *id, false)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_local_object_takes_a_free_name_once_and_gives_it_back() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    let a = vm.create_object("cell").unwrap();
    let b = vm.create_object("cell").unwrap();
    let (r, out) = outputs(&mut vm, register_name("bank", a));
    assert_eq!(r, Ok(Val::Bool(true)));
    assert_eq!(named(&out), vec![("bank".into(), a, true)]);
    let (r, out) = outputs(&mut vm, register_name("bank", b));
    assert_eq!(r, Ok(Val::Bool(false)), "taken");
    assert!(named(&out).is_empty());
    assert_eq!(
        run_program(&mut vm, whereis("bank")),
        Ok(Val::just(Val::ObjectRef(a)))
    );
    let (r, out) = outputs(&mut vm, unregister_name("bank"));
    assert_eq!(r, Ok(Val::Bool(true)));
    assert_eq!(named(&out), vec![("bank".into(), a, false)]);
    assert_eq!(run_program(&mut vm, whereis("bank")), Ok(Val::Nothing));
    assert_eq!(
        run_program(&mut vm, unregister_name("bank")),
        Ok(Val::Bool(false))
    );
}

#[test]
fn only_objects_hosted_here_can_be_named_here() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    let far = ObjectId(2 << 48 | 1);
    vm.directory_mut().insert(far, MachineId::new("beta"), None);
    assert_eq!(
        run_program(&mut vm, register_name("x", far)),
        Ok(Val::Bool(false))
    );
    let ghost = ObjectId(1 << 48 | 999);
    assert_eq!(
        run_program(&mut vm, register_name("x", ghost)),
        Ok(Val::Bool(false))
    );
    assert_eq!(run_program(&mut vm, whereis("x")), Ok(Val::Nothing));
}

#[test]
fn destroying_an_object_drops_its_names() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    let a = vm.create_object("cell").unwrap();
    run_program(&mut vm, register_name("one", a)).unwrap();
    run_program(&mut vm, register_name("two", a)).unwrap();
    let (_, out) = outputs(&mut vm, destroy_obj(a));
    let mut dropped = named(&out);
    dropped.sort();
    assert_eq!(
        dropped,
        vec![("one".into(), a, false), ("two".into(), a, false)]
    );
    assert_eq!(run_program(&mut vm, whereis("one")), Ok(Val::Nothing));
}

#[test]
fn a_name_taken_on_one_vm_is_found_and_refused_on_the_other() {
    let mut net = Net::of(&["alpha", "beta"], TraceMode::Off);
    let pong = net.create(1, "pong");
    net.start(1, register_name("pong", pong), 1);
    net.settle();
    assert_eq!(net.result(1), Some(&Ok(Val::Bool(true))));
    net.start(0, whereis("pong"), 2);
    net.settle();
    assert_eq!(net.result(2), Some(&Ok(Val::just(Val::ObjectRef(pong)))));
    // alpha knows the name is taken, so its own object cannot have it.
    let mine = net.create(0, "cell");
    net.start(0, register_name("pong", mine), 3);
    net.settle();
    assert_eq!(net.result(3), Some(&Ok(Val::Bool(false))));
    // Destroyed on beta: gone on alpha too.
    net.start(1, destroy_obj(pong), 4);
    net.settle();
    net.start(0, whereis("pong"), 5);
    net.settle();
    assert_eq!(net.result(5), Some(&Ok(Val::Nothing)));
}
