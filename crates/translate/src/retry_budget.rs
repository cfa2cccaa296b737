//! A retry budget (the Finagle/Linkerd idea): over a sliding window, retries may add at
//! most a fixed percentage to the requests sent, plus a small allowance per second, so
//! that retrying can never multiply the load on a backend that is already failing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Length of the window the budget counts over.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The zero of the budget's clock.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// Counts requests and retries; `try_retry` spends from the budget.
#[derive(Debug, Default)]
pub struct RetryBudget {
    /// Requests (first attempts) and retries in the current window.
    requests: AtomicU64,
    retries: AtomicU64,
    /// What the previous window counted; it weighs as much as it still overlaps the
    /// sliding window.
    prev_requests: AtomicU64,
    prev_retries: AtomicU64,
    /// When the current window began (ms on the budget clock).
    start_ms: AtomicU64,
    /// Held only while a window rolls over.
    rolling: Mutex<()>,
}

impl RetryBudget {
    /// Counts a first attempt.
    pub fn record_request(&self) {
        self.roll();
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a retry fits in the budget (`percent` of requests, plus
    /// `min_per_second` each second); if so it is counted.
    pub fn try_retry(&self, percent: u32, min_per_second: u32) -> bool {
        let now = self.roll();
        let window_ms = WINDOW.as_millis() as f64;
        let elapsed = now.saturating_sub(self.start_ms.load(Ordering::Acquire)) as f64;
        let overlap = (1.0 - elapsed / window_ms).max(0.0);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let requests = load(&self.requests) + load(&self.prev_requests) * overlap;
        let retries = load(&self.retries) + load(&self.prev_retries) * overlap;
        let allowed =
            requests * percent as f64 / 100.0 + min_per_second as f64 * WINDOW.as_secs_f64();
        if retries + 1.0 > allowed {
            return false;
        }
        self.retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Starts a new window when the current one is over; returns the clock.
    fn roll(&self) -> u64 {
        let now = now_ms();
        let window = WINDOW.as_millis() as u64;
        if now.saturating_sub(self.start_ms.load(Ordering::Acquire)) < window {
            return now;
        }
        let _rolling = self.rolling.lock().unwrap_or_else(|e| e.into_inner());
        let start = self.start_ms.load(Ordering::Acquire);
        let elapsed = now.saturating_sub(start);
        if elapsed < window {
            return now;
        }
        let req = self.requests.swap(0, Ordering::Relaxed);
        let ret = self.retries.swap(0, Ordering::Relaxed);
        // A window that ended long ago no longer counts at all.
        let recent = elapsed < window * 2;
        self.prev_requests
            .store(if recent { req } else { 0 }, Ordering::Relaxed);
        self.prev_retries
            .store(if recent { ret } else { 0 }, Ordering::Relaxed);
        self.start_ms.store(now, Ordering::Release);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_percentage_of_requests() {
        let b = RetryBudget::default();
        let mut granted = 0;
        for _ in 0..1000 {
            b.record_request();
            // Every request wants three retries; the budget allows a fifth of one.
            for _ in 0..3 {
                if b.try_retry(20, 0) {
                    granted += 1;
                }
            }
        }
        assert!((199..=200).contains(&granted), "{granted} retries");
    }

    #[test]
    fn the_per_second_allowance_applies_without_traffic() {
        let b = RetryBudget::default();
        let granted = (0..100).filter(|_| b.try_retry(20, 2)).count();
        assert_eq!(granted, 20, "2 per second over a 10 s window");
    }
}
