//! Upstream connection pools: one HTTP/1.1 client with keep-alive pooling and one
//! HTTP/2 (prior knowledge) client for gRPC and h2c Services, both keyed by endpoint.

use crate::body::Body;
use crate::config::ProxyConfig;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub struct Upstreams {
    pub h1: Client<HttpConnector, Body>,
    pub h2: Client<HttpConnector, Body>,
}

impl Upstreams {
    pub fn new(cfg: &ProxyConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let h1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.upstream_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector.clone());
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .http2_keep_alive_interval(cfg.h2_keepalive)
            .http2_keep_alive_while_idle(true)
            .pool_idle_timeout(cfg.upstream_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Upstreams { h1, h2 }
    }
}
