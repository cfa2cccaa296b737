//! Enforcing `SourceBlock`s: a blocked client's connections are held and dropped as
//! soon as they are accepted (after a PROXY header has named the client), and its
//! requests (its address behind trusted proxies, or a connection accepted before the
//! block) get 403 and a closed connection. Each refusal is counted; events are written
//! at most once a second per address, so a flood cannot flood the log.
//!
//! A refused connection is not closed at once: a flooding client would open the next
//! one straight away, and accepting and closing connections in a loop costs more than
//! serving requests. Like HAProxy's tarpit, the connection is held unread for
//! `HOLD` (or until shutdown), then reset; at most `MAX_HELD` are held at a time, and
//! past that they are reset at once.

use crate::body::Body;
use crate::dataplane::DataPlane;
use crate::handler::{error, ConnInfo};
use gatehouse_translate::adaptive::BlockEntry;
use http::{header, HeaderValue, Response, StatusCode};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// How long a refused connection is held before it is reset.
pub const HOLD: Duration = Duration::from_secs(10);
/// The most refused connections held at once.
pub const MAX_HELD: usize = 4096;

static HELD: AtomicUsize = AtomicUsize::new(0);

/// Holds a refused connection unread for `HOLD` (or until shutdown), then resets it;
/// resets it at once if `MAX_HELD` are held already.
pub async fn hold_and_reset(dp: &DataPlane, stream: tokio::net::TcpStream) {
    /// A place among the held; given back when dropped, however the task ends.
    struct Place;
    impl Drop for Place {
        fn drop(&mut self) {
            HELD.fetch_sub(1, Relaxed);
        }
    }
    let _ = stream.set_zero_linger();
    let place = Place;
    if HELD.fetch_add(1, Relaxed) >= MAX_HELD {
        return;
    }
    let mut shutdown = dp.shutdown.subscribe();
    tokio::select! {
        _ = tokio::time::sleep(HOLD) => {}
        _ = shutdown.changed() => {}
    }
    drop(stream);
    drop(place);
}

/// The block holding `client` now, if any.
pub fn holding(dp: &DataPlane, client: IpAddr) -> Option<BlockEntry> {
    let active = dp.state.load();
    let blocks = active.snapshot.blocks.as_ref()?;
    blocks.check(client, crate::security_log::now_ms()).cloned()
}

fn record(dp: &DataPlane, block: &BlockEntry, client: IpAddr, fields: serde_json::Value) {
    if !dp.event_throttle.allow(client) {
        return;
    }
    let mut event = serde_json::json!({
        "time": crate::security_log::now_ms(),
        "event": "source_block_refused",
        "client": client.to_string(),
        "block": block.name,
        "source": block.source,
        "policy": block.policy,
    });
    if let (Some(e), serde_json::Value::Object(more)) = (event.as_object_mut(), fields) {
        e.extend(more);
    }
    crate::security_log::event(dp, event);
}

/// Whether an accepted connection from `peer` must be closed at once.
pub fn refuse_connection(dp: &DataPlane, peer: SocketAddr, listener: SocketAddr) -> bool {
    let Some(block) = holding(dp, peer.ip()) else {
        return false;
    };
    // A limited source is not refused: its requests are counted against its limit.
    if block.limit.is_some() {
        return false;
    }
    dp.metrics
        .counters
        .blocked_connections_total
        .fetch_add(1, Relaxed);
    record(
        dp,
        &block,
        peer.ip(),
        serde_json::json!({"listener": listener.to_string(), "action": "close"}),
    );
    true
}

/// The answer to a request from a limited source over its limit: 429, recorded (at most
/// one event a second per address).
pub fn over_limit(
    dp: &DataPlane,
    block: &BlockEntry,
    per_second: u32,
    client: IpAddr,
    route: &str,
    rid: &HeaderValue,
) -> Response<Body> {
    dp.metrics
        .counters
        .source_limited_total
        .fetch_add(1, Relaxed);
    if dp.event_throttle.allow(client) {
        crate::security_log::event(
            dp,
            serde_json::json!({
                "time": crate::security_log::now_ms(),
                "event": "source_limited",
                "client": client.to_string(),
                "block": block.name,
                "source": block.source,
                "policy": block.policy,
                "limit_per_second": per_second,
                "request_id": rid.to_str().unwrap_or(""),
                "route": route,
                "action": "deny",
                "status": 429,
            }),
        );
    }
    let mut resp = error(
        StatusCode::TOO_MANY_REQUESTS,
        crate::reason::Reason::RateLimited,
        &format!("client address limited to {per_second} requests per second"),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// The answer to a request whose client a block holds.
pub fn refuse_request(
    dp: &DataPlane,
    block: &BlockEntry,
    client: IpAddr,
    route: &str,
    conn: &ConnInfo,
    rid: &HeaderValue,
) -> Response<Body> {
    dp.metrics
        .counters
        .blocked_requests_total
        .fetch_add(1, Relaxed);
    record(
        dp,
        block,
        client,
        serde_json::json!({
            "request_id": rid.to_str().unwrap_or(""),
            "peer": conn.peer.to_string(),
            "route": route,
            "action": "deny",
            "status": 403,
        }),
    );
    let mut resp = error(
        StatusCode::FORBIDDEN,
        crate::reason::Reason::Blocked,
        "client address blocked",
    );
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
