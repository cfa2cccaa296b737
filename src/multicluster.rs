//! A controller that serves several clusters as one set: manifest directories
//! (`--cluster-config NAME=DIR`) and clusters' APIs (`--cluster-context NAME=CONTEXT`
//! of the kubeconfig), beside its own `--config` or API as `--cluster`. Each is
//! watched; on a change it is read again and all are merged
//! (`gatehouse_control::merge`: a Service several clusters define gets every
//! cluster's endpoints; other conflicts go to the first cluster listed) and served. A
//! directory that fails to parse keeps its last good objects in the set.

use anyhow::Context;
use gatehouse_control::merge::{merge, ClusterObjects};
use gatehouse_control::server::Distributor;
use gatehouse_model::ObjectStore;
use gatehouse_sources::kubernetes::{KubeStore, ALL_WATCHED};
use gatehouse_sources::{load_dir_partial, watch_dir};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Parses `NAME=DIR`.
pub fn parse_cluster_config(s: &str) -> Result<(String, PathBuf), String> {
    named(s, "DIR").map(|(name, dir)| (name, PathBuf::from(dir)))
}

/// Parses `NAME=CONTEXT`.
pub fn parse_cluster_context(s: &str) -> Result<(String, String), String> {
    named(s, "CONTEXT")
}

fn named(s: &str, what: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, v)) if !name.is_empty() && !v.is_empty() && !name.contains('/') => {
            Ok((name.to_string(), v.to_string()))
        }
        _ => Err(format!("{s:?}: expected NAME={what}")),
    }
}

/// Loads `dir`; Err lists its errors.
fn load(name: &str, dir: &std::path::Path) -> Result<ObjectStore, String> {
    let (loaded, errors) = load_dir_partial(dir);
    if errors.is_empty() {
        return Ok(loaded.store);
    }
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Err(format!(
        "cluster {name} ({}): {}",
        dir.display(),
        text.join("; ")
    ))
}

/// Merges what is held and serves it (and feeds it to `mesh`, the mesh CA's view).
fn publish(
    distributor: &Distributor,
    names: &[String],
    stores: &[ObjectStore],
    mesh: Option<&KubeStore>,
) {
    let clusters: Vec<ClusterObjects<'_>> = names
        .iter()
        .zip(stores)
        .map(|(name, store)| ClusterObjects { name, store })
        .collect();
    let merged = merge(&clusters);
    for c in &merged.conflicts {
        tracing::warn!("{c}");
    }
    let changed = distributor.sync(&merged.store);
    if let Some(mesh) = mesh {
        mesh.replace(merged.store.clone());
    }
    distributor.set_clusters(merged.served.clone());
    tracing::info!(changed, clusters = ?merged.served, "clusters merged for remote proxies");
}

/// Where one cluster's objects come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A manifest directory, watched.
    Dir(PathBuf),
    /// A cluster's API (a kubeconfig context), watched.
    Api(KubeStore),
}

/// How long the first merge waits for every API cluster's first full picture before
/// it serves without those that have none yet.
const FIRST_SYNC: Duration = Duration::from_secs(30);

/// Starts watching `context` of the kubeconfig (`--kubeconfig`, else the default) for
/// every kind gateways and node proxies read.
pub async fn api_cluster(
    kubeconfig: Option<&std::path::Path>,
    context: &str,
) -> anyhow::Result<Source> {
    let client = crate::cluster::kube_client(kubeconfig, Some(context.to_string()))
        .await
        .with_context(|| format!("cluster context {context:?}"))?;
    let opts = gatehouse_sources::kubernetes::KubeOptions {
        namespace: None,
        kinds: ALL_WATCHED.as_slice(),
    };
    Ok(Source::Api(gatehouse_sources::kubernetes::start(
        client, opts,
    )))
}

/// Tells `tx` (with `i`) each time `store` settles after changes, once it has synced.
fn notify_api(store: KubeStore, i: usize, tx: tokio::sync::mpsc::UnboundedSender<usize>) {
    tokio::spawn(async move {
        let mut changes = store.subscribe();
        changes.mark_changed();
        while changes.changed().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(15)).await;
            changes.borrow_and_update();
            if store.synced() && tx.send(i).is_err() {
                return;
            }
        }
    });
}

/// Loads every directory (each must be valid at start), waits for the API clusters'
/// first full pictures, serves the merge (and feeds it to `mesh`, if given), and
/// follows changes from a task.
pub fn follow(
    distributor: Arc<Distributor>,
    clusters: Vec<(String, Source)>,
    mesh: Option<KubeStore>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let names: Vec<String> = clusters.iter().map(|(n, _)| n.clone()).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let mut stores = Vec::new();
    let mut unsynced = std::collections::BTreeSet::new();
    for (i, (name, source)) in clusters.iter().enumerate() {
        match source {
            Source::Dir(dir) => {
                stores.push(load(name, dir).map_err(anyhow::Error::msg)?);
                let mut w = watch_dir(dir, Duration::from_millis(15))
                    .with_context(|| format!("cannot watch {}", dir.display()))?;
                let tx = tx.clone();
                tokio::spawn(async move {
                    while w.changed().await.is_some() {
                        if tx.send(i).is_err() {
                            return;
                        }
                    }
                });
            }
            Source::Api(store) => {
                stores.push(ObjectStore::default());
                unsynced.insert(i);
                notify_api(store.clone(), i, tx.clone());
            }
        }
    }
    let refresh = move |stores: &mut Vec<ObjectStore>, j: usize| {
        let (name, source) = &clusters[j];
        match source {
            Source::Dir(dir) => match load(name, dir) {
                Ok(store) => stores[j] = store,
                Err(e) => tracing::error!("{e}; its last good objects stay"),
            },
            Source::Api(store) => stores[j] = store.snapshot(),
        }
    };
    Ok(tokio::spawn(async move {
        // Proxies are not answered before the first merge; it waits for every API
        // cluster, lest proxies be told to drop a cluster that is merely slow to list.
        let deadline = tokio::time::Instant::now() + FIRST_SYNC;
        while !unsynced.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(j)) => {
                    refresh(&mut stores, j);
                    unsynced.remove(&j);
                }
                Ok(None) => return,
                Err(_) => {
                    let late: Vec<&str> = unsynced.iter().map(|j| names[*j].as_str()).collect();
                    tracing::error!(clusters = ?late, "these clusters' APIs have not been listed yet; serving without them until they are");
                    break;
                }
            }
        }
        publish(&distributor, &names, &stores, mesh.as_ref());
        while let Some(i) = rx.recv().await {
            let mut dirty = std::collections::BTreeSet::from([i]);
            while let Ok(j) = rx.try_recv() {
                dirty.insert(j);
            }
            for j in dirty {
                refresh(&mut stores, j);
            }
            publish(&distributor, &names, &stores, mesh.as_ref());
        }
    }))
}
