//! Kubernetes API source: one kube-rs watcher per kind Gatehouse reads (list, then watch
//! from the list's resourceVersion, with bookmarks, re-list on `410 Gone` and backoff on
//! errors), all feeding one shared [`ObjectStore`]. Objects arrive as JSON and go through
//! the same conversion as manifest files, so everything after the store is shared.

use futures_util::StreamExt;
use gatehouse_model::manifest::object_from_value;
use gatehouse_model::{ObjectKey, ObjectStore, StoredObject};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A kind Gatehouse watches.
#[derive(Debug, Clone, Copy)]
pub struct WatchedKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Server-side field selector (e.g. only TLS Secrets).
    pub fields: Option<&'static str>,
    /// Served only when its CRD is installed (Gateway API, Gatehouse's own kinds): while
    /// the API server answers 404, the kind counts as synced and empty.
    pub optional: bool,
    /// The status fields kept (the mesh reads Pods' addresses and Nodes'); other kinds
    /// keep no status at all.
    pub status: &'static [&'static str],
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> WatchedKind {
    WatchedKind {
        group,
        version,
        kind,
        plural,
        namespaced,
        fields: None,
        optional: false,
        status: &[],
    }
}

/// A kind defined by a CRD, which a cluster may not have installed.
const fn crd(
    group: &'static str,
    version: &'static str,
    kind_name: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> WatchedKind {
    WatchedKind {
        optional: true,
        ..kind(group, version, kind_name, plural, namespaced)
    }
}

/// Kinds both the ingress controller and the mesh read.
const NAMESPACE: WatchedKind = kind("", "v1", "Namespace", "namespaces", false);
const SERVICE: WatchedKind = kind("", "v1", "Service", "services", true);
const ENDPOINT_SLICE: WatchedKind = kind(
    "discovery.k8s.io",
    "v1",
    "EndpointSlice",
    "endpointslices",
    true,
);
const AUTHORIZATION_POLICY: WatchedKind = crd(
    "gatehouse.dev",
    "v1alpha1",
    "AuthorizationPolicy",
    "authorizationpolicies",
    true,
);
const PEER_AUTHENTICATION: WatchedKind = crd(
    "gatehouse.dev",
    "v1alpha1",
    "PeerAuthentication",
    "peerauthentications",
    true,
);

/// Every kind the translator reads.
pub const WATCHED: &[WatchedKind] = &[
    kind(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        false,
    ),
    kind("networking.k8s.io", "v1", "Ingress", "ingresses", true),
    SERVICE,
    ENDPOINT_SLICE,
    WatchedKind {
        fields: Some("type=kubernetes.io/tls"),
        ..kind("", "v1", "Secret", "secrets", true)
    },
    NAMESPACE,
    crd(
        "gateway.networking.k8s.io",
        "v1",
        "GatewayClass",
        "gatewayclasses",
        false,
    ),
    crd(
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
        "gateways",
        true,
    ),
    crd(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
        true,
    ),
    crd(
        "gateway.networking.k8s.io",
        "v1",
        "GRPCRoute",
        "grpcroutes",
        true,
    ),
    crd(
        "gateway.networking.k8s.io",
        "v1beta1",
        "ReferenceGrant",
        "referencegrants",
        true,
    ),
    crd(
        "gateway.networking.k8s.io",
        "v1alpha2",
        "TCPRoute",
        "tcproutes",
        true,
    ),
    crd(
        "gateway.networking.k8s.io",
        "v1alpha2",
        "TLSRoute",
        "tlsroutes",
        true,
    ),
    crd(
        "gatehouse.dev",
        "v1alpha1",
        "BackendTrafficPolicy",
        "backendtrafficpolicies",
        true,
    ),
    crd(
        "gatehouse.dev",
        "v1alpha1",
        "SecurityPolicy",
        "securitypolicies",
        true,
    ),
    crd(
        "gatehouse.dev",
        "v1alpha1",
        "SourceBlock",
        "sourceblocks",
        true,
    ),
    crd(
        "gatehouse.dev",
        "v1alpha1",
        "TrafficAdjustment",
        "trafficadjustments",
        true,
    ),
    AUTHORIZATION_POLICY,
    PEER_AUTHENTICATION,
];

/// What the mesh reads (node proxies and the mesh CA): namespaces' mesh labels, Pods
/// (with their addresses and phase), Nodes (with their addresses), Services and their
/// endpoints, and the mesh's policies. No Secrets: a node proxy has no business with
/// them.
pub const MESH_WATCHED: &[WatchedKind] = &[
    NAMESPACE,
    WatchedKind {
        status: &["phase", "podIP", "podIPs"],
        ..kind("", "v1", "Pod", "pods", true)
    },
    WatchedKind {
        status: &["addresses"],
        ..kind("", "v1", "Node", "nodes", false)
    },
    SERVICE,
    ENDPOINT_SLICE,
    AUTHORIZATION_POLICY,
    PEER_AUTHENTICATION,
];

/// Every kind either reads: what a controller that serves gateways and node proxies
/// alike watches.
pub static ALL_WATCHED: std::sync::LazyLock<Vec<WatchedKind>> = std::sync::LazyLock::new(|| {
    let mut all: Vec<WatchedKind> = WATCHED.to_vec();
    for k in MESH_WATCHED {
        if !all.iter().any(|w| w.kind == k.kind) {
            all.push(*k);
        }
    }
    all
});

impl WatchedKind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Watch one namespace only (cluster-scoped kinds are still watched cluster-wide).
    pub namespace: Option<String>,
    /// The kinds: [`WATCHED`] for the ingress controller, [`MESH_WATCHED`] for the mesh.
    pub kinds: &'static [WatchedKind],
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            namespace: None,
            kinds: WATCHED,
        }
    }
}

/// The store a source fills (the Kubernetes watchers, or a controller's stream), a
/// change counter, and how many kinds have synced.
#[derive(Clone)]
pub struct KubeStore {
    store: Arc<Mutex<ObjectStore>>,
    changes: Arc<watch::Sender<u64>>,
    synced: Arc<AtomicUsize>,
    /// How many kinds are watched.
    kinds: usize,
    /// What changed since the last `take_dirty`.
    dirty: Arc<Mutex<Dirty>>,
}

/// What changed since the last look: kinds, the Services whose EndpointSlices changed
/// (all of them after a re-list), so endpoint-only changes touch only those, and each
/// changed object with the version it had at the last look, so a translation can be
/// limited to what the change touches.
#[derive(Debug, Default, Clone)]
pub struct Dirty {
    pub kinds: BTreeSet<&'static str>,
    pub services: BTreeSet<(String, String)>,
    pub all_services: bool,
    /// Changed objects and their version at the last look (None: it did not exist).
    pub objects: BTreeMap<ObjectKey, Option<Arc<StoredObject>>>,
    /// A kind was (re-)listed: the changes are not known one by one.
    pub relisted: bool,
    /// When the first of these changes reached the store.
    pub since: Option<std::time::Instant>,
}

use gatehouse_model::store::slice_service;

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("kinds", &self.kinds)
            .field("synced", &self.synced())
            .field("changes", &self.change_count())
            .finish()
    }
}

impl KubeStore {
    /// An empty store for a source other than the watchers, which fills it with
    /// [`KubeStore::apply`] and says when it has its first full picture with
    /// [`KubeStore::mark_synced`].
    pub fn fed() -> Self {
        Self::empty(1)
    }

    fn empty(kinds: usize) -> Self {
        KubeStore {
            store: Arc::new(Mutex::new(ObjectStore::new())),
            changes: Arc::new(watch::channel(0).0),
            synced: Arc::new(AtomicUsize::new(0)),
            kinds,
            dirty: Arc::new(Mutex::new(Dirty::default())),
        }
    }

    /// Sets the object at `key` (None: removes it), noting what changed for the next
    /// pass; `kind` names the dirty kind. Returns whether the store changed. Callers
    /// batch their changes and then call [`KubeStore::notify`] once.
    pub fn apply(&self, key: ObjectKey, new: Option<StoredObject>) -> bool {
        let (changed, services, old) = self.with_store(|s| {
            let old = s.get_shared(&key);
            // The Services of the old and the new version of a slice.
            let services: Vec<_> = old
                .as_deref()
                .and_then(slice_service)
                .into_iter()
                .chain(new.as_ref().and_then(slice_service))
                .collect();
            let changed = match new {
                Some(o) => s.upsert(o),
                // An object that no longer converts must not keep its old version.
                None => s.remove(&key).is_some(),
            };
            (changed, services, old)
        });
        if changed {
            self.slices_changed(Some(services));
            let kind = key.kind;
            self.object_changed(key, old);
            let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            d.kinds.insert(kind);
            d.since.get_or_insert_with(std::time::Instant::now);
        }
        changed
    }

    /// Makes the store `store` (for a fed store whose source gives whole pictures, such
    /// as a merge of clusters): the next pass is a full one. Marks it synced and wakes
    /// the passes.
    pub fn replace(&self, store: ObjectStore) {
        *self.store.lock().unwrap_or_else(|e| e.into_inner()) = store;
        {
            let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            d.relisted = true;
            d.since.get_or_insert_with(std::time::Instant::now);
        }
        self.mark_synced();
        self.notify();
    }

    /// Wakes the pass that turns changes into a Snapshot.
    pub fn notify(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// The store now holds a full picture (a fed store's first batch): passes may
    /// begin, the first one a full translation.
    pub fn mark_synced(&self) {
        if self.synced() {
            return;
        }
        self.first_synced("Namespace");
    }

    /// The change counter: it grows with every [`KubeStore::notify`] and watch event.
    pub fn change_count(&self) -> u64 {
        *self.changes.borrow()
    }

    /// A copy of the store as it is now.
    pub fn snapshot(&self) -> ObjectStore {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Resolves whenever the store has changed since the last look.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether every kind has finished its first list.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire) >= self.kinds
    }

    /// The kinds that changed since the last call (so a caller can tell an
    /// endpoint-only change from one that needs a full translation).
    pub fn take_dirty(&self) -> Dirty {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs `f` on the store in place (no copy); keep it short, watchers wait.
    pub fn read<R>(&self, f: impl FnOnce(&ObjectStore) -> R) -> R {
        f(&self.store.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn changed(&self, kind: &'static str) {
        let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        d.kinds.insert(kind);
        d.since.get_or_insert_with(std::time::Instant::now);
        drop(d);
        self.changes.send_modify(|v| *v += 1);
    }

    /// Notes the Services of EndpointSlices that changed (None: all, after a re-list).
    fn slices_changed(&self, services: Option<Vec<(String, String)>>) {
        let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        match services {
            Some(s) => d.services.extend(s),
            None => {
                d.all_services = true;
                d.relisted = true;
            }
        }
    }

    /// Notes that `key` changed; `old` is its version before (kept from the first change
    /// since the last look).
    fn object_changed(&self, key: ObjectKey, old: Option<Arc<StoredObject>>) {
        let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        d.objects.entry(key).or_insert(old);
    }

    /// A kind has its first full picture (its first list, or a 404 for a missing CRD).
    fn first_synced(&self, kind: &'static str) {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .relisted = true;
        self.synced.fetch_add(1, Ordering::AcqRel);
        self.changed(kind);
    }

    fn with_store<R>(&self, f: impl FnOnce(&mut ObjectStore) -> R) -> R {
        f(&mut self.store.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Converts an object from the API server: list items may lack apiVersion and kind, so
/// they are set from the watched kind. Objects that do not convert are logged and
/// skipped (the API server validated them; a type mismatch here is ours to report).
fn convert(k: &WatchedKind, obj: DynamicObject) -> Option<StoredObject> {
    // The object's fields are moved, not copied, into the value the typed conversion
    // reads: only the metadata is serialized again.
    let DynamicObject {
        mut metadata, data, ..
    } = obj;
    // Translation reads spec, not status; dropping status (and the bookkeeping a status
    // write changes: resourceVersion, managedFields) keeps our own status writes from
    // coming back as changes to translate again. The few status fields the mesh reads
    // (Pods' addresses, Nodes') are kept, the rest of their status is not.
    metadata.resource_version = None;
    metadata.managed_fields = None;
    let mut map = match data {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    match (map.remove("status"), k.status) {
        (Some(serde_json::Value::Object(mut status)), keep) if !keep.is_empty() => {
            status.retain(|f, _| keep.contains(&f.as_str()));
            map.insert("status".into(), serde_json::Value::Object(status));
        }
        _ => {}
    }
    map.insert("metadata".into(), serde_json::to_value(metadata).ok()?);
    map.insert("apiVersion".into(), k.api_version().into());
    map.insert("kind".into(), k.kind.into());
    match object_from_value(serde_json::Value::Object(map)) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!("ignoring object from the API server: {e}");
            None
        }
    }
}

fn key_of(k: &WatchedKind, obj: &DynamicObject) -> ObjectKey {
    ObjectKey {
        kind: k.kind,
        namespace: if k.namespaced {
            Some(
                obj.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            )
        } else {
            None
        },
        name: obj.metadata.name.clone().unwrap_or_default(),
    }
}

/// Starts a watcher per kind; they run until the returned store is dropped everywhere
/// and the runtime stops.
pub fn start(client: Client, opts: KubeOptions) -> KubeStore {
    let store = KubeStore::empty(opts.kinds.len());
    for k in opts.kinds {
        tokio::spawn(watch_kind(
            client.clone(),
            *k,
            opts.namespace.clone(),
            store.clone(),
        ));
    }
    store
}

async fn watch_kind(client: Client, k: WatchedKind, namespace: Option<String>, store: KubeStore) {
    let ar = k.api_resource();
    let scope = if k.namespaced {
        namespace.as_deref()
    } else {
        None
    };
    let api: Api<DynamicObject> = match scope {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let mut config = watcher::Config::default();
    if let Some(f) = k.fields {
        config = config.fields(f);
    }
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut relist: Option<Vec<StoredObject>> = None;
    let mut first_sync = true;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => relist = Some(Vec::new()),
            Ok(Event::InitApply(obj)) => {
                if let (Some(buf), Some(o)) = (relist.as_mut(), convert(&k, obj)) {
                    buf.push(o);
                }
            }
            Ok(Event::InitDone) => {
                let objects = relist.take().unwrap_or_default();
                let count = objects.len();
                let changed = store.with_store(|s| s.replace_kind(k.kind, scope, objects));
                if first_sync {
                    first_sync = false;
                    tracing::info!(kind = k.kind, objects = count, "initial list synced");
                    store.first_synced(k.kind);
                } else if changed {
                    tracing::info!(kind = k.kind, objects = count, "re-listed");
                    store.slices_changed(None);
                    store.changed(k.kind);
                }
            }
            Ok(Event::Apply(obj)) => {
                let key = key_of(&k, &obj);
                let new = convert(&k, obj);
                if store.apply(key, new) {
                    store.notify();
                }
            }
            Ok(Event::Delete(obj)) => {
                if store.apply(key_of(&k, &obj), None) {
                    store.notify();
                }
            }
            Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))
                if s.code == 404 && k.optional =>
            {
                // The CRD is not installed: nothing of this kind exists. Keep trying
                // (with backoff) so objects appear once it is.
                if first_sync {
                    first_sync = false;
                    tracing::warn!(
                        kind = k.kind,
                        "the API server does not serve this kind (CRD not installed?); treating it as empty"
                    );
                    store.first_synced(k.kind);
                }
            }
            Err(e) => {
                tracing::warn!(kind = k.kind, error = %e, "watch failed; retrying with backoff")
            }
        }
    }
}
