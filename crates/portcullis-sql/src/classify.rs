//! Splits a query string into statements and classifies each one.

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use pg_query::protobuf::{self, RawStmt};
use pg_query::NodeEnum;
use portcullis_core::{ColumnRefName, Lineage, SessionObjects, StatementInfo, StatementKind};

use crate::command::{command_of, Command};
use crate::error::ClassifyError;
use crate::functions::{function_effect, FunctionEffect};
use crate::lineage::{explain_lineage, statement_lineage};
use crate::tree::to_tree;
use crate::walk::{collect, Facts};

/// Classifies every statement of `sql`, in order. Empty and comment-only
/// input has no statement.
///
/// Also says whether every statement is a plain SELECT, INSERT, UPDATE,
/// DELETE or MERGE: the statements whose classification reads no constant
/// but `set_config`'s first argument (which `settings` shows). EXPLAIN and
/// COPY options, and SET values, are read.
pub(crate) fn classify_query(sql: &str) -> Result<(Vec<StatementInfo>, bool), ClassifyError> {
    let parsed = parse(sql)?;
    let plain = parsed.protobuf.stmts.iter().all(|raw| {
        matches!(
            raw.stmt.as_deref().and_then(|stmt| stmt.node.as_ref()),
            Some(
                NodeEnum::SelectStmt(_)
                    | NodeEnum::InsertStmt(_)
                    | NodeEnum::UpdateStmt(_)
                    | NodeEnum::DeleteStmt(_)
                    | NodeEnum::MergeStmt(_)
            )
        )
    });
    let statements = parsed
        .protobuf
        .stmts
        .iter()
        .map(|raw| classify_raw(sql, raw))
        .collect::<Result<_, _>>()?;
    Ok((statements, plain))
}

fn parse(sql: &str) -> Result<pg_query::ParseResult, ClassifyError> {
    // After parsing, pg_query summarises the tree with code that indexes and
    // casts without checks. The grammar never produces a tree that trips it,
    // but should one appear, the query is refused rather than the session
    // brought down.
    let parsed = panic::catch_unwind(AssertUnwindSafe(|| pg_query::parse(sql, 0)))
        .map_err(|_| ClassifyError::internal("the parser panicked"))?;
    Ok(parsed?)
}

fn classify_raw(sql: &str, raw: &RawStmt) -> Result<StatementInfo, ClassifyError> {
    let text = statement_text(sql, raw)?;
    let node = raw
        .stmt
        .as_deref()
        .and_then(|stmt| stmt.node.as_ref())
        .ok_or_else(|| ClassifyError::internal("the parser returned an empty statement"))?;
    Ok(analyse(node)?.into_info(text))
}

/// The text of one statement: PostgreSQL's own location and length (a
/// length of 0 means "to the end"), without surrounding whitespace.
fn statement_text(sql: &str, raw: &RawStmt) -> Result<String, ClassifyError> {
    let out_of_bounds = || ClassifyError::internal("statement location outside the query");
    let start = usize::try_from(raw.stmt_location).map_err(|_| out_of_bounds())?;
    let end = match usize::try_from(raw.stmt_len).map_err(|_| out_of_bounds())? {
        0 => sql.len(),
        len => start.checked_add(len).ok_or_else(out_of_bounds)?,
    };
    let text = sql.get(start..end).ok_or_else(out_of_bounds)?;
    Ok(trim_sql(text).to_owned())
}

/// `text` without the whitespace PostgreSQL's scanner skips around it:
/// only ASCII. A no-break space (U+00A0) and the like are part of a name
/// to PostgreSQL (found in attack: `drop table t, <U+00A0>` was shown to
/// reviewers as `drop table t,`, and dropped a second table).
/// Refuses a query with a `'...'` string that holds a backslash before a
/// quote (`'a\'`): the gateway reads strings with
/// `standard_conforming_strings` on, and pins it so on the target, but code
/// it cannot see (SQL given as text to `query_to_xml`, a procedure) may
/// turn it off there, and a query sent before the gateway hears of that is
/// read as other statements (found in attack: `select 'a\' || ' ; drop
/// table t; select ' -- '` ran the DROP). Only such a backslash makes the
/// two readings end a string apart; in `E'...'`, any backslash after a byte
/// outside ASCII (a multi-byte `client_encoding` reads the two as one
/// character).
pub(crate) fn refuse_backslash_quotes(sql: &str) -> Result<(), ClassifyError> {
    let tokens = pg_query::scan_tokens(sql).map_err(|error| match error {
        pg_query::Error::Scan(message) => ClassifyError::Syntax {
            message,
            position: None,
        },
        other => other.into(),
    })?;
    // In an `E'...'` string, a backslash after a byte outside ASCII may be
    // the second byte of a character in SJIS, BIG5 or GBK, which the same
    // code may set as `client_encoding`: every escape after it pairs
    // otherwise, and a quote may end the string (found in attack:
    // `E'\u{c1}\\\'`).
    let splits = |raw: &str| {
        let body = raw.strip_prefix(['N', 'n']).unwrap_or(raw);
        if body.starts_with('\'') {
            return body.contains("\\'");
        }
        raw.as_bytes()
            .windows(2)
            .any(|w| w[0] >= 0x80 && w[1] == b'\\')
    };
    let refused = tokens.iter().any(|token| {
        token.token == pg_query::protobuf::Token::Sconst as i32
            && usize::try_from(token.start)
                .ok()
                .zip(usize::try_from(token.end).ok())
                .and_then(|(start, end)| sql.get(start..end))
                .is_none_or(splits)
    });
    if refused {
        return Err(ClassifyError::BackslashQuote);
    }
    Ok(())
}

pub(crate) fn trim_sql(text: &str) -> &str {
    text.trim_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c'])
}

/// One statement, analysed but not yet summarised.
#[derive(Debug)]
struct Analysis {
    command: Command,
    facts: Facts,
    prepares: Option<String>,
    lineage: Lineage,
    objects: SessionObjects,
}

fn inner(query: Option<&protobuf::Node>) -> Result<&NodeEnum, ClassifyError> {
    query
        .and_then(|query| query.node.as_ref())
        .ok_or_else(|| ClassifyError::internal("a statement without its inner statement"))
}

fn analyse(node: &NodeEnum) -> Result<Analysis, ClassifyError> {
    // The tree is built and walked once; the lineage reads the same tree and
    // takes over the relations the walk found.
    let tree_facts = |node: &NodeEnum| -> Result<(Facts, Lineage), ClassifyError> {
        let tree = to_tree(node).map_err(|error| ClassifyError::internal(error.to_string()))?;
        let mut facts = collect(&tree);
        let lineage = statement_lineage(&tree, &mut facts);
        Ok((facts, lineage))
    };
    let mut analysis = match node {
        // EXPLAIN ANALYZE runs the statement: it is that statement. Its
        // result is still a plan, not the statement's rows.
        NodeEnum::ExplainStmt(explain) if explain_analyzes(explain) => {
            let mut analysis = analyse(inner(explain.query.as_deref())?)?;
            // It stores what the statement stores, and its row counts tell
            // what the statement's conditions chose.
            let written = analysis.lineage.written.take();
            let mut conditions = std::mem::take(&mut analysis.lineage.conditions);
            // The plan tells how often each part of the output list ran
            // (`loops=`, `never executed`): what it computes chose that.
            match &analysis.lineage.columns {
                Some(columns) if !analysis.lineage.opaque => {
                    conditions.extend(columns.iter().flat_map(|c| c.refs.iter().cloned()));
                }
                _ => conditions.push(ColumnRefName {
                    qualifiers: Vec::new(),
                    column: None,
                }),
            }
            conditions.sort();
            conditions.dedup();
            analysis.lineage = explain_lineage(std::mem::take(&mut analysis.lineage));
            analysis.lineage.written = written;
            analysis.lineage.conditions = conditions;
            analysis.lineage.counts_planning = explain_counts_planning(explain);
            return Ok(analysis);
        }
        // Plain EXPLAIN only plans. Planning may still evaluate stable and
        // immutable functions with constant arguments, so the functions keep
        // their effect; the inner statement's own effects do not apply.
        NodeEnum::ExplainStmt(explain) => {
            let query = inner(explain.query.as_deref())?;
            let (mut facts, lineage) = tree_facts(query)?;
            facts.kinds.clear();
            // The planner's row estimates come from the statistics of
            // what the conditions read: samples of their values.
            let conditions = lineage.conditions.clone();
            let mut explained = explain_lineage(lineage);
            explained.conditions = conditions;
            explained.counts_planning = explain_counts_planning(explain);
            Analysis {
                command: command_of(node),
                facts,
                prepares: None,
                lineage: explained,
                objects: SessionObjects::default(),
            }
        }
        // `PREPARE p (checked) AS ...`: a value EXECUTE gives it is made
        // of its parameter's type.
        NodeEnum::PrepareStmt(prepare) => {
            let mut analysis = analyse(inner(prepare.query.as_deref())?)?;
            let tree = to_tree(node).map_err(|error| ClassifyError::internal(error.to_string()))?;
            let mut types: std::collections::BTreeSet<String> =
                std::mem::take(&mut analysis.lineage.types)
                    .into_iter()
                    .collect();
            types.extend(collect(&tree).types);
            analysis.lineage.types = types.into_iter().collect();
            analysis.prepares = Some(prepare.name.clone());
            analysis
        }
        // A cursor runs its query as it is fetched: DECLARE reads (or writes)
        // exactly what its query does. psql's FETCH_COUNT sends every SELECT
        // this way, so it must not escape the policies on SELECT.
        NodeEnum::DeclareCursorStmt(declare) => {
            let mut analysis = analyse(inner(declare.query.as_deref())?)?;
            analysis.command.name = "DECLARE CURSOR".to_owned();
            analysis.objects.declares = Some(declare.portalname.clone());
            analysis
        }
        _ => {
            let (mut facts, lineage) = tree_facts(node)?;
            if let NodeEnum::CreateFunctionStmt(create) = node {
                for statement in sql_string_body(create)? {
                    // A body that creates a function with a body of its own
                    // would nest without end: one level is read.
                    if let NodeEnum::CreateFunctionStmt(inner) = &statement {
                        if !sql_string_body(inner)?.is_empty() {
                            return Err(ClassifyError::TooDeep);
                        }
                    }
                    let body = analyse(&statement)?;
                    facts.kinds.extend(body.facts.kinds);
                    facts.kinds.insert(body.command.kind);
                    facts.has_where &= body.facts.has_where && !body.command.deletes_all_rows;
                    facts.tables.extend(body.facts.tables);
                    facts.functions.extend(body.facts.functions);
                    facts.settings.extend(body.facts.settings);
                }
            }
            Analysis {
                command: command_of(node),
                facts,
                prepares: None,
                lineage,
                objects: session_objects(node),
            }
        }
    };
    analysis
        .facts
        .tables
        .extend(analysis.command.named_relations.drain(..));
    Ok(analysis)
}

/// The statements of a `LANGUAGE sql` function or procedure whose body is
/// a string (`AS '...'`, `AS $$...$$`), which PostgreSQL parses only when
/// it runs: a call is decided as a call, so what the body does is decided
/// when the function is created, as the creating statement's own effects
/// (a body that deletes every row makes the CREATE an unbounded delete). A
/// body written `BEGIN ATOMIC ... END` or `RETURN ...` is already part of
/// the statement's tree. A string body that does not parse is refused.
fn sql_string_body(create: &protobuf::CreateFunctionStmt) -> Result<Vec<NodeEnum>, ClassifyError> {
    let option = |name: &str| {
        create
            .options
            .iter()
            .find_map(|option| match option.node.as_ref() {
                Some(NodeEnum::DefElem(element)) if element.defname == name => {
                    element.arg.as_deref().and_then(|arg| arg.node.as_ref())
                }
                _ => None,
            })
    };
    let sql = matches!(option("language"), Some(NodeEnum::String(language)) if language.sval.eq_ignore_ascii_case("sql"));
    let body = match option("as") {
        Some(NodeEnum::List(list)) => {
            match list.items.first().and_then(|item| item.node.as_ref()) {
                Some(NodeEnum::String(body)) => Some(body.sval.as_str()),
                _ => None,
            }
        }
        _ => None,
    };
    let (true, Some(body)) = (sql, body) else {
        return Ok(Vec::new());
    };
    let parsed = parse(body).map_err(|error| match error {
        ClassifyError::Syntax { message, .. } => ClassifyError::Syntax {
            message: format!("the function's body: {message}"),
            position: None,
        },
        other => other,
    })?;
    Ok(parsed
        .protobuf
        .stmts
        .into_iter()
        .filter_map(|raw| raw.stmt.and_then(|stmt| stmt.node))
        .collect())
}

/// The prepared statements and cursors a statement ends.
fn session_objects(node: &NodeEnum) -> SessionObjects {
    let all_or = |name: &str| {
        if name.is_empty() {
            "*".to_owned()
        } else {
            name.to_owned()
        }
    };
    match node {
        NodeEnum::DeallocateStmt(deallocate) => SessionObjects {
            deallocates: Some(if deallocate.isall {
                "*".to_owned()
            } else {
                all_or(&deallocate.name)
            }),
            ..SessionObjects::default()
        },
        NodeEnum::ClosePortalStmt(close) => SessionObjects {
            closes: Some(all_or(&close.portalname)),
            ..SessionObjects::default()
        },
        NodeEnum::FetchStmt(fetch) => SessionObjects {
            fetches: Some(fetch.portalname.clone()),
            ..SessionObjects::default()
        },
        NodeEnum::DiscardStmt(discard)
            if discard.target == protobuf::DiscardMode::DiscardAll as i32 =>
        {
            SessionObjects {
                deallocates: Some("*".to_owned()),
                closes: Some("*".to_owned()),
                ..SessionObjects::default()
            }
        }
        _ => SessionObjects::default(),
    }
}

/// Whether EXPLAIN runs its statement. Any `analyze` option that is not
/// clearly false counts, so an option PostgreSQL would reject errs on the
/// side of the stronger classification.
fn explain_analyzes(explain: &protobuf::ExplainStmt) -> bool {
    explain_option(explain, "analyze")
}

/// Whether EXPLAIN counts the buffers or the memory its planning used
/// (`explain (buffers) ...`): the catalog lookups planning made, so what
/// earlier statements left in the catalog's caches.
fn explain_counts_planning(explain: &protobuf::ExplainStmt) -> bool {
    explain_option(explain, "buffers") || explain_option(explain, "memory")
}

/// Whether EXPLAIN's option `name` is on: given and not clearly false.
fn explain_option(explain: &protobuf::ExplainStmt, name: &str) -> bool {
    explain.options.iter().any(|option| {
        let Some(NodeEnum::DefElem(option)) = option.node.as_ref() else {
            return false;
        };
        if !option.defname.eq_ignore_ascii_case(name) {
            return false;
        }
        match option.arg.as_deref().and_then(|arg| arg.node.as_ref()) {
            Some(NodeEnum::String(value)) => {
                !(value.sval.eq_ignore_ascii_case("false")
                    || value.sval.eq_ignore_ascii_case("off"))
            }
            Some(NodeEnum::Integer(value)) => value.ival != 0,
            Some(NodeEnum::Boolean(value)) => value.boolval,
            _ => true,
        }
    })
}

impl Analysis {
    fn into_info(self, text: String) -> StatementInfo {
        let Analysis {
            command,
            facts,
            prepares,
            lineage,
            objects,
        } = self;
        let mut kinds: BTreeSet<StatementKind> = facts.kinds;
        kinds.insert(command.kind);
        for function in &facts.functions {
            match function_effect(function) {
                FunctionEffect::ReadOnly => {}
                FunctionEffect::Privilege => {
                    kinds.insert(StatementKind::Dcl);
                }
                FunctionEffect::Unknown => {
                    kinds.insert(StatementKind::Call);
                }
            }
        }
        let kind = kinds
            .iter()
            .copied()
            .max_by_key(|kind| strength(*kind))
            .unwrap_or(command.kind);
        let writes =
            command.writes || facts.locks_rows || kinds.iter().any(|kind| kind_writes(*kind));
        StatementInfo {
            kind,
            kinds: kinds.into_iter().collect(),
            command: command.name,
            tables: facts.tables.into_iter().collect(),
            functions: facts.functions.into_iter().collect(),
            has_where: facts.has_where && !command.deletes_all_rows,
            writes,
            text,
            prepares,
            objects,
            executes: facts.executes,
            prepared_text: None,
            settings: facts.settings.into_iter().collect(),
            lineage: Arc::new(lineage),
            shape: None,
        }
    }
}

/// Makes `statement` a call of `functions`: code its text does not show
/// that runs with it (a view's definition, an operator's function, a
/// domain's check, found in the target's catalog). `Call` joins its kinds,
/// and it counts as a write. A statement that did not write (a SELECT, a
/// COPY TO) becomes a `call`; one that writes keeps its kind, so that a
/// policy on `update` or `copy` still sees an UPDATE or a COPY FROM.
pub fn calls_unseen(statement: &mut StatementInfo, functions: impl IntoIterator<Item = String>) {
    statement.functions.extend(functions);
    statement.functions.sort();
    statement.functions.dedup();
    if !statement.kinds.contains(&StatementKind::Call) {
        statement.kinds.push(StatementKind::Call);
        statement.kinds.sort();
    }
    if !statement.writes {
        statement.kind = StatementKind::Call;
    }
    statement.writes = true;
}

/// How strongly an effect characterises a statement: the strongest effect
/// found is the statement's `kind`.
pub(crate) fn strength(kind: StatementKind) -> u8 {
    use StatementKind as K;
    match kind {
        K::Dcl => 12,
        K::Ddl => 11,
        K::Other => 10,
        K::Call => 9,
        K::Copy => 8,
        K::Delete => 7,
        K::Update => 6,
        K::Merge => 5,
        K::Insert => 4,
        K::Set => 3,
        K::Utility => 2,
        K::Transaction => 1,
        K::Select => 0,
    }
}

/// Whether an effect found anywhere in a statement makes it a write. COPY,
/// SET and the utilities write or not depending on the command, which
/// `command_of` decides.
pub(crate) fn kind_writes(kind: StatementKind) -> bool {
    use StatementKind as K;
    match kind {
        K::Insert | K::Update | K::Delete | K::Merge | K::Ddl | K::Dcl | K::Call | K::Other => true,
        K::Select | K::Copy | K::Set | K::Transaction | K::Utility => false,
    }
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;

/// What a `SET name = 'value'` (or `RESET name`, `SET name TO DEFAULT`) in
/// `statement` does to the setting `name`: `Some(Some(value))` when it sets
/// a string constant, `Some(None)` when it resets it, `None` when the
/// statement is not about `name`.
pub fn setting_assignment(statement: &str, name: &str) -> Option<Option<String>> {
    let parsed = parse(statement).ok()?;
    let mut found = None;
    for raw in &parsed.protobuf.stmts {
        let Some(NodeEnum::VariableSetStmt(set)) =
            raw.stmt.as_deref().and_then(|s| s.node.as_ref())
        else {
            continue;
        };
        if !set.name.eq_ignore_ascii_case(name) {
            continue;
        }
        found = Some(
            if set.kind == protobuf::VariableSetKind::VarSetValue as i32 {
                set.args.first().and_then(|arg| match arg.node.as_ref() {
                    Some(NodeEnum::AConst(constant)) => match constant.val.as_ref() {
                        Some(protobuf::a_const::Val::Sval(s)) => Some(s.sval.clone()),
                        _ => None,
                    },
                    _ => None,
                })
            } else {
                None
            },
        );
    }
    found
}
