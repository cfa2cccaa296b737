//! BackendTrafficPolicy (`gatehouse.dev/v1alpha1`): each policy is checked, then indexed
//! by the Services it targets, so every cluster built for such a Service carries its
//! balancer and circuit-breaker limits. When two policies target one Service, the
//! oldest wins and the other gets a warning.

use crate::cluster::{Balancer, ClusterPolicy, OutlierPolicy};
use crate::ingress::oldest_first;
use gatehouse_model::{ConfigError, Object, ObjectStore, StoredObject};
use std::collections::HashMap;

/// Policies by the (namespace, Service) they govern.
#[derive(Debug, Default)]
pub struct Policies {
    by_service: HashMap<(String, String), ClusterPolicy>,
}

impl Policies {
    /// Checks every BackendTrafficPolicy in `store`; errors name the policy and field.
    pub fn load(
        store: &ObjectStore,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<String>,
    ) -> Self {
        let mut objects: Vec<&StoredObject> = store.of_kind("BackendTrafficPolicy").collect();
        objects.sort_by(|a, b| oldest_first(a, b));
        let mut by_service: HashMap<(String, String), ClusterPolicy> = HashMap::new();
        for o in objects {
            let Object::BackendTrafficPolicy(p) = &o.object else {
                continue;
            };
            let Some((policy, targets)) = check(o, &p.spec, errors) else {
                continue;
            };
            for svc in targets {
                let key = (o.namespace().to_string(), svc);
                match by_service.get(&key) {
                    Some(first) => warnings.push(format!(
                        "BackendTrafficPolicy {}/{}: Service {}/{} already has policy {}; ignored for it",
                        o.namespace(),
                        o.name(),
                        key.0,
                        key.1,
                        first.from.as_deref().unwrap_or("?")
                    )),
                    None => {
                        by_service.insert(key, policy.clone());
                    }
                }
            }
        }
        Policies { by_service }
    }

    /// The policy for Service `namespace/name` (the default when none targets it).
    pub fn for_service(&self, namespace: &str, name: &str) -> ClusterPolicy {
        self.by_service
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default()
    }
}

/// The policy a spec sets and the Services it targets; None (with errors) if invalid.
fn check(
    o: &StoredObject,
    spec: &gatehouse_model::policy::BackendTrafficPolicySpec,
    errors: &mut Vec<ConfigError>,
) -> Option<(ClusterPolicy, Vec<String>)> {
    let before = errors.len();
    if spec.target_refs.is_empty() {
        errors.push(o.error("spec.targetRefs", "at least one target is required"));
    }
    let mut targets = Vec::new();
    for (i, t) in spec.target_refs.iter().enumerate() {
        if !t.group.is_empty() || t.kind != "Service" {
            errors.push(o.error(
                &format!("spec.targetRefs[{i}].kind"),
                format!(
                    "unsupported target {}{}{}: must be a Service (group \"\")",
                    t.group,
                    if t.group.is_empty() { "" } else { "/" },
                    t.kind
                ),
            ));
            continue;
        }
        if t.name.is_empty() {
            errors.push(o.error(&format!("spec.targetRefs[{i}].name"), "name is required"));
            continue;
        }
        targets.push(t.name.clone());
    }
    let balancer = match spec.load_balancer.as_ref().map(|l| l.type_.as_str()) {
        None | Some("RoundRobin") => Balancer::RoundRobin,
        Some("Random") => Balancer::Random,
        Some("LeastRequest") => Balancer::LeastRequest,
        Some(other) => {
            errors.push(o.error(
                "spec.loadBalancer.type",
                format!(
                    "unknown load balancer {other:?}: must be RoundRobin, Random or LeastRequest"
                ),
            ));
            Balancer::RoundRobin
        }
    };
    let max_requests = spec.circuit_breaker.as_ref().and_then(|c| c.max_requests);
    if max_requests == Some(0) {
        errors.push(o.error(
            "spec.circuitBreaker.maxRequests",
            "must be at least 1 (leave it out for no limit)",
        ));
    }
    let outlier = spec.outlier_detection.as_ref().and_then(|od| {
        let consecutive_errors = od.consecutive_errors.unwrap_or(5);
        if consecutive_errors == 0 {
            errors.push(o.error(
                "spec.outlierDetection.consecutiveErrors",
                "must be at least 1",
            ));
        }
        let base = match od.base_ejection_time.as_deref() {
            None => Some(std::time::Duration::from_secs(30)),
            Some(d) => match crate::duration::parse_duration(d) {
                Ok(v) if !v.is_zero() => Some(v),
                Ok(_) => {
                    errors.push(o.error(
                        "spec.outlierDetection.baseEjectionTime",
                        "must be more than zero",
                    ));
                    None
                }
                Err(e) => {
                    errors.push(o.error("spec.outlierDetection.baseEjectionTime", e));
                    None
                }
            },
        };
        let max_ejection_percent = od.max_ejection_percent.unwrap_or(10);
        if max_ejection_percent > 100 {
            errors.push(o.error(
                "spec.outlierDetection.maxEjectionPercent",
                format!("{max_ejection_percent} is more than 100"),
            ));
        }
        Some(OutlierPolicy {
            consecutive_errors,
            base_ejection: base?,
            max_ejection_percent,
        })
    });
    if errors.len() > before {
        return None;
    }
    let policy = ClusterPolicy {
        balancer,
        max_requests,
        outlier,
        from: Some(format!("{}/{}", o.namespace(), o.name())),
    };
    Some((policy, targets))
}
