//! What each kind of proxy is sent: an ingress gateway the kinds the controller
//! translates for ingress (with TLS Secrets); a node proxy the mesh's kinds only (its
//! workloads, nodes, services and policies; never a Secret).

use gatehouse_sources::kubernetes::{MESH_WATCHED, WATCHED};

/// The roles a proxy may say it has.
pub const GATEWAY: &str = "gateway";
pub const NODE: &str = "node";

/// The kinds `role` is sent, or None for an unknown role.
pub fn kinds(role: &str) -> Option<Vec<&'static str>> {
    let watched = match role {
        GATEWAY => WATCHED,
        NODE => MESH_WATCHED,
        _ => return None,
    };
    Some(watched.iter().map(|k| k.kind).collect())
}

/// Every kind some role is sent.
pub fn all_kinds() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = WATCHED.iter().chain(MESH_WATCHED).map(|k| k.kind).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The order resources of a response are sent in: what others refer to (namespaces,
/// Secrets, Services and their endpoints, workloads) before what refers to them
/// (gateways, routes, policies), so a proxy never routes to a backend it lacks.
pub fn rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "Secret" => 1,
        "Service" => 2,
        "EndpointSlice" => 3,
        "Node" => 4,
        "Pod" => 5,
        "ReferenceGrant" => 6,
        "BackendTrafficPolicy" | "SecurityPolicy" | "SourceBlock" | "TrafficAdjustment" => 7,
        "AuthorizationPolicy" | "PeerAuthentication" => 8,
        "IngressClass" | "GatewayClass" => 9,
        "Gateway" => 10,
        _ => 11,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_proxies_get_no_secrets_and_gateways_get_no_pods() {
        let node = kinds(NODE).expect("node");
        assert!(node.contains(&"Pod") && node.contains(&"AuthorizationPolicy"));
        assert!(!node.contains(&"Secret"));
        let gateway = kinds(GATEWAY).expect("gateway");
        assert!(gateway.contains(&"Secret") && gateway.contains(&"HTTPRoute"));
        assert!(!gateway.contains(&"Pod"));
        assert!(kinds("sidecar-of-the-moon").is_none());
    }
}
