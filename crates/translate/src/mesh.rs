//! The mesh's compiled view of the cluster: meshed workloads by address (identity,
//! node, where their tunnel ends, mTLS mode, authorization), Services by virtual
//! address with their endpoints, and nodes. Built from Pods, Nodes, Namespaces,
//! Services, EndpointSlices, `AuthorizationPolicy` and `PeerAuthentication` objects.

use crate::authz::{self, WorkloadAuthz};
use gatehouse_model::mesh::{WorkloadSelector, MESH_LABEL};
use gatehouse_model::workload::Pod;
use gatehouse_model::{ConfigError, Object, ObjectStore, StoredObject};
use k8s_openapi::api::core::v1::Service;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Mesh-wide settings.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// The SPIFFE trust domain (`cluster.local`).
    pub trust_domain: String,
    /// Policies in this namespace apply to every workload.
    pub root_namespace: String,
    /// The port tunnels (HTTP/2 CONNECT over mutual TLS) end on.
    pub tunnel_port: u16,
    /// Where this proxy runs: a Service's nearest endpoints take its connections.
    pub locality: crate::locality::Locality,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            trust_domain: "cluster.local".into(),
            root_namespace: "gatehouse-system".into(),
            tunnel_port: 15008,
            locality: Default::default(),
        }
    }
}

/// Who carries a workload's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataplaneMode {
    /// The proxy of the workload's node (hub-spoke).
    Node,
    /// A proxy in the workload's own network namespace.
    Sidecar,
}

/// One meshed workload (a running pod with an address).
#[derive(Debug)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    /// `spiffe://TD/ns/NS/sa/SA`.
    pub identity: Arc<str>,
    pub ip: IpAddr,
    pub node: Arc<str>,
    pub mode: DataplaneMode,
    /// Where tunnels to this workload end: its node's address (node mode) or its own
    /// (sidecar mode), at the tunnel port. None if its node's address is unknown.
    pub tunnel: Option<SocketAddr>,
    /// Only mutual TLS through the mesh is accepted (else plaintext is too).
    pub strict: bool,
    pub authz: Arc<WorkloadAuthz>,
    /// The labels that select it (`app`, or all but those Kubernetes adds), for
    /// policies suggested from what it was seen to do.
    pub selector: Arc<BTreeMap<String, String>>,
}

/// Labels Kubernetes adds to a pod, which select one revision of it only.
const REVISION_LABELS: [&str; 3] = [
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
];

/// The labels a policy for a pod would select it by: its `app` (or
/// `app.kubernetes.io/name`) label, else all its labels but revision ones.
fn selector_of(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    for key in ["app", "app.kubernetes.io/name"] {
        if let Some(v) = labels.get(key) {
            return BTreeMap::from([(key.to_string(), v.clone())]);
        }
    }
    labels
        .iter()
        .filter(|(k, _)| !REVISION_LABELS.contains(&k.as_str()) && k.as_str() != MESH_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A Service's virtual address and port, with the endpoints behind it.
#[derive(Debug)]
pub struct MeshService {
    /// `namespace/name`.
    pub name: Arc<str>,
    /// Nearest first (see [`crate::locality`]).
    pub endpoints: Vec<SocketAddr>,
    /// How many of `endpoints` are the nearest: they take every connection.
    nearest: usize,
    next: AtomicUsize,
}

impl MeshService {
    /// The next of the nearest endpoints, round robin.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.nearest == 0 {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.nearest;
        Some(self.endpoints[i])
    }
}

/// Everything a mesh data plane needs, versioned. Swapped whole; never mutated.
#[derive(Debug, Default)]
pub struct MeshSnapshot {
    pub version: u64,
    pub trust_domain: Arc<str>,
    pub workloads: HashMap<IpAddr, Arc<Workload>>,
    pub services: HashMap<SocketAddr, Arc<MeshService>>,
    /// Node names and their addresses (InternalIP first).
    pub nodes: BTreeMap<String, Vec<IpAddr>>,
}

impl MeshSnapshot {
    pub fn workload(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.workloads.get(&ip)
    }

    /// The meshed workloads on `node`.
    pub fn on_node<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Arc<Workload>> + 'a {
        self.workloads.values().filter(move |w| &*w.node == node)
    }

    /// Whether a workload of `namespace`/`service_account` runs on `node`.
    pub fn hosts(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        self.on_node(node)
            .any(|w| w.namespace == namespace && w.service_account == service_account)
    }
}

/// The SPIFFE ID of a service account.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// Whether `labels` hold every entry of `wanted`.
fn holds(wanted: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    wanted
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn selects(sel: &Option<WorkloadSelector>, labels: &BTreeMap<String, String>) -> bool {
    sel.as_ref()
        .is_none_or(|s| holds(&s.match_labels, Some(labels)))
}

/// A PeerAuthentication's mode: Some(true) for STRICT.
fn peer_mode(o: &StoredObject, mode: Option<&str>) -> Result<Option<bool>, ConfigError> {
    match mode {
        None | Some("UNSET") => Ok(None),
        Some("STRICT") => Ok(Some(true)),
        Some("PERMISSIVE") => Ok(Some(false)),
        Some(other) => Err(o.error(
            "spec.mtls.mode",
            format!("mode {other:?} is not STRICT or PERMISSIVE"),
        )),
    }
}

/// The mesh mode a label value names.
fn mode_of(o: &StoredObject, value: &str) -> Result<Option<DataplaneMode>, ConfigError> {
    match value {
        "node" | "enabled" => Ok(Some(DataplaneMode::Node)),
        "sidecar" => Ok(Some(DataplaneMode::Sidecar)),
        "off" | "disabled" => Ok(None),
        other => Err(o.error(
            &format!("metadata.labels.{MESH_LABEL}"),
            format!("{other:?} is not node, sidecar or off"),
        )),
    }
}

/// Builds the mesh's view from the objects in `store`.
pub fn build(store: &ObjectStore, opts: &MeshOptions) -> Result<MeshSnapshot, Vec<ConfigError>> {
    let mut errors = Vec::new();

    // Namespaces' mesh mode.
    let mut ns_mode: HashMap<&str, Option<DataplaneMode>> = HashMap::new();
    for o in store.of_kind("Namespace") {
        if let Some(v) = o
            .object
            .metadata()
            .labels
            .as_ref()
            .and_then(|l| l.get(MESH_LABEL))
        {
            match mode_of(o, v) {
                Ok(m) => {
                    ns_mode.insert(o.name(), m);
                }
                Err(e) => errors.push(e),
            }
        }
    }

    // Nodes' addresses.
    let mut nodes = BTreeMap::new();
    for o in store.of_kind("Node") {
        let Object::Node(n) = &o.object else { continue };
        let mut addrs: Vec<(bool, IpAddr)> = Vec::new();
        for a in n.status.iter().flat_map(|s| s.addresses.iter().flatten()) {
            if let Ok(ip) = a.address.parse::<IpAddr>() {
                addrs.push((a.type_ != "InternalIP", ip));
            }
        }
        addrs.sort_by_key(|(external, _)| *external);
        nodes.insert(
            o.name().to_string(),
            addrs.into_iter().map(|(_, ip)| ip).collect(),
        );
    }

    // Policies, compiled once.
    let mut policies: Vec<(&StoredObject, &Option<WorkloadSelector>, Arc<authz::Policy>)> =
        Vec::new();
    for o in store.of_kind("AuthorizationPolicy") {
        let Object::AuthorizationPolicy(p) = &o.object else {
            continue;
        };
        match authz::compile(o, p) {
            Ok(c) => policies.push((o, &p.spec.selector, Arc::new(c))),
            Err(e) => errors.extend(e),
        }
    }
    let mut peer: Vec<(&StoredObject, &Option<WorkloadSelector>, bool)> = Vec::new();
    for o in store.of_kind("PeerAuthentication") {
        let Object::PeerAuthentication(p) = &o.object else {
            continue;
        };
        match peer_mode(o, p.spec.mtls.as_ref().and_then(|m| m.mode.as_deref())) {
            Ok(Some(strict)) => peer.push((o, &p.spec.selector, strict)),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }

    // Workloads.
    let mut workloads = HashMap::new();
    for o in store.of_kind("Pod") {
        let Object::Pod(pod) = &o.object else {
            continue;
        };
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let mode = match labels.get(MESH_LABEL) {
            Some(v) => match mode_of(o, v) {
                Ok(m) => m,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            },
            None => ns_mode.get(o.namespace()).copied().flatten(),
        };
        let Some(mode) = mode else { continue };
        let Some((ip, node)) = running(pod) else {
            continue;
        };
        let namespace = o.namespace().to_string();
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let applies = |pol_ns: &str, sel: &Option<WorkloadSelector>| {
            pol_ns == opts.root_namespace || (pol_ns == namespace && selects(sel, &labels))
        };
        let authz = WorkloadAuthz::new(
            policies
                .iter()
                .filter(|(po, sel, _)| applies(po.namespace(), sel))
                .map(|(_, _, p)| p.clone()),
        );
        // The most specific PeerAuthentication: selecting the workload, then the
        // namespace's, then the root namespace's.
        let strict = peer
            .iter()
            .filter_map(|(po, sel, strict)| {
                let rank = match (po.namespace(), sel.is_some()) {
                    (ns, true) if ns == namespace && selects(sel, &labels) => 0,
                    (ns, false) if ns == namespace => 1,
                    (ns, false) if ns == opts.root_namespace => 2,
                    _ => return None,
                };
                Some((rank, *strict))
            })
            .min_by_key(|(rank, _)| *rank)
            .is_some_and(|(_, strict)| strict);
        let tunnel_ip = match mode {
            DataplaneMode::Sidecar => Some(ip),
            DataplaneMode::Node => nodes
                .get(&node)
                .and_then(|a: &Vec<IpAddr>| a.first().copied()),
        };
        let w = Workload {
            identity: spiffe_id(&opts.trust_domain, &namespace, &service_account).into(),
            namespace,
            name: o.name().to_string(),
            service_account,
            ip,
            node: node.into(),
            mode,
            tunnel: tunnel_ip.map(|i| SocketAddr::new(i, opts.tunnel_port)),
            strict,
            authz: Arc::new(authz),
            selector: Arc::new(selector_of(&labels)),
        };
        workloads.insert(ip, Arc::new(w));
    }

    // Services by virtual address.
    let mut services = HashMap::new();
    for o in store.of_kind("Service") {
        let Object::Service(svc) = &o.object else {
            continue;
        };
        for (vip, ranked) in service_endpoints(store, o, svc, &opts.locality) {
            let nearest = ranked.iter().take_while(|(p, _)| *p == ranked[0].0).count();
            services.insert(
                vip,
                Arc::new(MeshService {
                    name: format!("{}/{}", o.namespace(), o.name()).into(),
                    endpoints: ranked.into_iter().map(|(_, a)| a).collect(),
                    nearest,
                    next: AtomicUsize::new(0),
                }),
            );
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(MeshSnapshot {
        version: 0,
        trust_domain: opts.trust_domain.as_str().into(),
        workloads,
        services,
        nodes,
    })
}

/// A running pod's address and node.
fn running(pod: &Pod) -> Option<(IpAddr, String)> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let ip = status.pod_ip.as_deref()?.parse().ok()?;
    Some((ip, spec.node_name.clone()?))
}

/// Each cluster address and port of a Service, with its endpoints ranked by nearness
/// to `locality` (nearest first): from its EndpointSlices if it has any, else from the
/// running pods its selector picks.
fn service_endpoints(
    store: &ObjectStore,
    o: &StoredObject,
    svc: &Service,
    locality: &crate::locality::Locality,
) -> Vec<(SocketAddr, Vec<(u8, SocketAddr)>)> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let vips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|a| a.parse().ok())
        .collect();
    if vips.is_empty() {
        return Vec::new();
    }
    let slices: Vec<_> = store.slices_of(o.namespace(), o.name()).collect();
    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        let mut endpoints = Vec::new();
        if !slices.is_empty() {
            for s in &slices {
                let Object::EndpointSlice(slice) = &s.object else {
                    continue;
                };
                let Some(p) = slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| {
                        p.name == port.name || spec.ports.as_ref().is_some_and(|v| v.len() == 1)
                    })
                    .and_then(|p| p.port)
                else {
                    continue;
                };
                let labels = slice.metadata.labels.as_ref();
                for e in slice.endpoints.iter().flatten() {
                    if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                        continue;
                    }
                    let priority = locality.priority(labels, e.zone.as_deref());
                    for a in &e.addresses {
                        if let Ok(ip) = a.parse::<IpAddr>() {
                            endpoints.push((priority, SocketAddr::new(ip, p as u16)));
                        }
                    }
                }
            }
        } else if let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) {
            for po in store.of_kind("Pod") {
                let Object::Pod(pod) = &po.object else {
                    continue;
                };
                if po.namespace() != o.namespace() {
                    continue;
                }
                if !holds(selector, pod.metadata.labels.as_ref()) {
                    continue;
                }
                let Some((ip, _)) = running(pod) else {
                    continue;
                };
                if let Some(target) = target_port(pod, port) {
                    endpoints.push((0, SocketAddr::new(ip, target)));
                }
            }
        }
        endpoints.sort();
        for vip in &vips {
            out.push((SocketAddr::new(*vip, port.port as u16), endpoints.clone()));
        }
    }
    out
}

/// The pod port a Service port's `targetPort` names.
fn target_port(pod: &Pod, port: &k8s_openapi::api::core::v1::ServicePort) -> Option<u16> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match &port.target_port {
        None => Some(port.port as u16),
        Some(IntOrString::Int(p)) => Some(*p as u16),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port as u16),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_model::manifest::parse_manifest;

    const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {gatehouse.dev/mesh: node}}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: Hostname, address: n1}, {type: InternalIP, address: 10.99.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, serviceAccountName: web, containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.1.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: side-1, namespace: shop, labels: {app: side, gatehouse.dev/mesh: sidecar}}
spec: {nodeName: n1, containers: [{name: side}]}
status: {podIP: 10.1.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: outside, namespace: default}
spec: {nodeName: n1, containers: [{name: x}]}
status: {podIP: 10.1.1.12}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{port: 80, targetPort: http}]}
---
apiVersion: gatehouse.dev/v1alpha1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: gatehouse.dev/v1alpha1
kind: PeerAuthentication
metadata: {name: side, namespace: shop}
spec: {selector: {matchLabels: {app: side}}, mtls: {mode: PERMISSIVE}}
---
apiVersion: gatehouse.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-only, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, rules: [{}]}
---
apiVersion: gatehouse.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: mesh-audit, namespace: gatehouse-system}
spec: {action: AUDIT, rules: [{}]}
"#;

    fn store(text: &str) -> ObjectStore {
        ObjectStore::from_objects(parse_manifest("m.yaml", text).expect("parse").objects)
    }

    #[test]
    fn workloads_services_modes_and_policies() {
        let m = build(&store(OBJECTS), &MeshOptions::default()).expect("build");
        assert_eq!(
            m.workloads.len(),
            2,
            "the pod outside the mesh is not listed"
        );
        let web = m.workload("10.1.1.10".parse().expect("ip")).expect("web");
        assert_eq!(&*web.identity, "spiffe://cluster.local/ns/shop/sa/web");
        assert_eq!(web.mode, DataplaneMode::Node);
        assert_eq!(web.tunnel, Some("10.99.0.1:15008".parse().expect("addr")));
        assert!(web.strict);
        assert_eq!(web.authz.allow.len(), 1);
        assert_eq!(web.authz.audit.len(), 1);
        let side = m.workload("10.1.1.11".parse().expect("ip")).expect("side");
        assert_eq!(side.mode, DataplaneMode::Sidecar);
        assert_eq!(&*side.identity, "spiffe://cluster.local/ns/shop/sa/default");
        assert_eq!(side.tunnel, Some("10.1.1.11:15008".parse().expect("addr")));
        assert!(
            !side.strict,
            "the workload's own policy wins over the namespace's"
        );
        assert_eq!(side.authz.allow.len(), 0);
        let svc = m
            .services
            .get(&"10.96.0.10:80".parse().expect("addr"))
            .expect("svc");
        assert_eq!(svc.endpoints, vec!["10.1.1.10:8080".parse().expect("addr")]);
        assert!(m.hosts("n1", "shop", "web"));
        assert!(!m.hosts("n2", "shop", "web"));
        assert!(!m.hosts("n1", "default", "default"));
    }

    #[test]
    fn a_service_in_two_clusters_sends_to_this_clusters_endpoints_first() {
        let slice = |cluster: &str, ip: &str| {
            format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-{cluster}, namespace: shop, labels: {{kubernetes.io/service-name: web, gatehouse.dev/cluster: {cluster}}}}}\naddressType: IPv4\nports: [{{port: 8080}}]\nendpoints: [{{addresses: [\"{ip}\"]}}]\n"
            )
        };
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{clusterIP: 10.96.0.10, ports: [{{port: 80}}]}}\n{}{}",
            slice("east", "10.1.0.5"),
            slice("west", "10.2.0.5")
        );
        let store =
            ObjectStore::from_objects(parse_manifest("t.yaml", &text).expect("parse").objects);
        let vip: SocketAddr = "10.96.0.10:80".parse().expect("addr");
        let picks = |cluster: Option<&str>| {
            let opts = MeshOptions {
                locality: crate::locality::Locality {
                    cluster: cluster.map(str::to_string),
                    zone: None,
                },
                ..MeshOptions::default()
            };
            let m = build(&store, &opts).expect("build");
            let svc = m.services.get(&vip).expect("svc").clone();
            let mut seen: Vec<String> = (0..10)
                .filter_map(|_| svc.pick())
                .map(|a| a.ip().to_string())
                .collect();
            seen.sort();
            seen.dedup();
            seen
        };
        assert_eq!(picks(Some("east")), ["10.1.0.5"]);
        assert_eq!(picks(Some("west")), ["10.2.0.5"]);
        assert_eq!(
            picks(None),
            ["10.1.0.5", "10.2.0.5"],
            "no cluster: both alike"
        );
    }

    #[test]
    fn errors_name_objects_and_fields() {
        let text = format!(
            "{OBJECTS}---\napiVersion: gatehouse.dev/v1alpha1\nkind: PeerAuthentication\nmetadata: {{name: bad, namespace: shop}}\nspec: {{mtls: {{mode: SOMETIMES}}}}\n"
        );
        let errs = build(&store(&text), &MeshOptions::default()).expect_err("bad");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.mtls.mode");
        assert_eq!(errs[0].name, "bad");
    }
}
