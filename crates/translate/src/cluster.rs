//! A cluster: one Service port's endpoints, with the policy that governs traffic to it
//! (how an endpoint is chosen, how many requests may be in flight, when a failing
//! endpoint is ejected). Endpoints are swapped in place when only they change, keeping
//! their state; requests in flight are counted per cluster and per endpoint by a guard
//! that lives as long as the request, and whose outcome feeds outlier detection.

use arc_swap::ArcSwap;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

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

/// Passive health checking (outlier detection) of a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlierPolicy {
    /// Failures in a row that eject an endpoint.
    pub consecutive_errors: u32,
    /// How long a first ejection lasts; the n-th in a row lasts n times it (to 300 s).
    pub base_ejection: Duration,
    /// Most endpoints ejected at once, in percent (at least one may always be).
    pub max_ejection_percent: u32,
}

/// What a BackendTrafficPolicy sets for a Service's clusters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterPolicy {
    pub balancer: Balancer,
    /// Most requests in flight to the cluster; more get 503 at once.
    pub max_requests: Option<u32>,
    pub outlier: Option<OutlierPolicy>,
    /// The policy this came from (`namespace/name`), for errors and `/config`.
    pub from: Option<String>,
}

#[derive(Debug, Clone)]
struct Endpoint {
    addr: SocketAddr,
    state: Arc<EndpointState>,
}

/// What the data plane knows of one endpoint.
#[derive(Debug, Default)]
struct EndpointState {
    in_flight: AtomicU32,
    /// Failures in a row.
    failures: AtomicU32,
    /// Milliseconds since `EPOCH` until which the endpoint is ejected (0: never was).
    ejected_until: AtomicU64,
    /// Ejections in a row: the next one lasts this many times the base, plus one.
    ejections: AtomicU32,
}

/// The zero of the ejection clock.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// Longest ejection, however many in a row.
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// A Service port, its ready endpoints and its policy.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub source: ClusterSource,
    pub protocol: UpstreamProtocol,
    pub policy: ClusterPolicy,
    endpoints: ArcSwap<Vec<Endpoint>>,
    /// Counters that outlive this Snapshot's copy of the cluster (see `carry_from`).
    shared: Arc<Shared>,
}

/// A cluster's counters, shared by its copies in successive Snapshots.
#[derive(Debug, Default)]
struct Shared {
    next: AtomicUsize,
    in_flight: AtomicU32,
    /// Endpoints ejected by outlier detection so far.
    ejections_total: AtomicU64,
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
    endpoint: Arc<EndpointState>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.cluster.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// Tells outlier detection how the request went: `false` for a 5xx answer, a
    /// failed connection or a timeout.
    pub fn outcome(&self, ok: bool) {
        let Some(policy) = &self.cluster.policy.outlier else {
            return;
        };
        let e = &self.endpoint;
        if ok {
            e.failures.store(0, Ordering::Relaxed);
            return;
        }
        let failures = e.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures < policy.consecutive_errors {
            return;
        }
        let now = now_ms();
        if e.ejected_until.load(Ordering::Acquire) > now {
            return;
        }
        let eps = self.cluster.endpoints.load();
        let ejected = eps
            .iter()
            .filter(|x| x.state.ejected_until.load(Ordering::Acquire) > now)
            .count();
        let allowed = match policy.max_ejection_percent {
            0 => 0,
            p => (eps.len() * p as usize / 100).max(1),
        };
        if ejected >= allowed {
            return;
        }
        // An endpoint that stayed healthy for long starts its backoff over.
        let last_until = e.ejected_until.load(Ordering::Acquire);
        let base = policy.base_ejection.as_millis() as u64;
        if last_until > 0 && now.saturating_sub(last_until) > base * 10 {
            e.ejections.store(0, Ordering::Relaxed);
        }
        let n = e.ejections.fetch_add(1, Ordering::AcqRel) as u64 + 1;
        let duration = (base * n).min(MAX_EJECTION.as_millis() as u64);
        e.ejected_until.store(now + duration, Ordering::Release);
        e.failures.store(0, Ordering::Relaxed);
        self.cluster
            .shared
            .ejections_total
            .fetch_add(1, Ordering::Relaxed);
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
            shared: Arc::new(Shared::default()),
        }
    }

    /// Takes over the state of `prev`, the same Service port's cluster in the previous
    /// Snapshot: requests in flight (for the circuit breaker and the balancer), the
    /// round-robin position, and each endpoint's counts and ejection, for the endpoints
    /// both know. So a new Snapshot neither forgets an ejected endpoint nor lets a
    /// burst past the circuit breaker.
    pub fn carry_from(&mut self, prev: &Cluster) {
        self.shared = prev.shared.clone();
        let old = prev.endpoints.load();
        let fresh: Vec<Endpoint> = self
            .endpoints
            .load()
            .iter()
            .map(|e| match old.binary_search_by_key(&e.addr, |o| o.addr) {
                Ok(i) => old[i].clone(),
                Err(_) => e.clone(),
            })
            .collect();
        self.endpoints.store(Arc::new(fresh));
    }

    /// Endpoints ejected by outlier detection so far.
    pub fn ejections(&self) -> u64 {
        self.shared.ejections_total.load(Ordering::Relaxed)
    }

    /// Endpoints ejected now.
    pub fn ejected(&self) -> Vec<SocketAddr> {
        let now = now_ms();
        self.endpoints
            .load()
            .iter()
            .filter(|e| e.state.ejected_until.load(Ordering::Acquire) > now)
            .map(|e| e.addr)
            .collect()
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

    /// Whether `e` may take requests: not ejected (or no outlier detection at all).
    fn usable(&self, e: &Endpoint) -> bool {
        self.policy.outlier.is_none() || e.state.ejected_until.load(Ordering::Acquire) <= now_ms()
    }

    /// Requests in flight to the cluster now.
    pub fn in_flight(&self) -> u32 {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// Admits a request (unless the circuit breaker's limit is reached) and picks its
    /// endpoint by the cluster's balancer, among the endpoints not ejected (among all
    /// of them when every one is).
    pub fn admit(self: &Arc<Self>) -> Result<Admitted, Refused> {
        let before = self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        let refuse = |why| {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
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
        let first = match self.policy.balancer {
            _ if n == 1 => 0,
            Balancer::RoundRobin => self.shared.next.fetch_add(1, Ordering::Relaxed) % n,
            Balancer::Random => fastrand::usize(..n),
            Balancer::LeastRequest => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let load = |i: usize| eps[i].state.in_flight.load(Ordering::Relaxed);
                let usable = |i: usize| self.usable(&eps[i]);
                match (usable(a), usable(b)) {
                    (true, false) => a,
                    (false, true) => b,
                    _ if load(b) < load(a) => b,
                    _ => a,
                }
            }
        };
        // Skip ejected endpoints (without outlier detection none ever is).
        let i = match self.policy.outlier.is_some() && !self.usable(&eps[first]) {
            false => first,
            true => (1..n)
                .map(|k| (first + k) % n)
                .find(|&i| self.usable(&eps[i]))
                .unwrap_or(first),
        };
        let endpoint = eps[i].state.clone();
        endpoint.in_flight.fetch_add(1, Ordering::AcqRel);
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
            state: Arc::new(EndpointState::default()),
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
            outlier: None,
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
    fn failing_endpoint_is_ejected_then_returns() {
        let mut c = Arc::try_unwrap(cluster(Balancer::RoundRobin, None, 3)).expect("unique");
        c.policy.outlier = Some(OutlierPolicy {
            consecutive_errors: 2,
            base_ejection: Duration::from_millis(80),
            max_ejection_percent: 34,
        });
        let c = Arc::new(c);
        // Endpoint 1 fails twice in a row (successes elsewhere do not reset it).
        for _ in 0..6 {
            let a = c.admit().expect("admitted");
            a.guard.outcome(a.addr.port() != 1);
        }
        assert_eq!(c.ejected(), vec![SocketAddr::from(([127, 0, 0, 1], 1))]);
        for _ in 0..30 {
            assert_ne!(c.admit().expect("admitted").addr.port(), 1, "ejected");
        }
        // 34% of 3: one at a time. Endpoint 2 failing now is not ejected.
        for _ in 0..6 {
            let a = c.admit().expect("admitted");
            a.guard.outcome(a.addr.port() != 2);
        }
        assert_eq!(c.ejected().len(), 1);
        assert_eq!(c.ejections(), 1);
        // After the ejection time, endpoint 1 is back in rotation.
        std::thread::sleep(Duration::from_millis(120));
        let ports: Vec<u16> = (0..3)
            .map(|_| c.admit().expect("admitted").addr.port())
            .collect();
        assert!(ports.contains(&1), "{ports:?}");
    }

    #[test]
    fn when_every_endpoint_is_ejected_all_are_used() {
        let mut c = Arc::try_unwrap(cluster(Balancer::RoundRobin, None, 1)).expect("unique");
        c.policy.outlier = Some(OutlierPolicy {
            consecutive_errors: 1,
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 100,
        });
        let c = Arc::new(c);
        c.admit().expect("admitted").guard.outcome(false);
        assert_eq!(c.ejected().len(), 1);
        assert!(
            c.admit().is_ok(),
            "panic mode: the only endpoint still serves"
        );
    }

    #[test]
    fn a_new_snapshot_carries_counts_and_ejections_over() {
        let mut old = Arc::try_unwrap(cluster(Balancer::RoundRobin, Some(2), 2)).expect("unique");
        old.policy.outlier = Some(OutlierPolicy {
            consecutive_errors: 1,
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 50,
        });
        let old = Arc::new(old);
        let held = old.admit().expect("admitted");
        let failed = old.admit().expect("admitted");
        failed.guard.outcome(false);
        let ejected = old.ejected();
        assert_eq!(ejected.len(), 1);
        drop(failed);
        // The next Snapshot's copy of the cluster: same endpoints plus one.
        let mut new = Arc::try_unwrap(cluster(Balancer::RoundRobin, Some(2), 3)).expect("unique");
        new.policy = old.policy.clone();
        new.carry_from(&old);
        let new = Arc::new(new);
        assert_eq!(new.ejected(), ejected, "the ejection carries over");
        assert_eq!(
            new.in_flight(),
            1,
            "the request held on the old copy counts"
        );
        let second = new.admit().expect("admitted");
        assert_eq!(new.admit().err(), Some(Refused::MaxRequests(2)));
        drop((held, second));
        assert_eq!(new.in_flight(), 0);
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
