//! Nodes embedded in this process: custom behaviors and `Node::submit`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use avm::node::{Node, NodeConfig};
use avm::vm::{call, create_obj, done, BehaviorRegistry, Program, PureRegistry, Val};

use crate::util::keyed;

fn echo_twice(input: Val) -> Program {
    done(Val::pair(input.clone(), input))
}

fn start(name: &str, peers: Vec<String>, behaviors: BehaviorRegistry) -> Node {
    crate::util::embedded(name, peers, behaviors)
}

fn run(node: &Node, program: Program) -> Result<Val, String> {
    node.submit(program)
        .recv_timeout(Duration::from_secs(20))
        .expect("the program finishes")
}

#[test]
fn custom_behavior_is_called_across_nodes() {
    let mut behaviors = BehaviorRegistry::new();
    behaviors.register("echo_twice", echo_twice);
    let beta = start("beta", vec![], behaviors);
    let alpha = start(
        "alpha",
        vec![beta.local_addr().to_string()],
        BehaviorRegistry::new(),
    );

    let echo = match run(&beta, create_obj("echo_twice")) {
        Ok(Val::ObjectRef(id)) => id,
        other => panic!("create_obj answered {other:?}"),
    };
    // alpha learns where `echo` lives from beta's create_notify; until
    // then its call fails, and the result says why.
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let answer = run(&alpha, call(echo, Val::Nat(7)));
        match answer {
            Ok(answer) if answer != Val::Nothing => break answer,
            Err(why) => assert!(why.contains("object not found"), "{why}"),
            Ok(_) => {}
        }
        assert!(Instant::now() < deadline, "alpha never reached echo");
        // Polling, with the deadline above.
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(answer, Val::just(Val::pair(Val::Nat(7), Val::Nat(7))));

    // A behavior alpha does not have: beta hosts the object, so it runs there.
    let local = run(&alpha, create_obj("echo_twice"));
    assert!(
        local
            .as_ref()
            .is_err_and(|e| e.contains("unknown behavior: echo_twice")),
        "alpha has no echo_twice behavior: {local:?}"
    );
    alpha.shutdown();
    beta.shutdown();
}

#[test]
fn a_failed_call_tells_the_submitter_why() {
    let node = start("solo", vec![], BehaviorRegistry::new());
    let ghost = avm::vm::ObjectId((77 << 48) | 5);
    let err = run(&node, call(ghost, Val::Nat(1)).bind(done)).unwrap_err();
    assert!(
        err.contains("object not found") && err.contains(&ghost.to_string()),
        "{err}"
    );
    // A program that looks at the failure itself keeps its own answer.
    let handled = call(ghost, Val::Nat(1)).bind(|v| done(Val::Bool(v == Val::Nothing)));
    assert_eq!(run(&node, handled), Ok(Val::Bool(true)));
    node.shutdown();
}

/// A program submitted to a stopped node is refused, never left waiting:
/// right after `shutdown` (racing the interpreter's exit) and long after.
#[test]
fn submit_to_a_stopped_node_is_refused() {
    for settle in [Duration::ZERO, Duration::from_millis(200)] {
        let node = start("solo", vec![], BehaviorRegistry::new());
        assert_eq!(run(&node, done(Val::Nat(7))), Ok(Val::Nat(7)));
        node.shutdown();
        // The sleep is the thing under test: the submit comes that long
        // after the shutdown (0: racing the interpreter's exit).
        std::thread::sleep(settle);
        let answer = node
            .submit(done(Val::Nat(8)))
            .recv_timeout(Duration::from_secs(10));
        match answer {
            Ok(Err(e)) => assert_eq!(e, "node stopped"),
            // Racing the exit, the interpreter may still have run it.
            Ok(Ok(v)) if settle.is_zero() => assert_eq!(v, Val::Nat(8)),
            other => panic!("after {settle:?}: {other:?}"),
        }
    }
}

/// `count(n)` calls itself with `n - 1` as its last step, so its answer
/// nests one `Just` per level.
fn count(cx: avm::vm::Ctx, input: Val) -> Program {
    match input {
        Val::Nat(0) => done(Val::Nat(0)),
        Val::Nat(n) => call(cx.me, Val::Nat(n - 1)),
        _ => done(Val::Nothing),
    }
}

/// A local recursion 200,000 calls deep answers a value nested as deep.
/// The node hands it back to a local caller, refuses to put it on the wire
/// (over the protocol's 128 levels) with an error to the remote caller,
/// and survives dropping it on either of its threads.
#[test]
fn a_deeply_nested_answer_does_not_overflow_a_stack() {
    let mut behaviors = BehaviorRegistry::new();
    behaviors.register_with_ctx("count", count);
    let beta = start("beta", vec![], behaviors);
    let counter = match run(&beta, create_obj("count")) {
        Ok(Val::ObjectRef(id)) => id,
        other => panic!("create_obj answered {other:?}"),
    };
    // Locally: unwrap it level by level (each step drops one shell).
    let mut v = run(&beta, call(counter, Val::Nat(200_000))).unwrap();
    let mut justs = 0;
    while let Val::Just(inner) = v {
        v = *inner;
        justs += 1;
    }
    assert_eq!((justs, v), (200_001, Val::Nat(0)));

    // Remotely: the reply cannot be encoded; the caller gets an Err.
    let mut s = std::net::TcpStream::connect(beta.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    crate::wire::handshake(&mut s, "far", 93);
    crate::wire::send(
        &mut s,
        &serde_json::json!({"type":"call","request_id":1,"target":counter,"input":{"Nat":200_000},
                "sender":0,"sender_machine":"far"}),
    );
    let answer = loop {
        let msg = crate::wire::recv(&mut s);
        if msg["type"] == "call_response" {
            break msg;
        }
    };
    let err = answer["result"]["Err"].as_str().unwrap_or_default();
    assert!(err.contains("reply not sent"), "{answer}");
    // And the node still serves.
    assert_eq!(
        run(&beta, call(counter, Val::Nat(2))).unwrap(),
        Val::just(Val::just(Val::just(Val::Nat(0))))
    );
}

#[test]
fn start_on_a_port_in_use_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut config = NodeConfig::new("alpha");
    config.bind = IpAddr::from([127, 0, 0, 1]);
    config.port = port;
    keyed(&mut config);
    let err = Node::start(config, BehaviorRegistry::new(), PureRegistry::new())
        .expect_err("the port is taken");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert_eq!(err.to_string(), format!("address 127.0.0.1:{port} in use"));
}

/// A taken `--http` address is told apart from a taken peer port.
#[test]
fn start_on_an_http_address_in_use_says_http() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = taken.local_addr().unwrap();
    let mut config = NodeConfig::new("alpha");
    config.bind = IpAddr::from([127, 0, 0, 1]);
    config.http = Some(http);
    keyed(&mut config);
    let err = Node::start(config, BehaviorRegistry::new(), PureRegistry::new())
        .expect_err("the HTTP address is taken");
    assert_eq!(err.to_string(), format!("HTTP address {http} in use"));
}

#[test]
fn a_query_that_panics_loses_its_answer_and_nothing_else() {
    let node = start("alpha", vec![], BehaviorRegistry::new());
    let lost = node.query(|_| -> u8 { panic!("the embedder's bug") });
    assert!(
        lost.recv_timeout(Duration::from_secs(20)).is_err(),
        "the panicked query's channel closes without an answer"
    );
    // The node still serves: programs and queries after it are answered.
    assert_eq!(run(&node, done(Val::Nat(1))), Ok(Val::Nat(1)));
    let objects = node.query(|vm| vm.object_count());
    assert_eq!(objects.recv_timeout(Duration::from_secs(20)), Ok(0));
    node.shutdown();
}

#[test]
fn a_setting_that_cannot_run_fails_the_start_by_name() {
    let mut config = NodeConfig::new("alpha");
    config.bind = IpAddr::from([127, 0, 0, 1]);
    keyed(&mut config);
    // "No timeout" asked the natural way: it used to stop the reactor at
    // the first remote call, and every caller then waited for ever.
    config.call_timeout = Duration::MAX;
    let err = Node::start(config, BehaviorRegistry::new(), PureRegistry::new())
        .expect_err("a deadline past the clock's range");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("call_timeout"), "{err}");
}
