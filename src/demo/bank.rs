//! A bank: `account` objects that move money between each other with
//! calls, written to show what a read-call-write sequence needs from the vm.
//!
//! An account's state is `[Nat balance]` (an empty state is a balance of
//! 0). Inputs are lists with a `Str` tag:
//!
//! - `["deposit", Nat n]`: adds `n`, answers `["ok", Nat new_balance]`
//!   (`["overflow", Nat balance]`, unchanged, if the sum does not fit).
//! - `["balance"]`: answers `["balance", Nat b]`.
//! - `["transfer", ObjectRef to, Nat n]`: reads its balance `b`; if
//!   `b < n` answers `["insufficient", Nat b]`. Otherwise calls `to` with
//!   `["deposit", n]`; if that answers `Just(["ok", _])` it sets its own
//!   balance to `b - n` (the value read *before* the call, on purpose) and
//!   answers `["done"]`. Any other answer (`Nothing`: the deposit failed,
//!   as a deadlock victim, for a full queue, or because the peer is down)
//!   answers `["failed"]` with the balance untouched. A transfer to the
//!   account itself changes nothing and answers `["done"]`.
//! - `["transfer_tx", ObjectRef to, Nat n]`: the same debit inside a
//!   transaction: `begin_tx`, read `b`, on `b < n` abort and answer
//!   `["insufficient", b]`, else `set_state([b - n])` and `commit_tx`
//!   (`["conflict"]` if the commit fails). Only then the deposit call:
//!   a remote call inside a transaction is not undone by abort, so the
//!   debit is committed first. If the deposit fails the money is given
//!   back with a plain read-modify-write (`balance + n`, read after the
//!   call) and the answer is `["failed"]`; otherwise `["done"]`.
//! - `["transfer_atomic", ObjectRef to, Nat n]`: debit and deposit in one
//!   transaction: `begin_tx`, read `b` (`["insufficient", b]` and abort
//!   if `b < n`), `set_state([b - n])`, call `to` with `["deposit", n]`,
//!   then `commit_tx` if it answered `["ok", _]` (`["done"]`, or
//!   `["conflict"]` when the commit fails) or abort (`["failed"]`). When
//!   `to` is on the same node its write is part of the transaction, so
//!   both balances change together or neither does, in memory and on
//!   disk. A remote `to` is outside any transaction (its deposit is not
//!   undone by an abort): use `transfer_tx` across nodes.
//! - Anything else answers `["error", Str why]`.
//!
//! `transfer` conserves money only if nothing else touches the account
//! while its deposit call is out: it writes back `b - n` from a read made
//! before the call. That holds when an object runs one call at a time
//! (a call keeps its object's turn while it waits on a remote call); on a
//! vm that starts other calls on the object meanwhile, a deposit made
//! during the wait is overwritten (money lost) and two transfers that both
//! read `b` debit once (money made). `transfer_tx` never keeps a value
//! read before the call, so it conserves money either way, provided each
//! local read-modify-write runs without another call interleaved.
//!
//! `["failed"]` is sure only when the deposit never ran: refused as busy,
//! as a deadlock victim, or because its account is unknown or its node
//! down. A deposit whose call timed out, or whose connection was lost,
//! after it left may have run at the other end (nothing cancels it
//! there); the payer then keeps (or is given back) the money, and the sum
//! grows by `n`. A bank that must hold through such failures needs an
//! idempotent deposit keyed by a transfer id, and a way to ask what
//! became of it; this demo does not have them.
//!
//! [`open_accounts`] is the top-level program a node runs to create
//! accounts with an opening balance; [`open`] runs it on a running node
//! (`avm-node --bank-accounts N` uses it). Accounts are announced to peers
//! by the usual `create_notify`, behavior `"account"`.

use std::time::Duration;

use crate::node::Node;
use crate::prog;
use crate::vm::{
    abort_tx, begin_tx, call, commit_tx, create_obj, done, get_self, get_state, set_state,
    BehaviorRegistry, ObjectId, Program, TxId, Val,
};

/// The behavior's name.
pub const ACCOUNT: &str = "account";

/// The opening balance `avm-node --bank-accounts` gives each account
/// unless `--bank-balance` says otherwise.
pub const DEFAULT_BALANCE: u64 = 1000;

/// Registers `"account"`.
pub fn register(reg: &mut BehaviorRegistry) {
    reg.register_consuming(ACCOUNT, account);
}

/// `["deposit", Nat n]`.
pub fn deposit(n: u64) -> Val {
    Val::List(vec![Val::str("deposit"), Val::Nat(n)])
}

/// `["balance"]`.
pub fn balance() -> Val {
    Val::List(vec![Val::str("balance")])
}

/// `["transfer", ObjectRef to, Nat n]`.
pub fn transfer(to: ObjectId, n: u64) -> Val {
    Val::List(vec![Val::str("transfer"), Val::ObjectRef(to), Val::Nat(n)])
}

/// `["transfer_tx", ObjectRef to, Nat n]`.
pub fn transfer_tx(to: ObjectId, n: u64) -> Val {
    Val::List(vec![
        Val::str("transfer_tx"),
        Val::ObjectRef(to),
        Val::Nat(n),
    ])
}

/// `["transfer_atomic", ObjectRef to, Nat n]`.
pub fn transfer_atomic(to: ObjectId, n: u64) -> Val {
    Val::List(vec![
        Val::str("transfer_atomic"),
        Val::ObjectRef(to),
        Val::Nat(n),
    ])
}

/// `[Str tag]` or `[Str tag, Nat n]`.
fn tagged(tag: &str, n: Option<u64>) -> Val {
    let mut items = vec![Val::str(tag)];
    items.extend(n.map(Val::Nat));
    Val::List(items)
}

fn error(why: &str) -> Program {
    done(Val::List(vec![Val::str("error"), Val::str(why)]))
}

/// The balance in an account's state (`List[Nat b]`; empty is 0).
pub fn balance_in(state: &Val) -> u64 {
    state
        .as_list()
        .and_then(|s| s.first())
        .and_then(Val::as_nat)
        .unwrap_or(0)
}

fn balance_state(b: u64) -> Vec<Val> {
    vec![Val::Nat(b)]
}

/// Whether a `call` answer is a deposit's `Just(["ok", _])`.
fn deposited(answer: &Val) -> bool {
    let Val::Just(reply) = answer else {
        return false;
    };
    matches!(reply.as_list(), Some([Val::Str(tag), Val::Nat(_)]) if tag == "ok")
}

/// The `account` behavior (see the module docs).
pub fn account(input: Val) -> Program {
    let Some(items) = input.as_list() else {
        return error("account: expected a list");
    };
    match items {
        [Val::Str(tag), Val::Nat(n)] if tag == "deposit" => add(*n),
        [Val::Str(tag)] if tag == "balance" => {
            get_state().map(|s| tagged("balance", Some(balance_in(&s))))
        }
        [Val::Str(tag), Val::ObjectRef(to), Val::Nat(n)] if tag == "transfer" => {
            transfer_plain(*to, *n)
        }
        [Val::Str(tag), Val::ObjectRef(to), Val::Nat(n)] if tag == "transfer_tx" => {
            transfer_in_tx(*to, *n)
        }
        [Val::Str(tag), Val::ObjectRef(to), Val::Nat(n)] if tag == "transfer_atomic" => {
            transfer_atomically(*to, *n)
        }
        _ => error("account: unexpected input"),
    }
}

/// `balance += n` in one read-modify-write; answers `["ok", new]`.
fn add(n: u64) -> Program {
    prog! {
        let state <- get_state();
        let b = balance_in(&state);
        let Some(new) = (b.checked_add(n)) else { return done(tagged("overflow", Some(b))) };
        set_state(balance_state(new));
        done(tagged("ok", Some(new)))
    }
}

fn transfer_plain(to: ObjectId, n: u64) -> Program {
    prog! {
        let state <- get_state();
        let b = balance_in(&state);
        let true = (b >= n) else { return done(tagged("insufficient", Some(b))) };
        let me <- get_self();
        // To itself: nothing moves. (The deposit would re-enter, and the
        // write-back of `b - n` would then undo it: money lost.)
        let false = (me.as_object() == Some(to)) else { return done(tagged("done", None)) };
        let answer <- call(to, deposit(n));
        let true = (deposited(&answer)) else { return done(tagged("failed", None)) };
        // The balance read before the call, deliberately: see the module docs.
        set_state(balance_state(b - n));
        done(tagged("done", None))
    }
}

/// Begins a transaction and debits `n` in it (`["insufficient", b]`, and
/// the transaction aborted, when the balance `b` is short); then runs
/// `rest` with the open transaction, which it must end.
fn debit_in_tx(n: u64, rest: impl FnOnce(TxId) -> Program + Send + 'static) -> Program {
    prog! {
        let tx <- begin_tx(None);
        let Some(tx) = (tx.as_tx()) else { return error("account: begin_tx failed") };
        let state <- get_state();
        let b = balance_in(&state);
        let true = (b >= n) else {
            return abort_tx(tx).then(done(tagged("insufficient", Some(b))));
        };
        set_state(balance_state(b - n));
        rest(tx)
    }
}

fn transfer_in_tx(to: ObjectId, n: u64) -> Program {
    debit_in_tx(n, move |tx| {
        prog! {
            let committed <- commit_tx(tx);
            let Val::Bool(true) = committed else { return done(tagged("conflict", None)) };
            let answer <- call(to, deposit(n));
            let true = (deposited(&answer)) else {
                // The debit is committed and the deposit did not happen: give
                // the money back, reading the balance as it is now.
                return add(n).then(done(tagged("failed", None)));
            };
            done(tagged("done", None))
        }
    })
}

fn transfer_atomically(to: ObjectId, n: u64) -> Program {
    debit_in_tx(n, move |tx| {
        prog! {
            let answer <- call(to, deposit(n));
            let true = (deposited(&answer)) else {
                return abort_tx(tx).then(done(tagged("failed", None)));
            };
            let committed <- commit_tx(tx);
            let Val::Bool(true) = committed else { return done(tagged("conflict", None)) };
            done(tagged("done", None))
        }
    })
}

/// A top-level program: creates `n` accounts, deposits `opening` in each
/// (none when it is 0), and answers `List[ObjectRef..]` in creation order,
/// or `Str why` at the first failure.
pub fn open_accounts(n: u64, opening: u64) -> Program {
    open_more(n, opening, Vec::new())
}

fn pushed(mut items: Vec<Val>, item: Val) -> Vec<Val> {
    items.push(item);
    items
}

fn open_more(left: u64, opening: u64, made: Vec<Val>) -> Program {
    if left == 0 {
        return done(Val::List(made));
    }
    prog! {
        let created <- create_obj(ACCOUNT);
        let Val::ObjectRef(id) = created else {
            return done(Val::str(format!("bank: create_obj answered {created}")));
        };
        let answer <- if opening == 0 { done(Val::just(tagged("ok", Some(0)))) } else { call(id, deposit(opening)) };
        let true = (deposited(&answer)) else {
            return done(Val::str(format!("bank: opening deposit answered {answer}")));
        };
        open_more(left - 1, opening, pushed(made, Val::ObjectRef(id)))
    }
}

/// Runs [`open_accounts`] on `node` (which must have the bank behaviors
/// registered, [`register`]) and answers the new accounts' ids.
pub fn open(node: &Node, n: u64, opening: u64) -> Result<Vec<ObjectId>, String> {
    let answer = node
        .submit(open_accounts(n, opening))
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| "opening the bank accounts: no answer from the node".to_owned())?
        .map_err(|e| format!("opening the bank accounts: {e}"))?;
    match answer {
        Val::List(ids) => ids
            .iter()
            .map(|id| {
                id.as_object()
                    .ok_or_else(|| format!("opening the bank accounts answered {id}"))
            })
            .collect(),
        Val::Str(why) => Err(why),
        other => Err(format!("opening the bank accounts answered {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{MachineId, Output, PureRegistry, RemoteCall, Vm, VmConfig};

    fn vm() -> Vm {
        let mut reg = BehaviorRegistry::new();
        register(&mut reg);
        Vm::new(
            VmConfig::new(MachineId::new("a"), 1),
            reg,
            PureRegistry::new(),
        )
    }

    /// Starts `program` and runs what can run; answers the outputs.
    fn start(vm: &mut Vm, program: Program) -> Vec<Output> {
        vm.start_program(program, 0).unwrap();
        let mut out = Vec::new();
        vm.run(&mut out);
        out
    }

    fn result(out: &[Output]) -> Val {
        out.iter()
            .find_map(|o| match o {
                Output::Finished { result, .. } => Some(result.as_ref().unwrap().clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("nothing finished: {out:?}"))
    }

    fn remote_call(out: &[Output]) -> RemoteCall {
        out.iter()
            .find_map(|o| match o {
                Output::RemoteCall(rc) => Some(rc.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no remote call: {out:?}"))
    }

    fn open(vm: &mut Vm, n: u64, opening: u64) -> Vec<ObjectId> {
        let out = start(vm, open_accounts(n, opening));
        let Val::List(ids) = result(&out) else {
            panic!("{out:?}")
        };
        ids.iter().map(|v| v.as_object().unwrap()).collect()
    }

    fn ask(vm: &mut Vm, id: ObjectId, input: Val) -> Val {
        match result(&start(vm, call(id, input))) {
            Val::Just(v) => *v,
            other => panic!("call answered {other}"),
        }
    }

    fn list(items: &[Val]) -> Val {
        Val::List(items.to_vec())
    }

    fn s(tag: &str) -> Val {
        Val::str(tag)
    }

    /// An account placed on machine "b", as a peer's create_notify would.
    fn remote_account(vm: &mut Vm) -> ObjectId {
        let far = ObjectId((2 << 48) | 1);
        vm.directory_mut().insert(far, MachineId::new("b"), None);
        far
    }

    #[test]
    fn open_deposit_balance() {
        let mut vm = vm();
        let ids = open(&mut vm, 3, 1000);
        assert_eq!(ids.len(), 3);
        for &id in &ids {
            assert_eq!(vm.state(id), Some(&[Val::Nat(1000)][..]));
        }
        let a = ids[0];
        assert_eq!(
            ask(&mut vm, a, deposit(5)),
            list(&[s("ok"), Val::Nat(1005)])
        );
        assert_eq!(
            ask(&mut vm, a, balance()),
            list(&[s("balance"), Val::Nat(1005)])
        );
        assert_eq!(
            ask(&mut vm, a, deposit(u64::MAX)),
            list(&[s("overflow"), Val::Nat(1005)])
        );
        assert_eq!(ask(&mut vm, a, s("nope")).as_list().unwrap()[0], s("error"));
        let empty = open(&mut vm, 1, 0)[0];
        assert_eq!(
            ask(&mut vm, empty, balance()),
            list(&[s("balance"), Val::Nat(0)])
        );
    }

    #[test]
    fn local_transfers_move_money() {
        let mut vm = vm();
        let ids = open(&mut vm, 2, 100);
        let (a, b) = (ids[0], ids[1]);
        assert_eq!(ask(&mut vm, a, transfer(b, 30)), list(&[s("done")]));
        assert_eq!(ask(&mut vm, a, transfer_tx(b, 20)), list(&[s("done")]));
        assert_eq!(
            ask(&mut vm, a, transfer(b, 51)),
            list(&[s("insufficient"), Val::Nat(50)])
        );
        assert_eq!(
            ask(&mut vm, a, transfer_tx(b, 51)),
            list(&[s("insufficient"), Val::Nat(50)])
        );
        assert_eq!(vm.state(a), Some(&[Val::Nat(50)][..]));
        assert_eq!(vm.state(b), Some(&[Val::Nat(150)][..]));
        // To itself: nothing moves, and nothing is lost.
        assert_eq!(ask(&mut vm, a, transfer(a, 20)), list(&[s("done")]));
        assert_eq!(ask(&mut vm, a, transfer_tx(a, 20)), list(&[s("done")]));
        assert_eq!(vm.state(a), Some(&[Val::Nat(50)][..]));
    }

    #[test]
    fn an_atomic_transfer_moves_both_balances_in_one_commit() {
        let mut vm = vm();
        let ids = open(&mut vm, 2, 100);
        let (a, b) = (ids[0], ids[1]);
        vm.track_changes();
        assert_eq!(ask(&mut vm, a, transfer_atomic(b, 30)), list(&[s("done")]));
        let mut changed = Vec::new();
        vm.drain_changes(|id, record| changed.push((id, record.map(|r| r.state.to_vec()))));
        changed.sort_by_key(|(id, _)| id.0);
        assert_eq!(
            changed,
            vec![
                (a, Some(vec![Val::Nat(70)])),
                (b, Some(vec![Val::Nat(130)]))
            ]
        );
        assert_eq!(
            ask(&mut vm, a, transfer_atomic(b, 71)),
            list(&[s("insufficient"), Val::Nat(70)])
        );
        // A deposit that fails aborts the debit too.
        let far = remote_account(&mut vm);
        let out = start(&mut vm, call(a, transfer_atomic(far, 40)));
        let rc = remote_call(&out);
        vm.resume(rc.token, Err("peer down".into())).unwrap();
        let mut out = Vec::new();
        vm.run(&mut out);
        assert_eq!(result(&out), Val::just(list(&[s("failed")])));
        assert_eq!(vm.state(a), Some(&[Val::Nat(70)][..]));
    }

    #[test]
    fn failed_deposit_leaves_or_gives_back_the_money() {
        let mut vm = vm();
        let a = open(&mut vm, 1, 100)[0];
        let far = remote_account(&mut vm);
        for input in [transfer(far, 40), transfer_tx(far, 40)] {
            let out = start(&mut vm, call(a, input));
            let rc = remote_call(&out);
            assert_eq!(rc.input, deposit(40));
            vm.resume(rc.token, Err("peer down".into())).unwrap();
            let mut out = Vec::new();
            vm.run(&mut out);
            assert_eq!(result(&out), Val::just(list(&[s("failed")])));
            assert_eq!(vm.state(a), Some(&[Val::Nat(100)][..]));
        }
    }

    /// A deposit that arrives while a transfer waits on its remote deposit.
    /// With objects taking turns the deposit waits for the transfer and
    /// both count: 1000 - 100 + 50. Without turns the deposit runs at once
    /// and the plain transfer then writes back `1000 - 100` over it; the
    /// transaction variant keeps no balance across the call, so it
    /// conserves money even without turns.
    #[test]
    fn deposit_during_a_transfer_is_not_lost() {
        for transfer in [transfer, transfer_tx] {
            let mut vm = vm();
            let a = open(&mut vm, 1, 1000)[0];
            let far = remote_account(&mut vm);
            let rc = remote_call(&start(&mut vm, call(a, transfer(far, 100))));
            start(&mut vm, call(a, deposit(50)));
            let ok = list(&[s("ok"), Val::Nat(100)]);
            vm.resume(rc.token, Ok(ok)).unwrap();
            let mut out = Vec::new();
            vm.run(&mut out);
            assert_eq!(vm.state(a), Some(&[Val::Nat(950)][..]));
        }
    }
}
