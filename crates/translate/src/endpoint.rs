//! What the data plane knows of one endpoint: requests in flight, a peak-EWMA latency
//! estimate, passive ejection (outlier detection), active health, and when it joined
//! (for slow start). The state is shared by the endpoint's copies in successive
//! Snapshots, so none of it is lost when the config changes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// The zero of the endpoint clock.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds on the endpoint clock.
pub fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// Nanoseconds on the endpoint clock.
fn now_ns() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

/// How fast the latency estimate forgets: the weight of a sample halves about every
/// 7 seconds (Finagle's decay time of 10 s).
const EWMA_DECAY_NS: f64 = 10e9;

/// One endpoint of a cluster.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Its locality priority (0: the nearest).
    pub priority: u8,
    pub state: Arc<EndpointState>,
}

impl Endpoint {
    /// An endpoint that joins now (slow start applies to it).
    pub fn joining(addr: SocketAddr) -> Self {
        Self::with_join_time(addr, now_ms().max(1))
    }

    /// An endpoint known from the start (no slow start).
    pub fn initial(addr: SocketAddr) -> Self {
        Self::with_join_time(addr, 0)
    }

    fn with_join_time(addr: SocketAddr, joined_ms: u64) -> Self {
        Endpoint {
            addr,
            priority: 0,
            state: Arc::new(EndpointState {
                joined_ms,
                healthy: AtomicBool::new(true),
                ..EndpointState::default()
            }),
        }
    }
}

#[derive(Debug, Default)]
pub struct EndpointState {
    pub in_flight: AtomicU32,
    /// Failures in a row (outlier detection).
    pub failures: AtomicU32,
    /// Milliseconds on the endpoint clock until which the endpoint is ejected (0: never
    /// was).
    pub ejected_until: AtomicU64,
    /// Ejections in a row: the next one lasts this many times the base, plus one.
    pub ejections: AtomicU32,
    /// Active health: false once enough probes failed in a row.
    pub healthy: AtomicBool,
    /// Probes passed or failed in a row (whichever happened last).
    pub probe_streak: AtomicU32,
    pub last_probe_ok: AtomicBool,
    /// When the endpoint joined (0: with the first config, so no slow start).
    pub joined_ms: u64,
    /// Peak-EWMA latency in nanoseconds, and when it was last updated.
    ewma_ns: AtomicU64,
    ewma_at_ns: AtomicU64,
    /// Requests answered (or failed) so far, those that failed, and the sum of their
    /// times to the response head in microseconds: the adaptive controls take their
    /// differences once an interval.
    pub answered: AtomicU64,
    pub failed: AtomicU64,
    pub latency_us: AtomicU64,
}

/// Requests an endpoint answered (or failed) so far, those that failed, and the sum of
/// their times to the response head (µs): what the adaptive controls and per-cluster
/// metrics read, and take differences of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointCounts {
    pub answered: u64,
    pub failed: u64,
    pub latency_us: u64,
}

impl EndpointCounts {
    /// The counts since `start` (an earlier reading).
    pub fn since(self, start: EndpointCounts) -> EndpointCounts {
        EndpointCounts {
            answered: self.answered.saturating_sub(start.answered),
            failed: self.failed.saturating_sub(start.failed),
            latency_us: self.latency_us.saturating_sub(start.latency_us),
        }
    }

    pub fn add(&mut self, o: EndpointCounts) {
        self.answered += o.answered;
        self.failed += o.failed;
        self.latency_us += o.latency_us;
    }
}

impl EndpointState {
    /// Its counts now.
    pub fn counts(&self) -> EndpointCounts {
        EndpointCounts {
            answered: self.answered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            latency_us: self.latency_us.load(Ordering::Relaxed),
        }
    }

    /// Whether outlier detection has the endpoint out of rotation at `now` (ms).
    pub fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Acquire) > now
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records one response time into the latency estimate: a slower sample replaces
    /// it at once (the "peak"), faster ones pull it down gradually.
    pub fn observe_latency(&self, rtt: Duration) {
        let rtt = rtt.as_nanos() as u64;
        let now = now_ns();
        let prev = self.ewma_ns.load(Ordering::Relaxed);
        let at = self.ewma_at_ns.swap(now, Ordering::Relaxed);
        let next = if rtt >= prev || prev == 0 {
            rtt
        } else {
            let w = (-(now.saturating_sub(at) as f64) / EWMA_DECAY_NS).exp();
            (prev as f64 * w + rtt as f64 * (1.0 - w)) as u64
        };
        self.ewma_ns.store(next, Ordering::Relaxed);
    }

    /// The latency estimate now, decayed for the time since the last sample.
    pub fn latency_ns(&self) -> u64 {
        let prev = self.ewma_ns.load(Ordering::Relaxed);
        if prev == 0 {
            return 0;
        }
        let since = now_ns().saturating_sub(self.ewma_at_ns.load(Ordering::Relaxed));
        (prev as f64 * (-(since as f64) / EWMA_DECAY_NS).exp()) as u64
    }

    /// Share of its full weight the endpoint gets under slow start (1.0 when none
    /// applies): it grows linearly over `window`, from 10%.
    pub fn slow_start_factor(&self, window: Option<Duration>, now: u64) -> f64 {
        let Some(window) = window else {
            return 1.0;
        };
        if self.joined_ms == 0 {
            return 1.0;
        }
        let age = now.saturating_sub(self.joined_ms) as f64;
        let w = window.as_millis() as f64;
        if age >= w {
            return 1.0;
        }
        (age / w).max(0.1)
    }

    /// Records one probe; returns the new health if it changed.
    pub fn record_probe(&self, ok: bool, healthy_after: u32, unhealthy_after: u32) -> Option<bool> {
        let streak = if self.last_probe_ok.swap(ok, Ordering::AcqRel) == ok {
            self.probe_streak.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.probe_streak.store(1, Ordering::Release);
            1
        };
        let healthy = self.is_healthy();
        let flip = match ok {
            true => !healthy && streak >= healthy_after,
            false => healthy && streak >= unhealthy_after,
        };
        if !flip {
            return None;
        }
        self.healthy.store(ok, Ordering::Release);
        Some(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_flips_only_after_the_thresholds() {
        let e = Endpoint::initial(SocketAddr::from(([127, 0, 0, 1], 1)));
        let s = &e.state;
        assert!(s.is_healthy(), "healthy until probes say otherwise");
        assert_eq!(s.record_probe(false, 2, 3), None);
        assert_eq!(s.record_probe(false, 2, 3), None);
        assert_eq!(
            s.record_probe(true, 2, 3),
            None,
            "a pass restarts the count"
        );
        assert_eq!(s.record_probe(false, 2, 3), None);
        assert_eq!(s.record_probe(false, 2, 3), None);
        assert_eq!(s.record_probe(false, 2, 3), Some(false));
        assert_eq!(s.record_probe(false, 2, 3), None, "already unhealthy");
        assert_eq!(s.record_probe(true, 2, 3), None);
        assert_eq!(s.record_probe(true, 2, 3), Some(true));
        assert!(s.is_healthy());
    }

    #[test]
    fn latency_estimate_jumps_to_peaks_and_decays_slowly() {
        let e = Endpoint::initial(SocketAddr::from(([127, 0, 0, 1], 1)));
        let s = &e.state;
        s.observe_latency(Duration::from_millis(1));
        s.observe_latency(Duration::from_millis(50));
        let peak = s.latency_ns();
        assert!(peak > 45_000_000, "{peak}");
        s.observe_latency(Duration::from_millis(1));
        let after = s.latency_ns();
        assert!(
            after > 40_000_000,
            "one fast sample barely lowers it: {after}"
        );
    }

    #[test]
    fn slow_start_ramps_from_a_tenth_to_full() {
        let e = Endpoint::joining(SocketAddr::from(([127, 0, 0, 1], 1)));
        let w = Some(Duration::from_secs(10));
        let j = e.state.joined_ms;
        assert_eq!(e.state.slow_start_factor(w, j), 0.1);
        assert!((e.state.slow_start_factor(w, j + 5000) - 0.5).abs() < 1e-9);
        assert_eq!(e.state.slow_start_factor(w, j + 10_000), 1.0);
        assert_eq!(e.state.slow_start_factor(None, j), 1.0);
        let initial = Endpoint::initial(SocketAddr::from(([127, 0, 0, 1], 2)));
        assert_eq!(initial.state.slow_start_factor(w, 0), 1.0);
    }
}
