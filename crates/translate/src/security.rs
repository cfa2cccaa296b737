//! Which SecurityPolicy protects a route, and with what: each policy's WAF
//! (`crate::waf`) and rate limits (`crate::ratelimit`) are compiled once, then attached
//! by target. The most specific policy wins whole: the route's own (or the Ingress's),
//! else its first parent Gateway's; an Ingress without a policy may ask through its
//! annotations. Of two policies on one target, the older wins and the other is warned
//! about.

use crate::adaptive::{AdaptivePolicy, SurgeBuilder};
use crate::policy::GATEWAY_GROUP;
use crate::ratelimit::RateLimits;
use crate::waf::WafPolicy;
use crate::TranslateOptions;
use gatehouse_model::policy::SecurityPolicy;
use gatehouse_model::{ConfigError, Object, ObjectStore, StoredObject};
use gatehouse_security::ipacl::{AccessList, Cidr, TrustedProxies};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// What protects a route.
#[derive(Debug, Clone, Default)]
pub struct Protection {
    pub waf: Option<Arc<WafPolicy>>,
    pub rate_limits: Option<Arc<RateLimits>>,
    pub ip_access: Option<Arc<IpAccessPolicy>>,
    /// Whose `X-Forwarded-For` tells the client address.
    pub trusted_proxies: Option<Arc<TrustedProxies>>,
    /// Counts each source's requests and errors for adaptive blocking.
    pub adaptive: Option<Arc<AdaptivePolicy>>,
    /// Under a surge, routes of lower priority are shed first.
    pub priority: i32,
}

/// A compiled `spec.ipAccess`.
#[derive(Debug)]
pub struct IpAccessPolicy {
    /// `SecurityPolicy ns/name`.
    pub from: String,
    pub list: AccessList,
}

impl Protection {
    /// The client address: the connection's, or the one trusted proxies forwarded for.
    pub fn client(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        match &self.trusted_proxies {
            Some(t) => t.client(
                peer,
                headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .map(http::HeaderValue::as_bytes),
            ),
            None => peer,
        }
    }
}

/// Parses a list of CIDRs; errors name the entry.
fn cidrs(
    list: &[String],
    field: &str,
    at: &ErrorAt<'_>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Cidr> {
    list.iter()
        .enumerate()
        .filter_map(|(i, c)| match c.parse::<Cidr>() {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(at(&format!("{field}[{i}]"), e));
                None
            }
        })
        .collect()
}

type ErrorAt<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

/// Protections by what they target: (kind, namespace, name).
#[derive(Debug, Default)]
pub struct SecurityPolicies {
    by_target: HashMap<(&'static str, String, String), Protection>,
    /// The proxy-wide surge limits the policies set.
    pub(crate) surge: SurgeBuilder,
    /// Every policy's adaptive blocking.
    pub(crate) adaptive: Vec<Arc<AdaptivePolicy>>,
}

impl SecurityPolicies {
    /// Checks every SecurityPolicy; errors name the policy and field. A policy with
    /// errors protects nothing (its targets keep no WAF and no limits of it).
    pub fn load(
        store: &ObjectStore,
        opts: &TranslateOptions,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<String>,
    ) -> SecurityPolicies {
        let mut objects: Vec<&StoredObject> = store.of_kind("SecurityPolicy").collect();
        objects.sort_by(|a, b| crate::ingress::oldest_first(a, b));
        let mut by_target = HashMap::new();
        let mut surge = SurgeBuilder::default();
        let mut all_adaptive = Vec::new();
        for o in objects {
            let Object::SecurityPolicy(SecurityPolicy { spec, .. }) = &o.object else {
                continue;
            };
            let from = format!("SecurityPolicy {}/{}", o.namespace(), o.name());
            let at = |f: &str, m: String| o.error(f, m);
            let waf = match &spec.waf {
                Some(w) => match crate::waf::compile(w, &from, opts.waf.as_deref(), &at, errors) {
                    Some(p) => p,
                    None => continue,
                },
                None => None,
            };
            let before = errors.len();
            let rate_limits =
                crate::ratelimit::compile(&spec.rate_limits, &from, opts, &at, errors);
            let ip_access = spec.ip_access.as_ref().map(|a| {
                let allow = cidrs(&a.allow, "spec.ipAccess.allow", &at, errors);
                let deny = cidrs(&a.deny, "spec.ipAccess.deny", &at, errors);
                Arc::new(IpAccessPolicy {
                    from: from.clone(),
                    list: AccessList::new(&allow, &deny),
                })
            });
            let trusted_proxies = spec
                .client_ip_detection
                .as_ref()
                .and_then(|d| d.x_forwarded_for.as_ref())
                .map(|x| {
                    let field = "spec.clientIPDetection.xForwardedFor.trustedCIDRs";
                    Arc::new(TrustedProxies::new(&cidrs(
                        &x.trusted_cidrs,
                        field,
                        &at,
                        errors,
                    )))
                });
            let adaptive = spec.adaptive_blocking.as_ref().and_then(|a| {
                crate::adaptive::compile(a, o.namespace(), o.name(), &opts.adaptive, &at, errors)
            });
            if let Some(l) = &spec.load_shedding {
                surge.add(l, &from, &at, errors);
            }
            if errors.len() > before {
                continue;
            }
            all_adaptive.extend(adaptive.clone());
            let protection = Protection {
                waf,
                rate_limits,
                ip_access,
                trusted_proxies,
                adaptive,
                priority: crate::adaptive::priority(spec.load_shedding.as_ref()),
            };
            for (i, t) in spec.target_refs.iter().enumerate() {
                let kind = match (t.group.as_str(), t.kind.as_str()) {
                    (GATEWAY_GROUP, "Gateway") => "Gateway",
                    (GATEWAY_GROUP, "HTTPRoute") => "HTTPRoute",
                    (GATEWAY_GROUP, "GRPCRoute") => "GRPCRoute",
                    ("networking.k8s.io", "Ingress") => "Ingress",
                    (g, k) => {
                        errors.push(o.error(
                            &format!("spec.targetRefs[{i}].kind"),
                            format!("unsupported target {g}/{k}: must be a Gateway, HTTPRoute or GRPCRoute ({GATEWAY_GROUP}) or an Ingress (networking.k8s.io)"),
                        ));
                        continue;
                    }
                };
                let key = (kind, o.namespace().to_string(), t.name.clone());
                if by_target.contains_key(&key) {
                    warnings.push(format!(
                        "{from}: {kind} {}/{} already has an older SecurityPolicy; ignored for it",
                        key.1, key.2
                    ));
                    continue;
                }
                by_target.insert(key, protection.clone());
            }
        }
        SecurityPolicies {
            by_target,
            surge,
            adaptive: all_adaptive,
        }
    }

    fn get(&self, kind: &'static str, ns: &str, name: &str) -> Option<&Protection> {
        if self.by_target.is_empty() {
            return None;
        }
        self.by_target
            .get(&(kind, ns.to_string(), name.to_string()))
    }

    /// The protection of a Gateway API route: its own policy's, else its first parent
    /// Gateway's.
    pub fn for_route(
        &self,
        o: &StoredObject,
        parents: &[gatehouse_model::gateway::ParentReference],
    ) -> Protection {
        let ns = o.namespace();
        let kind = match o.object.kind() {
            "HTTPRoute" => "HTTPRoute",
            "GRPCRoute" => "GRPCRoute",
            _ => return Protection::default(),
        };
        if let Some(p) = self.get(kind, ns, o.name()) {
            return p.clone();
        }
        parents
            .iter()
            .filter(|p| p.kind.as_deref().unwrap_or("Gateway") == "Gateway")
            .find_map(|p| self.get("Gateway", p.namespace.as_deref().unwrap_or(ns), &p.name))
            .cloned()
            .unwrap_or_default()
    }

    /// The protection of an Ingress: a SecurityPolicy targeting it, else what its
    /// annotations ask for (`gatehouse.dev/waf*`, `gatehouse.dev/limit-*`).
    pub fn for_ingress(
        &self,
        o: &StoredObject,
        annotations: Option<&BTreeMap<String, String>>,
        opts: &TranslateOptions,
        errors: &mut Vec<ConfigError>,
    ) -> Protection {
        if let Some(p) = self.get("Ingress", o.namespace(), o.name()) {
            return p.clone();
        }
        let Some(a) = annotations else {
            return Protection::default();
        };
        Protection {
            waf: crate::waf::from_ingress(o, a, opts.waf.as_deref(), errors),
            rate_limits: crate::ratelimit::from_annotations(o, a, opts, errors),
            ..Default::default()
        }
    }
}
