//! A controller that serves several clusters' manifest directories as one set
//! (`--cluster-config NAME=DIR`, beside its own `--config` as `--cluster`): each
//! directory is watched; on a change it is loaded again and all are merged
//! (`gatehouse_control::merge`: a Service several clusters define gets every
//! cluster's endpoints; other conflicts go to the first cluster listed) and served. A
//! directory that fails to parse keeps its last good objects in the set.

use anyhow::Context;
use gatehouse_control::merge::{merge, ClusterObjects};
use gatehouse_control::server::Distributor;
use gatehouse_model::ObjectStore;
use gatehouse_sources::{load_dir_partial, watch_dir};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Parses `NAME=DIR`.
pub fn parse_cluster_config(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() && !name.contains('/') => {
            Ok((name.to_string(), PathBuf::from(dir)))
        }
        _ => Err(format!("{s:?}: expected NAME=DIR")),
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

/// Merges what is held and serves it.
fn publish(distributor: &Distributor, names: &[String], stores: &[ObjectStore]) {
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
    distributor.set_clusters(merged.served.clone());
    tracing::info!(changed, clusters = ?merged.served, "clusters merged for remote proxies");
}

/// Loads every cluster (each must be valid at start), serves the merge, and follows
/// changes from a task.
pub fn follow(
    distributor: Arc<Distributor>,
    clusters: Vec<(String, PathBuf)>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let names: Vec<String> = clusters.iter().map(|(n, _)| n.clone()).collect();
    let mut stores = Vec::new();
    for (name, dir) in &clusters {
        stores.push(load(name, dir).map_err(anyhow::Error::msg)?);
    }
    publish(&distributor, &names, &stores);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    for (i, (_, dir)) in clusters.iter().enumerate() {
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
    Ok(tokio::spawn(async move {
        while let Some(i) = rx.recv().await {
            let mut dirty = vec![i];
            while let Ok(j) = rx.try_recv() {
                dirty.push(j);
            }
            for j in dirty {
                let (name, dir) = &clusters[j];
                match load(name, dir) {
                    Ok(store) => stores[j] = store,
                    Err(e) => tracing::error!("{e}; its last good objects stay"),
                }
            }
            publish(&distributor, &names, &stores);
        }
    }))
}
