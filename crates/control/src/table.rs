//! The controller's table of resources: every object it serves, by name, with a content
//! version and the generation it last changed at. Each change (an addition, a new
//! version, a removal) takes the next generation, and an index by generation answers
//! "what changed since generation G" in time proportional to the answer, so a proxy
//! that acknowledged G gets exactly the changes after it, and one endpoint change sends
//! one small message to each proxy, whatever the size of the whole set. Removals stay
//! as tombstones for a while; a proxy further behind gets the whole set again.

use bytes::Bytes;
use gatehouse_model::{ObjectKey, ObjectStore, StoredObject};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::sync::Arc;

/// A resource's name: `Kind/namespace/name`, or `Kind/name` when cluster-scoped.
pub fn resource_name(key: &ObjectKey) -> String {
    match &key.namespace {
        Some(ns) => format!("{}/{ns}/{}", key.kind, key.name),
        None => format!("{}/{}", key.kind, key.name),
    }
}

/// The kind a resource name starts with.
pub fn kind_of(name: &str) -> &str {
    name.split('/').next().unwrap_or("")
}

/// One resource as served.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: &'static str,
    /// Content hash of `body` (0 for a tombstone).
    pub version: u64,
    /// The object's JSON (None: removed, a tombstone).
    pub body: Option<Bytes>,
    /// The generation of its last change.
    pub changed_at: u64,
    /// The stored object it was made from, to tell an unchanged object by identity.
    source: Option<Arc<StoredObject>>,
    /// The sync pass that last saw it.
    seen: u64,
}

/// The version string of a content hash.
pub fn version_string(v: u64) -> String {
    format!("{v:016x}")
}

/// Content hashes: SipHash with fixed keys, so every controller replica (of one build)
/// gives the same object the same version.
fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(b);
    h.finish()
}

/// A resource's part of a set version.
pub fn member_hash(name: &str, version: u64) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(name.as_bytes());
    h.write_u64(version);
    h.finish()
}

/// The table; see the module documentation.
#[derive(Debug, Default)]
pub struct Table {
    generation: u64,
    entries: HashMap<Arc<str>, Entry>,
    /// The generation of each entry's last change -> its name.
    by_generation: BTreeMap<u64, Arc<str>>,
    /// Tombstones at or below this generation were dropped: a proxy that acknowledged
    /// less than it is sent the whole set.
    floor: u64,
    tombstones: usize,
    passes: u64,
    /// Per kind, the sum of each live resource's hash of name and version: the set
    /// version of any choice of kinds, kept as resources change.
    sums: BTreeMap<&'static str, u64>,
}

/// At most this many tombstones are kept (the oldest go first).
const MAX_TOMBSTONES: usize = 100_000;

/// What a proxy at some generation needs to catch up.
#[derive(Debug, Default)]
pub struct Delta {
    /// Changed or added: (name, entry).
    pub upserts: Vec<(Arc<str>, Entry)>,
    pub removals: Vec<Arc<str>>,
    /// The proxy was too far behind: `upserts` is the whole set.
    pub full_state: bool,
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    /// The generation of the latest change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Live resources (tombstones aside).
    pub fn len(&self) -> usize {
        self.entries.len() - self.tombstones
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name).filter(|e| e.body.is_some())
    }

    /// Live resources, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Entry)> {
        self.entries.iter().filter(|(_, e)| e.body.is_some())
    }

    /// Moves `kind`'s set sum from `name` at version `old` to version `new` (None: not
    /// live).
    fn account(&mut self, kind: &'static str, name: &str, old: Option<u64>, new: Option<u64>) {
        let sum = self.sums.entry(kind).or_default();
        if let Some(v) = old {
            *sum = sum.wrapping_sub(member_hash(name, v));
        }
        if let Some(v) = new {
            *sum = sum.wrapping_add(member_hash(name, v));
        }
    }

    fn bump(&mut self, name: &Arc<str>, old_at: Option<u64>) -> u64 {
        if let Some(at) = old_at {
            self.by_generation.remove(&at);
        }
        self.generation += 1;
        self.by_generation.insert(self.generation, name.clone());
        self.generation
    }

    /// Sets one resource from a stored object (None: removes it). Returns whether it
    /// changed.
    pub fn set(&mut self, key: &ObjectKey, object: Option<Arc<StoredObject>>) -> bool {
        let name: Arc<str> = resource_name(key).into();
        self.set_named(name, key.kind, object)
    }

    /// Sets `name` to `object` (None: removes it), marking it seen by this pass.
    /// Returns whether it changed.
    fn set_named(
        &mut self,
        name: Arc<str>,
        kind: &'static str,
        object: Option<Arc<StoredObject>>,
    ) -> bool {
        let passes = self.passes;
        // What is there now: its live version (None for a tombstone) and when it changed.
        let old = self
            .entries
            .get(&name)
            .map(|e| (e.body.is_some().then_some(e.version), e.changed_at));
        let was = old.and_then(|(v, _)| v);
        let new = match object {
            None if was.is_none() => return false,
            None => None,
            Some(object) => {
                if let Some(e) = self.entries.get_mut(&name) {
                    if e.source.as_ref().is_some_and(|s| Arc::ptr_eq(s, &object)) {
                        e.seen = passes;
                        return false;
                    }
                }
                let body = match object
                    .object
                    .to_value()
                    .and_then(|v| serde_json::to_vec(&v))
                {
                    Ok(b) => Bytes::from(b),
                    Err(e) => {
                        tracing::error!(resource = %name, error = %e, "cannot serialize; not served");
                        return false;
                    }
                };
                let version = hash_bytes(&body);
                if was == Some(version) {
                    if let Some(e) = self.entries.get_mut(&name) {
                        e.source = Some(object);
                        e.seen = passes;
                    }
                    return false;
                }
                Some((version, body, object))
            }
        };
        self.account(kind, &name, was, new.as_ref().map(|(v, _, _)| *v));
        // A tombstone before, a tombstone after.
        let (tomb_before, tomb_after) = (old.is_some() && was.is_none(), new.is_none());
        if tomb_after && !tomb_before {
            self.tombstones += 1;
        } else if tomb_before && !tomb_after {
            self.tombstones -= 1;
        }
        // The name as the table already holds it, so one string serves both indexes.
        let name = match self.entries.get_key_value(&name) {
            Some((k, _)) => k.clone(),
            None => name,
        };
        let changed_at = self.bump(&name, old.map(|(_, at)| at));
        let (version, body, source) = match new {
            Some((v, b, o)) => (v, Some(b), Some(o)),
            None => (0, None, None),
        };
        self.entries.insert(
            name,
            Entry {
                kind,
                version,
                body,
                changed_at,
                source,
                seen: passes,
            },
        );
        if tomb_after {
            self.prune();
        }
        true
    }

    /// Makes the table hold exactly the objects of `store` (of the kinds `serve` keeps):
    /// objects unchanged since the last pass (the same stored object) cost a lookup,
    /// changed ones are serialized again. Returns how many resources changed.
    pub fn sync(&mut self, store: &ObjectStore, serve: impl Fn(&str) -> bool) -> usize {
        self.passes += 1;
        let pass = self.passes;
        let mut changed = 0;
        for (key, object) in store.iter_shared() {
            if serve(key.kind)
                && self.set_named(resource_name(key).into(), key.kind, Some(object.clone()))
            {
                changed += 1;
            }
        }
        let gone: Vec<(Arc<str>, &'static str)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.body.is_some() && e.seen != pass)
            .map(|(n, e)| (n.clone(), e.kind))
            .collect();
        for (name, kind) in gone {
            if self.set_named(name, kind, None) {
                changed += 1;
            }
        }
        changed
    }

    /// Drops the oldest tombstones beyond the limit.
    fn prune(&mut self) {
        while self.tombstones > MAX_TOMBSTONES {
            let oldest = self
                .by_generation
                .iter()
                .find(|(_, n)| self.entries.get(*n).is_some_and(|e| e.body.is_none()))
                .map(|(g, n)| (*g, n.clone()));
            let Some((g, name)) = oldest else { break };
            self.by_generation.remove(&g);
            self.entries.remove(&name);
            self.tombstones -= 1;
            self.floor = self.floor.max(g);
        }
    }

    /// What a proxy that holds generation `since` (of the resources `wants` picks by
    /// kind) needs to reach the current generation.
    pub fn since(&self, since: u64, wants: impl Fn(&str) -> bool) -> Delta {
        if since < self.floor {
            return self.full(wants);
        }
        let mut d = Delta::default();
        for (_, name) in self.by_generation.range(since + 1..) {
            let Some(e) = self.entries.get(name) else {
                continue;
            };
            if !wants(e.kind) {
                continue;
            }
            match e.body {
                Some(_) => d.upserts.push((name.clone(), e.clone())),
                None => d.removals.push(name.clone()),
            }
        }
        d
    }

    /// The whole set `wants` picks.
    pub fn full(&self, wants: impl Fn(&str) -> bool) -> Delta {
        Delta {
            upserts: self
                .iter()
                .filter(|(_, e)| wants(e.kind))
                .map(|(n, e)| (n.clone(), e.clone()))
                .collect(),
            removals: Vec::new(),
            full_state: true,
        }
    }

    /// What a proxy holding `held` (name -> version string, from an earlier stream)
    /// needs to hold what `wants` picks now.
    pub fn against(&self, held: &HashMap<String, String>, wants: impl Fn(&str) -> bool) -> Delta {
        let mut d = Delta::default();
        for (name, e) in self.iter() {
            if !wants(e.kind) {
                continue;
            }
            if held.get(&**name).map(String::as_str) != Some(&version_string(e.version)) {
                d.upserts.push((name.clone(), e.clone()));
            }
        }
        for name in held.keys() {
            if self.get(name).is_none_or(|e| !wants(e.kind)) {
                d.removals.push(name.as_str().into());
            }
        }
        d
    }

    /// The version of the whole set `wants` picks: a hash of names and versions that
    /// does not depend on order, so every replica serving the same objects says the same.
    pub fn set_version(&self, wants: impl Fn(&str) -> bool) -> String {
        version_string(self.set_sum(wants))
    }

    /// The sum a set version is made of (add [`member_hash`]es to extend the set).
    pub fn set_sum(&self, wants: impl Fn(&str) -> bool) -> u64 {
        self.sums
            .iter()
            .filter(|(k, _)| wants(k))
            .fold(0u64, |a, (_, s)| a.wrapping_add(*s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_model::manifest::parse_manifest;

    fn store(yaml: &str) -> ObjectStore {
        let parsed = parse_manifest("t.yaml", yaml).expect("manifest");
        ObjectStore::from_objects(parsed.objects)
    }

    fn svc(name: &str, port: u16) -> String {
        format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{ports: [{{port: {port}}}]}}\n")
    }

    const ALL: fn(&str) -> bool = |_| true;

    #[test]
    fn changes_since_a_generation_are_exactly_what_changed() {
        let mut t = Table::new();
        assert_eq!(t.sync(&store(&(svc("a", 80) + &svc("b", 80))), ALL), 2);
        let g = t.generation();
        // The same objects parsed again: nothing changes.
        assert_eq!(t.sync(&store(&(svc("a", 80) + &svc("b", 80))), ALL), 0);
        assert_eq!(t.generation(), g);
        // b changes, c comes, a goes.
        assert_eq!(t.sync(&store(&(svc("b", 81) + &svc("c", 80))), ALL), 3);
        let d = t.since(g, ALL);
        let mut up: Vec<&str> = d.upserts.iter().map(|(n, _)| &**n).collect();
        up.sort();
        assert_eq!(up, ["Service/shop/b", "Service/shop/c"]);
        assert_eq!(
            d.removals.iter().map(|n| &**n).collect::<Vec<_>>(),
            ["Service/shop/a"]
        );
        assert!(!d.full_state);
        assert!(t.since(t.generation(), ALL).upserts.is_empty());
        // A proxy wanting no Services sees nothing.
        assert!(t.since(g, |k| k != "Service").upserts.is_empty());
        // Back again: a is new again, no longer a tombstone.
        t.sync(&store(&(svc("a", 80) + &svc("b", 81) + &svc("c", 80))), ALL);
        assert_eq!(t.len(), 3);
        assert!(t.get("Service/shop/a").is_some());
    }

    #[test]
    fn a_resuming_proxy_gets_only_the_difference() {
        let mut t = Table::new();
        t.sync(&store(&(svc("a", 80) + &svc("b", 80))), ALL);
        let held: HashMap<String, String> = t
            .iter()
            .map(|(n, e)| (n.to_string(), version_string(e.version)))
            .collect();
        assert!(t.against(&held, ALL).upserts.is_empty());
        let mut stale = held.clone();
        stale.insert("Service/shop/a".into(), "0".into());
        stale.insert("Service/shop/gone".into(), "1".into());
        let d = t.against(&stale, ALL);
        assert_eq!(d.upserts.len(), 1);
        assert_eq!(
            d.removals.iter().map(|n| &**n).collect::<Vec<_>>(),
            ["Service/shop/gone"]
        );
        let full = t.full(ALL);
        assert!(full.full_state);
        assert_eq!(full.upserts.len(), 2);
    }

    #[test]
    fn the_set_version_depends_on_content_not_order_or_history() {
        let mut one = Table::new();
        one.sync(&store(&(svc("a", 80) + &svc("b", 80))), ALL);
        let mut two = Table::new();
        two.sync(&store(&svc("b", 80)), ALL);
        two.sync(&store(&(svc("b", 99) + &svc("x", 1))), ALL);
        two.sync(&store(&(svc("b", 80) + &svc("a", 80))), ALL);
        assert_eq!(one.set_version(ALL), two.set_version(ALL));
        two.sync(&store(&(svc("b", 81) + &svc("a", 80))), ALL);
        assert_ne!(one.set_version(ALL), two.set_version(ALL));
        assert_eq!(one.set_version(|_| false), version_string(0));
    }
}
