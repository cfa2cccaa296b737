//! Several clusters' objects as one set, for a controller that serves proxies across
//! clusters. A Service that several clusters define (the same namespace and name) is
//! one service, whose endpoints are every cluster's: each cluster's EndpointSlices are
//! kept, renamed `NAME.CLUSTER` and labelled `gatehouse.dev/cluster`, and still name
//! the Service they belong to, so a proxy balances across all of them. Any other
//! object that two clusters define differently is taken from the first cluster listed,
//! and the difference is reported.

use gatehouse_model::{Object, ObjectStore, StoredObject};

pub use gatehouse_model::CLUSTER_LABEL;

/// One cluster's objects.
pub struct ClusterObjects<'a> {
    pub name: &'a str,
    pub store: &'a ObjectStore,
}

/// What merging found.
#[derive(Debug, Default)]
pub struct Merged {
    pub store: ObjectStore,
    /// Per cluster, how many of its objects are served.
    pub served: Vec<(String, usize)>,
    /// Objects two clusters define differently (the first cluster's is served).
    pub conflicts: Vec<String>,
}

/// Merges `clusters`, in order (the first wins a conflict).
pub fn merge(clusters: &[ClusterObjects<'_>]) -> Merged {
    let mut out = Merged::default();
    let mut from: std::collections::HashMap<gatehouse_model::ObjectKey, &str> =
        std::collections::HashMap::new();
    for c in clusters {
        let mut served = 0;
        for o in c.store.iter() {
            let object = match &o.object {
                Object::EndpointSlice(es) => {
                    let mut es = es.clone();
                    let name = es.metadata.name.clone().unwrap_or_default();
                    es.metadata.name = Some(format!("{name}.{}", c.name));
                    es.metadata
                        .labels
                        .get_or_insert_with(Default::default)
                        .insert(CLUSTER_LABEL.to_string(), c.name.to_string());
                    Object::EndpointSlice(es)
                }
                other => other.clone(),
            };
            let stored = StoredObject {
                object,
                origin: o.origin.clone(),
            };
            let key = stored.key();
            match out.store.get(&key) {
                Some(first) if first.object == stored.object => served += 1,
                // Two clusters' pods of one name are two workloads (a StatefulSet's
                // `db-0` in each, say): the later one is kept as `NAME.CLUSTER`.
                Some(_) if matches!(stored.object, Object::Pod(_)) => {
                    let mut renamed = stored;
                    if let Object::Pod(p) = &mut renamed.object {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        p.metadata.name = Some(format!("{name}.{}", c.name));
                    }
                    out.store.upsert(renamed);
                    served += 1;
                }
                Some(_) => out.conflicts.push(format!(
                    "{key}: cluster {} defines it differently from cluster {}; {}'s is served",
                    c.name,
                    from.get(&key).copied().unwrap_or("?"),
                    from.get(&key).copied().unwrap_or("?"),
                )),
                None => {
                    from.insert(key, c.name);
                    out.store.upsert(stored);
                    served += 1;
                }
            }
        }
        out.served.push((c.name.to_string(), served));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_model::manifest::parse_manifest;

    fn store(yaml: &str) -> ObjectStore {
        ObjectStore::from_objects(parse_manifest("t.yaml", yaml).expect("manifest").objects)
    }

    fn cluster(ip: &str, route_host: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{ports: [{{port: 80}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nports: [{{port: 8080}}]\nendpoints: [{{addresses: [\"{ip}\"]}}]\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web, namespace: shop}}\n\
             spec: {{rules: [{{host: {route_host}, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}}}]}}\n"
        )
    }

    fn east_then_west(east: &ObjectStore, west: &ObjectStore) -> Merged {
        merge(&[
            ClusterObjects {
                name: "east",
                store: east,
            },
            ClusterObjects {
                name: "west",
                store: west,
            },
        ])
    }

    #[test]
    fn a_service_in_two_clusters_has_both_clusters_endpoints() {
        let (east, west) = (
            store(&cluster("10.1.0.1", "web.example")),
            store(&cluster("10.2.0.1", "web.example")),
        );
        let m = east_then_west(&east, &west);
        assert!(m.conflicts.is_empty(), "{:?}", m.conflicts);
        assert_eq!(m.store.of_kind("Service").count(), 1);
        let slices: Vec<String> = m
            .store
            .of_kind("EndpointSlice")
            .map(|o| o.object.metadata().name.clone().unwrap_or_default())
            .collect();
        assert_eq!(slices, ["web-1.east", "web-1.west"]);
        for s in m.store.of_kind("EndpointSlice") {
            let labels = s.object.metadata().labels.clone().unwrap_or_default();
            assert_eq!(labels["kubernetes.io/service-name"], "web");
            assert!(labels.contains_key(CLUSTER_LABEL));
        }
        assert_eq!(m.served, [("east".to_string(), 3), ("west".to_string(), 3)]);
    }

    #[test]
    fn a_conflict_is_reported_and_the_first_cluster_wins() {
        let (east, west) = (
            store(&cluster("10.1.0.1", "a.example")),
            store(&cluster("10.2.0.1", "b.example")),
        );
        let m = east_then_west(&east, &west);
        assert_eq!(m.conflicts.len(), 1, "{:?}", m.conflicts);
        assert!(
            m.conflicts[0].contains("Ingress shop/web")
                && m.conflicts[0].contains("east's is served")
        );
        let ingress = m.store.of_kind("Ingress").next().expect("ingress");
        assert!(format!("{:?}", ingress.object).contains("a.example"));
    }

    #[test]
    fn pods_of_one_name_in_two_clusters_are_both_kept() {
        let pod = |ip: &str| {
            store(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: db-0, namespace: shop}}\nspec: {{nodeName: n1}}\nstatus: {{podIP: {ip}}}\n"
            ))
        };
        let m = east_then_west(&pod("10.1.0.9"), &pod("10.2.0.9"));
        assert!(m.conflicts.is_empty(), "{:?}", m.conflicts);
        let names: Vec<String> = m
            .store
            .of_kind("Pod")
            .map(|p| p.name().to_string())
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"db-0".to_string()) && names.contains(&"db-0.west".to_string()));
    }
}
