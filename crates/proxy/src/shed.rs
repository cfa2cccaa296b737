//! Surge protection: when the backends are overloaded, requests to the routes of the
//! lowest priority get 503 so that the others keep being served. Four times a second,
//! off the hot path, the controller reads the requests in flight to all backends and
//! the latency of the requests sent to backends since its last look (the 90th
//! percentile, from the routes' forwarded-request histograms: the proxy's own answers
//! are not in them), and compares them with the Snapshot's surge limits. Over a
//! limit, it sheds one more priority (never the highest), then waits half a second to
//! see the effect; once both are under 80% of their limits for two seconds, it serves
//! one priority more again. The hot path reads one atomic: the lowest priority served.

use crate::body::Body;
use crate::dataplane::DataPlane;
use crate::handler::error;
use crate::metrics::BUCKETS;
use http::{header, HeaderValue, Response, StatusCode};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// How often the controller looks.
pub const TICK: Duration = Duration::from_millis(250);
/// Ticks to wait after shedding one more priority before shedding another.
const HOLD_TICKS: u32 = 2;
/// Calm ticks before one priority is served again.
const CALM_TICKS: u32 = 8;
/// Answers needed in a tick for its latency to count.
const MIN_SAMPLES: u64 = 20;

/// Whether a route of `priority` is being shed now.
pub fn shedding(dp: &DataPlane, priority: i32) -> bool {
    i64::from(priority) < dp.shed_below.load(Relaxed)
}

/// The answer to a shed request.
pub fn shed_response(dp: &DataPlane) -> Response<Body> {
    dp.metrics
        .counters
        .requests_shed_total
        .fetch_add(1, Relaxed);
    let mut resp = error(
        StatusCode::SERVICE_UNAVAILABLE,
        crate::reason::Reason::Shed,
        "overloaded: lower-priority requests are shed; retry shortly",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// The lowest priority served when the lowest `level` priorities are shed.
fn cutoff(level: usize, priorities: &[i32]) -> i64 {
    match level {
        0 => i64::MIN,
        l => priorities.get(l).map_or(i64::MIN, |p| i64::from(*p)),
    }
}

/// What the controller remembers between looks.
#[derive(Debug, Default)]
pub struct Controller {
    /// Priorities shed (the lowest `level` of the Snapshot's list).
    level: usize,
    hold: u32,
    calm: u32,
    last: Option<[u64; SLOTS]>,
}

/// The load the controller saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    pub in_flight: u64,
    /// The 90th percentile of the answers since the last look, if there were enough.
    pub p90: Option<Duration>,
}

/// Latency buckets: `BUCKETS`, and one slower than all.
const SLOTS: usize = BUCKETS.len() + 1;

/// The `q` quantile of histogram counts `counts` (per bucket, of `BUCKETS` and one
/// past them), within its bucket by linear interpolation.
fn quantile(counts: &[u64; SLOTS], q: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total < MIN_SAMPLES {
        return None;
    }
    let rank = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (i, &n) in counts.iter().enumerate().take(BUCKETS.len()) {
        if n > 0 && seen + n >= rank {
            let lo = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
            let frac = (rank - seen) as f64 / n as f64;
            return Some(Duration::from_secs_f64(lo + (BUCKETS[i] - lo) * frac));
        }
        seen += n;
    }
    // Past the last bucket: slower than its bound.
    BUCKETS.last().map(|b| Duration::from_secs_f64(*b))
}

impl Controller {
    /// Reads the load now.
    fn measure(&mut self, active: &crate::dataplane::Active) -> Load {
        let in_flight = active
            .snapshot
            .clusters
            .values()
            .map(|c| c.in_flight() as u64)
            .sum();
        let mut now = [0u64; SLOTS];
        let mut seen = std::collections::HashSet::new();
        for s in &active.stats {
            if seen.insert(Arc::as_ptr(s)) {
                for (n, b) in now.iter_mut().zip(s.forwarded_buckets()) {
                    *n += b;
                }
            }
        }
        let delta = self.last.map(|last| {
            let mut d = [0u64; SLOTS];
            for ((d, n), l) in d.iter_mut().zip(now).zip(last) {
                *d = n.saturating_sub(l);
            }
            d
        });
        self.last = Some(now);
        Load {
            in_flight,
            p90: delta.and_then(|d| quantile(&d, 0.9)),
        }
    }

    /// One look: measures, decides, and publishes the lowest priority served.
    pub fn tick(&mut self, dp: &DataPlane) {
        let active = dp.current();
        let load = self.measure(&active);
        let Some(limits) = active.snapshot.surge.clone() else {
            if self.level > 0 {
                self.set(dp, 0, &[], load, "surge limits removed");
            }
            return;
        };
        let over_flight = limits
            .max_concurrent
            .is_some_and(|m| load.in_flight > u64::from(m));
        let over_latency = matches!((limits.max_latency, load.p90), (Some(m), Some(p)) if p > m);
        let calm_flight = limits
            .max_concurrent
            .is_none_or(|m| (load.in_flight as f64) < f64::from(m) * 0.8);
        let calm_latency = match (limits.max_latency, load.p90) {
            (Some(m), Some(p)) => p.as_secs_f64() < m.as_secs_f64() * 0.8,
            _ => true,
        };
        let top = limits.priorities.len().saturating_sub(1);
        if self.level > top {
            self.set(dp, top, &limits.priorities, load, "priorities changed");
        }
        let level = self.level;
        // The priorities may have changed under the same level: the cutoff follows.
        dp.shed_below
            .store(cutoff(level, &limits.priorities), Relaxed);
        self.hold = self.hold.saturating_sub(1);
        if over_flight || over_latency {
            self.calm = 0;
            if self.hold == 0 && level < top {
                let why = if over_flight {
                    "requests in flight over maxConcurrentRequests"
                } else {
                    "backend latency over maxLatency"
                };
                self.hold = HOLD_TICKS;
                self.set(dp, level + 1, &limits.priorities, load, why);
            }
        } else if calm_flight && calm_latency {
            self.calm += 1;
            if self.calm >= CALM_TICKS && level > 0 {
                self.calm = 0;
                self.set(
                    dp,
                    level - 1,
                    &limits.priorities,
                    load,
                    "load back under limits",
                );
            }
        } else {
            self.calm = 0;
        }
    }

    fn set(&mut self, dp: &DataPlane, level: usize, priorities: &[i32], load: Load, why: &str) {
        self.level = level;
        let below = cutoff(level, priorities);
        dp.shed_below.store(below, Relaxed);
        dp.metrics
            .counters
            .shed_priorities
            .store(level as u64, Relaxed);
        crate::security_log::event(
            dp,
            serde_json::json!({
                "time": crate::security_log::now_ms(),
                "event": if level > 0 { "load_shedding" } else { "load_shedding_ended" },
                "reason": why,
                "priorities_shed": level,
                "lowest_priority_served": (level > 0).then_some(below),
                "in_flight": load.in_flight,
                "p90_ms": load.p90.map(|p| p.as_secs_f64() * 1000.0),
                "action": if level > 0 { "shed" } else { "serve" },
            }),
        );
    }
}

/// Runs the controller until the data plane shuts down.
pub fn spawn(dp: Arc<DataPlane>) -> tokio::task::JoinHandle<()> {
    let mut c = Controller::default();
    dp.clone().every(TICK, move |dp| c.tick(dp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_within_a_bucket() {
        let mut counts = [0u64; SLOTS];
        assert_eq!(quantile(&counts, 0.9), None);
        // 90 answers under 0.5 ms, 10 between 0.1 s and 0.25 s.
        counts[0] = 90;
        counts[8] = 10;
        let p90 = quantile(&counts, 0.9).expect("enough");
        assert!(p90 <= Duration::from_micros(500), "{p90:?}");
        let p95 = quantile(&counts, 0.95).expect("enough");
        assert!(
            (Duration::from_millis(150)..=Duration::from_millis(200)).contains(&p95),
            "{p95:?}"
        );
        // Slower than every bucket.
        counts[BUCKETS.len()] = 100;
        assert_eq!(quantile(&counts, 0.9), Some(Duration::from_secs(10)));
    }
}
