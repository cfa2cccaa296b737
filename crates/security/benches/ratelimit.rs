//! The rate limiter alone: nanoseconds per check of a key it knows, of keys spread over
//! many clients, of a key built from a request (client /24 and an API key header), and
//! of 25 quotas sharing one key (one limiter for all of them).

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse_security::ratelimit::{KeySpec, KeyView, Keys, Limiter, Quota};
use std::hint::black_box;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let limiter = Limiter::new(Quota {
        requests: u32::MAX,
        period: Duration::from_secs(1),
        burst: u32::MAX,
    });
    c.bench_function("ratelimit/known_key", |b| {
        b.iter(|| black_box(limiter.check(black_box(42))))
    });
    for k in 0..100_000u64 {
        limiter.check(k);
    }
    let mut k = 0u64;
    c.bench_function("ratelimit/100k_keys", |b| {
        b.iter(|| {
            k = (k + 7919) % 100_000;
            black_box(limiter.check(k))
        })
    });
    let keys = Keys::default();
    let spec = KeySpec {
        client: Some((24, 64)),
        header: Some("x-api-key".into()),
        path: false,
    };
    let header = |n: &str| (n == "x-api-key").then_some(&b"3f9c2a7e-live-key"[..]);
    let view = KeyView {
        client: "203.0.113.7".parse().expect("ip"),
        path: b"/api/orders",
        header: &header,
    };
    c.bench_function("ratelimit/key_and_check", |b| {
        b.iter(|| black_box(keys.key(&spec, &view).map(|key| limiter.check(key))))
    });
    let quotas: Vec<Quota> = (0..25)
        .map(|i| Quota {
            requests: u32::MAX - i,
            period: Duration::from_secs(1),
            burst: u32::MAX,
        })
        .collect();
    let group = Limiter::group(&quotas);
    c.bench_function("ratelimit/25_quotas_one_key", |b| {
        b.iter(|| black_box(group.check(black_box(42))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
