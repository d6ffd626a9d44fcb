//! Statement classification: a cache hit (the same text again), a shape hit
//! (a new text each time, as pgbench -M simple sends, of a shape seen
//! before) and a miss (nothing cached).

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_sql::Classifier;
use std::hint::black_box;

fn classify(c: &mut Criterion) {
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
    let cached = Classifier::new(10_000);
    let _ = cached.classify(sql);
    c.bench_function("classify/cache_hit", |b| {
        b.iter(|| cached.classify(black_box(sql)))
    });

    let mut aid = 0u64;
    c.bench_function("classify/shape_hit_simple_select", |b| {
        b.iter(|| {
            aid += 1;
            cached.classify(&format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"
            ))
        })
    });

    let uncached = Classifier::new(0);
    let mut aid = 0u64;
    c.bench_function("classify/miss_simple_select", |b| {
        b.iter(|| {
            aid += 1;
            uncached.classify(&format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"
            ))
        })
    });
    let cte =
        "with d as (delete from orders where created_at < now() - interval '1 year' returning *) \
               select count(*) from d join customers c on c.id = d.customer_id";
    c.bench_function("classify/miss_cte", |b| {
        b.iter(|| uncached.classify(black_box(cte)))
    });
}

criterion_group!(benches, classify);
criterion_main!(benches);
