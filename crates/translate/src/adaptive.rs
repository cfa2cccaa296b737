//! Adaptive DDoS mitigation and surge protection, compiled: a SecurityPolicy's
//! `spec.adaptiveBlocking` becomes a source tracker (`gatehouse_security::adaptive`)
//! that outlives translations, `SourceBlock` objects become the Snapshot's block list,
//! and `spec.loadShedding` becomes route priorities and the proxy-wide surge limits.

use crate::duration::parse_duration;
use gatehouse_model::policy::{AdaptiveBlocking, LoadShedding, SourceBlock};
use gatehouse_model::{ConfigError, Object, ObjectStore};
use gatehouse_security::adaptive::{AdaptiveConfig, SourceTracker};
use gatehouse_security::ipacl::{BlockList, Cidr};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// One policy's adaptive blocking as one translation compiled it: its tracker (shared
/// with the translations before and after), and the thresholds and mode that apply
/// while this translation's Snapshot is served. A rejected translation changes nothing
/// the data plane uses.
#[derive(Debug)]
pub struct AdaptivePolicy {
    /// `ns/name` of the policy.
    pub policy: String,
    /// The policy's namespace (where its blocks are made).
    pub namespace: String,
    pub tracker: Arc<SourceTracker>,
    pub config: AdaptiveConfig,
    /// Log what would be blocked, block nothing.
    pub dry_run: bool,
    /// Hold sources to this many requests per second instead of blocking them.
    pub limit: Option<u32>,
}

/// The source trackers in use, by policy: a reload keeps a policy's tracker (its
/// rates, baseline and offences) unless its source prefixes change.
#[derive(Default)]
pub struct AdaptiveRegistry {
    trackers: Mutex<HashMap<String, Weak<SourceTracker>>>,
}

impl std::fmt::Debug for AdaptiveRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveRegistry").finish_non_exhaustive()
    }
}

impl AdaptiveRegistry {
    fn get(
        &self,
        namespace: &str,
        name: &str,
        config: AdaptiveConfig,
        dry_run: bool,
        limit: Option<u32>,
    ) -> Arc<AdaptivePolicy> {
        let policy = format!("{namespace}/{name}");
        let mut map = self.trackers.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, t| t.strong_count() > 0);
        let tracker = match map.get(&policy).and_then(Weak::upgrade) {
            Some(t) if t.prefix() == config.prefix => t,
            _ => {
                let t = Arc::new(SourceTracker::new(config.prefix));
                map.insert(policy.clone(), Arc::downgrade(&t));
                t
            }
        };
        Arc::new(AdaptivePolicy {
            policy,
            namespace: namespace.to_string(),
            tracker,
            config,
            dry_run,
            limit,
        })
    }
}

type ErrorAt<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

/// A duration field, or its default; errors name the field.
fn duration(
    value: &Option<String>,
    default: Duration,
    field: &str,
    at: &ErrorAt<'_>,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match value.as_deref().map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            errors.push(at(field, "must be longer than 0".into()));
            default
        }
        Some(Err(e)) => {
            errors.push(at(field, e));
            default
        }
    }
}

/// Checks and compiles `spec.adaptiveBlocking`.
pub(crate) fn compile(
    a: &AdaptiveBlocking,
    namespace: &str,
    name: &str,
    registry: &AdaptiveRegistry,
    at: &ErrorAt<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<AdaptivePolicy>> {
    let before = errors.len();
    let f = |n: &str| format!("spec.adaptiveBlocking.{n}");
    let dry_run = match a.mode.as_deref() {
        None | Some("Enforce") => false,
        Some("DryRun") => true,
        Some(m) => {
            errors.push(at(&f("mode"), format!("{m:?} is not Enforce or DryRun")));
            false
        }
    };
    if a.requests_per_second.is_none()
        && a.errors_per_second.is_none()
        && a.baseline_multiplier.is_none()
    {
        errors.push(at(
            "spec.adaptiveBlocking",
            "give requestsPerSecond, errorsPerSecond or baselineMultiplier".into(),
        ));
    }
    for (v, n) in [
        (a.requests_per_second, "requestsPerSecond"),
        (a.errors_per_second, "errorsPerSecond"),
        (a.min_learned_rate, "minLearnedRate"),
    ] {
        if v == Some(0) {
            errors.push(at(&f(n), "must be at least 1".into()));
        }
    }
    if let Some(m) = a.baseline_multiplier {
        if !(m.is_finite() && m >= 1.0) {
            errors.push(at(
                &f("baselineMultiplier"),
                format!("{m} is not at least 1"),
            ));
        }
    }
    let defaults = AdaptiveConfig::default();
    let window = duration(&a.window, defaults.window, &f("window"), at, errors);
    let ban = duration(
        &a.block_duration,
        defaults.ban,
        &f("blockDuration"),
        at,
        errors,
    );
    let max_ban = duration(
        &a.max_block_duration,
        defaults.max_ban.max(ban),
        &f("maxBlockDuration"),
        at,
        errors,
    );
    if max_ban < ban {
        errors.push(at(
            &f("maxBlockDuration"),
            "must not be shorter than blockDuration".into(),
        ));
    }
    let source = a.source.as_ref();
    let v4 = source
        .and_then(|s| s.ipv4_prefix)
        .unwrap_or(defaults.prefix.0);
    let v6 = source
        .and_then(|s| s.ipv6_prefix)
        .unwrap_or(defaults.prefix.1);
    if v4 > 32 {
        errors.push(at(&f("source.ipv4Prefix"), "must be 0 to 32".into()));
    }
    if v6 > 128 {
        errors.push(at(&f("source.ipv6Prefix"), "must be 0 to 128".into()));
    }
    let limit = match a.action.as_deref() {
        None | Some("Block") => None,
        Some("Limit") => match a.limit_requests_per_second.unwrap_or(1) {
            0 => {
                errors.push(at(
                    &f("limitRequestsPerSecond"),
                    "must be at least 1".into(),
                ));
                None
            }
            n => Some(n),
        },
        Some(other) => {
            errors.push(at(&f("action"), format!("{other:?} is not Block or Limit")));
            None
        }
    };
    if errors.len() > before {
        return None;
    }
    let config = AdaptiveConfig {
        requests_per_second: a.requests_per_second.map(f64::from),
        errors_per_second: a.errors_per_second.map(f64::from),
        baseline_multiplier: a.baseline_multiplier,
        min_learned_rate: a
            .min_learned_rate
            .map_or(defaults.min_learned_rate, f64::from),
        window,
        ban,
        max_ban,
        prefix: (v4, v6),
    };
    Some(registry.get(namespace, name, config, dry_run, limit))
}

/// A route's priority under a surge, from `spec.loadShedding.priority`.
pub(crate) fn priority(l: Option<&LoadShedding>) -> i32 {
    l.and_then(|l| l.priority).unwrap_or(0)
}

/// Proxy-wide surge limits, and the priorities of the routes they may shed.
#[derive(Debug, Clone, PartialEq)]
pub struct SurgeLimits {
    /// Requests in flight to all backends.
    pub max_concurrent: Option<u32>,
    /// Backend latency (90th percentile of the last moments).
    pub max_latency: Option<Duration>,
    /// Every route priority in use, lowest first (0 is always there).
    pub priorities: Vec<i32>,
    /// The policies the limits come from.
    pub from: Vec<String>,
}

/// Gathers the surge limits of every policy (the lowest of each wins).
#[derive(Debug, Default)]
pub(crate) struct SurgeBuilder {
    max_concurrent: Option<u32>,
    max_latency: Option<Duration>,
    priorities: BTreeSet<i32>,
    from: Vec<String>,
}

impl SurgeBuilder {
    pub(crate) fn add(
        &mut self,
        l: &LoadShedding,
        from: &str,
        at: &ErrorAt<'_>,
        errors: &mut Vec<ConfigError>,
    ) {
        self.priorities.insert(priority(Some(l)));
        if l.max_concurrent_requests == Some(0) {
            errors.push(at(
                "spec.loadShedding.maxConcurrentRequests",
                "must be at least 1".into(),
            ));
            return;
        }
        let latency = l.max_latency.as_ref().map(|_| {
            duration(
                &l.max_latency,
                Duration::ZERO,
                "spec.loadShedding.maxLatency",
                at,
                errors,
            )
        });
        let latency = latency.filter(|d| !d.is_zero());
        if l.max_concurrent_requests.is_none() && latency.is_none() {
            return;
        }
        self.max_concurrent = lowest(self.max_concurrent, l.max_concurrent_requests);
        self.max_latency = lowest(self.max_latency, latency);
        self.from.push(from.to_string());
    }

    pub(crate) fn build(mut self) -> Option<Arc<SurgeLimits>> {
        if self.max_concurrent.is_none() && self.max_latency.is_none() {
            return None;
        }
        self.priorities.insert(0);
        Some(Arc::new(SurgeLimits {
            max_concurrent: self.max_concurrent,
            max_latency: self.max_latency,
            priorities: self.priorities.into_iter().collect(),
            from: self.from,
        }))
    }
}

/// The lower of two limits, either of which may be unset.
fn lowest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One `SourceBlock`, as the proxy reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEntry {
    /// `namespace/name` of the object.
    pub name: String,
    pub source: String,
    pub policy: Option<String>,
    /// Milliseconds since the Unix epoch (`u64::MAX`: until deleted).
    pub until_ms: u64,
    /// Not a block but a tightened limit: the source is held to a rate.
    pub limit: Option<Arc<SourceLimit>>,
}

/// The rate a `SourceBlock` with `limit` holds its source to.
#[derive(Debug)]
pub struct SourceLimit {
    pub per_second: u32,
    pub limiter: gatehouse_security::ratelimit::Limiter,
    pub keys: gatehouse_security::ratelimit::Keys,
}

/// Limits compare by their rate (the limiter's state is not config).
impl PartialEq for SourceLimit {
    fn eq(&self, other: &Self) -> bool {
        self.per_second == other.per_second
    }
}

impl Eq for SourceLimit {}

impl SourceLimit {
    /// Whether one more request from `client` is within the limit.
    pub fn allows(&self, client: std::net::IpAddr) -> bool {
        matches!(
            self.limiter.check(self.keys.of_address(client)),
            gatehouse_security::ratelimit::Decision::Allow { .. }
        )
    }
}

/// Every `SourceBlock`, for lookups by address.
#[derive(Debug, Default)]
pub struct Blocks {
    pub list: BlockList,
    pub entries: Vec<BlockEntry>,
}

impl Blocks {
    /// The block holding `addr` at `now_ms`.
    pub fn check(&self, addr: std::net::IpAddr, now_ms: u64) -> Option<&BlockEntry> {
        self.list
            .check(addr, now_ms)
            .and_then(|i| self.entries.get(i))
    }
}

/// Compiles the `SourceBlock` objects; errors name the object and field.
pub(crate) fn blocks(store: &ObjectStore, errors: &mut Vec<ConfigError>) -> Option<Arc<Blocks>> {
    let mut nets = Vec::new();
    let mut entries = Vec::new();
    for o in store.of_kind("SourceBlock") {
        let Object::SourceBlock(SourceBlock { spec, .. }) = &o.object else {
            continue;
        };
        let cidr = match spec.source.parse::<Cidr>() {
            Ok(c) => c,
            Err(e) => {
                errors.push(o.error("spec.source", e));
                continue;
            }
        };
        let until_ms = match spec.expires_at.as_deref() {
            None => u64::MAX,
            Some(t) => match t.parse::<jiff::Timestamp>() {
                Ok(t) => u64::try_from(t.as_millisecond()).unwrap_or(0),
                Err(e) => {
                    errors.push(o.error(
                        "spec.expiresAt",
                        format!("{t:?} is not an RFC 3339 time: {e}"),
                    ));
                    continue;
                }
            },
        };
        nets.push((cidr, until_ms));
        let limit = match spec.limit {
            Some(0) => {
                errors.push(o.error("spec.limit", "must be at least 1 request per second"));
                continue;
            }
            Some(n) => Some(Arc::new(SourceLimit {
                per_second: n,
                limiter: gatehouse_security::ratelimit::Limiter::new(
                    gatehouse_security::ratelimit::Quota {
                        requests: n,
                        period: Duration::from_secs(1),
                        burst: n,
                    },
                ),
                keys: Default::default(),
            })),
            None => None,
        };
        entries.push(BlockEntry {
            name: format!("{}/{}", o.namespace(), o.name()),
            source: spec.source.clone(),
            policy: spec.policy.clone(),
            until_ms,
            limit,
        });
    }
    if entries.is_empty() {
        return None;
    }
    Some(Arc::new(Blocks {
        list: BlockList::new(&nets),
        entries,
    }))
}

pub use gatehouse_model::policy::MADE_BY_LABEL;

/// `raw` as an object name (DNS-1123): lowercase, anything but letters, digits and
/// dashes a dash (`src-127.0.0.2/32` → `src-127-0-0-2-32`).
pub fn object_name(raw: &str) -> String {
    raw.chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect()
}

/// Places an object an adaptive control made in `namespace`, labelled as made by
/// `maker` (so that writers never touch objects of the same name written by hand).
pub fn mark_made(
    meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    namespace: &str,
    maker: &str,
) {
    meta.namespace = Some(namespace.to_string());
    meta.labels = Some(
        [(MADE_BY_LABEL.to_string(), maker.to_string())]
            .into_iter()
            .collect(),
    );
}

/// `ms` (since the Unix epoch) as an RFC 3339 time, as `expiresAt` fields say it.
pub fn rfc3339(ms: u64) -> Option<String> {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.to_string())
}

/// The `SourceBlock` object for a block `policy` decided at `now_ms`, and its end.
pub fn block_object(
    policy: &AdaptivePolicy,
    block: &gatehouse_security::adaptive::Block,
    now_ms: u64,
) -> (gatehouse_model::StoredObject, u64) {
    let source = format!("{}/{}", block.source.addr, block.source.len);
    let until_ms = now_ms.saturating_add(u64::try_from(block.term.as_millis()).unwrap_or(0));
    let expires_at = rfc3339(until_ms);
    let mut object = SourceBlock::new(
        &object_name(&format!("src-{source}")),
        gatehouse_model::policy::SourceBlockSpec {
            source,
            expires_at,
            reason: Some(block.reason()),
            policy: Some(policy.policy.clone()),
            offence: Some(block.offence),
            limit: policy.limit,
        },
    );
    mark_made(&mut object.metadata, &policy.namespace, "adaptive-blocking");
    (
        gatehouse_model::StoredObject::new(Object::SourceBlock(object)),
        until_ms,
    )
}
