//! Single-process PingPong (issue 2's acceptance runs).
use super::*;
use crate::demo::pingpong::{done_msg, msg, orchestrator};

fn play(rounds: u64, mode: TraceMode) -> (Vm, Result<Val, VmError>) {
    let mut vm = vm("alpha", 1, mode);
    let pong = vm.create_object("pong").unwrap();
    let result = run_program(&mut vm, orchestrator(rounds, pong));
    (vm, result)
}

#[test]
fn pingpong_rounds_0_1_3_1000() {
    for rounds in [0, 1, 3, 1000] {
        let (vm, result) = play(rounds, TraceMode::Counting);
        assert_eq!(result, Ok(done_msg(rounds)), "rounds {rounds}");
        // ping is called rounds/2 + 1 times, pong (rounds + 1) / 2 times.
        assert_eq!(vm.trace().count(EventKind::ObjectCalled), rounds + 1);
        assert_eq!(vm.trace().count(EventKind::ErrorOccurred), 0);
        assert_eq!(vm.trace().count(EventKind::TransactionCommitted), 1);
        assert_eq!(vm.suspended_count(), 0);
    }
}

#[test]
fn pingpong_full_trace_records_calls_innermost_first() {
    let (vm, result) = play(3, TraceMode::Full);
    assert_eq!(result, Ok(done_msg(3)));
    let calls: Vec<(u64, &Val)> = vm
        .trace()
        .events()
        .iter()
        .filter_map(|e| match &e.event {
            Event::ObjectCalled { input, output, .. } => {
                Some((Msg::parse(input).unwrap().count, output))
            }
            _ => None,
        })
        .collect();
    let counts: Vec<u64> = calls.iter().map(|c| c.0).collect();
    assert_eq!(counts, [3, 2, 1, 0]);
    assert!(calls.iter().all(|c| *c.1 == done_msg(3)));
    let stamps: Vec<u64> = vm.trace().events().iter().map(|e| e.at).collect();
    assert!(stamps.windows(2).all(|w| w[1] == w[0] + 1));
}

use crate::demo::pingpong::Msg;

#[test]
fn pingpong_unexpected_input_and_failed_call() {
    let mut vm = vm("alpha", 1, TraceMode::Full);
    let ping = vm.create_object("ping").unwrap();
    let pong = vm.create_object("pong").unwrap();
    assert_eq!(
        run_call(&mut vm, ping, Val::Nat(1)),
        Ok(s("ping: unexpected input"))
    );
    assert_eq!(
        run_call(&mut vm, pong, Val::Nat(1)),
        Ok(s("pong: unexpected input"))
    );
    // ping's pong does not exist: the call answers Nothing.
    let ghost = ObjectId(1 << 48 | 999);
    assert_eq!(
        run_call(&mut vm, ping, msg("Ping", 0, 5, ghost)),
        Ok(s("ping: call failed"))
    );
    assert_eq!(errors(&vm), [VmError::UnknownObject(ghost)]);
    // A host call to pong has no sender to call back.
    assert_eq!(
        run_call(&mut vm, pong, msg("Pong", 0, 5, pong)),
        Ok(s("pong: call failed"))
    );
}

/// Runs `rounds` on a thread with a 512 KiB stack: depth lives on the heap.
fn deep_run(rounds: u64) {
    let handle = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let (vm, result) = play(rounds, TraceMode::Counting);
            // Dropping a vm is iterative too.
            drop(vm);
            result
        })
        .unwrap();
    assert_eq!(handle.join().unwrap(), Ok(done_msg(rounds)));
}

#[test]
fn pingpong_deep_on_a_512k_stack() {
    // 1,000,000 rounds in release; debug builds are ~10x slower.
    deep_run(if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    });
}

#[test]
fn deep_suspended_chain_drops_without_recursion() {
    let handle = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(|| {
            let mut vm = vm("alpha", 1, TraceMode::Off);
            let remote = ObjectId(2 << 48 | 1);
            vm.directory_mut()
                .insert(remote, MachineId::new("beta"), None);
            let diver = vm.create_object("dive").unwrap();
            let depth = if cfg!(debug_assertions) {
                100_000
            } else {
                1_000_000
            };
            let input = Val::List(vec![Val::Nat(depth), Val::ObjectRef(remote)]);
            vm.start_call(
                StartCall {
                    target: diver,
                    input,
                    sender: None,
                    chain: None,
                },
                0,
            );
            let mut out = Vec::new();
            vm.run(&mut out);
            assert_eq!(vm.suspended_count(), 1);
            assert!(matches!(out.last(), Some(Output::RemoteCall(rc)) if rc.target == remote));
            drop(vm);
        })
        .unwrap();
    handle.join().unwrap();
}
