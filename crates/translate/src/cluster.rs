//! A cluster: one Service port's endpoints, with the policy that governs traffic to it
//! (how an endpoint is chosen, how many requests and connections it may take, when a
//! failing endpoint is ejected, how it is health-checked and retried). Endpoints are
//! swapped in place when only they change, keeping their state; requests in flight are
//! counted per cluster and per endpoint by a guard that lives as long as the request,
//! and whose outcome feeds outlier detection and the latency estimate.

use crate::endpoint::{now_ms, Endpoint};
use crate::maglev::{hash_bytes, Maglev};
use crate::retry_budget::RetryBudget;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
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
    /// Where the proxy runs, to rank endpoints by nearness.
    pub locality: Arc<crate::locality::Locality>,
}

/// How an endpoint is chosen for a request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub enum Balancer {
    #[default]
    RoundRobin,
    Random,
    /// Power of two choices: of two endpoints picked at random, the one with the lower
    /// peak-EWMA latency times requests in flight.
    LeastRequest,
    /// Maglev consistent hashing on a key of the request.
    ConsistentHash(HashOn),
}

/// The request key a consistent-hash balancer hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum HashOn {
    SourceIp,
    /// A header's value (lowercase name).
    Header(String),
    Cookie(String),
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
    /// Holding out latency outliers (an adaptive control), if on.
    pub latency: Option<LatencyOutlier>,
}

/// When an endpoint is a latency outlier: its mean latency over `interval` is `factor`
/// times its Service's median endpoint's, and `MIN_EXCESS` more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatencyOutlier {
    /// The factor, in thousandths.
    pub factor_milli: u32,
    pub min_requests: u32,
    pub interval: Duration,
}

/// A rule's canary rollback (an adaptive control): ratios in millionths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanaryPolicy {
    pub min_error_ratio_ppm: u32,
    pub baseline_multiplier_milli: u32,
    pub min_requests: u32,
    pub interval: Duration,
    pub hold_for: Duration,
    pub dry_run: bool,
}

/// What an active health probe does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Probe {
    /// A connection that opens is healthy.
    Tcp,
    /// `GET path` with `host` (default: the endpoint address); healthy when the status
    /// falls in one of the inclusive ranges.
    Http {
        path: String,
        host: Option<String>,
        expected: Vec<(u16, u16)>,
    },
}

/// Active health checking of a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthPolicy {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// When a failed attempt is retried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetryOn {
    /// No connection could be made: safe for any method.
    pub connect_failure: bool,
    /// The connection broke before a response came.
    pub reset: bool,
    /// Any 5xx answer.
    pub server_error: bool,
    /// 502, 503 and 504.
    pub gateway_error: bool,
    /// These statuses.
    pub statuses: Vec<u16>,
}

/// Retries of failed upstream attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    pub on: RetryOn,
    pub per_try_timeout: Option<Duration>,
    /// Backoff ceiling of the first retry (doubling after), and its largest value.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Retries allowed in percent of requests over 10 s, plus per second.
    pub budget_percent: u32,
    pub budget_min_per_second: u32,
}

impl RetryOn {
    /// Whether an answer with `status` is retried.
    pub fn status(&self, status: u16) -> bool {
        (self.server_error && status >= 500)
            || (self.gateway_error && matches!(status, 502..=504))
            || self.statuses.contains(&status)
    }
}

/// Sticky sessions by a cookie the proxy sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionPolicy {
    pub cookie: String,
    pub ttl: Option<Duration>,
}

/// What a BackendTrafficPolicy sets for a Service's clusters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterPolicy {
    pub balancer: Balancer,
    /// New endpoints ramp up to their full share over this window.
    pub slow_start: Option<Duration>,
    pub session: Option<SessionPolicy>,
    /// Most requests in flight to the cluster; more get 503 at once.
    pub max_requests: Option<u32>,
    /// Most open upstream connections to the cluster.
    pub max_connections: Option<u32>,
    /// Most requests waiting for a connection when `max_connections` are busy.
    pub max_pending: Option<u32>,
    pub outlier: Option<OutlierPolicy>,
    pub health: Option<HealthPolicy>,
    pub retry: Option<RetryPolicy>,
    /// The policy this came from (`namespace/name`), for errors and `/config`.
    pub from: Option<String>,
    /// Canary rollback of the routes this policy targets.
    pub canary: Option<CanaryPolicy>,
    /// Endpoints held out of rotation by `TrafficAdjustment` objects.
    pub held_out: std::collections::BTreeSet<SocketAddr>,
}

/// The endpoints of a cluster at one time, with their Maglev table when the balancer
/// hashes, and (when they are not all equally near) the same split by locality
/// priority, nearest first.
#[derive(Debug)]
struct EndpointSet {
    list: Vec<Endpoint>,
    maglev: Option<Maglev>,
    tiers: Vec<EndpointSet>,
}

/// An endpoint address with its locality priority (0: the nearest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub addr: SocketAddr,
    pub priority: u8,
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Target { addr, priority: 0 }
    }
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
    endpoints: ArcSwap<EndpointSet>,
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
    retry_budget: RetryBudget,
    connections: Arc<ConnectionCounts>,
}

/// Open upstream connections of a cluster and requests waiting for one, for the
/// circuit breaker's `max_connections` and `max_pending`.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    pub open: AtomicU32,
    pub pending: AtomicU32,
    /// Woken when a connection closes or goes idle.
    pub released: tokio::sync::Notify,
}

/// Why a request was not admitted to a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    NoEndpoints,
    /// The circuit breaker's request limit is reached.
    MaxRequests(u32),
}

/// What the request asks of endpoint choice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Affinity {
    /// The consistent-hash key's hash.
    pub hash: Option<u64>,
    /// The session cookie's endpoint token.
    pub sticky: Option<u64>,
    /// An endpoint to avoid if another is usable (the one a retry follows).
    pub avoid: Option<SocketAddr>,
}

/// An admitted request: its endpoint, and the guard that counts it in flight until it
/// is dropped (keep it until the response body ends).
#[derive(Debug)]
pub struct Admitted {
    pub addr: SocketAddr,
    pub guard: InFlight,
    /// The session token to set in the response's cookie (the client has none, or one
    /// for an endpoint that is gone).
    pub set_session: Option<u64>,
}

/// Counts one request in flight on a cluster and one of its endpoints.
#[derive(Debug)]
pub struct InFlight {
    cluster: Arc<Cluster>,
    endpoint: Arc<crate::endpoint::EndpointState>,
    start: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.cluster.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// Tells outlier detection and the latency estimate how the request went: `false`
    /// for a 5xx answer, a failed connection or a timeout.
    pub fn outcome(&self, ok: bool) {
        let elapsed = self.start.elapsed();
        let e = &self.endpoint;
        e.answered.fetch_add(1, Ordering::Relaxed);
        e.latency_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        if !ok {
            e.failed.fetch_add(1, Ordering::Relaxed);
        }
        if self.cluster.policy.balancer == Balancer::LeastRequest {
            self.endpoint.observe_latency(elapsed);
        }
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
        if e.ejected(now) {
            return;
        }
        let eps = self.cluster.endpoints.load();
        let ejected = eps.list.iter().filter(|x| x.state.ejected(now)).count();
        let allowed = match policy.max_ejection_percent {
            0 => 0,
            p => (eps.list.len() * p as usize / 100).max(1),
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

/// The bytes that identify an endpoint for hashing (stable across processes).
fn endpoint_id(addr: &SocketAddr) -> [u8; 18] {
    let mut id = [0u8; 18];
    match addr.ip() {
        IpAddr::V4(v4) => id[12..16].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => id[..16].copy_from_slice(&v6.octets()),
    }
    id[16..].copy_from_slice(&addr.port().to_be_bytes());
    id
}

/// The session token of an endpoint: an opaque value for the sticky cookie that does
/// not reveal the address.
pub fn session_token(addr: &SocketAddr) -> u64 {
    hash_bytes(&endpoint_id(addr), 0x7f4a_7c15)
}

/// The hash of a consistent-hash key.
pub fn key_hash(key: &[u8]) -> u64 {
    hash_bytes(key, 0)
}

impl EndpointSet {
    fn new(list: Vec<Endpoint>, balancer: &Balancer) -> Self {
        let mut priorities: Vec<u8> = list.iter().map(|e| e.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let tiers = match priorities.len() {
            0 | 1 => Vec::new(),
            _ => priorities
                .iter()
                .map(|p| {
                    let tier = list.iter().filter(|e| e.priority == *p).cloned().collect();
                    EndpointSet::flat(tier, balancer)
                })
                .collect(),
        };
        EndpointSet {
            tiers,
            ..EndpointSet::flat(list, balancer)
        }
    }

    fn flat(list: Vec<Endpoint>, balancer: &Balancer) -> Self {
        let maglev = match balancer {
            Balancer::ConsistentHash(_) => {
                let ids: Vec<[u8; 18]> = list.iter().map(|e| endpoint_id(&e.addr)).collect();
                Maglev::build(&ids)
            }
            _ => None,
        };
        EndpointSet {
            list,
            maglev,
            tiers: Vec::new(),
        }
    }

    /// The endpoints a request is balanced over: the nearest tier with a usable
    /// endpoint, else all of them.
    fn nearest(&self, usable: impl Fn(&Endpoint) -> bool) -> &EndpointSet {
        self.tiers
            .iter()
            .find(|t| t.list.iter().any(&usable))
            .unwrap_or(self)
    }
}

/// Endpoints from targets (sorted by address), each keeping the state it had in `old`,
/// else made by `new`.
fn endpoints_from(
    targets: impl IntoIterator<Item = Target>,
    old: &[Endpoint],
    new: impl Fn(SocketAddr) -> Endpoint,
) -> Vec<Endpoint> {
    targets
        .into_iter()
        .map(|t| {
            let e = match old.binary_search_by_key(&t.addr, |e| e.addr) {
                Ok(i) => old[i].clone(),
                Err(_) => new(t.addr),
            };
            Endpoint {
                priority: t.priority,
                ..e
            }
        })
        .collect()
}

impl Cluster {
    pub fn new(
        name: String,
        source: ClusterSource,
        protocol: UpstreamProtocol,
        policy: ClusterPolicy,
        endpoints: Vec<impl Into<Target>>,
    ) -> Self {
        let list = endpoints_from(
            endpoints.into_iter().map(Into::into),
            &[],
            Endpoint::initial,
        );
        Cluster {
            name,
            source,
            protocol,
            endpoints: ArcSwap::from_pointee(EndpointSet::new(list, &policy.balancer)),
            policy,
            shared: Arc::new(Shared::default()),
        }
    }

    /// Takes over the state of `prev`, the same Service port's cluster in the previous
    /// Snapshot: requests in flight (for the circuit breaker and the balancer), the
    /// round-robin position, connection counts, the retry budget, and each endpoint's
    /// counts, health and ejection, for the endpoints both know. Endpoints new since
    /// `prev` are joining (slow start applies). So a new Snapshot neither forgets an
    /// ejected endpoint nor lets a burst past the circuit breaker.
    pub fn carry_from(&mut self, prev: &Cluster) {
        self.shared = prev.shared.clone();
        let old = prev.endpoints.load();
        let fresh = endpoints_from(self.targets(), &old.list, Endpoint::joining);
        self.endpoints
            .store(Arc::new(EndpointSet::new(fresh, &self.policy.balancer)));
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
            .list
            .iter()
            .filter(|e| e.state.ejected(now))
            .map(|e| e.addr)
            .collect()
    }

    /// Endpoints that active health checks hold out of rotation now.
    pub fn unhealthy(&self) -> Vec<SocketAddr> {
        self.endpoints
            .load()
            .list
            .iter()
            .filter(|e| !e.state.is_healthy())
            .map(|e| e.addr)
            .collect()
    }

    /// The endpoint addresses now, sorted.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.endpoints.load().list.iter().map(|e| e.addr).collect()
    }

    /// The endpoints now with their locality priorities, sorted by address.
    pub fn targets(&self) -> Vec<Target> {
        self.endpoints
            .load()
            .list
            .iter()
            .map(|e| Target {
                addr: e.addr,
                priority: e.priority,
            })
            .collect()
    }

    /// Replaces the endpoints (sorted by address); those that stay keep their state,
    /// new ones are joining.
    pub fn set_endpoints(&self, targets: Vec<impl Into<Target>>) {
        let old = self.endpoints.load();
        let fresh = endpoints_from(
            targets.into_iter().map(Into::into),
            &old.list,
            Endpoint::joining,
        );
        self.endpoints
            .store(Arc::new(EndpointSet::new(fresh, &self.policy.balancer)));
    }

    /// Records an active health probe of `addr`; returns the endpoint's new health if
    /// it changed.
    pub fn record_probe(&self, addr: SocketAddr, ok: bool) -> Option<bool> {
        let h = self.policy.health.as_ref()?;
        let eps = self.endpoints.load();
        let i = eps.list.binary_search_by_key(&addr, |e| e.addr).ok()?;
        eps.list[i]
            .state
            .record_probe(ok, h.healthy_threshold, h.unhealthy_threshold)
    }

    /// Whether `e` may take requests: active health passes (when checked) and outlier
    /// detection has not ejected it.
    fn usable(&self, e: &Endpoint, now: u64) -> bool {
        (self.policy.health.is_none() || e.state.is_healthy())
            && (self.policy.outlier.is_none() || !e.state.ejected(now))
            && (self.policy.held_out.is_empty() || !self.policy.held_out.contains(&e.addr))
    }

    /// Each endpoint's address and counts now (for the adaptive controls).
    pub fn endpoint_counts(&self) -> Vec<(SocketAddr, crate::endpoint::EndpointCounts)> {
        self.endpoints
            .load()
            .list
            .iter()
            .map(|e| (e.addr, e.state.counts()))
            .collect()
    }

    /// The sum of its endpoints' counts now (those it has now).
    pub fn counts(&self) -> crate::endpoint::EndpointCounts {
        let mut sum = crate::endpoint::EndpointCounts::default();
        for e in self.endpoints.load().list.iter() {
            sum.add(e.state.counts());
        }
        sum
    }

    /// Requests in flight to the cluster now.
    pub fn in_flight(&self) -> u32 {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// The cluster's retry budget (shared by its copies in successive Snapshots).
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.shared.retry_budget
    }

    /// Open connections and waiting requests, for the connection circuit breaker.
    pub fn connections(&self) -> &ConnectionCounts {
        &self.shared.connections
    }

    /// The same counts, for a connection to hold on to.
    pub fn connections_arc(&self) -> Arc<ConnectionCounts> {
        self.shared.connections.clone()
    }

    /// Admits a request (unless the circuit breaker's limit is reached) and picks its
    /// endpoint: the session's, when the client has a cookie for an endpoint in
    /// rotation; else by the cluster's balancer, among usable endpoints (healthy, not
    /// ejected; all of them when none is), with new endpoints ramping up under slow
    /// start.
    pub fn admit(self: &Arc<Self>, affinity: &Affinity) -> Result<Admitted, Refused> {
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
        if eps.list.is_empty() {
            return refuse(Refused::NoEndpoints);
        }
        let now = match self.policy.outlier.is_some() || self.policy.slow_start.is_some() {
            true => now_ms(),
            false => 0,
        };
        let sticky = self.policy.session.as_ref().and_then(|_| {
            let token = affinity.sticky?;
            eps.list
                .iter()
                .position(|e| session_token(&e.addr) == token && self.usable(e, now))
        });
        let (set, i) = match sticky {
            Some(i) => (&**eps, i),
            None => {
                let set = eps.nearest(|e| self.usable(e, now));
                (set, self.choose(set, affinity, now))
            }
        };
        let chosen = &set.list[i];
        let set_session = match (&self.policy.session, sticky) {
            (Some(_), None) => Some(session_token(&chosen.addr)),
            _ => None,
        };
        let endpoint = chosen.state.clone();
        endpoint.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(Admitted {
            addr: chosen.addr,
            guard: InFlight {
                cluster: self.clone(),
                endpoint,
                start: Instant::now(),
            },
            set_session,
        })
    }

    /// The balancer's choice among a non-empty set.
    fn choose(&self, eps: &EndpointSet, affinity: &Affinity, now: u64) -> usize {
        let list = &eps.list;
        let n = list.len();
        if n == 1 {
            return 0;
        }
        // Whether candidate `i` may take the request: usable and not the one to avoid;
        // `takes` adds, under slow start, being lucky enough for its share.
        let window = self.policy.slow_start;
        let eligible =
            |i: usize| self.usable(&list[i], now) && affinity.avoid != Some(list[i].addr);
        let takes = |i: usize| {
            eligible(i)
                && (window.is_none()
                    || fastrand::f64() < list[i].state.slow_start_factor(window, now))
        };
        let candidate = || match &self.policy.balancer {
            Balancer::Random => fastrand::usize(..n),
            _ => self.shared.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        let first = match &self.policy.balancer {
            Balancer::RoundRobin | Balancer::Random => candidate(),
            Balancer::LeastRequest => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let cost = |i: usize| {
                    if !eligible(i) {
                        return f64::INFINITY;
                    }
                    let e = &list[i];
                    let load = e.state.in_flight.load(Ordering::Relaxed) as f64 + 1.0;
                    // 1 µs floor: endpoints not measured yet compare by load alone.
                    let latency = e.state.latency_ns().max(1_000) as f64;
                    latency * load / e.state.slow_start_factor(window, now)
                };
                let (ca, cb) = (cost(a), cost(b));
                if ca.is_finite() || cb.is_finite() {
                    return if cb < ca { b } else { a };
                }
                a
            }
            Balancer::ConsistentHash(_) => {
                let hash = affinity.hash.unwrap_or_else(|| fastrand::u64(..));
                let Some(table) = &eps.maglev else {
                    return (hash % n as u64) as usize;
                };
                // The key's endpoint, or (when it is out of rotation) the next one in
                // table order: stable for the key, spread evenly over the others.
                for k in 0..n * 4 {
                    let i = table.lookup_nth(hash, k);
                    if eligible(i) {
                        return i;
                    }
                }
                return table.lookup(hash);
            }
        };
        if takes(first) {
            return first;
        }
        // Fresh candidates (so that a refused one's share spreads evenly); then every
        // usable endpoint in order; when none is usable the first choice stands (panic
        // mode).
        (1..n)
            .map(|_| candidate())
            .find(|&i| takes(i))
            .or_else(|| (0..n).map(|k| (first + k) % n).find(|&i| eligible(i)))
            .or_else(|| {
                (0..n)
                    .map(|k| (first + k) % n)
                    .find(|&i| self.usable(&list[i], now))
            })
            .unwrap_or(first)
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
            locality: Default::default(),
        };
        let policy = ClusterPolicy {
            balancer,
            max_requests: max,
            ..ClusterPolicy::default()
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
    fn the_nearest_usable_endpoints_take_every_request_then_the_next_tier() {
        let near = |p: u16, priority: u8| Target {
            addr: SocketAddr::from(([127, 0, 0, 1], p)),
            priority,
        };
        for balancer in [
            Balancer::RoundRobin,
            Balancer::Random,
            Balancer::LeastRequest,
            Balancer::ConsistentHash(HashOn::SourceIp),
        ] {
            let c = with_policy(
                1,
                ClusterPolicy {
                    balancer: balancer.clone(),
                    outlier: Some(OutlierPolicy {
                        consecutive_errors: 1,
                        base_ejection: Duration::from_secs(30),
                        max_ejection_percent: 100,
                        latency: None,
                    }),
                    ..ClusterPolicy::default()
                },
            );
            // Two local endpoints, one in another zone, one in another cluster.
            c.set_endpoints(vec![near(1, 2), near(2, 0), near(3, 1), near(4, 0)]);
            let picks = |n: usize| -> std::collections::BTreeSet<u16> {
                (0..n)
                    .map(|i| {
                        let aff = Affinity {
                            hash: Some(key_hash(&i.to_be_bytes())),
                            ..Affinity::default()
                        };
                        c.admit(&aff).expect("admit").addr.port()
                    })
                    .collect()
            };
            assert_eq!(
                picks(200),
                [2, 4].into(),
                "{balancer:?}: the nearest tier only"
            );
            // Both local endpoints fail and are ejected: the other zone takes over, then
            // the other cluster.
            for port in [2, 4] {
                let a = loop {
                    let a = c.admit(&Affinity::default()).expect("admit");
                    if a.addr.port() == port {
                        break a;
                    }
                };
                a.guard.outcome(false);
            }
            assert_eq!(picks(100), [3].into(), "{balancer:?}: the next zone");
            let a = c.admit(&Affinity::default()).expect("admit");
            a.guard.outcome(false);
            assert_eq!(picks(100), [1].into(), "{balancer:?}: the other cluster");
        }
    }

    #[test]
    fn round_robin_visits_every_endpoint_in_turn() {
        let c = cluster(Balancer::RoundRobin, None, 3);
        let ports: Vec<u16> = (0..6)
            .map(|_| c.admit(&Affinity::default()).expect("admitted").addr.port())
            .collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
        assert_eq!(c.in_flight(), 0, "guards dropped at once");
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let c = cluster(Balancer::LeastRequest, None, 1);
        // Ten requests held on the only endpoint, which then gets a sibling.
        let held: Vec<Admitted> = (0..10)
            .map(|_| c.admit(&Affinity::default()).expect("admitted"))
            .collect();
        c.set_endpoints(vec![
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 1], 2)),
        ]);
        for _ in 0..100 {
            let a = c.admit(&Affinity::default()).expect("admitted");
            assert_eq!(
                a.addr.port(),
                2,
                "two choices among two: always the idle one"
            );
        }
        // Held requests go to the new endpoint until it is as busy as the old one, then
        // alternate: 30 in flight end up 15 and 15 (give or take one).
        let more: Vec<Admitted> = (0..20)
            .map(|_| c.admit(&Affinity::default()).expect("admitted"))
            .collect();
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
        let held: Vec<Admitted> = (0..3)
            .map(|_| c.admit(&Affinity::default()).expect("admitted"))
            .collect();
        assert_eq!(
            c.admit(&Affinity::default()).err(),
            Some(Refused::MaxRequests(3))
        );
        assert_eq!(c.in_flight(), 3);
        drop(held);
        assert!(
            c.admit(&Affinity::default()).is_ok(),
            "admits again once requests end"
        );
        let empty = cluster(Balancer::RoundRobin, None, 0);
        assert_eq!(
            empty.admit(&Affinity::default()).err(),
            Some(Refused::NoEndpoints)
        );
        assert_eq!(empty.in_flight(), 0);
    }

    #[test]
    fn failing_endpoint_is_ejected_then_returns() {
        let mut c = Arc::try_unwrap(cluster(Balancer::RoundRobin, None, 3)).expect("unique");
        c.policy.outlier = Some(OutlierPolicy {
            consecutive_errors: 2,
            base_ejection: Duration::from_millis(80),
            max_ejection_percent: 34,
            latency: None,
        });
        let c = Arc::new(c);
        // Endpoint 1 fails twice in a row (successes elsewhere do not reset it).
        for _ in 0..6 {
            let a = c.admit(&Affinity::default()).expect("admitted");
            a.guard.outcome(a.addr.port() != 1);
        }
        assert_eq!(c.ejected(), vec![SocketAddr::from(([127, 0, 0, 1], 1))]);
        for _ in 0..30 {
            assert_ne!(
                c.admit(&Affinity::default()).expect("admitted").addr.port(),
                1,
                "ejected"
            );
        }
        // 34% of 3: one at a time. Endpoint 2 failing now is not ejected.
        for _ in 0..6 {
            let a = c.admit(&Affinity::default()).expect("admitted");
            a.guard.outcome(a.addr.port() != 2);
        }
        assert_eq!(c.ejected().len(), 1);
        assert_eq!(c.ejections(), 1);
        // After the ejection time, endpoint 1 is back in rotation.
        std::thread::sleep(Duration::from_millis(120));
        let ports: Vec<u16> = (0..3)
            .map(|_| c.admit(&Affinity::default()).expect("admitted").addr.port())
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
            latency: None,
        });
        let c = Arc::new(c);
        c.admit(&Affinity::default())
            .expect("admitted")
            .guard
            .outcome(false);
        assert_eq!(c.ejected().len(), 1);
        assert!(
            c.admit(&Affinity::default()).is_ok(),
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
            latency: None,
        });
        let old = Arc::new(old);
        let held = old.admit(&Affinity::default()).expect("admitted");
        let failed = old.admit(&Affinity::default()).expect("admitted");
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
        let second = new.admit(&Affinity::default()).expect("admitted");
        assert_eq!(
            new.admit(&Affinity::default()).err(),
            Some(Refused::MaxRequests(2))
        );
        drop((held, second));
        assert_eq!(new.in_flight(), 0);
    }

    #[test]
    fn endpoint_counts_survive_an_endpoint_update() {
        let c = cluster(Balancer::LeastRequest, None, 2);
        let a = c.admit(&Affinity::default()).expect("admitted");
        let port = a.addr.port();
        c.set_endpoints(vec![
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 1], 2)),
            SocketAddr::from(([127, 0, 0, 1], 3)),
        ]);
        // The busy endpoint is still known to be busy.
        for _ in 0..50 {
            assert_ne!(
                c.admit(&Affinity::default()).expect("admitted").addr.port(),
                port
            );
        }
        drop(a);
    }

    fn with_policy(n: u16, policy: ClusterPolicy) -> Arc<Cluster> {
        let mut c = Arc::try_unwrap(cluster(Balancer::RoundRobin, None, n)).expect("unique");
        c.endpoints.store(Arc::new(EndpointSet::new(
            c.endpoints.load().list.clone(),
            &policy.balancer,
        )));
        c.policy = policy;
        Arc::new(c)
    }

    fn share_of(c: &Arc<Cluster>, port: u16, picks: usize, aff: impl Fn() -> Affinity) -> f64 {
        let hits = (0..picks)
            .filter(|_| c.admit(&aff()).expect("admitted").addr.port() == port)
            .count();
        hits as f64 / picks as f64
    }

    #[test]
    fn random_spreads_evenly() {
        let c = cluster(Balancer::Random, None, 4);
        for port in 1..=4 {
            let share = share_of(&c, port, 20_000, Affinity::default);
            assert!((0.23..=0.27).contains(&share), "port {port}: {share}");
        }
    }

    #[test]
    fn consistent_hash_keeps_a_key_on_one_endpoint_and_spreads_keys() {
        let policy = ClusterPolicy {
            balancer: Balancer::ConsistentHash(HashOn::SourceIp),
            ..ClusterPolicy::default()
        };
        let c = with_policy(5, policy);
        let mut per_port = [0u32; 6];
        for k in 0u32..10_000 {
            let aff = Affinity {
                hash: Some(key_hash(&k.to_le_bytes())),
                ..Affinity::default()
            };
            let first = c.admit(&aff).expect("admitted").addr;
            assert_eq!(c.admit(&aff).expect("admitted").addr, first, "key {k}");
            per_port[first.port() as usize] += 1;
        }
        for (port, n) in per_port.iter().enumerate().skip(1) {
            assert!(
                (1_800..=2_200).contains(n),
                "port {port}: {n} of 10000 keys"
            );
        }
        // An endpoint that joins takes about a sixth of the keys, from every other.
        let before: Vec<SocketAddr> = (0u32..6_000)
            .map(|k| {
                let aff = Affinity {
                    hash: Some(key_hash(&k.to_le_bytes())),
                    ..Affinity::default()
                };
                c.admit(&aff).expect("admitted").addr
            })
            .collect();
        let mut eps = c.endpoints();
        eps.push(SocketAddr::from(([127, 0, 0, 1], 6)));
        c.set_endpoints(eps);
        let moved = (0u32..6_000)
            .filter(|&k| {
                let aff = Affinity {
                    hash: Some(key_hash(&k.to_le_bytes())),
                    ..Affinity::default()
                };
                c.admit(&aff).expect("admitted").addr != before[k as usize]
            })
            .count();
        assert!((800..=1_250).contains(&moved), "{moved} of 6000 keys moved");
    }

    #[test]
    fn consistent_hash_moves_only_the_keys_of_an_unusable_endpoint() {
        let policy = ClusterPolicy {
            balancer: Balancer::ConsistentHash(HashOn::Header("x-user".into())),
            outlier: Some(OutlierPolicy {
                consecutive_errors: 1,
                base_ejection: Duration::from_secs(30),
                max_ejection_percent: 50,
                latency: None,
            }),
            ..ClusterPolicy::default()
        };
        let c = with_policy(4, policy);
        let aff = |k: u32| Affinity {
            hash: Some(key_hash(&k.to_le_bytes())),
            ..Affinity::default()
        };
        let before: Vec<u16> = (0..4_000)
            .map(|k| c.admit(&aff(k)).expect("admitted").addr.port())
            .collect();
        // Endpoint 2 fails once and is ejected.
        let a = (0..)
            .map(|k| c.admit(&aff(k)).expect("admitted"))
            .find(|a| a.addr.port() == 2)
            .expect("some key maps to 2");
        a.guard.outcome(false);
        drop(a);
        assert_eq!(c.ejected().len(), 1);
        for (k, was) in before.iter().enumerate() {
            let now = c.admit(&aff(k as u32)).expect("admitted").addr.port();
            match was {
                2 => assert_ne!(now, 2, "key {k} leaves the ejected endpoint"),
                _ => assert_eq!(now, *was, "key {k} stays put"),
            }
        }
    }

    #[test]
    fn session_cookie_is_set_once_then_followed() {
        let policy = ClusterPolicy {
            session: Some(SessionPolicy {
                cookie: "gatehouse-session".into(),
                ttl: None,
            }),
            ..ClusterPolicy::default()
        };
        let c = with_policy(3, policy);
        let first = c.admit(&Affinity::default()).expect("admitted");
        let token = first.set_session.expect("a new client gets a session");
        assert_eq!(token, session_token(&first.addr));
        let sticky = Affinity {
            sticky: Some(token),
            ..Affinity::default()
        };
        for _ in 0..20 {
            let a = c.admit(&sticky).expect("admitted");
            assert_eq!(a.addr, first.addr, "round robin is overridden");
            assert_eq!(a.set_session, None);
        }
        // The endpoint leaves: the client is moved and given a new session.
        let others: Vec<SocketAddr> = c
            .endpoints()
            .into_iter()
            .filter(|e| *e != first.addr)
            .collect();
        c.set_endpoints(others);
        let moved = c.admit(&sticky).expect("admitted");
        assert_ne!(moved.addr, first.addr);
        assert_eq!(moved.set_session, Some(session_token(&moved.addr)));
    }

    #[test]
    fn unhealthy_endpoints_leave_rotation_until_probes_pass() {
        let policy = ClusterPolicy {
            health: Some(HealthPolicy {
                probe: Probe::Tcp,
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                healthy_threshold: 1,
                unhealthy_threshold: 2,
            }),
            ..ClusterPolicy::default()
        };
        let c = with_policy(3, policy);
        let bad = SocketAddr::from(([127, 0, 0, 1], 3));
        assert_eq!(c.record_probe(bad, false), None);
        assert_eq!(c.record_probe(bad, false), Some(false));
        assert_eq!(c.unhealthy(), vec![bad]);
        for _ in 0..30 {
            assert_ne!(c.admit(&Affinity::default()).expect("admitted").addr, bad);
        }
        assert_eq!(c.record_probe(bad, true), Some(true));
        let back = (0..3).any(|_| c.admit(&Affinity::default()).expect("admitted").addr == bad);
        assert!(back);
    }

    #[test]
    fn slow_start_gives_a_new_endpoint_a_small_share_at_first() {
        let policy = ClusterPolicy {
            slow_start: Some(Duration::from_secs(60)),
            ..ClusterPolicy::default()
        };
        let c = with_policy(3, policy);
        let mut eps = c.endpoints();
        eps.push(SocketAddr::from(([127, 0, 0, 1], 4)));
        c.set_endpoints(eps);
        // Three old endpoints at full weight and one at 10%: about 10/310 of requests.
        let share = share_of(&c, 4, 20_000, Affinity::default);
        assert!((0.02..=0.05).contains(&share), "new endpoint share {share}");
        let old = share_of(&c, 1, 20_000, Affinity::default);
        assert!((0.29..=0.36).contains(&old), "old endpoint share {old}");
    }

    #[test]
    fn least_request_prefers_the_faster_endpoint() {
        let c = cluster(Balancer::LeastRequest, None, 2);
        let eps = c.endpoints.load();
        eps.list[0].state.observe_latency(Duration::from_millis(40));
        eps.list[1].state.observe_latency(Duration::from_millis(2));
        let fast = share_of(&c, 2, 1_000, Affinity::default);
        assert_eq!(fast, 1.0, "idle and 20 times faster: always chosen");
        // With enough requests held on the fast one, the slow one gets some.
        let held: Vec<Admitted> = (0..25)
            .map(|_| c.admit(&Affinity::default()).expect("admitted"))
            .collect();
        let on_slow = held.iter().filter(|a| a.addr.port() == 1).count();
        assert!(
            (1..=3).contains(&on_slow),
            "{on_slow} of 25 on the slow endpoint"
        );
    }

    #[test]
    fn a_retry_avoids_the_endpoint_that_failed() {
        for balancer in [
            Balancer::RoundRobin,
            Balancer::Random,
            Balancer::LeastRequest,
        ] {
            let c = cluster(balancer.clone(), None, 3);
            let avoid = SocketAddr::from(([127, 0, 0, 1], 2));
            let aff = Affinity {
                avoid: Some(avoid),
                ..Affinity::default()
            };
            for _ in 0..50 {
                assert_ne!(c.admit(&aff).expect("admitted").addr, avoid, "{balancer:?}");
            }
        }
        // With one endpoint, the retry goes to it anyway.
        let one = cluster(Balancer::RoundRobin, None, 1);
        let aff = Affinity {
            avoid: Some(SocketAddr::from(([127, 0, 0, 1], 1))),
            ..Affinity::default()
        };
        assert!(one.admit(&aff).is_ok());
    }
}
