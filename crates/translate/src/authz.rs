//! Authorization between workloads: `AuthorizationPolicy` objects compiled to plain
//! data, and a pure match of a connection or request against them.
//!
//! Order (as in Istio): any matching DENY policy denies; else, if no ALLOW policy
//! applies to the workload, the call is allowed; else it is allowed only if an ALLOW
//! policy matches. AUDIT policies decide nothing; a match is reported. On a connection
//! whose HTTP is not seen (L4), a rule's HTTP fields cannot be checked: such a rule
//! never matches in an ALLOW policy, and matches on its other fields in a DENY policy
//! (failing closed).
//!
//! A policy annotated `gatehouse.dev/dry-run: "true"` (or Istio's `istio.io/dry-run`)
//! is enforced in the shadows: each call is checked a second time as if it were in
//! force, and the shadow verdict is reported (a call it would deny is counted and
//! logged), while the enforced policies alone decide.

use gatehouse_model::mesh::{AuthorizationPolicy, AuthorizationRule, Condition, Operation, Source};
use gatehouse_model::{ConfigError, StoredObject};
use gatehouse_security::ipacl::Cidr;
use std::net::IpAddr;
use std::sync::Arc;

/// What a policy does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Audit,
}

/// A compiled `AuthorizationPolicy`.
#[derive(Debug)]
pub struct Policy {
    /// `namespace/name`, for logs and metrics.
    pub name: Arc<str>,
    pub action: Action,
    rules: Vec<Rule>,
    /// Whether a rule needs HTTP attributes (methods, paths, hosts, headers).
    pub needs_http: bool,
    /// Checked in the shadows only (the dry-run annotation).
    pub dry_run: bool,
}

/// The annotations that make a policy a dry run.
pub const DRY_RUN_ANNOTATIONS: [&str; 2] = ["gatehouse.dev/dry-run", "istio.io/dry-run"];

#[derive(Debug, Default)]
struct Rule {
    from: Vec<SourceMatch>,
    to: Vec<OperationMatch>,
    when: Vec<ConditionMatch>,
}

#[derive(Debug, Default)]
struct SourceMatch {
    principals: Vec<Pattern>,
    not_principals: Vec<Pattern>,
    namespaces: Vec<Pattern>,
    not_namespaces: Vec<Pattern>,
    ip_blocks: Vec<Cidr>,
    not_ip_blocks: Vec<Cidr>,
}

#[derive(Debug, Default)]
struct OperationMatch {
    ports: Vec<u16>,
    not_ports: Vec<u16>,
    methods: Vec<Pattern>,
    not_methods: Vec<Pattern>,
    paths: Vec<Pattern>,
    not_paths: Vec<Pattern>,
    hosts: Vec<Pattern>,
    not_hosts: Vec<Pattern>,
}

#[derive(Debug)]
enum Key {
    Header(http::HeaderName),
    SourceIp,
    SourcePrincipal,
    SourceNamespace,
    DestinationPort,
}

#[derive(Debug)]
struct ConditionMatch {
    key: Key,
    values: Vec<Pattern>,
    not_values: Vec<Pattern>,
    /// For `source.ip`: the values as networks.
    networks: Vec<Cidr>,
    not_networks: Vec<Cidr>,
}

/// A value to match: exact, `prefix*`, `*suffix` or `*`.
#[derive(Debug, Clone, PartialEq)]
enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl Pattern {
    fn new(s: &str, lowercase: bool) -> Pattern {
        let s = if lowercase {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        };
        if s == "*" {
            Pattern::Any
        } else if let Some(p) = s.strip_suffix('*') {
            Pattern::Prefix(p.to_string())
        } else if let Some(p) = s.strip_prefix('*') {
            Pattern::Suffix(p.to_string())
        } else {
            Pattern::Exact(s)
        }
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => e == v,
            Pattern::Prefix(p) => v.starts_with(p.as_str()),
            Pattern::Suffix(p) => v.ends_with(p.as_str()),
        }
    }
}

/// The HTTP side of a request, when the destination's proxy parses it.
#[derive(Debug, Clone, Copy)]
pub struct HttpAttributes<'a> {
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    /// The host, lowercase, without port.
    pub host: &'a str,
    pub headers: &'a http::HeaderMap,
}

/// A connection or request to check.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The caller's identity without `spiffe://` (`td/ns/NS/sa/SA`), if authenticated.
    pub principal: Option<&'a str>,
    /// The caller's namespace, from its identity.
    pub namespace: Option<&'a str>,
    pub source_ip: IpAddr,
    pub destination_port: u16,
    pub http: Option<HttpAttributes<'a>>,
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// The policy that decided: the matching DENY policy, or the matching ALLOW policy;
    /// None when no policy applies, or when ALLOW policies apply and none matched.
    pub policy: Option<Arc<str>>,
    /// AUDIT policies that matched.
    pub audited: Vec<Arc<str>>,
    /// The verdict with the dry-run policies in force too, if any apply and it differs
    /// from this one: allowed or not, and the deciding policy.
    pub shadow: Option<(bool, Option<Arc<str>>)>,
}

/// The policies that apply to one workload, by action.
#[derive(Debug, Default)]
pub struct WorkloadAuthz {
    pub deny: Vec<Arc<Policy>>,
    pub allow: Vec<Arc<Policy>>,
    pub audit: Vec<Arc<Policy>>,
    /// The same and the dry-run policies together, if any dry-run policy applies.
    pub shadow: Option<Box<WorkloadAuthz>>,
}

impl WorkloadAuthz {
    pub fn new(policies: impl IntoIterator<Item = Arc<Policy>>) -> Self {
        let (mut w, mut all) = (WorkloadAuthz::default(), WorkloadAuthz::default());
        let mut dry = false;
        for p in policies {
            dry |= p.dry_run;
            let sets = match p.dry_run {
                true => vec![&mut all],
                false => vec![&mut w, &mut all],
            };
            for set in sets {
                match p.action {
                    Action::Allow => set.allow.push(p.clone()),
                    Action::Deny => set.deny.push(p.clone()),
                    Action::Audit => set.audit.push(p.clone()),
                }
            }
        }
        if dry {
            w.shadow = Some(Box::new(all));
        }
        w
    }

    /// Whether any policy (dry runs included) needs the HTTP of a call to decide.
    pub fn needs_http(&self) -> bool {
        self.deny
            .iter()
            .chain(&self.allow)
            .chain(&self.audit)
            .any(|p| p.needs_http)
            || self.shadow.as_ref().is_some_and(|s| s.needs_http())
    }

    pub fn is_empty(&self) -> bool {
        self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty()
            && self.shadow.is_none()
    }

    /// Checks a call against the workload's policies (and, in the shadows, against
    /// them and the dry-run ones).
    pub fn check(&self, call: &Call<'_>) -> Decision {
        let mut d = self.check_enforced(call);
        if let Some(shadow) = &self.shadow {
            let s = shadow.check_enforced(call);
            if s.allowed != d.allowed {
                // Denied for want of a matching ALLOW: the dry-run ALLOW policy is why.
                let policy = s.policy.or_else(|| {
                    shadow
                        .allow
                        .iter()
                        .find(|p| p.dry_run)
                        .map(|p| p.name.clone())
                });
                d.shadow = Some((s.allowed, policy));
            }
        }
        d
    }

    fn check_enforced(&self, call: &Call<'_>) -> Decision {
        let audited = self
            .audit
            .iter()
            .filter(|p| p.matches(call, true))
            .map(|p| p.name.clone())
            .collect();
        if let Some(p) = self.deny.iter().find(|p| p.matches(call, true)) {
            return Decision {
                allowed: false,
                policy: Some(p.name.clone()),
                audited,
                shadow: None,
            };
        }
        if self.allow.is_empty() {
            return Decision {
                allowed: true,
                policy: None,
                audited,
                shadow: None,
            };
        }
        match self.allow.iter().find(|p| p.matches(call, false)) {
            Some(p) => Decision {
                allowed: true,
                policy: Some(p.name.clone()),
                audited,
                shadow: None,
            },
            None => Decision {
                allowed: false,
                policy: None,
                audited,
                shadow: None,
            },
        }
    }
}

impl Policy {
    /// Whether a call matches; `unseen_http_matches` says what a rule's HTTP fields do
    /// on a call whose HTTP is not seen.
    fn matches(&self, call: &Call<'_>, unseen_http_matches: bool) -> bool {
        self.rules
            .iter()
            .any(|r| r.matches(call, unseen_http_matches))
    }
}

/// Any of `patterns` matches `v`; an empty list matches all.
fn any_or_empty(patterns: &[Pattern], v: Option<&str>) -> bool {
    patterns.is_empty() || v.is_some_and(|v| patterns.iter().any(|p| p.matches(v)))
}

/// None of `patterns` matches `v`.
fn none_of(patterns: &[Pattern], v: Option<&str>) -> bool {
    v.is_none_or(|v| !patterns.iter().any(|p| p.matches(v)))
}

impl Rule {
    fn matches(&self, call: &Call<'_>, unseen_http_matches: bool) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(call)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(call, unseen_http_matches)))
            && self
                .when
                .iter()
                .all(|c| c.matches(call, unseen_http_matches))
    }
}

impl SourceMatch {
    fn matches(&self, call: &Call<'_>) -> bool {
        any_or_empty(&self.principals, call.principal)
            && none_of(&self.not_principals, call.principal)
            && any_or_empty(&self.namespaces, call.namespace)
            && none_of(&self.not_namespaces, call.namespace)
            && (self.ip_blocks.is_empty()
                || self.ip_blocks.iter().any(|c| c.contains(call.source_ip)))
            && !self
                .not_ip_blocks
                .iter()
                .any(|c| c.contains(call.source_ip))
    }
}

impl OperationMatch {
    fn has_http(&self) -> bool {
        !(self.methods.is_empty()
            && self.not_methods.is_empty()
            && self.paths.is_empty()
            && self.not_paths.is_empty()
            && self.hosts.is_empty()
            && self.not_hosts.is_empty())
    }

    fn matches(&self, call: &Call<'_>, unseen_http_matches: bool) -> bool {
        let port = call.destination_port;
        let ports_ok = (self.ports.is_empty() || self.ports.contains(&port))
            && !self.not_ports.contains(&port);
        if !ports_ok {
            return false;
        }
        let Some(h) = call.http else {
            return !self.has_http() || unseen_http_matches;
        };
        any_or_empty(&self.methods, Some(h.method))
            && none_of(&self.not_methods, Some(h.method))
            && any_or_empty(&self.paths, Some(h.path))
            && none_of(&self.not_paths, Some(h.path))
            && any_or_empty(&self.hosts, Some(h.host))
            && none_of(&self.not_hosts, Some(h.host))
    }
}

impl ConditionMatch {
    fn matches(&self, call: &Call<'_>, unseen_http_matches: bool) -> bool {
        let port;
        let value: Option<&str> = match &self.key {
            Key::Header(name) => match call.http {
                None => return unseen_http_matches,
                Some(h) => h.headers.get(name).and_then(|v| v.to_str().ok()),
            },
            Key::SourceIp => {
                let ip = call.source_ip;
                return (self.networks.is_empty() || self.networks.iter().any(|c| c.contains(ip)))
                    && !self.not_networks.iter().any(|c| c.contains(ip));
            }
            Key::SourcePrincipal => call.principal,
            Key::SourceNamespace => call.namespace,
            Key::DestinationPort => {
                port = call.destination_port.to_string();
                Some(port.as_str())
            }
        };
        any_or_empty(&self.values, value) && none_of(&self.not_values, value)
    }
}

/// A principal as policies and calls name it: the SPIFFE ID without `spiffe://`.
pub fn principal_of(spiffe_id: &str) -> &str {
    spiffe_id.strip_prefix("spiffe://").unwrap_or(spiffe_id)
}

/// Compiles one `AuthorizationPolicy`.
pub fn compile(o: &StoredObject, p: &AuthorizationPolicy) -> Result<Policy, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let action = match p.spec.action.as_deref().unwrap_or("ALLOW") {
        "ALLOW" => Action::Allow,
        "DENY" => Action::Deny,
        "AUDIT" => Action::Audit,
        other => {
            errors.push(o.error(
                "spec.action",
                format!("action {other:?} is not ALLOW, DENY or AUDIT"),
            ));
            Action::Allow
        }
    };
    let mut rules = Vec::new();
    let mut needs_http = false;
    for (i, r) in p.spec.rules.iter().enumerate() {
        let rule = compile_rule(o, &format!("spec.rules[{i}]"), r, &mut errors);
        needs_http |= rule.to.iter().any(OperationMatch::has_http)
            || rule.when.iter().any(|c| matches!(c.key, Key::Header(_)));
        rules.push(rule);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Policy {
        name: format!("{}/{}", o.namespace(), o.name()).into(),
        action,
        rules,
        needs_http,
        dry_run: o.object.metadata().annotations.as_ref().is_some_and(|a| {
            DRY_RUN_ANNOTATIONS
                .iter()
                .any(|k| a.get(*k).is_some_and(|v| v.eq_ignore_ascii_case("true")))
        }),
    })
}

fn patterns(values: &[String], lowercase: bool) -> Vec<Pattern> {
    values.iter().map(|v| Pattern::new(v, lowercase)).collect()
}

fn principals(values: &[String]) -> Vec<Pattern> {
    values
        .iter()
        .map(|v| Pattern::new(principal_of(v), false))
        .collect()
}

fn networks(
    o: &StoredObject,
    field: &str,
    values: &[String],
    errors: &mut Vec<ConfigError>,
) -> Vec<Cidr> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match v.parse::<Cidr>() {
            Ok(c) => out.push(c),
            Err(e) => errors.push(o.error(&format!("{field}[{i}]"), e)),
        }
    }
    out
}

fn ports(
    o: &StoredObject,
    field: &str,
    values: &[String],
    errors: &mut Vec<ConfigError>,
) -> Vec<u16> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => out.push(p),
            _ => errors.push(o.error(
                &format!("{field}[{i}]"),
                format!("{v:?} is not a port (1 to 65535)"),
            )),
        }
    }
    out
}

fn compile_source(
    o: &StoredObject,
    f: &str,
    s: &Source,
    errors: &mut Vec<ConfigError>,
) -> SourceMatch {
    SourceMatch {
        principals: principals(&s.principals),
        not_principals: principals(&s.not_principals),
        namespaces: patterns(&s.namespaces, false),
        not_namespaces: patterns(&s.not_namespaces, false),
        ip_blocks: networks(o, &format!("{f}.ipBlocks"), &s.ip_blocks, errors),
        not_ip_blocks: networks(o, &format!("{f}.notIpBlocks"), &s.not_ip_blocks, errors),
    }
}

fn compile_operation(
    o: &StoredObject,
    f: &str,
    op: &Operation,
    errors: &mut Vec<ConfigError>,
) -> OperationMatch {
    let methods = |v: &[String]| -> Vec<Pattern> {
        v.iter()
            .map(|m| Pattern::new(&m.to_ascii_uppercase(), false))
            .collect()
    };
    let hosts = |v: &[String]| -> Vec<Pattern> {
        v.iter()
            .map(|h| Pattern::new(crate::hosts::strip_port(h), true))
            .collect()
    };
    OperationMatch {
        ports: ports(o, &format!("{f}.ports"), &op.ports, errors),
        not_ports: ports(o, &format!("{f}.notPorts"), &op.not_ports, errors),
        methods: methods(&op.methods),
        not_methods: methods(&op.not_methods),
        paths: patterns(&op.paths, false),
        not_paths: patterns(&op.not_paths, false),
        hosts: hosts(&op.hosts),
        not_hosts: hosts(&op.not_hosts),
    }
}

fn compile_condition(
    o: &StoredObject,
    f: &str,
    c: &Condition,
    errors: &mut Vec<ConfigError>,
) -> Option<ConditionMatch> {
    let key = if let Some(name) = c
        .key
        .strip_prefix("request.headers[")
        .and_then(|k| k.strip_suffix(']'))
    {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => Key::Header(n),
            Err(_) => {
                errors.push(o.error(
                    &format!("{f}.key"),
                    format!("{name:?} is not a header name"),
                ));
                return None;
            }
        }
    } else {
        match c.key.as_str() {
            "source.ip" => Key::SourceIp,
            "source.principal" => Key::SourcePrincipal,
            "source.namespace" => Key::SourceNamespace,
            "destination.port" => Key::DestinationPort,
            other => {
                errors.push(o.error(
                    &format!("{f}.key"),
                    format!(
                        "unknown key {other:?}; use request.headers[NAME], source.ip, \
                         source.principal, source.namespace or destination.port"
                    ),
                ));
                return None;
            }
        }
    };
    if c.values.is_empty() && c.not_values.is_empty() {
        errors.push(o.error(f, "a condition needs values or notValues"));
        return None;
    }
    let (networks_in, networks_out) = if matches!(key, Key::SourceIp) {
        (
            networks(o, &format!("{f}.values"), &c.values, errors),
            networks(o, &format!("{f}.notValues"), &c.not_values, errors),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let (values, not_values) = if matches!(key, Key::SourcePrincipal) {
        (principals(&c.values), principals(&c.not_values))
    } else {
        (patterns(&c.values, false), patterns(&c.not_values, false))
    };
    Some(ConditionMatch {
        key,
        values,
        not_values,
        networks: networks_in,
        not_networks: networks_out,
    })
}

fn compile_rule(
    o: &StoredObject,
    f: &str,
    r: &AuthorizationRule,
    errors: &mut Vec<ConfigError>,
) -> Rule {
    Rule {
        from: r
            .from
            .iter()
            .enumerate()
            .map(|(i, s)| compile_source(o, &format!("{f}.from[{i}].source"), &s.source, errors))
            .collect(),
        to: r
            .to
            .iter()
            .enumerate()
            .map(|(i, t)| {
                compile_operation(o, &format!("{f}.to[{i}].operation"), &t.operation, errors)
            })
            .collect(),
        when: r
            .when
            .iter()
            .enumerate()
            .filter_map(|(i, c)| compile_condition(o, &format!("{f}.when[{i}]"), c, errors))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_model::manifest::parse_manifest;
    use gatehouse_model::Object;

    fn policies(yaml: &str) -> WorkloadAuthz {
        let objs = parse_manifest("p.yaml", yaml).expect("parse").objects;
        WorkloadAuthz::new(objs.iter().map(|o| match &o.object {
            Object::AuthorizationPolicy(p) => Arc::new(compile(o, p).expect("compile")),
            _ => panic!("not a policy"),
        }))
    }

    fn call<'a>(principal: Option<&'a str>, http: Option<HttpAttributes<'a>>) -> Call<'a> {
        Call {
            principal,
            namespace: principal.and_then(|p| p.split('/').nth(2)),
            source_ip: "10.1.1.10".parse().expect("ip"),
            destination_port: 8080,
            http,
        }
    }

    fn http<'a>(
        method: &'a str,
        path: &'a str,
        headers: &'a http::HeaderMap,
    ) -> HttpAttributes<'a> {
        HttpAttributes {
            method,
            path,
            host: "api.example",
            headers,
        }
    }

    const FRONT: &str = "cluster.local/ns/shop/sa/frontend";
    const OTHER: &str = "cluster.local/ns/other/sa/client";

    #[test]
    fn no_policy_allows_and_empty_allow_denies_all() {
        let none = WorkloadAuthz::default();
        assert!(none.check(&call(Some(FRONT), None)).allowed);
        let deny_all = policies(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: shop}\nspec: {}\n",
        );
        let d = deny_all.check(&call(Some(FRONT), None));
        assert!(!d.allowed);
        assert_eq!(d.policy, None);
        let allow_all = policies(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: allow-all, namespace: shop}\nspec: {rules: [{}]}\n",
        );
        assert!(allow_all.check(&call(None, None)).allowed);
    }

    #[test]
    fn principals_namespaces_and_deny_first() {
        let w = policies(
            r#"
apiVersion: gatehouse.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-shop, namespace: shop}
spec:
  rules:
  - from: [{source: {namespaces: [shop]}}]
---
apiVersion: gatehouse.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-frontend-9000, namespace: shop}
spec:
  action: DENY
  rules:
  - from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/frontend"]}}]
    to: [{operation: {ports: ["9000"]}}]
"#,
        );
        let d = w.check(&call(Some(FRONT), None));
        assert!(d.allowed);
        assert_eq!(d.policy.as_deref(), Some("shop/allow-shop"));
        assert!(!w.check(&call(Some(OTHER), None)).allowed);
        assert!(
            !w.check(&call(None, None)).allowed,
            "plaintext has no namespace"
        );
        let mut c = call(Some(FRONT), None);
        c.destination_port = 9000;
        let d = w.check(&c);
        assert!(!d.allowed);
        assert_eq!(d.policy.as_deref(), Some("shop/deny-frontend-9000"));
    }

    #[test]
    fn http_rules_and_unseen_http() {
        let w = policies(
            r#"
apiVersion: gatehouse.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: public, namespace: shop}
spec:
  rules:
  - to: [{operation: {methods: [GET], paths: ["/public/*", "/health"]}}]
---
apiVersion: gatehouse.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
    when: [{key: "request.headers[x-debug]", notValues: ["yes"]}]
"#,
        );
        let h = http::HeaderMap::new();
        assert!(
            w.check(&call(Some(FRONT), Some(http("GET", "/public/a", &h))))
                .allowed
        );
        assert!(
            w.check(&call(Some(FRONT), Some(http("GET", "/health", &h))))
                .allowed
        );
        assert!(
            !w.check(&call(Some(FRONT), Some(http("POST", "/public/a", &h))))
                .allowed
        );
        let d = w.check(&call(Some(FRONT), Some(http("GET", "/admin", &h))));
        assert_eq!(d.policy.as_deref(), Some("shop/no-admin"));
        let mut dbg = http::HeaderMap::new();
        dbg.insert("x-debug", http::HeaderValue::from_static("yes"));
        // Not denied by no-admin, but no ALLOW rule matches /admin either.
        let d = w.check(&call(Some(FRONT), Some(http("GET", "/admin", &dbg))));
        assert!(!d.allowed);
        assert_eq!(d.policy, None);
        // L4: the DENY rule matches on what it can see; the ALLOW rule cannot match.
        let d = w.check(&call(Some(FRONT), None));
        assert_eq!(d.policy.as_deref(), Some("shop/no-admin"));
        assert!(w.needs_http());
    }

    #[test]
    fn a_dry_run_policy_decides_nothing_and_says_what_it_would_deny() {
        let w = policies(
            r#"
apiVersion: gatehouse.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: suggested, namespace: shop, annotations: {gatehouse.dev/dry-run: "true"}}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/frontend"]}}]
    to: [{operation: {methods: [GET], paths: ["/public/*"]}}]
"#,
        );
        let h = http::HeaderMap::new();
        let d = w.check(&call(Some(FRONT), Some(http("GET", "/public/a", &h))));
        assert_eq!((d.allowed, d.shadow), (true, None), "allowed either way");
        let d = w.check(&call(Some(FRONT), Some(http("POST", "/public/a", &h))));
        assert!(d.allowed, "a dry run denies nothing");
        assert_eq!(
            d.shadow,
            Some((false, Some(Arc::from("shop/suggested")))),
            "but would have denied it"
        );
        assert!(w.needs_http() && !w.is_empty());
        assert!(w.allow.is_empty(), "nothing in force");
    }

    #[test]
    fn ip_blocks_conditions_and_audit() {
        let w = policies(
            r#"
apiVersion: gatehouse.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: nets, namespace: shop}
spec:
  rules:
  - from: [{source: {ipBlocks: ["10.1.0.0/16"], notIpBlocks: ["10.1.1.99"]}}]
    when: [{key: source.principal, values: ["cluster.local/ns/shop/*"]}]
---
apiVersion: gatehouse.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: watch, namespace: shop}
spec:
  action: AUDIT
  rules: [{from: [{source: {notNamespaces: [shop]}}]}]
"#,
        );
        assert!(w.check(&call(Some(FRONT), None)).allowed);
        let d = w.check(&call(Some(OTHER), None));
        assert!(!d.allowed);
        assert_eq!(d.audited, vec![Arc::<str>::from("shop/watch")]);
        let mut c = call(Some(FRONT), None);
        c.source_ip = "10.1.1.99".parse().expect("ip");
        assert!(!w.check(&c).allowed);
        c.source_ip = "10.2.0.1".parse().expect("ip");
        assert!(!w.check(&c).allowed);
    }

    #[test]
    fn errors_name_the_field() {
        let objs = parse_manifest(
            "bad.yaml",
            r#"
apiVersion: gatehouse.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: shop}
spec:
  action: PERMIT
  rules:
  - from: [{source: {ipBlocks: ["10.0.0.0/99"]}}]
    to: [{operation: {ports: ["http"]}}]
    when: [{key: request.time, values: ["x"]}]
"#,
        )
        .expect("parse")
        .objects;
        let Object::AuthorizationPolicy(p) = &objs[0].object else {
            panic!("kind")
        };
        let errs = compile(&objs[0], p).expect_err("invalid");
        let fields: Vec<_> = errs.iter().map(|e| e.field.clone()).collect();
        assert_eq!(
            fields,
            [
                "spec.action",
                "spec.rules[0].from[0].source.ipBlocks[0]",
                "spec.rules[0].to[0].operation.ports[0]",
                "spec.rules[0].when[0].key",
            ]
        );
    }
}
