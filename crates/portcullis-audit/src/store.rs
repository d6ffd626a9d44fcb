//! The SQLite schema and every SQL statement the log runs, and [`tail`].
//!
//! Two tables: `audit_entries` holds the chain, `audit_checkpoints` the
//! signed checkpoints. Sequence numbers and times are stored as SQLite
//! integers (signed 64 bits) and hashes as lowercase hex text; the body is
//! the exact JSON text that was hashed.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::chain::{self, EntryHash, GENESIS_HASH};
use crate::error::AuditError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_entries (
    seq INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    signature TEXT NOT NULL,
    key_id TEXT NOT NULL
);
";

/// How long readers (verify, tail) wait for a writer's lock, for instance
/// while the gateway recovers the write-ahead file.
const READ_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a store operation failed. Internal: callers turn it into an
/// [`AuditError`] with the store's path.
#[derive(Debug)]
pub(crate) enum StoreError {
    Sqlite(rusqlite::Error),
    /// The store holds values this crate never writes.
    Damaged(String),
    /// The clock cannot be read as unix milliseconds.
    Clock,
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Sqlite(error)
    }
}

impl StoreError {
    /// Builds the error a caller sees. Called once per waiter of a failed
    /// batch, so it borrows.
    pub(crate) fn to_audit_error(&self, path: &Path) -> AuditError {
        match self {
            StoreError::Sqlite(error) if is_lock_error(error) => AuditError::Locked {
                path: path.to_owned(),
                detail: error.to_string(),
            },
            StoreError::Sqlite(error) => AuditError::Write {
                path: path.to_owned(),
                detail: error.to_string(),
            },
            StoreError::Damaged(detail) => AuditError::Damaged {
                path: path.to_owned(),
                detail: detail.clone(),
            },
            StoreError::Clock => AuditError::Clock,
        }
    }
}

fn is_lock_error(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// The last entry of the chain; seq 0 and the genesis hash for an empty log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) hash: EntryHash,
}

/// Opens (creating if needed) the database for the writer: WAL mode,
/// `synchronous=FULL` so a commit is on disk when it returns, the busy
/// timeout, and the schema.
pub(crate) fn open_for_writing(
    path: &Path,
    busy_timeout: Duration,
) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    // Set first, so that a store another process holds locked makes the
    // pragmas and the schema fail after the timeout instead of hanging.
    conn.busy_timeout(busy_timeout)?;
    let journal_mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        // Still durable with synchronous=FULL, only slower and blocking
        // readers while writing.
        tracing::warn!(
            path = %path.display(),
            journal_mode,
            "the audit store cannot use write-ahead logging; commits stay durable but are slower"
        );
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Opens an existing database without writing to it (verify, tail).
pub(crate) fn open_for_reading(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(READ_BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Reads the chain head.
pub(crate) fn read_head(conn: &Connection) -> Result<Head, StoreError> {
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((seq, hash)) = row else {
        return Ok(Head {
            seq: 0,
            hash: GENESIS_HASH,
        });
    };
    let seq = u64::try_from(seq)
        .map_err(|_| StoreError::Damaged(format!("the last entry has sequence number {seq}")))?;
    let hash = chain::decode_hash(&hash)
        .ok_or_else(|| StoreError::Damaged(format!("entry {seq} has a malformed hash")))?;
    Ok(Head { seq, hash })
}

/// The most recent checkpoint: its seq and key id.
pub(crate) fn read_last_checkpoint(conn: &Connection) -> Result<Option<(u64, String)>, StoreError> {
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, key_id FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    row.map(|(seq, key_id)| {
        u64::try_from(seq)
            .map(|seq| (seq, key_id))
            .map_err(|_| StoreError::Damaged(format!("a checkpoint has sequence number {seq}")))
    })
    .transpose()
}

pub(crate) fn insert_entry(
    conn: &Connection,
    seq: u64,
    time_ms: u64,
    body: &str,
    prev_hash: &EntryHash,
    hash: &EntryHash,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit_entries (seq, time_ms, body, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        to_sql_integer(seq, "sequence number")?,
        to_sql_integer(time_ms, "time")?,
        body,
        hex::encode(prev_hash),
        hex::encode(hash),
    ])?;
    Ok(())
}

pub(crate) fn insert_checkpoint(
    conn: &Connection,
    seq: u64,
    hash: &EntryHash,
    time_ms: u64,
    signature: &[u8; 64],
    key_id: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit_checkpoints (seq, hash, time_ms, signature, key_id) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        to_sql_integer(seq, "sequence number")?,
        hex::encode(hash),
        to_sql_integer(time_ms, "time")?,
        hex::encode(signature),
        key_id,
    ])?;
    Ok(())
}

fn to_sql_integer(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Damaged(format!("the {what} {value} is too large to store")))
}

/// One entry as read back from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub seq: u64,
    /// Unix time in milliseconds, taken when `append` was called.
    pub time_ms: u64,
    pub body: serde_json::Value,
    /// The entry's hash, lowercase hex.
    pub hash: String,
}

/// Reads the last `n` entries, oldest first. A pure read: it neither creates
/// nor changes the file, and works while the gateway is writing.
pub fn tail(path: &Path, n: usize) -> Result<Vec<StoredEntry>, AuditError> {
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let mut entries = Vec::with_capacity(n.min(4096));
    query_entries(
        path,
        "SELECT seq, time_ms, body, hash FROM audit_entries ORDER BY seq DESC LIMIT ?1",
        limit,
        |entry| entries.push(entry),
    )?;
    entries.reverse();
    Ok(entries)
}

/// Visits every entry written at or after `since_ms` (unix milliseconds), in
/// order, one at a time: a long log is streamed, not loaded. Returns how many
/// entries were visited.
pub fn scan_since(
    path: &Path,
    since_ms: u64,
    mut visit: impl FnMut(StoredEntry),
) -> Result<u64, AuditError> {
    let since = i64::try_from(since_ms).unwrap_or(i64::MAX);
    let mut n_entries = 0;
    query_entries(
        path,
        "SELECT seq, time_ms, body, hash FROM audit_entries WHERE time_ms >= ?1 ORDER BY seq",
        since,
        |entry| {
            n_entries += 1;
            visit(entry);
        },
    )?;
    Ok(n_entries)
}

fn query_entries(
    path: &Path,
    sql: &str,
    parameter: i64,
    mut visit: impl FnMut(StoredEntry),
) -> Result<(), AuditError> {
    let read_error = |source| AuditError::Read {
        path: path.to_owned(),
        source,
    };
    let damaged = |detail: String| AuditError::Damaged {
        path: path.to_owned(),
        detail,
    };
    let conn = open_for_reading(path).map_err(read_error)?;
    let mut statement = conn.prepare(sql).map_err(read_error)?;
    let mut rows = statement.query([parameter]).map_err(read_error)?;
    while let Some(row) = rows.next().map_err(read_error)? {
        let seq: i64 = row.get(0).map_err(read_error)?;
        let time_ms: i64 = row.get(1).map_err(read_error)?;
        let body: String = row.get(2).map_err(read_error)?;
        let hash: String = row.get(3).map_err(read_error)?;
        let seq = u64::try_from(seq)
            .map_err(|_| damaged(format!("an entry has sequence number {seq}")))?;
        let time_ms = u64::try_from(time_ms)
            .map_err(|_| damaged(format!("entry {seq} has time {time_ms}")))?;
        let body =
            serde_json::from_str(&body).map_err(|source| AuditError::Body { seq, source })?;
        visit(StoredEntry {
            seq,
            time_ms,
            body,
            hash,
        });
    }
    Ok(())
}
