//! Group commit: what the interpreter changed reaches the disk before any
//! message that could depend on it leaves the node.
//!
//! ```text
//!   interpreter                         "<name>/store" thread
//!   ───────────                         ─────────────────────
//!   run a batch of steps
//!   drain the vm's changes ─Batch #n──▶ takes every queued batch,
//!   hold the batch's output             writes them in one redb transaction
//!     (and everything after it)         (fsync), then
//!   run the next batch  ...  ◀─Done(n)─ answers with the last #, and unparks
//!   release held output up to #n
//! ```
//!
//! Rules, each the reason for a piece of this file:
//! - *Output commit.* A batch's output (replies, results of submitted
//!   programs, outgoing calls, notices) is held until that batch and every
//!   earlier one are durable. Outgoing calls are held too: a call can carry
//!   a value that depends on a write (a bank debits here, then credits
//!   there), and the other node's effect must not outlive ours. Output of
//!   a batch that wrote nothing waits only when earlier output still
//!   waits, so order is kept and a node that writes nothing never waits.
//! - *Group commit.* While the store thread writes, the interpreter keeps
//!   running chains; the batches it drains meanwhile queue up and go to
//!   disk together in the next transaction, so one fsync covers many.
//! - *Atomic.* A transaction commits in one step of the vm, so its writes
//!   are in one drain, one `Batch`, one redb transaction.
//! - *Failure.* When a write fails (disk full, I/O error), the answers it
//!   held fail with `not durable: <reason>` and a log line, calls it held
//!   fail in their chains instead of leaving, and the objects it carried
//!   are marked changed again, so the next successful write stores their
//!   state as it is then. Nothing is acknowledged that is not on disk.
//! - *Bounded.* At most [`MAX_IN_FLIGHT`] batches wait for the disk; past
//!   that the interpreter waits for the store instead of running more.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use log::{error, warn};

use crate::store::{Batch, Store};
use crate::vm::{ObjectId, Val, Vm};

use super::handoff::{Command, Handoff};
use super::stats::NodeStats;

/// Where a submitted program's result goes.
pub type ResultSender = Sender<Result<Val, String>>;

/// Batches that may wait for the disk at once before the interpreter
/// stops to let the store catch up.
pub const MAX_IN_FLIGHT: u64 = 256;

/// Spare batches kept for reuse.
const SPARE_BATCHES: usize = 8;

/// The store thread's answer: batches `..=through` were written, or not.
struct Done {
    through: u64,
    result: Result<(), String>,
    /// The batches, back for reuse (or, after a failure, for their ids).
    batches: Vec<Batch>,
}

/// Output held until the batch `after` is durable.
struct Held {
    after: u64,
    commands: Vec<Command>,
    results: Vec<(ResultSender, Result<Val, String>)>,
}

/// The interpreter's side of group commit.
pub struct Durable {
    to_store: Option<Sender<(u64, Batch)>>,
    done: Receiver<Done>,
    store_thread: Option<JoinHandle<()>>,
    /// Number of the last batch sent to the store (batches count from 1).
    submitted: u64,
    /// Every batch up to this one has been answered.
    answered: u64,
    /// Up to here answered `Err`: output held behind them fails.
    failed_through: u64,
    failure: String,
    held: VecDeque<Held>,
    spare: Vec<Batch>,
}

impl Durable {
    /// Starts the store thread around `store`. It unparks the interpreter
    /// through `handoff` when a write is done.
    pub fn start(
        store: Store,
        name: &str,
        handoff: Arc<Handoff>,
        stats: Arc<NodeStats>,
    ) -> std::io::Result<Durable> {
        let (to_store, batches) = mpsc::channel::<(u64, Batch)>();
        let (answer, done) = mpsc::channel();
        let store_thread = std::thread::Builder::new()
            .name(format!("{name}/store"))
            .spawn(move || write_batches(store, batches, answer, handoff, stats))?;
        Ok(Durable {
            to_store: Some(to_store),
            done,
            store_thread: Some(store_thread),
            submitted: 0,
            answered: 0,
            failed_through: 0,
            failure: String::new(),
            held: VecDeque::new(),
            spare: Vec::new(),
        })
    }

    /// After each batch of interpreter work: sends the vm's changes to the
    /// store, holds this batch's output behind them (or behind output
    /// still held), and moves output that became durable back into
    /// `commands` and `results` (cleared first), in order, for sending.
    pub fn gate(
        &mut self,
        vm: &mut Vm,
        commands: &mut Vec<Command>,
        results: &mut Vec<(ResultSender, Result<Val, String>)>,
    ) {
        let wrote = self.submit_changes(vm);
        self.take_answers(vm, false);
        if !wrote && self.held.is_empty() {
            return;
        }
        if !commands.is_empty() || !results.is_empty() {
            self.hold(commands, results);
        }
        self.release(vm, commands, results);
        if self.submitted - self.answered >= MAX_IN_FLIGHT {
            // The disk is far behind: wait for it rather than pile up more.
            self.take_answers(vm, true);
            self.release(vm, commands, results);
        }
    }

    /// At shutdown: waits for every batch sent, then releases what they
    /// held (failed as usual if a write failed).
    pub fn finish(
        &mut self,
        vm: &mut Vm,
        commands: &mut Vec<Command>,
        results: &mut Vec<(ResultSender, Result<Val, String>)>,
    ) {
        let wrote = self.submit_changes(vm);
        if wrote || !self.held.is_empty() {
            self.hold(commands, results);
        }
        drop(self.to_store.take());
        while self.answered < self.submitted {
            if !self.take_answers(vm, true) {
                break;
            }
        }
        if let Some(thread) = self.store_thread.take() {
            let _ = thread.join();
        }
        self.release(vm, commands, results);
    }

    /// Holds this round's output behind the last batch sent to the store.
    fn hold(
        &mut self,
        commands: &mut Vec<Command>,
        results: &mut Vec<(ResultSender, Result<Val, String>)>,
    ) {
        self.held.push_back(Held {
            after: self.submitted,
            commands: std::mem::take(commands),
            results: std::mem::take(results),
        });
    }

    /// Drains the vm's changes into a batch for the store; whether any.
    fn submit_changes(&mut self, vm: &mut Vm) -> bool {
        let mut batch = self.spare.pop().unwrap_or_default();
        let mut refused = 0;
        vm.drain_changes(|id, record| {
            if let Err(e) = batch.add(id, record) {
                refused += 1;
                error!("not stored: {e}");
            }
        });
        if refused > 0 {
            // Only a behavior name over 64 KiB gets here; such an object
            // lives on in memory, and the log says it is not durable.
            warn!("{refused} objects could not be encoded for the store");
        }
        if batch.is_empty() {
            self.spare.push(batch);
            return false;
        }
        batch.set_next_counter(vm.next_object_counter());
        let Some(to_store) = &self.to_store else {
            return false;
        };
        self.submitted += 1;
        if to_store.send((self.submitted, batch)).is_err() {
            // The store thread is gone (it panicked): nothing more is durable.
            self.on_answer(
                vm,
                Done {
                    through: self.submitted,
                    result: Err("the store thread has stopped".into()),
                    batches: Vec::new(),
                },
            );
        }
        true
    }

    /// Takes the store's answers; with `wait`, blocks for at least one.
    /// False when the store thread is gone.
    fn take_answers(&mut self, vm: &mut Vm, wait: bool) -> bool {
        if wait && self.answered < self.submitted {
            match self.done.recv_timeout(Duration::from_secs(60)) {
                Ok(done) => self.on_answer(vm, done),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    warn!("the store has not finished a write in 60 s; still waiting");
                    return true;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        while let Ok(done) = self.done.try_recv() {
            self.on_answer(vm, done);
        }
        true
    }

    fn on_answer(&mut self, vm: &mut Vm, done: Done) {
        self.answered = self.answered.max(done.through);
        let mut batches = done.batches;
        if let Err(reason) = done.result {
            error!(
                "store write failed, {} objects not durable: {reason}",
                batches.iter().map(Batch::len).sum::<usize>()
            );
            self.failed_through = done.through;
            self.failure = reason;
            for batch in &batches {
                batch.ids(|id| vm.mark_changed(ObjectId(id)));
            }
        }
        for mut batch in batches.drain(..) {
            if self.spare.len() < SPARE_BATCHES {
                batch.clear();
                self.spare.push(batch);
            }
        }
    }

    /// Moves output whose batches are answered into `commands`/`results`.
    fn release(
        &mut self,
        vm: &mut Vm,
        commands: &mut Vec<Command>,
        results: &mut Vec<(ResultSender, Result<Val, String>)>,
    ) {
        while let Some(held) = self.held.front() {
            if held.after > self.answered {
                return;
            }
            let held = self.held.pop_front().expect("front exists");
            if held.after <= self.failed_through && held.after > 0 {
                let why = format!("not durable: {}", self.failure);
                fail_held(vm, held, &why, commands, results);
            } else {
                commands.extend(held.commands);
                results.extend(held.results);
            }
        }
    }
}

/// Output behind a failed write: answers fail, calls fail in their chains
/// (they never leave), everything else goes out as usual.
fn fail_held(
    vm: &mut Vm,
    held: Held,
    why: &str,
    commands: &mut Vec<Command>,
    results: &mut Vec<(ResultSender, Result<Val, String>)>,
) {
    for command in held.commands {
        match command {
            Command::Reply { inbound, .. } => commands.push(Command::Reply {
                inbound,
                result: Err(why.to_string()),
            }),
            Command::Call(call) => {
                let _ = vm.resume(call.token, Err(why.to_string()));
            }
            other => commands.push(other),
        }
    }
    results.extend(
        held.results
            .into_iter()
            .map(|(reply, _)| (reply, Err(why.to_string()))),
    );
}

/// The store thread: one transaction per group of queued batches.
fn write_batches(
    mut store: Store,
    batches: Receiver<(u64, Batch)>,
    answer: Sender<Done>,
    handoff: Arc<Handoff>,
    stats: Arc<NodeStats>,
) {
    let mut group = Vec::new();
    while let Ok((mut through, first)) = batches.recv() {
        group.push(first);
        while let Ok((n, next)) = batches.try_recv() {
            through = n;
            group.push(next);
        }
        let result = store.commit(&group).map_err(|e| e.to_string());
        if result.is_ok() {
            stats.count_store_commit(group.iter().map(|b| b.len() as u64).sum());
        }
        let done = Done {
            through,
            result,
            batches: std::mem::take(&mut group),
        };
        if answer.send(done).is_err() {
            return;
        }
        handoff.unpark_interpreter();
    }
}
