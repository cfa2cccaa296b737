//! The controller's side of the protocol. The [`Distributor`] keeps the table of
//! resources; each proxy's stream runs its own task that sends the proxy what changed
//! since the generation it last acknowledged, one response at a time (the next waits
//! for the ACK or NACK of the last), so changes that arrive meanwhile coalesce into one
//! response. A NACK leaves the proxy at what it last acknowledged; what it rejected is
//! sent again only with a later change. A proxy that reconnects says what it holds and
//! is sent only the difference, so neither a proxy's nor the controller's restart
//! makes every proxy reload everything.

use crate::auth::{Credentials, ProxyAuth, ProxyTokens};
use crate::node_scope::{self, NodeIndex};
use crate::pb::config_distribution_server::{ConfigDistribution, ConfigDistributionServer};
use crate::pb::{
    ClusterCount, DeltaRequest, DeltaResponse, ListProxiesRequest, ListProxiesResponse, Proxy,
    ProxyStatus, Resource, ResourceList,
};
use crate::scope;
use crate::table::{member_hash, version_string, Delta, Table};
use gatehouse_model::ObjectStore;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// How far one connected proxy is.
#[derive(Debug, Clone)]
struct Connected {
    proxy: Proxy,
    address: String,
    acked_version: String,
    desired_version: String,
    last_nack: String,
    last_answer: Option<Instant>,
    connected: Instant,
    /// Since when its acknowledged version has differed from the desired one.
    behind_since: Option<Instant>,
}

/// The resources served and the proxies served them.
pub struct Distributor {
    table: RwLock<Table>,
    generation: watch::Sender<u64>,
    /// Whether the table holds a full picture of the sources yet: until it does,
    /// streams wait, as a proxy that resumed against an empty table would be told to
    /// drop everything it serves.
    ready: watch::Sender<bool>,
    proxies: Mutex<HashMap<u64, Connected>>,
    next_stream: AtomicU64,
    /// This controller's name, as `ListProxies` reports it.
    pub identity: String,
    /// When set, only proxies with a token that admits them are served.
    auth: std::sync::OnceLock<Arc<dyn ProxyAuth>>,
    /// Grows when the tokens change, so streams check theirs again.
    auth_epoch: watch::Sender<u64>,
    /// Per role, the whole set as last compressed.
    full: tokio::sync::Mutex<HashMap<String, Arc<FullState>>>,
    /// The clusters merged into the set, with how many objects each gives.
    clusters: Mutex<Vec<(String, usize)>>,
    /// Which node runs pods of which namespaces, for node proxies' policies.
    index: Mutex<NodeIndex>,
    /// The namespace whose policies apply mesh-wide (sent to every node proxy).
    mesh_root: RwLock<String>,
}

/// A role's whole set at one generation, compressed.
struct FullState {
    generation: u64,
    /// The set version's sum.
    sum: u64,
    bytes: bytes::Bytes,
}

impl std::fmt::Debug for Distributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distributor")
            .field("identity", &self.identity)
            .field("resources", &self.len())
            .finish()
    }
}

impl Distributor {
    pub fn new(identity: impl Into<String>) -> Arc<Self> {
        Arc::new(Distributor {
            table: RwLock::new(Table::new()),
            generation: watch::channel(0).0,
            ready: watch::channel(false).0,
            proxies: Mutex::new(HashMap::new()),
            next_stream: AtomicU64::new(1),
            identity: identity.into(),
            auth: std::sync::OnceLock::new(),
            auth_epoch: watch::channel(0).0,
            full: tokio::sync::Mutex::new(HashMap::new()),
            clusters: Mutex::new(Vec::new()),
            index: Mutex::new(NodeIndex::default()),
            mesh_root: RwLock::new("gatehouse-system".into()),
        })
    }

    /// Names the namespace whose policies apply mesh-wide (default `gatehouse-system`).
    pub fn set_mesh_root_namespace(&self, ns: impl Into<String>) {
        *self.mesh_root.write().unwrap_or_else(|e| e.into_inner()) = ns.into();
    }

    /// Serves only proxies whose bearer token admits them, from now on; the tokens are
    /// read again every 2 s, and streams whose token was revoked are closed.
    pub fn require_tokens(self: &Arc<Self>, tokens: ProxyTokens) {
        self.require(Arc::new(tokens));
    }

    /// Serves only proxies `auth` admits, from now on; every 2 s it may say that what
    /// it admits changed, and connected proxies are then checked again.
    pub fn require(self: &Arc<Self>, auth: Arc<dyn ProxyAuth>) {
        if self.auth.set(auth).is_err() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                let Some(d) = weak.upgrade() else { return };
                if d.auth.get().is_some_and(|t| t.refresh()) {
                    tracing::info!("proxy tokens changed; connected proxies are checked again");
                    d.auth_epoch.send_modify(|e| *e += 1);
                }
            }
        });
    }

    /// Makes the served resources those of `store` (a full picture of the sources);
    /// proxies are sent what changed. Returns how many resources changed.
    pub fn sync(&self, store: &ObjectStore) -> usize {
        let kinds = scope::all_kinds();
        self.update(|table| table.sync(store, |k| kinds.contains(&k)))
    }

    /// Runs `f` on the table and tells proxies if it changed anything (for callers that
    /// know exactly which objects changed); the table then counts as a full picture.
    pub fn update<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        let before = table.generation();
        let r = f(&mut table);
        let after = table.generation();
        if after != before {
            self.index
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .catch_up(&table);
        }
        drop(table);
        if after != before {
            self.generation.send_replace(after);
        }
        self.ready.send_replace(true);
        r
    }

    /// Says which clusters the set merges, and how many objects each gives.
    pub fn set_clusters(&self, clusters: Vec<(String, usize)>) {
        *self.clusters.lock().unwrap_or_else(|e| e.into_inner()) = clusters;
    }

    /// How many resources are served.
    pub fn len(&self) -> usize {
        self.table.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole set `role` is sent (of `kinds`), compressed, at the current generation:
    /// made by the first proxy that needs it, then shared.
    async fn full_state(&self, role: &str, kinds: &[&'static str]) -> Arc<FullState> {
        let mut cache = self.full.lock().await;
        let generation = self
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generation();
        if let Some(f) = cache.get(role).filter(|f| f.generation == generation) {
            return f.clone();
        }
        let started = Instant::now();
        let (delta, generation, sum) = {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            let wants = |k: &str| kinds.contains(&k);
            (table.full(wants), table.generation(), table.set_sum(wants))
        };
        let count = delta.upserts.len();
        let list = ResourceList {
            resources: response(delta, String::new()).resources,
        };
        let encoded = prost::Message::encode_to_vec(&list);
        let bytes = match zstd::bulk::compress(&encoded, 1) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                tracing::error!(error = %e, "cannot compress the whole set; sending it as is");
                bytes::Bytes::new()
            }
        };
        tracing::info!(
            role,
            resources = count,
            encoded = encoded.len(),
            compressed = bytes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "whole set made for proxies that hold nothing"
        );
        let full = Arc::new(FullState {
            generation,
            sum,
            bytes,
        });
        cache.insert(role.to_string(), full.clone());
        full
    }

    /// The connected proxies and how far each one is.
    pub fn proxies(&self) -> Vec<ProxyStatus> {
        let proxies = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<ProxyStatus> = proxies
            .values()
            .map(|c| ProxyStatus {
                proxy: Some(c.proxy.clone()),
                address: c.address.clone(),
                acked_version: c.acked_version.clone(),
                desired_version: c.desired_version.clone(),
                last_nack: c.last_nack.clone(),
                seconds_since_answer: c
                    .last_answer
                    .map(|t| t.elapsed().as_secs_f64())
                    .unwrap_or(-1.0),
                connected_seconds: c.connected.elapsed().as_secs_f64(),
                lag_seconds: c
                    .behind_since
                    .map(|t| t.elapsed().as_secs_f64())
                    .unwrap_or(0.0),
            })
            .collect();
        out.sort_by(|a, b| {
            let id = |p: &ProxyStatus| p.proxy.as_ref().map(|p| p.id.clone());
            id(a).cmp(&id(b))
        });
        out
    }

    fn with_proxy(&self, stream: u64, f: impl FnOnce(&mut Connected)) {
        let mut proxies = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = proxies.get_mut(&stream) {
            f(c);
        }
    }

    /// The gRPC service, to add to a tonic server.
    pub fn service(self: &Arc<Self>) -> ConfigDistributionServer<Service> {
        ConfigDistributionServer::new(Service(self.clone()))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(256 << 20)
    }

    /// Serves the protocol on `listener` (with TLS when `tls` is set) until the task is
    /// dropped.
    pub fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Option<crate::transport::ServerTls>,
    ) -> tokio::task::JoinHandle<()> {
        let svc = self.service();
        tokio::spawn(async move {
            let incoming = crate::transport::incoming(listener, tls);
            if let Err(e) = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
                .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!(error = %e, "the config distribution server stopped");
            }
        })
    }
}

/// Where a proxy stands: the set it told us it held, or a generation it acknowledged.
enum Base {
    Held(HashMap<String, String>),
    Generation(u64),
}

/// The gRPC service.
pub struct Service(Arc<Distributor>);

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DeltaResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigDistribution for Service {
    type DeltasStream = ResponseStream;

    async fn deltas(
        &self,
        request: Request<Streaming<DeltaRequest>>,
    ) -> Result<Response<Self::DeltasStream>, Status> {
        let peer = request
            .extensions()
            .get::<crate::transport::PeerInfo>()
            .cloned()
            .unwrap_or_default();
        let address = peer
            .remote_addr
            .or_else(|| request.remote_addr())
            .map(|a: SocketAddr| a.to_string())
            .unwrap_or_default();
        let credentials = Credentials {
            token: request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string),
            identity: peer.identity,
        };
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream ended before it began"))?;
        let proxy = first.proxy.ok_or_else(|| {
            Status::invalid_argument("the first request must say who the proxy is")
        })?;
        let mut kinds = scope::kinds(&proxy.role).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown role {:?} (expected {:?} or {:?})",
                proxy.role,
                scope::GATEWAY,
                scope::NODE
            ))
        })?;
        // A node proxy is sent the scoped kinds for its own node only.
        if proxy.role == scope::NODE {
            if proxy.node.is_empty() {
                return Err(Status::invalid_argument("a node proxy must name its node"));
            }
            kinds.retain(|k| !node_scope::is_scoped(k));
        }
        let dist = self.0.clone();
        if let Some(auth) = dist.auth.get() {
            if let Err(why) = auth.admit(&credentials, &proxy).await {
                tracing::warn!(id = %proxy.id, role = %proxy.role, node = %proxy.node, %address, reason = %why, "proxy refused");
                return Err(Status::unauthenticated(format!(
                    "{} refused: {why}",
                    proxy.id
                )));
            }
        }
        // Nothing is said before the table holds the sources' full picture.
        let mut ready = dist.ready.subscribe();
        if ready.wait_for(|r| *r).await.is_err() {
            return Err(Status::unavailable("the controller is stopping"));
        }
        let stream = dist.next_stream.fetch_add(1, Ordering::Relaxed);
        dist.proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                stream,
                Connected {
                    proxy: proxy.clone(),
                    address: address.clone(),
                    acked_version: String::new(),
                    desired_version: String::new(),
                    last_nack: String::new(),
                    last_answer: None,
                    connected: Instant::now(),
                    behind_since: Some(Instant::now()),
                },
            );
        tracing::info!(id = %proxy.id, role = %proxy.role, node = %proxy.node, cluster = %proxy.cluster, %address, "proxy connected");
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let base = Base::Held(first.initial_resource_versions);
            let admitted = Admitted {
                proxy: proxy.clone(),
                credentials,
            };
            serve_stream(&dist, stream, &kinds, &admitted, base, inbound, tx).await;
            dist.proxies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&stream);
            tracing::info!(id = %proxy.id, %address, "proxy disconnected");
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_proxies(
        &self,
        _request: Request<ListProxiesRequest>,
    ) -> Result<Response<ListProxiesResponse>, Status> {
        let clusters = self
            .0
            .clusters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, n)| ClusterCount {
                name: name.clone(),
                resources: *n as u64,
            })
            .collect();
        Ok(Response::new(ListProxiesResponse {
            controller: self.0.identity.clone(),
            proxies: self.0.proxies(),
            clusters,
        }))
    }
}

/// A response from a delta, resources in make-before-break order (its nonce is set by
/// the sender).
fn response(delta: Delta, version: String) -> DeltaResponse {
    let mut upserts = delta.upserts;
    upserts.sort_by(|(a, ea), (b, eb)| (scope::rank(ea.kind), a).cmp(&(scope::rank(eb.kind), b)));
    DeltaResponse {
        system_version_info: version,
        resources: upserts
            .into_iter()
            .map(|(name, e)| Resource {
                name: name.to_string(),
                version: version_string(e.version),
                object: e.body.unwrap_or_default().to_vec(),
            })
            .collect(),
        removed_resources: delta.removals.iter().map(|n| n.to_string()).collect(),
        nonce: String::new(),
        full_state: delta.full_state,
        compressed_resources: bytes::Bytes::new(),
    }
}

/// The scoped part of a node proxy's set: its policies, by name, with their versions.
type Scoped = BTreeMap<Arc<str>, u64>;

/// Adds to `delta` what brings a node proxy holding `held` of the scoped kinds to
/// `desired`, and returns the set version's part of `desired`.
fn scoped_delta(table: &Table, held: &Scoped, desired: &Scoped, delta: &mut Delta) -> u64 {
    let mut sum = 0u64;
    for (name, version) in desired {
        sum = sum.wrapping_add(member_hash(name, *version));
        if held.get(name) != Some(version) {
            if let Some(e) = table.get(name) {
                delta.upserts.push((name.clone(), e.clone()));
            }
        }
    }
    delta
        .removals
        .extend(held.keys().filter(|n| !desired.contains_key(*n)).cloned());
    sum
}

/// Who a stream serves, and what it came in with.
struct Admitted {
    proxy: Proxy,
    credentials: Credentials,
}

/// One proxy's stream: see the module documentation.
async fn serve_stream(
    dist: &Distributor,
    stream: u64,
    kinds: &[&'static str],
    admitted: &Admitted,
    mut base: Base,
    mut inbound: Streaming<DeltaRequest>,
    tx: mpsc::Sender<Result<DeltaResponse, Status>>,
) {
    let wants = |k: &str| kinds.contains(&k);
    let node = (admitted.proxy.role == scope::NODE).then_some(admitted.proxy.node.as_str());
    let root = dist
        .mesh_root
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // What a node proxy holds of the scoped kinds; what is unscoped is held as `base`.
    let mut held_scoped = Scoped::new();
    if let Base::Held(held) = &mut base {
        held.retain(|name, version| {
            if !node_scope::is_scoped(crate::table::kind_of(name)) {
                return true;
            }
            let v = u64::from_str_radix(version, 16).unwrap_or_default();
            held_scoped.insert(name.as_str().into(), v);
            false
        });
    }
    let mut generations = dist.generation.subscribe();
    let mut epochs = dist.auth_epoch.subscribe();
    // The response awaiting an answer: (nonce, generation, version, scoped set sent).
    let mut in_flight: Option<(String, u64, String, Scoped)> = None;
    // A rejected generation is not sent again until something newer comes.
    let mut rejected: Option<u64> = None;
    let mut sent_any = false;
    let mut nonces = 0u64;
    loop {
        if in_flight.is_none() {
            let current = *generations.borrow_and_update();
            let stale = match &base {
                Base::Held(_) => true,
                Base::Generation(g) => *g < current,
            };
            let fresh = matches!(&base, Base::Held(held) if held.is_empty());
            // A node proxy's scoped part: what it should hold now.
            let desired = |table: &Table| match node {
                Some(node) => dist
                    .index
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .desired(table, node, &root),
                None => Scoped::new(),
            };
            // The next response, with the generation, version and scoped set it brings
            // the proxy to.
            let next = if fresh && !sent_any {
                // A proxy that holds nothing gets the whole set, compressed once per
                // version for every proxy of its role, and its scoped part as is.
                let full = dist.full_state(&admitted.proxy.role, kinds).await;
                let mut scoped = Delta::default();
                let (sum, scoped_now) = {
                    let table = dist.table.read().unwrap_or_else(|e| e.into_inner());
                    let d = desired(&table);
                    // A whole set names everything the proxy keeps.
                    (scoped_delta(&table, &Scoped::new(), &d, &mut scoped), d)
                };
                let version = version_string(full.sum.wrapping_add(sum));
                let mut r = response(scoped, version.clone());
                r.full_state = true;
                r.compressed_resources = full.bytes.clone();
                Some((r, full.generation, version, scoped_now))
            } else if (stale && rejected.is_none_or(|r| r < current)) || !sent_any {
                let (delta, generation, version, scoped_now) = {
                    let table = dist.table.read().unwrap_or_else(|e| e.into_inner());
                    let g = table.generation();
                    let mut delta = match &base {
                        Base::Held(held) if held.is_empty() => table.full(wants),
                        Base::Held(held) => table.against(held, wants),
                        Base::Generation(since) => table.since(*since, wants),
                    };
                    let d = desired(&table);
                    let held = match delta.full_state {
                        true => &Scoped::new(),
                        false => &held_scoped,
                    };
                    let sum = scoped_delta(&table, held, &d, &mut delta);
                    let version = version_string(table.set_sum(wants).wrapping_add(sum));
                    (delta, g, version, d)
                };
                let nothing = delta.upserts.is_empty() && delta.removals.is_empty();
                if nothing && sent_any && matches!(base, Base::Generation(_)) {
                    // Nothing this proxy is sent changed: it is already there.
                    base = Base::Generation(generation);
                    None
                } else {
                    Some((
                        response(delta, version.clone()),
                        generation,
                        version,
                        scoped_now,
                    ))
                }
            } else {
                None
            };
            if let Some((mut r, generation, version, scoped_now)) = next {
                dist.with_proxy(stream, |c| {
                    c.desired_version = version.clone();
                    if c.acked_version != version {
                        c.behind_since.get_or_insert_with(Instant::now);
                    }
                });
                nonces += 1;
                r.nonce = format!("{generation}-{nonces}");
                in_flight = Some((r.nonce.clone(), generation, version, scoped_now));
                sent_any = true;
                if tx.send(Ok(r)).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            msg = inbound.message() => {
                let request = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "proxy stream ended");
                        return;
                    }
                };
                let Some((nonce, generation, version, scoped_now)) = in_flight.take() else {
                    continue;
                };
                if request.response_nonce != nonce {
                    // An answer to an older response: still waiting for this one's.
                    in_flight = Some((nonce, generation, version, scoped_now));
                    continue;
                }
                match request.error_detail {
                    Some(error) => {
                        tracing::warn!(stream, %version, error = %error.message, "proxy rejected the config (NACK); it keeps its previous one");
                        rejected = Some(generation);
                        dist.with_proxy(stream, |c| {
                            c.last_nack = error.message.clone();
                            c.last_answer = Some(Instant::now());
                        });
                    }
                    None => {
                        base = Base::Generation(generation);
                        held_scoped = scoped_now;
                        rejected = None;
                        dist.with_proxy(stream, |c| {
                            c.acked_version = version.clone();
                            c.last_nack.clear();
                            c.last_answer = Some(Instant::now());
                            if c.desired_version == version {
                                c.behind_since = None;
                            }
                        });
                    }
                }
            }
            changed = generations.changed(), if in_flight.is_none() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = epochs.changed() => {
                let verdict = match dist.auth.get() {
                    Some(auth) => auth.admit(&admitted.credentials, &admitted.proxy).await,
                    None => Ok(()),
                };
                if let Err(why) = verdict {
                    tracing::warn!(id = %admitted.proxy.id, reason = %why, "proxy's token revoked; its stream is closed");
                    let _ = tx
                        .send(Err(Status::unauthenticated(format!("{} refused: {why}", admitted.proxy.id))))
                        .await;
                    return;
                }
            }
        }
    }
}
