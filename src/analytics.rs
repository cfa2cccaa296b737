//! A data plane's analytics, wired: once a tick, off the hot path, each route's counts
//! since the last tick (from the data plane's lock-free counters) feed
//! [`gatehouse_telemetry::Analytics`]; anomalies become events in the security event
//! log and metrics; and the admin listener serves the dashboard (`/dashboard`) and its
//! data (`/api/dashboard`: the service map from the served Snapshot coloured by what
//! the routes did, per-route series with baselines and forecasts, anomalies and
//! security events).

use gatehouse_proxy::admin::AdminReply;
use gatehouse_proxy::metrics::{RouteCounts, BUCKETS};
use gatehouse_proxy::DataPlane;
use gatehouse_telemetry::policy_suggest::{edges_from_json, suggest, ObservedEdge, SuggestOptions};
use gatehouse_telemetry::{Analytics, AnalyticsConfig, Observation};
use gatehouse_translate::snapshot::{ActionKind, BackendTarget, Snapshot};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the analytics run.
#[derive(Debug, Clone)]
pub struct AnalyticsOptions {
    /// Time between two ticks.
    pub tick: Duration,
    /// Ticks learned before anomalies are raised.
    pub warm_up: u64,
    /// Node proxies' admin listeners whose flow edges the map and the suggested
    /// policies show.
    pub flows_from: Vec<String>,
}

impl Default for AnalyticsOptions {
    fn default() -> Self {
        AnalyticsOptions {
            tick: Duration::from_secs(1),
            warm_up: 60,
            flows_from: Vec::new(),
        }
    }
}

/// How often node proxies' edges are read.
const FLOWS_EVERY: Duration = Duration::from_secs(2);

/// The east-west edges last read from the node proxies.
#[derive(Default)]
struct EastWest {
    edges: Vec<ObservedEdge>,
    /// Proxies that could not be read last time, with why.
    errors: Vec<String>,
}

/// Points of each route's series the dashboard gets, and forecast ticks.
const SERIES_POINTS: usize = 120;
const FORECAST_TICKS: u64 = 30;
/// The time the map's edges sum up.
const MAP_WINDOW: Duration = Duration::from_secs(10);

/// The analytics of one data plane.
pub struct Running {
    pub analytics: Mutex<Analytics>,
    raised: AtomicU64,
    tick: Duration,
    east_west: Mutex<EastWest>,
    reads_flows: bool,
}

/// Starts the analytics of `dp`: the tick loop, the admin paths and the metrics.
pub fn start(dp: &Arc<DataPlane>, opts: &AnalyticsOptions) -> Arc<Running> {
    let mut cfg = AnalyticsConfig {
        latency_bounds: BUCKETS.to_vec(),
        ..AnalyticsConfig::default()
    };
    cfg.detector.warm_up = opts.warm_up;
    cfg.detector.tick_secs = opts.tick.as_secs_f64();
    let running = Arc::new(Running {
        analytics: Mutex::new(Analytics::new(cfg)),
        raised: AtomicU64::new(0),
        tick: opts.tick,
        east_west: Mutex::default(),
        reads_flows: !opts.flows_from.is_empty(),
    });
    if !opts.flows_from.is_empty() {
        read_flows(dp, running.clone(), opts.flows_from.clone());
    }
    {
        let weak_dp = Arc::downgrade(dp);
        let r = running.clone();
        let route: gatehouse_proxy::admin::AdminRoute = Arc::new(move |method, path, _query| {
            if method != hyper::Method::GET {
                return None;
            }
            match path {
                "/dashboard" | "/dashboard/" => Some(AdminReply {
                    status: 200,
                    content_type: "text/html; charset=utf-8",
                    body: gatehouse_telemetry::dashboard::INDEX_HTML.into(),
                }),
                "/api/dashboard" => {
                    let dp = weak_dp.upgrade()?;
                    Some(AdminReply {
                        status: 200,
                        content_type: "application/json",
                        body: dashboard_json(&dp, &r).to_string().into(),
                    })
                }
                _ => None,
            }
        });
        dp.admin_ext
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(route);
    }
    {
        let r = running.clone();
        let extra: gatehouse_proxy::metrics::ExtraMetrics = Arc::new(move |out: &mut String| {
            let a = r.analytics.lock().unwrap_or_else(|e| e.into_inner());
            let active = a.events().iter().filter(|e| e.ended_ms.is_none()).count();
            out.push_str(&format!(
                "# HELP gatehouse_anomalies_total Anomalies raised (rate, error ratio, latency).\n\
                 # TYPE gatehouse_anomalies_total counter\ngatehouse_anomalies_total {}\n\
                 # HELP gatehouse_anomalies_active Anomalies in progress.\n\
                 # TYPE gatehouse_anomalies_active gauge\ngatehouse_anomalies_active {active}\n\
                 # HELP gatehouse_analytics_keys Routes the analytics follow.\n\
                 # TYPE gatehouse_analytics_keys gauge\ngatehouse_analytics_keys {}\n",
                r.raised.load(Relaxed),
                a.keys().count()
            ));
        });
        dp.metrics
            .extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(extra);
    }
    let r = running.clone();
    let mut before: HashMap<Arc<str>, RouteCounts> = HashMap::new();
    dp.clone()
        .every(opts.tick, move |dp| tick(dp, &r, &mut before));
    running
}

/// Reads the node proxies' edges every [`FLOWS_EVERY`] until the data plane stops.
fn read_flows(dp: &DataPlane, r: Arc<Running>, admins: Vec<String>) {
    let mut stopping = dp.stopping();
    tokio::spawn(async move {
        loop {
            let mut edges = Vec::new();
            let mut errors = Vec::new();
            for admin in &admins {
                let read = async {
                    let body = crate::ctl::admin_get(admin, "/flows/edges").await?;
                    let doc: Value = serde_json::from_str(&body)?;
                    edges_from_json(&doc).map_err(|e| anyhow::anyhow!(e))
                };
                match tokio::time::timeout(FLOWS_EVERY, read).await {
                    Ok(Ok(e)) => edges.extend(e),
                    Ok(Err(e)) => errors.push(format!("{admin}: {e}")),
                    Err(_) => errors.push(format!("{admin}: no answer in time")),
                }
            }
            *r.east_west.lock().unwrap_or_else(|e| e.into_inner()) = EastWest { edges, errors };
            tokio::select! {
                _ = tokio::time::sleep(FLOWS_EVERY) => {}
                _ = stopping.changed() => return,
            }
        }
    });
}

/// One tick: the counts since the last tick, as observations.
fn tick(dp: &DataPlane, r: &Running, before: &mut HashMap<Arc<str>, RouteCounts>) {
    let now = dp.metrics.route_counts();
    let deltas: Vec<(Arc<str>, u64, u64, Vec<u64>)> = now
        .iter()
        .map(|c| {
            let zero = RouteCounts::default();
            let b = before.get(&c.route).unwrap_or(&zero);
            let latency = c
                .latency
                .iter()
                .zip(b.latency.iter())
                .map(|(n, o)| n.saturating_sub(*o))
                .collect();
            (
                c.route.clone(),
                c.requests.saturating_sub(b.requests),
                c.classes[4].saturating_sub(b.classes[4]),
                latency,
            )
        })
        .collect();
    let observations: Vec<Observation<'_>> = deltas
        .iter()
        .map(|(route, requests, errors, latency)| Observation {
            key: route,
            requests: *requests,
            errors: *errors,
            latency,
        })
        .collect();
    let now_ms = gatehouse_proxy::security_log::now_ms();
    let raised = r
        .analytics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .observe(now_ms, &observations);
    for e in raised {
        r.raised.fetch_add(1, Relaxed);
        tracing::warn!(route = %e.key, kind = e.kind.code(), observed = e.observed, expected = e.expected, score = e.score, "anomaly");
        gatehouse_proxy::security_log::event(
            dp,
            json!({
                "time": now_ms,
                "event": "anomaly",
                "route": e.key,
                "kind": e.kind.code(),
                "observed": e.observed,
                "expected": e.expected,
                "score": e.score,
                "evidence": e.evidence,
            }),
        );
    }
    before.clear();
    before.extend(now.into_iter().map(|c| (c.route.clone(), c)));
}

/// The dashboard's data.
pub fn dashboard_json(dp: &DataPlane, r: &Running) -> Value {
    let active = dp.current();
    let a = r.analytics.lock().unwrap_or_else(|e| e.into_inner());
    let mut routes: Vec<Value> = a
        .keys()
        .map(|key| {
            let points: Vec<_> = a
                .points(key)
                .map(|p| p.iter().rev().take(SERIES_POINTS).rev().copied().collect())
                .unwrap_or_default();
            let expected = a.expected(key);
            json!({
                "route": key,
                "points": points,
                "expected": expected.map(|e| json!({"rate": e[0], "errorRatio": e[1], "p99Ms": e[2]})),
                "forecastRate": a.forecast(key, FORECAST_TICKS),
                "anomalous": a.anomalous(key),
            })
        })
        .collect();
    routes.sort_by(|x, y| x["route"].as_str().cmp(&y["route"].as_str()));
    let anomalies: Vec<Value> = a
        .events()
        .iter()
        .rev()
        .map(|e| serde_json::to_value(e).unwrap_or_default())
        .collect();
    let security: Vec<Value> = dp
        .recent
        .last_failed(gatehouse_proxy::recent::FAILED_RING)
        .into_iter()
        .filter(|s| s.reason.is_security())
        .take(50)
        .map(|s| {
            let mut v = json!({
                "time": s.time_ms, "client": s.client.to_string(), "method": s.method.as_str(),
                "host": s.host.text(), "target": s.target.text(), "status": s.status,
                "reason": s.reason.code(), "route": s.route.as_deref(),
            });
            if let gatehouse_proxy::reason::Reason::Waf(rule) = s.reason {
                v["wafRule"] = rule.into();
            }
            v
        })
        .collect();
    let east_west = r.east_west.lock().unwrap_or_else(|e| e.into_inner());
    let mut map = service_map(&active.snapshot, &a, r.tick);
    add_east_west(&mut map, &east_west.edges);
    let suggested = match r.reads_flows {
        true => Some(suggest(&east_west.edges, &SuggestOptions::default())),
        false => None,
    };
    json!({
        "time": gatehouse_proxy::security_log::now_ms(),
        "version": active.snapshot.version,
        "suggestedPolicies": suggested,
        "adjustments": gatehouse_proxy::admin::adjustments_json(dp)["adjustments"].clone(),
        "blocks": gatehouse_proxy::admin::blocks_json(dp)["blocks"].clone(),
        "flowErrors": east_west.errors,
        "tickMs": r.tick.as_millis() as u64,
        "ticks": a.ticks(),
        "map": map,
        "routes": routes,
        "anomalies": anomalies,
        "security": security,
    })
}

/// The north-south service map: clients → each listener → the Services its routes
/// send to, each edge carrying the rate, error ratio and p99 of the routes on it, and
/// a health colour (`ok`, `warn`, `bad`, `idle`).
fn service_map(s: &Snapshot, a: &Analytics, tick: Duration) -> Value {
    // Edges show the last few seconds, so that a pause between requests is not idle.
    let map_ticks = (MAP_WINDOW.as_millis() / tick.as_millis().max(1)).max(1) as usize;
    // (listener, service) → routes on that edge.
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut nodes: BTreeMap<String, Value> = BTreeMap::new();
    nodes.insert(
        "clients".into(),
        json!({"id": "clients", "kind": "clients", "label": "clients"}),
    );
    for p in &s.ports {
        let listener = format!("listener:{}", p.addr);
        let owner = p.owners.first().cloned().unwrap_or_default();
        nodes.insert(
            listener.clone(),
            json!({"id": listener, "kind": "listener", "label": format!("{} {}", p.addr, owner)}),
        );
        for (_, section) in p.sections.entries() {
            let tables = section.hosts.entries();
            let actions = tables
                .iter()
                .flat_map(|(_, t)| t.entries().iter().map(|e| e.action.clone()))
                .chain(section.fallback.clone());
            for action in actions {
                let ActionKind::Forward { backends, .. } = &action.kind else {
                    continue;
                };
                for b in &backends.items {
                    let BackendTarget::Cluster(c) = &b.target else {
                        continue;
                    };
                    let service = format!(
                        "service:{}/{}:{}",
                        c.source.namespace, c.source.service, c.source.port
                    );
                    nodes.entry(service.clone()).or_insert_with(|| {
                        json!({
                            "id": service, "kind": "service",
                            "label": format!("{}/{}:{}", c.source.namespace, c.source.service, c.source.port),
                            "endpoints": c.endpoints().len(),
                            "unhealthy": c.unhealthy().len() + c.ejected().len(),
                        })
                    });
                    let routes = edges.entry((listener.clone(), service)).or_default();
                    if !routes.iter().any(|r| **r == *action.name) {
                        routes.push(action.name.to_string());
                    }
                }
            }
        }
    }
    let stats = |routes: &[String]| {
        let (mut rate, mut errors, mut p99, mut anomalous) = (0.0, 0.0, None::<f64>, false);
        for r in routes {
            if let Some(p) = a.recent(r, map_ticks) {
                rate += p.rate;
                errors += p.rate * p.error_ratio;
                p99 = match (p99, p.p99_ms) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                };
            }
            anomalous |= a.anomalous(r);
        }
        let ratio = if rate > 0.0 { errors / rate } else { 0.0 };
        let health = if anomalous || ratio >= 0.05 {
            "bad"
        } else if ratio >= 0.01 {
            "warn"
        } else if rate == 0.0 {
            "idle"
        } else {
            "ok"
        };
        (rate, ratio, p99, health)
    };
    let mut out_edges = Vec::new();
    let mut listener_routes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((from, to), routes) in &edges {
        let on = listener_routes.entry(from.clone()).or_default();
        for r in routes {
            if !on.contains(r) {
                on.push(r.clone());
            }
        }
        let (rate, ratio, p99, health) = stats(routes);
        out_edges.push(json!({
            "from": from, "to": to, "kind": "north-south", "routes": routes,
            "rate": rate, "errorRatio": ratio, "p99Ms": p99, "health": health,
        }));
    }
    for (listener, routes) in listener_routes {
        let (rate, ratio, p99, health) = stats(&routes);
        out_edges.push(json!({
            "from": "clients", "to": listener, "kind": "north-south", "routes": routes,
            "rate": rate, "errorRatio": ratio, "p99Ms": p99, "health": health,
        }));
    }
    json!({ "nodes": nodes.into_values().collect::<Vec<_>>(), "edges": out_edges })
}

/// Adds the east-west edges to the map: a node per caller identity (or "plaintext")
/// and per workload, an edge per pair with its calls, and a colour: bad if calls were
/// denied, warn if a dry-run policy would have denied some, else ok.
fn add_east_west(map: &mut Value, edges: &[ObservedEdge]) {
    // (caller, workload) → calls, denied, would-be denied.
    let mut pairs: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    for e in edges {
        let from = match &e.source {
            Some(id) => format!("identity:{}", gatehouse_translate::authz::principal_of(id)),
            None => "identity:plaintext".to_string(),
        };
        let p = pairs
            .entry((from, format!("workload:{}/{}", e.namespace, e.workload)))
            .or_default();
        p.0 += e.calls;
        p.1 += e.denied;
        p.2 += e.would_deny;
    }
    let mut nodes = map["nodes"].as_array().cloned().unwrap_or_default();
    let mut out = map["edges"].as_array().cloned().unwrap_or_default();
    let mut known: std::collections::BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_string))
        .collect();
    for ((from, to), (calls, denied, would_deny)) in &pairs {
        for (id, kind) in [(from, "identity"), (to, "workload")] {
            if known.insert(id.clone()) {
                let label = id.split_once(':').map_or(id.as_str(), |(_, l)| l);
                nodes.push(json!({"id": id, "kind": kind, "label": label}));
            }
        }
        let health = match (denied, would_deny) {
            (0, 0) => "ok",
            (0, _) => "warn",
            _ => "bad",
        };
        out.push(json!({
            "from": from, "to": to, "kind": "east-west", "routes": [],
            "calls": calls, "denied": denied, "wouldDeny": would_deny,
            "health": health,
        }));
    }
    map["nodes"] = Value::Array(nodes);
    map["edges"] = Value::Array(out);
}
