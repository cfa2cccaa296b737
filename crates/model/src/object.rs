//! `Object`: one typed Kubernetes object of a kind Gatehouse reads, with where it came from.

use crate::gateway::{
    Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant, TcpRoute, TlsRoute,
};
use crate::locate::locate;
use crate::mesh::{AuthorizationPolicy, PeerAuthentication};
use crate::policy::{BackendTrafficPolicy, SecurityPolicy, SourceBlock, TrafficAdjustment};
use crate::workload::{Node, Pod};
use crate::ConfigError;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::sync::Arc;

/// A typed object of one of the kinds Gatehouse understands. Objects live once in the
/// store and are never moved on a hot path, so variants are not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Ingress(Ingress),
    IngressClass(IngressClass),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Secret(Secret),
    GatewayClass(GatewayClass),
    Gateway(Gateway),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    TcpRoute(TcpRoute),
    TlsRoute(TlsRoute),
    ReferenceGrant(ReferenceGrant),
    Namespace(Namespace),
    BackendTrafficPolicy(BackendTrafficPolicy),
    SecurityPolicy(SecurityPolicy),
    SourceBlock(SourceBlock),
    TrafficAdjustment(TrafficAdjustment),
    Pod(Pod),
    Node(Node),
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
}

/// The kind names of every [`Object`] variant.
pub const KINDS: [&str; 21] = [
    "Ingress",
    "IngressClass",
    "Service",
    "EndpointSlice",
    "Secret",
    "GatewayClass",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "TCPRoute",
    "TLSRoute",
    "ReferenceGrant",
    "Namespace",
    "BackendTrafficPolicy",
    "SecurityPolicy",
    "SourceBlock",
    "TrafficAdjustment",
    "Pod",
    "Node",
    "AuthorizationPolicy",
    "PeerAuthentication",
];

/// The `'static` kind name equal to `kind`, if it is one of ours.
pub fn static_kind(kind: &str) -> Option<&'static str> {
    KINDS.into_iter().find(|k| *k == kind)
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Ingress(_) => "Ingress",
            Object::IngressClass(_) => "IngressClass",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Secret(_) => "Secret",
            Object::GatewayClass(_) => "GatewayClass",
            Object::Gateway(_) => "Gateway",
            Object::HttpRoute(_) => "HTTPRoute",
            Object::GrpcRoute(_) => "GRPCRoute",
            Object::TcpRoute(_) => "TCPRoute",
            Object::TlsRoute(_) => "TLSRoute",
            Object::ReferenceGrant(_) => "ReferenceGrant",
            Object::Namespace(_) => "Namespace",
            Object::BackendTrafficPolicy(_) => "BackendTrafficPolicy",
            Object::SecurityPolicy(_) => "SecurityPolicy",
            Object::SourceBlock(_) => "SourceBlock",
            Object::TrafficAdjustment(_) => "TrafficAdjustment",
            Object::Pod(_) => "Pod",
            Object::Node(_) => "Node",
            Object::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Object::PeerAuthentication(_) => "PeerAuthentication",
        }
    }

    /// The apiVersion the object is written out as (the first one the parser accepts).
    pub fn api_version(&self) -> &'static str {
        match self {
            Object::Ingress(_) | Object::IngressClass(_) => "networking.k8s.io/v1",
            Object::Service(_)
            | Object::Secret(_)
            | Object::Namespace(_)
            | Object::Pod(_)
            | Object::Node(_) => "v1",
            Object::EndpointSlice(_) => "discovery.k8s.io/v1",
            Object::GatewayClass(_)
            | Object::Gateway(_)
            | Object::HttpRoute(_)
            | Object::GrpcRoute(_) => "gateway.networking.k8s.io/v1",
            Object::ReferenceGrant(_) => "gateway.networking.k8s.io/v1beta1",
            Object::TcpRoute(_) | Object::TlsRoute(_) => "gateway.networking.k8s.io/v1alpha2",
            Object::BackendTrafficPolicy(_)
            | Object::SecurityPolicy(_)
            | Object::SourceBlock(_)
            | Object::TrafficAdjustment(_)
            | Object::AuthorizationPolicy(_)
            | Object::PeerAuthentication(_) => "gatehouse.dev/v1alpha1",
        }
    }

    /// The object as Kubernetes JSON, with apiVersion and kind: what the manifest parser
    /// reads back into an equal object.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        use serde_json::to_value;
        let mut v = match self {
            Object::Ingress(o) => to_value(o),
            Object::IngressClass(o) => to_value(o),
            Object::Service(o) => to_value(o),
            Object::EndpointSlice(o) => to_value(o),
            Object::Secret(o) => to_value(o),
            Object::GatewayClass(o) => to_value(o),
            Object::Gateway(o) => to_value(o),
            Object::HttpRoute(o) => to_value(o),
            Object::GrpcRoute(o) => to_value(o),
            Object::TcpRoute(o) => to_value(o),
            Object::TlsRoute(o) => to_value(o),
            Object::ReferenceGrant(o) => to_value(o),
            Object::Namespace(o) => to_value(o),
            Object::BackendTrafficPolicy(o) => to_value(o),
            Object::SecurityPolicy(o) => to_value(o),
            Object::SourceBlock(o) => to_value(o),
            Object::TrafficAdjustment(o) => to_value(o),
            Object::Pod(o) => to_value(o),
            Object::Node(o) => to_value(o),
            Object::AuthorizationPolicy(o) => to_value(o),
            Object::PeerAuthentication(o) => to_value(o),
        }?;
        if let Some(m) = v.as_object_mut() {
            m.insert("apiVersion".into(), self.api_version().into());
            m.insert("kind".into(), self.kind().into());
        }
        Ok(v)
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Ingress(o) => &o.metadata,
            Object::IngressClass(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::GatewayClass(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
            Object::TcpRoute(o) => &o.metadata,
            Object::TlsRoute(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::BackendTrafficPolicy(o) => &o.metadata,
            Object::SecurityPolicy(o) => &o.metadata,
            Object::SourceBlock(o) => &o.metadata,
            Object::TrafficAdjustment(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
        }
    }

    /// Whether this kind lives in a namespace.
    pub fn namespaced(&self) -> bool {
        !matches!(
            self,
            Object::IngressClass(_)
                | Object::GatewayClass(_)
                | Object::Namespace(_)
                | Object::Node(_)
        )
    }

    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        ObjectKey {
            kind: self.kind(),
            namespace: if self.namespaced() {
                meta.namespace
                    .clone()
                    .or_else(|| Some("default".to_string()))
            } else {
                None
            },
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// Identity of an object in the store: kind, namespace (None for cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Where an object was read from: a file, the 1-based line its document starts on, and
/// the document's text (for locating fields). Objects from the API server have none.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub file: String,
    pub start_line: usize,
    pub text: Arc<str>,
    /// Field-path prefix of the object inside its document (`items[2].` in a `List`).
    pub prefix: String,
}

/// An object as kept in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub object: Object,
    pub origin: Option<Origin>,
}

impl StoredObject {
    pub fn new(object: Object) -> Self {
        StoredObject {
            object,
            origin: None,
        }
    }

    pub fn key(&self) -> ObjectKey {
        self.object.key()
    }

    /// Namespace, defaulted to `default` for namespaced kinds.
    pub fn namespace(&self) -> &str {
        self.object
            .metadata()
            .namespace
            .as_deref()
            .unwrap_or("default")
    }

    pub fn name(&self) -> &str {
        self.object.metadata().name.as_deref().unwrap_or("")
    }

    /// Builds an error about `field` of this object, with file and line when known.
    pub fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        let key = self.key();
        let (file, line) = match &self.origin {
            Some(o) => {
                let rel = locate(&o.text, &format!("{}{}", o.prefix, field));
                (Some(o.file.clone()), Some(o.start_line + rel.unwrap_or(0)))
            }
            None => (None, None),
        };
        ConfigError {
            file,
            line,
            kind: key.kind.to_string(),
            namespace: key.namespace,
            name: key.name,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::{object_from_value, parse_manifest};

    const MORE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {gatehouse.dev/mesh: node}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, serviceAccountName: web, containers: [{name: m, image: web, ports: [{name: http, containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.1.0.5}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 192.168.0.1}]}
---
apiVersion: gatehouse.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/web"]}}], to: [{operation: {methods: [GET], paths: ["/public*"]}}]}]
---
apiVersion: gatehouse.dev/v1alpha1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: shop}
spec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}], to: [{group: "", kind: Service}]}
"#;

    /// What a controller sends (`to_value`) reads back into the same object, for every
    /// kind in the quickstart and the mesh's kinds.
    #[test]
    fn objects_survive_a_round_trip_through_json() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/quickstart");
        let mut texts: Vec<(String, String)> = std::fs::read_dir(dir)
            .expect("quickstart")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read_to_string(&p).expect("read"),
                )
            })
            .collect();
        texts.push(("more.yaml".into(), MORE.into()));
        let mut kinds = std::collections::BTreeSet::new();
        for (file, text) in texts {
            let parsed = parse_manifest(&file, &text).expect("manifest");
            for o in parsed.objects {
                let value = o.object.to_value().expect("serializes");
                let back = object_from_value(value.clone())
                    .expect("parses back")
                    .expect("a kind we read");
                assert_eq!(back.object, o.object, "{value}");
                kinds.insert(o.object.kind());
            }
        }
        assert!(kinds.len() >= 14, "{kinds:?}");
    }
}
