//! The classifier and its cache of classified query strings.

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

/// Classifies SQL query strings with the PostgreSQL grammar, caching the
/// result by exact query text.
pub struct Classifier {
    /// `None` when the capacity is zero.
    cache: Option<Cache<String, Arc<[StatementInfo]>>>,
}

impl Classifier {
    /// A classifier that remembers up to about `cache_capacity` query strings
    /// (least recently and least frequently used go first). A capacity of 0
    /// disables the cache.
    pub fn new(cache_capacity: usize) -> Self {
        let cache = (cache_capacity > 0).then(|| Cache::new(cache_capacity));
        Classifier { cache }
    }

    /// Splits `sql` (one simple-protocol Query string, possibly several
    /// statements) and classifies each statement separately.
    ///
    /// Empty / comment-only input gives an empty Vec. Unparseable input is
    /// an error (fail closed).
    ///
    /// A query string seen before costs a hash lookup and returns the same
    /// `Arc`. Errors are not cached.
    pub fn classify(&self, sql: &str) -> Result<Arc<[StatementInfo]>, ClassifyError> {
        if let Some(hit) = self.cache.as_ref().and_then(|cache| cache.get(sql)) {
            return Ok(hit);
        }
        let statements: Arc<[StatementInfo]> = classify_query(sql)?.into();
        if let Some(cache) = &self.cache {
            if sql.len() <= MAX_CACHED_QUERY_LEN {
                cache.insert(sql.to_owned(), Arc::clone(&statements));
            }
        }
        Ok(statements)
    }
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
