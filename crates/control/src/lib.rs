//! Central control: a controller serves the objects it reads to remote data planes
//! (ingress gateways, node proxies) over a gRPC stream with the semantics of Envoy's
//! delta xDS (versioned resources, nonces, ACK/NACK, resumption), and those proxies
//! follow it. Protocol: `proto/gatehouse/control/v1/control.proto`.

pub mod auth;
pub mod client;
pub mod merge;
pub mod node_scope;
pub mod scope;
pub mod server;
pub mod table;
pub mod transport;

/// The generated protocol types and gRPC stubs.
#[allow(clippy::all)]
pub mod pb {
    tonic::include_proto!("gatehouse.control.v1");
}
