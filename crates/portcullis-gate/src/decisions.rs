//! The decision cache: a decision is made once for the same inputs.

use std::sync::Arc;

use portcullis_core::{Action, Decision, Grant, Request, StatementInfo, StatementKind};
use portcullis_policy::Policies;

use crate::Session;

/// Decisions by everything they depend on. A new policy version has a new
/// version in every key, so no decision outlives the policy that made it.
pub struct DecisionCache {
    cache: quick_cache::sync::Cache<DecisionKey, Decision>,
}

/// Everything a decision depends on: the policy version, every attribute of
/// the principal and the target the policy can see, the client address, the
/// action, and every field of the statement the policy can see.
#[derive(Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    policy_version: Arc<str>,
    principal: Arc<PrincipalKey>,
    target: Arc<str>,
    client_ip: std::net::IpAddr,
    action: &'static str,
    statement: Option<Box<StatementKey>>,
    /// The mask rule an `unmask` asks about.
    unmask: Option<String>,
    /// An SSH command, forwarding or SFTP operation, whole.
    ssh: Option<Action>,
    /// The grant in force (its id), and the reason the user gave: both are
    /// in the policy's context.
    grant: Option<i64>,
    reason: Option<Arc<str>>,
}

/// What of a statement a cached decision stands for: each field a policy
/// sees of it (`context.statement`). The text alone would not do: an
/// `EXECUTE q` or a `FETCH` runs whatever its name stands for at the time,
/// and the session may find calls that the text does not show.
#[derive(Clone, PartialEq, Eq, Hash)]
struct StatementKey {
    text: Text,
    kind: StatementKind,
    kinds: Vec<StatementKind>,
    command: String,
    tables: Vec<String>,
    functions: Vec<String>,
    has_where: bool,
    writes: bool,
    settings: Vec<String>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Text {
    Exact(String),
    /// Every statement of this shape: the policies do not read the text.
    Shape(Arc<str>),
}

impl StatementKey {
    fn new(statement: &StatementInfo, policies: &Policies) -> StatementKey {
        // Named one by one, so that a field added to what the policy sees
        // cannot be left out of the key unnoticed.
        let StatementInfo {
            kind,
            kinds,
            command,
            tables,
            functions,
            has_where,
            writes,
            text,
            settings,
            shape,
            // Not in the policy's view of a statement.
            prepares: _,
            executes: _,
            prepared_text: _,
            objects: _,
            lineage: _,
        } = statement;
        StatementKey {
            text: match shape {
                Some(shape) if !policies.reads_statement_text() => Text::Shape(shape.clone()),
                _ => Text::Exact(text.clone()),
            },
            kind: *kind,
            kinds: kinds.clone(),
            command: command.clone(),
            tables: tables.clone(),
            functions: functions.clone(),
            has_where: *has_where,
            writes: *writes,
            settings: settings.clone(),
        }
    }
}

/// The principal as the policy sees it, kept once per session.
#[derive(PartialEq, Eq, Hash)]
pub(crate) struct PrincipalKey {
    pub(crate) id: String,
    pub(crate) subject: String,
    pub(crate) email: Option<String>,
    pub(crate) issuer: String,
    /// Sorted, so that the order in the token does not matter.
    pub(crate) groups: Vec<String>,
}

impl DecisionCache {
    /// A cache of about `capacity` decisions (at least one).
    pub fn new(capacity: usize) -> DecisionCache {
        DecisionCache {
            cache: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    /// Decides `action` in `session` under `policies`, with `grant` in
    /// force: from the cache when the same inputs were decided before.
    pub fn decide(
        &self,
        policies: &Policies,
        session: &Session,
        action: &Action,
        grant: Option<&Grant>,
    ) -> Decision {
        // INVARIANT: the caller reads the policy once, and its version is
        // part of the key: a decision made under an old policy can never be
        // found under a new one, even if it is inserted after the swap.
        let key = DecisionKey {
            policy_version: policies.version().into(),
            principal: session.cache_principal.clone(),
            target: session.cache_target.clone(),
            client_ip: session.client_addr.ip(),
            action: action.name(),
            statement: match action {
                Action::Query(s) => Some(Box::new(StatementKey::new(s, policies))),
                _ => None,
            },
            unmask: match action {
                Action::Unmask { rule } => Some(rule.clone()),
                _ => None,
            },
            ssh: match action {
                Action::Exec(_) | Action::Forward(_) | Action::Sftp(_) => Some(action.clone()),
                _ => None,
            },
            grant: grant.map(|g| g.id),
            reason: session.reason.clone(),
        };
        if let Some(decision) = self.cache.get(&key) {
            return decision;
        }
        let decision = policies.decide(&Request {
            principal: &session.principal,
            target: &session.target,
            action,
            client_addr: Some(session.client_addr.ip()),
            grant,
            reason: session.reason.as_deref(),
        });
        // Decisions with evaluation errors are not cached: the next request
        // evaluates again.
        if decision.errors.is_empty() {
            self.cache.insert(key, decision.clone());
        }
        decision
    }

    /// Forgets every decision (they would never be found again under a new
    /// policy version; this frees their memory at once).
    pub fn clear(&self) {
        self.cache.clear();
    }

    /// How many decisions are cached.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}
