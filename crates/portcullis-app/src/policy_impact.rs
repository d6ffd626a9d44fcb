//! `portcullis policy impact`: what a candidate policy version would have
//! decided differently, evaluated again on the decisions in the audit log.
//!
//! Every audit entry of a decision keeps its whole input (the principal with
//! its groups and attributes, the target with its labels, the client address,
//! the statement text), so a decision can be made again with other policies.

use anyhow::{Context, Result};
use portcullis_config::Config;
use portcullis_core::{Action, Decision, Principal, Request, Target, TargetKind};
use portcullis_policy::Policies;
use portcullis_sql::Classifier;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How a decision would change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    AllowToDeny,
    DenyToAllow,
}

impl Change {
    fn title(self) -> &'static str {
        match self {
            Change::AllowToDeny => "allowed, would be denied",
            Change::DenyToAllow => "denied, would be allowed",
        }
    }
}

/// Decisions that would change, by what changes and the candidate's rule.
#[derive(Debug, Default)]
pub struct ImpactReport {
    pub candidate_version: String,
    pub entries_scanned: u64,
    pub decisions_evaluated: u64,
    /// Recorded decisions whose input could not be rebuilt (older entries, a
    /// statement the parser no longer reads), with one reason each.
    pub skipped: u64,
    pub changes: BTreeMap<(Change, String), Group>,
}

#[derive(Debug, Default)]
pub struct Group {
    pub count: u64,
    pub examples: Vec<String>,
}

const EXAMPLES_PER_GROUP: usize = 3;

impl ImpactReport {
    pub fn changed(&self) -> u64 {
        self.changes.values().map(|g| g.count).sum()
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "candidate {}: {} audit entries read, {} decisions evaluated again, {} would change{}\n",
            self.candidate_version,
            self.entries_scanned,
            self.decisions_evaluated,
            self.changed(),
            if self.skipped > 0 {
                format!(" ({} skipped: their input could not be rebuilt)", self.skipped)
            } else {
                String::new()
            }
        );
        let mut last = None;
        for ((change, rule), group) in &self.changes {
            if last != Some(*change) {
                out.push_str(&format!("\n{}:\n", change.title()));
                last = Some(*change);
            }
            out.push_str(&format!("  {rule}: {}\n", group.count));
            for example in &group.examples {
                out.push_str(&format!("      e.g. {example}\n"));
            }
        }
        out
    }
}

/// Evaluates the decisions recorded since `since` ago with the policies in
/// `candidate`, and reports the ones that would change.
pub fn policy_impact(config: &Config, candidate: &Path, since: Duration) -> Result<ImpactReport> {
    let policies =
        Policies::load_dir(candidate, crate::policy_engine(config)).with_context(|| {
            format!(
                "the candidate policies in `{}` do not load",
                candidate.display()
            )
        })?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let since_ms = now_ms.saturating_sub(u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
    let classifier = Classifier::new(10_000);
    let mut report = ImpactReport {
        candidate_version: policies.version().to_string(),
        ..ImpactReport::default()
    };
    let progress = std::io::stderr().is_terminal();
    let path = crate::audit_path(&config.gateway.data_dir);
    report.entries_scanned = portcullis_audit::scan_since(&path, since_ms, |entry| {
        if progress && entry.seq % 10_000 == 0 {
            eprint!("\r{} entries…", entry.seq);
        }
        match evaluate(&entry.body, &policies, &classifier) {
            Outcome::NotADecision => {}
            Outcome::Skipped => report.skipped += 1,
            Outcome::Same => report.decisions_evaluated += 1,
            Outcome::Changed {
                change,
                rule,
                example,
            } => {
                report.decisions_evaluated += 1;
                let group = report.changes.entry((change, rule)).or_default();
                group.count += 1;
                if group.examples.len() < EXAMPLES_PER_GROUP {
                    group.examples.push(example);
                }
            }
        }
    })?;
    if progress {
        eprint!("\r");
    }
    Ok(report)
}

enum Outcome {
    NotADecision,
    Skipped,
    Same,
    Changed {
        change: Change,
        rule: String,
        example: String,
    },
}

fn evaluate(body: &Value, policies: &Policies, classifier: &Classifier) -> Outcome {
    let event = body.get("event").and_then(Value::as_str).unwrap_or("");
    let is_statement = event == "statement";
    if !is_statement && event != "session.connect" && event != "session.recheck" {
        return Outcome::NotADecision;
    }
    let Some(recorded) = body.pointer("/decision/effect").and_then(Value::as_str) else {
        return Outcome::Skipped;
    };
    let Some((principal, target, client_ip)) = rebuild_session(body) else {
        return Outcome::Skipped;
    };
    let (action, text) = if is_statement {
        let Some(text) = body.pointer("/statement/text").and_then(Value::as_str) else {
            return Outcome::Skipped;
        };
        let Some(statement) = classifier
            .classify(text)
            .ok()
            .and_then(|s| s.first().cloned())
        else {
            return Outcome::Skipped;
        };
        (Action::Query(statement), text.to_string())
    } else {
        (Action::Connect, "connect".to_string())
    };
    let decision = policies.decide(&Request {
        principal: &principal,
        target: &target,
        action: &action,
        client_addr: client_ip,
        grant: None,
        reason: None,
    });
    let change = match (recorded, decision.is_allowed()) {
        ("allow", false) => Change::AllowToDeny,
        ("deny", true) => Change::DenyToAllow,
        _ => return Outcome::Same,
    };
    Outcome::Changed {
        change,
        rule: rule_of(&decision),
        example: format!("{} on {}: {}", principal.id, target.name, one_line(&text)),
    }
}

/// The candidate's rule that makes the difference.
fn rule_of(decision: &Decision) -> String {
    match decision.policies.as_slice() {
        [] if decision.is_allowed() => "allowed".to_string(),
        [] => "no policy permits it".to_string(),
        policies => policies.join(", "),
    }
}

fn rebuild_session(body: &Value) -> Option<(Principal, Target, Option<IpAddr>)> {
    let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
    let id = text("principal")?;
    let strings = |value: Option<&Value>| -> Vec<String> {
        value
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let principal = Principal {
        subject: text("subject").unwrap_or_else(|| id.clone()),
        email: text("email"),
        groups: strings(body.get("groups")),
        issuer: text("issuer").unwrap_or_default(),
        expires_at: u64::MAX,
        id,
    };
    let labels = body
        .get("target_labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let target = Target {
        name: text("target")?,
        kind: TargetKind::Postgres,
        labels,
    };
    let client_ip = text("client_addr")
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip());
    Some((principal, target, client_ip))
}

fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(100) {
        Some((at, _)) => format!("{}…", line.get(..at).unwrap_or(&line)),
        None => line,
    }
}
