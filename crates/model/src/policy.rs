//! Gatehouse's own policy kinds (`gatehouse.dev/v1alpha1`). The Rust types are the
//! source of truth: `gatehouse crds` prints CustomResourceDefinitions generated from
//! them, with OpenAPI schemas and printer columns.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of Gatehouse's own kinds.
pub const GROUP: &str = "gatehouse.dev";

/// How traffic to a backend is spread and protected. Attached by `targetRefs` to the
/// Services it governs; every route that sends traffic to such a Service follows it.
#[derive(CustomResource, Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "BackendTrafficPolicy",
    plural = "backendtrafficpolicies",
    shortname = "btp",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRefs[*].name"}"#,
    printcolumn = r#"{"name":"Balancer","type":"string","jsonPath":".spec.loadBalancer.type"}"#,
    printcolumn = r#"{"name":"Max Requests","type":"integer","jsonPath":".spec.circuitBreaker.maxRequests"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackendTrafficPolicySpec {
    /// The Services this policy governs (in the policy's namespace).
    pub target_refs: Vec<PolicyTargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

/// Passive health checking: an endpoint that fails several requests in a row (a 5xx
/// answer, a refused or reset connection, a timeout) is taken out of rotation for a
/// while, longer each time it happens again.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Failures in a row that eject an endpoint (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<u32>,
    /// How long a first ejection lasts (default 30s); the n-th in a row lasts n times it,
    /// up to 300 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    /// Most endpoints ejected at once, in percent of the Service's endpoints (default 10;
    /// one endpoint can always be ejected). If every endpoint is ejected, all are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

/// A local reference to the object a policy applies to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// API group of the target: "" for a Service.
    #[serde(default)]
    pub group: String,
    /// Kind of the target: `Service`.
    pub kind: String,
    pub name: String,
}

/// How an endpoint is chosen for each request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    /// `RoundRobin` (the default), `Random`, or `LeastRequest` (the less loaded of two
    /// endpoints picked at random, by requests in flight).
    #[serde(rename = "type")]
    pub type_: String,
}

/// Limits that protect a backend: requests beyond them get 503 at once, with the
/// reason in the `x-gatehouse-reason` header, instead of piling onto the backend.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Most requests in flight to the backend (all its endpoints) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
}

/// The CRDs of every Gatehouse kind, as one multi-document YAML text.
pub fn crds_yaml() -> Result<String, String> {
    use kube::CustomResourceExt;
    let crds = vec![BackendTrafficPolicy::crd()];
    let mut out = String::new();
    for crd in &crds {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(crd).map_err(|e| e.to_string())?);
    }
    Ok(out)
}
