//! Makes N decisions with the quickstart's policies, for counting
//! instructions under callgrind (`bench/decision-instructions`), which do
//! not move with the machine's load as times do.
//!
//! `decisions CASE N`, CASE one of `connect`, `query`, `query-new-context`
//! (Cedar), `rego-connect`, `rego-query`.

#[path = "../benches/support/mod.rs"]
mod support;

use portcullis_core::{Action, Effect, Request};
use portcullis_policy::{CedarPolicies, RegoPolicies};
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(case), Some(Ok(n))) = (args.next(), args.next().map(|n| n.parse::<usize>())) else {
        eprintln!("usage: decisions connect|query|query-new-context|rego-connect|rego-query N");
        return ExitCode::FAILURE;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
    let (cedar, rego) = match (
        CedarPolicies::load_dir(&dir.join("policies")),
        RegoPolicies::load_dir(&dir.join("rego")),
    ) {
        (Ok(cedar), Ok(rego)) => (cedar, rego),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("the quickstart policies do not load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let actions: Vec<Action> = (0..n)
        .map(|i| match case.as_str() {
            "connect" | "rego-connect" => Action::Connect,
            // A command per decision: no context is seen twice.
            "query-new-context" => support::pgbench_select(&format!("SELECT {i}")),
            _ => support::pgbench_select("SELECT"),
        })
        .collect();
    let (principal, target) = (support::alice(), support::demo());
    let allowed = actions
        .iter()
        .filter(|action| {
            let request = Request {
                principal: &principal,
                target: &target,
                action,
                client_addr: "127.0.0.1".parse().ok(),
                grant: None,
                reason: None,
            };
            let request = std::hint::black_box(&request);
            let decision = if case.starts_with("rego-") {
                rego.decide(request)
            } else {
                cedar.decide(request)
            };
            decision.effect == Effect::Allow
        })
        .count();
    println!("{allowed} of {n} allowed");
    ExitCode::SUCCESS
}
