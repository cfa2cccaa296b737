//! The engine alone on the Core Rule Set: microseconds per clean and per attack
//! request, at paranoia levels 1 and 4, with the rule set compiled once.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

#[path = "support/mod.rs"]
mod fixture;
use fixture::{crs, judge, ATTACK, CLEAN, CLEAN_POST, WRK};

fn bench(c: &mut Criterion) {
    for pl in [1u8, 4] {
        let rules = crs(pl);
        for (name, req) in [
            ("clean_get", &CLEAN),
            ("clean_post", &CLEAN_POST),
            ("attack", &ATTACK),
            ("bench_get", &WRK),
        ] {
            c.bench_function(&format!("pl{pl}/{name}"), |b| {
                b.iter(|| black_box(judge(&rules, req)))
            });
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
