//! Request mirroring (shadow traffic): a copy of the request goes to another backend in
//! its own task; the copy's answer is read and dropped, and neither its latency nor its
//! failure touches the client's response.

use crate::body::{self, Body};
use crate::dataplane::DataPlane;
use crate::upstream::Upstreams;
use bytes::Bytes;
use gatehouse_translate::cluster::{Affinity, Cluster};
use http::Request;
use http_body_util::BodyExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Whether this request is among the `per_million` share that gets copied.
pub fn sampled(per_million: u32) -> bool {
    per_million >= 1_000_000 || fastrand::u32(..1_000_000) < per_million
}

/// Sends a copy built by `build` (given its body) to `cluster`, in the
/// background.
pub fn spawn(
    dp: Arc<DataPlane>,
    cluster: Arc<Cluster>,
    body: Bytes,
    build: impl FnOnce(Body) -> Option<Request<Body>> + Send + 'static,
) {
    tokio::spawn(async move {
        let counters = &dp.metrics.counters;
        counters
            .mirror_requests_total
            .fetch_add(1, Ordering::Relaxed);
        let ok = send(
            &dp.upstreams,
            &cluster,
            body,
            build,
            dp.cfg.upstream_timeout,
        )
        .await;
        if !ok {
            counters.mirror_errors_total.fetch_add(1, Ordering::Relaxed);
        }
    });
}

async fn send(
    upstreams: &Upstreams,
    cluster: &Arc<Cluster>,
    body: Bytes,
    build: impl FnOnce(Body) -> Option<Request<Body>>,
    timeout: std::time::Duration,
) -> bool {
    let Ok(admitted) = cluster.admit(&Affinity::default()) else {
        return false;
    };
    let Some(req) = build(body::full(body)) else {
        return false;
    };
    let exchange = async {
        let resp = upstreams
            .send(cluster, admitted.addr, req, false)
            .await
            .ok()?;
        let ok = !resp.status().is_server_error();
        // Read to the end, so the connection goes back to the pool.
        resp.into_body().collect().await.ok()?;
        Some(ok)
    };
    let ok = matches!(
        tokio::time::timeout(timeout, exchange).await,
        Ok(Some(true))
    );
    admitted.guard.outcome(ok);
    ok
}
