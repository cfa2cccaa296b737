//! Request-level authorization: for a workload whose policies look at HTTP, the
//! destination proxy reads the caller's requests and checks each one (method, path,
//! host, headers) before passing it on; a denied request gets 403. HTTP/1.1 (with
//! upgrades, such as WebSocket, carried once allowed) and HTTP/2 with prior knowledge
//! (h2c, as gRPC speaks it) are told apart by the connection preface, and the workload
//! is spoken to in the caller's version.

use crate::node::{Caller, NodeProxy};
use bytes::Bytes;
use gatehouse_proxy::rewind::Rewind;
use gatehouse_translate::authz::{Call, HttpAttributes};
use gatehouse_translate::mesh::Workload;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

/// How an HTTP/2 connection with prior knowledge starts.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a connection observed for its HTTP may take to send its first bytes before
/// it is taken as opaque (a protocol whose server speaks first sends nothing).
const SNIFF_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

/// Whether a connection speaks HTTP (HTTP/1's request line or HTTP/2's preface, both
/// starting with an uppercase method and a space), from its first bytes, read for up
/// to [`SNIFF_WAIT`]. The bytes read are given back in front of the stream.
pub async fn sniff<S: AsyncRead + Unpin>(mut down: S) -> (Rewind<S>, bool) {
    let mut pre = bytes::BytesMut::with_capacity(64);
    let wait = tokio::time::sleep(SNIFF_WAIT);
    tokio::pin!(wait);
    let http = loop {
        if let Some(http) = looks_like_http(&pre) {
            break http;
        }
        tokio::select! {
            r = down.read_buf(&mut pre) => match r {
                Ok(0) | Err(_) => break false,
                Ok(_) => {}
            },
            _ = &mut wait => break false,
        }
    };
    (Rewind::new(down, pre.freeze()), http)
}

/// Some(true) if `b` starts like an HTTP request (a method of uppercase letters, then
/// a space), Some(false) if it cannot, None if more bytes are needed.
fn looks_like_http(b: &[u8]) -> Option<bool> {
    const LONGEST_METHOD: usize = 16;
    let method = |m: &[u8]| m.iter().all(|c| c.is_ascii_uppercase() || *c == b'-');
    match b.iter().position(|&c| c == b' ') {
        Some(i) => Some(i > 0 && i <= LONGEST_METHOD && method(&b[..i])),
        None if b.is_empty() => None,
        // Still a method's worth of uppercase letters: wait for more.
        None if b.len() <= LONGEST_METHOD && method(b) => None,
        None => Some(false),
    }
}

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

/// The authorization check of one request: the response to send instead of passing
/// it on, if it is denied.
struct Checker {
    proxy: Arc<NodeProxy>,
    w: Arc<Workload>,
    caller: Caller,
    principal: Option<String>,
    target: SocketAddr,
}

impl Checker {
    fn refuse(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let host = host_of(req);
        let call = Call {
            principal: self.principal.as_deref(),
            namespace: self.caller.identity.as_ref().map(|i| i.namespace.as_str()),
            source_ip: self.caller.ip,
            destination_port: self.target.port(),
            http: Some(HttpAttributes {
                method: req.method().as_str(),
                path: req.uri().path(),
                host: &host,
                headers: req.headers(),
            }),
        };
        let decision = self.w.authz.check(&call);
        self.proxy.audit(&decision, &self.caller, &self.w);
        let seen = Some((req.method().as_str(), req.uri().path()));
        if decision.allowed {
            self.proxy.flow(
                &self.caller,
                &self.w,
                self.target,
                Some(&decision),
                (0, 0),
                std::time::Duration::ZERO,
                seen,
            );
            return None;
        }
        self.proxy
            .deny(&self.caller, &self.w, self.target, &decision, seen);
        Some(denied())
    }
}

/// Serves `down`'s requests, each checked, over one connection to the workload.
pub async fn serve<S>(
    proxy: Arc<NodeProxy>,
    mut down: S,
    up: TcpStream,
    w: Arc<Workload>,
    caller: Caller,
    target: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Enough of the start to tell HTTP/2's preface from an HTTP/1 request line.
    let mut pre = bytes::BytesMut::with_capacity(PREFACE.len());
    while pre.len() < PREFACE.len() && PREFACE.starts_with(&pre) {
        match down.read_buf(&mut pre).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "connection to a workload ended early");
                return;
            }
        }
    }
    let http2 = pre.starts_with(PREFACE);
    let down = TokioIo::new(Rewind::new(down, pre.freeze()));
    let check = Arc::new(Checker {
        principal: caller.principal(),
        proxy,
        w,
        caller,
        target,
    });
    let r = match http2 {
        true => serve_h2(down, up, check).await,
        false => serve_h1(down, up, check).await,
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, "HTTP connection to a workload ended with an error");
    }
}

async fn serve_h2<S>(
    down: TokioIo<Rewind<S>>,
    up: TcpStream,
    check: Arc<Checker>,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(up)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let check = check.clone();
        let mut sender = sender.clone();
        async move {
            if let Some(refused) = check.refuse(&req) {
                return Ok::<_, hyper::Error>(refused);
            }
            match sender.send_request(req).await {
                Ok(resp) => Ok(resp.map(Either::Left)),
                Err(e) => {
                    tracing::debug!(error = %e, "the workload failed a request");
                    Ok(bad_gateway())
                }
            }
        }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(down, svc)
        .await
}

async fn serve_h1<S>(
    down: TokioIo<Rewind<S>>,
    up: TcpStream,
    check: Arc<Checker>,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(up)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let check = check.clone();
        let sender = sender.clone();
        async move {
            if let Some(refused) = check.refuse(&req) {
                return Ok::<_, hyper::Error>(refused);
            }
            let upgrade = req
                .headers()
                .contains_key(http::header::UPGRADE)
                .then(|| hyper::upgrade::on(&mut req));
            let mut s = sender.lock().await;
            if s.ready().await.is_err() {
                return Ok(bad_gateway());
            }
            let mut resp = match s.send_request(req).await {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::debug!(error = %e, "the workload failed a request");
                    return Ok(bad_gateway());
                }
            };
            if let (StatusCode::SWITCHING_PROTOCOLS, Some(down)) = (resp.status(), upgrade) {
                // The workload switched protocols: from here on, bytes both ways.
                let up = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    match (down.await, up.await) {
                        (Ok(d), Ok(u)) => {
                            let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
                            let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
                        }
                        (d, u) => tracing::debug!(
                            down = d.is_ok(),
                            up = u.is_ok(),
                            "an upgrade did not complete"
                        ),
                    }
                });
            }
            Ok(resp.map(Either::Left))
        }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(down, svc)
        .with_upgrades()
        .await
}

#[cfg(test)]
mod sniff_tests {
    use super::looks_like_http;

    #[test]
    fn http_is_told_from_other_protocols() {
        assert_eq!(looks_like_http(b"GET / HTTP/1.1"), Some(true));
        assert_eq!(looks_like_http(b"PRI * HTTP/2.0"), Some(true));
        assert_eq!(looks_like_http(b"POS"), None);
        assert_eq!(looks_like_http(b""), None);
        assert_eq!(looks_like_http(b"hello"), Some(false));
        assert_eq!(looks_like_http(b"\x16\x03\x01"), Some(false));
        assert_eq!(looks_like_http(b" GET"), Some(false));
    }
}
