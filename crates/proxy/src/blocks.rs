//! Enforcing `SourceBlock`s: a blocked client's connections are closed as soon as they
//! are accepted (after a PROXY header has named the client), and its requests (its
//! address behind trusted proxies, or a connection accepted before the block) get 403
//! and a closed connection. Each refusal is counted; events are written at most once a
//! second per address, so a flood cannot flood the log.

use crate::body::Body;
use crate::dataplane::DataPlane;
use crate::handler::{error, ConnInfo};
use gatehouse_translate::adaptive::BlockEntry;
use http::{header, HeaderValue, Response, StatusCode};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;

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
    let mut resp = error(StatusCode::FORBIDDEN, "client address blocked");
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
