//! The target side's view of results: which statement each result answers,
//! and the masking of its rows, COPY data, errors and notices.
//!
//! The client side records, in the order it sends them, what each message
//! will be answered with ([`Expect`]); the target answers in that order, so
//! the front of the queue says what a RowDescription, a DataRow or an error
//! belongs to. After an error the target skips to the next Sync, and so does
//! the queue.
//!
//! An Execute carries no RowDescription in its answer (a client that
//! described the statement earlier already knows it), so when masking is on
//! the gateway sends its own Describe of the portal right before the Execute
//! and keeps the answer to itself.

use crate::catalog::{lacks_relations, Snapshot};
use crate::codec::message;
use crate::codec::result::{copy_out_response, row_description, write_fields, FieldDescription};
use crate::copy_out::CopyPlan;
use crate::masking::{is_system_oid, mask_row, MaskFailure, Planner, ResultPlan, ResultSource};
use crate::prepared::{Change, Prepared};
use crate::server::PgTarget;
use bytes::BytesMut;
use portcullis_core::{CopyFormat, CopySource};
use portcullis_gate::{Gate, Session};
use portcullis_mask::{MaskCounts, Masker};
use portcullis_sql::Classifier;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// What the target will answer a message with, as far as results go.
#[derive(Debug)]
pub enum Expect {
    /// A simple Query: the statements whose results are still to come.
    Query(VecDeque<QueryStatement>),
    /// A Parse, a Bind or a Close, answered by ParseComplete, BindComplete
    /// or CloseComplete; what it changed in [`Prepared`] is taken back if
    /// the target skips or refuses it.
    Complete {
        change: Option<Change>,
        /// A Close of a portal, or a Bind of the unnamed portal (which
        /// closes the one bound before): it ends a portal's query, whose
        /// last reports (a sort's memory, say) come while it closes.
        closes_portal: bool,
    },
    /// A Describe the client sent: its answer goes to the client.
    Describe,
    /// A Describe the gateway added before an Execute: its answer is kept.
    InjectedDescribe,
    /// An Execute, and whether the gateway described its portal first.
    Execute {
        source: ResultSource,
        described: bool,
        /// It runs a COPY FROM STDIN whose start has not been answered.
        copy_in: bool,
        /// What it runs and the decision it went under, unless it only reads.
        decided: Option<Decided>,
    },
    /// The client's Sync: answered by ReadyForQuery.
    Sync,
    /// The end of a simple Query: its ReadyForQuery. A Query sent while the
    /// target skips to a Sync after an extended-protocol error is skipped
    /// too, and has none.
    QueryEnd,
    /// A refused Query or FunctionCall, sent as a poison Query: an error
    /// and a ReadyForQuery.
    QueryPoison,
}

/// One statement of a simple Query.
#[derive(Debug)]
pub struct QueryStatement {
    pub source: ResultSource,
    /// What it changes in [`Prepared`], taken back if it does not run.
    pub undo: Vec<Change>,
    /// A COPY FROM STDIN whose start has not been answered.
    pub copy_in: bool,
    /// What it runs and the decision it went under, unless it only reads.
    pub decided: Option<Decided>,
}

/// A statement sent to the target, with the decision it went under. Until
/// the target answers it, it may still be queued behind another statement:
/// a change of policy or grants meanwhile decides it again.
pub type Decided = Arc<(portcullis_core::Action, portcullis_core::Decision)>;

impl Expect {
    /// The COPY FROM STDIN starts it holds that the target has not answered.
    fn copy_starts(&self) -> usize {
        match self {
            Expect::Query(statements) => statements.iter().filter(|s| s.copy_in).count(),
            Expect::Execute { copy_in: true, .. } => 1,
            _ => 0,
        }
    }
}

/// Where the target stands with COPY FROM STDIN. Once its CopyInResponse
/// is sent, the target reads only CopyData, CopyDone and CopyFail, and
/// ignores Sync and Flush: the client side must know that before it sends
/// anything after a COPY FROM STDIN, or it would wait for answers that
/// never come.
#[derive(Default)]
struct CopyIn {
    /// COPY FROM STDIN statements sent whose start (a CopyInResponse) or
    /// failure has not come back yet.
    starting: usize,
    /// The target is in copy-in: its CopyInResponse came, and the client's
    /// CopyDone or CopyFail has not been sent.
    active: bool,
}

/// What both sides of a session share about results.
#[derive(Default)]
pub struct ResultQueue {
    expects: Mutex<VecDeque<Expect>>,
    masker: RwLock<Option<Arc<Masker>>>,
    prepared: Mutex<Prepared>,
    copy_in: Mutex<CopyIn>,
    copy_changed: tokio::sync::Notify,
    /// Told when the target answers a statement (or skips it).
    answered: tokio::sync::Notify,
    /// The session sent a statement that may change relations or views and
    /// has not been seen outside a transaction since (see
    /// [`crate::catalog::Catalog::change_begins`]).
    changing_schema: std::sync::atomic::AtomicBool,
    /// The session sent a statement that may change the schema or make
    /// code (DDL, a DO block, a call) and has not been seen idle since with
    /// nothing more sent: what its transaction made, the catalog read on a
    /// connection of the gateway's own does not show.
    unseen_changes: std::sync::atomic::AtomicBool,
}

impl ResultQueue {
    pub fn new(masker: Option<Arc<Masker>>) -> ResultQueue {
        ResultQueue {
            expects: Mutex::new(VecDeque::new()),
            masker: RwLock::new(masker),
            prepared: Mutex::new(Prepared::default()),
            copy_in: Mutex::new(CopyIn::default()),
            copy_changed: tokio::sync::Notify::new(),
            answered: tokio::sync::Notify::new(),
            changing_schema: std::sync::atomic::AtomicBool::new(false),
            unseen_changes: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A statement that may change the schema or make code is on its way.
    pub fn unseen_change_sent(&self) {
        self.unseen_changes
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the session's transaction may have made code or changed
    /// the schema where the catalog does not show it yet.
    pub fn changes_unseen(&self) -> bool {
        self.unseen_changes
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The target is idle: what the session made is committed or gone,
    /// unless more was sent since (that may have begun a transaction).
    /// Whether the session may have made code that is now committed.
    fn idle(&self) -> bool {
        // The flag first: most sessions never set it, and the queue's lock
        // is then not taken on every ReadyForQuery.
        self.unseen_changes
            .load(std::sync::atomic::Ordering::Acquire)
            && self.with(|queue| queue.is_empty())
            && self
                .unseen_changes
                .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// A statement that may change relations or views is on its way.
    pub fn schema_change_sent(&self, target: &PgTarget) {
        if !self
            .changing_schema
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            target.catalog.change_begins();
        }
    }

    /// The session is outside a transaction, or over: what it changed is
    /// committed or rolled back.
    pub fn schema_change_settled(&self, target: &PgTarget) {
        if self
            .changing_schema
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            target.catalog.change_ends();
        }
    }

    /// The session's prepared statements and portals.
    pub fn prepared(&self) -> MutexGuard<'_, Prepared> {
        locked(&self.prepared)
    }

    /// Takes back what the dropped expectations changed.
    fn undo_dropped(&self, dropped: Vec<Expect>) {
        let failed = dropped.iter().map(Expect::copy_starts).sum();
        self.copy_starts_settled(failed, false);
        let mut changes = Vec::new();
        for expect in dropped {
            match expect {
                Expect::Complete {
                    change: Some(undo), ..
                } => changes.push(undo),
                Expect::Query(statements) => {
                    changes.extend(statements.into_iter().flat_map(|s| s.undo))
                }
                _ => {}
            }
        }
        if !changes.is_empty() {
            self.prepared().undo(changes);
        }
    }

    pub fn push(&self, expects: Vec<Expect>) {
        let starts: usize = expects.iter().map(Expect::copy_starts).sum();
        if starts > 0 {
            self.with_copy_in(|copy_in| copy_in.starting += starts);
        }
        locked(&self.expects).extend(expects);
    }

    /// Waits until the target's state after every COPY FROM STDIN sent so
    /// far is known; says whether it is in copy-in.
    pub async fn copy_in_known(&self) -> bool {
        loop {
            let changed = self.copy_changed.notified();
            let (known, active) = self
                .with_copy_in(|copy_in| (copy_in.starting == 0 || copy_in.active, copy_in.active));
            if known {
                return active;
            }
            changed.await;
        }
    }

    /// The client's CopyDone or CopyFail is on its way: the target reads
    /// normally after it.
    pub fn copy_in_ends(&self) {
        self.with_copy_in(|copy_in| copy_in.active = false);
    }

    /// `count` COPY FROM STDIN starts were answered: with a CopyInResponse
    /// (`started`) or by not running.
    fn copy_starts_settled(&self, count: usize, started: bool) {
        if count == 0 {
            return;
        }
        self.with_copy_in(|copy_in| {
            copy_in.starting = copy_in.starting.saturating_sub(count);
            copy_in.active |= started;
        });
        self.copy_changed.notify_one();
    }

    fn with_copy_in<T>(&self, f: impl FnOnce(&mut CopyIn) -> T) -> T {
        f(&mut locked(&self.copy_in))
    }

    /// How many answers the target still owes.
    pub fn len(&self) -> usize {
        self.with(|queue| queue.len())
    }

    /// Whether a statement sent has not been answered yet: running, or
    /// waiting on the target's connection to run.
    pub fn statements_pending(&self) -> bool {
        self.with(|queue| {
            queue.iter().any(|expect| match expect {
                Expect::Query(statements) => !statements.is_empty(),
                Expect::Execute { .. } => true,
                _ => false,
            })
        })
    }

    /// Waits until every statement sent has been answered (or skipped).
    pub async fn statements_answered(&self) {
        loop {
            let answered = self.answered.notified();
            if !self.statements_pending() {
                return;
            }
            answered.await;
        }
    }

    /// The statements sent that may change something and that the target
    /// has not answered yet: running, or queued behind one that is.
    pub fn in_flight(&self) -> Vec<Decided> {
        self.with(|queue| {
            let mut decided = Vec::new();
            for expect in queue.iter() {
                match expect {
                    Expect::Query(statements) => decided.extend(
                        statements
                            .iter()
                            .filter_map(|statement| statement.decided.clone()),
                    ),
                    Expect::Execute {
                        decided: Some(one), ..
                    } => decided.push(one.clone()),
                    _ => {}
                }
            }
            decided
        })
    }

    pub fn masker(&self) -> Option<Arc<Masker>> {
        match self.masker.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The masking under a new policy version.
    pub fn set_masker(&self, masker: Option<Arc<Masker>>) {
        match self.masker.write() {
            Ok(mut guard) => *guard = masker,
            Err(poisoned) => *poisoned.into_inner() = masker,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut VecDeque<Expect>) -> T) -> T {
        f(&mut locked(&self.expects))
    }
}

/// Takes one of the result queue's locks, poisoned or not.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An answer the gateway did not expect: it no longer knows which of the
/// client's messages the target is answering, so it cannot say what runs.
fn out_of_step(tag: u8) -> MaskFailure {
    MaskFailure(format!(
        "the target sent `{}` where the gateway expected another answer, so the gateway can no longer tell what each message runs",
        char::from(tag)
    ))
}

/// What to do with one message from the target.
pub enum FrameAction {
    Forward,
    Replace(BytesMut),
    Drop,
}

enum Current {
    None,
    Rows {
        plan: Option<ResultPlan>,
        source: Option<ResultSource>,
    },
    Copy {
        plan: CopyPlan,
        source: Option<ResultSource>,
    },
}

/// The target side's result state.
pub struct Results {
    pub queue: Arc<ResultQueue>,
    pub gate: Gate,
    pub session: Session,
    pub target: Arc<PgTarget>,
    pub classifier: Arc<Classifier>,
    current: Current,
    /// The answer to the gateway's own Describe, for the Execute after it.
    described: Option<Vec<FieldDescription>>,
    /// Masked in the result under way.
    result_counts: MaskCounts,
    /// Masked in the whole session.
    pub session_counts: MaskCounts,
    /// The result under way has had its notice about binary values sent as
    /// NULL for what they hold.
    content_null_noticed: bool,
}

impl Results {
    pub fn new(
        queue: Arc<ResultQueue>,
        gate: Gate,
        session: Session,
        target: Arc<PgTarget>,
        classifier: Arc<Classifier>,
    ) -> Results {
        Results {
            queue,
            gate,
            session,
            target,
            classifier,
            current: Current::None,
            described: None,
            result_counts: MaskCounts::default(),
            session_counts: MaskCounts::default(),
            content_null_noticed: false,
        }
    }

    /// Looks at one message from the target; says what the client gets.
    pub async fn on_frame(&mut self, tag: u8, body: &[u8]) -> Result<FrameAction, MaskFailure> {
        let action = self.on_frame_inner(tag, body).await;
        // A statement's end, its error (which skips others), or the end of
        // a cycle.
        if matches!(tag, b'C' | b'I' | b'E' | b's' | b'Z') {
            self.queue.answered.notify_waiters();
        }
        action
    }

    async fn on_frame_inner(&mut self, tag: u8, body: &[u8]) -> Result<FrameAction, MaskFailure> {
        match tag {
            b'T' | b'n' => self.on_description(tag, body).await,
            b'D' => self.on_data_row(body).await,
            b'H' => self.on_copy_out(body).await,
            b'd' => self.on_copy_data(body),
            b'1' | b'2' | b'3' => {
                // The Parse, Bind or Close did what it says.
                let done = self.queue.with(|queue| match queue.front() {
                    Some(Expect::Complete { .. }) => match queue.pop_front() {
                        Some(Expect::Complete { change, .. }) => Ok(change),
                        _ => Ok(None),
                    },
                    _ => Err(out_of_step(tag)),
                })?;
                self.queue.prepared().confirm(done);
                Ok(FrameAction::Forward)
            }
            b'C' | b'I' | b's' => {
                self.finish_result();
                let (done, copy_in, changes_schema) =
                    self.queue.with(|queue| match queue.front_mut() {
                        Some(Expect::Query(statements)) => match statements.pop_front() {
                            Some(statement) => Ok((
                                statement.undo,
                                statement.copy_in,
                                statement.source.changes_schema,
                            )),
                            // The answer to an empty query.
                            None if tag == b'I' => Ok((Vec::new(), false, false)),
                            None => Err(out_of_step(tag)),
                        },
                        Some(Expect::Execute {
                            copy_in, source, ..
                        }) => {
                            let answered = (Vec::new(), *copy_in, source.changes_schema);
                            queue.pop_front();
                            Ok(answered)
                        }
                        _ => Err(out_of_step(tag)),
                    })?;
                self.queue.copy_starts_settled(usize::from(copy_in), false);
                // Masking reads views through their definitions: a change
                // is read again now, and when its transaction ends.
                if changes_schema {
                    self.target.catalog.invalidate();
                }
                // The statement ran: what it did to prepared statements and
                // cursors holds.
                self.queue.prepared().confirm(done);
                Ok(FrameAction::Forward)
            }
            b'G' => {
                // The target now reads only CopyData, CopyDone and CopyFail.
                let started = self.queue.with(|queue| match queue.front_mut() {
                    Some(Expect::Query(statements)) => match statements.front_mut() {
                        Some(QueryStatement { copy_in, .. }) => std::mem::take(copy_in),
                        None => false,
                    },
                    Some(Expect::Execute { copy_in, .. }) => std::mem::take(copy_in),
                    _ => false,
                });
                if !started {
                    return Err(out_of_step(tag));
                }
                self.queue.copy_starts_settled(1, true);
                Ok(FrameAction::Forward)
            }
            // Only replication connections copy both ways, and the gateway
            // refuses those.
            b'W' => Err(out_of_step(tag)),
            b'E' => {
                let action = self.mask_fields(tag, body);
                self.finish_result();
                // An error ends copy-in: what the client sends of the copy
                // from now on, the target drops.
                self.queue.copy_in_ends();
                // The target skips the rest of a Query, or everything up to
                // the next Sync: nothing skipped took effect.
                let dropped = self.queue.with(|queue| {
                    let mut dropped = Vec::new();
                    match queue.front() {
                        // A simple Query stops at its error.
                        Some(Expect::Query(_)) => dropped.extend(queue.pop_front()),
                        // The poison's error; its ReadyForQuery follows.
                        Some(Expect::QueryPoison) => {
                            queue.pop_front();
                            queue.push_front(Expect::QueryEnd);
                        }
                        // The extended protocol skips everything, Queries
                        // included, up to the client's Sync.
                        _ => {
                            while queue.front().is_some_and(|e| !matches!(e, Expect::Sync)) {
                                dropped.extend(queue.pop_front());
                            }
                        }
                    }
                    dropped
                });
                self.queue.undo_dropped(dropped);
                self.described = None;
                Ok(action)
            }
            b'N' => Ok(self.mask_fields(tag, body)),
            b'A' => Ok(self.mask_notification(body)),
            b'Z' => {
                self.finish_result();
                self.described = None;
                let (dropped, answered) = self.queue.with(|queue| {
                    let mut dropped = Vec::new();
                    while let Some(expect) = queue.pop_front() {
                        if matches!(expect, Expect::Sync | Expect::QueryEnd) {
                            return (dropped, true);
                        }
                        dropped.push(expect);
                    }
                    (dropped, false)
                });
                self.queue.undo_dropped(dropped);
                if !answered {
                    return Err(out_of_step(tag));
                }
                if body.first() == Some(&b'I') {
                    self.queue.schema_change_settled(&self.target);
                    if self.queue.idle() {
                        self.target.catalog.code_may_have_changed();
                    }
                }
                // Outside a transaction block no portal is left (cursors
                // WITH HOLD aside, which the gateway then treats as unknown).
                if body.first() == Some(&b'I') {
                    self.queue.prepared().end_transaction();
                }
                Ok(FrameAction::Forward)
            }
            _ => Ok(FrameAction::Forward),
        }
    }

    async fn on_description(&mut self, tag: u8, body: &[u8]) -> Result<FrameAction, MaskFailure> {
        enum Front {
            Client,
            Injected,
            Query(Option<ResultSource>),
            Other,
        }
        let front = self.queue.with(|queue| match queue.front() {
            Some(Expect::Describe) => {
                queue.pop_front();
                Front::Client
            }
            Some(Expect::InjectedDescribe) => {
                queue.pop_front();
                Front::Injected
            }
            Some(Expect::Query(statements)) => {
                Front::Query(statements.front().map(|s| s.source.clone()))
            }
            _ => Front::Other,
        });
        let fields = || {
            if tag == b'n' {
                Ok(Vec::new())
            } else {
                row_description(body)
                    .ok_or_else(|| MaskFailure("malformed RowDescription from the target".into()))
            }
        };
        match front {
            Front::Client | Front::Other => Ok(FrameAction::Forward),
            Front::Injected => {
                self.described = Some(fields()?);
                Ok(FrameAction::Drop)
            }
            Front::Query(source) => {
                self.finish_result();
                let plan = match (self.queue.masker(), &source) {
                    (Some(masker), Some(source)) if tag == b'T' => {
                        Some(self.plan(&masker, &fields()?, source).await?)
                    }
                    (Some(_), None) if tag == b'T' => {
                        return Err(MaskFailure(
                            "a result the gateway cannot tie to a statement".into(),
                        ))
                    }
                    _ => None,
                };
                let notice = plan.as_ref().and_then(nulled_notice);
                self.current = Current::Rows { plan, source };
                Ok(match notice {
                    Some(notice) => {
                        let mut out = BytesMut::from(body_frame(tag, body).as_slice());
                        out.extend_from_slice(&notice);
                        FrameAction::Replace(out)
                    }
                    None => FrameAction::Forward,
                })
            }
        }
    }

    async fn on_data_row(&mut self, body: &[u8]) -> Result<FrameAction, MaskFailure> {
        let mut notice = None;
        if matches!(self.current, Current::None) {
            // The first row of an Execute: its plan comes from the
            // gateway's own Describe of the portal.
            let (source, described) = self.queue.with(|queue| match queue.front() {
                Some(Expect::Execute {
                    source, described, ..
                }) => (Some(source.clone()), *described),
                _ => (None, false),
            });
            let plan = match self.queue.masker() {
                None => None,
                Some(masker) => {
                    let (Some(source), true, Some(fields)) =
                        (&source, described, self.described.take())
                    else {
                        return Err(MaskFailure(
                            "rows the gateway cannot describe while masking is on".into(),
                        ));
                    };
                    let plan = self.plan(&masker, &fields, source).await?;
                    notice = nulled_notice(&plan);
                    Some(plan)
                }
            };
            self.current = Current::Rows { plan, source };
        }
        let Current::Rows {
            plan: Some(plan), ..
        } = &self.current
        else {
            return Ok(match notice {
                Some(notice) => FrameAction::Replace(with_notice(notice, b'D', body, None)),
                None => FrameAction::Forward,
            });
        };
        let Some(masker) = self.queue.masker() else {
            return Ok(FrameAction::Forward);
        };
        if plan.is_noop() {
            return Ok(FrameAction::Forward);
        }
        let mut nulled = false;
        let masked = mask_row(&masker, plan, body, &mut self.result_counts, &mut nulled)?;
        if nulled && !self.content_null_noticed {
            self.content_null_noticed = true;
            let mut both = notice.unwrap_or_default();
            both.extend_from_slice(&content_nulled_notice());
            notice = Some(both);
        }
        Ok(match (notice, masked) {
            (None, None) => FrameAction::Forward,
            (None, Some(row)) => FrameAction::Replace(row),
            (Some(notice), row) => FrameAction::Replace(with_notice(notice, b'D', body, row)),
        })
    }

    async fn on_copy_out(&mut self, body: &[u8]) -> Result<FrameAction, MaskFailure> {
        let source = self.queue.with(|queue| match queue.front() {
            Some(Expect::Query(statements)) => statements.front().map(|s| s.source.clone()),
            Some(Expect::Execute { source, .. }) => Some(source.clone()),
            _ => None,
        });
        let Some(masker) = self.queue.masker() else {
            return Ok(FrameAction::Forward);
        };
        let Some(source) = source else {
            return Err(MaskFailure(
                "a COPY the gateway cannot tie to a statement".into(),
            ));
        };
        let Some(copy) = source.lineage.copy.clone() else {
            return self.copy_out_unsplit(&masker, body, source).await;
        };
        let binary = copy_out_response(body) == Some(1);
        let snapshot = self.snapshot(&source).await?;
        let planner = Planner {
            masker: &masker,
            snapshot: &snapshot,
            classifier: &self.classifier,
        };
        let columns = match &copy.source {
            CopySource::Relation { relation, columns } => {
                planner.copy_relation_plan(relation, columns)
            }
            CopySource::Query(lineage) => {
                let width = lineage.columns.as_ref().map_or(1, Vec::len);
                let query_source = ResultSource {
                    lineage: Arc::new((**lineage).clone()),
                    ..source.clone()
                };
                (0..width)
                    .map(|idx| planner.copy_query_plan(idx, &query_source))
                    .collect()
            }
        };
        let plan = CopyPlan {
            format: if binary {
                CopyFormat::Binary
            } else {
                copy.format
            },
            delimiter: copy.delimiter,
            header_pending: copy.header,
            columns,
            whole_rows: false,
        };
        if plan.format == CopyFormat::Binary && !plan.is_noop() {
            return Err(MaskFailure(
                "binary COPY of masked columns is not supported; use the text or CSV format".into(),
            ));
        }
        self.current = Current::Copy {
            plan,
            source: Some(source),
        };
        Ok(FrameAction::Forward)
    }

    /// A COPY in a form the gateway does not split: allowed only over
    /// relations without covered columns, its rows scanned whole.
    async fn copy_out_unsplit(
        &mut self,
        masker: &Masker,
        body: &[u8],
        source: ResultSource,
    ) -> Result<FrameAction, MaskFailure> {
        let snapshot = self.snapshot(&source).await?;
        let planner = Planner {
            masker,
            snapshot: &snapshot,
            classifier: &self.classifier,
        };
        let covered = source.lineage.opaque
            || planner.source_calls(&source)
            || copy_out_response(body) == Some(1)
            || planner.relations_rule(&source.lineage).is_some();
        if covered {
            return Err(MaskFailure(
                "this COPY's format (another QUOTE, ESCAPE or ENCODING, or binary) cannot be masked, and it reads masked columns; use the text or CSV format with the default quoting".into(),
            ));
        }
        let content = Some(masker.content_plan(None)).filter(|plan| !plan.is_empty());
        self.current = Current::Copy {
            plan: CopyPlan {
                format: CopyFormat::Text,
                delimiter: b'\t',
                header_pending: false,
                columns: vec![crate::masking::ColumnPlan {
                    content,
                    ..Default::default()
                }],
                whole_rows: true,
            },
            source: Some(source),
        };
        Ok(FrameAction::Forward)
    }

    fn on_copy_data(&mut self, body: &[u8]) -> Result<FrameAction, MaskFailure> {
        let Current::Copy { plan, .. } = &mut self.current else {
            return Ok(FrameAction::Forward);
        };
        let Some(masker) = self.queue.masker() else {
            return Ok(FrameAction::Forward);
        };
        Ok(
            match plan.mask_line(&masker, body, &mut self.result_counts)? {
                None => FrameAction::Forward,
                Some(line) => FrameAction::Replace(body_frame_owned(b'd', &line)),
            },
        )
    }

    async fn snapshot(&self, source: &ResultSource) -> Result<Arc<Snapshot>, MaskFailure> {
        self.snapshot_for(&[], source).await
    }

    async fn snapshot_for(
        &self,
        fields: &[FieldDescription],
        source: &ResultSource,
    ) -> Result<Arc<Snapshot>, MaskFailure> {
        let lineage = &source.lineage;
        let missing = |snapshot: &Snapshot| {
            fields.iter().any(|f| {
                f.table_oid != 0
                    && !is_system_oid(f.table_oid)
                    && !snapshot.relations.contains_key(&f.table_oid)
            }) || lacks_relations(snapshot, &lineage.relations)
        };
        self.target
            .catalog
            .snapshot(&self.target, missing)
            .await
            .map_err(|e| {
                MaskFailure(format!(
                    "the target's catalog, which masking needs, cannot be read: {e}"
                ))
            })
    }

    async fn plan(
        &self,
        masker: &Masker,
        fields: &[FieldDescription],
        source: &ResultSource,
    ) -> Result<ResultPlan, MaskFailure> {
        let snapshot = self.snapshot_for(fields, source).await?;
        let planner = Planner {
            masker,
            snapshot: &snapshot,
            classifier: &self.classifier,
        };
        Ok(planner.plan(fields, source))
    }

    /// Ends the result under way: audits what it masked.
    fn finish_result(&mut self) {
        self.content_null_noticed = false;
        let current = std::mem::replace(&mut self.current, Current::None);
        if self.result_counts.is_empty() {
            return;
        }
        let text = match &current {
            Current::Rows { source, .. } | Current::Copy { source, .. } => {
                source.as_ref().map(|s| s.text.clone())
            }
            Current::None => None,
        };
        self.gate.masked(
            &self.session,
            text.as_deref().unwrap_or(""),
            &self.result_counts,
        );
        metrics::counter!("portcullis_masked_values_total").increment(self.result_counts.total());
        self.session_counts.add(&self.result_counts);
        self.result_counts.clear();
    }

    /// Errors and notices: content detectors over their text fields, and
    /// the DETAIL of an error about a table with masked columns withheld
    /// (PostgreSQL puts row values there: `Key (email)=(...) already exists`).
    fn mask_fields(&mut self, tag: u8, body: &[u8]) -> FrameAction {
        let Some(masker) = self.queue.masker() else {
            return FrameAction::Forward;
        };
        let Some(fields) = message::error_fields(body) else {
            // Not UTF-8 (a SQL_ASCII database): it cannot be scanned, so it
            // does not go out.
            if tag == b'N' {
                return FrameAction::Drop;
            }
            let mut out = BytesMut::new();
            crate::codec::build::error_response(
                &mut out,
                "ERROR",
                "XX000",
                "an error the gateway cannot read (not UTF-8) was withheld, as it may hold masked values",
                None,
                None,
            );
            return FrameAction::Replace(out);
        };
        let table = fields
            .iter()
            .find(|(code, _)| *code == b't')
            .map(|(_, v)| *v);
        let schema = fields
            .iter()
            .find(|(code, _)| *code == b's')
            .map(|(_, v)| *v);
        let withhold_detail = table.is_some_and(|table| {
            masker.covers_columns() && table_has_masked_column(&masker, &self.target, schema, table)
        });
        // An error or a notice raised while running a statement that reads
        // covered data may quote a value (`invalid input syntax for type
        // integer: "123-45-6789"`, `relation "123-45-6789" does not exist`,
        // the notice of `to_tsquery` on an input without lexemes), or carry
        // it unquoted: its message and code say only its class of error,
        // and its hint, detail, context and source location are withheld.
        // `relation "x" does not exist` naming a relation the statement
        // itself names quotes the user's own text, not a value.
        let undefined = fields
            .iter()
            .any(|(code, value)| *code == b'C' && *value == "42P01")
            .then(|| {
                fields
                    .iter()
                    .find(|(code, _)| *code == b'M')
                    .and_then(|(_, m)| {
                        m.strip_prefix("relation \"")?
                            .strip_suffix("\" does not exist")
                    })
            })
            .flatten();
        let reads_covered =
            masker.covers_columns() && self.current_statement_reads_covered(&masker, undefined);
        // A notice does not stop the statement: hundreds of them, each
        // raised or not by a value (`to_tsquery` of an input without
        // lexemes), spelled a whole column in one statement (found in
        // attack). Those of a statement that reads covered data do not go
        // out at all.
        if reads_covered && tag == b'N' {
            return FrameAction::Drop;
        }
        // PostgreSQL's own errors name catalog objects in the schema, table,
        // column, data type and constraint fields; users' code
        // (`raise ... using column = ...`) may put anything there.
        let withhold_names = reads_covered && self.target.catalog.has_user_code();
        let sqlstate = if reads_covered {
            class_code(code_of(&fields))
        } else {
            code_of(&fields).to_string()
        };
        let mut changed = false;
        let mut out_fields: Vec<(u8, String)> = Vec::with_capacity(fields.len());
        for (code, value) in fields {
            let value = match code {
                b's' | b't' | b'c' | b'd' | b'n' if withhold_names => {
                    changed = true;
                    continue;
                }
                b'D' | b'W' | b'q' if reads_covered => {
                    changed = true;
                    "withheld: it may hold values of masked columns".to_string()
                }
                // The whole message: PostgreSQL puts some arguments in it
                // unquoted (found in attack: `to_ascii('x', translate(...))`
                // failed with a national id spelled in letters as the
                // encoding's name). Its code says only the class of error:
                // a CASE choosing among errors by a value told several
                // bits a statement through the full code.
                b'M' if reads_covered => {
                    changed = true;
                    withheld_message(&sqlstate)
                }
                b'C' if reads_covered && value != sqlstate => {
                    changed = true;
                    sqlstate.clone()
                }
                // Where in PostgreSQL's code the error was raised tells
                // which of the errors of one SQLSTATE it is (found in
                // attack: `numeric.c` or `float.c`).
                b'H' | b'F' | b'L' | b'R' if reads_covered => {
                    changed = true;
                    continue;
                }
                b'D' if withhold_detail => {
                    changed = true;
                    "detail withheld: it may hold values of masked columns".to_string()
                }
                b'M' | b'D' | b'H' | b'W' | b'q' | b's' | b't' | b'c' | b'd' | b'n' => {
                    match masker.mask_message(value, &mut self.session_counts) {
                        Some(masked) => {
                            changed = true;
                            masked
                        }
                        None => value.to_string(),
                    }
                }
                _ => value.to_string(),
            };
            out_fields.push((code, value));
        }
        if !changed {
            return FrameAction::Forward;
        }
        let borrowed: Vec<(u8, &str)> = out_fields.iter().map(|(c, v)| (*c, v.as_str())).collect();
        let mut out = BytesMut::new();
        write_fields(&mut out, tag, &borrowed);
        FrameAction::Replace(out)
    }

    /// Whether the statement the target answers now may read what a column
    /// rule in force covers (judged on the catalog as last read).
    fn current_statement_reads_covered(&self, masker: &Masker, undefined: Option<&str>) -> bool {
        enum Front {
            Statement(ResultSource),
            /// A Parse, Bind, Close of a statement or Describe: its errors
            /// quote the client's own text and parameters, not stored values.
            ClientText,
            Unknown,
        }
        let front = self.queue.with(|queue| match queue.front() {
            Some(Expect::Query(statements)) => statements
                .front()
                .map_or(Front::Unknown, |s| Front::Statement(s.source.clone())),
            Some(Expect::Execute { source, .. }) => Front::Statement(source.clone()),
            // Closing a portal ends its query, which may report on what
            // it read.
            Some(Expect::Complete {
                closes_portal: true,
                ..
            }) => Front::Unknown,
            Some(Expect::Complete { .. } | Expect::Describe | Expect::InjectedDescribe) => {
                Front::ClientText
            }
            Some(Expect::Sync | Expect::QueryEnd | Expect::QueryPoison) | None => Front::Unknown,
        });
        // Users' code runs where no statement shows it (a domain's check, a
        // trigger, a function folded at Bind): then no error is the
        // user's own text alone.
        let user_code = || self.target.catalog.has_user_code();
        let source = match front {
            Front::Statement(source) => source,
            Front::ClientText => return user_code(),
            // Not known: it may.
            Front::Unknown => return true,
        };
        if source.lineage.opaque || source.calls_functions || source.commits {
            return true;
        }
        // PostgreSQL finds a relation missing before anything runs.
        if undefined.is_some_and(|name| {
            source.lineage.relations.iter().any(|r| match &r.schema {
                Some(schema) => name == format!("{schema}.{}", r.name),
                None => name == r.name,
            })
        }) {
            return false;
        }
        if user_code() {
            return true;
        }
        // A statement that reads no relation quotes no stored value (`drop
        // table if exists t`: `table "t" does not exist, skipping`).
        if source.lineage.relations.is_empty() {
            return false;
        }
        // Read before DDL that ran since, or without a relation the
        // statement names (created since): it may read anything.
        let Some(snapshot) = self.target.catalog.cached() else {
            return true;
        };
        if lacks_relations(&snapshot, &source.lineage.relations) {
            return true;
        }
        let planner = Planner {
            masker,
            snapshot: &snapshot,
            classifier: &self.classifier,
        };
        planner.known_relations_rule(&source.lineage).is_some()
    }

    /// A NOTIFY payload can carry any value: content detectors over it.
    fn mask_notification(&mut self, body: &[u8]) -> FrameAction {
        let Some(masker) = self.queue.masker() else {
            return FrameAction::Forward;
        };
        let mut rest = body;
        let (Some(pid), Some(channel), Some(payload)) = (
            crate::codec::frame::take_i32(&mut rest),
            crate::codec::frame::take_cstr(&mut rest),
            crate::codec::frame::take_cstr(&mut rest),
        ) else {
            // Not UTF-8: it cannot be scanned, so it does not go out.
            return FrameAction::Drop;
        };
        let Some(masked) = masker.mask_message(payload, &mut self.session_counts) else {
            return FrameAction::Forward;
        };
        let mut payload_body = Vec::new();
        payload_body.extend_from_slice(&pid.to_be_bytes());
        payload_body.extend_from_slice(channel.as_bytes());
        payload_body.push(0);
        payload_body.extend_from_slice(masked.as_bytes());
        payload_body.push(0);
        FrameAction::Replace(body_frame_owned(b'A', &payload_body))
    }
}

/// Whether a table named in an error has a column a rule in force covers.
fn table_has_masked_column(
    masker: &Masker,
    target: &PgTarget,
    schema: Option<&str>,
    table: &str,
) -> bool {
    // Read before DDL that ran since: the table may be anything now.
    let Some(snapshot) = target.catalog.cached() else {
        return true;
    };
    let candidates = snapshot.named(schema, table);
    if candidates.is_empty() {
        // Not known: the detail may hold anything.
        return true;
    }
    candidates.iter().any(|rel| {
        rel.columns.iter().flatten().any(|column| {
            masker
                .column_rule(&portcullis_mask::ColumnMeta {
                    schema: &rel.schema,
                    table: &rel.name,
                    column: &column.name,
                    type_name: &column.type_name,
                })
                .is_some()
        })
    })
}

fn code_of<'f>(fields: &[(u8, &'f str)]) -> &'f str {
    fields
        .iter()
        .find(|(code, _)| *code == b'C')
        .map_or("XX000", |(_, value)| *value)
}

/// The code an error of a statement that reads covered data is sent with:
/// its class (`22000` for `22P02`), but the codes clients act on: a
/// serialization failure or deadlock (retry) and a cancel.
fn class_code(code: &str) -> String {
    match code {
        "40001" | "40P01" | "57014" => code.to_string(),
        _ => format!("{}000", code.get(..2).unwrap_or("XX")),
    }
}

/// What an error or notice of a statement that reads covered data says
/// instead of its message: its SQLSTATE, and the class PostgreSQL gives it.
fn withheld_message(code: &str) -> String {
    let class = match code.get(..2).unwrap_or("") {
        "00" => "a message",
        "01" => "warning",
        "02" => "no data",
        "08" => "connection exception",
        "0A" => "feature not supported",
        "21" => "cardinality violation",
        "22" => "data exception",
        "23" => "integrity constraint violation",
        "25" => "invalid transaction state",
        "2B" => "dependent privilege descriptors still exist",
        "34" => "invalid cursor name",
        "40" => "transaction rollback",
        "42" => "syntax error or access rule violation",
        "44" => "WITH CHECK OPTION violation",
        "53" => "insufficient resources",
        "54" => "program limit exceeded",
        "55" => "object not in prerequisite state",
        "57" => "operator intervention",
        "58" => "system error",
        "P0" => "PL/pgSQL error",
        "XX" => "internal error",
        _ => "error",
    };
    format!(
        "{class} (SQLSTATE {code}); the target's message is withheld: the statement reads masked columns, whose values a message can carry"
    )
}

/// A NoticeResponse saying which covered columns are sent as NULL.
fn nulled_notice(plan: &ResultPlan) -> Option<BytesMut> {
    let columns = plan.nulled_columns();
    if columns.is_empty() {
        return None;
    }
    let names: Vec<String> = columns.iter().map(|c| format!("`{c}`")).collect();
    Some(notice(
        &format!(
            "masked column {} is sent as NULL: a masked value cannot be sent in binary format",
            names.join(", ")
        ),
        "ask for the column in text format to see its masked value",
    ))
}

/// A NoticeResponse saying that binary values were sent as NULL because
/// they hold text a content rule covers.
fn content_nulled_notice() -> BytesMut {
    notice(
        "a binary value holding text a mask rule covers is sent as NULL",
        "ask for the column in text format to see it masked",
    )
}

fn notice(message: &str, hint: &str) -> BytesMut {
    let mut out = BytesMut::new();
    crate::codec::build::notice_or_error(
        &mut out,
        b'N',
        "NOTICE",
        "01000",
        message,
        None,
        Some(hint),
    );
    out
}

/// A notice, then a message: the one given, or the original rebuilt.
fn with_notice(notice: BytesMut, tag: u8, body: &[u8], replacement: Option<BytesMut>) -> BytesMut {
    let mut out = notice;
    match replacement {
        Some(message) => out.extend_from_slice(&message),
        None => out.extend_from_slice(&body_frame(tag, body)),
    }
    out
}

fn body_frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn body_frame_owned(tag: u8, body: &[u8]) -> BytesMut {
    BytesMut::from(body_frame(tag, body).as_slice())
}

#[cfg(test)]
mod tests {
    use super::withheld_message;

    #[test]
    fn a_withheld_message_says_only_which_error() {
        assert_eq!(
            withheld_message("22023"),
            "data exception (SQLSTATE 22023); the target's message is withheld: the statement reads masked columns, whose values a message can carry"
        );
        assert!(withheld_message("ZZ999").starts_with("error (SQLSTATE ZZ999)"));
        assert_eq!(super::class_code("22P02"), "22000");
        assert_eq!(super::class_code("40001"), "40001");
    }
}
