//! Pods and Nodes as the mesh reads them: only the fields it uses (where a pod runs, its
//! address, service account, phase and named ports; a node's addresses). Every other
//! field of these large kinds is skipped while parsing, not built and kept: a cluster's
//! Pods carry whole container specs, which would cost memory per pod and the code to
//! parse them.
//! Field names follow k8s-openapi's types.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A Pod (`v1`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
}

/// A container, for its ports (a Service's `targetPort` may name one).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Container {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ContainerPort>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
}

/// A Node (`v1`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Node {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct NodeStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<NodeAddress>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct NodeAddress {
    pub address: String,
    #[serde(rename = "type")]
    pub type_: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pod_parses_to_what_the_mesh_reads() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "web",
                "containers": [{"name": "main", "image": "web:1",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}],
                "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Running", "podIP": "10.1.0.5",
                "podIPs": [{"ip": "10.1.0.5"}], "hostIP": "192.168.0.1"}
        }))
        .expect("a pod");
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.service_account_name.as_deref(), Some("web"));
        let port = &spec.containers[0].ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("http"), 8080)
        );
        let status = pod.status.expect("status");
        assert_eq!(status.pod_ip.as_deref(), Some("10.1.0.5"));
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(pod.metadata.labels.expect("labels")["app"], "web");
    }

    #[test]
    fn a_wrong_type_is_still_an_error() {
        let bad = serde_json::from_value::<Pod>(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"nodeName": 7}}));
        assert!(bad.is_err());
        let bad = serde_json::from_value::<Node>(serde_json::json!({
            "metadata": {"name": "n"}, "status": {"addresses": [{"address": "1.2.3.4"}]}}));
        assert!(bad.is_err(), "an address needs its type");
    }
}
