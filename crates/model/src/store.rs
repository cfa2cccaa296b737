//! `ObjectStore`: the typed objects every source feeds, keyed by kind, namespace and name,
//! with the indexes translation needs: EndpointSlices by Service, and route objects by
//! the hostnames they name. Persistent maps throughout: a copy shares structure with the
//! original, so copying the store to translate it off the watchers' lock is free, and a
//! change copies only the paths it touches.

use crate::object::{Object, ObjectKey, StoredObject};
use imbl::{HashMap as SharedMap, OrdMap, OrdSet};
use std::collections::BTreeMap;
use std::sync::Arc;

/// All objects currently known, from whichever source. Ordered, so that translation
/// sees objects in a stable order and produces the same Snapshot for the same input.
#[derive(Debug, Clone, Default)]
pub struct ObjectStore {
    objects: OrdMap<ObjectKey, Arc<StoredObject>>,
    /// EndpointSlice names by (namespace, Service), from the `kubernetes.io/service-name`
    /// label, so a Service's endpoints are found without scanning every slice.
    slices: SharedMap<(String, String), OrdSet<String>>,
    /// Route objects (Ingress, HTTPRoute, GRPCRoute) by each lower-case hostname they
    /// name ("" for an Ingress rule without host).
    route_hosts: SharedMap<String, OrdSet<ObjectKey>>,
    /// Ingresses by each lower-case host their TLS entries name.
    tls_hosts: SharedMap<String, OrdSet<ObjectKey>>,
    /// Gateway API routes without hostnames or with a wildcard one: they may land under
    /// any listener's hostname.
    open_routes: OrdSet<ObjectKey>,
    /// Route objects by each (namespace, Service) they send traffic to.
    backend_users: SharedMap<(String, String), OrdSet<ObjectKey>>,
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

/// The hostnames a route object names, in lower case: (route hosts, TLS hosts, whether
/// it is a Gateway API route without exact hostnames).
pub fn route_hostnames(o: &StoredObject) -> (Vec<String>, Vec<String>, bool) {
    let lower = |h: &String| h.to_ascii_lowercase();
    match &o.object {
        Object::Ingress(ing) => {
            let spec = ing.spec.as_ref();
            let rules = spec
                .and_then(|s| s.rules.as_ref())
                .into_iter()
                .flatten()
                .map(|r| r.host.as_ref().map(lower).unwrap_or_default())
                .collect();
            let tls = spec
                .and_then(|s| s.tls.as_ref())
                .into_iter()
                .flatten()
                .flat_map(|t| t.hosts.iter().flatten().map(lower))
                .collect();
            (rules, tls, false)
        }
        Object::HttpRoute(r) => gateway_route_hosts(&r.spec.hostnames),
        Object::GrpcRoute(r) => gateway_route_hosts(&r.spec.hostnames),
        _ => (Vec::new(), Vec::new(), false),
    }
}

/// The (namespace, Service) pairs a route object sends traffic to.
pub fn route_backends(o: &StoredObject) -> Vec<(String, String)> {
    let ns = o.namespace();
    let svc = |name: &str| (ns.to_string(), name.to_string());
    match &o.object {
        Object::Ingress(ing) => {
            let Some(spec) = &ing.spec else {
                return Vec::new();
            };
            let paths = spec
                .rules
                .iter()
                .flatten()
                .flat_map(|r| r.http.iter().flat_map(|h| h.paths.iter()))
                .map(|p| &p.backend);
            spec.default_backend
                .iter()
                .chain(paths)
                .filter_map(|b| b.service.as_ref().map(|s| svc(&s.name)))
                .collect()
        }
        Object::HttpRoute(r) => service_refs(ns, r.spec.rules.iter().flat_map(|r| &r.backend_refs)),
        Object::GrpcRoute(r) => service_refs(ns, r.spec.rules.iter().flat_map(|r| &r.backend_refs)),
        _ => Vec::new(),
    }
}

fn service_refs<'a>(
    ns: &str,
    refs: impl Iterator<Item = &'a crate::gateway::HttpBackendRef>,
) -> Vec<(String, String)> {
    refs.filter(|b| {
        b.kind.as_deref().unwrap_or("Service") == "Service"
            && b.group.as_deref().unwrap_or("").is_empty()
    })
    .map(|b| {
        (
            b.namespace.clone().unwrap_or_else(|| ns.to_string()),
            b.name.clone(),
        )
    })
    .collect()
}

fn gateway_route_hosts(hostnames: &[String]) -> (Vec<String>, Vec<String>, bool) {
    let open = hostnames.is_empty() || hostnames.iter().any(|h| h.contains('*'));
    let hosts = hostnames.iter().map(|h| h.to_ascii_lowercase()).collect();
    (hosts, Vec::new(), open)
}

fn set_add<K: std::hash::Hash + Eq + Clone, V: Ord + Clone>(
    map: &mut SharedMap<K, OrdSet<V>>,
    k: K,
    v: V,
) {
    map.entry(k).or_default().insert(v);
}

fn set_remove<K: std::hash::Hash + Eq + Clone, V: Ord + Clone>(
    map: &mut SharedMap<K, OrdSet<V>>,
    k: &K,
    v: &V,
) {
    if let Some(set) = map.get_mut(k) {
        set.remove(v);
        if set.is_empty() {
            map.remove(k);
        }
    }
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
        if let Some(old) = self.objects.insert(key.clone(), object.clone()) {
            self.index(&key, &old, false);
        }
        self.index(&key, &object, true);
    }

    /// Adds (or removes) an object's entries in the indexes.
    fn index(&mut self, key: &ObjectKey, o: &StoredObject, add: bool) {
        if let Some(svc) = slice_service(o) {
            let name = o.name().to_string();
            match add {
                true => set_add(&mut self.slices, svc, name),
                false => set_remove(&mut self.slices, &svc, &name),
            }
            return;
        }
        if !matches!(key.kind, "Ingress" | "HTTPRoute" | "GRPCRoute") {
            return;
        }
        let (hosts, tls, open) = route_hostnames(o);
        for h in hosts {
            match add {
                true => set_add(&mut self.route_hosts, h, key.clone()),
                false => set_remove(&mut self.route_hosts, &h, key),
            }
        }
        for h in tls {
            match add {
                true => set_add(&mut self.tls_hosts, h, key.clone()),
                false => set_remove(&mut self.tls_hosts, &h, key),
            }
        }
        if open {
            match add {
                true => self.open_routes.insert(key.clone()),
                false => self.open_routes.remove(key),
            };
        }
        for svc in route_backends(o) {
            match add {
                true => set_add(&mut self.backend_users, svc, key.clone()),
                false => set_remove(&mut self.backend_users, &svc, key),
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

    /// Route objects naming `host` (lower case) in a rule or as a hostname.
    pub fn routes_naming<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a StoredObject> + 'a {
        self.keyed(self.route_hosts.get(host))
    }

    /// Ingresses whose TLS entries name `host` (lower case, possibly a wildcard).
    pub fn tls_naming<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a StoredObject> + 'a {
        self.keyed(self.tls_hosts.get(host))
    }

    /// Route objects that send traffic to Service `namespace/name`.
    pub fn routes_using<'a>(
        &'a self,
        namespace: &str,
        name: &str,
    ) -> impl Iterator<Item = &'a StoredObject> + 'a {
        self.keyed(
            self.backend_users
                .get(&(namespace.to_string(), name.to_string())),
        )
    }

    /// Gateway API routes without exact hostnames.
    pub fn open_routes(&self) -> impl Iterator<Item = &StoredObject> {
        self.keyed(Some(&self.open_routes))
    }

    fn keyed<'a>(
        &'a self,
        keys: Option<&'a OrdSet<ObjectKey>>,
    ) -> impl Iterator<Item = &'a StoredObject> + 'a {
        keys.into_iter().flatten().filter_map(move |k| self.get(k))
    }

    /// The object under `key`, shared.
    pub fn get_shared(&self, key: &ObjectKey) -> Option<Arc<StoredObject>> {
        self.objects.get(key).cloned()
    }

    /// Replaces every object of `kind` (within `namespace`, when given) with `objects`,
    /// as a re-list does; returns true when the store changed.
    pub fn replace_kind(
        &mut self,
        kind: &'static str,
        namespace: Option<&str>,
        objects: Vec<StoredObject>,
    ) -> bool {
        let existing: Vec<ObjectKey> = self
            .of_kind(kind)
            .map(|o| o.key())
            .filter(|k| namespace.is_none_or(|ns| k.namespace.as_deref() == Some(ns)))
            .collect();
        let mut fresh: BTreeMap<ObjectKey, StoredObject> =
            objects.into_iter().map(|o| (o.key(), o)).collect();
        let mut changed = false;
        for k in existing {
            match fresh.remove(&k) {
                Some(new) => changed |= self.upsert(new),
                None => changed |= self.remove(&k).is_some(),
            }
        }
        for (_, o) in fresh {
            changed |= self.upsert(o);
        }
        changed
    }

    pub fn remove(&mut self, key: &ObjectKey) -> Option<Arc<StoredObject>> {
        let old = self.objects.remove(key)?;
        self.index(key, &old, false);
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

    /// Every object with its key, shared (an unchanged object keeps its `Arc`, so a
    /// reader can tell it from a changed one by identity).
    pub fn iter_shared(&self) -> impl Iterator<Item = (&ObjectKey, &Arc<StoredObject>)> {
        self.objects.iter()
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

    fn names<'a>(it: impl Iterator<Item = &'a StoredObject>) -> Vec<String> {
        it.map(|o| o.key().to_string()).collect()
    }

    #[test]
    fn indexes_follow_changes() {
        let obj = |v| object_from_value(v).ok().flatten().expect("object");
        let ing = |hosts: &[&str], tls: &[&str]| {
            let rules: Vec<_> = hosts.iter().map(|h| serde_json::json!({"host": h, "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "svc", "port": {"number": 80}}}}]}})).collect();
            obj(
                serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "i", "namespace": "a"},
                "spec": {"rules": rules, "tls": [{"hosts": tls, "secretName": "s"}]}}),
            )
        };
        let route = |hosts: &[&str]| {
            obj(
                serde_json::json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "r", "namespace": "a"}, "spec": {"hostnames": hosts}}),
            )
        };
        let slice = |svc: &str| {
            obj(
                serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "x-1", "namespace": "a", "labels": {SERVICE_NAME_LABEL: svc}},
                "addressType": "IPv4", "endpoints": []}),
            )
        };
        let mut s = ObjectStore::new();
        s.upsert(ing(&["One.example", "two.example"], &["*.example"]));
        s.upsert(route(&["two.example"]));
        s.upsert(slice("x"));
        assert_eq!(names(s.routes_naming("one.example")), ["Ingress a/i"]);
        assert_eq!(
            names(s.routes_naming("two.example")),
            ["HTTPRoute a/r", "Ingress a/i"]
        );
        assert_eq!(names(s.tls_naming("*.example")), ["Ingress a/i"]);
        assert_eq!(names(s.open_routes()), Vec::<String>::new());
        assert_eq!(names(s.slices_of("a", "x")), ["EndpointSlice a/x-1"]);
        assert_eq!(names(s.routes_using("a", "svc")), ["Ingress a/i"]);
        // A copy keeps what it saw while the original changes.
        let copy = s.clone();
        s.upsert(ing(&["three.example"], &[]));
        s.upsert(route(&[]));
        s.upsert(slice("y"));
        assert_eq!(names(s.routes_naming("one.example")), Vec::<String>::new());
        assert_eq!(names(s.routes_naming("three.example")), ["Ingress a/i"]);
        assert_eq!(names(s.routes_using("a", "svc")), ["Ingress a/i"]);
        assert_eq!(names(s.tls_naming("*.example")), Vec::<String>::new());
        assert_eq!(names(s.open_routes()), ["HTTPRoute a/r"]);
        assert_eq!(names(s.slices_of("a", "x")), Vec::<String>::new());
        assert_eq!(names(s.slices_of("a", "y")), ["EndpointSlice a/x-1"]);
        assert_eq!(names(copy.routes_naming("one.example")), ["Ingress a/i"]);
        s.remove(&route(&[]).key());
        assert_eq!(names(s.open_routes()), Vec::<String>::new());
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
