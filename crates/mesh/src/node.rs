//! The mesh proxy of a node (hub-spoke) or of one pod (sidecar): captures workloads'
//! TCP, carries it to the destination's proxy through mutual-TLS tunnels, and on the
//! receiving side checks the caller's identity against the destination's
//! authorization policies before delivering it: per connection, or per HTTP request
//! when a policy looks at HTTP.

use crate::capture::{self, Ports};
use crate::identities::Identities;
use crate::identity::Identity;
use crate::l7;
use crate::tunnel::{Inbound, Pool, Refused};
use arc_swap::ArcSwap;
use gatehouse_translate::authz::{Call, Decision};
use gatehouse_translate::mesh::{DataplaneMode, MeshSnapshot, Workload};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// Whom a proxy serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Every meshed workload of node mode on this node.
    Node,
    /// The one workload at this address.
    Sidecar(IpAddr),
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name (for a sidecar: its pod's node).
    pub node: String,
    pub role: Role,
    pub ports: Ports,
    /// Address the listeners bind.
    pub bind: IpAddr,
    /// Install the capture rules.
    pub capture: bool,
    pub trust_domain: String,
    /// Read the HTTP of every inbound call (not only of workloads whose policies need
    /// it), so that flow records carry methods and paths.
    pub observe_http: bool,
}

/// Counters, read by the admin listener.
#[derive(Debug, Default)]
pub struct Stats {
    pub outbound: AtomicU64,
    pub inbound: AtomicU64,
    pub passthrough: AtomicU64,
    pub denied: AtomicU64,
    pub plaintext_refused: AtomicU64,
    pub failed: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Denials by deciding policy (`-` when no ALLOW policy matched).
    pub denied_by: ByPolicy,
    pub audited_by: ByPolicy,
    /// Calls a dry-run policy would have denied, by that policy.
    pub dry_run_denied_by: ByPolicy,
}

/// A counter by policy name (labels bounded by the policies there are).
#[derive(Debug, Default)]
pub struct ByPolicy(Mutex<BTreeMap<String, u64>>);

impl ByPolicy {
    fn bump(&self, policy: &str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(policy) {
            Some(v) => *v += 1,
            None => {
                m.insert(policy.to_string(), 1);
            }
        }
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (p, v) in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!("{name}{{policy=\"{p}\"}} {v}\n"));
        }
    }
}

pub struct NodeProxy {
    pub cfg: NodeConfig,
    pub mesh: ArcSwap<MeshSnapshot>,
    pub identities: Arc<Identities>,
    pool: Pool,
    pub stats: Stats,
    /// Flow records of the calls let in or refused here.
    pub flows: crate::flows::Flows,
    /// The ruleset installed last.
    rules: Mutex<String>,
}

/// Who is calling, as the destination sees it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Option<Identity>,
    pub ip: IpAddr,
}

impl Caller {
    pub(crate) fn principal(&self) -> Option<String> {
        self.identity
            .as_ref()
            .map(|i| gatehouse_translate::authz::principal_of(&i.uri()).to_string())
    }
}

impl NodeProxy {
    pub fn new(cfg: NodeConfig, identities: Arc<Identities>) -> Arc<Self> {
        let mark = Some(capture::MARK);
        Arc::new(NodeProxy {
            pool: Pool::new(identities.clone(), mark),
            cfg,
            mesh: ArcSwap::from_pointee(MeshSnapshot::default()),
            identities,
            stats: Stats::default(),
            flows: Default::default(),
            rules: Mutex::new(String::new()),
        })
    }

    /// Whether this proxy carries `w`'s traffic.
    pub fn serves(&self, w: &Workload) -> bool {
        match &self.cfg.role {
            Role::Node => w.mode == DataplaneMode::Node && *w.node == *self.cfg.node,
            Role::Sidecar(ip) => w.ip == *ip,
        }
    }

    /// Installs a new view of the mesh: capture rules and certificates follow it.
    pub async fn set_mesh(self: &Arc<Self>, mesh: MeshSnapshot) -> anyhow::Result<()> {
        let mine: Vec<Arc<Workload>> = mesh
            .workloads
            .values()
            .filter(|w| self.serves(w))
            .cloned()
            .collect();
        let wanted: BTreeSet<Identity> = mine
            .iter()
            .filter_map(|w| Identity::parse(&w.identity))
            .collect();
        self.mesh.store(Arc::new(mesh));
        if self.cfg.capture {
            let ruleset = match &self.cfg.role {
                Role::Node => {
                    let mut ips: Vec<IpAddr> = mine.iter().map(|w| w.ip).collect();
                    ips.sort();
                    capture::node_ruleset(&ips, self.cfg.ports)
                }
                Role::Sidecar(_) => capture::sidecar_ruleset(self.cfg.ports),
            };
            let changed = {
                let mut r = self.rules.lock().unwrap_or_else(|p| p.into_inner());
                let changed = *r != ruleset;
                if changed {
                    *r = ruleset.clone();
                }
                changed
            };
            if changed {
                if let Err(e) = capture::apply(&ruleset) {
                    self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
                    return Err(e.into());
                }
                tracing::info!(workloads = mine.len(), "capture rules installed");
            }
        }
        let ids = self.identities.clone();
        tokio::spawn(async move { ids.want(&wanted).await });
        Ok(())
    }

    /// Binds the outbound, inbound plaintext and tunnel listeners and serves them.
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let p = self.cfg.ports;
        let bind = |port| SocketAddr::new(self.cfg.bind, port);
        let outbound = TcpListener::bind(bind(p.outbound)).await?;
        let plain = TcpListener::bind(bind(p.inbound_plain)).await?;
        let tunnel = TcpListener::bind(bind(p.tunnel)).await?;
        let mut tasks = Vec::new();
        let me = self.clone();
        tasks.push(tokio::spawn(async move {
            accept_loop(outbound, move |s, peer| {
                let me = me.clone();
                async move { me.outbound(s, peer).await }
            })
            .await
        }));
        let me = self.clone();
        tasks.push(tokio::spawn(async move {
            accept_loop(plain, move |s, peer| {
                let me = me.clone();
                async move { me.inbound_plain(s, peer).await }
            })
            .await
        }));
        let me = self.clone();
        tasks.push(tokio::spawn(async move { me.serve_tunnels(tunnel).await }));
        let ids = self.identities.clone();
        tasks.push(tokio::spawn(ids.renew_loop(Duration::from_secs(1))));
        Ok(tasks)
    }

    /// Removes the capture rules.
    pub fn stop_capture(&self) {
        if self.cfg.capture {
            if let Err(e) = capture::remove() {
                tracing::warn!(error = %e, "cannot remove the capture rules");
            }
        }
    }

    async fn connect_workload(&self, target: SocketAddr) -> std::io::Result<TcpStream> {
        let sock = match target {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        capture::set_mark(&sock, capture::MARK)?;
        sock.set_nodelay(true)?;
        match tokio::time::timeout(Duration::from_secs(10), sock.connect(target)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting to {target} timed out"),
            )),
        }
    }

    /// A captured outgoing connection of a local workload.
    async fn outbound(self: Arc<Self>, client: TcpStream, peer: SocketAddr) {
        let orig = match capture::original_dst(&client) {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "outbound connection without an original destination");
                return;
            }
        };
        let _ = client.set_nodelay(true);
        let mesh = self.mesh.load_full();
        let source_ip = match &self.cfg.role {
            Role::Node => peer.ip(),
            Role::Sidecar(ip) => *ip,
        };
        let src = mesh.workload(source_ip).filter(|w| self.serves(w)).cloned();
        let (target, service) = match mesh.services.get(&orig) {
            Some(s) => match s.pick() {
                Some(t) => (t, Some(s.name.clone())),
                None => {
                    tracing::info!(service = %s.name, "no endpoint for a meshed service");
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    reset(client);
                    return;
                }
            },
            None => (orig, None),
        };
        let dst = mesh.workload(target.ip()).cloned();
        let (Some(src), Some(dst)) = (src, dst) else {
            // Not both in the mesh: passed through as it is.
            self.stats.passthrough.fetch_add(1, Ordering::Relaxed);
            match self.connect_workload(target).await {
                Ok(up) => self.copy(client, up).await,
                Err(e) => {
                    tracing::debug!(%target, error = %e, "passthrough connect failed");
                    reset(client);
                }
            }
            return;
        };
        self.stats.outbound.fetch_add(1, Ordering::Relaxed);
        let Some(src_id) = Identity::parse(&src.identity) else {
            return;
        };
        if self.serves(&dst) {
            // Same proxy at both ends: no tunnel, the same checks.
            let caller = Caller {
                identity: Some(src_id),
                ip: source_ip,
            };
            let d = self.check_l4(&dst, &caller, target.port());
            if let Some(d) = d.as_ref().filter(|d| !d.allowed) {
                self.deny(&caller, &dst, target, d, None);
                reset(client);
                return;
            }
            self.deliver(client, dst, caller, target, d).await;
            return;
        }
        let (Some(proxy), Some(dst_id)) = (dst.tunnel, Identity::parse(&dst.identity)) else {
            tracing::warn!(workload = %dst.name, "the destination's node address is unknown");
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            reset(client);
            return;
        };
        match self
            .pool
            .connect(&src_id, &dst_id, proxy, target, source_ip)
            .await
        {
            Ok(stream) => {
                let mut client = client;
                let r = stream.splice(&mut client).await;
                self.count(r, false);
            }
            Err(e) => {
                if let Some(r) = e.downcast_ref::<Refused>() {
                    tracing::info!(source = %src_id, destination = %target, service = ?service, status = %r.status, "the destination refused the connection");
                } else {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(source = %src_id, destination = %target, error = %e, "tunnel failed");
                }
                reset(client);
            }
        }
    }

    /// A plaintext connection to a local workload (not through the mesh).
    async fn inbound_plain(self: Arc<Self>, client: TcpStream, peer: SocketAddr) {
        let Ok(target) = capture::original_dst(&client) else {
            return;
        };
        let mesh = self.mesh.load_full();
        let Some(w) = mesh
            .workload(target.ip())
            .filter(|w| self.serves(w))
            .cloned()
        else {
            // Not ours (any more): let it through.
            if let Ok(up) = self.connect_workload(target).await {
                self.copy(client, up).await;
            }
            return;
        };
        let caller = Caller {
            identity: None,
            ip: peer.ip(),
        };
        if w.strict {
            self.stats.plaintext_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "gatehouse::authz", source = %peer, destination = %target, workload = %w.name, "plaintext refused: the workload is STRICT");
            reset(client);
            return;
        }
        let d = self.check_l4(&w, &caller, target.port());
        if let Some(d) = d.as_ref().filter(|d| !d.allowed) {
            self.deny(&caller, &w, target, d, None);
            reset(client);
            return;
        }
        self.stats.inbound.fetch_add(1, Ordering::Relaxed);
        self.deliver(client, w, caller, target, d).await;
    }

    async fn serve_tunnels(self: Arc<Self>, listener: TcpListener) {
        let resolver = Arc::new(crate::node_tls::Resolver {
            identities: self.identities.clone(),
            trust_domain: self.cfg.trust_domain.clone(),
        });
        let mut config: Option<(Arc<rustls::RootCertStore>, Arc<rustls::ServerConfig>)> = None;
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "tunnel accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            // One TLS configuration per trust bundle, made again only when it changes.
            let roots = self.identities.roots.load_full();
            let cfg = match &config {
                Some((r, c)) if Arc::ptr_eq(r, &roots) => c.clone(),
                _ => match crate::tls::server_config(
                    resolver.clone(),
                    roots.clone(),
                    false,
                    &[crate::tls::ALPN_H2],
                ) {
                    Ok(c) => {
                        config = Some((roots, c.clone()));
                        c
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no TLS configuration for tunnels");
                        continue;
                    }
                },
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let tls = match tokio::time::timeout(
                    Duration::from_secs(10),
                    tokio_rustls::TlsAcceptor::from(cfg).accept(crate::tunnel::tunnel_io(tcp)),
                )
                .await
                {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "tunnel handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let td = me.cfg.trust_domain.clone();
                let me2 = me.clone();
                let r = crate::tunnel::serve_connection(tls, &td, move |inbound| {
                    let me = me2.clone();
                    tokio::spawn(async move { me.inbound_tunnel(inbound).await });
                })
                .await;
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "tunnel connection ended");
                }
            });
        }
    }

    /// A CONNECT stream from another proxy.
    async fn inbound_tunnel(self: Arc<Self>, inbound: Inbound) {
        let mesh = self.mesh.load_full();
        let target = inbound.target;
        let Some(w) = mesh
            .workload(target.ip())
            .filter(|w| self.serves(w))
            .cloned()
        else {
            inbound.refuse(http::StatusCode::NOT_FOUND);
            return;
        };
        if *w.identity != inbound.local.uri() {
            // The caller checked our certificate as another identity's.
            inbound.refuse(http::StatusCode::MISDIRECTED_REQUEST);
            return;
        }
        let caller = Caller {
            identity: Some(inbound.peer.clone()),
            ip: inbound.caller,
        };
        let d = self.check_l4(&w, &caller, target.port());
        if let Some(d) = d.as_ref().filter(|d| !d.allowed) {
            self.deny(&caller, &w, target, d, None);
            inbound.refuse(http::StatusCode::FORBIDDEN);
            return;
        }
        self.stats.inbound.fetch_add(1, Ordering::Relaxed);
        let stream = match inbound.accept() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel stream closed before it was accepted");
                return;
            }
        };
        if self.at_l7(&w) {
            self.deliver(stream, w, caller, target, d).await;
        } else if let Some(mut up) = self.reach(target).await {
            let started = std::time::Instant::now();
            let r = stream.splice(&mut up).await;
            self.connection_flow(&caller, &w, target, d.as_ref(), &r, started, true);
            self.count(r, true);
        }
    }

    /// Whether calls to `w` are read request by request (its policies look at HTTP,
    /// or every call's HTTP is observed).
    fn at_l7(&self, w: &Workload) -> bool {
        w.authz.needs_http() || self.cfg.observe_http
    }

    /// The decision on what L4 shows, if the workload's policies decide there (those
    /// that look at HTTP decide per request instead).
    fn check_l4(&self, w: &Workload, caller: &Caller, port: u16) -> Option<Decision> {
        if w.authz.is_empty() || w.authz.needs_http() {
            return None;
        }
        let principal = caller.principal();
        let call = Call {
            principal: principal.as_deref(),
            namespace: caller.identity.as_ref().map(|i| i.namespace.as_str()),
            source_ip: caller.ip,
            destination_port: port,
            http: None,
        };
        let d = w.authz.check(&call);
        self.audit(&d, caller, w);
        Some(d)
    }

    /// Records a call let in, or refused: its flow, and what a dry-run policy would
    /// have done with it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn flow(
        &self,
        caller: &Caller,
        w: &Arc<Workload>,
        target: SocketAddr,
        d: Option<&Decision>,
        bytes: (u64, u64),
        duration: Duration,
        http: Option<(&str, &str)>,
    ) {
        let (verdict, policy) = match d {
            Some(d) if !d.allowed => (crate::flows::Verdict::Denied, d.policy.clone()),
            Some(Decision {
                shadow: Some((false, p)),
                ..
            }) => {
                let name = p.as_deref().unwrap_or("-");
                self.stats.dry_run_denied_by.bump(name);
                tracing::info!(target: "gatehouse::authz", source = ?caller.identity.as_ref().map(|i| i.uri()), source_ip = %caller.ip, destination = %target, workload = %w.name, namespace = %w.namespace, policy = %name, method = ?http.map(|h| h.0), path = ?http.map(|h| h.1), "dry run: would deny");
                (crate::flows::Verdict::WouldDeny, p.clone())
            }
            Some(d) => (crate::flows::Verdict::Allowed, d.policy.clone()),
            None => (crate::flows::Verdict::Allowed, None),
        };
        self.flows.record(crate::flows::Flow {
            time_ms: gatehouse_proxy::security_log::now_ms(),
            source: caller
                .identity
                .as_ref()
                .map(|i| Arc::from(i.uri().as_str())),
            source_ip: caller.ip,
            workload: w.clone(),
            target,
            verdict,
            policy,
            bytes_in: bytes.0,
            bytes_out: bytes.1,
            duration_ms: duration.as_millis() as u64,
            http: http.map(|(m, p)| (m.to_string(), p.to_string())),
        });
    }

    /// Records a connection carried at L4, once it ended: `r` is its copy's result,
    /// (from one end, to it), where that end is the workload's when `workload_side`.
    #[allow(clippy::too_many_arguments)]
    fn connection_flow(
        &self,
        caller: &Caller,
        w: &Arc<Workload>,
        target: SocketAddr,
        d: Option<&Decision>,
        r: &std::io::Result<(u64, u64)>,
        started: std::time::Instant,
        workload_side: bool,
    ) {
        let bytes = match r {
            Ok((from, to)) if workload_side => (*to, *from),
            Ok((from, to)) => (*from, *to),
            Err(_) => (0, 0),
        };
        self.flow(caller, w, target, d, bytes, started.elapsed(), None);
    }

    pub(crate) fn audit(&self, d: &Decision, caller: &Caller, w: &Workload) {
        for p in &d.audited {
            tracing::info!(target: "gatehouse::authz", source = ?caller.identity.as_ref().map(|i| i.uri()), source_ip = %caller.ip, destination = %w.name, namespace = %w.namespace, policy = %p, allowed = d.allowed, "audit");
            self.stats.audited_by.bump(p);
        }
    }

    pub(crate) fn deny(
        &self,
        caller: &Caller,
        w: &Arc<Workload>,
        target: SocketAddr,
        d: &Decision,
        http: Option<(&str, &str)>,
    ) {
        self.flow(caller, w, target, Some(d), (0, 0), Duration::ZERO, http);
        self.stats.denied.fetch_add(1, Ordering::Relaxed);
        let policy = d.policy.as_deref().unwrap_or("-");
        tracing::warn!(target: "gatehouse::authz", source = ?caller.identity.as_ref().map(|i| i.uri()), source_ip = %caller.ip, destination = %target, workload = %w.name, namespace = %w.namespace, policy = %policy, "denied");
        self.stats.denied_by.bump(policy);
    }

    /// Delivers an accepted stream to the workload: bytes as they are, or request by
    /// request when its policies look at HTTP.
    async fn deliver<S>(
        self: &Arc<Self>,
        down: S,
        w: Arc<Workload>,
        caller: Caller,
        target: SocketAddr,
        d: Option<Decision>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(up) = self.reach(target).await else {
            return;
        };
        if w.authz.needs_http() {
            l7::serve(self.clone(), down, up, w, caller, target).await;
        } else if self.cfg.observe_http {
            // Read for its flow records only: what does not speak HTTP is carried as
            // it is.
            match l7::sniff(down).await {
                (down, true) => l7::serve(self.clone(), down, up, w, caller, target).await,
                (down, false) => self.carry(down, up, &w, &caller, target, d).await,
            }
        } else {
            self.carry(down, up, &w, &caller, target, d).await;
        }
    }

    /// Carries a connection's bytes as they are, and records its flow.
    async fn carry<S>(
        &self,
        mut down: S,
        mut up: TcpStream,
        w: &Arc<Workload>,
        caller: &Caller,
        target: SocketAddr,
        d: Option<Decision>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let started = std::time::Instant::now();
        let r = tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, 64 * 1024, 64 * 1024)
            .await;
        self.connection_flow(caller, w, target, d.as_ref(), &r, started, false);
        self.count(r, false);
    }

    /// Connects to a local workload, counting and logging a failure.
    async fn reach(&self, target: SocketAddr) -> Option<TcpStream> {
        match self.connect_workload(target).await {
            Ok(s) => Some(s),
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%target, error = %e, "cannot reach the workload");
                None
            }
        }
    }

    /// Counts a connection's bytes: (from one end, to it), where that end is the
    /// workload's when `workload_side`, else the caller's.
    fn count(&self, r: std::io::Result<(u64, u64)>, workload_side: bool) {
        match r {
            Ok((from_socket, to_socket)) => {
                let (sent, received) = match workload_side {
                    true => (to_socket, from_socket),
                    false => (from_socket, to_socket),
                };
                self.stats.bytes_sent.fetch_add(sent, Ordering::Relaxed);
                self.stats
                    .bytes_received
                    .fetch_add(received, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
        }
    }

    async fn copy<A, B>(&self, mut a: A, mut b: B)
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        let r =
            tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, 64 * 1024, 64 * 1024).await;
        self.count(r, false);
    }

    /// The counters in Prometheus' text format.
    pub fn metrics_text(&self) -> String {
        let s = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counters = [
            (
                "gatehouse_mesh_outbound_connections_total",
                "Captured connections carried through the mesh.",
                load(&s.outbound),
            ),
            (
                "gatehouse_mesh_inbound_connections_total",
                "Connections delivered to local workloads.",
                load(&s.inbound),
            ),
            (
                "gatehouse_mesh_passthrough_connections_total",
                "Captured connections to or from outside the mesh, passed through.",
                load(&s.passthrough),
            ),
            (
                "gatehouse_mesh_plaintext_refused_total",
                "Plaintext connections refused by STRICT workloads.",
                load(&s.plaintext_refused),
            ),
            (
                "gatehouse_mesh_failed_connections_total",
                "Connections that failed (no endpoint, tunnel or workload unreachable).",
                load(&s.failed),
            ),
            (
                "gatehouse_mesh_sent_bytes_total",
                "Bytes from callers to workloads.",
                load(&s.bytes_sent),
            ),
            (
                "gatehouse_mesh_received_bytes_total",
                "Bytes from workloads to callers.",
                load(&s.bytes_received),
            ),
            (
                "gatehouse_mesh_tunnel_connections_opened_total",
                "Tunnel connections opened to other proxies.",
                load(&self.pool.opened),
            ),
            (
                "gatehouse_mesh_certificates_issued_total",
                "Workload certificates obtained from the CA.",
                load(&self.identities.issued),
            ),
        ];
        let mut out = String::new();
        for (name, help, v) in counters {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP gatehouse_mesh_trust_roots Roots in the trust bundle (two during a rotation).\n\
             # TYPE gatehouse_mesh_trust_roots gauge\ngatehouse_mesh_trust_roots {}\n",
            self.identities.roots.load().len()
        ));
        s.denied_by.write(
            &mut out,
            "gatehouse_mesh_authz_denied_total",
            "Connections and requests denied, by deciding policy (- when no ALLOW policy matched).",
        );
        s.audited_by.write(
            &mut out,
            "gatehouse_mesh_authz_audited_total",
            "Calls matched by AUDIT policies.",
        );
        s.dry_run_denied_by.write(
            &mut out,
            "gatehouse_mesh_authz_dry_run_denied_total",
            "Calls a dry-run policy would have denied (they were let in).",
        );
        self.flows.render(&mut out);
        out
    }
}

/// Closes a connection with a reset, so the caller sees a refusal, not an empty answer.
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

async fn accept_loop<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((s, peer)) => {
                tokio::spawn(handle(s, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
