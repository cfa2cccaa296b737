//! Rate limits by key with GCRA, the generic cell rate algorithm: per key one number,
//! the theoretical arrival time (TAT) of the next request if requests came at exactly
//! the allowed rate. A request is allowed if it comes no earlier than `TAT - burst ×
//! interval`, and then moves the TAT on by one interval. This is a token bucket of
//! `burst` tokens refilled at `requests` per `period`, kept in one word per key.
//!
//! The state is sharded by key. A known key costs a shared read lock and a
//! compare-and-swap; only a new key takes its shard's write lock. Keys whose bucket is
//! full again hold nothing a new entry would not: a shard drops them when a new key
//! finds it grown to twice its size after the last such sweep (at least 1,024 keys), so
//! memory follows the clients seen lately, at an amortised constant cost. Keys are
//! hashed with a per-process secret (SipHash), so a client cannot choose header values
//! that land on another client's bucket.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

const SHARDS: usize = 64;

/// A shard sweeps when a new key finds it this big at least.
const SWEEP_FLOOR: usize = 1024;

/// One shard: each key's TATs (one per quota), and the size at which it sweeps next.
struct Shard<T> {
    tats: HashMap<u64, T, BuildHasherDefault<KeyHasher>>,
    sweep_at: usize,
}

impl<T> Default for Shard<T> {
    fn default() -> Self {
        Shard {
            tats: HashMap::default(),
            sweep_at: 0,
        }
    }
}

/// A key's TATs, one per quota of its limiter.
trait Tats {
    fn new(n: usize) -> Self;

    /// When all of the key's buckets are full again: its latest TAT.
    fn full_at(&self) -> u64;
}

/// One quota (the usual case): the TAT is the map's value itself, moved on by a
/// compare-and-swap.
impl Tats for AtomicU64 {
    fn new(_: usize) -> Self {
        AtomicU64::new(0)
    }

    fn full_at(&self) -> u64 {
        self.load(Ordering::Acquire)
    }
}

/// Several quotas: their TATs under one lock, taken once for all of them (cheaper than
/// a compare-and-swap each).
impl Tats for Mutex<Box<[u64]>> {
    fn new(n: usize) -> Self {
        Mutex::new(vec![0; n].into())
    }

    fn full_at(&self) -> u64 {
        let tats = self.lock().unwrap_or_else(|p| p.into_inner());
        tats.iter().copied().max().unwrap_or(0)
    }
}

type Shards<T> = Box<[RwLock<Shard<T>>]>;

/// A limiter's state: a map of one word per key for a single quota, of a locked slice
/// per key for several.
enum State {
    One(Shards<AtomicU64>),
    Many(Shards<Mutex<Box<[u64]>>>),
}

/// Keys are SipHash outputs already: the map uses them as they are.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// How many requests a key may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests per `period`, on average.
    pub requests: u32,
    pub period: Duration,
    /// Requests that may come at once (at least 1).
    pub burst: u32,
}

/// The verdict on one request, with what the `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow {
        /// Requests the key may still make at once.
        remaining: u32,
        /// Until the key's bucket is full again.
        reset: Duration,
    },
    Deny {
        /// The earliest time a request of this key would be allowed.
        retry_after: Duration,
        reset: Duration,
    },
}

/// One quota as GCRA counts it.
#[derive(Debug, Clone, Copy)]
struct Rate {
    quota: Quota,
    /// Nanoseconds between two requests at the allowed rate.
    interval: u64,
    /// `burst × interval`: how far ahead of now a key's TAT may be.
    capacity: u64,
}

impl Rate {
    /// Requests and burst of 0 count as 1.
    fn new(quota: Quota) -> Rate {
        let requests = u64::from(quota.requests.max(1));
        let period = u64::try_from(quota.period.as_nanos()).unwrap_or(u64::MAX);
        let interval = (period / requests).max(1);
        let burst = u64::from(quota.burst.max(1));
        Rate {
            quota,
            interval,
            capacity: interval.saturating_mul(burst),
        }
    }

    /// One GCRA step from TAT `current` at `now`: the new TAT and the verdict, or the
    /// refusal (the TAT stays).
    fn step(&self, current: u64, now: u64) -> Result<(u64, Decision), Decision> {
        let base = current.max(now);
        let next = base.saturating_add(self.interval);
        let allowed_from = next.saturating_sub(self.capacity);
        if now < allowed_from {
            return Err(Decision::Deny {
                retry_after: Duration::from_nanos(allowed_from - now),
                reset: Duration::from_nanos(base - now),
            });
        }
        let left = (now + self.capacity).saturating_sub(next) / self.interval;
        Ok((
            next,
            Decision::Allow {
                remaining: u32::try_from(left).unwrap_or(u32::MAX),
                reset: Duration::from_nanos(next - now),
            },
        ))
    }

    /// One GCRA step on a key's TAT.
    fn advance(&self, tat: &AtomicU64, now: u64) -> Decision {
        let mut current = tat.load(Ordering::Acquire);
        loop {
            let (next, allowed) = match self.step(current, now) {
                Ok(moved) => moved,
                Err(refused) => return refused,
            };
            match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return allowed,
                Err(seen) => current = seen,
            }
        }
    }
}

/// Quotas applied per key, in this process's memory. Several quotas that count by the
/// same key (several limits on one route, say) share one limiter: one map entry per
/// key holds a TAT for each, so a request costs one lookup for all of them.
pub struct Limiter {
    rates: Box<[Rate]>,
    state: State,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("quotas", &self.quotas().collect::<Vec<_>>())
            .field("keys", &self.len())
            .finish()
    }
}

impl Limiter {
    /// A limiter for `quota`; requests and burst of 0 count as 1.
    pub fn new(quota: Quota) -> Limiter {
        Limiter::group(&[quota])
    }

    /// A limiter counting each of `quotas` per key (at least one).
    pub fn group(quotas: &[Quota]) -> Limiter {
        let mut rates: Vec<Rate> = quotas.iter().copied().map(Rate::new).collect();
        if rates.is_empty() {
            rates.push(Rate::new(Quota {
                requests: u32::MAX,
                period: Duration::from_nanos(1),
                burst: u32::MAX,
            }));
        }
        fn shards<T>() -> Shards<T> {
            (0..SHARDS).map(|_| RwLock::default()).collect()
        }
        let state = match rates.len() {
            1 => State::One(shards()),
            _ => State::Many(shards()),
        };
        Limiter {
            rates: rates.into(),
            state,
        }
    }

    /// The first quota.
    pub fn quota(&self) -> Quota {
        self.rates[0].quota
    }

    pub fn quotas(&self) -> impl Iterator<Item = Quota> + '_ {
        self.rates.iter().map(|r| r.quota)
    }

    /// Counts one request of `key` now.
    pub fn check(&self, key: u64) -> Decision {
        self.check_at(key, now())
    }

    /// Counts one request of `key` at `now` ([`now`]: the same clock for every
    /// limiter, so a request with several limits reads it once) against every quota;
    /// the first that refuses it, else the last quota's verdict.
    pub fn check_at(&self, key: u64, now: u64) -> Decision {
        self.check_each_at(key, now).1
    }

    /// As [`Limiter::check_at`], with the place of the quota that decided. A request
    /// refused by one quota of a group counts against none of them.
    pub fn check_each_at(&self, key: u64, now: u64) -> (usize, Decision) {
        match &self.state {
            State::One(shards) => with_tats(shards, key, now, 1, |t: &AtomicU64| {
                (0, self.rates[0].advance(t, now))
            }),
            State::Many(shards) => with_tats(shards, key, now, self.rates.len(), |t| {
                self.advance_all(t, now)
            }),
        }
    }

    /// Every quota's step; the TATs move only if all of them allow the request, so a
    /// refused request spends no quota.
    fn advance_all(&self, tats: &Mutex<Box<[u64]>>, now: u64) -> (usize, Decision) {
        let mut tats = tats.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = (
            0,
            Decision::Deny {
                retry_after: Duration::ZERO,
                reset: Duration::ZERO,
            },
        );
        for (i, (rate, tat)) in self.rates.iter().zip(tats.iter()).enumerate() {
            match rate.step(*tat, now) {
                Ok((_, allowed)) => last = (i, allowed),
                Err(refused) => return (i, refused),
            }
        }
        for (rate, tat) in self.rates.iter().zip(tats.iter_mut()) {
            if let Ok((next, _)) = rate.step(*tat, now) {
                *tat = next;
            }
        }
        last
    }

    /// Drops the keys whose buckets are all full again; returns how many keys are left.
    pub fn sweep(&self) -> usize {
        self.sweep_at(now())
    }

    pub fn sweep_at(&self, now: u64) -> usize {
        fn sweep<T: Tats>(shards: &Shards<T>, now: u64) -> usize {
            shards
                .iter()
                .map(|s| {
                    let mut s = s.write().unwrap_or_else(|p| p.into_inner());
                    s.tats.retain(|_, tats| tats.full_at() > now);
                    s.tats.len()
                })
                .sum()
        }
        match &self.state {
            State::One(s) => sweep(s, now),
            State::Many(s) => sweep(s, now),
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        fn len<T>(shards: &Shards<T>) -> usize {
            shards
                .iter()
                .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).tats.len())
                .sum()
        }
        match &self.state {
            State::One(s) => len(s),
            State::Many(s) => len(s),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs `f` on a key's TATs in `shards` (made if new) under the shard's lock. A new
/// key finds its shard swept first when it has grown to twice its size after the last
/// sweep.
fn with_tats<T: Tats, R>(
    shards: &Shards<T>,
    key: u64,
    now: u64,
    n: usize,
    f: impl FnOnce(&T) -> R,
) -> R {
    // The top bits pick the shard; the map's buckets use the low ones.
    let shard = &shards[(key >> 58) as usize % SHARDS];
    {
        let s = shard.read().unwrap_or_else(|p| p.into_inner());
        if let Some(tats) = s.tats.get(&key) {
            return f(tats);
        }
    }
    let mut s = shard.write().unwrap_or_else(|p| p.into_inner());
    if s.tats.len() >= s.sweep_at.max(SWEEP_FLOOR) && !s.tats.contains_key(&key) {
        s.tats.retain(|_, tats| tats.full_at() > now);
        s.sweep_at = s.tats.len() * 2;
    }
    f(s.tats.entry(key).or_insert_with(|| T::new(n)))
}

/// Nanoseconds on the limiters' clock (monotonic, from the first use in the process).
pub fn now() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What a limit counts requests by. Parts combine: a client and an API key, say. No
/// part at all counts every request together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    /// The client address, cut to a prefix (IPv4, IPv6): (32, 128) counts each address.
    pub client: Option<(u8, u8)>,
    /// A request header's value (name in lower case).
    pub header: Option<String>,
    /// The request path.
    pub path: bool,
}

impl KeySpec {
    /// The key of `view` spelled out (`ip=203.0.113.0/24 header=k1 path=/a`), the same in
    /// every process: the name of a key shared through a store. None as for
    /// [`Keys::key`].
    pub fn material(&self, view: &KeyView<'_>) -> Option<String> {
        use std::fmt::Write;
        let mut out = String::new();
        if let Some((v4, v6)) = self.client {
            let _ = match view.client {
                IpAddr::V4(a) => write!(
                    out,
                    "ip={}/{v4} ",
                    std::net::Ipv4Addr::from(mask(u128::from(u32::from(a)), 32, v4) as u32)
                ),
                IpAddr::V6(a) => write!(
                    out,
                    "ip={}/{v6} ",
                    std::net::Ipv6Addr::from(mask(u128::from(a), 128, v6))
                ),
            };
        }
        if let Some(name) = &self.header {
            let value = (view.header)(name)?;
            let _ = write!(out, "header={} ", String::from_utf8_lossy(value));
        }
        if self.path {
            let _ = write!(out, "path={}", String::from_utf8_lossy(view.path));
        }
        Some(out)
    }
}

/// A request as a key sees it.
pub struct KeyView<'a> {
    pub client: IpAddr,
    pub path: &'a [u8],
    /// Looks up a header by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
}

/// Builds keys, hashed with a secret that is the same for every key of the process.
#[derive(Clone)]
pub struct Keys {
    hasher: RandomState,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

impl Default for Keys {
    fn default() -> Keys {
        Keys {
            hasher: RandomState::new(),
        }
    }
}

impl Keys {
    /// The key of one client address (each address its own).
    pub fn of_address(&self, client: IpAddr) -> u64 {
        let view = KeyView {
            client,
            path: b"",
            header: &|_| None,
        };
        let spec = KeySpec {
            client: Some((32, 128)),
            ..Default::default()
        };
        self.key(&spec, &view).unwrap_or(0)
    }

    /// The key of `view` under `spec`; None if the header it counts by is missing (the
    /// limit does not apply to such a request, as in Envoy).
    pub fn key(&self, spec: &KeySpec, view: &KeyView<'_>) -> Option<u64> {
        let mut h = self.hasher.build_hasher();
        if let Some((v4, v6)) = spec.client {
            match view.client {
                IpAddr::V4(a) => {
                    h.write_u8(4);
                    h.write_u32(mask(u128::from(u32::from(a)), 32, v4) as u32);
                }
                IpAddr::V6(a) => {
                    h.write_u8(6);
                    h.write_u128(mask(u128::from(a), 128, v6));
                }
            }
        }
        if let Some(name) = &spec.header {
            let value = (view.header)(name)?;
            h.write_usize(value.len());
            h.write(value);
        }
        if spec.path {
            h.write_usize(view.path.len());
            h.write(view.path);
        }
        Some(h.finish())
    }
}

/// The first `prefix` bits of an address of `bits` bits.
fn mask(addr: u128, bits: u32, prefix: u8) -> u128 {
    let keep = u32::from(prefix).min(bits);
    if keep == 0 {
        return 0;
    }
    let drop = bits - keep;
    (addr >> drop) << drop
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn limiter(requests: u32, period_ms: u64, burst: u32) -> Limiter {
        Limiter::new(Quota {
            requests,
            period: Duration::from_millis(period_ms),
            burst,
        })
    }

    #[test]
    fn burst_then_the_rate() {
        // 10 per second (one every 100 ms), 3 at once.
        let l = limiter(10, 1000, 3);
        let t = 1000 * MS;
        for left in [2, 1, 0] {
            assert!(
                matches!(l.check_at(1, t), Decision::Allow { remaining, .. } if remaining == left)
            );
        }
        match l.check_at(1, t) {
            Decision::Deny { retry_after, reset } => {
                assert_eq!(retry_after, Duration::from_millis(100));
                assert_eq!(reset, Duration::from_millis(300));
            }
            d => panic!("allowed: {d:?}"),
        }
        // One more every 100 ms, not before.
        assert!(matches!(l.check_at(1, t + 99 * MS), Decision::Deny { .. }));
        assert!(matches!(
            l.check_at(1, t + 100 * MS),
            Decision::Allow { remaining: 0, .. }
        ));
        assert!(matches!(l.check_at(1, t + 150 * MS), Decision::Deny { .. }));
        // Another key has its own bucket.
        assert!(matches!(
            l.check_at(2, t),
            Decision::Allow { remaining: 2, .. }
        ));
        // After a quiet second the whole burst is back.
        assert!(matches!(
            l.check_at(1, t + 1500 * MS),
            Decision::Allow { remaining: 2, .. }
        ));
    }

    #[test]
    fn a_group_counts_each_quota_per_key() {
        // 10/s burst 3, and 2 per 100 ms burst 2, on the same keys.
        let l = Limiter::group(&[
            Quota {
                requests: 10,
                period: Duration::from_secs(1),
                burst: 3,
            },
            Quota {
                requests: 2,
                period: Duration::from_millis(100),
                burst: 2,
            },
        ]);
        let t = 1000 * MS;
        assert!(matches!(l.check_each_at(1, t), (1, Decision::Allow { .. })));
        assert!(matches!(l.check_each_at(1, t), (1, Decision::Allow { .. })));
        // The second quota's burst is spent first; the refused request spends nothing.
        assert!(matches!(l.check_each_at(1, t), (1, Decision::Deny { .. })));
        // 60 ms on, the second quota has one token again and the first its third.
        assert!(matches!(
            l.check_each_at(1, t + 60 * MS),
            (1, Decision::Allow { .. })
        ));
        assert!(matches!(
            l.check_each_at(1, t + 70 * MS),
            (0, Decision::Deny { .. })
        ));
        assert!(matches!(l.check_each_at(2, t), (1, Decision::Allow { .. })));
        assert_eq!(l.len(), 2);
        assert_eq!(l.sweep_at(t + 400 * MS), 0);
    }

    #[test]
    fn sweep_drops_only_full_buckets() {
        let l = limiter(10, 1000, 5);
        l.check_at(1, 0);
        l.check_at(2, 500 * MS);
        assert_eq!(l.len(), 2);
        // Key 1 is full again at 100 ms, key 2 at 600 ms.
        assert_eq!(l.sweep_at(300 * MS), 1);
        assert_eq!(l.sweep_at(600 * MS), 0);
        assert!(l.is_empty());
    }

    #[test]
    fn new_keys_sweep_a_grown_shard() {
        let l = limiter(1000, 1000, 1);
        // 100,000 clients once each, 1 ms apart: each bucket is full again 1 ms later.
        for k in 0..100_000u64 {
            l.check_at(k, k * MS);
        }
        assert!(l.len() < 64 * 2 * SWEEP_FLOOR, "{} keys held", l.len());
        // A key still in its interval is never dropped.
        assert!(matches!(
            l.check_at(99_999, 99_999 * MS),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn threads_never_get_more_than_the_quota() {
        // 1000 per second, burst 50: in a fixed instant, exactly 50 pass.
        let l = std::sync::Arc::new(limiter(1000, 1000, 50));
        let allowed: usize = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| matches!(l.check_at(7, 5000 * MS), Decision::Allow { .. }))
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .sum();
        assert_eq!(allowed, 50);
    }

    #[test]
    fn keys_by_prefix_header_and_path() {
        let keys = Keys::default();
        let none = |_: &str| None;
        let api = |n: &str| (n == "x-api-key").then_some(&b"k1"[..]);
        fn view<'a>(
            ip: &str,
            path: &'a [u8],
            header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
        ) -> KeyView<'a> {
            KeyView {
                client: ip.parse().expect("ip"),
                path,
                header,
            }
        }
        let by24 = KeySpec {
            client: Some((24, 64)),
            ..Default::default()
        };
        let k = |spec: &KeySpec, v: &KeyView<'_>| keys.key(spec, v);
        assert_eq!(
            k(&by24, &view("10.0.0.1", b"/", &none)),
            k(&by24, &view("10.0.0.200", b"/a", &none))
        );
        assert_ne!(
            k(&by24, &view("10.0.0.1", b"/", &none)),
            k(&by24, &view("10.0.1.1", b"/", &none))
        );
        assert_eq!(
            k(&by24, &view("2001:db8::1", b"/", &none)),
            k(&by24, &view("2001:db8::ffff", b"/", &none))
        );
        let by_key = KeySpec {
            header: Some("x-api-key".into()),
            ..Default::default()
        };
        assert_eq!(k(&by_key, &view("10.0.0.1", b"/", &none)), None);
        assert!(k(&by_key, &view("10.0.0.1", b"/", &api)).is_some());
        let by_path = KeySpec {
            path: true,
            ..Default::default()
        };
        assert_ne!(
            k(&by_path, &view("10.0.0.1", b"/a", &none)),
            k(&by_path, &view("10.0.0.1", b"/b", &none))
        );
        assert_eq!(mask(0xffff_ffff, 32, 0), 0);
        assert_eq!(mask(0xffff_ffff, 32, 8), 0xff00_0000);
    }
}
