//! The compiled, immutable Snapshot the data plane serves from. No Kubernetes types:
//! ports, host tables, route tables, actions and clusters.

use crate::hosts::HostTable;
use crate::routes::RouteTable;
use crate::tls::SniTable;
use gatehouse_model::status::Statuses;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Client networks blocked (`SourceBlock` objects), if any.
    pub blocks: Option<Arc<crate::adaptive::Blocks>>,
    /// Proxy-wide surge limits, if a policy sets them.
    pub surge: Option<Arc<crate::adaptive::SurgeLimits>>,
    /// Every policy's adaptive blocking, for the loop that ticks their trackers.
    pub adaptive: Vec<Arc<crate::adaptive::AdaptivePolicy>>,
    /// Route rules whose canary is watched for a rollback.
    pub canaries: Vec<Arc<CanaryGuard>>,
}

/// One HTTPRoute rule with weighted backends and a canary rollback policy: the
/// adaptive loop compares the lightest backend's (the canary's) errors with the
/// others'.
#[derive(Debug)]
pub struct CanaryGuard {
    /// The route's namespace and name, and the rule's index.
    pub namespace: String,
    pub route: String,
    pub rule: usize,
    pub policy: crate::cluster::CanaryPolicy,
    /// The BackendTrafficPolicy (`namespace/name`) that asked for it.
    pub from: Option<String>,
    /// Each backend's Service, configured weight and cluster name.
    pub backends: Vec<(String, u32, String)>,
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
            blocks: None,
            surge: None,
            adaptive: Vec::new(),
            canaries: Vec::new(),
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
    pub request_headers: Option<Box<HeaderModifier>>,
    pub response_headers: Option<Box<HeaderModifier>>,
    pub kind: ActionKind,
    /// Whole-request timeout (Gateway `timeouts.request`).
    pub timeout: Option<Duration>,
    /// Per upstream attempt timeout (Gateway `timeouts.backendRequest`).
    pub backend_timeout: Option<Duration>,
    /// Backends that get a copy of requests (RequestMirror filters).
    pub mirrors: Vec<Mirror>,
    /// What protects this route: WAF, rate limits, access list (a SecurityPolicy's).
    pub protection: crate::security::Protection,
}

/// Where a RequestMirror filter sends copies, and how many (in millionths of requests).
#[derive(Debug)]
pub struct Mirror {
    pub cluster: Arc<Cluster>,
    pub per_million: u32,
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

/// Weighted backends of one rule, picked in smooth weighted round-robin order (nginx's
/// algorithm, precomputed into a schedule so that picking is one atomic increment).
#[derive(Debug, Default)]
pub struct BackendSet {
    pub total: u32,
    pub items: Vec<WeightedBackend>,
    /// Item indexes in the order they are picked, one lap.
    schedule: Vec<u16>,
    next: AtomicUsize,
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

/// Longest schedule: weights summing to more are scaled down to this (keeping each
/// non-zero weight at least 1).
const MAX_SCHEDULE: u64 = 1000;

impl BackendSet {
    /// A set of backends with non-zero weights.
    pub fn new(items: Vec<WeightedBackend>) -> Self {
        let total: u32 = items.iter().map(|i| i.weight).sum();
        let schedule = match items.len() {
            0 | 1 => Vec::new(),
            _ => smooth_schedule(&items.iter().map(|i| i.weight).collect::<Vec<_>>()),
        };
        BackendSet {
            total,
            items,
            schedule,
            next: AtomicUsize::new(0),
        }
    }

    /// Picks the next backend (None if the set is empty).
    pub fn pick(&self) -> Option<&BackendTarget> {
        match self.items.len() {
            0 => None,
            1 => Some(&self.items[0].target),
            _ => {
                let n = self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
                Some(&self.items[self.schedule[n] as usize].target)
            }
        }
    }
}

/// One lap of smooth weighted round-robin: each step every item gains its weight, the
/// richest is picked and pays the total. Weights 5:1:1 give a a b a c a a, not
/// a a a a a b c.
fn smooth_schedule(weights: &[u32]) -> Vec<u16> {
    let total: u64 = weights.iter().map(|&w| w as u64).sum();
    let mut w: Vec<u64> = match total > MAX_SCHEDULE {
        true => weights
            .iter()
            .map(|&x| ((x as u64 * MAX_SCHEDULE) / total).max(1))
            .collect(),
        false => weights.iter().map(|&x| x as u64).collect(),
    };
    let g = w.iter().fold(0, |a, &b| gcd(a, b));
    if g > 1 {
        w.iter_mut().for_each(|x| *x /= g);
    }
    let total: i64 = w.iter().map(|&x| x as i64).sum();
    let mut current = vec![0i64; w.len()];
    (0..total)
        .map(|_| {
            for (c, &x) in current.iter_mut().zip(&w) {
                *c += x as i64;
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                .unwrap_or((0, &0));
            current[best] -= total;
            best as u16
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

pub use crate::cluster::{Cluster, ClusterSource, UpstreamProtocol};

#[cfg(test)]
mod tests {
    use super::*;

    fn set(weights: &[u32]) -> BackendSet {
        BackendSet::new(
            weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| WeightedBackend {
                    weight,
                    target: BackendTarget::Invalid {
                        status: 500,
                        reason: i.to_string(),
                    },
                })
                .collect(),
        )
    }

    fn picks(s: &BackendSet, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| match s.pick() {
                Some(BackendTarget::Invalid { reason, .. }) => reason.parse().expect("index"),
                _ => usize::MAX,
            })
            .collect()
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves() {
        assert_eq!(picks(&set(&[5, 1, 1]), 7), [0, 0, 1, 0, 2, 0, 0]);
        // 90/10 canary: exactly one in ten, spread out.
        let p = picks(&set(&[90, 10]), 100);
        assert_eq!(p.iter().filter(|&&i| i == 1).count(), 10);
        assert_eq!(picks(&set(&[1, 1]), 4), [0, 1, 0, 1]);
    }

    #[test]
    fn large_weights_keep_their_proportions() {
        let s = set(&[999_999, 1, 3_000_000]);
        let p = picks(&s, 4_000);
        let share = |k| p.iter().filter(|&&i| i == k).count() as f64 / 4_000.0;
        assert!((share(0) - 0.25).abs() < 0.01, "{}", share(0));
        assert!(share(1) > 0.0, "a non-zero weight is never starved");
        assert!((share(2) - 0.75).abs() < 0.01, "{}", share(2));
    }
}
