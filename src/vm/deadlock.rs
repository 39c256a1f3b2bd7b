//! Deadlock detection: waits for turns that form a cycle.
//!
//! A chain that waits for an object's turn waits for the chain holding it
//! (its *owner*). That owner may itself wait: for another turn here, or
//! for the answer to a call it made to another node, where it may wait
//! for a turn in turn. A cycle of such waits never ends by itself.
//!
//! - **Here**, the moment a call starts waiting, the waits are followed
//!   from it through this vm's turns ([`on_wait`]). Back at the waiting
//!   chain: a cycle.
//! - **Across nodes**, by edge chasing: where the waits lead to a chain
//!   suspended on a call to another node, a [`Probe`] goes there (an
//!   `Output::Probe` the driver sends), carrying the path so far. The
//!   receiver ([`on_probe`]) looks at what that chain waits for there and
//!   goes on the same way. A probe that finds its initiator holding the
//!   turn awaited last has closed a cycle, if the initiator still waits
//!   where the probe began; one that finds a chain not waiting (running,
//!   or answered meanwhile) dies.
//! - **The first wait, checked last.** The initiator's own wait was looked
//!   at when the probe set out, and may have ended while the probe
//!   travelled: the initiator then ran on, perhaps into the object the
//!   last chain waits for. So a cycle counts only once the first wait is
//!   seen again, unchanged (the initiator waits for the same object, still
//!   held by the chain the path names next). Where that wait is on another
//!   node, the probe goes there to be *confirmed*: a probe whose `blocked`
//!   chain is its initiator.
//!
//! One victim per cycle, the same wherever it is found: the youngest
//! chain in it (the highest counter, then the highest prefix). Its waiting
//! call fails with `VmError::Deadlock` naming the cycle; every other chain
//! in the cycle proceeds. The victim may wait on another node than the one
//! that found the cycle: then an `Output::Victim` tells that node, which
//! fails the call only if it still waits there for the same object. A wait
//! is checked where it is, as the probe passes, and the first one again
//! when the path comes back, so a wait that ends before the cycle closes
//! breaks the path: traffic without a cycle is not taken for a deadlock.

use super::error::{Cycle, VmError, WaitEdge};
use super::exec::Chains;
use super::ids::{ChainId, ObjectId, COUNTER_MAX};
use super::output::{Output, Probe, MAX_PROBE_HOPS};
use super::world::{World, RESTORED_MOVER};

/// What a chain waits for on this vm.
enum Blocked {
    /// An object's turn.
    Turn(ObjectId),
    /// The answer to a call to another node: the probe goes there.
    Remote(super::ids::MachineId),
    /// Nothing: it runs, or is not here.
    Not,
}

/// A call of `chain` (vm chain `key`) just started waiting for `object`.
pub(crate) fn on_wait(
    w: &mut World,
    chains: &Chains,
    chain: ChainId,
    object: ObjectId,
    out: &mut Vec<Output>,
) {
    let path = vec![WaitEdge {
        chain,
        object,
        machine: w.machine.clone(),
    }];
    chase(w, chains, chain, path, 0, out);
}

/// A probe from another node.
pub(crate) fn on_probe(w: &mut World, chains: &Chains, mut probe: Probe, out: &mut Vec<Output>) {
    if probe.hops >= MAX_PROBE_HOPS || probe.path.len() >= MAX_PROBE_HOPS as usize {
        return;
    }
    if probe.blocked == probe.initiator {
        // Back where the initiator waits, to confirm the cycle it closed.
        if first_wait_holds(w, &probe.path) {
            found(w, probe.path, out);
        }
        return;
    }
    match blocked(w, chains, probe.blocked) {
        Blocked::Turn(object) => {
            probe.path.push(WaitEdge {
                chain: probe.blocked,
                object,
                machine: w.machine.clone(),
            });
            chase(w, chains, probe.initiator, probe.path, probe.hops, out);
        }
        Blocked::Remote(machine) if machine != w.machine => {
            probe.hops += 1;
            out.push(Output::Probe { machine, probe });
        }
        Blocked::Remote(_) | Blocked::Not => {}
    }
}

/// Another node found a cycle whose victim waits here: fail its call if
/// it still waits for the same object.
pub(crate) fn on_victim(w: &mut World, cycle: Cycle, out: &mut Vec<Output>) {
    let Some(edge) = cycle.edges.iter().find(|e| e.chain == cycle.victim) else {
        return;
    };
    let object = edge.object;
    fail_wait(w, object, cycle, out);
}

/// Follows waits from `path`'s last edge through this vm's turns.
fn chase(
    w: &mut World,
    chains: &Chains,
    initiator: ChainId,
    mut path: Vec<WaitEdge>,
    hops: u32,
    out: &mut Vec<Output>,
) {
    loop {
        let awaited = path.last().expect("a path starts with one wait").object;
        let Some(owner) = w.turns.owner(awaited) else {
            return; // the turn came free meanwhile
        };
        if owner == initiator {
            return close(w, initiator, path, hops, out);
        }
        if owner == RESTORED_MOVER {
            return; // a move restored in doubt: it waits for a word, not a chain
        }
        if path.len() >= MAX_PROBE_HOPS as usize || path.iter().any(|e| e.chain == owner) {
            return; // a cycle not through the initiator: its own members find it
        }
        match blocked(w, chains, owner) {
            Blocked::Turn(object) => path.push(WaitEdge {
                chain: owner,
                object,
                machine: w.machine.clone(),
            }),
            Blocked::Remote(machine) if machine != w.machine => {
                let probe = Probe {
                    initiator,
                    blocked: owner,
                    path,
                    hops: hops + 1,
                };
                return out.push(Output::Probe { machine, probe });
            }
            Blocked::Remote(_) | Blocked::Not => return,
        }
    }
}

/// The initiator holds the turn awaited last: a cycle, if its own wait
/// (the path's first edge) is still what it was. Checked here, or by the
/// node where that wait is.
fn close(w: &mut World, initiator: ChainId, path: Vec<WaitEdge>, hops: u32, out: &mut Vec<Output>) {
    let first = &path[0];
    if first.machine == w.machine {
        if first_wait_holds(w, &path) {
            found(w, path, out);
        }
        return;
    }
    let machine = first.machine.clone();
    let probe = Probe {
        initiator,
        blocked: initiator,
        path,
        hops: hops + 1,
    };
    out.push(Output::Probe { machine, probe });
}

/// Whether the path's first wait, which is on this node, still holds: its
/// chain waits for the same object, and that object's turn is held by the
/// chain the path names next.
fn first_wait_holds(w: &World, path: &[WaitEdge]) -> bool {
    let (Some(first), Some(next)) = (path.first(), path.get(1)) else {
        return false;
    };
    first.machine == w.machine
        && w.turns.waiting_for(first.chain) == Some(first.object)
        && w.turns.owner(first.object) == Some(next.chain)
}

/// What `chain` waits for here: a turn, or (its innermost call here being
/// suspended) the answer from another node.
fn blocked(w: &World, chains: &Chains, chain: ChainId) -> Blocked {
    if let Some(object) = w.turns.waiting_for(chain) {
        return Blocked::Turn(object);
    }
    // The latest of the vm's chains with this id is the innermost.
    let innermost = w
        .chain_keys
        .get(&chain)
        .and_then(|keys| keys.last())
        .and_then(|&key| chains.get(key));
    match innermost {
        Some(c) if c.token.is_some() => match w.directory.machine_of(c.remote_target) {
            Some(machine) => Blocked::Remote(machine.clone()),
            None => Blocked::Not,
        },
        _ => Blocked::Not,
    }
}

/// A cycle: pick the victim, and fail its call here or tell its node.
fn found(w: &mut World, edges: Vec<WaitEdge>, out: &mut Vec<Output>) {
    let victim = edges
        .iter()
        .max_by_key(|e| youth(e.chain))
        .expect("a cycle has a wait")
        .clone();
    let cycle = Cycle {
        edges,
        victim: victim.chain,
    };
    if victim.machine == w.machine {
        fail_wait(w, victim.object, cycle, out);
    } else {
        out.push(Output::Victim {
            machine: victim.machine,
            cycle: Box::new(cycle),
        });
    }
}

/// Younger chains sort higher: the counter first (minted later), then the
/// prefix, so every node picks the same victim.
fn youth(chain: ChainId) -> (u64, u64) {
    (chain.0 & COUNTER_MAX, chain.0 >> 48)
}

/// Fails the victim's call waiting here for `object`, if it still does.
fn fail_wait(w: &mut World, object: ObjectId, cycle: Cycle, out: &mut Vec<Output>) {
    if w.turns.waiting_for(cycle.victim) != Some(object) {
        return;
    }
    let Some(waiter) = w.turns.withdraw(object, cycle.victim) else {
        return;
    };
    let cycle = Box::new(cycle);
    out.push(Output::DeadlockBroken(cycle.clone()));
    w.to_fail.push((waiter.key, VmError::Deadlock(cycle)));
}
