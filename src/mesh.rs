//! Wiring of the mesh: `gatehouse node` (a node or sidecar proxy fed by a manifest
//! directory or the Kubernetes API, with its admin listener) and the CA that `run` and
//! `controller` serve with `--mesh-ca-listen` (its root in a directory, or on a cluster
//! in a Secret).

use crate::mesh_tokenreview::ReviewedTokens;
use anyhow::{anyhow, Context};
use arc_swap::ArcSwap;
use gatehouse_mesh::ca::{CertificateAuthority, RootMaterial};
use gatehouse_mesh::ca_api::{self, CaClient, CaServer, NodeAuth, NodeTokens};
use gatehouse_mesh::capture::Ports;
use gatehouse_mesh::identities::Identities;
use gatehouse_mesh::node::{NodeConfig, NodeProxy, Role};
use gatehouse_model::ConfigError;
use gatehouse_sources::watch_dir;
use gatehouse_translate::mesh::{self, MeshOptions, MeshSnapshot};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Loads a directory and builds the mesh's view of it.
pub fn load(
    dir: &Path,
    opts: &MeshOptions,
    version: u64,
) -> Result<MeshSnapshot, Vec<ConfigError>> {
    let mut m = crate::app::build_from_dir(dir, |_| {}, |store| mesh::build(store, opts))?;
    m.version = version;
    Ok(m)
}

/// Calls `apply` with every new valid view of `dir`; an invalid one is logged and
/// skipped, so the last good view stays in force.
pub fn watch<F, Fut>(
    dir: PathBuf,
    opts: MeshOptions,
    mut apply: F,
) -> anyhow::Result<tokio::task::JoinHandle<()>>
where
    F: FnMut(MeshSnapshot) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let mut w = watch_dir(&dir, Duration::from_millis(15))
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    Ok(tokio::spawn(async move {
        let mut version = 1;
        while w.changed().await.is_some() {
            let (d, o) = (dir.clone(), opts.clone());
            let next = version + 1;
            match tokio::task::spawn_blocking(move || load(&d, &o, next)).await {
                Ok(Ok(m)) => {
                    version = next;
                    applied(apply(m).await, version);
                }
                Ok(Err(errors)) => {
                    rejected(&errors, version);
                }
                Err(e) => tracing::error!(error = %e, "mesh reload failed"),
            }
        }
    }))
}

/// Logs how applying view `version` went.
fn applied(r: anyhow::Result<()>, version: u64) {
    match r {
        Ok(()) => tracing::info!(version, "mesh configuration applied"),
        Err(e) => tracing::error!(version, error = %e, "cannot apply the mesh configuration"),
    }
}

/// Logs a rejected view's errors; version `serving` stays in force.
fn rejected(errors: &[ConfigError], serving: u64) {
    for e in errors {
        tracing::error!("{e}");
    }
    tracing::error!(
        errors = errors.len(),
        serving,
        "mesh configuration rejected; still serving the last good version"
    );
}

/// Where the mesh's view comes from.
#[derive(Clone)]
pub enum MeshSource {
    /// A directory of manifests, watched.
    Dir(PathBuf),
    /// The Kubernetes API (Pods, Nodes, Services, EndpointSlices, Namespaces and the
    /// mesh's policies).
    Kube(kube::Client),
    /// A central controller's stream.
    Controller(gatehouse_control::client::Follow),
    /// The clusters a controller merges (`multicluster`), fed whole on each change; with
    /// the API client of the controller's own cluster, if it reads one.
    Merged(
        gatehouse_sources::kubernetes::KubeStore,
        Option<kube::Client>,
    ),
}

/// Follows `source`: applies its first valid view (an error doing so is returned), then
/// every new valid one, in order, from a task. An invalid view is logged and skipped, so
/// the last good one stays in force. From a directory, an invalid first view is an
/// error; from the API, where it may be mended any moment, the first valid one is
/// waited for.
pub async fn follow<F, Fut>(
    source: MeshSource,
    opts: MeshOptions,
    mut apply: F,
) -> anyhow::Result<tokio::task::JoinHandle<()>>
where
    F: FnMut(MeshSnapshot) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let store = match source {
        MeshSource::Dir(dir) => {
            let view = load(&dir, &opts, 1).map_err(|e| crate::app::invalid_config(&dir, &e))?;
            apply(view).await?;
            return watch(dir, opts, apply);
        }
        MeshSource::Kube(client) => gatehouse_sources::kubernetes::start(
            client,
            gatehouse_sources::kubernetes::KubeOptions {
                namespace: None,
                kinds: gatehouse_sources::kubernetes::MESH_WATCHED,
            },
        ),
        MeshSource::Merged(store, _) => store,
        MeshSource::Controller(to) => return follow_controller(to, opts, apply).await,
    };
    let mut changes = store.subscribe();
    let synced = store.clone();
    let build = move |version: u64| {
        let objects = store.snapshot();
        mesh::build(&objects, &opts).map(|mut m| {
            m.version = version;
            m
        })
    };
    let mut waited = std::time::Instant::now();
    let first = loop {
        if synced.synced() {
            match build(1) {
                Ok(m) => break m,
                Err(errors) => {
                    for e in &errors {
                        tracing::error!("{e}");
                    }
                    tracing::error!(
                        errors = errors.len(),
                        "the mesh configuration in the API is invalid; waiting for a valid one"
                    );
                }
            }
        } else if waited.elapsed() > Duration::from_secs(10) {
            tracing::warn!("still waiting for the first full list from the Kubernetes API");
            waited = std::time::Instant::now();
        }
        if changes.changed().await.is_err() {
            anyhow::bail!("the Kubernetes watchers stopped");
        }
    };
    tracing::info!(
        workloads = first.workloads.len(),
        services = first.services.len(),
        "mesh view from the Kubernetes API"
    );
    apply(first).await?;
    Ok(tokio::spawn(async move {
        let mut version = 1;
        while changes.changed().await.is_ok() {
            // Let a burst of changes settle into one view.
            tokio::time::sleep(Duration::from_millis(10)).await;
            changes.borrow_and_update();
            match build(version + 1) {
                Ok(m) => {
                    version += 1;
                    applied(apply(m).await, version);
                }
                Err(errors) => {
                    rejected(&errors, version);
                }
            }
        }
    }))
}

/// Follows a controller's stream: each response goes into a store, the mesh's view is
/// built from it and applied, and the response is acknowledged; a view that does not
/// build or apply is rejected (NACK) and the store put back, so the last good view
/// stays. Returns once the first view is applied.
async fn follow_controller<F, Fut>(
    to: gatehouse_control::client::Follow,
    opts: MeshOptions,
    apply: F,
) -> anyhow::Result<tokio::task::JoinHandle<()>>
where
    F: FnMut(MeshSnapshot) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let store = gatehouse_sources::kubernetes::KubeStore::fed();
    let apply = Arc::new(tokio::sync::Mutex::new(apply));
    let version = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let first_tx = Arc::new(std::sync::Mutex::new(Some(first_tx)));
    let stats = Arc::new(gatehouse_control::client::FollowStats::default());
    let url = to.url.clone();
    let task = tokio::spawn(gatehouse_control::client::follow(
        to,
        stats,
        move |changes| {
            let (store, apply, opts) = (store.clone(), apply.clone(), opts.clone());
            let (version, first_tx) = (version.clone(), first_tx.clone());
            async move {
                use std::sync::atomic::Ordering;
                let undo = crate::remote::put(&store, changes.upserts, changes.removals);
                let first = version.load(Ordering::Acquire) == 0;
                if undo.is_empty() && !first {
                    return Ok(());
                }
                let next = version.load(Ordering::Acquire) + 1;
                let view = match mesh::build(&store.snapshot(), &opts) {
                    Ok(mut m) => {
                        m.version = next;
                        m
                    }
                    Err(errors) => {
                        rejected(&errors, next - 1);
                        undo.revert(&store);
                        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                        return Err(text.join("; "));
                    }
                };
                let mut apply = apply.lock().await;
                match (*apply)(view).await {
                    Ok(()) => {
                        version.store(next, Ordering::Release);
                        applied(Ok(()), next);
                        if let Some(tx) = first_tx.lock().unwrap_or_else(|e| e.into_inner()).take()
                        {
                            let _ = tx.send(());
                        }
                        Ok(())
                    }
                    Err(e) => {
                        undo.revert(&store);
                        Err(format!("cannot apply the mesh configuration: {e}"))
                    }
                }
            }
        },
    ));
    tracing::info!(%url, "waiting for the mesh configuration from the controller");
    first_rx
        .await
        .map_err(|_| anyhow!("the controller stream stopped before a first view"))?;
    Ok(task)
}

/// The CA flags of `run` and `controller`.
#[derive(clap::Args, Clone, Debug)]
pub struct CaArgs {
    /// Serve the mesh's certificate authority on this address (node proxies ask it for
    /// workload certificates).
    #[arg(long, value_name = "ADDR")]
    pub mesh_ca_listen: Option<SocketAddr>,
    /// Directory of the CA's root certificate and key (made on first start).
    #[arg(long, default_value = "/var/lib/gatehouse/ca", value_name = "DIR")]
    pub mesh_ca_dir: PathBuf,
    /// With --kubernetes: the Secret (NAMESPACE/NAME) holding the CA's root (`ca.crt`,
    /// `ca.key`, `previous-roots.pem`), made on first start; every replica shares it.
    #[arg(
        long,
        default_value = "gatehouse-system/gatehouse-mesh-ca",
        value_name = "NAMESPACE/NAME"
    )]
    pub mesh_ca_secret: String,
    /// File of node bootstrap tokens, one `TOKEN NODE` per line (NODE `*`: any node).
    /// Needed with a manifest directory; with --kubernetes, node proxies may instead
    /// present their service account's token (TokenReview, audience `gatehouse-ca`).
    #[arg(long, value_name = "FILE")]
    pub mesh_node_tokens: Option<PathBuf>,
    /// With --kubernetes: the node proxies' service account (NAMESPACE/NAME); only its
    /// tokens, bound to a pod on the node they name, are admitted.
    #[arg(
        long,
        default_value = "gatehouse-system/gatehouse-node",
        value_name = "NAMESPACE/NAME"
    )]
    pub mesh_node_service_account: String,
    /// With --kubernetes: the ConfigMap (NAMESPACE/NAME) the trust bundle is published
    /// in (`root-cert.pem`), for node proxies to mount as --ca-root.
    #[arg(
        long,
        default_value = "gatehouse-system/gatehouse-mesh-root",
        value_name = "NAMESPACE/NAME"
    )]
    pub mesh_root_configmap: String,
    /// Lifetime of workload certificates (renewed at half of it).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub mesh_cert_ttl: Duration,
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// Mesh-wide names.
#[derive(clap::Args, Clone, Debug)]
pub struct MeshArgs {
    /// The SPIFFE trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Namespace whose AuthorizationPolicies and PeerAuthentications apply mesh-wide.
    #[arg(long, default_value = "gatehouse-system")]
    pub mesh_root_namespace: String,
}

impl MeshArgs {
    pub fn options(&self) -> MeshOptions {
        MeshOptions {
            trust_domain: self.trust_domain.clone(),
            root_namespace: self.mesh_root_namespace.clone(),
            ..MeshOptions::default()
        }
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    gatehouse_translate::duration::parse_duration(s)
}

/// Starts the CA server (when asked for), checking requests against the mesh of
/// `source`; its root comes from `--mesh-ca-dir`, or from the API's Secret
/// `--mesh-ca-secret` when `source` is the API.
pub async fn start_ca(args: &CaArgs, source: MeshSource) -> anyhow::Result<Option<SocketAddr>> {
    let Some(listen) = args.mesh_ca_listen else {
        return Ok(None);
    };
    let opts = args.mesh.options();
    // The CA reads the sources themselves: the API on a cluster, else a directory, or
    // the merge of every cluster a controller serves.
    let client = match &source {
        MeshSource::Kube(client) => Some(client.clone()),
        MeshSource::Merged(_, client) => client.clone(),
        MeshSource::Dir(_) => None,
        MeshSource::Controller(..) => {
            anyhow::bail!("the mesh CA reads a directory or the API, not a controller's stream")
        }
    };
    let tokens = match &args.mesh_node_tokens {
        Some(p) => NodeTokens::load(p)?,
        None if client.is_some() => NodeTokens::default(),
        None => anyhow::bail!(
            "--mesh-ca-listen with --config needs --mesh-node-tokens (who may ask for certificates)"
        ),
    };
    let auth: Arc<dyn NodeAuth> = match &client {
        None => Arc::new(tokens),
        Some(client) => Arc::new(ReviewedTokens::new(
            tokens,
            client.clone(),
            &args.mesh_node_service_account,
        )?),
    };
    let publish = client
        .clone()
        .map(|c| (c, args.mesh_root_configmap.clone()));
    let roots = match &client {
        None => RootStore::Dir(args.mesh_ca_dir.clone()),
        Some(client) => RootStore::Secret(client.clone(), args.mesh_ca_secret.clone()),
    };
    let ca = match &roots {
        RootStore::Dir(dir) => CertificateAuthority::load_or_create(dir, &opts.trust_domain)?,
        RootStore::Secret(client, secret) => {
            crate::mesh_secret::load_or_create(client, secret, &opts.trust_domain).await?
        }
    };
    let view = Arc::new(ArcSwap::from_pointee(MeshSnapshot::default()));
    let v = view.clone();
    follow(source, opts, move |m| {
        v.store(Arc::new(m));
        async { Ok(()) }
    })
    .await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let server = Arc::new(CaServer {
        ca: ArcSwap::from_pointee(ca),
        mesh: view,
        auth,
        ttl: args.mesh_cert_ttl,
    });
    ca_api::serve(server.clone(), listener)?;
    if let Some((client, configmap)) = &publish {
        // Node proxies mount it: a CA that cannot publish it is not fit to start.
        crate::mesh_bundle::publish(client, configmap, server.ca.load().bundle_pem())
            .await
            .with_context(|| format!("cannot publish the trust bundle in ConfigMap {configmap}"))?;
    }
    tokio::spawn(keep_root(
        roots,
        publish,
        server,
        args.mesh.trust_domain.clone(),
        args.mesh_cert_ttl,
    ));
    tracing::info!(%addr, "mesh CA serving");
    Ok(Some(addr))
}

/// Where the CA's root is kept.
enum RootStore {
    Dir(PathBuf),
    /// A Secret, NAMESPACE/NAME.
    Secret(kube::Client, String),
}

impl RootStore {
    /// The root, and the version to write it back at (a Secret's resourceVersion).
    async fn read(&self) -> anyhow::Result<Option<(RootMaterial, Option<String>)>> {
        match self {
            RootStore::Dir(dir) => Ok(RootMaterial::read_dir(dir)?.map(|m| (m, None))),
            RootStore::Secret(client, secret) => crate::mesh_secret::read(client, secret).await,
        }
    }

    /// Writes the root back; false if another writer came first.
    async fn write(&self, m: &RootMaterial, version: Option<String>) -> anyhow::Result<bool> {
        match self {
            RootStore::Dir(dir) => m.write_dir(dir).map(|()| true).map_err(Into::into),
            RootStore::Secret(client, secret) => {
                crate::mesh_secret::write(client, secret, m, version).await
            }
        }
    }

    fn authority(
        &self,
        m: &RootMaterial,
        trust_domain: &str,
    ) -> anyhow::Result<CertificateAuthority> {
        match self {
            RootStore::Dir(dir) => Ok(CertificateAuthority::from_dir_material(
                m,
                dir,
                trust_domain,
            )?),
            RootStore::Secret(_, secret) => crate::mesh_secret::authority(m, secret, trust_domain),
        }
    }
}

/// Keeps the running CA on the stored root: picks up a rotation (`gatehouse ca rotate`)
/// within seconds, and promotes its new root once it has been in the trust bundle for a
/// certificate lifetime (by then every proxy has renewed, and so holds the new bundle).
/// On a cluster, the trust bundle follows into the ConfigMap `publish` names.
async fn keep_root(
    roots: RootStore,
    publish: Option<(kube::Client, String)>,
    server: Arc<CaServer>,
    trust_domain: String,
    ttl: Duration,
) {
    let every = match roots {
        RootStore::Dir(_) => Duration::from_secs(1),
        RootStore::Secret(..) => Duration::from_secs(5),
    };
    let mut last: Option<RootMaterial> = None;
    let mut published = server.ca.load().bundle_pem().to_string();
    loop {
        tokio::time::sleep(every).await;
        if let Some((client, configmap)) = &publish {
            let bundle = server.ca.load().bundle_pem().to_string();
            if bundle != published {
                match crate::mesh_bundle::publish(client, configmap, &bundle).await {
                    Ok(()) => {
                        tracing::info!(%configmap, "trust bundle published");
                        published = bundle;
                    }
                    Err(e) => {
                        tracing::warn!(%configmap, error = %e, "cannot publish the trust bundle; trying again")
                    }
                }
            }
        }
        let (mut m, version) = match roots.read().await {
            Ok(Some(x)) => x,
            Ok(None) => {
                tracing::warn!(
                    "the mesh root is gone from its store; still signing with the one loaded"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the mesh root");
                continue;
            }
        };
        let promoted = m.promote_if_due(ttl);
        if promoted {
            match roots.write(&m, version).await {
                Ok(true) => tracing::info!("rotation: the new mesh root signs from now on"),
                // Another replica promoted it: read theirs next time.
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot promote the new mesh root");
                    continue;
                }
            }
        }
        if last.as_ref() == Some(&m) {
            continue;
        }
        let ca = match roots.authority(&m, &trust_domain) {
            Ok(ca) => ca,
            Err(e) => {
                tracing::error!(error = %e, "the stored mesh root does not load; still signing with the one loaded");
                continue;
            }
        };
        let current = server.ca.load();
        if current.root_pem() == ca.root_pem() && current.bundle_pem() == ca.bundle_pem() {
            // The root the CA started with (a rotation since then differs from it).
            last = Some(m);
            continue;
        }
        tracing::info!(
            rotation = m.next.is_some(),
            "mesh root reloaded; the trust bundle follows"
        );
        server.ca.store(Arc::new(ca));
        last = Some(m);
    }
}

/// `gatehouse node`.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// Directory of Kubernetes manifests (Pods, Nodes, Services, policies).
    #[arg(
        long,
        required_unless_present_any = ["kubernetes", "controller"],
        conflicts_with_all = ["kubernetes", "controller"]
    )]
    pub config: Option<PathBuf>,
    /// Take the mesh from a central controller (`http://HOST:PORT`, its
    /// --control-listen; replicas separated by commas) instead; without it, keep the
    /// last view it sent.
    #[arg(long, value_name = "URL", conflicts_with = "kubernetes")]
    pub controller: Option<String>,
    /// The cluster this node is in, as the controller lists it.
    #[arg(long, default_value = "default", requires = "controller")]
    pub cluster: String,
    /// File holding the token that admits this proxy to the controller
    /// (`--control-tokens` there).
    #[arg(long, value_name = "FILE", requires = "controller")]
    pub controller_token_file: Option<PathBuf>,
    /// The CA bundle (PEM) that vouches for an `https://` controller.
    #[arg(long, value_name = "FILE", requires = "controller")]
    pub controller_ca: Option<PathBuf>,
    /// A certificate (PEM chain, from the mesh CA) to present to an `https://`
    /// controller over mutual TLS, read again on every connection.
    #[arg(long, value_name = "FILE", requires_all = ["controller", "controller_key"])]
    pub controller_cert: Option<PathBuf>,
    /// The key of --controller-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "controller_cert")]
    pub controller_key: Option<PathBuf>,
    /// Read the mesh from the Kubernetes API instead (in-cluster, or --kubeconfig).
    #[arg(long)]
    pub kubernetes: bool,
    /// Kubeconfig file (default: KUBECONFIG, else in-cluster).
    #[arg(long, requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long, requires = "kubernetes")]
    pub context: Option<String>,
    /// This node's name (as Pods' spec.nodeName names it).
    #[arg(long)]
    pub node_name: String,
    /// Run as the sidecar of the pod with this address, instead of for the node.
    #[arg(long, value_name = "POD_IP")]
    pub sidecar_for: Option<IpAddr>,
    /// The mesh CA's address, HOST:PORT (a name is resolved on every request).
    #[arg(long, value_name = "HOST:PORT")]
    pub ca_addr: String,
    /// The mesh root certificate (PEM) that vouches for the CA.
    #[arg(long, value_name = "FILE")]
    pub ca_root: PathBuf,
    /// File holding the token that speaks for this node: a bootstrap token, or on a
    /// cluster a projected service-account token for the audience `gatehouse-ca`. Read
    /// again on every request, as the kubelet replaces it before it expires.
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// Do not install capture rules (traffic is sent to the ports by other means).
    #[arg(long)]
    pub no_capture: bool,
    /// Address the proxy's listeners bind.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Admin listener: /healthz, /ready, /metrics, /flows?last=N (flow records) and
    /// /flows/edges (who called whom, for `gatehouse ctl policy suggest`).
    #[arg(long, default_value = "127.0.0.1:15020")]
    pub admin_addr: SocketAddr,
    /// Read the HTTP of every inbound call, so that flow records (and the policies
    /// suggested from them) carry methods and paths; otherwise only calls to workloads
    /// whose policies look at HTTP are read.
    #[arg(long)]
    pub observe_http: bool,
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// Runs a node (or sidecar) proxy until SIGTERM or Ctrl-C (`stop`).
pub async fn run_node(
    args: NodeArgs,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // Tunnels allocate and free buffers of up to 1 MiB all the time: they come from
    // the heap, not from mmap, and up to 2 MiB of freed memory stays there, instead of
    // going back to the kernel and faulting in again.
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 2 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 << 20);
    }
    let mut opts = args.mesh.options();
    if args.controller.is_some() {
        // A merged set labels each cluster's endpoints: this node's cluster's are nearest.
        opts.locality.cluster = Some(args.cluster.clone());
    }
    let source = match (&args.config, &args.controller) {
        (Some(dir), _) => MeshSource::Dir(dir.clone()),
        (None, Some(url)) => MeshSource::Controller(gatehouse_control::client::Follow {
            url: url.clone(),
            token_file: args.controller_token_file.clone(),
            ca_file: args.controller_ca.clone(),
            client_cert: gatehouse_control::transport::ClientCert::of(
                args.controller_cert.clone(),
                args.controller_key.clone(),
            ),
            proxy: gatehouse_control::pb::Proxy {
                id: match args.sidecar_for {
                    Some(ip) => format!("{}/sidecar-{ip}", args.node_name),
                    None => format!("{}/node", args.node_name),
                },
                role: gatehouse_control::scope::NODE.into(),
                node: args.node_name.clone(),
                cluster: args.cluster.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
        }),
        (None, None) => MeshSource::Kube(
            crate::app::kube_client(args.kubeconfig.as_deref(), args.context.clone()).await?,
        ),
    };
    let root = std::fs::read_to_string(&args.ca_root)
        .with_context(|| format!("cannot read {}", args.ca_root.display()))?;
    let roots = gatehouse_mesh::tls::roots(&root)
        .map_err(|e| anyhow!("{}: {e}", args.ca_root.display()))?;
    std::fs::metadata(&args.token_file)
        .with_context(|| format!("cannot read {}", args.token_file.display()))?;
    let client = CaClient {
        addr: args.ca_addr.clone(),
        node: args.node_name.clone(),
        token_file: args.token_file.clone(),
        trust_domain: opts.trust_domain.clone(),
        roots: Arc::new(ArcSwap::new(roots.clone())),
    };
    let identities = Identities::new(client, roots);
    let proxy = NodeProxy::new(
        NodeConfig {
            node: args.node_name.clone(),
            role: match args.sidecar_for {
                Some(ip) => Role::Sidecar(ip),
                None => Role::Node,
            },
            ports: Ports::default(),
            bind: args.bind,
            capture: !args.no_capture,
            trust_domain: opts.trust_domain.clone(),
            observe_http: args.observe_http,
        },
        identities,
    );
    let tasks = proxy.start().await?;
    let p = proxy.clone();
    let watcher = follow(source, opts, move |m| {
        let p = p.clone();
        async move { p.set_mesh(m).await }
    })
    .await?;
    let admin = serve_admin(proxy.clone(), args.admin_addr).await?;
    println!(
        "Gatehouse mesh proxy for {} on {}: outbound :{}, tunnel :{}; admin http://{admin}/metrics",
        match args.sidecar_for {
            Some(ip) => format!("pod {ip}"),
            None => format!("node {}", args.node_name),
        },
        args.bind,
        proxy.cfg.ports.outbound,
        proxy.cfg.ports.tunnel,
    );
    stop.await;
    tracing::info!("stopping: removing capture rules");
    proxy.stop_capture();
    watcher.abort();
    for t in tasks {
        t.abort();
    }
    Ok(())
}

async fn serve_admin(proxy: Arc<NodeProxy>, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    use bytes::Bytes;
    use http_body_util::Full;
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on admin address {addr}"))?;
    let bound = l.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let proxy = proxy.clone();
                        async move {
                            let (status, body) = match req.uri().path() {
                                "/metrics" => (200, proxy.metrics_text()),
                                "/flows" => {
                                    let last = gatehouse_translate::routes::query_param(
                                        req.uri().query(),
                                        "last",
                                    )
                                    .and_then(|v| v.parse().ok())
                                    .unwrap_or(100usize);
                                    let flows = proxy.flows.last(last);
                                    (
                                        200,
                                        serde_json::to_string_pretty(&flows).unwrap_or_default(),
                                    )
                                }
                                "/flows/edges" => (
                                    200,
                                    serde_json::to_string_pretty(&proxy.flows.edges_json())
                                        .unwrap_or_default(),
                                ),
                                "/healthz" => (200, "ok\n".to_string()),
                                "/ready" => {
                                    let m = proxy.mesh.load();
                                    let missing = m
                                        .workloads
                                        .values()
                                        .filter(|w| proxy.serves(w))
                                        .filter_map(|w| {
                                            gatehouse_mesh::Identity::parse(&w.identity)
                                        })
                                        .filter(|id| proxy.identities.current(id).is_none())
                                        .count();
                                    match missing {
                                        0 => (200, format!("ready (mesh version {})\n", m.version)),
                                        n => {
                                            (503, format!("{n} identities without a certificate\n"))
                                        }
                                    }
                                }
                                _ => (404, "not found\n".to_string()),
                            };
                            let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() =
                                hyper::StatusCode::from_u16(status).unwrap_or_default();
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}
