//! Gatehouse's own policy kinds (`gatehouse.dev/v1alpha1`). The Rust types are the
//! source of truth: `gatehouse crds` prints CustomResourceDefinitions generated from
//! them, with OpenAPI schemas and printer columns.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of Gatehouse's own kinds.
pub const GROUP: &str = "gatehouse.dev";

/// How traffic to a backend is spread and protected. Attached by `targetRefs` to
/// Services, HTTPRoutes, GRPCRoutes or Gateways. For a backend reached through a route,
/// the most specific policy wins: one targeting the route, then one targeting the
/// Service, then one targeting the route's Gateway.
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
    /// What this policy governs, in the policy's namespace.
    pub target_refs: Vec<PolicyTargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// On a policy targeting an HTTPRoute: a rule's canary (its lightest-weighted
    /// backend) whose error ratio rises past its siblings' gets its weight set to 0,
    /// by a `TrafficAdjustment` object, for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_rollback: Option<CanaryRollback>,
}

/// Shifting a failing canary's traffic back to the stable backends.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryRollback {
    /// The canary's error ratio (5xx, failed connections, timeouts) must reach this
    /// (default 0.05)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_error_ratio: Option<f64>,
    /// ...and this many times the other backends' (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_multiplier: Option<f64>,
    /// Requests the canary needs in a window before it is judged (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
    /// The window errors are counted over (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How long the canary stays at weight 0 (default `10m`); delete the
    /// TrafficAdjustment to restore it sooner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_for: Option<String>,
    /// `Enforce` (default) or `DryRun` (log the rollback, change nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
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
    /// Also hold out an endpoint whose mean latency over `latencyInterval` is this many
    /// times its Service's median endpoint's (and 5 ms more), by a `TrafficAdjustment`
    /// object that ends after `baseEjectionTime`. Off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_factor: Option<f64>,
    /// Requests an endpoint needs in an interval before its latency is judged
    /// (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_min_requests: Option<u32>,
    /// The interval latency is averaged over (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_interval: Option<String>,
}

/// Active health checking: every endpoint is probed on an interval; one that fails
/// `unhealthyThreshold` probes in a row leaves rotation until it passes
/// `healthyThreshold` in a row.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `HTTP` (the default) or `TCP` (a connection that opens is healthy).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Time between probes of one endpoint (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How long a probe may take (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Passed probes in a row that bring an endpoint back (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    /// Failed probes in a row that take an endpoint out (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheck>,
}

/// What an HTTP probe asks and expects.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpHealthCheck {
    /// Path of the probe's GET request (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Host header of the probe (default: the endpoint's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Statuses that mean healthy (default 200 to 399).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_statuses: Vec<u16>,
}

/// Retries of failed upstream attempts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Retries after the first attempt (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// When to retry: `connect-failure` (any method: nothing reached the backend),
    /// `reset`, `5xx`, `gateway-error` (502, 503, 504), `retriable-status-codes`
    /// (default: `connect-failure`, `reset`, `gateway-error`). All but
    /// `connect-failure` retry only idempotent methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
    /// Statuses that `retriable-status-codes` retries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u16>,
    /// Timeout of each attempt (default: none but the route's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<RetryBackoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
}

/// Exponential backoff with full jitter between attempts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBackoff {
    /// First backoff ceiling (default 25ms); it doubles each retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_interval: Option<String>,
    /// Largest backoff ceiling (default 10 times the base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<String>,
}

/// A cap on retries so that they cannot multiply the load on a failing backend:
/// over a 10-second window, retries stay under `percent` of requests, plus
/// `minRetriesPerSecond`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries allowed, in percent of requests (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Retries allowed each second whatever the traffic (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retries_per_second: Option<u32>,
}

/// A reference to the object a policy applies to, in the policy's namespace.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// API group of the target: "" for a Service, `gateway.networking.k8s.io` for
    /// HTTPRoute, GRPCRoute and Gateway.
    #[serde(default)]
    pub group: String,
    /// Kind of the target: `Service`, `HTTPRoute`, `GRPCRoute` or `Gateway`.
    pub kind: String,
    pub name: String,
}

/// How an endpoint is chosen for each request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    /// `RoundRobin` (the default), `Random`, `LeastRequest` (the better of two endpoints
    /// picked at random, by requests in flight times a peak-EWMA latency), or
    /// `ConsistentHash` (Maglev, on `consistentHash`'s key).
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStart>,
}

/// The key a `ConsistentHash` balancer hashes: requests with the same key go to the
/// same endpoint, and adding or removing one endpoint moves only about 1/N of keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHash {
    /// `SourceIP` (the default), `Header` or `Cookie`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The header hashed for `Header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The cookie hashed for `Cookie`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

/// New endpoints get a share of traffic that grows over `window`, so a cold backend is
/// not flooded the moment it becomes ready.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlowStart {
    /// How long the ramp lasts (e.g. `30s`).
    pub window: String,
}

/// Sticky sessions by a cookie that the proxy sets: a client that sends it back goes
/// to the same endpoint while that endpoint is in rotation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionPersistence {
    /// The cookie's name (default `gatehouse-session`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_name: Option<String>,
    /// The cookie's Max-Age (default: a session cookie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// Limits that protect a backend: requests beyond them get 503 at once, with the
/// reason in the `x-gatehouse-reason` header, instead of piling onto the backend.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Most requests in flight to the backend (all its endpoints) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Most open connections to the backend (all its endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Most requests waiting for a connection when `maxConnections` are busy
    /// (default 0 with `maxConnections`: refuse at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
}

/// North-south protection of the routes it targets (Gateways, HTTPRoutes, GRPCRoutes,
/// Ingresses): the web application firewall and rate limits. The most specific policy
/// wins: one targeting the route (or Ingress), else one targeting its Gateway.
#[derive(CustomResource, Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "SecurityPolicy",
    plural = "securitypolicies",
    shortname = "secpol",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRefs[*].name"}"#,
    printcolumn = r#"{"name":"WAF","type":"string","jsonPath":".spec.waf.mode"}"#,
    printcolumn = r#"{"name":"Paranoia","type":"integer","jsonPath":".spec.waf.paranoiaLevel"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SecurityPolicySpec {
    /// What this policy protects, in the policy's namespace: `Gateway`, `HTTPRoute`,
    /// `GRPCRoute` (group `gateway.networking.k8s.io`) or `Ingress` (group
    /// `networking.k8s.io`).
    pub target_refs: Vec<PolicyTargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waf: Option<Waf>,
    /// Request rate limits; a request must pass every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimit>,
    /// Client addresses allowed and denied (403 for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_access: Option<IpAccess>,
    /// How the client address is found behind proxies (for `ipAccess` and rate-limit
    /// keys). Default: the address of the connection.
    #[serde(
        default,
        rename = "clientIPDetection",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_ip_detection: Option<ClientIpDetection>,
    /// Adaptive DDoS mitigation: sources (client addresses or networks) whose request
    /// or error rate crosses a threshold, or a multiple of the rate learned from all
    /// sources, are blocked for a while, longer each time. Each block is a
    /// `SourceBlock` object: listed, and lifted by deleting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_blocking: Option<AdaptiveBlocking>,
    /// Load shedding under a surge: the targeted routes' priority, and the limits on
    /// backend concurrency and latency past which the lowest-priority routes get 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_shedding: Option<LoadShedding>,
}

/// When a source is blocked, and for how long. Rates are per second, averaged over
/// `window`; give a fixed threshold, a baseline multiplier, or both.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdaptiveBlocking {
    /// Requests per second that block a source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u32>,
    /// Client errors (4xx answers) per second that block a source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors_per_second: Option<u32>,
    /// Block a source whose rate is this many times the learned baseline (the 95th
    /// percentile of all sources' rates, learned over minutes; applies after 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_multiplier: Option<f64>,
    /// Learned thresholds are never below this many per second (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_learned_rate: Option<u32>,
    /// Rates are averaged over about this long (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// A first block's term (default `1m`); each repeat within a day doubles it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_duration: Option<String>,
    /// The longest term (default `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_block_duration: Option<String>,
    /// A source is a client address cut to these prefixes (default /32 and /64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ClientIpKey>,
    /// `Enforce` (default) or `DryRun` (log what would be blocked, block nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `Block` (default: the source is refused) or `Limit` (the source is held to
    /// `limitRequestsPerSecond`, a tightened rate limit, for the block's term).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// With `action: Limit`, the requests per second a source is held to (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_requests_per_second: Option<u32>,
}

/// Surge protection. Every policy's `priority` ranks its routes; the limits are
/// proxy-wide (of several policies, the lowest counts). When the backends' requests in
/// flight or their latency (90th percentile of the last moments) cross a limit, the
/// routes of the lowest priority still served get 503 with `Retry-After`, one priority
/// at a time, until the load is back under; the highest priority is never shed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadShedding {
    /// The targeted routes' priority (default 0; higher is shed later). Routes without
    /// a policy have 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Requests in flight to all backends past which shedding starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<u32>,
    /// Backend latency (`250ms`, `1s`) past which shedding starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency: Option<String>,
}

/// The label that marks objects made by Gatehouse's adaptive controls.
pub const MADE_BY_LABEL: &str = "gatehouse.dev/made-by";

/// A client network blocked until a time: made by a SecurityPolicy's adaptive blocking
/// when a source crosses its thresholds, or by hand. Every listener refuses its
/// connections (and requests whose client, behind trusted proxies, it holds) with 403.
/// Deleting it lifts the block.
#[derive(CustomResource, Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "SourceBlock",
    plural = "sourceblocks",
    shortname = "sblk",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.source"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".spec.expiresAt"}"#,
    printcolumn = r#"{"name":"Policy","type":"string","jsonPath":".spec.policy"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".spec.reason","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SourceBlockSpec {
    /// The address or network (`198.51.100.7`, `2001:db8:1:2::/64`).
    pub source: String,
    /// When the block ends (RFC 3339, `2026-11-30T12:00:00Z`); none: when deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// What was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The SecurityPolicy (`namespace/name`) whose adaptive blocking made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The source's how-manieth block in a row (terms double with each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offence: Option<u32>,
    /// Not refused but held to this many requests per second (a tightened rate limit);
    /// more get 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Allowed and denied client networks. The most specific listed network that holds
/// the address decides; with any `allow` entry, unlisted addresses are denied.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpAccess {
    /// CIDRs or addresses (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// How the client address is found behind proxies.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientIpDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_forwarded_for: Option<XForwardedFor>,
}

/// `X-Forwarded-For`, believed from trusted proxies only: read from the right, the first
/// address that is not a trusted proxy is the client.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct XForwardedFor {
    /// The proxies in front (load balancers, CDNs) whose header is believed.
    #[serde(
        default,
        rename = "trustedCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub trusted_cidrs: Vec<String>,
}

/// A request rate limit: `requests` per `per` for each key, with bursts of up to
/// `burst` at once (GCRA, a token bucket of `burst` tokens), counted per proxy or, in
/// Global mode, across all replicas through Redis. A request over the limit gets 429
/// with `Retry-After` and `RateLimit-*` headers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Names the limit in events, metrics and the `RateLimit-Policy` header; unique in
    /// the policy.
    pub name: String,
    /// Requests allowed per `per`, on average (at least 1).
    pub requests: u32,
    /// The period: a duration such as `1s`, `1m`, `1h`.
    pub per: String,
    /// Requests that may come at once (default: `requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// What requests are counted by; the parts combine. None: all requests of the
    /// routes the policy covers count together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
    /// `Local` (default: counted by each proxy in its memory) or `Global` (counted once
    /// for all replicas, in the Redis that `--redis` names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// A Global limit whose Redis cannot be reached lets requests through (true, the
    /// default) or refuses them with 503 (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
}

/// What a rate limit counts requests by.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitKey {
    /// The client address, or its network.
    #[serde(default, rename = "clientIP", skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<ClientIpKey>,
    /// A request header's value, such as an API key. Requests without the header are
    /// not counted by this limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<bool>,
}

/// The client address a rate limit counts by, cut to a network prefix.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientIpKey {
    /// IPv4 prefix length (default 32: each address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_prefix: Option<u8>,
    /// IPv6 prefix length (default 128: each address; 64 counts a site's network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_prefix: Option<u8>,
}

/// The web application firewall: the OWASP Core Rule Set (v4) run by Gatehouse's
/// SecLang engine, with anomaly scoring.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Waf {
    /// `Off`, `DetectionOnly` (log what would be blocked) or `Blocking`.
    pub mode: String,
    /// CRS paranoia level, 1 (default, fewest false positives) to 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paranoia_level: Option<u8>,
    /// Inbound anomaly score that blocks a request (CRS default 5: one critical match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_anomaly_threshold: Option<u32>,
    /// Outbound anomaly score that blocks a response (CRS default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_anomaly_threshold: Option<u32>,
    /// Rules switched off, or targets taken out of rules, for false positives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusions: Vec<WafExclusion>,
    /// Extra SecLang rules, run after the Core Rule Set's setup and before its rules
    /// (ids 1 to 99999 are free for them). `Include` is not allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<String>,
    /// Largest request body inspected, in bytes (default 131072).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body_limit: Option<u64>,
    /// Past the limit: `Reject` (413, the default) or `ProcessPartial` (inspect the
    /// first part, pass the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body_limit_action: Option<String>,
    /// Inspect responses (headers, and bodies of text types) for data leaks (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspect_responses: Option<bool>,
    /// What a blocked request gets (default: 403 with the request id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_response: Option<BlockResponse>,
}

/// One exclusion: rules by id or tag, all of them or only for some targets.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WafExclusion {
    /// Rule ids or ranges (`942100`, `920000-920999`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// Rule tags (`attack-sqli`, `paranoia-level/2`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Targets to stop inspecting in those rules (`ARGS:password`,
    /// `REQUEST_COOKIES:/^session/`); none means the rules are removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

/// The response to a blocked request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockResponse {
    /// Status (default 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Body; `{request_id}` is replaced by the request's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Content-Type of the body (default `text/plain; charset=utf-8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// A change an adaptive control made to traffic: an endpoint held out of its Service's
/// rotation (`EjectEndpoint`), or a route's backend given another weight
/// (`SetWeight`). Made by the proxy, served like any other object, listed on the admin
/// listener and the dashboard, and undone by deleting it (or when it expires).
#[derive(CustomResource, Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "TrafficAdjustment",
    plural = "trafficadjustments",
    shortname = "tadj",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".spec.expiresAt"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".spec.reason","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficAdjustmentSpec {
    /// `EjectEndpoint` or `SetWeight`.
    pub action: String,
    /// The Service (in this namespace) whose endpoint is held out, or the route
    /// backend whose weight is set.
    pub service: String,
    /// `EjectEndpoint`: the endpoint (`10.0.0.7:8080`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `SetWeight`: the HTTPRoute (in this namespace) and the backend's new weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// When it ends (RFC 3339); none: when deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// What was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The policy (`namespace/name`) whose control made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// The CRDs of every Gatehouse kind, as one multi-document YAML text.
pub fn crds_yaml() -> Result<String, String> {
    use kube::CustomResourceExt;
    let crds = vec![
        BackendTrafficPolicy::crd(),
        SecurityPolicy::crd(),
        SourceBlock::crd(),
        TrafficAdjustment::crd(),
        crate::mesh::AuthorizationPolicy::crd(),
        crate::mesh::PeerAuthentication::crd(),
    ];
    let mut out = String::new();
    for crd in &crds {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(crd).map_err(|e| e.to_string())?);
    }
    Ok(out)
}
