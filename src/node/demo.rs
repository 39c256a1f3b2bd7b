//! The distributed PingPong demo, as a role a node can play.
//!
//! - `Serve`: create a `pong` object (announced to every peer by
//!   `create_notify`) and serve calls until shut down.
//! - `Orchestrate`: wait until some object whose behavior is `pong` shows
//!   up in the directory (no hard-coded ids), then run the orchestrator
//!   program (a transaction around the creation of `ping`, then
//!   `call(ping, [Ping, 0, rounds, pong])`) and report.

use std::fmt;
use std::time::Duration;

use crate::vm::{MachineId, Val};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoRole {
    Serve,
    Orchestrate { rounds: u64, wait: Duration },
}

/// What the orchestrator saw.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub rounds: u64,
    pub result: Val,
    /// The machine hosting the `pong` that was used.
    pub pong_machine: MachineId,
    pub our_machine: MachineId,
    /// Calls this node sent to other nodes.
    pub calls_out: u64,
    /// Calls other nodes sent to this node.
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
