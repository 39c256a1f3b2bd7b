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

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::directory::Directory;
use super::ids::{ControllerId, FreshIdGen, MachineId, ObjectId};
use super::registry::{BehaviorRegistry, PureRegistry};
use super::trace::Trace;
use super::value::Val;

/// A local object.
#[derive(Debug)]
pub(crate) struct Obj {
    pub(crate) behavior: u32,
    pub(crate) state: Vec<Val>,
    pub(crate) controller: Option<ControllerId>,
}

/// A hasher for ids: they are already unique integers, SipHash buys nothing.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (x ^ (x >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<V> = HashMap<ObjectId, V, BuildHasherDefault<IdHasher>>;

/// Everything but the chains, so the engine can borrow a chain and the
/// world at once.
pub(crate) struct World {
    pub(crate) machine: MachineId,
    pub(crate) objects: IdMap<Obj>,
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
    pub(crate) directory: Directory,
    pub(crate) behaviors: BehaviorRegistry,
    pub(crate) pures: PureRegistry,
    pub(crate) trace: Trace,
    /// What errors call a top-level program's frame.
    pub(crate) program_name: Arc<str>,
}
