//! `gatehouse run --controller URL`: a gateway that takes its objects from a central
//! controller's stream instead of a directory or the API. The stream fills a store that
//! the same sync loop as the Kubernetes source serves (endpoint changes in place, route
//! changes scoped, the rest in full); each response is acknowledged once the pass that
//! serves it is installed, or rejected (and undone) if it could not be, so the
//! controller knows which version each proxy runs. Without the controller the gateway
//! keeps serving what it has.

use crate::app::{data_plane, Installed, Running};
use crate::cluster::{sync_loop, Pass, Serve};
use gatehouse_control::client::{follow, Changes, Follow, FollowStats};
use gatehouse_control::pb::Proxy;
use gatehouse_model::status::Statuses;
use gatehouse_model::{ObjectKey, StoredObject};
use gatehouse_proxy::ProxyConfig;
use gatehouse_sources::kubernetes::KubeStore;
use gatehouse_translate::TranslateOptions;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Settings of a gateway that follows a controller.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// The controller's URL (`http://host:port`).
    pub controller: String,
    /// Who this proxy is.
    pub id: String,
    /// The file holding its token for the controller.
    pub token_file: Option<std::path::PathBuf>,
    /// The CA bundle that vouches for an `https://` controller.
    pub ca_file: Option<std::path::PathBuf>,
    /// The certificate it presents over mutual TLS, if any.
    pub client_cert: Option<gatehouse_control::transport::ClientCert>,
    pub cluster: String,
    pub translate: TranslateOptions,
    pub proxy: ProxyConfig,
    pub admin_addr: SocketAddr,
}

/// Starts a gateway following the controller. It is not ready until the first response
/// is served.
pub async fn start_remote(opts: RemoteOptions) -> anyhow::Result<Running> {
    let (dp, admin_addr) = data_plane(&opts.proxy, opts.admin_addr).await?;
    dp.start_controls();
    let store = KubeStore::fed();
    let version = Arc::new(AtomicU64::new(0));
    let (passes, passes_rx) = watch::channel(None);
    let serve = Serve {
        translate: opts.translate.clone(),
        debounce: Duration::from_millis(5),
        statuses: watch::channel(Statuses::new()).0,
        passes,
    };
    let task = tokio::spawn(sync_loop(store.clone(), dp.clone(), version.clone(), serve));
    let stats = Arc::new(FollowStats::default());
    {
        let stats = stats.clone();
        dp.metrics
            .extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(move |out: &mut String| stats.render(out)));
    }
    let proxy = Proxy {
        id: opts.id.clone(),
        role: gatehouse_control::scope::GATEWAY.into(),
        node: std::env::var("NODE_NAME").unwrap_or_default(),
        cluster: opts.cluster.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let to = Follow {
        url: opts.controller.clone(),
        proxy,
        token_file: opts.token_file.clone(),
        ca_file: opts.ca_file.clone(),
        client_cert: opts.client_cert.clone(),
    };
    tokio::spawn(follow(to, stats, move |changes| {
        let store = store.clone();
        let passes = passes_rx.clone();
        async move { apply(&store, passes, changes).await }
    }));
    Ok(Running {
        dataplane: dp,
        admin_addr,
        version,
        reload_task: Some(task),
        status_task: None,
    })
}

/// What putting a response's changes in a store replaced, to put it back.
pub(crate) struct Undo(Vec<(ObjectKey, Option<Arc<StoredObject>>)>);

impl Undo {
    /// Whether the changes changed nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Puts back what the changes replaced.
    pub(crate) fn revert(self, store: &KubeStore) {
        for (key, old) in self.0.into_iter().rev() {
            store.apply(key, old.map(|o| (*o).clone()));
        }
        store.notify();
    }
}

/// Puts a response's changes in `store` (without waking its readers).
pub(crate) fn put(store: &KubeStore, upserts: Vec<StoredObject>, removals: Vec<ObjectKey>) -> Undo {
    let mut undo = Vec::new();
    let keyed = upserts
        .into_iter()
        .map(|o| (o.key(), Some(o)))
        .chain(removals.into_iter().map(|k| (k, None)));
    for (key, new) in keyed {
        let old = store.read(|s| s.get_shared(&key));
        if store.apply(key.clone(), new) {
            undo.push((key, old));
        }
    }
    Undo(undo)
}

/// Puts a response's changes in the store and waits for the pass that serves them:
/// Ok once installed; otherwise they are taken out again and the error says why.
async fn apply(
    store: &KubeStore,
    mut passes: watch::Receiver<Option<Pass>>,
    changes: Changes,
) -> Result<(), String> {
    let undo = put(store, changes.upserts, changes.removals);
    let first = !store.synced();
    if undo.is_empty() && !first {
        return Ok(());
    }
    store.mark_synced();
    store.notify();
    let target = store.change_count();
    let outcome = loop {
        if let Some(pass) = passes.borrow_and_update().as_ref() {
            if pass.seen >= target {
                break pass.outcome.clone();
            }
        }
        if passes.changed().await.is_err() {
            break Installed::NotApplied("the data plane stopped".into());
        }
    };
    let why = match outcome {
        Installed::Applied => return Ok(()),
        Installed::Invalid(why) | Installed::NotApplied(why) => why,
    };
    undo.revert(store);
    Err(format!("version {} not applied: {why}", changes.version))
}
