//! Lock-free request metrics per route and status class, rendered in Prometheus text
//! format. The hot path only does relaxed atomic adds on counters it already holds.

use crate::reason::Reason;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Histogram bucket upper bounds in seconds.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Default)]
struct ClassStats {
    count: AtomicU64,
    sum_micros: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

/// Counters of one route. A status class gets its counters when it first happens
/// (most routes only ever see one or two), which keeps large configs small.
#[derive(Default)]
pub struct RouteStats {
    classes: [std::sync::OnceLock<Box<ClassStats>>; 5],
    /// Requests sent to a backend, by latency bucket (the last: slower than all), for
    /// surge protection.
    forwarded: std::sync::OnceLock<Box<[AtomicU64; BUCKETS.len() + 1]>>,
    /// Responses by reason (see [`Reason`]), made when the first one not the
    /// upstream's comes.
    reasons: std::sync::OnceLock<Box<[AtomicU64; Reason::ALL.len()]>>,
    /// Bytes of response bodies sent to clients.
    sent_bytes: AtomicU64,
}

impl RouteStats {
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = ((status / 100).clamp(1, 5) - 1) as usize;
        let c = self.classes[class].get_or_init(Box::default);
        c.count.fetch_add(1, Relaxed);
        c.sum_micros.fetch_add(elapsed.as_micros() as u64, Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            c.buckets[i].fetch_add(1, Relaxed);
        }
    }
}

impl RouteStats {
    /// Counts `n` bytes of a response body sent.
    pub fn record_sent(&self, n: u64) {
        if n > 0 {
            self.sent_bytes.fetch_add(n, Relaxed);
        }
    }

    /// Counts a response the proxy made itself, by its reason.
    pub fn record_reason(&self, reason: Reason) {
        if reason != Reason::Upstream {
            self.reasons.get_or_init(Box::default)[reason.index()].fetch_add(1, Relaxed);
        }
    }

    /// Responses so far by reason (the upstream's not counted).
    pub fn reasons(&self) -> [u64; Reason::ALL.len()] {
        let mut out = [0; Reason::ALL.len()];
        if let Some(r) = self.reasons.get() {
            for (o, c) in out.iter_mut().zip(r.iter()) {
                *o = c.load(Relaxed);
            }
        }
        out
    }

    /// Counts a request sent to a backend (whatever its answer) by its latency.
    pub fn record_forwarded(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.forwarded.get_or_init(Box::default)[i].fetch_add(1, Relaxed);
    }

    /// Requests sent to a backend so far, by latency bucket (the last: slower than
    /// all). The proxy's own answers (blocks, limits, shed requests) are not in it.
    pub fn forwarded_buckets(&self) -> [u64; BUCKETS.len() + 1] {
        let mut out = [0; BUCKETS.len() + 1];
        if let Some(f) = self.forwarded.get() {
            for (o, b) in out.iter_mut().zip(f.iter()) {
                *o = b.load(Relaxed);
            }
        }
        out
    }
}

/// Where a request's answer is counted: its route's stats and, under adaptive
/// blocking, its source's counts (a 4xx answer is an error of the source).
pub struct Tally {
    pub stats: Arc<RouteStats>,
    pub source: Option<Arc<gatehouse_security::adaptive::SourceCount>>,
    /// The request went to a backend: its latency is a backend's.
    pub forwarded: bool,
    /// Its route's id in the Snapshot (`NO_ROUTE`: none).
    pub route: u32,
}

/// The route id of a request no route took.
pub const NO_ROUTE: u32 = u32::MAX;

impl From<Arc<RouteStats>> for Tally {
    fn from(stats: Arc<RouteStats>) -> Tally {
        Tally {
            stats,
            source: None,
            forwarded: false,
            route: NO_ROUTE,
        }
    }
}

impl Tally {
    pub fn record(&self, status: u16, reason: Reason, elapsed: Duration) {
        self.stats.record(status, elapsed);
        self.stats.record_reason(reason);
        if self.forwarded {
            self.stats.record_forwarded(elapsed);
        }
        if let Some(s) = &self.source {
            if (400..500).contains(&status) {
                s.error();
            }
        }
    }
}

/// Process-wide counters that are not per route.
#[derive(Default)]
pub struct Counters {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub tls_handshake_errors_total: AtomicU64,
    pub config_reloads_total: AtomicU64,
    pub config_rejected_total: AtomicU64,
    /// Snapshots built by recompiling only the hosts a change touched.
    pub config_incremental_total: AtomicU64,
    /// Snapshots built by translating everything (from the Kubernetes source).
    pub config_full_total: AtomicU64,
    /// Endpoint-only changes applied in place, without a new Snapshot.
    pub endpoint_updates_total: AtomicU64,
    pub config_version: AtomicU64,
    pub upstream_errors_total: AtomicU64,
    /// Upstream attempts after the first.
    pub upstream_retries_total: AtomicU64,
    /// Retries not made because the retry budget was spent.
    pub retry_budget_exhausted_total: AtomicU64,
    /// Requests refused by a circuit breaker (requests, connections, pending).
    pub circuit_breaker_open_total: AtomicU64,
    /// Copies of requests sent by RequestMirror filters, and those that failed.
    pub mirror_requests_total: AtomicU64,
    pub mirror_errors_total: AtomicU64,
    /// Active health probes, and endpoints that changed health by them.
    pub health_probes_total: AtomicU64,
    pub health_transitions_total: AtomicU64,
    /// Requests refused by a rate limit.
    pub rate_limited_total: AtomicU64,
    /// Requests cut off because their body came too slowly.
    pub slow_bodies_total: AtomicU64,
    /// Requests refused by an access list.
    pub ip_denied_total: AtomicU64,
    /// Connections closed at once by a connection limit.
    pub connections_refused_total: AtomicU64,
    /// Global rate-limit checks the store could not answer, and what they did.
    pub ratelimit_store_errors_total: AtomicU64,
    pub ratelimit_store_fail_closed_total: AtomicU64,
    /// Requests and connections refused because a SourceBlock holds their client.
    pub blocked_requests_total: AtomicU64,
    pub blocked_connections_total: AtomicU64,
    /// Blocks made by adaptive blocking (and those only reported, in DryRun).
    pub sources_blocked_total: AtomicU64,
    pub sources_block_dry_run_total: AtomicU64,
    /// Requests of new sources adaptive blocking did not track (its tracker full).
    pub adaptive_untracked_total: AtomicU64,
    /// Requests answered 503 because their route's priority is being shed.
    pub requests_shed_total: AtomicU64,
    /// Endpoints held out as latency outliers, and canaries rolled back (or that would
    /// have been, in DryRun).
    pub endpoints_held_out_total: AtomicU64,
    /// TLS handshakes completed, by version (only 1.3 and 1.2 are offered).
    pub tls13_handshakes_total: AtomicU64,
    pub tls12_handshakes_total: AtomicU64,
    /// Requests of limited sources (SourceBlocks with a limit) over their limit.
    pub source_limited_total: AtomicU64,
    pub canary_rollbacks_total: AtomicU64,
    pub canary_rollbacks_dry_run_total: AtomicU64,
    /// How many route priorities are being shed (0: none).
    pub shed_priorities: AtomicU64,
}

/// Renders more metrics, in Prometheus text format, for a part of the process the data
/// plane does not know (the stream from a controller, say).
pub type ExtraMetrics = Arc<dyn Fn(&mut String) + Send + Sync>;

/// One route's counts so far.
#[derive(Debug, Clone, Default)]
pub struct RouteCounts {
    pub route: Arc<str>,
    pub requests: u64,
    /// Requests by status class (1xx to 5xx).
    pub classes: [u64; 5],
    pub latency_sum_micros: u64,
    /// Requests by latency bucket of [`BUCKETS`], the last slower than all.
    pub latency: [u64; BUCKETS.len() + 1],
    /// The proxy's own responses by reason ([`Reason::ALL`]'s order).
    pub reasons: [u64; Reason::ALL.len()],
}

/// All route stats by route name; survives Snapshot swaps so counters keep counting.
#[derive(Default)]
pub struct Metrics {
    routes: Mutex<HashMap<Arc<str>, Arc<RouteStats>>>,
    pub counters: Counters,
    /// Rendered after the data plane's own.
    pub extra: Mutex<Vec<ExtraMetrics>>,
    /// From a change reaching the object store to the data plane serving it.
    pub propagation: Propagation,
    /// Flow records of L4 connections.
    pub l4: crate::l4_flows::L4Flows,
}

/// Upper bounds (seconds) of the config propagation histogram.
pub const PROPAGATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// How long changes take to be served: a histogram, its sum and its count.
#[derive(Default)]
pub struct Propagation {
    buckets: [AtomicU64; PROPAGATION_BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Propagation {
    pub fn record(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = PROPAGATION_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// (per-bucket counts, not cumulative; sum in microseconds; count).
    pub fn read(&self) -> ([u64; PROPAGATION_BUCKETS.len()], u64, u64) {
        let mut b = [0; PROPAGATION_BUCKETS.len()];
        for (i, v) in self.buckets.iter().enumerate() {
            b[i] = v.load(Relaxed);
        }
        (b, self.sum_micros.load(Relaxed), self.count.load(Relaxed))
    }

    fn render(&self, out: &mut String) {
        let name = "gatehouse_config_propagation_seconds";
        let _ = writeln!(out, "# HELP {name} From a change reaching the object store to the data plane serving it.\n# TYPE {name} histogram");
        let (buckets, sum, count) = self.read();
        let mut cum = 0;
        for (b, bound) in buckets.iter().zip(PROPAGATION_BUCKETS) {
            cum += b;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", sum as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

impl Metrics {
    /// The stats for each route name, in order (called when a Snapshot is installed).
    pub fn stats_for(&self, names: &[Arc<str>]) -> Vec<Arc<RouteStats>> {
        let mut map = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        names
            .iter()
            .map(|n| map.entry(n.clone()).or_default().clone())
            .collect()
    }

    /// Stats for requests that matched no route.
    pub fn stats_named(&self, name: &str) -> Arc<RouteStats> {
        let mut map = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(Arc::from(name)).or_default().clone()
    }

    /// Per route with requests: its counts so far (for analytics and `/top`).
    pub fn route_counts(&self) -> Vec<RouteCounts> {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .iter()
            .filter_map(|(name, r)| {
                let mut c = RouteCounts {
                    route: name.clone(),
                    ..RouteCounts::default()
                };
                for (i, class) in r.classes.iter().enumerate() {
                    let Some(s) = class.get() else {
                        continue;
                    };
                    let n = s.count.load(Relaxed);
                    c.classes[i] = n;
                    c.requests += n;
                    c.latency_sum_micros += s.sum_micros.load(Relaxed);
                    let mut within = 0;
                    for (b, slot) in s.buckets.iter().enumerate() {
                        let v = slot.load(Relaxed);
                        c.latency[b] += v;
                        within += v;
                    }
                    c.latency[BUCKETS.len()] += n.saturating_sub(within);
                }
                (c.requests > 0).then(|| {
                    c.reasons = r.reasons();
                    c
                })
            })
            .collect()
    }

    /// Per route: requests by status class, latency over all of them (sum and counts by
    /// bucket of [`BUCKETS`], the last slower than all), and the proxy's own responses
    /// by reason, as counted so far.
    pub fn route_totals(&self) -> Vec<serde_json::Value> {
        let mut out: Vec<serde_json::Value> = self
            .route_counts()
            .into_iter()
            .map(|c| {
                let classes: serde_json::Map<String, serde_json::Value> = CLASSES
                    .iter()
                    .zip(c.classes)
                    .filter(|(_, n)| *n > 0)
                    .map(|(class, n)| (class.to_string(), n.into()))
                    .collect();
                let reasons: serde_json::Map<String, serde_json::Value> = c
                    .reasons
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v > 0)
                    .map(|(i, v)| (Reason::ALL[i].code().to_string(), (*v).into()))
                    .collect();
                serde_json::json!({
                    "route": &*c.route, "requests": c.requests, "classes": classes,
                    "latencySumMicros": c.latency_sum_micros, "latencyBuckets": c.latency.to_vec(),
                    "reasons": reasons,
                })
            })
            .collect();
        out.sort_by(|a, b| a["route"].as_str().cmp(&b["route"].as_str()));
        out
    }

    /// Renders everything in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let c = &self.counters;
        let scalar = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        scalar(
            &mut out,
            "gatehouse_config_version",
            "gauge",
            "Version of the Snapshot being served.",
            c.config_version.load(Relaxed),
        );
        scalar(
            &mut out,
            "gatehouse_shed_priorities",
            "gauge",
            "Route priorities being shed by surge protection (0: none).",
            c.shed_priorities.load(Relaxed),
        );
        self.propagation.render(&mut out);
        self.l4.render(&mut out);
        scalar(
            &mut out,
            "gatehouse_config_reloads_total",
            "counter",
            "Snapshots installed.",
            c.config_reloads_total.load(Relaxed),
        );
        scalar(
            &mut out,
            "gatehouse_config_rejected_total",
            "counter",
            "Configurations rejected as invalid.",
            c.config_rejected_total.load(Relaxed),
        );
        scalar(
            &mut out,
            "gatehouse_config_incremental_total",
            "counter",
            "Snapshots built by recompiling only the hosts a change touched.",
            c.config_incremental_total.load(Relaxed),
        );
        scalar(
            &mut out,
            "gatehouse_config_full_total",
            "counter",
            "Snapshots built by translating everything (Kubernetes source).",
            c.config_full_total.load(Relaxed),
        );
        scalar(
            &mut out,
            "gatehouse_endpoint_updates_total",
            "counter",
            "Endpoint-only changes applied in place, without a new Snapshot.",
            c.endpoint_updates_total.load(Relaxed),
        );
        scalar(
            &mut out,
            "gatehouse_downstream_connections_total",
            "counter",
            "Downstream connections accepted.",
            c.connections_total.load(Relaxed),
        );
        scalar(
            &mut out,
            "gatehouse_downstream_connections_active",
            "gauge",
            "Downstream connections open.",
            c.connections_active.load(Relaxed),
        );
        scalar(
            &mut out,
            "gatehouse_tls_handshake_errors_total",
            "counter",
            "Failed downstream TLS handshakes.",
            c.tls_handshake_errors_total.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP gatehouse_tls_handshakes_total Downstream TLS handshakes completed, by version.\n\
             # TYPE gatehouse_tls_handshakes_total counter\n\
             gatehouse_tls_handshakes_total{{version=\"TLSv1.3\"}} {}\n\
             gatehouse_tls_handshakes_total{{version=\"TLSv1.2\"}} {}",
            c.tls13_handshakes_total.load(Relaxed),
            c.tls12_handshakes_total.load(Relaxed)
        );
        scalar(
            &mut out,
            "gatehouse_upstream_errors_total",
            "counter",
            "Upstream connect, reset and timeout errors.",
            c.upstream_errors_total.load(Relaxed),
        );
        for (name, help, v) in [
            (
                "gatehouse_upstream_retries_total",
                "Upstream attempts after the first.",
                &c.upstream_retries_total,
            ),
            (
                "gatehouse_retry_budget_exhausted_total",
                "Retries not made because the retry budget was spent.",
                &c.retry_budget_exhausted_total,
            ),
            (
                "gatehouse_circuit_breaker_open_total",
                "Requests refused by a circuit breaker.",
                &c.circuit_breaker_open_total,
            ),
            (
                "gatehouse_mirror_requests_total",
                "Request copies sent by RequestMirror filters.",
                &c.mirror_requests_total,
            ),
            (
                "gatehouse_mirror_errors_total",
                "Request copies that failed.",
                &c.mirror_errors_total,
            ),
            (
                "gatehouse_health_probes_total",
                "Active health probes sent.",
                &c.health_probes_total,
            ),
            (
                "gatehouse_health_transitions_total",
                "Endpoints that turned healthy or unhealthy by active probes.",
                &c.health_transitions_total,
            ),
            (
                "gatehouse_rate_limited_total",
                "Requests refused with 429 by a rate limit.",
                &c.rate_limited_total,
            ),
            (
                "gatehouse_ratelimit_store_errors_total",
                "Global rate-limit checks the store (Redis) could not answer.",
                &c.ratelimit_store_errors_total,
            ),
            (
                "gatehouse_ratelimit_store_fail_closed_total",
                "Requests refused with 503 because a fail-closed Global limit's store was down.",
                &c.ratelimit_store_fail_closed_total,
            ),
            (
                "gatehouse_connections_refused_total",
                "Connections closed at once by a connection limit.",
                &c.connections_refused_total,
            ),
            (
                "gatehouse_ip_denied_total",
                "Requests refused with 403 by an access list.",
                &c.ip_denied_total,
            ),
            (
                "gatehouse_slow_bodies_total",
                "Requests cut off with 408 because their body came too slowly.",
                &c.slow_bodies_total,
            ),
            (
                "gatehouse_blocked_requests_total",
                "Requests refused with 403 because a SourceBlock holds their client.",
                &c.blocked_requests_total,
            ),
            (
                "gatehouse_blocked_connections_total",
                "Connections closed at once because a SourceBlock holds their client.",
                &c.blocked_connections_total,
            ),
            (
                "gatehouse_sources_blocked_total",
                "Sources blocked by adaptive blocking.",
                &c.sources_blocked_total,
            ),
            (
                "gatehouse_sources_block_dry_run_total",
                "Sources adaptive blocking would have blocked (DryRun).",
                &c.sources_block_dry_run_total,
            ),
            (
                "gatehouse_adaptive_untracked_requests_total",
                "Requests of new sources adaptive blocking did not track: its tracker was full.",
                &c.adaptive_untracked_total,
            ),
            (
                "gatehouse_source_limited_total",
                "Requests answered 429 because a SourceBlock's limit holds their client.",
                &c.source_limited_total,
            ),
            (
                "gatehouse_endpoints_held_out_total",
                "Endpoints held out of rotation as latency outliers (TrafficAdjustments made).",
                &c.endpoints_held_out_total,
            ),
            (
                "gatehouse_canary_rollbacks_total",
                "Canaries whose weight was set to 0 for failing more than their siblings.",
                &c.canary_rollbacks_total,
            ),
            (
                "gatehouse_canary_rollbacks_dry_run_total",
                "Canaries a DryRun policy would have rolled back.",
                &c.canary_rollbacks_dry_run_total,
            ),
            (
                "gatehouse_requests_shed_total",
                "Requests answered 503 by load shedding.",
                &c.requests_shed_total,
            ),
        ] {
            scalar(&mut out, name, "counter", help, v.load(Relaxed));
        }
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&Arc<str>> = routes.keys().collect();
        names.sort();
        out.push_str("# HELP gatehouse_http_requests_total HTTP requests by route and status class.\n# TYPE gatehouse_http_requests_total counter\n");
        for n in &names {
            for (i, class) in CLASSES.iter().enumerate() {
                let v = routes[*n].classes[i]
                    .get()
                    .map_or(0, |c| c.count.load(Relaxed));
                if v > 0 {
                    let _ = writeln!(out, "gatehouse_http_requests_total{{route=\"{}\",status_class=\"{class}\"}} {v}", escape(n));
                }
            }
        }
        out.push_str("# HELP gatehouse_http_request_duration_seconds Request latency by route and status class.\n# TYPE gatehouse_http_request_duration_seconds histogram\n");
        for n in &names {
            for (i, class) in CLASSES.iter().enumerate() {
                let Some(cs) = routes[*n].classes[i].get() else {
                    continue;
                };
                let count = cs.count.load(Relaxed);
                if count == 0 {
                    continue;
                }
                let labels = format!("route=\"{}\",status_class=\"{class}\"", escape(n));
                let mut cum = 0;
                for (b, bound) in BUCKETS.iter().enumerate() {
                    cum += cs.buckets[b].load(Relaxed);
                    let _ = writeln!(out, "gatehouse_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cum}");
                }
                let _ = writeln!(out, "gatehouse_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}");
                let sum = cs.sum_micros.load(Relaxed) as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "gatehouse_http_request_duration_seconds_sum{{{labels}}} {sum}"
                );
                let _ = writeln!(
                    out,
                    "gatehouse_http_request_duration_seconds_count{{{labels}}} {count}"
                );
            }
        }
        out.push_str("# HELP gatehouse_http_response_bytes_total Bytes of response bodies sent to clients, by route.\n# TYPE gatehouse_http_response_bytes_total counter\n");
        for n in &names {
            let v = routes[*n].sent_bytes.load(Relaxed);
            if v > 0 {
                let _ = writeln!(
                    out,
                    "gatehouse_http_response_bytes_total{{route=\"{}\"}} {v}",
                    escape(n)
                );
            }
        }
        out.push_str("# HELP gatehouse_http_responses_by_reason_total Responses the proxy made itself, by route and reason (no_route, rate_limited, waf, upstream_connect_failed...).\n# TYPE gatehouse_http_responses_by_reason_total counter\n");
        for n in &names {
            for (i, v) in routes[*n].reasons().iter().enumerate() {
                if *v > 0 {
                    let reason = Reason::ALL[i].code();
                    let _ = writeln!(out, "gatehouse_http_responses_by_reason_total{{route=\"{}\",reason=\"{reason}\"}} {v}", escape(n));
                }
            }
        }
        let extra = self.extra.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for render in extra {
            render(&mut out);
        }
        out
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        let s = m.stats_for(&[Arc::from("r1")]);
        s[0].record(200, Duration::from_millis(3));
        s[0].record(204, Duration::from_millis(30));
        s[0].record(503, Duration::from_micros(100));
        s[0].record_reason(Reason::CircuitOpen);
        s[0].record_reason(Reason::Upstream);
        let text = m.render();
        assert!(text.contains(
            "gatehouse_http_responses_by_reason_total{route=\"r1\",reason=\"circuit_open\"} 1"
        ));
        assert!(!text.contains("reason=\"upstream\""));
        assert!(
            text.contains("gatehouse_http_requests_total{route=\"r1\",status_class=\"2xx\"} 2"),
            "{text}"
        );
        assert!(text.contains("gatehouse_http_requests_total{route=\"r1\",status_class=\"5xx\"} 1"));
        assert!(text.contains("gatehouse_http_request_duration_seconds_bucket{route=\"r1\",status_class=\"2xx\",le=\"0.005\"} 1"));
        assert!(text.contains("gatehouse_http_request_duration_seconds_bucket{route=\"r1\",status_class=\"2xx\",le=\"0.05\"} 2"));
        assert!(text.contains(
            "gatehouse_http_request_duration_seconds_count{route=\"r1\",status_class=\"2xx\"} 2"
        ));
        // Stats survive a new Snapshot naming the same route.
        let again = m.stats_for(&[Arc::from("r1")]);
        assert!(Arc::ptr_eq(&s[0], &again[0]));
    }
}
