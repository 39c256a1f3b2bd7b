//! The distributed PingPong demo's two roles, played on a running
//! [`Node`] through its public API only (`submit`, `query`, `stats`):
//!
//! - [`serve`]: create a `pong` object, name it `pong` cluster-wide
//!   (announced to every peer by `create_notify` and `name_notify`), and
//!   let the node serve calls until it is shut down.
//! - [`orchestrate`]: wait until the name `pong` shows up in the
//!   directory (no hard-coded ids), then run the
//!   orchestrator program (a transaction around the creation of `ping`,
//!   then `call(ping, ["Ping", 0, rounds, pong])`) and report.
//!
//! Both nodes must have the PingPong behaviors registered
//! ([`pingpong::register`]).

use std::fmt;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::node::Node;
use crate::prog;
use crate::vm::{create_obj, done, register_name, MachineId, ObjectId, Val};

use super::pingpong;

/// How often the orchestrator looks for `pong` while it waits.
const LOOK_EVERY: Duration = Duration::from_millis(10);
/// How often it says it is still waiting.
const NOTE_EVERY: Duration = Duration::from_secs(5);

/// The cluster-wide name the serving node gives its `pong`.
pub const PONG_NAME: &str = "pong";

/// Creates `pong` on `node` and names it [`PONG_NAME`] cluster-wide;
/// answers its id. A node restarted from its store (`--data-dir`) has its
/// pong back, and serves that one rather than one more beside it (names
/// are not stored: it is named again). A name already taken (another node
/// serves too) leaves this pong unnamed, with a warning: orchestrators
/// find the named one.
pub fn serve(node: &Node) -> Result<ObjectId, String> {
    let stopped = || format!("creating pong: {}", crate::node::NODE_STOPPED);
    let restored = node
        .query(|vm| {
            vm.local_objects()
                .find(|(_, behavior)| &***behavior == "pong")
                .map(|(id, _)| id)
        })
        .recv()
        .map_err(|_| stopped())?;
    let program = match restored {
        Some(id) => register_name(PONG_NAME, id)
            .bind(move |named| done(Val::pair(Val::ObjectRef(id), named))),
        None => prog! {
            let pong <- create_obj("pong");
            let Val::ObjectRef(id) = pong else { return done(pong) };
            let named <- register_name(PONG_NAME, id);
            done(Val::pair(Val::ObjectRef(id), named))
        },
    };
    let how = if restored.is_some() {
        "restored"
    } else {
        "created"
    };
    match node.submit(program).recv() {
        Ok(Ok(Val::Pair(pong, named))) if pong.as_object().is_some() => {
            let pong = pong.as_object().expect("checked");
            if *named == Val::Bool(true) {
                info!("demo: {how} pong {pong}; named `{PONG_NAME}`; serving");
            } else {
                warn!("demo: {how} pong {pong}; the name `{PONG_NAME}` is taken; serving");
            }
            Ok(pong)
        }
        Ok(Ok(other)) => Err(format!("creating pong answered {other}")),
        Ok(Err(e)) => Err(format!("creating pong: {e}")),
        Err(_) => Err(stopped()),
    }
}

/// Waits up to `wait` for a `pong` in `node`'s directory, plays `rounds`
/// rounds against it, and reports. `Err` when the game could not run at
/// all (no pong in time, the node stopped); a game that ran but ended
/// with another result is an `Ok` report that did not succeed.
pub fn orchestrate(node: &Node, rounds: u64, wait: Duration) -> Result<DemoReport, String> {
    let (pong, pong_machine) = find_pong(node, wait)?;
    info!("demo: found pong {pong} on {pong_machine}; running {rounds} rounds");
    node.stats().take_first_failure();
    let before = node.stats().snapshot();
    let started = Instant::now();
    let result = node
        .submit(pingpong::orchestrator(rounds, pong))
        .recv()
        .map_err(|_| "the node shut down before the demo finished".to_owned())?
        .map_err(|e| format!("the orchestrator failed: {e}"))?;
    let elapsed = started.elapsed();
    let counted = node.stats().snapshot() - before;
    Ok(DemoReport {
        rounds,
        result,
        pong_machine,
        our_machine: MachineId::new(node.name()),
        calls_out: counted.calls_out,
        calls_in: counted.calls_in,
        elapsed,
        first_failure: node.stats().take_first_failure(),
    })
}

/// The object named [`PONG_NAME`] and its machine, once the name is known.
fn find_pong(node: &Node, wait: Duration) -> Result<(ObjectId, MachineId), String> {
    info!("demo: waiting for a `pong` object (one named `{PONG_NAME}`)");
    let since = Instant::now();
    // A wait too long to add to a clock reading means "for ever".
    let give_up = since.checked_add(wait);
    let mut next_note = since + NOTE_EVERY;
    loop {
        let found = node
            .query(|vm| {
                let dir = vm.directory();
                let id = dir.whereis(PONG_NAME)?;
                let machine = dir.name_holder(PONG_NAME).unwrap_or(vm.machine());
                Some((id, machine.clone()))
            })
            .recv()
            .map_err(|_| "the node shut down before the demo started".to_owned())?;
        if let Some(found) = found {
            return Ok(found);
        }
        let now = Instant::now();
        if give_up.is_some_and(|g| now >= g) {
            return Err(format!(
                "no `pong` object appeared within {wait:?} (none named `{PONG_NAME}`); is the \
                 serving node (--demo without --rounds) running and reachable? If it is, a WARN \
                 line above says why it refused this node, or this node it (a cluster key, TLS)"
            ));
        }
        if now >= next_note {
            info!(
                "demo: still waiting for a `pong` object ({:.0?} so far)",
                now - since
            );
            next_note = now + NOTE_EVERY;
        }
        std::thread::sleep(LOOK_EVERY);
    }
}

/// What the orchestrator saw.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub rounds: u64,
    pub result: Val,
    /// The machine hosting the `pong` that was used.
    pub pong_machine: MachineId,
    pub our_machine: MachineId,
    /// Calls this node sent to other nodes during the game.
    pub calls_out: u64,
    /// Calls other nodes sent to this node during the game.
    pub calls_in: u64,
    /// From the orchestrator's start to its result.
    pub elapsed: Duration,
    /// Why the first remote call that failed did so, if any did.
    pub first_failure: Option<String>,
}

impl DemoReport {
    /// The result PROTOCOL.md promises: `["done", rounds]`.
    pub fn expected(&self) -> Val {
        Val::List(vec![Val::str("done"), Val::Nat(self.rounds)])
    }

    pub fn succeeded(&self) -> bool {
        self.result == self.expected()
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let crossed = self.calls_out + self.calls_in;
        writeln!(f, "result: {}", self.result)?;
        writeln!(
            f,
            "calls across the network: {crossed} ({} -> {}: {}, {} -> {}: {})",
            self.our_machine,
            self.pong_machine,
            self.calls_out,
            self.pong_machine,
            self.our_machine,
            self.calls_in
        )?;
        let per_call = if crossed > 0 {
            self.elapsed / crossed as u32
        } else {
            Duration::ZERO
        };
        write!(
            f,
            "elapsed: {:.3} ms ({:.1} us per remote call)",
            self.elapsed.as_secs_f64() * 1e3,
            per_call.as_secs_f64() * 1e6
        )
    }
}
