//! Translation: a pure function from the object store to an immutable, compiled
//! [`Snapshot`]. All validation happens here; the data plane only sees the result.

// ConfigError is built on the cold path of a rejected config; its size does not matter.
#![allow(clippy::result_large_err)]

pub mod adaptive;
pub mod adjustments;
pub mod authz;
pub mod backends;
pub mod cluster;
pub mod duration;
pub mod endpoint;
pub mod gateway;
pub mod gateway_status;
pub mod grpc_route;
pub mod hosts;
pub mod incremental;
pub mod ingress;
pub mod labels;
pub mod locality;
pub mod maglev;
pub mod mesh;
pub mod policy;
pub mod ratelimit;
pub mod retry_budget;
pub mod routes;
pub mod security;
pub mod snapshot;
pub mod tls;
pub mod waf;

use gatehouse_model::{ConfigError, ObjectStore};
pub use snapshot::*;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where listeners bind. Ingresses use `http_addr`/`https_addr`; Gateway listeners bind
/// their manifest's port on `gateway_host`, unless `listen_map` rebinds them.
#[derive(Debug, Clone)]
pub struct TranslateOptions {
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    pub gateway_host: std::net::IpAddr,
    pub listen_map: Vec<ListenMapEntry>,
    /// Addresses (IPs or hostnames) to publish in Ingress and Gateway status.
    pub publish_addresses: Vec<String>,
    /// The WAF rule base (CRS), if loaded; policies asking for a WAF need it.
    pub waf: Option<Arc<waf::WafBase>>,
    /// Rate limiters, kept from one translation to the next.
    pub limiters: Arc<ratelimit::LimiterRegistry>,
    /// A shared store (Redis) counts Global rate limits.
    pub global_rate_limits: bool,
    /// Adaptive blocking's source trackers, kept from one translation to the next.
    pub adaptive: Arc<adaptive::AdaptiveRegistry>,
    /// Where this proxy runs, so that nearer endpoints are preferred.
    pub locality: Arc<locality::Locality>,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            https_addr: SocketAddr::from(([0, 0, 0, 0], 8443)),
            gateway_host: std::net::IpAddr::from([0, 0, 0, 0]),
            listen_map: Vec::new(),
            publish_addresses: Vec::new(),
            waf: None,
            limiters: Arc::default(),
            global_rate_limits: false,
            adaptive: Arc::default(),
            locality: Arc::default(),
        }
    }
}

/// `PORT=ADDR` or `NAMESPACE/NAME:PORT=ADDR`: rebinds a Gateway listener port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenMapEntry {
    pub gateway: Option<(String, String)>,
    pub port: u16,
    pub addr: SocketAddr,
}

impl std::str::FromStr for ListenMapEntry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (lhs, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected PORT=ADDR"))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| format!("{s:?}: bad address {addr:?}: {e}"))?;
        let (gateway, port) = match lhs.rsplit_once(':') {
            Some((gw, port)) => {
                let (ns, name) = gw
                    .split_once('/')
                    .ok_or_else(|| format!("{s:?}: expected NAMESPACE/NAME:PORT=ADDR"))?;
                (Some((ns.to_string(), name.to_string())), port)
            }
            None => (None, lhs),
        };
        let port = port
            .parse()
            .map_err(|e| format!("{s:?}: bad port {port:?}: {e}"))?;
        Ok(ListenMapEntry {
            gateway,
            port,
            addr,
        })
    }
}

impl TranslateOptions {
    /// The address a Gateway listener with `port` binds.
    pub fn gateway_bind(&self, namespace: &str, name: &str, port: u16) -> SocketAddr {
        let specific = self.listen_map.iter().find(|e| {
            e.port == port
                && e.gateway
                    .as_ref()
                    .is_some_and(|(n, g)| n == namespace && g == name)
        });
        let any = || {
            self.listen_map
                .iter()
                .find(|e| e.port == port && e.gateway.is_none())
        };
        specific
            .or_else(any)
            .map(|e| e.addr)
            .unwrap_or(SocketAddr::new(self.gateway_host, port))
    }
}

/// Translates every object in the store into a Snapshot with `version`, or returns
/// every error found (the caller then keeps its previous Snapshot).
pub fn translate(
    store: &ObjectStore,
    opts: &TranslateOptions,
    version: u64,
) -> Result<Snapshot, Vec<ConfigError>> {
    translate_after(store, opts, version, None)
}

/// `translate`, with the clusters taking over the state of `prev`'s (requests in
/// flight, ejected endpoints), as the Snapshot that replaces `prev` must.
pub fn translate_after(
    store: &ObjectStore,
    opts: &TranslateOptions,
    version: u64,
    prev: Option<&Snapshot>,
) -> Result<Snapshot, Vec<ConfigError>> {
    let mut b = builder::Builder::new(store, opts);
    if let Some(prev) = prev {
        b.carry_state_of(prev);
    }
    ingress::translate(&mut b);
    gateway::translate(&mut b);
    b.finish(version)
}

pub mod builder;

/// Translation for a live cluster, where one team's invalid object must not hold back
/// everyone else's changes: objects with errors are left out (and the translation run
/// again without them). Returns the Snapshot (or the errors no object can be blamed
/// for) and the errors of the objects left out. Rejected Gateways and HTTPRoutes get an
/// `Accepted=False` status naming the error.
pub fn translate_lenient(
    store: &ObjectStore,
    opts: &TranslateOptions,
    version: u64,
    prev: Option<&Snapshot>,
) -> (Result<Snapshot, Vec<ConfigError>>, Vec<ConfigError>) {
    let mut rejected: Vec<ConfigError> = Vec::new();
    // Most of the time nothing is wrong: the store is copied only to leave objects out.
    let mut remaining: Option<ObjectStore> = None;
    let mut result = translate_after(store, opts, version, prev);
    // Each round removes at least one object, so this ends; one or two rounds suffice
    // in practice, since errors rarely depend on each other.
    loop {
        match result {
            Ok(mut snapshot) => {
                for u in rejected_statuses(store, &rejected) {
                    snapshot.statuses.insert(u.key(), Arc::new(u));
                }
                return (Ok(snapshot), rejected);
            }
            Err(errors) => {
                let remaining = remaining.get_or_insert_with(|| store.clone());
                let mut removed = false;
                for e in &errors {
                    if let Some(key) = object_key(e) {
                        removed |= remaining.remove(&key).is_some();
                    }
                }
                if !removed {
                    return (Err(errors), rejected);
                }
                rejected.extend(errors);
                result = translate_after(remaining, opts, version, prev);
            }
        }
    }
}

fn object_key(e: &ConfigError) -> Option<gatehouse_model::ObjectKey> {
    Some(gatehouse_model::ObjectKey {
        kind: gatehouse_model::object::static_kind(&e.kind)?,
        namespace: e.namespace.clone(),
        name: e.name.clone(),
    })
}

fn rejected_statuses(
    store: &ObjectStore,
    rejected: &[ConfigError],
) -> Vec<gatehouse_model::status::StatusUpdate> {
    use gatehouse_model::status::{condition, StatusUpdate};
    use gatehouse_model::Object;
    let mut out: Vec<StatusUpdate> = Vec::new();
    for e in rejected {
        let Some(key) = object_key(e) else { continue };
        if out
            .iter()
            .any(|u| u.kind == key.kind && u.namespace == key.namespace && u.name == key.name)
        {
            continue;
        }
        let Some(o) = store.get(&key) else { continue };
        let g = o.object.metadata().generation;
        let message = format!("rejected: field {}: {}", e.field, e.message);
        let status = match &o.object {
            Object::Gateway(_) => serde_json::json!({"conditions": [
                condition("Accepted", false, "Invalid", &message, g),
                condition("Programmed", false, "Invalid", &message, g)]}),
            Object::HttpRoute(_) | Object::GrpcRoute(_) => {
                let parent_refs = match &o.object {
                    Object::HttpRoute(r) => &r.spec.parent_refs,
                    Object::GrpcRoute(r) => &r.spec.parent_refs,
                    _ => continue,
                };
                let parents: Vec<serde_json::Value> = parent_refs
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "parentRef": p,
                            "controllerName": gatehouse_model::GATEWAY_CONTROLLER,
                            "conditions": [condition("Accepted", false, "UnsupportedValue", &message, g)],
                        })
                    })
                    .collect();
                serde_json::json!({ "parents": parents })
            }
            _ => continue,
        };
        out.push(StatusUpdate {
            api_version: "gateway.networking.k8s.io/v1",
            kind: key.kind,
            namespace: key.namespace,
            name: key.name,
            status: status.into(),
        });
    }
    out
}
