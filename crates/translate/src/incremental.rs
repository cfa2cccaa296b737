//! Incremental translation. When a change touches only routes (Ingress, HTTPRoute,
//! GRPCRoute),
//! Services and EndpointSlices, only the hostnames it touches are compiled again and
//! spliced into the previous Snapshot; every other host keeps its compiled route table.
//! Anything else (classes, Gateways, Secrets, grants, TLS or default backends of
//! Ingresses, routes without exact hostnames) needs a full translation, and [`plan`]
//! says so. The result equals what a full translation gives for the hosts in scope;
//! what only a full run computes (Gateway attached-route counts, object totals, unused
//! clusters dropped) waits for the next one.

use crate::builder::Builder;
use crate::hosts::{HostTable, WildcardMode};
use crate::snapshot::{BoundPort, Section, Snapshot};
use crate::TranslateOptions;
use gatehouse_model::store::route_hostnames;
use gatehouse_model::{Object, ObjectKey, ObjectStore, StoredObject};
use k8s_openapi::api::networking::v1::IngressBackend;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// What an incremental run recompiles.
#[derive(Debug, Default, Clone)]
pub struct Scope {
    /// Host keys (lowercase) whose route tables are rebuilt.
    pub hosts: HashSet<String>,
    /// Services that changed: their clusters are built afresh.
    pub services: HashSet<(String, String)>,
    /// Route objects that changed (their statuses are replaced).
    pub objects: BTreeSet<ObjectKey>,
}

impl Scope {
    /// Whether the object `kind namespace/name` is one of the changed ones (without
    /// building a key: this is asked of every route in the store).
    pub fn changed(&self, o: &StoredObject) -> bool {
        let kind = o.object.kind();
        self.objects.iter().any(|k| {
            k.kind == kind
                && k.name == o.name()
                && k.namespace.as_deref().is_none_or(|ns| ns == o.namespace())
        })
    }

    pub fn contains_host(&self, host: &str) -> bool {
        self.hosts.contains(crate::hosts::lowercase(host).as_ref())
    }
}

/// Changed objects with their previous version (None: newly created).
pub type Changes = BTreeMap<ObjectKey, Option<Arc<StoredObject>>>;

/// Decides whether `changes` can be applied incrementally to a Snapshot of the store as
/// it was before them, and over which scope; `Err` says why a full translation is due.
pub fn plan(store: &ObjectStore, changes: &Changes) -> Result<Scope, String> {
    let mut scope = Scope::default();
    for (key, old) in changes {
        let new = store.get(key);
        let old = old.as_deref();
        match key.kind {
            "EndpointSlice" => {}
            "Service" => {
                let ns = key.namespace.clone().unwrap_or_default();
                scope.services.insert((ns, key.name.clone()));
            }
            "Ingress" => {
                if ingress_globals(old) != ingress_globals(new) {
                    return Err(format!("{key}: TLS or defaultBackend changed"));
                }
                for o in [old, new].into_iter().flatten() {
                    route_hosts(o, &mut scope.hosts)?;
                }
                scope.objects.insert(key.clone());
            }
            "HTTPRoute" | "GRPCRoute" => {
                for o in [old, new].into_iter().flatten() {
                    route_hosts(o, &mut scope.hosts)?;
                }
                scope.objects.insert(key.clone());
            }
            other => return Err(format!("{other} {key} changed")),
        }
    }
    if !scope.services.is_empty() {
        users_of_services(store, &mut scope)?;
    }
    Ok(scope)
}

/// The parts of an Ingress that reach beyond its own hosts.
fn ingress_globals(o: Option<&StoredObject>) -> (Option<String>, Option<&IngressBackend>) {
    let Some(Object::Ingress(ing)) = o.map(|o| &o.object) else {
        return (None, None);
    };
    let spec = ing.spec.as_ref();
    let tls = spec
        .and_then(|s| s.tls.as_ref())
        .filter(|t| !t.is_empty())
        .map(|t| format!("{t:?}"));
    (tls, spec.and_then(|s| s.default_backend.as_ref()))
}

/// Adds the hosts a route object's entries live under, or says why they cannot be named
/// (an Ingress rule without host, a Gateway API route without exact hostnames: those
/// land under every listener's name).
fn route_hosts(o: &StoredObject, hosts: &mut HashSet<String>) -> Result<(), String> {
    let (names, _, open) = route_hostnames(o);
    if open {
        return Err(format!("{}: no exact hostnames", o.key()));
    }
    if names.iter().any(String::is_empty) {
        return Err(format!("{}: a rule without host", o.key()));
    }
    hosts.extend(names);
    Ok(())
}

/// Adds the hosts of every route that uses a changed Service.
fn users_of_services(store: &ObjectStore, scope: &mut Scope) -> Result<(), String> {
    let mut hosts = HashSet::new();
    for (ns, name) in &scope.services {
        for o in store.routes_using(ns, name) {
            match &o.object {
                Object::Ingress(ing) => {
                    let default = ing.spec.as_ref().and_then(|s| s.default_backend.as_ref());
                    let svc = default.and_then(|d| d.service.as_ref());
                    if svc.is_some_and(|s| s.name == *name && o.namespace() == ns) {
                        return Err(format!(
                            "{}: defaultBackend uses a changed Service",
                            o.key()
                        ));
                    }
                    route_hosts(o, &mut hosts)?;
                }
                _ => route_hosts(o, &mut hosts)?,
            }
        }
    }
    scope.hosts.extend(hosts);
    Ok(())
}

/// Compiles the hosts in `scope` from `store` and splices them into `prev`. `Err` says
/// why it could not (errors in the objects in scope, or a change of listeners): the
/// caller then runs a full translation, which judges the objects.
pub fn translate_scoped(
    store: &ObjectStore,
    opts: &TranslateOptions,
    prev: &Snapshot,
    scope: &Scope,
    version: u64,
) -> Result<Snapshot, String> {
    let mut b = Builder::scoped(store, opts, scope, prev);
    crate::ingress::translate(&mut b);
    crate::gateway::translate(&mut b);
    // Errors of objects outside the scope (a Gateway, say) were judged by the last full
    // translation; the listeners check below catches any effect they would have.
    b.errors
        .retain(|e| matches!(e.kind.as_str(), "Ingress" | "HTTPRoute" | "GRPCRoute"));
    let part = b.finish(version).map_err(|errors| {
        format!(
            "{} error(s) in the changed routes, first: {}",
            errors.len(),
            errors[0]
        )
    })?;
    splice(prev, part, scope)
}

/// `prev` with the route tables of the hosts in scope taken from `part`.
fn splice(prev: &Snapshot, part: Snapshot, scope: &Scope) -> Result<Snapshot, String> {
    if prev.ports.len() != part.ports.len() {
        return Err("the set of listeners changed".into());
    }
    let mut ports = Vec::with_capacity(prev.ports.len());
    for (old, new) in prev.ports.iter().zip(&part.ports) {
        if old.addr != new.addr
            || old.tls.is_some() != new.tls.is_some()
            || old.l4.is_some() != new.l4.is_some()
        {
            return Err(format!("listener {} changed", old.addr));
        }
        let old_sections = old.sections.entries();
        if old_sections.len() != new.sections.entries().len() {
            return Err(format!("the sections of {} changed", old.addr));
        }
        let mut sections = HostTable::new(WildcardMode::MultiLabel);
        for (key, section) in old_sections {
            let Some(fresh) = new.sections.get(Some(&key)) else {
                return Err(format!("section {key} of {} changed", old.addr));
            };
            let mut hosts = section.hosts.clone();
            for h in &scope.hosts {
                hosts.remove(Some(h));
                if let Some(t) = fresh.hosts.get(Some(h)) {
                    hosts.insert(Some(h), t.clone());
                }
            }
            sections.insert(
                Some(&key),
                Arc::new(Section {
                    name: section.name.clone(),
                    listener_port: section.listener_port,
                    https: section.https,
                    hosts,
                    fallback: section.fallback.clone(),
                }),
            );
        }
        ports.push(Arc::new(BoundPort {
            addr: old.addr,
            l4: old.l4.clone(),
            tls: old.tls.clone(),
            sections,
            owners: old.owners.clone(),
        }));
    }
    let mut clusters = prev.clusters.clone();
    clusters.extend(part.clusters);
    // Statuses of the changed routes and of the routes recompiled come from this run.
    let mut statuses = prev.statuses.clone();
    for k in &scope.objects {
        statuses.remove(&(k.kind, k.namespace.clone(), k.name.clone()));
    }
    statuses.extend(part.statuses);
    let mut warnings = prev.warnings.clone();
    let seen: HashSet<&String> = prev.warnings.iter().collect();
    let fresh: Vec<String> = part
        .warnings
        .iter()
        .filter(|w| !seen.contains(w))
        .cloned()
        .collect();
    warnings.extend(fresh);
    let summary = prev.summary.clone();
    Ok(Snapshot {
        version: part.version,
        ports,
        clusters,
        route_names: part.route_names,
        warnings,
        summary,
        statuses,
        blocks: prev.blocks.clone(),
        surge: prev.surge.clone(),
        adaptive: prev.adaptive.clone(),
        // The rules compiled again bring their guards; the others keep theirs.
        canaries: prev
            .canaries
            .iter()
            .filter(|g| {
                !part
                    .canaries
                    .iter()
                    .any(|n| (&n.namespace, &n.route) == (&g.namespace, &g.route))
                    && !scope.objects.iter().any(|k| {
                        k.kind == "HTTPRoute"
                            && k.name == g.route
                            && k.namespace.as_deref() == Some(g.namespace.as_str())
                    })
            })
            .cloned()
            .chain(part.canaries.iter().cloned())
            .collect(),
    })
}
