//! Rate limits, from a SecurityPolicy's `spec.rateLimits` or an Ingress's
//! `gatehouse.dev/limit-*` annotations, compiled for the proxy: each limit's key and
//! its limiter (`gatehouse_security::ratelimit`).
//!
//! The Local limits of a policy that count by the same key share one limiter (one map
//! lookup per request for all of them, however many there are).
//!
//! Limiters outlive a translation. The caller keeps a [`LimiterRegistry`]: a policy's
//! limits of the same key, names and quotas get the same limiter from one config change
//! to the next, so a reload neither forgets who is over their limit nor hands every
//! client a fresh burst. A change to any of them starts a new limiter for that key.

use crate::duration::parse_duration;
use gatehouse_model::policy::RateLimit;
use gatehouse_model::{ConfigError, StoredObject};
use gatehouse_security::ratelimit::{Decision, KeySpec, KeyView, Keys, Limiter, Quota};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The limiters of every policy, by (policy, limit name), and the key hashing secret.
#[derive(Default)]
pub struct LimiterRegistry {
    keys: Keys,
    limiters: Mutex<HashMap<GroupKey, Weak<Limiter>>>,
}

impl std::fmt::Debug for LimiterRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimiterRegistry").finish_non_exhaustive()
    }
}

/// What a shared limiter is registered under: policy, key, and (name, quota) of each
/// limit it counts.
type GroupKey = (String, String, Vec<(String, Quota)>);

impl LimiterRegistry {
    /// The limiter of `from`'s limits `members` counting by `spec`: the one they had if
    /// nothing about them changed.
    fn limiter(&self, from: &str, spec: &KeySpec, members: Vec<(String, Quota)>) -> Arc<Limiter> {
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, l| l.strong_count() > 0);
        let key = (from.to_string(), format!("{spec:?}"), members);
        if let Some(l) = map.get(&key).and_then(Weak::upgrade) {
            return l;
        }
        let quotas: Vec<Quota> = key.2.iter().map(|(_, q)| *q).collect();
        let l = Arc::new(Limiter::group(&quotas));
        map.insert(key, Arc::downgrade(&l));
        l
    }
}

/// The rate limits on a route; a request must pass each.
#[derive(Debug)]
pub struct RateLimits {
    /// `SecurityPolicy ns/name` or `Ingress ns/name annotations`.
    pub from: String,
    pub limits: Vec<RouteLimit>,
    /// The distinct keys the limits count by: a request's key is hashed once for all
    /// the limits that share it.
    specs: Vec<KeySpec>,
    /// The Local limits by key: one limiter counts all of a key's limits.
    pub groups: Vec<LimitGroup>,
    keys: Keys,
    /// Some limit is Global (known at compile time, asked on every request).
    global: bool,
}

/// The Local limits that count by one key, and the limiter that counts them.
#[derive(Debug)]
pub struct LimitGroup {
    /// The key, in `RateLimits::specs`.
    spec: usize,
    /// The limits, by place in `RateLimits::limits`, in the limiter's quota order.
    members: Vec<usize>,
    pub limiter: Arc<Limiter>,
}

/// One limit, ready to count.
#[derive(Debug)]
pub struct RouteLimit {
    pub name: String,
    /// Its key, in `RateLimits::specs`.
    spec: usize,
    pub quota: Quota,
    /// Counted for all replicas in the shared store.
    pub global: Option<Global>,
}

/// A Global limit's behaviour when its store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Global {
    pub fail_open: bool,
}

/// A request over a limit.
#[derive(Debug)]
pub struct Exceeded<'a> {
    pub limit: &'a RouteLimit,
    pub retry_after: Duration,
    pub reset: Duration,
}

impl RateLimits {
    /// True if some limit is counted in the shared store.
    pub fn has_global(&self) -> bool {
        self.global
    }

    /// The Global limits and the store keys this request counts under (limits whose
    /// key does not apply to it are left out).
    pub fn global_keys<'a>(
        &'a self,
        client: IpAddr,
        path: &'a [u8],
        header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a RouteLimit, String)> + 'a {
        let view = KeyView {
            client,
            path,
            header,
        };
        self.limits
            .iter()
            .filter(|l| l.global.is_some())
            .filter_map(move |l| {
                let material = self.specs[l.spec].material(&view)?;
                Some((
                    l,
                    format!("gatehouse:ratelimit:{}:{}:{material}", self.from, l.name),
                ))
            })
    }

    /// Counts the request against every Local limit in turn; the first it exceeds.
    pub fn check<'a>(
        &self,
        client: IpAddr,
        path: &'a [u8],
        header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
    ) -> Option<Exceeded<'_>> {
        let view = KeyView {
            client,
            path,
            header,
        };
        let now = gatehouse_security::ratelimit::now();
        for group in &self.groups {
            let Some(key) = self.keys.key(&self.specs[group.spec], &view) else {
                continue;
            };
            if let (i, Decision::Deny { retry_after, reset }) =
                group.limiter.check_each_at(key, now)
            {
                let limit = &self.limits[group.members[i]];
                return Some(Exceeded {
                    limit,
                    retry_after,
                    reset,
                });
            }
        }
        None
    }
}

type ErrorAt<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

/// Checks and compiles `spec.rateLimits`; None if there are none or they have errors.
pub(crate) fn compile(
    limits: &[RateLimit],
    from: &str,
    opts: &crate::TranslateOptions,
    at: &ErrorAt<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<RateLimits>> {
    let registry = &*opts.limiters;
    let before = errors.len();
    let mut out = Vec::new();
    let mut specs: Vec<KeySpec> = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, l) in limits.iter().enumerate() {
        let field = |f: &str| format!("spec.rateLimits[{i}].{f}");
        if l.name.is_empty()
            || !l
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            errors.push(at(
                &field("name"),
                format!("{:?} is not a name of letters, digits, - and _", l.name),
            ));
        } else if !names.insert(l.name.as_str()) {
            errors.push(at(&field("name"), format!("{:?} is used twice", l.name)));
        }
        if l.requests == 0 {
            errors.push(at(&field("requests"), "must be at least 1".into()));
        }
        let period = match parse_duration(&l.per) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                errors.push(at(&field("per"), "must be longer than 0".into()));
                continue;
            }
            Err(e) => {
                errors.push(at(&field("per"), e));
                continue;
            }
        };
        if l.burst == Some(0) {
            errors.push(at(&field("burst"), "must be at least 1".into()));
        }
        let mut key = KeySpec::default();
        if let Some(k) = &l.key {
            if let Some(c) = &k.client_ip {
                let (v4, v6) = (c.ipv4_prefix.unwrap_or(32), c.ipv6_prefix.unwrap_or(128));
                if v4 > 32 {
                    errors.push(at(
                        &field("key.clientIP.ipv4Prefix"),
                        format!("{v4} is not 0 to 32"),
                    ));
                }
                if v6 > 128 {
                    errors.push(at(
                        &field("key.clientIP.ipv6Prefix"),
                        format!("{v6} is not 0 to 128"),
                    ));
                }
                key.client = Some((v4, v6));
            }
            if let Some(h) = &k.header {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    errors.push(at(
                        &field("key.header"),
                        format!("{h:?} is not a header name"),
                    ));
                }
                key.header = Some(h.to_ascii_lowercase());
            }
            key.path = k.path.unwrap_or(false);
        }
        let quota = Quota {
            requests: l.requests.max(1),
            period,
            burst: l.burst.unwrap_or(l.requests).max(1),
        };
        let global = match l.mode.as_deref().unwrap_or("Local") {
            "Local" => None,
            "Global" if opts.global_rate_limits => Some(Global {
                fail_open: l.fail_open.unwrap_or(true),
            }),
            "Global" => {
                errors.push(at(
                    &field("mode"),
                    "Global limits are counted in Redis: start Gatehouse with --redis URL".into(),
                ));
                None
            }
            other => {
                errors.push(at(
                    &field("mode"),
                    format!("{other:?} is not Local or Global"),
                ));
                None
            }
        };
        let spec = match specs.iter().position(|s| *s == key) {
            Some(i) => i,
            None => {
                specs.push(key);
                specs.len() - 1
            }
        };
        out.push(RouteLimit {
            name: l.name.clone(),
            spec,
            quota,
            global,
        });
    }
    if errors.len() > before || out.is_empty() {
        return None;
    }
    let groups = (0..specs.len())
        .filter_map(|spec| {
            let members: Vec<usize> = (0..out.len())
                .filter(|&i| out[i].spec == spec && out[i].global.is_none())
                .collect();
            if members.is_empty() {
                return None;
            }
            let named = members
                .iter()
                .map(|&i| (out[i].name.clone(), out[i].quota))
                .collect();
            Some(LimitGroup {
                spec,
                limiter: registry.limiter(from, &specs[spec], named),
                members,
            })
        })
        .collect();
    Some(Arc::new(RateLimits {
        from: from.to_string(),
        global: out.iter().any(|l| l.global.is_some()),
        limits: out,
        specs,
        groups,
        keys: registry.keys.clone(),
    }))
}

/// An Ingress's per-client limits, as ingress-nginx spells them:
/// `gatehouse.dev/limit-rps` and `gatehouse.dev/limit-rpm` (requests per second and per
/// minute from one client address), with bursts of `gatehouse.dev/limit-burst-multiplier`
/// (default 5) times the rate.
pub(crate) fn from_annotations(
    o: &StoredObject,
    a: &BTreeMap<String, String>,
    opts: &crate::TranslateOptions,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<RateLimits>> {
    let field = |k: &str| format!("metadata.annotations[\"gatehouse.dev/{k}\"]");
    let number = |k: &str, errors: &mut Vec<ConfigError>| -> Option<u32> {
        let v = a.get(&format!("gatehouse.dev/{k}"))?.trim();
        match v.parse::<u32>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                errors.push(o.error(&field(k), format!("{v:?} is not a whole number above 0")));
                None
            }
        }
    };
    let rps = number("limit-rps", errors);
    let rpm = number("limit-rpm", errors);
    let multiplier = number("limit-burst-multiplier", errors).unwrap_or(5);
    let per_client = Some(gatehouse_model::policy::RateLimitKey {
        client_ip: Some(Default::default()),
        ..Default::default()
    });
    let mut limits = Vec::new();
    for (name, requests, per) in [("rps", rps, "1s"), ("rpm", rpm, "1m")] {
        if let Some(n) = requests {
            limits.push(RateLimit {
                name: name.into(),
                requests: n,
                per: per.into(),
                burst: Some(n.saturating_mul(multiplier)),
                key: per_client.clone(),
                ..Default::default()
            });
        }
    }
    let from = format!("Ingress {}/{} annotations", o.namespace(), o.name());
    let at = |f: &str, m: String| {
        let k = if f.contains("[1]") || (f.contains("[0]") && rps.is_none()) {
            "limit-rpm"
        } else {
            "limit-rps"
        };
        o.error(&field(k), m)
    };
    compile(&limits, &from, opts, &at, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_model::policy::{ClientIpKey, RateLimitKey};

    fn limit(name: &str, requests: u32, per: &str) -> RateLimit {
        RateLimit {
            name: name.into(),
            requests,
            per: per.into(),
            burst: None,
            key: None,
            mode: None,
            fail_open: None,
        }
    }

    fn at(f: &str, m: String) -> ConfigError {
        ConfigError {
            file: None,
            line: None,
            kind: "SecurityPolicy".into(),
            namespace: Some("default".into()),
            name: "p".into(),
            field: f.into(),
            message: m,
        }
    }

    #[test]
    fn errors_name_the_field() {
        let reg = crate::TranslateOptions::default();
        let mut errors = Vec::new();
        let bad = [
            limit("a", 0, "1s"),
            limit("a", 5, "soon"),
            RateLimit {
                key: Some(RateLimitKey {
                    client_ip: Some(ClientIpKey {
                        ipv4_prefix: Some(33),
                        ipv6_prefix: None,
                    }),
                    header: Some("bad header".into()),
                    path: None,
                }),
                ..limit("b", 1, "1m")
            },
        ];
        assert!(compile(&bad, "p", &reg, &at, &mut errors).is_none());
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.rateLimits[0].requests",
                "spec.rateLimits[1].name",
                "spec.rateLimits[1].per",
                "spec.rateLimits[2].key.clientIP.ipv4Prefix",
                "spec.rateLimits[2].key.header",
            ]
        );
    }

    #[test]
    fn global_limits_need_a_store() {
        let global = RateLimit {
            mode: Some("Global".into()),
            ..limit("g", 5, "1s")
        };
        let mut errors = Vec::new();
        let none = crate::TranslateOptions::default();
        assert!(compile(std::slice::from_ref(&global), "p", &none, &at, &mut errors).is_none());
        assert_eq!(errors[0].field, "spec.rateLimits[0].mode");
        assert!(
            errors[0].message.contains("--redis"),
            "{}",
            errors[0].message
        );
        let with = crate::TranslateOptions {
            global_rate_limits: true,
            ..Default::default()
        };
        let limits = compile(&[global], "p", &with, &at, &mut Vec::new()).expect("compiles");
        assert!(limits.has_global());
        let keys: Vec<String> = limits
            .global_keys("10.0.0.1".parse().expect("ip"), b"/", &|_| None)
            .map(|(_, k)| k)
            .collect();
        assert_eq!(keys, ["gatehouse:ratelimit:p:g:"]);
    }

    #[test]
    fn a_limiter_survives_a_translation_unless_its_limits_change() {
        let reg = crate::TranslateOptions::default();
        let mut errors = Vec::new();
        let first = compile(&[limit("a", 1, "1h")], "p", &reg, &at, &mut errors).expect("compiles");
        let client: IpAddr = "10.0.0.1".parse().expect("ip");
        assert!(first.check(client, b"/", &|_| None).is_none());
        let again = compile(&[limit("a", 1, "1h")], "p", &reg, &at, &mut errors).expect("compiles");
        assert!(Arc::ptr_eq(
            &first.groups[0].limiter,
            &again.groups[0].limiter
        ));
        let over = again
            .check(client, b"/", &|_| None)
            .expect("over the limit");
        assert_eq!(over.limit.name, "a");
        assert!(over.retry_after > Duration::from_secs(3590));
        let changed =
            compile(&[limit("a", 2, "1h")], "p", &reg, &at, &mut errors).expect("compiles");
        assert!(!Arc::ptr_eq(
            &first.groups[0].limiter,
            &changed.groups[0].limiter
        ));
        assert!(errors.is_empty());
    }
}
