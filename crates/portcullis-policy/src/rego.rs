//! The Rego engine (`regorus`), for teams whose policies are already Rego.
//!
//! It sees the same input as the Cedar engine and gives the same decision
//! shape. The convention (see `docs/rego.md`): in `package portcullis`, each
//! rule adds its id to the set `permit` or `forbid` when it applies, and the
//! object `reasons` maps ids to sentences for people. A forbid wins over a
//! permit; what no rule permits is denied, as in Cedar.

use crate::cedar::{record, Value, COMMAND_FIELDS, STATEMENT_FIELDS};
use crate::error::PolicyError;
use portcullis_core::{Action, Approval, Decision, Effect, Request};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

pub struct RegoPolicies {
    engine: regorus::Engine,
    version: String,
    names: Vec<String>,
    /// Whether any source defines `permit` / `forbid`: a rule that no source
    /// defines is an empty set, not an error.
    defines: [bool; 2],
}

impl std::fmt::Debug for RegoPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoPolicies")
            .field("version", &self.version)
            .finish()
    }
}

impl RegoPolicies {
    /// Loads every `*.rego` file of `dir`, sorted by name.
    pub fn load_dir(dir: &Path) -> Result<RegoPolicies, PolicyError> {
        let files = crate::cedar::read_dir(dir, "rego")?;
        let version = crate::cedar::content_version(&files);
        RegoPolicies::from_files(files, version)
    }

    /// Loads policies held in memory, one `(name, text)` per file.
    pub fn from_sources(sources: &[(&str, &str)]) -> Result<RegoPolicies, PolicyError> {
        let files: Vec<crate::cedar::SourceFile> = sources
            .iter()
            .map(|(name, text)| crate::cedar::SourceFile::in_memory(name, text))
            .collect();
        let version = crate::cedar::content_version(&files);
        RegoPolicies::from_files(files, version)
    }

    pub(crate) fn from_files(
        files: Vec<crate::cedar::SourceFile>,
        version: String,
    ) -> Result<RegoPolicies, PolicyError> {
        let sources: Vec<(String, &str)> = files
            .iter()
            .map(|f| (f.path.display().to_string(), f.text.as_str()))
            .collect();
        RegoPolicies::build(&sources, version)
    }

    fn build(sources: &[(String, &str)], version: String) -> Result<RegoPolicies, PolicyError> {
        let mut engine = regorus::Engine::new();
        // A decision runs on the thread that serves sessions: one that takes
        // longer than this is stopped, and is a denial that says so.
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: DECISION_TIME_LIMIT,
            check_interval: std::num::NonZeroU32::MIN.saturating_add(63),
        });
        let mut names = Vec::new();
        let mut defines = [false; 2];
        for (name, text) in sources {
            crate::cedar::check_text(name, text, crate::cedar::Language::Rego)?;
            let package = engine
                .add_policy(name.clone(), text.to_string())
                .map_err(|e| PolicyError::Invalid {
                    location: name.clone(),
                    message: first_line(&e.to_string()),
                })?;
            let mut has_rules = false;
            for (slot, rule) in ["permit", "forbid"].iter().enumerate() {
                if text.lines().any(|line| defines_rule(line, rule)) {
                    defines[slot] = true;
                    has_rules = true;
                }
            }
            // Only `data.portcullis.permit` and `.forbid` are asked: rules
            // by those names elsewhere would be counted, and never apply.
            if has_rules && package != "data.portcullis" {
                return Err(PolicyError::Invalid {
                    location: name.clone(),
                    message: format!(
                        "`permit` or `forbid` rules in `package {}`, which the gateway never asks: only those of `package portcullis` decide",
                        package.trim_start_matches("data.")
                    ),
                });
            }
            names.extend(rule_ids(text));
        }
        names.sort();
        names.dedup();
        // Evaluate once: a policy that cannot produce a decision is refused
        // at load, not at the first statement. This also prepares the
        // engine (its modules analysed and scheduled), so that the clone
        // each decision takes starts prepared; every evaluation starts from
        // a clean state, so nothing of the probe carries over.
        let probe = json!({
            "principal": {"id": "probe", "subject": "probe", "groups": [], "issuer": "probe"},
            "target": {"name": "probe", "kind": "postgres", "labels": {}},
            "action": "connect",
            "context": {"client_ip": "127.0.0.1"},
        });
        let invalid = |message| PolicyError::Invalid {
            location: "rego".into(),
            message,
        };
        evaluate(&mut engine, defines, regorus::Value::from(probe)).map_err(invalid)?;
        Ok(RegoPolicies {
            engine,
            version,
            names,
            defines,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// The rule ids named in the sources (`permit contains "<id>"`,
    /// `forbid contains "<id>"`), sorted.
    pub fn policy_names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Decides one request; an evaluation error is a denial that says why.
    pub fn decide(&self, request: &Request<'_>) -> Decision {
        match self.evaluate(input(request)) {
            Ok(Evaluated {
                forbid,
                permit,
                reasons,
                approvals,
            }) => {
                let action = request.action.name();
                if !forbid.is_empty() {
                    let because: Vec<String> = forbid
                        .iter()
                        .filter_map(|id| reasons.get(id).cloned())
                        .collect();
                    // Held when every forbid names its approving group and a
                    // permit applies: a reviewer lifts forbids, never grants
                    // what nothing permits.
                    let groups: Option<Vec<String>> =
                        forbid.iter().map(|id| approvals.get(id).cloned()).collect();
                    let approval = groups.filter(|_| !permit.is_empty()).map(|mut groups| {
                        groups.sort();
                        groups.dedup();
                        Approval {
                            min_approvals: u32::try_from(groups.len()).unwrap_or(u32::MAX),
                            groups,
                        }
                    });
                    Decision {
                        effect: if approval.is_some() {
                            Effect::Hold
                        } else {
                            Effect::Deny
                        },
                        approval,
                        reason: if because.is_empty() {
                            format!("`{action}` is forbidden")
                        } else {
                            because.join("; ")
                        },
                        policies: forbid,
                        errors: Vec::new(),
                        policy_version: self.version.clone(),
                    }
                } else if !permit.is_empty() {
                    Decision {
                        effect: Effect::Allow,
                        approval: None,
                        reason: String::new(),
                        policies: permit,
                        errors: Vec::new(),
                        policy_version: self.version.clone(),
                    }
                } else {
                    Decision {
                        effect: Effect::Deny,
                        approval: None,
                        reason: format!(
                            "no policy permits `{action}` on target `{}` for `{}`",
                            request.target.name, request.principal.id
                        ),
                        policies: Vec::new(),
                        errors: Vec::new(),
                        policy_version: self.version.clone(),
                    }
                }
            }
            Err(message) => Decision {
                effect: Effect::Deny,
                approval: None,
                policies: Vec::new(),
                reason: format!("the policy could not be evaluated: {message}"),
                errors: vec![message],
                policy_version: self.version.clone(),
            },
        }
    }

    fn evaluate(&self, input: regorus::Value) -> Result<Evaluated, String> {
        evaluate(&mut self.engine.clone(), self.defines, input)
    }
}

/// The longest a Rego decision may run (regorus checks it as it goes).
/// Decisions take tens of microseconds; a rule that loops for seconds
/// would stall every session on the worker it runs on.
pub(crate) const DECISION_TIME_LIMIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Evaluates the decision rules for `input`. `reasons` and `approvals` are
/// only read when something forbids.
fn evaluate(
    engine: &mut regorus::Engine,
    [defines_permit, defines_forbid]: [bool; 2],
    input: regorus::Value,
) -> Result<Evaluated, String> {
    engine.set_input(input);
    let mut ids = |rule: &str, defined: bool| -> Result<Vec<String>, String> {
        if !defined {
            return Ok(Vec::new());
        }
        let value = engine
            .eval_rule(format!("data.portcullis.{rule}"))
            .map_err(|e| first_line(&e.to_string()))?;
        let items: Vec<&regorus::Value> = match &value {
            regorus::Value::Set(items) => items.iter().collect(),
            regorus::Value::Array(items) => items.iter().collect(),
            regorus::Value::Undefined | regorus::Value::Null => Vec::new(),
            other => {
                return Err(format!(
                    "`{rule}` must be a set of rule ids, found {}",
                    other.to_json_str().unwrap_or_default()
                ))
            }
        };
        // An entry that is no rule id (an object, a number) is an error,
        // not skipped: skipped, a forbid in another shape would never apply.
        let mut ids = items
            .into_iter()
            .map(|item| {
                text(item).ok_or_else(|| {
                    format!(
                        "`{rule}` must be a set of rule ids (strings), and holds {}",
                        item.to_json_str().unwrap_or_default()
                    )
                })
            })
            .collect::<Result<Vec<String>, String>>()?;
        ids.sort();
        Ok(ids)
    };
    let forbid = ids("forbid", defines_forbid)?;
    let permit = ids("permit", defines_permit)?;
    if forbid.is_empty() {
        return Ok(Evaluated {
            forbid,
            permit,
            reasons: BTreeMap::new(),
            approvals: BTreeMap::new(),
        });
    }
    let mut strings = |rule: &str| -> BTreeMap<String, String> {
        match engine.eval_rule(format!("data.portcullis.{rule}")) {
            Ok(regorus::Value::Object(object)) => object
                .iter()
                .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
                .collect(),
            _ => BTreeMap::new(),
        }
    };
    let reasons = strings("reasons");
    let approvals = strings("approvals");
    Ok(Evaluated {
        forbid,
        permit,
        reasons,
        approvals,
    })
}

/// What one evaluation found; ids sorted.
struct Evaluated {
    forbid: Vec<String>,
    permit: Vec<String>,
    /// Rule id to a sentence for people.
    reasons: BTreeMap<String, String>,
    /// Forbid rule id to the group whose members may lift it.
    approvals: BTreeMap<String, String>,
}

/// The text of a string value.
fn text(value: &regorus::Value) -> Option<String> {
    match value {
        regorus::Value::String(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The input document: the same facts the Cedar engine sees (its shape is
/// in docs/rego.md). Built as regorus values: going through `serde_json`
/// was a tenth of a decision.
pub fn input(request: &Request<'_>) -> regorus::Value {
    use regorus::Value as V;
    let principal = request.principal;
    let mut context = vec![(
        "client_ip",
        match request.client_addr {
            Some(ip) => V::from(ip.to_string()),
            None => V::from("0.0.0.0"),
        },
    )];
    if let Action::Unmask { rule } = request.action {
        context.push(("rule", V::from(rule.as_str())));
    }
    if let Some(grant) = request.grant {
        context.push((
            "grant",
            object([
                ("id", V::from(grant.id)),
                ("reason", V::from(grant.reason.as_str())),
                ("until", V::from(grant.until)),
            ]),
        ));
    }
    if let Some(reason) = request.reason {
        context.push(("reason", V::from(reason)));
    }
    match request.action {
        Action::Exec(command) => context.push(("command", record(command, COMMAND_FIELDS).rego())),
        Action::Forward(forward) => context.push(("forward", serialized(forward))),
        Action::Sftp(op) => context.push(("sftp", serialized(op))),
        Action::Query(statement) => {
            context.push(("statement", record(statement, STATEMENT_FIELDS).rego()))
        }
        _ => {}
    }
    object([
        (
            "principal",
            object([
                ("id", V::from(principal.id.as_str())),
                ("subject", V::from(principal.subject.as_str())),
                ("email", principal.email.as_deref().map_or(V::Null, V::from)),
                ("groups", Value::Strs(&principal.groups).rego()),
                ("issuer", V::from(principal.issuer.as_str())),
            ]),
        ),
        (
            "target",
            object([
                ("name", V::from(request.target.name.as_str())),
                ("kind", V::from(request.target.kind.as_str())),
                (
                    "labels",
                    V::from(
                        request
                            .target
                            .labels
                            .iter()
                            .map(|(k, v)| (V::from(k.as_str()), V::from(v.as_str())))
                            .collect::<BTreeMap<_, _>>(),
                    ),
                ),
            ]),
        ),
        ("action", V::from(request.action.name())),
        ("context", object(context)),
    ])
}

fn object(fields: impl IntoIterator<Item = (&'static str, regorus::Value)>) -> regorus::Value {
    regorus::Value::from(
        fields
            .into_iter()
            .map(|(k, v)| (regorus::Value::from(k), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// An SSH action's record, as serde writes it (rare enough not to matter).
fn serialized(value: &impl serde::Serialize) -> regorus::Value {
    serde_json::to_value(value).map_or(regorus::Value::Null, regorus::Value::from)
}

/// Whether a source line starts a definition of `rule`.
fn defines_rule(line: &str, rule: &str) -> bool {
    line.trim_start()
        .strip_prefix(rule)
        .is_some_and(|rest| rest.starts_with([' ', ':', '=', '[', '\t']) || rest.is_empty())
}

/// Rule ids written as `permit contains "<id>"` or `forbid contains "<id>"`.
fn rule_ids(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        for head in ["permit contains \"", "forbid contains \""] {
            if let Some(rest) = line.strip_prefix(head) {
                if let Some(end) = rest.find('"') {
                    ids.push(rest.get(..end).unwrap_or_default().to_string());
                }
            }
        }
    }
    ids
}

/// A message on one line. regorus writes `--> file:line:col`, the source
/// line with a caret, and `error: what` each on a line of their own, after
/// an empty one: this gives `what (at file:line:col)`.
fn first_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let what = lines
        .iter()
        .find_map(|l| l.split_once("error: ").map(|(_, what)| what));
    let at = lines.iter().find_map(|l| l.strip_prefix("--> "));
    match (what, at) {
        (Some(what), Some(at)) => format!("{what} (at {at})"),
        _ if lines.is_empty() => message.trim().to_string(),
        _ => lines.join(" "),
    }
}
