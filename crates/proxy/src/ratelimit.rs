//! Requests refused by a SecurityPolicy's limits, and the security events that record
//! them (JSON, in the security log or the process log): over a rate limit, a 429 with
//! `Retry-After` and the IETF draft's `RateLimit-Limit`, `RateLimit-Remaining`,
//! `RateLimit-Reset` and `RateLimit-Policy` headers; a client address the access list
//! denies, a 403.

use crate::body::Body;
use crate::dataplane::DataPlane;
use crate::handler::{error, ConnInfo};
use gatehouse_translate::ratelimit::{Exceeded, RateLimits};
use gatehouse_translate::security::IpAccessPolicy;
use gatehouse_translate::RouteAction;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use std::time::Duration;

/// Counts a routed request against its route's Global limits (in the shared store);
/// the answer if one refuses it: 429 over the limit, 503 if a fail-closed limit's
/// store cannot be reached.
pub async fn check_global(
    dp: &DataPlane,
    action: &RouteAction,
    conn: &ConnInfo,
    path: &str,
    headers: &http::HeaderMap,
    rid: &HeaderValue,
) -> Option<Response<Body>> {
    let limits = action
        .protection
        .rate_limits
        .as_ref()
        .filter(|l| l.has_global())?;
    let client = action.protection.client(conn.peer.ip(), headers);
    let header = |n: &str| headers.get(n).map(HeaderValue::as_bytes);
    let keys: Vec<_> = limits
        .global_keys(client, path.as_bytes(), &header)
        .collect();
    let counters = &dp.metrics.counters;
    for (limit, key) in keys {
        let verdict = match &dp.global_limits {
            Some(store) => store.check(&key, limit.quota).await,
            None => Err(crate::global_limit::StoreError::Down),
        };
        match verdict {
            Ok(gatehouse_security::ratelimit::Decision::Allow { .. }) => {}
            Ok(gatehouse_security::ratelimit::Decision::Deny { retry_after, reset }) => {
                counters
                    .rate_limited_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let over = Exceeded {
                    limit,
                    retry_after,
                    reset,
                };
                return Some(too_many(dp, action, limits, &over, client, conn, rid));
            }
            Err(e) => {
                counters
                    .ratelimit_store_errors_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(error = %e, limit = %limit.name, "Global rate limit not checked");
                if limit.global.is_some_and(|g| !g.fail_open) {
                    counters
                        .ratelimit_store_fail_closed_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    crate::security_log::event(
                        dp,
                        serde_json::json!({
                            "time": crate::security_log::now_ms(),
                            "event": "rate_limit_store_down",
                            "request_id": rid.to_str().unwrap_or(""),
                            "client": client.to_string(),
                            "route": &*action.name,
                            "policy": limits.from,
                            "limit": limit.name,
                            "action": "deny",
                            "status": 503,
                        }),
                    );
                    return Some(error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        crate::reason::Reason::RateLimited,
                        "rate limit store unavailable",
                    ));
                }
            }
        }
    }
    None
}

/// The answer to a client address the access list denies, after recording the event.
pub fn ip_denied(
    dp: &DataPlane,
    action: &RouteAction,
    acl: &IpAccessPolicy,
    client: std::net::IpAddr,
    conn: &ConnInfo,
    rid: &HeaderValue,
) -> Response<Body> {
    dp.metrics
        .counters
        .ip_denied_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::security_log::event(
        dp,
        serde_json::json!({
            "time": crate::security_log::now_ms(),
            "event": "ip_denied",
            "request_id": rid.to_str().unwrap_or(""),
            "client": client.to_string(),
            "peer": conn.peer.to_string(),
            "route": &*action.name,
            "policy": acl.from,
            "action": "deny",
            "status": 403,
        }),
    );
    error(
        StatusCode::FORBIDDEN,
        crate::reason::Reason::IpDenied,
        "client address not allowed",
    )
}

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
    client: std::net::IpAddr,
    conn: &ConnInfo,
    rid: &HeaderValue,
) -> Response<Body> {
    let limit = over.limit;
    let quota = limit.quota;
    let retry_after = ceil_secs(over.retry_after);
    let event = serde_json::json!({
        "time": crate::security_log::now_ms(),
        "event": "rate_limited",
        "request_id": rid.to_str().unwrap_or(""),
        "client": client.to_string(),
        "peer": conn.peer.to_string(),
        "route": &*action.name,
        "policy": limits.from,
        "limit": limit.name,
        "action": "deny",
        "status": 429,
        "retry_after_seconds": retry_after,
    });
    crate::security_log::event(dp, event);
    let mut resp = error(
        StatusCode::TOO_MANY_REQUESTS,
        crate::reason::Reason::RateLimited,
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
