//! A cluster: one Service port's endpoints, with the policy that governs traffic to it
//! (how an endpoint is chosen, how many requests may be in flight). Endpoints are
//! swapped in place when only they change; requests in flight are counted per cluster
//! and per endpoint by a guard that lives as long as the request.

use arc_swap::ArcSwap;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 with prior knowledge (appProtocol `kubernetes.io/h2c`, `grpc`, `http2`).
    Http2,
}

/// Which Service port a cluster stands for, to recompute its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSource {
    pub namespace: String,
    pub service: String,
    pub port: i32,
}

/// How an endpoint is chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Balancer {
    #[default]
    RoundRobin,
    Random,
    /// Power of two choices: the endpoint with fewer requests in flight of two picked
    /// at random.
    LeastRequest,
}

/// What a BackendTrafficPolicy sets for a Service's clusters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterPolicy {
    pub balancer: Balancer,
    /// Most requests in flight to the cluster; more get 503 at once.
    pub max_requests: Option<u32>,
    /// The policy this came from (`namespace/name`), for errors and `/config`.
    pub from: Option<String>,
}

#[derive(Debug, Clone)]
struct Endpoint {
    addr: SocketAddr,
    in_flight: Arc<AtomicU32>,
}

/// A Service port, its ready endpoints and its policy.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub source: ClusterSource,
    pub protocol: UpstreamProtocol,
    pub policy: ClusterPolicy,
    endpoints: ArcSwap<Vec<Endpoint>>,
    next: AtomicUsize,
    in_flight: AtomicU32,
}

/// Why a request was not admitted to a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    NoEndpoints,
    /// The circuit breaker's request limit is reached.
    MaxRequests(u32),
}

/// An admitted request: its endpoint, and the guard that counts it in flight until it
/// is dropped (keep it until the response body ends).
#[derive(Debug)]
pub struct Admitted {
    pub addr: SocketAddr,
    pub guard: InFlight,
}

/// Counts one request in flight on a cluster and one of its endpoints.
#[derive(Debug)]
pub struct InFlight {
    cluster: Arc<Cluster>,
    endpoint: Arc<AtomicU32>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.fetch_sub(1, Ordering::AcqRel);
        self.cluster.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Cluster {
    pub fn new(
        name: String,
        source: ClusterSource,
        protocol: UpstreamProtocol,
        policy: ClusterPolicy,
        endpoints: Vec<SocketAddr>,
    ) -> Self {
        Cluster {
            name,
            source,
            protocol,
            policy,
            endpoints: ArcSwap::from_pointee(endpoints.into_iter().map(Endpoint::new).collect()),
            next: AtomicUsize::new(0),
            in_flight: AtomicU32::new(0),
        }
    }

    /// The endpoint addresses now, sorted.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.endpoints.load().iter().map(|e| e.addr).collect()
    }

    /// Replaces the endpoints (sorted addresses); those that stay keep their counts.
    pub fn set_endpoints(&self, addrs: Vec<SocketAddr>) {
        let old = self.endpoints.load();
        let fresh = addrs
            .into_iter()
            .map(|addr| match old.binary_search_by_key(&addr, |e| e.addr) {
                Ok(i) => old[i].clone(),
                Err(_) => Endpoint::new(addr),
            })
            .collect();
        self.endpoints.store(Arc::new(fresh));
    }

    /// Requests in flight to the cluster now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Admits a request (unless the circuit breaker's limit is reached) and picks its
    /// endpoint by the cluster's balancer.
    pub fn admit(self: &Arc<Self>) -> Result<Admitted, Refused> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let refuse = |why| {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            Err(why)
        };
        if let Some(max) = self.policy.max_requests {
            if before >= max {
                return refuse(Refused::MaxRequests(max));
            }
        }
        let eps = self.endpoints.load();
        let n = eps.len();
        if n == 0 {
            return refuse(Refused::NoEndpoints);
        }
        let i = match self.policy.balancer {
            _ if n == 1 => 0,
            Balancer::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            Balancer::Random => fastrand::usize(..n),
            Balancer::LeastRequest => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let load = |i: usize| eps[i].in_flight.load(Ordering::Relaxed);
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        };
        let endpoint = eps[i].in_flight.clone();
        endpoint.fetch_add(1, Ordering::AcqRel);
        Ok(Admitted {
            addr: eps[i].addr,
            guard: InFlight {
                cluster: self.clone(),
                endpoint,
            },
        })
    }
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(balancer: Balancer, max: Option<u32>, n: u16) -> Arc<Cluster> {
        let eps = (1..=n)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let source = ClusterSource {
            namespace: "ns".into(),
            service: "svc".into(),
            port: 80,
        };
        let policy = ClusterPolicy {
            balancer,
            max_requests: max,
            from: None,
        };
        Arc::new(Cluster::new(
            "c".into(),
            source,
            UpstreamProtocol::Http1,
            policy,
            eps,
        ))
    }

    #[test]
    fn round_robin_visits_every_endpoint_in_turn() {
        let c = cluster(Balancer::RoundRobin, None, 3);
        let ports: Vec<u16> = (0..6)
            .map(|_| c.admit().expect("admitted").addr.port())
            .collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
        assert_eq!(c.in_flight(), 0, "guards dropped at once");
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let c = cluster(Balancer::LeastRequest, None, 1);
        // Ten requests held on the only endpoint, which then gets a sibling.
        let held: Vec<Admitted> = (0..10).map(|_| c.admit().expect("admitted")).collect();
        c.set_endpoints(vec![
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 1], 2)),
        ]);
        for _ in 0..100 {
            let a = c.admit().expect("admitted");
            assert_eq!(
                a.addr.port(),
                2,
                "two choices among two: always the idle one"
            );
        }
        // Held requests go to the new endpoint until it is as busy as the old one, then
        // alternate: 30 in flight end up 15 and 15 (give or take one).
        let more: Vec<Admitted> = (0..20).map(|_| c.admit().expect("admitted")).collect();
        let on_new = more.iter().filter(|a| a.addr.port() == 2).count();
        assert!(
            (14..=16).contains(&on_new),
            "{on_new} of 20 on the new endpoint"
        );
        drop((held, more));
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn circuit_breaker_refuses_beyond_max_requests() {
        let c = cluster(Balancer::Random, Some(3), 2);
        let held: Vec<Admitted> = (0..3).map(|_| c.admit().expect("admitted")).collect();
        assert_eq!(c.admit().err(), Some(Refused::MaxRequests(3)));
        assert_eq!(c.in_flight(), 3);
        drop(held);
        assert!(c.admit().is_ok(), "admits again once requests end");
        let empty = cluster(Balancer::RoundRobin, None, 0);
        assert_eq!(empty.admit().err(), Some(Refused::NoEndpoints));
        assert_eq!(empty.in_flight(), 0);
    }

    #[test]
    fn endpoint_counts_survive_an_endpoint_update() {
        let c = cluster(Balancer::LeastRequest, None, 2);
        let a = c.admit().expect("admitted");
        let port = a.addr.port();
        c.set_endpoints(vec![
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 1], 2)),
            SocketAddr::from(([127, 0, 0, 1], 3)),
        ]);
        // The busy endpoint is still known to be busy.
        for _ in 0..50 {
            assert_ne!(c.admit().expect("admitted").addr.port(), port);
        }
        drop(a);
    }
}
