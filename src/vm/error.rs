//! `VmError`: what went wrong, naming the object, transaction or behavior
//! involved.
//!
//! Invariant: the type stays small (24 bytes, pinned by a test) because it
//! travels inside `Output::Finished` and trace events on the hot path. Names
//! are `Arc<str>` shared with the registry, so building an error for a known
//! behavior does not allocate.

use std::fmt;
use std::sync::Arc;

use super::ids::{ChainId, CounterExhausted, MachineId, ObjectId, SuspendToken, TxId};

/// Every way a vm operation can fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmError {
    /// No such object here (nor in the directory, for a `call`).
    /// Displays exactly as `object not found: {id}`: the node puts this
    /// string on the wire.
    UnknownObject(ObjectId),
    /// `create_obj` or `create_object` named a behavior nobody registered.
    UnknownBehavior(Arc<str>),
    /// `call_pure` named a function nobody registered.
    UnknownPure(Arc<str>),
    /// The object existed here once and was destroyed.
    DestroyedObject(ObjectId),
    /// `begin_tx` while this chain's transaction (named) is still open.
    TxAlreadyOpen(TxId),
    /// `commit_tx`/`abort_tx` of a transaction that is not this chain's open one.
    NoSuchTx(TxId),
    /// The id counter of this node ran out.
    CounterExhausted(CounterExhausted),
    /// The instruction (named) is not supported in this context.
    Unsupported(&'static str),
    /// The instruction was understood and refused (why, named): not the
    /// controller, a peer not connected, a version that moved on...
    Refused(&'static str),
    /// A call into an object whose move is not settled, by the chain that
    /// moves it: nothing may run inside it while its record is away, and
    /// the chain cannot wait on itself.
    Moving(ObjectId),
    /// `get_input` in a behavior registered with
    /// [`BehaviorRegistry::register_consuming`](super::BehaviorRegistry::register_consuming),
    /// which hands its input over instead of keeping a copy.
    InputNotKept(Arc<str>),
    /// The behavior (named) panicked; the call failed, the vm carries on.
    BehaviorPanicked(Arc<str>),
    /// The pure function (named) panicked.
    PurePanicked(Arc<str>),
    /// A remote call failed; the driver's reason, boxed to keep this type small.
    RemoteFailed(Box<RemoteFailure>),
    /// A call this node forwarded to where its object moved failed there:
    /// the reason as that node gave it, relayed word for word (so the
    /// caller can read `object not found`, `busy:`... at its start).
    Relayed(Box<str>),
    /// `resume` with a token that names no suspended call (unknown or stale).
    UnknownToken(SuspendToken),
    /// A call past the frame limit of all chains (`VmConfig::max_depth`).
    TooDeep(usize),
    /// The object's queue of calls waiting for its turn is full
    /// (`VmConfig::max_waiting`): the call is refused at once.
    Busy(ObjectId),
    /// The call waited for a turn in a cycle of chains each waiting for
    /// another (a deadlock), and its chain was chosen to break it.
    Deadlock(Box<Cycle>),
    /// A call returned with the transaction it opened still open: the
    /// transaction is aborted and the call fails.
    TxLeftOpen(TxId),
}

/// One wait in a cycle: `chain` waits for `object`'s turn on `machine`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitEdge {
    pub chain: ChainId,
    pub object: ObjectId,
    pub machine: MachineId,
}

/// A deadlock: each chain waits for an object whose turn the next chain
/// holds, and the last's is held by the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    pub edges: Vec<WaitEdge>,
    /// The chain chosen to break it (its waiting call fails).
    pub victim: ChainId,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.edges.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(
                f,
                "{sep}{} waits for object {} on {}",
                e.chain, e.object, e.machine
            )?;
        }
        write!(f, "; victim: {}", self.victim)
    }
}

/// Details of a failed remote call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFailure {
    pub target: ObjectId,
    pub reason: String,
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::UnknownObject(id) => write!(f, "object not found: {id}"),
            VmError::UnknownBehavior(b) => write!(
                f,
                "unknown behavior: {b} (no behavior of that name is registered on this node)"
            ),
            VmError::UnknownPure(p) => write!(f, "unknown pure function: {p}"),
            VmError::DestroyedObject(id) => write!(f, "object destroyed: {id}"),
            VmError::TxAlreadyOpen(tx) => write!(f, "begin_tx while {tx} is open"),
            VmError::NoSuchTx(tx) => write!(f, "{tx} is not this chain's open transaction"),
            VmError::CounterExhausted(e) => write!(f, "{e}"),
            VmError::Unsupported(what) => write!(f, "unsupported instruction: {what}"),
            VmError::Refused(why) => write!(f, "refused: {why}"),
            VmError::Moving(id) => write!(
                f,
                "object {id} is moving to another node, and its move is not settled: \
                 the chain moving it cannot call into it"
            ),
            VmError::InputNotKept(b) => {
                write!(f, "get_input in behavior {b}, which consumes its input")
            }
            VmError::BehaviorPanicked(b) => write!(f, "behavior {b} panicked"),
            VmError::PurePanicked(p) => write!(f, "pure function {p} panicked"),
            VmError::RemoteFailed(r) => {
                write!(f, "remote call to {} failed: {}", r.target, r.reason)
            }
            VmError::Relayed(reason) => f.write_str(reason),
            VmError::UnknownToken(t) => write!(f, "no suspended call has token {}", t.0),
            VmError::Busy(id) => write!(
                f,
                "busy: object {id} has too many calls waiting for its turn \
                 (the node's max_waiting, avm-node --max-waiting)"
            ),
            VmError::Deadlock(cycle) => write!(f, "deadlock: {cycle}"),
            VmError::TxLeftOpen(tx) => write!(
                f,
                "{tx} left open when the call that began it returned; aborted"
            ),
            VmError::TooDeep(max) => {
                write!(
                    f,
                    "call past the limit of {max} frames, all chains together \
                     (the node's max_call_depth, avm-node --max-call-depth)"
                )
            }
        }
    }
}

impl std::error::Error for VmError {}

impl From<CounterExhausted> for VmError {
    fn from(e: CounterExhausted) -> VmError {
        VmError::CounterExhausted(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_pinned() {
        assert_eq!(std::mem::size_of::<VmError>(), 24);
    }

    #[test]
    fn unknown_object_wire_string() {
        assert_eq!(
            VmError::UnknownObject(ObjectId(12345)).to_string(),
            "object not found: 12345"
        );
    }
}
