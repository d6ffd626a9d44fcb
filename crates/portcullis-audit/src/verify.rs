//! Verification: `portcullis audit verify`, of a store or of exports.
//!
//! [`Walk`] checks a chain entry by entry, whatever it is read from. A store
//! is one pass over the entries in seq order, one row in memory at a time,
//! merged with a second pass over the checkpoints in seq order. Both read
//! inside one read transaction, so a gateway appending meanwhile does not
//! disturb the snapshot. Exports are read line by line (`export.rs`). The
//! first problem found is the one reported.

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use rusqlite::types::ValueRef;
use rusqlite::Row;

use crate::chain::{self, EntryHash, GENESIS_HASH};
use crate::error::VerifyError;
use crate::store;

/// What a successful verification checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The entry the checked ones follow: 0 (the log's start) for a store;
    /// for exports, where the first one says it continues from.
    pub starts_after: u64,
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    /// The last entry's seq; `starts_after` when no entry was checked.
    pub last_seq: u64,
    /// The last checkpoint's seq; `None` when there is no checkpoint.
    pub last_checkpoint_seq: Option<u64>,
    /// The hash the last checkpoint signed, in hex: what the gateway logs
    /// as `audit head signed`, to compare with a copy kept elsewhere.
    pub last_checkpoint_hash: Option<String>,
    /// Entries that no checkpoint covers yet. Removing them from the end
    /// would not be detected.
    pub entries_after_last_checkpoint: u64,
    /// Ranges of entries (first, last) that a gateway found unsigned when it
    /// opened the log, and said so in it: written before a crash, or added
    /// while it was stopped. Later checkpoints cover them as found.
    pub found_unsigned: Vec<(u64, u64)>,
}

pub(crate) struct CheckpointRow {
    pub(crate) seq: u64,
    pub(crate) hash: EntryHash,
    pub(crate) time_ms: u64,
    pub(crate) signature: [u8; 64],
    pub(crate) key_id: String,
}

/// One entry as read, before it is checked.
pub(crate) struct EntryRow<'a> {
    pub(crate) seq: u64,
    pub(crate) time_ms: u64,
    pub(crate) body: &'a [u8],
    pub(crate) prev_hash: EntryHash,
    pub(crate) hash: EntryHash,
}

/// How long an entry may wait for a signed checkpoint. A running gateway
/// signs what it wrote within a second, and at shutdown; an older unsigned
/// entry was changed (a forger who cannot sign deletes the checkpoints
/// after it and recomputes the chain) or outlived a crash: either way no
/// signature vouches for it.
const UNSIGNED_GRACE_MS: u64 = 60_000;

/// How far ahead of this machine's clock an entry may be dated: the log may
/// be verified on another machine than the gateway's, whose clocks differ
/// a little. An entry dated later was forged (see [`VerifyError::FromTheFuture`]).
const CLOCK_SKEW_MS: u64 = 5 * 60_000;

/// The time now, in unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A chain checked one entry and one checkpoint at a time, in seq order.
pub(crate) struct Walk<'k> {
    key: &'k VerifyingKey,
    expected_key_id: String,
    now_ms: u64,
    prev_hash: EntryHash,
    /// The time of the first entry no checkpoint covers yet.
    unsigned_since: Option<u64>,
    report: VerifyReport,
}

impl<'k> Walk<'k> {
    /// A walk that starts after entry `after`, whose hash is `hash` (entry
    /// 0 and the zero hash: the log's start).
    pub(crate) fn new(key: &'k VerifyingKey, now_ms: u64, after: u64, hash: EntryHash) -> Self {
        Walk {
            key,
            expected_key_id: chain::key_id(key),
            now_ms,
            prev_hash: hash,
            unsigned_since: None,
            report: VerifyReport {
                starts_after: after,
                entries_checked: 0,
                checkpoints_checked: 0,
                last_seq: after,
                last_checkpoint_seq: None,
                last_checkpoint_hash: None,
                entries_after_last_checkpoint: 0,
                found_unsigned: Vec::new(),
            },
        }
    }

    /// How many entries were checked.
    pub(crate) fn entries_checked(&self) -> u64 {
        self.report.entries_checked
    }

    /// The last entry checked, and its hash.
    pub(crate) fn head(&self) -> (u64, EntryHash) {
        (self.report.last_seq, self.prev_hash)
    }

    /// Checks the entry that should come next.
    pub(crate) fn entry(&mut self, entry: &EntryRow<'_>) -> Result<(), VerifyError> {
        let seq = self.report.last_seq + 1;
        match entry.seq {
            found if found == seq => {}
            found if found > seq && seq == 1 => {
                return Err(VerifyError::StartMissing { first: found })
            }
            found if found > seq => {
                return Err(VerifyError::Gap {
                    missing: seq,
                    before: seq - 1,
                    after: found,
                })
            }
            found => {
                return Err(VerifyError::OutOfOrder {
                    seq: found,
                    after: seq - 1,
                })
            }
        }
        if entry.prev_hash != self.prev_hash {
            return Err(if seq == 1 {
                VerifyError::BadStart
            } else {
                VerifyError::BrokenLink {
                    seq,
                    previous: seq - 1,
                }
            });
        }
        let hash = chain::entry_hash(&self.prev_hash, seq, entry.time_ms, entry.body);
        if hash != entry.hash {
            return Err(VerifyError::Changed { seq });
        }
        if let Some(range) = found_unsigned(entry.body) {
            self.report.found_unsigned.push(range);
        }
        if entry.time_ms > self.now_ms.saturating_add(CLOCK_SKEW_MS) {
            return Err(VerifyError::FromTheFuture {
                seq,
                minutes_ahead: (entry.time_ms - self.now_ms) / 60_000,
            });
        }
        self.unsigned_since = self.unsigned_since.or(Some(entry.time_ms));
        self.prev_hash = hash;
        self.report.entries_checked += 1;
        self.report.last_seq = seq;
        Ok(())
    }

    /// Checks a checkpoint of the last entry checked.
    pub(crate) fn checkpoint(&mut self, checkpoint: &CheckpointRow) -> Result<(), VerifyError> {
        if checkpoint.seq != self.report.last_seq || self.report.entries_checked == 0 {
            return Err(VerifyError::CheckpointOutOfPlace {
                seq: checkpoint.seq,
                after: self.report.last_seq,
            });
        }
        check_checkpoint(checkpoint, &self.prev_hash, self.key, &self.expected_key_id)?;
        self.unsigned_since = None;
        self.report.checkpoints_checked += 1;
        self.report.last_checkpoint_seq = Some(checkpoint.seq);
        self.report.last_checkpoint_hash = Some(hex::encode(self.prev_hash));
        Ok(())
    }

    /// The entries after the last checkpoint (or the start), first and last.
    pub(crate) fn unsigned_tail(&self) -> Option<(u64, u64)> {
        let signed_up_to = (self.report.last_checkpoint_seq).unwrap_or(self.report.starts_after);
        (self.report.last_seq > signed_up_to).then_some((signed_up_to + 1, self.report.last_seq))
    }

    /// The report, once every entry was checked. `grace`: whether entries
    /// no checkpoint covers may be there for [`UNSIGNED_GRACE_MS`] (a live
    /// store), or not at all (an export ends at a checkpoint).
    pub(crate) fn finish(mut self, grace: bool) -> Result<VerifyReport, VerifyError> {
        let tail = self.unsigned_tail();
        self.report.entries_after_last_checkpoint =
            tail.map_or(0, |(first, last)| last - first + 1);
        if let (Some(since), Some((first, last))) = (self.unsigned_since, tail) {
            if !grace || self.now_ms.saturating_sub(since) > UNSIGNED_GRACE_MS {
                return Err(VerifyError::Unsigned { first, last });
            }
        }
        Ok(self.report)
    }
}

/// Checks every entry's link and hash and every checkpoint's key, signature
/// and position in the chain, against `key`, and that no entry older than
/// a minute lacks a checkpoint. A pure read of the file: it neither creates
/// nor changes it.
pub fn verify(path: &Path, key: &VerifyingKey) -> Result<VerifyReport, VerifyError> {
    verify_at(path, key, now_ms())
}

fn verify_at(path: &Path, key: &VerifyingKey, now_ms: u64) -> Result<VerifyReport, VerifyError> {
    let mut conn = store::open_for_reading(path).map_err(|source| VerifyError::Open {
        path: path.to_owned(),
        source,
    })?;
    let snapshot = conn.transaction().map_err(|source| VerifyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut walk = Walk::new(key, now_ms, 0, GENESIS_HASH);
    walk_store(&snapshot, path, &mut walk, u64::MAX, |_| Ok(()))?;
    walk.finish(true)
}

/// What [`walk_store`] checked, handed to its visitor.
pub(crate) enum Checked<'a> {
    Entry(&'a EntryRow<'a>),
    Checkpoint(&'a CheckpointRow),
}

/// Checks with `walk` the store's entries after the walk's start up to
/// `end`, and their checkpoints, in seq order, one row in memory at a time;
/// `visit` sees each once checked.
pub(crate) fn walk_store(
    snapshot: &rusqlite::Transaction<'_>,
    path: &Path,
    walk: &mut Walk<'_>,
    end: u64,
    mut visit: impl FnMut(Checked<'_>) -> Result<(), VerifyError>,
) -> Result<(), VerifyError> {
    let read_error = |source| VerifyError::Read {
        path: path.to_owned(),
        source,
    };
    let range = [walk.head().0, end].map(|seq| i64::try_from(seq).unwrap_or(i64::MAX));
    let mut entry_statement = snapshot
        .prepare(
            "SELECT seq, time_ms, body, prev_hash, hash FROM audit_entries \
             WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )
        .map_err(read_error)?;
    let mut checkpoint_statement = snapshot
        .prepare(
            "SELECT seq, hash, time_ms, signature, key_id FROM audit_checkpoints \
             WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )
        .map_err(read_error)?;
    let mut entries = entry_statement.query(range).map_err(read_error)?;
    let mut checkpoints = checkpoint_statement.query(range).map_err(read_error)?;
    let mut next_checkpoint = match checkpoints.next().map_err(read_error)? {
        Some(row) => Some(read_checkpoint(row)?),
        None => None,
    };
    while let Some(row) = entries.next().map_err(read_error)? {
        let seq = walk.head().0 + 1;
        let entry = read_entry(row, seq)?;
        walk.entry(&entry)?;
        visit(Checked::Entry(&entry))?;
        // INVARIANT: checkpoints are read in seq order and every seq below
        // this one was checked, so a pending checkpoint is at `seq` or later.
        if let Some(checkpoint) = next_checkpoint.take_if(|checkpoint| checkpoint.seq == seq) {
            walk.checkpoint(&checkpoint)?;
            visit(Checked::Checkpoint(&checkpoint))?;
            next_checkpoint = match checkpoints.next().map_err(read_error)? {
                Some(row) => Some(read_checkpoint(row)?),
                None => None,
            };
        }
    }
    if let Some(checkpoint) = next_checkpoint {
        return Err(VerifyError::CheckpointBeyondEnd {
            seq: checkpoint.seq,
            last_seq: walk.head().0,
        });
    }
    Ok(())
}

/// The range an [`crate::UNSIGNED_AT_OPEN`] entry names.
fn found_unsigned(body: &[u8]) -> Option<(u64, u64)> {
    // Cheap test first: nearly no entry is one.
    let marker = crate::UNSIGNED_AT_OPEN.as_bytes();
    if !body.windows(marker.len()).any(|w| w == marker) {
        return None;
    }
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    if body["event"] != crate::UNSIGNED_AT_OPEN {
        return None;
    }
    Some((body["first"].as_u64()?, body["last"].as_u64()?))
}

/// The entry in a store's row, expected at `seq`.
pub(crate) fn read_entry<'row>(
    row: &'row Row<'_>,
    seq: u64,
) -> Result<EntryRow<'row>, VerifyError> {
    let stored_seq = integer(row, 0).map_err(|detail| VerifyError::MalformedEntry {
        seq: i64::try_from(seq).unwrap_or(i64::MAX),
        detail,
    })?;
    let malformed = |detail: String| VerifyError::MalformedEntry {
        seq: stored_seq,
        detail,
    };
    // Rows come in ascending seq order: one not positive is the first row.
    let seq = u64::try_from(stored_seq)
        .ok()
        .filter(|seq| *seq >= 1)
        .ok_or_else(|| malformed("sequence numbers start at 1".to_owned()))?;
    let time_ms = u64::try_from(integer(row, 1).map_err(malformed)?)
        .map_err(|_| malformed("its time is negative".to_owned()))?;
    let body = match row.get_ref(2) {
        Ok(ValueRef::Text(body)) => body,
        _ => return Err(malformed("its body is not text".to_owned())),
    };
    Ok(EntryRow {
        seq,
        time_ms,
        body,
        prev_hash: hash_column(row, 3, "prev_hash").map_err(malformed)?,
        hash: hash_column(row, 4, "hash").map_err(malformed)?,
    })
}

pub(crate) fn read_checkpoint(row: &Row<'_>) -> Result<CheckpointRow, VerifyError> {
    let stored_seq =
        integer(row, 0).map_err(|detail| VerifyError::MalformedCheckpoint { seq: 0, detail })?;
    let malformed = |detail: String| VerifyError::MalformedCheckpoint {
        seq: stored_seq,
        detail,
    };
    let seq = u64::try_from(stored_seq)
        .ok()
        .filter(|seq| *seq >= 1)
        .ok_or_else(|| malformed("sequence numbers start at 1".to_owned()))?;
    let hash = hash_column(row, 1, "hash").map_err(malformed)?;
    let time_ms = u64::try_from(integer(row, 2).map_err(malformed)?)
        .map_err(|_| malformed("its time is negative".to_owned()))?;
    let signature = text(row, 3, "signature")
        .and_then(|signature| {
            chain::decode_signature(signature)
                .ok_or_else(|| "its signature is not 128 hex digits".to_owned())
        })
        .map_err(malformed)?;
    let key_id = text(row, 4, "key_id").map_err(malformed)?.to_owned();
    Ok(CheckpointRow {
        seq,
        hash,
        time_ms,
        signature,
        key_id,
    })
}

/// Checks a checkpoint against the expected key and the chain's hash at its
/// seq. The signature is checked before the hash, so that a mismatch with a
/// genuine checkpoint says the entries were rewritten.
fn check_checkpoint(
    checkpoint: &CheckpointRow,
    chain_hash: &EntryHash,
    key: &VerifyingKey,
    expected_key_id: &str,
) -> Result<(), VerifyError> {
    if checkpoint.key_id != expected_key_id {
        return Err(VerifyError::CheckpointKey {
            seq: checkpoint.seq,
            key_id: checkpoint.key_id.clone(),
            expected_key_id: expected_key_id.to_owned(),
        });
    }
    if !chain::checkpoint_signature_is_valid(
        key,
        checkpoint.seq,
        &checkpoint.hash,
        checkpoint.time_ms,
        &checkpoint.signature,
    ) {
        return Err(VerifyError::CheckpointSignature {
            seq: checkpoint.seq,
        });
    }
    if checkpoint.hash != *chain_hash {
        return Err(VerifyError::CheckpointMismatch {
            seq: checkpoint.seq,
        });
    }
    Ok(())
}

fn integer(row: &Row<'_>, index: usize) -> Result<i64, String> {
    match row.get_ref(index) {
        Ok(ValueRef::Integer(value)) => Ok(value),
        _ => Err(format!("column {} is not an integer", index + 1)),
    }
}

fn text<'row>(row: &'row Row<'_>, index: usize, name: &str) -> Result<&'row str, String> {
    match row.get_ref(index) {
        Ok(ValueRef::Text(bytes)) => {
            std::str::from_utf8(bytes).map_err(|_| format!("its {name} is not valid text"))
        }
        _ => Err(format!("its {name} is not text")),
    }
}

fn hash_column(row: &Row<'_>, index: usize, name: &str) -> Result<EntryHash, String> {
    chain::decode_hash(text(row, index, name)?)
        .ok_or_else(|| format!("its {name} is not 64 hex digits"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{counted_checkpoints, store_path, test_key, write_sealed_store};
    use crate::AuditLog;
    use ed25519_dalek::SigningKey;
    use rusqlite::{params, Connection};

    /// A store of 30 entries with checkpoints at 10, 20 and 30, and a raw
    /// connection on it to tamper with.
    async fn sealed_store() -> (tempfile::TempDir, std::path::PathBuf, SigningKey) {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = test_key(21);
        write_sealed_store(&path, &key, 30, 10).await;
        (dir, path, key)
    }

    fn check(path: &Path, key: &SigningKey) -> Result<VerifyReport, VerifyError> {
        verify(path, &key.verifying_key())
    }

    fn entry(conn: &Connection, seq: u64) -> (u64, String, EntryHash) {
        conn.query_row(
            "SELECT time_ms, body, prev_hash FROM audit_entries WHERE seq = ?1",
            [seq],
            |row| {
                let prev: String = row.get(2)?;
                Ok((row.get(0)?, row.get(1)?, chain::decode_hash(&prev).unwrap()))
            },
        )
        .unwrap()
    }

    /// What a forger with the hash formula does: rewrites entry `seq` with
    /// `body`, and recomputes its hash and the next `n_links` links.
    fn forge_from(conn: &Connection, seq: u64, body: &str, n_links: u64) {
        let (time_ms, _, mut prev) = entry(conn, seq);
        let mut hash = chain::entry_hash(&prev, seq, time_ms, body.as_bytes());
        conn.execute(
            "UPDATE audit_entries SET body = ?1, hash = ?2 WHERE seq = ?3",
            params![body, hex::encode(hash), seq],
        )
        .unwrap();
        for next in seq + 1..=seq + n_links {
            prev = hash;
            let (time_ms, body, _) = entry(conn, next);
            conn.execute(
                "UPDATE audit_entries SET prev_hash = ?1 WHERE seq = ?2",
                params![hex::encode(prev), next],
            )
            .unwrap();
            hash = chain::entry_hash(&prev, next, time_ms, body.as_bytes());
            if next < seq + n_links {
                conn.execute(
                    "UPDATE audit_entries SET hash = ?1 WHERE seq = ?2",
                    params![hex::encode(hash), next],
                )
                .unwrap();
            }
        }
    }

    /// Replaces checkpoint `seq`'s signature with one made by `key`, and its
    /// key id with `key_id`.
    fn resign_checkpoint(conn: &Connection, seq: u64, key: &SigningKey, key_id: &str) {
        let (hash, time_ms): (String, u64) = conn
            .query_row(
                "SELECT hash, time_ms FROM audit_checkpoints WHERE seq = ?1",
                [seq],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        let hash = chain::decode_hash(&hash).unwrap();
        let signature = chain::sign_checkpoint(key, seq, &hash, time_ms);
        conn.execute(
            "UPDATE audit_checkpoints SET signature = ?1, key_id = ?2 WHERE seq = ?3",
            params![hex::encode(signature), key_id, seq],
        )
        .unwrap();
    }

    #[tokio::test]
    async fn an_intact_store_verifies() {
        let (_dir, path, key) = sealed_store().await;
        let report = check(&path, &key).unwrap();
        let head: String = Connection::open(&path)
            .unwrap()
            .query_row("SELECT hash FROM audit_entries WHERE seq = 30", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            report,
            VerifyReport {
                starts_after: 0,
                entries_checked: 30,
                checkpoints_checked: 3,
                last_seq: 30,
                last_checkpoint_seq: Some(30),
                last_checkpoint_hash: Some(head),
                entries_after_last_checkpoint: 0,
                found_unsigned: Vec::new(),
            }
        );
    }

    #[tokio::test]
    async fn a_changed_body_names_its_entry() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE audit_entries SET body = ?1 WHERE seq = 12",
            [r#"{"n":12,"action":"query","text":"select 1"}"#],
        )
        .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::Changed { seq: 12 }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "entry 12 was changed: its hash does not match its content"
        );
        assert_eq!(error.seq(), Some(12));
    }

    #[tokio::test]
    async fn a_changed_hash_column_names_its_entry() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE audit_entries SET hash = ?1 WHERE seq = 30",
            ["00".repeat(32)],
        )
        .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::Changed { seq: 30 }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_deleted_middle_entry_is_named_as_a_gap() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM audit_entries WHERE seq = 12", [])
            .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::Gap {
                    missing: 12,
                    before: 11,
                    after: 13
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "entry 12 is missing (entries jump from 11 to 13)"
        );
    }

    #[tokio::test]
    async fn a_deleted_first_entry_is_named() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM audit_entries WHERE seq = 1", [])
            .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::StartMissing { first: 2 }),
            "{error:?}"
        );
        assert_eq!(error.seq(), Some(1));
    }

    #[tokio::test]
    async fn swapped_bodies_name_the_first_of_the_two() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        let (_, body_12, _) = entry(&conn, 12);
        let (_, body_17, _) = entry(&conn, 17);
        conn.execute(
            "UPDATE audit_entries SET body = ?1 WHERE seq = 12",
            [&body_17],
        )
        .unwrap();
        conn.execute(
            "UPDATE audit_entries SET body = ?1 WHERE seq = 17",
            [&body_12],
        )
        .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::Changed { seq: 12 }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_removed_and_renumbered_entry_breaks_the_link() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM audit_entries WHERE seq = 12", [])
            .unwrap();
        conn.execute("UPDATE audit_entries SET seq = seq - 1 WHERE seq > 12", [])
            .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::BrokenLink {
                    seq: 12,
                    previous: 11
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "entry 12 does not follow entry 11: prev_hash mismatch"
        );
    }

    #[tokio::test]
    async fn a_forger_recomputing_one_hash_is_caught_at_the_next_entry() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        forge_from(
            &conn,
            12,
            r#"{"n":12,"action":"query","text":"select 0"}"#,
            1,
        );
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::Changed { seq: 13 }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_forger_recomputing_the_whole_chain_is_caught_by_the_checkpoint() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        forge_from(
            &conn,
            12,
            r#"{"n":12,"action":"query","text":"select 0"}"#,
            18,
        );
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::CheckpointMismatch { seq: 20 }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn removing_the_end_of_the_log_is_caught_by_its_checkpoint() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM audit_entries WHERE seq > 25", [])
            .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::CheckpointBeyondEnd {
                    seq: 30,
                    last_seq: 25
                }
            ),
            "{error:?}"
        );

        conn.execute("DELETE FROM audit_entries WHERE seq >= 20", [])
            .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::CheckpointBeyondEnd {
                    seq: 20,
                    last_seq: 19
                }
            ),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_altered_checkpoint_signature_is_caught() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        let signature: String = conn
            .query_row(
                "SELECT signature FROM audit_checkpoints WHERE seq = 10",
                [],
                |row| row.get(0),
            )
            .unwrap();
        let flipped = if signature.starts_with('0') { "1" } else { "0" };
        let forged = format!("{flipped}{}", signature.get(1..).unwrap());
        conn.execute(
            "UPDATE audit_checkpoints SET signature = ?1 WHERE seq = 10",
            [forged],
        )
        .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::CheckpointSignature { seq: 10 }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_checkpoint_moved_to_another_time_is_caught() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE audit_checkpoints SET time_ms = time_ms + 1 WHERE seq = 20",
            [],
        )
        .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::CheckpointSignature { seq: 20 }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_checkpoint_signed_with_another_key_is_caught() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        let forger = test_key(99);
        // Under the forger's own key id.
        resign_checkpoint(&conn, 10, &forger, &chain::key_id(&forger.verifying_key()));
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::CheckpointKey { seq: 10, .. }),
            "{error:?}"
        );

        // Under the genuine key id.
        resign_checkpoint(&conn, 10, &forger, &chain::key_id(&key.verifying_key()));
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::CheckpointSignature { seq: 10 }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn verifying_against_another_key_fails_at_the_first_checkpoint() {
        let (_dir, path, _key) = sealed_store().await;
        let error = check(&path, &test_key(98)).unwrap_err();
        assert!(
            matches!(error, VerifyError::CheckpointKey { seq: 10, .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_forged_checkpoint_over_a_forged_chain_is_caught() {
        // The forger rewrites the chain from entry 12 and then signs new
        // checkpoints with their own key, keeping the genuine key id.
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        forge_from(
            &conn,
            12,
            r#"{"n":12,"action":"query","text":"select 0"}"#,
            18,
        );
        let forger = test_key(97);
        for seq in [20, 30] {
            let (hash, time_ms): (String, u64) = conn
                .query_row(
                    "SELECT hash, ?1 FROM audit_entries WHERE seq = ?2",
                    params![1_700_000_000_000u64, seq],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .unwrap();
            let hash = chain::decode_hash(&hash).unwrap();
            let signature = chain::sign_checkpoint(&forger, seq, &hash, time_ms);
            conn.execute(
                "UPDATE audit_checkpoints SET hash = ?1, time_ms = ?2, signature = ?3 WHERE seq = ?4",
                params![hex::encode(hash), time_ms, hex::encode(signature), seq],
            )
            .unwrap();
        }
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::CheckpointSignature { seq: 20 }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_changed_first_link_is_caught() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        let (time_ms, body, _) = entry(&conn, 1);
        let prev = [1u8; 32];
        let hash = chain::entry_hash(&prev, 1, time_ms, body.as_bytes());
        conn.execute(
            "UPDATE audit_entries SET prev_hash = ?1, hash = ?2 WHERE seq = 1",
            params![hex::encode(prev), hex::encode(hash)],
        )
        .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(matches!(error, VerifyError::BadStart), "{error:?}");
    }

    #[tokio::test]
    async fn malformed_rows_are_named() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE audit_entries SET body = CAST(body AS BLOB) WHERE seq = 4",
            [],
        )
        .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::MalformedEntry { seq: 4, .. }),
            "{error:?}"
        );

        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE audit_entries SET prev_hash = 'zz' WHERE seq = 5",
            [],
        )
        .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::MalformedEntry { seq: 5, .. }),
            "{error:?}"
        );

        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE audit_checkpoints SET signature = 'abc' WHERE seq = 10",
            [],
        )
        .unwrap();
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::MalformedCheckpoint { seq: 10, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_missing_store_is_an_error_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.db");
        let error = check(&path, &test_key(1)).unwrap_err();
        assert!(matches!(error, VerifyError::Open { .. }), "{error:?}");
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_tail_left_unsigned_longer_than_a_running_gateway_leaves_it_is_refused() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        // What a forger who cannot sign does: drop the checkpoints after an
        // entry, change it, and recompute the chain.
        conn.execute("DELETE FROM audit_checkpoints WHERE seq > 20", [])
            .unwrap();
        forge_from(&conn, 30, r#"{"n":30,"effect":"allow"}"#, 0);
        let later = |minutes: u64| {
            let newest: u64 = conn
                .query_row("SELECT max(time_ms) FROM audit_entries", [], |r| r.get(0))
                .unwrap();
            newest + minutes * 60_000
        };
        // Within a minute, a running gateway may not have signed yet.
        assert!(verify_at(&path, &key.verifying_key(), later(0)).is_ok());
        let error = verify_at(&path, &key.verifying_key(), later(2)).unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::Unsigned {
                    first: 21,
                    last: 30
                }
            ),
            "{error:?}"
        );
        // With every checkpoint gone, from the first entry.
        conn.execute("DELETE FROM audit_checkpoints", []).unwrap();
        let error = verify_at(&path, &key.verifying_key(), later(2)).unwrap_err();
        assert!(
            matches!(error, VerifyError::Unsigned { first: 1, last: 30 }),
            "{error:?}"
        );
    }

    /// Unsigned entries are judged by their age: a forger who cannot sign
    /// dates the first of them in the future, so that it never grows old,
    /// and recomputes the chain.
    #[tokio::test]
    async fn an_entry_dated_in_the_future_is_refused() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM audit_checkpoints", []).unwrap();
        let now = crate::now_ms().unwrap();
        // Dates entry 1 `time_ms` and recomputes the whole chain.
        let date = |time_ms: u64| {
            conn.execute(
                "UPDATE audit_entries SET time_ms = ?1 WHERE seq = 1",
                [time_ms],
            )
            .unwrap();
            let mut prev = GENESIS_HASH;
            for seq in 1..=30 {
                let (time_ms, body, _) = entry(&conn, seq);
                let hash = chain::entry_hash(&prev, seq, time_ms, body.as_bytes());
                conn.execute(
                    "UPDATE audit_entries SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                    params![hex::encode(prev), hex::encode(hash), seq],
                )
                .unwrap();
                prev = hash;
            }
        };
        date(now + 10 * 60_000);
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::FromTheFuture { seq: 1, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("clock"), "{error}");
        // Years ahead, where the age of the unsigned entries was once
        // counted as none.
        date(now + 75 * 365 * 24 * 3_600_000);
        let error = check(&path, &key).unwrap_err();
        assert!(
            matches!(error, VerifyError::FromTheFuture { seq: 1, .. }),
            "{error:?}"
        );
        // A verifier's clock a little behind the gateway's is no forgery:
        // then the tail is refused as unsigned once it is old.
        date(now + 60_000);
        assert!(check(&path, &key).is_ok());
        let error = verify_at(&path, &key.verifying_key(), now + 3 * 60_000).unwrap_err();
        assert!(
            matches!(error, VerifyError::Unsigned { first: 1, last: 30 }),
            "{error:?}"
        );
    }

    /// What a forger who cannot sign does while the gateway is stopped:
    /// appends an entry with the hash the chain wants. The gateway, started
    /// again, signs it with what it writes next, so it says first, in the
    /// log, which entries it found unsigned; verify lists them.
    #[tokio::test]
    async fn entries_found_unsigned_at_start_are_named_in_the_log() {
        let (_dir, path, key) = sealed_store().await;
        let conn = Connection::open(&path).unwrap();
        let prev: String = conn
            .query_row("SELECT hash FROM audit_entries WHERE seq = 30", [], |r| {
                r.get(0)
            })
            .unwrap();
        let prev = chain::decode_hash(&prev).unwrap();
        let body = r#"{"event":"approval.approved","request":7}"#;
        let time_ms = crate::now_ms().unwrap();
        let hash = chain::entry_hash(&prev, 31, time_ms, body.as_bytes());
        conn.execute(
            "INSERT INTO audit_entries (seq, time_ms, body, prev_hash, hash) VALUES (31, ?1, ?2, ?3, ?4)",
            params![time_ms, body, hex::encode(prev), hex::encode(hash)],
        )
        .unwrap();

        let log = AuditLog::open(&path, key.clone(), counted_checkpoints(10)).unwrap();
        assert_eq!(log.append(&serde_json::json!({"n": 33})).await.unwrap(), 33);
        log.shutdown().await.unwrap();
        let (_, marker, _) = entry(&conn, 32);
        assert!(marker.contains(crate::UNSIGNED_AT_OPEN), "{marker}");
        let report = check(&path, &key).unwrap();
        assert_eq!(report.found_unsigned, vec![(31, 31)]);
        assert_eq!(report.last_checkpoint_seq, Some(33));

        // A log opened with every entry signed says nothing.
        let log = AuditLog::open(&path, key.clone(), counted_checkpoints(10)).unwrap();
        log.append(&serde_json::json!({"n": 34})).await.unwrap();
        log.shutdown().await.unwrap();
        assert_eq!(check(&path, &key).unwrap().found_unsigned, vec![(31, 31)]);
    }

    #[tokio::test]
    async fn entries_after_the_last_checkpoint_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = test_key(22);
        write_sealed_store(&path, &key, 15, 10).await;
        // Remove the final checkpoint that shutdown wrote at 15.
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM audit_checkpoints WHERE seq = 15", [])
            .unwrap();
        let report = check(&path, &key).unwrap();
        assert_eq!(report.last_seq, 15);
        assert_eq!(report.last_checkpoint_seq, Some(10));
        assert_eq!(report.entries_after_last_checkpoint, 5);
    }
}
