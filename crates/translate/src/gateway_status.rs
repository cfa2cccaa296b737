//! Gateway API status as translation sees it: GatewayClass acceptance, Gateway and
//! listener conditions (Accepted, Programmed, ResolvedRefs, Conflicted, attached route
//! counts) and HTTPRoute/GRPCRoute parent conditions (Accepted, ResolvedRefs), with the reasons
//! the spec names.

use gatehouse_model::gateway::ParentReference;
use gatehouse_model::status::{condition, StatusUpdate};
use gatehouse_model::{StoredObject, GATEWAY_CONTROLLER};
use serde_json::{json, Value};

pub const GROUP: &str = "gateway.networking.k8s.io";

/// A problem with its spec reason, e.g. ("UnsupportedProtocol", "protocol UDP ...").
pub type Problem = (&'static str, String);

/// What translation learned about one listener.
#[derive(Debug, Default)]
pub struct ListenerState {
    pub name: String,
    pub supported: bool,
    pub not_accepted: Option<Problem>,
    pub bad_refs: Option<Problem>,
    pub conflicted: Option<String>,
    pub programmed: bool,
    pub attached: u32,
    /// Route kinds the listener takes: those of allowedRoutes.kinds that Gatehouse
    /// serves on its protocol, or all of those.
    pub kinds: Vec<&'static str>,
}

/// What translation learned about one Gateway of ours.
#[derive(Debug)]
pub struct GatewayState {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub listeners: Vec<ListenerState>,
}

fn address_json(a: &str) -> Value {
    let kind = if a.parse::<std::net::IpAddr>().is_ok() {
        "IPAddress"
    } else {
        "Hostname"
    };
    json!({"type": kind, "value": a})
}

impl GatewayState {
    pub fn status(&self, addresses: &[String]) -> StatusUpdate {
        let g = self.generation;
        let listeners: Vec<Value> = self
            .listeners
            .iter()
            .map(|l| {
                let accepted = match &l.not_accepted {
                    None => condition("Accepted", true, "Accepted", "", g),
                    Some((reason, msg)) => condition("Accepted", false, reason, msg, g),
                };
                let refs = match &l.bad_refs {
                    None => condition("ResolvedRefs", true, "ResolvedRefs", "", g),
                    Some((reason, msg)) => condition("ResolvedRefs", false, reason, msg, g),
                };
                let conflicted = match &l.conflicted {
                    None => condition("Conflicted", false, "NoConflicts", "", g),
                    Some(msg) => condition("Conflicted", true, "HostnameConflict", msg, g),
                };
                let programmed = if l.programmed {
                    condition("Programmed", true, "Programmed", "", g)
                } else {
                    condition(
                        "Programmed",
                        false,
                        "Invalid",
                        "listener is not served; see the other conditions",
                        g,
                    )
                };
                let kinds: Vec<Value> = match l.supported {
                    true => l
                        .kinds
                        .iter()
                        .map(|k| json!({"group": GROUP, "kind": k}))
                        .collect(),
                    false => vec![],
                };
                json!({
                    "name": l.name,
                    "supportedKinds": kinds,
                    "attachedRoutes": l.attached,
                    "conditions": [accepted, programmed, refs, conflicted],
                })
            })
            .collect();
        let any_programmed = self.listeners.iter().any(|l| l.programmed);
        let programmed = if any_programmed {
            condition("Programmed", true, "Programmed", "", g)
        } else {
            condition("Programmed", false, "Invalid", "no listener is served", g)
        };
        StatusUpdate {
            api_version: "gateway.networking.k8s.io/v1",
            kind: "Gateway",
            namespace: Some(self.namespace.clone()),
            name: self.name.clone(),
            status: json!({
                "addresses": addresses.iter().map(|a| address_json(a)).collect::<Vec<_>>(),
                "conditions": [condition("Accepted", true, "Accepted", "", g), programmed],
                "listeners": listeners,
            })
            .into(),
        }
    }
}

pub fn gateway_class_status(o: &StoredObject) -> StatusUpdate {
    let g = o.object.metadata().generation;
    StatusUpdate {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "GatewayClass",
        namespace: None,
        name: o.name().to_string(),
        status: json!({"conditions": [condition("Accepted", true, "Accepted", "handled by Gatehouse", g)]})
            .into(),
    }
}

/// One parentRef's outcome for a route.
pub struct ParentOutcome<'a> {
    pub parent: &'a ParentReference,
    pub not_accepted: Option<Problem>,
}

pub fn route_status(
    o: &StoredObject,
    parents: &[ParentOutcome<'_>],
    bad_refs: Option<&Problem>,
) -> StatusUpdate {
    let g = o.object.metadata().generation;
    let parents: Vec<Value> = parents
        .iter()
        .map(|p| {
            let accepted = match &p.not_accepted {
                None => condition("Accepted", true, "Accepted", "", g),
                Some((reason, msg)) => condition("Accepted", false, reason, msg, g),
            };
            let refs = match bad_refs {
                None => condition("ResolvedRefs", true, "ResolvedRefs", "", g),
                Some((reason, msg)) => condition("ResolvedRefs", false, reason, msg, g),
            };
            json!({
                "parentRef": serde_json::to_value(p.parent).unwrap_or_default(),
                "controllerName": GATEWAY_CONTROLLER,
                "conditions": [accepted, refs],
            })
        })
        .collect();
    StatusUpdate {
        api_version: "gateway.networking.k8s.io/v1",
        kind: o.object.kind(),
        namespace: Some(o.namespace().to_string()),
        name: o.name().to_string(),
        status: json!({"parents": parents}).into(),
    }
}
