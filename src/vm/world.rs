//! `World`: everything a vm holds but its chains.
//!
//! The engine (`exec`) runs one chain at a time against the world; keeping
//! the chains out of it lets a chain and the world be borrowed mutably at
//! once. The `Vm` owns both.
//!
//! Invariants:
//! - `objects` holds exactly the live local objects, with their committed
//!   state; what an open transaction creates stays in its overlay (`tx`)
//!   until commit.
//! - Object ids are never reused: `ids` mints each one once, so an id it
//!   minted that is missing from `objects` was destroyed here, and no set
//!   of destroyed ids needs keeping.
//! - `directory` names objects on other machines only, never a local one.
//! - `frames_total` equals the frames all chains hold: frames come and go
//!   only through `exec::push_frame` and `exec::pop_frame`.
//! - `changed`, when tracking is on (a durable node), holds every local
//!   object whose committed record (state, controller, version, or
//!   existence) changed since the driver last drained it: what the next
//!   group commit must write.
//! - `moving` holds exactly the objects whose `adopt` awaits its answer,
//!   or lost it, or that were restored from a record naming the machine
//!   they were leaving for (those two are also in `in_doubt`), with the
//!   machine each is going to; nothing changes their committed record
//!   meanwhile, and a durable node stores that machine with it.
//! - `turns` holds an object's turn exactly while a call is inside it
//!   (see `turns`); `woken`, `to_fail` and `new_waits` are empty between
//!   two steps of the vm (the engine fills them, the vm drains them).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use super::directory::Directory;
use super::error::VmError;
use super::ids::{ChainId, ControllerId, FreshIdGen, IdHasher, MachineId, ObjectId, SuspendToken};
use super::registry::{BehaviorRegistry, PureRegistry};
use super::trace::Trace;
use super::turns::Turns;
use super::value::Val;

use smallvec::SmallVec;

/// A local object.
#[derive(Debug)]
pub(crate) struct Obj {
    pub(crate) behavior: u32,
    pub(crate) state: Vec<Val>,
    pub(crate) controller: Option<ControllerId>,
    /// Bumped (wrapping) by every committed change of state or controller:
    /// a transaction that saw another version cannot commit. 32 bits keep
    /// an object at 48 bytes; a transaction would need exactly 2^32 commits
    /// of one object between its read and its commit to be fooled.
    pub(crate) version: u32,
}

impl Obj {
    pub(crate) fn new(behavior: u32, controller: Option<ControllerId>) -> Obj {
        Obj {
            behavior,
            state: Vec::new(),
            controller,
            version: 0,
        }
    }
}

/// A replica's origin: its owner is the machine the directory places it
/// on; this is the owner's version it started from.
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    /// The owner's version when fetched (or last frozen or refreshed).
    pub(crate) base: u32,
}

impl World {
    /// Whether `id` is hosted here as its own (not a replica).
    pub(crate) fn owns(&self, id: ObjectId) -> bool {
        self.objects.contains_key(&id) && !self.replicas.contains_key(&id)
    }

    /// The objects hosted here as their own: [`World::owns`] for each.
    pub(crate) fn owned(&self) -> impl Iterator<Item = (&ObjectId, &Obj)> + '_ {
        let objects = self.objects.iter();
        objects.filter(|(id, _)| !self.replicas.contains_key(id))
    }

    /// Notes that `id`'s committed record changed (for a durable node).
    pub(crate) fn mark_changed(&mut self, id: ObjectId) {
        if let Some(changed) = &mut self.changed {
            if !self.replicas.contains_key(&id) {
                changed.insert(id);
            }
        }
    }

    /// Whether the engine left work for the vm (see the fields).
    pub(crate) fn has_effects(&self) -> bool {
        !(self.woken.is_empty()
            && self.to_fail.is_empty()
            && self.new_waits.is_empty()
            && self.departed.is_empty())
    }
}

pub(crate) type IdMap<V> = HashMap<ObjectId, V, BuildHasherDefault<IdHasher>>;

/// A move whose `adopt` answer was lost: the parked mover, where the
/// object was going, and how many times that machine had come up then
/// (only a snapshot from a later connection counts).
#[derive(Debug)]
pub(crate) struct InDoubt {
    /// The mover's chain key, and the token its `adopt` left with (its
    /// answer, if it comes late, names it). `None` for a move restored
    /// from the store: its mover died with the node's last life, and the
    /// object's turn is held by [`RESTORED_MOVER`].
    pub(crate) mover: Option<(usize, SuspendToken)>,
    pub(crate) to: MachineId,
    pub(crate) ups: u32,
}

/// Holds the turn of an object restored in the middle of its move, so
/// that calls wait for the move to settle as they wait for a live mover.
/// No chain that runs calls has this id: a node mints ids from its prefix
/// and a counter from 1, a call from a peer claiming chain 0 runs as one
/// without a chain, and a host call started on chain 0 is refused as the
/// mover's own re-entry would be.
pub(crate) const RESTORED_MOVER: ChainId = ChainId(0);

/// A set of object ids, hashed by `IdHasher`.
pub(crate) type IdSet = HashSet<ObjectId, BuildHasherDefault<IdHasher>>;

/// Chain id -> the vm's chains of that id (see `World::chain_keys`).
pub(crate) type ChainKeys = HashMap<ChainId, SmallVec<[usize; 2]>, BuildHasherDefault<IdHasher>>;

/// Chain id -> its `GONE` places in `World::chain_keys` that are not at
/// the end of its list (absent: none).
pub(crate) type GoneCounts = HashMap<ChainId, u32, BuildHasherDefault<IdHasher>>;

/// Everything but the chains, so the engine can borrow a chain and the
/// world at once.
pub(crate) struct World {
    pub(crate) machine: MachineId,
    pub(crate) objects: IdMap<Obj>,
    /// Objects changed since the last drain; `None` unless tracking is on.
    pub(crate) changed: Option<IdSet>,
    /// Replicas (`fetch`): objects of other machines served here, with
    /// the owner's version they started from. Their `Obj` is in
    /// `objects`, but they are never announced, stored, named, destroyed
    /// or transferred here.
    pub(crate) replicas: IdMap<Replica>,
    /// Epochs of local objects that moved here (bumped by each move; an
    /// object never moved is absent, at epoch 0). Apart from `Obj`, which
    /// stays 48 bytes, since few objects ever move.
    pub(crate) epochs: IdMap<u16>,
    /// Local objects whose record is on its way to a new home (`adopt`
    /// sent, no answer yet), and that home. Their committed record must
    /// not change meanwhile: destroy, transfer, freeze and commits
    /// touching them are refused (the mover holds their turn, which stops
    /// calls).
    pub(crate) moving: IdMap<MachineId>,
    /// Moving objects whose `adopt` left but whose answer was lost (the
    /// connection broke, or it timed out): the new home may hold them
    /// now. Each stays frozen, its mover parked holding its turn, until
    /// the new home's word (see `Vm::announced_elsewhere`, `Vm::peer_synced`).
    pub(crate) in_doubt: IdMap<InDoubt>,
    /// Moving objects that their new home announced at a newer epoch while
    /// the move was under way (not acted on then: the answer is on its
    /// way), kept in case that answer is lost.
    pub(crate) heard_while_moving: IdSet,
    /// Local objects another node announced at a newer epoch while a call
    /// was inside them (a move of theirs whose answer this node lost, then
    /// restarted): where each went, and at which epoch. Each leaves as
    /// the call inside ends (its last hold of the turn is given back),
    /// before any call enters it again.
    pub(crate) superseded: IdMap<(MachineId, u16)>,
    /// Superseded objects that left as their call ended: the vm tells
    /// peers (`Output::Moved`).
    pub(crate) departed: Vec<(ObjectId, MachineId, u16)>,
    pub(crate) ids: FreshIdGen,
    pub(crate) chain_ids: FreshIdGen,
    /// The last transaction id handed out (ids start at 1).
    pub(crate) next_tx: u64,
    /// Generation of the next [`SuspendToken`](super::ids::SuspendToken).
    pub(crate) next_gen: u32,
    /// Most frames all chains may hold; at least 1.
    pub(crate) max_depth: usize,
    /// Frames held by all chains (checked against `max_depth`).
    pub(crate) frames_total: usize,
    /// Calls that code running here made to objects here (see
    /// `Vm::local_calls`).
    pub(crate) local_calls: u64,
    pub(crate) directory: Directory,
    pub(crate) turns: Turns,
    /// Chains whose call was just given a turn (the vm makes them runnable).
    pub(crate) woken: Vec<usize>,
    /// Chains whose waiting call must fail (its object was destroyed, or
    /// it was chosen to break a deadlock).
    pub(crate) to_fail: Vec<(usize, VmError)>,
    /// Calls that just started waiting for a turn: (chain key, chain,
    /// object), for the vm's deadlock check.
    pub(crate) new_waits: Vec<(usize, ChainId, ObjectId)>,
    /// The vm's chains (slab keys) of each chain id, oldest first: a chain
    /// that re-enters this node has several, and the last is innermost.
    /// Places of chains that ended before later ones hold `GONE` until
    /// those end too; the last place is always a live chain's.
    pub(crate) chain_keys: ChainKeys,
    /// Per chain id, how many of its places there are `GONE` (only ids
    /// whose chains ended out of order have an entry).
    pub(crate) chain_gone: GoneCounts,
    pub(crate) behaviors: BehaviorRegistry,
    pub(crate) pures: PureRegistry,
    pub(crate) trace: Trace,
    /// What errors call a top-level program's frame.
    pub(crate) program_name: Arc<str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosted_object_is_48_bytes() {
        // Pinned: a million objects cost this (plus the map's slots).
        assert_eq!(std::mem::size_of::<Obj>(), 48);
    }
}
