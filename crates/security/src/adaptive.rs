//! Adaptive blocking: which sources send too much. The hot path counts each source's
//! requests and client errors in a sharded map of atomic counters (a source is a client
//! address cut to a prefix, /32 and /64 by default). Once a second, off the hot path,
//! [`SourceTracker::tick`] folds the counts into each source's rates, weighted
//! exponentially over `window` (so a page load's burst is smoothed, a flood is not),
//! learns a baseline from the sources seen, and names the sources over a fixed
//! threshold, or over `baseline_multiplier` times the baseline.
//!
//! The baseline is a high percentile (the 95th) of the active sources' rates, smoothed
//! over five minutes (a running mean while it warms up), and it may rise by at most half its value a tick: a flood from a
//! few sources cannot teach it that floods are normal. Learned thresholds apply once it
//! has seen `WARM_UP` of traffic, and never below `min_learned_rate`.
//!
//! Each source named gets a block whose term doubles with each offence (from `ban` up to
//! `max_ban`); offences are forgotten after a day without one. A blocked source is not
//! named again until its term ends; the caller turns blocks into objects, so they are
//! seen and lifted like any other config.

use crate::ipacl::Cidr;
use crate::ratelimit::KeyHasher;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const SHARDS: usize = 32;

/// How long a baseline learns before learned thresholds apply.
pub const WARM_UP: Duration = Duration::from_secs(30);
/// The baseline's smoothing time.
const BASELINE_TIME: Duration = Duration::from_secs(300);
/// Offences older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The most sources one tracker holds (about 100 bytes each, so ~20 MB). Past it, new
/// sources go untracked until quiet ones are forgotten: a flood rotating through more
/// addresses than this cannot grow memory, and each of its sources sends little.
pub const MAX_SOURCES: usize = 200_000;
/// Sources needed for a percentile worth learning from.
const MIN_SOURCES: usize = 3;

/// What counts as too much.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveConfig {
    /// Requests per second (averaged over `window`) that block a source outright.
    pub requests_per_second: Option<f64>,
    /// Client errors (4xx answers) per second that block a source outright.
    pub errors_per_second: Option<f64>,
    /// Block a source whose rate is this many times the learned baseline.
    pub baseline_multiplier: Option<f64>,
    /// Learned thresholds are never lower than this (requests or errors per second).
    pub min_learned_rate: f64,
    /// Rates are averaged over about this long.
    pub window: Duration,
    /// A first block's term; each repeat doubles it, up to `max_ban`.
    pub ban: Duration,
    pub max_ban: Duration,
    /// A source is an address cut to these prefixes (IPv4, IPv6).
    pub prefix: (u8, u8),
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            requests_per_second: None,
            errors_per_second: None,
            baseline_multiplier: None,
            min_learned_rate: 10.0,
            window: Duration::from_secs(10),
            ban: Duration::from_secs(60),
            max_ban: Duration::from_secs(3600),
            prefix: (32, 64),
        }
    }
}

/// One source's counts since the last tick.
#[derive(Debug)]
pub struct SourceCount {
    /// The source, as [`SourceTracker::source_bits`] spells it.
    bits: u128,
    requests: AtomicU32,
    errors: AtomicU32,
}

impl SourceCount {
    /// Counts a client error (a 4xx answer) of a request already counted.
    pub fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
}

/// Which rate crossed which threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Requests,
    Errors,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Requests => "requests",
            Metric::Errors => "errors",
        }
    }
}

/// A source to block.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub source: Cidr,
    pub term: Duration,
    /// 1 for a first offence, 2 for the next, ...
    pub offence: u32,
    pub metric: Metric,
    /// The source's rate and the threshold it crossed, per second.
    pub rate: f64,
    pub threshold: f64,
    /// Whether the threshold was learned (a multiple of the baseline).
    pub learned: bool,
}

impl Block {
    /// What was seen, in words.
    pub fn reason(&self) -> String {
        let kind = if self.learned {
            "learned threshold"
        } else {
            "threshold"
        };
        format!(
            "{:.1} {}/s over the {kind} of {:.1}/s (offence {}, blocked for {} s)",
            self.rate,
            self.metric.name(),
            self.threshold,
            self.offence,
            self.term.as_secs()
        )
    }
}

type Shard = RwLock<HashMap<u64, Arc<SourceCount>, BuildHasherDefault<KeyHasher>>>;

/// A source's rates, as the ticks see them.
#[derive(Debug, Default)]
struct Rates {
    requests: f64,
    errors: f64,
    /// Ticks in a row without a request.
    idle: u32,
}

/// A learned rate: the smoothed high percentile of the sources' rates.
#[derive(Debug, Default, Clone, Copy)]
struct Baseline {
    value: f64,
    learned: Duration,
}

impl Baseline {
    fn learn(&mut self, sample: Option<f64>, dt: Duration, floor: f64) {
        let Some(p) = sample else {
            return;
        };
        if self.learned.is_zero() {
            // Not above the floor: a tracker that starts during a flood must not take
            // the flood for the baseline (it rises from there by the capped steps).
            self.value = p.min(floor);
        } else {
            // While warming up, a running mean; then smoothing over BASELINE_TIME.
            let alpha = match self.learned < WARM_UP {
                true => dt.as_secs_f64() / (self.learned + dt).as_secs_f64(),
                false => 1.0 - (-dt.as_secs_f64() / BASELINE_TIME.as_secs_f64()).exp(),
            };
            // A rise is believed slowly: at most half the baseline a tick.
            let p = p.min(self.value * 1.5 + 0.1);
            self.value += alpha * (p - self.value);
        }
        self.learned += dt;
    }

    /// The learned threshold, once warm.
    fn threshold(&self, cfg: &AdaptiveConfig) -> Option<f64> {
        let m = cfg.baseline_multiplier?;
        (self.learned >= WARM_UP).then(|| (self.value * m).max(cfg.min_learned_rate))
    }
}

/// A source's record of blocks.
#[derive(Debug, Clone, Copy)]
struct Offences {
    count: u32,
    last: Instant,
    until: Instant,
}

/// What the ticks keep.
#[derive(Debug, Default)]
struct Analysis {
    rates: HashMap<u64, Rates, BuildHasherDefault<KeyHasher>>,
    requests: Baseline,
    errors: Baseline,
    offences: HashMap<u128, Offences>,
    last_tick: Option<Instant>,
}

/// Per-source counts of one policy, and their analysis.
pub struct SourceTracker {
    prefix: (u8, u8),
    hasher: RandomState,
    shards: Box<[Shard]>,
    analysis: Mutex<Analysis>,
    /// Where requests of sources past `MAX_SOURCES` are counted.
    overflow: Arc<SourceCount>,
}

impl std::fmt::Debug for SourceTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceTracker")
            .field("prefix", &self.prefix)
            .field("sources", &self.len())
            .finish()
    }
}

impl SourceTracker {
    /// A tracker of sources cut to `prefix` (IPv4, IPv6).
    pub fn new(prefix: (u8, u8)) -> SourceTracker {
        SourceTracker {
            prefix,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            analysis: Mutex::default(),
            overflow: Arc::new(SourceCount {
                bits: 0,
                requests: AtomicU32::new(0),
                errors: AtomicU32::new(0),
            }),
        }
    }

    /// The source prefixes (fixed for a tracker's life).
    pub fn prefix(&self) -> (u8, u8) {
        self.prefix
    }

    /// The source of `addr`, as IPv6 bits (an IPv4 source as its mapped address).
    fn source_bits(&self, addr: IpAddr) -> u128 {
        let addr = match addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
            a => a,
        };
        match addr {
            IpAddr::V4(a) => {
                let keep = u32::from(self.prefix.0.min(32));
                let bits = u32::from(a)
                    .checked_shr(32 - keep)
                    .and_then(|b| b.checked_shl(32 - keep))
                    .unwrap_or(0);
                u128::from(Ipv4Addr::from(bits).to_ipv6_mapped())
            }
            IpAddr::V6(a) => {
                let keep = u32::from(self.prefix.1.min(128));
                u128::from(a)
                    .checked_shr(128 - keep)
                    .and_then(|b| b.checked_shl(128 - keep))
                    .unwrap_or(0)
            }
        }
    }

    /// The network a source stands for.
    fn source_cidr(&self, bits: u128) -> Cidr {
        let v6 = Ipv6Addr::from(bits);
        match v6.to_ipv4_mapped() {
            Some(v4) => Cidr {
                addr: IpAddr::V4(v4),
                len: self.prefix.0.min(32),
            },
            None => Cidr {
                addr: IpAddr::V6(v6),
                len: self.prefix.1.min(128),
            },
        }
    }

    /// Counts a request of `addr`; the count, to add an error to once the answer is known.
    pub fn record(&self, addr: IpAddr) -> Arc<SourceCount> {
        let bits = self.source_bits(addr);
        let key = self.hasher.hash_one(bits);
        let shard = &self.shards[(key >> 59) as usize % SHARDS];
        {
            let s = shard.read().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = s.get(&key) {
                c.requests.fetch_add(1, Relaxed);
                return c.clone();
            }
        }
        let mut s = shard.write().unwrap_or_else(|p| p.into_inner());
        if s.len() >= MAX_SOURCES / SHARDS && !s.contains_key(&key) {
            // Full: a new source is not tracked until quiet ones are forgotten.
            self.overflow.requests.fetch_add(1, Relaxed);
            return self.overflow.clone();
        }
        let c = s.entry(key).or_insert_with(|| {
            Arc::new(SourceCount {
                bits,
                requests: AtomicU32::new(0),
                errors: AtomicU32::new(0),
            })
        });
        c.requests.fetch_add(1, Relaxed);
        c.clone()
    }

    /// Requests of new sources not tracked because the tracker was full, since the
    /// last call.
    pub fn untracked(&self) -> u32 {
        self.overflow.requests.swap(0, Relaxed)
    }

    /// Sources counted.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Folds the counts since the last tick into the rates; the sources to block now.
    pub fn tick(&self, now: Instant, cfg: &AdaptiveConfig) -> Vec<Block> {
        let mut guard = self.analysis.lock().unwrap_or_else(|p| p.into_inner());
        let a = &mut *guard;
        let dt = a
            .last_tick
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(50), Duration::from_secs(10));
        a.last_tick = Some(now);
        let secs = dt.as_secs_f64();
        let alpha = 1.0 - (-secs / cfg.window.as_secs_f64().max(0.1)).exp();
        // Sources quiet for this many ticks, with rates near zero, are dropped.
        let forget_ticks = (3.0 * cfg.window.as_secs_f64() / secs).ceil() as u32;
        let mut bits_of: Vec<(u64, u128)> = Vec::new();
        let mut gone: Vec<u64> = Vec::new();
        for shard in self.shards.iter() {
            let s = shard.read().unwrap_or_else(|p| p.into_inner());
            for (&key, c) in s.iter() {
                let r = f64::from(c.requests.swap(0, Relaxed)) / secs;
                let e = f64::from(c.errors.swap(0, Relaxed)) / secs;
                let rates = a.rates.entry(key).or_default();
                rates.requests += alpha * (r - rates.requests);
                rates.errors += alpha * (e - rates.errors);
                rates.idle = if r > 0.0 { 0 } else { rates.idle + 1 };
                if rates.idle >= forget_ticks && rates.requests < 0.01 {
                    gone.push(key);
                } else {
                    bits_of.push((key, c.bits));
                }
            }
        }
        if !gone.is_empty() {
            for key in &gone {
                a.rates.remove(key);
                let shard = &self.shards[(key >> 59) as usize % SHARDS];
                let mut s = shard.write().unwrap_or_else(|p| p.into_inner());
                // One held by a request in flight stays until the next look.
                if s.get(key).is_some_and(|c| Arc::strong_count(c) == 1) {
                    s.remove(key);
                }
            }
        }
        a.offences
            .retain(|_, o| now.saturating_duration_since(o.last) < FORGET_AFTER);
        // Learn from the sources not blocked.
        let active = |f: fn(&Rates) -> f64| -> Vec<f64> {
            bits_of
                .iter()
                .filter(|(_, b)| a.offences.get(b).is_none_or(|o| o.until <= now))
                .filter_map(|(k, _)| a.rates.get(k).map(f))
                .filter(|r| *r > 0.01)
                .collect()
        };
        let (req_sample, err_sample) = (
            percentile(active(|r| r.requests), 0.95),
            percentile(active(|r| r.errors), 0.95),
        );
        a.requests.learn(req_sample, dt, cfg.min_learned_rate);
        a.errors.learn(err_sample, dt, cfg.min_learned_rate);
        let learned_req = a.requests.threshold(cfg);
        let learned_err = a.errors.threshold(cfg);
        let mut blocks = Vec::new();
        for (key, bits) in bits_of {
            let Some(rates) = a.rates.get_mut(&key) else {
                continue;
            };
            if a.offences.get(&bits).is_some_and(|o| o.until > now) {
                continue;
            }
            let over = |rate: f64, fixed: Option<f64>, learned: Option<f64>| {
                let fixed = fixed.filter(|t| rate > *t).map(|t| (t, false));
                fixed.or_else(|| learned.filter(|t| rate > *t).map(|t| (t, true)))
            };
            let verdict = over(rates.requests, cfg.requests_per_second, learned_req)
                .map(|t| (Metric::Requests, rates.requests, t))
                .or_else(|| {
                    over(rates.errors, cfg.errors_per_second, learned_err)
                        .map(|t| (Metric::Errors, rates.errors, t))
                });
            let Some((metric, rate, (threshold, learned))) = verdict else {
                continue;
            };
            let offence = a.offences.get(&bits).map_or(1, |o| o.count + 1);
            let term = cfg
                .ban
                .saturating_mul(1u32 << (offence - 1).min(20))
                .min(cfg.max_ban.max(cfg.ban));
            a.offences.insert(
                bits,
                Offences {
                    count: offence,
                    last: now,
                    until: now + term,
                },
            );
            // After its term, a source starts again from nothing.
            *rates = Rates::default();
            blocks.push(Block {
                source: self.source_cidr(bits),
                term,
                offence,
                metric,
                rate,
                threshold,
                learned,
            });
        }
        blocks
    }

    /// The learned baselines (requests, errors per second) and whether they apply yet.
    pub fn baselines(&self) -> (f64, f64, bool) {
        let a = self.analysis.lock().unwrap_or_else(|p| p.into_inner());
        (
            a.requests.value,
            a.errors.value,
            a.requests.learned >= WARM_UP,
        )
    }
}

/// The `q` quantile of `values` (None for too few to learn from).
fn percentile(mut values: Vec<f64>, q: f64) -> Option<f64> {
    if values.len() < MIN_SOURCES {
        return None;
    }
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    let (_, v, _) = values.select_nth_unstable_by(i, f64::total_cmp);
    Some(*v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// Sends `per_tick` requests (and `errors` errors) from each address, then ticks one
    /// second on; the blocks of that tick.
    /// A tracker with the thresholds its ticks use.
    struct Tracked {
        t: SourceTracker,
        cfg: AdaptiveConfig,
    }

    impl std::ops::Deref for Tracked {
        type Target = SourceTracker;
        fn deref(&self) -> &SourceTracker {
            &self.t
        }
    }

    impl Tracked {
        fn tick(&self, now: Instant) -> Vec<Block> {
            self.t.tick(now, &self.cfg)
        }
    }

    fn tracked(cfg: AdaptiveConfig) -> Tracked {
        Tracked {
            t: SourceTracker::new(cfg.prefix),
            cfg,
        }
    }

    fn second(t: &Tracked, now: &mut Instant, traffic: &[(&str, u32, u32)]) -> Vec<Block> {
        for (a, n, e) in traffic {
            for i in 0..*n {
                let c = t.record(ip(a));
                if i < *e {
                    c.error();
                }
            }
        }
        *now += Duration::from_secs(1);
        t.tick(*now)
    }

    #[test]
    fn a_fixed_threshold_blocks_with_escalating_terms() {
        let t = tracked(AdaptiveConfig {
            requests_per_second: Some(50.0),
            window: Duration::from_secs(2),
            ban: Duration::from_secs(10),
            max_ban: Duration::from_secs(25),
            ..Default::default()
        });
        let mut now = Instant::now();
        t.tick(now);
        let mut first = None;
        for s in 0..5 {
            let b = second(&t, &mut now, &[("10.0.0.1", 200, 0), ("10.0.0.2", 20, 0)]);
            if !b.is_empty() {
                first = Some((s, b));
                break;
            }
        }
        let (s, b) = first.expect("the flood is blocked");
        assert!(s <= 1, "blocked within two seconds, not {s}");
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].source, "10.0.0.1/32".parse().expect("cidr"));
        assert_eq!((b[0].offence, b[0].term), (1, Duration::from_secs(10)));
        assert!(!b[0].learned);
        // Blocked: its requests stop reaching the tracker, and it is not named again.
        for _ in 0..10 {
            assert!(second(&t, &mut now, &[("10.0.0.2", 20, 0)]).is_empty());
        }
        // Back after its term, at it again: a second, longer block; then the cap.
        let mut terms = Vec::new();
        for _ in 0..60 {
            for b in second(&t, &mut now, &[("10.0.0.1", 200, 0)]) {
                terms.push((b.offence, b.term.as_secs()));
            }
        }
        assert_eq!(terms[..2], [(2, 20), (3, 25)], "{terms:?}");
    }

    #[test]
    fn errors_and_prefixes() {
        let t = tracked(AdaptiveConfig {
            errors_per_second: Some(5.0),
            window: Duration::from_secs(1),
            prefix: (24, 48),
            ..Default::default()
        });
        let mut now = Instant::now();
        t.tick(now);
        let mut blocks = Vec::new();
        for _ in 0..3 {
            blocks.extend(second(
                &t,
                &mut now,
                &[
                    ("192.0.2.1", 10, 10),
                    ("192.0.2.99", 10, 10),
                    ("198.51.100.1", 30, 1),
                    ("2001:db8:1:2::1", 10, 10),
                ],
            ));
        }
        let mut got: Vec<String> = blocks
            .iter()
            .map(|b| format!("{}/{} {}", b.source.addr, b.source.len, b.metric.name()))
            .collect();
        got.sort();
        assert_eq!(got, ["192.0.2.0/24 errors", "2001:db8:1::/48 errors"]);
        assert!(blocks[0].reason().contains("errors/s over the threshold"));
    }

    #[test]
    fn the_baseline_is_learned_and_not_taught_by_a_flood() {
        let t = tracked(AdaptiveConfig {
            baseline_multiplier: Some(5.0),
            min_learned_rate: 1.0,
            window: Duration::from_secs(2),
            ..Default::default()
        });
        let mut now = Instant::now();
        t.tick(now);
        let normal: Vec<(String, u32, u32)> = (1..=20)
            .map(|i| (format!("10.0.1.{i}"), 4 + i % 3, 0))
            .collect();
        let normal: Vec<(&str, u32, u32)> = normal
            .iter()
            .map(|(a, n, e)| (a.as_str(), *n, *e))
            .collect();
        // Before warm-up, a heavy source is not blocked on a learned threshold.
        let mut early = normal.clone();
        early.push(("10.0.9.9", 100, 0));
        assert!(second(&t, &mut now, &early).is_empty());
        for _ in 0..40 {
            assert!(second(&t, &mut now, &normal).is_empty(), "normal traffic");
        }
        let (base, _, warm) = t.baselines();
        assert!(warm && (4.0..8.0).contains(&base), "baseline {base}");
        // A flood from three sources at 20x: blocked on the learned threshold, and the
        // baseline barely moves.
        let mut flood = normal.clone();
        for a in ["10.0.2.1", "10.0.2.2", "10.0.2.3"] {
            flood.push((a, 120, 0));
        }
        let mut blocked = Vec::new();
        for _ in 0..5 {
            blocked.extend(second(&t, &mut now, &flood));
        }
        let mut who: Vec<String> = blocked.iter().map(|b| b.source.addr.to_string()).collect();
        who.sort();
        assert_eq!(who, ["10.0.2.1", "10.0.2.2", "10.0.2.3"], "{blocked:?}");
        assert!(blocked.iter().all(|b| b.learned));
        let (after, _, _) = t.baselines();
        assert!(after < base * 1.5, "baseline {base} -> {after}");
    }

    #[test]
    fn a_full_tracker_counts_new_sources_apart() {
        let t = tracked(AdaptiveConfig::default());
        for i in 0..(MAX_SOURCES as u32 + 1000) {
            t.record(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert!(t.len() <= MAX_SOURCES, "{}", t.len());
        assert!(t.untracked() >= 1000);
    }

    #[test]
    fn quiet_sources_are_forgotten() {
        let t = tracked(AdaptiveConfig {
            window: Duration::from_secs(1),
            ..Default::default()
        });
        let mut now = Instant::now();
        t.tick(now);
        second(
            &t,
            &mut now,
            &[("10.0.0.1", 5, 0), ("::ffff:10.0.0.2", 5, 0)],
        );
        assert_eq!(t.len(), 2);
        for _ in 0..10 {
            second(&t, &mut now, &[]);
        }
        assert_eq!(t.len(), 0);
    }
}
