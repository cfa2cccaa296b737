//! `gatehouse run` and `gatehouse validate`: load a manifest directory, translate it,
//! serve it, and reload it on every change, keeping the last good Snapshot on errors.

use anyhow::{anyhow, Context};
use gatehouse_model::ConfigError;
use gatehouse_proxy::{DataPlane, ProxyConfig};
use gatehouse_sources::{load_dir_partial, watch_dir};
use gatehouse_translate::{translate, translate_lenient, Snapshot, TranslateOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything `gatehouse run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config_dir: PathBuf,
    pub translate: TranslateOptions,
    pub proxy: ProxyConfig,
    pub admin_addr: SocketAddr,
    pub watch: bool,
    pub demo_backends: bool,
}

/// Loads and translates a directory into a Snapshot with `version`.
pub fn build_snapshot(
    dir: &Path,
    opts: &TranslateOptions,
    version: u64,
) -> Result<Snapshot, Vec<ConfigError>> {
    // Translate even when some files failed to parse, so every error shows at once.
    let (loaded, mut errors) = load_dir_partial(dir);
    match translate(&loaded.store, opts, version) {
        Ok(s) if errors.is_empty() => Ok(s),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// `gatehouse validate DIR`: prints every error, or a summary; Err when invalid.
pub fn validate(dir: &Path, opts: &TranslateOptions) -> anyhow::Result<String> {
    match build_snapshot(dir, opts, 1) {
        Ok(s) => {
            let mut out = format!(
                "{}: valid ({} Ingress, {} Gateway, {} HTTPRoute, {} routes)\n",
                dir.display(),
                s.summary.ingresses,
                s.summary.gateways,
                s.summary.http_routes,
                s.summary.routes
            );
            for w in &s.warnings {
                out.push_str(&format!("warning: {w}\n"));
            }
            Ok(out)
        }
        Err(errors) => {
            let text: Vec<String> = errors.iter().map(|e| format!("error: {e}")).collect();
            Err(anyhow!(
                "{}\n{} error(s) in {}",
                text.join("\n"),
                errors.len(),
                dir.display()
            ))
        }
    }
}

/// A running embedded gateway: the data plane plus its reload task.
pub struct Running {
    pub dataplane: Arc<DataPlane>,
    pub admin_addr: SocketAddr,
    version: Arc<AtomicU64>,
    reload_task: Option<tokio::task::JoinHandle<()>>,
    status_task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Version of the Snapshot being served.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Drains in-flight requests and stops.
    pub async fn shutdown(mut self) {
        if let Some(t) = self.reload_task.take() {
            t.abort();
        }
        if let Some(t) = self.status_task.take() {
            t.abort();
            let _ = t.await;
        }
        self.dataplane.shutdown().await;
    }
}

/// A new data plane with its admin listener bound; returns the admin address.
async fn data_plane(
    proxy: &ProxyConfig,
    admin: SocketAddr,
) -> anyhow::Result<(Arc<DataPlane>, SocketAddr)> {
    let dp = DataPlane::new(proxy.clone());
    let addr = gatehouse_proxy::admin::serve(dp.clone(), admin)
        .await
        .with_context(|| format!("cannot listen on admin address {admin}"))?;
    Ok((dp, addr))
}

/// Starts serving: the first load must succeed; later reloads keep the last good config.
pub async fn start(opts: RunOptions) -> anyhow::Result<Running> {
    let (dp, admin_addr) = data_plane(&opts.proxy, opts.admin_addr).await?;
    let snapshot = build_snapshot(&opts.config_dir, &opts.translate, 1).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow!(
            "invalid configuration in {}:\n{}",
            opts.config_dir.display(),
            text.join("\n")
        )
    })?;
    for w in &snapshot.warnings {
        tracing::warn!("{w}");
    }
    if opts.demo_backends {
        crate::echo::start_demo_backends(&opts.config_dir).await;
    }
    dp.apply(snapshot).await.map_err(|e| anyhow!(e))?;
    let version = Arc::new(AtomicU64::new(1));
    let reload_task = if opts.watch {
        let mut watch = watch_dir(&opts.config_dir, Duration::from_millis(15))
            .with_context(|| format!("cannot watch {}", opts.config_dir.display()))?;
        let dp = dp.clone();
        let version = version.clone();
        Some(tokio::spawn(async move {
            while watch.changed().await.is_some() {
                reload(&dp, &opts, &version).await;
            }
        }))
    } else {
        None
    };
    Ok(Running {
        dataplane: dp,
        admin_addr,
        version,
        reload_task,
        status_task: None,
    })
}

async fn reload(dp: &Arc<DataPlane>, opts: &RunOptions, version: &AtomicU64) {
    let dir = opts.config_dir.clone();
    let topts = opts.translate.clone();
    install(dp, version, move |next| build_snapshot(&dir, &topts, next)).await;
}

/// How long to wait before trying again to install a config that could not be applied
/// (a port that could not be bound, say), when nothing else changes meanwhile.
const APPLY_RETRY: Duration = Duration::from_secs(1);

/// Builds the next Snapshot off the async threads and installs it; on errors, logs each
/// one and keeps serving the last good version.
/// How an attempt to install a config ended.
#[derive(Debug, PartialEq, Eq)]
enum Installed {
    Applied,
    /// The objects are invalid; trying again without a change is pointless.
    Invalid,
    /// Valid, but the data plane could not apply it (a port in use): worth a retry.
    NotApplied,
}

async fn install<F>(dp: &Arc<DataPlane>, version: &AtomicU64, build: F) -> Installed
where
    F: FnOnce(u64) -> Result<Snapshot, Vec<ConfigError>> + Send + 'static,
{
    let started = Instant::now();
    let next = version.load(Ordering::Acquire) + 1;
    let snapshot = match tokio::task::spawn_blocking(move || build(next)).await {
        Ok(Ok(s)) => s,
        Ok(Err(errors)) => {
            dp.metrics
                .counters
                .config_rejected_total
                .fetch_add(1, Ordering::Relaxed);
            for e in &errors {
                tracing::error!("{e}");
            }
            tracing::error!(
                errors = errors.len(),
                serving = version.load(Ordering::Acquire),
                "configuration rejected; still serving the last good version"
            );
            return Installed::Invalid;
        }
        Err(e) => {
            tracing::error!(error = %e, "reload task failed");
            return Installed::NotApplied;
        }
    };
    let warnings = snapshot.warnings.clone();
    match dp.apply(snapshot).await {
        Ok(()) => {
            version.store(next, Ordering::Release);
            for w in warnings {
                tracing::warn!("{w}");
            }
            tracing::info!(
                version = next,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "configuration applied"
            );
            Installed::Applied
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration not applied; still serving the last good version");
            Installed::NotApplied
        }
    }
}

/// Settings of the Kubernetes source.
#[derive(Debug, Clone)]
pub struct KubeRunOptions {
    pub kube: gatehouse_sources::kubernetes::KubeOptions,
    pub translate: TranslateOptions,
    pub proxy: ProxyConfig,
    pub admin_addr: SocketAddr,
    /// How long to let a burst of watch events settle before translating.
    pub debounce: Duration,
    /// Write status back, as the replica elected by this Lease (None: never write).
    pub status: Option<gatehouse_sources::lease::LeaseConfig>,
}

/// Serves what the Kubernetes API holds: watchers fill the store, and every burst of
/// changes becomes one new Snapshot. Until the first full sync, `/readyz` says not
/// ready; if the API server goes away, the last good config keeps serving while the
/// watchers retry with backoff.
pub async fn start_kubernetes(
    client: kube::Client,
    opts: KubeRunOptions,
) -> anyhow::Result<Running> {
    let (dp, admin_addr) = data_plane(&opts.proxy, opts.admin_addr).await?;
    let store = gatehouse_sources::kubernetes::start(client.clone(), opts.kube.clone());
    let version = Arc::new(AtomicU64::new(0));
    // The latest applied statuses, for the status writer.
    let (statuses_tx, statuses_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let status_task = opts
        .status
        .clone()
        .map(|lease| tokio::spawn(write_status(client, lease, statuses_rx)));
    let task = {
        let dp = dp.clone();
        let version = version.clone();
        let mut changes = store.subscribe();
        // The watchers may have synced before this subscription: look at least once.
        changes.mark_changed();
        tokio::spawn(async move {
            let mut retry = false;
            loop {
                // Wait for a change, or retry a config that failed to apply for reasons
                // outside the objects (a port in use, say).
                let changed = match retry {
                    true => tokio::time::timeout(APPLY_RETRY, changes.changed())
                        .await
                        .unwrap_or(Ok(())),
                    false => changes.changed().await,
                };
                if changed.is_err() {
                    break;
                }
                // Coalesce a burst: whatever arrives while we wait is in the same copy.
                tokio::time::sleep(opts.debounce).await;
                changes.borrow_and_update();
                if !store.synced() {
                    continue;
                }
                // Only EndpointSlices changed: swap endpoints in place, no new Snapshot.
                let dirty = store.take_dirty();
                if !retry
                    && version.load(Ordering::Acquire) > 0
                    && !dirty.kinds.is_empty()
                    && dirty.kinds.iter().all(|k| *k == "EndpointSlice")
                {
                    let active = dp.current();
                    let started = Instant::now();
                    let only = (!dirty.all_services).then_some(&dirty.services);
                    let n = store.read(|s| {
                        gatehouse_translate::backends::refresh_endpoints(s, &active.snapshot, only)
                    });
                    tracing::debug!(
                        clusters = n,
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "endpoints updated in place"
                    );
                    continue;
                }
                let objects = store.snapshot();
                let topts = opts.translate.clone();
                // On a cluster, an invalid object is left out (and told so in its
                // status) rather than blocking everyone else's changes.
                let result = install(&dp, &version, move |next| {
                    let (snapshot, rejected) = translate_lenient(&objects, &topts, next);
                    for e in &rejected {
                        tracing::warn!("object left out: {e}");
                    }
                    snapshot
                })
                .await;
                retry = result == Installed::NotApplied;
                if result == Installed::Applied {
                    let _ = statuses_tx.send(Arc::new(dp.current().snapshot.statuses.clone()));
                }
            }
        })
    };
    Ok(Running {
        dataplane: dp,
        admin_addr,
        version,
        reload_task: Some(task),
        status_task,
    })
}

/// Writes the latest statuses while this replica leads; a new term writes all again.
async fn write_status(
    client: kube::Client,
    lease: gatehouse_sources::lease::LeaseConfig,
    mut statuses: tokio::sync::watch::Receiver<Arc<Vec<gatehouse_model::status::StatusUpdate>>>,
) {
    let identity = lease.identity.clone();
    let mut writer =
        gatehouse_sources::status_writer::StatusWriter::new(client.clone(), "gatehouse");
    let election = gatehouse_sources::lease::elect(client, lease);
    let mut leader = election.leader.clone();
    let _election = ElectionGuard(Some(election));
    loop {
        if *leader.borrow_and_update() {
            let latest = statuses.borrow_and_update().clone();
            let n = writer.publish(&latest).await;
            if n > 0 {
                tracing::debug!(%identity, objects = n, "status written");
            }
        } else {
            writer.forget();
        }
        tokio::select! {
            r = leader.changed() => if r.is_err() { break },
            r = statuses.changed() => if r.is_err() { break },
        }
    }
}

/// Resigns the election when the status task ends (shutdown, or aborted).
struct ElectionGuard(Option<gatehouse_sources::lease::Election>);

impl Drop for ElectionGuard {
    fn drop(&mut self) {
        if let Some(e) = self.0.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(e.resign());
            }
        }
    }
}

/// A kube client from `--kubeconfig`/`--context`, else `KUBECONFIG`, else in-cluster.
pub async fn kube_client(
    kubeconfig: Option<&Path>,
    context: Option<String>,
) -> anyhow::Result<kube::Client> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let options = KubeConfigOptions {
        context,
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await?
        }
        None if options.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await?,
    };
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
}
