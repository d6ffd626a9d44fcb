//! One client session after login: the relay between the client side and
//! the target side, with every statement decided by the Gate before any of
//! its bytes reach the target.
//!
//! Refusals travel through the target. A refused message is replaced by a
//! "poison" statement that fails on the target at parse analysis, naming an
//! identifier only this session knows (`pcx_<nonce>_<n>`). The target then
//! does what PostgreSQL does after any error (abort the transaction, skip to
//! Sync), and the target side swaps that error for the gateway's own. So the
//! client's session goes on exactly as after any other error, in order, even
//! when it pipelines, and the transaction state stays true.

use crate::catalog::lacks_relations;
use crate::codec::{build, frame::split_frame, message, result, Frame};
use crate::error::PgError;
use crate::hidden;
use crate::masking::{
    calls_functions, leaves_traces, reads_counters, reads_statistics, sample_computation,
    sample_condition, shows_other_sessions, Planner, ResultSource,
};
use crate::prepared::{Bound, Change, Portal, Prepared};
use crate::results::{Decided, Expect, FrameAction, QueryStatement, ResultQueue, Results};
use crate::server::PgTarget;
use crate::stream::{ReadSide, Stream, WriteSide};
use crate::PINNED_PARAMETERS;
use bytes::{Buf, Bytes, BytesMut};
use portcullis_core::{Decision, Lineage, RelationRef, StatementInfo};
use portcullis_gate::{Check, Gate, Session};
use portcullis_mask::{MaskCounts, Masker};
use portcullis_sql::Classifier;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What both directions of a session share.
struct Shared {
    /// Random per session; makes the poison identifiers unguessable.
    nonce: String,
    /// Poison number to the ErrorResponse the client gets instead.
    denials: Mutex<HashMap<u64, Bytes>>,
    pending: AtomicUsize,
    /// For each cycle sent to the target (a Query, a Sync, a FunctionCall),
    /// the last poison number issued before its end. When the cycle's
    /// ReadyForQuery arrives, its poisons have all been answered or skipped.
    cycles: Mutex<VecDeque<u64>>,
    /// Set, then notified, to make the target side end the session with a
    /// FATAL error that says why.
    end_reason: Mutex<Option<String>>,
    end: tokio::sync::Notify,
    /// What each message sent to the target will be answered with, and the
    /// session's masking.
    results: Arc<ResultQueue>,
    /// Messages of the gateway's own for the client (the notice that a
    /// statement is held), written by the target side between frames.
    notices: tokio::sync::mpsc::UnboundedSender<Bytes>,
    /// The session's recording: statements from the client side, what the
    /// client receives from the target side.
    recorder: Option<Arc<portcullis_record::Recorder>>,
}

/// How a session ended, for the audit log.
#[derive(Debug)]
pub enum Ending {
    ClientTerminated,
    ClientDisconnected,
    TargetClosed,
    /// The gateway ended the session (token expired, access revoked).
    Ended(String),
    Error(PgError),
}

impl Ending {
    pub fn describe(&self) -> String {
        match self {
            Ending::ClientTerminated => "client terminated".into(),
            Ending::ClientDisconnected => "client disconnected".into(),
            Ending::TargetClosed => "target closed the connection".into(),
            Ending::Ended(reason) => reason.clone(),
            Ending::Error(e) => format!("error: {e}"),
        }
    }
}

/// The message a statement is refused with, and how.
enum PoisonKind<'a> {
    /// Replaces a simple-protocol Query.
    Query,
    /// Replaces a Parse of this statement name.
    Parse(&'a str),
    /// Replaces an Execute.
    Execute,
}

/// One client message, planned before the Gate is asked.
enum Planned {
    /// Goes as it came; `defines` is the Bind (or Parse of an empty query)
    /// it is, answered by BindComplete (ParseComplete).
    Forward {
        raw: Bytes,
        defines: Option<Change>,
    },
    /// Statements to check; the message goes ahead only if all are allowed.
    /// `undo` takes back, per statement, what planning it changed in
    /// [`Prepared`].
    Gated {
        raw: Bytes,
        phase: &'static str,
        statements: Vec<StatementInfo>,
        undo: Vec<Vec<Change>>,
        poison: Poison,
        /// For an Execute, the parameters its portal was bound with, as
        /// planned in order (`None` when the gateway cannot show them all).
        parameters: Option<Vec<Option<String>>>,
    },
    /// Refused without a policy decision.
    Refused {
        phase: &'static str,
        text: String,
        reason: String,
        code: &'static str,
        poison: Poison,
    },
    Terminate(Bytes),
}

impl Planned {
    /// Whether, once sent, it may put the target in copy-in, where it
    /// reads the client's messages differently.
    fn may_start_copy_in(&self) -> bool {
        match self {
            Planned::Gated {
                statements, poison, ..
            } => !matches!(poison, Poison::Parse(_)) && statements.iter().any(copies_in),
            _ => false,
        }
    }
}

/// A `COPY ... FROM STDIN`: the target answers it with a CopyInResponse and
/// then reads the client's copy data.
fn copies_in(statement: &StatementInfo) -> bool {
    statement.command == "COPY FROM STDIN"
}

#[derive(Clone)]
enum Poison {
    Query,
    Parse(String),
    Execute,
}

impl Poison {
    fn kind(&self) -> PoisonKind<'_> {
        match self {
            Poison::Query => PoisonKind::Query,
            Poison::Parse(name) => PoisonKind::Parse(name),
            Poison::Execute => PoisonKind::Execute,
        }
    }
}

/// A query's statements as they run, resolved against the session's
/// prepared statements and portals.
struct Resolved {
    statements: Vec<StatementInfo>,
    /// The changes each makes to prepared statements and portals.
    undo: Vec<Vec<Change>>,
    /// The values they run with, for reviewers (`None`: they cannot all be
    /// shown).
    parameters: Option<Vec<Option<String>>>,
}

pub struct Relay {
    pub gate: Gate,
    pub classifier: Arc<Classifier>,
    pub session: Session,
    pub target: Arc<PgTarget>,
    /// The mask rules in force for this session, if any.
    pub masking: Option<Arc<Masker>>,
    /// Bumped by each cancel request for this session.
    pub cancels: Arc<tokio::sync::watch::Sender<u64>>,
    /// The session's recording, when sessions are recorded.
    pub recorder: Option<Arc<portcullis_record::Recorder>>,
    /// Shared by the person's sessions: their long texts are parsed one
    /// at a time, so that one person's many sessions cannot take every
    /// core from the others.
    pub long_parses: Arc<std::sync::Mutex<()>>,
    /// The COPY FROM STDIN statements last sent.
    pub(crate) copying: Copying,
    /// The session's backend on the target (its process id and cancel
    /// key), ended with the session when the gateway ends it.
    pub backend_pid: i32,
    pub backend_secret: i32,
}

/// The COPY FROM STDIN statements last sent, with the decisions they went
/// under and the policy and grant generations they were decided at. A copy
/// takes rows for as long as the client sends them: while it does, a change
/// of policy or grants decides them again, and a copy no longer allowed is
/// failed, so that none of it is kept.
#[derive(Default)]
pub(crate) struct Copying {
    seen: Option<portcullis_gate::Generations>,
    copies: Vec<(portcullis_core::Action, Decision)>,
}

/// How many portals' parameters are kept for reviewers, and how much of each.
const MAX_PORTALS_SHOWN: usize = 64;
const MAX_PARAMS_SHOWN: usize = 100;
const MAX_PARAM_SHOWN_LEN: usize = 4096;
/// While a statement is held, the client is read only to see it leave; it
/// may send this much meanwhile.
const MAX_BUFFERED_WHILE_HELD: usize = 1 << 20;

impl Relay {
    /// Runs the session until either side ends it.
    pub async fn run(
        mut self,
        client: Stream,
        target: Stream,
        target_leftover: BytesMut,
    ) -> (Session, Ending, MaskCounts) {
        let (notices_tx, notices_rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            nonce: format!("{:016x}", rand::random::<u64>()),
            denials: Mutex::new(HashMap::new()),
            pending: AtomicUsize::new(0),
            cycles: Mutex::new(VecDeque::new()),
            end_reason: Mutex::new(None),
            end: tokio::sync::Notify::new(),
            results: Arc::new(ResultQueue::new(self.masking.take())),
            notices: notices_tx,
            recorder: self.recorder.clone(),
        });
        let token_left = self
            .session
            .principal
            .expires_at
            .saturating_sub(unix_now())
            .min(MAX_SESSION_SECONDS);
        let watcher = tokio::spawn(recheck_on_policy_change(
            self.gate.clone(),
            self.session.observer(),
            shared.clone(),
            (self.target.clone(), self.backend_pid, self.backend_secret),
        ));
        let (client_read, client_write) = client.split();
        // The target's writing half lives as long as the session: dropped early,
        // it would shut the socket's sending side, and the target would answer
        // that before the gateway's own reason for ending reached the client.
        let (target_read, mut target_write) = target.split();
        let results = Results::new(
            shared.results.clone(),
            self.gate.clone(),
            self.session.observer(),
            self.target.clone(),
            self.classifier.clone(),
        );
        let mut to_client = tokio::spawn(target_to_client(
            target_read,
            client_write,
            target_leftover,
            shared.clone(),
            self.session.target.name.clone(),
            results,
            notices_rx,
        ));
        let (ending, masked) = tokio::select! {
            ending = self.client_to_target(client_read, &mut target_write, &shared) => {
                // Let the target's last answers (to a Terminate, say) reach
                // the client, and its side tell what it masked.
                if matches!(ending, Ending::ClientTerminated) {
                    if let Ok(Ok((_, masked))) = tokio::time::timeout(std::time::Duration::from_secs(1), &mut to_client).await {
                        watcher.abort();
                        shared.results.schema_change_settled(&self.target);
                        return (self.session, ending, masked);
                    }
                }
                let reason = match &ending {
                    Ending::Error(PgError::ClientProtocol(message)) | Ending::Ended(message) => message.as_str(),
                    _ => "the client side ended",
                };
                shared.end_session(reason);
                let masked = match tokio::time::timeout(std::time::Duration::from_secs(1), &mut to_client).await {
                    Ok(Ok((_, masked))) => masked,
                    _ => {
                        to_client.abort();
                        MaskCounts::default()
                    }
                };
                (ending, masked)
            }
            joined = &mut to_client => match joined {
                Ok(done) => done,
                Err(e) => (Ending::Error(PgError::Internal(format!("session task failed: {e}"))), MaskCounts::default()),
            },
            // A session lives no longer than the token that opened it.
            _ = tokio::time::sleep(std::time::Duration::from_secs(token_left)) => {
                let reason = "the token of this session expired; log in again and reconnect";
                shared.ending(reason);
                self.target.terminate_backend(self.backend_pid, self.backend_secret).await;
                shared.end_session(reason);
                match tokio::time::timeout(std::time::Duration::from_secs(1), &mut to_client).await {
                    Ok(Ok(done)) => done,
                    _ => {
                        to_client.abort();
                        (Ending::Ended("token expired".into()), MaskCounts::default())
                    }
                }
            }
        };
        watcher.abort();
        // Whatever the session changed is committed or gone by now, or
        // soon: the catalog is read again.
        shared.results.schema_change_settled(&self.target);
        (self.session, ending, masked)
    }

    async fn client_to_target(
        &mut self,
        mut client: ReadSide,
        target: &mut WriteSide,
        shared: &Shared,
    ) -> Ending {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut poison_seq: u64 = 0;
        loop {
            // After a COPY FROM STDIN, nothing goes until the target says
            // whether it started: in copy-in it reads messages differently.
            let copying = shared.results.copy_in_known().await;
            // Bytes read while a statement was held may hold whole messages
            // already: those go first.
            if !has_complete_frame(&buf) {
                match client.read_buf(&mut buf).await {
                    Ok(0) => return Ending::ClientDisconnected,
                    Ok(_) => {}
                    Err(e) => return Ending::Error(PgError::ClientIo(e)),
                }
            }
            // Before any more of a copy goes, or its end: the target drops
            // what comes after the failure, and keeps none of the copy.
            if copying {
                if let Some(reason) = self.copy_revoked().await {
                    let mut fail = BytesMut::new();
                    build::copy_fail(&mut fail, &reason);
                    if let Err(e) = target.write_all(&fail).await {
                        return Ending::Error(PgError::TargetIo {
                            target: self.session.target.name.clone(),
                            source: e,
                        });
                    }
                }
            }
            let mut plan = Vec::new();
            {
                let mut prepared = shared.results.prepared();
                loop {
                    match split_frame(&mut buf) {
                        Ok(Some(frame)) if copying => match frame.tag {
                            b'd' => plan.push(forward(frame.raw)),
                            b'c' | b'f' => {
                                shared.results.copy_in_ends();
                                plan.push(forward(frame.raw));
                                // The same Query may hold another COPY.
                                break;
                            }
                            // Ignored by the target in copy-in, and not
                            // answered: the gateway does not send them.
                            b'S' | b'H' => {}
                            b'X' => {
                                plan.push(Planned::Terminate(frame.raw));
                                break;
                            }
                            other => {
                                return Ending::Error(PgError::ClientProtocol(format!(
                                    "message type `{}` sent during COPY FROM STDIN, which reads only CopyData, CopyDone and CopyFail; end the copy first",
                                    char::from(other)
                                )))
                            }
                        },
                        Ok(Some(frame)) => {
                            let terminate = frame.tag == b'X';
                            let planned = self.plan(frame, &mut prepared);
                            let copy_in = planned.may_start_copy_in();
                            plan.push(planned);
                            if terminate || copy_in {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return Ending::Error(PgError::ClientProtocol(e.to_string())),
                    }
                }
            }
            let plan = self.reveal_unseen_code(plan, shared).await;
            // One cycle (up to a Query or a Sync) at a time: a cycle with a
            // statement that may change something is decided only once the
            // target has answered every statement sent before it, so that
            // it never waits on the target's connection, decided under a
            // grant or policy that may be gone when it runs. (Within a
            // cycle, an error or a cancel skips the rest.) A Flush makes the
            // target answer an Execute of a cycle not yet synced.
            let mut rest = plan;
            while !rest.is_empty() {
                let cut = rest
                    .iter()
                    .position(ends_cycle)
                    .map_or(rest.len(), |i| i + 1);
                let later = rest.split_off(cut);
                let cycle = std::mem::replace(&mut rest, later);
                if cycle.iter().any(may_change) && shared.results.statements_pending() {
                    let mut flush = BytesMut::new();
                    build::flush(&mut flush);
                    if let Err(e) = target.write_all(&flush).await {
                        return Ending::Error(PgError::TargetIo {
                            target: self.session.target.name.clone(),
                            source: e,
                        });
                    }
                    // Dropped with the session if the target never answers.
                    shared.results.statements_answered().await;
                }
                let (out, terminated, refused) = self
                    .enforce(cycle, shared, &mut poison_seq, &mut client, &mut buf)
                    .await;
                if let Some(reason) = refused {
                    shared.ending(&reason);
                    self.target
                        .terminate_backend(self.backend_pid, self.backend_secret)
                        .await;
                    return Ending::Ended(reason);
                }
                // While the target skips to a Sync it answers nothing, so a
                // client that never sends one would grow the queue for ever.
                if shared.results.len() > MAX_UNANSWERED {
                    return Ending::Error(PgError::ClientProtocol(format!(
                        "more than {MAX_UNANSWERED} messages sent without their answers; send Sync"
                    )));
                }
                if let Err(e) = target.write_all(&out).await {
                    return Ending::Error(PgError::TargetIo {
                        target: self.session.target.name.clone(),
                        source: e,
                    });
                }
                if terminated {
                    let _ = target.shutdown().await;
                    return Ending::ClientTerminated;
                }
            }
        }
    }

    /// Why the copy under way may no longer run, if the policy or grants
    /// changed since it was decided and its COPY is not allowed under them.
    async fn copy_revoked(&mut self) -> Option<String> {
        let seen = self.copying.seen?;
        let now = self.gate.generations();
        if now == seen {
            return None;
        }
        let copying = std::mem::take(&mut self.copying);
        let held = copying.copies.iter().map(portcullis_gate::held);
        let why = match self.gate.first_fallen(&self.session, held).await {
            Ok(None) => None,
            Ok(Some((_, decision))) => Some(decision.reason),
            Err(e) => Some(format!("it could not be decided again ({e})")),
        };
        if let Some(why) = why {
            return Some(format!(
                "portcullis: the COPY is no longer allowed under the policy and access grants in force now: {why}"
            ));
        }
        self.copying = Copying {
            seen: Some(now),
            copies: copying.copies,
        };
        None
    }

    /// Keeps the decisions of the COPY FROM STDIN statements of what is
    /// about to be sent, decided at `seen`.
    fn copies(
        &mut self,
        seen: portcullis_gate::Generations,
        statements: &[StatementInfo],
        decisions: &[Decision],
    ) {
        let copies: Vec<_> = statements
            .iter()
            .zip(decisions)
            .filter(|(statement, _)| copies_in(statement))
            .map(|(statement, decision)| {
                (
                    portcullis_core::Action::Query(statement.clone()),
                    decision.clone(),
                )
            })
            .collect();
        if !copies.is_empty() {
            self.copying = Copying {
                seen: Some(seen),
                copies,
            };
        }
    }

    /// Reads one client message and says what it needs, updating what the
    /// session knows of prepared statements and portals as it goes.
    fn plan(&mut self, frame: Frame, prepared: &mut Prepared) -> Planned {
        match frame.tag {
            b'Q' => {
                let Some(sql) = message::query(frame.body()) else {
                    return malformed("query", Poison::Query);
                };
                let statements = self.statements(self.classify(sql), prepared, true);
                // The next Query runs whatever became of this one.
                prepared.fence();
                match statements {
                    Ok(Resolved { statements, .. }) if statements.is_empty() => forward(frame.raw),
                    Ok(Resolved {
                        statements,
                        undo,
                        parameters,
                    }) => {
                        // A statement's changes to prepared statements and
                        // cursors are kept once the target runs it.
                        Planned::Gated {
                            raw: frame.raw,
                            phase: "query",
                            statements,
                            undo,
                            poison: Poison::Query,
                            parameters,
                        }
                    }
                    Err((reason, code)) => refused("query", sql, reason, code, Poison::Query),
                }
            }
            b'P' => {
                let Some(parse) = message::parse(frame.body()) else {
                    return malformed("parse", Poison::Parse(String::new()));
                };
                let name = parse.statement.to_string();
                let poison = || Poison::Parse(name.clone());
                if name.len() > MAX_NAME_LEN {
                    return refused("parse", parse.query, long_name(&name), "42622", poison());
                }
                let classified = self.classify(parse.query);
                let manages_names = classified.as_ref().is_ok_and(|classified| {
                    classified.iter().any(|s| {
                        s.prepares.is_some()
                            || s.executes.is_some()
                            || s.objects != Default::default()
                    })
                });
                match self.statements(classified, prepared, false) {
                    // An empty query typing a parameter as a user's type:
                    // a Bind makes a value of it, running its checks, and
                    // there is no statement to decide.
                    Ok(Resolved { statements, .. })
                        if statements.is_empty()
                            && parse.parameter_types.iter().any(|oid| *oid >= FIRST_USER_OID) =>
                    {
                        refused(
                            "parse",
                            parse.query,
                            "an empty statement whose parameters are of types users made is refused: binding a value runs their code, and there is nothing to decide".into(),
                            "0A000",
                            poison(),
                        )
                    }
                    // An empty query: the name now runs nothing the
                    // gateway can check.
                    Ok(Resolved { statements, .. }) if statements.is_empty() => Planned::Forward {
                        raw: frame.raw,
                        defines: Some(prepared.set_statement(&name, None)),
                    },
                    Ok(Resolved { statements, .. }) if statements.len() > 1 => refused(
                        "parse",
                        parse.query,
                        "cannot insert multiple commands into a prepared statement".into(),
                        "42601",
                        poison(),
                    ),
                    // Statements that make or end prepared statements and
                    // cursors, or run one, take effect when a portal of this
                    // statement runs, which the gateway does not follow.
                    Ok(_) if manages_names => {
                        refused(
                            "parse",
                            parse.query,
                            "PREPARE, EXECUTE, DEALLOCATE, DECLARE, FETCH, MOVE, CLOSE and DISCARD are taken through a simple query only, not as a prepared statement".into(),
                            "0A000",
                            poison(),
                        )
                    }
                    Ok(Resolved { mut statements, .. }) => {
                        // Recorded now and taken back if the target refuses
                        // it (a named statement that exists, a query that
                        // fails analysis): see `prepared.rs`.
                        statements.truncate(1);
                        let user_types: Vec<u32> = parse
                            .parameter_types
                            .iter()
                            .copied()
                            .filter(|oid| *oid >= FIRST_USER_OID)
                            .collect();
                        if !user_types.is_empty() {
                            for statement in &mut statements {
                                Arc::make_mut(&mut statement.lineage).parameter_types =
                                    user_types.clone();
                            }
                        }
                        let defined = prepared.set_statement(&name, statements.first().cloned());
                        Planned::Gated {
                            raw: frame.raw,
                            phase: "parse",
                            statements,
                            undo: vec![vec![defined]],
                            poison: poison(),
                            parameters: Some(Vec::new()),
                        }
                    }
                    Err((reason, code)) => refused("parse", parse.query, reason, code, poison()),
                }
            }
            b'B' => {
                let Some(bind) = message::bind(frame.body()) else {
                    return malformed("bind", Poison::Execute);
                };
                if bind.portal.len() > MAX_NAME_LEN || bind.statement.len() > MAX_NAME_LEN {
                    let name = if bind.portal.len() > MAX_NAME_LEN { bind.portal } else { bind.statement };
                    return refused("bind", "", long_name(name), "42622", Poison::Execute);
                }
                if prepared.statement_unsure(bind.statement) {
                    return refused("bind", "", unsure_statement(bind.statement), "26000", Poison::Execute);
                }
                // The values are kept with the portal, taken back with it
                // if the target refuses the Bind; for so many portals at
                // most, past which they cannot be shown.
                let parameters = (prepared.portals_kept() < MAX_PORTALS_SHOWN)
                    .then(|| {
                        message::bind_parameters(frame.body(), MAX_PARAMS_SHOWN, MAX_PARAM_SHOWN_LEN)
                    })
                    .flatten();
                let bound = Bound {
                    statement: prepared.statement(bind.statement).cloned(),
                    parameters,
                    declared: false,
                };
                let defines = Some(prepared.set_portal(bind.portal, Some(bound)));
                Planned::Forward {
                    raw: frame.raw,
                    defines,
                }
            }
            b'E' => {
                let Some(portal) = message::execute(frame.body()) else {
                    return malformed("execute", Poison::Execute);
                };
                if portal.len() > MAX_NAME_LEN {
                    return refused("execute", "", long_name(portal), "42622", Poison::Execute);
                }
                match prepared.portal(portal) {
                    Portal::Bound(statement, parameters) => Planned::Gated {
                        raw: frame.raw,
                        phase: "execute",
                        statements: vec![statement.clone()],
                        undo: Vec::new(),
                        poison: Poison::Execute,
                        parameters: parameters.map(<[_]>::to_vec),
                    },
                    // Bound from a statement the gateway does not know, or
                    // being closed by a close the target may yet skip: it
                    // cannot say what would run.
                    other @ (Portal::Unchecked | Portal::Closing | Portal::Unsure) => {
                        let (reason, code) = unknown_portal(portal, &other);
                        refused("execute", "", reason, code, Poison::Execute)
                    }
                    // Not seen bound or declared: none (the target says
                    // so), or a cursor a function or DO block opened, which
                    // runs at each fetch what it was opened for: decided as
                    // an SQL FETCH of it (see `resolve`).
                    Portal::Unknown if portal.is_empty() => forward(frame.raw),
                    Portal::Unknown => {
                        let fetch = format!("FETCH ALL FROM \"{}\"", portal.replace('"', "\"\""));
                        match self.statements(self.classify(&fetch), prepared, false) {
                            // What it was opened with is not known: a
                            // reviewer cannot be shown it.
                            Ok(Resolved { statements, .. }) => Planned::Gated {
                                raw: frame.raw,
                                phase: "execute",
                                statements,
                                undo: Vec::new(),
                                poison: Poison::Execute,
                                parameters: None,
                            },
                            Err((reason, code)) => {
                                refused("execute", "", reason, code, Poison::Execute)
                            }
                        }
                    }
                }
            }
            b'C' | b'D' => {
                // Close and Describe name what they act on alike.
                let phase = if frame.tag == b'C' { "close" } else { "describe" };
                if let Some((_, name)) = message::close(frame.body()) {
                    if name.len() > MAX_NAME_LEN {
                        return refused(phase, "", long_name(name), "42622", Poison::Execute);
                    }
                }
                if frame.tag == b'D' {
                    return forward(frame.raw);
                }
                // Removed at once: should the target not close it, a later
                // use is refused as unknown rather than judged by a stale
                // statement.
                let defines = message::close(frame.body()).and_then(|(kind, name)| match kind {
                    b'S' => Some(prepared.set_statement(name, None)),
                    b'P' => Some(prepared.set_portal(name, None)),
                    _ => None,
                });
                Planned::Forward {
                    raw: frame.raw,
                    defines,
                }
            }
            b'S' => {
                prepared.fence();
                forward(frame.raw)
            }
            b'H' | b'd' | b'c' | b'f' => forward(frame.raw),
            b'X' => Planned::Terminate(frame.raw),
            // A fast-path call is its own cycle, answered by ReadyForQuery
            // like a Query: refuse it the same way.
            b'F' => refused(
                "function-call",
                "",
                "fast-path function calls are not allowed through the gateway (call the function in a query)".into(),
                "42501",
                Poison::Query,
            ),
            other => refused(
                "protocol",
                "",
                format!("unexpected message type `{}`", char::from(other)),
                "08P01",
                Poison::Query,
            ),
        }
    }

    /// Classifies `sql`; a long text off the worker threads, so that the
    /// other sessions go on meanwhile, and one at a time for its person.
    fn classify(&self, sql: &str) -> Result<Arc<[StatementInfo]>, portcullis_sql::ClassifyError> {
        if let Some(hit) = self.classifier.cached(sql) {
            Ok(hit)
        } else if sql.len() > portcullis_sql::LONG_QUERY_LEN {
            off_the_workers(|| {
                let _mine = self
                    .long_parses
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                self.classifier.classify(sql)
            })
        } else {
            self.classifier.classify(sql)
        }
    }

    /// Resolves the SQL `EXECUTE`s of a classified query text, each against
    /// the prepared statements as the statements before it in the same text
    /// leave them (`deallocate r; prepare r as ...; execute r`). With
    /// `apply`, each statement's changes to prepared statements and cursors
    /// are made as it is read, and returned to be undone if it does not run.
    /// An error is a refusal (a reason and its SQLSTATE), and undoes them.
    fn statements(
        &self,
        classified: Result<Arc<[StatementInfo]>, portcullis_sql::ClassifyError>,
        prepared: &mut Prepared,
        apply: bool,
    ) -> Result<Resolved, Refusal> {
        let classified = classified.map_err(|e| {
            (
                format!("the gateway refuses what it cannot parse: {e}"),
                "42601",
            )
        })?;
        let mut statements = Vec::with_capacity(classified.len());
        let mut undo: Vec<Vec<Change>> = Vec::with_capacity(classified.len());
        let mut parameters = Some(Vec::new());
        let mut portals_with_values = 0;
        for statement in classified.iter() {
            // A FETCH of a portal bound through the protocol runs its
            // statement with the values it was bound with: a reviewer sees
            // them, or, when several portals' values would be shown as
            // one list, none (and is not asked).
            if let Some(name) = &statement.objects.fetches {
                if let Portal::Bound(_, values) = prepared.portal(name) {
                    match values {
                        Some([]) => {}
                        Some(values) if portals_with_values == 0 => {
                            portals_with_values += 1;
                            parameters = Some(values.to_vec());
                        }
                        _ => parameters = None,
                    }
                }
            }
            match resolve(statement, prepared) {
                Ok(resolved) => statements.push(resolved),
                Err(refusal) => {
                    prepared.undo(undo.into_iter().flatten());
                    return Err(refusal);
                }
            }
            undo.push(if apply {
                prepared.apply(statement)
            } else {
                Vec::new()
            });
        }
        // The values are shown for the query as a whole: with other
        // statements beside the FETCH, a reviewer of one of those would see
        // them as its own (found in attack: `execute s1(4507 - 4500); fetch
        // all from p1` showed p1's 4500 for the update that set 7).
        if portals_with_values > 0 && statements.len() > 1 {
            parameters = None;
        }
        Ok(Resolved {
            statements,
            undo,
            parameters,
        })
    }

    /// Makes each statement that runs code its text does not show (a
    /// view's definition, a user's operator, a domain's check: see
    /// `hidden.rs`) the call it is, so that it is decided, held in flight
    /// and decided again as one. The catalog is read for it when the last
    /// reading is stale; a statement that needs it when it cannot be read
    /// is refused.
    ///
    /// What the session's own transaction made (DDL, a DO block, a call
    /// that may have run either) is not in the catalog the gateway reads
    /// until it commits: until then, every statement that names something
    /// is a call.
    async fn reveal_unseen_code(&self, plan: Vec<Planned>, shared: &Shared) -> Vec<Planned> {
        let gated = || {
            plan.iter()
                .filter_map(|item| match item {
                    Planned::Gated { statements, .. } => Some(statements),
                    _ => None,
                })
                .flatten()
        };
        if !gated().any(hidden::names_code) {
            return plan;
        }
        let snapshot = self
            .target
            .catalog
            .snapshot(&self.target, |snapshot| {
                gated().any(|s| {
                    lacks_relations(snapshot, &s.lineage.relations)
                        || snapshot.lacks_names(&s.lineage)
                })
            })
            .await;
        let mut unseen_changes = shared.results.changes_unseen();
        let mut plan = plan;
        for item in &mut plan {
            let Planned::Gated { statements, .. } = item else {
                continue;
            };
            let mut unreadable = None;
            for statement in statements.iter_mut() {
                if unseen_changes && hidden::names_code(statement) {
                    portcullis_sql::calls_unseen(statement, []);
                } else if hidden::names_code(statement) {
                    match &snapshot {
                        Ok(snapshot) => {
                            let unseen = hidden::unseen_code(statement, snapshot, &self.classifier);
                            if !unseen.is_empty() {
                                portcullis_sql::calls_unseen(statement, unseen.functions);
                            }
                        }
                        Err(e) => {
                            unreadable = Some((statement.text.clone(), e.to_string()));
                            break;
                        }
                    }
                }
                unseen_changes |= may_make_code(statement);
            }
            if let (
                Some((text, error)),
                Planned::Gated {
                    undo,
                    phase,
                    poison,
                    ..
                },
            ) = (unreadable, &mut *item)
            {
                shared
                    .results
                    .prepared()
                    .undo(std::mem::take(undo).into_iter().flatten());
                let (phase, poison) = (*phase, poison.clone());
                *item = Planned::Refused {
                    phase,
                    text,
                    reason: format!("the gateway reads the target's catalog to see what a statement runs that its text does not show (views, operators, domain checks), and cannot: {error}; try again"),
                    code: "58000",
                    poison,
                };
            }
        }
        plan
    }

    /// With masking on, refuses statements that would carry covered values
    /// out another way than in a result, where they would not be masked:
    /// storing them in another column (`update customers set name =
    /// national_id`), or passing them to functions the gateway cannot
    /// follow (`pg_notify`, `setval`, advisory locks).
    async fn refuse_masked_leaks(&self, plan: Vec<Planned>, shared: &Shared) -> Vec<Planned> {
        let Some(masker) = shared.results.masker() else {
            return plan;
        };
        // Any function call: a user's function may carry a built-in's
        // name; and an operator a user made runs a function too.
        let cached = self.target.catalog.cached();
        let covers_columns = masker.covers_columns();
        let suspicious = |statement: &StatementInfo| {
            statement.lineage.written.is_some()
                || (covers_columns
                    && !(statement.lineage.conditions.is_empty()
                        && statement.lineage.computed.is_empty()))
                || calls_functions(statement)
                || !statement.functions.is_empty()
                || statement.lineage.catalog_types
                || (covers_columns
                    && (reads_counters(statement).is_some()
                        || statement.lineage.counts_planning
                        || !statement.settings.is_empty()))
                || cached
                    .as_ref()
                    .is_none_or(|snapshot| !snapshot.user_operators.is_empty())
        };
        let relations: Vec<RelationRef> = plan
            .iter()
            .filter_map(|item| match item {
                Planned::Gated { statements, .. } => Some(statements),
                _ => None,
            })
            .flatten()
            .filter(|s| suspicious(s))
            .flat_map(|s| s.lineage.relations.iter().cloned())
            .collect();
        if !plan.iter().any(|item| {
            matches!(item, Planned::Gated { statements, .. } if statements.iter().any(&suspicious))
        }) {
            return plan;
        }
        let snapshot = self
            .target
            .catalog
            .snapshot(&self.target, |snapshot| {
                lacks_relations(snapshot, &relations)
            })
            .await;
        let planner = snapshot.as_ref().ok().map(|snapshot| Planner {
            masker: &masker,
            snapshot,
            classifier: &self.classifier,
        });
        let leak = |statement: &StatementInfo| -> Option<String> {
            if !suspicious(statement) {
                return None;
            }
            let Some(planner) = &planner else {
                return Some("the target's catalog, which masking needs, cannot be read".into());
            };
            let calls = planner.statement_calls(statement);
            // A DO block or a procedure reads and writes what its code says,
            // which the gateway cannot see.
            if (statement
                .kinds
                .contains(&portcullis_core::StatementKind::Other)
                || statement.command == "CALL")
                && masker.covers_columns()
            {
                return Some(
                    "a DO block or a procedure can read masked columns where the gateway cannot see it; it is refused while masking applies".into(),
                );
            }
            if let Some(rule) = planner.written_rule(&statement.lineage, calls) {
                return Some(format!(
                    "the statement stores values computed from data that mask rule `{}` covers, where they would be read back unmasked",
                    masker.rule_id(rule)
                ));
            }
            if covers_columns
                && !(statement.lineage.conditions.is_empty()
                    && statement.lineage.computed.is_empty())
            {
                if let Some(relation) = planner.unknown_relation(&statement.lineage) {
                    return Some(format!(
                        "the statement chooses rows of `{}`, which the gateway does not know (yet), so it cannot tell whether they hold masked values; if it was made earlier in the same query, send that statement on its own first",
                        relation.name
                    ));
                }
            }
            if let Some((column, rule)) = planner.condition_rule(&statement.lineage) {
                return Some(format!(
                    "the statement filters, joins, groups, orders or counts rows by `{column}`, which mask rule `{}` covers: the rows would tell its values; use it in the output list only, or ask for the permission to see it unmasked",
                    masker.rule_id(rule)
                ));
            }
            if let Some((column, rule)) = planner.computed_rule(&statement.lineage) {
                return Some(format!(
                    "the statement computes over `{column}`, which mask rule `{}` covers: whether and where a computation over a value fails would tell it; select the column as it is, or ask for the permission to see it unmasked",
                    masker.rule_id(rule)
                ));
            }
            // The planner's statistics and other sessions' statements are
            // masked whole: which of their rows come back would tell what
            // the masks hide as well as their values.
            if covers_columns {
                if let Some(function) = statement.functions.iter().find(|f| shows_other_sessions(f))
                {
                    return Some(format!(
                        "the statement calls `{function}`, which shows other sessions' statements with the values in them; it is refused while mask rules apply to you"
                    ));
                }
                // The server's own log and debug output (`trace_sort`'s
                // memory per sort, sent once a cursor closes) measures what
                // statements computed from covered values.
                if let Some(setting) = statement.settings.iter().find(|s| {
                    s.as_str() == "client_min_messages"
                        || s.starts_with("trace_")
                        || s.starts_with("debug_")
                        || s.starts_with("log_")
                }) {
                    return Some(format!(
                        "the statement changes `{setting}`: the server's log and debug messages (such as the memory each sort used) measure what statements computed from masked data; they are refused while mask rules apply to you"
                    ));
                }
                // Found in attack: `enable_seqscan = off` made the planner
                // answer `select email from customers` from the email
                // index, whose rows come in email order.
                if let Some(setting) = statement.settings.iter().find(|s| planner_setting(s)) {
                    return Some(format!(
                        "the statement changes `{setting}`, which steers the planner: a scan it chooses through an index on a masked column returns rows in that column's order, which tells its values; planner settings are refused while mask rules apply to you"
                    ));
                }
                if statement.lineage.counts_planning {
                    return Some("the statement counts the buffers or memory its planning used, which shows what earlier statements left in the catalog's caches, and what one did over masked data would tell the masked values; EXPLAIN without BUFFERS is allowed".into());
                }
                if let Some(counters) = reads_counters(statement) {
                    return Some(format!(
                        "the statement reads `{counters}`: statistics counters show at once what earlier statements did (the catalog lookups they made, the rows they read), and what one did over masked data would tell the masked values; they are refused while mask rules apply to you"
                    ));
                }
                if let Some(column) = sample_condition(&statement.lineage) {
                    return Some(format!(
                        "the statement filters, joins, groups, orders or counts rows of the planner's statistics or of other sessions' statements by `{column}`: they hold values that mask rules cover, and the rows would tell them; choose their rows by schema, table, column or process only"
                    ));
                }
                if let Some(column) = sample_computation(&statement.lineage) {
                    return Some(format!(
                        "the statement computes over `{column}` of the planner's statistics or of other sessions' statements: they hold values that mask rules cover, and whether and where a computation over them fails would tell them; select it as it is"
                    ));
                }
                // Whether, and with what, a function that is not immutable
                // runs leaves traces a later statement reads: catalog
                // lookups keyed by its arguments (`to_regclass`,
                // `format_type`) in the statistics counters, the random
                // sequence. Covered values deciding that (in a CASE, a
                // BETWEEN, a NULL given to a strict function, an argument)
                // would tell themselves.
                let traced = match statement.functions.iter().find(|f| leaves_traces(f)) {
                    Some(function) => Some(format!("calls `{function}`")),
                    None => statement
                        .lineage
                        .catalog_types
                        .then(|| "casts to a catalog type (`regclass`, `regtype`, ...)".into()),
                };
                // (Users' code is refused below, with what it is.)
                if let Some(traced) = traced.filter(|_| !calls) {
                    let rule = planner.relations_rule(&statement.lineage).or_else(|| {
                        reads_statistics(&statement.lineage)
                            .then(|| masker.any_column_rule())
                            .flatten()
                    });
                    if let Some(rule) = rule {
                        return Some(format!(
                            "the statement {traced} over data that mask rule `{}` covers: whether and how that runs leaves traces (catalog lookups, statistics counters, the random sequence) that would tell the masked values; while mask rules apply to you, use only immutable functions with such tables, or ask for the permission to see the values unmasked",
                            masker.rule_id(rule)
                        ));
                    }
                }
            }
            // SQL run from text (`query_to_xml`) may read any table.
            let reads_anything = statement
                .functions
                .iter()
                .any(|f| portcullis_sql::runs_query_text_function(f));
            let rule = calls
                .then(|| {
                    planner.relations_rule(&statement.lineage).or_else(|| {
                        (reads_anything || reads_statistics(&statement.lineage))
                            .then(|| masker.any_column_rule())
                            .flatten()
                    })
                })
                .flatten()?;
            Some(format!(
                "the statement calls functions the gateway cannot follow over data that mask rule `{}` covers",
                masker.rule_id(rule)
            ))
        };
        plan.into_iter()
            .map(|item| match item {
                Planned::Gated {
                    raw,
                    phase,
                    statements,
                    undo,
                    poison,
                    parameters,
                } => match statements.iter().find_map(&leak) {
                    None => Planned::Gated {
                        raw,
                        phase,
                        statements,
                        undo,
                        poison,
                        parameters,
                    },
                    Some(reason) => {
                        shared.results.prepared().undo(undo.into_iter().flatten());
                        Planned::Refused {
                            phase,
                            text: statements
                                .first()
                                .map(|s| s.text.clone())
                                .unwrap_or_default(),
                            reason,
                            code: "42501",
                            poison,
                        }
                    }
                },
                other => other,
            })
            .collect()
    }

    /// Asks the Gate about every planned message, then builds the bytes for
    /// the target: allowed messages as they came, refused ones poisoned.
    async fn enforce(
        &mut self,
        plan: Vec<Planned>,
        shared: &Shared,
        poison_seq: &mut u64,
        client: &mut ReadSide,
        buf: &mut BytesMut,
    ) -> (BytesMut, bool, Option<String>) {
        let plan = self.refuse_masked_leaks(plan, shared).await;
        // Read before deciding: a change in between is seen by a copy.
        let seen = self.gate.generations();
        let mut decisions = self.decide(&plan).await;
        let mut holds = Holds::default();
        if let Ok(decisions) = decisions.as_mut() {
            let held = decisions
                .iter()
                .any(|d| d.effect == portcullis_core::Effect::Hold)
                .then(|| decisions.clone());
            self.resolve_holds(&plan, decisions, &mut holds, shared, client, buf)
                .await;
            // Approved after a wait: what runs is decided again under the
            // policy and grants in force now, the riders too.
            if let Some(decided) = held.filter(|_| !holds.approved.is_empty()) {
                match self.decide(&plan).await {
                    Ok(now) => {
                        for (i, ((then, now), decision)) in decided
                            .iter()
                            .zip(&now)
                            .zip(decisions.iter_mut())
                            .enumerate()
                        {
                            if then.effect == portcullis_core::Effect::Deny {
                                continue;
                            }
                            if let Err(why) = portcullis_gate::still_allowed(then, now) {
                                decision.effect = portcullis_core::Effect::Deny;
                                holds
                                    .refusals
                                    .insert(i, error_bytes("42501", &why, None, None));
                            }
                        }
                    }
                    Err(e) => {
                        for i in 0..decisions.len() {
                            holds
                                .refusals
                                .insert(i, error_bytes("58000", &e.to_string(), None, None));
                        }
                        decisions
                            .iter_mut()
                            .for_each(|d| d.effect = portcullis_core::Effect::Deny);
                    }
                }
            }
        }
        let mut out = BytesMut::new();
        let mut terminated = false;
        let mut changes_unseen = false;
        let mut sent: Vec<Decided> = Vec::new();
        let mut next_decision = 0usize;
        let masker = shared.results.masker();
        let mut expects = Vec::new();
        for item in plan {
            let ends_cycle = ends_cycle(&item);
            match item {
                Planned::Forward { raw, defines } => {
                    match raw.first() {
                        Some(b'P' | b'B' | b'C') => expects.push(Expect::Complete {
                            change: defines,
                            closes_portal: closes_portal(&raw),
                        }),
                        Some(b'S') => expects.push(Expect::Sync),
                        Some(b'D') => expects.push(Expect::Describe),
                        Some(b'Q') => {
                            expects.extend([Expect::Query(VecDeque::new()), Expect::QueryEnd])
                        }
                        // A portal the gateway did not see bound: a cursor
                        // opened by an SQL DECLARE. What it returns is
                        // described by the target, not by its text.
                        Some(b'E') => {
                            let described = describe_portal(&mut out, &raw, masker.is_some());
                            if described {
                                expects.push(Expect::InjectedDescribe);
                            }
                            expects.push(Expect::Execute {
                                source: opaque_source(),
                                described,
                                copy_in: false,
                                decided: None,
                            });
                        }
                        _ => {}
                    }
                    out.extend_from_slice(&raw)
                }
                Planned::Terminate(raw) => {
                    out.extend_from_slice(&raw);
                    terminated = true;
                    break;
                }
                Planned::Refused {
                    reason,
                    code,
                    poison,
                    phase,
                    text,
                } => {
                    // Refused anyway; a recording failure ends the session.
                    let refused = recorded_statement(phase, &text, "deny", &[], &reason);
                    let _ = self.record(refused, Some(&[]), shared);
                    next_decision += 1;
                    expects.push(poison_expect(&poison));
                    let error = error_bytes(code, &format!("refused: {reason}"), None, None);
                    poison_into(&mut out, shared, poison_seq, poison.kind(), error);
                }
                Planned::Gated {
                    raw,
                    phase,
                    statements,
                    undo,
                    poison,
                    parameters,
                } => {
                    let range = next_decision..next_decision + statements.len();
                    next_decision = range.end;
                    let refusal = match &decisions {
                        Err(e) => Some(error_bytes("58000", &e.to_string(), None, None)),
                        Ok(decisions) => decisions
                            .get(range.clone())
                            .unwrap_or(&[])
                            .iter()
                            .enumerate()
                            .find(|(_, d)| !d.is_allowed())
                            .map(
                                |(idx, d)| match holds.refusals.remove(&(range.start + idx)) {
                                    Some(refusal) => refusal,
                                    None => denial_bytes(d, idx, statements.len()),
                                },
                            )
                            .or_else(|| {
                                // INVARIANT: one decision per statement; a
                                // short answer is treated as a refusal.
                                (decisions.len() < range.end).then(|| {
                                    error_bytes(
                                        "XX000",
                                        "internal error: missing decision",
                                        None,
                                        None,
                                    )
                                })
                            }),
                    };
                    // An approved statement goes only once its execution is
                    // in the audit log.
                    let refusal = match refusal {
                        Some(refusal) => Some(refusal),
                        None => {
                            let mut failed = None;
                            for (_, request) in
                                holds.approved.iter().filter(|(i, _)| range.contains(i))
                            {
                                if let Err(e) = self
                                    .gate
                                    .approved_statement_runs(&self.session, *request)
                                    .await
                                {
                                    failed = Some(error_bytes("58000", &e.to_string(), None, None));
                                    break;
                                }
                            }
                            failed
                        }
                    };
                    // Recorded before it goes: a statement the recording
                    // cannot hold is refused, not run unrecorded.
                    let effect = if refusal.is_some() { "deny" } else { "allow" };
                    let parameters = parameters.as_deref();
                    let recorded = match &decisions {
                        Ok(decisions) => statements
                            .iter()
                            .zip(decisions.get(range.clone()).unwrap_or(&[]))
                            .try_for_each(|(statement, decision)| {
                                self.record(
                                    recorded_statement(
                                        phase,
                                        &statement.text,
                                        effect,
                                        &decision.policies,
                                        &decision.reason,
                                    ),
                                    parameters,
                                    shared,
                                )
                            }),
                        Err(e) => statements.iter().try_for_each(|statement| {
                            let denied = recorded_statement(
                                phase,
                                &statement.text,
                                "deny",
                                &[],
                                &e.to_string(),
                            );
                            self.record(denied, parameters, shared)
                        }),
                    };
                    let refusal = match (refusal, recorded) {
                        (Some(refusal), _) => Some(refusal),
                        (None, Ok(())) => None,
                        (None, Err(e)) => Some(error_bytes("58030", &e, None, None)),
                    };
                    if refusal.is_none() && matches!(poison, Poison::Query) {
                        self.note_reason(&statements);
                    }
                    if refusal.is_none()
                        && !matches!(poison, Poison::Parse(_))
                        && statements.iter().any(may_make_code)
                    {
                        changes_unseen = true;
                    }
                    if refusal.is_none()
                        && !matches!(poison, Poison::Parse(_))
                        && statements.iter().any(changes_schema)
                    {
                        shared.results.schema_change_sent(&self.target);
                        if statements.iter().any(|s| {
                            s.kinds.contains(&portcullis_core::StatementKind::Other)
                                || crate::catalog::makes_code(&s.command)
                        }) {
                            self.target.catalog.code_may_be_made();
                        }
                    }
                    if refusal.is_none() && !matches!(poison, Poison::Parse(_)) {
                        if let Ok(decisions) = &decisions {
                            self.copies(
                                seen,
                                &statements,
                                decisions.get(range.clone()).unwrap_or(&[]),
                            );
                        }
                    }
                    let decided: Vec<Option<Decided>> = match &decisions {
                        Ok(decisions)
                            if refusal.is_none() && !statements.iter().all(only_reads) =>
                        {
                            statements
                                .iter()
                                .zip(decisions.get(range.clone()).unwrap_or(&[]))
                                .map(|(statement, decision)| in_flight(statement, decision))
                                .collect()
                        }
                        _ => Vec::new(),
                    };
                    sent.extend(decided.iter().flatten().cloned());
                    let mut decided = decided.into_iter();
                    match (refusal, &poison) {
                        (None, Poison::Query) => {
                            let mut undo = undo.into_iter();
                            let count = statements.len();
                            let statements = statements
                                .iter()
                                .enumerate()
                                .map(|(i, statement)| {
                                    let mut source = source_of(statement);
                                    // Outside a transaction block, a query
                                    // of several statements commits while
                                    // its last one ends, and the commit runs
                                    // what cursors WITH HOLD left: what it
                                    // reports may come from anywhere (found
                                    // in attack).
                                    source.commits |= count > 1 && i + 1 == count;
                                    QueryStatement {
                                        source,
                                        undo: undo.next().unwrap_or_default(),
                                        copy_in: copies_in(statement),
                                        decided: decided.next().flatten(),
                                    }
                                })
                                .collect();
                            expects.extend([Expect::Query(statements), Expect::QueryEnd]);
                            out.extend_from_slice(&raw);
                        }
                        (None, Poison::Execute) => {
                            let described = describe_portal(&mut out, &raw, masker.is_some());
                            if described {
                                expects.push(Expect::InjectedDescribe);
                            }
                            if let Some(statement) = statements.first() {
                                expects.push(Expect::Execute {
                                    source: source_of(statement),
                                    described,
                                    copy_in: copies_in(statement),
                                    decided: decided.next().flatten(),
                                });
                            }
                            out.extend_from_slice(&raw);
                        }
                        (None, Poison::Parse(_)) => {
                            expects.push(Expect::Complete {
                                change: undo.into_iter().flatten().next(),
                                closes_portal: false,
                            });
                            out.extend_from_slice(&raw);
                        }
                        (Some(error), _) => {
                            // The target never sees it: nothing it defined exists.
                            shared.results.prepared().undo(undo.into_iter().flatten());
                            expects.push(poison_expect(&poison));
                            poison_into(&mut out, shared, poison_seq, poison.kind(), error)
                        }
                    }
                }
            }
            if ends_cycle {
                if let Ok(mut cycles) = shared.cycles.lock() {
                    cycles.push_back(*poison_seq);
                }
            }
        }
        // INVARIANT: pushed before the bytes are written, so the target side
        // finds them when the answers arrive.
        shared.results.push(expects);
        // After the push: the target's idle answer to an earlier cycle
        // must not end it.
        if changes_unseen {
            shared.results.unseen_change_sent();
        }
        // Where the session's watcher finds them from now on. A change of
        // policy or grants it acted on since they were decided may have
        // missed them: they are decided again here.
        let refused = if !sent.is_empty() && self.gate.generations() != seen {
            no_longer_allowed(&self.gate, &self.session, &sent).await
        } else {
            None
        };
        (out, terminated, refused)
    }
}

/// A statement about to be sent with the decision it went under, kept while
/// the target has not answered it; `None` for one that only reads, which is
/// left to finish as a read already running is, and for a COPY FROM STDIN,
/// which takes no row the client sends after such a change (`Copying`).
fn in_flight(statement: &StatementInfo, decision: &Decision) -> Option<Decided> {
    if only_reads(statement) || copies_in(statement) {
        return None;
    }
    Some(Arc::new((
        portcullis_core::Action::Query(statement.clone()),
        decision.clone(),
    )))
}

/// Whether a planned message ends a cycle: a Query, or a Sync.
fn ends_cycle(item: &Planned) -> bool {
    match item {
        Planned::Forward { raw, .. } => matches!(raw.first(), Some(b'S' | b'Q')),
        Planned::Gated { poison, .. } | Planned::Refused { poison, .. } => {
            matches!(poison, Poison::Query)
        }
        Planned::Terminate(_) => false,
    }
}

/// Whether a planned message runs a statement that may change something.
fn may_change(item: &Planned) -> bool {
    matches!(item, Planned::Gated { statements, .. } if !statements.iter().all(only_reads))
}

/// A statement that changes nothing on the target.
fn only_reads(statement: &StatementInfo) -> bool {
    use portcullis_core::StatementKind;
    !statement.writes
        && statement
            .kinds
            .iter()
            .all(|kind| *kind == StatementKind::Select)
}

/// Why the session must end, if a statement it sent and the target has not
/// run yet is no longer allowed under the policy and grants in force now.
async fn no_longer_allowed(gate: &Gate, session: &Session, sent: &[Decided]) -> Option<String> {
    let held = sent.iter().map(Arc::as_ref).map(portcullis_gate::held);
    match gate.first_fallen(session, held).await {
        Ok(None) => None,
        Ok(Some((action, now))) => {
            let text = match action {
                portcullis_core::Action::Query(statement) => statement.text.as_str(),
                _ => "",
            };
            Some(format!(
                "`{text}`, sent before the policy or access grants changed and not yet run by the target, is no longer allowed: {}; the session is ended so that it does not run",
                now.reason
            ))
        }
        Err(e) => Some(format!("the session is ended: {e}")),
    }
}

/// What the reviewers decided for a batch's held statements, by decision
/// index.
#[derive(Default)]
struct Holds {
    /// Refusals that replace a decision's own: a reviewer's denial, an
    /// expired or withdrawn request.
    refusals: HashMap<usize, Bytes>,
    /// Approved: the request id.
    approved: Vec<(usize, i64)>,
}

impl Relay {
    /// Turns each held decision into an allow (approved) or a refusal
    /// (denied, expired, withdrawn), waiting for the reviewers. A Parse of a
    /// held statement goes ahead (preparing runs nothing); its Execute is
    /// what waits, with its parameters.
    async fn resolve_holds(
        &mut self,
        plan: &[Planned],
        decisions: &mut [portcullis_core::Decision],
        holds: &mut Holds,
        shared: &Shared,
        client: &mut ReadSide,
        buf: &mut BytesMut,
    ) {
        use portcullis_core::Effect;
        if !decisions.iter().any(|d| d.effect == Effect::Hold) {
            return;
        }
        // What runs with a held statement once it is approved: the
        // reviewer sees all of it. One simple Query as it was written;
        // otherwise (a pipeline of Parse, Bind, Execute) each statement's
        // text, a statement prepared and run in it once.
        let gated: Vec<(&Bytes, &str, &[StatementInfo])> = plan
            .iter()
            .filter_map(|item| match item {
                Planned::Gated {
                    raw,
                    phase,
                    statements,
                    ..
                } => Some((raw, *phase, statements.as_slice())),
                _ => None,
            })
            .collect();
        let batch = match gated.as_slice() {
            [(raw, "query", statements)] if statements.len() > 1 => {
                message::query(raw.get(5..).unwrap_or_default()).map(str::to_string)
            }
            _ => {
                let mut texts: Vec<&str> = gated
                    .iter()
                    .flat_map(|(_, _, statements)| statements.iter().map(|s| s.text.as_str()))
                    .collect();
                texts.dedup();
                (texts.len() > 1).then(|| texts.join(";\n"))
            }
        };
        let mut next = 0usize;
        for item in plan {
            let (phase, statements, parameters) = match item {
                Planned::Gated {
                    phase,
                    statements,
                    parameters,
                    ..
                } => (*phase, statements, parameters),
                Planned::Refused { .. } => {
                    next += 1;
                    continue;
                }
                Planned::Forward { .. } | Planned::Terminate(_) => continue,
            };
            let range = next..next + statements.len();
            next = range.end;
            let Some(item_decisions) = decisions.get_mut(range.clone()) else {
                continue;
            };
            // A message with a denied statement is refused whatever the
            // reviewers say: nobody is asked.
            if item_decisions.iter().any(|d| d.effect == Effect::Deny) {
                continue;
            }
            for (offset, (decision, statement)) in
                item_decisions.iter_mut().zip(statements).enumerate()
            {
                if decision.effect != Effect::Hold {
                    continue;
                }
                // Preparing runs nothing (a Parse, an SQL PREPARE): what is
                // held is each execution.
                if phase == "parse" || statement.prepares.is_some() {
                    decision.effect = Effect::Allow;
                    continue;
                }
                // A reviewer approves what they can see in full, or nothing.
                let Some(parameters) = parameters.clone() else {
                    decision.effect = Effect::Deny;
                    holds.refusals.insert(
                        range.start + offset,
                        error_bytes(
                            "54000",
                            &format!("this statement needs an approval, and its parameters cannot all be shown to a reviewer (more than {MAX_PARAMS_SHOWN}, one longer than {MAX_PARAM_SHOWN_LEN} bytes, more than {MAX_PORTALS_SHOWN} portals open, a cursor opened elsewhere, or the values of several portals in one query); nothing was run"),
                            None,
                            None,
                        ),
                    );
                    break;
                };
                match self
                    .wait_for_approval(
                        portcullis_gate::Asked {
                            text: statement.text.clone(),
                            // An SQL EXECUTE runs what was prepared under
                            // its name: the reviewer sees that too.
                            prepared: statement.prepared_text.clone(),
                            batch: batch.clone(),
                            parameters,
                        },
                        decision,
                        shared,
                        client,
                        buf,
                    )
                    .await
                {
                    Ok(request) => {
                        decision.effect = Effect::Allow;
                        holds.approved.push((range.start + offset, request));
                    }
                    Err(refusal) => {
                        decision.effect = Effect::Deny;
                        holds.refusals.insert(range.start + offset, refusal);
                        // The rest of this message is not asked for.
                        break;
                    }
                }
            }
        }
    }

    /// Asks the Gate about every statement of the plan, in order (an
    /// Execute covered by its Parse's decision takes that one).
    async fn decide(
        &mut self,
        plan: &[Planned],
    ) -> Result<Vec<Decision>, portcullis_gate::GateError> {
        let mut checks = Vec::new();
        for item in plan {
            match item {
                Planned::Gated {
                    phase, statements, ..
                } => checks.extend(
                    statements
                        .iter()
                        .map(|statement| Check::Statement { phase, statement }),
                ),
                Planned::Refused {
                    phase,
                    text,
                    reason,
                    ..
                } => checks.push(Check::Refused {
                    phase,
                    text,
                    reason,
                }),
                Planned::Forward { .. } | Planned::Terminate(_) => {}
            }
        }
        match covering_executes(&checks) {
            _ if checks.is_empty() => Ok(Vec::new()),
            None => self.gate.check(&mut self.session, &checks).await,
            Some(covers) => {
                let asked: Vec<Check<'_>> = checks
                    .iter()
                    .zip(&covers)
                    .filter(|(_, cover)| cover.is_none())
                    .map(|(check, _)| *check)
                    .collect();
                self.gate
                    .check(&mut self.session, &asked)
                    .await
                    .map(|decided| spread(decided, &covers))
            }
        }
    }

    /// Holds one statement: tells the client at once, then waits for the
    /// decision, the client's cancel, or the client leaving. `Ok` is the id
    /// of the approved request.
    async fn wait_for_approval(
        &mut self,
        asked: portcullis_gate::Asked,
        decision: &portcullis_core::Decision,
        shared: &Shared,
        client: &mut ReadSide,
        buf: &mut BytesMut,
    ) -> Result<i64, Bytes> {
        use portcullis_gate::approval::{model, Status};
        let mut held = match self.gate.hold(&self.session, asked, decision).await {
            Ok(held) => held,
            Err(e) => return Err(error_bytes("58000", &e.to_string(), None, None)),
        };
        let groups = decision
            .approval
            .as_ref()
            .map(|a| model::groups_list(&a.groups))
            .unwrap_or_default();
        let policies: Vec<String> = decision.policies.iter().map(|p| format!("`{p}`")).collect();
        let mut notice = BytesMut::new();
        build::notice_or_error(
            &mut notice,
            b'N',
            "NOTICE",
            "01000",
            &format!("held for approval: request {} — {}", held.id, held.url),
            Some(&format!(
                "policy {} asks a member of {groups} to approve: {}",
                policies.join(", "),
                decision.reason
            )),
            Some("waiting for a reviewer; press Ctrl-C to withdraw the request"),
        );
        let _ = shared.notices.send(notice.freeze());

        enum Event {
            Cancelled,
            ClientLeft,
        }
        let mut cancels = self.cancels.subscribe();
        let mut withdrawn = false;
        let event = loop {
            let event = tokio::select! {
                decided = held.wait() => match decided {
                    Ok(request) => break Ok(request),
                    Err(e) => break Err(e),
                },
                _ = cancels.changed() => Event::Cancelled,
                read = client.read_buf(buf), if buf.len() < MAX_BUFFERED_WHILE_HELD => match read {
                    Ok(0) | Err(_) => Event::ClientLeft,
                    Ok(_) => continue,
                },
            };
            // Withdrawn means not run, even if an approval landed meanwhile.
            withdrawn = true;
            match event {
                Event::Cancelled => break held.cancel("the client cancelled the statement").await,
                Event::ClientLeft => break held.cancel("the client disconnected").await,
            }
        };
        let request = match event {
            Ok(request) => request,
            Err(e) => {
                return Err(error_bytes(
                    "58000",
                    &format!("approval request {}: {e}; nothing was run", held.id),
                    None,
                    None,
                ))
            }
        };
        let id = request.id;
        let outcome = request.outcome.clone().unwrap_or_default();
        match request.status {
            Status::Approved if withdrawn => Err(error_bytes(
                "57014",
                "canceling statement due to user request",
                Some(&format!(
                    "approval request {id} was approved as it was withdrawn; nothing was run"
                )),
                None,
            )),
            Status::Approved => Ok(id),
            Status::Denied => {
                let reviewer = request
                    .reviews
                    .iter()
                    .rev()
                    .find(|r| !r.approve)
                    .map(|r| r.reviewer.as_str())
                    .unwrap_or("a reviewer");
                Err(error_bytes(
                    "42501",
                    &format!("denied by reviewer `{reviewer}`: {outcome}"),
                    Some(&format!("approval request {id}; nothing was run")),
                    None,
                ))
            }
            Status::Cancelled => Err(error_bytes(
                "57014",
                "canceling statement due to user request",
                Some(&format!(
                    "approval request {id} was withdrawn ({outcome}); nothing was run"
                )),
                None,
            )),
            Status::Expired => Err(error_bytes(
                "42501",
                &format!("approval request {id} expired: {outcome}"),
                Some("nothing was run; run the statement again to ask again"),
                None,
            )),
            Status::Pending | Status::Revoked => Err(error_bytes(
                "XX000",
                &format!(
                    "internal error: approval request {id} ended as {}",
                    request.status.as_str()
                ),
                None,
                None,
            )),
        }
    }

    /// Puts a statement, its decision and its parameters in the session's
    /// recording. A recording that cannot be written ends the session; the
    /// error says why, for the statement's refusal.
    fn record(
        &self,
        mut statement: portcullis_record::format::Statement,
        parameters: Option<&[Option<String>]>,
        shared: &Shared,
    ) -> Result<(), String> {
        let Some(recorder) = &self.recorder else {
            return Ok(());
        };
        match parameters {
            Some(parameters) => statement.parameters = parameters.to_vec(),
            None => statement.parameters_withheld = true,
        }
        recorder.statement(&statement).map_err(|e| {
            let message = format!("the session is ended: {e}; nothing was run");
            shared.end_session(&message);
            message
        })
    }

    /// Follows `SET portcullis.reason = '...'` (and its RESET): the reason
    /// policies and reviewers see.
    fn note_reason(&mut self, statements: &[StatementInfo]) {
        for statement in statements {
            if statement.settings.iter().any(|s| s == REASON_SETTING) {
                if let Some(value) =
                    portcullis_sql::setting_assignment(&statement.text, REASON_SETTING)
                {
                    self.session.set_reason(value.as_deref().unwrap_or(""));
                }
            }
        }
    }
}

/// For each check, the later check whose decision it takes, if any: a Parse
/// of a statement that an Execute later in the same batch runs (an
/// extended-protocol query sent as Parse, Bind, Execute, Sync). A decision
/// depends on the statement and the session alone, and preparing runs
/// nothing, so the Execute's decision and its audit entry stand for both.
/// `None` when no check takes another's (a batch without a Parse, most
/// often), so that the common case costs nothing.
fn covering_executes(checks: &[Check<'_>]) -> Option<Vec<Option<usize>>> {
    let is_parse = |check: &Check<'_>| matches!(check, Check::Statement { phase: "parse", .. });
    if !checks.iter().any(is_parse) {
        return None;
    }
    let mut last_execute: HashMap<&StatementInfo, usize> = HashMap::new();
    for (idx, check) in checks.iter().enumerate() {
        if let Check::Statement {
            phase: "execute",
            statement,
        } = check
        {
            last_execute.insert(statement, idx);
        }
    }
    let covers: Vec<Option<usize>> = checks
        .iter()
        .enumerate()
        .map(|(idx, check)| match check {
            Check::Statement {
                phase: "parse",
                statement,
            } => last_execute
                .get(statement)
                .copied()
                .filter(|&execute| execute > idx),
            _ => None,
        })
        .collect();
    covers.iter().any(Option::is_some).then_some(covers)
}

/// Gives every check its decision: its own, or its covering Execute's.
/// `decided` holds the decisions of the checks asked (those not covered), in
/// order. Stops at the first check without one, so that a short answer
/// stays short and is refused as such.
fn spread(decided: Vec<Decision>, covers: &[Option<usize>]) -> Vec<Decision> {
    let mut asked_at = Vec::with_capacity(covers.len());
    let mut asked = 0usize;
    for cover in covers {
        asked_at.push(asked);
        if cover.is_none() {
            asked += 1;
        }
    }
    covers
        .iter()
        .enumerate()
        .map_while(|(idx, cover)| {
            let source = asked_at.get(cover.unwrap_or(idx))?;
            decided.get(*source).cloned()
        })
        .collect()
}

fn has_complete_frame(buf: &[u8]) -> bool {
    match buf.get(1..5) {
        Some(len) => {
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            usize::try_from(len).is_ok_and(|len| buf.len() > len)
        }
        None => false,
    }
}

/// A statement as the recording keeps it: the deciding policies always,
/// the reason only for a refusal.
fn recorded_statement(
    phase: &str,
    text: &str,
    effect: &str,
    policies: &[String],
    reason: &str,
) -> portcullis_record::format::Statement {
    portcullis_record::format::Statement {
        phase: phase.to_string(),
        text: text.to_string(),
        effect: effect.to_string(),
        policies: policies.to_vec(),
        reason: if effect == "allow" {
            String::new()
        } else {
            reason.to_string()
        },
        parameters: Vec::new(),
        parameters_withheld: false,
    }
}

/// The setting a user gives their reason in.
pub const REASON_SETTING: &str = "portcullis.reason";

/// Why a message is refused, and its SQLSTATE.
type Refusal = (String, &'static str);

/// One classified statement as it will run: refused when it changes a pinned
/// setting, an `EXECUTE` resolved to what it runs.
fn resolve(
    statement: &StatementInfo,
    prepared: &Prepared,
) -> Result<StatementInfo, (String, &'static str)> {
    if let Some(setting) = statement
        .settings
        .iter()
        .find(|s| s.as_str() == "*" || PINNED_PARAMETERS.iter().any(|(name, _)| name == s))
    {
        let what = if setting == "*" {
            "settings it cannot name".to_string()
        } else {
            format!("`{setting}`")
        };
        return Err((
            format!("a statement that changes {what} is refused: the gateway reads SQL as UTF8 with standard_conforming_strings on, and the target must too"),
            "0A000",
        ));
    }
    if let Some(function) = statement
        .functions
        .iter()
        .find(|f| portcullis_sql::runs_portal_function(f))
    {
        return Err((
            format!("`{function}` runs a portal given by name, which the gateway cannot tie to the statement the portal runs; FETCH from it instead, which is decided as that statement"),
            "0A000",
        ));
    }
    if let Some(name) = &statement.objects.fetches {
        // FETCH and MOVE run the portal further: one bound through the
        // protocol runs its statement here, whatever it is (a `DELETE ...
        // RETURNING` too), so the statement decided is that one. Its rows
        // are masked as the FETCH's own, of unknown origin.
        return match prepared.portal(name) {
            Portal::Bound(target, _) => Ok(StatementInfo {
                lineage: statement.lineage.clone(),
                ..portcullis_sql::resolve_execute(target, statement)
            }),
            Portal::Unknown => Ok(opened_elsewhere(statement)),
            other => Err(unknown_portal(name, &other)),
        };
    }
    match &statement.executes {
        // What runs is the prepared statement with the EXECUTE's own
        // arguments, which are evaluated too.
        Some(name) if prepared.statement_unsure(name) => Err((unsure_statement(name), "26000")),
        Some(name) => match prepared.statement(name) {
            Some(target) => Ok(portcullis_sql::resolve_execute(target, statement)),
            None => Err((
                format!("prepared statement `{name}` was not prepared through the gateway, so it cannot be checked"),
                "26000",
            )),
        },
        None => Ok(statement.clone()),
    }
}

/// A FETCH or MOVE of a cursor the gateway did not see declared or bound:
/// one a function or a DO block opened (or none). Such a cursor runs, at each
/// fetch, whatever it was opened for, an `INSERT ... RETURNING` too, so its
/// effect cannot be seen from the statement: it is decided as a CALL is.
fn opened_elsewhere(statement: &StatementInfo) -> StatementInfo {
    use portcullis_core::StatementKind;
    let mut kinds = statement.kinds.clone();
    kinds.push(StatementKind::Call);
    kinds.sort();
    kinds.dedup();
    StatementInfo {
        kind: StatementKind::Call,
        kinds,
        writes: true,
        ..statement.clone()
    }
}

/// Why a statement being redefined is not run.
fn unsure_statement(name: &str) -> String {
    format!("prepared statement `{name}` is being redefined by a message the target has not answered, so what it runs cannot be checked: wait for the answer")
}

/// Why a portal whose statement is not known is not run.
fn unknown_portal(name: &str, portal: &Portal<'_>) -> (String, &'static str) {
    match portal {
        Portal::Unsure => (
            format!("portal `{name}` is being rebound by a message the target has not answered, so what it runs cannot be checked: wait for the answer"),
            "34000",
        ),
        Portal::Closing => (
            format!("portal `{name}` is being closed, so what it runs cannot be checked: wait for the close to complete"),
            "34000",
        ),
        _ => (
            format!("portal `{name}` was bound from a statement the gateway did not see prepared, so it cannot be checked"),
            "26000",
        ),
    }
}

/// What a poison statement is answered with: in the simple protocol a
/// Query's error and its ReadyForQuery; in the extended one an error, after
/// which the target skips to the client's Sync.
fn poison_expect(poison: &Poison) -> Expect {
    match poison {
        Poison::Query => Expect::QueryPoison,
        Poison::Parse(_) | Poison::Execute => Expect::Complete {
            change: None,
            closes_portal: false,
        },
    }
}

/// Writes a Describe of the portal an Execute runs, when masking is on, so
/// that its rows can be tied to their columns. Says whether it did.
fn describe_portal(out: &mut BytesMut, execute: &[u8], masking: bool) -> bool {
    if !masking {
        return false;
    }
    match execute.get(5..).and_then(message::execute) {
        Some(portal) => {
            result::write_describe_portal(out, portal);
            true
        }
        None => false,
    }
}

/// Whether a frame closes a portal: a Close of one, or a Bind of the
/// unnamed portal, which closes the unnamed portal bound before it.
fn closes_portal(raw: &[u8]) -> bool {
    let body = raw.get(5..).unwrap_or_default();
    match raw.first() {
        Some(b'C') => message::close(body).is_some_and(|(kind, _)| kind == b'P'),
        Some(b'B') => body.first() == Some(&0),
        _ => false,
    }
}

fn source_of(statement: &StatementInfo) -> ResultSource {
    ResultSource {
        lineage: statement.lineage.clone(),
        // COMMIT runs deferred triggers and the queries of cursors WITH
        // HOLD, and a CLOSE ends a cursor's query (a sort reports what it
        // used then): what either reports may come from anywhere.
        calls_functions: calls_functions(statement)
            || statement.kind == portcullis_core::StatementKind::Transaction
            || statement.objects.closes.is_some(),
        writes: statement.writes,
        text: statement.text.as_str().into(),
        changes_schema: changes_schema(statement),
        functions: statement.functions.clone(),
        commits: false,
    }
}

/// Whether a statement may change the schema or make code that other
/// statements run unseen: DDL, privileges and row security, a DO block, a
/// call (a function may run DDL).
fn may_make_code(statement: &StatementInfo) -> bool {
    use portcullis_core::StatementKind as K;
    statement
        .kinds
        .iter()
        .any(|kind| matches!(kind, K::Ddl | K::Dcl | K::Other | K::Call))
}

/// Whether a statement may change relations or views, which masking reads.
fn changes_schema(statement: &StatementInfo) -> bool {
    statement.kinds.iter().any(|kind| {
        matches!(
            kind,
            portcullis_core::StatementKind::Ddl | portcullis_core::StatementKind::Other
        )
    })
}

/// A result whose origin nothing shows.
fn opaque_source() -> ResultSource {
    ResultSource {
        lineage: Arc::new(Lineage {
            opaque: true,
            ..Lineage::default()
        }),
        calls_functions: true,
        writes: false,
        text: "".into(),
        changes_schema: false,
        functions: Vec::new(),
        commits: true,
    }
}

/// PostgreSQL's `FirstNormalObjectId`: OIDs below are built in.
const FIRST_USER_OID: u32 = 16384;

/// How many messages may wait for their answers from the target.
const MAX_UNANSWERED: usize = 100_000;

/// PostgreSQL's longest identifier (NAMEDATALEN - 1). Longer statement and
/// portal names could be truncated into each other on the target.
const MAX_NAME_LEN: usize = 63;

fn long_name(name: &str) -> String {
    format!(
        "the name `{}...` is longer than {MAX_NAME_LEN} bytes",
        name.get(..MAX_NAME_LEN).unwrap_or(name)
    )
}

fn forward(raw: Bytes) -> Planned {
    Planned::Forward { raw, defines: None }
}

fn refused(
    phase: &'static str,
    text: &str,
    reason: String,
    code: &'static str,
    poison: Poison,
) -> Planned {
    Planned::Refused {
        phase,
        text: text.to_string(),
        reason,
        code,
        poison,
    }
}

fn malformed(phase: &'static str, poison: Poison) -> Planned {
    Planned::Refused {
        phase,
        text: String::new(),
        reason: "malformed message".into(),
        code: "08P01",
        poison,
    }
}

fn denial_bytes(decision: &portcullis_core::Decision, idx: usize, of: usize) -> Bytes {
    let which = if of > 1 {
        format!(" (statement {} of {of}; none was run)", idx + 1)
    } else {
        String::new()
    };
    let text = match decision.policies.as_slice() {
        [] => format!("denied{which}: {}", decision.reason),
        policies => {
            let names: Vec<String> = policies.iter().map(|p| format!("`{p}`")).collect();
            format!(
                "denied by policy {}{which}: {}",
                names.join(", "),
                decision.reason
            )
        }
    };
    let detail = format!("policy version {}", decision.policy_version);
    error_bytes("42501", &text, Some(&detail), None)
}

fn error_bytes(code: &str, text: &str, detail: Option<&str>, hint: Option<&str>) -> Bytes {
    let mut out = BytesMut::new();
    build::error_response(&mut out, "ERROR", code, text, detail, hint);
    out.freeze()
}

/// Writes a poison message in place of a refused one and remembers what the
/// client should see when the target rejects it.
fn poison_into(
    out: &mut BytesMut,
    shared: &Shared,
    seq: &mut u64,
    kind: PoisonKind<'_>,
    error: Bytes,
) {
    *seq += 1;
    let marker = format!("pcx_{}_{}", shared.nonce, seq);
    let sql = format!("SELECT \"{marker}\"");
    match kind {
        PoisonKind::Query => build::query(out, &sql),
        PoisonKind::Parse(name) => build::parse(out, name, &sql),
        PoisonKind::Execute => build::parse(out, &marker, &sql),
    }
    if let Ok(mut denials) = shared.denials.lock() {
        denials.insert(*seq, error);
        shared.pending.store(denials.len(), Ordering::Release);
    }
}

/// The target side of the relay: forwards everything to the client, swapping
/// the target's errors for poison statements with the gateway's refusals, and
/// masking results.
async fn target_to_client(
    mut target: ReadSide,
    mut client: WriteSide,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    target_name: String,
    mut results: Results,
    mut notices: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
) -> (Ending, MaskCounts) {
    let ending = relay_target(
        &mut target,
        &mut client,
        &mut buf,
        &shared,
        target_name,
        &mut results,
        &mut notices,
    )
    .await;
    (ending, std::mem::take(&mut results.session_counts))
}

async fn relay_target(
    target: &mut ReadSide,
    client: &mut WriteSide,
    buf: &mut BytesMut,
    shared: &Shared,
    target_name: String,
    results: &mut Results,
    notices: &mut tokio::sync::mpsc::UnboundedReceiver<Bytes>,
) -> Ending {
    let recorder = shared.recorder.as_deref();
    let prefix = format!("pcx_{}_", shared.nonce);
    loop {
        // Walk complete frames. Frames that go out as they came are written
        // from the read buffer in runs; once one is replaced or dropped, the
        // rest of this read is copied into `out`.
        let mut pos = 0usize;
        let mut out: Option<BytesMut> = None;
        while let Some(header) = buf.get(pos..pos + 5) {
            let tag = header[0];
            let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            if len < 4 {
                return Ending::Error(PgError::TargetProtocol {
                    target: target_name,
                    message: format!("invalid message length {len}"),
                });
            }
            let end = pos + 1 + len as usize;
            if end > buf.len() {
                break;
            }
            let raw = buf.get(pos..end).unwrap_or(&[]);
            let body = raw.get(5..).unwrap_or(&[]);
            match tag {
                b'Z' => forget_answered_poisons(shared),
                b'S' => {
                    if let Some(changed) = unpinned_parameter(body) {
                        let text = format!("the target's `{changed}` changed, so the gateway can no longer read this session's SQL as the target does; the session is ended");
                        return end_with(
                            recorder,
                            client,
                            buf,
                            pos,
                            out,
                            &text,
                            "08006",
                            target_name,
                        )
                        .await;
                    }
                }
                _ => {}
            }
            let action = match results.on_frame(tag, body).await {
                Ok(action) => action,
                Err(failure) => {
                    let text =
                        format!("the session is ended: {failure}; no unmasked value was sent");
                    return end_with(recorder, client, buf, pos, out, &text, "XX000", target_name)
                        .await;
                }
            };
            // The gateway's own refusal replaces the error of a poison.
            let action = if tag == b'E' && shared.pending.load(Ordering::Acquire) > 0 {
                match replacement_for(raw, &prefix, shared) {
                    Some(replacement) => FrameAction::Replace(BytesMut::from(&replacement[..])),
                    None => action,
                }
            } else {
                action
            };
            match action {
                FrameAction::Forward => {
                    if let Some(out) = out.as_mut() {
                        out.extend_from_slice(raw);
                    }
                }
                FrameAction::Replace(bytes) => {
                    out.get_or_insert_with(|| BytesMut::from(buf.get(..pos).unwrap_or(&[])))
                        .extend_from_slice(&bytes);
                }
                FrameAction::Drop => {
                    out.get_or_insert_with(|| BytesMut::from(buf.get(..pos).unwrap_or(&[])));
                }
            }
            pos = end;
        }
        let written = match &out {
            Some(out) => out.as_ref(),
            None => buf.get(..pos).unwrap_or(&[]),
        };
        if !written.is_empty() {
            // Recorded before the client has it: what it saw is in the
            // recording even if the gateway dies now.
            if let Some(Err(e)) = recorder.map(|r| r.to_client(written)) {
                let text = format!("the session is ended: {e}");
                return end_with(
                    recorder,
                    client,
                    buf,
                    0,
                    Some(BytesMut::new()),
                    &text,
                    "58030",
                    target_name,
                )
                .await;
            }
            if let Err(e) = client.write_all(written).await {
                return Ending::Error(PgError::ClientIo(e));
            }
        }
        buf.advance(pos);
        let read = tokio::select! {
            read = target.read_buf(buf) => read,
            // Between frames: every complete frame read so far is written.
            Some(notice) = notices.recv() => {
                if let Some(Err(e)) = recorder.map(|r| r.to_client(&notice)) {
                    let text = format!("the session is ended: {e}");
                    return end_with(recorder, client, buf, 0, Some(BytesMut::new()), &text, "58030", target_name).await;
                }
                if let Err(e) = client.write_all(&notice).await {
                    return Ending::Error(PgError::ClientIo(e));
                }
                continue;
            }
            _ = shared.end.notified() => return ended_by_gateway(shared, recorder, client).await,
        };
        if shared.ended() {
            return ended_by_gateway(shared, recorder, client).await;
        }
        match read {
            Ok(0) => {
                let _ = client.shutdown().await;
                return Ending::TargetClosed;
            }
            Ok(_) => {}
            Err(e) => {
                return Ending::Error(PgError::TargetIo {
                    target: target_name,
                    source: e,
                })
            }
        }
    }
}

/// Tells the client why the gateway ended the session, and ends it.
async fn ended_by_gateway(
    shared: &Shared,
    recorder: Option<&portcullis_record::Recorder>,
    client: &mut WriteSide,
) -> Ending {
    let reason = shared
        .end_reason
        .lock()
        .ok()
        .and_then(|mut r| r.take())
        .unwrap_or_else(|| "the session was ended by the gateway".into());
    let mut out = BytesMut::new();
    build::error_response(&mut out, "FATAL", "57P01", &reason, None, None);
    if let Some(recorder) = recorder {
        let _ = recorder.to_client(&out);
    }
    let _ = client.write_all(&out).await;
    let _ = client.shutdown().await;
    Ending::Ended(reason)
}

/// Sends what was decided of this read before `pos`, then a FATAL error,
/// and ends the session.
#[allow(clippy::too_many_arguments)]
async fn end_with(
    recorder: Option<&portcullis_record::Recorder>,
    client: &mut WriteSide,
    buf: &BytesMut,
    pos: usize,
    out: Option<BytesMut>,
    text: &str,
    code: &str,
    target_name: String,
) -> Ending {
    let mut message = out.unwrap_or_else(|| BytesMut::from(buf.get(..pos).unwrap_or(&[])));
    build::error_response(&mut message, "FATAL", code, text, None, None);
    // Best effort: when the recording itself failed, this fails too.
    if let Some(recorder) = recorder {
        let _ = recorder.to_client(&message);
    }
    let _ = client.write_all(&message).await;
    let _ = client.shutdown().await;
    Ending::Error(PgError::TargetProtocol {
        target: target_name,
        message: text.to_string(),
    })
}

impl Shared {
    /// Makes the target side end the session with a FATAL error saying why.
    fn end_session(&self, reason: &str) {
        self.ending(reason);
        self.end.notify_one();
    }

    /// Says why the gateway is ending the session, before it ends the
    /// session's backend: what the target sends from then on (the backend's
    /// own farewell) is not passed on, the reason is.
    fn ending(&self, reason: &str) {
        if let Ok(mut slot) = self.end_reason.lock() {
            *slot = Some(reason.to_string());
        }
    }

    fn ended(&self) -> bool {
        self.end_reason.lock().is_ok_and(|reason| reason.is_some())
    }
}

/// Re-checks the session's `connect` on every policy change, and the
/// statements it sent that the target has not run yet, and ends the session
/// when one is no longer allowed (or cannot be checked): its backend on the
/// target first, so that nothing sent runs after.
async fn recheck_on_policy_change(
    gate: Gate,
    session: Session,
    shared: Arc<Shared>,
    (target, backend_pid, backend_secret): (Arc<PgTarget>, i32, i32),
) {
    let mut changes = gate.policy_changes();
    // An access grant that starts or ends changes what the policy says too.
    let mut grants = gate.grant_changes();
    loop {
        let changed = tokio::select! {
            changed = changes.changed() => changed,
            changed = grants.changed() => changed,
        };
        if changed.is_err() {
            return;
        }
        let reason = match gate.recheck(&session).await {
            Ok(decision) if decision.is_allowed() => match gate.masking(&session).await {
                Ok(masking) => {
                    // The recording says what its results hold in clear
                    // before they do.
                    let recorded = shared.recorder.as_ref().map_or(Ok(()), |r| {
                        r.masking(&portcullis_record::format::Masking {
                            unmasked: masking.unmasked,
                        })
                    });
                    if recorded.is_err() {
                        "the session is ended: its recording cannot be written".to_string()
                    } else {
                        shared.results.set_masker(masking.masker);
                        let sent = shared.results.in_flight();
                        match no_longer_allowed(&gate, &session, &sent).await {
                            None => continue,
                            Some(reason) => reason,
                        }
                    }
                }
                Err(e) => format!("the session is ended: its masking cannot be decided: {e}"),
            },
            Ok(decision) => portcullis_gate::revoked_reason(&session.target.name, &decision),
            Err(e) => format!("the session is ended: {e}"),
        };
        shared.ending(&reason);
        target.terminate_backend(backend_pid, backend_secret).await;
        shared.end_session(&reason);
        return;
    }
}

/// Settings that steer which plan PostgreSQL chooses: its methods, costs
/// and search.
fn planner_setting(name: &str) -> bool {
    name.starts_with("enable_")
        || name.ends_with("_cost")
        || name.starts_with("geqo")
        || name.starts_with("parallel_")
        || name.starts_with("min_parallel_")
        || matches!(
            name,
            "effective_cache_size"
                | "effective_io_concurrency"
                | "cursor_tuple_fraction"
                | "from_collapse_limit"
                | "join_collapse_limit"
                | "constraint_exclusion"
                | "max_parallel_workers_per_gather"
                | "plan_cache_mode"
                | "default_statistics_target"
                | "recursive_worktable_factor"
        )
}

/// Ten years: longer than any token, and far from overflowing a deadline.
const MAX_SESSION_SECONDS: u64 = 10 * 365 * 86_400;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Drops the refusals of poisons the target skipped (after an earlier error,
/// or in an aborted transaction): their cycle is over.
fn forget_answered_poisons(shared: &Shared) {
    let Some(last) = shared
        .cycles
        .lock()
        .ok()
        .and_then(|mut cycles| cycles.pop_front())
    else {
        return;
    };
    if shared.pending.load(Ordering::Acquire) == 0 {
        return;
    }
    if let Ok(mut denials) = shared.denials.lock() {
        denials.retain(|seq, _| *seq > last);
        shared.pending.store(denials.len(), Ordering::Release);
    }
}

/// The name of a pinned parameter that a ParameterStatus body reports with
/// another value.
fn unpinned_parameter(body: &[u8]) -> Option<String> {
    let (name, value) = message::parameter_status(body)?;
    PINNED_PARAMETERS
        .iter()
        .find(|(pinned, expected)| *pinned == name && *expected != value)
        .map(|(pinned, _)| pinned.to_string())
}

/// The gateway's refusal for a target error that answers a poison statement.
fn replacement_for(raw: &[u8], prefix: &str, shared: &Shared) -> Option<Bytes> {
    let at = memchr::memmem::find(raw, prefix.as_bytes())?;
    let digits: String = raw
        .get(at + prefix.len()..)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|b| char::from(*b))
        .collect();
    let seq: u64 = digits.parse().ok()?;
    let mut denials = shared.denials.lock().ok()?;
    let replacement = denials.remove(&seq)?;
    shared.pending.store(denials.len(), Ordering::Release);
    Some(replacement)
}

/// Runs `f`, which may take long, without holding up the other tasks of
/// the worker thread it runs on (they move to another), where the runtime
/// has several.
fn off_the_workers<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use portcullis_core::Effect;

    fn statement(classifier: &Classifier, sql: &str) -> StatementInfo {
        classifier.classify(sql).unwrap()[0].clone()
    }

    fn decision(reason: &str) -> Decision {
        Decision {
            effect: Effect::Allow,
            policies: Vec::new(),
            reason: reason.to_owned(),
            errors: Vec::new(),
            policy_version: String::new(),
            approval: None,
        }
    }

    #[test]
    fn a_parse_takes_the_decision_of_a_later_execute_of_its_statement_only() {
        let classifier = Classifier::new(16);
        let (x, y) = (
            statement(&classifier, "select 1"),
            statement(&classifier, "select 2"),
        );
        let check = |phase, statement| Check::Statement { phase, statement };
        let checks = [
            check("parse", &x),
            check("execute", &y),
            check("execute", &x),
            // An Execute before its Parse covers nothing, nor does a Query.
            check("parse", &y),
            check("query", &x),
        ];
        let covers = covering_executes(&checks).unwrap();
        assert_eq!(covers, [Some(2), None, None, None, None]);
        // Nothing to share: a batch without a Parse, or whose Parse runs
        // nowhere in it.
        assert_eq!(covering_executes(&checks[1..]), None);
        assert_eq!(covering_executes(&[check("parse", &x)]), None);
        let decided = ["y", "x", "parse y", "query x"].map(decision).to_vec();
        let reasons = |decided: &[Decision]| -> Vec<String> {
            spread(decided.to_vec(), &covers)
                .into_iter()
                .map(|d| d.reason)
                .collect()
        };
        assert_eq!(reasons(&decided), ["x", "y", "x", "parse y", "query x"]);
        // A short answer stays short from the first check without a
        // decision, so that the rest is refused.
        assert!(reasons(&decided[..1]).is_empty());
        assert_eq!(reasons(&decided[..3]), ["x", "y", "x", "parse y"]);
    }
}
