//! Writes the objects the proxy's adaptive controls make (`SourceBlock`s and
//! `TrafficAdjustment`s) to the API server, so that on a cluster each is an object like
//! any other: every replica's watchers bring it into their store and serve it, `kubectl
//! get sourceblocks,trafficadjustments` lists it, and `kubectl delete` undoes it. An
//! object the proxy drops (expired, or lifted through the admin API) is deleted. An
//! object of the same name written by hand is never touched, and one another replica
//! made last longer is neither shortened nor deleted. Writes that fail are tried again
//! on the next change, or within `RETRY`.

use gatehouse_model::policy::{SourceBlock, TrafficAdjustment};
use gatehouse_model::{Object, ObjectKey, StoredObject};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

/// A kind the adaptive controls make.
trait Made:
    kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + PartialEq
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
{
    const KIND: &'static str;
    fn of(o: Object) -> Option<Self>;
    fn expires_at(&self) -> Option<&str>;
    fn spec_json(&self) -> serde_json::Value;
}

impl Made for SourceBlock {
    const KIND: &'static str = "SourceBlock";
    fn of(o: Object) -> Option<Self> {
        match o {
            Object::SourceBlock(b) => Some(b),
            _ => None,
        }
    }
    fn expires_at(&self) -> Option<&str> {
        self.spec.expires_at.as_deref()
    }
    fn spec_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).unwrap_or_default()
    }
}

impl Made for TrafficAdjustment {
    const KIND: &'static str = "TrafficAdjustment";
    fn of(o: Object) -> Option<Self> {
        match o {
            Object::TrafficAdjustment(a) => Some(a),
            _ => None,
        }
    }
    fn expires_at(&self) -> Option<&str> {
        self.spec.expires_at.as_deref()
    }
    fn spec_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).unwrap_or_default()
    }
}

/// Whether an object carries the label of the objects the adaptive controls make.
fn made_by_us<K: Made>(o: &K) -> bool {
    o.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(gatehouse_model::policy::MADE_BY_LABEL))
        .is_some()
}

/// Whether `a` ends later than `b` (no end is the latest).
fn later<K: Made>(a: &K, b: &K) -> bool {
    let end = |o: &K| {
        o.expires_at().map_or(i64::MAX, |t| {
            t.parse::<jiff::Timestamp>()
                .map_or(0, |t| t.as_millisecond())
        })
    };
    end(a) > end(b)
}

/// Writes `made` over an object of the same name: never over one written by hand, and
/// never making it end sooner (another replica may have made it last longer).
async fn update<K: Made>(api: &Api<K>, name: &str, made: &K) -> kube::Result<()> {
    let Some(current) = api.get_opt(name).await? else {
        return api.create(&PostParams::default(), made).await.map(|_| ());
    };
    if !made_by_us(&current) {
        tracing::warn!(
            name,
            kind = K::KIND,
            "an object of this name was written by hand; left as it is"
        );
        return Ok(());
    }
    if later(&current, made) {
        return Ok(());
    }
    let patch = serde_json::json!({"spec": made.spec_json()});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// How soon a failed write is tried again when nothing else changes.
pub const RETRY: Duration = Duration::from_secs(5);

/// Keeps the API server's objects of the kinds the controls make in step with
/// `current()`, waking on every change `changes` announces, until its sender is dropped.
pub async fn mirror<F>(client: Client, mut changes: watch::Receiver<u64>, current: F)
where
    F: Fn() -> Vec<StoredObject> + Send + 'static,
{
    // What the API server holds as last written, by object.
    let mut blocks: BTreeMap<ObjectKey, SourceBlock> = BTreeMap::new();
    let mut adjustments: BTreeMap<ObjectKey, TrafficAdjustment> = BTreeMap::new();
    loop {
        let now = current();
        let failed =
            sync(&client, &now, &mut blocks).await | sync(&client, &now, &mut adjustments).await;
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

/// One pass over kind `K`: writes what `now` holds and `written` does not, deletes what
/// `written` holds and `now` does not; whether a write failed.
async fn sync<K: Made>(
    client: &Client,
    now: &[StoredObject],
    written: &mut BTreeMap<ObjectKey, K>,
) -> bool {
    let want: BTreeMap<ObjectKey, K> = now
        .iter()
        .filter_map(|o| Some((o.key(), K::of(o.object.clone())?)))
        .collect();
    let mut failed = false;
    let api = |key: &ObjectKey| -> Api<K> {
        Api::namespaced(
            client.clone(),
            key.namespace.as_deref().unwrap_or("default"),
        )
    };
    for (key, made) in &want {
        if written.get(key).is_some_and(|w| w == made) {
            continue;
        }
        let api = api(key);
        let result = match api.create(&PostParams::default(), made).await {
            Err(kube::Error::Api(e)) if e.code == 409 => update(&api, &key.name, made).await,
            r => r.map(|_| ()),
        };
        match result {
            Ok(()) => {
                tracing::info!(object = %key, "written");
                written.insert(key.clone(), made.clone());
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
        let api = api(&key);
        // Only an object this writer made, and that nobody has made last longer since.
        let theirs = match api.get_opt(&key.name).await {
            Ok(Some(current)) => !made_by_us(&current) || later(&current, &written[&key]),
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
    failed
}
