//! The east-west mesh: SPIFFE workload identities and the built-in CA that issues
//! them, mutual-TLS tunnels between mesh proxies (HTTP/2 CONNECT, like Istio's HBONE),
//! transparent capture, and the node (or sidecar) proxy that enforces the
//! authorization policies `translate` compiles.

pub mod ca;
pub mod ca_api;
pub mod capture;
pub mod flows;
pub mod h2io;
pub mod identities;
pub mod identity;
pub mod l7;
pub mod node;
pub mod node_tls;
pub mod tls;
pub mod tunnel;

pub use identity::Identity;
