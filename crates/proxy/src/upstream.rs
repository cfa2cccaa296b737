//! Upstream connection pools: the HTTP/1.1 keep-alive pool (see [`crate::h1pool`]),
//! and an HTTP/2 (prior knowledge) pool of one multiplexed connection per endpoint for
//! gRPC and h2c Services. The HTTP/2 pool dials the chosen endpoint while the request
//! keeps its real `:authority`.

use crate::body::{Body, BoxError};
use crate::config::ProxyConfig;
use crate::h1pool::{H1Lease, H1Pool};
use crate::pool::Overflow;
use gatehouse_translate::{Cluster, UpstreamProtocol};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Why an upstream request failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, timed out).
    Connect(String),
    /// The connection failed during the exchange.
    Exchange(BoxError),
    /// The circuit breaker's connection limit refused the request.
    Overflow(Overflow),
}

pub struct Upstreams {
    connect_timeout: Duration,
    h1: H1Pool,
    h2: H2Pool,
    /// Raw connections of the HTTP/1.1 fast path.
    pub(crate) raw: crate::fast_h1::RawPool,
}

impl Upstreams {
    pub fn new(cfg: &ProxyConfig) -> Self {
        let h2 = H2Pool {
            conns: Mutex::new(HashMap::new()),
            connect_timeout: cfg.connect_timeout,
            keepalive: cfg.h2_keepalive,
        };
        Upstreams {
            connect_timeout: cfg.connect_timeout,
            h1: H1Pool::new(cfg.connect_timeout, cfg.upstream_idle_timeout),
            h2,
            raw: crate::pool::Pool::new(cfg.upstream_idle_timeout),
        }
    }

    /// Sends `req` to `endpoint` of `cluster`, by the cluster's protocol: HTTP/1.1 on
    /// the raw pool (hyper's client when `upgrade`, for WebSockets), or HTTP/2.
    pub async fn send(
        &self,
        cluster: &Cluster,
        endpoint: SocketAddr,
        req: Request<Body>,
        upgrade: bool,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        match cluster.protocol {
            UpstreamProtocol::Http1 if upgrade => {
                let (resp, lease) = self.h1.send(cluster, endpoint, req).await?;
                Ok(resp.map(|body| UpstreamBody::Hyper {
                    body,
                    lease: Some(lease),
                    ended: false,
                }))
            }
            UpstreamProtocol::Http1 => {
                let resp = crate::raw_client::send(
                    &self.raw,
                    cluster,
                    endpoint,
                    self.connect_timeout,
                    req,
                )
                .await?;
                Ok(resp.map(UpstreamBody::Raw))
            }
            UpstreamProtocol::Http2 => {
                let resp = self.h2.send(endpoint, req).await?;
                Ok(resp.map(|body| UpstreamBody::Hyper {
                    body,
                    lease: None,
                    ended: false,
                }))
            }
        }
    }
}

/// A response body from a backend: read by hyper's client (HTTP/2, upgrades), or
/// straight off a raw HTTP/1.1 connection. A pooled hyper connection goes back to the
/// pool when the body was read to the end.
pub enum UpstreamBody {
    Hyper {
        body: Incoming,
        lease: Option<H1Lease>,
        ended: bool,
    },
    Raw(crate::raw_client::RawBody),
}

impl UpstreamBody {
    /// The connection must not serve again (it was upgraded).
    pub fn no_reuse(&mut self) {
        if let UpstreamBody::Hyper { lease, .. } = self {
            *lease = None;
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let UpstreamBody::Hyper { body, lease, ended } = self {
            if let Some(l) = lease.take() {
                if *ended || http_body::Body::is_end_stream(body) {
                    l.release();
                }
            }
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper { body, ended, .. } => {
                let polled = std::pin::Pin::new(body).poll_frame(cx);
                if let std::task::Poll::Ready(None) = polled {
                    *ended = true;
                }
                polled.map_err(|e| -> BoxError { Box::new(e) })
            }
            UpstreamBody::Raw(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper { body, ended, .. } => *ended || body.is_end_stream(),
            UpstreamBody::Raw(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpstreamBody::Hyper { body, .. } => body.size_hint(),
            UpstreamBody::Raw(b) => b.size_hint(),
        }
    }
}

/// Opens a TCP connection to an upstream endpoint (no delay, bounded wait).
pub async fn connect(
    endpoint: SocketAddr,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, UpstreamError> {
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(endpoint))
        .await
        .map_err(|_| UpstreamError::Connect(format!("connect to {endpoint} timed out")))?
        .map_err(|e| UpstreamError::Connect(format!("connect to {endpoint}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// One multiplexed HTTP/2 connection per endpoint, made on first use and replaced when
/// it closes.
struct H2Pool {
    conns: Mutex<HashMap<SocketAddr, SendRequest<Body>>>,
    connect_timeout: Duration,
    keepalive: Duration,
}

impl H2Pool {
    fn cached(&self, ep: SocketAddr) -> Option<SendRequest<Body>> {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.get(&ep).filter(|s| !s.is_closed()).cloned()
    }

    async fn connect(&self, ep: SocketAddr) -> Result<SendRequest<Body>, UpstreamError> {
        let tcp = connect(ep, self.connect_timeout).await?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.keepalive)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| UpstreamError::Connect(format!("HTTP/2 handshake with {ep}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %ep, error = %e, "HTTP/2 upstream connection ended");
            }
        });
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|_, s| !s.is_closed());
        conns.insert(ep, sender.clone());
        Ok(sender)
    }

    async fn send(
        &self,
        ep: SocketAddr,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = match self.cached(ep) {
            Some(s) => s,
            None => self.connect(ep).await?,
        };
        sender
            .ready()
            .await
            .map_err(|e| UpstreamError::Exchange(Box::new(e)))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::Exchange(Box::new(e)))
    }
}
