//! A request over a rate limit: the 429 answer, with `Retry-After` and the IETF draft's
//! `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and `RateLimit-Policy`
//! headers, and the security event that records it (JSON, in the security log or the
//! process log).

use crate::body::Body;
use crate::dataplane::DataPlane;
use crate::handler::{error, ConnInfo};
use gatehouse_translate::ratelimit::{Exceeded, RateLimits};
use gatehouse_translate::RouteAction;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use std::time::Duration;

/// Whole seconds, rounded up: a client told to wait 0 s would retry at once.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The answer to a request over `over`'s limit, after recording the event.
pub fn too_many(
    dp: &DataPlane,
    action: &RouteAction,
    limits: &RateLimits,
    over: &Exceeded<'_>,
    conn: &ConnInfo,
    rid: &HeaderValue,
) -> Response<Body> {
    let limit = over.limit;
    let quota = limit.limiter.quota();
    let retry_after = ceil_secs(over.retry_after);
    let event = serde_json::json!({
        "time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        "event": "rate_limited",
        "request_id": rid.to_str().unwrap_or(""),
        "client": conn.peer.to_string(),
        "route": &*action.name,
        "policy": limits.from,
        "limit": limit.name,
        "action": "deny",
        "status": 429,
        "retry_after_seconds": retry_after,
    });
    match &dp.security_logs.events {
        Some(f) => f.write(event.to_string()),
        None => tracing::info!(target: "gatehouse::security", "{event}"),
    }
    let mut resp = error(
        StatusCode::TOO_MANY_REQUESTS,
        &format!(
            "rate limit {:?} exceeded; retry in {retry_after} s",
            limit.name
        ),
    );
    let h = resp.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::try_from(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set("retry-after", retry_after.to_string());
    set("ratelimit-limit", quota.requests.to_string());
    set("ratelimit-remaining", "0".into());
    set("ratelimit-reset", ceil_secs(over.reset).to_string());
    set(
        "ratelimit-policy",
        format!(
            "{};w={};burst={};comment=\"{}\"",
            quota.requests,
            ceil_secs(quota.period),
            quota.burst,
            limit.name
        ),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::ceil_secs;
    use std::time::Duration;

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }
}
