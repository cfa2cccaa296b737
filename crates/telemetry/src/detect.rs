//! Anomaly detection on one signal of one key: each tick's value is scored against its
//! baseline (`z`: the residual over the larger of the learned scale and a noise floor
//! that suits the signal), and an anomaly is raised when
//! - the score stays past `z_raise` for `confirm` ticks in a row (a latency spike, an
//!   error burst, a traffic surge or drop), or
//! - the fast level drifts from the slow reference, accumulated by a one-sided CUSUM
//!   (a slow leak that the fast baseline would otherwise learn).
//!
//! An anomaly ends when the score stays under `z_clear` for `clear` ticks, or, if it
//! lasts `new_normal` ticks, when the baseline is reset to the new level.

use crate::baseline::{Baseline, BaselineConfig};
use serde::Serialize;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Requests per second.
    Rate,
    /// The share of requests answered 5xx.
    ErrorRatio,
    /// The 99th percentile of latency, in milliseconds.
    LatencyP99,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Rate, Signal::ErrorRatio, Signal::LatencyP99];

    /// The smallest residual that counts as one unit of noise, given the expected value
    /// and the requests behind the tick's value: Poisson noise for counts, binomial for
    /// ratios, and for a p99 a share of the value that grows as the requests behind it
    /// shrink (the p99 of a hundred requests is their slowest one or two).
    fn floor(self, expected: f64, requests: f64, tick_secs: f64) -> f64 {
        match self {
            Signal::Rate => {
                let per_tick = expected * tick_secs;
                (per_tick.max(1.0).sqrt() / tick_secs).max(0.08 * expected)
            }
            Signal::ErrorRatio => {
                let p = expected.clamp(0.002, 0.5);
                (p * (1.0 - p) / requests.max(1.0)).sqrt().max(0.01)
            }
            Signal::LatencyP99 => expected * (0.2 + 1.5 / requests.max(1.0).sqrt()) + 1.0,
        }
    }
}

/// The kind of an anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    LatencySpike,
    ErrorBurst,
    TrafficSurge,
    TrafficDrop,
    /// A slow rise of latency (a leak).
    LatencyDrift,
    /// A slow rise of the error ratio.
    ErrorDrift,
}

impl EventKind {
    pub fn code(self) -> &'static str {
        match self {
            EventKind::LatencySpike => "latency_spike",
            EventKind::ErrorBurst => "error_burst",
            EventKind::TrafficSurge => "traffic_surge",
            EventKind::TrafficDrop => "traffic_drop",
            EventKind::LatencyDrift => "latency_drift",
            EventKind::ErrorDrift => "error_drift",
        }
    }

    pub fn signal(self) -> Signal {
        match self {
            EventKind::LatencySpike | EventKind::LatencyDrift => Signal::LatencyP99,
            EventKind::ErrorBurst | EventKind::ErrorDrift => Signal::ErrorRatio,
            EventKind::TrafficSurge | EventKind::TrafficDrop => Signal::Rate,
        }
    }
}

/// One anomaly, with its evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: u64,
    /// What it is about (`route:NAME`, `edge:A->B`).
    pub key: String,
    pub kind: EventKind,
    pub signal: Signal,
    /// When it was raised (ms since the Unix epoch) and at which tick.
    pub started_ms: u64,
    pub started_tick: u64,
    /// When it ended, if it has.
    pub ended_ms: Option<u64>,
    /// The value that raised it, and what the baseline expected.
    pub observed: f64,
    pub expected: f64,
    /// The score that raised it (in units of noise), and the highest since.
    pub score: f64,
    pub peak_score: f64,
    /// The values of the ticks that raised it, oldest first.
    pub evidence: Vec<f64>,
    /// How it ended (`recovered`, `new_normal`), if it has.
    pub resolution: Option<&'static str>,
}

/// Thresholds of the detector.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    pub baseline: BaselineConfig,
    /// Ticks learned before anything is raised.
    pub warm_up: u64,
    pub z_raise: f64,
    pub confirm: u32,
    pub z_clear: f64,
    pub clear: u32,
    /// CUSUM allowance and threshold, in units of noise, and the least relative drift.
    pub drift_k: f64,
    pub drift_h: f64,
    pub drift_min: f64,
    /// Ticks after which a lasting anomaly is taken as the new normal.
    pub new_normal: u32,
    /// Seconds per tick.
    pub tick_secs: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            baseline: BaselineConfig::default(),
            warm_up: 60,
            z_raise: 4.0,
            confirm: 2,
            z_clear: 2.0,
            clear: 5,
            drift_k: 1.0,
            drift_h: 15.0,
            drift_min: 0.2,
            new_normal: 600,
            tick_secs: 1.0,
        }
    }
}

/// The state of one signal of one key.
#[derive(Debug, Clone)]
pub struct SignalDetector {
    pub signal: Signal,
    pub baseline: Baseline,
    over: u32,
    under: u32,
    cusum: f64,
    /// The anomaly in progress (its kind, id and ticks so far).
    active: Option<(EventKind, u64, u32)>,
    /// The values of the last `confirm` ticks.
    recent: Vec<f64>,
}

/// What a tick did.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    None,
    /// An anomaly was raised (its kind, value, expectation, score, evidence).
    Raised {
        kind: EventKind,
        observed: f64,
        expected: f64,
        score: f64,
        evidence: Vec<f64>,
    },
    /// The anomaly in progress scored this (its peak is kept by the caller).
    Ongoing {
        id: u64,
        score: f64,
    },
    /// The anomaly in progress ended.
    Ended {
        id: u64,
        resolution: &'static str,
    },
}

impl SignalDetector {
    pub fn new(signal: Signal, cfg: &DetectorConfig) -> Self {
        SignalDetector {
            signal,
            baseline: Baseline::new(&cfg.baseline),
            over: 0,
            under: 0,
            cusum: 0.0,
            active: None,
            recent: Vec::new(),
        }
    }

    /// The id of the anomaly in progress, if any.
    pub fn active(&self) -> Option<u64> {
        self.active.map(|a| a.1)
    }

    /// Tells the detector the id its last raised anomaly got.
    pub fn raised_as(&mut self, id: u64) {
        if let Some(a) = &mut self.active {
            a.1 = id;
        }
    }

    /// Scores `x` (the tick's value, from `requests` requests; None when there is
    /// nothing to judge, e.g. no request for a latency) and learns it.
    pub fn tick(
        &mut self,
        cfg: &DetectorConfig,
        tick: u64,
        x: Option<f64>,
        requests: f64,
    ) -> Change {
        let Some(x) = x.filter(|x| x.is_finite()) else {
            return Change::None;
        };
        let bcfg = &cfg.baseline;
        let expected = self.baseline.expected(bcfg, tick);
        if self.baseline.seen() < cfg.warm_up {
            self.baseline.learn(bcfg, tick, x, 1.0, false);
            return Change::None;
        }
        let floor = self.signal.floor(expected, requests, cfg.tick_secs);
        let scale = self.baseline.scale().max(floor);
        let z = (x - expected) / scale;
        self.recent.push(x);
        if self.recent.len() > cfg.confirm.max(1) as usize {
            self.recent.remove(0);
        }
        // Slow drift: the fast level against the slow reference, upwards only (latency
        // and errors; traffic grows for good reasons).
        // The medium level averages about a hundred ticks: a drift is judged in shares
        // of the reference, past a least amount that matters (a point of errors, 2 ms).
        let (fast, slow) = self.baseline.levels();
        let least = match self.signal {
            Signal::ErrorRatio => 0.01,
            _ => 2.0,
        };
        let drifting = self.signal != Signal::Rate
            && fast > slow * (1.0 + cfg.drift_min)
            && fast > slow + least;
        let dz = (fast - slow) / (0.05 * slow).max(least / 2.0);
        self.cusum = match drifting {
            true => (self.cusum + dz - cfg.drift_k).clamp(0.0, 4.0 * cfg.drift_h),
            false => (self.cusum - cfg.drift_k).max(0.0),
        };
        let out_of_line = match self.signal {
            Signal::Rate => z.abs() >= cfg.z_raise,
            _ => z >= cfg.z_raise,
        };
        match &mut self.active {
            None => {
                self.over = if out_of_line { self.over + 1 } else { 0 };
                let kind = if self.over >= cfg.confirm.max(1) {
                    Some(match (self.signal, z > 0.0) {
                        (Signal::Rate, true) => EventKind::TrafficSurge,
                        (Signal::Rate, false) => EventKind::TrafficDrop,
                        (Signal::ErrorRatio, _) => EventKind::ErrorBurst,
                        (Signal::LatencyP99, _) => EventKind::LatencySpike,
                    })
                } else if self.cusum >= cfg.drift_h {
                    Some(match self.signal {
                        Signal::ErrorRatio => EventKind::ErrorDrift,
                        _ => EventKind::LatencyDrift,
                    })
                } else {
                    None
                };
                // An outlier is barely learned; while a drift builds up, the reference
                // stays where it was.
                let weight = if out_of_line { 0.02 } else { 1.0 };
                self.baseline
                    .learn(bcfg, tick, x, weight, self.cusum > 0.0 || kind.is_some());
                match kind {
                    Some(kind) => {
                        self.over = 0;
                        self.under = 0;
                        self.active = Some((kind, 0, 0));
                        let (evidence, observed, expected, score) = match kind {
                            EventKind::LatencyDrift | EventKind::ErrorDrift => {
                                (self.recent.clone(), fast, slow, dz)
                            }
                            _ => (self.recent.clone(), x, expected, z),
                        };
                        Change::Raised {
                            kind,
                            observed,
                            expected,
                            score,
                            evidence,
                        }
                    }
                    None => Change::None,
                }
            }
            Some((kind, id, ticks)) => {
                *ticks += 1;
                let id = *id;
                let drift = matches!(kind, EventKind::LatencyDrift | EventKind::ErrorDrift);
                let calm = match drift {
                    true => !drifting,
                    false => z.abs() < cfg.z_clear,
                };
                self.under = if calm { self.under + 1 } else { 0 };
                if self.under >= cfg.clear {
                    self.active = None;
                    self.cusum = 0.0;
                    self.baseline.learn(bcfg, tick, x, 1.0, false);
                    return Change::Ended {
                        id,
                        resolution: "recovered",
                    };
                }
                if *ticks >= cfg.new_normal {
                    self.active = None;
                    self.cusum = 0.0;
                    self.baseline.reset_to(bcfg, tick, x);
                    return Change::Ended {
                        id,
                        resolution: "new_normal",
                    };
                }
                // A drift's fast level follows the values (its end is the level coming
                // back); a spike's barely moves. The reference holds either way.
                let weight = if calm || drift { 1.0 } else { 0.02 };
                self.baseline.learn(bcfg, tick, x, weight, true);
                Change::Ongoing {
                    id,
                    score: if drift { dz } else { z },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut SignalDetector, cfg: &DetectorConfig, from: u64, xs: &[f64]) -> Vec<Change> {
        xs.iter()
            .enumerate()
            .map(|(i, x)| d.tick(cfg, from + i as u64, Some(*x), 100.0))
            .filter(|c| *c != Change::None && !matches!(c, Change::Ongoing { .. }))
            .collect()
    }

    #[test]
    fn a_spike_is_raised_after_confirmation_and_ends() {
        let cfg = DetectorConfig::default();
        let mut d = SignalDetector::new(Signal::LatencyP99, &cfg);
        let mut rng = fastrand::Rng::with_seed(1);
        let calm: Vec<f64> = (0..300).map(|_| 20.0 + rng.f64() * 2.0).collect();
        assert!(feed(&mut d, &cfg, 0, &calm).is_empty());
        let changes = feed(&mut d, &cfg, 300, &[80.0, 85.0, 90.0]);
        assert!(
            matches!(
                &changes[..],
                [Change::Raised {
                    kind: EventKind::LatencySpike,
                    ..
                }]
            ),
            "{changes:?}"
        );
        d.raised_as(7);
        let changes = feed(&mut d, &cfg, 303, &calm[..10]);
        assert_eq!(
            changes,
            vec![Change::Ended {
                id: 7,
                resolution: "recovered"
            }]
        );
    }

    #[test]
    fn one_outlier_is_not_an_anomaly() {
        let cfg = DetectorConfig::default();
        let mut d = SignalDetector::new(Signal::LatencyP99, &cfg);
        let mut xs = vec![20.0; 200];
        xs[150] = 200.0;
        assert!(feed(&mut d, &cfg, 0, &xs).is_empty());
    }

    #[test]
    fn a_slow_leak_is_raised_as_drift() {
        let cfg = DetectorConfig::default();
        let mut d = SignalDetector::new(Signal::LatencyP99, &cfg);
        let mut rng = fastrand::Rng::with_seed(3);
        let calm: Vec<f64> = (0..600).map(|_| 20.0 + rng.f64() * 2.0).collect();
        assert!(feed(&mut d, &cfg, 0, &calm).is_empty());
        // Doubles over ten minutes.
        let leak: Vec<f64> = (0..600)
            .map(|i| 21.0 + i as f64 * 20.0 / 600.0 + rng.f64() * 2.0)
            .collect();
        let changes = feed(&mut d, &cfg, 600, &leak);
        assert!(
            matches!(
                changes.first(),
                Some(Change::Raised {
                    kind: EventKind::LatencyDrift,
                    ..
                })
            ),
            "{changes:?}"
        );
    }

    #[test]
    fn a_drop_to_nothing_is_raised() {
        let cfg = DetectorConfig::default();
        let mut d = SignalDetector::new(Signal::Rate, &cfg);
        let mut xs = vec![200.0; 200];
        xs.extend([0.0; 5]);
        let changes = feed(&mut d, &cfg, 0, &xs);
        assert!(
            matches!(
                &changes[..],
                [Change::Raised {
                    kind: EventKind::TrafficDrop,
                    ..
                }]
            ),
            "{changes:?}"
        );
    }
}
