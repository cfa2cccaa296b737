//! Upstream connection pools: hyper-util's pooled HTTP/1.1 client (keep-alive, keyed by
//! endpoint), and an HTTP/2 (prior knowledge) pool of one multiplexed connection per
//! endpoint for gRPC and h2c Services. The HTTP/2 pool dials the chosen endpoint while
//! the request keeps its real `:authority`.

use crate::body::{Body, BoxError};
use crate::config::ProxyConfig;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
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
}

pub struct Upstreams {
    h1: Client<HttpConnector, Body>,
    h2: H2Pool,
}

impl Upstreams {
    pub fn new(cfg: &ProxyConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let h1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.upstream_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let h2 = H2Pool {
            conns: Mutex::new(HashMap::new()),
            connect_timeout: cfg.connect_timeout,
            keepalive: cfg.h2_keepalive,
        };
        Upstreams { h1, h2 }
    }

    /// HTTP/1.1 to `req`'s URI authority (the endpoint address).
    pub async fn send_h1(&self, req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        self.h1.request(req).await.map_err(|e| {
            if e.is_connect() {
                UpstreamError::Connect(e.to_string())
            } else {
                UpstreamError::Exchange(Box::new(e))
            }
        })
    }

    /// HTTP/2 to `endpoint`, whatever `req`'s authority says.
    pub async fn send_h2(
        &self,
        endpoint: SocketAddr,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.h2.send(endpoint, req).await
    }
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
        let tcp = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(ep))
            .await
            .map_err(|_| UpstreamError::Connect(format!("connect to {ep} timed out")))?
            .map_err(|e| UpstreamError::Connect(format!("connect to {ep}: {e}")))?;
        let _ = tcp.set_nodelay(true);
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
