//! The gateway's persistent state other than the audit log: how often each
//! policy decided something, per day (for `portcullis policy stale`), and
//! the policy version last enforced (so that a restart onto another version
//! is recorded as a change from it). SQLite in the data directory
//! (`state.db`).
//!
//! Layout: one module; the schema is created (and migrated) on open.
//!
//! Architecture Invariant: nothing here is needed to decide or to audit; a
//! state store that cannot be written costs statistics, never a decision.

use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("state store `{}`: {source}", path.display())]
pub struct StoreError {
    path: PathBuf,
    source: rusqlite::Error,
}

/// Hits of one policy over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyHits {
    pub hits: u64,
    /// The last day (`YYYY-MM-DD`, UTC) it decided something, at any time.
    pub last_day: Option<String>,
}

pub struct StateStore {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA_VERSION: i64 = 2;

impl StateStore {
    pub fn open(path: &Path) -> Result<StateStore, StoreError> {
        let error = |source| StoreError {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(error)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(error)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(error)?;
        if version < 1 {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS policy_hits (
                     policy TEXT NOT NULL,
                     day TEXT NOT NULL,
                     hits INTEGER NOT NULL,
                     PRIMARY KEY (policy, day)
                 );",
            )
            .map_err(error)?;
        }
        if version < 2 {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS policy_enforced (
                     id INTEGER PRIMARY KEY CHECK (id = 1),
                     version TEXT NOT NULL,
                     source TEXT NOT NULL
                 );",
            )
            .map_err(error)?;
        }
        if version < SCHEMA_VERSION {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(error)?;
        }
        Ok(StateStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            source,
        }
    }

    /// Adds hits counted on `day` (`YYYY-MM-DD`).
    pub fn add_hits(&mut self, day: &str, hits: &BTreeMap<String, u64>) -> Result<(), StoreError> {
        let path = self.path.clone();
        let error = |source| StoreError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(error)?;
        for (policy, n) in hits {
            let n = i64::try_from(*n).unwrap_or(i64::MAX);
            tx.execute(
                "INSERT INTO policy_hits (policy, day, hits) VALUES (?1, ?2, ?3)
                 ON CONFLICT (policy, day) DO UPDATE SET hits = hits + excluded.hits",
                params![policy, day, n],
            )
            .map_err(error)?;
        }
        tx.commit().map_err(error)
    }

    /// The policy version last enforced and the source it was read from
    /// (as the gateway describes it), if recorded.
    pub fn enforced_policy(&self) -> Result<Option<(String, String)>, StoreError> {
        self.conn
            .query_row(
                "SELECT version, source FROM policy_enforced WHERE id = 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    /// Records `version`, read from `source`, as the policy version
    /// enforced now.
    pub fn set_enforced_policy(&mut self, version: &str, source: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO policy_enforced (id, version, source) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET version = excluded.version, source = excluded.source",
                params![version, source],
            )
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Hits of `policy` on days from `first_day` on, and its last day ever.
    pub fn hits_since(&self, policy: &str, first_day: &str) -> Result<PolicyHits, StoreError> {
        let hits: i64 = self
            .conn
            .query_row(
                "SELECT COALESCE(SUM(hits), 0) FROM policy_hits WHERE policy = ?1 AND day >= ?2",
                params![policy, first_day],
                |row| row.get(0),
            )
            .map_err(|e| self.error(e))?;
        let last_day: Option<String> = self
            .conn
            .query_row(
                "SELECT MAX(day) FROM policy_hits WHERE policy = ?1",
                params![policy],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error(e))?
            .flatten();
        Ok(PolicyHits {
            hits: u64::try_from(hits).unwrap_or(0),
            last_day,
        })
    }
}

/// `YYYY-MM-DD` (UTC) of a time in seconds since the Unix epoch.
pub fn day_of(unix_seconds: u64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(unix_seconds / 86_400).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_add_up_per_day_and_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(&dir.path().join("state.db")).unwrap();
        let hits = |pairs: &[(&str, u64)]| pairs.iter().map(|(p, n)| (p.to_string(), *n)).collect();
        store
            .add_hits("2026-11-01", &hits(&[("a", 2), ("b", 1)]))
            .unwrap();
        store.add_hits("2026-11-20", &hits(&[("a", 3)])).unwrap();
        store.add_hits("2026-11-20", &hits(&[("a", 1)])).unwrap();
        assert_eq!(
            store.hits_since("a", "2026-11-10").unwrap(),
            PolicyHits {
                hits: 4,
                last_day: Some("2026-11-20".into())
            }
        );
        assert_eq!(
            store.hits_since("b", "2026-11-10").unwrap(),
            PolicyHits {
                hits: 0,
                last_day: Some("2026-11-01".into())
            }
        );
        assert_eq!(
            store.hits_since("c", "2026-11-10").unwrap(),
            PolicyHits {
                hits: 0,
                last_day: None
            }
        );
        drop(store);
        // Reopening keeps the data and does not re-create the schema.
        let store = StateStore::open(&dir.path().join("state.db")).unwrap();
        assert_eq!(store.hits_since("a", "2000-01-01").unwrap().hits, 6);
    }

    #[test]
    fn the_enforced_policy_version_is_kept_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut store = StateStore::open(&path).unwrap();
        assert_eq!(store.enforced_policy().unwrap(), None);
        store.set_enforced_policy("v1", "s1").unwrap();
        store.set_enforced_policy("v2", "s2").unwrap();
        drop(store);
        let store = StateStore::open(&path).unwrap();
        assert_eq!(
            store.enforced_policy().unwrap(),
            Some(("v2".to_string(), "s2".to_string()))
        );
    }

    #[test]
    fn a_store_of_the_first_schema_gains_the_enforced_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE policy_hits (policy TEXT NOT NULL, day TEXT NOT NULL,
                 hits INTEGER NOT NULL, PRIMARY KEY (policy, day));
             INSERT INTO policy_hits VALUES ('a', '2026-11-01', 2);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let mut store = StateStore::open(&path).unwrap();
        assert_eq!(store.hits_since("a", "2000-01-01").unwrap().hits, 2);
        store.set_enforced_policy("v1", "s1").unwrap();
        assert_eq!(
            store.enforced_policy().unwrap(),
            Some(("v1".to_string(), "s1".to_string()))
        );
    }

    #[test]
    fn days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(951_782_400), "2000-02-29");
        assert_eq!(day_of(1_795_523_045), "2026-11-24");
    }
}
