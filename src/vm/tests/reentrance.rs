//! Two vms wired by hand: every remote call suspends, inbound calls enter
//! objects whose chains are suspended, answers arrive out of order.
use super::*;
use crate::demo::pingpong::{done_msg, orchestrator};

/// A message in flight between the vms.
pub(super) enum Wire {
    Call {
        to: usize,
        from: usize,
        rc: RemoteCall,
    },
    Reply {
        to: usize,
        token: SuspendToken,
        result: Result<Val, String>,
    },
    Probe {
        to: usize,
        probe: Probe,
    },
    Victim {
        to: usize,
        cycle: Box<Cycle>,
    },
}

/// Vms and a shuffled network between them: the two-vm harness, for any
/// number of vms. Creations are announced to every other vm at once.
pub(super) struct Net {
    pub(super) vms: Vec<Vm>,
    pub(super) wire: Vec<Wire>,
    /// Inbound chains by origin: who to answer.
    inbound: Vec<(usize, SuspendToken)>,
    pub(super) finished: Vec<(u64, Result<Val, VmError>)>,
    /// Deadlocks broken, by vm.
    pub(super) broken: Vec<(usize, Cycle)>,
    rng: u64,
    out: Vec<Output>,
}

impl Net {
    fn new() -> Net {
        let mut net = Net::of(&["alpha", "beta"], TraceMode::Counting);
        net.vms[1].create_object("pong").unwrap();
        net.run(1);
        net
    }

    /// One vm per name, prefixes 1, 2, ...
    pub(super) fn of(names: &[&str], mode: TraceMode) -> Net {
        let vms = names
            .iter()
            .enumerate()
            .map(|(i, name)| vm(name, i as u16 + 1, mode))
            .collect();
        Net {
            vms,
            wire: Vec::new(),
            inbound: Vec::new(),
            finished: Vec::new(),
            broken: Vec::new(),
            rng: 0x2545_f491_4f6c_dd1d,
            out: Vec::new(),
        }
    }

    /// Every vm greets every other (`peer_up`), as connected nodes do: a
    /// move needs its target up. Call before creating objects (a greeting
    /// forgets what the directory knew of that machine).
    pub(super) fn connect_all(&mut self) {
        let names: Vec<MachineId> = self.vms.iter().map(|v| v.machine().clone()).collect();
        for (i, vm) in self.vms.iter_mut().enumerate() {
            for (j, name) in names.iter().enumerate() {
                if i != j {
                    vm.directory_mut().peer_up(name, j as u16 + 1);
                }
            }
        }
    }

    /// Creates an object on vm `i`, announced to the others.
    pub(super) fn create(&mut self, i: usize, behavior: &str) -> ObjectId {
        let id = self.vms[i].create_object(behavior).unwrap();
        self.run(i);
        id
    }

    /// Runs `program` on vm `i` as a chain whose result is `finished` under `origin`.
    pub(super) fn start(&mut self, i: usize, program: Program, origin: u64) -> ChainId {
        self.vms[i].start_program(program, origin).unwrap()
    }

    /// Delivers messages in a pseudo-random order until none is left.
    pub(super) fn settle(&mut self) {
        for i in 0..self.vms.len() {
            self.run(i);
        }
        while !self.wire.is_empty() {
            self.deliver_one();
        }
    }

    /// The result of the chain started under `origin`, if it finished.
    pub(super) fn result(&self, origin: u64) -> Option<&Result<Val, VmError>> {
        self.finished.iter().find(|f| f.0 == origin).map(|f| &f.1)
    }

    fn index_of(&self, m: &MachineId) -> usize {
        self.vms.iter().position(|v| v.machine() == m).unwrap()
    }

    /// Run vm `i` and put its outputs on the wire.
    pub(super) fn run(&mut self, i: usize) {
        let mut out = std::mem::take(&mut self.out);
        self.vms[i].run(&mut out);
        for o in out.drain(..) {
            match o {
                Output::RemoteCall(rc) => {
                    let to = self.index_of(&rc.machine);
                    self.wire.push(Wire::Call { to, from: i, rc });
                }
                Output::Finished { origin, result, .. } if origin >= 1 << 40 => {
                    let (to, token) = self.inbound[(origin - (1 << 40)) as usize];
                    let result = result.map_err(|e| e.to_string());
                    self.wire.push(Wire::Reply { to, token, result });
                }
                Output::Finished { origin, result, .. } => self.finished.push((origin, result)),
                Output::Created { id, behavior } => {
                    // create_notify: the other vms learn where it lives.
                    let m = self.vms[i].machine().clone();
                    for (j, other) in self.vms.iter_mut().enumerate() {
                        if j != i {
                            other.directory_mut().insert(id, m.clone(), Some(&behavior));
                        }
                    }
                }
                Output::Named { name, id } => {
                    // name_notify: the other vms learn the name.
                    let m = self.vms[i].machine().clone();
                    for (j, other) in self.vms.iter_mut().enumerate() {
                        if j != i {
                            other
                                .directory_mut()
                                .insert_name(name.clone(), id, m.clone());
                        }
                    }
                }
                Output::Unnamed { name, .. } => {
                    for (j, other) in self.vms.iter_mut().enumerate() {
                        if j != i {
                            other.directory_mut().remove_name(&name);
                        }
                    }
                }
                Output::Adopted {
                    id,
                    behavior,
                    epoch,
                } => {
                    // create_notify with the epoch, judged by the rules;
                    // the old home (still hosting it) leaves it alone.
                    let from = self.vms[i].machine().clone();
                    for (j, other) in self.vms.iter_mut().enumerate() {
                        if j != i && !other.owns(id) {
                            let notice = Notice::Created {
                                id,
                                machine: from.clone(),
                                behavior: Some(behavior.clone()),
                                epoch,
                            };
                            other.directory_mut().apply(&from, notice).unwrap();
                        }
                    }
                }
                Output::Moved { id, machine, epoch } => {
                    // move_notify: the others follow it (its new home too).
                    let from = self.vms[i].machine().clone();
                    for (j, other) in self.vms.iter_mut().enumerate() {
                        if j != i {
                            let notice = Notice::Moved {
                                id,
                                machine: machine.clone(),
                                epoch,
                            };
                            other.directory_mut().apply(&from, notice).unwrap();
                        }
                    }
                }
                Output::Destroyed { id } => {
                    // destroy_notify: the other vms drop it and its names.
                    for (j, other) in self.vms.iter_mut().enumerate() {
                        if j != i {
                            other.directory_mut().remove(id);
                            other.directory_mut().drop_names_of(id);
                        }
                    }
                }
                Output::Probe { machine, probe } => {
                    let to = self.index_of(&machine);
                    self.wire.push(Wire::Probe { to, probe });
                }
                Output::Victim { machine, cycle } => {
                    let to = self.index_of(&machine);
                    self.wire.push(Wire::Victim { to, cycle });
                }
                Output::DeadlockBroken(cycle) => self.broken.push((i, *cycle)),
            }
        }
        self.out = out;
    }

    /// Deliver one message, chosen pseudo-randomly (out of order).
    pub(super) fn deliver_one(&mut self) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let pick = (self.rng % self.wire.len() as u64) as usize;
        match self.wire.swap_remove(pick) {
            Wire::Call { to, from, rc } if rc.op.is_some_and(|op| !op.answers_at_once()) => {
                // An operation run as a chain there, answered when it ends.
                let origin = (1 << 40) + self.inbound.len() as u64;
                self.inbound.push((from, rc.token));
                let op = rc.op.expect("checked");
                self.vms[to].start_op(op, rc.target, &rc.input, Some(rc.chain), origin);
                self.run(to);
            }
            Wire::Call { to, from, rc } if rc.op.is_some() => {
                // A meta operation: served at once, answered like a call.
                let op = rc.op.expect("checked");
                let answer = self.vms[to].serve_op(op, rc.target, &rc.input);
                self.run(to);
                self.wire.push(Wire::Reply {
                    to: from,
                    token: rc.token,
                    result: Ok(answer),
                });
            }
            Wire::Call { to, from, rc } => {
                let origin = (1 << 40) + self.inbound.len() as u64;
                self.inbound.push((from, rc.token));
                let call = StartCall {
                    target: rc.target,
                    input: rc.input,
                    sender: Some(rc.sender),
                    chain: Some(rc.chain),
                };
                self.vms[to].start_call(call, origin);
                self.run(to);
            }
            Wire::Reply { to, token, result } => {
                self.vms[to].resume(token, result).unwrap();
                self.run(to);
            }
            Wire::Probe { to, probe } => {
                self.vms[to].handle_probe(probe);
                self.run(to);
            }
            Wire::Victim { to, cycle } => {
                self.vms[to].handle_victim(*cycle);
                self.run(to);
            }
        }
    }
}

#[test]
fn concurrent_pingpong_games_across_two_vms_out_of_order() {
    let mut net = Net::new();
    let pong = net.vms[1].local_objects().next().unwrap().0;
    let games = [(1, 5u64), (2, 8), (3, 1), (4, 0)];
    for (origin, rounds) in games {
        net.vms[0]
            .start_program(orchestrator(rounds, pong), origin)
            .unwrap();
    }
    net.run(0);
    let mut max_suspended = 0;
    while !net.wire.is_empty() {
        max_suspended =
            max_suspended.max(net.vms[0].suspended_count() + net.vms[1].suspended_count());
        net.deliver_one();
    }
    net.finished.sort_by_key(|f| f.0);
    let want: Vec<(u64, Result<Val, VmError>)> =
        games.iter().map(|&(o, r)| (o, Ok(done_msg(r)))).collect();
    assert_eq!(net.finished, want);
    assert!(max_suspended >= 3, "games overlapped: {max_suspended}");
    assert_eq!(
        net.vms[0].suspended_count() + net.vms[1].suspended_count(),
        0
    );
}

/// Two chains call objects that each suspend on a remote call; the
/// answers come back in the opposite order, one of them an error.
#[test]
fn out_of_order_answers_resume_the_right_chains() {
    let mut alpha = vm("alpha", 1, TraceMode::Full);
    let remote = ObjectId(2 << 48 | 1);
    alpha
        .directory_mut()
        .insert(remote, MachineId::new("beta"), None);
    let relays = [
        alpha.create_object("relay").unwrap(),
        alpha.create_object("relay").unwrap(),
    ];
    let mut out = Vec::new();
    for (i, relay) in relays.iter().enumerate() {
        let input = Val::List(vec![Val::ObjectRef(remote), Val::Nat(i as u64 + 1)]);
        let call = StartCall {
            target: *relay,
            input,
            sender: None,
            chain: None,
        };
        alpha.start_call(call, 10 * (i as u64 + 1));
    }
    alpha.run(&mut out);
    assert_eq!(alpha.suspended_count(), 2);
    let calls = remote_calls(&mut out);
    out.clear(); // the two objects' Created
    assert_eq!(calls.len(), 2);
    assert_ne!(calls[0].chain, calls[1].chain);
    assert_eq!(calls[0].sender, relays[0]);
    // Answer the second first, the first with an error.
    alpha.resume(calls[1].token, Ok(Val::Nat(200))).unwrap();
    alpha.run(&mut out);
    assert!(
        matches!(&out[..], [Output::Finished { origin: 20, result: Ok(v), .. }] if *v == Val::just(Val::Nat(200)))
    );
    out.clear();
    alpha
        .resume(calls[0].token, Err("peer went away".into()))
        .unwrap();
    alpha.run(&mut out);
    assert!(matches!(
        &out[..],
        [Output::Finished {
            origin: 10,
            result: Ok(Val::Nothing),
            ..
        }]
    ));
    let failure = RemoteFailure {
        target: remote,
        reason: "peer went away".into(),
    };
    assert_eq!(errors(&alpha), [VmError::RemoteFailed(Box::new(failure))]);
    assert_eq!(alpha.trace().count(EventKind::CallSuspended), 2);
    assert_eq!(alpha.trace().count(EventKind::CallResumed), 2);
    // The tokens are spent now: resuming again is an error, not a panic.
    assert_eq!(
        alpha.resume(calls[0].token, Ok(Val::Nothing)),
        Err(VmError::UnknownToken(calls[0].token))
    );
}

#[test]
fn top_level_remote_call_has_sender_zero_and_start_call_forwards_only_moved_objects() {
    let mut alpha = vm("alpha", 1, TraceMode::Full);
    let remote = ObjectId(2 << 48 | 1);
    alpha
        .directory_mut()
        .insert(remote, MachineId::new("beta"), None);
    let chain = alpha.start_program(call(remote, Val::Nat(1)), 3).unwrap();
    let mut out = Vec::new();
    alpha.run(&mut out);
    let Some(Output::RemoteCall(rc)) = out.pop() else {
        panic!()
    };
    assert_eq!(
        (rc.sender, rc.chain, rc.machine.as_str()),
        (ObjectId(0), chain, "beta")
    );
    assert_eq!(chain.0 >> 48, 1, "chain ids carry the node prefix");
    // An inbound call for an object that lives elsewhere is refused: a
    // node relays calls only for objects that moved (tests::moves).
    assert_eq!(
        run_call(&mut alpha, remote, Val::Nat(1)),
        Err(VmError::UnknownObject(remote))
    );
}

/// Three chains of one id inside a tally, each waiting on beta, end in
/// any order (a lost connection fails them all at once): the index of
/// chains by id forgets each whichever ends first, empties when the last
/// ends, and serves a later chain of that id afresh.
#[test]
fn chains_of_one_id_may_end_in_any_order() {
    for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 2, 1]] {
        let (mut alpha, _, t, far) = super::moves::tally_and_far_echo();
        let mut out = Vec::new();
        for _ in 0..3 {
            start_call(&mut alpha, t, Val::ObjectRef(far), ChainId(77));
            alpha.run(&mut out);
        }
        let calls = remote_calls(&mut out);
        assert_eq!(calls.len(), 3, "all three inside, waiting on beta");
        for (n, &i) in order.iter().enumerate() {
            assert_eq!(alpha.chain_ids_tracked(), 1, "{order:?}, {n} ended");
            alpha
                .resume(calls[i].token, Err("connection to beta lost".into()))
                .unwrap();
            alpha.run(&mut out);
        }
        assert_eq!(alpha.chain_ids_tracked(), 0, "{order:?}");
        assert_eq!(alpha.suspended_count(), 0);
        start_call(&mut alpha, t, Val::ObjectRef(far), ChainId(77));
        alpha.run(&mut out);
        assert_eq!(remote_calls(&mut out).len(), 1, "{order:?}: a later chain");
        assert_eq!(alpha.chain_ids_tracked(), 1);
    }
}

/// One chain id's calls overlapping and ending oldest first, while an
/// outer call of that id stays in (a client reusing an id): the index
/// keeps a bounded number of places, not one per call ever made.
#[test]
fn overlapping_calls_on_one_id_leave_a_bounded_index() {
    let (mut alpha, _, t, far) = super::moves::tally_and_far_echo();
    let mut out = Vec::new();
    let id = ChainId(77);
    // The outer call stays in.
    let outer = super::moves::inside_waiting_on_beta(&mut alpha, t, far, id, &mut out);
    let mut waiting = std::collections::VecDeque::new();
    let mut most = 0;
    for _ in 0..2000 {
        start_call(&mut alpha, t, Val::ObjectRef(far), id);
        alpha.run(&mut out);
        waiting.extend(remote_calls(&mut out));
        if waiting.len() > 1 {
            let oldest = waiting.pop_front().unwrap();
            alpha.resume(oldest.token, Ok(Val::Nat(1))).unwrap();
            alpha.run(&mut out);
        }
        most = most.max(alpha.chain_key_places(id));
    }
    assert_eq!(alpha.suspended_count(), 2, "the outer call and the newest");
    assert!(most <= 64, "the index held {most} places for 3 chains");
    for call in [outer].into_iter().chain(waiting) {
        alpha.resume(call.token, Ok(Val::Nat(1))).unwrap();
        alpha.run(&mut out);
    }
    assert_eq!(alpha.chain_ids_tracked(), 0);
}
