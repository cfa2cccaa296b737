//! The analytics of many keys (routes, edges): each tick, the counts a data plane made
//! since the last one become a point (rate, error ratio, p50 and p99 latency) kept in a
//! bounded history, and feed each signal's detector; anomalies become [`Event`]s kept in
//! a bounded list. Keys, points and events are all capped, so memory stays bounded
//! whatever the traffic.

use crate::detect::{Change, DetectorConfig, Event, Signal, SignalDetector};
use crate::quantile::quantile;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};

/// Sizes and thresholds.
#[derive(Debug, Clone)]
pub struct AnalyticsConfig {
    pub detector: DetectorConfig,
    /// Upper bounds (seconds) of the latency buckets observations carry.
    pub latency_bounds: Vec<f64>,
    /// Points kept per key.
    pub history: usize,
    /// Keys followed at most (others are counted, not followed).
    pub max_keys: usize,
    /// Events kept at most (the oldest ended ones go first).
    pub max_events: usize,
    /// Requests a tick needs before its error ratio and latency are judged.
    pub min_requests: u64,
    /// A key not observed for this many ticks is forgotten.
    pub forget_after: u64,
    /// Error ratio and latency are judged over this many ticks (a p99 of one second's
    /// requests is mostly noise).
    pub judge_window: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            detector: DetectorConfig::default(),
            latency_bounds: Vec::new(),
            history: 180,
            max_keys: 2000,
            max_events: 256,
            min_requests: 5,
            forget_after: 600,
            judge_window: 5,
        }
    }
}

/// What one key did during one tick.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub key: &'a str,
    pub requests: u64,
    /// Requests answered 5xx.
    pub errors: u64,
    /// Requests by latency bucket (`AnalyticsConfig::latency_bounds`, then one for those
    /// slower than all).
    pub latency: &'a [u64],
}

/// One key's tick, as kept and shown.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// ms since the Unix epoch.
    pub t: u64,
    pub rate: f64,
    pub error_ratio: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

struct KeyState {
    points: VecDeque<Point>,
    detectors: Vec<SignalDetector>,
    last_tick: u64,
    /// The last ticks' requests, errors and latency counts, and their sums.
    window: VecDeque<(u64, u64, Vec<u64>)>,
    sums: (u64, u64, Vec<u64>),
}

impl KeyState {
    /// Adds a tick to the judging window (dropping the oldest past `size`).
    fn slide(&mut self, o: &Observation<'_>, size: usize) {
        let (requests, errors, latency) = &mut self.sums;
        if latency.len() != o.latency.len() {
            *latency = vec![0; o.latency.len()];
            self.window.clear();
            *requests = 0;
            *errors = 0;
        }
        while self.window.len() >= size.max(1) {
            let Some((r, e, l)) = self.window.pop_front() else {
                break;
            };
            *requests -= r;
            *errors -= e;
            latency.iter_mut().zip(&l).for_each(|(s, v)| *s -= v);
        }
        *requests += o.requests;
        *errors += o.errors;
        latency.iter_mut().zip(o.latency).for_each(|(s, v)| *s += v);
        self.window
            .push_back((o.requests, o.errors, o.latency.to_vec()));
    }
}

/// Analytics over all keys.
pub struct Analytics {
    cfg: AnalyticsConfig,
    tick: u64,
    keys: HashMap<String, KeyState>,
    events: VecDeque<Event>,
    next_id: u64,
    /// Observations of keys past `max_keys`, not followed.
    pub unfollowed: u64,
}

impl Analytics {
    pub fn new(cfg: AnalyticsConfig) -> Self {
        Analytics {
            cfg,
            tick: 0,
            keys: HashMap::new(),
            events: VecDeque::new(),
            next_id: 1,
            unfollowed: 0,
        }
    }

    pub fn config(&self) -> &AnalyticsConfig {
        &self.cfg
    }

    /// Ticks so far.
    pub fn ticks(&self) -> u64 {
        self.tick
    }

    /// Takes one tick's observations (made at `now_ms`); returns the anomalies raised.
    pub fn observe(&mut self, now_ms: u64, observations: &[Observation<'_>]) -> Vec<Event> {
        self.tick += 1;
        let tick = self.tick;
        let mut raised = Vec::new();
        let secs = self.cfg.detector.tick_secs.max(1e-3);
        for o in observations {
            if !self.keys.contains_key(o.key) {
                if self.keys.len() >= self.cfg.max_keys {
                    self.unfollowed += 1;
                    continue;
                }
                let detectors = Signal::ALL
                    .iter()
                    .map(|s| SignalDetector::new(*s, &self.cfg.detector))
                    .collect();
                self.keys.insert(
                    o.key.to_string(),
                    KeyState {
                        points: VecDeque::with_capacity(self.cfg.history.min(64)),
                        detectors,
                        last_tick: tick,
                        window: VecDeque::new(),
                        sums: (0, 0, Vec::new()),
                    },
                );
            }
            let Some(state) = self.keys.get_mut(o.key) else {
                continue;
            };
            state.last_tick = tick;
            state.slide(o, self.cfg.judge_window);
            let bounds = &self.cfg.latency_bounds;
            let ms = |counts: &[u64], q| quantile(bounds, counts, q).map(|s| s * 1000.0);
            let point = Point {
                t: now_ms,
                rate: o.requests as f64 / secs,
                error_ratio: match o.requests {
                    0 => 0.0,
                    n => o.errors as f64 / n as f64,
                },
                p50_ms: ms(o.latency, 0.5),
                p99_ms: ms(o.latency, 0.99),
            };
            let (w_requests, w_errors, w_latency) = &state.sums;
            let judged = *w_requests >= self.cfg.min_requests;
            let w_ratio = *w_errors as f64 / (*w_requests).max(1) as f64;
            let w_p99 = ms(w_latency, 0.99);
            if state.points.len() >= self.cfg.history {
                state.points.pop_front();
            }
            state.points.push_back(point);
            for d in &mut state.detectors {
                let value = match d.signal {
                    Signal::Rate => Some(point.rate),
                    Signal::ErrorRatio => judged.then_some(w_ratio),
                    Signal::LatencyP99 => w_p99.filter(|_| judged),
                };
                let requests = match d.signal {
                    Signal::Rate => o.requests,
                    _ => *w_requests,
                };
                match d.tick(&self.cfg.detector, tick, value, requests as f64) {
                    Change::None => {}
                    Change::Raised {
                        kind,
                        observed,
                        expected,
                        score,
                        evidence,
                    } => {
                        let id = self.next_id;
                        self.next_id += 1;
                        d.raised_as(id);
                        let event = Event {
                            id,
                            key: o.key.to_string(),
                            kind,
                            signal: d.signal,
                            started_ms: now_ms,
                            started_tick: tick,
                            ended_ms: None,
                            observed,
                            expected,
                            score,
                            peak_score: score,
                            evidence,
                            resolution: None,
                        };
                        raised.push(event.clone());
                        self.events.push_back(event);
                    }
                    Change::Ongoing { id, score } => {
                        if let Some(e) = self.events.iter_mut().rev().find(|e| e.id == id) {
                            if score.abs() > e.peak_score.abs() {
                                e.peak_score = score;
                            }
                        }
                    }
                    Change::Ended { id, resolution } => {
                        if let Some(e) = self.events.iter_mut().rev().find(|e| e.id == id) {
                            e.ended_ms = Some(now_ms);
                            e.resolution = Some(resolution);
                        }
                    }
                }
            }
        }
        let forget = self.cfg.forget_after;
        self.keys
            .retain(|_, s| tick.saturating_sub(s.last_tick) <= forget);
        while self.events.len() > self.cfg.max_events {
            // The oldest ended event goes first; if none has ended, the oldest.
            let at = self
                .events
                .iter()
                .position(|e| e.ended_ms.is_some())
                .unwrap_or(0);
            self.events.remove(at);
        }
        raised
    }

    /// The keys followed.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(|k| k.as_str())
    }

    /// A key's points, oldest first.
    pub fn points(&self, key: &str) -> Option<&VecDeque<Point>> {
        self.keys.get(key).map(|s| &s.points)
    }

    /// A key's last point.
    pub fn latest(&self, key: &str) -> Option<&Point> {
        self.keys.get(key).and_then(|s| s.points.back())
    }

    /// A key's last `ticks` points summed up: their mean rate, the error ratio over all
    /// their requests, the highest p50 and p99; stamped with the last one's time.
    pub fn recent(&self, key: &str, ticks: usize) -> Option<Point> {
        let points = &self.keys.get(key)?.points;
        let last = *points.back()?;
        let n = ticks.clamp(1, points.len());
        let (mut rate, mut errors) = (0.0, 0.0);
        let (mut p50, mut p99) = (None::<f64>, None::<f64>);
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        for p in points.iter().rev().take(n) {
            rate += p.rate;
            errors += p.rate * p.error_ratio;
            p50 = max(p50, p.p50_ms);
            p99 = max(p99, p.p99_ms);
        }
        Some(Point {
            t: last.t,
            rate: rate / n as f64,
            error_ratio: if rate > 0.0 { errors / rate } else { 0.0 },
            p50_ms: p50,
            p99_ms: p99,
        })
    }

    /// The events kept, oldest first.
    pub fn events(&self) -> &VecDeque<Event> {
        &self.events
    }

    /// Whether `key` has an anomaly in progress.
    pub fn anomalous(&self, key: &str) -> bool {
        self.keys
            .get(key)
            .is_some_and(|s| s.detectors.iter().any(|d| d.active().is_some()))
    }

    /// A key's forecast rate (requests per second) for each of the next `ticks` ticks.
    pub fn forecast(&self, key: &str, ticks: u64) -> Vec<f64> {
        let Some(state) = self.keys.get(key) else {
            return Vec::new();
        };
        let Some(rate) = state.detectors.iter().find(|d| d.signal == Signal::Rate) else {
            return Vec::new();
        };
        (1..=ticks)
            .map(|h| {
                rate.baseline
                    .forecast(&self.cfg.detector.baseline, self.tick, h)
            })
            .collect()
    }

    /// A key's baseline now: expected rate, error ratio and p99 (ms), once learned.
    pub fn expected(&self, key: &str) -> Option<[f64; 3]> {
        let state = self.keys.get(key)?;
        let mut out = [0.0; 3];
        for (i, d) in state.detectors.iter().enumerate() {
            out[i] = d.baseline.expected(&self.cfg.detector.baseline, self.tick);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_points_and_events_stay_bounded() {
        let mut a = Analytics::new(AnalyticsConfig {
            history: 10,
            max_keys: 100,
            latency_bounds: vec![0.01, 0.1],
            ..AnalyticsConfig::default()
        });
        let names: Vec<String> = (0..1000).map(|i| format!("route-{i}")).collect();
        for t in 0..50 {
            let obs: Vec<_> = names
                .iter()
                .map(|k| Observation {
                    key: k,
                    requests: 10,
                    errors: 0,
                    latency: &[10, 0, 0],
                })
                .collect();
            a.observe(t, &obs);
        }
        assert_eq!(a.keys().count(), 100);
        assert_eq!(a.unfollowed, 900 * 50);
        assert!(a.points("route-1").is_some_and(|p| p.len() == 10));
        let p = a.latest("route-1").copied();
        assert!(p.is_some_and(|p| p.rate == 10.0 && p.p99_ms.is_some_and(|v| v <= 10.0)));
        let r = a.recent("route-1", 5).map(|p| (p.rate, p.error_ratio));
        assert_eq!(r, Some((10.0, 0.0)));
    }

    #[test]
    fn an_error_burst_becomes_an_event_and_ends() {
        let mut a = Analytics::new(AnalyticsConfig {
            latency_bounds: vec![0.01, 0.1],
            ..AnalyticsConfig::default()
        });
        let obs = |errors| Observation {
            key: "r",
            requests: 100,
            errors,
            latency: &[100, 0, 0],
        };
        for t in 0..100 {
            assert!(a.observe(t * 1000, &[obs(0)]).is_empty());
        }
        assert!(a.observe(100_000, &[obs(30)]).is_empty());
        let raised = a.observe(101_000, &[obs(30)]);
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(raised[0].kind, crate::EventKind::ErrorBurst);
        assert!(a.anomalous("r"));
        for t in 102..115 {
            a.observe(t * 1000, &[obs(0)]);
        }
        assert!(!a.anomalous("r"));
        assert_eq!(a.events()[0].resolution, Some("recovered"));
    }
}
