//! Backend resolution: a Service port and its EndpointSlices (found through the store's Service index) become a [`Cluster`] of
//! ready endpoint addresses, shared by every route that names the same Service port.

use crate::builder::Builder;
use crate::cluster::{ClusterPolicy, Target};
use crate::locality::Locality;
use crate::policy::Via;
use crate::snapshot::{Cluster, ClusterSource, Snapshot, UpstreamProtocol};
use gatehouse_model::{Object, ObjectKey, ObjectStore};
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// How a route names a Service port.
#[derive(Debug, Clone, Copy)]
pub enum PortRef<'a> {
    Number(i32),
    Name(&'a str),
}

/// Resolves `namespace/name` at `port` to a cluster, or says why it cannot.
pub fn resolve(
    b: &mut Builder<'_>,
    namespace: &str,
    name: &str,
    port: PortRef<'_>,
    via: &Via,
) -> Result<Arc<Cluster>, String> {
    resolve_with(b, namespace, name, port, None, via)
}

/// `resolve`, with the upstream protocol forced (gRPC routes need HTTP/2 whatever the
/// Service port's appProtocol says). The cluster's policy is the route's (`via`), else
/// the Service's, else the Gateway's; a cluster governed by a route's or Gateway's
/// policy is its own, named after the policy, so other routes to the Service do not
/// share its limits.
pub fn resolve_with(
    b: &mut Builder<'_>,
    namespace: &str,
    name: &str,
    port: PortRef<'_>,
    force: Option<UpstreamProtocol>,
    via: &Via,
) -> Result<Arc<Cluster>, String> {
    let key = ObjectKey {
        kind: "Service",
        namespace: Some(namespace.to_string()),
        name: name.to_string(),
    };
    let Some(Object::Service(svc)) = b.store.get(&key).map(|o| &o.object) else {
        return Err(format!("Service {namespace}/{name} not found"));
    };
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let sp = ports.iter().find(|p| match port {
        PortRef::Number(n) => p.port == n,
        PortRef::Name(n) => p.name.as_deref() == Some(n),
    });
    let Some(sp) = sp else {
        let want = match port {
            PortRef::Number(n) => n.to_string(),
            PortRef::Name(n) => format!("{n:?}"),
        };
        return Err(format!("Service {namespace}/{name} has no port {want}"));
    };
    let native = match sp.app_protocol.as_deref() {
        Some("kubernetes.io/h2c" | "h2c" | "grpc" | "http2" | "kubernetes.io/grpc") => {
            UpstreamProtocol::Http2
        }
        _ => UpstreamProtocol::Http1,
    };
    let protocol = force.unwrap_or(native);
    let (mut policy, own) = match (
        &via.route,
        b.policies.for_service(namespace, name),
        &via.gateway,
    ) {
        (Some(p), _, _) => (p.clone(), true),
        (None, Some(p), _) => (p.clone(), false),
        (None, None, Some(p)) => (p.clone(), true),
        (None, None, None) => (ClusterPolicy::default(), false),
    };
    policy.held_out = b.adjustments.held_out(namespace, name);
    let mut cluster_name = match protocol == native {
        true => format!("{namespace}/{name}:{}", sp.port),
        false => format!("{namespace}/{name}:{}/h2c", sp.port),
    };
    if let (true, Some(from)) = (own, &policy.from) {
        cluster_name = format!("{cluster_name}@{from}");
    }
    if let Some(c) = b.clusters.get(cluster_name.as_str()) {
        return Ok(c.clone());
    }
    if let Some(c) = b.reusable_cluster(namespace, name, &cluster_name) {
        if c.policy == policy {
            b.clusters.insert(Arc::from(cluster_name), c.clone());
            return Ok(c);
        }
    }
    let locality = b.opts.locality.clone();
    let endpoints = endpoints(b.store, namespace, name, sp, &locality);
    let mut cluster = Cluster::new(
        cluster_name.clone(),
        ClusterSource {
            namespace: namespace.to_string(),
            service: name.to_string(),
            port: sp.port,
            locality,
        },
        protocol,
        policy,
        endpoints,
    );
    if let Some(prev) = b.previous_cluster(&cluster_name) {
        cluster.carry_from(&prev);
    }
    let cluster = Arc::new(cluster);
    b.clusters.insert(Arc::from(cluster_name), cluster.clone());
    Ok(cluster)
}

/// Ready endpoints of a Service port (serving-but-terminating ones only when none is
/// ready, as kube-proxy does), with their locality priorities seen from `locality`,
/// sorted and deduplicated (an address in several slices takes its nearest priority).
pub fn endpoints(
    store: &ObjectStore,
    namespace: &str,
    service: &str,
    sp: &ServicePort,
    locality: &Locality,
) -> Vec<Target> {
    let sp_name = sp.name.as_deref().unwrap_or("");
    let mut ready = Vec::new();
    let mut serving = Vec::new();
    for o in store.slices_of(namespace, service) {
        let Object::EndpointSlice(es) = &o.object else {
            continue;
        };
        let slice_port = es
            .ports
            .as_ref()
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p.name.as_deref().unwrap_or("") == sp_name)
                    .or_else(|| match &sp.target_port {
                        Some(IntOrString::String(tp)) => {
                            ps.iter().find(|p| p.name.as_deref() == Some(tp))
                        }
                        _ => None,
                    })
            })
            .and_then(|p| p.port);
        let port_num = match (slice_port, &sp.target_port) {
            (Some(p), _) => p,
            (None, Some(IntOrString::Int(p))) => *p,
            (None, None) => sp.port,
            (None, Some(IntOrString::String(_))) => continue,
        };
        let Ok(port_num) = u16::try_from(port_num) else {
            continue;
        };
        let labels = es.metadata.labels.as_ref();
        for ep in es.endpoints.iter().flatten() {
            let priority = match locality.is_set() {
                true => locality.priority(labels, ep.zone.as_deref()),
                false => 0,
            };
            let cond = ep.conditions.as_ref();
            let is_ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let is_serving = cond.and_then(|c| c.serving).unwrap_or(is_ready);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            for a in &ep.addresses {
                let Ok(ip) = a.parse::<IpAddr>() else {
                    continue;
                };
                let addr = Target {
                    addr: SocketAddr::new(ip, port_num),
                    priority,
                };
                if is_ready && !terminating {
                    ready.push(addr);
                } else if is_serving {
                    serving.push(addr);
                }
            }
        }
    }
    let mut endpoints = if ready.is_empty() { serving } else { ready };
    endpoints.sort();
    endpoints.dedup_by_key(|t| t.addr);
    endpoints
}

/// Recomputes every cluster's endpoints of `snapshot` from `store` and swaps the ones
/// that changed in place; routes are untouched. For changes that touch only
/// EndpointSlices, this replaces a whole translation. Returns how many changed.
/// `only`: the (namespace, Service) pairs to look at; None for every cluster.
pub fn refresh_endpoints(
    store: &ObjectStore,
    snapshot: &Snapshot,
    only: Option<&std::collections::BTreeSet<(String, String)>>,
) -> usize {
    let mut changed = 0;
    let mut refresh = |c: &Arc<Cluster>| {
        let src = &c.source;
        let key = ObjectKey {
            kind: "Service",
            namespace: Some(src.namespace.clone()),
            name: src.service.clone(),
        };
        let sp = match store.get(&key).map(|o| &o.object) {
            Some(Object::Service(svc)) => svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .and_then(|ps| ps.iter().find(|p| p.port == src.port)),
            _ => None,
        };
        let fresh = match sp {
            Some(sp) => endpoints(store, &src.namespace, &src.service, sp, &src.locality),
            None => Vec::new(),
        };
        if c.targets() != fresh {
            c.set_endpoints(fresh);
            changed += 1;
        }
    };
    match only {
        None => snapshot.clusters.values().for_each(&mut refresh),
        // Cluster names start with `namespace/service:`, so each Service's clusters are
        // one range of the ordered map: no walk over every cluster.
        Some(only) => {
            for (ns, svc) in only {
                let prefix: Arc<str> = Arc::from(format!("{ns}/{svc}:"));
                for (name, c) in snapshot.clusters.range(prefix.clone()..) {
                    if !name.starts_with(prefix.as_ref()) {
                        break;
                    }
                    if c.source.namespace == *ns && c.source.service == *svc {
                        refresh(c);
                    }
                }
            }
        }
    }
    changed
}
