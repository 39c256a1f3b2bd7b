//! The distribution layer across real nodes. Names: beta (an `avm-node`
//! process serving the demo) names its pong `pong`; alpha and gamma
//! (nodes embedded here, on loopback) find it by name, and lose it when
//! beta is killed. Controllers: alpha's chains destroy and transfer
//! beta's objects only with their controller's authority.

use std::time::{Duration, Instant};

use avm::node::Node;
use avm::vm::{whereis, BehaviorRegistry, Val};

use crate::util::NodeProc;

const LIMIT: Duration = Duration::from_secs(20);

fn embedded(name: &str, peer: &str) -> Node {
    crate::util::embedded(name, vec![peer.to_string()], BehaviorRegistry::new())
}

fn lookup(node: &Node, name: &'static str) -> Val {
    node.submit(whereis(name))
        .recv_timeout(LIMIT)
        .expect("an answer")
        .expect("whereis answers")
}

/// Polls `whereis(name)` on `node` until it answers `want`.
fn until(node: &Node, name: &'static str, want: &Val) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = lookup(node, name);
        if got == *want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: whereis({name}) stayed {got}",
            node.name()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_name_on_beta_is_found_from_alpha_and_gamma_and_gone_when_beta_dies() {
    let beta = NodeProc::start("beta", 0, &["--demo"]);
    let pong: u64 = beta
        .log_value("created pong ", LIMIT)
        .parse()
        .expect("pong's id in beta's log");
    let peer = beta.addr();
    let alpha = embedded("alpha", &peer);
    let gamma = embedded("gamma", &peer);
    let found = Val::just(Val::ObjectRef(avm::vm::ObjectId(pong)));
    until(&alpha, "pong", &found);
    until(&gamma, "pong", &found);
    assert_eq!(lookup(&alpha, "nobody"), Val::Nothing);

    drop(beta); // SIGKILL
    until(&alpha, "pong", &Val::Nothing);
    until(&gamma, "pong", &Val::Nothing);
}

fn run(node: &Node, program: avm::vm::Program) -> Val {
    node.submit(program)
        .recv_timeout(LIMIT)
        .expect("an answer")
        .expect("the program succeeds")
}

/// Remote destroy and transfer over real sockets: beta's objects, alpha's
/// chains, with and without the controller's authority.
#[test]
fn remote_destroy_and_transfer_need_authority() {
    use avm::prog;
    use avm::vm::{
        begin_tx, commit_tx, create_obj, create_obj_for, destroy_obj, done, get_controller,
        get_machine, transfer_obj, ControllerId,
    };
    let mut behaviors = BehaviorRegistry::new();
    behaviors.register("thing", done);
    let beta = crate::util::embedded("beta", vec![], behaviors);
    let alpha = embedded("alpha", &beta.local_addr().to_string());
    let owned = run(&beta, create_obj_for("thing", ControllerId(5)));
    let free = run(&beta, create_obj("thing"));
    let (Some(owned), Some(free)) = (owned.as_object(), free.as_object()) else {
        panic!("creates answered {owned:?}, {free:?}")
    };
    // alpha learns where they live from beta's create_notify.
    let deadline = Instant::now() + LIMIT;
    while run(&alpha, get_machine(free)) == Val::Nothing {
        assert!(
            Instant::now() < deadline,
            "alpha never learnt of beta's objects"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(run(&alpha, get_controller(owned)), Val::just(Val::Nat(5)));
    // scry_meta crosses to beta: alpha hosts nothing under controller 5.
    let filter = Val::List(vec![Val::pair(Val::str("controller"), Val::Nat(5))]);
    assert_eq!(
        run(&alpha, avm::vm::scry_meta(filter)),
        Val::List(vec![Val::ObjectRef(owned)])
    );
    assert_eq!(
        run(&alpha, destroy_obj(owned)),
        Val::Bool(false),
        "not its controller"
    );
    assert_eq!(
        run(&alpha, transfer_obj(owned, ControllerId(1))),
        Val::Bool(false)
    );
    assert_eq!(
        run(&alpha, transfer_obj(free, ControllerId(8))),
        Val::Bool(true)
    );
    assert_eq!(run(&alpha, get_controller(free)), Val::just(Val::Nat(8)));
    let with_authority = prog! {
        let tx <- begin_tx(Some(ControllerId(5)));
        let Val::TxRef(tx) = tx else { return done(tx) };
        let gone <- destroy_obj(owned);
        commit_tx(tx);
        done(gone)
    };
    assert_eq!(run(&alpha, with_authority), Val::Bool(true));
    let hosts = beta.query(move |vm| vm.hosts(owned)).recv().unwrap();
    assert!(!hosts, "destroyed on beta");
}

/// fetch, then freeze, over real sockets: without a conflicting write at
/// the owner the replica's write is applied there; with one it is
/// discarded and the replica refreshed.
#[test]
fn a_replica_freezes_into_its_owner_unless_the_owner_moved_on() {
    use avm::vm::{
        call, create_obj_for, done, fetch, freeze, get_machine, set_state, ControllerId,
    };
    // "cell": Nat n sets its state to [n]; anything else reads it.
    let cells = || {
        let mut behaviors = BehaviorRegistry::new();
        behaviors.register("cell", |input: Val| match input {
            Val::Nat(n) => set_state(vec![Val::Nat(n)]).then(done(Val::Nat(n))),
            _ => avm::vm::get_state(),
        });
        behaviors
    };
    let start = |name: &str, peers| crate::util::embedded(name, peers, cells());
    let beta = start("beta", vec![]);
    let alpha = start("alpha", vec![beta.local_addr().to_string()]);
    let cell = run(&beta, create_obj_for("cell", ControllerId(2)))
        .as_object()
        .expect("a cell");
    let deadline = Instant::now() + LIMIT;
    while run(&alpha, get_machine(cell)) == Val::Nothing {
        assert!(Instant::now() < deadline, "alpha never learnt of the cell");
        std::thread::sleep(Duration::from_millis(20));
    }
    let on = |node: &Node| run(node, call(cell, Val::Nothing));
    let state = |n: u64| Val::just(Val::List(vec![Val::Nat(n)]));

    assert_eq!(run(&alpha, fetch(cell)), Val::Bool(true));
    run(&alpha, call(cell, Val::Nat(7)));
    assert_eq!(
        (on(&alpha), on(&beta)),
        (state(7), Val::just(Val::List(vec![])))
    );
    assert_eq!(run(&alpha, freeze(cell)), Val::just(Val::Bool(true)));
    assert_eq!(on(&beta), state(7), "applied at the owner");

    run(&alpha, call(cell, Val::Nat(8)));
    run(&beta, call(cell, Val::Nat(9)));
    assert_eq!(run(&alpha, freeze(cell)), Val::just(Val::Bool(false)));
    assert_eq!(
        (on(&alpha), on(&beta)),
        (state(9), state(9)),
        "refreshed, writes discarded"
    );
}
