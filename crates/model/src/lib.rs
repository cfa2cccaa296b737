//! Object model: the typed Kubernetes objects Gatehouse consumes (core kinds from
//! k8s-openapi, Gateway API kinds defined here), the manifest parser and the object store.
//! Sources fill the store; `translate` reads it.

// ConfigError carries file, line, object and field by value: it is built on the cold
// path of a rejected config, where its size does not matter.
#![allow(clippy::result_large_err)]

pub mod error;
pub mod gateway;
pub mod locate;
pub mod manifest;
pub mod mesh;
pub mod object;
pub mod policy;
pub mod spiffe;
pub mod status;
pub mod store;
pub mod workload;

pub use error::ConfigError;
pub use object::{Object, ObjectKey, Origin, StoredObject};
pub use store::ObjectStore;

/// The IngressClass controller name Gatehouse answers to.
/// The label that says which cluster an EndpointSlice came from, when a controller
/// merges several clusters.
pub const CLUSTER_LABEL: &str = "gatehouse.dev/cluster";
pub const INGRESS_CONTROLLER: &str = "gatehouse.dev/ingress-controller";
/// The GatewayClass controllerName Gatehouse answers to.
pub const GATEWAY_CONTROLLER: &str = "gatehouse.dev/gateway-controller";
