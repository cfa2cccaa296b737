//! Objects the proxy's adaptive controls make (`SourceBlock`s): kept beside the objects
//! the sources read, added to every translation, listed and deleted through the admin
//! API, and dropped when they expire. Each change bumps a counter the config loop
//! watches, so it is served like any other config change.

use gatehouse_model::{ObjectKey, ObjectStore, StoredObject};
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// The objects made, with when each ends (ms since the Unix epoch).
pub struct Generated {
    objects: Mutex<BTreeMap<ObjectKey, (StoredObject, u64)>>,
    changes: watch::Sender<u64>,
}

impl Default for Generated {
    fn default() -> Self {
        Generated {
            objects: Mutex::default(),
            changes: watch::channel(0).0,
        }
    }
}

impl Generated {
    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<ObjectKey, (StoredObject, u64)>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// Adds (or replaces) objects, each with its end.
    pub fn insert(&self, made: Vec<(StoredObject, u64)>) {
        if made.is_empty() {
            return;
        }
        {
            let mut objects = self.objects();
            for (o, until) in made {
                objects.insert(o.key(), (o, until));
            }
        }
        self.changed();
    }

    /// Removes one; whether it was there.
    pub fn remove(&self, key: &ObjectKey) -> bool {
        let gone = self.objects().remove(key).is_some();
        if gone {
            self.changed();
        }
        gone
    }

    /// Drops the objects that ended by `now_ms`; how many.
    pub fn expire(&self, now_ms: u64) -> usize {
        let n = {
            let mut objects = self.objects();
            let before = objects.len();
            objects.retain(|_, (_, until)| *until > now_ms);
            before - objects.len()
        };
        if n > 0 {
            self.changed();
        }
        n
    }

    /// Whether `key` is one of them.
    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.objects().contains_key(key)
    }

    /// The objects, in key order.
    pub fn list(&self) -> Vec<StoredObject> {
        self.objects().values().map(|(o, _)| o.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.objects().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds every object to `store` (after the sources' own: a source's object of the
    /// same name wins).
    pub fn add_to(&self, store: &mut ObjectStore) {
        for (key, (o, _)) in self.objects().iter() {
            if store.get(key).is_none() {
                store.upsert(o.clone());
            }
        }
    }

    /// Wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
