//! The data plane: listeners (plain and TLS), HTTP/1.1, HTTP/2 and h2c downstream,
//! routing on the current Snapshot, forwarding upstream (HTTP/1.1 pooled, HTTP/2 for
//! gRPC), WebSocket upgrades, the web application firewall, metrics and the admin
//! endpoints.

pub mod access_log;
pub mod adaptive;
pub mod admin;
pub mod affinity;
pub mod blocks;
pub mod body;
pub mod chunked;
pub mod config;
pub mod connlimit;
pub mod dataplane;
pub mod deadline;
pub mod fast_h1;
pub mod fast_h2;
pub mod generated;
pub mod global_limit;
pub mod h1pool;
pub mod handler;
pub mod headers;
pub mod health;
pub mod l4;
pub mod l4_flows;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod mirror;
pub mod normalize;
pub mod pace;
pub mod pool;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod raw_client;
pub mod reason;
pub mod recent;
pub mod redirect;
pub mod retry;
pub mod rewind;
pub mod security_log;
pub mod shed;
pub mod strict;
pub mod tls;
pub mod trace;
pub mod traffic_controls;
pub mod upstream;
pub mod waf;

pub mod workers;

pub use config::ProxyConfig;
pub use dataplane::{Active, DataPlane};
