//! The admin listener (its own port): `/healthz`, `/readyz`, `/config` (Snapshot
//! version and summary as JSON), `/metrics` (Prometheus text format), `/blocks`: the
//! `SourceBlock`s in force as JSON, where `DELETE /blocks/NAMESPACE/NAME` lifts one
//! that adaptive blocking made; `/adjustments`: the `TrafficAdjustment`s the adaptive
//! traffic controls made (`DELETE /adjustments/NAMESPACE/NAME` undoes one); and for diagnosis, `/requests/ID` (what decided one
//! recent request), `/requests?last=N`, `/tap?route=&host=&path=&method=&status=` (a
//! live stream of matching requests, one JSON line each) and `/top` (per-route counts
//! and latency, for `gatehouse ctl top` to turn into rates). Other parts of the process
//! add paths of their own ([`AdminRoute`]: the dashboard).

use crate::body::{self, Body};
use crate::dataplane::DataPlane;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// Binds the admin address and serves it in the background; returns the bound address.
pub async fn serve(dp: Arc<DataPlane>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let dp = dp.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let dp = dp.clone();
                    async move { Ok::<_, Infallible>(answer(&dp, &req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

fn respond(status: StatusCode, content_type: &'static str, text: String) -> Response<Body> {
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn answer(dp: &DataPlane, req: &Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if dp.is_ready() => respond(StatusCode::OK, "text/plain", "ready\n".into()),
        "/readyz" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "no configuration loaded\n".into(),
        ),
        "/metrics" => {
            let mut text = dp.metrics.render();
            upstream_health(dp, &mut text);
            respond(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        "/blocks" if req.method() == http::Method::GET => {
            let text = serde_json::to_string_pretty(&blocks_json(dp)).unwrap_or_default();
            respond(StatusCode::OK, "application/json", text)
        }
        p if p.starts_with("/blocks/") && req.method() == http::Method::DELETE => {
            lift_block(dp, &p["/blocks/".len()..])
        }
        "/adjustments" if req.method() == http::Method::GET => {
            let text = serde_json::to_string_pretty(&adjustments_json(dp)).unwrap_or_default();
            respond(StatusCode::OK, "application/json", text)
        }
        p if p.starts_with("/adjustments/") && req.method() == http::Method::DELETE => {
            lift_adjustment(dp, &p["/adjustments/".len()..])
        }
        "/config" => {
            let text = serde_json::to_string_pretty(&config_json(dp)).unwrap_or_default();
            respond(StatusCode::OK, "application/json", text)
        }
        "/requests" => {
            let last = query(req, "last")
                .and_then(|v| v.parse().ok())
                .unwrap_or(20usize);
            let list: Vec<_> = dp.recent.last(last).iter().map(|s| s.json()).collect();
            let text = serde_json::to_string_pretty(&list).unwrap_or_default();
            respond(StatusCode::OK, "application/json", text)
        }
        p if p.starts_with("/requests/") => match dp.recent.find(&p["/requests/".len()..]) {
            Some(seen) => respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&seen.json()).unwrap_or_default(),
            ),
            None => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                format!(
                    "no request {} among the last {} served, nor the last {} errors\n",
                    &p["/requests/".len()..],
                    crate::recent::RING,
                    crate::recent::FAILED_RING
                ),
            ),
        },
        "/tap" => tap(dp, req),
        "/flows" => {
            let last = query(req, "last")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100usize);
            let text = serde_json::to_string_pretty(&dp.metrics.l4.last(last)).unwrap_or_default();
            respond(StatusCode::OK, "application/json", text)
        }
        "/top" => {
            let text = serde_json::to_string_pretty(&top_json(dp)).unwrap_or_default();
            respond(StatusCode::OK, "application/json", text)
        }
        path => {
            let ext = dp
                .admin_ext
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let query = req.uri().query();
            match ext.iter().find_map(|f| f(req.method(), path, query)) {
                Some(reply) => {
                    let mut r = Response::new(body::full(reply.body));
                    *r.status_mut() = StatusCode::from_u16(reply.status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(reply.content_type),
                    );
                    r
                }
                None => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "try /healthz /readyz /config /metrics /blocks /requests /tap /top /dashboard\n"
                        .into(),
                ),
            }
        }
    }
}

/// An answer of a path the data plane does not know (the dashboard, say), served on the
/// admin listener by a part of the process that registers it.
pub struct AdminReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: bytes::Bytes,
}

/// Answers (method, path, query) if the path is its own.
pub type AdminRoute =
    Arc<dyn Fn(&http::Method, &str, Option<&str>) -> Option<AdminReply> + Send + Sync>;

/// Each served cluster's endpoints by state (`ready`, `unhealthy` by active checks,
/// `ejected` by outlier detection, `held_out` by a TrafficAdjustment), requests in
/// flight, and its RED: requests answered, failed (5xx, failed connections, timeouts)
/// and their time to the response head, summed over its endpoints (those it has now).
/// Labels: one series per cluster the Snapshot serves.
fn upstream_health(dp: &DataPlane, out: &mut String) {
    use std::fmt::Write;
    let active = dp.current();
    out.push_str("# HELP gatehouse_upstream_endpoints Endpoints of each cluster, by state.\n# TYPE gatehouse_upstream_endpoints gauge\n");
    let mut in_flight = String::new();
    let mut red = String::new();
    for c in active.snapshot.clusters.values() {
        let n = c.counts();
        let label = crate::metrics::escape(&c.name);
        let _ = writeln!(
            red,
            "gatehouse_upstream_requests_total{{cluster=\"{label}\",outcome=\"ok\"}} {}\n\
             gatehouse_upstream_requests_total{{cluster=\"{label}\",outcome=\"failed\"}} {}\n\
             gatehouse_upstream_response_seconds_sum{{cluster=\"{label}\"}} {}",
            n.answered.saturating_sub(n.failed),
            n.failed,
            n.latency_us as f64 / 1e6
        );
        let all = c.endpoints();
        let unhealthy = c.unhealthy();
        let ejected = c.ejected();
        let held = all.iter().filter(|a| c.policy.held_out.contains(a)).count();
        let out_of_rotation = all
            .iter()
            .filter(|a| {
                unhealthy.contains(a) || ejected.contains(a) || c.policy.held_out.contains(a)
            })
            .count();
        let name = crate::metrics::escape(&c.name);
        for (state, n) in [
            ("ready", all.len() - out_of_rotation),
            ("unhealthy", unhealthy.len()),
            ("ejected", ejected.len()),
            ("held_out", held),
        ] {
            let _ = writeln!(
                out,
                "gatehouse_upstream_endpoints{{cluster=\"{name}\",state=\"{state}\"}} {n}"
            );
        }
        let _ = writeln!(
            in_flight,
            "gatehouse_upstream_requests_in_flight{{cluster=\"{name}\"}} {}",
            c.in_flight()
        );
    }
    out.push_str("# HELP gatehouse_upstream_requests_in_flight Requests in flight to each cluster.\n# TYPE gatehouse_upstream_requests_in_flight gauge\n");
    out.push_str(&in_flight);
    out.push_str("# HELP gatehouse_upstream_requests_total Requests sent to each cluster, by outcome (failed: 5xx, failed connection, timeout).\n# TYPE gatehouse_upstream_requests_total counter\n# HELP gatehouse_upstream_response_seconds_sum Time to the response head of each cluster's requests, summed.\n# TYPE gatehouse_upstream_response_seconds_sum counter\n");
    out.push_str(&red);
}

/// The value of query parameter `name`, percent-decoded.
fn query(req: &Request<Incoming>, name: &str) -> Option<String> {
    gatehouse_translate::routes::query_param(req.uri().query(), name)
}

/// `/tap`: the requests that pass the query's filter, as they end, one JSON line each,
/// until the client goes.
fn tap(dp: &DataPlane, req: &Request<Incoming>) -> Response<Body> {
    let filter = crate::recent::TapFilter {
        route: query(req, "route"),
        host: query(req, "host"),
        path: query(req, "path"),
        method: query(req, "method"),
        status: query(req, "status"),
    };
    let rx = dp.recent.tap(filter);
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let seen = rx.recv().await?;
        let mut line = seen.json().to_string();
        line.push('\n');
        let frame = http_body::Frame::data(bytes::Bytes::from(line));
        Some((Ok::<_, crate::body::BoxError>(frame), rx))
    });
    let mut r = Response::new(http_body_util::BodyExt::boxed_unsync(
        http_body_util::StreamBody::new(lines),
    ));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// `/top`: per route, requests by status class, latency sum, histogram and reasons,
/// as counted since the start (a client takes two and divides by the time between).
pub fn top_json(dp: &DataPlane) -> serde_json::Value {
    json!({
        "time": crate::security_log::now_ms(),
        "routes": dp.metrics.route_totals(),
    })
}

/// The served Snapshot as JSON: version, summary, warnings, ports with their sections
/// and hosts, and clusters with their endpoints.
pub fn config_json(dp: &DataPlane) -> serde_json::Value {
    let active = dp.current();
    let s = &active.snapshot;
    let ports: Vec<_> = s
        .ports
        .iter()
        .map(|p| {
            let sections: Vec<_> = p
                .sections
                .entries()
                .into_iter()
                .map(|(hostname, sec)| {
                    let hosts: Vec<_> = sec
                        .hosts
                        .entries()
                        .into_iter()
                        .map(|(h, t)| json!({"host": h, "routes": t.entries().len()}))
                        .collect();
                    json!({"listenerHostname": hostname, "name": sec.name, "hosts": hosts, "defaultBackend": sec.fallback.is_some()})
                })
                .collect();
            json!({"address": p.addr.to_string(), "tls": p.tls.is_some(), "owners": p.owners, "sections": sections})
        })
        .collect();
    let clusters: Vec<_> = s
        .clusters
        .values()
        .map(|c| json!({"name": c.name, "protocol": c.protocol, "policy": c.policy, "in_flight": c.in_flight(), "ejected": c.ejected().iter().map(|e| e.to_string()).collect::<Vec<_>>(), "ejections_total": c.ejections(), "unhealthy": c.unhealthy().iter().map(|e| e.to_string()).collect::<Vec<_>>(), "open_connections": c.connections().open.load(std::sync::atomic::Ordering::Relaxed), "endpoints": c.endpoints().iter().map(|e| e.to_string()).collect::<Vec<_>>()}))
        .collect();
    json!({
        "version": s.version,
        "summary": s.summary,
        "warnings": s.warnings,
        "ports": ports,
        "clusters": clusters,
    })
}

/// The blocks in force: each `SourceBlock` with its source, end and maker.
pub fn blocks_json(dp: &DataPlane) -> serde_json::Value {
    let active = dp.current();
    let now = crate::security_log::now_ms();
    let generated: std::collections::HashSet<String> = dp
        .generated
        .list()
        .iter()
        .map(|o| format!("{}/{}", o.namespace(), o.name()))
        .collect();
    let blocks: Vec<_> = active
        .snapshot
        .blocks
        .iter()
        .flat_map(|b| b.entries.iter())
        .map(|e| {
            json!({
                "name": e.name,
                "source": e.source,
                "policy": e.policy,
                "expires_ms": (e.until_ms != u64::MAX).then_some(e.until_ms),
                "limit": e.limit.as_ref().map(|l| l.per_second),
                "active": e.until_ms > now,
                "adaptive": generated.contains(&e.name),
            })
        })
        .collect();
    json!({ "blocks": blocks })
}

/// The `TrafficAdjustment`s the adaptive traffic controls made: each with its spec.
pub fn adjustments_json(dp: &DataPlane) -> serde_json::Value {
    let list: Vec<_> = dp
        .generated
        .list()
        .into_iter()
        .filter_map(|o| match o.object {
            gatehouse_model::Object::TrafficAdjustment(a) => Some(json!({
                "name": format!("{}/{}", a.metadata.namespace.as_deref().unwrap_or("default"), a.metadata.name.as_deref().unwrap_or("")),
                "spec": a.spec,
            })),
            _ => None,
        })
        .collect();
    json!({ "adjustments": list })
}

/// The key of the `kind` object `NAMESPACE/NAME` names (the rest of a `DELETE
/// /PATH/NAMESPACE/NAME`).
fn made_key(kind: &'static str, rest: &str) -> Option<gatehouse_model::ObjectKey> {
    let (namespace, name) = rest.split_once('/')?;
    Some(gatehouse_model::ObjectKey {
        kind,
        namespace: Some(namespace.to_string()),
        name: name.to_string(),
    })
}

/// The 400 that says how to name what to delete under `/PATH`.
fn how_to_delete(path: &str) -> Response<Body> {
    respond(
        StatusCode::BAD_REQUEST,
        "text/plain",
        format!("use DELETE /{path}/NAMESPACE/NAME\n"),
    )
}

/// `DELETE /adjustments/NAMESPACE/NAME`: undoes a TrafficAdjustment the controls made.
fn lift_adjustment(dp: &DataPlane, name: &str) -> Response<Body> {
    let Some(key) = made_key("TrafficAdjustment", name) else {
        return how_to_delete("adjustments");
    };
    match dp.generated.remove(&key) {
        true => {
            tracing::info!(adjustment = %key, "adjustment undone through the admin API");
            respond(StatusCode::OK, "text/plain", format!("undid {key}\n"))
        }
        false => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no {key} made by this proxy\n"),
        ),
    }
}

/// `DELETE /blocks/NAMESPACE/NAME`: lifts a block adaptive blocking made (one from the
/// config's own objects is deleted where it is defined).
fn lift_block(dp: &DataPlane, name: &str) -> Response<Body> {
    let Some(key) = made_key("SourceBlock", name) else {
        return how_to_delete("blocks");
    };
    let (namespace, name) = (key.namespace.as_deref().unwrap_or(""), key.name.as_str());
    if dp.generated.remove(&key) {
        tracing::info!(block = %key, "block lifted through the admin API");
        crate::security_log::event(
            dp,
            json!({
                "time": crate::security_log::now_ms(),
                "event": "source_block_lifted",
                "block": format!("{namespace}/{name}"),
                "action": "allow",
            }),
        );
        return respond(StatusCode::OK, "text/plain", format!("lifted {key}\n"));
    }
    let in_config = dp.current().snapshot.blocks.as_ref().is_some_and(|b| {
        b.entries
            .iter()
            .any(|e| e.name == format!("{namespace}/{name}"))
    });
    match in_config {
        true => respond(
            StatusCode::CONFLICT,
            "text/plain",
            format!("{key} is part of the configuration: delete it where it is defined\n"),
        ),
        false => respond(StatusCode::NOT_FOUND, "text/plain", format!("no {key}\n")),
    }
}
