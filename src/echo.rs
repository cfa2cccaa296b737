//! The demo echo backend (`gatehouse echo`, and `gatehouse run --demo-backends`): answers
//! every request over HTTP/1.1 or h2c with JSON naming itself and echoing the request.

use bytes::Bytes;
use gatehouse_model::Object;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Serves the echo backend on an already bound listener until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, name: String) {
    let name: Arc<str> = Arc::from(name);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        let local = stream.local_addr().ok();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let name = name.clone();
                async move { Ok::<_, Infallible>(answer(&name, local, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    name: &str,
    local: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // Repeated headers are joined with ", " (RFC 9110 field combination).
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes());
        headers
            .entry(k.to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    let json = serde_json::json!({
        "service": name,
        "endpoint": local.map(|a| a.to_string()),
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "bodyBytes": body.len(),
    });
    let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
    text.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Starts an echo server for every loopback endpoint named by an EndpointSlice in the
/// directory, named after its Service, unless something already listens there.
pub async fn start_demo_backends(dir: &Path) {
    let Ok(loaded) = gatehouse_sources::load_dir(dir) else {
        return;
    };
    let mut wanted: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for o in loaded.store.of_kind("EndpointSlice") {
        let Object::EndpointSlice(es) = &o.object else {
            continue;
        };
        let service = es
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .cloned()
            .unwrap_or_else(|| o.name().to_string());
        for port in es.ports.iter().flatten().filter_map(|p| p.port) {
            for ep in es.endpoints.iter().flatten() {
                for a in &ep.addresses {
                    let Ok(ip) = a.parse::<std::net::IpAddr>() else {
                        continue;
                    };
                    let Ok(port) = u16::try_from(port) else {
                        continue;
                    };
                    if ip.is_loopback() {
                        wanted.insert(SocketAddr::new(ip, port), service.clone());
                    }
                }
            }
        }
    }
    for (addr, service) in wanted {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(%addr, %service, "demo backend started");
                tokio::spawn(serve(l, format!("{service} ({addr})")));
            }
            Err(e) => tracing::warn!(%addr, error = %e, "demo backend not started"),
        }
    }
}
