//! Approval requests in SQLite (`approvals.db` in the data directory), one
//! row per request with its JSON body. Every change is one transaction that
//! reads the row, checks it, and writes it back, so two reviewers (or a
//! reviewer and the expiry) never both win.

use crate::model::{Request, Status};
use crate::ApprovalError;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

pub(crate) struct Store {
    conn: Connection,
}

fn db(e: rusqlite::Error) -> ApprovalError {
    ApprovalError::Store(e.to_string())
}

fn decode(body: String) -> Result<Request, ApprovalError> {
    serde_json::from_str(&body)
        .map_err(|e| ApprovalError::Store(format!("a stored request does not decode: {e}")))
}

fn encode(request: &Request) -> Result<String, ApprovalError> {
    serde_json::to_string(request).map_err(|e| ApprovalError::Store(e.to_string()))
}

impl Store {
    pub(crate) fn open(path: &Path) -> Result<Store, ApprovalError> {
        let conn = Connection::open(path).map_err(db)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS requests (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 status TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 expires_at INTEGER NOT NULL,
                 grant_until INTEGER,
                 body TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS requests_status ON requests (status, expires_at);",
        )
        .map_err(db)?;
        // Whether a grant's end is in the audit log. A store from before
        // the column: the ends already past were audited when they came.
        let has_ended: bool = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('requests') WHERE name = 'ended'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map_err(db)?
            > 0;
        if !has_ended {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 ALTER TABLE requests ADD COLUMN ended INTEGER NOT NULL DEFAULT 0;
                 UPDATE requests SET ended = 1 WHERE kind = 'access' AND grant_until <= CAST(strftime('%s', 'now') AS INTEGER);
                 COMMIT;",
            )
            .map_err(db)?;
        }
        Ok(Store { conn })
    }

    /// Approved grants whose window is over and whose end is not yet in
    /// the audit log: found in the store, so that none is missed across a
    /// restart or a reload.
    pub(crate) fn ended_grants(&self, now: i64) -> Result<Vec<Request>, ApprovalError> {
        self.requests(
            "SELECT body FROM requests WHERE status = 'approved' AND kind = 'access' AND grant_until <= ?1 AND ended = 0",
            [now],
        )
    }

    /// Every pending access request.
    pub(crate) fn pending_access(&self) -> Result<Vec<Request>, ApprovalError> {
        self.requests(
            "SELECT body FROM requests WHERE status = 'pending' AND kind = 'access'",
            [],
        )
    }

    /// The requests whose bodies `sql` selects.
    fn requests(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Request>, ApprovalError> {
        let mut stmt = self.conn.prepare(sql).map_err(db)?;
        let rows = stmt
            .query_map(params, |row| row.get::<_, String>(0))
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(decode(row.map_err(db)?)?);
        }
        Ok(out)
    }

    /// Records that a grant's end is in the audit log.
    pub(crate) fn mark_ended(&mut self, id: i64) -> Result<(), ApprovalError> {
        self.conn
            .execute("UPDATE requests SET ended = 1 WHERE id = ?1", [id])
            .map(|_| ())
            .map_err(db)
    }

    /// Stores a new request and gives it its id.
    pub(crate) fn insert(&mut self, request: &mut Request) -> Result<(), ApprovalError> {
        let tx = self.conn.transaction().map_err(db)?;
        tx.execute(
            "INSERT INTO requests (status, kind, expires_at, body) VALUES (?1, ?2, ?3, '{}')",
            params![request.status.as_str(), request.kind(), request.expires_at],
        )
        .map_err(db)?;
        request.id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE requests SET body = ?1 WHERE id = ?2",
            params![encode(request)?, request.id],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    pub(crate) fn get(&self, id: i64) -> Result<Option<Request>, ApprovalError> {
        self.conn
            .query_row("SELECT body FROM requests WHERE id = ?1", [id], |row| {
                row.get::<_, String>(0)
            })
            .optional()
            .map_err(db)?
            .map(decode)
            .transpose()
    }

    /// Reads request `id`, lets `change` check and change it, and writes it
    /// back, in one transaction. Nothing is written when `change` fails.
    pub(crate) fn update<T>(
        &mut self,
        id: i64,
        change: impl FnOnce(&mut Request) -> Result<T, ApprovalError>,
    ) -> Result<(Request, T), ApprovalError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let body: Option<String> = tx
            .query_row("SELECT body FROM requests WHERE id = ?1", [id], |row| {
                row.get(0)
            })
            .optional()
            .map_err(db)?;
        let Some(body) = body else {
            return Err(ApprovalError::NotFound(id));
        };
        let mut request = decode(body)?;
        let out = change(&mut request)?;
        tx.execute(
            "UPDATE requests SET status = ?1, grant_until = ?2, body = ?3 WHERE id = ?4",
            params![
                request.status.as_str(),
                request.grant_until,
                encode(&request)?,
                id
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok((request, out))
    }

    /// Requests with this status, newest first, at most `limit`.
    pub(crate) fn with_status(
        &self,
        statuses: &[Status],
        limit: usize,
    ) -> Result<Vec<Request>, ApprovalError> {
        let mut out = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT body FROM requests WHERE status = ?1 ORDER BY id DESC LIMIT ?2")
            .map_err(db)?;
        for status in statuses {
            let rows = stmt
                .query_map(params![status.as_str(), limit as i64], |row| {
                    row.get::<_, String>(0)
                })
                .map_err(db)?;
            for row in rows {
                out.push(decode(row.map_err(db)?)?);
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.id));
        out.truncate(limit);
        Ok(out)
    }

    /// Pending requests whose time is up.
    pub(crate) fn due(&self, now: i64) -> Result<Vec<i64>, ApprovalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM requests WHERE status = 'pending' AND expires_at <= ?1")
            .map_err(db)?;
        let rows = stmt
            .query_map([now], |row| row.get::<_, i64>(0))
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }

    /// Access grants approved and not over at `now`.
    pub(crate) fn grants(&self, now: i64) -> Result<Vec<Request>, ApprovalError> {
        self.requests(
            "SELECT body FROM requests WHERE status = 'approved' AND kind = 'access' AND grant_until > ?1",
            [now],
        )
    }

    /// Pending statement requests: after a restart their sessions are gone.
    pub(crate) fn pending_statements(&self) -> Result<Vec<i64>, ApprovalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM requests WHERE status = 'pending' AND kind = 'statement'")
            .map_err(db)?;
        let rows = stmt.query_map([], |row| row.get::<_, i64>(0)).map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }
}
