//! The Gate: the single enforcement point. A protocol adapter describes each
//! action (a connect, a statement) and asks the Gate; the Gate asks the policy,
//! writes the audit entry, and only then answers. The adapter enforces the
//! answer and decides nothing itself.
//!
//! Layout:
//! - [`event`]: the audit entries the Gate writes.
//! - [`listen`]: accepting connections, for the protocol listeners.
//! - `error`: [`GateError`].
//!
//! Architecture Invariant: an `Ok` answer that allows an action is returned
//! only after its audit entry is durable. When the entry cannot be written the
//! answer is an error, and the adapter refuses the action.
//!
//! Architecture Invariant: protocol crates depend on this crate, never on a
//! policy engine.

mod decisions;
mod error;
pub mod event;
pub mod listen;

pub use decisions::DecisionCache;
use decisions::PrincipalKey;
pub use error::GateError;
pub use event::SessionFields;

use event::{AuditEvent, DecisionFields, StatementFields};
pub use portcullis_approval as approval;
use portcullis_approval::Subject;
pub use portcullis_approval::{Approvals, Held};
use portcullis_audit::AuditLog;
use portcullis_core::{Action, Decision, Principal, SessionId, StatementInfo, Target};
use portcullis_mask::{HashKey, MaskCounts, Masker};
use portcullis_policy::Policies;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Whether what was decided `then` (held, and since approved, or allowed
/// beside a held statement) may still run under `now`, the decision made
/// again once the approval came: an approval lifts the approvable forbid it
/// was asked for, never a grant that ended, a forbid added or another
/// group's approval needed while the request waited. `Err` says why not.
pub fn still_allowed(then: &Decision, now: &Decision) -> Result<(), String> {
    use portcullis_core::Effect;
    match now.effect {
        Effect::Allow => Ok(()),
        // The same approvers, lifting only forbids they were asked about:
        // a forbid added meanwhile, or one a grant had kept from applying,
        // was never put to them.
        Effect::Hold
            if then.effect == Effect::Hold
                && now.approval == then.approval
                && now.policies.iter().all(|p| then.policies.contains(p)) =>
        {
            Ok(())
        }
        Effect::Deny => Err(format!(
            "decided again once approved, under the policy and access grants in force now: {}; nothing was run",
            now.reason
        )),
        Effect::Hold => Err(format!(
            "decided again once approved, under the policy and access grants in force now, it needs another approval ({}); nothing was run: run it again to ask",
            now.reason
        )),
    }
}

/// An action and the decision it went under, as [`Gate::first_fallen`]
/// takes them.
pub fn held((action, decision): &(Action, Decision)) -> (&Action, &Decision) {
    (action, decision)
}

/// How many times the enforced policy and the access grants in force have
/// changed: equal values saw the same policy and grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generations(u64, u64);

/// What a reviewer is asked to approve: all of what runs once approved.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    /// The statement or command line held.
    pub text: String,
    /// For an SQL `EXECUTE`: the statement prepared under its name.
    pub prepared: Option<String>,
    /// The whole simple Query, when the statement came with others.
    pub batch: Option<String>,
    /// What an Execute binds.
    pub parameters: Vec<Option<String>>,
}

/// Cheap to clone; shared by every session.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    policies: RwLock<Arc<Policies>>,
    /// Why the last attempt to load a new policy version failed, if it did.
    policy_error: RwLock<Option<String>>,
    /// Bumped on every policy change; live sessions watch it to re-check
    /// their `connect`.
    generation: tokio::sync::watch::Sender<u64>,
    audit: AuditLog,
    /// How many decisions each policy determined since the last
    /// `take_policy_hits`.
    hits: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Decisions by input.
    decisions: DecisionCache,
    /// The key of the `hash` masking strategy.
    mask_key: HashKey,
    /// Held statements and access grants.
    approvals: Approvals,
}

/// One thing to decide and audit.
#[derive(Clone, Copy)]
pub enum Check<'a> {
    /// A classified statement; `phase` says where in the protocol it was seen
    /// (`query`, `parse`, `execute`).
    Statement {
        phase: &'a str,
        statement: &'a StatementInfo,
    },
    /// A statement refused before any policy could see it (it did not parse,
    /// or the protocol does not allow it); the decision is a denial.
    Refused {
        phase: &'a str,
        text: &'a str,
        reason: &'a str,
    },
}

/// One session as the Gate sees it.
pub struct Session {
    pub id: SessionId,
    pub principal: Principal,
    pub target: Target,
    pub client_addr: SocketAddr,
    fields: SessionFields,
    cache_principal: Arc<PrincipalKey>,
    cache_target: Arc<str>,
    started: Instant,
    statements: u64,
    denied: u64,
    /// Why the user says they act, from the client (`application_name`,
    /// `SET portcullis.reason`); seen by policies and reviewers.
    reason: Option<Arc<str>>,
    /// `portcullis_decisions_total` for this target, by effect.
    counters: Arc<[metrics::Counter; 3]>,
    /// The policy and grant generations under which `connect` was last
    /// found allowed for this session (see [`Gate::revoked`]).
    connect_confirmed: Option<Generations>,
}

fn decision_counters(target: &str) -> Arc<[metrics::Counter; 3]> {
    let counter = |effect: &'static str| metrics::counter!("portcullis_decisions_total", "effect" => effect, "target" => target.to_string());
    Arc::new([counter("allow"), counter("deny"), counter("hold")])
}

/// What a session's results go through: the masker of the rules in force
/// (none when none is), and the rules that apply which the principal may
/// `unmask`, whose values it sees in clear.
#[derive(Default)]
pub struct Masking {
    pub masker: Option<Arc<Masker>>,
    pub unmasked: Vec<String>,
}

impl Session {
    pub fn new(
        id: SessionId,
        principal: Principal,
        target: Target,
        client_addr: SocketAddr,
        client_user: &str,
    ) -> Session {
        let fields = SessionFields {
            session: id.to_string(),
            principal: principal.id.clone(),
            subject: principal.subject.clone(),
            email: principal.email.clone(),
            groups: principal.groups.clone(),
            issuer: principal.issuer.clone(),
            client_user: client_user.to_string(),
            client_addr: client_addr.to_string(),
            target: target.name.clone(),
            target_labels: target.labels.clone(),
        };
        let mut groups = principal.groups.clone();
        groups.sort();
        let cache_principal = Arc::new(PrincipalKey {
            id: principal.id.clone(),
            subject: principal.subject.clone(),
            email: principal.email.clone(),
            issuer: principal.issuer.clone(),
            groups,
        });
        let cache_target: Arc<str> = target.name.as_str().into();
        let counters = decision_counters(&target.name);
        Session {
            id,
            principal,
            target,
            client_addr,
            fields,
            cache_principal,
            cache_target,
            started: Instant::now(),
            statements: 0,
            denied: 0,
            reason: None,
            counters,
            connect_confirmed: None,
        }
    }

    /// One more decision in this session's counts.
    fn count(&mut self, decision: &Decision) {
        self.statements += 1;
        if decision.effect == portcullis_core::Effect::Deny {
            self.denied += 1;
        }
    }

    /// Records why the user says they act; empty clears it.
    pub fn set_reason(&mut self, reason: &str) {
        let reason = reason.trim();
        self.reason = (!reason.is_empty()).then(|| reason.into());
    }

    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl Session {
    /// The same identity, target and client, for a task that re-checks the
    /// session while it runs.
    pub fn observer(&self) -> Session {
        Session {
            id: self.id.clone(),
            principal: self.principal.clone(),
            target: self.target.clone(),
            client_addr: self.client_addr,
            fields: self.fields.clone(),
            cache_principal: self.cache_principal.clone(),
            cache_target: self.cache_target.clone(),
            started: self.started,
            statements: 0,
            denied: 0,
            reason: self.reason.clone(),
            counters: self.counters.clone(),
            connect_confirmed: None,
        }
    }
}

/// Why a live session's `connect` no longer holds, for the person in it.
pub fn revoked_reason(target: &str, connect: &Decision) -> String {
    let by = match connect.policies.as_slice() {
        [] => String::new(),
        policies => format!(" by policy `{}`", policies.join("`, `")),
    };
    format!(
        "access to target `{target}` was revoked{by} (policy version {}): {}",
        connect.policy_version, connect.reason
    )
}

impl Gate {
    pub fn new(
        policies: impl Into<Policies>,
        audit: AuditLog,
        decision_cache: usize,
        mask_key: HashKey,
        approvals: Approvals,
    ) -> Gate {
        Gate {
            inner: Arc::new(GateInner {
                policies: RwLock::new(Arc::new(policies.into())),
                policy_error: RwLock::new(None),
                hits: std::sync::Mutex::new(std::collections::BTreeMap::new()),
                generation: tokio::sync::watch::Sender::new(0),
                audit,
                decisions: DecisionCache::new(decision_cache),
                mask_key,
                approvals,
            }),
        }
    }

    pub fn approvals(&self) -> &Approvals {
        &self.inner.approvals
    }

    /// Changes when an access grant starts or ends; live sessions decide
    /// their `connect` again.
    pub fn grant_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.approvals.grant_changes()
    }

    /// Holds a statement the policy made approvable: stores and audits its
    /// request and notifies the reviewers. The caller tells the client and
    /// waits on the answer. Fails closed: no request, no statement.
    pub async fn hold(
        &self,
        session: &Session,
        asked: Asked,
        decision: &Decision,
    ) -> Result<Held, GateError> {
        let Asked {
            text,
            prepared,
            batch,
            parameters,
        } = asked;
        let Some(approval) = decision.approval.clone() else {
            return Err(GateError::Approval(
                "internal error: a hold without approvers".into(),
            ));
        };
        self.inner
            .approvals
            .hold(
                &session.principal,
                &session.target.name,
                Subject::Statement {
                    session: session.id.to_string(),
                    client_addr: session.client_addr.to_string(),
                    text,
                    prepared,
                    batch,
                    parameters,
                    policies: decision.policies.clone(),
                    policy_reason: decision.reason.clone(),
                    policy_version: decision.policy_version.clone(),
                },
                session.reason.as_deref().map(str::to_string),
                approval,
            )
            .await
            .map_err(|e| GateError::Approval(e.to_string()))
    }

    /// Records that an approved statement goes to the target; it goes only
    /// once this entry is durable.
    pub async fn approved_statement_runs(
        &self,
        session: &Session,
        request: i64,
    ) -> Result<(), GateError> {
        self.inner
            .approvals
            .executed(request, &session.id.to_string())
            .await
            .map_err(|e| GateError::Approval(e.to_string()))
    }

    /// The policy version enforced now.
    pub fn policy_version(&self) -> String {
        self.policies().version().to_string()
    }

    /// Records the policy version the gateway starts with, as a
    /// `policy.loaded` marked `start` whose `previous` is the version
    /// enforced before the restart (empty when none was recorded): a restart
    /// onto another version (an older commit, a directory edited while
    /// stopped) shows in the audit log like a change made while it runs.
    pub async fn policy_started(
        &self,
        previous: &str,
        history: Option<portcullis_policy::History>,
    ) -> Result<(), GateError> {
        self.audit_loaded(previous, &self.policy_version(), history, true)
            .await
    }

    /// The `policy.loaded` entry of `version`, enforced after `previous`.
    async fn audit_loaded(
        &self,
        previous: &str,
        version: &str,
        history: Option<portcullis_policy::History>,
        start: bool,
    ) -> Result<(), GateError> {
        self.inner
            .audit
            .append(&AuditEvent::PolicyLoaded {
                previous,
                version,
                history: history.map(portcullis_policy::History::as_str),
                start,
            })
            .await?;
        Ok(())
    }

    /// Replaces the enforced policy with a new, already validated version,
    /// records the change in the audit log, and tells live sessions to
    /// re-check their `connect`.
    pub async fn replace_policies(&self, policies: impl Into<Policies>) -> Result<(), GateError> {
        self.replace_policies_moved(policies, None).await
    }

    /// [`Gate::replace_policies`], saying in the audit entry how the new
    /// Git version relates to the previous one.
    pub async fn replace_policies_moved(
        &self,
        policies: impl Into<Policies>,
        history: Option<portcullis_policy::History>,
    ) -> Result<(), GateError> {
        let policies: Policies = policies.into();
        let previous = self.policy_version();
        let version = policies.version().to_string();
        let policies = Arc::new(policies);
        match self.inner.policies.write() {
            Ok(mut guard) => *guard = policies,
            Err(poisoned) => *poisoned.into_inner() = policies,
        }
        self.inner.decisions.clear();
        self.set_policy_error(None);
        self.inner
            .generation
            .send_modify(|generation| *generation += 1);
        self.audit_loaded(&previous, &version, history, false).await
    }

    /// Records in the audit log that `version` was refused for `error` (the
    /// first 4 KiB of it): a version tried and taken back leaves a trace.
    pub async fn policy_refused(&self, version: &str, error: &str) -> Result<(), GateError> {
        let mut end = error.len().min(4096);
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        let enforced = self.policy_version();
        self.inner
            .audit
            .append(&AuditEvent::PolicyRefused {
                version,
                enforced: &enforced,
                error: error.get(..end).unwrap_or_default(),
            })
            .await?;
        Ok(())
    }

    /// Records that a new policy version could not be loaded; the last valid
    /// one stays in force.
    pub fn set_policy_error(&self, error: Option<String>) {
        match self.inner.policy_error.write() {
            Ok(mut guard) => *guard = error,
            Err(poisoned) => *poisoned.into_inner() = error,
        }
    }

    /// What of the enforced version names targets not in `configured`, one
    /// line each (see [`Policies::unconfigured_targets`]).
    pub fn unconfigured_targets(&self, configured: &[String]) -> Vec<String> {
        self.policies().unconfigured_targets(configured)
    }

    /// Why the newest policy version on disk is not enforced, if it is not.
    pub fn policy_error(&self) -> Option<String> {
        match self.inner.policy_error.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Changes whenever the enforced policy changes.
    pub fn policy_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Decides a live session's `connect` again, under the policy in force
    /// now, and audits the answer.
    pub async fn recheck(&self, session: &Session) -> Result<Decision, GateError> {
        self.recheck_action(session, &Action::Connect).await
    }

    /// Decides again, under the policy in force now, an action a live
    /// session holds open (its `connect`, a shell, a forward), and audits
    /// the answer.
    pub async fn recheck_action(
        &self,
        session: &Session,
        action: &Action,
    ) -> Result<Decision, GateError> {
        let decision = self.decide(session, action);
        self.inner
            .audit
            .append(&AuditEvent::Recheck {
                session: &session.fields,
                action: action.name(),
                forward: match action {
                    Action::Forward(forward) => Some(forward),
                    _ => None,
                },
                decision: DecisionFields::from(&decision),
            })
            .await?;
        Ok(decision)
    }

    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    fn policies(&self) -> Arc<Policies> {
        match self.inner.policies.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn decide(&self, session: &Session, action: &Action) -> Decision {
        let decision = self.decide_uncounted(session, action);
        self.count_hits(session, &decision);
        decision
    }

    /// A decision left out of the hit counts and metrics.
    fn decide_uncounted(&self, session: &Session, action: &Action) -> Decision {
        // INVARIANT: the policy is read once, for the key and the decision
        // alike (see `DecisionCache::decide`).
        let policies = self.policies();
        let grant = self
            .inner
            .approvals
            .grant(&session.principal.id, &session.target.name);
        self.inner
            .decisions
            .decide(&policies, session, action, grant.as_ref())
    }

    fn count_hits(&self, session: &Session, decision: &Decision) {
        let [allow, deny, hold] = &*session.counters;
        match decision.effect {
            portcullis_core::Effect::Allow => allow,
            portcullis_core::Effect::Deny => deny,
            portcullis_core::Effect::Hold => hold,
        }
        .increment(1);
        if decision.policies.is_empty() {
            return;
        }
        let mut hits = match self.inner.hits.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for policy in &decision.policies {
            *hits.entry(policy.clone()).or_insert(0) += 1;
        }
    }

    /// The policy hit counts since the last call, for the state store.
    pub fn take_policy_hits(&self) -> std::collections::BTreeMap<String, u64> {
        let mut hits = match self.inner.hits.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::take(&mut *hits)
    }

    /// May this principal open this session? The decision is audited either way.
    pub async fn connect(&self, session: &Session) -> Result<Decision, GateError> {
        let decision = self.decide(session, &Action::Connect);
        self.inner
            .audit
            .append(&AuditEvent::Connect {
                session: &session.fields,
                decision: DecisionFields::from(&decision),
            })
            .await?;
        Ok(decision)
    }

    /// The policy and grant generations now. Read before deciding an action
    /// a session will hold open (a shell, a forward, an open file), and
    /// given to [`Gate::confirm`] once it is where the session's watcher
    /// decides it again.
    pub fn generations(&self) -> Generations {
        Generations(
            *self.inner.generation.borrow(),
            self.inner.approvals.grant_generation(),
        )
    }

    /// Decides again, under the policy and grants in force now (audited as
    /// rechecks), actions a live session holds open or has under way, each
    /// with the decision it went under; the first that no longer stands,
    /// with the decision now.
    pub async fn first_fallen<'a>(
        &self,
        session: &Session,
        held: impl IntoIterator<Item = (&'a Action, &'a Decision)>,
    ) -> Result<Option<(&'a Action, Decision)>, GateError> {
        for (action, then) in held {
            let now = self.recheck_action(session, action).await?;
            if still_allowed(then, &now).is_err() {
                return Ok(Some((action, now)));
            }
        }
        Ok(None)
    }

    /// Whether actions decided under `seen` still stand, now that they are
    /// registered where the session's watcher decides them again on every
    /// change. A change of policy or grants after `seen` may have reached the
    /// watcher before they were there: then they are decided again here
    /// ([`Gate::first_fallen`]).
    pub async fn confirm<'a>(
        &self,
        session: &Session,
        seen: Generations,
        held: impl IntoIterator<Item = (&'a Action, &'a Decision)>,
    ) -> Result<Option<(&'a Action, Decision)>, GateError> {
        if self.generations() == seen {
            return Ok(None);
        }
        self.first_fallen(session, held).await
    }

    /// A denial for every action of a live session whose `connect` the
    /// policy or the grants in force no longer allow. A change that revokes
    /// a session is acted on by the session's own watcher, which ends it;
    /// until it does, what the session sends is refused here, so that
    /// nothing decided under the new policy runs in a session it revoked.
    /// Decided again (uncounted) only when the policy or the grants changed
    /// since the session's `connect` was last allowed.
    fn revoked(&self, session: &mut Session) -> Option<Decision> {
        // Read before the policy: a change in between is seen next time.
        let now = self.generations();
        if session.connect_confirmed == Some(now) {
            return None;
        }
        let connect = self.decide_uncounted(session, &Action::Connect);
        if connect.is_allowed() {
            session.connect_confirmed = Some(now);
            return None;
        }
        // Denied, even where `connect` would now be held: a session is not
        // held once open, as it is not at login.
        Some(Decision {
            effect: portcullis_core::Effect::Deny,
            reason: revoked_reason(&session.target.name, &connect),
            approval: None,
            ..connect
        })
    }

    /// Decides a batch of statements seen together (one read from the
    /// client), in order, and writes their audit entries in one group. Returns
    /// only once every entry is durable; an error means none may go ahead.
    pub async fn check(
        &self,
        session: &mut Session,
        checks: &[Check<'_>],
    ) -> Result<Vec<Decision>, GateError> {
        let revoked = self.revoked(session);
        let mut decisions = Vec::with_capacity(checks.len());
        for check in checks {
            let decision = match (check, &revoked) {
                (Check::Statement { .. }, Some(revoked)) => revoked.clone(),
                (Check::Statement { statement, .. }, None) => {
                    self.decide(session, &Action::Query((*statement).clone()))
                }
                (Check::Refused { reason, .. }, _) => Decision {
                    effect: portcullis_core::Effect::Deny,
                    policies: Vec::new(),
                    reason: reason.to_string(),
                    errors: Vec::new(),
                    policy_version: self.policy_version(),
                    approval: None,
                },
            };
            session.count(&decision);
            decisions.push(decision);
        }
        let events: Vec<AuditEvent<'_>> = checks
            .iter()
            .zip(&decisions)
            .map(|(check, decision)| match check {
                Check::Statement { phase, statement } => AuditEvent::Statement {
                    session: &session.fields,
                    phase,
                    statement: StatementFields::from(*statement),
                    decision: DecisionFields::from(decision),
                },
                Check::Refused {
                    phase,
                    text,
                    reason,
                } => AuditEvent::Refused {
                    session: &session.fields,
                    phase,
                    text,
                    reason,
                },
            })
            .collect();
        self.append_all(&events).await?;
        Ok(decisions)
    }

    /// Writes entries decided together; they are committed in one group.
    /// Returns once every one is durable.
    async fn append_all(&self, events: &[AuditEvent<'_>]) -> Result<(), GateError> {
        let appends = events.iter().map(|event| self.inner.audit.append(event));
        for result in futures_util::future::join_all(appends).await {
            result?;
        }
        Ok(())
    }

    /// Decides SSH actions seen together (the commands of one command line,
    /// or one forwarding, shell or SFTP operation) on one channel, and
    /// writes their audit entries in one group. Returns only once every
    /// entry is durable; an error means none may go ahead.
    pub async fn check_ssh(
        &self,
        session: &mut Session,
        channel: u32,
        actions: &[Action],
    ) -> Result<Vec<Decision>, GateError> {
        let revoked = self.revoked(session);
        let decisions: Vec<Decision> = actions
            .iter()
            .map(|action| match &revoked {
                Some(revoked) => revoked.clone(),
                None => self.decide(session, action),
            })
            .collect();
        for decision in &decisions {
            session.count(decision);
        }
        // The line once, in its first command's entry: a line of many
        // commands would otherwise write itself as many times.
        let mut line_written = None;
        let shortened: Vec<Option<portcullis_core::Command>> = actions
            .iter()
            .map(|action| match action {
                Action::Exec(command) if line_written == Some(command.line.as_str()) => {
                    Some(portcullis_core::Command {
                        line: String::new(),
                        ..command.clone()
                    })
                }
                Action::Exec(command) => {
                    line_written = Some(command.line.as_str());
                    None
                }
                _ => None,
            })
            .collect();
        let events: Vec<AuditEvent<'_>> = actions
            .iter()
            .zip(&decisions)
            .zip(&shortened)
            .map(|((action, decision), shortened)| AuditEvent::Ssh {
                session: &session.fields,
                channel,
                action: action.name(),
                detail: match shortened {
                    Some(command) => event::SshDetail {
                        command: Some(command),
                        forward: None,
                        sftp: None,
                    },
                    None => event::SshDetail::from(action),
                },
                decision: DecisionFields::from(decision),
            })
            .collect();
        self.append_all(&events).await?;
        Ok(decisions)
    }

    /// Records an SSH event that is not a decision: a command line that
    /// could not be parsed (refused), a line typed in an interactive shell
    /// (best effort: what the shell ran is not known), an SFTP file closed.
    /// Awaited, so that a refusal is on record before the client hears it.
    pub async fn ssh_event(
        &self,
        session: &Session,
        channel: u32,
        event: &str,
        detail: serde_json::Value,
    ) -> Result<(), GateError> {
        self.inner
            .audit
            .append(&AuditEvent::SshEvent {
                session: &session.fields,
                event_kind: event,
                channel,
                detail,
            })
            .await?;
        Ok(())
    }

    /// The masking a session gets under the policy in force: the mask rules
    /// that apply to its target, less those the principal may `unmask`.
    /// Each `unmask` decision is audited (one entry for all of them) before
    /// the answer; no masker when no rule is in force.
    pub async fn masking(&self, session: &Session) -> Result<Masking, GateError> {
        let policies = self.policies();
        let masks = policies.masks();
        let applying: Vec<&str> = masks
            .for_target(&session.target.name)
            .map(|rule| rule.id.as_str())
            .collect();
        if applying.is_empty() {
            return Ok(Masking::default());
        }
        let decisions: Vec<Decision> = applying
            .iter()
            .map(|rule| {
                self.decide(
                    session,
                    &Action::Unmask {
                        rule: rule.to_string(),
                    },
                )
            })
            .collect();
        self.inner
            .audit
            .append(&AuditEvent::Masking {
                session: &session.fields,
                rules: applying
                    .iter()
                    .zip(&decisions)
                    .map(|(rule, decision)| (*rule, DecisionFields::from(decision)))
                    .collect(),
            })
            .await?;
        let (in_force, unmasked): (Vec<_>, Vec<_>) = applying
            .iter()
            .zip(&decisions)
            .partition(|(_, decision)| !decision.is_allowed());
        let in_force: Vec<&str> = in_force.into_iter().map(|(rule, _)| *rule).collect();
        let unmasked = unmasked
            .into_iter()
            .map(|(rule, _)| rule.to_string())
            .collect();
        let masker = (!in_force.is_empty())
            .then(|| Arc::new(Masker::new(masks, &in_force, self.inner.mask_key.clone())));
        Ok(Masking { masker, unmasked })
    }

    /// The mask rules that apply to `target` which `viewer` may not
    /// `unmask`: what a recording shown to them must not hold in clear.
    /// Asked of the policy in force, left out of the hit counts, not
    /// audited (nobody reaches the target).
    pub fn masked_for(&self, viewer: &Principal, target: &Target) -> Vec<String> {
        let policies = self.policies();
        let session = Session::new(
            SessionId::new(format!("viewer-{}", viewer.id)),
            viewer.clone(),
            target.clone(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "",
        );
        policies
            .masks()
            .for_target(&target.name)
            .filter(|rule| {
                !self
                    .decide_uncounted(
                        &session,
                        &Action::Unmask {
                            rule: rule.id.clone(),
                        },
                    )
                    .is_allowed()
            })
            .map(|rule| rule.id.clone())
            .collect()
    }

    /// Records what was masked in one statement's result. Not awaited by the
    /// result (the values are masked already); an entry that cannot be
    /// written is logged.
    pub fn masked(&self, session: &Session, text: &str, counts: &MaskCounts) {
        let audit = self.inner.audit.clone();
        let event = serde_json::to_value(AuditEvent::Masked {
            session: &session.fields,
            text,
            masked: counts,
        });
        tokio::spawn(async move {
            let result = match event {
                Ok(event) => audit.append(&event).await.map(|_| ()),
                Err(e) => {
                    tracing::error!(error = %e, "could not encode a masking audit entry");
                    return;
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "could not audit the masking of a result");
            }
        });
    }

    /// Records the end of a session, with its recording (id and final hash)
    /// when it has one. Best effort: the session is over anyway.
    pub async fn end(&self, session: &Session, outcome: &str, masked: &MaskCounts) {
        self.end_recorded(session, outcome, masked, None).await
    }

    pub async fn end_recorded(
        &self,
        session: &Session,
        outcome: &str,
        masked: &MaskCounts,
        recording: Option<(&str, &str)>,
    ) {
        let result = self
            .inner
            .audit
            .append(&AuditEvent::End {
                session: &session.fields,
                outcome,
                statements: session.statements,
                denied: session.denied,
                duration_ms: u64::try_from(session.started.elapsed().as_millis())
                    .unwrap_or(u64::MAX),
                masked,
                recording: recording
                    .map(|(id, final_hash)| event::RecordingFields { id, final_hash }),
            })
            .await;
        if let Err(e) = result {
            tracing::error!(session = %session.id, error = %e, "could not audit the end of a session");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::{Target, TargetKind};
    use portcullis_policy::CedarPolicies;

    #[test]
    fn an_approval_lifts_only_the_forbids_it_was_asked_about() {
        use portcullis_core::{Approval, Effect};
        let decision = |effect, policies: &[&str], groups: &[&str]| Decision {
            effect,
            policies: policies.iter().map(|p| p.to_string()).collect(),
            reason: "why".into(),
            errors: Vec::new(),
            policy_version: "v".into(),
            approval: (effect == Effect::Hold).then(|| Approval {
                groups: groups.iter().map(|g| g.to_string()).collect(),
                min_approvals: 1,
            }),
        };
        let held = decision(Effect::Hold, &["no-unbounded-writes"], &["dba"]);
        let allowed = decision(Effect::Allow, &[], &[]);
        assert!(still_allowed(&held, &held).is_ok());
        assert!(still_allowed(&held, &allowed).is_ok());
        assert!(still_allowed(&allowed, &allowed).is_ok());
        // Refused now; needing other approvers; a forbid the approvers of
        // the same group were not asked about (added, or kept off by a
        // grant that ended); held now though allowed then.
        for now in [
            decision(Effect::Deny, &["frozen"], &[]),
            decision(Effect::Hold, &["no-unbounded-writes"], &["ops"]),
            decision(
                Effect::Hold,
                &["no-unbounded-writes", "writes-need-a-grant"],
                &["dba"],
            ),
        ] {
            assert!(still_allowed(&held, &now).is_err(), "{now:?}");
        }
        assert!(still_allowed(&allowed, &held).is_err());
    }

    fn principal(id: &str, groups: &[&str]) -> Principal {
        Principal {
            id: id.into(),
            subject: id.into(),
            email: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            issuer: "test".into(),
            expires_at: u64::MAX,
        }
    }

    fn session(p: Principal) -> Session {
        let target = Target {
            name: "demo".into(),
            kind: TargetKind::Postgres,
            labels: Default::default(),
        };
        Session::new(
            SessionId::new("s"),
            p,
            target,
            "127.0.0.1:1".parse().unwrap(),
            "u",
        )
    }

    async fn gate(dir: &tempfile::TempDir, policy: &str) -> Gate {
        let policies = CedarPolicies::from_sources(&[("p.cedar", policy)]).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let audit = AuditLog::open(&dir.path().join("a.db"), key, Default::default()).unwrap();
        let approvals = Approvals::open(
            &dir.path().join("approvals.db"),
            audit.clone(),
            Default::default(),
        )
        .await
        .unwrap();
        Gate::new(policies, audit, 100, HashKey::new([9; 32]), approvals)
    }

    #[tokio::test]
    async fn cached_decisions_never_cross_principals_or_policy_versions() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(
            &dir,
            r#"permit (principal == User::"v", action == Action::"connect", resource);"#,
        )
        .await;
        // Under a key that joined fields with a separator, these two collide.
        let member = session(principal("v", &["a", "b"]));
        let outsider = session(principal("v\0a", &["b"]));
        assert!(gate.connect(&member).await.unwrap().is_allowed());
        assert!(!gate.connect(&outsider).await.unwrap().is_allowed());

        // A new policy version decides anew, whatever is cached.
        gate.replace_policies(
            CedarPolicies::from_sources(&[("p.cedar", r#"forbid (principal, action, resource);"#)])
                .unwrap(),
        )
        .await
        .unwrap();
        assert!(!gate.connect(&member).await.unwrap().is_allowed());
        gate.audit().shutdown().await.unwrap();
    }

    /// A statement sent after a policy change that revokes its session is
    /// refused, whether or not the session's watcher has ended it yet.
    #[tokio::test]
    async fn nothing_runs_in_a_session_a_policy_change_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let both = r#"@id("c") permit (principal, action == Action::"connect", resource);
                      @id("q") permit (principal, action == Action::"query", resource);
                      @id("s") permit (principal, action == Action::"shell", resource);"#;
        let gate = gate(&dir, both).await;
        let classifier = portcullis_sql::Classifier::new(16);
        let statements = classifier.classify("select 1").unwrap();
        let check = [Check::Statement {
            phase: "query",
            statement: &statements[0],
        }];
        let mut session = session(principal("v", &[]));
        assert!(gate.connect(&session).await.unwrap().is_allowed());
        assert!(gate.check(&mut session, &check).await.unwrap()[0].is_allowed());
        let policies = |text: &str| CedarPolicies::from_sources(&[("p.cedar", text)]).unwrap();
        gate.replace_policies(policies(
            r#"@id("q") permit (principal, action == Action::"query", resource);
               @id("s") permit (principal, action == Action::"shell", resource);"#,
        ))
        .await
        .unwrap();
        let refused = gate.check(&mut session, &check).await.unwrap();
        assert!(!refused[0].is_allowed());
        assert!(
            refused[0]
                .reason
                .starts_with("access to target `demo` was revoked (policy version"),
            "{}",
            refused[0].reason
        );
        let shell = gate
            .check_ssh(&mut session, 0, &[Action::Shell])
            .await
            .unwrap();
        assert_eq!(shell[0].reason, refused[0].reason);
        // Allowed again, decided again.
        gate.replace_policies(policies(both)).await.unwrap();
        assert!(gate.check(&mut session, &check).await.unwrap()[0].is_allowed());
        gate.audit().shutdown().await.unwrap();
    }

    /// A shell allowed just before a policy change, and registered where
    /// the session's watcher looks only once the watcher had decided again,
    /// is decided again when it is confirmed.
    #[tokio::test]
    async fn what_is_held_open_is_decided_again_if_the_policy_changed_while_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let policies = |text: &str| CedarPolicies::from_sources(&[("p.cedar", text)]).unwrap();
        let open = r#"@id("c") permit (principal, action == Action::"connect", resource);
                      @id("s") permit (principal, action == Action::"shell", resource);"#;
        let gate = gate(&dir, open).await;
        let mut session = session(principal("v", &[]));
        let shell = [Action::Shell];

        let seen = gate.generations();
        let decided = gate.check_ssh(&mut session, 0, &shell).await.unwrap();
        assert!(decided[0].is_allowed());
        // No change since: nothing is decided again.
        assert!(gate
            .confirm(&session, seen, shell.iter().zip(&decided))
            .await
            .unwrap()
            .is_none());

        // A change that still allows it.
        gate.replace_policies(policies(open)).await.unwrap();
        assert!(gate
            .confirm(&session, seen, shell.iter().zip(&decided))
            .await
            .unwrap()
            .is_none());

        // A change that forbids it, made between the decision and the
        // registration.
        let seen = gate.generations();
        let decided = gate.check_ssh(&mut session, 0, &shell).await.unwrap();
        gate.replace_policies(policies(
            r#"@id("c") permit (principal, action == Action::"connect", resource);"#,
        ))
        .await
        .unwrap();
        let refused = gate
            .confirm(&session, seen, shell.iter().zip(&decided))
            .await
            .unwrap();
        let (which, now) = refused.expect("the shell no longer stands");
        assert_eq!(which, &Action::Shell);
        assert!(now.reason.contains("no policy permits"), "{}", now.reason);
        gate.audit().shutdown().await.unwrap();
    }

    /// Decides each statement of `texts` in one session, in order.
    async fn decide_texts(gate: &Gate, texts: &[&str]) -> Vec<portcullis_core::Effect> {
        let classifier = portcullis_sql::Classifier::new(16);
        let mut session = session(principal("v", &[]));
        let mut effects = Vec::new();
        for text in texts {
            let statements = classifier.classify(text).unwrap();
            assert!(statements[0].shape.is_some(), "{text}");
            let check = Check::Statement {
                phase: "query",
                statement: &statements[0],
            };
            let decisions = gate.check(&mut session, &[check]).await.unwrap();
            effects.push(decisions[0].effect);
        }
        effects
    }

    #[tokio::test]
    async fn a_decision_stands_for_a_statement_shape_only_when_no_policy_reads_the_text() {
        use portcullis_core::Effect::{Allow, Deny};
        let texts = [
            "select * from t where a = 1",
            "select * from t where a = 42",
            "select * from t where a = 7",
        ];
        // (policy, decisions, how many are cached)
        let cases = [
            // The text read as an attribute: each text is decided.
            (
                r#"permit (principal, action, resource);
                   forbid (principal, action == Action::"query", resource)
                   when { context.statement.text like "*42*" };"#,
                [Allow, Deny, Allow],
                3,
            ),
            // Or by index.
            (
                r#"permit (principal, action, resource);
                   forbid (principal, action == Action::"query", resource)
                   when { context.statement["text"] == "select * from t where a = 42" };"#,
                [Allow, Deny, Allow],
                3,
            ),
            // A policy on the classification alone: one shape, one decision.
            (
                r#"permit (principal, action, resource)
                   when { !(context has statement) || context.statement.tables.contains("t") };"#,
                [Allow, Allow, Allow],
                1,
            ),
        ];
        for (policy, expected, cached) in cases {
            let dir = tempfile::tempdir().unwrap();
            let tested = gate(&dir, policy).await;
            assert_eq!(decide_texts(&tested, &texts).await, expected, "{policy}");
            // And the session's `connect`, confirmed at its first statement.
            assert_eq!(tested.inner.decisions.len(), cached + 1, "{policy}");
            tested.audit().shutdown().await.unwrap();
        }
    }

    /// `execute q` runs what `q` names at the time: a decision made for it
    /// while `q` was a select does not stand for it once `q` deletes.
    #[tokio::test]
    async fn a_cached_decision_stands_for_what_a_statement_runs_not_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(
            &dir,
            r#"permit (principal, action, resource);
               forbid (principal, action == Action::"query", resource)
               when { context has statement && context.statement.kind == "delete" };"#,
        )
        .await;
        let classifier = portcullis_sql::Classifier::new(16);
        let one = |sql: &str| classifier.classify(sql).unwrap()[0].clone();
        let execute = one("execute q");
        let mut session = session(principal("v", &[]));
        use portcullis_core::Effect::{Allow, Deny};
        for (prepared, expected) in [
            ("prepare q as select 1", Allow),
            ("prepare q as delete from t", Deny),
            ("prepare q as select 1", Allow),
        ] {
            let resolved = portcullis_sql::resolve_execute(&one(prepared), &execute);
            assert_eq!(resolved.text, "execute q");
            let check = Check::Statement {
                phase: "query",
                statement: &resolved,
            };
            let decisions = gate.check(&mut session, &[check]).await.unwrap();
            assert_eq!(decisions[0].effect, expected, "{prepared}");
        }
        gate.audit().shutdown().await.unwrap();
    }
}
