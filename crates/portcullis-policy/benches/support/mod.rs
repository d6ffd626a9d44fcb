//! The principal and target the decision benchmarks ask about; shared with
//! `portcullis-gate`'s decision cache benchmark (included by path).

use portcullis_core::{Principal, Target, TargetKind};
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
