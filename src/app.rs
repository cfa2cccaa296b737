//! `gatehouse run` and `gatehouse validate`: load a manifest directory, translate it,
//! serve it, and reload it on every change, keeping the last good Snapshot on errors.

pub use crate::cluster::{kube_client, start_kubernetes, Distribute, KubeRunOptions};
use anyhow::{anyhow, Context};
use gatehouse_model::ConfigError;
use gatehouse_proxy::generated::Generated;
use gatehouse_proxy::{DataPlane, ProxyConfig};
use gatehouse_sources::{load_dir_partial, watch_dir};
use gatehouse_translate::{translate_after, Snapshot, TranslateOptions};
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
    /// Serve every good version of the directory to remote proxies as well.
    pub distributor: Option<Arc<gatehouse_control::server::Distributor>>,
}

/// Loads and translates a directory into a Snapshot with `version`.
pub fn build_snapshot(
    dir: &Path,
    opts: &TranslateOptions,
    version: u64,
) -> Result<Snapshot, Vec<ConfigError>> {
    build_snapshot_after(dir, opts, version, None, None, None)
}

/// `build_snapshot`, with the objects the adaptive controls made, carrying over the
/// cluster state of `prev` (the Snapshot served); a valid directory's objects also go
/// to `distributor`'s remote proxies.
fn build_snapshot_after(
    dir: &Path,
    opts: &TranslateOptions,
    version: u64,
    prev: Option<&Snapshot>,
    generated: Option<&Generated>,
    distributor: Option<&gatehouse_control::server::Distributor>,
) -> Result<Snapshot, Vec<ConfigError>> {
    let (snapshot, store) = build_from_dir(
        dir,
        |store| {
            if let Some(g) = generated {
                g.add_to(store);
            }
        },
        // The store is persistent: its clone shares the objects.
        |store| translate_after(store, opts, version, prev).map(|s| (s, store.clone())),
    )?;
    if let Some(d) = distributor {
        let changed = d.sync(&store);
        tracing::info!(
            changed,
            resources = d.len(),
            "remote proxies' objects updated"
        );
    }
    Ok(snapshot)
}

/// Loads `dir`, lets `prepare` add to its objects, and builds from them. The build runs
/// even when some files failed to parse, so every error shows at once.
pub(crate) fn build_from_dir<T>(
    dir: &Path,
    prepare: impl FnOnce(&mut gatehouse_model::ObjectStore),
    build: impl FnOnce(&gatehouse_model::ObjectStore) -> Result<T, Vec<ConfigError>>,
) -> Result<T, Vec<ConfigError>> {
    let (mut loaded, mut errors) = load_dir_partial(dir);
    prepare(&mut loaded.store);
    match build(&loaded.store) {
        Ok(t) if errors.is_empty() => Ok(t),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// The error for a directory whose first load is invalid, listing every error.
pub(crate) fn invalid_config(dir: &Path, errors: &[ConfigError]) -> anyhow::Error {
    let text: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    anyhow!(
        "invalid configuration in {}:\n{}",
        dir.display(),
        text.join("\n")
    )
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
    pub(crate) version: Arc<AtomicU64>,
    pub(crate) reload_task: Option<tokio::task::JoinHandle<()>>,
    pub(crate) status_task: Option<tokio::task::JoinHandle<()>>,
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

/// Worker threads for data planes, when the process runs with more than one (set once,
/// by `main`); tests and single-worker runs serve on the caller's runtime.
pub static WORKERS: std::sync::OnceLock<Arc<gatehouse_proxy::workers::Workers>> =
    std::sync::OnceLock::new();

/// A new data plane with its admin listener bound; returns the admin address.
pub(crate) async fn data_plane(
    proxy: &ProxyConfig,
    admin: SocketAddr,
) -> anyhow::Result<(Arc<DataPlane>, SocketAddr)> {
    let open =
        |p: &Option<PathBuf>| -> anyhow::Result<Option<gatehouse_proxy::security_log::LogFile>> {
            p.as_deref()
                .map(|p| {
                    gatehouse_proxy::security_log::LogFile::open(p)
                        .with_context(|| format!("cannot open WAF log {}", p.display()))
                })
                .transpose()
        };
    let access = proxy
        .access_log
        .as_deref()
        .map(|p| {
            gatehouse_proxy::access_log::AccessLog::open(
                p,
                proxy.access_log_sample,
                &proxy.access_log_fields,
            )
            .map(Arc::new)
            .map_err(|e| anyhow::anyhow!("cannot open the access log (--access-log): {e}"))
        })
        .transpose()?;
    let logs = gatehouse_proxy::security_log::SecurityLogs {
        error: open(&proxy.waf_log)?,
        audit: open(&proxy.waf_audit_log)?,
        events: open(&proxy.security_log)?,
        access,
    };
    let dp = DataPlane::with_workers_and_logs(proxy.clone(), WORKERS.get().cloned(), logs);
    if proxy.tracing {
        let tracer =
            gatehouse_proxy::trace::Tracer::new(proxy.trace_sample, proxy.otlp_endpoint.as_deref())
                .map_err(|e| anyhow!(e))?;
        let t = tracer.clone();
        let metrics: gatehouse_proxy::metrics::ExtraMetrics = Arc::new(move |out: &mut String| {
            use std::sync::atomic::Ordering::Relaxed;
            for (name, help, v) in [
                (
                    "gatehouse_trace_spans_exported_total",
                    "Spans sent to the OTLP endpoint.",
                    &t.exported,
                ),
                (
                    "gatehouse_trace_spans_dropped_total",
                    "Spans dropped because the export queue was full.",
                    &t.dropped,
                ),
                (
                    "gatehouse_trace_spans_failed_total",
                    "Spans the OTLP endpoint did not take.",
                    &t.export_errors,
                ),
            ] {
                out.push_str(&format!(
                    "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                    v.load(Relaxed)
                ));
            }
        });
        dp.metrics
            .extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(metrics);
        let _ = dp.tracer.set(tracer);
    }
    if let Some(tick) = proxy.analytics_tick {
        crate::analytics::start(
            &dp,
            &crate::analytics::AnalyticsOptions {
                tick,
                warm_up: proxy.analytics_warm_up,
                flows_from: proxy.analytics_flows_from.clone(),
            },
        );
    }
    let addr = gatehouse_proxy::admin::serve(dp.clone(), admin)
        .await
        .with_context(|| format!("cannot listen on admin address {admin}"))?;
    Ok((dp, addr))
}

/// Starts serving: the first load must succeed; later reloads keep the last good config.
pub async fn start(opts: RunOptions) -> anyhow::Result<Running> {
    let (dp, admin_addr) = data_plane(&opts.proxy, opts.admin_addr).await?;
    let snapshot = build_snapshot_after(
        &opts.config_dir,
        &opts.translate,
        1,
        None,
        None,
        opts.distributor.as_deref(),
    )
    .map_err(|errors| invalid_config(&opts.config_dir, &errors))?;
    for w in &snapshot.warnings {
        tracing::warn!("{w}");
    }
    if opts.demo_backends {
        crate::echo::start_demo_backends(&opts.config_dir).await;
    }
    dp.apply(snapshot).await.map_err(|e| anyhow!(e))?;
    dp.start_controls();
    let version = Arc::new(AtomicU64::new(1));
    // Reload on a change of the directory (when watched) or of the objects the
    // adaptive controls make.
    let mut watch = match opts.watch {
        true => Some(
            watch_dir(&opts.config_dir, Duration::from_millis(15))
                .with_context(|| format!("cannot watch {}", opts.config_dir.display()))?,
        ),
        false => None,
    };
    let reload_task = {
        let dp = dp.clone();
        let version = version.clone();
        let mut generated = dp.generated.subscribe();
        Some(tokio::spawn(async move {
            loop {
                let dir_changed = async {
                    match watch.as_mut() {
                        Some(w) => w.changed().await.is_some(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    more = dir_changed => if !more { break },
                    r = generated.changed() => if r.is_err() { break },
                }
                reload(&dp, &opts, &version).await;
            }
        }))
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
    let prev = dp.current().snapshot.clone();
    let generated = dp.generated.clone();
    let distributor = opts.distributor.clone();
    install(dp, version, move |next| {
        build_snapshot_after(
            &dir,
            &topts,
            next,
            Some(&prev),
            Some(&generated),
            distributor.as_deref(),
        )
    })
    .await;
}

/// How long to wait before trying again to install a config that could not be applied
/// (a port that could not be bound, say), when nothing else changes meanwhile.
pub(crate) const APPLY_RETRY: Duration = Duration::from_secs(1);

/// How an attempt to install a config ended (with the reason, when it failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    Applied,
    /// The objects are invalid; trying again without a change is pointless.
    Invalid(String),
    /// Valid, but the data plane could not apply it (a port in use): worth a retry.
    NotApplied(String),
}

/// Builds the next Snapshot off the async threads and installs it; on errors, logs each
/// one and keeps serving the last good version.
pub(crate) async fn install<F>(dp: &Arc<DataPlane>, version: &AtomicU64, build: F) -> Installed
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
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Installed::Invalid(text.join("; "));
        }
        Err(e) => {
            tracing::error!(error = %e, "reload task failed");
            return Installed::NotApplied(format!("reload task failed: {e}"));
        }
    };
    apply_built(dp, version, snapshot, started).await
}

/// Installs a Snapshot built (with version `version + 1`) since `started`.
pub(crate) async fn apply_built(
    dp: &Arc<DataPlane>,
    version: &AtomicU64,
    snapshot: Snapshot,
    started: Instant,
) -> Installed {
    let next = snapshot.version;
    // Warnings are logged once, when they first appear.
    let warnings: Vec<String> = {
        let current = dp.current();
        let known: std::collections::HashSet<&String> = current.snapshot.warnings.iter().collect();
        snapshot
            .warnings
            .iter()
            .filter(|w| !known.contains(w))
            .cloned()
            .collect()
    };
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
            Installed::NotApplied(e.to_string())
        }
    }
}
