//! Programs as interaction trees.
//!
//! A [`Program`] has either finished with a value ([`Program::Done`]) or
//! emits one [`Instr`] and continues with the vm's answer
//! ([`Program::Step`]). Behavior authors build programs with [`trigger`]
//! (emit one instruction), [`Program::bind`] (continue with its answer), the
//! instruction helpers below ([`call`], [`get_state`], ...) and the
//! [`prog!`](crate::prog) do-notation macro:
//!
//! ```
//! use avm::prog;
//! use avm::vm::{begin_tx, call, commit_tx, create_obj, done, Program, Val};
//!
//! /// Create a "ping" in a transaction, then call it.
//! fn start_game(input: Val) -> Program {
//!     prog! {
//!         let tx <- begin_tx(None);
//!         let Some(tx) = (tx.as_tx()) else { return done(Val::str("no tx")) };
//!         let ping <- create_obj("ping");
//!         let committed <- commit_tx(tx);
//!         let (Val::Bool(true), Some(ping)) = (committed, ping.as_object()) else {
//!             return done(Val::str("aborted"));
//!         };
//!         call(ping, input)
//!     }
//! }
//!
//! // Run it on a vm of its own, where "ping" answers what it was sent.
//! use avm::vm::{BehaviorRegistry, MachineId, Output, PureRegistry, Vm, VmConfig};
//! let mut behaviors = BehaviorRegistry::new();
//! behaviors.register("ping", |input| done(Val::pair(Val::str("pong"), input)));
//! let config = VmConfig::new(MachineId::new("solo"), 1);
//! let mut vm = Vm::new(config, behaviors, PureRegistry::new());
//! vm.start_program(start_game(Val::Nat(7)), 0).unwrap();
//! let mut outputs = Vec::new();
//! vm.run(&mut outputs);
//! let answer = outputs.into_iter().find_map(|o| match o {
//!     Output::Finished { result, .. } => Some(result),
//!     _ => None,
//! });
//! assert_eq!(answer, Some(Ok(Val::just(Val::pair(Val::str("pong"), Val::Nat(7))))));
//! ```
//!
//! Invariants:
//! - Building a program runs no instruction; only the vm answers them.
//! - `bind` never nests closures inside closures: a continuation chain is a
//!   flat [`Cont`], and the vm keeps continuations on a heap stack. So a
//!   program built from any number of binds, in any association, runs and
//!   drops without Rust-stack recursion proportional to its length. The
//!   exception is [`Program::then`], whose continuation holds an already
//!   built program: `a.then(b.then(c.then(..)))` nests, and dropping it
//!   unrun (say, when a failure cuts the chain's continuations) recurses
//!   once per `then`. Build long sequences with `bind` or `prog!`.
//! - `trigger(i).bind(f)` costs one `Box` (none when `f` captures nothing).
//! - Binding onto a program that already has continuations (left-nested
//!   binds, `p.bind(f).bind(g)`) inserts at the front of a `Vec`: O(n) for
//!   the n-th such bind. `prog!` and hand-written right-nested binds
//!   (`p.bind(|x| q.bind(g))`) never take that path.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use super::ids::{ControllerId, ObjectId, TxId};
use super::value::Val;

/// A continuation: what to do with an instruction's answer.
pub type ContFn = dyn FnOnce(Val) -> Program + Send;

/// The continuations waiting on one instruction's answer.
pub enum Cont {
    /// The answer is the program's result.
    Return,
    /// Feed the answer to one function.
    Then(Box<ContFn>),
    /// Several functions in stack order: the *last* runs first. Built only
    /// by binding onto a program that already has a continuation.
    Seq(Vec<Box<ContFn>>),
}

/// A program: finished, or one instruction away from its next step.
pub enum Program {
    Done(Val),
    Step(Instr, Cont),
}

/// One request to the vm. The answer each gets is documented per variant.
#[derive(Clone, Debug, PartialEq)]
pub enum Instr {
    /// Answers the value itself (lets `done(v).bind(f)` stay lazy).
    Pure(Val),
    /// Answers `ObjectRef`. In a transaction the object exists only inside
    /// it until commit; `controller: None` inherits the transaction's.
    CreateObj {
        behavior: Cow<'static, str>,
        controller: Option<ControllerId>,
    },
    /// Answers `Bool`: false when the object was unknown or already gone,
    /// or the chain does not run under its controller (see
    /// [`get_current_controller`]). Works on other nodes' objects too.
    DestroyObj(ObjectId),
    /// Answers `Bool`: changes the object's controller; false as for
    /// `DestroyObj`.
    TransferObj(ObjectId, ControllerId),
    /// Answers `Just(reply)`, or `Nothing` when the call failed (the reason
    /// goes to the trace).
    Call { target: ObjectId, input: Val },
    /// Answers `ObjectRef(self)`, `Nothing` in a top-level program.
    GetSelf,
    /// Answers the current call's input (`Nothing` in a top-level program).
    GetInput,
    /// Answers `Just(ObjectRef(sender))` or `Nothing`.
    GetSender,
    /// Answers `List(state)` of the current object.
    GetState,
    /// Answers `Bool(true)`; replaces the current object's state.
    SetState(Vec<Val>),
    /// Answers `Str(machine)`.
    GetCurrentMachine,
    /// Answers `TxRef`.
    BeginTx(Option<ControllerId>),
    /// Answers `Bool`: false, with nothing applied, when validation failed.
    CommitTx(TxId),
    /// Answers `Bool(true)`.
    AbortTx(TxId),
    /// Answers `Just(v)`, or `Nothing` when the function declined.
    CallPure {
        name: Cow<'static, str>,
        args: Vec<Val>,
    },
    /// Answers `Just(Str(machine))` or `Nothing`.
    GetMachine(ObjectId),
    /// Answers `Bool`: true when `name` now names local object `id`
    /// cluster-wide; false when the name is taken, or `id` is not an
    /// object of this node (register a name on the object's node).
    RegisterName { name: Arc<str>, id: ObjectId },
    /// Answers `Just(ObjectRef)` of the object `name` names, or `Nothing`.
    Whereis(Arc<str>),
    /// Answers `Bool`: true when `name` named an object of this node and
    /// no longer does; false otherwise.
    UnregisterName(Arc<str>),
    /// Reflection: answers `Just(meta)` of an object (see [`reflect`]),
    /// `Nothing` when none is found.
    Reflect(ObjectId),
    /// Reflection: answers `List[ObjectRef]` of the objects matching a
    /// data filter, on every node (see [`scry_meta`]).
    ScryMeta(Val),
    /// Reflection: answers the running frame as a value (see
    /// [`reify_context`]).
    ReifyContext,
    /// Answers `Just(Nat controller)`, or `Nothing` when the object has no
    /// controller (or is found nowhere).
    GetController(ObjectId),
    /// Answers `Just(Nat controller)` the chain runs under, or `Nothing`.
    GetCurrentController,
    /// Answers `Bool(true)` once a replica of another node's object is
    /// served here (see [`fetch`]); `Nothing` otherwise.
    Fetch(ObjectId),
    /// Answers `Just(Bool)`: the replica's writes applied at the owner,
    /// or discarded (see [`freeze`]); `Nothing` when there is none.
    Freeze(ObjectId),
    /// Answers `Bool`: true when already on `machine`; false (with the
    /// reason traced) otherwise: a chain's continuation is code, and code
    /// never crosses the network. Inside a transaction it is an error.
    Teleport(Arc<str>),
    /// Answers `Bool`: true once the object lives on `machine` (see
    /// [`move_object`]); false, with the reason traced, when it stayed.
    MoveObject(ObjectId, Arc<str>),
}

impl Instr {
    /// The instruction's name as behavior authors write it.
    pub fn name(&self) -> &'static str {
        match self {
            Instr::Pure(_) => "pure",
            Instr::CreateObj { .. } => "create_obj",
            Instr::DestroyObj(_) => "destroy_obj",
            Instr::TransferObj(..) => "transfer_obj",
            Instr::Call { .. } => "call",
            Instr::GetSelf => "get_self",
            Instr::GetInput => "get_input",
            Instr::GetSender => "get_sender",
            Instr::GetState => "get_state",
            Instr::SetState(_) => "set_state",
            Instr::GetCurrentMachine => "get_current_machine",
            Instr::BeginTx(_) => "begin_tx",
            Instr::CommitTx(_) => "commit_tx",
            Instr::AbortTx(_) => "abort_tx",
            Instr::CallPure { .. } => "call_pure",
            Instr::GetMachine(_) => "get_machine",
            Instr::RegisterName { .. } => "register_name",
            Instr::Whereis(_) => "whereis",
            Instr::UnregisterName(_) => "unregister_name",
            Instr::Reflect(_) => "reflect",
            Instr::ScryMeta(_) => "scry_meta",
            Instr::ReifyContext => "reify_context",
            Instr::GetController(_) => "get_controller",
            Instr::GetCurrentController => "get_current_controller",
            Instr::Teleport(_) => "teleport",
            Instr::Fetch(_) => "fetch",
            Instr::Freeze(_) => "freeze",
            Instr::MoveObject(..) => "move_object",
        }
    }
}

impl Program {
    /// Continue with `f` once this program has produced its value.
    ///
    /// Never calls `f` here, even on a finished program, so recursive
    /// loops written with `bind` are driven by the vm, not the Rust stack.
    pub fn bind<F>(self, f: F) -> Program
    where
        F: FnOnce(Val) -> Program + Send + 'static,
    {
        let f: Box<ContFn> = Box::new(f);
        match self {
            Program::Done(v) => Program::Step(Instr::Pure(v), Cont::Then(f)),
            Program::Step(i, Cont::Return) => Program::Step(i, Cont::Then(f)),
            Program::Step(i, Cont::Then(k)) => Program::Step(i, Cont::Seq(vec![f, k])),
            Program::Step(i, Cont::Seq(mut ks)) => {
                // Rare (binding onto an already-bound program): O(len) insert.
                ks.insert(0, f);
                Program::Step(i, Cont::Seq(ks))
            }
        }
    }

    /// Transform the result with a plain function.
    pub fn map<F>(self, f: F) -> Program
    where
        F: FnOnce(Val) -> Val + Send + 'static,
    {
        match self {
            Program::Done(v) => Program::Done(f(v)),
            p => p.bind(move |v| Program::Done(f(v))),
        }
    }

    /// Run `next` after this program, ignoring this program's value.
    /// `next` is built already and kept whole until it runs, so thousands
    /// of right-nested `then`s nest as deep (see the module notes).
    pub fn then(self, next: Program) -> Program {
        self.bind(move |_| next)
    }
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Program::Done(v) => f.debug_tuple("Done").field(v).finish(),
            Program::Step(i, k) => {
                let n = match k {
                    Cont::Return => 0,
                    Cont::Then(_) => 1,
                    Cont::Seq(ks) => ks.len(),
                };
                write!(f, "Step({i:?}, <{n} continuations>)")
            }
        }
    }
}

impl fmt::Debug for Cont {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cont::Return => "Return",
            Cont::Then(_) => "Then(..)",
            Cont::Seq(_) => "Seq(..)",
        })
    }
}

/// Emit one instruction; the program's value is the answer.
pub fn trigger(i: Instr) -> Program {
    Program::Step(i, Cont::Return)
}

/// A finished program.
pub fn done(v: Val) -> Program {
    Program::Done(v)
}

/// Calls object `target` with `input`, wherever it lives. Answers
/// `Just(answer)`, or `Nothing` when the call failed (unknown or destroyed
/// object, unreachable machine, timeout, the callee's error, a full queue
/// (`busy`), or this call was a deadlock's victim); the reason goes to the
/// trace.
///
/// Turns: the call waits until `target` is free of other chains' calls
/// (an object runs one call at a time, in arrival order), then holds
/// `target`'s turn until it answers, also while it waits on calls it
/// makes. A call of the chain that already holds the turn enters at once
/// (`pong` calling `ping` back inside the chain `ping` serves).
///
/// Inside a transaction, a call to a local object is observed (the
/// commit checks its version); a call to a remote object happens at once
/// and is not undone by `abort_tx` or a failed commit.
pub fn call(target: ObjectId, input: Val) -> Program {
    trigger(Instr::Call { target, input })
}

/// Creates a local object running `behavior` (registered on this node),
/// with an empty state; answers its `ObjectRef`. Inside a transaction the
/// object exists for this chain at once and for everyone at commit (it
/// gets the transaction's controller, if it has one).
pub fn create_obj(behavior: impl Into<Cow<'static, str>>) -> Program {
    trigger(Instr::CreateObj {
        behavior: behavior.into(),
        controller: None,
    })
}

/// [`create_obj`], with `controller` as the new object's controller.
pub fn create_obj_for(behavior: impl Into<Cow<'static, str>>, controller: ControllerId) -> Program {
    trigger(Instr::CreateObj {
        behavior: behavior.into(),
        controller: Some(controller),
    })
}

/// Destroys object `id`, here or on the node that hosts it: answers
/// `Bool(true)`, or `Bool(false)` if it was unknown or already gone, or
/// if the chain does not run under its controller (see
/// [`get_current_controller`]). Calls waiting for its turn fail (`object
/// destroyed`). Inside a transaction it happens at commit.
pub fn destroy_obj(id: ObjectId) -> Program {
    trigger(Instr::DestroyObj(id))
}

/// Gives object `id` (here or on the node that hosts it) to
/// `controller`: answers `Bool(true)`, or `Bool(false)` as
/// [`destroy_obj`] does. Inside a transaction it happens at commit.
pub fn transfer_obj(id: ObjectId, controller: ControllerId) -> Program {
    trigger(Instr::TransferObj(id, controller))
}

/// Answers the current object's `ObjectRef` (`Nothing` in a top-level program).
pub fn get_self() -> Program {
    trigger(Instr::GetSelf)
}

/// Answers the input of the current call (an error in a behavior
/// registered to consume its input).
pub fn get_input() -> Program {
    trigger(Instr::GetInput)
}

/// Answers `Just(ObjectRef)` of the calling object, or `Nothing` when the
/// caller was a top-level program.
pub fn get_sender() -> Program {
    trigger(Instr::GetSender)
}

/// Answers the current object's state as a `List`, as this chain's
/// transaction sees it (its own writes first). Safe to read, call out and
/// write back: the object's turn is held meanwhile, so no other chain's
/// call runs inside it in between.
pub fn get_state() -> Program {
    trigger(Instr::GetState)
}

/// Replaces the current object's state; answers `Bool(true)`. Inside a
/// transaction it happens at commit.
pub fn set_state(state: Vec<Val>) -> Program {
    trigger(Instr::SetState(state))
}

/// Answers the name (`Str`) of the machine this chain runs on now.
pub fn get_current_machine() -> Program {
    trigger(Instr::GetCurrentMachine)
}

/// Begins a transaction for this chain and answers its `TxRef`. Until
/// `commit_tx`, this chain's creates, state writes, transfers and
/// destroys of local objects are kept apart; the objects it reads or
/// calls are observed with their versions. Calls to remote objects are
/// *not* part of it: they happen at once, and abort does not undo them.
/// The call that begins a transaction must end it: returning with it open
/// fails that call (`TxLeftOpen`) and aborts it. One transaction per
/// chain at a time.
pub fn begin_tx(controller: Option<ControllerId>) -> Program {
    trigger(Instr::BeginTx(controller))
}

/// Commits transaction `tx`: answers `Bool(true)` and applies everything
/// at once if no object it observed changed since (another chain's
/// committed write, transfer or destroy); otherwise `Bool(false)`, and
/// nothing is applied. Remote calls made inside it stay made either way.
pub fn commit_tx(tx: TxId) -> Program {
    trigger(Instr::CommitTx(tx))
}

/// Discards transaction `tx`; answers `Bool(true)`. Remote calls made
/// inside it are not undone.
pub fn abort_tx(tx: TxId) -> Program {
    trigger(Instr::AbortTx(tx))
}

/// Calls the pure function `name` (registered on this node): answers
/// `Just(result)`, or `Nothing` when it is unknown or declined the args.
pub fn call_pure(name: impl Into<Cow<'static, str>>, args: Vec<Val>) -> Program {
    trigger(Instr::CallPure {
        name: name.into(),
        args,
    })
}

/// Answers `Just(Str(machine))` where object `id` lives, or `Nothing`
/// when it is unknown here.
pub fn get_machine(id: ObjectId) -> Program {
    trigger(Instr::GetMachine(id))
}

/// Names local object `id` `name` across the cluster (like Erlang's
/// `global`): `Bool`, false when the name is taken or `id` is not hosted
/// here. See `docs/protocol.md` ("Names") for the rules.
pub fn register_name(name: impl Into<Arc<str>>, id: ObjectId) -> Program {
    trigger(Instr::RegisterName {
        name: name.into(),
        id,
    })
}

/// The object `name` names: `Just(ObjectRef)`, or `Nothing`. Answered from
/// this node's table, which every node's `name_notify` keeps up to date.
pub fn whereis(name: impl Into<Arc<str>>) -> Program {
    trigger(Instr::Whereis(name.into()))
}

/// Drops `name`, if an object of this node holds it: `Bool`.
pub fn unregister_name(name: impl Into<Arc<str>>) -> Program {
    trigger(Instr::UnregisterName(name.into()))
}

/// Reflection (allowed per behavior, [`BehaviorRegistry::allow_reflection`](super::BehaviorRegistry::allow_reflection)):
/// an object's metadata, `Just(List[("behavior", Str), ("machine",
/// Str), ("controller", Just(Nat) | Nothing), ("version", Nat)])` (each
/// entry a `Pair`), or `Nothing` when no node hosts `id`. An object of
/// another node is asked of that node (a `meta` message).
pub fn reflect(id: ObjectId) -> Program {
    trigger(Instr::Reflect(id))
}

/// Reflection: the objects matching `filter`, a `List` of `Pair`s, all of
/// which must hold: `("behavior", Str b)`, `("machine", Str m)`,
/// `("controller", Nat c)`. This node's objects, then each other node's
/// (every node that said hello is asked in turn, a `scry` operation each;
/// one that cannot answer is skipped, its reason traced). Answers
/// `List[ObjectRef]`, lowest id first.
pub fn scry_meta(filter: Val) -> Program {
    trigger(Instr::ScryMeta(filter))
}

/// Reflection: the running frame, `List` of `Pair`s: `("self", ObjectRef
/// | Nothing)`, `("input", v | Nothing)`, `("sender", Just(ObjectRef) |
/// Nothing)`, `("machine", Str)`, `("controller", Just(Nat) | Nothing)`,
/// `("chain", Nat)`.
pub fn reify_context() -> Program {
    trigger(Instr::ReifyContext)
}

/// The controller of object `id`, here or on its node: `Just(Nat)`, or
/// `Nothing` when it has none (or no node hosts it).
pub fn get_controller(id: ObjectId) -> Program {
    trigger(Instr::GetController(id))
}

/// The controller this chain runs under: the open transaction's, if it
/// was begun with one, else the running object's; `Nothing` for neither.
pub fn get_current_controller() -> Program {
    trigger(Instr::GetCurrentController)
}

/// Brings a replica of another node's object here: the same id, its
/// state and version as the owner has them, served by calls on this node
/// (its own calls to other objects go to their owners as usual). Writes
/// to the replica stay here, apart from the owner's state, until
/// [`freeze`]. Answers `Bool(true)`, or `Nothing` when the object has no
/// controller (only controlled objects are replicated), is not found, is
/// this node's own, or its replica here has a call inside (which read the
/// state it will write from: the replica is not refreshed under it).
pub fn fetch(id: ObjectId) -> Program {
    trigger(Instr::Fetch(id))
}

/// Sends a replica's state to its owner, which applies it only if its
/// version is still the one the replica started from: `Just(Bool(true))`,
/// and the replica goes on from the owner's new version (keeping its
/// state: a write made since the freeze left stays). Otherwise `Just(Bool(false))`: the
/// replica is refreshed from the owner and its writes are discarded (the
/// trace says so); not refreshed while a call is inside it, so the next
/// `freeze` is refused too. `Nothing` when `id` has no replica here, or the owner
/// cannot be reached.
pub fn freeze(id: ObjectId) -> Program {
    trigger(Instr::Freeze(id))
}

/// Moves the rest of the chain to `machine`: only a no-op is possible
/// (`Bool(true)` when already there), since code never crosses the
/// network; anything else answers `Bool(false)` with the reason traced,
/// and inside a transaction it fails the call.
pub fn teleport(machine: impl Into<Arc<str>>) -> Program {
    trigger(Instr::Teleport(machine.into()))
}

/// Moves object `id`, wherever it lives, to node `machine`: its
/// behavior name, state, controller and version go there, and it keeps
/// its id and its names. Answers `Bool(true)` once it lives there (at
/// once when it already does); `Bool(false)`, with the reason traced,
/// when it stays where it was: `machine` is not a connected peer, does not
/// have the behavior, the chain is not under the object's controller, or
/// the object is running on this very chain (its frame cannot cross).
///
/// The move waits for the object's turn like a call, so it never cuts a
/// call in half; calls that arrive during or after the move are forwarded
/// to the new home and answered once. Inside a transaction it fails the
/// call (a move cannot be rolled back). If the record left and its answer
/// was lost (the link broke), the move waits, the object frozen here,
/// until the new home's directory says whether it took it (see
/// [`Vm::resume_lost`](crate::vm::Vm::resume_lost)).
pub fn move_object(id: ObjectId, machine: impl Into<Arc<str>>) -> Program {
    trigger(Instr::MoveObject(id, machine.into()))
}

/// Do-notation for programs.
///
/// - `let x <- prog;` binds the value of `prog` to `x` for the rest;
/// - `let pat = expr;` is an ordinary `let`, and `let pat = x else { .. };`
///   a let-else whose scrutinee is one token tree (`x`, `(a, b)`); its
///   `else` block typically `return`s a `done(..)` from the continuation;
/// - `prog;` runs `prog` and ignores its value;
/// - the last item is the program that gives the result.
///
/// Every continuation is a `move` closure, so captured values must be
/// `Send + 'static` (ids and `Val`s are).
#[macro_export]
macro_rules! prog {
    (let $x:ident <- $e:expr; $($rest:tt)+) => {
        $crate::vm::Program::bind($e, move |$x: $crate::vm::Val| $crate::prog!($($rest)+))
    };
    (let $p:pat = $e:tt else $b:block; $($rest:tt)+) => {{
        // The scrutinee is one token tree, often parenthesized on purpose.
        #[allow(unused_parens)]
        let $p = $e else $b;
        $crate::prog!($($rest)+)
    }};
    (let $p:pat = $e:expr; $($rest:tt)+) => {{
        let $p = $e;
        $crate::prog!($($rest)+)
    }};
    ($e:expr; $($rest:tt)+) => {
        $crate::vm::Program::bind($e, move |_| $crate::prog!($($rest)+))
    };
    ($e:expr) => {
        $e
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conts(p: &Program) -> usize {
        match p {
            Program::Step(_, Cont::Then(_)) => 1,
            Program::Step(_, Cont::Seq(ks)) => ks.len(),
            _ => 0,
        }
    }

    #[test]
    fn bind_flattens_instead_of_nesting() {
        let mut p = get_self();
        for _ in 0..1000 {
            p = p.bind(done);
        }
        assert_eq!(conts(&p), 1000);
    }

    #[test]
    fn bind_on_done_is_lazy() {
        let p = done(Val::Nat(1)).bind(|_| panic!("ran at build time"));
        assert!(matches!(
            p,
            Program::Step(Instr::Pure(Val::Nat(1)), Cont::Then(_))
        ));
    }

    #[test]
    fn macro_builds_a_step() {
        let p = prog! {
            let me <- get_self();
            let n = 3;
            set_state(vec![me, Val::Nat(n)]);
            done(Val::Nat(n))
        };
        assert!(matches!(p, Program::Step(Instr::GetSelf, Cont::Then(_))));
    }
}
