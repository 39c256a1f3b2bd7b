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
//!   waits or an earlier batch is still on its way (it may hold a write
//!   this output reflects), so order is kept and a node that writes
//!   nothing never waits.
//! - *Group commit.* While the store thread writes, the interpreter keeps
//!   running chains; the batches it drains meanwhile queue up and go to
//!   disk together in the next transaction, so one fsync covers many.
//! - *Atomic.* A transaction commits in one step of the vm, so its writes
//!   are in one drain, one `Batch`, one redb transaction.
//! - *Failure.* When a write fails (disk full, I/O error), the answers
//!   held behind it, and behind every batch sent before its failure was
//!   known (they were computed on top of it), fail with `not durable:
//!   <reason>` and a log line; calls held there fail in their chains
//!   instead of leaving; the objects it carried are marked changed again,
//!   so the next successful write stores their state as it is then.
//!   Nothing is acknowledged that is not on disk.
//! - *Nothing half written.* The store refuses, unwritten, every batch
//!   drained before the interpreter learned of the latest failure: such a
//!   batch may hold one half of a transaction whose other half was in the
//!   failed write. The interpreter waits for those refusals (they come at
//!   once) and marks their objects changed too, so the next batch carries
//!   every object of the failed spell, whole transactions together.
//! - *Retried.* After a failure the objects it left unwritten are sent
//!   again with the next batch, or on an idle node after [`RETRY_AFTER`],
//!   doubled for each failure in a row up to [`RETRY_AFTER_MOST`].
//! - *Bounded.* At most [`MAX_IN_FLIGHT`] batches wait for the disk; past
//!   that the interpreter waits for the store instead of running more.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, error, warn};

use crate::store::{Batch, Store};
use crate::vm::{ObjectId, Val, Vm};

use super::handoff::{Command, Handoff};
use super::stats::NodeStats;

/// Where a submitted program's result goes.
pub type ResultSender = Sender<Result<Val, String>>;

/// Batches that may wait for the disk at once before the interpreter
/// stops to let the store catch up.
pub const MAX_IN_FLIGHT: u64 = 256;

/// How long an idle node waits before writing again what a failed write
/// left unwritten (a busy one writes it with its next batch); doubled
/// after each failure in a row, up to [`RETRY_AFTER_MOST`].
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
pub const RETRY_AFTER_MOST: Duration = Duration::from_secs(60);

/// Spare batches kept for reuse.
const SPARE_BATCHES: usize = 8;

/// A batch whose buffers grew past this (one large state written, a
/// host-side mass create) is dropped when it comes back rather than kept
/// as a spare: eight spares would otherwise pin eight times the largest
/// write for the node's life.
const SPARE_BATCH_BYTES: usize = 1 << 20;

/// A batch on its way to the store thread.
struct ToStore {
    /// Batches count from 1, in the order sent.
    number: u64,
    /// The failed writes the interpreter had heard of when it drained
    /// this batch. The store refuses a batch drained before the latest
    /// failure was heard of (see *Nothing half written*).
    failures_heard: u64,
    batch: Batch,
}

/// The store thread's answer: batches `..=through` were written, or not.
struct Done {
    through: u64,
    result: Result<(), String>,
    /// Not attempted: drained before an earlier failure was heard of.
    refused: bool,
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
    to_store: Option<Sender<ToStore>>,
    done: Receiver<Done>,
    store_thread: Option<JoinHandle<()>>,
    /// Number of the last batch sent to the store (batches count from 1).
    submitted: u64,
    /// Every batch up to this one has been answered.
    answered: u64,
    /// Output held behind a batch after `failed_after` and up to
    /// `failed_through` fails: a write failed there, and every batch sent
    /// until then was computed on top of it (its objects are written again
    /// only in a later batch).
    failed_after: u64,
    failed_through: u64,
    failure: String,
    /// Failed writes heard of (refusals not counted).
    failures_heard: u64,
    /// A failure left objects unwritten, and no batch has carried them
    /// since.
    retry_owed: bool,
    /// Failed writes in a row (the retry's pace).
    failures_in_a_row: u32,
    /// The store thread is gone: nothing is worth retrying.
    store_dead: bool,
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
        let (to_store, batches) = mpsc::channel();
        let (answer, done) = mpsc::channel();
        let mut store = store;
        let commit = move |group: &[Batch]| {
            let result = store.commit(group).map_err(|e| e.to_string());
            if result.is_ok() {
                stats.count_store_commit(group.iter().map(|b| b.len() as u64).sum());
            }
            result
        };
        let wake = move || handoff.unpark_interpreter();
        let store_thread = std::thread::Builder::new()
            .name(format!("{name}/store"))
            .spawn(move || write_batches(commit, batches, answer, wake))?;
        Ok(Durable::around(to_store, done, Some(store_thread)))
    }

    /// Nothing sent yet: batches go to `to_store`, answers come from
    /// `done` (a store thread's, or a test's).
    fn around(
        to_store: Sender<ToStore>,
        done: Receiver<Done>,
        store_thread: Option<JoinHandle<()>>,
    ) -> Durable {
        Durable {
            to_store: Some(to_store),
            done,
            store_thread,
            submitted: 0,
            answered: 0,
            failed_after: 0,
            failed_through: 0,
            failure: String::new(),
            failures_heard: 0,
            retry_owed: false,
            failures_in_a_row: 0,
            store_dead: false,
            held: VecDeque::new(),
            spare: Vec::new(),
        }
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
        // Output goes at once only when nothing is on its way to the disk:
        // a batch in flight from an earlier round (one that sent nothing,
        // say) may hold a write this output reflects. Decided before the
        // answers are taken: one taken now may be that batch's failure.
        let at_once = !wrote && self.held.is_empty() && self.answered == self.submitted;
        self.take_answers(vm, false);
        if at_once {
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
        if wrote || !self.held.is_empty() || self.answered < self.submitted {
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
        if self.retry_owed {
            error!(
                "stopping with changes the store could not write ({}): they were answered \
                 `not durable`, and are lost",
                self.failure
            );
        }
        self.release(vm, commands, results);
    }

    /// When an idle interpreter should wake to write again what a failed
    /// write left unwritten.
    pub fn retry_in(&self) -> Option<Duration> {
        let doublings = self.failures_in_a_row.saturating_sub(1).min(16);
        let wait = (RETRY_AFTER * 2u32.pow(doublings)).min(RETRY_AFTER_MOST);
        (self.retry_owed && !self.store_dead).then_some(wait)
    }

    /// Gives up without the disk (the interpreter failed): the senders of
    /// every held result, so that their programs can be told. The store
    /// thread ends when it finds its channel closed.
    pub fn abandon(self) -> Vec<ResultSender> {
        let held = self.held.into_iter();
        held.flat_map(|h| h.results.into_iter().map(|(reply, _)| reply))
            .collect()
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
            // Registries and peers' names keep within what a record holds,
            // so this is a bug; such an object lives on in memory, and the
            // log says it is not durable.
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
        self.retry_owed = false;
        let sent = to_store.send(ToStore {
            number: self.submitted,
            failures_heard: self.failures_heard,
            batch,
        });
        if sent.is_err() {
            self.store_gone(vm);
        }
        true
    }

    /// The store thread is gone (it cannot panic in redb, so this is a
    /// bug): nothing more is durable, and nothing waits for it.
    fn store_gone(&mut self, vm: &mut Vm) {
        self.store_dead = true;
        if self.answered < self.submitted {
            let done = Done {
                through: self.submitted,
                result: Err("the store thread has stopped".into()),
                refused: false,
                batches: Vec::new(),
            };
            self.on_answer(vm, done);
        }
    }

    /// Takes the store's answers; with `wait`, blocks for at least one.
    /// False when the store thread is gone.
    fn take_answers(&mut self, vm: &mut Vm, wait: bool) -> bool {
        if wait && self.answered < self.submitted && !self.wait_for_answer(vm) {
            return false;
        }
        loop {
            match self.done.try_recv() {
                Ok(done) => self.on_answer(vm, done),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.store_gone(vm);
                    return false;
                }
            }
        }
        // The batches sent before a failure was heard of are refused, at
        // once: their objects must be marked changed before the next batch
        // is drained, so that it carries every half of a transaction.
        while self.answered < self.failed_through {
            if !self.wait_for_answer(vm) {
                return false;
            }
        }
        true
    }

    /// Blocks for one answer (a minute at most). False when the store
    /// thread is gone.
    fn wait_for_answer(&mut self, vm: &mut Vm) -> bool {
        match self.done.recv_timeout(Duration::from_secs(60)) {
            Ok(done) => self.on_answer(vm, done),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                warn!("the store has not finished a write in 60 s; still waiting");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.store_gone(vm);
                return false;
            }
        }
        true
    }

    fn on_answer(&mut self, vm: &mut Vm, done: Done) {
        let durable_before = self.answered;
        self.answered = self.answered.max(done.through);
        let mut batches = done.batches;
        if done.refused {
            // Within the failed spell already (sent before it was heard
            // of): only their objects are still to write.
            self.retry_owed = true;
            for batch in &batches {
                batch.ids(|id| vm.mark_changed(ObjectId(id)));
            }
        } else if let Err(reason) = done.result {
            self.failures_heard += 1;
            self.failures_in_a_row += 1;
            self.retry_owed = true;
            let objects = batches.iter().map(Batch::len).sum::<usize>();
            // A busy node's every batch fails while the disk does: the
            // first failure of a spell, then the 2nd, 4th, 8th... say so.
            let n = self.failures_in_a_row;
            if n.is_power_of_two() {
                error!(
                    "store write failed ({n} in a row), {objects} objects not durable: {reason}"
                );
            } else {
                debug!(
                    "store write failed ({n} in a row), {objects} objects not durable: {reason}"
                );
            }
            // A new spell starts after what was durable; one not yet past
            // grows.
            if self.failed_through <= durable_before {
                self.failed_after = durable_before;
            }
            self.failed_through = self.failed_through.max(self.submitted);
            self.failure = reason;
            for batch in &batches {
                batch.ids(|id| vm.mark_changed(ObjectId(id)));
            }
        } else {
            self.failures_in_a_row = 0;
        }
        for mut batch in batches.drain(..) {
            if self.spare.len() < SPARE_BATCHES && batch.capacity_bytes() <= SPARE_BATCH_BYTES {
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
            if held.after > self.failed_after && held.after <= self.failed_through {
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

/// The store thread: one transaction (`commit`) per group of queued
/// batches, and one answer per group; `wake` after each answer.
///
/// Batches drained before the interpreter heard of this thread's latest
/// failure are refused, not written. They arrive before every later
/// batch, so a group is all refused or all written.
fn write_batches(
    mut commit: impl FnMut(&[Batch]) -> Result<(), String>,
    batches: Receiver<ToStore>,
    answer: Sender<Done>,
    mut wake: impl FnMut(),
) {
    let mut failures = 0;
    let mut group = Vec::new();
    // A batch taken from the queue that belongs to the next group.
    let mut carried: Option<ToStore> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match batches.recv() {
                Ok(first) => first,
                Err(_) => return,
            },
        };
        let refused = first.failures_heard < failures;
        let mut through = first.number;
        group.push(first.batch);
        while let Ok(next) = batches.try_recv() {
            if (next.failures_heard < failures) != refused {
                carried = Some(next);
                break;
            }
            through = next.number;
            group.push(next.batch);
        }
        let result = if refused {
            Err("an earlier write failed".to_string())
        } else {
            commit(&group)
        };
        if result.is_err() && !refused {
            failures += 1;
        }
        let done = Done {
            through,
            result,
            refused,
            batches: std::mem::take(&mut group),
        };
        if answer.send(done).is_err() {
            return;
        }
        wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{done, BehaviorRegistry, MachineId, Output, PureRegistry, VmConfig};

    type Results = Vec<(ResultSender, Result<Val, String>)>;

    /// A `Durable` with no store thread: the test is the store, taking
    /// batches from the first channel and answering on the second.
    fn durable() -> (Durable, Receiver<ToStore>, Sender<Done>) {
        let (to_store, batches) = mpsc::channel();
        let (answer, answers) = mpsc::channel();
        (Durable::around(to_store, answers, None), batches, answer)
    }

    /// A vm that tracks changes, with one object.
    fn vm() -> (Vm, ObjectId) {
        let mut behaviors = BehaviorRegistry::new();
        behaviors.register("cell", done);
        let config = VmConfig::new(MachineId::new("alpha"), 1);
        let mut vm = Vm::new(config, behaviors, PureRegistry::new());
        vm.track_changes();
        let id = vm.create_object("cell").unwrap();
        (vm, id)
    }

    fn answer(to: &Sender<Done>, through: u64, result: Result<(), String>) {
        answer_with(to, through, result, false, Vec::new());
    }

    fn answer_with(
        to: &Sender<Done>,
        through: u64,
        result: Result<(), String>,
        refused: bool,
        batches: Vec<Batch>,
    ) {
        let done = Done {
            through,
            result,
            refused,
            batches,
        };
        to.send(done).unwrap();
    }

    /// The objects a batch writes or deletes, sorted.
    fn ids_of(batch: &Batch) -> Vec<u64> {
        let mut ids = Vec::new();
        batch.ids(|id| ids.push(id));
        ids.sort_unstable();
        ids
    }

    /// A result of this round, for the gate.
    fn result(results: &mut Results) -> Receiver<Result<Val, String>> {
        let (tx, rx) = mpsc::channel();
        results.push((tx, Ok(Val::Nat(7))));
        rx
    }

    /// One round that writes `x` and gives an answer: the answer is held
    /// for the disk. Its receiver.
    fn write_and_answer(
        d: &mut Durable,
        vm: &mut Vm,
        x: ObjectId,
        commands: &mut Vec<Command>,
        results: &mut Results,
    ) -> Receiver<Result<Val, String>> {
        vm.set_state(x, vec![Val::Nat(1)]).unwrap();
        let waiting = result(results);
        d.gate(vm, commands, results);
        assert!(results.is_empty(), "held for the disk");
        waiting
    }

    /// A batch that carried a large state is not kept for reuse once
    /// written (a spare keeps its buffers); a small one is.
    #[test]
    fn a_large_batch_is_not_kept_as_a_spare() {
        let (mut d, batches, store) = durable();
        let (mut vm, x) = vm();
        let (mut commands, mut results) = (Vec::new(), Results::new());
        d.gate(&mut vm, &mut commands, &mut results); // the create
        let small = batches.recv().unwrap().batch;
        answer_with(&store, 1, Ok(()), false, vec![small]);
        d.gate(&mut vm, &mut commands, &mut results);
        assert!(!d.spare.is_empty(), "a small batch is reused");
        let large = Val::str("x".repeat(2 * SPARE_BATCH_BYTES));
        vm.set_state(x, vec![large]).unwrap();
        d.gate(&mut vm, &mut commands, &mut results);
        let large = batches.recv().unwrap().batch;
        assert!(large.capacity_bytes() > SPARE_BATCH_BYTES);
        answer_with(&store, 2, Ok(()), false, vec![large]);
        d.gate(&mut vm, &mut commands, &mut results);
        assert!(
            d.spare
                .iter()
                .all(|b| b.capacity_bytes() <= SPARE_BATCH_BYTES),
            "{:?}",
            d.spare
                .iter()
                .map(Batch::capacity_bytes)
                .collect::<Vec<_>>()
        );
    }

    /// A round that writes and sends nothing, then one that writes
    /// nothing and answers: the answer waits for the first round's batch,
    /// which holds the write it may reflect.
    #[test]
    fn output_waits_for_a_batch_in_flight_from_a_round_that_sent_nothing() {
        let (mut d, batches, store) = durable();
        let (mut vm, x) = vm();
        let (mut commands, mut results) = (Vec::new(), Results::new());
        d.gate(&mut vm, &mut commands, &mut results); // the create
        answer(&store, 1, Ok(()));
        d.gate(&mut vm, &mut commands, &mut results);
        vm.set_state(x, vec![Val::Nat(1)]).unwrap();
        d.gate(&mut vm, &mut commands, &mut results);
        assert_eq!(batches.try_iter().count(), 2, "the create, then the write");
        let _rx = result(&mut results);
        d.gate(&mut vm, &mut commands, &mut results);
        assert!(results.is_empty(), "released before batch 2 is durable");
        answer(&store, 2, Ok(()));
        d.gate(&mut vm, &mut commands, &mut results);
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].1, Ok(Val::Nat(7)));
    }

    /// A call held behind a write that fails never leaves: it fails in
    /// its chain, which is then ready to run (the interpreter must not
    /// park with it pending), and the program learns why.
    #[test]
    fn a_call_held_behind_a_failed_write_fails_in_its_ready_chain() {
        let (mut d, _batches, store) = durable();
        let (mut vm, x) = vm();
        let beta = MachineId::new("beta");
        vm.directory_mut().peer_up(&beta, 2);
        let far = ObjectId(2 << 48 | 5);
        vm.directory_mut().insert(far, beta, Some("cell"));
        vm.set_state(x, vec![Val::Nat(1)]).unwrap();
        vm.start_program(crate::vm::call(far, Val::Nat(1)), 0)
            .unwrap();
        let mut out = Vec::new();
        vm.run(&mut out);
        let mut commands: Vec<Command> = out
            .drain(..)
            .filter_map(|o| match o {
                Output::RemoteCall(rc) => Some(Command::Call(rc)),
                _ => None,
            })
            .collect();
        assert_eq!(commands.len(), 1);
        let mut results = Results::new();
        d.gate(&mut vm, &mut commands, &mut results);
        assert!(commands.is_empty(), "the call waits for the write");
        assert!(!vm.has_work());
        answer(&store, 1, Err("disk full".into()));
        d.gate(&mut vm, &mut commands, &mut results);
        assert!(commands.is_empty(), "the call never leaves");
        assert!(vm.has_work(), "its chain is ready to run");
        vm.run(&mut out);
        let failure = out.iter().find_map(|o| match o {
            Output::Finished { last_failure, .. } => Some(last_failure.clone()),
            _ => None,
        });
        let failure = failure.expect("the program finished").expect("why");
        assert!(
            failure.to_string().contains("not durable: disk full"),
            "{failure}"
        );
    }

    /// Given up (the interpreter failed), the results still held for the
    /// disk come back as their senders, so their programs can be told.
    #[test]
    fn abandoned_output_gives_back_the_held_results() {
        let (mut d, _batches, _store) = durable();
        let (mut vm, x) = vm();
        let (mut commands, mut results) = (Vec::new(), Results::new());
        let waiting = write_and_answer(&mut d, &mut vm, x, &mut commands, &mut results);
        for reply in d.abandon() {
            reply.send(Err("node stopped".into())).unwrap();
        }
        assert_eq!(waiting.try_recv(), Ok(Err("node stopped".into())));
    }

    /// A write fails: the output of every batch sent until then fails
    /// with it, even when their own writes succeed (they were computed on
    /// top of the lost one), while output already durable goes out.
    #[test]
    fn a_failed_write_fails_the_output_of_the_batches_built_on_it() {
        let (mut d, _batches, store) = durable();
        let (mut vm, x) = vm();
        let (mut commands, mut results) = (Vec::new(), Results::new());
        // Batch 1 (the create) holds an answer that will be durable.
        let _durable = result(&mut results);
        d.gate(&mut vm, &mut commands, &mut results);
        // Batch 2 writes x; batch 3 holds an answer that read x.
        vm.set_state(x, vec![Val::Nat(1)]).unwrap();
        d.gate(&mut vm, &mut commands, &mut results);
        let _reflects = result(&mut results);
        vm.set_state(x, vec![Val::Nat(2)]).unwrap();
        d.gate(&mut vm, &mut commands, &mut results);
        assert!(results.is_empty());
        // All three answers at once: 1 written, 2 lost, 3 written.
        answer(&store, 1, Ok(()));
        answer(&store, 2, Err("disk full".into()));
        answer(&store, 3, Ok(()));
        d.gate(&mut vm, &mut commands, &mut results);
        let answers: Vec<_> = results.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(answers.len(), 2, "{answers:?}");
        assert_eq!(answers[0], Ok(Val::Nat(7)), "batch 1 was durable");
        assert!(
            answers[1].as_ref().is_err_and(|e| e.contains("disk full")),
            "batch 3 reflects batch 2's lost write: {answers:?}"
        );
    }

    /// A round that writes nothing and answers, while the batch before it
    /// is on its way: that batch's failure, taken in the same round, fails
    /// the answer too (it may reflect the lost write).
    #[test]
    fn an_answer_given_while_a_failing_write_was_on_its_way_fails() {
        let (mut d, _batches, store) = durable();
        let (mut vm, x) = vm();
        let (mut commands, mut results) = (Vec::new(), Results::new());
        d.gate(&mut vm, &mut commands, &mut results); // the create
        answer(&store, 1, Ok(()));
        vm.set_state(x, vec![Val::Nat(1)]).unwrap();
        d.gate(&mut vm, &mut commands, &mut results); // batch 2: x, no output
        answer(&store, 2, Err("disk full".into()));
        let _rx = result(&mut results);
        d.gate(&mut vm, &mut commands, &mut results);
        assert_eq!(results.len(), 1);
        assert!(
            results[0]
                .1
                .as_ref()
                .is_err_and(|e| e.contains("disk full")),
            "{:?}",
            results[0].1
        );
    }

    /// Batch 2 fails; batch 3, drained before that was heard of, is
    /// refused. The objects of both go again in one batch, so that a
    /// transaction split across them reaches the disk whole: the
    /// interpreter waits for the refusal before it drains again.
    #[test]
    fn a_failed_spell_is_written_again_in_one_batch() {
        let (mut d, batches, store) = durable();
        let (mut vm, x) = vm();
        let y = vm.create_object("cell").unwrap();
        let (mut commands, mut results) = (Vec::new(), Results::new());
        d.gate(&mut vm, &mut commands, &mut results); // the creates
        answer(&store, 1, Ok(()));
        vm.set_state(x, vec![Val::Nat(1)]).unwrap();
        d.gate(&mut vm, &mut commands, &mut results); // batch 2: x
        vm.set_state(y, vec![Val::Nat(1)]).unwrap();
        d.gate(&mut vm, &mut commands, &mut results); // batch 3: y
        let sent: Vec<ToStore> = batches.try_iter().collect();
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|b| b.failures_heard == 0));
        let mut sent = sent.into_iter().skip(1).map(|b| b.batch);
        let (two, three) = (sent.next().unwrap(), sent.next().unwrap());
        answer_with(&store, 2, Err("disk full".into()), false, vec![two]);
        // The refusal comes a little later: the interpreter waits for it.
        let late = store.clone();
        let refusal = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            answer_with(&late, 3, Err("refused".into()), true, vec![three]);
        });
        d.gate(&mut vm, &mut commands, &mut results); // hears of both
        refusal.join().unwrap();
        assert_eq!(d.retry_in(), Some(RETRY_AFTER));
        d.gate(&mut vm, &mut commands, &mut results);
        let again: Vec<ToStore> = batches.try_iter().collect();
        assert_eq!(again.len(), 1, "x and y go again together");
        assert_eq!(ids_of(&again[0].batch), vec![x.0, y.0]);
        assert_eq!(again[0].failures_heard, 1);
        assert_eq!(d.retry_in(), None, "on its way");
    }

    /// A failed write on a node with nothing else to do: the interpreter
    /// is told to wake and write again, and then does.
    #[test]
    fn a_failed_write_is_retried_on_an_idle_node() {
        let (mut d, batches, store) = durable();
        let (mut vm, x) = vm();
        let (mut commands, mut results) = (Vec::new(), Results::new());
        vm.set_state(x, vec![Val::Nat(1)]).unwrap();
        d.gate(&mut vm, &mut commands, &mut results);
        let first = batches.try_recv().unwrap();
        assert_eq!(d.retry_in(), None);
        answer_with(&store, 1, Err("disk full".into()), false, vec![first.batch]);
        d.gate(&mut vm, &mut commands, &mut results);
        assert_eq!(d.retry_in(), Some(RETRY_AFTER), "x is still to write");
        d.gate(&mut vm, &mut commands, &mut results); // the wake-up's round
        let again = batches.try_recv().expect("x sent again");
        assert_eq!(ids_of(&again.batch), vec![x.0]);
        assert_eq!(d.retry_in(), None);
        // It fails again: the next try waits twice as long; a success
        // resets the pace.
        answer_with(&store, 2, Err("disk full".into()), false, vec![again.batch]);
        d.gate(&mut vm, &mut commands, &mut results);
        assert_eq!(d.retry_in(), Some(2 * RETRY_AFTER));
        d.gate(&mut vm, &mut commands, &mut results);
        answer(&store, 3, Ok(()));
        vm.set_state(x, vec![Val::Nat(2)]).unwrap();
        d.gate(&mut vm, &mut commands, &mut results);
        answer_with(&store, 4, Err("disk full".into()), false, Vec::new());
        d.gate(&mut vm, &mut commands, &mut results);
        assert_eq!(d.retry_in(), Some(RETRY_AFTER));
    }

    /// The store thread is gone with output held behind it: the output
    /// fails at the next round instead of waiting for ever.
    #[test]
    fn output_held_for_a_store_thread_that_died_fails() {
        let (mut d, _batches, store) = durable();
        let (mut vm, x) = vm();
        let (mut commands, mut results) = (Vec::new(), Results::new());
        let waiting = write_and_answer(&mut d, &mut vm, x, &mut commands, &mut results);
        drop(store);
        d.gate(&mut vm, &mut commands, &mut results);
        for (reply, result) in results.drain(..) {
            reply.send(result).unwrap();
        }
        let told = waiting.try_recv().expect("an answer");
        assert!(
            told.as_ref()
                .is_err_and(|e| e.contains("store thread has stopped")),
            "{told:?}"
        );
        assert_eq!(d.retry_in(), None, "no point waking to write");
    }

    /// The store thread refuses, unwritten, a batch drained before its
    /// latest failure was heard of, and writes the next one.
    #[test]
    fn the_store_thread_refuses_batches_drained_before_a_failure_was_heard_of() {
        let (to_store, queue) = mpsc::channel();
        let (answer, answers) = mpsc::channel();
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = written.clone();
        let mut commits = 0;
        let commit = move |group: &[Batch]| {
            commits += 1;
            log.lock()
                .unwrap()
                .push(group.iter().map(ids_of).collect::<Vec<_>>());
            if commits == 1 {
                Err("disk full".to_string())
            } else {
                Ok(())
            }
        };
        let thread = std::thread::spawn(move || write_batches(commit, queue, answer, || {}));
        let batch = |id: u64| {
            let mut b = Batch::default();
            b.add(ObjectId(id), None).unwrap();
            b
        };
        let send = |number, failures_heard, id| {
            let batch = batch(id);
            let sent = ToStore {
                number,
                failures_heard,
                batch,
            };
            to_store.send(sent).unwrap();
        };
        send(1, 0, 10);
        let one = answers.recv().unwrap();
        assert!(one.result.is_err() && !one.refused);
        send(2, 0, 20); // drained before the failure was heard of
        send(3, 1, 30);
        drop(to_store);
        let two = answers.recv().unwrap();
        assert_eq!((two.through, two.refused), (2, true));
        let three = answers.recv().unwrap();
        assert_eq!((three.through, three.refused), (3, false));
        assert_eq!(three.result, Ok(()));
        thread.join().unwrap();
        let written = written.lock().unwrap().clone();
        assert_eq!(written, vec![vec![vec![10]], vec![vec![30]]], "20 never");
    }
}
