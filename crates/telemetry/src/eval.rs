//! The detector's evaluation harness: generates per-tick traffic for a few routes (a
//! seasonal rate with Poisson noise, a small error ratio, log-normal latency counted
//! into the proxy's latency buckets), injects known faults (a latency spike, an error
//! burst, a traffic surge, a slow leak), runs [`Analytics`] over it exactly as the
//! proxy's loop does, and scores the anomalies raised: precision, recall and delay.

use crate::analytics::{Analytics, AnalyticsConfig, Observation};
use serde::Serialize;

/// The proxy's latency bucket bounds (seconds), which the generated traffic is counted
/// into (the same as `gatehouse_proxy::metrics::BUCKETS`).
pub const PROXY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fault injected into one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Latency three times as high for a minute.
    LatencySpike,
    /// 5% more of the requests fail, for 30 s.
    ErrorBurst,
    /// Three times the traffic for a minute.
    TrafficSurge,
    /// Latency that grows steadily to twice its normal over 15 minutes (a leak).
    SlowLeak,
}

impl Fault {
    pub const ALL: [Fault; 4] = [
        Fault::LatencySpike,
        Fault::ErrorBurst,
        Fault::TrafficSurge,
        Fault::SlowLeak,
    ];

    /// Ticks it lasts.
    pub fn length(self) -> u64 {
        match self {
            Fault::LatencySpike | Fault::TrafficSurge => 60,
            Fault::ErrorBurst => 30,
            Fault::SlowLeak => 900,
        }
    }
}

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Scenarios per fault kind (and as many without a fault).
    pub scenarios_per_fault: usize,
    /// Routes per scenario (one gets the fault).
    pub routes: usize,
    /// Ticks per scenario (one tick is a second).
    pub ticks: u64,
    /// The period of the traffic's daily-like cycle, in ticks.
    pub period: u64,
    /// The earliest tick a fault starts at (after the baseline has warmed up).
    pub fault_after: u64,
    /// Ticks after a fault's end during which an alarm still counts as its detection.
    pub grace: u64,
    pub seed: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            scenarios_per_fault: 10,
            routes: 4,
            ticks: 3600,
            period: 1800,
            fault_after: 900,
            grace: 30,
            seed: 2026,
        }
    }
}

/// Scores of one fault kind, or of all.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Score {
    pub faults: usize,
    pub detected: usize,
    pub recall: f64,
    /// Detection delay in ticks (seconds): median and worst.
    pub delay_median: Option<u64>,
    pub delay_max: Option<u64>,
    #[serde(skip)]
    delays: Vec<u64>,
}

/// A run's scores.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub alarms: usize,
    pub true_alarms: usize,
    pub precision: f64,
    pub recall: f64,
    /// False alarms per hour of one route's traffic.
    pub false_alarms_per_route_hour: f64,
    pub route_hours: f64,
    /// False alarms by the kind of anomaly raised.
    pub false_alarms_by_kind: std::collections::BTreeMap<&'static str, usize>,
    pub all: Score,
    pub by_fault: Vec<(Fault, Score)>,
}

struct Route {
    rate: f64,
    error_ratio: f64,
    /// Median latency (seconds) and log-normal sigma.
    median: f64,
    sigma: f64,
}

/// A fault in a scenario: the route, the kind, when it starts.
#[derive(Debug, Clone, Copy)]
pub struct Injected {
    pub route: usize,
    pub fault: Fault,
    pub start: u64,
}

/// Runs the evaluation.
pub fn evaluate(cfg: &EvalConfig, analytics: &AnalyticsConfig) -> Report {
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let mut report = Report::default();
    let mut by_fault: Vec<(Fault, Score)> =
        Fault::ALL.iter().map(|f| (*f, Score::default())).collect();
    let kinds: Vec<Option<Fault>> = Fault::ALL.iter().map(|f| Some(*f)).chain([None]).collect();
    for n in 0..cfg.scenarios_per_fault {
        for kind in &kinds {
            let routes: Vec<Route> = (0..cfg.routes)
                .map(|_| Route {
                    rate: 20.0 + rng.f64() * 280.0,
                    error_ratio: rng.f64() * 0.005,
                    median: 0.005 + rng.f64() * 0.045,
                    sigma: 0.3 + rng.f64() * 0.3,
                })
                .collect();
            let fault = kind.map(|fault| Injected {
                route: n % cfg.routes,
                fault,
                start: cfg.fault_after
                    + rng.u64(
                        0..cfg
                            .ticks
                            .saturating_sub(cfg.fault_after + fault.length())
                            .max(1),
                    ),
            });
            let raised = run_scenario(cfg, analytics, &routes, fault, &mut rng);
            report.route_hours += cfg.routes as f64 * cfg.ticks as f64 / 3600.0;
            report.alarms += raised.len();
            let mut first: Option<u64> = None;
            for (route, tick, kind) in &raised {
                let hit = fault.is_some_and(|f| {
                    *route == f.route
                        && *tick >= f.start
                        && *tick <= f.start + f.fault.length() + cfg.grace
                });
                if hit {
                    report.true_alarms += 1;
                    first = Some(first.map_or(*tick, |t| t.min(*tick)));
                } else {
                    *report.false_alarms_by_kind.entry(kind.code()).or_default() += 1;
                }
            }
            if let Some(f) = fault {
                let score = &mut by_fault
                    .iter_mut()
                    .find(|(k, _)| *k == f.fault)
                    .expect("every fault kind has a score")
                    .1;
                for s in [score, &mut report.all] {
                    s.faults += 1;
                    if let Some(t) = first {
                        s.detected += 1;
                        s.delays.push(t - f.start);
                    }
                }
            }
        }
    }
    for s in by_fault.iter_mut().map(|(_, s)| s).chain([&mut report.all]) {
        s.recall = s.detected as f64 / s.faults.max(1) as f64;
        s.delays.sort_unstable();
        s.delay_median = s.delays.get(s.delays.len() / 2).copied();
        s.delay_max = s.delays.last().copied();
    }
    report.recall = report.all.recall;
    report.precision = match report.alarms {
        0 => 1.0,
        n => report.true_alarms as f64 / n as f64,
    };
    report.false_alarms_per_route_hour =
        (report.alarms - report.true_alarms) as f64 / report.route_hours.max(1e-9);
    report.by_fault = by_fault;
    report
}

/// Runs one scenario; returns the alarms raised as (route, tick, kind).
fn run_scenario(
    cfg: &EvalConfig,
    analytics: &AnalyticsConfig,
    routes: &[Route],
    fault: Option<Injected>,
    rng: &mut fastrand::Rng,
) -> Vec<(usize, u64, crate::EventKind)> {
    let mut a = Analytics::new(AnalyticsConfig {
        latency_bounds: PROXY_BOUNDS.to_vec(),
        ..analytics.clone()
    });
    let names: Vec<String> = (0..routes.len()).map(|i| format!("route-{i}")).collect();
    let mut alarms = Vec::new();
    let mut buckets = vec![vec![0u64; PROXY_BOUNDS.len() + 1]; routes.len()];
    let mut counts = vec![(0u64, 0u64); routes.len()];
    for t in 0..cfg.ticks {
        let season = 1.0 + 0.3 * (std::f64::consts::TAU * t as f64 / cfg.period as f64).sin();
        for (i, r) in routes.iter().enumerate() {
            let (mut rate, mut errors, mut median) = (r.rate * season, r.error_ratio, r.median);
            // Latency rises a little with load.
            median *= 1.0 + 0.1 * (season - 1.0);
            if let Some(f) = fault.filter(|f| f.route == i && t >= f.start) {
                let into = t - f.start;
                let on = into < f.fault.length();
                match f.fault {
                    Fault::LatencySpike if on => median *= 3.0,
                    Fault::ErrorBurst if on => errors += 0.05,
                    Fault::TrafficSurge if on => rate *= 3.0,
                    Fault::SlowLeak => {
                        median *=
                            1.0 + (into.min(f.fault.length()) as f64 / f.fault.length() as f64)
                    }
                    _ => {}
                }
            }
            let n = poisson(rng, rate);
            counts[i] = (n, binomial(rng, n, errors));
            latency_counts(rng, n, median, r.sigma, &mut buckets[i]);
        }
        let obs: Vec<Observation<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, key)| Observation {
                key,
                requests: counts[i].0,
                errors: counts[i].1,
                latency: &buckets[i],
            })
            .collect();
        for e in a.observe(t * 1000, &obs) {
            if let Some(i) = names.iter().position(|n| *n == e.key) {
                alarms.push((i, t, e.kind));
            }
        }
    }
    alarms
}

fn normal(rng: &mut fastrand::Rng) -> f64 {
    // Box-Muller.
    let u = rng.f64().max(1e-12);
    let v = rng.f64();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn poisson(rng: &mut fastrand::Rng, mean: f64) -> u64 {
    if mean < 30.0 {
        // Knuth's method.
        let limit = (-mean).exp();
        let (mut k, mut p) = (0u64, 1.0);
        loop {
            p *= rng.f64();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }
    (mean + mean.sqrt() * normal(rng)).round().max(0.0) as u64
}

fn binomial(rng: &mut fastrand::Rng, n: u64, p: f64) -> u64 {
    let p = p.clamp(0.0, 1.0);
    if n < 50 {
        return (0..n).filter(|_| rng.f64() < p).count() as u64;
    }
    let mean = n as f64 * p;
    let sd = (mean * (1.0 - p)).sqrt();
    (mean + sd * normal(rng)).round().clamp(0.0, n as f64) as u64
}

/// The standard normal's distribution function (Abramowitz and Stegun 7.1.26).
fn phi(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erf = 1.0 - poly * (-z * z).exp();
    0.5 * (1.0 + if x < 0.0 { -erf } else { erf })
}

/// Counts `n` log-normal latencies into the buckets (a multinomial, drawn as a chain of
/// binomials over the buckets' probabilities).
fn latency_counts(rng: &mut fastrand::Rng, n: u64, median: f64, sigma: f64, out: &mut [u64]) {
    let mut left = n;
    let mut below = 0.0;
    for (i, slot) in out.iter_mut().enumerate() {
        let cdf = match PROXY_BOUNDS.get(i) {
            Some(b) => phi((b / median).ln() / sigma),
            None => 1.0,
        };
        let p = cdf - below;
        let rest = 1.0 - below;
        let k = match rest <= 1e-12 {
            true => 0,
            false if PROXY_BOUNDS.get(i).is_none() => left,
            false => binomial(rng, left, p / rest),
        };
        *slot = k;
        left -= k;
        below = cdf;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_latencies_have_their_median() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut b = vec![0; PROXY_BOUNDS.len() + 1];
        latency_counts(&mut rng, 100_000, 0.02, 0.4, &mut b);
        assert_eq!(b.iter().sum::<u64>(), 100_000);
        let median = crate::quantile::quantile(&PROXY_BOUNDS, &b, 0.5).unwrap_or(0.0);
        assert!((0.01..0.03).contains(&median), "{median} {b:?}");
    }

    /// The detector over a small run with every fault kind: it finds most faults, and
    /// most of what it raises is a fault. (The full run, with its numbers, is the
    /// `anomaly_eval` example and BENCHMARKS.md.)
    #[test]
    fn the_detector_finds_injected_faults() {
        let cfg = EvalConfig {
            scenarios_per_fault: 3,
            routes: 3,
            ticks: 2400,
            ..EvalConfig::default()
        };
        let report = evaluate(&cfg, &AnalyticsConfig::default());
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        assert_eq!(report.all.faults, 12, "{text}");
        assert!(report.recall >= 0.9, "{text}");
        assert!(report.precision >= 0.8, "{text}");
        for (fault, s) in &report.by_fault {
            assert!(s.detected >= 2, "{fault:?}: {text}");
        }
    }
}
