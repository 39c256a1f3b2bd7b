//! `Directory`: where objects on *other* machines live.
//!
//! Filled by the node from `create_notify` / `destroy_notify`. The vm only
//! reads it: a `call` to an id found here suspends the chain and asks the
//! driver to forward it. Local objects are never in the directory.

use std::collections::HashMap;
use std::sync::Arc;

use super::ids::{MachineId, ObjectId};

/// ObjectId -> (machine, behavior name) for objects on other machines.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    entries: HashMap<ObjectId, (MachineId, Option<Arc<str>>)>,
}

impl Directory {
    pub fn new() -> Directory {
        Directory::default()
    }

    pub fn insert(&mut self, id: ObjectId, machine: MachineId, behavior: Option<&str>) {
        self.entries.insert(id, (machine, behavior.map(Arc::from)));
    }

    pub fn remove(&mut self, id: ObjectId) -> Option<MachineId> {
        self.entries.remove(&id).map(|(m, _)| m)
    }

    pub fn machine_of(&self, id: ObjectId) -> Option<&MachineId> {
        self.entries.get(&id).map(|(m, _)| m)
    }

    pub fn behavior_of(&self, id: ObjectId) -> Option<&str> {
        self.entries.get(&id).and_then(|(_, b)| b.as_deref())
    }

    /// The lowest id whose behavior is `behavior` (deterministic whatever
    /// the insertion order).
    pub fn find_by_behavior(&self, behavior: &str) -> Option<ObjectId> {
        self.entries
            .iter()
            .filter(|(_, (_, b))| b.as_deref() == Some(behavior))
            .map(|(id, _)| *id)
            .min()
    }

    /// Every remote object on `machine` (for failing them when it leaves).
    pub fn on_machine<'a>(&'a self, machine: &'a MachineId) -> impl Iterator<Item = ObjectId> + 'a {
        self.entries
            .iter()
            .filter(move |(_, (m, _))| m == machine)
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

    #[test]
    fn find_by_behavior_picks_lowest_id() {
        let mut d = Directory::new();
        d.insert(ObjectId(9), MachineId::new("b"), Some("pong"));
        d.insert(ObjectId(3), MachineId::new("c"), Some("pong"));
        d.insert(ObjectId(1), MachineId::new("c"), None);
        assert_eq!(d.find_by_behavior("pong"), Some(ObjectId(3)));
        assert_eq!(d.machine_of(ObjectId(9)).unwrap().as_str(), "b");
        assert_eq!(d.remove(ObjectId(9)).unwrap().as_str(), "b");
        assert_eq!(d.len(), 2);
    }
}
