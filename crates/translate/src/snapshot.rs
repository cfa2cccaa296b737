//! The compiled, immutable Snapshot the data plane serves from. No Kubernetes types:
//! ports, host tables, route tables, actions and clusters.

use crate::hosts::HostTable;
use crate::routes::RouteTable;
use crate::tls::SniTable;
use gatehouse_model::status::Statuses;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Everything the data plane needs, versioned. Swapped whole; never mutated.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    /// One entry per bind address, sorted by address.
    pub ports: Vec<Arc<BoundPort>>,
    /// A persistent map, shared with the Snapshots built incrementally from this one.
    pub clusters: Clusters,
    /// Route names by route id (for metrics and logs).
    pub route_names: Vec<Arc<str>>,
    /// Things that do not reject the config but a user should know (unresolved refs).
    pub warnings: Vec<String>,
    pub summary: Summary,
    /// Status for the objects translated (Ingress addresses, Gateway API conditions).
    /// Shared, so that Snapshots built incrementally and the status writer reuse them.
    pub statuses: Statuses,
}

impl Snapshot {
    /// An empty Snapshot (version 0): serves nothing.
    pub fn empty() -> Self {
        Snapshot {
            version: 0,
            ports: Vec::new(),
            clusters: Clusters::new(),
            route_names: Vec::new(),
            warnings: Vec::new(),
            summary: Summary::default(),
            statuses: Statuses::new(),
        }
    }

    pub fn port(&self, addr: SocketAddr) -> Option<&Arc<BoundPort>> {
        self.ports.iter().find(|p| p.addr == addr)
    }
}

/// Clusters by name.
pub type Clusters = imbl::OrdMap<Arc<str>, Arc<Cluster>>;

/// Object counts, for `/config` and logs.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    pub ingresses: usize,
    pub gateways: usize,
    pub http_routes: usize,
    pub grpc_routes: usize,
    pub tcp_routes: usize,
    pub tls_routes: usize,
    pub services: usize,
    pub endpoint_slices: usize,
    pub secrets: usize,
    pub routes: usize,
}

/// One bound address: TLS (if any) and its sections (Gateway listeners or the Ingress
/// section), chosen by hostname (SNI on TLS, else Host).
#[derive(Debug)]
pub struct BoundPort {
    pub addr: SocketAddr,
    pub tls: Option<SniTable>,
    pub sections: HostTable<Arc<Section>>,
    /// Human-readable owners (`Ingress http`, `Gateway ns/name listener`).
    pub owners: Vec<String>,
    /// Set on TCP and TLS-passthrough ports: connections are routed at L4.
    pub l4: Option<L4Routes>,
}

/// L4 routing of a port.
#[derive(Debug, Clone)]
pub enum L4Routes {
    /// TCPRoute: every connection goes to these backends.
    Tcp(Arc<BackendSet>),
    /// TLSRoute with TLS passthrough: backends by the ClientHello's server name.
    Tls(Arc<HostTable<Arc<BackendSet>>>),
}

/// One listener's routing: a host table of route tables, and a fallback action used
/// when the host matches nothing or the path matches no route (Ingress defaultBackend).
#[derive(Debug)]
pub struct Section {
    pub name: String,
    /// The port the manifest names (used by redirects that keep the listener port).
    pub listener_port: u16,
    pub https: bool,
    pub hosts: HostTable<Arc<RouteTable>>,
    pub fallback: Option<Arc<RouteAction>>,
}

/// What a matched route does.
#[derive(Debug)]
pub struct RouteAction {
    pub id: u32,
    pub name: Arc<str>,
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
    pub kind: ActionKind,
    /// Whole-request timeout (Gateway `timeouts.request`).
    pub timeout: Option<Duration>,
    /// Per upstream attempt timeout (Gateway `timeouts.backendRequest`).
    pub backend_timeout: Option<Duration>,
}

#[derive(Debug)]
pub enum ActionKind {
    Forward {
        rewrite: Option<UrlRewrite>,
        backends: BackendSet,
    },
    Redirect(Redirect),
    /// A fixed response, e.g. 500 for a rule whose backends cannot be resolved.
    Fixed {
        status: u16,
        reason: String,
    },
}

#[derive(Debug, Default, Clone)]
pub struct HeaderModifier {
    pub set: Vec<(http::HeaderName, http::HeaderValue)>,
    pub add: Vec<(http::HeaderName, http::HeaderValue)>,
    pub remove: Vec<http::HeaderName>,
}

impl HeaderModifier {
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for (k, v) in &self.set {
            headers.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.add {
            headers.append(k.clone(), v.clone());
        }
        for k in &self.remove {
            headers.remove(k);
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathModifier {
    Full(String),
    Prefix(String),
}

#[derive(Debug, Clone, Default)]
pub struct UrlRewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<u16>,
    pub status: u16,
}

/// Weighted backends of one rule.
#[derive(Debug, Default)]
pub struct BackendSet {
    pub total: u32,
    pub items: Vec<WeightedBackend>,
}

#[derive(Debug)]
pub struct WeightedBackend {
    pub weight: u32,
    pub target: BackendTarget,
}

#[derive(Debug)]
pub enum BackendTarget {
    Cluster(Arc<Cluster>),
    /// Cannot be resolved: requests that land here get `status`.
    Invalid {
        status: u16,
        reason: String,
    },
}

impl BackendSet {
    /// Picks a backend from a uniform random number in `0..u32::MAX`.
    pub fn pick(&self, random: u32) -> Option<&BackendTarget> {
        if self.total == 0 {
            return None;
        }
        if self.items.len() == 1 {
            return Some(&self.items[0].target);
        }
        let mut r = ((random as u64 * self.total as u64) >> 32) as u32;
        for item in &self.items {
            if r < item.weight {
                return Some(&item.target);
            }
            r -= item.weight;
        }
        self.items.last().map(|i| &i.target)
    }
}

pub use crate::cluster::{Cluster, ClusterSource, UpstreamProtocol};
