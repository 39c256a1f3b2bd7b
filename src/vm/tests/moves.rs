//! `move_object` across vms: one test per rule (see `program::move_object`).
use super::reentrance::Net;
use super::*;

const ALPHA: usize = 0;
const BETA: usize = 1;
const GAMMA: usize = 2;

/// alpha, beta and gamma, all greeted: no object yet.
fn three() -> Net {
    let mut net = Net::of(&["alpha", "beta", "gamma"], TraceMode::Full);
    net.connect_all();
    net
}

/// Three nodes, and a tally alpha created and moved to beta.
fn a_tally_moved_to_beta() -> (Net, ObjectId) {
    let mut net = three();
    let t = net.create(ALPHA, "tally");
    net.start(ALPHA, move_object(t, "beta"), 1);
    net.settle();
    assert_eq!(net.result(1), Some(&Ok(Val::Bool(true))));
    (net, t)
}

fn machine_of(net: &mut Net, at: usize, id: ObjectId, origin: u64) -> Val {
    net.start(at, get_machine(id), origin);
    net.settle();
    net.result(origin).cloned().unwrap().unwrap()
}

fn on(m: &str) -> Val {
    Val::just(Val::str(m))
}

#[test]
fn a_moved_object_keeps_its_id_state_controller_version_and_names() {
    let mut net = three();
    net.start(ALPHA, create_obj_for("tally", ControllerId(4)), 1);
    net.settle();
    let Some(Ok(Val::ObjectRef(t))) = net.result(1).cloned() else {
        panic!("{:?}", net.result(1))
    };
    net.start(ALPHA, call(t, Val::Nat(0)).then(register_name("t", t)), 2);
    net.settle();
    assert_eq!(net.result(2), Some(&Ok(Val::Bool(true))));
    // Moved from a chain under its controller (a `mover` it controls).
    let mover = {
        net.start(ALPHA, create_obj_for("mover", ControllerId(4)), 3);
        net.settle();
        net.result(3).unwrap().clone().unwrap().as_object().unwrap()
    };
    let args = Val::List(vec![Val::ObjectRef(t), Val::str("beta")]);
    net.start(ALPHA, call(mover, args), 4);
    net.settle();
    assert_eq!(net.result(4), Some(&Ok(Val::just(Val::Bool(true)))));

    assert!(!net.vms[ALPHA].hosts(t));
    assert!(net.vms[BETA].hosts(t));
    assert_eq!(net.vms[BETA].state(t), Some(&[Val::Nat(1)][..]));
    assert_eq!(net.vms[BETA].controller(t), Some(ControllerId(4)));
    assert_eq!(net.vms[BETA].epoch(t), 1);
    for (at, origin) in [(ALPHA, 10), (BETA, 11), (GAMMA, 12)] {
        assert_eq!(machine_of(&mut net, at, t, origin), on("beta"), "vm {at}");
        assert_eq!(net.vms[at].directory().whereis("t"), Some(t), "vm {at}");
    }
    assert_eq!(
        net.vms[BETA].directory().name_holder("t"),
        None,
        "held on beta"
    );
    assert_eq!(
        net.vms[GAMMA].directory().name_holder("t"),
        Some(&MachineId::new("beta"))
    );
    // The version came along: reflect says so from anywhere.
    net.start(GAMMA, call(t, Val::Nat(0)), 13);
    net.settle();
    assert_eq!(net.result(13), Some(&Ok(Val::just(Val::Nat(2)))));
    assert_eq!(net.vms[BETA].state(t), Some(&[Val::Nat(2)][..]));
}

/// A call holds the object's turn (suspended on beta) when the move
/// starts; the move waits for it, and a call from gamma that queued
/// behind the move follows the object: every call answered once.
#[test]
fn a_move_waits_for_the_turn_and_the_calls_behind_it_follow_the_object() {
    let mut net = three();
    let t = net.create(ALPHA, "tally");
    let echo = net.create(BETA, "echo");
    net.start(ALPHA, call(t, Val::ObjectRef(echo)), 1);
    net.run(ALPHA); // chain 1 now holds t's turn, waiting on beta
    net.start(ALPHA, move_object(t, "beta"), 2);
    net.run(ALPHA); // the move waits for the turn
    net.start(GAMMA, call(t, Val::Nat(0)), 3);
    net.start(GAMMA, call(t, Val::Nat(0)), 4);
    net.settle();
    assert_eq!(net.result(1), Some(&Ok(Val::just(Val::Nat(1)))));
    assert_eq!(net.result(2), Some(&Ok(Val::Bool(true))));
    let mut later = [net.result(3).cloned(), net.result(4).cloned()];
    later.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        later,
        [
            Some(Ok(Val::just(Val::Nat(2)))),
            Some(Ok(Val::just(Val::Nat(3))))
        ],
        "each call ran once, after the move, on beta"
    );
    assert_eq!(net.vms[BETA].state(t), Some(&[Val::Nat(3)][..]));
    assert_eq!(net.vms[ALPHA].turn_entries(), 0, "nothing left behind");
    assert_eq!(net.vms[ALPHA].waiting_count(), 0);
}

/// A caller whose directory still says alpha: alpha forwards the call and
/// relays the answer (and a failure) as it came.
#[test]
fn a_call_to_the_old_home_is_forwarded_and_answered_once() {
    let (mut net, t) = a_tally_moved_to_beta();
    // gamma missed the move_notify.
    net.vms[GAMMA]
        .directory_mut()
        .insert(t, MachineId::new("alpha"), Some("tally"));
    net.start(GAMMA, call(t, Val::Nat(0)), 2);
    net.settle();
    assert_eq!(net.result(2), Some(&Ok(Val::just(Val::Nat(1)))));
    assert_eq!(net.vms[BETA].state(t), Some(&[Val::Nat(1)][..]));
    let forwarded = net.vms[ALPHA]
        .trace()
        .events()
        .iter()
        .filter(|e| matches!(&e.event, Event::CallSuspended { target, machine, .. } if *target == t && machine.as_str() == "beta"))
        .count();
    assert_eq!(forwarded, 2, "the adopt, then the forwarded call");
    // Destroyed at its new home: the forwarded call fails, and says so.
    net.vms[BETA].directory_mut().remove(t);
    net.start(BETA, destroy_obj(t), 3);
    net.settle();
    assert_eq!(net.result(3), Some(&Ok(Val::Bool(true))));
    // alpha still points at beta (it missed the destroy_notify).
    net.vms[ALPHA]
        .directory_mut()
        .follow_move(t, &MachineId::new("beta"), 1);
    net.vms[GAMMA]
        .directory_mut()
        .insert(t, MachineId::new("alpha"), None);
    net.start(GAMMA, call(t, Val::Nat(0)), 4);
    net.settle();
    assert_eq!(net.result(4), Some(&Ok(Val::Nothing)));
    let gamma_errors = errors(&net.vms[GAMMA]);
    // alpha relays beta's reason as it came: gamma's own remote-call
    // error wraps it once, not twice.
    let not_found = format!("remote call to {t} failed: object not found: {t}");
    assert!(
        gamma_errors.iter().any(|e| e.to_string() == not_found),
        "{gamma_errors:?}"
    );
}

/// The new home reconnects to the old one (`peer_up`): until its
/// snapshot ends, the old home still forwards calls to the object. It
/// answered "object destroyed" for a live object meanwhile. Once the
/// snapshot ends without the object (destroyed while apart), the entry
/// goes.
#[test]
fn the_old_home_forwards_while_the_new_home_resyncs() {
    let (mut net, t) = a_tally_moved_to_beta();
    let beta = MachineId::new("beta");
    net.vms[ALPHA].directory_mut().peer_up(&beta, 2);
    assert_eq!(net.vms[ALPHA].directory().machine_of(t), Some(&beta));
    // gamma still places it on alpha.
    net.vms[GAMMA]
        .directory_mut()
        .insert(t, MachineId::new("alpha"), Some("tally"));
    net.start(GAMMA, call(t, Val::Nat(0)), 2);
    net.settle();
    assert_eq!(net.result(2), Some(&Ok(Val::just(Val::Nat(1)))));
    // beta's snapshot ends without naming it: the kept entry goes.
    net.vms[ALPHA].directory_mut().mark_synced(&beta);
    assert_eq!(net.vms[ALPHA].directory().machine_of(t), None);
}

#[test]
fn a_move_from_a_third_node_asks_the_objects_node() {
    let mut net = three();
    let t = net.create(ALPHA, "tally");
    net.start(GAMMA, move_object(t, "beta"), 1);
    net.settle();
    assert_eq!(net.result(1), Some(&Ok(Val::Bool(true))));
    assert!(net.vms[BETA].hosts(t));
    assert_eq!(machine_of(&mut net, GAMMA, t, 2), on("beta"));
    // And back to alpha, from gamma again: epoch 2 everywhere.
    net.start(GAMMA, move_object(t, "alpha"), 3);
    net.settle();
    assert_eq!(net.result(3), Some(&Ok(Val::Bool(true))));
    assert!(net.vms[ALPHA].hosts(t));
    assert_eq!(net.vms[ALPHA].epoch(t), 2);
    assert_eq!(net.vms[GAMMA].directory().epoch_of(t), 2);
    assert_eq!(net.vms[BETA].directory().epoch_of(t), 2);
    // Already there: true, nothing sent.
    net.start(GAMMA, move_object(t, "alpha"), 4);
    net.settle();
    assert_eq!(net.result(4), Some(&Ok(Val::Bool(true))));
    assert_eq!(net.vms[ALPHA].epoch(t), 2);
}

#[test]
fn a_move_that_cannot_happen_answers_false_and_the_object_stays() {
    let mut net = three();
    let t = net.create(ALPHA, "tally");
    net.vms[ALPHA]
        .directory_mut()
        .peer_down(&MachineId::new("gamma"));
    for (origin, to) in [(1, "nowhere"), (2, "gamma")] {
        net.start(ALPHA, move_object(t, to), origin);
        net.settle();
        assert_eq!(net.result(origin), Some(&Ok(Val::Bool(false))), "{to}");
    }
    assert!(net.vms[ALPHA].hosts(t));
    let why = errors(&net.vms[ALPHA]);
    assert!(
        why.iter()
            .any(|e| e.to_string().contains("not a connected peer")),
        "{why:?}"
    );
    // In a transaction: an error, not a move.
    let p = prog! {
        let tx <- begin_tx(None);
        let _ = tx;
        move_object(t, "beta")
    };
    net.start(ALPHA, p, 3);
    net.settle();
    assert!(matches!(
        net.result(3),
        Some(Err(VmError::Unsupported(why))) if why.contains("transaction")
    ));
    assert!(net.vms[ALPHA].hosts(t));
    // Beta lacks the behavior: it refuses to adopt; alpha keeps it.
    let mut reg = BehaviorRegistry::new();
    reg.register("echo", done);
    net.vms[BETA] = Vm::new(VmConfig::new(MachineId::new("beta"), 2), reg, pures());
    net.vms[BETA]
        .directory_mut()
        .peer_up(&MachineId::new("alpha"), 1);
    net.start(ALPHA, move_object(t, "beta"), 4);
    net.settle();
    assert_eq!(net.result(4), Some(&Ok(Val::Bool(false))));
    assert!(net.vms[ALPHA].hosts(t));
    assert!(!net.vms[BETA].hosts(t));
    // And its turn is free again: it still answers calls.
    net.start(ALPHA, call(t, Val::Nat(0)), 5);
    net.settle();
    assert_eq!(net.result(5), Some(&Ok(Val::just(Val::Nat(1)))));
}

#[test]
fn only_a_chain_under_the_controller_moves_a_controlled_object() {
    let mut net = three();
    net.start(ALPHA, create_obj_for("tally", ControllerId(4)), 1);
    net.start(GAMMA, create_obj_for("mover", ControllerId(9)), 2);
    net.start(GAMMA, create_obj_for("mover", ControllerId(4)), 3);
    net.settle();
    let id = |net: &Net, o| net.result(o).unwrap().clone().unwrap().as_object().unwrap();
    let (t, stranger, owner) = (id(&net, 1), id(&net, 2), id(&net, 3));
    let args = Val::List(vec![Val::ObjectRef(t), Val::str("beta")]);
    // A top-level program runs under no controller, like a stranger.
    net.start(GAMMA, move_object(t, "beta"), 4);
    net.start(GAMMA, call(stranger, args.clone()), 5);
    net.settle();
    assert_eq!(net.result(4), Some(&Ok(Val::Bool(false))));
    assert_eq!(net.result(5), Some(&Ok(Val::just(Val::Bool(false)))));
    assert!(net.vms[ALPHA].hosts(t));
    net.start(GAMMA, call(owner, args), 6);
    net.settle();
    assert_eq!(net.result(6), Some(&Ok(Val::just(Val::Bool(true)))));
    assert!(net.vms[BETA].hosts(t));
}

#[test]
fn an_object_running_on_the_moving_chain_is_not_moved() {
    let mut net = three();
    let m = net.create(ALPHA, "mover");
    // It moves itself: its own frame is on the chain.
    net.start(ALPHA, call(m, Val::List(vec![Val::str("beta")])), 1);
    net.settle();
    assert_eq!(net.result(1), Some(&Ok(Val::just(Val::Bool(false)))));
    assert!(net.vms[ALPHA].hosts(m));
    let why = errors(&net.vms[ALPHA]);
    assert!(
        why.iter()
            .any(|e| e.to_string().contains("running on the moving chain")),
        "{why:?}"
    );
}

#[test]
fn a_replica_becomes_the_object_when_it_moves_to_the_replicas_node() {
    let mut net = three();
    net.start(ALPHA, create_obj_for("tally", ControllerId(4)), 1);
    net.settle();
    let t = net.result(1).unwrap().clone().unwrap().as_object().unwrap();
    net.start(BETA, fetch(t), 2);
    net.settle();
    assert!(net.vms[BETA].is_replica(t));
    let mover = {
        net.start(ALPHA, create_obj_for("mover", ControllerId(4)), 3);
        net.settle();
        net.result(3).unwrap().clone().unwrap().as_object().unwrap()
    };
    net.start(
        ALPHA,
        call(mover, Val::List(vec![Val::ObjectRef(t), Val::str("beta")])),
        4,
    );
    net.settle();
    assert_eq!(net.result(4), Some(&Ok(Val::just(Val::Bool(true)))));
    assert!(!net.vms[BETA].is_replica(t), "beta owns it now");
    assert!(net.vms[BETA].local_objects().any(|(id, _)| id == t));
}

#[test]
fn a_move_waiting_for_a_destroyed_object_answers_false() {
    let mut net = three();
    let t = net.create(ALPHA, "tally");
    let echo = net.create(BETA, "echo");
    let c = net.create(ALPHA, "cell");
    net.start(ALPHA, call(t, Val::ObjectRef(echo)), 1);
    net.run(ALPHA); // chain 1 holds t's turn, waiting on beta
    net.start(ALPHA, move_object(t, "beta"), 2);
    net.run(ALPHA); // the move waits for the turn
    net.start(
        ALPHA,
        call(c, Val::List(vec![s("destroy"), Val::ObjectRef(t)])),
        3,
    );
    net.settle();
    assert_eq!(net.result(2), Some(&Ok(Val::Bool(false))));
    assert!(!net.vms[BETA].hosts(t) && !net.vms[ALPHA].hosts(t));
}

/// On durable nodes the old home's next group commit deletes the object
/// and the new home's writes it, with its epoch (so a restarted new home
/// announces it at the epoch peers believe).
#[test]
fn a_move_is_a_delete_at_the_old_home_and_a_write_with_its_epoch_at_the_new() {
    let mut net = three();
    let t = net.create(ALPHA, "tally");
    for vm in &mut net.vms {
        vm.track_changes();
    }
    net.start(ALPHA, move_object(t, "beta"), 1);
    net.settle();
    assert_eq!(net.result(1), Some(&Ok(Val::Bool(true))));
    let mut at_alpha = Vec::new();
    net.vms[ALPHA].drain_changes(|id, record| at_alpha.push((id, record.is_some())));
    assert_eq!(at_alpha, [(t, false)], "deleted at the old home");
    let mut at_beta = Vec::new();
    net.vms[BETA].drain_changes(|id, record| {
        at_beta.push((id, record.map(|r| (r.behavior.to_string(), r.epoch))))
    });
    assert_eq!(at_beta, [(t, Some(("tally".to_string(), 1)))]);
}

/// The new home goes away while the object's record is on its way: the
/// `adopt` fails, the move answers false, and the object stays, its
/// turn free for the calls that waited.
#[test]
fn a_failed_adopt_leaves_the_object_where_it_was() {
    let mut alpha = vm("alpha", 1, TraceMode::Full);
    alpha.directory_mut().peer_up(&MachineId::new("beta"), 2);
    let t = alpha.create_object("tally").unwrap();
    let mover = alpha.start_program(move_object(t, "beta"), 1).unwrap();
    let mut out = Vec::new();
    alpha.run(&mut out);
    let adopt = remote_calls(&mut out).pop().expect("the adopt");
    assert_eq!(adopt.op, Some(RemoteOp::Adopt));
    // A call arrives meanwhile: it waits for the turn the move holds.
    start_call(&mut alpha, t, Val::Nat(0), ChainId(77));
    alpha.run(&mut out);
    assert_eq!(alpha.waiting_count(), 1);
    alpha
        .resume(adopt.token, Err("machine beta is not connected".into()))
        .unwrap();
    alpha.run(&mut out);
    assert_eq!(finished(&mut out, mover), Ok(Val::Bool(false)));
    assert_eq!(finished(&mut out, ChainId(77)), Ok(Val::Nat(1)));
    assert!(alpha.owns(t));
    assert_eq!(alpha.epoch(t), 0);
    assert!(!out.iter().any(|o| matches!(o, Output::Moved { .. })));
}

/// Whether one of `calls` goes to object `t` on `machine`.
fn sent_to(calls: &[RemoteCall], t: ObjectId, machine: &MachineId) -> bool {
    calls
        .iter()
        .any(|rc| rc.target == t && rc.machine == *machine)
}

/// alpha moving a tally to beta, its adopt on the wire: alpha, the tally,
/// the mover, the outputs so far and the adopt.
fn moving_to_beta() -> (Vm, ObjectId, ChainId, Vec<Output>, RemoteCall) {
    let mut alpha = vm("alpha", 1, TraceMode::Full);
    alpha.directory_mut().peer_up(&MachineId::new("beta"), 2);
    let t = alpha.create_object("tally").unwrap();
    let mover = alpha.start_program(move_object(t, "beta"), 1).unwrap();
    let mut out = Vec::new();
    alpha.run(&mut out);
    let adopt = remote_calls(&mut out).pop().expect("the adopt");
    (alpha, t, mover, out, adopt)
}

/// The same with a call waiting for the turn, when the adopt's answer is
/// lost.
fn lost_adopt() -> (Vm, ObjectId, ChainId, Vec<Output>) {
    let (mut alpha, t, mover, mut out, adopt) = moving_to_beta();
    start_call(&mut alpha, t, Val::Nat(0), ChainId(77));
    alpha.run(&mut out);
    alpha
        .resume_lost(adopt.token, "connection to beta lost".into())
        .unwrap();
    alpha.run(&mut out);
    (alpha, t, mover, out)
}

/// The adopt left and its answer was lost: beta may hold the object now.
/// Until beta's word, the object stays frozen at alpha (the call waits,
/// a destroy is refused, the mover has no answer); beta announcing it at
/// the new epoch ends the move as made, and the waiting call follows it.
#[test]
fn a_lost_adopt_answer_freezes_the_object_until_the_new_home_announces_it() {
    let (mut alpha, t, mover, mut out) = lost_adopt();
    assert!(!out.iter().any(|o| matches!(o, Output::Finished { .. })));
    assert_eq!(alpha.waiting_count(), 1);
    assert_eq!(
        alpha.serve_op(RemoteOp::Destroy, t, &Val::Nothing),
        Val::Bool(false)
    );
    assert!(alpha.owns(t));
    let beta = MachineId::new("beta");
    assert!(
        !alpha.announced_elsewhere(t, &beta, 0),
        "not newer than ours"
    );
    // Only beta can hold it at epoch 1: another node's word is no word.
    let gamma = MachineId::new("gamma");
    assert!(!alpha.announced_elsewhere(t, &gamma, 1));
    assert!(
        alpha.owns(t) && alpha.waiting_count() == 1,
        "still in doubt"
    );
    assert!(alpha.announced_elsewhere(t, &beta, 1));
    alpha.run(&mut out);
    assert_eq!(finished(&mut out, mover), Ok(Val::Bool(true)));
    assert!(!alpha.hosts(t));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Moved { id, epoch: 1, .. } if *id == t)));
    let forwarded = remote_calls(&mut out);
    assert!(
        sent_to(&forwarded, t, &beta),
        "the waiting call follows it: {forwarded:?}"
    );
}

/// The same, but beta says it destroyed the object: it held it, so the
/// move was made (what another machine destroys settles nothing).
#[test]
fn a_lost_adopt_answer_is_settled_by_the_new_homes_destroy_notify() {
    let (mut alpha, t, mover, mut out) = lost_adopt();
    alpha.destroyed_elsewhere(t, &MachineId::new("gamma"));
    alpha.run(&mut out);
    assert!(alpha.owns(t), "gamma's word is not beta's");
    alpha.destroyed_elsewhere(t, &MachineId::new("beta"));
    alpha.run(&mut out);
    assert_eq!(finished(&mut out, mover), Ok(Val::Bool(true)));
    assert!(!alpha.hosts(t));
}

/// The same, but beta's next snapshot ends without the object: the adopt
/// never landed. The object thaws at alpha, the mover gets false, and
/// the waiting call runs here. Another machine's snapshot settles
/// nothing, nor does the end of a snapshot beta began before the answer
/// was lost (it may have listed its objects before the adopt landed).
#[test]
fn a_lost_adopt_answer_thaws_when_the_new_homes_directory_lacks_the_object() {
    let (mut alpha, t, mover, mut out) = lost_adopt();
    let beta = MachineId::new("beta");
    alpha.peer_synced(&MachineId::new("gamma"));
    alpha.peer_synced(&beta);
    alpha.run(&mut out);
    assert_eq!(alpha.waiting_count(), 1, "neither settles it");
    // beta reconnects, and its new snapshot ends without the object.
    alpha.directory_mut().peer_down(&beta);
    alpha.directory_mut().peer_up(&beta, 2);
    alpha.peer_synced(&beta);
    alpha.run(&mut out);
    assert_eq!(finished(&mut out, mover), Ok(Val::Bool(false)));
    assert_eq!(finished(&mut out, ChainId(77)), Ok(Val::Nat(1)));
    assert!(alpha.owns(t));
    assert_eq!(alpha.epoch(t), 0);
    assert!(!out.iter().any(|o| matches!(o, Output::Moved { .. })));
    assert_eq!(
        alpha.serve_op(RemoteOp::Destroy, t, &Val::Nothing),
        Val::Bool(true)
    );
}

/// beta's create_notify came while the move was under way (before its
/// answer, as beta sends it), and then the answer was lost: that word is
/// kept, and settles the move as made at once.
#[test]
fn a_new_homes_word_heard_before_a_lost_answer_settles_the_move() {
    let (mut alpha, t, mover, mut out, adopt) = moving_to_beta();
    let beta = MachineId::new("beta");
    assert!(
        !alpha.announced_elsewhere(t, &beta, 1),
        "ignored: the answer is on its way"
    );
    assert!(alpha.owns(t));
    alpha.resume_lost(adopt.token, "timed out".into()).unwrap();
    alpha.run(&mut out);
    assert_eq!(finished(&mut out, mover), Ok(Val::Bool(true)));
    assert!(!alpha.hosts(t));
}

/// The moving chain's own id coming back into the object (a remote move
/// runs under its asker's chain) is refused while the record is away:
/// nothing may run inside it, and it cannot wait on itself.
#[test]
fn the_moving_chain_cannot_reenter_an_object_in_doubt() {
    let (mut alpha, t, mover, mut out) = lost_adopt();
    start_call(&mut alpha, t, Val::Nat(0), mover);
    alpha.run(&mut out);
    assert!(
        matches!(finished(&mut out, mover), Err(VmError::Moving(id)) if id == t),
        "{out:?}"
    );
    assert_eq!(alpha.state(t), Some(&[][..]), "nothing ran inside it");
}

/// A node that owns an object and hears another announce it at a newer
/// epoch (it restarted from its store before a move's answer came) drops
/// its copy and places the object there; not while a call is inside it.
#[test]
fn an_object_announced_elsewhere_at_a_newer_epoch_leaves_this_node() {
    let mut alpha = vm("alpha", 1, TraceMode::Full);
    let beta = MachineId::new("beta");
    alpha.directory_mut().peer_up(&beta, 2);
    let t = alpha.create_object("tally").unwrap();
    assert!(!alpha.announced_elsewhere(t, &beta, 0));
    assert!(alpha.announced_elsewhere(t, &beta, 3));
    assert!(!alpha.hosts(t));
    assert_eq!(alpha.directory().machine_of(t), Some(&beta));
    assert_eq!(alpha.directory().epoch_of(t), 3);
}

/// The same with a call inside the object (suspended on a remote call):
/// the call runs to its end here, and the copy leaves then, before the
/// call that waited for its turn runs; that one follows the object to
/// its new home. Only the newest announcement counts.
#[test]
fn an_object_announced_elsewhere_with_a_call_inside_leaves_when_the_call_ends() {
    // Chain 70 is inside the tally, waiting on beta's echo.
    let (mut alpha, t, mut out, inner) = superseded_with_a_call_inside(None);
    let beta = MachineId::new("beta");
    // Chain 71 waits for the tally's turn.
    start_call(&mut alpha, t, Val::Nat(0), ChainId(71));
    alpha.run(&mut out);
    assert_eq!(alpha.waiting_count(), 1);
    assert!(
        !alpha.announced_elsewhere(t, &beta, 2),
        "older than the word kept"
    );
    assert!(alpha.hosts(t), "the call inside runs on");
    alpha.resume(inner.token, Ok(Val::Nat(1))).unwrap();
    alpha.run(&mut out);
    assert_eq!(finished(&mut out, ChainId(70)), Ok(Val::Nat(1)));
    assert!(!alpha.hosts(t), "it left as the call ended");
    assert_eq!(alpha.directory().machine_of(t), Some(&beta));
    assert_eq!(alpha.directory().epoch_of(t), 3);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Moved { id, epoch: 3, .. } if *id == t)));
    let forwarded = remote_calls(&mut out);
    assert!(
        sent_to(&forwarded, t, &beta),
        "the waiting call follows it: {forwarded:?}"
    );
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Finished { chain, .. } if *chain == ChainId(71))),
        "it did not run here: {out:?}"
    );
}

/// alpha, beta up, alpha's tally and beta's echo.
pub(super) fn tally_and_far_echo() -> (Vm, MachineId, ObjectId, ObjectId) {
    let mut alpha = vm("alpha", 1, TraceMode::Full);
    let beta = MachineId::new("beta");
    alpha.directory_mut().peer_up(&beta, 2);
    let t = alpha.create_object("tally").unwrap();
    let far = ObjectId((2 << 48) | 9);
    alpha
        .directory_mut()
        .insert(far, beta.clone(), Some("echo"));
    (alpha, beta, t, far)
}

/// A call of `chain` enters tally `t` and calls `far` on beta: its call,
/// left on the wire, with the call inside `t` waiting for the answer.
pub(super) fn inside_waiting_on_beta(
    alpha: &mut Vm,
    t: ObjectId,
    far: ObjectId,
    chain: ChainId,
    out: &mut Vec<Output>,
) -> RemoteCall {
    start_call(alpha, t, Val::ObjectRef(far), chain);
    alpha.run(out);
    remote_calls(out).pop().expect("the call to beta")
}

/// alpha owns a tally with chain 70's call inside it (a host call, or
/// `calls(tally, echo)` as a program), waiting on beta's echo, when beta
/// announces the tally at epoch 3: the tally, the outputs and that call.
fn superseded_with_a_call_inside(calls: Option<Calls>) -> (Vm, ObjectId, Vec<Output>, RemoteCall) {
    let (mut alpha, beta, t, far) = tally_and_far_echo();
    let mut out = Vec::new();
    match calls {
        Some(calls) => {
            alpha.start_program(calls(t, far), 70).unwrap();
        }
        None => start_call(&mut alpha, t, Val::ObjectRef(far), ChainId(70)),
    }
    alpha.run(&mut out);
    let inner = remote_calls(&mut out).pop().expect("the call to beta");
    assert!(!alpha.announced_elsewhere(t, &beta, 3), "a call is inside");
    (alpha, t, out, inner)
}

/// A program calling a tally and an echo.
type Calls = fn(ObjectId, ObjectId) -> Program;

/// The chain whose call ended does not get back into the copy: its next
/// call of the tally follows it to beta.
#[test]
fn the_chain_that_was_inside_a_superseded_copy_calls_the_object_where_it_went() {
    let (mut alpha, t, mut out, inner) = superseded_with_a_call_inside(Some(|t, far| {
        call(t, Val::ObjectRef(far)).then(call(t, Val::Nat(0)))
    }));
    alpha.resume(inner.token, Ok(Val::Nat(1))).unwrap();
    alpha.run(&mut out);
    assert!(!alpha.hosts(t));
    let forwarded = remote_calls(&mut out);
    assert!(
        sent_to(&forwarded, t, &MachineId::new("beta")),
        "its second call goes to beta: {forwarded:?} {out:?}"
    );
}

/// A transaction of the chain inside a superseded copy does not commit:
/// what it wrote there would leave with the copy.
#[test]
fn a_commit_touching_a_superseded_copy_fails() {
    let (mut alpha, beta, _, far) = tally_and_far_echo();
    let t = alpha.create_object("tx_across").unwrap();
    let mut out = Vec::new();
    start_call(&mut alpha, t, Val::ObjectRef(far), ChainId(70));
    alpha.run(&mut out);
    let inner = remote_calls(&mut out).pop().expect("the call to beta");
    assert!(!alpha.announced_elsewhere(t, &beta, 3), "a call is inside");
    alpha.resume(inner.token, Ok(Val::Nat(1))).unwrap();
    alpha.run(&mut out);
    assert_eq!(finished(&mut out, ChainId(70)), Ok(Val::Bool(false)));
}

/// Names do not change while their object's record is away: the new home
/// takes the names the record carries, and would not take a change.
#[test]
fn names_of_a_moving_object_do_not_change() {
    let mut net = three();
    let t = net.create(ALPHA, "tally");
    net.start(ALPHA, register_name("kept", t), 1);
    net.settle();
    assert_eq!(net.result(1), Some(&Ok(Val::Bool(true))));
    // The move's adopt is out, unanswered: t is moving.
    net.start(ALPHA, move_object(t, "beta"), 2);
    net.vms[ALPHA].run(&mut Vec::new());
    let alpha = &mut net.vms[ALPHA];
    for (origin, program) in [(3, register_name("new", t)), (4, unregister_name("kept"))] {
        alpha.start_program(program, origin).unwrap();
        let mut out = Vec::new();
        alpha.run(&mut out);
        let answer = out.iter().find_map(|o| match o {
            Output::Finished { result, .. } => Some(result.clone()),
            _ => None,
        });
        assert_eq!(answer, Some(Ok(Val::Bool(false))), "{origin}");
    }
}

/// A superseded copy is not this node's to destroy: the call inside may
/// not, and neither may another node; the object stays placed on beta
/// once the copy leaves.
#[test]
fn a_superseded_copy_cannot_be_destroyed_here() {
    let (mut alpha, t, mut out, inner) = superseded_with_a_call_inside(None);
    assert_eq!(
        alpha.serve_op(RemoteOp::Destroy, t, &Val::Nothing),
        Val::Bool(false)
    );
    alpha.resume(inner.token, Ok(Val::Nat(1))).unwrap();
    alpha.run(&mut out);
    assert!(!out.iter().any(|o| matches!(o, Output::Destroyed { .. })));
    assert_eq!(
        alpha.directory().machine_of(t),
        Some(&MachineId::new("beta"))
    );
}

/// Two calls of one chain wait behind another chain's: when the first of
/// them, inside the copy as beta announces it elsewhere, ends, the copy
/// leaves, although the turn passes to the same chain id.
#[test]
fn a_superseded_copy_leaves_even_when_its_turn_passes_to_the_same_chain() {
    let (mut alpha, beta, t, far) = tally_and_far_echo();
    let mut out = Vec::new();
    let first = inside_waiting_on_beta(&mut alpha, t, far, ChainId(69), &mut out);
    start_call(&mut alpha, t, Val::ObjectRef(far), ChainId(70));
    start_call(&mut alpha, t, Val::Nat(0), ChainId(70));
    alpha.run(&mut out);
    alpha.resume(first.token, Ok(Val::Nat(1))).unwrap();
    alpha.run(&mut out);
    let second = remote_calls(&mut out).pop().expect("70's call to beta");
    assert!(!alpha.announced_elsewhere(t, &beta, 3), "70 is inside");
    alpha.resume(second.token, Ok(Val::Nat(1))).unwrap();
    alpha.run(&mut out);
    assert!(!alpha.hosts(t));
    let forwarded = remote_calls(&mut out);
    assert!(
        sent_to(&forwarded, t, &beta),
        "70's second call goes to beta: {forwarded:?} {out:?}"
    );
}

/// A waiter handed the turn as the call inside ended, but not yet run, is
/// not inside the copy: an announcement from the object's new home then
/// drops the copy at once, and the waiter follows the object. (Taken for
/// a call inside, the copy stayed until the waiter had run in it: its
/// effects left with the copy, and its caller had an answer.)
#[test]
fn a_waiter_handed_the_turn_but_not_yet_run_follows_the_object() {
    let (mut alpha, beta, t, far) = tally_and_far_echo();
    let mut out = Vec::new();
    let inner = inside_waiting_on_beta(&mut alpha, t, far, ChainId(69), &mut out);
    start_call(&mut alpha, t, Val::Nat(0), ChainId(70));
    alpha.run(&mut out);
    assert_eq!(alpha.waiting_count(), 1);
    alpha.resume(inner.token, Ok(Val::Nat(1))).unwrap();
    let done = |out: &[Output], id| {
        out.iter()
            .any(|o| matches!(o, Output::Finished { chain, .. } if *chain == ChainId(id)))
    };
    // A step at a time, until 69 has ended and handed 70 the turn.
    while !done(&out, 69) {
        assert!(alpha.run_for(1, &mut out), "69 never ended");
    }
    assert!(!done(&out, 70), "70 ran in the same step");
    assert!(alpha.announced_elsewhere(t, &beta, 3), "nothing is inside");
    alpha.run(&mut out);
    let forwarded = remote_calls(&mut out);
    assert!(
        sent_to(&forwarded, t, &beta),
        "70 follows the object: {forwarded:?} {out:?}"
    );
    assert!(!done(&out, 70), "70 ran in the dropped copy");
    assert!(!alpha.hosts(t));
}

/// While the record is on its way (the adopt not yet answered), nothing
/// may change it at the old home: a destroy, a transfer and a freeze
/// asked by other nodes are refused, and the move completes with the
/// record as it was sent. So is a fetch: its answer could reach the new
/// home after the object, and make a replica of it there.
#[test]
fn nothing_changes_an_object_while_its_record_is_on_its_way() {
    for op in [
        RemoteOp::Destroy,
        RemoteOp::Transfer,
        RemoteOp::Freeze,
        RemoteOp::Fetch,
    ] {
        let mut net = three();
        net.start(ALPHA, create_obj_for("tally", ControllerId(4)), 1);
        net.start(ALPHA, create_obj_for("mover", ControllerId(4)), 2);
        net.settle();
        let id = |net: &Net, o| net.result(o).unwrap().clone().unwrap().as_object().unwrap();
        let (t, mover) = (id(&net, 1), id(&net, 2));
        let args = Val::List(vec![Val::ObjectRef(t), Val::str("beta")]);
        net.start(ALPHA, call(mover, args), 3);
        net.run(ALPHA); // the adopt is on the wire, not delivered
        let input = match op {
            RemoteOp::Destroy => Val::just(Val::Nat(4)),
            RemoteOp::Transfer => Val::pair(Val::just(Val::Nat(4)), Val::Nat(9)),
            _ => Val::pair(Val::Nat(0), Val::List(vec![Val::Nat(99)])),
        };
        let answer = net.vms[ALPHA].serve_op(op, t, &input);
        let refused = match op {
            RemoteOp::Freeze | RemoteOp::Fetch => Val::Nothing,
            _ => Val::Bool(false),
        };
        assert_eq!(answer, refused, "{op:?}");
        net.settle();
        assert_eq!(net.result(3), Some(&Ok(Val::just(Val::Bool(true)))));
        assert!(net.vms[BETA].owns(t) && !net.vms[ALPHA].hosts(t), "{op:?}");
        assert_eq!(net.vms[BETA].controller(t), Some(ControllerId(4)));
        assert_eq!(net.vms[BETA].state(t), Some(&[][..]));
        // Once it arrived, its new home serves the same operation.
        assert_ne!(net.vms[BETA].serve_op(op, t, &input), refused, "{op:?}");
    }
}

/// A move_notify that comes after the object left the receiver's
/// directory (destroyed at its new home, whose notices came first) does
/// not bring it back.
#[test]
fn a_late_move_notify_does_not_bring_back_a_destroyed_object() {
    let mut d = Directory::new();
    d.peer_up(&MachineId::new("alpha"), 1);
    d.peer_up(&MachineId::new("beta"), 2);
    let x = ObjectId(1 << 48 | 5);
    let late = Notice::Moved {
        id: x,
        machine: MachineId::new("beta"),
        epoch: 1,
    };
    assert_eq!(d.apply(&MachineId::new("alpha"), late), Ok(false));
    assert_eq!(d.machine_of(x), None);
}

/// An `adopt` of a copy older than the object the new home knows of (the
/// directory places it elsewhere at a later epoch: a stale copy restored
/// from a store) is refused; a newer one is taken.
#[test]
fn an_adopt_of_a_copy_no_newer_than_the_known_object_is_refused() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    let gamma = MachineId::new("gamma");
    vm.directory_mut().peer_up(&gamma, 3);
    let x = ObjectId(2 << 48 | 7);
    vm.directory_mut().follow_move(x, &gamma, 5);
    for stale in [3, 5] {
        assert_eq!(
            vm.serve_op(RemoteOp::Adopt, x, &adopt_record(stale)),
            Val::Bool(false),
            "epoch {stale}: gamma holds it at 5"
        );
    }
    assert!(!vm.owns(x));
    assert_eq!(
        vm.serve_op(RemoteOp::Adopt, x, &adopt_record(6)),
        Val::Bool(true)
    );
}

/// What alpha's next group commit writes of `t`: `None` for a delete,
/// else the machine its record says it is leaving for (`Some(None)`: none).
fn stored_leaving(alpha: &mut Vm, t: ObjectId) -> Option<Option<String>> {
    let mut seen = None;
    alpha.drain_changes(|id, record| {
        if id == t {
            seen = Some(record.map(|r| r.leaving.map(str::to_string)));
        }
    });
    seen.expect("t was written")
}

/// On a durable node, the move's first write names where the object is
/// going, in the batch that the `adopt` waits for; a refused move writes
/// the record again without it, and a made one deletes it.
#[test]
fn a_durable_move_stores_where_the_object_goes_before_the_adopt_leaves() {
    let mut alpha = vm("alpha", 1, TraceMode::Full);
    alpha.track_changes();
    alpha.directory_mut().peer_up(&MachineId::new("beta"), 2);
    let t = alpha.create_object("tally").unwrap();
    alpha.drain_changes(|_, _| {});
    let mover = alpha.start_program(move_object(t, "beta"), 1).unwrap();
    let mut out = Vec::new();
    alpha.run(&mut out);
    let adopt = remote_calls(&mut out).pop().expect("the adopt");
    assert_eq!(stored_leaving(&mut alpha, t), Some(Some("beta".into())));
    alpha.resume(adopt.token, Ok(Val::Bool(false))).unwrap();
    alpha.run(&mut out);
    assert_eq!(finished(&mut out, mover), Ok(Val::Bool(false)));
    assert_eq!(stored_leaving(&mut alpha, t), Some(None), "home again");

    let mover = alpha.start_program(move_object(t, "beta"), 2).unwrap();
    alpha.run(&mut out);
    let adopt = remote_calls(&mut out).pop().expect("the adopt");
    assert_eq!(stored_leaving(&mut alpha, t), Some(Some("beta".into())));
    alpha.resume(adopt.token, Ok(Val::Bool(true))).unwrap();
    alpha.run(&mut out);
    assert_eq!(finished(&mut out, mover), Ok(Val::Bool(true)));
    assert_eq!(stored_leaving(&mut alpha, t), None, "deleted");
}

/// alpha restarted from a record of tally `t` on its way to beta, beta
/// up again, and a call to `t` made: the vm, `t`, and the outputs.
fn restored_on_its_way_to_beta() -> (Vm, ObjectId, Vec<Output>) {
    let mut alpha = vm("alpha", 1, TraceMode::Full);
    alpha.track_changes();
    let t = ObjectId(1 << 48 | 9);
    let state = [Val::Nat(4)];
    let record = ObjectRecord {
        behavior: "tally",
        controller: None,
        version: 4,
        state: &state,
        epoch: 0,
        leaving: Some("beta"),
    };
    alpha.restore_object(t, record).unwrap();
    assert!(nothing_to_write(&mut alpha), "nothing to write back");
    alpha.directory_mut().peer_up(&MachineId::new("beta"), 2);
    start_call(&mut alpha, t, Val::Nat(0), ChainId(77));
    let mut out = Vec::new();
    alpha.run(&mut out);
    (alpha, t, out)
}

fn nothing_to_write(alpha: &mut Vm) -> bool {
    let mut any = false;
    alpha.drain_changes(|_, _| any = true);
    !any
}

/// A node restarted from a record on its way to beta does not serve the
/// object: the call waits, nothing may change or move it, and another
/// machine's word settles nothing. beta announcing it at the move's epoch
/// means it took it: the copy leaves, and the waiting call follows it.
/// (Served meanwhile, the copy took writes that vanished when beta's
/// snapshot came, and could be moved to a third node as a second owner.)
#[test]
fn an_object_restored_on_its_way_waits_for_the_new_homes_word() {
    let (mut alpha, t, mut out) = restored_on_its_way_to_beta();
    assert!(finished_calls(&out).is_empty(), "the call waits: {out:?}");
    assert_eq!(alpha.waiting_count(), 1);
    assert!(alpha.is_moving(t));
    assert_eq!(
        alpha.serve_op(RemoteOp::Destroy, t, &Val::Nothing),
        Val::Bool(false)
    );
    let gamma = MachineId::new("gamma");
    alpha.directory_mut().peer_up(&gamma, 3);
    alpha.start_program(move_object(t, "gamma"), 2).unwrap();
    alpha.run(&mut out);
    assert!(remote_calls(&mut out).is_empty(), "no adopt to gamma");
    assert_eq!(alpha.waiting_count(), 2, "the move waits too");
    assert!(!alpha.announced_elsewhere(t, &gamma, 1), "only beta's word");
    let beta = MachineId::new("beta");
    assert!(alpha.announced_elsewhere(t, &beta, 1));
    alpha.run(&mut out);
    assert!(!alpha.hosts(t));
    assert_eq!(alpha.directory().machine_of(t), Some(&beta));
    let forwarded = remote_calls(&mut out);
    let to_beta = forwarded
        .iter()
        .filter(|rc| rc.target == t && rc.machine == beta);
    assert_eq!(
        to_beta.map(|rc| rc.op).collect::<Vec<_>>(),
        [None, Some(RemoteOp::Move)],
        "the waiting call, then the move, follow it: {forwarded:?}"
    );
    assert!(
        finished_calls(&out).is_empty(),
        "both wait for beta's answers"
    );
    assert_eq!(stored_leaving(&mut alpha, t), None, "deleted");
}

/// The same, but beta's snapshot ends without the object: the adopt
/// never landed. The object thaws, the waiting call runs here, and the
/// record is stored again without the machine it was leaving for.
#[test]
fn an_object_restored_on_its_way_thaws_when_the_new_home_lacks_it() {
    let (mut alpha, t, mut out) = restored_on_its_way_to_beta();
    assert!(finished_calls(&out).is_empty(), "the call waits: {out:?}");
    alpha.peer_synced(&MachineId::new("gamma"));
    alpha.run(&mut out);
    assert!(
        finished_calls(&out).is_empty(),
        "gamma's snapshot says nothing"
    );
    alpha.peer_synced(&MachineId::new("beta"));
    alpha.run(&mut out);
    assert_eq!(finished(&mut out, ChainId(77)), Ok(Val::Nat(5)));
    assert!(alpha.owns(t) && !alpha.is_moving(t));
    assert_eq!(stored_leaving(&mut alpha, t), Some(None));
    assert_eq!(
        alpha.serve_op(RemoteOp::Destroy, t, &Val::Nothing),
        Val::Bool(true)
    );
}

fn finished_calls(out: &[Output]) -> Vec<&Output> {
    out.iter()
        .filter(|o| matches!(o, Output::Finished { .. }))
        .collect()
}

/// The new home announces an adopted object's names as its own, after
/// the object itself.
#[test]
fn an_adopted_objects_names_are_announced_after_it() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    let x = ObjectId(2 << 48 | 7);
    let Val::List(mut record) = adopt_record(1) else {
        unreachable!()
    };
    record[5] = Val::List(vec![Val::str("kept")]);
    let adopted = vm.serve_op(RemoteOp::Adopt, x, &Val::List(record));
    assert_eq!(adopted, Val::Bool(true));
    let mut out = Vec::new();
    vm.take_pending(&mut out);
    let said: Vec<String> = out
        .iter()
        .map(|o| match o {
            Output::Adopted { id, .. } if *id == x => "adopted".into(),
            Output::Named { name, id } if *id == x => format!("named {name}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(said, ["adopted", "named kept"]);

    // A name another object holds here stays with it: not taken, and
    // not announced as this one's.
    let y = ObjectId(2 << 48 | 8);
    let other = ObjectId(1 << 48 | 3);
    vm.directory_mut()
        .insert_name("held".into(), other, MachineId::new("beta"));
    let Val::List(mut record) = adopt_record(1) else {
        unreachable!()
    };
    record[5] = Val::List(vec![Val::str("held")]);
    assert_eq!(
        vm.serve_op(RemoteOp::Adopt, y, &Val::List(record)),
        Val::Bool(true)
    );
    out.clear();
    vm.take_pending(&mut out);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Named { .. })),
        "{out:?}"
    );
    assert_eq!(vm.directory().whereis("held"), Some(other));
}

/// Epochs are u16 on the wire: an `adopt` at a larger one is refused as
/// no record, not installed at epoch 0.
#[test]
fn an_adopt_with_an_epoch_past_u16_is_refused() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    let x = ObjectId(2 << 48 | 7);
    let past_u16 = adopt_record(u64::from(u16::MAX) + 1);
    assert_eq!(vm.serve_op(RemoteOp::Adopt, x, &past_u16), Val::Bool(false));
    assert!(!vm.owns(x));
    let highest = adopt_record(u64::from(u16::MAX));
    assert_eq!(vm.serve_op(RemoteOp::Adopt, x, &highest), Val::Bool(true));
}

/// A replica is not this node's object: with its owner not placed here
/// (a reconnect forgot it), destroying it is refused, not done here and
/// announced to every peer as the object's end; and when the owner
/// destroys the object, the replica goes too.
#[test]
fn a_replica_is_not_destroyed_here_and_goes_with_its_object() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let beta = MachineId::new("beta");
    let x = ObjectId(2 << 48 | 7);
    // No controller: anyone may destroy it.
    fetch_replica(&mut vm, x, Val::Nothing);
    let mut out = Vec::new();
    vm.directory_mut().remove(x);
    vm.start_program(destroy_obj(x), 2).unwrap();
    out.clear();
    vm.run(&mut out);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Destroyed { .. })),
        "{out:?}"
    );
    assert!(vm.is_replica(x), "still a replica");
    // The owner is placed again, and destroys the object.
    vm.directory_mut().insert(x, beta.clone(), Some("tally"));
    vm.destroyed_elsewhere(x, &beta);
    assert!(!vm.is_replica(x) && !vm.hosts(x));
}

/// A fetch's answer that reaches a node after the object itself (moved
/// there meanwhile, its `adopt` first on the same connection) does not
/// turn the node's own object into a replica, which would belong to no
/// one: the fetch answers `Nothing`, and the object stays the node's.
#[test]
fn a_fetch_answer_after_the_object_moved_here_leaves_it_owned() {
    let mut vm = vm("alpha", 1, TraceMode::Off);
    let beta = MachineId::new("beta");
    vm.directory_mut().peer_up(&beta, 2);
    let x = ObjectId(2 << 48 | 7);
    vm.directory_mut().insert(x, beta, Some("tally"));
    vm.start_program(fetch(x), 1).unwrap();
    let mut out = Vec::new();
    vm.run(&mut out);
    let token = remote_calls(&mut out)[0].token;
    assert_eq!(
        vm.serve_op(RemoteOp::Adopt, x, &adopt_record(1)),
        Val::Bool(true)
    );
    let Val::List(mut fetched) = adopt_record(0) else {
        unreachable!()
    };
    fetched.truncate(4);
    vm.resume(token, Ok(Val::just(Val::List(fetched)))).unwrap();
    out.clear();
    vm.run(&mut out);
    assert!(vm.owns(x) && !vm.is_replica(x));
    let finished = out.iter().find_map(|o| match o {
        Output::Finished { result, .. } => Some(result.clone()),
        _ => None,
    });
    assert_eq!(finished, Some(Ok(Val::Nothing)));
}
