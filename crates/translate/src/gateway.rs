//! Gateway API translation: GatewayClass/Gateway listeners (HTTP, HTTPS), HTTPRoute
//! attachment (parentRefs, sectionName, port, allowedRoutes, hostname intersection),
//! matches with spec precedence, the core filters, weighted backendRefs, ReferenceGrant.

use crate::backends::{resolve_with, PortRef};
use crate::builder::{Builder, L4Listener, SectionRoutes, SortKey};
use crate::duration::parse_duration;
use crate::gateway_status::{
    gateway_class_status, route_status, GatewayState, ListenerState, ParentOutcome, Problem,
};
use crate::grpc_route::{as_http_route, MatchRanks};
use crate::hosts::{intersect, valid_hostname, WildcardMode};
use crate::ingress::{created, oldest_first};
use crate::labels::selector_matches;
use crate::policy::Via;
use crate::routes::{PathMatch, RouteEntry, StrMatch};
use crate::snapshot::UpstreamProtocol;
use crate::snapshot::{
    ActionKind, BackendSet, BackendTarget, HeaderModifier, Mirror, PathModifier, Redirect,
    RouteAction, Section, UrlRewrite, WeightedBackend,
};
use gatehouse_model::gateway::{
    AllowedRoutes, HttpHeaderFilter, HttpPathModifier, HttpRoute, HttpRouteRule, L4RouteSpec,
};
use gatehouse_model::{Object, ObjectKey, StoredObject, GATEWAY_CONTROLLER};
use regex::Regex;
use rustls::sign::CertifiedKey;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::gateway_status::GROUP;

struct ListenerInfo {
    /// Index of its Gateway in the states, and of itself in that Gateway.
    gw: usize,
    idx: usize,
    attached: u32,
    gw_ns: String,
    gw_name: String,
    name: String,
    hostname: Option<String>,
    port: u16,
    https: bool,
    /// TCP or TLS passthrough: routed at L4, by TCPRoutes or TLSRoutes.
    l4: Option<L4Kind>,
    /// Route kinds it takes.
    kinds: Vec<&'static str>,
    addr: SocketAddr,
    allowed: Option<AllowedRoutes>,
    certs: Vec<(Option<String>, Arc<CertifiedKey>)>,
    routes: SectionRoutes,
    /// L4 backends: all connections (TCP), or by hostname (TLS), first route wins.
    l4_routes: Vec<(Option<String>, Arc<BackendSet>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4Kind {
    Tcp,
    TlsPassthrough,
}

/// A compiled match of one rule, ready to be placed under any hostname.
struct CompiledMatch {
    key: SortKey,
    entry: RouteEntry,
}

pub fn translate(b: &mut Builder<'_>) {
    let classes: HashSet<String> = b
        .store
        .of_kind("GatewayClass")
        .filter(|o| matches!(&o.object, Object::GatewayClass(c) if c.spec.controller_name == GATEWAY_CONTROLLER))
        .map(|o| o.name().to_string())
        .collect();
    for o in b.store.of_kind("GatewayClass") {
        if classes.contains(o.name()) && b.scope.is_none() {
            b.statuses.push(gateway_class_status(o));
        }
    }
    let mut listeners = Vec::new();
    let mut states: Vec<GatewayState> = Vec::new();
    let gateways: Vec<&StoredObject> = b.store.of_kind("Gateway").collect();
    for o in gateways {
        let Object::Gateway(gw) = &o.object else {
            continue;
        };
        if !classes.contains(&gw.spec.gateway_class_name) {
            continue;
        }
        b.summary.gateways += 1;
        let ns = o.namespace().to_string();
        let gi = states.len();
        states.push(GatewayState {
            namespace: ns.clone(),
            name: o.name().to_string(),
            generation: gw.metadata.generation,
            listeners: Vec::new(),
        });
        for (li, l) in gw.spec.listeners.iter().enumerate() {
            let mut state = ListenerState {
                name: l.name.clone(),
                supported: true,
                ..Default::default()
            };
            if let Some(mut info) = listener(b, o, &ns, li, l, &mut state) {
                info.gw = gi;
                info.idx = li;
                listeners.push(info);
            }
            states[gi].listeners.push(state);
        }
    }
    let ours: HashSet<(String, String)> = states
        .iter()
        .map(|g| (g.namespace.clone(), g.name.clone()))
        .collect();
    let mut routes: Vec<&StoredObject> = route_candidates(b, "HTTPRoute")
        .into_iter()
        .chain(route_candidates(b, "GRPCRoute"))
        .collect();
    // L4 routes: their changes always take a full translation.
    if b.scope.is_none() {
        routes.extend(b.store.of_kind("TCPRoute"));
        routes.extend(b.store.of_kind("TLSRoute"));
    }
    routes.sort_by(|a, b| oldest_first(a, b));
    for o in routes {
        match &o.object {
            Object::HttpRoute(route) => attach_route(b, o, route, None, &mut listeners, &ours),
            Object::GrpcRoute(g) => {
                if let Some((route, ranks)) = as_http_route(b, o, g) {
                    attach_route(b, o, &route, Some(&ranks), &mut listeners, &ours);
                }
            }
            Object::TcpRoute(r) => attach_l4_route(b, o, &r.spec, &mut listeners, &ours),
            Object::TlsRoute(r) => attach_l4_route(b, o, &r.spec, &mut listeners, &ours),
            _ => {}
        }
    }
    for l in listeners {
        if let Some(kind) = l.l4 {
            let owner = format!("Gateway {}/{} listener {}", l.gw_ns, l.gw_name, l.name);
            let state = &mut states[l.gw].listeners[l.idx];
            state.attached = l.attached;
            let routes = match kind {
                L4Kind::Tcp => L4Listener::Tcp(
                    l.l4_routes
                        .into_iter()
                        .next()
                        .map(|(_, set)| set)
                        .unwrap_or_default(),
                ),
                L4Kind::TlsPassthrough => L4Listener::Tls(l.l4_routes),
            };
            match b.add_l4(l.addr, l.hostname.as_deref(), routes, owner.clone()) {
                Ok(()) => state.programmed = true,
                Err(e) => {
                    b.warnings.push(format!("{owner} not programmed: {e}"));
                    state.conflicted = Some(e);
                }
            }
            continue;
        }
        let (hosts, n) = l.routes.build(WildcardMode::MultiLabel);
        b.summary.routes += n;
        let section = Section {
            name: format!("gateway/{}/{}/{}", l.gw_ns, l.gw_name, l.name),
            listener_port: l.port,
            https: l.https,
            hosts,
            fallback: None,
        };
        let owner = format!("Gateway {}/{} listener {}", l.gw_ns, l.gw_name, l.name);
        let state = &mut states[l.gw].listeners[l.idx];
        state.attached = l.attached;
        match b.add_section(
            l.addr,
            l.hostname.as_deref(),
            section,
            l.certs,
            owner.clone(),
        ) {
            Ok(()) => state.programmed = true,
            Err(e) => {
                b.warnings.push(format!("{owner} not programmed: {e}"));
                state.conflicted = Some(e);
            }
        }
    }
    // An incremental run sees only some routes, so it cannot count attached routes:
    // Gateway status waits for the next full translation.
    if b.scope.is_some() {
        return;
    }
    let addresses = b.opts.publish_addresses.clone();
    for g in &states {
        b.statuses.push(g.status(&addresses));
    }
}

/// The routes of `kind` a run looks at: all of them, or in an incremental run those
/// naming a host in scope, those without exact hostnames, and those that changed.
fn route_candidates<'a>(b: &Builder<'a>, kind: &'static str) -> Vec<&'a StoredObject> {
    let Some(scope) = b.scope else {
        return b.store.of_kind(kind).collect();
    };
    let store = b.store;
    let mut v: Vec<&'a StoredObject> = scope
        .hosts
        .iter()
        .flat_map(|h| store.routes_naming(h))
        .chain(store.open_routes())
        .chain(scope.objects.iter().filter_map(|k| store.get(k)))
        .filter(|o| o.object.kind() == kind)
        .collect();
    v.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    v.dedup_by(|a, b| std::ptr::eq(*a, *b));
    v
}

fn listener(
    b: &mut Builder<'_>,
    o: &StoredObject,
    ns: &str,
    li: usize,
    l: &gatehouse_model::gateway::Listener,
    state: &mut ListenerState,
) -> Option<ListenerInfo> {
    let field = format!("spec.listeners[{li}]");
    if let Some(h) = &l.hostname {
        if !valid_hostname(h, true) {
            b.errors.push(o.error(
                &format!("{field}.hostname"),
                format!("invalid hostname {h:?}"),
            ));
            return None;
        }
    }
    let Ok(port) =
        u16::try_from(l.port)
            .map_err(|_| ())
            .and_then(|p| if p == 0 { Err(()) } else { Ok(p) })
    else {
        b.errors.push(o.error(
            &format!("{field}.port"),
            format!("port {} out of range 1-65535", l.port),
        ));
        return None;
    };
    let (https, l4) = match l.protocol.as_str() {
        "HTTP" => (false, None),
        "HTTPS" => (true, None),
        "TCP" => (false, Some(L4Kind::Tcp)),
        "TLS" => {
            let mode = l
                .tls
                .as_ref()
                .and_then(|t| t.mode.as_deref())
                .unwrap_or("Terminate");
            if mode != "Passthrough" {
                b.warnings.push(format!(
                    "Gateway {ns}/{} listener {}: TLS listeners support tls.mode Passthrough only; not programmed",
                    o.name(),
                    l.name
                ));
                state.kinds = Vec::new();
                state.not_accepted = Some((
                    "UnsupportedValue",
                    format!("tls.mode {mode} is not supported on TLS listeners: use Passthrough (or an HTTPS listener to terminate)"),
                ));
                return None;
            }
            (false, Some(L4Kind::TlsPassthrough))
        }
        other => {
            b.warnings.push(format!(
                "Gateway {ns}/{} listener {}: protocol {other} is not supported yet; not programmed",
                o.name(),
                l.name
            ));
            state.supported = false;
            state.not_accepted = Some((
                "UnsupportedProtocol",
                format!("protocol {other} is not supported yet"),
            ));
            return None;
        }
    };
    state.kinds = route_kinds(l, state);
    let mut certs = Vec::new();
    if https {
        let Some(tls) = &l.tls else {
            b.errors
                .push(o.error(&field, "HTTPS listener needs tls.certificateRefs"));
            return None;
        };
        if tls.mode.as_deref().is_some_and(|m| m != "Terminate") {
            b.warnings.push(format!(
                "Gateway {ns}/{} listener {}: tls.mode {:?} is not supported on HTTPS",
                o.name(),
                l.name,
                tls.mode
            ));
            state.not_accepted = Some((
                "UnsupportedValue",
                format!("tls.mode {:?} is not supported on HTTPS", tls.mode),
            ));
            return None;
        }
        for (ci, r) in tls.certificate_refs.iter().enumerate() {
            let kind_ok = r.group.as_deref().unwrap_or("").is_empty()
                && r.kind.as_deref().unwrap_or("Secret") == "Secret";
            let target_ns = r.namespace.clone().unwrap_or_else(|| ns.to_string());
            let problem = if !kind_ok {
                Some("only core Secrets are supported".to_string())
            } else if target_ns != ns
                && !reference_granted(b, "Gateway", ns, "Secret", &target_ns, &r.name)
            {
                Some(format!(
                    "no ReferenceGrant in {target_ns} allows Gateways in {ns} to use Secret {}",
                    r.name
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                b.warnings.push(format!(
                    "Gateway {ns}/{} {field}.tls.certificateRefs[{ci}]: {p}",
                    o.name()
                ));
                let reason = if kind_ok {
                    "RefNotPermitted"
                } else {
                    "InvalidCertificateRef"
                };
                state.bad_refs.get_or_insert((reason, p));
                continue;
            }
            match b.cert(&target_ns, &r.name) {
                Some(k) => certs.push((l.hostname.clone(), k)),
                None => {
                    let msg = format!("TLS Secret {target_ns}/{} not found or invalid", r.name);
                    b.warnings.push(format!(
                        "Gateway {ns}/{} {field}.tls.certificateRefs[{ci}]: {msg}",
                        o.name()
                    ));
                    state.bad_refs.get_or_insert(("InvalidCertificateRef", msg));
                }
            }
        }
        if certs.is_empty() {
            b.warnings.push(format!(
                "Gateway {ns}/{} listener {}: no usable certificate; not programmed",
                o.name(),
                l.name
            ));
            return None;
        }
    }
    Some(ListenerInfo {
        gw: 0,
        idx: 0,
        attached: 0,
        gw_ns: ns.to_string(),
        gw_name: o.name().to_string(),
        name: l.name.clone(),
        hostname: l.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
        port,
        https,
        l4,
        kinds: state.kinds.clone(),
        addr: b.opts.gateway_bind(ns, o.name(), port),
        allowed: l.allowed_routes.clone(),
        certs,
        routes: SectionRoutes::default(),
        l4_routes: Vec::new(),
    })
}

/// Route kinds served on HTTP and HTTPS listeners.
const HTTP_ROUTE_KINDS: [&str; 2] = ["HTTPRoute", "GRPCRoute"];

/// The kinds a listener takes: those its allowedRoutes.kinds name that are served on
/// its protocol (the others make ResolvedRefs false), or all of those.
fn route_kinds(
    l: &gatehouse_model::gateway::Listener,
    state: &mut ListenerState,
) -> Vec<&'static str> {
    let served_here: &[&'static str] = match l.protocol.as_str() {
        "TCP" => &["TCPRoute"],
        "TLS" => &["TLSRoute"],
        _ => &HTTP_ROUTE_KINDS,
    };
    let Some(wanted) = l
        .allowed_routes
        .as_ref()
        .map(|a| &a.kinds)
        .filter(|k| !k.is_empty())
    else {
        return served_here.to_vec();
    };
    let mut kinds = Vec::new();
    for k in wanted {
        let served = served_here
            .iter()
            .copied()
            .find(|s| *s == k.kind && k.group.as_deref().unwrap_or(GROUP) == GROUP);
        match served {
            Some(s) => kinds.push(s),
            None => {
                state.bad_refs.get_or_insert((
                    "InvalidRouteKinds",
                    format!(
                        "route kind {} is not served on {} listeners",
                        k.kind, l.protocol
                    ),
                ));
            }
        }
    }
    kinds
}

/// Whether a ReferenceGrant in `to_ns` lets `from_kind` objects in `from_ns` refer to
/// the `to_kind` named `to_name`.
fn reference_granted(
    b: &Builder<'_>,
    from_kind: &str,
    from_ns: &str,
    to_kind: &str,
    to_ns: &str,
    to_name: &str,
) -> bool {
    b.store.of_kind("ReferenceGrant").any(|o| {
        let Object::ReferenceGrant(g) = &o.object else {
            return false;
        };
        o.namespace() == to_ns
            && g.spec
                .from
                .iter()
                .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
            && g.spec.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n == to_name)
            })
    })
}

/// Whether a listener's allowedRoutes admit a route of `kind` from `route_ns`.
fn allowed(b: &Builder<'_>, l: &ListenerInfo, kind: &str, route_ns: &str) -> bool {
    if !l.kinds.contains(&kind) {
        return false;
    }
    let Some(a) = &l.allowed else {
        return route_ns == l.gw_ns;
    };
    if !a.kinds.is_empty()
        && !a
            .kinds
            .iter()
            .any(|k| k.kind == kind && k.group.as_deref().unwrap_or(GROUP) == GROUP)
    {
        return false;
    }
    let from = a
        .namespaces
        .as_ref()
        .and_then(|n| n.from.as_deref())
        .unwrap_or("Same");
    match from {
        "All" => true,
        "Selector" => {
            let Some(sel) = a.namespaces.as_ref().and_then(|n| n.selector.as_ref()) else {
                return false;
            };
            let key = ObjectKey {
                kind: "Namespace",
                namespace: None,
                name: route_ns.to_string(),
            };
            let mut labels: BTreeMap<String, String> = match b.store.get(&key).map(|o| &o.object) {
                Some(Object::Namespace(n)) => n.metadata.labels.clone().unwrap_or_default(),
                _ => BTreeMap::new(),
            };
            labels.insert("kubernetes.io/metadata.name".into(), route_ns.to_string());
            selector_matches(sel, &labels)
        }
        _ => route_ns == l.gw_ns,
    }
}

/// Which listeners a route attaches to (under which hostnames), and why each of our
/// parentRefs did or did not accept it.
#[allow(clippy::type_complexity)]
fn attachments<'r>(
    b: &Builder<'_>,
    o: &StoredObject,
    parent_refs: &'r [gatehouse_model::gateway::ParentReference],
    hostnames: &[String],
    listeners: &[ListenerInfo],
    ours: &HashSet<(String, String)>,
) -> (Vec<(usize, Vec<Option<String>>)>, Vec<ParentOutcome<'r>>) {
    let ns = o.namespace().to_string();
    let kind = o.object.kind();
    let mut targets: Vec<(usize, Vec<Option<String>>)> = Vec::new();
    let mut outcomes: Vec<ParentOutcome<'r>> = Vec::new();
    for pr in parent_refs {
        if pr.group.as_deref().unwrap_or(GROUP) != GROUP
            || pr.kind.as_deref().unwrap_or("Gateway") != "Gateway"
        {
            continue;
        }
        let gw_ns = pr.namespace.clone().unwrap_or_else(|| ns.clone());
        if !ours.contains(&(gw_ns.clone(), pr.name.clone())) {
            continue;
        }
        let (mut section_ok, mut allowed_ok, mut hosts_ok) = (false, false, false);
        for (i, l) in listeners.iter().enumerate() {
            if l.gw_ns != gw_ns || l.gw_name != pr.name {
                continue;
            }
            if pr.section_name.as_ref().is_some_and(|s| *s != l.name)
                || pr.port.is_some_and(|p| p != l.port as i32)
            {
                continue;
            }
            section_ok = true;
            if !allowed(b, l, kind, &ns) {
                continue;
            }
            allowed_ok = true;
            let hosts: Vec<Option<String>> = if hostnames.is_empty() {
                vec![l.hostname.clone()]
            } else {
                hostnames
                    .iter()
                    .filter_map(|h| intersect(l.hostname.as_deref(), h))
                    .map(Some)
                    .collect()
            };
            if !hosts.is_empty() {
                hosts_ok = true;
                if !targets.iter().any(|(t, _)| *t == i) {
                    targets.push((i, hosts));
                }
            }
        }
        let not_accepted = match (section_ok, allowed_ok, hosts_ok) {
            (_, _, true) => None,
            (false, _, _) => Some((
                "NoMatchingParent",
                "no programmed listener matches sectionName and port".to_string(),
            )),
            (true, false, _) => Some((
                "NotAllowedByListeners",
                "the listeners' allowedRoutes do not admit this route".to_string(),
            )),
            (true, true, false) => Some((
                "NoMatchingListenerHostname",
                "no hostname intersects the listeners' hostnames".to_string(),
            )),
        };
        outcomes.push(ParentOutcome {
            parent: pr,
            not_accepted,
        });
    }
    (targets, outcomes)
}

/// Attaches a TCPRoute or TLSRoute to the L4 listeners its parentRefs name: a TCP
/// listener takes the oldest route's backends; a TLS passthrough listener, the oldest
/// route's for each hostname.
fn attach_l4_route(
    b: &mut Builder<'_>,
    o: &StoredObject,
    spec: &L4RouteSpec,
    listeners: &mut [ListenerInfo],
    ours: &HashSet<(String, String)>,
) {
    let ns = o.namespace().to_string();
    let kind = o.object.kind();
    let (targets, outcomes) =
        attachments(b, o, &spec.parent_refs, &spec.hostnames, listeners, ours);
    if outcomes.is_empty() {
        return;
    }
    for (hi, h) in spec.hostnames.iter().enumerate() {
        if !valid_hostname(h, true) {
            b.errors.push(o.error(
                &format!("spec.hostnames[{hi}]"),
                format!("invalid hostname {h:?}"),
            ));
            return;
        }
    }
    if spec.rules.is_empty() {
        b.errors.push(o.error(
            "spec.rules",
            "at least one rule with backendRefs is required",
        ));
        return;
    }
    // Rules have no matches at L4: their backends make one weighted set.
    let rule = HttpRouteRule {
        backend_refs: spec
            .rules
            .iter()
            .flat_map(|r| r.backend_refs.clone())
            .collect(),
        ..Default::default()
    };
    let mut refs = None;
    let set = Arc::new(backend_set(b, o, &ns, "spec.rules", &rule, &mut refs));
    b.statuses.push(route_status(o, &outcomes, refs.as_ref()));
    match kind {
        "TCPRoute" => b.summary.tcp_routes += 1,
        _ => b.summary.tls_routes += 1,
    }
    for (i, hosts) in targets {
        let l = &mut listeners[i];
        l.attached += 1;
        for h in hosts {
            match l.l4_routes.iter().find(|(k, _)| *k == h) {
                Some(_) => b.warnings.push(format!(
                    "{kind} {ns}/{}: listener {} already routes {} to an older route; ignored there",
                    o.name(),
                    l.name,
                    h.as_deref().unwrap_or("every connection")
                )),
                None => l.l4_routes.push((h, set.clone())),
            }
        }
    }
}

/// Attaches an HTTPRoute (or a GRPCRoute in its HTTPRoute form, with the precedence of
/// its matches in `grpc`) to the listeners its parentRefs name.
fn attach_route(
    b: &mut Builder<'_>,
    o: &StoredObject,
    route: &HttpRoute,
    grpc: Option<&MatchRanks>,
    listeners: &mut [ListenerInfo],
    ours: &HashSet<(String, String)>,
) {
    let ns = o.namespace().to_string();
    let kind = o.object.kind();
    let (mut targets, outcomes) = attachments(
        b,
        o,
        &route.spec.parent_refs,
        &route.spec.hostnames,
        listeners,
        ours,
    );
    if outcomes.is_empty() {
        return;
    }

    // An incremental run compiles only the routes (and hosts) in scope.
    if let Some(scope) = b.scope {
        targets.retain_mut(|(_, hosts)| {
            hosts.retain(|h| b.in_scope(h.as_deref()));
            !hosts.is_empty()
        });
        // A changed route is judged (and its status written) even when it attaches to
        // no host any more.
        if targets.is_empty() && !scope.changed(o) {
            return;
        }
    }
    match kind {
        "GRPCRoute" => b.summary.grpc_routes += 1,
        _ => b.summary.http_routes += 1,
    }
    let mut bad = false;
    for (hi, h) in route.spec.hostnames.iter().enumerate() {
        if !valid_hostname(h, true) {
            b.errors.push(o.error(
                &format!("spec.hostnames[{hi}]"),
                format!("invalid hostname {h:?}"),
            ));
            bad = true;
        }
    }
    let mut compiled = Vec::new();
    let mut refs = None;
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let first = compiled.len();
        let ok = compile_rule(b, o, &ns, ri, rule, &mut compiled, &mut refs);
        bad |= !ok;
        // A GRPCRoute ranks its matches by service and method, not by path.
        if let (true, Some(ranks)) = (ok, grpc.and_then(|g| g.get(ri))) {
            for (m, rank) in compiled[first..].iter_mut().zip(ranks) {
                m.key.0 = rank.clone();
            }
        }
    }
    if bad {
        return;
    }
    b.statuses.push(route_status(o, &outcomes, refs.as_ref()));
    if targets.is_empty() {
        b.warnings.push(format!("{kind} {ns}/{}: not attached to any listener (sectionName, port, allowedRoutes or hostnames do not match)", o.name()));
    }
    for (i, hosts) in targets {
        listeners[i].attached += 1;
        for h in hosts {
            for m in &compiled {
                listeners[i]
                    .routes
                    .add(h.clone(), m.key.clone(), m.entry.clone());
            }
        }
    }
}

fn header_modifier(
    b: &mut Builder<'_>,
    o: &StoredObject,
    field: &str,
    f: &HttpHeaderFilter,
) -> Option<HeaderModifier> {
    let mut m = HeaderModifier::default();
    let mut ok = true;
    let pair = |b: &mut Builder<'_>, kind: &str, i: usize, name: &str, value: &str| {
        let n = http::HeaderName::from_bytes(name.as_bytes());
        let v = http::HeaderValue::from_str(value);
        match (n, v) {
            (Ok(n), Ok(v)) => Some((n, v)),
            _ => {
                b.errors.push(o.error(
                    &format!("{field}.{kind}[{i}]"),
                    format!("invalid header {name:?}: {value:?}"),
                ));
                None
            }
        }
    };
    for (i, h) in f.set.iter().enumerate() {
        match pair(b, "set", i, &h.name, &h.value) {
            Some(p) => m.set.push(p),
            None => ok = false,
        }
    }
    for (i, h) in f.add.iter().enumerate() {
        match pair(b, "add", i, &h.name, &h.value) {
            Some(p) => m.add.push(p),
            None => ok = false,
        }
    }
    for (i, name) in f.remove.iter().enumerate() {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => m.remove.push(n),
            Err(_) => {
                b.errors.push(o.error(
                    &format!("{field}.remove[{i}]"),
                    format!("invalid header name {name:?}"),
                ));
                ok = false;
            }
        }
    }
    ok.then_some(m)
}

fn path_modifier(
    b: &mut Builder<'_>,
    o: &StoredObject,
    field: &str,
    p: &HttpPathModifier,
    prefix_ok: bool,
) -> Option<PathModifier> {
    match (
        p.type_.as_str(),
        &p.replace_full_path,
        &p.replace_prefix_match,
    ) {
        ("ReplaceFullPath", Some(v), _) => Some(PathModifier::Full(v.clone())),
        ("ReplacePrefixMatch", _, Some(v)) if prefix_ok => Some(PathModifier::Prefix(v.clone())),
        ("ReplacePrefixMatch", _, Some(_)) => {
            b.errors.push(o.error(
                field,
                "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
            ));
            None
        }
        (t, _, _) => {
            b.errors.push(o.error(
                field,
                format!(
                    "path modifier {t:?} needs its value (replaceFullPath or replacePrefixMatch)"
                ),
            ));
            None
        }
    }
}

/// Compiles one rule into `out`; returns false when it has errors.
fn compile_rule(
    b: &mut Builder<'_>,
    o: &StoredObject,
    ns: &str,
    ri: usize,
    rule: &HttpRouteRule,
    out: &mut Vec<CompiledMatch>,
    refs: &mut Option<Problem>,
) -> bool {
    let field = format!("spec.rules[{ri}]");
    let errors_before = b.errors.len();
    let default_match = [Default::default()];
    let matches = if rule.matches.is_empty() {
        &default_match[..]
    } else {
        &rule.matches[..]
    };
    let all_prefix = matches.iter().all(|m| {
        m.path
            .as_ref()
            .and_then(|p| p.type_.as_deref())
            .unwrap_or("PathPrefix")
            == "PathPrefix"
    });
    let mut request_headers = None;
    let mut response_headers = None;
    let mut redirect = None;
    let mut rewrite: Option<UrlRewrite> = None;
    let mut fixed: Option<(u16, String)> = None;
    let mut mirrors: Vec<Mirror> = Vec::new();
    for (fi, f) in rule.filters.iter().enumerate() {
        let ff = format!("{field}.filters[{fi}]");
        match f.type_.as_str() {
            "RequestHeaderModifier" => match &f.request_header_modifier {
                Some(m) => {
                    request_headers =
                        header_modifier(b, o, &format!("{ff}.requestHeaderModifier"), m)
                }
                None => b
                    .errors
                    .push(o.error(&ff, "requestHeaderModifier is required for this type")),
            },
            "ResponseHeaderModifier" => match &f.response_header_modifier {
                Some(m) => {
                    response_headers =
                        header_modifier(b, o, &format!("{ff}.responseHeaderModifier"), m)
                }
                None => b
                    .errors
                    .push(o.error(&ff, "responseHeaderModifier is required for this type")),
            },
            "RequestRedirect" => {
                let Some(r) = &f.request_redirect else {
                    b.errors
                        .push(o.error(&ff, "requestRedirect is required for this type"));
                    continue;
                };
                let status = r.status_code.unwrap_or(302);
                if ![301, 302, 303, 307, 308].contains(&status) {
                    b.errors.push(o.error(
                        &format!("{ff}.requestRedirect.statusCode"),
                        format!("unsupported status {status}"),
                    ));
                }
                if let Some(s) = &r.scheme {
                    if s != "http" && s != "https" {
                        b.errors.push(o.error(
                            &format!("{ff}.requestRedirect.scheme"),
                            format!("scheme {s:?} must be http or https"),
                        ));
                    }
                }
                let port = match r.port.map(u16::try_from) {
                    Some(Ok(p)) if p > 0 => Some(p),
                    None => None,
                    Some(_) => {
                        b.errors.push(
                            o.error(&format!("{ff}.requestRedirect.port"), "port out of range"),
                        );
                        None
                    }
                };
                let path = r.path.as_ref().and_then(|p| {
                    path_modifier(b, o, &format!("{ff}.requestRedirect.path"), p, all_prefix)
                });
                redirect = Some(Redirect {
                    scheme: r.scheme.clone(),
                    hostname: r.hostname.clone(),
                    path,
                    port,
                    status: status as u16,
                });
            }
            "URLRewrite" => {
                let Some(r) = &f.url_rewrite else {
                    b.errors
                        .push(o.error(&ff, "urlRewrite is required for this type"));
                    continue;
                };
                let path = r.path.as_ref().and_then(|p| {
                    path_modifier(b, o, &format!("{ff}.urlRewrite.path"), p, all_prefix)
                });
                rewrite = Some(UrlRewrite {
                    hostname: r.hostname.clone(),
                    path,
                });
            }
            "RequestMirror" => {
                let Some(m) = &f.request_mirror else {
                    b.errors
                        .push(o.error(&ff, "requestMirror is required for this type"));
                    continue;
                };
                if let Some(mirror) = mirror(b, o, ns, &ff, m) {
                    mirrors.push(mirror);
                }
            }
            "ExtensionRef" => fixed = Some((500, "ExtensionRef filters are not supported".into())),
            other => b.errors.push(o.error(
                &format!("{ff}.type"),
                format!("unknown filter type {other:?}"),
            )),
        }
    }
    if redirect.is_some() && rewrite.is_some() {
        b.errors.push(o.error(
            &format!("{field}.filters"),
            "RequestRedirect and URLRewrite cannot be used together",
        ));
    }
    let timeout = rule
        .timeouts
        .as_ref()
        .and_then(|t| t.request.as_deref())
        .and_then(|d| {
            parse_duration(d)
                .map_err(|e| {
                    b.errors
                        .push(o.error(&format!("{field}.timeouts.request"), e))
                })
                .ok()
        });
    let backend_timeout = rule
        .timeouts
        .as_ref()
        .and_then(|t| t.backend_request.as_deref())
        .and_then(|d| {
            parse_duration(d)
                .map_err(|e| {
                    b.errors
                        .push(o.error(&format!("{field}.timeouts.backendRequest"), e))
                })
                .ok()
        });
    let kind = if let Some((status, reason)) = fixed {
        ActionKind::Fixed { status, reason }
    } else if let Some(r) = redirect {
        ActionKind::Redirect(r)
    } else if rule.backend_refs.is_empty() {
        ActionKind::Fixed {
            status: 500,
            reason: "rule has no backendRefs".into(),
        }
    } else {
        ActionKind::Forward {
            rewrite,
            backends: backend_set(b, o, ns, &field, rule, refs),
        }
    };
    // Matches are compiled even for a rule with errors, so all errors surface at once.
    let mut compiled = Vec::new();
    for (mi, m) in matches.iter().enumerate() {
        let mf = format!("{field}.matches[{mi}]");
        let ptype = m
            .path
            .as_ref()
            .and_then(|p| p.type_.as_deref())
            .unwrap_or("PathPrefix");
        let value = m
            .path
            .as_ref()
            .and_then(|p| p.value.clone())
            .unwrap_or_else(|| "/".into());
        let path = match ptype {
            "Exact" | "PathPrefix" if !value.starts_with('/') => {
                b.errors.push(o.error(
                    &format!("{mf}.path.value"),
                    format!("path {value:?} must start with '/'"),
                ));
                continue;
            }
            "Exact" => PathMatch::Exact(value.clone()),
            "PathPrefix" => PathMatch::Prefix(value.trim_end_matches('/').to_string()),
            "RegularExpression" => match Regex::new(&format!("^(?:{value})$")) {
                Ok(r) => PathMatch::Regex(r),
                Err(e) => {
                    b.errors.push(o.error(
                        &format!("{mf}.path.value"),
                        format!("invalid regular expression: {e}"),
                    ));
                    continue;
                }
            },
            other => {
                b.errors.push(o.error(
                    &format!("{mf}.path.type"),
                    format!("unsupported path match type {other:?}"),
                ));
                continue;
            }
        };
        let method = match &m.method {
            Some(s) => match http::Method::from_bytes(s.as_bytes()) {
                Ok(m) => Some(m),
                Err(_) => {
                    b.errors
                        .push(o.error(&format!("{mf}.method"), format!("invalid method {s:?}")));
                    continue;
                }
            },
            None => None,
        };
        let mut headers: Vec<(http::HeaderName, StrMatch)> = Vec::new();
        for (hi, h) in m.headers.iter().enumerate() {
            let Ok(name) = http::HeaderName::from_bytes(h.name.as_bytes()) else {
                b.errors.push(o.error(
                    &format!("{mf}.headers[{hi}].name"),
                    format!("invalid header name {:?}", h.name),
                ));
                continue;
            };
            if headers.iter().any(|(n, _)| *n == name) {
                continue; // only the first entry for a name counts
            }
            if let Some(sm) = str_match(
                b,
                o,
                &format!("{mf}.headers[{hi}]"),
                h.type_.as_deref(),
                &h.value,
            ) {
                headers.push((name, sm));
            }
        }
        let mut query: Vec<(String, StrMatch)> = Vec::new();
        for (qi, q) in m.query_params.iter().enumerate() {
            if query.iter().any(|(n, _)| *n == q.name) {
                continue;
            }
            if let Some(sm) = str_match(
                b,
                o,
                &format!("{mf}.queryParams[{qi}]"),
                q.type_.as_deref(),
                &q.value,
            ) {
                query.push((q.name.clone(), sm));
            }
        }
        let (class, len) = match &path {
            // Exact, then regular expressions (as Envoy Gateway ranks them), then
            // prefixes; longer values first within each kind.
            PathMatch::Exact(v) => (0, v.len()),
            PathMatch::Regex(r) => (1, r.as_str().len()),
            PathMatch::Prefix(v) => (2, v.len()),
        };
        let key = SortKey(
            vec![
                class,
                -(len as i64),
                if method.is_some() { 0 } else { 1 },
                -(headers.len() as i64),
                -(query.len() as i64),
            ],
            format!("{:020}/{ns}/{}", created(o), o.name()),
            vec![ri as i64, mi as i64],
        );
        compiled.push((key, path, method, headers, query));
    }
    if b.errors.len() > errors_before {
        return false;
    }
    let protection = b.security.for_route(o, parents_of(o));
    let action = b.action(RouteAction {
        id: 0,
        name: Arc::from(format!(
            "{}/{ns}/{}/rule/{ri}",
            o.object.kind().to_ascii_lowercase(),
            o.name()
        )),
        request_headers: request_headers.map(Box::new),
        response_headers: response_headers.map(Box::new),
        kind,
        timeout,
        backend_timeout,
        mirrors,
        protection,
    });
    for (key, path, method, headers, query) in compiled {
        out.push(CompiledMatch {
            key,
            entry: RouteEntry {
                path,
                method,
                headers,
                query,
                action: action.clone(),
            },
        });
    }
    true
}

fn str_match(
    b: &mut Builder<'_>,
    o: &StoredObject,
    field: &str,
    t: Option<&str>,
    value: &str,
) -> Option<StrMatch> {
    match t.unwrap_or("Exact") {
        "Exact" => Some(StrMatch::Exact(value.to_string())),
        "RegularExpression" => match Regex::new(value) {
            Ok(r) => Some(StrMatch::Regex(r)),
            Err(e) => {
                b.errors.push(o.error(
                    &format!("{field}.value"),
                    format!("invalid regular expression: {e}"),
                ));
                None
            }
        },
        other => {
            b.errors.push(o.error(
                &format!("{field}.type"),
                format!("unsupported match type {other:?}"),
            ));
            None
        }
    }
}

/// Resolves one backendRef of route `o` (in namespace `ns`) to its cluster, or says
/// why it cannot (with the Gateway API condition reason).
fn resolve_ref(
    b: &mut Builder<'_>,
    o: &StoredObject,
    ns: &str,
    r: &gatehouse_model::gateway::HttpBackendRef,
    via: &Via,
) -> Result<Arc<crate::snapshot::Cluster>, Problem> {
    let target_ns = r.namespace.clone().unwrap_or_else(|| ns.to_string());
    let problem: Option<Problem> = if !r.group.as_deref().unwrap_or("").is_empty()
        || r.kind.as_deref().unwrap_or("Service") != "Service"
    {
        Some((
            "InvalidKind",
            format!(
                "backend kind {:?} is not supported",
                r.kind.as_deref().unwrap_or("Service")
            ),
        ))
    } else if r.port.is_none() {
        Some((
            "UnsupportedValue",
            "port is required for a Service backend".to_string(),
        ))
    } else if target_ns != ns
        && !reference_granted(b, o.object.kind(), ns, "Service", &target_ns, &r.name)
    {
        Some((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in {target_ns} allows {}s in {ns} to use Service {}",
                o.object.kind(),
                r.name
            ),
        ))
    } else {
        None
    };
    if let Some(p) = problem {
        return Err(p);
    }
    // gRPC needs HTTP/2 to the backend, whatever the Service port says.
    let h2 = (o.object.kind() == "GRPCRoute").then_some(UpstreamProtocol::Http2);
    let port = PortRef::Number(r.port.unwrap_or(0));
    resolve_with(b, &target_ns, &r.name, port, h2, via).map_err(|e| ("BackendNotFound", e))
}

/// A RequestMirror filter's target and share of requests. A backend that cannot be
/// resolved is a warning (mirroring is best effort); a bad share is an error.
fn mirror(
    b: &mut Builder<'_>,
    o: &StoredObject,
    ns: &str,
    ff: &str,
    m: &gatehouse_model::gateway::HttpRequestMirrorFilter,
) -> Option<Mirror> {
    let per_million = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => {
            b.errors.push(o.error(
                &format!("{ff}.requestMirror"),
                "percent and fraction cannot both be set",
            ));
            return None;
        }
        (Some(p), None) if (0..=100).contains(&p) => p as u32 * 10_000,
        (Some(p), None) => {
            b.errors.push(o.error(
                &format!("{ff}.requestMirror.percent"),
                format!("{p} is not between 0 and 100"),
            ));
            return None;
        }
        (None, Some(f)) => {
            let d = f.denominator.unwrap_or(100);
            if d <= 0 || f.numerator < 0 || f.numerator > d {
                b.errors.push(o.error(
                    &format!("{ff}.requestMirror.fraction"),
                    format!("{}/{d} is not a fraction between 0 and 1", f.numerator),
                ));
                return None;
            }
            (f.numerator as u64 * 1_000_000 / d as u64) as u32
        }
        (None, None) => 1_000_000,
    };
    let via = b.policies.via_route(o, parents_of(o));
    match resolve_ref(b, o, ns, &m.backend_ref, &via) {
        Ok(cluster) => Some(Mirror {
            cluster,
            per_million,
        }),
        Err((_, reason)) => {
            b.warnings.push(format!(
                "{} {ns}/{} {ff}.requestMirror.backendRef: {reason}; not mirrored",
                o.object.kind(),
                o.name()
            ));
            None
        }
    }
}

/// The parentRefs of a Gateway API route.
fn parents_of(o: &StoredObject) -> &[gatehouse_model::gateway::ParentReference] {
    match &o.object {
        Object::HttpRoute(r) => &r.spec.parent_refs,
        Object::GrpcRoute(r) => &r.spec.parent_refs,
        Object::TcpRoute(r) => &r.spec.parent_refs,
        Object::TlsRoute(r) => &r.spec.parent_refs,
        _ => &[],
    }
}

fn backend_set(
    b: &mut Builder<'_>,
    o: &StoredObject,
    ns: &str,
    field: &str,
    rule: &HttpRouteRule,
    refs: &mut Option<Problem>,
) -> BackendSet {
    let mut items = Vec::new();
    let via = &b.policies.via_route(o, parents_of(o));
    // Weights a TrafficAdjustment set (a canary rolled back), unless they would leave
    // the rule no backend at all.
    let http_route = o.object.kind() == "HTTPRoute";
    let configured =
        |r: &gatehouse_model::gateway::HttpBackendRef| r.weight.unwrap_or(1).max(0) as u32;
    let adjusted = |b: &Builder<'_>, r: &gatehouse_model::gateway::HttpBackendRef| {
        let same_ns = r.namespace.as_deref().is_none_or(|n| n == ns);
        match (http_route && same_ns)
            .then(|| b.adjustments.weight(ns, o.name(), &r.name))
            .flatten()
        {
            Some(w) => w,
            None => configured(r),
        }
    };
    let use_adjusted = rule.backend_refs.iter().any(|r| adjusted(b, r) > 0);
    let mut guarded = Vec::new();
    for (bi, r) in rule.backend_refs.iter().enumerate() {
        let weight = match use_adjusted {
            true => adjusted(b, r),
            false => configured(r),
        };
        if weight != configured(r) {
            b.warnings.push(format!(
                "{} {ns}/{} {field}.backendRefs[{bi}]: weight {} set to {weight} by a TrafficAdjustment",
                o.object.kind(),
                o.name(),
                configured(r)
            ));
        }
        if configured(r) > 0 && weight == 0 {
            // Rolled back: still watched, so the guard sees the whole rule.
            if let Ok(c) = resolve_ref(b, o, ns, r, via) {
                guarded.push((r.name.clone(), configured(r), c.name.clone()));
            }
        }
        if weight == 0 {
            continue;
        }
        let target = resolve_ref(b, o, ns, r, via);
        let target = match target {
            Ok(c) => Ok(c),
            Err((reason, msg)) => {
                refs.get_or_insert((reason, msg.clone()));
                Err(msg)
            }
        };
        let target = match target {
            Ok(c) => BackendTarget::Cluster(c),
            Err(reason) => {
                b.warnings.push(format!(
                    "{} {ns}/{} {field}.backendRefs[{bi}]: {reason}",
                    o.object.kind(),
                    o.name()
                ));
                BackendTarget::Invalid {
                    status: 500,
                    reason,
                }
            }
        };
        if !r.filters.is_empty() {
            b.warnings.push(format!(
                "{} {ns}/{} {field}.backendRefs[{bi}].filters: not supported yet; ignored",
                o.object.kind(),
                o.name()
            ));
        }
        if let BackendTarget::Cluster(c) = &target {
            guarded.push((r.name.clone(), configured(r), c.name.clone()));
        }
        items.push(WeightedBackend { weight, target });
    }
    if let (true, Some(route)) = (http_route, &via.route) {
        if let (Some(policy), true) = (&route.canary, guarded.len() >= 2) {
            let rule_index = field
                .rsplit_once('[')
                .and_then(|(_, i)| i.trim_end_matches(']').parse().ok())
                .unwrap_or(0);
            b.canaries.push(Arc::new(crate::snapshot::CanaryGuard {
                namespace: ns.to_string(),
                route: o.name().to_string(),
                rule: rule_index,
                policy: policy.clone(),
                from: route.from.clone(),
                backends: guarded,
            }));
        }
    }
    BackendSet::new(items)
}
