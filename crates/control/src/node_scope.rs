//! Per-node scoping of what a node proxy is sent. A node proxy enforces policy only for
//! the workloads on its own node, so of the namespaced policies (AuthorizationPolicy,
//! PeerAuthentication) it is sent those of the mesh's root namespace and of the
//! namespaces that have a pod on its node, not every policy of the cluster. The
//! [`NodeIndex`] keeps which namespaces each node runs pods of, and the policies of
//! each namespace, caught up from the table's changes; a stream asks it for its
//! node's policies on each response, and when a pod of a new namespace lands on the
//! node, that namespace's policies follow (and leave with its last pod).

use crate::table::{kind_of, Table};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The kinds sent per node rather than whole.
pub const SCOPED_KINDS: &[&str] = &["AuthorizationPolicy", "PeerAuthentication"];

/// Whether resources of `kind` are scoped per node.
pub fn is_scoped(kind: &str) -> bool {
    SCOPED_KINDS.contains(&kind)
}

/// The namespace of a namespaced resource name (`Kind/namespace/name`).
fn namespace_of(name: &str) -> Option<&str> {
    let mut parts = name.splitn(3, '/');
    let _kind = parts.next()?;
    let ns = parts.next()?;
    parts.next().map(|_| ns)
}

/// The fields of a Pod that place it.
#[derive(serde::Deserialize)]
struct Placed {
    #[serde(default)]
    spec: PlacedSpec,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PlacedSpec {
    #[serde(default)]
    node_name: Option<String>,
}

/// Which namespaces each node runs pods of, and each namespace's scoped policies.
#[derive(Debug, Default)]
pub struct NodeIndex {
    /// The table generation this index is caught up to.
    generation: u64,
    /// Each pod's (node, namespace), by resource name.
    pods: HashMap<Arc<str>, (Arc<str>, Arc<str>)>,
    /// Per node, how many pods of each namespace it runs.
    by_node: HashMap<Arc<str>, BTreeMap<Arc<str>, usize>>,
    /// Per namespace, its scoped policies' resource names.
    policies: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
}

impl NodeIndex {
    /// Takes in the table's changes since the index was last caught up.
    pub fn catch_up(&mut self, table: &Table) {
        if table.generation() == self.generation {
            return;
        }
        let relevant = |k: &str| k == "Pod" || is_scoped(k);
        let delta = table.since(self.generation, relevant);
        if delta.full_state {
            *self = NodeIndex::default();
        }
        for (name, entry) in &delta.upserts {
            if entry.kind == "Pod" {
                self.remove_pod(name);
                let node = entry
                    .body
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<Placed>(b).ok())
                    .and_then(|p| p.spec.node_name);
                let ns = namespace_of(name);
                if let (Some(node), Some(ns)) = (node, ns) {
                    let (node, ns): (Arc<str>, Arc<str>) = (node.into(), ns.into());
                    *self
                        .by_node
                        .entry(node.clone())
                        .or_default()
                        .entry(ns.clone())
                        .or_default() += 1;
                    self.pods.insert(name.clone(), (node, ns));
                }
            } else if let Some(ns) = namespace_of(name) {
                self.policies
                    .entry(ns.into())
                    .or_default()
                    .insert(name.clone());
            }
        }
        for name in &delta.removals {
            if kind_of(name) == "Pod" {
                self.remove_pod(name);
            } else if let Some(set) = namespace_of(name).and_then(|ns| self.policies.get_mut(ns)) {
                set.remove(name);
            }
        }
        self.policies.retain(|_, s| !s.is_empty());
        self.generation = table.generation();
    }

    fn remove_pod(&mut self, name: &str) {
        let Some((node, ns)) = self.pods.remove(name) else {
            return;
        };
        if let Some(counts) = self.by_node.get_mut(&node) {
            if let Some(n) = counts.get_mut(&ns) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&ns);
                }
            }
            if counts.is_empty() {
                self.by_node.remove(&node);
            }
        }
    }

    /// The namespaces whose policies `node`'s proxy is sent: the root namespace and
    /// those it runs pods of.
    pub fn namespaces(&self, node: &str, root: &str) -> BTreeSet<Arc<str>> {
        let mut out: BTreeSet<Arc<str>> = self
            .by_node
            .get(node)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        out.insert(root.into());
        out
    }

    /// The scoped policies `node`'s proxy is sent, with their versions, as the table
    /// has them now.
    pub fn desired(&self, table: &Table, node: &str, root: &str) -> BTreeMap<Arc<str>, u64> {
        let mut out = BTreeMap::new();
        for ns in self.namespaces(node, root) {
            for name in self.policies.get(&ns).into_iter().flatten() {
                if let Some(e) = table.get(name) {
                    out.insert(name.clone(), e.version);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_model::ObjectStore;

    fn store(yaml: &str) -> ObjectStore {
        let parsed = gatehouse_model::manifest::parse_manifest("t.yaml", yaml).expect("manifest");
        ObjectStore::from_objects(parsed.objects)
    }

    fn pod(ns: &str, name: &str, node: &str) -> String {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{namespace: {ns}, name: {name}}}\nspec: {{nodeName: {node}}}\n---\n")
    }

    fn policy(ns: &str, name: &str) -> String {
        format!("apiVersion: gatehouse.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{namespace: {ns}, name: {name}}}\nspec: {{}}\n---\n")
    }

    fn names(d: &BTreeMap<Arc<str>, u64>) -> Vec<&str> {
        d.keys().map(|k| &**k).collect()
    }

    #[test]
    fn a_node_gets_the_policies_of_its_pods_namespaces_and_the_root() {
        let world = |pods: &[String]| {
            let policies = [
                policy("shop", "allow-front"),
                policy("bank", "allow-tellers"),
                policy("gatehouse-system", "deny-all"),
            ];
            store(&[pods, &policies].concat().concat())
        };
        let mut table = Table::new();
        table.sync(
            &world(&[pod("shop", "web-1", "n1"), pod("bank", "ledger-1", "n2")]),
            |_| true,
        );
        let mut index = NodeIndex::default();
        index.catch_up(&table);
        assert_eq!(
            names(&index.desired(&table, "n1", "gatehouse-system")),
            [
                "AuthorizationPolicy/gatehouse-system/deny-all",
                "AuthorizationPolicy/shop/allow-front"
            ]
        );
        assert_eq!(
            names(&index.desired(&table, "n3", "gatehouse-system")),
            ["AuthorizationPolicy/gatehouse-system/deny-all"]
        );

        // A bank pod lands on n1: bank's policies follow; when shop's last pod leaves
        // n1, shop's go.
        table.sync(
            &world(&[pod("bank", "ledger-1", "n2"), pod("bank", "ledger-2", "n1")]),
            |_| true,
        );
        index.catch_up(&table);
        assert_eq!(
            names(&index.desired(&table, "n1", "gatehouse-system")),
            [
                "AuthorizationPolicy/bank/allow-tellers",
                "AuthorizationPolicy/gatehouse-system/deny-all"
            ]
        );
        assert!(!index.by_node.get("n1").expect("n1").contains_key("shop"));
    }
}
