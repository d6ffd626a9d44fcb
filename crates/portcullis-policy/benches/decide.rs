//! One policy decision with the quickstart's policies, Cedar and Rego, for a
//! `connect` and for a `query` (uncached: the Gate's decision cache is not
//! involved here).

use criterion::{criterion_group, criterion_main, Criterion};
mod support;

use portcullis_core::{Action, Request};
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
    let query = support::pgbench_select("SELECT");
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
    // A context built afresh for each decision: more distinct commands than
    // the engine keeps contexts for, taken in turn.
    let queries: Vec<Action> = (0..4096)
        .map(|i| support::pgbench_select(&format!("SELECT {i}")))
        .collect();
    let mut next = queries.iter().cycle();
    c.bench_function("cedar/query, a context not seen before", |b| {
        b.iter(|| {
            let action = next.next().unwrap_or(&queries[0]);
            cedar.decide(black_box(&Request {
                principal: &principal,
                target: &target,
                action,
                client_addr,
                grant: None,
                reason: None,
            }))
        })
    });
}

/// A `query` with a hundred teams' policies, each on its own target, beside
/// the quickstart's guardrails: what a larger deployment decides.
fn many_targets(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/policies");
    let Ok(guardrails) = std::fs::read_to_string(root.join("guardrails.cedar")) else {
        eprintln!("the quickstart policies are not there");
        return;
    };
    let teams: String = (0..100)
        .map(|i| {
            format!(
                "permit (principal in Group::\"team-{i}\", action == Action::\"query\", \
                 resource == Target::\"db-{i}\") when {{ [\"select\", \"insert\"].contains(context.statement.kind) }};\n"
            )
        })
        .collect();
    let Ok(cedar) =
        CedarPolicies::from_sources(&[("guardrails.cedar", &guardrails), ("teams.cedar", &teams)])
    else {
        eprintln!("the generated policies do not load");
        return;
    };
    let mut principal = support::alice();
    principal.groups = vec!["team-7".into()];
    let mut target = support::demo();
    target.name = "db-7".into();
    let action = support::pgbench_select("SELECT");
    let request = Request {
        principal: &principal,
        target: &target,
        action: &action,
        client_addr: "127.0.0.1".parse().ok(),
        grant: None,
        reason: None,
    };
    c.bench_function("cedar/query, 100 teams", |b| {
        b.iter(|| cedar.decide(black_box(&request)))
    });
}

criterion_group!(benches, decide, many_targets);
criterion_main!(benches);
