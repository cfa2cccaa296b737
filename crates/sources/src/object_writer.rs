//! Writes the objects the proxy's adaptive controls make (`SourceBlock`s) to the API
//! server, so that on a cluster a block is an object like any other: every replica's
//! watchers bring it into their store and enforce it, `kubectl get sourceblocks` lists
//! it, and `kubectl delete` lifts it. A block the proxy drops (expired, or lifted
//! through the admin API) is deleted. An object of the same name written by hand is
//! never touched, and a block another replica made longer is neither shortened nor
//! deleted. Writes that fail are tried again on the next change, or within `RETRY`.

use gatehouse_model::policy::SourceBlock;
use gatehouse_model::{Object, ObjectKey, StoredObject};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

/// Whether an object carries the label of the objects the adaptive controls make.
fn made_by_us(o: &SourceBlock) -> bool {
    o.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(gatehouse_model::policy::MADE_BY_LABEL))
        .is_some()
}

/// Whether block `a` ends later than `b` (no end is the latest).
fn later(
    a: &gatehouse_model::policy::SourceBlockSpec,
    b: &gatehouse_model::policy::SourceBlockSpec,
) -> bool {
    let end = |s: &gatehouse_model::policy::SourceBlockSpec| {
        s.expires_at.as_deref().map_or(i64::MAX, |t| {
            t.parse::<jiff::Timestamp>()
                .map_or(0, |t| t.as_millisecond())
        })
    };
    end(a) > end(b)
}

/// Writes `block` over an object of the same name: never over one written by hand, and
/// never making a block end sooner (another replica may have made it longer).
async fn update(api: &Api<SourceBlock>, name: &str, block: &SourceBlock) -> kube::Result<()> {
    let Some(current) = api.get_opt(name).await? else {
        return api.create(&PostParams::default(), block).await.map(|_| ());
    };
    if !made_by_us(&current) {
        tracing::warn!(
            name,
            "a SourceBlock of this name was written by hand; left as it is"
        );
        return Ok(());
    }
    if later(&current.spec, &block.spec) {
        return Ok(());
    }
    let patch = serde_json::json!({"spec": block.spec});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// How soon a failed write is tried again when nothing else changes.
pub const RETRY: Duration = Duration::from_secs(5);

/// Keeps the API server's `SourceBlock`s in step with `current()`, waking on every
/// change `changes` announces, until its sender is dropped.
pub async fn mirror<F>(client: Client, mut changes: watch::Receiver<u64>, current: F)
where
    F: Fn() -> Vec<StoredObject> + Send + 'static,
{
    // What the API server holds as last written, by object.
    let mut written: BTreeMap<ObjectKey, SourceBlock> = BTreeMap::new();
    loop {
        let want: BTreeMap<ObjectKey, SourceBlock> = current()
            .into_iter()
            .filter_map(|o| {
                let key = o.key();
                match o.object {
                    Object::SourceBlock(b) => Some((key, b)),
                    _ => None,
                }
            })
            .collect();
        let mut failed = false;
        for (key, block) in &want {
            if written.get(key).is_some_and(|w| w.spec == block.spec) {
                continue;
            }
            let api: Api<SourceBlock> = Api::namespaced(
                client.clone(),
                key.namespace.as_deref().unwrap_or("default"),
            );
            let result = match api.create(&PostParams::default(), block).await {
                Err(kube::Error::Api(e)) if e.code == 409 => update(&api, &key.name, block).await,
                r => r.map(|_| ()),
            };
            match result {
                Ok(()) => {
                    tracing::info!(object = %key, "written");
                    written.insert(key.clone(), block.clone());
                }
                Err(e) => {
                    tracing::warn!(object = %key, error = %e, "cannot write; will retry");
                    failed = true;
                }
            }
        }
        let gone: Vec<ObjectKey> = written
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            let api: Api<SourceBlock> = Api::namespaced(
                client.clone(),
                key.namespace.as_deref().unwrap_or("default"),
            );
            // Only a block this writer made, and that nobody has made longer since.
            let theirs = match api.get_opt(&key.name).await {
                Ok(Some(current)) => {
                    !made_by_us(&current) || later(&current.spec, &written[&key].spec)
                }
                Ok(None) => true,
                Err(e) => {
                    tracing::warn!(object = %key, error = %e, "cannot read; will retry");
                    failed = true;
                    continue;
                }
            };
            if theirs {
                written.remove(&key);
                continue;
            }
            match api.delete(&key.name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(object = %key, "deleted");
                    written.remove(&key);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    written.remove(&key);
                }
                Err(e) => {
                    tracing::warn!(object = %key, error = %e, "cannot delete; will retry");
                    failed = true;
                }
            }
        }
        let wait = changes.changed();
        match failed {
            true => {
                if let Ok(Err(_)) = tokio::time::timeout(RETRY, wait).await {
                    return;
                }
            }
            false => {
                if wait.await.is_err() {
                    return;
                }
            }
        }
    }
}
