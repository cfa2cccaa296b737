//! Ingress (`networking.k8s.io/v1`) translation: class selection, rules and path types,
//! defaultBackend, TLS by SNI, and HTTP→HTTPS redirect for TLS hosts.

use crate::backends::{resolve, PortRef};
use crate::builder::{Builder, SectionRoutes, SortKey};
use crate::hosts::{valid_hostname, HostTable, WildcardMode};
use crate::policy::{self, Via};
use crate::routes::{PathMatch, RouteEntry};
use crate::snapshot::{
    ActionKind, BackendSet, BackendTarget, Redirect, RouteAction, Section, WeightedBackend,
};
use gatehouse_model::status::StatusUpdate;
use gatehouse_model::{Object, StoredObject, INGRESS_CONTROLLER};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Set to "false" to serve a TLS host over plain HTTP too instead of redirecting.
pub const SSL_REDIRECT_ANNOTATION: &str = "gatehouse.dev/ssl-redirect";

struct PendingEntry {
    host: Option<String>,
    key: SortKey,
    path: PathMatch,
    action: Arc<RouteAction>,
    /// The owning Ingress's id when it redirects plain HTTP to HTTPS for TLS hosts; the
    /// redirect action is made only if one of its hosts turns out to have TLS.
    redirect: Option<Arc<str>>,
    /// The Ingress has a TLS entry without hosts (so all its rules are TLS).
    hostless_tls: bool,
}

/// Which IngressClass names are ours, and which of them is the default.
fn our_classes(b: &Builder<'_>) -> (HashSet<String>, bool) {
    let mut names = HashSet::new();
    let mut has_default = false;
    for o in b.store.of_kind("IngressClass") {
        let Object::IngressClass(c) = &o.object else {
            continue;
        };
        if c.spec.as_ref().and_then(|s| s.controller.as_deref()) != Some(INGRESS_CONTROLLER) {
            continue;
        }
        names.insert(o.name().to_string());
        let default = c
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION));
        has_default |= default.map(String::as_str) == Some("true");
    }
    (names, has_default)
}

fn is_ours(ing: &Ingress, classes: &HashSet<String>, has_default: bool) -> Option<bool> {
    let class = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ing.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
                .map(String::as_str)
        });
    match class {
        Some(c) => Some(classes.contains(c)),
        None if has_default => Some(true),
        None => None,
    }
}

pub fn translate(b: &mut Builder<'_>) {
    let (classes, has_default) = our_classes(b);
    let mut ingresses: Vec<&StoredObject> = Vec::new();
    let mut any_ours = false;
    for o in candidates(b) {
        let Object::Ingress(ing) = &o.object else {
            continue;
        };
        match is_ours(ing, &classes, has_default) {
            Some(true) => {
                any_ours = true;
                ingresses.push(o);
            }
            Some(false) => {}
            None => b.warnings.push(format!(
                "Ingress {}/{} has no ingressClassName and no default IngressClass for {INGRESS_CONTROLLER}; ignored",
                o.namespace(),
                o.name()
            )),
        }
    }
    // Oldest first: ties between equal paths go to the oldest Ingress.
    ingresses.sort_by(|a, b| oldest_first(a, b));
    // The Ingress HTTP port stays bound while an IngressClass of ours exists, even
    // with no Ingress yet, so clients get a 404 rather than a refused connection.
    if !any_ours && classes.is_empty() {
        return;
    }
    let https_port = b.opts.https_addr.port();
    let mut pending = Vec::new();
    // Hosts that have a certificate (exact or wildcard), for the HTTP→HTTPS redirect.
    let mut tls_hosts = HostTable::new(WildcardMode::SingleLabel);
    let mut certs = Vec::new();
    let mut fallback: Option<Arc<RouteAction>> = None;
    for o in ingresses {
        let Object::Ingress(ing) = &o.object else {
            continue;
        };
        b.summary.ingresses += 1;
        let ns = o.namespace().to_string();
        // An incremental run compiles only the rules of hosts in scope, but still reads
        // every Ingress's TLS hosts, which decide the HTTP→HTTPS redirects.
        let in_scope = ingress_in_scope(b, o, ing);
        if in_scope && !b.opts.publish_addresses.is_empty() {
            let addresses: Vec<serde_json::Value> = b
                .opts
                .publish_addresses
                .iter()
                .map(|a| match a.parse::<std::net::IpAddr>() {
                    Ok(_) => serde_json::json!({"ip": a}),
                    Err(_) => serde_json::json!({"hostname": a}),
                })
                .collect();
            b.statuses.push(StatusUpdate {
                api_version: "networking.k8s.io/v1",
                kind: "Ingress",
                namespace: Some(ns.clone()),
                name: o.name().to_string(),
                status: serde_json::json!({"loadBalancer": {"ingress": addresses}}).into(),
            });
        }
        let id = format!("ingress/{ns}/{}", o.name());
        let Some(spec) = &ing.spec else { continue };
        let mut hostless_tls = false;
        let ssl_redirect = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SSL_REDIRECT_ANNOTATION))
            .map(String::as_str)
            != Some("false");
        let redirect: Option<Arc<str>> = ssl_redirect.then(|| Arc::from(id.as_str()));
        for (ti, t) in spec.tls.iter().flatten().enumerate() {
            let Some(secret) = &t.secret_name else {
                continue;
            };
            let Some(key) = b.cert(&ns, secret) else {
                if !in_scope {
                    continue;
                }
                b.warnings.push(format!("Ingress {ns}/{}: spec.tls[{ti}].secretName: TLS Secret {ns}/{secret} not found", o.name()));
                continue;
            };
            let hosts = t.hosts.clone().unwrap_or_default();
            if hosts.is_empty() {
                // The default certificate: this Ingress's own rules redirect.
                certs.push((None, key.clone()));
                hostless_tls = true;
            }
            for h in hosts {
                tls_hosts.insert(Some(&h), ());
                certs.push((Some(h), key.clone()));
            }
        }
        if !in_scope {
            continue;
        }
        let protection =
            b.security
                .for_ingress(o, ing.metadata.annotations.as_ref(), b.opts, &mut b.errors);
        let via = Via {
            route: policy::from_annotations(o, ing.metadata.annotations.as_ref(), &mut b.errors),
            gateway: None,
            protection,
        };
        // An incremental run keeps the previous fallback (a change to a defaultBackend
        // always takes a full translation).
        if let Some(db) = spec.default_backend.as_ref().filter(|_| b.scope.is_none()) {
            let action = backend_action(
                b,
                o,
                db,
                "spec.defaultBackend",
                format!("{id}/default"),
                &via,
            );
            match (&fallback, action) {
                (None, Some(a)) => fallback = Some(a),
                (Some(_), Some(_)) => b.warnings.push(format!(
                    "Ingress {ns}/{}: spec.defaultBackend ignored: an older Ingress already sets one",
                    o.name()
                )),
                _ => {}
            }
        }
        let mut own_rules = Vec::new();
        for (ri, rule) in spec.rules.iter().flatten().enumerate() {
            let host = rule.host.clone().filter(|h| !h.is_empty());
            if !b.in_scope(host.as_deref()) {
                continue;
            }
            if let Some(h) = &host {
                if !valid_hostname(h, true) {
                    b.errors.push(o.error(
                        &format!("spec.rules[{ri}].host"),
                        format!("invalid hostname {h:?}"),
                    ));
                    continue;
                }
            }
            let Some(http) = &rule.http else { continue };
            for (pi, p) in http.paths.iter().enumerate() {
                let field = format!("spec.rules[{ri}].http.paths[{pi}]");
                let value = p.path.clone().unwrap_or_else(|| "/".into());
                let path = match p.path_type.as_str() {
                    "Exact" | "Prefix" | "ImplementationSpecific" if !value.starts_with('/') => {
                        b.errors.push(o.error(
                            &format!("{field}.path"),
                            format!("path {value:?} must start with '/'"),
                        ));
                        continue;
                    }
                    "Exact" => PathMatch::Exact(value.clone()),
                    "Prefix" | "ImplementationSpecific" => {
                        PathMatch::Prefix(value.trim_end_matches('/').to_string())
                    }
                    other => {
                        b.errors.push(o.error(
                            &format!("{field}.pathType"),
                            format!("unsupported pathType {other:?}: must be Exact, Prefix or ImplementationSpecific"),
                        ));
                        continue;
                    }
                };
                let Some(action) = backend_action(
                    b,
                    o,
                    &p.backend,
                    &format!("{field}.backend"),
                    id.clone(),
                    &via,
                ) else {
                    continue;
                };
                let (class, len) = match &path {
                    PathMatch::Exact(v) => (0, v.len()),
                    PathMatch::Prefix(v) => (1, v.len()),
                    PathMatch::Regex(_) => (2, 0),
                };
                own_rules.push(PendingEntry {
                    host: host.clone(),
                    key: SortKey(
                        vec![class, -(len as i64)],
                        format!("{:020}/{ns}/{}", created(o), o.name()),
                        vec![ri as i64, pi as i64],
                    ),
                    path,
                    action,
                    redirect: redirect.clone(),
                    hostless_tls: false,
                });
            }
        }
        for mut e in own_rules {
            e.hostless_tls = hostless_tls;
            pending.push(e);
        }
    }
    let mut http = SectionRoutes::default();
    let mut https = SectionRoutes::default();
    let mut redirects: HashMap<Arc<str>, Arc<RouteAction>> = HashMap::new();
    for e in pending {
        let has_cert = |h: &str| match h.starts_with("*.") {
            true => tls_hosts.contains_key(Some(h)),
            false => tls_hosts.lookup(h).is_some(),
        };
        let tls = e.hostless_tls || e.host.as_deref().is_some_and(has_cert);
        let plain_action = match (&e.redirect, tls) {
            (Some(id), true) => redirects
                .entry(id.clone())
                .or_insert_with(|| {
                    b.action(RouteAction {
                        id: 0,
                        name: Arc::from(format!("{id}/https-redirect")),
                        request_headers: None,
                        response_headers: None,
                        kind: ActionKind::Redirect(Redirect {
                            scheme: Some("https".into()),
                            hostname: None,
                            path: None,
                            port: (https_port != 443).then_some(https_port),
                            status: 308,
                        }),
                        timeout: None,
                        backend_timeout: None,
                        mirrors: Vec::new(),
                        protection: Default::default(),
                    })
                })
                .clone(),
            _ => e.action.clone(),
        };
        let entry = |action| RouteEntry {
            path: e.path.clone(),
            method: None,
            headers: vec![],
            query: vec![],
            action,
        };
        http.add(e.host.clone(), e.key.clone(), entry(plain_action));
        https.add(e.host.clone(), e.key.clone(), entry(e.action.clone()));
    }
    let (hosts, n) = http.build(WildcardMode::SingleLabel);
    b.summary.routes += n;
    let http_addr = b.opts.http_addr;
    let section = Section {
        name: "ingress-http".into(),
        listener_port: http_addr.port(),
        https: false,
        hosts,
        fallback: fallback.clone(),
    };
    if let Err(e) = b.add_section(http_addr, None, section, vec![], "Ingress http".into()) {
        b.warnings
            .push(format!("Ingress HTTP listener not bound: {e}"));
    }
    if !certs.is_empty() {
        let (hosts, _) = https.build(WildcardMode::SingleLabel);
        let https_addr = b.opts.https_addr;
        let section = Section {
            name: "ingress-https".into(),
            listener_port: https_addr.port(),
            https: true,
            hosts,
            fallback,
        };
        if let Err(e) = b.add_section(https_addr, None, section, certs, "Ingress https".into()) {
            b.warnings
                .push(format!("Ingress HTTPS listener not bound: {e}"));
        }
    }
}

/// The Ingresses a run looks at: all of them, or in an incremental run those naming a
/// host in scope (in a rule, or in TLS entries that cover it) and those that changed.
fn candidates<'a>(b: &Builder<'a>) -> Vec<&'a StoredObject> {
    let Some(scope) = b.scope else {
        return b.store.of_kind("Ingress").collect();
    };
    let store = b.store;
    let mut v: Vec<&'a StoredObject> = Vec::new();
    for h in &scope.hosts {
        v.extend(
            store
                .routes_naming(h)
                .filter(|o| o.object.kind() == "Ingress"),
        );
        v.extend(store.tls_naming(h));
        if let Some((_, parent)) = h.split_once('.') {
            v.extend(store.tls_naming(&format!("*.{parent}")));
        }
    }
    v.extend(
        scope
            .objects
            .iter()
            .filter(|k| k.kind == "Ingress")
            .filter_map(|k| store.get(k)),
    );
    v.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    v.dedup_by(|a, b| std::ptr::eq(*a, *b));
    v
}

/// Whether an incremental run compiles (some of) this Ingress; always in a full run.
fn ingress_in_scope(b: &Builder<'_>, o: &StoredObject, ing: &Ingress) -> bool {
    let Some(scope) = b.scope else { return true };
    ing.spec
        .iter()
        .flat_map(|s| s.rules.iter().flatten())
        .any(|r| b.in_scope(r.host.as_deref().filter(|h| !h.is_empty())))
        || scope.changed(o)
}

/// Oldest first, then by namespace and name: the order ties are broken in.
pub fn oldest_first(a: &StoredObject, b: &StoredObject) -> std::cmp::Ordering {
    (created(a), a.namespace(), a.name()).cmp(&(created(b), b.namespace(), b.name()))
}

/// Creation time in seconds since the epoch (0 when unset), for oldest-first ordering.
pub fn created(o: &StoredObject) -> i64 {
    o.object
        .metadata()
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

fn backend_action(
    b: &mut Builder<'_>,
    o: &StoredObject,
    be: &IngressBackend,
    field: &str,
    name: String,
    via: &Via,
) -> Option<Arc<RouteAction>> {
    let ns = o.namespace().to_string();
    let target = match (&be.service, &be.resource) {
        (Some(svc), _) => {
            let port = match svc.port.as_ref().map(|p| (p.number, p.name.as_deref())) {
                Some((Some(n), _)) => PortRef::Number(n),
                Some((None, Some(n))) => PortRef::Name(n),
                _ => {
                    b.errors.push(o.error(
                        &format!("{field}.service.port"),
                        "port.number or port.name is required",
                    ));
                    return None;
                }
            };
            match resolve(b, &ns, &svc.name, port, via) {
                Ok(c) => BackendTarget::Cluster(c),
                Err(reason) => {
                    b.warnings
                        .push(format!("Ingress {ns}/{}: {field}: {reason}", o.name()));
                    BackendTarget::Invalid {
                        status: 503,
                        reason,
                    }
                }
            }
        }
        (None, Some(_)) => BackendTarget::Invalid {
            status: 503,
            reason: "resource backends are not supported".into(),
        },
        (None, None) => {
            b.errors.push(o.error(field, "backend.service is required"));
            return None;
        }
    };
    Some(b.action(RouteAction {
        id: 0,
        name: Arc::from(name),
        request_headers: None,
        response_headers: None,
        kind: ActionKind::Forward {
            rewrite: None,
            backends: BackendSet::new(vec![WeightedBackend { weight: 1, target }]),
        },
        timeout: None,
        backend_timeout: None,
        mirrors: Vec::new(),
        protection: via.protection.clone(),
    }))
}
