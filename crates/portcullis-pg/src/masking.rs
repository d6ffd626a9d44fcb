//! Masking of results: which mask rule covers each column of a result, and
//! the masking of each row before it reaches the client.
//!
//! A column that RowDescription ties to a table column is matched against the
//! column rules by schema, table, column and type. A column of a view, or a
//! computed column (`upper(email)`, a column of a subquery), is followed
//! through the statement's lineage and, for views, through the view's own
//! definition: it is covered as a whole when anything it is computed from is
//! covered, and whenever that cannot be proven otherwise (a function the
//! parser cannot see into, a rename through a subquery). Content rules scan
//! every text value whatever its source.
//!
//! The Gate decided which rules are in force for the session (the `unmask`
//! decisions); this module only applies them.

use crate::catalog::{is_system_name, Relation, Snapshot};
use crate::codec::result::{data_row, write_data_row, FieldDescription};
use bytes::BytesMut;
use portcullis_core::{ColumnRefName, Lineage, OutputColumn, RelationRef, StatementInfo};
use portcullis_mask::{ColumnMeta, ContentPlan, MaskCounts, Masked, Masker, RuleIdx};
use portcullis_sql::Classifier;
use std::borrow::Cow;
use std::sync::Arc;

/// How deep views over views are followed before a column is taken as covered.
const MAX_VIEW_DEPTH: usize = 8;

/// Built-in type OIDs the masking treats specially.
mod oid {
    pub const BOOL: u32 = 16;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const NUMERIC: u32 = 1700;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;

    /// Types whose values cannot hold anything a detector finds.
    pub const NOTHING_TO_FIND: &[u32] = &[
        BOOL,
        DATE,
        TIME,
        TIMETZ,
        TIMESTAMP,
        TIMESTAMPTZ,
        INTERVAL,
        UUID,
        FLOAT4,
        FLOAT8,
    ];

    /// Scalars whose binary form is not text (their text form is scanned).
    pub const BINARY_NOT_TEXT: &[u32] = &[INT2, INT4, INT8, OID, NUMERIC];
}

/// Where one result comes from.
#[derive(Clone, Debug)]
pub struct ResultSource {
    pub lineage: Arc<Lineage>,
    /// The statement calls a function that is not a known read-only
    /// built-in: what it returns cannot be followed.
    pub calls_functions: bool,
    /// The statement writes (`INSERT ... RETURNING`, `UPDATE ... RETURNING`):
    /// a returned table column may hold a value just copied from another.
    pub writes: bool,
    /// The statement's text, for the audit entry of what was masked.
    pub text: Arc<str>,
    /// The statement may change relations or views (DDL): the catalog that
    /// masking reads is read again once it has run.
    pub changes_schema: bool,
    /// The functions it calls, as written: one a user made under a
    /// built-in's name cannot be followed.
    pub functions: Vec<String>,
    /// The statement may end a transaction, which runs the queries of
    /// cursors WITH HOLD and deferred triggers: what it reports may come
    /// from anywhere.
    pub commits: bool,
}

/// What to do with one column's values.
#[derive(Clone, Debug, Default)]
pub struct ColumnPlan {
    pub name: String,
    /// The column rule that masks the whole value, and whether the value is
    /// derived from the covered column rather than the column itself.
    pub whole: Option<(RuleIdx, bool)>,
    /// Content rules to run over the value, when it is text.
    pub content: Option<ContentPlan>,
    /// The value is JSON (`json`, or `jsonb`).
    pub json: bool,
    /// The value is binary `jsonb`: a version byte, then JSON text.
    pub jsonb_binary: bool,
    /// The value is binary and not text: a covered one is sent as NULL.
    pub binary_opaque: bool,
}

impl ColumnPlan {
    fn is_noop(&self) -> bool {
        self.whole.is_none() && self.content.is_none()
    }

    /// Whether a NULL in this column is masked like a value: it was
    /// computed from a covered one, and tells as much as a value
    /// (`nullif(ascii(email) & 1, 0)`).
    pub fn masks_null(&self) -> bool {
        matches!(self.whole, Some((_, true)))
    }
}

/// What to do with each column of one result.
#[derive(Clone, Debug, Default)]
pub struct ResultPlan {
    pub columns: Vec<ColumnPlan>,
}

impl ResultPlan {
    pub fn is_noop(&self) -> bool {
        self.columns.iter().all(ColumnPlan::is_noop)
    }

    /// Columns sent as NULL because they are covered and binary, for the
    /// notice that says so.
    pub fn nulled_columns(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| c.whole.is_some() && c.binary_opaque)
            .map(|c| c.name.as_str())
            .collect()
    }
}

/// A value that could not be masked: the session cannot go on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MaskFailure(pub String);

/// Decides which rules cover which column.
pub struct Planner<'a> {
    pub masker: &'a Masker,
    pub snapshot: &'a Snapshot,
    pub classifier: &'a Classifier,
}

impl Planner<'_> {
    /// The plan of a result described by `fields`.
    pub fn plan(&self, fields: &[FieldDescription], source: &ResultSource) -> ResultPlan {
        let columns = fields
            .iter()
            .enumerate()
            .map(|(idx, field)| self.column_plan(idx, field, source))
            .collect();
        ResultPlan { columns }
    }

    /// The plan of the `idx`-th column of a `COPY ... TO` of a relation, or
    /// `None` when the relation is not known.
    pub fn copy_relation_plan(
        &self,
        relation: &RelationRef,
        columns: &[String],
    ) -> Vec<ColumnPlan> {
        let candidates = self
            .snapshot
            .named(relation.schema.as_deref(), &relation.name);
        let Some(rel) = candidates.first() else {
            // Not in the catalog: every value is taken as covered.
            let whole = self.masker.any_column_rule().map(|rule| (rule, true));
            let width = columns.len().max(1);
            return (0..width)
                .map(|_| ColumnPlan {
                    whole,
                    content: self.content(None),
                    ..ColumnPlan::default()
                })
                .collect();
        };
        let attnums: Vec<i16> = if columns.is_empty() {
            (1..=rel.columns.len())
                .filter_map(|n| i16::try_from(n).ok())
                .filter(|n| rel.column(*n).is_some())
                .collect()
        } else {
            columns
                .iter()
                .map(|name| {
                    (1..=rel.columns.len())
                        .filter_map(|n| i16::try_from(n).ok())
                        .find(|n| rel.column(*n).is_some_and(|c| &c.name == name))
                        .unwrap_or(0)
                })
                .collect()
        };
        attnums
            .into_iter()
            .map(|attnum| {
                // Every candidate of an unqualified name counts.
                let whole = candidates
                    .iter()
                    .find_map(|rel| self.table_column_rule(rel, attnum, 0));
                let meta = rel.column(attnum).map(|column| ColumnMeta {
                    schema: &rel.schema,
                    table: &rel.name,
                    column: &column.name,
                    type_name: &column.type_name,
                });
                ColumnPlan {
                    name: meta.map(|m| m.column.to_string()).unwrap_or_default(),
                    whole,
                    content: self.content(meta.as_ref()),
                    json: meta.is_some_and(|m| matches!(m.type_name, "json" | "jsonb")),
                    ..ColumnPlan::default()
                }
            })
            .collect()
    }

    /// Whether what a statement computes may come from code the gateway
    /// cannot follow: a function not known to be a read-only built-in, or
    /// a user's function or operator behind a built-in's name.
    pub fn statement_calls(&self, statement: &StatementInfo) -> bool {
        calls_functions(statement) || self.snapshot.runs_user_code(&statement.functions)
    }

    /// [`Planner::statement_calls`] for the statement behind a result.
    pub fn source_calls(&self, source: &ResultSource) -> bool {
        source.calls_functions || self.snapshot.runs_user_code(&source.functions)
    }

    /// The plan of the `idx`-th column of a `COPY (query) TO`.
    pub fn copy_query_plan(&self, idx: usize, source: &ResultSource) -> ColumnPlan {
        ColumnPlan {
            whole: self
                .derived_rule(idx, &source.lineage, self.source_calls(source), 0)
                .map(|rule| (rule, true)),
            content: self.content(None),
            ..ColumnPlan::default()
        }
    }

    fn content(&self, column: Option<&ColumnMeta<'_>>) -> Option<ContentPlan> {
        if !self.masker.has_content_rules() {
            return None;
        }
        Some(self.masker.content_plan(column)).filter(|plan| !plan.is_empty())
    }

    fn column_plan(
        &self,
        idx: usize,
        field: &FieldDescription,
        source: &ResultSource,
    ) -> ColumnPlan {
        let relation = (field.table_oid != 0)
            .then(|| self.snapshot.relations.get(&field.table_oid))
            .flatten();
        let (whole, meta) = match relation {
            // A whole row of the table (`select c from customers c`).
            Some(rel) if field.column_attnum == 0 => {
                (self.relation_rule(rel, 0).map(|rule| (rule, true)), None)
            }
            Some(rel) => {
                let meta = rel.column(field.column_attnum).map(|column| ColumnMeta {
                    schema: &rel.schema,
                    table: &rel.name,
                    column: &column.name,
                    type_name: &column.type_name,
                });
                let meta = if rel.is_view() { None } else { meta };
                let rule = self
                    .table_column_rule(rel, field.column_attnum, 0)
                    .or_else(|| {
                        // `update customers set name = email returning name`.
                        source
                            .writes
                            .then(|| {
                                self.derived_rule(
                                    idx,
                                    &source.lineage,
                                    self.source_calls(source),
                                    0,
                                )
                            })
                            .flatten()
                            .map(|rule| (rule, true))
                    });
                (rule, meta)
            }
            // A column of the system catalogs (`pg_class`, `pg_stat_ssl`):
            // no rule covers those, but for the planner's statistics, which
            // hold sampled values of every column.
            None if is_system_oid(field.table_oid) => (
                reads_statistics(&source.lineage)
                    .then(|| self.masker.any_column_rule())
                    .flatten()
                    .map(|r| (r, true)),
                None,
            ),
            // A table column the catalog does not know even after reading it
            // again: nothing proves it harmless.
            None if field.table_oid != 0 => {
                (self.masker.any_column_rule().map(|r| (r, true)), None)
            }
            None => (
                self.derived_rule(idx, &source.lineage, self.source_calls(source), 0)
                    .map(|rule| (rule, true)),
                None,
            ),
        };
        let text_like = self.is_text_like(field.type_oid);
        let json = matches!(field.type_oid, oid::JSON | oid::JSONB);
        let binary = field.format == 1;
        // Text values are scanned whatever their type, but for types whose
        // text cannot hold a finding; binary ones too (a `bytea`, an array
        // or a record of text carries its text as bytes), but for fixed-size
        // scalars.
        let nothing_to_find = oid::NOTHING_TO_FIND.contains(&field.type_oid)
            || (binary && oid::BINARY_NOT_TEXT.contains(&field.type_oid));
        let scannable = !nothing_to_find;
        ColumnPlan {
            name: field.name.clone(),
            whole,
            content: if scannable {
                self.content(meta.as_ref())
            } else {
                None
            },
            json,
            jsonb_binary: binary && field.type_oid == oid::JSONB,
            binary_opaque: binary && !text_like,
        }
    }

    fn is_text_like(&self, type_oid: u32) -> bool {
        matches!(
            type_oid,
            oid::TEXT
                | oid::VARCHAR
                | oid::BPCHAR
                | oid::NAME
                | oid::CHAR
                | oid::JSON
                | oid::JSONB
                | oid::XML
                | oid::UNKNOWN
        ) || self.snapshot.text_types.contains(&type_oid)
    }

    /// The rule covering column `attnum` of a table, or of a view (through
    /// its definition; the value is then derived).
    fn table_column_rule(
        &self,
        rel: &Relation,
        attnum: i16,
        depth: usize,
    ) -> Option<(RuleIdx, bool)> {
        if rel.is_view() {
            return self
                .view_column_rule(rel, attnum, depth)
                .map(|rule| (rule, true));
        }
        if self.snapshot.reads_foreign(rel) {
            return self.masker.any_column_rule().map(|rule| (rule, true));
        }
        let column = rel.column(attnum)?;
        let meta = ColumnMeta {
            schema: &rel.schema,
            table: &rel.name,
            column: &column.name,
            type_name: &column.type_name,
        };
        self.masker.column_rule(&meta).map(|rule| (rule, false))
    }

    /// The rule that masks a value computed from column `attnum` of a
    /// relation (see [`Masker::derived_rule`]).
    fn derived_column_rule(&self, rel: &Relation, attnum: i16, depth: usize) -> Option<RuleIdx> {
        if rel.is_view() {
            return self.view_column_rule(rel, attnum, depth);
        }
        if self.snapshot.reads_foreign(rel) {
            return self.masker.any_column_rule();
        }
        let column = rel.column(attnum)?;
        self.masker.derived_rule(&ColumnMeta {
            schema: &rel.schema,
            table: &rel.name,
            column: &column.name,
            type_name: &column.type_name,
        })
    }

    /// A view's query, classified; `Err` with the rule that covers all of
    /// it when the view nests too deep, or its definition cannot be read or
    /// parsed (it then proves nothing).
    fn view_statement(
        &self,
        view: &Relation,
        depth: usize,
    ) -> Result<StatementInfo, Option<RuleIdx>> {
        if depth >= MAX_VIEW_DEPTH {
            return Err(self.masker.any_column_rule());
        }
        view.definition
            .as_deref()
            .and_then(|sql| self.classifier.classify(sql).ok())
            .and_then(|statements| statements.first().cloned())
            .ok_or_else(|| self.masker.any_column_rule())
    }

    fn view_column_rule(&self, view: &Relation, attnum: i16, depth: usize) -> Option<RuleIdx> {
        let statement = match self.view_statement(view, depth) {
            Ok(statement) => statement,
            Err(rule) => return rule,
        };
        // A materialized view holds the rows its query gave when it was
        // last refreshed: a view that query reads may have been redefined
        // since, so only what it reads from tables can be followed.
        if view.kind == b'm'
            && statement.lineage.relations.iter().any(|r| {
                let named = self.snapshot.named(r.schema.as_deref(), &r.name);
                named.iter().any(|rel| rel.is_view())
                    || (named.is_empty() && !is_system_name(r.schema.as_deref(), &r.name))
            })
        {
            return self.masker.any_column_rule();
        }
        let calls = self.statement_calls(&statement);
        let idx = usize::try_from(attnum).ok()?.checked_sub(1)?;
        self.derived_rule(idx, &statement.lineage, calls, depth + 1)
    }

    /// The rule covering output column `idx` of a statement, followed
    /// through its lineage.
    fn derived_rule(
        &self,
        idx: usize,
        lineage: &Lineage,
        calls: bool,
        depth: usize,
    ) -> Option<RuleIdx> {
        let column = lineage.columns.as_ref().and_then(|c| c.get(idx));
        self.output_rule(column, lineage, calls, depth)
    }

    /// The rule covering a value computed as `column` (`None`: not known)
    /// in a statement of this lineage.
    fn output_rule(
        &self,
        column: Option<&OutputColumn>,
        lineage: &Lineage,
        calls: bool,
        depth: usize,
    ) -> Option<RuleIdx> {
        // A constant given to users' code (`(1).lookup`, an operator, a
        // cast) may come back as anything that code reads.
        if column.is_some_and(|c| c.harmless) && !calls {
            return None;
        }
        if lineage.opaque || calls || column.is_some_and(|c| c.opaque) || reads_statistics(lineage)
        {
            return self.masker.any_column_rule();
        }
        match column {
            Some(column) if !lineage.renames => column
                .refs
                .iter()
                .find_map(|r| self.ref_rule(r, &lineage.relations, depth)),
            _ => self.relations_rule(lineage),
        }
    }

    /// The rule covering what a statement writes: a value copied from a
    /// covered column into another would be read back from there in clear.
    pub fn written_rule(&self, lineage: &Lineage, calls: bool) -> Option<RuleIdx> {
        let written = lineage.written.as_ref()?;
        self.output_rule(Some(written), lineage, calls, 0)
    }

    /// The first column a statement's conditions name (see
    /// `Lineage::conditions`) that a rule covers, with the rule: its rows
    /// would tell the column's values. A qualifier that names no relation
    /// of the statement (a subquery's or a CTE's, `excluded`) stands for
    /// anything: the name is then matched against every relation.
    pub fn condition_rule<'l>(&self, lineage: &'l Lineage) -> Option<(&'l ColumnRefName, RuleIdx)> {
        self.first_covered(&lineage.conditions, lineage)
    }

    /// The first column a statement's outputs compute over (see
    /// `Lineage::computed`) that a rule covers, with the rule: whether and
    /// where the computation fails would tell the column's values
    /// (`1 / (ascii(substr(national_id, 1, 1)) - g)` over a series fails
    /// at the row equal to the character). Matched as conditions are.
    pub fn computed_rule<'l>(&self, lineage: &'l Lineage) -> Option<(&'l ColumnRefName, RuleIdx)> {
        self.first_covered(&lineage.computed, lineage)
    }

    /// The first of `references` (conditions or computed-over columns of a
    /// statement of this lineage) that a rule covers.
    fn first_covered<'l>(
        &self,
        references: &'l [ColumnRefName],
        lineage: &Lineage,
    ) -> Option<(&'l ColumnRefName, RuleIdx)> {
        references.iter().find_map(|reference| {
            let rule = self
                .ref_rule(reference, &lineage.relations, 0)
                .or_else(|| {
                    let qualifier = reference.qualifiers.last()?;
                    let names_a_relation = lineage.relations.iter().any(|r| {
                        r.alias.as_ref().unwrap_or(&r.name) == qualifier || &r.name == qualifier
                    });
                    if names_a_relation {
                        return None;
                    }
                    let bare = ColumnRefName {
                        qualifiers: Vec::new(),
                        column: reference.column.clone(),
                    };
                    self.ref_rule(&bare, &lineage.relations, 0)
                })?;
            Some((reference, rule))
        })
    }

    /// A relation the statement names that the target's catalog does not
    /// hold (yet): a table or view made earlier in the same query, or none
    /// at all. What it holds cannot be told.
    pub fn unknown_relation<'l>(&self, lineage: &'l Lineage) -> Option<&'l RelationRef> {
        lineage.relations.iter().find(|r| {
            !is_system_name(r.schema.as_deref(), &r.name)
                && self.snapshot.named(r.schema.as_deref(), &r.name).is_empty()
        })
    }

    /// Like [`Planner::relations_rule`], but a relation the catalog does not
    /// know counts as covering nothing (it holds no data yet), and the
    /// system views with samples count as covered: for judging what an
    /// error may quote.
    pub fn known_relations_rule(&self, lineage: &Lineage) -> Option<RuleIdx> {
        if reads_statistics(lineage) {
            return self.masker.any_column_rule();
        }
        lineage.relations.iter().find_map(|r| {
            self.snapshot
                .named(r.schema.as_deref(), &r.name)
                .into_iter()
                .find_map(|rel| self.read_rule(rel, 0))
        })
    }

    /// A rule covering anything reading `rel` reads: its columns, and for a
    /// view every column of the relations its query reads, in its WHERE
    /// too, since an error raised there may quote any of them.
    fn read_rule(&self, rel: &Relation, depth: usize) -> Option<RuleIdx> {
        if let Some(rule) = self.relation_rule(rel, depth) {
            return Some(rule);
        }
        if !rel.is_view() {
            return None;
        }
        let statement = match self.view_statement(rel, depth) {
            Ok(statement) => statement,
            Err(rule) => return rule,
        };
        statement.lineage.relations.iter().find_map(|r| {
            self.snapshot
                .named(r.schema.as_deref(), &r.name)
                .into_iter()
                .find_map(|inner| self.read_rule(inner, depth + 1))
        })
    }

    /// The first rule covering any column of any relation a statement names.
    pub fn relations_rule(&self, lineage: &Lineage) -> Option<RuleIdx> {
        lineage
            .relations
            .iter()
            .find_map(|r| self.relation_ref_rule(r, 0))
    }

    /// The rule covering what one column reference can name.
    fn ref_rule(
        &self,
        reference: &ColumnRefName,
        relations: &[RelationRef],
        depth: usize,
    ) -> Option<RuleIdx> {
        let qualifier = reference.qualifiers.last();
        let schema = match reference.qualifiers.as_slice() {
            [.., schema, _] => Some(schema.as_str()),
            _ => None,
        };
        for relation in relations {
            let named = match qualifier {
                None => true,
                Some(q) => match &relation.alias {
                    Some(alias) => alias == q && schema.is_none(),
                    None => {
                        &relation.name == q
                            && schema
                                .is_none_or(|s| relation.schema.as_deref().is_none_or(|rs| rs == s))
                    }
                },
            };
            // A bare name that is a relation's name or alias is a whole row.
            let whole_row = qualifier.is_none()
                && reference.column.as_deref().is_some_and(|c| {
                    relation.alias.as_deref() == Some(c)
                        || (relation.alias.is_none() && relation.name == c)
                });
            if whole_row {
                if let Some(rule) = self.relation_ref_rule(relation, depth) {
                    return Some(rule);
                }
            }
            if !named {
                continue;
            }
            let candidates = self
                .snapshot
                .named(relation.schema.as_deref(), &relation.name);
            if candidates.is_empty() {
                if is_system_name(relation.schema.as_deref(), &relation.name) {
                    continue;
                }
                return self.masker.any_column_rule();
            }
            for rel in candidates {
                let column = |name: &str| {
                    (1..=rel.columns.len())
                        .filter_map(|n| i16::try_from(n).ok())
                        .find(|n| rel.column(*n).is_some_and(|c| c.name == name))
                };
                let rule = match reference.column.as_deref() {
                    None => self.relation_rule(rel, depth),
                    Some(name) => match column(name) {
                        Some(n) => self.derived_column_rule(rel, n, depth),
                        // `c.to_jsonb` names no column of `c`: PostgreSQL
                        // reads it as `to_jsonb(c)`, a function of the
                        // whole row.
                        None if qualifier.is_some() && !is_system_column(name) => {
                            // A user's function of that name may read
                            // anything.
                            if self.snapshot.is_user_function(name) {
                                return self.masker.any_column_rule();
                            }
                            self.relation_rule(rel, depth)
                        }
                        None => None,
                    },
                };
                if rule.is_some() {
                    return rule;
                }
            }
        }
        None
    }

    /// The first rule covering any column of a relation a statement names.
    fn relation_ref_rule(&self, relation: &RelationRef, depth: usize) -> Option<RuleIdx> {
        let candidates = self
            .snapshot
            .named(relation.schema.as_deref(), &relation.name);
        if candidates.is_empty() && !is_system_name(relation.schema.as_deref(), &relation.name) {
            return self.masker.any_column_rule();
        }
        candidates
            .into_iter()
            .find_map(|rel| self.relation_rule(rel, depth))
    }

    fn relation_rule(&self, rel: &Relation, depth: usize) -> Option<RuleIdx> {
        (1..=rel.columns.len())
            .filter_map(|n| i16::try_from(n).ok())
            .find_map(|n| self.derived_column_rule(rel, n, depth))
    }
}

/// PostgreSQL's system columns, which every table has beside its own: they
/// hold no value of a row's data.
fn is_system_column(name: &str) -> bool {
    matches!(
        name,
        "ctid" | "xmin" | "xmax" | "cmin" | "cmax" | "tableoid" | "oid"
    )
}

/// Whether a statement reads system views that hold samples of the tables'
/// values: the planner's statistics (`most_common_vals`, `histogram_bounds`),
/// and other sessions' statements with their literals (`pg_stat_activity`:
/// every session reaches the target as the same role).
pub fn reads_statistics(lineage: &Lineage) -> bool {
    lineage.relations.iter().any(|r| {
        matches!(
            r.name.as_str(),
            "pg_stats"
                | "pg_stats_ext"
                | "pg_stats_ext_exprs"
                | "pg_statistic"
                | "pg_statistic_ext_data"
                | "pg_stat_activity"
                | "pg_stat_statements"
        )
    })
}

/// The statistics counters a statement reads, if any: the views and
/// functions of the cumulative statistics (`pg_stat_xact_sys_tables`,
/// `pg_statio_user_tables`, `pg_stat_database`, `pg_stat_get_xact_numscans`,
/// ...). What a statement did shows in them at once (the catalog lookups a
/// function made, the rows and blocks a sub-select read), and what a
/// statement over covered data did would tell the covered values. The views
/// of sessions and connections, of progress, and the planner's statistics
/// (see [`reads_statistics`]) hold no such counts.
pub fn reads_counters(statement: &StatementInfo) -> Option<&str> {
    let counter = |name: &str| {
        name.starts_with("pg_stat")
            && !name.starts_with("pg_stat_progress_")
            && !matches!(
                name,
                "pg_stats"
                    | "pg_stats_ext"
                    | "pg_stats_ext_exprs"
                    | "pg_stat_activity"
                    | "pg_stat_ssl"
                    | "pg_stat_gssapi"
                    | "pg_stat_replication"
                    | "pg_stat_wal_receiver"
                    | "pg_stat_subscription"
            )
    };
    statement
        .lineage
        .relations
        .iter()
        .map(|r| r.name.as_str())
        .chain(statement.functions.iter().map(String::as_str))
        .find(|name| counter(name))
}

/// A condition of a statement that reads the views [`reads_statistics`]
/// names, other than one on the columns that hold only names: which of
/// their rows come back would tell the values they hold.
pub fn sample_condition(lineage: &Lineage) -> Option<&ColumnRefName> {
    sample_reference(lineage, &lineage.conditions)
}

/// A column of the views [`reads_statistics`] names, other than one that
/// holds only names, that an output of the statement computes over: where
/// the computation fails would tell the values they hold.
pub fn sample_computation(lineage: &Lineage) -> Option<&ColumnRefName> {
    sample_reference(lineage, &lineage.computed)
}

/// The first of `references` that is no name column of the views
/// [`reads_statistics`] names, when the statement reads them.
fn sample_reference<'l>(
    lineage: &Lineage,
    references: &'l [ColumnRefName],
) -> Option<&'l ColumnRefName> {
    if !reads_statistics(lineage) {
        return None;
    }
    references.iter().find(|reference| {
        !reference.column.as_deref().is_some_and(|column| {
            matches!(
                column,
                // The statistics' names.
                "schemaname"
                    | "tablename"
                    | "attname"
                    | "statistics_schemaname"
                    | "statistics_name"
                    // What a session is, where from, since when, waiting on
                    // what: all but its statement.
                    | "pid"
                    | "leader_pid"
                    | "datid"
                    | "datname"
                    | "usesysid"
                    | "usename"
                    | "application_name"
                    | "client_addr"
                    | "client_hostname"
                    | "client_port"
                    | "backend_start"
                    | "xact_start"
                    | "query_start"
                    | "state_change"
                    | "wait_event_type"
                    | "wait_event"
                    | "state"
                    | "backend_type"
            )
        })
    })
}

/// PostgreSQL's own objects have OIDs below `FirstNormalObjectId`; the
/// catalog leaves them out.
pub fn is_system_oid(oid: u32) -> bool {
    oid != 0 && oid < 16384
}

/// Whether a statement calls a function whose result the parser cannot
/// follow: one not known to be read-only, one that runs SQL given as text
/// (`query_to_xml`), or one that shows other sessions' statements.
pub fn calls_functions(statement: &StatementInfo) -> bool {
    statement.kinds.iter().any(|k| {
        matches!(
            k,
            portcullis_core::StatementKind::Call | portcullis_core::StatementKind::Other
        )
    }) || statement
        .functions
        .iter()
        .any(|f| portcullis_sql::runs_query_text_function(f) || shows_other_sessions(f))
}

/// Whether running the built-in `function` can leave a trace that a later
/// statement reads, decided by its arguments or by whether it runs: it is
/// not IMMUTABLE in any form (catalog lookups keyed by an argument, as
/// `to_regclass` and `format_type` make, show in the statistics counters;
/// `random` advances the session's sequence), and not one of the stable
/// built-ins below, which read only the clock, the session's settings or
/// their arguments' own types (printing a value of a catalog type looks
/// the catalog up; a cast to one is refused on its own, `catalog_types`).
pub fn leaves_traces(function: &str) -> bool {
    const READS_NOTHING_BY_VALUE: &[&str] = &[
        "array_to_json",
        "clock_timestamp",
        "concat",
        "concat_ws",
        "convert",
        "convert_from",
        "convert_to",
        "current_date",
        "current_time",
        "current_timestamp",
        "format",
        "json_agg",
        "json_build_array",
        "json_build_object",
        "json_object_agg",
        "jsonb_agg",
        "jsonb_build_array",
        "jsonb_build_object",
        "jsonb_object_agg",
        "localtime",
        "localtimestamp",
        "now",
        "row_to_json",
        "statement_timestamp",
        "timeofday",
        "to_char",
        "to_json",
        "to_jsonb",
        "transaction_timestamp",
    ];
    !portcullis_sql::is_immutable(function) && !READS_NOTHING_BY_VALUE.contains(&function)
}

/// Whether a built-in shows other sessions' statements, with their
/// literals (what `pg_stat_activity` and `pg_stat_statements` are made of).
pub fn shows_other_sessions(function: &str) -> bool {
    matches!(
        function,
        "pg_stat_get_activity" | "pg_stat_get_backend_activity" | "pg_stat_statements"
    )
}
/// Masks one value under a column's plan. `Ok(None)`: send it as it is.
pub fn mask_value<'v>(
    masker: &Masker,
    plan: &ColumnPlan,
    value: &'v [u8],
    counts: &mut MaskCounts,
    nulled: &mut bool,
) -> Result<Option<Option<Cow<'v, [u8]>>>, MaskFailure> {
    if let Some((rule, derived)) = plan.whole {
        if plan.binary_opaque {
            // A binary value of another type cannot carry a mask.
            masker.mask_whole(rule, value, derived, counts);
            return Ok(Some(None));
        }
        let text = if plan.jsonb_binary {
            value.get(1..).unwrap_or(&[])
        } else {
            value
        };
        return Ok(Some(match masker.mask_whole(rule, text, derived, counts) {
            Masked::Null => None,
            Masked::Value(masked) if plan.json => {
                // Keep JSON values JSON: the mask becomes a JSON string.
                let quoted = serde_json::to_string(&String::from_utf8_lossy(&masked))
                    .map_err(|e| MaskFailure(format!("cannot encode a masked JSON value: {e}")))?;
                let mut out = Vec::with_capacity(quoted.len() + 1);
                if plan.jsonb_binary {
                    out.push(1);
                }
                out.extend_from_slice(quoted.as_bytes());
                Some(Cow::Owned(out))
            }
            Masked::Value(masked) => Some(Cow::Owned(masked)),
        }));
    }
    let Some(content) = &plan.content else {
        return Ok(None);
    };
    if plan.binary_opaque {
        // Text found inside a binary value (a `bytea`, an array, a record)
        // cannot be masked in place: the value goes as NULL.
        let found = masker
            .mask_content(content, value, false, counts)
            .map_err(|e| {
                MaskFailure(format!(
                    "a value of column `{}` cannot be masked: {e}",
                    plan.name
                ))
            })?;
        if found.is_some() {
            *nulled = true;
            return Ok(Some(None));
        }
        return Ok(None);
    }
    let text = if plan.jsonb_binary {
        value.get(1..).unwrap_or(&[])
    } else {
        value
    };
    let masked = masker
        .mask_content(content, text, plan.json, counts)
        .map_err(|e| {
            MaskFailure(format!(
                "a value of column `{}` cannot be masked: {e}",
                plan.name
            ))
        })?;
    Ok(masked.map(|mut masked| {
        if plan.jsonb_binary {
            masked.insert(0, 1);
        }
        Some(Cow::Owned(masked))
    }))
}

/// Masks one DataRow body; `Ok(None)` when nothing changed.
/// `nulled` is set when a binary value was sent as NULL for what it holds.
pub fn mask_row(
    masker: &Masker,
    plan: &ResultPlan,
    body: &[u8],
    counts: &mut MaskCounts,
    nulled: &mut bool,
) -> Result<Option<BytesMut>, MaskFailure> {
    let values =
        data_row(body).ok_or_else(|| MaskFailure("malformed DataRow from the target".into()))?;
    if values.len() != plan.columns.len() {
        return Err(MaskFailure(format!(
            "a row of {} values for a result of {} columns",
            values.len(),
            plan.columns.len()
        )));
    }
    let mut changed: Vec<(usize, Option<Cow<'_, [u8]>>)> = Vec::new();
    for (idx, (value, column)) in values.iter().zip(&plan.columns).enumerate() {
        let value: &[u8] = match value {
            Some(value) => value,
            None if column.masks_null() => &[],
            None => continue,
        };
        if column.is_noop() {
            continue;
        }
        if let Some(new) = mask_value(masker, column, value, counts, nulled)? {
            changed.push((idx, new));
        }
    }
    if changed.is_empty() {
        return Ok(None);
    }
    let mut out_values: Vec<Option<&[u8]>> = values.clone();
    for (idx, new) in &changed {
        if let Some(slot) = out_values.get_mut(*idx) {
            *slot = new.as_deref();
        }
    }
    let mut out = BytesMut::new();
    write_data_row(&mut out, &out_values);
    Ok(Some(out))
}
