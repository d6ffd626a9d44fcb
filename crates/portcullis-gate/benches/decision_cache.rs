//! A decision from the Gate's decision cache, with the quickstart policies:
//! a `connect`, and a `query` found by its shape (as each pgbench -M simple
//! statement is, with its own constant) or by its text. The first decision
//! of each is made before measuring, so each iteration is a hit.

#[path = "../../portcullis-policy/benches/support/mod.rs"]
mod support;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_core::{Action, SessionId};
use portcullis_gate::{DecisionCache, Session};
use portcullis_policy::{CedarPolicies, Policies};
use portcullis_sql::Classifier;
use std::hint::black_box;
use std::path::Path;

fn decision_cache(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/policies");
    let Ok(cedar) = CedarPolicies::load_dir(&dir) else {
        eprintln!("the quickstart policies do not load");
        return;
    };
    let policies = Policies::from(cedar);
    let principal = support::alice();
    let target = support::demo();
    let Ok(addr) = "127.0.0.1:5000".parse() else {
        return;
    };
    let session = Session::new(SessionId::new("bench"), principal, target, addr, "alice");
    let cache = DecisionCache::new(10_000);
    let classifier = Classifier::new(1_000);
    let classify = |sql: &str| {
        classifier
            .classify(sql)
            .ok()
            .and_then(|s| s.first().cloned())
    };
    let (Some(shaped), Some(other)) = (
        classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1"),
        classify("SELECT abalance FROM pgbench_accounts WHERE aid = 2"),
    ) else {
        return;
    };
    let texts = Policies::from(
        match CedarPolicies::from_sources(&[(
            "text.cedar",
            r#"permit (principal, action, resource) when { !(context has statement) || !(context.statement.text like "*secret*") };"#,
        )]) {
            Ok(p) => p,
            Err(_) => return,
        },
    );
    let connect = Action::Connect;
    let first = Action::Query(shaped);
    let second = Action::Query(other);
    cache.decide(&policies, &session, &connect, None);
    cache.decide(&policies, &session, &first, None);
    c.bench_function("decision_cache/connect_hit", |b| {
        b.iter(|| cache.decide(&policies, &session, black_box(&connect), None))
    });
    // Another constant, the same shape: found without evaluating.
    c.bench_function("decision_cache/query_shape_hit", |b| {
        b.iter(|| cache.decide(&policies, &session, black_box(&second), None))
    });
    // Policies that read the text: keyed by the whole text.
    cache.decide(&texts, &session, &second, None);
    c.bench_function("decision_cache/query_text_hit", |b| {
        b.iter(|| cache.decide(&texts, &session, black_box(&second), None))
    });
    // For comparison: nothing in the decision cache, the quickstart policies
    // evaluated (with the context the policy engine keeps).
    c.bench_function("decision_cache/query_miss_cedar", |b| {
        b.iter(|| {
            cache.clear();
            cache.decide(&policies, &session, black_box(&second), None)
        })
    });
}

criterion_group!(benches, decision_cache);
criterion_main!(benches);
