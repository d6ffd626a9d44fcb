//! The approval workflow: a statement held inside a live session until a
//! reviewer approves it, and access requested for a time window. Requests
//! are stored before anyone is told, every step is in the audit log, and a
//! reviewer is never the requester and always in a group the policy names.
//!
//! Layout:
//! - [`model`]: requests, reviews, statuses; their JSON is the REST API's.
//! - `store`: SQLite, one transaction per change.
//! - [`notify`]: webhooks, with retries.
//!
//! Architecture Invariant: a held statement goes ahead only when its own
//! request is approved; expiry, denial, cancellation and the end of the
//! session all end the wait with a refusal. Every change of a request is
//! one transaction on a pending request, so a request is decided once.

pub mod model;
pub mod notify;
mod store;

pub use model::{parse_duration, Person, Request, Review, Status, Subject};
pub use notify::{Format, Sink};

use portcullis_audit::AuditLog;
use portcullis_core::{Approval, Grant, Principal};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::Store;
use tokio::sync::{broadcast, watch};

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("the approval store is unavailable: {0}")]
    Store(String),
    #[error("no approval request {0}")]
    NotFound(i64),
    /// The request cannot take this step (already decided, self-approval,
    /// not a reviewer); the message says why.
    #[error("{0}")]
    Refused(String),
    #[error("the audit log is unavailable: {0}")]
    Audit(String),
}

/// How the workflow runs; from the config's `[approvals]`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a request waits for reviewers.
    pub expiry: Duration,
    /// The console's address, for links: `<console_url>/requests/<id>`;
    /// without a console, people are pointed at the CLI.
    pub console_url: Option<String>,
    /// Who reviews access requests.
    pub access_approvers: Vec<String>,
    /// How many approvals an access request needs.
    pub access_min_approvals: u32,
    /// The longest access window that may be asked for.
    pub access_max: Duration,
    pub notify: Vec<Sink>,
    /// Delivery attempts per notification, and the first pause between.
    pub notify_attempts: u32,
    pub notify_backoff: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            expiry: Duration::from_secs(15 * 60),
            console_url: None,
            access_approvers: Vec::new(),
            access_min_approvals: 1,
            access_max: Duration::from_secs(12 * 3600),
            notify: Vec::new(),
            notify_attempts: 5,
            notify_backoff: Duration::from_secs(1),
        }
    }
}

/// Grants in force: principal id to target to grant.
type Grants = HashMap<String, HashMap<String, Grant>>;

/// How many access requests one person may have waiting at once.
const MAX_PENDING_ACCESS_REQUESTS: usize = 5;

/// The longest reason or review comment, in characters: each is stored,
/// audited, listed and sent to every webhook.
const MAX_TEXT_CHARS: usize = 2000;

/// Refuses a reason or comment that is too long, or holds a character
/// that is not drawn as itself (an escape sequence, a carriage return, a
/// direction change): it goes as written to the other person's terminal
/// (the requester's `psql`, the reviewer's CLI) and to chat.
fn check_text(what: &str, text: &str) -> Result<(), ApprovalError> {
    let n = text.chars().count();
    if n > MAX_TEXT_CHARS {
        return Err(ApprovalError::Refused(format!(
            "{what} is {n} characters long; at most {MAX_TEXT_CHARS} are kept: shorten it, or link to the details"
        )));
    }
    if let Some(c) = text.chars().find(|c| portcullis_core::text::is_unshown(*c)) {
        return Err(ApprovalError::Refused(format!(
            "{what} holds {}, a character not drawn as itself, which would reach the other person's terminal as is: write it without",
            portcullis_core::text::named(c)
        )));
    }
    Ok(())
}

/// Cheap to clone; shared by the Gate, the web console and the API.
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Mutex<Store>>,
    audit: AuditLog,
    settings: Settings,
    notifier: notify::Notifier,
    /// The live waiters of held statements, by request id.
    waiters: Mutex<HashMap<i64, watch::Sender<Status>>>,
    /// Every change of every request, for the console's live pages.
    changes: broadcast::Sender<Request>,
    /// Grants in force: (principal id, target) to the grant.
    /// Asked on every decision: principal id, then target, without
    /// allocating a key.
    grants: std::sync::RwLock<Grants>,
    /// Bumped when a grant starts or ends: live sessions decide again.
    grant_changes: watch::Sender<u64>,
    /// Held while an access request is counted against its requester's
    /// limit and stored, so that requests sent at once cannot all pass.
    asking: tokio::sync::Mutex<()>,
}

/// A statement held for approval: its request, and the wait for a decision.
pub struct Held {
    pub id: i64,
    pub url: String,
    pub expires_at: i64,
    status: watch::Receiver<Status>,
    approvals: Approvals,
    done: bool,
}

impl Approvals {
    /// Opens (or creates) the store at `path`. Statement requests left
    /// pending by a previous run are cancelled: their sessions are gone.
    pub async fn open(
        path: &Path,
        audit: AuditLog,
        settings: Settings,
    ) -> Result<Approvals, ApprovalError> {
        let store = Store::open(path)?;
        let notifier = notify::Notifier::new(
            settings.notify.clone(),
            settings.notify_attempts,
            settings.notify_backoff,
        );
        let approvals = Approvals {
            inner: Arc::new(Inner {
                store: Arc::new(Mutex::new(store)),
                audit,
                settings,
                notifier,
                waiters: Mutex::new(HashMap::new()),
                changes: broadcast::channel(256).0,
                grants: std::sync::RwLock::new(Grants::new()),
                grant_changes: watch::Sender::new(0),
                asking: tokio::sync::Mutex::new(()),
            }),
        };
        for id in approvals.with_store(|s| s.pending_statements()).await? {
            approvals
                .finish(
                    id,
                    Status::Cancelled,
                    "the gateway restarted, so the session that asked is gone".into(),
                )
                .await?;
        }
        approvals.reload_grants().await?;
        let pending = approvals
            .with_store(|s| s.with_status(&[Status::Pending], 10_000))
            .await?;
        metrics::gauge!("portcullis_approval_requests_pending").set(pending.len() as f64);
        Ok(approvals)
    }

    /// Expires requests and ends grants on time; runs until the process ends.
    /// Grants end on whole seconds (`until`): each second's ends are acted on
    /// just past it, taken out of force and announced to live sessions in
    /// one step (see [`Approvals::grant`]).
    pub async fn run_timers(self) {
        loop {
            let into_second = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let rest =
                Duration::from_nanos(u64::from(1_000_000_000u32.saturating_sub(into_second)));
            tokio::time::sleep(rest + Duration::from_millis(2)).await;
            if let Err(e) = self.expire_due().await {
                tracing::error!(error = %e, "could not expire approval requests");
            }
            self.end_grants().await;
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Every change of a request, as it happens.
    pub fn changes(&self) -> broadcast::Receiver<Request> {
        self.inner.changes.subscribe()
    }

    /// Changes when a grant starts or ends.
    pub fn grant_changes(&self) -> watch::Receiver<u64> {
        self.inner.grant_changes.subscribe()
    }

    /// How many times the grants in force have changed.
    pub fn grant_generation(&self) -> u64 {
        *self.inner.grant_changes.borrow()
    }

    /// The grant `principal` holds on `target` now, if any. A grant is in
    /// force until the timers take it out, just past its `until`, in the same
    /// step as they tell live sessions to decide again: a decision that saw it
    /// is then always decided again. Should the timers fall behind, a grant
    /// is out of force [`LATE_END`] seconds past its `until` all the same.
    pub fn grant(&self, principal: &str, target: &str) -> Option<Grant> {
        let grants = match self.inner.grants.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let grant = grants.get(principal)?.get(target)?;
        (grant.until > now().saturating_sub(LATE_END)).then(|| grant.clone())
    }

    fn grants_mut(&self) -> std::sync::RwLockWriteGuard<'_, Grants> {
        match self.inner.grants.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Where a reviewer decides request `id`: its console page, or the CLI
    /// command when there is no console.
    pub fn link(&self, id: i64) -> String {
        match &self.inner.settings.console_url {
            Some(url) => format!("{}/requests/{id}", url.trim_end_matches('/')),
            None => format!("portcullis approve {id} --comment \"...\""),
        }
    }

    /// Holds a statement: stores the request, audits it, tells the
    /// reviewers, and returns the wait. Fails closed: when the request
    /// cannot be stored or audited, the statement is refused.
    pub async fn hold(
        &self,
        requester: &Principal,
        target: &str,
        subject: Subject,
        reason: Option<String>,
        approval: Approval,
    ) -> Result<Held, ApprovalError> {
        let expiry = i64::try_from(self.inner.settings.expiry.as_secs()).unwrap_or(i64::MAX);
        let (tx, rx) = watch::channel(Status::Pending);
        let request = self
            .create(
                requester,
                target,
                subject,
                reason,
                approval,
                expiry,
                Some(tx),
            )
            .await?;
        Ok(Held {
            id: request.id,
            url: self.link(request.id),
            expires_at: request.expires_at,
            status: rx,
            approvals: self.clone(),
            done: false,
        })
    }

    /// Asks for access to `target` for `seconds`, reviewed by the configured
    /// access approvers.
    pub async fn request_access(
        &self,
        requester: &Principal,
        target: &str,
        seconds: i64,
        reason: String,
    ) -> Result<Request, ApprovalError> {
        let settings = &self.inner.settings;
        if settings.access_approvers.is_empty() {
            return Err(ApprovalError::Refused(
                "access requests are not enabled: set `[approvals] access_approvers` in the gateway's config".into(),
            ));
        }
        let max = i64::try_from(settings.access_max.as_secs()).unwrap_or(i64::MAX);
        if seconds > max {
            return Err(ApprovalError::Refused(format!(
                "{} is longer than the longest access window, {}",
                model::duration(seconds),
                model::duration(max)
            )));
        }
        if reason.trim().is_empty() {
            return Err(ApprovalError::Refused(
                "an access request needs a reason (`--reason`)".into(),
            ));
        }
        check_text("the reason", &reason)?;
        let _asking = self.inner.asking.lock().await;
        let mine = self
            .with_store(|s| s.pending_access())
            .await?
            .into_iter()
            .filter(|r| r.requester.same_as(requester))
            .count();
        if mine >= MAX_PENDING_ACCESS_REQUESTS {
            return Err(ApprovalError::Refused(format!(
                "`{}` has {mine} access requests waiting already; wait for them to be decided",
                requester.id
            )));
        }
        let mut groups = settings.access_approvers.clone();
        groups.sort();
        groups.dedup();
        let approval = Approval {
            min_approvals: settings
                .access_min_approvals
                .max(u32::try_from(groups.len()).unwrap_or(u32::MAX)),
            groups,
        };
        let expiry = i64::try_from(settings.expiry.as_secs()).unwrap_or(i64::MAX);
        self.create(
            requester,
            target,
            Subject::Access { seconds },
            Some(reason),
            approval,
            expiry,
            None,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        requester: &Principal,
        target: &str,
        subject: Subject,
        reason: Option<String>,
        approval: Approval,
        expiry: i64,
        waiter: Option<watch::Sender<Status>>,
    ) -> Result<Request, ApprovalError> {
        let created_at = now();
        let mut request = Request {
            id: 0,
            status: Status::Pending,
            requester: Person::from(requester),
            target: target.to_string(),
            subject,
            reason: reason.filter(|r| !r.trim().is_empty()),
            approval,
            created_at,
            expires_at: created_at.saturating_add(expiry),
            decided_at: None,
            outcome: None,
            grant_until: None,
            reviews: Vec::new(),
        };
        let request = self
            .with_store(move |store| {
                store.insert(&mut request)?;
                Ok(request)
            })
            .await?;
        if let Some(waiter) = waiter {
            lock(&self.inner.waiters).insert(request.id, waiter);
        }
        let mut event = json!({
            "event": "approval.requested",
            "request": request.id,
            "kind": request.kind(),
            "principal": request.requester.id,
            "subject": request.requester.subject,
            "issuer": request.requester.issuer,
            "target": request.target,
            "approvers": request.approval.groups,
            "min_approvals": request.approval.min_approvals,
            "expires_at": request.expires_at,
        });
        if let Some(reason) = &request.reason {
            event["reason"] = json!(reason);
        }
        match &request.subject {
            Subject::Statement {
                session,
                text,
                batch,
                policies,
                policy_version,
                ..
            } => {
                event["session"] = json!(session);
                event["text"] = json!(text);
                if let Some(batch) = batch {
                    event["batch"] = json!(batch);
                }
                event["policies"] = json!(policies);
                event["policy_version"] = json!(policy_version);
            }
            Subject::Access { seconds } => event["seconds"] = json!(seconds),
        }
        if let Err(e) = self.audit(&event).await {
            // Fail closed: an unaudited request is not left waiting.
            let _ = self
                .finish(
                    request.id,
                    Status::Cancelled,
                    "the audit log is unavailable".into(),
                )
                .await;
            return Err(e);
        }
        metrics::gauge!("portcullis_approval_requests_pending").increment(1.0);
        metrics::counter!("portcullis_approval_requests_total", "kind" => request.kind())
            .increment(1);
        self.publish("requested", &request);
        Ok(request)
    }

    pub async fn get(&self, id: i64) -> Result<Request, ApprovalError> {
        self.with_store(move |s| s.get(id))
            .await?
            .ok_or(ApprovalError::NotFound(id))
    }

    /// Pending requests, oldest first.
    pub async fn pending(&self) -> Result<Vec<Request>, ApprovalError> {
        let mut requests = self
            .with_store(|s| s.with_status(&[Status::Pending], 1000))
            .await?;
        requests.reverse();
        Ok(requests)
    }

    /// Decided requests, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<Request>, ApprovalError> {
        self.with_store(move |s| {
            s.with_status(
                &[
                    Status::Approved,
                    Status::Denied,
                    Status::Expired,
                    Status::Cancelled,
                    Status::Revoked,
                ],
                limit,
            )
        })
        .await
    }

    /// One reviewer approves or denies, with a comment. A denial decides;
    /// approvals decide once there are enough of them.
    pub async fn review(
        &self,
        id: i64,
        reviewer: &Principal,
        approve: bool,
        comment: &str,
    ) -> Result<Request, ApprovalError> {
        let comment = comment.trim().to_string();
        if comment.is_empty() {
            return Err(ApprovalError::Refused(
                "a review needs a comment that says why".into(),
            ));
        }
        check_text("the comment", &comment)?;
        let reviewer = reviewer.clone();
        let review_comment = comment.clone();
        let (request, decided) = self
            .with_store(move |store| {
                store.update(id, |request| {
                    if request.status == Status::Pending && request.expires_at <= now() {
                        return Err(ApprovalError::Refused(format!("request {id} has expired")));
                    }
                    request
                        .may_review(&reviewer)
                        .map_err(ApprovalError::Refused)?;
                    let at = now();
                    request.reviews.push(Review {
                        reviewer: reviewer.id.clone(),
                        reviewer_subject: reviewer.subject.clone(),
                        reviewer_issuer: reviewer.issuer.clone(),
                        reviewer_email: reviewer.email.clone(),
                        groups: reviewer.groups.clone(),
                        approve,
                        comment: review_comment.clone(),
                        at,
                    });
                    let decided = if !approve {
                        Some(Status::Denied)
                    } else if request.is_approved() {
                        Some(Status::Approved)
                    } else {
                        None
                    };
                    if let Some(status) = decided {
                        request.status = status;
                        request.decided_at = Some(at);
                        request.outcome = Some(review_comment);
                        if let (Status::Approved, Subject::Access { seconds }) =
                            (status, &request.subject)
                        {
                            request.grant_until = Some(at.saturating_add(*seconds));
                        }
                    }
                    Ok(decided)
                })
            })
            .await?;
        let review = request.reviews.last();
        let audited = self
            .audit(&json!({
                "event": "approval.reviewed",
                "request": id,
                "reviewer": review.map(|r| r.reviewer.as_str()),
                "reviewer_groups": review.map(|r| &r.groups),
                "decision": if approve { "approve" } else { "deny" },
                "comment": comment,
            }))
            .await;
        // The decision is committed: the waiter and the grants learn it even
        // when the audit entry could not be written (that error is returned).
        if let Some(status) = decided {
            self.decided(&request, status).await?;
        } else {
            self.publish("reviewed", &request);
        }
        audited?;
        Ok(request)
    }

    /// Takes back an approved access grant before its end.
    pub async fn revoke(
        &self,
        id: i64,
        by: &Principal,
        comment: &str,
    ) -> Result<Request, ApprovalError> {
        let by_id = by.id.clone();
        let allowed: Vec<String> = self.inner.settings.access_approvers.clone();
        let groups = by.groups.clone();
        let comment = comment.trim().to_string();
        check_text("the comment", &comment)?;
        let outcome = comment.clone();
        let me = by.clone();
        let (request, ()) = self
            .with_store(move |store| {
                store.update(id, |request| {
                    // Someone who may not see it learns nothing of it, as
                    // everywhere else.
                    let own = request.requester.same_as(&me);
                    if !own
                        && !request
                            .approval
                            .groups
                            .iter()
                            .any(|group| groups.contains(group))
                    {
                        return Err(ApprovalError::NotFound(id));
                    }
                    let Subject::Access { .. } = request.subject else {
                        return Err(ApprovalError::Refused(format!(
                            "request {id} is not an access grant"
                        )));
                    };
                    if request.status != Status::Approved
                        || request.grant_until.is_none_or(|until| until <= now())
                    {
                        return Err(ApprovalError::Refused(format!(
                            "request {id} is not a grant in force"
                        )));
                    }
                    // The grantee may give up their own grant; otherwise
                    // only those who could approve it may take it back.
                    if !own && !allowed.iter().any(|g| groups.contains(g)) {
                        return Err(ApprovalError::Refused(format!(
                            "only the grantee or a member of {} may revoke grant {id}",
                            model::groups_list(&allowed)
                        )));
                    }
                    request.status = Status::Revoked;
                    request.outcome = Some(if outcome.is_empty() {
                        format!("revoked by {by_id}")
                    } else {
                        format!("revoked by {by_id}: {outcome}")
                    });
                    request.grant_until = Some(now());
                    Ok(())
                })
            })
            .await?;
        // Out of force first, whatever happens to the audit entry.
        self.reload_grants().await?;
        self.audit(&json!({
            "event": "grant.revoked",
            "request": id,
            "by": by.id,
            "principal": request.requester.id,
            "target": request.target,
            "comment": comment,
        }))
        .await?;
        self.publish("revoked", &request);
        Ok(request)
    }

    /// Records that an approved statement was sent to its target. The
    /// statement goes only once this is durable.
    pub async fn executed(&self, id: i64, session: &str) -> Result<(), ApprovalError> {
        self.audit(&json!({
            "event": "approval.executed",
            "request": id,
            "session": session,
        }))
        .await
    }

    /// Ends a pending request without a reviewer (expired, cancelled). A
    /// request decided meanwhile keeps its decision, which is returned.
    async fn finish(&self, id: i64, status: Status, why: String) -> Result<Request, ApprovalError> {
        // In a task of its own: a caller that stops waiting (a session that
        // ends) never leaves a committed change without its audit entry,
        // its waiter woken and its metrics.
        let approvals = self.clone();
        tokio::spawn(async move { approvals.finish_now(id, status, why).await })
            .await
            .map_err(|e| ApprovalError::Store(format!("the approval task failed: {e}")))?
    }

    async fn finish_now(
        &self,
        id: i64,
        status: Status,
        why: String,
    ) -> Result<Request, ApprovalError> {
        let outcome = why.clone();
        let (request, changed) = self
            .with_store(move |store| {
                store.update(id, |request| {
                    if request.status != Status::Pending {
                        return Ok(false);
                    }
                    request.status = status;
                    request.decided_at = Some(now());
                    request.outcome = Some(outcome);
                    Ok(true)
                })
            })
            .await?;
        if changed {
            self.decided(&request, status).await?;
        }
        Ok(request)
    }

    /// After a request is decided: audit, metrics, wake the waiter,
    /// update grants, tell people.
    async fn decided(&self, request: &Request, status: Status) -> Result<(), ApprovalError> {
        let latency = request.decided_at.unwrap_or_else(now) - request.created_at;
        let audited = self
            .audit(&json!({
                "event": format!("approval.{}", status.as_str()),
                "request": request.id,
                "kind": request.kind(),
                "principal": request.requester.id,
                "target": request.target,
                "outcome": request.outcome,
                "grant_until": request.grant_until,
                "latency_seconds": latency,
            }))
            .await;
        metrics::gauge!("portcullis_approval_requests_pending").decrement(1.0);
        if matches!(status, Status::Approved | Status::Denied) {
            metrics::histogram!(
                "portcullis_approval_latency_seconds",
                "kind" => request.kind(),
                "outcome" => status.as_str()
            )
            .record(latency as f64);
        }
        if let Some(waiter) = lock(&self.inner.waiters).remove(&request.id) {
            let _ = waiter.send(status);
        }
        if matches!(request.subject, Subject::Access { .. }) && status == Status::Approved {
            self.reload_grants().await?;
        }
        self.publish(status.as_str(), request);
        audited
    }

    async fn expire_due(&self) -> Result<(), ApprovalError> {
        let now = now();
        for id in self.with_store(move |s| s.due(now)).await? {
            self.finish(
                id,
                Status::Expired,
                format!(
                    "no reviewer decided within {}",
                    model::duration(
                        i64::try_from(self.inner.settings.expiry.as_secs()).unwrap_or(0)
                    )
                ),
            )
            .await?;
        }
        Ok(())
    }

    async fn end_grants(&self) {
        let now = now();
        let mut changed = false;
        {
            let mut grants = self.grants_mut();
            for targets in grants.values_mut() {
                let before = targets.len();
                targets.retain(|_, grant| grant.until > now);
                changed |= targets.len() != before;
            }
            grants.retain(|_, targets| !targets.is_empty());
        }
        if changed {
            self.inner.grant_changes.send_modify(|n| *n += 1);
        }
        // Each end is audited once, found in the store: one that a reload
        // took out of memory first, or that came while the gateway was
        // stopped, is not missed.
        let ended = match self.with_store(move |s| s.ended_grants(now)).await {
            Ok(ended) => ended,
            Err(e) => {
                tracing::error!(error = %e, "could not read the grants that ended");
                return;
            }
        };
        for grant in ended {
            let audited = self
                .audit(&json!({
                    "event": "grant.ended",
                    "request": grant.id,
                    "principal": grant.requester.id,
                    "target": grant.target,
                    "until": grant.grant_until,
                }))
                .await;
            if let Err(e) = audited {
                tracing::error!(error = %e, "could not audit the end of a grant");
                return;
            }
            let id = grant.id;
            if let Err(e) = self.with_store(move |s| s.mark_ended(id)).await {
                tracing::error!(error = %e, "could not record that a grant's end was audited");
            }
        }
    }

    async fn reload_grants(&self) -> Result<(), ApprovalError> {
        let now = now();
        let requests = self.with_store(move |s| s.grants(now)).await?;
        let mut grants = Grants::new();
        for request in requests {
            let (Some(until), Some(reason)) = (request.grant_until, request.reason.clone()) else {
                continue;
            };
            let grant = Grant {
                id: request.id,
                reason,
                until,
            };
            let targets = grants.entry(request.requester.id.clone()).or_default();
            // Of two grants, the one that lasts longer.
            let keep = targets
                .get(&request.target)
                .is_none_or(|g: &Grant| g.until < until);
            if keep {
                targets.insert(request.target.clone(), grant);
            }
        }
        *self.grants_mut() = grants;
        self.inner.grant_changes.send_modify(|n| *n += 1);
        Ok(())
    }

    fn publish(&self, event: &'static str, request: &Request) {
        let _ = self.inner.changes.send(request.clone());
        self.inner
            .notifier
            .send(event, request, &self.link(request.id));
    }

    async fn audit(&self, event: &serde_json::Value) -> Result<(), ApprovalError> {
        self.inner
            .audit
            .append(event)
            .await
            .map(|_| ())
            .map_err(|e| ApprovalError::Audit(e.to_string()))
    }

    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, ApprovalError> + Send + 'static,
    ) -> Result<T, ApprovalError> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = lock(&store);
            f(&mut store)
        })
        .await
        .map_err(|e| ApprovalError::Store(format!("the store task failed: {e}")))?
    }
}

impl Held {
    /// Waits until the request is decided or expires. `Ok` with the final
    /// request; the caller runs the statement only when it is approved.
    pub async fn wait(&mut self) -> Result<Request, ApprovalError> {
        let left = Duration::from_secs(u64::try_from(self.expires_at - now()).unwrap_or(0));
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(left)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        let status = &mut self.status;
        let decided = tokio::time::timeout_at(deadline, async move {
            status.wait_for(|s| *s != Status::Pending).await.map(|_| ())
        })
        .await;
        let request = match decided {
            Ok(_) => self.approvals.get(self.id).await?,
            Err(_) => {
                let why = format!(
                    "no reviewer decided within {}",
                    model::duration(
                        i64::try_from(self.approvals.inner.settings.expiry.as_secs()).unwrap_or(0)
                    )
                );
                self.approvals.finish(self.id, Status::Expired, why).await?
            }
        };
        self.done = true;
        Ok(request)
    }

    /// Withdraws the request (the client cancelled); a request decided
    /// meanwhile keeps its decision, which is returned.
    pub async fn cancel(&mut self, why: &str) -> Result<Request, ApprovalError> {
        let request = self
            .approvals
            .finish(self.id, Status::Cancelled, why.to_string())
            .await;
        self.done = true;
        request
    }
}

impl Drop for Held {
    /// A wait given up without a decision (the session ended) cancels its
    /// request, so that nobody approves a statement that can no longer run.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let approvals = self.approvals.clone();
        let id = self.id;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = approvals
                    .finish(id, Status::Cancelled, "the session that asked ended".into())
                    .await
                {
                    tracing::error!(request = id, error = %e, "could not cancel an abandoned request");
                }
            });
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// How many seconds past its `until` a grant the timers have not taken out
/// yet is still seen in force.
const LATE_END: i64 = 5;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
