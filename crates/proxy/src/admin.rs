//! The admin listener (its own port): `/healthz`, `/readyz`, `/config` (Snapshot
//! version and summary as JSON) and `/metrics` (Prometheus text format).

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
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            dp.metrics.render(),
        ),
        "/config" => {
            let text = serde_json::to_string_pretty(&config_json(dp)).unwrap_or_default();
            respond(StatusCode::OK, "application/json", text)
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /healthz /readyz /config /metrics\n".into(),
        ),
    }
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
