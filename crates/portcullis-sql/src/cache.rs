//! The classifier and its caches of classified query strings.

use std::fmt;
use std::sync::Arc;

use portcullis_core::StatementInfo;
use quick_cache::sync::Cache;

use crate::classify::classify_query;
use crate::error::ClassifyError;

/// Query strings longer than this are classified every time rather than
/// cached, so that a few bulk INSERTs with megabytes of literals cannot
/// fill the cache's memory. Repeated queries are short.
pub const MAX_CACHED_QUERY_LEN: usize = 16 * 1024;

/// Query strings longer than this are worth parsing off the threads that
/// serve sessions: PostgreSQL's parser and its tree cost up to a second of
/// CPU per few hundred kilobytes.
pub const LONG_QUERY_LEN: usize = 8 * 1024;

/// Query strings longer than this are parsed one at a time: the parser and
/// its tree cost up to several hundred bytes of memory per byte of text.
pub const LARGE_QUERY_LEN: usize = 64 * 1024;

/// Classifies SQL query strings with the PostgreSQL grammar, caching the
/// result by exact query text, and by shape (the text with its constants
/// replaced by parameters) for the statements whose classification does not
/// depend on their constants.
pub struct Classifier {
    /// `None` when the capacity is zero.
    cache: Option<Cache<String, Arc<[StatementInfo]>>>,
    /// Keyed by PostgreSQL's normalization of the text; the cached statement
    /// has an empty `text`. `None` when the capacity is zero.
    shapes: Option<Cache<String, Arc<StatementInfo>>>,
    /// The longest text classified; longer is an error.
    max_len: usize,
    /// Held while a text longer than [`LARGE_QUERY_LEN`] is parsed.
    long: std::sync::Mutex<()>,
}

impl Classifier {
    /// A classifier that remembers up to about `cache_capacity` query strings
    /// and as many shapes (least recently and least frequently used go
    /// first). A capacity of 0 disables the caches.
    pub fn new(cache_capacity: usize) -> Self {
        let cache = (cache_capacity > 0).then(|| Cache::new(cache_capacity));
        let shapes = (cache_capacity > 0).then(|| Cache::new(cache_capacity));
        Classifier {
            cache,
            shapes,
            max_len: usize::MAX,
            long: std::sync::Mutex::new(()),
        }
    }

    /// The classification of `sql` if this very text was classified before
    /// and is still cached.
    pub fn cached(&self, sql: &str) -> Option<Arc<[StatementInfo]>> {
        self.cache.as_ref()?.get(sql)
    }

    /// Refuses query strings longer than `max_len` bytes.
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// Splits `sql` (one simple-protocol Query string, possibly several
    /// statements) and classifies each statement separately.
    ///
    /// Empty / comment-only input gives an empty Vec. Unparseable input is
    /// an error (fail closed).
    ///
    /// A query string seen before costs a hash lookup and returns the same
    /// `Arc`. A single statement of a shape seen before costs PostgreSQL's
    /// normalization (its scanner and grammar, without building a tree for
    /// the gateway) and a lookup. Errors are not cached.
    pub fn classify(&self, sql: &str) -> Result<Arc<[StatementInfo]>, ClassifyError> {
        if sql.len() > self.max_len {
            return Err(ClassifyError::TooLong {
                len: sql.len(),
                max: self.max_len,
            });
        }
        // Before any cache: a shape holds no string's text.
        if sql.contains("\\'") {
            crate::classify::refuse_backslash_quotes(sql)?;
        }
        if let Some(hit) = self.cache.as_ref().and_then(|cache| cache.get(sql)) {
            return Ok(hit);
        }
        let shape = match (&self.shapes, single_statement(sql)) {
            (Some(shapes), Some(text)) if sql.len() <= MAX_CACHED_QUERY_LEN => {
                match pg_query::normalize(text) {
                    Ok(normalized) => {
                        if let Some(found) = shapes.get(&normalized) {
                            let mut statement = StatementInfo::clone(&found);
                            statement.text = text.to_owned();
                            return Ok(Arc::from([statement]));
                        }
                        Some((shapes, normalized))
                    }
                    // Refused below, by the full parse, with its message.
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let _one_at_a_time = (sql.len() > LARGE_QUERY_LEN).then(|| {
            self.long
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        });
        let (mut statements, plain) = classify_query(sql)?;
        if let (Some((shapes, normalized)), [statement], true) =
            (shape, statements.as_mut_slice(), plain)
        {
            if let Some(shaped) = shaped(statement, normalized) {
                statement.shape = shaped.shape.clone();
                shapes.insert(
                    shaped.text.clone(),
                    Arc::new(StatementInfo {
                        text: String::new(),
                        ..shaped
                    }),
                );
            }
        }
        let statements: Arc<[StatementInfo]> = statements.into();
        if let Some(cache) = &self.cache {
            if sql.len() <= MAX_CACHED_QUERY_LEN {
                cache.insert(sql.to_owned(), Arc::clone(&statements));
            }
        }
        Ok(statements)
    }
}

/// The text of `sql` as the parser would cut it if it is one statement
/// (trimmed, without a final `;`); `None` when it may hold several, or
/// comments, which would make that cut differ. Conservative: a `;` or a
/// comment marker inside a literal also gives `None`.
fn single_statement(sql: &str) -> Option<&str> {
    let text = crate::classify::trim_sql(sql);
    let text = text
        .strip_suffix(';')
        .map_or(text, crate::classify::trim_sql);
    let plain =
        !text.is_empty() && !text.contains(';') && !text.contains("--") && !text.contains("/*");
    plain.then_some(text)
}

/// The classification of a plain data statement's shape, with `text`
/// holding the shape, when it may stand for every statement of that shape:
/// the statement changes no setting, and its normalized text classifies
/// exactly as the statement itself does.
fn shaped(statement: &StatementInfo, normalized: String) -> Option<StatementInfo> {
    if !statement.settings.is_empty()
        || statement.prepares.is_some()
        || statement.executes.is_some()
        || statement.objects != Default::default()
    {
        return None;
    }
    let (statements, plain) = classify_query(&normalized).ok()?;
    let [mut shaped] = <[StatementInfo; 1]>::try_from(statements).ok()?;
    shaped.text.clone_from(&statement.text);
    if !plain || shaped != *statement {
        return None;
    }
    shaped.shape = Some(Arc::from(normalized.as_str()));
    shaped.text = normalized;
    Some(shaped)
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Classifier");
        match &self.cache {
            Some(cache) => debug
                .field("cached", &cache.len())
                .field("capacity", &cache.capacity()),
            None => debug.field("cached", &0),
        };
        debug.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_hit_returns_the_same_arc() {
        let classifier = Classifier::new(16);
        let first = classifier.classify("select 1; delete from t").unwrap();
        let second = classifier.classify("select 1; delete from t").unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        // A different text, even one differing only in spacing, is parsed anew.
        let other = classifier.classify("select 1;  delete from t").unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
    }

    /// A SQL function's body is read when the function is created, so it
    /// must not be taken for a constant of the statement's shape (PostgreSQL's
    /// normalization keeps it: it is a name, not a literal, in the tree).
    #[test]
    fn a_function_body_is_never_taken_for_a_constant() {
        let classifier = Classifier::new(16);
        let create = |body: &str| {
            let sql = format!("create function f() returns void language sql as '{body}'");
            classifier.classify(&sql).unwrap()[0].clone()
        };
        assert!(create("").has_where);
        let deletes = create("delete from t");
        assert!(!deletes.has_where);
        assert_eq!(deletes.tables, ["t"]);
    }

    #[test]
    fn statements_of_one_shape_share_a_classification_but_keep_their_text() {
        let classifier = Classifier::new(16);
        let first = classifier
            .classify("select abalance from pgbench_accounts where aid = 1;")
            .unwrap();
        let second = classifier
            .classify("  select abalance from pgbench_accounts where aid = 42 ")
            .unwrap();
        assert_eq!(
            first[0].text,
            "select abalance from pgbench_accounts where aid = 1"
        );
        assert_eq!(
            second[0].text,
            "select abalance from pgbench_accounts where aid = 42"
        );
        let shape = "select abalance from pgbench_accounts where aid = $1";
        assert_eq!(first[0].shape.as_deref(), Some(shape));
        assert_eq!(second[0].shape.as_deref(), Some(shape));
        // Everything but the text is what a full parse gives.
        let parsed = Classifier::new(0)
            .classify("select abalance from pgbench_accounts where aid = 42")
            .unwrap();
        assert_eq!(
            StatementInfo {
                shape: None,
                ..second[0].clone()
            },
            parsed[0]
        );
    }

    #[test]
    fn statements_that_depend_on_their_constants_have_no_shape() {
        let classifier = Classifier::new(16);
        for sql in [
            // The first argument of set_config names the setting.
            "select set_config('role', 'x', false)",
            "select set_config('search_path', 'x', false)",
            // EXPLAIN's options and SET's values are read.
            "explain (analyze false) delete from t",
            "explain (analyze true) delete from t",
            "set role = 'a'",
            // Two statements, or a comment, which would move the cut.
            "select 1; select 2",
            "select 1 -- c",
            "select '--'",
        ] {
            let statements = classifier.classify(sql).unwrap();
            assert!(statements.iter().all(|s| s.shape.is_none()), "{sql}");
        }
        let role = classifier
            .classify("select set_config('role', 'y', false)")
            .unwrap();
        assert_eq!(role[0].settings, ["role"]);
        let path = classifier
            .classify("select set_config('search_path', 'y', false)")
            .unwrap();
        assert_eq!(path[0].settings, ["search_path"]);
        let analyze = classifier
            .classify("explain (analyze true) delete from x")
            .unwrap();
        let plain = classifier
            .classify("explain (analyze false) delete from x")
            .unwrap();
        assert_ne!(analyze[0].kind, plain[0].kind);
    }

    /// PostgreSQL's normalization replaces the output positions of DISTINCT
    /// ON and grouping sets; a position past the outputs names none, as a
    /// parameter would have, and must not make the shape stand for `2`.
    #[test]
    fn a_position_out_of_range_does_not_make_a_shape_for_every_position() {
        for [warm_up, sql] in [
            [
                "select distinct on (9) id, email from c",
                "select distinct on (2) id, email from c",
            ],
            [
                "select count(*), email from c group by rollup(9)",
                "select count(*), email from c group by rollup(2)",
            ],
            [
                "select count(*), email from c group by grouping sets ((9))",
                "select count(*), email from c group by grouping sets ((2))",
            ],
            [
                "select count(*), email from c group by cube(9)",
                "select count(*), email from c group by cube(2)",
            ],
        ] {
            let classifier = Classifier::new(16);
            classifier.classify(warm_up).unwrap();
            let after = classifier.classify(sql).unwrap();
            let fresh = Classifier::new(0).classify(sql).unwrap();
            assert_eq!(after[0].lineage, fresh[0].lineage, "{sql}");
            assert!(
                after[0]
                    .lineage
                    .conditions
                    .iter()
                    .any(|c| c.column.as_deref() == Some("email")),
                "{sql}: {:?}",
                after[0].lineage.conditions
            );
        }
    }

    #[test]
    fn a_backslash_before_a_quote_in_a_standard_string_is_refused_shape_or_not() {
        let classifier = Classifier::new(16);
        classifier.classify("select 'x' as a").unwrap();
        for sql in [
            "select 'a\\' as a",
            "select 'a\\' || ' ; drop table t; select ' as x -- '",
            "select N'C:\\dir\\'",
            "select 'it\\''s'",
            "select E'\u{3041}\\' ; drop table t; select '",
            "select E'\u{c1}\\\\\\' ; drop table t; select ', ' -- '",
        ] {
            assert_eq!(
                classifier.classify(sql).unwrap_err(),
                ClassifyError::BackslashQuote,
                "{sql}"
            );
        }
        for sql in [
            "select E'a\\'b'",
            "select E'\u{3041}\\n'",
            "select 'a\\b', '\\d+', 'it''s'",
            "select $$a\\'$$",
            "select 1 -- don\\'t",
            "select \"a\\'\" from t",
        ] {
            assert!(classifier.classify(sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn a_shape_never_stands_for_text_that_does_not_parse() {
        let classifier = Classifier::new(16);
        classifier.classify("select * from t where a = 1").unwrap();
        assert!(classifier
            .classify("select * from t where a = 1 1")
            .is_err());
        assert!(classifier.classify("select * from t where a = 'x").is_err());
    }

    #[test]
    fn a_text_longer_than_the_limit_is_refused_unparsed() {
        let classifier = Classifier::new(16).with_max_len(12);
        assert!(classifier.classify("select 1234").is_ok());
        assert_eq!(
            classifier.classify("select 123456").unwrap_err(),
            ClassifyError::TooLong { len: 13, max: 12 }
        );
    }

    #[test]
    fn zero_capacity_disables_the_cache() {
        let classifier = Classifier::new(0);
        let first = classifier.classify("select 1").unwrap();
        let second = classifier.classify("select 1").unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(first, second);
    }

    #[test]
    fn errors_are_not_cached_and_stay_errors() {
        let classifier = Classifier::new(16);
        for _ in 0..2 {
            assert!(matches!(
                classifier.classify("selec 1"),
                Err(ClassifyError::Syntax { .. })
            ));
        }
    }

    #[test]
    fn long_queries_are_classified_but_not_cached() {
        let classifier = Classifier::new(16);
        let sql = format!("select '{}'", "x".repeat(MAX_CACHED_QUERY_LEN));
        let first = classifier.classify(&sql).unwrap();
        let second = classifier.classify(&sql).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
    }
}
