//! Serving from the Kubernetes API (`gatehouse run --kubernetes`): watchers fill the
//! store, a sync loop turns changes into Snapshots (in place for endpoints, scoped to
//! the hosts touched for route changes, full otherwise), and the elected replica
//! writes status back. Objects the adaptive controls make are written to the API
//! server (`object_writer`) and come back through the watchers.

use crate::app::{apply_built, data_plane, install, Installed, Running, APPLY_RETRY};
use anyhow::Context;
use gatehouse_model::status::Statuses;
use gatehouse_proxy::{DataPlane, ProxyConfig};
use gatehouse_sources::kubernetes::{Dirty, KubeStore};
use gatehouse_translate::backends::refresh_endpoints;
use gatehouse_translate::incremental::{plan, translate_scoped};
use gatehouse_translate::{translate_lenient, TranslateOptions};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of the Kubernetes source.
#[derive(Debug, Clone)]
pub struct KubeRunOptions {
    pub kube: gatehouse_sources::kubernetes::KubeOptions,
    pub translate: TranslateOptions,
    pub proxy: ProxyConfig,
    pub admin_addr: SocketAddr,
    /// The least time between two passes over the store's changes: watch events within
    /// it coalesce into one pass. The first change after a quiet spell is not held
    /// back; while changes pour in, the window doubles, up to 100 ms.
    pub debounce: Duration,
    /// Write status back, as the replica elected by this Lease (None: never write).
    pub status: Option<gatehouse_sources::lease::LeaseConfig>,
    /// Serve what the API holds to remote proxies as well.
    pub distributor: Option<Distribute>,
}

/// Serving remote proxies from the API: its objects alone, or merged with other
/// clusters'.
#[derive(Debug, Clone)]
pub struct Distribute {
    pub to: Arc<gatehouse_control::server::Distributor>,
    /// This cluster's name, when merged.
    pub cluster: String,
    /// The other clusters merged with this one (none: serve this one's objects as is).
    pub merge_with: Vec<(String, crate::multicluster::Source)>,
    /// Fed the merge, for the mesh CA's view.
    pub mesh: Option<gatehouse_sources::kubernetes::KubeStore>,
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
    // Blocks made by adaptive blocking go to the API server; the watchers bring them
    // back into the store of every replica.
    dp.start_controls();
    let generated = Arc::downgrade(&dp.generated);
    tokio::spawn(gatehouse_sources::object_writer::mirror(
        client.clone(),
        dp.generated.subscribe(),
        move || generated.upgrade().map(|g| g.list()).unwrap_or_default(),
    ));
    if let Some(d) = opts.distributor.clone() {
        if d.merge_with.is_empty() {
            tokio::spawn(distribute(store.clone(), d.to, opts.debounce));
        } else {
            let mut clusters = vec![(d.cluster, crate::multicluster::Source::Api(store.clone()))];
            clusters.extend(d.merge_with);
            crate::multicluster::follow(d.to, clusters, d.mesh)?;
        }
    }
    let version = Arc::new(AtomicU64::new(0));
    // The latest applied statuses, for the status writer.
    let (statuses_tx, statuses_rx) = tokio::sync::watch::channel(Statuses::new());
    let status_task = opts
        .status
        .clone()
        .map(|lease| tokio::spawn(write_status(client, lease, statuses_rx)));
    let task = {
        let dp = dp.clone();
        let version = version.clone();
        let passes = tokio::sync::watch::channel(None).0;
        let serve = Serve {
            translate: opts.translate.clone(),
            debounce: opts.debounce,
            statuses: statuses_tx,
            passes,
        };
        tokio::spawn(sync_loop(store, dp, version, serve))
    };
    Ok(Running {
        dataplane: dp,
        admin_addr,
        version,
        reload_task: Some(task),
        status_task,
    })
}

/// Keeps the remote proxies' objects those of the store: after each burst of changes
/// (once every kind has synced), unchanged objects cost a pointer comparison and
/// changed ones are serialized once for every proxy.
async fn distribute(
    store: KubeStore,
    distributor: Arc<gatehouse_control::server::Distributor>,
    debounce: Duration,
) {
    let mut changes = store.subscribe();
    changes.mark_changed();
    while changes.changed().await.is_ok() {
        tokio::time::sleep(debounce).await;
        changes.borrow_and_update();
        if !store.synced() {
            continue;
        }
        let started = Instant::now();
        let changed = store.read(|s| distributor.sync(s));
        if changed > 0 {
            tracing::debug!(
                changed,
                elapsed_us = started.elapsed().as_micros() as u64,
                "remote proxies' objects updated"
            );
        }
    }
}

/// How long changes must pause after an incremental update before a full translation
/// brings what only it computes (Gateway attached-route counts, totals, unused clusters
/// dropped) up to date; and the most it waits while changes keep coming.
const RECONCILE_QUIET: Duration = Duration::from_secs(1);
const RECONCILE_MAX: Duration = Duration::from_secs(30);

/// The longest a change waits while a burst of changes goes on.
const MAX_WINDOW: Duration = Duration::from_millis(100);
/// More changes than this since the last pass make a burst.
const BURST: u64 = 8;

/// The end of one pass of the sync loop: the store's change count it covered, and how
/// installing what it saw went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub seen: u64,
    pub outcome: Installed,
}

/// How the sync loop serves a store.
pub(crate) struct Serve {
    pub translate: TranslateOptions,
    /// See [`KubeRunOptions::debounce`].
    pub debounce: Duration,
    /// The latest applied statuses, for a status writer.
    pub statuses: tokio::sync::watch::Sender<Statuses>,
    /// Each pass's end, for a source that answers for what it fed (a controller's
    /// stream acknowledges what was served).
    pub passes: tokio::sync::watch::Sender<Option<Pass>>,
}

/// Reports a pass when it ends, however it ends.
struct Report<'a> {
    passes: &'a tokio::sync::watch::Sender<Option<Pass>>,
    seen: u64,
    outcome: Option<Installed>,
}

impl Drop for Report<'_> {
    fn drop(&mut self) {
        if let Some(outcome) = self.outcome.take() {
            self.passes.send_replace(Some(Pass {
                seen: self.seen,
                outcome,
            }));
        }
    }
}

/// Turns store changes into Snapshots: endpoint-only changes swap endpoints in place;
/// route changes recompile only the hosts they touch; anything else (and, once things
/// settle, a reconciling pass after incremental updates) is a full translation.
pub(crate) async fn sync_loop(
    store: KubeStore,
    dp: Arc<DataPlane>,
    version: Arc<AtomicU64>,
    opts: Serve,
) {
    let statuses_tx = &opts.statuses;
    let mut changes = store.subscribe();
    // The watchers may have synced before this subscription: look at least once.
    changes.mark_changed();
    // Whether the next pass must translate everything, and when a reconciling full
    // pass is due after incremental ones.
    let mut need_full = true;
    let mut retry = false;
    let mut incremental_since: Option<Instant> = None;
    let mut last_change = Instant::now();
    let mut last_pass = Instant::now();
    let mut window = opts.debounce;
    // The change counter as of the last pass.
    let mut seen = 0u64;
    loop {
        // Wait for a change, or retry a config that failed to apply for reasons outside
        // the objects (a port in use, say), or reconcile after incremental updates.
        let deadline = match (retry, incremental_since) {
            (true, _) => Some(Instant::now() + APPLY_RETRY),
            (false, Some(since)) => {
                Some((last_change + RECONCILE_QUIET).min(since + RECONCILE_MAX))
            }
            (false, None) => None,
        };
        let woke = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), changes.changed()).await,
            None => Ok(changes.changed().await),
        };
        match woke {
            Ok(Err(_)) => break,
            Ok(Ok(())) => {
                last_change = Instant::now();
                // Passes are at least a window apart, so what arrives meanwhile
                // coalesces; the first change after a quiet spell goes at once. The
                // window doubles (up to MAX_WINDOW) while changes pour in faster than
                // BURST per pass, and shrinks back once they come a few at a time.
                let pending = changes.borrow().saturating_sub(seen);
                window = match pending > BURST {
                    true => (window * 2).min(MAX_WINDOW.max(opts.debounce)),
                    false => opts.debounce,
                };
                let since = last_pass.elapsed();
                if since < window {
                    tokio::time::sleep(window - since).await;
                }
                seen = *changes.borrow_and_update();
            }
            // Time to retry or reconcile.
            Err(_) => need_full = true,
        }
        if !store.synced() {
            continue;
        }
        let mut report = Report {
            passes: &opts.passes,
            seen,
            outcome: Some(Installed::Applied),
        };
        let mut dirty = store.take_dirty();
        // Kinds only remote node proxies read (the store of a controller that serves
        // them holds those too) change nothing here.
        let translated = |k: &str| {
            gatehouse_sources::kubernetes::WATCHED
                .iter()
                .any(|w| w.kind == k)
        };
        dirty.kinds.retain(|k| translated(k));
        dirty.objects.retain(|key, _| translated(key.kind));
        let since = dirty.since;
        // Time from the first change of this pass reaching the store to it being served.
        let served = |dp: &DataPlane| {
            if let Some(t) = since {
                dp.metrics.propagation.record(t.elapsed());
            }
        };
        last_pass = Instant::now();
        need_full |= dirty.relisted || retry || version.load(Ordering::Acquire) == 0;
        if !need_full && dirty.kinds.is_empty() {
            continue;
        }
        if !need_full
            && !dirty.kinds.is_empty()
            && dirty.kinds.iter().all(|k| *k == "EndpointSlice")
        {
            update_endpoints(&store, &dp, &dirty);
            served(&dp);
            continue;
        }
        if !need_full && !dirty.objects.is_empty() {
            match incremental(&store, &dp, &version, &opts.translate, dirty).await {
                Ok(()) => {
                    served(&dp);
                    incremental_since.get_or_insert_with(Instant::now);
                    let _ = statuses_tx.send(dp.current().snapshot.statuses.clone());
                    continue;
                }
                Err(why) => tracing::debug!(%why, "full translation"),
            }
        }
        let objects = store.snapshot();
        let topts = opts.translate.clone();
        let prev = dp.current().snapshot.clone();
        // On a cluster, an invalid object is left out (and told so in its status)
        // rather than blocking everyone else's changes.
        let result = install(&dp, &version, move |next| {
            let (snapshot, rejected) = translate_lenient(&objects, &topts, next, Some(&prev));
            for e in &rejected {
                tracing::warn!("object left out: {e}");
            }
            snapshot
        })
        .await;
        retry = matches!(result, Installed::NotApplied(_));
        // Until a full pass succeeds, the Snapshot served does not stand for a known
        // version of the store, so nothing can be applied on top of it.
        need_full = result != Installed::Applied;
        report.outcome = Some(result.clone());
        if result == Installed::Applied {
            served(&dp);
            dp.metrics
                .counters
                .config_full_total
                .fetch_add(1, Ordering::Relaxed);
            incremental_since = None;
            let _ = statuses_tx.send(dp.current().snapshot.statuses.clone());
        }
    }
}

/// Only EndpointSlices changed: swap the endpoints of the affected clusters in place.
fn update_endpoints(store: &KubeStore, dp: &DataPlane, dirty: &Dirty) {
    let active = dp.current();
    let started = Instant::now();
    let only = (!dirty.all_services).then_some(&dirty.services);
    let n = store.read(|s| refresh_endpoints(s, &active.snapshot, only));
    dp.metrics
        .counters
        .endpoint_updates_total
        .fetch_add(1, Ordering::Relaxed);
    tracing::debug!(
        clusters = n,
        elapsed_us = started.elapsed().as_micros() as u64,
        "endpoints updated in place"
    );
}

/// Recompiles only the hosts the changes touch and installs the result; `Err` says why
/// a full translation is needed instead.
async fn incremental(
    store: &KubeStore,
    dp: &Arc<DataPlane>,
    version: &AtomicU64,
    topts: &TranslateOptions,
    dirty: Dirty,
) -> Result<(), String> {
    let started = Instant::now();
    let prev = dp.current().snapshot.clone();
    let next = version.load(Ordering::Acquire) + 1;
    let (store2, topts) = (store.clone(), topts.clone());
    let snapshot = tokio::task::spawn_blocking(move || {
        // In place under the store's lock: a scoped pass is short, and a copy of a
        // large store would cost more than the pass.
        store2.read(|s| {
            let scope = plan(s, &dirty.objects)?;
            if scope.hosts.is_empty() {
                // No route uses what changed (a Service nobody routes to yet, say):
                // at most some endpoints to refresh.
                refresh_endpoints(s, &prev, Some(&dirty.services));
                return Ok(None);
            }
            let snapshot = translate_scoped(s, &topts, &prev, &scope, next)?;
            // Reused clusters whose slices changed in the same burst.
            refresh_endpoints(s, &snapshot, Some(&dirty.services));
            Ok::<_, String>(Some((snapshot, scope.hosts.len())))
        })
    })
    .await
    .map_err(|e| format!("incremental task failed: {e}"))?;
    let Some((snapshot, hosts)) = snapshot? else {
        return Ok(());
    };
    match apply_built(dp, version, snapshot, started).await {
        Installed::Applied => {
            dp.metrics
                .counters
                .config_incremental_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                hosts,
                elapsed_us = started.elapsed().as_micros() as u64,
                "hosts recompiled"
            );
            Ok(())
        }
        other => Err(format!("incremental Snapshot not applied: {other:?}")),
    }
}

/// Writes the latest statuses while this replica leads; a new term writes all again.
async fn write_status(
    client: kube::Client,
    lease: gatehouse_sources::lease::LeaseConfig,
    mut statuses: tokio::sync::watch::Receiver<Statuses>,
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
