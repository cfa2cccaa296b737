//! HTTP/1.1 upstream requests through hyper's client connections, pooled by
//! [`crate::pool`]: used for everything the fast path ([`crate::fast_h1`]) hands over
//! (TLS and HTTP/2 clients, upgrades, retries, mirrors).

use crate::body::Body;
use crate::pool::{Acquired, Lease, Pool, Pooled, Reusable};
use crate::upstream::UpstreamError;
use gatehouse_translate::Cluster;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

impl Reusable for SendRequest<Body> {
    fn is_closed(&self) -> bool {
        SendRequest::is_closed(self)
    }
}

pub struct H1Pool {
    pool: Pool<SendRequest<Body>>,
    connect_timeout: Duration,
}

/// A pooled hyper connection lent to one request.
pub type H1Lease = Lease<SendRequest<Body>>;

impl H1Pool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        H1Pool {
            pool: Pool::new(idle_timeout),
            connect_timeout,
        }
    }

    /// Sends `req` (origin-form URI) to `endpoint` of `cluster` on a pooled or new
    /// connection.
    pub async fn send(
        &self,
        cluster: &Cluster,
        endpoint: SocketAddr,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, H1Lease), UpstreamError> {
        let mut lease = loop {
            let (acquired, key) = self
                .pool
                .acquire(cluster, endpoint)
                .await
                .map_err(UpstreamError::Overflow)?;
            let mut pooled = match acquired {
                Acquired::Idle(p) => p,
                Acquired::New(slot) => Pooled::new(self.connect(endpoint).await?, slot),
            };
            // The previous response may still be finishing on the connection task.
            if pooled.conn.ready().await.is_ok() {
                break self.pool.lease(pooled, key);
            }
        };
        let resp = lease
            .conn()
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::Exchange(Box::new(e)))?;
        Ok((resp, lease))
    }

    async fn connect(&self, endpoint: SocketAddr) -> Result<SendRequest<Body>, UpstreamError> {
        let tcp = crate::upstream::connect(endpoint, self.connect_timeout).await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| UpstreamError::Connect(format!("HTTP/1.1 to {endpoint}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %endpoint, error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}
