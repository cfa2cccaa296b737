//! The adaptive traffic controls, off the hot path. Once a second, from the per-endpoint
//! counts requests leave behind (answered, failed, time to the response head):
//! - **latency outliers**: in a cluster whose policy sets `outlierDetection.latencyFactor`,
//!   an endpoint whose mean latency over the interval is that many times the median
//!   endpoint's, and [`MIN_EXCESS`] more, is held out of rotation;
//! - **canary rollback**: in a route rule whose policy sets `canaryRollback`, the lightest
//!   backend (the canary) whose error ratio over the interval reaches the policy's floor
//!   and its multiple of the other backends' gets weight 0.
//!
//! Like adaptive blocking, they change nothing themselves: each decision is a
//! `TrafficAdjustment` object in the generated set, which the config loop serves like any
//! other change, which lists and deletes like any other object, and which ends when it
//! expires. Each is an event and a counter; a `DryRun` canary policy only logs.

use crate::dataplane::DataPlane;
use gatehouse_model::policy::{TrafficAdjustment, TrafficAdjustmentSpec};
use gatehouse_model::{Object, ObjectKey, StoredObject};
use gatehouse_translate::cluster::Cluster;
use gatehouse_translate::snapshot::{CanaryGuard, Snapshot};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the controls look.
pub const TICK: Duration = Duration::from_secs(1);
/// How much slower than the median an outlier must be, besides the factor.
pub const MIN_EXCESS: Duration = Duration::from_millis(5);

use gatehouse_translate::endpoint::EndpointCounts as Counts;

/// A window: when it started, and the counts then (by endpoint, or by backend).
struct Window<K> {
    since: Instant,
    start: HashMap<K, Counts>,
}

impl<K: std::hash::Hash + Eq + Clone> Window<K> {
    /// Once `interval` has passed since the window started: each key's counts over it,
    /// and a new window starting from `now`'s counts.
    fn take(
        &mut self,
        now: Instant,
        counts: HashMap<K, Counts>,
        interval: Duration,
    ) -> Option<HashMap<K, Counts>> {
        if now.duration_since(self.since) < interval {
            return None;
        }
        let delta = counts
            .iter()
            .map(|(k, n)| {
                (
                    k.clone(),
                    n.since(self.start.get(k).copied().unwrap_or_default()),
                )
            })
            .collect();
        *self = Window {
            since: now,
            start: counts,
        };
        Some(delta)
    }
}

/// The window of `key` in `windows`, started now from `counts` if it is new.
fn window<'a, W: std::hash::Hash + Eq, K: Clone>(
    windows: &'a mut HashMap<W, Window<K>>,
    key: W,
    now: Instant,
    counts: &HashMap<K, Counts>,
) -> &'a mut Window<K> {
    windows.entry(key).or_insert_with(|| Window {
        since: now,
        start: counts.clone(),
    })
}

/// What the controls remember between ticks.
#[derive(Default)]
pub struct Controls {
    /// Per cluster name.
    latency: HashMap<String, Window<SocketAddr>>,
    /// Per (namespace, route, rule).
    canaries: HashMap<(String, String, usize), Window<String>>,
}

/// Runs the controls until the data plane shuts down.
pub fn spawn(dp: Arc<DataPlane>) -> tokio::task::JoinHandle<()> {
    let mut controls = Controls::default();
    dp.every(TICK, move |dp| controls.tick(dp, Instant::now()))
}

impl Controls {
    /// One look at every watched cluster and route rule.
    pub fn tick(&mut self, dp: &DataPlane, now: Instant) {
        let active = dp.current();
        let s = &active.snapshot;
        let mut made = Vec::new();
        self.latency_outliers(dp, s, now, &mut made);
        self.canary_rollbacks(dp, s, now, &mut made);
        dp.generated.insert(made);
    }

    fn latency_outliers(
        &mut self,
        dp: &DataPlane,
        s: &Snapshot,
        now: Instant,
        made: &mut Vec<(StoredObject, u64)>,
    ) {
        let mut watched = Vec::new();
        for c in s.clusters.values() {
            let Some(policy) = c.policy.outlier.as_ref().and_then(|o| o.latency.clone()) else {
                continue;
            };
            watched.push(c.name.clone());
            let counts: HashMap<SocketAddr, Counts> = c.endpoint_counts().into_iter().collect();
            let w = window(&mut self.latency, c.name.clone(), now, &counts);
            let Some(delta) = w.take(now, counts, policy.interval) else {
                continue;
            };
            let judged: Vec<(SocketAddr, u64, f64)> = delta
                .into_iter()
                .filter(|(a, d)| {
                    !c.policy.held_out.contains(a) && d.answered >= u64::from(policy.min_requests)
                })
                .map(|(a, d)| (a, d.answered, d.latency_us as f64 / d.answered as f64))
                .collect();
            if judged.len() < 2 {
                continue;
            }
            let mut means: Vec<f64> = judged.iter().map(|j| j.2).collect();
            means.sort_by(f64::total_cmp);
            let median = means[(means.len() - 1) / 2];
            let factor = f64::from(policy.factor_milli) / 1000.0;
            let allowed = match c
                .policy
                .outlier
                .as_ref()
                .map_or(10, |o| o.max_ejection_percent)
            {
                0 => 0,
                p => (c.endpoints().len() * p as usize / 100).max(1),
            };
            let room = allowed.saturating_sub(c.policy.held_out.len());
            let mut slow: Vec<_> = judged
                .iter()
                .filter(|(_, _, mean)| {
                    *mean >= factor * median && *mean - median >= MIN_EXCESS.as_micros() as f64
                })
                .collect();
            // The slowest first, as many as the ejection limit leaves room for.
            slow.sort_by(|a, b| b.2.total_cmp(&a.2));
            for (addr, answered, mean) in slow.into_iter().take(room) {
                let base = c
                    .policy
                    .outlier
                    .as_ref()
                    .map_or(Duration::from_secs(30), |o| o.base_ejection);
                let reason = format!(
                    "mean latency {:.1} ms over {} requests in {}s, {:.1} times the median endpoint's {:.1} ms",
                    mean / 1000.0,
                    answered,
                    policy.interval.as_secs(),
                    mean / median.max(1.0),
                    median / 1000.0
                );
                dp.metrics
                    .counters
                    .endpoints_held_out_total
                    .fetch_add(1, Relaxed);
                event(
                    dp,
                    "endpoint_held_out",
                    c,
                    &reason,
                    serde_json::json!({"endpoint": addr.to_string(), "held_for_seconds": base.as_secs()}),
                );
                made.push(adjustment(
                    &c.source.namespace,
                    &format!("eject-{}-{}", c.source.service, addr),
                    TrafficAdjustmentSpec {
                        action: "EjectEndpoint".into(),
                        service: c.source.service.clone(),
                        endpoint: Some(addr.to_string()),
                        reason: Some(reason),
                        policy: c.policy.from.clone(),
                        ..Default::default()
                    },
                    base,
                ));
            }
        }
        self.latency.retain(|name, _| watched.contains(name));
    }

    fn canary_rollbacks(
        &mut self,
        dp: &DataPlane,
        s: &Snapshot,
        now: Instant,
        made: &mut Vec<(StoredObject, u64)>,
    ) {
        let mut watched = Vec::new();
        for g in &s.canaries {
            let key = (g.namespace.clone(), g.route.clone(), g.rule);
            watched.push(key.clone());
            let counts: HashMap<String, Counts> = g
                .backends
                .iter()
                .map(|(service, _, cluster)| (service.clone(), cluster_counts(s, cluster)))
                .collect();
            let w = window(&mut self.canaries, key, now, &counts);
            let Some(delta) = w.take(now, counts, g.policy.interval) else {
                continue;
            };
            if let Some((canary, reason)) = judge_canary(g, &delta) {
                let name = format!("rollback-{}-{}", g.route, canary);
                if dp.generated.contains(&key_of(&g.namespace, &name)) {
                    continue;
                }
                let counter = match g.policy.dry_run {
                    true => &dp.metrics.counters.canary_rollbacks_dry_run_total,
                    false => &dp.metrics.counters.canary_rollbacks_total,
                };
                counter.fetch_add(1, Relaxed);
                let what = match g.policy.dry_run {
                    true => "canary_would_roll_back",
                    false => "canary_rolled_back",
                };
                crate::security_log::event(
                    dp,
                    serde_json::json!({
                        "time": crate::security_log::now_ms(),
                        "event": what,
                        "route": format!("HTTPRoute {}/{} rule {}", g.namespace, g.route, g.rule),
                        "backend": canary,
                        "reason": reason,
                        "policy": g.from,
                    }),
                );
                tracing::warn!(route = %g.route, backend = %canary, %reason, dry_run = g.policy.dry_run, "canary rollback");
                if !g.policy.dry_run {
                    made.push(adjustment(
                        &g.namespace,
                        &name,
                        TrafficAdjustmentSpec {
                            action: "SetWeight".into(),
                            service: canary.to_string(),
                            route: Some(g.route.clone()),
                            weight: Some(0),
                            reason: Some(reason),
                            policy: g.from.clone(),
                            ..Default::default()
                        },
                        g.policy.hold_for,
                    ));
                }
            }
        }
        self.canaries.retain(|k, _| watched.contains(k));
    }
}

/// The canary of a rule (its lightest backend, when weights differ) and why it fails,
/// from each backend's counts over the window.
fn judge_canary(g: &CanaryGuard, delta: &HashMap<String, Counts>) -> Option<(String, String)> {
    let lightest = g.backends.iter().map(|b| b.1).min()?;
    let heaviest = g.backends.iter().map(|b| b.1).max()?;
    if lightest == heaviest {
        return None;
    }
    let canary = g.backends.iter().find(|b| b.1 == lightest)?;
    let c = delta.get(&canary.0).copied().unwrap_or_default();
    if c.answered < u64::from(g.policy.min_requests) {
        return None;
    }
    let mut base = Counts::default();
    for b in g.backends.iter().filter(|b| b.0 != canary.0) {
        base.add(delta.get(&b.0).copied().unwrap_or_default());
    }
    let ratio = c.failed as f64 / c.answered as f64;
    let baseline = match base.answered {
        0 => 0.0,
        n => base.failed as f64 / n as f64,
    };
    let floor = f64::from(g.policy.min_error_ratio_ppm) / 1e6;
    let multiplier = f64::from(g.policy.baseline_multiplier_milli) / 1000.0;
    if ratio >= floor && ratio >= multiplier * baseline && ratio > baseline {
        let reason = format!(
            "{:.1}% of {} requests failed in {}s, against {:.1}% of the other backends' {}",
            ratio * 100.0,
            c.answered,
            g.policy.interval.as_secs(),
            baseline * 100.0,
            base.answered
        );
        return Some((canary.0.clone(), reason));
    }
    None
}

/// The sum of a cluster's endpoints' counts.
fn cluster_counts(s: &Snapshot, name: &str) -> Counts {
    s.clusters.get(name).map(|c| c.counts()).unwrap_or_default()
}

fn key_of(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind: "TrafficAdjustment",
        namespace: Some(namespace.to_string()),
        name: name.to_string(),
    }
}

/// A `TrafficAdjustment` that ends `term` from now, and its end (ms since the epoch).
fn adjustment(
    namespace: &str,
    name: &str,
    mut spec: TrafficAdjustmentSpec,
    term: Duration,
) -> (StoredObject, u64) {
    let now_ms = crate::security_log::now_ms();
    let until = now_ms.saturating_add(term.as_millis() as u64);
    spec.expires_at = gatehouse_translate::adaptive::rfc3339(until);
    let mut object =
        TrafficAdjustment::new(&gatehouse_translate::adaptive::object_name(name), spec);
    gatehouse_translate::adaptive::mark_made(&mut object.metadata, namespace, "traffic-controls");
    (StoredObject::new(Object::TrafficAdjustment(object)), until)
}

fn event(dp: &DataPlane, what: &str, c: &Cluster, reason: &str, more: serde_json::Value) {
    let mut e = serde_json::json!({
        "time": crate::security_log::now_ms(),
        "event": what,
        "service": format!("{}/{}", c.source.namespace, c.source.service),
        "cluster": c.name,
        "reason": reason,
        "policy": c.policy.from,
    });
    if let (Some(e), serde_json::Value::Object(more)) = (e.as_object_mut(), more) {
        e.extend(more);
    }
    tracing::warn!("{e}");
    crate::security_log::event(dp, e);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(weights: &[(&str, u32)]) -> CanaryGuard {
        CanaryGuard {
            namespace: "shop".into(),
            route: "web".into(),
            rule: 0,
            policy: gatehouse_translate::cluster::CanaryPolicy {
                min_error_ratio_ppm: 50_000,
                baseline_multiplier_milli: 2000,
                min_requests: 20,
                interval: Duration::from_secs(10),
                hold_for: Duration::from_secs(600),
                dry_run: false,
            },
            from: Some("shop/canary".into()),
            backends: weights
                .iter()
                .map(|(s, w)| (s.to_string(), *w, format!("shop/{s}:80")))
                .collect(),
        }
    }

    fn counts(answered: u64, failed: u64) -> Counts {
        Counts {
            answered,
            failed,
            latency_us: 0,
        }
    }

    fn deltas(list: &[(&str, Counts)]) -> HashMap<String, Counts> {
        list.iter().map(|(k, c)| (k.to_string(), *c)).collect()
    }

    #[test]
    fn a_failing_canary_is_judged_against_its_siblings() {
        let g = guard(&[("stable", 90), ("canary", 10)]);
        let bad = deltas(&[("stable", counts(900, 9)), ("canary", counts(100, 30))]);
        let (who, why) = judge_canary(&g, &bad).expect("rolled back");
        assert_eq!(who, "canary");
        assert!(why.starts_with("30.0% of 100 requests failed"), "{why}");
        // Failing no worse than the stable backends: kept.
        let both = deltas(&[("stable", counts(900, 270)), ("canary", counts(100, 30))]);
        assert_eq!(judge_canary(&g, &both), None);
        // Too few requests to judge.
        let few = deltas(&[("stable", counts(900, 0)), ("canary", counts(10, 10))]);
        assert_eq!(judge_canary(&g, &few), None);
        // Equal weights: no canary.
        let even = guard(&[("a", 50), ("b", 50)]);
        let d = deltas(&[("a", counts(100, 0)), ("b", counts(100, 100))]);
        assert_eq!(judge_canary(&even, &d), None);
    }
}
