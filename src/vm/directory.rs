//! `Directory`: where objects on *other* machines live, and every rule
//! about who may change that.
//!
//! The vm only reads it: a `call` to an id found here suspends the chain
//! and asks the driver to forward it. Local objects are never in it. The
//! node feeds it what its peers say, through the rules below and nothing
//! else:
//!
//! - [`Directory::peer_up`]: a machine connected (its first connection
//!   finished its hellos). What we knew of its objects is forgotten: its
//!   directory snapshot follows, and after a restart its old objects are
//!   gone. Its `node_prefix` is remembered for the next rule. Objects
//!   that moved there (epoch past 0) are kept until its snapshot ends
//!   ([`Directory::mark_synced`]), and dropped then unless it named them
//!   again: this node may be the old home that forwards calls to them, and
//!   forgetting them for the snapshot's length failed those calls.
//! - [`Directory::apply`] a [`Notice`] from a greeted peer:
//!   - `create_notify` places an object only on its sender, and only an
//!     object that belongs to the sender: one with the sender's prefix, or
//!     one the directory already places there. So no peer can move
//!     another node's object to itself, or onto a third machine.
//!   - `destroy_notify` removes an entry only if it places the object on
//!     the sender.
//! - [`Directory::learn_sender`]: an inbound call's sender, so a caller
//!   that never announced itself (a client written from the protocol page
//!   alone) can be called back. Only for an unknown object with the
//!   calling peer's prefix, and at most [`LEARNED_PER_PEER`] per peer
//!   (the oldest learned entry goes first), so a peer cannot grow our
//!   directory without bound by inventing senders.
//! - A machine that goes down keeps its entries: calls to its objects
//!   then fail fast ("not connected") instead of "not found", and its
//!   next `peer_up` refreshes them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use super::ids::{shrink_if_sparse, IdHasher, MachineId, ObjectId};

/// Learned sender entries kept per peer.
pub const LEARNED_PER_PEER: usize = 4096;

/// What a peer says about its objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// `create_notify`: `id` lives on `machine` (as the sender claims);
    /// `epoch` 0 unless it moved there.
    Created {
        id: ObjectId,
        machine: MachineId,
        behavior: Option<Arc<str>>,
        epoch: u16,
    },
    /// `move_notify`: `id` moved from the sender to `machine`, and this
    /// is its `epoch` there.
    Moved {
        id: ObjectId,
        machine: MachineId,
        epoch: u16,
    },
    /// `destroy_notify`.
    Destroyed { id: ObjectId },
    /// `name_notify`: `name` names `id`, on `machine` (the sender).
    Named {
        name: Arc<str>,
        id: ObjectId,
        machine: MachineId,
    },
    /// `name_drop`: `name` no longer names `id`.
    Unnamed { name: Arc<str>, id: ObjectId },
}

/// Why a notice changed nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The sender never said hello (no `peer_up`).
    UnknownPeer,
    /// A `create_notify` placing an object on another machine than its sender.
    NotOnSender { id: ObjectId, claimed: MachineId },
    /// A `create_notify` for an object with another node's prefix that
    /// the directory does not place on the sender.
    NotTheSendersObject {
        id: ObjectId,
        holder: Option<MachineId>,
    },
    /// A `destroy_notify` for an object the directory does not place on
    /// the sender.
    NotPlacedOnSender { id: ObjectId },
    /// A `name_notify` for an object that is not the sender's, or a
    /// `name_drop` for a name the sender does not hold.
    NotTheSendersName { name: Arc<str> },
    /// A `create_notify` with an epoch older than the one known: the
    /// object has moved since.
    Stale {
        id: ObjectId,
        epoch: u16,
        known: u16,
    },
    /// A `move_notify` from a machine the object is not placed on.
    NotTheSendersMove { id: ObjectId },
}

impl Refused {
    /// Whether this is a peer overstepping (log it loudly), rather than a
    /// harmless race such as a late `destroy_notify`.
    pub fn is_forgery(&self) -> bool {
        !matches!(
            self,
            Refused::NotPlacedOnSender { .. } | Refused::Stale { .. }
        )
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::UnknownPeer => f.write_str("notice from a machine that never said hello"),
            Refused::NotOnSender { id, claimed } => write!(
                f,
                "create_notify places {id} on `{claimed}`, not on the sender; ignored"
            ),
            Refused::NotTheSendersObject { id, holder } => match holder {
                Some(m) => write!(f, "create_notify claims {id}, which lives on {m}; ignored"),
                None => write!(
                    f,
                    "create_notify claims {id}, whose prefix {} is not the sender's; ignored",
                    id.node_prefix()
                ),
            },
            Refused::NotPlacedOnSender { id } => {
                write!(
                    f,
                    "destroy_notify for {id}, which is not placed on the sender; ignored"
                )
            }
            Refused::NotTheSendersName { name } => write!(
                f,
                "name `{name}`: the sender may only name its own objects; ignored"
            ),
            Refused::Stale { id, epoch, known } => write!(
                f,
                "create_notify for {id} at epoch {epoch}, older than the {known} known; ignored"
            ),
            Refused::NotTheSendersMove { id } => write!(
                f,
                "move_notify for {id}, which is not placed on the sender; ignored"
            ),
        }
    }
}

/// 8 bytes (a map slot stays 16 with the id): the machine and behavior
/// are indexes into the directory's tables of names, which a million
/// entries share.
#[derive(Clone, Copy, Debug)]
struct Entry {
    machine: u16,
    /// `NO_NAME`: not known.
    behavior: u16,
    /// Bumped by every move of the object (0: never moved).
    epoch: u16,
    /// Learned from a call's sender, not announced.
    learned: bool,
    /// A moved object kept across its machine's `peer_up`, not named in
    /// its snapshot yet: dropped when the snapshot ends.
    kept: bool,
}

const NO_NAME: u16 = u16::MAX;

#[derive(Clone, Debug, Default)]
struct PeerInfo {
    prefix: u16,
    learned: VecDeque<ObjectId>,
    /// Its snapshot since it came up is complete (`snapshot_end`).
    synced: bool,
    /// Connected now (up since its last `peer_up`, not down since).
    up: bool,
    /// How many times it came up (`peer_up`), so a snapshot can be told
    /// from one that began before some event.
    ups: u32,
    /// Entries `kept` at its last `peer_up` (0: nothing to drop at sync).
    kept: usize,
}

/// Whether epoch `a` is newer than `b`: serial-number arithmetic
/// (RFC 1982), so the 16-bit counter may wrap.
pub fn epoch_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// The epoch a move gives an object at `epoch`: one more, skipping 0,
/// which means "never moved" (a call for a moved object is forwarded).
pub fn next_epoch(epoch: u16) -> u16 {
    epoch.wrapping_add(1).max(1)
}

/// Strings stored once, named by index (at most `NO_NAME` of them).
#[derive(Clone, Debug)]
struct Names<T> {
    by_index: Vec<T>,
    index: HashMap<T, u16>,
    /// The last name interned: a snapshot's notices name the same machine
    /// and behavior object after object, and comparing (a pointer first,
    /// as `Arc<str>` does) costs less than hashing the string.
    last: Option<(T, u16)>,
}

impl<T> Default for Names<T> {
    fn default() -> Names<T> {
        Names {
            by_index: Vec::new(),
            index: HashMap::new(),
            last: None,
        }
    }
}

impl<T: Clone + Eq + std::hash::Hash> Names<T> {
    /// `name`'s index, stored now if new; `None` when the table is full.
    fn intern(&mut self, name: &T) -> Option<u16> {
        if let Some((last, i)) = &self.last {
            if last == name {
                return Some(*i);
            }
        }
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                let i = u16::try_from(self.by_index.len())
                    .ok()
                    .filter(|i| *i < NO_NAME)?;
                self.by_index.push(name.clone());
                self.index.insert(name.clone(), i);
                i
            }
        };
        self.last = Some((name.clone(), i));
        Some(i)
    }

    fn find(&self, name: &T) -> Option<u16> {
        self.index.get(name).copied()
    }

    fn get(&self, i: u16) -> Option<&T> {
        self.by_index.get(usize::from(i))
    }
}

/// ObjectId -> (machine, behavior name) for objects on other machines.
///
/// Memory: an entry is the id and 6 bytes in the map; machine ids and
/// behavior names are stored once each (`Names`), so a peer's million
/// objects of a few behaviors cost about a million small entries.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    entries: HashMap<ObjectId, Entry, BuildHasherDefault<IdHasher>>,
    peers: HashMap<MachineId, PeerInfo>,
    machines: Names<MachineId>,
    behaviors: Names<Arc<str>>,
    /// Entries per machine, by the machine's index in `machines`.
    hosted: Vec<u64>,
    /// Cluster-wide names: name -> (object, its machine; `None` here).
    names: HashMap<Arc<str>, (ObjectId, Option<MachineId>)>,
    /// This node's machine, for the name tie rule.
    us: Option<MachineId>,
}

impl Directory {
    pub fn new() -> Directory {
        Directory::default()
    }

    /// `machine` connected with `prefix`: forget what we knew of its
    /// objects (its snapshot follows). Answers how many were forgotten.
    pub fn peer_up(&mut self, machine: &MachineId, prefix: u16) -> usize {
        let before = self.entries.len();
        let mut kept = 0;
        if let Some(m) = self.machines.find(machine) {
            self.entries.retain(|_, e| {
                let keep = e.machine != m || e.epoch != 0;
                if e.machine == m && keep {
                    e.kept = true;
                    kept += 1;
                }
                keep
            });
            shrink_if_sparse(&mut self.entries);
            self.hosted[usize::from(m)] = kept as u64;
        }
        self.forget_names_on(machine);
        let ups = self.ups(machine).wrapping_add(1);
        self.peers.insert(
            machine.clone(),
            PeerInfo {
                prefix,
                learned: VecDeque::new(),
                synced: false,
                up: true,
                ups,
                kept,
            },
        );
        before - self.entries.len()
    }

    /// How many times `machine` came up (0: never).
    pub fn ups(&self, machine: &MachineId) -> u32 {
        self.peers.get(machine).map_or(0, |p| p.ups)
    }

    /// `machine` was declared down: its names go (calls to its objects
    /// fail fast until it comes back). Answers how many names went.
    pub fn peer_down(&mut self, machine: &MachineId) -> usize {
        if let Some(peer) = self.peers.get_mut(machine) {
            peer.up = false;
        }
        self.forget_names_on(machine)
    }

    /// Whether `machine` is a peer that is connected now.
    pub fn is_up(&self, machine: &MachineId) -> bool {
        self.peers.get(machine).is_some_and(|p| p.up)
    }

    /// The epoch known for `id` (0: never moved, or not known).
    pub fn epoch_of(&self, id: ObjectId) -> u16 {
        self.known_epoch(id).unwrap_or(0)
    }

    /// The epoch known for `id`, if the directory places it at all.
    pub fn known_epoch(&self, id: ObjectId) -> Option<u16> {
        self.entries.get(&id).map(|e| e.epoch)
    }

    /// Applies a notice from `from` if the rules allow it; `Ok(true)` when
    /// it changed the directory.
    pub fn apply(&mut self, from: &MachineId, notice: Notice) -> Result<bool, Refused> {
        let Some(peer) = self.peers.get(from) else {
            return Err(Refused::UnknownPeer);
        };
        match notice {
            Notice::Created {
                id,
                machine,
                behavior,
                epoch,
            } => {
                if machine != *from {
                    return Err(Refused::NotOnSender {
                        id,
                        claimed: machine,
                    });
                }
                // Unknown is not epoch 0: an object that moved 32,768
                // times or more would otherwise look older than "never
                // moved", and no snapshot could place it again.
                let known = self.known_epoch(id);
                if let Some(known) = known.filter(|&k| epoch_newer(k, epoch)) {
                    return Err(Refused::Stale { id, epoch, known });
                }
                let moved_since = known.map_or(epoch != 0, |k| epoch_newer(epoch, k));
                let holder = self.machine_of(id);
                let theirs = id.node_prefix() == peer.prefix || holder == Some(from);
                if !theirs && !moved_since {
                    return Err(Refused::NotTheSendersObject {
                        id,
                        holder: holder.cloned(),
                    });
                }
                self.place(id, &machine, behavior.as_ref(), false, epoch);
                if moved_since {
                    // It moved to the sender: its names are held there now.
                    self.rehome_names(id, Some(&machine));
                }
                Ok(true)
            }
            Notice::Moved { id, machine, epoch } => {
                if self.us.as_ref() == Some(&machine) {
                    // Moved here: our own adopt placed it already.
                    return Ok(false);
                }
                let known = self.epoch_of(id);
                if !epoch_newer(epoch, known) {
                    // Already known, or older than what is known: a race.
                    return Ok(false);
                }
                let Some(holder) = self.machine_of(id) else {
                    // Not placed here: destroyed since, or ours now (the
                    // notices travel on different connections). The new
                    // home's create_notify says all a newcomer needs.
                    return Ok(false);
                };
                if holder != from {
                    return Err(Refused::NotTheSendersMove { id });
                }
                self.follow_move(id, &machine, epoch);
                Ok(true)
            }
            Notice::Destroyed { id } => {
                if self.machine_of(id) != Some(from) {
                    return Err(Refused::NotPlacedOnSender { id });
                }
                self.remove(id);
                self.drop_names_of(id);
                Ok(true)
            }
            Notice::Named { name, id, machine } => {
                let theirs = id.node_prefix() == peer.prefix || self.machine_of(id) == Some(from);
                if machine != *from || !theirs {
                    return Err(Refused::NotTheSendersName { name });
                }
                match self.names.get(&name) {
                    Some((held, holder)) if (*held, holder.as_ref()) == (id, Some(from)) => {
                        Ok(false)
                    }
                    // Two nodes named different objects at once: the lower
                    // machine_id keeps the name, on every node alike.
                    Some((_, holder)) if !self.outranks(from, holder.as_ref()) => Ok(false),
                    _ => {
                        self.names.insert(name, (id, Some(machine)));
                        Ok(true)
                    }
                }
            }
            Notice::Unnamed { name, id } => match self.names.get(&name) {
                Some((held, Some(holder))) if holder == from => {
                    let held = *held == id;
                    if held {
                        self.names.remove(&name);
                    }
                    Ok(held)
                }
                // Another machine's name: not the sender's to drop.
                Some(_) => Err(Refused::NotTheSendersName { name }),
                // Already gone (the sender lost it to a tie, say).
                None => Ok(false),
            },
        }
    }

    /// Sets this node's machine (for the name tie rule).
    pub fn set_local_machine(&mut self, us: MachineId) {
        self.us = Some(us);
    }

    /// Whether `from` wins a name held by `holder` (`None`: us).
    fn outranks(&self, from: &MachineId, holder: Option<&MachineId>) -> bool {
        match holder.or(self.us.as_ref()) {
            Some(holder) => from.as_str() < holder.as_str(),
            None => true,
        }
    }

    /// The object `name` names, anywhere in the cluster (as far as this
    /// node knows).
    pub fn whereis(&self, name: &str) -> Option<ObjectId> {
        self.names.get(name).map(|(id, _)| *id)
    }

    /// Registers `name` for local object `id`: false when the name is taken.
    pub fn register_local(&mut self, name: Arc<str>, id: ObjectId) -> bool {
        if self.names.contains_key(&name) {
            return false;
        }
        self.names.insert(name, (id, None));
        true
    }

    /// Drops `name` if a local object holds it; answers that object.
    pub fn unregister_local(&mut self, name: &str) -> Option<ObjectId> {
        match self.names.get(name) {
            Some((id, None)) => {
                let id = *id;
                self.names.remove(name);
                Some(id)
            }
            _ => None,
        }
    }

    /// The machine holding `name` (`None` for a local name or none).
    pub fn name_holder(&self, name: &str) -> Option<&MachineId> {
        self.names.get(name).and_then(|(_, m)| m.as_ref())
    }

    /// Drops every name of `id` (it was destroyed); answers them.
    pub fn drop_names_of(&mut self, id: ObjectId) -> Vec<Arc<str>> {
        let gone = self.names_of(id);
        for name in &gone {
            self.names.remove(name);
        }
        gone
    }

    /// Forgets every name held on `machine` (it came up again, and its
    /// snapshot says them anew; or it was declared down). Answers how many.
    pub fn forget_names_on(&mut self, machine: &MachineId) -> usize {
        let before = self.names.len();
        self.names.retain(|_, (_, m)| m.as_ref() != Some(machine));
        before - self.names.len()
    }

    /// Places `name` on `id` at `machine` unconditionally: for hosts wiring
    /// vms by hand (tests). A node's own traffic goes through `apply`.
    pub fn insert_name(&mut self, name: Arc<str>, id: ObjectId, machine: MachineId) {
        self.names.insert(name, (id, Some(machine)));
    }

    /// Drops `name` unconditionally (the counterpart of `insert_name`).
    pub fn remove_name(&mut self, name: &str) {
        self.names.remove(name);
    }

    /// The machines that have said hello (up now or not).
    pub fn peer_machines(&self) -> impl Iterator<Item = &MachineId> + '_ {
        self.peers.keys()
    }

    /// The names local objects hold (for the directory snapshot).
    pub fn local_names(&self) -> Vec<(Arc<str>, ObjectId)> {
        self.names
            .iter()
            .filter(|(_, (_, m))| m.is_none())
            .map(|(name, (id, _))| (name.clone(), *id))
            .collect()
    }

    /// Stores an entry (nothing when a name table is full: 65,535 machines
    /// or behavior names, far past any cluster).
    fn place(
        &mut self,
        id: ObjectId,
        machine: &MachineId,
        behavior: Option<&Arc<str>>,
        learned: bool,
        epoch: u16,
    ) {
        let Some(machine) = self.machines.intern(machine) else {
            return;
        };
        let behavior = behavior
            .and_then(|b| self.behaviors.intern(b))
            .or_else(|| Some(self.entries.get(&id)?.behavior))
            .unwrap_or(NO_NAME);
        let entry = Entry {
            machine,
            behavior,
            epoch,
            learned,
            kept: false,
        };
        if let Some(old) = self.entries.insert(id, entry) {
            self.hosted[usize::from(old.machine)] -= 1;
        }
        let m = usize::from(machine);
        if self.hosted.len() <= m {
            self.hosted.resize(m + 1, 0);
        }
        self.hosted[m] += 1;
    }

    /// How many objects the directory places on each machine it knows.
    pub fn hosted(&self) -> impl Iterator<Item = (&MachineId, u64)> + '_ {
        self.hosted
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((self.machines.get(i as u16)?, *n)))
    }

    /// `machine`'s directory snapshot since it came up is complete.
    /// Moved objects kept from before it came up that it did not name
    /// again are dropped now (destroyed, or gone with a restart).
    pub fn mark_synced(&mut self, machine: &MachineId) {
        let Some(peer) = self.peers.get_mut(machine) else {
            return;
        };
        peer.synced = true;
        if std::mem::take(&mut peer.kept) == 0 {
            return;
        }
        let Some(m) = self.machines.find(machine) else {
            return;
        };
        let mut dropped = 0;
        self.entries.retain(|_, e| {
            let stale = e.machine == m && e.kept;
            dropped += u64::from(stale);
            !stale
        });
        shrink_if_sparse(&mut self.entries);
        self.hosted[usize::from(m)] -= dropped;
    }

    /// Whether the directory holds everything `machine` announced when it
    /// came up ("directory synced"): its snapshot ended, and notices since
    /// arrive as they happen.
    pub fn is_synced(&self, machine: &MachineId) -> bool {
        self.peers.get(machine).is_some_and(|p| p.synced)
    }

    /// Places an inbound call's `sender` on the calling peer `from`, if it
    /// is unknown and has `from`'s prefix. `true` when it was learned now.
    pub fn learn_sender(&mut self, sender: ObjectId, from: &MachineId) -> bool {
        if self.entries.contains_key(&sender) {
            return false;
        }
        let Some(peer) = self.peers.get_mut(from) else {
            return false;
        };
        if sender.node_prefix() != peer.prefix {
            return false;
        }
        let from_index = self.machines.find(from);
        if peer.learned.len() >= LEARNED_PER_PEER {
            if let Some(oldest) = peer.learned.pop_front() {
                if self
                    .entries
                    .get(&oldest)
                    .is_some_and(|e| e.learned && Some(e.machine) == from_index)
                {
                    if let Some(e) = self.entries.remove(&oldest) {
                        self.hosted[usize::from(e.machine)] -= 1;
                    }
                }
            }
        }
        peer.learned.push_back(sender);
        self.place(sender, from, None, true, 0);
        true
    }

    /// Places `id` on `machine` unconditionally: for hosts wiring vms by
    /// hand (tests, benches). A node's own traffic goes through `apply`.
    pub fn insert(&mut self, id: ObjectId, machine: MachineId, behavior: Option<&str>) {
        let behavior = behavior.map(Arc::from);
        self.place(id, &machine, behavior.as_ref(), false, 0);
    }

    /// `id` now lives on `machine` at `epoch`: placed there (or, when
    /// `machine` is this node, dropped from the directory: the vm hosts
    /// it), and its names follow it.
    pub fn follow_move(&mut self, id: ObjectId, machine: &MachineId, epoch: u16) {
        let here = self.us.as_ref() == Some(machine);
        if here {
            self.remove(id);
        } else {
            self.place(id, machine, None, false, epoch);
        }
        self.rehome_names(id, (!here).then_some(machine));
    }

    /// Every name of `id` is now held by `holder` (`None`: here).
    fn rehome_names(&mut self, id: ObjectId, holder: Option<&MachineId>) {
        for (named, m) in self.names.values_mut() {
            if *named == id {
                *m = holder.cloned();
            }
        }
    }

    /// Local object `id` moved to `machine` at `epoch` (this node moved
    /// it): placed there with `behavior`, its names now held there.
    pub fn moved_away(
        &mut self,
        id: ObjectId,
        machine: &MachineId,
        behavior: &Arc<str>,
        epoch: u16,
    ) {
        self.place(id, machine, Some(behavior), false, epoch);
        self.rehome_names(id, Some(machine));
    }

    /// Names of `id` held anywhere (a move takes them along).
    pub fn names_of(&self, id: ObjectId) -> Vec<Arc<str>> {
        self.names
            .iter()
            .filter(|(_, (named, _))| *named == id)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Object `id` moved here with `names`: it leaves the directory (it
    /// is local now), and takes each name no other object holds here
    /// (from whichever machine held it). Answers the names it took.
    pub fn moved_here(&mut self, id: ObjectId, names: &[Arc<str>]) -> Vec<Arc<str>> {
        self.remove(id);
        let mut took = Vec::new();
        for name in names {
            if self.names.get(name).is_none_or(|(named, _)| *named == id) {
                self.names.insert(name.clone(), (id, None));
                took.push(name.clone());
            }
        }
        took
    }

    pub fn remove(&mut self, id: ObjectId) -> Option<MachineId> {
        let removed = self.entries.remove(&id)?;
        shrink_if_sparse(&mut self.entries);
        self.hosted[usize::from(removed.machine)] -= 1;
        self.machines.get(removed.machine).cloned()
    }

    pub fn machine_of(&self, id: ObjectId) -> Option<&MachineId> {
        self.entries
            .get(&id)
            .and_then(|e| self.machines.get(e.machine))
    }

    pub fn behavior_of(&self, id: ObjectId) -> Option<&str> {
        self.entries
            .get(&id)
            .and_then(|e| self.behaviors.get(e.behavior))
            .map(|b| &**b)
    }

    /// The lowest id whose behavior is `behavior` (deterministic whatever
    /// the insertion order).
    pub fn find_by_behavior(&self, behavior: &str) -> Option<ObjectId> {
        let wanted = self.behaviors.find(&Arc::from(behavior))?;
        self.entries
            .iter()
            .filter(|(_, e)| e.behavior == wanted)
            .map(|(id, _)| *id)
            .min()
    }

    /// Every remote object on `machine`.
    pub fn on_machine<'a>(&'a self, machine: &'a MachineId) -> impl Iterator<Item = ObjectId> + 'a {
        let wanted = self.machines.find(machine);
        self.entries
            .iter()
            .filter(move |(_, e)| Some(e.machine) == wanted)
            .map(|(id, _)| *id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str) -> MachineId {
        MachineId::new(name)
    }

    fn id(prefix: u16, n: u64) -> ObjectId {
        ObjectId(u64::from(prefix) << 48 | n)
    }

    fn created(i: ObjectId, machine: &str, behavior: &str) -> Notice {
        Notice::Created {
            id: i,
            machine: m(machine),
            behavior: Some(Arc::from(behavior)),
            epoch: 0,
        }
    }

    /// beta (prefix 2) and mallory (prefix 9) are connected.
    fn dir() -> Directory {
        let mut d = Directory::new();
        d.peer_up(&m("beta"), 2);
        d.peer_up(&m("mallory"), 9);
        d
    }

    #[test]
    fn find_by_behavior_picks_lowest_id() {
        let mut d = Directory::new();
        d.insert(ObjectId(9), m("b"), Some("pong"));
        d.insert(ObjectId(3), m("c"), Some("pong"));
        d.insert(ObjectId(1), m("c"), None);
        assert_eq!(d.find_by_behavior("pong"), Some(ObjectId(3)));
        assert_eq!(d.machine_of(ObjectId(9)).unwrap().as_str(), "b");
        assert_eq!(d.remove(ObjectId(9)).unwrap().as_str(), "b");
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn a_peer_places_its_own_objects() {
        let mut d = dir();
        let pong = id(2, 1);
        assert_eq!(d.apply(&m("beta"), created(pong, "beta", "pong")), Ok(true));
        assert_eq!(d.machine_of(pong), Some(&m("beta")));
        assert_eq!(d.behavior_of(pong), Some("pong"));
        assert_eq!(
            d.apply(&m("beta"), Notice::Destroyed { id: pong }),
            Ok(true)
        );
        assert_eq!(d.machine_of(pong), None);
    }

    #[test]
    fn forged_and_foreign_notices_are_refused() {
        let mut d = dir();
        let pong = id(2, 1);
        d.apply(&m("beta"), created(pong, "beta", "pong")).unwrap();
        // Placing an object on a third machine.
        let e = d
            .apply(&m("mallory"), created(id(9, 1), "ghost", "x"))
            .unwrap_err();
        assert!(e.to_string().contains("not on the sender; ignored"), "{e}");
        // Claiming beta's object.
        let e = d
            .apply(&m("mallory"), created(pong, "mallory", "pong"))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Refused::NotTheSendersObject {
                    holder: Some(_),
                    ..
                }
            ),
            "{e}"
        );
        // Claiming an object of a prefix that is not its own.
        let e = d
            .apply(&m("mallory"), created(id(5, 1), "mallory", "x"))
            .unwrap_err();
        assert!(e.is_forgery());
        // Retiring beta's object.
        let e = d
            .apply(&m("mallory"), Notice::Destroyed { id: pong })
            .unwrap_err();
        assert_eq!(e, Refused::NotPlacedOnSender { id: pong });
        // A stranger.
        assert_eq!(
            d.apply(&m("nobody"), created(id(3, 1), "nobody", "x")),
            Err(Refused::UnknownPeer)
        );
        assert_eq!(
            d.machine_of(pong),
            Some(&m("beta")),
            "beta's pong is untouched"
        );
        assert_eq!(d.len(), 1);
    }

    fn named(name: &str, id: ObjectId, machine: &str) -> Notice {
        Notice::Named {
            name: Arc::from(name),
            id,
            machine: m(machine),
        }
    }

    #[test]
    fn a_peer_names_only_its_own_objects_and_drops_only_its_own_names() {
        let mut d = dir();
        let pong = id(2, 1);
        assert_eq!(d.apply(&m("beta"), named("pong", pong, "beta")), Ok(true));
        assert_eq!(d.whereis("pong"), Some(pong));
        assert_eq!(d.name_holder("pong"), Some(&m("beta")));
        // mallory may not name beta's object, nor on another machine.
        let e = d
            .apply(&m("mallory"), named("evil", pong, "mallory"))
            .unwrap_err();
        assert!(e.is_forgery(), "{e}");
        let e = d.apply(&m("mallory"), named("evil", id(9, 1), "beta"));
        assert!(e.is_err());
        // Nor drop beta's name.
        let drop = Notice::Unnamed {
            name: Arc::from("pong"),
            id: pong,
        };
        assert!(d.apply(&m("mallory"), drop.clone()).is_err());
        assert_eq!(d.whereis("pong"), Some(pong));
        assert_eq!(d.apply(&m("beta"), drop), Ok(true));
        assert_eq!(d.whereis("pong"), None);
    }

    #[test]
    fn a_name_two_nodes_took_at_once_goes_to_the_lower_machine_everywhere() {
        // On a third node, in either order of arrival.
        for beta_first in [true, false] {
            let mut d = dir();
            d.peer_up(&m("alpha"), 1);
            let (from_alpha, from_beta) =
                (named("x", id(1, 5), "alpha"), named("x", id(2, 5), "beta"));
            let order = if beta_first {
                [(m("beta"), from_beta), (m("alpha"), from_alpha)]
            } else {
                [(m("alpha"), from_alpha), (m("beta"), from_beta)]
            };
            for (from, notice) in order {
                let _ = d.apply(&from, notice);
            }
            assert_eq!(d.whereis("x"), Some(id(1, 5)), "beta first: {beta_first}");
        }
        // On beta itself, which had named its own object: alpha wins.
        let mut beta = Directory::new();
        beta.set_local_machine(m("beta"));
        beta.peer_up(&m("alpha"), 1);
        assert!(beta.register_local(Arc::from("x"), id(2, 5)));
        assert_eq!(
            beta.apply(&m("alpha"), named("x", id(1, 5), "alpha")),
            Ok(true)
        );
        assert_eq!(beta.whereis("x"), Some(id(1, 5)));
        // On alpha: its own registration stands against beta's.
        let mut alpha = Directory::new();
        alpha.set_local_machine(m("alpha"));
        alpha.peer_up(&m("beta"), 2);
        assert!(alpha.register_local(Arc::from("x"), id(1, 5)));
        assert_eq!(
            alpha.apply(&m("beta"), named("x", id(2, 5), "beta")),
            Ok(false)
        );
        assert_eq!(alpha.whereis("x"), Some(id(1, 5)));
    }

    #[test]
    fn names_go_with_their_object_and_their_node() {
        let mut d = dir();
        d.apply(&m("beta"), created(id(2, 1), "beta", "pong"))
            .unwrap();
        d.apply(&m("beta"), named("a", id(2, 1), "beta")).unwrap();
        d.apply(&m("beta"), named("b", id(2, 2), "beta")).unwrap();
        d.apply(&m("beta"), Notice::Destroyed { id: id(2, 1) })
            .unwrap();
        assert_eq!((d.whereis("a"), d.whereis("b")), (None, Some(id(2, 2))));
        assert_eq!(d.forget_names_on(&m("beta")), 1);
        assert_eq!(d.whereis("b"), None);
        d.apply(&m("beta"), named("c", id(2, 3), "beta")).unwrap();
        d.peer_up(&m("beta"), 2);
        assert_eq!(
            d.whereis("c"),
            None,
            "a reconnected peer's snapshot says its names anew"
        );
    }

    #[test]
    fn per_machine_counts_follow_places_moves_removals_and_reconnects() {
        let mut d = dir();
        let count = |d: &Directory, name: &str| {
            d.hosted()
                .find(|(m, _)| m.as_str() == name)
                .map_or(0, |(_, n)| n)
        };
        d.insert(id(2, 1), m("beta"), None);
        d.insert(id(2, 2), m("beta"), None);
        d.insert(id(3, 1), m("gamma"), None);
        assert_eq!((count(&d, "beta"), count(&d, "gamma")), (2, 1));
        d.insert(id(2, 2), m("gamma"), None);
        assert_eq!((count(&d, "beta"), count(&d, "gamma")), (1, 2));
        d.remove(id(3, 1));
        assert_eq!(count(&d, "gamma"), 1);
        d.peer_up(&m("beta"), 2);
        assert_eq!((count(&d, "beta"), count(&d, "gamma")), (0, 1));
        assert_eq!(d.hosted().map(|(_, n)| n).sum::<u64>(), d.len() as u64);
    }

    #[test]
    fn a_reconnected_peer_starts_from_its_snapshot() {
        let mut d = dir();
        d.apply(&m("beta"), created(id(2, 1), "beta", "pong"))
            .unwrap();
        d.apply(&m("mallory"), created(id(9, 1), "mallory", "x"))
            .unwrap();
        assert_eq!(d.peer_up(&m("beta"), 2), 1);
        assert_eq!(d.machine_of(id(2, 1)), None);
        assert_eq!(d.machine_of(id(9, 1)), Some(&m("mallory")));
    }

    #[test]
    fn learned_senders_are_the_peers_own_and_bounded() {
        let mut d = dir();
        assert!(
            !d.learn_sender(id(2, 1), &m("mallory")),
            "beta's prefix, from mallory"
        );
        assert!(d.learn_sender(id(9, 1), &m("mallory")));
        assert!(!d.learn_sender(id(9, 1), &m("mallory")), "already known");
        for n in 2..=(LEARNED_PER_PEER as u64 + 10) {
            d.learn_sender(id(9, n), &m("mallory"));
        }
        assert_eq!(d.len(), LEARNED_PER_PEER);
        assert_eq!(d.machine_of(id(9, 1)), None, "the oldest went first");
        assert!(d.machine_of(id(9, LEARNED_PER_PEER as u64 + 10)).is_some());
        // An announced object is never evicted as if learned.
        d.apply(&m("beta"), created(id(2, 7), "beta", "pong"))
            .unwrap();
        assert_eq!(d.machine_of(id(2, 7)), Some(&m("beta")));
    }

    /// Moved objects on a machine that comes up again are kept until its
    /// snapshot ends: those it names again stay, the rest go then; its
    /// never-moved objects go at once, as before.
    #[test]
    fn moved_entries_are_kept_until_the_peers_snapshot_ends() {
        let mut d = Directory::new();
        let beta = MachineId::new("beta");
        d.peer_up(&beta, 2);
        let (plain, stays, goes) = (
            ObjectId(2 << 48 | 1),
            ObjectId(1 << 48 | 2),
            ObjectId(1 << 48 | 3),
        );
        d.insert(plain, beta.clone(), Some("cell"));
        d.follow_move(stays, &beta, 1);
        d.follow_move(goes, &beta, 4);
        assert_eq!(d.peer_up(&beta, 2), 1, "only the never-moved one");
        assert_eq!(d.machine_of(plain), None);
        assert_eq!(d.machine_of(stays), Some(&beta));
        assert_eq!(d.epoch_of(goes), 4);
        let named_again = Notice::Created {
            id: stays,
            machine: beta.clone(),
            behavior: Some(Arc::from("cell")),
            epoch: 1,
        };
        assert_eq!(d.apply(&beta, named_again), Ok(true));
        assert_eq!(
            d.hosted().find(|(m, _)| **m == beta).map(|(_, n)| n),
            Some(2)
        );
        d.mark_synced(&beta);
        assert_eq!(d.machine_of(stays), Some(&beta));
        assert_eq!(d.machine_of(goes), None);
        assert_eq!(
            d.hosted().find(|(m, _)| **m == beta).map(|(_, n)| n),
            Some(1)
        );
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn an_entry_is_small_and_names_are_stored_once() {
        assert_eq!(std::mem::size_of::<Entry>(), 8);
        // A map slot (id and entry) stays 16 bytes with the epoch.
        assert_eq!(std::mem::size_of::<(ObjectId, Entry)>(), 16);
        let mut d = dir();
        for n in 1..=1000 {
            d.apply(&m("beta"), created(id(2, n), "beta", "pong"))
                .unwrap();
        }
        assert_eq!(d.behaviors.by_index.len(), 1, "one copy of `pong`");
        assert_eq!(d.behavior_of(id(2, 500)), Some("pong"));
        assert_eq!(d.on_machine(&m("beta")).count(), 1000);
        assert_eq!(d.remove(id(2, 1)), Some(m("beta")));
        assert_eq!(d.find_by_behavior("pong"), Some(id(2, 2)));
        assert_eq!(d.find_by_behavior("ping"), None);
    }

    fn moved(i: ObjectId, machine: &str, epoch: u16) -> Notice {
        Notice::Moved {
            id: i,
            machine: m(machine),
            epoch,
        }
    }

    #[test]
    fn epochs_compare_across_the_wrap() {
        assert!(epoch_newer(1, 0));
        assert!(!epoch_newer(0, 0));
        assert!(!epoch_newer(0, 1));
        assert!(epoch_newer(0, u16::MAX), "0 follows 65535");
        assert!(!epoch_newer(u16::MAX, 0));
    }

    /// An object that has moved 32,768 times or more is placed by its
    /// holder's snapshot on a directory that does not know it (a
    /// reconnect forgets the holder's objects): unknown is not epoch 0.
    /// And a move past epoch 65,535 goes to 1, never to 0 ("never moved").
    #[test]
    fn objects_that_moved_often_are_placed_and_epochs_skip_zero() {
        for epoch in [1, 32_767, 32_768, 40_000, 65_535] {
            let mut d = dir();
            let obj = id(2, 1);
            let notice = Notice::Created {
                id: obj,
                machine: m("mallory"),
                behavior: Some(Arc::from("cell")),
                epoch,
            };
            assert_eq!(d.apply(&m("mallory"), notice), Ok(true), "{epoch}");
            assert_eq!(d.machine_of(obj), Some(&m("mallory")), "{epoch}");
            assert_eq!(d.epoch_of(obj), epoch);
        }
        assert_eq!(next_epoch(65_535), 1);
        assert_eq!(next_epoch(7), 8);
        assert!(epoch_newer(next_epoch(65_535), 65_535));
    }

    #[test]
    fn a_move_notice_is_believed_from_the_old_home_only_when_newer() {
        let mut d = dir();
        d.peer_up(&m("gamma"), 3);
        let obj = id(2, 1);
        d.apply(&m("beta"), created(obj, "beta", "cell")).unwrap();
        d.insert_name(Arc::from("n"), obj, m("beta"));
        // Only the machine it is placed on may say it moved.
        assert_eq!(
            d.apply(&m("mallory"), moved(obj, "mallory", 1)),
            Err(Refused::NotTheSendersMove { id: obj })
        );
        assert_eq!(d.apply(&m("beta"), moved(obj, "gamma", 1)), Ok(true));
        assert_eq!(d.machine_of(obj), Some(&m("gamma")));
        assert_eq!(d.behavior_of(obj), Some("cell"), "the behavior is kept");
        assert_eq!(d.name_holder("n"), Some(&m("gamma")), "names follow");
        // A late, older notice (a race) changes nothing, quietly.
        assert_eq!(d.apply(&m("gamma"), moved(obj, "beta", 1)), Ok(false));
        // The new home moves it on: newer, and from where it is placed.
        assert_eq!(d.apply(&m("gamma"), moved(obj, "beta", 2)), Ok(true));
        assert_eq!(d.machine_of(obj), Some(&m("beta")));
        assert_eq!(d.epoch_of(obj), 2);
    }

    #[test]
    fn a_create_notify_is_judged_by_its_epoch() {
        let mut d = dir();
        d.peer_up(&m("gamma"), 3);
        let obj = id(2, 1);
        let on_gamma = |epoch| Notice::Created {
            id: obj,
            machine: m("gamma"),
            behavior: None,
            epoch,
        };
        // gamma's snapshot names beta's object at epoch 0: not gamma's.
        assert!(matches!(
            d.apply(&m("gamma"), on_gamma(0)),
            Err(Refused::NotTheSendersObject { .. })
        ));
        // At epoch 1 it moved there: believed (its new home's word), and
        // its names are held there now.
        d.insert_name(Arc::from("n"), obj, m("beta"));
        assert_eq!(d.apply(&m("gamma"), on_gamma(1)), Ok(true));
        assert_eq!(d.machine_of(obj), Some(&m("gamma")));
        assert_eq!(d.name_holder("n"), Some(&m("gamma")));
        // beta's stale announcement at epoch 0 is refused, quietly.
        let stale = d.apply(&m("beta"), created(obj, "beta", "cell"));
        assert_eq!(
            stale,
            Err(Refused::Stale {
                id: obj,
                epoch: 0,
                known: 1
            })
        );
        assert!(!stale.unwrap_err().is_forgery());
    }

    #[test]
    fn a_move_here_takes_the_entry_out_and_the_names_in() {
        let mut d = dir();
        d.set_local_machine(m("alpha"));
        let obj = id(2, 1);
        d.apply(&m("beta"), created(obj, "beta", "cell")).unwrap();
        d.insert_name(Arc::from("n"), obj, m("beta"));
        // Our adopt of it (the vm's) came first; beta's notice then
        // changes nothing.
        d.moved_here(obj, &[Arc::from("n")]);
        assert_eq!(d.apply(&m("beta"), moved(obj, "alpha", 1)), Ok(false));
        assert_eq!(d.machine_of(obj), None, "local objects are never in it");
        assert_eq!(d.whereis("n"), Some(obj));
        assert_eq!(d.name_holder("n"), None, "held here now");
        assert!(d.is_up(&m("beta")));
        d.peer_down(&m("beta"));
        assert!(!d.is_up(&m("beta")));
        assert!(!d.is_up(&m("nobody")));
    }
}
