//! `ObjectStore`: the typed objects every source feeds, keyed by kind, namespace and name.

use crate::object::{ObjectKey, StoredObject};
use std::collections::BTreeMap;

/// All objects currently known, from whichever source. Ordered, so that translation
/// sees objects in a stable order and produces the same Snapshot for the same input.
#[derive(Debug, Clone, Default)]
pub struct ObjectStore {
    objects: BTreeMap<ObjectKey, StoredObject>,
}

impl ObjectStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a store from a list of objects; a later object with the same key wins.
    pub fn from_objects(objects: impl IntoIterator<Item = StoredObject>) -> Self {
        let mut store = Self::new();
        for o in objects {
            store.upsert(o);
        }
        store
    }

    /// Inserts or replaces an object; returns true when the store changed.
    pub fn upsert(&mut self, object: StoredObject) -> bool {
        let key = object.key();
        match self.objects.get(&key) {
            Some(old) if old.object == object.object => false,
            _ => {
                self.objects.insert(key, object);
                true
            }
        }
    }

    pub fn remove(&mut self, key: &ObjectKey) -> Option<StoredObject> {
        self.objects.remove(key)
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&StoredObject> {
        self.objects.get(key)
    }

    /// Objects of one kind, in key order.
    pub fn of_kind<'a>(
        &'a self,
        kind: &'static str,
    ) -> impl Iterator<Item = &'a StoredObject> + 'a {
        self.objects
            .values()
            .filter(move |o| o.object.kind() == kind)
    }

    pub fn iter(&self) -> impl Iterator<Item = &StoredObject> {
        self.objects.values()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}
