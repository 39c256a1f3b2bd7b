//! Transactions: an overlay of effects owned by one chain.
//!
//! Inside a transaction, creates, transfers, state writes and destroys go to
//! the overlay; the chain's own reads see the overlay first. Commit applies
//! them atomically in a fixed order (creates, transfers, states, destroys),
//! after checking the read set: each object the transaction observed
//! (called, read, written, transferred or destroyed) is remembered with its
//! version when first observed, and if any of them changed since (another
//! chain committed a state or controller change, or destroyed it), commit
//! answers false and applies nothing. So committed transactions are
//! serializable for this node's objects. Abort discards the overlay.
//!
//! Remote objects are outside any transaction: a call to one happens when
//! it is made and is not undone by abort; a transaction's read set holds
//! local objects only.
//!
//! Invariants: at most one transaction per chain; `reads` never holds an
//! object created inside the transaction (it cannot change outside);
//! `depth` is the number of frames the chain had when `begin_tx` ran, so
//! the frame that began it is `frames[depth - 1]`.

use super::ids::{ControllerId, ObjectId, TxId};
use super::value::Val;
use super::world::Obj;

#[derive(Debug)]
pub(crate) struct Tx {
    pub(crate) id: TxId,
    pub(crate) controller: Option<ControllerId>,
    pub(crate) creates: Vec<(ObjectId, Obj)>,
    pub(crate) transfers: Vec<(ObjectId, ControllerId)>,
    pub(crate) states: Vec<(ObjectId, Vec<Val>)>,
    pub(crate) destroys: Vec<ObjectId>,
    /// Each observed object, its version when first observed, and
    /// whether this node owned it then (not a replica): a commit over a
    /// copy that became the object, or the reverse, is no commit over
    /// what was read, whatever the versions say.
    pub(crate) reads: Vec<(ObjectId, u32, bool)>,
    /// Frames the chain held at `begin_tx`.
    pub(crate) depth: usize,
}

impl Tx {
    pub(crate) fn new(id: TxId, controller: Option<ControllerId>, depth: usize) -> Tx {
        Tx {
            id,
            controller,
            creates: Vec::new(),
            transfers: Vec::new(),
            states: Vec::new(),
            destroys: Vec::new(),
            reads: Vec::new(),
            depth,
        }
    }

    pub(crate) fn created(&self, id: ObjectId) -> Option<&Obj> {
        self.creates.iter().find(|(c, _)| *c == id).map(|(_, o)| o)
    }

    pub(crate) fn is_destroyed(&self, id: ObjectId) -> bool {
        self.destroys.contains(&id)
    }

    /// Remembers that the transaction depends on `id` as it is now, at
    /// `version`, `owned` here or not (the first observation counts).
    pub(crate) fn observe(&mut self, id: ObjectId, version: u32, owned: bool) {
        if self.created(id).is_none() && !self.reads.iter().any(|(o, ..)| *o == id) {
            self.reads.push((id, version, owned));
        }
    }

    /// The state as this transaction sees it, if the overlay knows it.
    pub(crate) fn state_of(&self, id: ObjectId) -> Option<&[Val]> {
        if let Some((_, s)) = self.states.iter().rev().find(|(o, _)| *o == id) {
            return Some(s);
        }
        self.created(id).map(|o| &o.state[..])
    }

    pub(crate) fn set_state(&mut self, id: ObjectId, state: Vec<Val>) {
        match self.states.iter_mut().find(|(o, _)| *o == id) {
            Some((_, s)) => *s = state,
            None => self.states.push((id, state)),
        }
    }
}
