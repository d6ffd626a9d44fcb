//! The principal, target and statement the decision benchmarks ask about;
//! shared with `portcullis-gate`'s decision cache benchmark and the
//! `decisions` example (included by path), each of which uses a part.
#![allow(dead_code)]

use portcullis_core::{Action, Principal, StatementInfo, StatementKind, Target, TargetKind};
use std::collections::BTreeMap;

/// alice, in `eng`, from the dev issuer.
pub fn alice() -> Principal {
    Principal {
        id: "alice@example.com".into(),
        subject: "alice".into(),
        email: Some("alice@example.com".into()),
        groups: vec!["eng".into()],
        issuer: "portcullis-dev".into(),
        expires_at: u64::MAX,
    }
}

/// The quickstart's PostgreSQL target.
pub fn demo() -> Target {
    Target {
        name: "demo".into(),
        kind: TargetKind::Postgres,
        labels: BTreeMap::from([("env".to_string(), "dev".to_string())]),
    }
}

/// pgbench's `-S` statement, classified, with the given command (`SELECT`
/// as classified; another to make a context not seen before).
pub fn pgbench_select(command: &str) -> Action {
    Action::Query(StatementInfo {
        kind: StatementKind::Select,
        kinds: vec![StatementKind::Select],
        command: command.into(),
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
    })
}
