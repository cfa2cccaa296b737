//! `ObjectStore`: the typed objects every source feeds, keyed by kind, namespace and name.

use crate::object::{ObjectKey, StoredObject};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// All objects currently known, from whichever source. Ordered, so that translation
/// sees objects in a stable order and produces the same Snapshot for the same input.
/// Objects are shared, so copying the store (to translate it off the watchers' lock)
/// copies keys and pointers, not objects.
#[derive(Debug, Clone, Default)]
pub struct ObjectStore {
    objects: BTreeMap<ObjectKey, Arc<StoredObject>>,
    /// EndpointSlice names by (namespace, Service), from the `kubernetes.io/service-name`
    /// label, so a Service's endpoints are found without scanning every slice.
    slices: HashMap<(String, String), BTreeSet<String>>,
}

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The (namespace, Service) an EndpointSlice belongs to.
pub fn slice_service(o: &StoredObject) -> Option<(String, String)> {
    if o.object.kind() != "EndpointSlice" {
        return None;
    }
    let svc = o
        .object
        .metadata()
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?;
    Some((o.namespace().to_string(), svc.clone()))
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
                self.insert(key, Arc::new(object));
                true
            }
        }
    }

    fn insert(&mut self, key: ObjectKey, object: Arc<StoredObject>) {
        if let Some(old) = self.objects.insert(key, object.clone()) {
            self.index(&old, false);
        }
        self.index(&object, true);
    }

    /// Adds (or removes) an EndpointSlice's entry in the Service index.
    fn index(&mut self, o: &StoredObject, add: bool) {
        let Some(svc) = slice_service(o) else { return };
        if add {
            self.slices
                .entry(svc)
                .or_default()
                .insert(o.name().to_string());
        } else if let Some(names) = self.slices.get_mut(&svc) {
            names.remove(o.name());
            if names.is_empty() {
                self.slices.remove(&svc);
            }
        }
    }

    /// The EndpointSlices of Service `namespace/service`.
    pub fn slices_of<'a>(
        &'a self,
        namespace: &str,
        service: &str,
    ) -> impl Iterator<Item = &'a StoredObject> + 'a {
        let names = self
            .slices
            .get(&(namespace.to_string(), service.to_string()));
        let namespace = namespace.to_string();
        names.into_iter().flatten().filter_map(move |name| {
            self.get(&ObjectKey {
                kind: "EndpointSlice",
                namespace: Some(namespace.clone()),
                name: name.clone(),
            })
        })
    }

    /// The object under `key`, shared.
    pub fn get_shared(&self, key: &ObjectKey) -> Option<Arc<StoredObject>> {
        self.objects.get(key).cloned()
    }

    /// Replaces every object of `kind` (within `namespace`, when given) with `objects`,
    /// as a re-list does; returns true when the store changed.
    pub fn replace_kind(
        &mut self,
        kind: &str,
        namespace: Option<&str>,
        objects: Vec<StoredObject>,
    ) -> bool {
        let in_scope = |k: &ObjectKey| {
            k.kind == kind && namespace.is_none_or(|ns| k.namespace.as_deref() == Some(ns))
        };
        let mut fresh: BTreeMap<ObjectKey, StoredObject> =
            objects.into_iter().map(|o| (o.key(), o)).collect();
        let mut changed = false;
        self.objects.retain(|k, old| {
            if !in_scope(k) {
                return true;
            }
            match fresh.remove(k) {
                Some(new) => {
                    if new.object != old.object {
                        *old = Arc::new(new);
                        changed = true;
                    }
                    true
                }
                None => {
                    changed = true;
                    false
                }
            }
        });
        changed |= !fresh.is_empty();
        self.objects
            .extend(fresh.into_iter().map(|(k, o)| (k, Arc::new(o))));
        if changed && kind == "EndpointSlice" {
            self.reindex();
        }
        changed
    }

    /// Rebuilds the Service index of EndpointSlices from scratch.
    fn reindex(&mut self) {
        let mut slices: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
        for o in self.of_kind("EndpointSlice") {
            if let Some(svc) = slice_service(o) {
                slices.entry(svc).or_default().insert(o.name().to_string());
            }
        }
        self.slices = slices;
    }

    pub fn remove(&mut self, key: &ObjectKey) -> Option<Arc<StoredObject>> {
        let old = self.objects.remove(key)?;
        self.index(&old, false);
        Some(old)
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&StoredObject> {
        self.objects.get(key).map(|o| &**o)
    }

    /// Objects of one kind, in key order.
    pub fn of_kind<'a>(
        &'a self,
        kind: &'static str,
    ) -> impl Iterator<Item = &'a StoredObject> + 'a {
        // Keys sort by kind first, so one kind is one contiguous range.
        let start = ObjectKey {
            kind,
            namespace: None,
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, o)| &**o)
    }

    pub fn iter(&self) -> impl Iterator<Item = &StoredObject> {
        self.objects.values().map(|o| &**o)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::object_from_value;

    fn svc(ns: &str, name: &str, port: i64) -> StoredObject {
        let v = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": {"ports": [{"port": port}]}});
        object_from_value(v).ok().flatten().expect("service")
    }

    #[test]
    fn replace_kind_is_a_relist() {
        let mut s =
            ObjectStore::from_objects([svc("a", "x", 80), svc("a", "y", 80), svc("b", "z", 80)]);
        assert!(!s.replace_kind(
            "Service",
            None,
            vec![svc("a", "x", 80), svc("a", "y", 80), svc("b", "z", 80)]
        ));
        assert!(s.replace_kind("Service", Some("a"), vec![svc("a", "x", 81)]));
        let names: Vec<String> = s.iter().map(|o| o.key().to_string()).collect();
        assert_eq!(names, ["Service a/x", "Service b/z"]);
        assert!(s.upsert(svc("a", "w", 80)));
        assert!(!s.upsert(svc("a", "w", 80)));
    }
}
