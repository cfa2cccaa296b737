//! GRPCRoute: gRPC calls routed by service and method. A GRPCRoute is checked here and
//! then expressed as the HTTPRoute it amounts to (a method match is a match on the
//! request path `/<service>/<method>`), so attachment, filters, backends and status are
//! shared with HTTPRoute. Precedence follows the GRPCRoute rules (characters of the
//! matched service, then of the method, then the number of header matches), and
//! backends are always reached over HTTP/2.

use crate::builder::Builder;
use gatehouse_model::gateway::{
    GrpcMethodMatch, GrpcRoute, HttpPathMatch, HttpRoute, HttpRouteMatch, HttpRouteRule,
    HttpRouteSpec,
};
use gatehouse_model::StoredObject;

/// Precedence of each match, rule by rule: smaller sorts first.
pub type MatchRanks = Vec<Vec<Vec<i64>>>;

/// Filter types a GRPCRoute may use.
const FILTERS: [&str; 4] = [
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "ExtensionRef",
];

/// The HTTPRoute equivalent of `g`, with the precedence of every match; None (with
/// errors in `b`) when `g` is invalid.
pub fn as_http_route(
    b: &mut Builder<'_>,
    o: &StoredObject,
    g: &GrpcRoute,
) -> Option<(HttpRoute, MatchRanks)> {
    let errors_before = b.errors.len();
    let mut rules = Vec::with_capacity(g.spec.rules.len());
    let mut ranks = Vec::with_capacity(g.spec.rules.len());
    for (ri, rule) in g.spec.rules.iter().enumerate() {
        for (fi, f) in rule.filters.iter().enumerate() {
            if !FILTERS.contains(&f.type_.as_str()) {
                b.errors.push(o.error(
                    &format!("spec.rules[{ri}].filters[{fi}].type"),
                    format!(
                        "filter type {:?} is not allowed in a GRPCRoute (use one of {})",
                        f.type_,
                        FILTERS.join(", ")
                    ),
                ));
            }
        }
        let mut matches = Vec::with_capacity(rule.matches.len());
        let mut rule_ranks = Vec::with_capacity(rule.matches.len().max(1));
        for (mi, m) in rule.matches.iter().enumerate() {
            let field = format!("spec.rules[{ri}].matches[{mi}].method");
            let (path, service_len, method_len) = match &m.method {
                None => (None, 0, 0),
                Some(mm) => match method_path(b, o, &field, mm) {
                    Some(p) => p,
                    None => continue,
                },
            };
            rule_ranks.push(vec![-service_len, -method_len, -(m.headers.len() as i64)]);
            matches.push(HttpRouteMatch {
                path,
                headers: m.headers.clone(),
                query_params: Vec::new(),
                method: None,
            });
        }
        if rule.matches.is_empty() {
            rule_ranks.push(vec![0, 0, 0]);
        }
        ranks.push(rule_ranks);
        rules.push(HttpRouteRule {
            name: rule.name.clone(),
            matches,
            filters: rule.filters.clone(),
            backend_refs: rule.backend_refs.clone(),
            timeouts: None,
        });
    }
    if b.errors.len() > errors_before {
        return None;
    }
    let route = HttpRoute {
        metadata: g.metadata.clone(),
        spec: HttpRouteSpec {
            parent_refs: g.spec.parent_refs.clone(),
            hostnames: g.spec.hostnames.clone(),
            rules,
        },
    };
    Some((route, ranks))
}

/// The path match for a method match, and the lengths of service and method it counts.
fn method_path(
    b: &mut Builder<'_>,
    o: &StoredObject,
    field: &str,
    m: &GrpcMethodMatch,
) -> Option<(Option<HttpPathMatch>, i64, i64)> {
    let service = m.service.as_deref().filter(|s| !s.is_empty());
    let method = m.method.as_deref().filter(|s| !s.is_empty());
    let lens = (
        service.map_or(0, str::len) as i64,
        method.map_or(0, str::len) as i64,
    );
    let path = |type_: &str, value: String| HttpPathMatch {
        type_: Some(type_.to_string()),
        value: Some(value),
    };
    match m.type_.as_deref().unwrap_or("Exact") {
        "Exact" => {
            let mut ok = true;
            if service.is_none() && method.is_none() {
                b.errors
                    .push(o.error(field, "an Exact method match needs service or method"));
                ok = false;
            }
            if let Some(s) = service.filter(|s| !valid_service(s)) {
                b.errors.push(o.error(
                    &format!("{field}.service"),
                    format!("invalid gRPC service name {s:?}"),
                ));
                ok = false;
            }
            if let Some(m) = method.filter(|m| !valid_identifier(m)) {
                b.errors.push(o.error(
                    &format!("{field}.method"),
                    format!("invalid gRPC method name {m:?}"),
                ));
                ok = false;
            }
            if !ok {
                return None;
            }
            let p = match (service, method) {
                (Some(s), Some(m)) => path("Exact", format!("/{s}/{m}")),
                (Some(s), None) => path("PathPrefix", format!("/{s}")),
                (None, Some(m)) => {
                    path("RegularExpression", format!("/[^/]+/{}", regex::escape(m)))
                }
                (None, None) => return None,
            };
            Some((Some(p), lens.0, lens.1))
        }
        "RegularExpression" => {
            let mut ok = true;
            for (name, value) in [("service", service), ("method", method)] {
                if let Some(Err(e)) = value.map(regex::Regex::new) {
                    b.errors.push(o.error(
                        &format!("{field}.{name}"),
                        format!("invalid regular expression: {e}"),
                    ));
                    ok = false;
                }
            }
            if !ok {
                return None;
            }
            let value = format!(
                "/(?:{})/(?:{})",
                service.unwrap_or("[^/]+"),
                method.unwrap_or("[^/]+")
            );
            Some((Some(path("RegularExpression", value)), lens.0, lens.1))
        }
        other => {
            b.errors.push(o.error(
                &format!("{field}.type"),
                format!(
                    "unsupported method match type {other:?}: must be Exact or RegularExpression"
                ),
            ));
            None
        }
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A fully qualified service name: identifiers joined by dots.
fn valid_service(s: &str) -> bool {
    s.split('.').all(valid_identifier)
}
