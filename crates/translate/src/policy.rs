//! BackendTrafficPolicy (`gatehouse.dev/v1alpha1`): each policy is checked, then indexed
//! by what it targets (Services, routes, Gateways), so every cluster built for a backend
//! carries its balancer, limits, health checks and retries. For a backend reached
//! through a route, a policy targeting the route wins over one targeting the Service,
//! which wins over one targeting the Gateway. When two policies target one object, the
//! oldest wins and the other gets a warning. Ingress annotations under `gatehouse.dev/`
//! set the same knobs for one Ingress.

use crate::cluster::{
    Balancer, ClusterPolicy, HashOn, HealthPolicy, OutlierPolicy, Probe, RetryOn, RetryPolicy,
    SessionPolicy,
};
use crate::duration::parse_duration;
use crate::ingress::oldest_first;
use gatehouse_model::gateway::ParentReference;
use gatehouse_model::policy::{
    BackendTrafficPolicySpec, CircuitBreaker, ConsistentHash, HealthCheck, HttpHealthCheck,
    LoadBalancer, OutlierDetection, Retry, SessionPersistence, SlowStart,
};
use gatehouse_model::{ConfigError, Object, ObjectStore, StoredObject};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub(crate) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// What a policy can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    Service,
    HttpRoute,
    GrpcRoute,
    TcpRoute,
    TlsRoute,
    Gateway,
}

impl TargetKind {
    fn parse(group: &str, kind: &str) -> Option<Self> {
        match (group, kind) {
            ("", "Service") => Some(TargetKind::Service),
            (GATEWAY_GROUP, "HTTPRoute") => Some(TargetKind::HttpRoute),
            (GATEWAY_GROUP, "GRPCRoute") => Some(TargetKind::GrpcRoute),
            (GATEWAY_GROUP, "TCPRoute") => Some(TargetKind::TcpRoute),
            (GATEWAY_GROUP, "TLSRoute") => Some(TargetKind::TlsRoute),
            (GATEWAY_GROUP, "Gateway") => Some(TargetKind::Gateway),
            _ => None,
        }
    }

    /// The kind of a route object.
    pub fn of_route(kind: &str) -> Option<Self> {
        TargetKind::parse(GATEWAY_GROUP, kind).filter(|k| *k != TargetKind::Gateway)
    }
}

/// Policies by the (kind, namespace, name) they govern.
#[derive(Debug, Default)]
pub struct Policies {
    by_target: HashMap<(TargetKind, String, String), ClusterPolicy>,
}

/// The policies that the path to a backend brings: the route's own, and its Gateway's.
#[derive(Debug, Default, Clone)]
pub struct Via {
    pub route: Option<ClusterPolicy>,
    pub gateway: Option<ClusterPolicy>,
    /// The WAF of the route (set where actions are built for Ingress rules).
    pub protection: crate::security::Protection,
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
        let mut by_target: HashMap<(TargetKind, String, String), ClusterPolicy> = HashMap::new();
        for o in objects {
            let Object::BackendTrafficPolicy(p) = &o.object else {
                continue;
            };
            let from = format!("{}/{}", o.namespace(), o.name());
            let Some(policy) = check(&p.spec, from, &|f, m| o.error(f, m), errors) else {
                continue;
            };
            let Some(targets) = targets(o, &p.spec, errors) else {
                continue;
            };
            for (kind, name) in targets {
                let key = (kind, o.namespace().to_string(), name);
                match by_target.get(&key) {
                    Some(first) => warnings.push(format!(
                        "BackendTrafficPolicy {}/{}: {:?} {}/{} already has policy {}; ignored for it",
                        o.namespace(),
                        o.name(),
                        key.0,
                        key.1,
                        key.2,
                        first.from.as_deref().unwrap_or("?")
                    )),
                    None => {
                        by_target.insert(key, policy.clone());
                    }
                }
            }
        }
        Policies { by_target }
    }

    fn get(&self, kind: TargetKind, namespace: &str, name: &str) -> Option<&ClusterPolicy> {
        if self.by_target.is_empty() {
            return None;
        }
        self.by_target
            .get(&(kind, namespace.to_string(), name.to_string()))
    }

    /// The policy targeting Service `namespace/name`, if any.
    pub fn for_service(&self, namespace: &str, name: &str) -> Option<&ClusterPolicy> {
        self.get(TargetKind::Service, namespace, name)
    }

    /// The policies on the path through route `o` (a Gateway API route): its own, and
    /// that of the first parent Gateway that has one.
    pub fn via_route(&self, o: &StoredObject, parents: &[ParentReference]) -> Via {
        let ns = o.namespace();
        let route = TargetKind::of_route(o.object.kind())
            .and_then(|k| self.get(k, ns, o.name()))
            .cloned();
        let gateway = parents
            .iter()
            .filter(|p| {
                p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                    && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
            })
            .find_map(|p| {
                let gns = p.namespace.as_deref().unwrap_or(ns);
                self.get(TargetKind::Gateway, gns, &p.name)
            })
            .cloned();
        Via {
            route,
            gateway,
            protection: Default::default(),
        }
    }
}

/// The targets of a policy, or None (with errors) if one is invalid.
fn targets(
    o: &StoredObject,
    spec: &BackendTrafficPolicySpec,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<(TargetKind, String)>> {
    let before = errors.len();
    if spec.target_refs.is_empty() {
        errors.push(o.error("spec.targetRefs", "at least one target is required"));
    }
    let mut out = Vec::new();
    for (i, t) in spec.target_refs.iter().enumerate() {
        let Some(kind) = TargetKind::parse(&t.group, &t.kind) else {
            errors.push(o.error(
                &format!("spec.targetRefs[{i}].kind"),
                format!(
                    "unsupported target {}{}{}: must be a Service (group \"\"), or an HTTPRoute, GRPCRoute, TCPRoute, TLSRoute or Gateway (group {GATEWAY_GROUP})",
                    t.group,
                    if t.group.is_empty() { "" } else { "/" },
                    t.kind
                ),
            ));
            continue;
        };
        if t.name.is_empty() {
            errors.push(o.error(&format!("spec.targetRefs[{i}].name"), "name is required"));
            continue;
        }
        out.push((kind, t.name.clone()));
    }
    (errors.len() == before).then_some(out)
}

type ErrorAt<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

/// Checks a policy spec and compiles it; None (with errors naming each bad field) if
/// anything is invalid. `from` names the policy in `/config` and cluster names.
pub fn check(
    spec: &BackendTrafficPolicySpec,
    from: String,
    at: &ErrorAt<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<ClusterPolicy> {
    let before = errors.len();
    let mut err = |field: &str, msg: String| errors.push(at(field, msg));
    let lb = spec.load_balancer.clone().unwrap_or_default();
    let balancer = match lb.type_.as_str() {
        "" | "RoundRobin" => Balancer::RoundRobin,
        "Random" => Balancer::Random,
        "LeastRequest" => Balancer::LeastRequest,
        "ConsistentHash" => {
            let ch = lb.consistent_hash.clone().unwrap_or_default();
            let on = match ch.type_.as_deref().unwrap_or("SourceIP") {
                "SourceIP" => Some(HashOn::SourceIp),
                "Header" => match ch.header.as_deref().filter(|h| !h.is_empty()) {
                    Some(h) if http::HeaderName::from_bytes(h.as_bytes()).is_ok() => {
                        Some(HashOn::Header(h.to_ascii_lowercase()))
                    }
                    Some(h) => {
                        err(
                            "spec.loadBalancer.consistentHash.header",
                            format!("{h:?} is not a valid header name"),
                        );
                        None
                    }
                    None => {
                        err(
                            "spec.loadBalancer.consistentHash.header",
                            "required for type Header".into(),
                        );
                        None
                    }
                },
                "Cookie" => match ch.cookie.as_deref().filter(|c| !c.is_empty()) {
                    Some(c) => Some(HashOn::Cookie(c.to_string())),
                    None => {
                        err(
                            "spec.loadBalancer.consistentHash.cookie",
                            "required for type Cookie".into(),
                        );
                        None
                    }
                },
                other => {
                    err(
                        "spec.loadBalancer.consistentHash.type",
                        format!("unknown hash key {other:?}: must be SourceIP, Header or Cookie"),
                    );
                    None
                }
            };
            Balancer::ConsistentHash(on.unwrap_or(HashOn::SourceIp))
        }
        other => {
            err(
                "spec.loadBalancer.type",
                format!(
                    "unknown load balancer {other:?}: must be RoundRobin, Random, LeastRequest or ConsistentHash"
                ),
            );
            Balancer::RoundRobin
        }
    };
    let slow_start = lb
        .slow_start
        .as_ref()
        .and_then(|s| duration("spec.loadBalancer.slowStart.window", &s.window, &mut err));
    let session = spec.session_persistence.as_ref().and_then(|s| {
        let cookie = s
            .cookie_name
            .clone()
            .unwrap_or_else(|| "gatehouse-session".into());
        if cookie.is_empty() || !cookie.bytes().all(is_cookie_name_byte) {
            err(
                "spec.sessionPersistence.cookieName",
                format!("{cookie:?} is not a valid cookie name"),
            );
            return None;
        }
        let ttl = match &s.ttl {
            Some(t) => Some(duration("spec.sessionPersistence.ttl", t, &mut err)?),
            None => None,
        };
        Some(SessionPolicy { cookie, ttl })
    });
    let cb = spec.circuit_breaker.clone().unwrap_or_default();
    for (field, v) in [
        ("spec.circuitBreaker.maxRequests", cb.max_requests),
        ("spec.circuitBreaker.maxConnections", cb.max_connections),
    ] {
        if v == Some(0) {
            err(
                field,
                "must be at least 1 (leave it out for no limit)".into(),
            );
        }
    }
    if cb.max_pending_requests.is_some() && cb.max_connections.is_none() {
        err(
            "spec.circuitBreaker.maxPendingRequests",
            "needs maxConnections (requests wait only for a connection limit)".into(),
        );
    }
    let outlier = spec.outlier_detection.as_ref().and_then(|od| {
        let consecutive_errors = od.consecutive_errors.unwrap_or(5);
        if consecutive_errors == 0 {
            err(
                "spec.outlierDetection.consecutiveErrors",
                "must be at least 1".into(),
            );
        }
        let base = match od.base_ejection_time.as_deref() {
            None => Some(Duration::from_secs(30)),
            Some(d) => duration("spec.outlierDetection.baseEjectionTime", d, &mut err),
        };
        let max_ejection_percent = od.max_ejection_percent.unwrap_or(10);
        if max_ejection_percent > 100 {
            err(
                "spec.outlierDetection.maxEjectionPercent",
                format!("{max_ejection_percent} is more than 100"),
            );
        }
        let latency = match od.latency_factor {
            None => None,
            Some(f) if !(f > 1.0 && f.is_finite()) => {
                err(
                    "spec.outlierDetection.latencyFactor",
                    format!("{f} must be more than 1"),
                );
                None
            }
            Some(f) => {
                let interval = match od.latency_interval.as_deref() {
                    None => Some(Duration::from_secs(10)),
                    Some(d) => duration("spec.outlierDetection.latencyInterval", d, &mut err),
                };
                interval.map(|interval| crate::cluster::LatencyOutlier {
                    factor_milli: (f * 1000.0) as u32,
                    min_requests: od.latency_min_requests.unwrap_or(20).max(1),
                    interval,
                })
            }
        };
        Some(OutlierPolicy {
            consecutive_errors,
            base_ejection: base?,
            max_ejection_percent,
            latency,
        })
    });
    let canary = spec.canary_rollback.as_ref().and_then(|c| {
        let ratio = c.min_error_ratio.unwrap_or(0.05);
        if !(0.0..=1.0).contains(&ratio) {
            err(
                "spec.canaryRollback.minErrorRatio",
                format!("{ratio} is not between 0 and 1"),
            );
        }
        let multiplier = c.baseline_multiplier.unwrap_or(2.0);
        if !(multiplier >= 1.0 && multiplier.is_finite()) {
            err(
                "spec.canaryRollback.baselineMultiplier",
                format!("{multiplier} must be at least 1"),
            );
        }
        let dry_run = match c.mode.as_deref() {
            None | Some("Enforce") => false,
            Some("DryRun") => true,
            Some(other) => {
                err(
                    "spec.canaryRollback.mode",
                    format!("{other:?} is not Enforce or DryRun"),
                );
                false
            }
        };
        let interval = match c.interval.as_deref() {
            None => Some(Duration::from_secs(10)),
            Some(d) => duration("spec.canaryRollback.interval", d, &mut err),
        };
        let hold_for = match c.hold_for.as_deref() {
            None => Some(Duration::from_secs(600)),
            Some(d) => duration("spec.canaryRollback.holdFor", d, &mut err),
        };
        Some(crate::cluster::CanaryPolicy {
            min_error_ratio_ppm: (ratio.clamp(0.0, 1.0) * 1e6) as u32,
            baseline_multiplier_milli: (multiplier.max(1.0) * 1000.0) as u32,
            min_requests: c.min_requests.unwrap_or(20).max(1),
            interval: interval?,
            hold_for: hold_for?,
            dry_run,
        })
    });
    let health = spec
        .health_check
        .as_ref()
        .and_then(|hc| health(hc, &mut err));
    let retry = spec.retry.as_ref().and_then(|r| retry(r, &mut err));
    if errors.len() > before {
        return None;
    }
    Some(ClusterPolicy {
        balancer,
        slow_start,
        session,
        max_requests: cb.max_requests,
        max_connections: cb.max_connections,
        max_pending: cb
            .max_connections
            .map(|_| cb.max_pending_requests.unwrap_or(0)),
        outlier,
        health,
        retry,
        from: Some(from),
        canary,
        held_out: Default::default(),
    })
}

/// A duration above zero, or None with an error naming `field`.
fn duration(field: &str, v: &str, err: &mut dyn FnMut(&str, String)) -> Option<Duration> {
    match parse_duration(v) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            err(field, "must be more than zero".into());
            None
        }
        Err(e) => {
            err(field, e);
            None
        }
    }
}

fn health(hc: &HealthCheck, err: &mut dyn FnMut(&str, String)) -> Option<HealthPolicy> {
    let mut bad = false;
    let mut dur = |field: &str,
                   v: Option<&str>,
                   default: Duration,
                   err: &mut dyn FnMut(&str, String)| match v {
        None => default,
        Some(v) => duration(field, v, err).unwrap_or_else(|| {
            bad = true;
            default
        }),
    };
    let interval = dur(
        "spec.healthCheck.interval",
        hc.interval.as_deref(),
        Duration::from_secs(5),
        err,
    );
    let timeout = dur(
        "spec.healthCheck.timeout",
        hc.timeout.as_deref(),
        Duration::from_secs(1),
        err,
    );
    let probe = match hc.type_.as_deref().unwrap_or("HTTP") {
        "TCP" => Probe::Tcp,
        "HTTP" => {
            let h = hc.http.clone().unwrap_or_default();
            let path = h.path.unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                err(
                    "spec.healthCheck.http.path",
                    format!("{path:?} is not an absolute path"),
                );
                bad = true;
            }
            if let Some(host) = &h.host {
                if http::HeaderValue::from_str(host).is_err() || host.is_empty() {
                    err(
                        "spec.healthCheck.http.host",
                        format!("{host:?} is not a valid host"),
                    );
                    bad = true;
                }
            }
            let expected = match h.expected_statuses.is_empty() {
                true => vec![(200, 399)],
                false => h.expected_statuses.iter().map(|&s| (s, s)).collect(),
            };
            if let Some(s) = h
                .expected_statuses
                .iter()
                .find(|s| !(100..=599).contains(*s))
            {
                err(
                    "spec.healthCheck.http.expectedStatuses",
                    format!("{s} is not an HTTP status"),
                );
                bad = true;
            }
            Probe::Http {
                path,
                host: h.host,
                expected,
            }
        }
        other => {
            err(
                "spec.healthCheck.type",
                format!("unknown health check {other:?}: must be HTTP or TCP"),
            );
            return None;
        }
    };
    let healthy_threshold = hc.healthy_threshold.unwrap_or(1);
    let unhealthy_threshold = hc.unhealthy_threshold.unwrap_or(3);
    for (field, v) in [
        ("spec.healthCheck.healthyThreshold", healthy_threshold),
        ("spec.healthCheck.unhealthyThreshold", unhealthy_threshold),
    ] {
        if v == 0 {
            err(field, "must be at least 1".into());
            bad = true;
        }
    }
    (!bad).then_some(HealthPolicy {
        probe,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
    })
}

fn retry(r: &Retry, err: &mut dyn FnMut(&str, String)) -> Option<RetryPolicy> {
    let mut bad = false;
    let mut on = RetryOn::default();
    let defaults = ["connect-failure", "reset", "gateway-error"].map(String::from);
    let conditions = match r.retry_on.is_empty() {
        true => &defaults[..],
        false => &r.retry_on[..],
    };
    for (i, c) in conditions.iter().enumerate() {
        match c.as_str() {
            "connect-failure" => on.connect_failure = true,
            "reset" => on.reset = true,
            "5xx" => on.server_error = true,
            "gateway-error" => on.gateway_error = true,
            "retriable-status-codes" => on.statuses = r.retriable_status_codes.clone(),
            other => {
                err(
                    &format!("spec.retry.retryOn[{i}]"),
                    format!("unknown retry condition {other:?}: must be connect-failure, reset, 5xx, gateway-error or retriable-status-codes"),
                );
                bad = true;
            }
        }
    }
    if let Some(s) = r
        .retriable_status_codes
        .iter()
        .find(|s| !(100..=599).contains(*s))
    {
        err(
            "spec.retry.retriableStatusCodes",
            format!("{s} is not an HTTP status"),
        );
        bad = true;
    }
    let attempts = r.attempts.unwrap_or(2);
    if attempts > 10 {
        err("spec.retry.attempts", format!("{attempts} is more than 10"));
        bad = true;
    }
    let mut dur = |field: &str, v: Option<&str>, err: &mut dyn FnMut(&str, String)| match v {
        None => None,
        Some(v) => {
            let d = duration(field, v, err);
            bad |= d.is_none();
            d
        }
    };
    let per_try_timeout = dur(
        "spec.retry.perTryTimeout",
        r.per_try_timeout.as_deref(),
        err,
    );
    let backoff = r.backoff.clone().unwrap_or_default();
    let base = dur(
        "spec.retry.backoff.baseInterval",
        backoff.base_interval.as_deref(),
        err,
    )
    .unwrap_or(Duration::from_millis(25));
    let max = dur(
        "spec.retry.backoff.maxInterval",
        backoff.max_interval.as_deref(),
        err,
    )
    .unwrap_or(base * 10);
    if max < base {
        err(
            "spec.retry.backoff.maxInterval",
            "must be at least baseInterval".into(),
        );
        bad = true;
    }
    let budget = r.budget.clone().unwrap_or_default();
    (!bad).then_some(RetryPolicy {
        attempts,
        on,
        per_try_timeout,
        backoff_base: base,
        backoff_max: max,
        budget_percent: budget.percent.unwrap_or(20),
        budget_min_per_second: budget.min_retries_per_second.unwrap_or(10),
    })
}

/// RFC 6265 cookie-name (a token).
fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Ingress annotations (`gatehouse.dev/...`) and the policy field each sets.
const ANNOTATIONS: &[(&str, &str)] = &[
    ("load-balancer", "spec.loadBalancer.type"),
    ("hash-on", "spec.loadBalancer.consistentHash"),
    ("slow-start", "spec.loadBalancer.slowStart.window"),
    ("session-cookie", "spec.sessionPersistence.cookieName"),
    ("session-cookie-ttl", "spec.sessionPersistence.ttl"),
    ("max-requests", "spec.circuitBreaker.maxRequests"),
    ("max-connections", "spec.circuitBreaker.maxConnections"),
    (
        "max-pending-requests",
        "spec.circuitBreaker.maxPendingRequests",
    ),
    (
        "outlier-consecutive-errors",
        "spec.outlierDetection.consecutiveErrors",
    ),
    (
        "outlier-ejection-time",
        "spec.outlierDetection.baseEjectionTime",
    ),
    ("health-check", "spec.healthCheck.type"),
    ("health-check-path", "spec.healthCheck.http.path"),
    ("health-check-interval", "spec.healthCheck.interval"),
    ("health-check-timeout", "spec.healthCheck.timeout"),
    ("retries", "spec.retry.attempts"),
    ("retry-on", "spec.retry.retryOn"),
    ("per-try-timeout", "spec.retry.perTryTimeout"),
];

/// The policy an Ingress's `gatehouse.dev/` annotations set, if any; None (with
/// errors naming the annotation) if one is invalid.
pub fn from_annotations(
    o: &StoredObject,
    annotations: Option<&BTreeMap<String, String>>,
    errors: &mut Vec<ConfigError>,
) -> Option<ClusterPolicy> {
    let ours: Vec<(&str, &str)> = annotations?
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("gatehouse.dev/")?, v.as_str())))
        .filter(|(k, _)| ANNOTATIONS.iter().any(|(a, _)| a == k))
        .collect();
    if ours.is_empty() {
        return None;
    }
    let field_of = |spec_field: &str| -> String {
        // The longest policy field an annotation sets that `spec_field` falls under.
        ANNOTATIONS
            .iter()
            .filter(|(_, f)| spec_field.starts_with(f) || f.starts_with(spec_field))
            .max_by_key(|(_, f)| f.len())
            .map(|(a, _)| format!("metadata.annotations[\"gatehouse.dev/{a}\"]"))
            .unwrap_or_else(|| "metadata.annotations".into())
    };
    let before = errors.len();
    let mut spec = BackendTrafficPolicySpec::default();
    let mut number = |key: &str, v: &str| -> Option<u32> {
        match v.trim().parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(o.error(
                    &format!("metadata.annotations[\"gatehouse.dev/{key}\"]"),
                    format!("{v:?} is not a whole number"),
                ));
                None
            }
        }
    };
    for (key, v) in &ours {
        let v = v.trim().to_string();
        let lb = || LoadBalancer::default();
        match *key {
            "load-balancer" => spec.load_balancer.get_or_insert_with(lb).type_ = v,
            "hash-on" => {
                let l = spec.load_balancer.get_or_insert_with(lb);
                if l.type_.is_empty() {
                    l.type_ = "ConsistentHash".into();
                }
                let (t, arg) = v.split_once(':').unwrap_or((v.as_str(), ""));
                l.consistent_hash = Some(match t {
                    "source-ip" => ConsistentHash::default(),
                    "header" => ConsistentHash {
                        type_: Some("Header".into()),
                        header: Some(arg.to_string()),
                        cookie: None,
                    },
                    "cookie" => ConsistentHash {
                        type_: Some("Cookie".into()),
                        header: None,
                        cookie: Some(arg.to_string()),
                    },
                    other => ConsistentHash {
                        type_: Some(other.to_string()),
                        ..ConsistentHash::default()
                    },
                });
            }
            "slow-start" => {
                spec.load_balancer.get_or_insert_with(lb).slow_start = Some(SlowStart { window: v })
            }
            "session-cookie" => {
                spec.session_persistence
                    .get_or_insert_with(SessionPersistence::default)
                    .cookie_name = Some(v)
            }
            "session-cookie-ttl" => {
                spec.session_persistence
                    .get_or_insert_with(SessionPersistence::default)
                    .ttl = Some(v)
            }
            "max-requests" | "max-connections" | "max-pending-requests" => {
                let n = number(key, &v);
                let cb = spec
                    .circuit_breaker
                    .get_or_insert_with(CircuitBreaker::default);
                match *key {
                    "max-requests" => cb.max_requests = n,
                    "max-connections" => cb.max_connections = n,
                    _ => cb.max_pending_requests = n,
                }
            }
            "outlier-consecutive-errors" => {
                spec.outlier_detection
                    .get_or_insert_with(OutlierDetection::default)
                    .consecutive_errors = number(key, &v)
            }
            "outlier-ejection-time" => {
                spec.outlier_detection
                    .get_or_insert_with(OutlierDetection::default)
                    .base_ejection_time = Some(v)
            }
            "health-check" => {
                spec.health_check
                    .get_or_insert_with(HealthCheck::default)
                    .type_ = Some(v.to_ascii_uppercase())
            }
            "health-check-path" => {
                spec.health_check
                    .get_or_insert_with(HealthCheck::default)
                    .http = Some(HttpHealthCheck {
                    path: Some(v),
                    ..HttpHealthCheck::default()
                })
            }
            "health-check-interval" => {
                spec.health_check
                    .get_or_insert_with(HealthCheck::default)
                    .interval = Some(v)
            }
            "health-check-timeout" => {
                spec.health_check
                    .get_or_insert_with(HealthCheck::default)
                    .timeout = Some(v)
            }
            "retries" => spec.retry.get_or_insert_with(Retry::default).attempts = number(key, &v),
            "retry-on" => {
                spec.retry.get_or_insert_with(Retry::default).retry_on =
                    v.split(',').map(|c| c.trim().to_string()).collect()
            }
            "per-try-timeout" => {
                spec.retry
                    .get_or_insert_with(Retry::default)
                    .per_try_timeout = Some(v)
            }
            _ => {}
        }
    }
    if errors.len() > before {
        return None;
    }
    let from = format!("ingress/{}/{}", o.namespace(), o.name());
    check(&spec, from, &|f, m| o.error(&field_of(f), m), errors)
}
