//! One policy decision with the quickstart's policies, Cedar and Rego, for a
//! `connect` and for a `query` (uncached: the Gate's decision cache is not
//! involved here).

use criterion::{criterion_group, criterion_main, Criterion};
mod support;

use portcullis_core::{Action, Request, StatementInfo, StatementKind};
use portcullis_policy::{CedarPolicies, RegoPolicies};
use std::hint::black_box;
use std::path::Path;

fn decide(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
    let (Ok(cedar), Ok(rego)) = (
        CedarPolicies::load_dir(&root.join("policies")),
        RegoPolicies::load_dir(&root.join("rego")),
    ) else {
        eprintln!("the quickstart policies do not load");
        return;
    };
    let principal = support::alice();
    let target = support::demo();
    let query = Action::Query(StatementInfo {
        kind: StatementKind::Select,
        kinds: vec![StatementKind::Select],
        command: "SELECT".into(),
        tables: vec!["pgbench_accounts".into()],
        functions: vec![],
        has_where: true,
        writes: false,
        text: "SELECT abalance FROM pgbench_accounts WHERE aid = 1".into(),
        prepares: None,
        executes: None,
        prepared_text: None,
        settings: vec![],
        lineage: Default::default(),
        shape: None,
        objects: Default::default(),
    });
    let client_addr = "127.0.0.1".parse().ok();
    for (name, action) in [("connect", Action::Connect), ("query", query)] {
        let request = Request {
            principal: &principal,
            target: &target,
            action: &action,
            client_addr,
            grant: None,
            reason: None,
        };
        c.bench_function(&format!("cedar/{name}"), |b| {
            b.iter(|| cedar.decide(black_box(&request)))
        });
        c.bench_function(&format!("rego/{name}"), |b| {
            b.iter(|| rego.decide(black_box(&request)))
        });
    }
}

criterion_group!(benches, decide);
criterion_main!(benches);
