//! PingPong, as `PROTOCOL.md` defines it.
//!
//! Both behaviors take `List[Str tag, Nat count, Nat max, ObjectRef pong]`.
//! - `ping`: done at `count >= max`; else call `pong` with
//!   `["Pong", count+1, max, pong]` and return the reply itself.
//! - `pong`: done at `count >= max`; else call its *sender* with
//!   `["Ping", count+1, max, self]` and return the reply itself.
//!
//! The tag is not checked (any `Str` is accepted): the shape is the
//! contract, and a lenient reader interoperates with any peer.
//! Both take their input by value (`register_consuming`, and
//! `register_with_ctx` for pong, which also reads self and sender from its
//! call's context), so the vm keeps no copy per call, and their
//! continuations capture nothing: a local call allocates only the values.

use crate::prog;
use crate::vm::{
    begin_tx, call, commit_tx, create_obj, done, BehaviorRegistry, Ctx, ObjectId, Program, Val,
};

/// A parsed PingPong message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg {
    pub count: u64,
    pub max: u64,
    pub pong: ObjectId,
}

impl Msg {
    pub fn parse(input: &Val) -> Option<Msg> {
        match input.as_list()? {
            [Val::Str(_), Val::Nat(count), Val::Nat(max), Val::ObjectRef(pong)] => Some(Msg {
                count: *count,
                max: *max,
                pong: *pong,
            }),
            _ => None,
        }
    }
}

/// `List[Str tag, Nat count, Nat max, ObjectRef pong]`.
pub fn msg(tag: &str, count: u64, max: u64, pong: ObjectId) -> Val {
    Val::List(vec![
        Val::str(tag),
        Val::Nat(count),
        Val::Nat(max),
        Val::ObjectRef(pong),
    ])
}

/// `List[Str "done", Nat count]`.
pub fn done_msg(count: u64) -> Val {
    Val::List(vec![Val::str("done"), Val::Nat(count)])
}

/// `Just(reply)` gives `reply` itself (flat at any depth); `Nothing` gives
/// the failure string. Plain functions, not closures: a continuation that
/// captures nothing costs no allocation.
fn ping_reply(answer: Val) -> Program {
    match answer {
        Val::Just(reply) => done(*reply),
        _ => done(Val::str("ping: call failed")),
    }
}

fn pong_reply(answer: Val) -> Program {
    match answer {
        Val::Just(reply) => done(*reply),
        _ => done(Val::str("pong: call failed")),
    }
}

fn orchestrator_reply(answer: Val) -> Program {
    match answer {
        Val::Just(reply) => done(*reply),
        _ => done(Val::str("orchestrator: call failed")),
    }
}

/// `ping`: done at `count >= max`, else call pong with `count + 1`.
pub fn ping(input: Val) -> Program {
    match Msg::parse(&input) {
        None => done(Val::str("ping: unexpected input")),
        Some(m) if m.count >= m.max => done(done_msg(m.count)),
        Some(m) => call(m.pong, msg("Pong", m.count + 1, m.max, m.pong)).bind(ping_reply),
    }
}

/// `pong`: done at `count >= max`, else call the sender back with
/// `count + 1` and `self`. Self and sender come from the call's [`Ctx`]
/// (what `get_self`/`get_sender` answer), read without an instruction.
pub fn pong(cx: Ctx, input: Val) -> Program {
    match (Msg::parse(&input), cx.sender) {
        (None, _) => done(Val::str("pong: unexpected input")),
        (Some(m), _) if m.count >= m.max => done(done_msg(m.count)),
        (Some(m), Some(sender)) => {
            call(sender, msg("Ping", m.count + 1, m.max, cx.me)).bind(pong_reply)
        }
        // No sender to call back (a host call): the call cannot happen.
        (Some(_), None) => done(Val::str("pong: call failed")),
    }
}

/// Registers `"ping"` and `"pong"`.
pub fn register(reg: &mut BehaviorRegistry) {
    reg.register_consuming("ping", ping);
    reg.register_with_ctx("pong", pong);
}

/// The demo's top-level program: create `ping` in a transaction, then run
/// `rounds` rounds against `pong` and return the final reply itself.
pub fn orchestrator(rounds: u64, pong: ObjectId) -> Program {
    prog! {
        let tx <- begin_tx(None);
        let Some(tx) = (tx.as_tx()) else { return done(Val::str("orchestrator: begin_tx failed")) };
        let ping <- create_obj("ping");
        let committed <- commit_tx(tx);
        let (Val::Bool(true), Val::ObjectRef(ping)) = (committed, ping) else {
            return done(Val::str("orchestrator: commit failed"));
        };
        call(ping, msg("Ping", 0, rounds, pong)).bind(orchestrator_reply)
    }
}
