//! `Object`: one typed Kubernetes object of a kind Gatehouse reads, with where it came from.

use crate::gateway::{
    Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant, TcpRoute, TlsRoute,
};
use crate::locate::locate;
use crate::mesh::{AuthorizationPolicy, PeerAuthentication};
use crate::policy::{BackendTrafficPolicy, SecurityPolicy, SourceBlock};
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
    Pod(Pod),
    Node(Node),
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
}

/// The kind names of every [`Object`] variant.
pub const KINDS: [&str; 20] = [
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
            Object::Pod(_) => "Pod",
            Object::Node(_) => "Node",
            Object::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Object::PeerAuthentication(_) => "PeerAuthentication",
        }
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
