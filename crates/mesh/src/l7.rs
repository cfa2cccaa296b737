//! Request-level authorization: for a workload whose policies look at HTTP, the
//! destination proxy reads the caller's HTTP/1.1 requests and checks each one (method,
//! path, host, headers) before passing it on; a denied request gets 403.

use crate::node::{Caller, NodeProxy};
use bytes::Bytes;
use gatehouse_translate::authz::{Call, HttpAttributes};
use gatehouse_translate::mesh::Workload;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

type Body = Either<Incoming, Full<Bytes>>;

fn denied() -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        b"RBAC: access denied\n",
    ))));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

fn bad_gateway() -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        b"upstream connect error\n",
    ))));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}

/// The host of a request, lowercase and without port.
fn host_of(req: &Request<Incoming>) -> String {
    let raw = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    gatehouse_translate::hosts::strip_port(raw).to_ascii_lowercase()
}

/// Serves `down`'s requests, each checked, over one connection to the workload.
pub async fn serve<S>(
    proxy: Arc<NodeProxy>,
    down: S,
    up: TcpStream,
    w: Arc<Workload>,
    caller: Caller,
    target: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(up)).await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %e, "cannot speak HTTP to the workload");
            return;
        }
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let principal = caller.principal();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        let w = w.clone();
        let caller = caller.clone();
        let principal = principal.clone();
        let sender = sender.clone();
        async move {
            let host = host_of(&req);
            let decision = {
                let call = Call {
                    principal: principal.as_deref(),
                    namespace: caller.identity.as_ref().map(|i| i.namespace.as_str()),
                    source_ip: caller.ip,
                    destination_port: target.port(),
                    http: Some(HttpAttributes {
                        method: req.method().as_str(),
                        path: req.uri().path(),
                        host: &host,
                        headers: req.headers(),
                    }),
                };
                w.authz.check(&call)
            };
            proxy.audit(&decision, &caller, &w);
            if !decision.allowed {
                proxy.deny(&caller, &w, target, &decision);
                return Ok::<_, hyper::Error>(denied());
            }
            let mut s = sender.lock().await;
            if s.ready().await.is_err() {
                return Ok(bad_gateway());
            }
            match s.send_request(req).await {
                Ok(resp) => Ok(resp.map(Either::Left)),
                Err(e) => {
                    tracing::debug!(error = %e, "the workload failed a request");
                    Ok(bad_gateway())
                }
            }
        }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(down), svc)
        .await
    {
        tracing::debug!(error = %e, "HTTP connection to a workload ended with an error");
    }
}
