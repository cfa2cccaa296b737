//! Retry decisions: which failed attempts may be tried again (connect failures for any
//! method; resets, timeouts and configured statuses for idempotent ones), and the
//! backoff with full jitter between attempts.

use gatehouse_translate::cluster::RetryPolicy;
use http::Method;
use std::time::Duration;

/// How one upstream attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection: the request never left.
    Connect,
    /// The connection broke, or the attempt timed out, before a response.
    Reset,
    /// An answer with this status.
    Status(u16),
}

/// Whether `failure` of a `method` request may be retried under `policy`.
pub fn retriable(policy: &RetryPolicy, method: &Method, failure: Failure) -> bool {
    match failure {
        Failure::Connect => policy.on.connect_failure,
        Failure::Reset => policy.on.reset && method.is_idempotent(),
        Failure::Status(s) => policy.on.status(s) && method.is_idempotent(),
    }
}

/// How long to wait before retry number `retry` (1 for the first): a random time up to
/// a ceiling that doubles each retry, from the base to the maximum.
pub fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let exp = retry.saturating_sub(1).min(16);
    let ceiling = policy
        .backoff_base
        .saturating_mul(1 << exp)
        .min(policy.backoff_max);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_translate::cluster::RetryOn;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            on: RetryOn {
                connect_failure: true,
                reset: true,
                gateway_error: true,
                statuses: vec![409],
                ..RetryOn::default()
            },
            per_try_timeout: None,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            budget_percent: 20,
            budget_min_per_second: 10,
        }
    }

    #[test]
    fn only_idempotent_requests_retry_after_they_were_sent() {
        let p = policy();
        assert!(retriable(&p, &Method::POST, Failure::Connect));
        assert!(!retriable(&p, &Method::POST, Failure::Reset));
        assert!(!retriable(&p, &Method::POST, Failure::Status(503)));
        assert!(retriable(&p, &Method::GET, Failure::Reset));
        assert!(retriable(&p, &Method::PUT, Failure::Status(503)));
        assert!(retriable(&p, &Method::GET, Failure::Status(409)));
        assert!(!retriable(&p, &Method::GET, Failure::Status(500)));
        assert!(!retriable(&p, &Method::GET, Failure::Status(404)));
    }

    #[test]
    fn backoff_grows_to_its_ceiling_with_jitter() {
        let p = policy();
        for _ in 0..100 {
            assert!(backoff(&p, 1) <= Duration::from_millis(10));
            assert!(backoff(&p, 3) <= Duration::from_millis(40));
            assert!(backoff(&p, 9) <= Duration::from_millis(50));
        }
        let spread: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(&p, 2)).collect();
        assert!(spread.len() > 10, "jittered");
    }
}
