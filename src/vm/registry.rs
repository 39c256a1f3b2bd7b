//! Named code: behaviors (`Fn(Val) -> Program`) and pure functions
//! (`Fn(&[Val]) -> Option<Val>`).
//!
//! Only names cross machines, never code: every node registers the same
//! names. A behavior is found by name once, at object creation; after that
//! the object holds its index, so a call costs no hash lookup by name.
//! Invariant: entries are only ever appended, so indices stay valid.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use super::ids::{IdHasher, ObjectId};
use super::program::Program;
use super::value::Val;

/// A behavior: the program an object runs for each call, given the input.
pub type BehaviorFn = dyn Fn(Val) -> Program + Send;

/// Who is running and who called: the environment of one call, handed to
/// behaviors registered with [`BehaviorRegistry::register_with_ctx`] (the
/// same answers `get_self` and `get_sender` give, without an instruction
/// round trip or a continuation to capture the input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctx {
    /// The object this call runs in.
    pub me: ObjectId,
    /// The calling object, if any.
    pub sender: Option<ObjectId>,
}

/// What the vm stores: every flavor of behavior, given its call's context.
type StoredFn = dyn Fn(Ctx, Val) -> Program + Send;
/// A pure function: `None` means "declined" and answers `Nothing`.
pub type PureFn = dyn Fn(&[Val]) -> Option<Val> + Send;

pub(crate) struct Behavior {
    pub(crate) name: Arc<str>,
    pub(crate) run: Box<StoredFn>,
    /// Whether the vm keeps a copy of the input for `get_input`.
    pub(crate) keeps_input: bool,
    /// Whether its calls may use reflection (`reflect`, `scry_meta`,
    /// `reify_context`): see [`BehaviorRegistry::allow_reflection`].
    pub(crate) reflective: bool,
}

/// The longest behavior name a registry takes, in bytes.
pub const MAX_BEHAVIOR_NAME: usize = u16::MAX as usize;

/// Behaviors by name.
#[derive(Default)]
pub struct BehaviorRegistry {
    entries: Vec<Behavior>,
    by_name: HashMap<Arc<str>, u32, BuildHasherDefault<IdHasher>>,
}

impl BehaviorRegistry {
    pub fn new() -> BehaviorRegistry {
        BehaviorRegistry::default()
    }

    /// Register `f` under `name` (at most [`MAX_BEHAVIOR_NAME`] bytes, or
    /// this panics; replacing an earlier one, and what
    /// [`allow_reflection`](Self::allow_reflection) allowed it: a new
    /// function is not trusted for the old one's sake). The vm keeps a
    /// copy of each call's input so the program may also ask `get_input`.
    pub fn register<F>(&mut self, name: &str, f: F)
    where
        F: Fn(Val) -> Program + Send + 'static,
    {
        self.insert(name, Box::new(move |_, input| f(input)), true);
    }

    /// Like [`register`](Self::register), but the input is moved into `f`
    /// and not kept: no clone per call. `get_input` then fails with
    /// [`VmError::InputNotKept`](super::VmError::InputNotKept).
    pub fn register_consuming<F>(&mut self, name: &str, f: F)
    where
        F: Fn(Val) -> Program + Send + 'static,
    {
        self.insert(name, Box::new(move |_, input| f(input)), false);
    }

    /// A consuming behavior that is also handed its call's [`Ctx`].
    pub fn register_with_ctx<F>(&mut self, name: &str, f: F)
    where
        F: Fn(Ctx, Val) -> Program + Send + 'static,
    {
        self.insert(name, Box::new(f), false);
    }

    /// # Panics
    /// On a name over [`MAX_BEHAVIOR_NAME`] bytes: a durable node could not
    /// store its objects (a record holds the name's length in 16 bits).
    fn insert(&mut self, name: &str, run: Box<StoredFn>, keeps_input: bool) {
        assert!(
            name.len() <= MAX_BEHAVIOR_NAME,
            "behavior name of {} bytes: at most {MAX_BEHAVIOR_NAME}",
            name.len()
        );
        let name: Arc<str> = Arc::from(name);
        let entry = Behavior {
            name: name.clone(),
            run,
            keeps_input,
            reflective: false,
        };
        match self.by_name.get(&name) {
            Some(&i) => self.entries[i as usize] = entry,
            None => {
                self.by_name.insert(name, self.entries.len() as u32);
                self.entries.push(entry);
            }
        }
    }

    /// Lets behavior `name` use reflection: `reflect`, `scry_meta` and
    /// `reify_context` see objects' metadata and the running frame, which
    /// the AVM marks unsafe. A behavior not allowed fails such a call with
    /// an error saying so; top-level programs (host code) always may.
    /// False when no behavior has that name.
    pub fn allow_reflection(&mut self, name: &str) -> bool {
        match self.by_name.get(name) {
            Some(&i) => {
                self.entries[i as usize].reflective = true;
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn get(&self, index: u32) -> &Behavior {
        &self.entries[index as usize]
    }
}

impl fmt::Debug for BehaviorRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|b| &*b.name))
            .finish()
    }
}

/// Pure functions by name.
#[derive(Default)]
pub struct PureRegistry {
    by_name: HashMap<Arc<str>, Box<PureFn>, BuildHasherDefault<IdHasher>>,
}

impl PureRegistry {
    pub fn new() -> PureRegistry {
        PureRegistry::default()
    }

    pub fn register<F>(&mut self, name: &str, f: F)
    where
        F: Fn(&[Val]) -> Option<Val> + Send + 'static,
    {
        self.by_name.insert(Arc::from(name), Box::new(f));
    }

    pub(crate) fn get(&self, name: &str) -> Option<(&Arc<str>, &PureFn)> {
        self.by_name
            .get_key_value(name)
            .map(|(k, f)| (k, f.as_ref()))
    }
}

impl fmt::Debug for PureRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.by_name.keys().map(|k| &**k))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::done;

    #[test]
    fn the_longest_name_a_store_can_hold_is_taken() {
        let mut registry = BehaviorRegistry::new();
        registry.register(&"b".repeat(MAX_BEHAVIOR_NAME), done);
        assert!(registry.index_of(&"b".repeat(MAX_BEHAVIOR_NAME)).is_some());
    }

    #[test]
    #[should_panic(expected = "behavior name of 65536 bytes")]
    fn a_name_a_store_cannot_hold_is_refused() {
        BehaviorRegistry::new().register(&"b".repeat(MAX_BEHAVIOR_NAME + 1), done);
    }
}
