//! Mask rules as loaded from `*.masks.toml` files, and what each one covers.

mod parse;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::detect::{DetectorId, Detectors};
use crate::error::MaskRuleError;
use crate::glob::Glob;
use crate::strategy::Strategy;

/// Every mask rule of the rules files, validated, with their detectors
/// compiled once (shared by every [`crate::Masker`] built from them).
#[derive(Clone, Debug, Default)]
pub struct MaskRules {
    rules: Arc<Vec<MaskRule>>,
    detectors: Arc<Detectors>,
}

impl MaskRules {
    /// Parses and validates several files together: rule ids are unique
    /// across them and a `[[detector]]` of one file can be used by the rules
    /// of another. `files` are `(name for locations, text)`. Every problem
    /// of every file is reported.
    pub fn from_files(files: &[(String, String)]) -> Result<MaskRules, Vec<MaskRuleError>> {
        let (rules, detectors) = parse::parse_files(files)?;
        Ok(MaskRules {
            rules: Arc::new(rules),
            detectors: Arc::new(detectors),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every rule, in file order (files in the order given).
    pub fn rules(&self) -> &[MaskRule] {
        &self.rules
    }

    /// The rules whose `targets` match `target`.
    pub fn for_target<'a>(&'a self, target: &'a str) -> impl Iterator<Item = &'a MaskRule> + 'a {
        self.rules
            .iter()
            .filter(move |rule| rule.applies_to_target(target))
    }

    pub(crate) fn shared_rules(&self) -> &Arc<Vec<MaskRule>> {
        &self.rules
    }

    pub(crate) fn detectors(&self) -> &Arc<Detectors> {
        &self.detectors
    }
}

/// One `[[rule]]`.
#[derive(Clone, Debug)]
pub struct MaskRule {
    pub id: String,
    pub description: Option<String>,
    pub strategy: Strategy,
    /// Where the rule is defined, `file:line:column`.
    pub location: String,
    pub(crate) targets: Vec<Glob>,
    pub(crate) columns: Vec<ColumnGlob>,
    /// Canonical type names (see [`canonical_type`]).
    pub(crate) types: Vec<String>,
    pub(crate) detector_names: Vec<String>,
    pub(crate) detectors: Vec<DetectorId>,
    pub(crate) json_keys: Vec<Glob>,
}

/// A column a value comes from, as the caller knows it. Names are compared
/// ignoring case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnMeta<'a> {
    pub schema: &'a str,
    pub table: &'a str,
    pub column: &'a str,
    /// The PostgreSQL type name, such as `text`, `character varying` or
    /// `int4`; aliases and type modifiers (`varchar(20)`) are understood.
    pub type_name: &'a str,
}

impl MaskRule {
    /// A column rule masks whole values of its columns.
    pub fn is_column_rule(&self) -> bool {
        !self.columns.is_empty() && !self.is_content_rule()
    }

    /// A content rule masks what its detectors find, and values under its
    /// JSON keys.
    pub fn is_content_rule(&self) -> bool {
        !self.detectors.is_empty() || !self.json_keys.is_empty()
    }

    pub fn applies_to_target(&self, target: &str) -> bool {
        self.targets.iter().any(|glob| glob.matches(target))
    }

    /// Whether the rule's `columns` and `types` cover this column. A rule
    /// without `columns` covers every column (of its `types`, if it has
    /// any).
    pub fn covers_column(&self, column: &ColumnMeta<'_>) -> bool {
        let column_matches =
            self.columns.is_empty() || self.columns.iter().any(|glob| glob.matches(column));
        column_matches
            && (self.types.is_empty() || self.types.contains(&canonical_type(column.type_name)))
    }

    /// The `targets` globs as written.
    pub fn targets(&self) -> impl Iterator<Item = &str> + '_ {
        self.targets.iter().map(Glob::as_str)
    }

    /// The detector names, as written.
    pub fn detector_names(&self) -> &[String] {
        &self.detector_names
    }
}

/// A `columns` entry: `column`, `table.column` or `schema.table.column`,
/// each part a glob; a missing part matches anything.
#[derive(Clone, Debug)]
pub(crate) struct ColumnGlob {
    schema: Option<Glob>,
    table: Option<Glob>,
    column: Glob,
}

impl ColumnGlob {
    /// `None` for more than three parts or an empty part.
    pub(crate) fn parse(pattern: &str) -> Option<ColumnGlob> {
        let parts: Vec<&str> = pattern.split('.').collect();
        if parts.iter().any(|part| part.is_empty()) {
            return None;
        }
        let (schema, table, column) = match parts.as_slice() {
            [column] => (None, None, column),
            [table, column] => (None, Some(table), column),
            [schema, table, column] => (Some(schema), Some(table), column),
            _ => return None,
        };
        Some(ColumnGlob {
            schema: schema.map(|s| Glob::new(s)),
            table: table.map(|t| Glob::new(t)),
            column: Glob::new(column),
        })
    }

    fn matches(&self, meta: &ColumnMeta<'_>) -> bool {
        self.column.matches(meta.column)
            && self
                .table
                .as_ref()
                .is_none_or(|glob| glob.matches(meta.table))
            && self
                .schema
                .as_ref()
                .is_none_or(|glob| glob.matches(meta.schema))
    }
}

/// The one spelling of a PostgreSQL type name: lowercase, without
/// `pg_catalog.`, type modifiers (`(20)`) or extra spaces, and with the SQL
/// standard names turned into PostgreSQL's own (`character varying` ->
/// `varchar`).
pub(crate) fn canonical_type(name: &str) -> String {
    let lower = name.trim().to_lowercase();
    let unqualified = lower.strip_prefix("pg_catalog.").unwrap_or(&lower);
    let mut without_modifiers = String::with_capacity(unqualified.len());
    let mut depth = 0usize;
    for c in unqualified.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => without_modifiers.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = without_modifiers.split_whitespace().collect();
    let name = words.join(" ");
    let canonical = match name.as_str() {
        "character varying" => "varchar",
        "character" | "char" => "bpchar",
        "integer" | "int" => "int4",
        "bigint" => "int8",
        "smallint" => "int2",
        "boolean" => "bool",
        "double precision" => "float8",
        "real" => "float4",
        "decimal" => "numeric",
        "timestamp with time zone" => "timestamptz",
        "timestamp without time zone" => "timestamp",
        "time with time zone" => "timetz",
        "time without time zone" => "time",
        other => other,
    };
    canonical.to_owned()
}
