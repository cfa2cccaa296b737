//! Publishes the status translation computed (Ingress load-balancer addresses, Gateway
//! API conditions) to the API server with merge patches on the `status` subresource.
//! Only what changed since this writer last wrote is sent; condition transition times
//! are kept while a condition keeps its value. Route statuses keep the `parents`
//! entries of other controllers.

use crate::kubernetes::WATCHED;
use gatehouse_model::status::{stamp_conditions, without_times, StatusUpdate, Statuses};
use gatehouse_model::GATEWAY_CONTROLLER;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::Client;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

type Key = (&'static str, Option<String>, String);

pub struct StatusWriter {
    client: Client,
    field_manager: String,
    /// Last status written per object: (without times, as written).
    written: HashMap<Key, (serde_json::Value, serde_json::Value)>,
    /// Updates already written (or found equal) by the last call, by address; kept
    /// alive in `seen_keep` so an address cannot be reused. Snapshots share unchanged
    /// updates, so most of a large list is skipped without comparing any JSON.
    seen: HashSet<usize>,
    seen_keep: Vec<Arc<StatusUpdate>>,
}

/// Writes our `parents` entries of a route's status, keeping those other controllers
/// wrote: read, merge, then patch with the resourceVersion read as a precondition, and
/// read again if someone wrote in between.
async fn patch_route_status(
    api: &Api<DynamicObject>,
    name: &str,
    params: &PatchParams,
    ours: &serde_json::Value,
) -> kube::Result<()> {
    let mut attempt = 0;
    loop {
        let current = api.get_status(name).await?;
        let theirs = current
            .data
            .get("status")
            .and_then(|s| s.get("parents"))
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| {
                p.get("controllerName").and_then(serde_json::Value::as_str)
                    != Some(GATEWAY_CONTROLLER)
            })
            .cloned();
        let mut status = ours.clone();
        let parents: Vec<serde_json::Value> = theirs
            .chain(
                ours.get("parents")
                    .and_then(serde_json::Value::as_array)
                    .into_iter()
                    .flatten()
                    .cloned(),
            )
            .collect();
        status["parents"] = parents.into();
        let patch = Patch::Merge(serde_json::json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "status": status,
        }));
        match api.patch_status(name, params, &patch).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 3 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The current time as the API server writes it (RFC 3339, whole seconds).
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

impl StatusWriter {
    pub fn new(client: Client, field_manager: &str) -> Self {
        StatusWriter {
            client,
            field_manager: field_manager.to_string(),
            written: HashMap::new(),
            seen: HashSet::new(),
            seen_keep: Vec::new(),
        }
    }

    /// Forgets what was written, so everything is written again (a new leadership term).
    pub fn forget(&mut self) {
        self.written.clear();
        self.seen.clear();
        self.seen_keep.clear();
    }

    /// Writes every status that differs from the last one written; returns how many
    /// objects were patched.
    pub async fn publish(&mut self, updates: &Statuses) -> usize {
        let now = now_rfc3339();
        let mut count = 0;
        let mut seen = HashSet::with_capacity(updates.len());
        let mut seen_keep = Vec::with_capacity(updates.len());
        for shared in updates.values() {
            let addr = Arc::as_ptr(shared) as usize;
            if self.seen.contains(&addr) {
                seen.insert(addr);
                seen_keep.push(shared.clone());
                continue;
            }
            let u: &StatusUpdate = shared;
            let key: Key = (u.kind, u.namespace.clone(), u.name.clone());
            let value = u.status.value();
            let plain = without_times(&value);
            let previous = self.written.get(&key);
            if previous.is_some_and(|(p, _)| *p == plain) {
                seen.insert(addr);
                seen_keep.push(shared.clone());
                continue;
            }
            let mut status = value;
            stamp_conditions(&mut status, previous.map(|(_, w)| w), &now);
            let Some(api) = self.api(u) else { continue };
            let params = PatchParams {
                field_manager: Some(self.field_manager.clone()),
                ..Default::default()
            };
            let written = match u.kind {
                // Route status lists one entry per parent and controller: other
                // controllers' entries stay.
                "HTTPRoute" | "GRPCRoute" => {
                    patch_route_status(&api, &u.name, &params, &status).await
                }
                _ => {
                    let patch = Patch::Merge(serde_json::json!({ "status": status }));
                    api.patch_status(&u.name, &params, &patch).await.map(|_| ())
                }
            };
            match written {
                Ok(_) => {
                    count += 1;
                    self.written.insert(key, (plain, status));
                    seen.insert(addr);
                    seen_keep.push(shared.clone());
                }
                Err(e) => {
                    tracing::warn!(kind = u.kind, name = %u.name, error = %e, "status write failed")
                }
            }
        }
        self.seen = seen;
        self.seen_keep = seen_keep;
        count
    }

    fn api(&self, u: &StatusUpdate) -> Option<Api<DynamicObject>> {
        let k = WATCHED.iter().find(|k| k.kind == u.kind)?;
        let (group, version) = u
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", u.api_version));
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, u.kind),
            k.plural,
        );
        Some(match &u.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        })
    }
}
