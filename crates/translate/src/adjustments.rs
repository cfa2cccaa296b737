//! `TrafficAdjustment` objects (what the adaptive traffic controls made), compiled:
//! endpoints held out of their Service's rotation (`EjectEndpoint`) and route backends'
//! weights (`SetWeight`), indexed for the cluster and route builders; errors name the
//! object and field. Their `expiresAt` is kept by the proxy that made them, which
//! deletes them when they end: one written by hand lasts until it is deleted.

use gatehouse_model::policy::TrafficAdjustment;
use gatehouse_model::{ConfigError, Object, ObjectStore};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

/// The adjustments in force.
#[derive(Debug, Default)]
pub struct Adjustments {
    /// (namespace, Service) → endpoints held out.
    held_out: HashMap<(String, String), BTreeSet<SocketAddr>>,
    /// (namespace, HTTPRoute, Service) → the backend's weight.
    weights: HashMap<(String, String, String), u32>,
}

impl Adjustments {
    pub fn load(store: &ObjectStore, errors: &mut Vec<ConfigError>) -> Self {
        let mut a = Adjustments::default();
        for o in store.of_kind("TrafficAdjustment") {
            let Object::TrafficAdjustment(TrafficAdjustment { spec, .. }) = &o.object else {
                continue;
            };
            let ns = o.namespace().to_string();
            match spec.action.as_str() {
                "EjectEndpoint" => {
                    let Some(endpoint) = &spec.endpoint else {
                        errors.push(o.error(
                            "spec.endpoint",
                            "EjectEndpoint needs the endpoint (IP:port)",
                        ));
                        continue;
                    };
                    match endpoint.parse::<SocketAddr>() {
                        Ok(addr) => {
                            a.held_out
                                .entry((ns, spec.service.clone()))
                                .or_default()
                                .insert(addr);
                        }
                        Err(_) => errors.push(o.error(
                            "spec.endpoint",
                            format!("{endpoint:?} is not an IP:port endpoint"),
                        )),
                    }
                }
                "SetWeight" => match (&spec.route, spec.weight) {
                    (Some(route), Some(weight)) => {
                        a.weights
                            .insert((ns, route.clone(), spec.service.clone()), weight);
                    }
                    (None, _) => {
                        errors.push(o.error("spec.route", "SetWeight needs the HTTPRoute"))
                    }
                    (_, None) => errors.push(o.error("spec.weight", "SetWeight needs the weight")),
                },
                other => errors.push(o.error(
                    "spec.action",
                    format!("{other:?} is not EjectEndpoint or SetWeight"),
                )),
            }
        }
        a
    }

    /// The endpoints of Service `namespace/service` held out.
    pub fn held_out(&self, namespace: &str, service: &str) -> BTreeSet<SocketAddr> {
        if self.held_out.is_empty() {
            return BTreeSet::new();
        }
        self.held_out
            .get(&(namespace.to_string(), service.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// The weight set for backend `service` of HTTPRoute `namespace/route`, if any.
    pub fn weight(&self, namespace: &str, route: &str, service: &str) -> Option<u32> {
        if self.weights.is_empty() {
            return None;
        }
        self.weights
            .get(&(
                namespace.to_string(),
                route.to_string(),
                service.to_string(),
            ))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_model::manifest::parse_manifest;

    #[test]
    fn adjustments_are_indexed_and_bad_ones_named() {
        let yaml = r#"
apiVersion: gatehouse.dev/v1alpha1
kind: TrafficAdjustment
metadata: {name: slow, namespace: shop}
spec: {action: EjectEndpoint, service: web, endpoint: "10.0.0.7:8080"}
---
apiVersion: gatehouse.dev/v1alpha1
kind: TrafficAdjustment
metadata: {name: rollback, namespace: shop}
spec: {action: SetWeight, service: web-canary, route: web, weight: 0}
---
apiVersion: gatehouse.dev/v1alpha1
kind: TrafficAdjustment
metadata: {name: bad, namespace: shop}
spec: {action: EjectEndpoint, service: web, endpoint: "nowhere"}
"#;
        let store =
            ObjectStore::from_objects(parse_manifest("a.yaml", yaml).expect("parse").objects);
        let mut errors = Vec::new();
        let a = Adjustments::load(&store, &mut errors);
        assert_eq!(
            a.held_out("shop", "web").into_iter().collect::<Vec<_>>(),
            vec!["10.0.0.7:8080".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(a.weight("shop", "web", "web-canary"), Some(0));
        assert_eq!(a.weight("shop", "web", "web"), None);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec.endpoint");
        assert_eq!(errors[0].name, "bad");
    }
}
