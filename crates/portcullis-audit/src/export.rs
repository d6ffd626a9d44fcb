//! Exports: the signed part of the log as JSON lines, to keep away from the
//! gateway (object storage, a SIEM), and their verification there.
//!
//! An export holds a header, then every entry after a given one up to the
//! store's last checkpoint, each checkpoint on the line after the entry it
//! signs, then an end line naming its last entry. It ends at a checkpoint,
//! so it verifies on its own, with nothing but the public key; the next
//! export starts where it ended, and a chain of exports verifies as one
//! log. The range is checked whole before a line is written: entries that
//! do not verify are not exported. A line is accepted only as `export`
//! writes it, so that no reader can take it another way than the check.
//!
//! Kept elsewhere, exports show what the store alone cannot: a store cut
//! back to an earlier checkpoint, or rewritten and signed again, no longer
//! holds the entry the last export ended with, and the next export says so.
//!
//! Lines are ASCII: every character outside it is written as a `\u`
//! escape, so an export prints safely and the bodies read back exactly.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use crate::chain::{self, GENESIS_HASH};
use crate::error::VerifyError;
use crate::store;
use crate::verify::{self, Checked, CheckpointRow, EntryRow, VerifyReport, Walk};

/// The `format` of an export's header.
pub const EXPORT_FORMAT: &str = "portcullis-audit-export";
const EXPORT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    /// The signing key's id and public key (hex). Verifying against the key
    /// an export names proves only that it is whole: give a copy kept
    /// apart to prove who signed it.
    key_id: String,
    public_key: String,
    /// The entry this export continues from (0: the log's start), and its
    /// hash.
    after: u64,
    after_hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryLine {
    seq: u64,
    time_ms: u64,
    /// The body exactly as hashed: JSON in a string.
    body: String,
    prev_hash: String,
    hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    checkpoint: CheckpointFields,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointFields {
    seq: u64,
    hash: String,
    time_ms: u64,
    signature: String,
    key_id: String,
}

/// The last line: where the export ends. Without it, an export cut at a
/// checkpoint would verify as a shorter one.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndLine {
    end: EndFields,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndFields {
    /// Its last entry (`after` when it holds none), and that entry's hash.
    last: u64,
    last_hash: String,
    /// How many entries it holds.
    entries: u64,
    /// The signing key's signature of where it starts and ends
    /// ([`chain::export_end_message`]): cut, or its header changed, it no
    /// longer verifies.
    signature: String,
}

/// Where an export starts.
pub enum ExportStart<'a> {
    /// At the log's first entry.
    Beginning,
    /// After this entry.
    After(u64),
    /// Where this earlier export ends, once the store is seen to still hold
    /// the entry it ended with.
    AfterExport(&'a Path),
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// The entry the export continues from.
    pub after: u64,
    /// Its last entry (`after` when it holds none), which a checkpoint
    /// signs.
    pub last_seq: u64,
    pub entries: u64,
    pub checkpoints: u64,
}

/// Writes the entries after `start` up to the store's last checkpoint to
/// `out`, checked against the chain and the store's key, whose private half
/// `signing` signs where the export ends.
pub fn export(
    path: &Path,
    signing: &SigningKey,
    start: ExportStart<'_>,
    out: &mut dyn Write,
) -> Result<ExportSummary, VerifyError> {
    let verifying = signing.verifying_key();
    let key = &verifying;
    let read_error = |source| VerifyError::Read {
        path: path.to_owned(),
        source,
    };
    let ended_at = match start {
        ExportStart::Beginning => None,
        ExportStart::After(seq) => Some((seq, None)),
        ExportStart::AfterExport(file) => {
            let (seq, hash) = walk_exports(&[file.to_path_buf()], key, verify::now_ms())?.head();
            Some((seq, Some(hex::encode(hash))))
        }
    };
    let mut conn = store::open_for_reading(path).map_err(|source| VerifyError::Open {
        path: path.to_owned(),
        source,
    })?;
    let snapshot = conn.transaction().map_err(read_error)?;
    let (after, after_hash) = match ended_at {
        None | Some((0, _)) => (0, GENESIS_HASH),
        Some((seq, exported)) => {
            let sql_seq = i64::try_from(seq).unwrap_or(i64::MAX);
            let stored: Option<String> = snapshot
                .query_row(
                    "SELECT hash FROM audit_entries WHERE seq = ?1",
                    [sql_seq],
                    |row| row.get(0),
                )
                .optional()
                .map_err(read_error)?;
            let Some(stored) = stored else {
                let last_seq: Option<i64> = snapshot
                    .query_row("SELECT max(seq) FROM audit_entries", [], |row| row.get(0))
                    .map_err(read_error)?;
                return Err(VerifyError::AfterBeyondEnd {
                    after: seq,
                    last_seq: last_seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                });
            };
            if let Some(exported) = exported.filter(|exported| *exported != stored) {
                return Err(VerifyError::AfterChanged {
                    seq,
                    exported,
                    stored,
                });
            }
            let hash = chain::decode_hash(&stored).ok_or_else(|| VerifyError::MalformedEntry {
                seq: sql_seq,
                detail: "its hash is not 64 hex digits".to_owned(),
            })?;
            (seq, hash)
        }
    };
    let last_checkpoint: Option<i64> = snapshot
        .query_row("SELECT max(seq) FROM audit_checkpoints", [], |row| {
            row.get(0)
        })
        .map_err(read_error)?;
    let end = last_checkpoint
        .and_then(|seq| u64::try_from(seq).ok())
        .unwrap_or(0)
        .max(after);
    // Checked whole before a line is written: standard output cannot take
    // back what it wrote, and a part of a range that does not verify would
    // verify on its own. From the log's start: an entry changed in a range
    // exported before breaks the chain the next export continues.
    let mut checked = Walk::new(key, verify::now_ms(), 0, GENESIS_HASH);
    verify::walk_store(&snapshot, path, &mut checked, end, |_| Ok(()))?;
    checked.finish(false)?;
    write_line(
        out,
        &Header {
            format: EXPORT_FORMAT.to_owned(),
            version: EXPORT_VERSION,
            key_id: chain::key_id(key),
            public_key: hex::encode(key.as_bytes()),
            after,
            after_hash: hex::encode(after_hash),
        },
    )?;
    let mut walk = Walk::new(key, verify::now_ms(), after, after_hash);
    verify::walk_store(&snapshot, path, &mut walk, end, |checked| match checked {
        Checked::Entry(entry) => {
            let body =
                std::str::from_utf8(entry.body).map_err(|_| VerifyError::MalformedEntry {
                    seq: i64::try_from(entry.seq).unwrap_or(i64::MAX),
                    detail: "its body is not valid UTF-8".to_owned(),
                })?;
            write_line(
                out,
                &EntryLine {
                    seq: entry.seq,
                    time_ms: entry.time_ms,
                    body: body.to_owned(),
                    prev_hash: hex::encode(entry.prev_hash),
                    hash: hex::encode(entry.hash),
                },
            )
        }
        Checked::Checkpoint(checkpoint) => write_line(
            out,
            &CheckpointLine {
                checkpoint: CheckpointFields {
                    seq: checkpoint.seq,
                    hash: hex::encode(checkpoint.hash),
                    time_ms: checkpoint.time_ms,
                    signature: hex::encode(checkpoint.signature),
                    key_id: checkpoint.key_id.clone(),
                },
            },
        ),
    })?;
    let (last, last_hash) = walk.head();
    let report = walk.finish(false)?;
    let message =
        chain::export_end_message(after, &after_hash, last, &last_hash, report.entries_checked);
    write_line(
        out,
        &EndLine {
            end: EndFields {
                last,
                last_hash: hex::encode(last_hash),
                entries: report.entries_checked,
                signature: hex::encode(signing.sign(&message).to_bytes()),
            },
        },
    )?;
    out.flush().map_err(VerifyError::ExportWrite)?;
    Ok(ExportSummary {
        after,
        last_seq: report.last_seq,
        entries: report.entries_checked,
        checkpoints: report.checkpoints_checked,
    })
}

/// Checks `files` as one log, in the order given: each must continue where
/// the one before ended, and end at a checkpoint. Against `key`, or else
/// the key the first export names. The report's `starts_after` is where the
/// first one starts: unless 0, nothing links it to the log's start but an
/// earlier export.
pub fn verify_exports(
    files: &[PathBuf],
    key: Option<&VerifyingKey>,
) -> Result<VerifyReport, VerifyError> {
    let named;
    let key = match key {
        Some(key) => key,
        None => {
            let first = files.first().ok_or_else(no_export)?;
            named = header_key(&read_header(first)?.0, first)?;
            &named
        }
    };
    walk_exports(files, key, verify::now_ms())?.finish(false)
}

fn no_export() -> VerifyError {
    line_error(Path::new(""), 0, "no export given")
}

/// The walk over `files`, each checked to continue the one before and to
/// end at a checkpoint.
fn walk_exports<'k>(
    files: &[PathBuf],
    key: &'k VerifyingKey,
    now_ms: u64,
) -> Result<Walk<'k>, VerifyError> {
    let mut walk: Option<Walk<'k>> = None;
    for file in files {
        let (header, mut lines) = read_header(file)?;
        if header_key(&header, file)? != *key {
            return Err(line_error(
                file,
                1,
                &format!(
                    "the export names the key {}, not the one it is checked against ({})",
                    header.key_id,
                    chain::key_id(key)
                ),
            ));
        }
        if !lower_hex(&header.after_hash)
            || !lower_hex(&header.public_key)
            || !lower_hex(&header.key_id)
        {
            return Err(line_error(
                file,
                1,
                "the header's hex must be lower case, as an export writes it",
            ));
        }
        let after_hash = chain::decode_hash(&header.after_hash)
            .ok_or_else(|| line_error(file, 1, "`after_hash` is not 64 hex digits"))?;
        if header.after == 0 && after_hash != GENESIS_HASH {
            return Err(line_error(
                file,
                1,
                "an export from the log's start has the zero hash as `after_hash`",
            ));
        }
        let walk = match &mut walk {
            None => walk.insert(Walk::new(key, now_ms, header.after, after_hash)),
            Some(walk) => {
                let (expected, expected_hash) = walk.head();
                if (header.after, after_hash) != (expected, expected_hash) {
                    return Err(VerifyError::ExportBreak {
                        file: file.clone(),
                        after: header.after,
                        after_hash: header.after_hash,
                        expected,
                        expected_hash: hex::encode(expected_hash),
                    });
                }
                walk
            }
        };
        let mut number = 1;
        let mut line = String::new();
        let mut end = None;
        let entries_before = walk.entries_checked();
        loop {
            line.clear();
            let read = lines
                .read_line(&mut line)
                .map_err(|source| VerifyError::ExportRead {
                    file: file.clone(),
                    source,
                })?;
            if read == 0 {
                break;
            }
            number += 1;
            if end.is_some() {
                return Err(line_error(file, number, "a line after the export's end"));
            }
            end = read_line(walk, &line, file, number)?;
        }
        if let Some((first, last)) = walk.unsigned_tail() {
            return Err(line_error(
                file,
                number,
                &format!(
                    "entries {first} to {last} come after the last checkpoint: an export ends at one, so they were added to it, or the export was cut"
                ),
            ));
        }
        let (last, last_hash) = walk.head();
        let entries = walk.entries_checked() - entries_before;
        let message =
            chain::export_end_message(header.after, &after_hash, last, &last_hash, entries);
        let signed = |end: &EndFields| {
            chain::decode_signature(&end.signature)
                .is_some_and(|signature| chain::signature_is_valid(key, &message, &signature))
        };
        match end {
            Some(end)
                if end.last == last
                    && end.last_hash == hex::encode(last_hash)
                    && end.entries == entries
                    && signed(&end) => {}
            Some(_) => {
                return Err(line_error(
                    file,
                    number,
                    &format!("the export's end does not name its last entry ({last}) and its {entries} entries, or its signature does not verify: lines were removed or added, or the export was cut and its end written again"),
                ))
            }
            None => {
                return Err(line_error(
                    file,
                    number,
                    "the export has no end line: it was cut, or is still being written",
                ))
            }
        }
    }
    walk.ok_or_else(no_export)
}

/// Checks one line after the header: an entry, a checkpoint, or the end
/// (returned). Each must be exactly as [`export`] writes it: a line a
/// reader could take another way (a field twice, of which readers take one
/// and the check another) is refused.
fn read_line(
    walk: &mut Walk<'_>,
    line: &str,
    file: &Path,
    number: u64,
) -> Result<Option<EndFields>, VerifyError> {
    let error = |detail: String| line_error(file, number, &detail);
    let text = canonical_text(line, file, number)?;
    let hash = |text: &str, name: &str| {
        lower_hex(text)
            .then(|| chain::decode_hash(text))
            .flatten()
            .ok_or_else(|| error(format!("`{name}` is not 64 lower-case hex digits")))
    };
    if text.starts_with("{\"checkpoint\":") {
        let CheckpointLine { checkpoint } = parse_exact(text, file, number, LINE)?;
        let signature = lower_hex(&checkpoint.signature)
            .then(|| chain::decode_signature(&checkpoint.signature))
            .flatten()
            .ok_or_else(|| error("`signature` is not 128 lower-case hex digits".to_owned()))?;
        walk.checkpoint(&CheckpointRow {
            seq: checkpoint.seq,
            hash: hash(&checkpoint.hash, "hash")?,
            time_ms: checkpoint.time_ms,
            signature,
            key_id: checkpoint.key_id,
        })?;
        Ok(None)
    } else if text.starts_with("{\"end\":") {
        let EndLine { end } = parse_exact(text, file, number, LINE)?;
        if !lower_hex(&end.last_hash) || !lower_hex(&end.signature) {
            return Err(error(
                "the end's hash and signature must be lower-case hex, as an export writes them"
                    .to_owned(),
            ));
        }
        Ok(Some(end))
    } else {
        let entry: EntryLine = parse_exact(text, file, number, LINE)?;
        walk.entry(&EntryRow {
            seq: entry.seq,
            time_ms: entry.time_ms,
            body: entry.body.as_bytes(),
            prev_hash: hash(&entry.prev_hash, "prev_hash")?,
            hash: hash(&entry.hash, "hash")?,
        })?;
        Ok(None)
    }
}

/// Whether `text` is hex as an export writes it: lower case (a reader
/// comparing hashes as text would take upper case for another).
fn lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A line of an export without its line feed, if it holds only what an
/// export writes: printable ASCII (so that nothing from it shown in an
/// error can act on a terminal).
fn canonical_text<'a>(line: &'a str, file: &Path, number: u64) -> Result<&'a str, VerifyError> {
    let text = line.strip_suffix('\n').unwrap_or(line);
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(line_error(
            file,
            number,
            "a character an export never writes (it is printable ASCII, one line feed a line)",
        ));
    }
    Ok(text)
}

/// What [`parse_exact`] calls a line after the header.
const LINE: &str = "a line of an export";

/// `text` read as `T`, which must be written back exactly as it is.
fn parse_exact<T: Serialize + for<'de> Deserialize<'de>>(
    text: &str,
    file: &Path,
    number: u64,
    what: &str,
) -> Result<T, VerifyError> {
    let value: T = serde_json::from_str(text)
        .map_err(|e| line_error(file, number, &format!("not {what}: {e}")))?;
    if line_text(&value)? != text {
        return Err(line_error(
            file,
            number,
            "not written as an export writes it (a field twice, in another order, or other spacing or escapes)",
        ));
    }
    Ok(value)
}

/// An export's header, and the reader at the line after it.
fn read_header(file: &Path) -> Result<(Header, std::io::BufReader<std::fs::File>), VerifyError> {
    let read_error = |source| VerifyError::ExportRead {
        file: file.to_owned(),
        source,
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(file).map_err(read_error)?);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(read_error)?;
    let text = canonical_text(&line, file, 1)?;
    let header: Header = parse_exact(
        text,
        file,
        1,
        &format!("the header of an audit export ({EXPORT_FORMAT})"),
    )?;
    if header.format != EXPORT_FORMAT || header.version != EXPORT_VERSION {
        return Err(line_error(
            file,
            1,
            &format!(
                "an export in format `{}` version {}, not `{EXPORT_FORMAT}` version {EXPORT_VERSION}",
                header.format, header.version
            ),
        ));
    }
    Ok((header, reader))
}

/// The key a header names, which must be the one its id says.
fn header_key(header: &Header, file: &Path) -> Result<VerifyingKey, VerifyError> {
    let key = hex::decode(&header.public_key)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
        .ok_or_else(|| line_error(file, 1, "`public_key` is not an ed25519 public key in hex"))?;
    if chain::key_id(&key) != header.key_id {
        return Err(line_error(
            file,
            1,
            "`key_id` is not the id of `public_key`",
        ));
    }
    Ok(key)
}

fn line_error(file: &Path, line: u64, detail: &str) -> VerifyError {
    VerifyError::ExportLine {
        file: file.to_owned(),
        line,
        detail: detail.to_owned(),
    }
}

/// `value` as a line of an export, without its line feed: JSON, in ASCII.
fn line_text(value: &impl Serialize) -> Result<String, VerifyError> {
    let text = serde_json::to_string(value)
        .map_err(|e| VerifyError::ExportWrite(std::io::Error::other(e)))?;
    let mut line = String::with_capacity(text.len());
    // Outside strings JSON is printable ASCII; inside, `\u` escapes read
    // back as the same characters (DEL is ASCII, and not printable).
    for c in text.chars() {
        if c.is_ascii() && c != '\x7f' {
            line.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                line.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    Ok(line)
}

/// Writes `value` as one line of an export.
fn write_line(out: &mut dyn Write, value: &impl Serialize) -> Result<(), VerifyError> {
    let mut line = line_text(value)?;
    line.push('\n');
    out.write_all(line.as_bytes())
        .map_err(VerifyError::ExportWrite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{store_path, test_key, write_sealed_store};
    use crate::AuditLog;
    use ed25519_dalek::SigningKey;
    use serde_json::json;

    /// A store of 30 entries signed at 10, 20 and 30, the key, and a
    /// directory for exports.
    async fn sealed_store() -> (tempfile::TempDir, PathBuf, SigningKey) {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = test_key(31);
        write_sealed_store(&path, &key, 30, 10).await;
        (dir, path, key)
    }

    fn export_to(
        path: &Path,
        key: &SigningKey,
        start: ExportStart<'_>,
        file: &Path,
    ) -> Result<ExportSummary, VerifyError> {
        let mut out = Vec::new();
        let summary = export(path, key, start, &mut out)?;
        std::fs::write(file, out).unwrap();
        Ok(summary)
    }

    fn lines(file: &Path) -> Vec<String> {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn rewrite(file: &Path, change: impl FnOnce(&mut Vec<String>)) {
        let mut lines = lines(file);
        change(&mut lines);
        std::fs::write(file, lines.join("\n") + "\n").unwrap();
    }

    #[tokio::test]
    async fn an_export_verifies_alone_and_its_successor_continues_it() {
        let (dir, path, key) = sealed_store().await;
        let first = dir.path().join("1.jsonl");
        let summary = export_to(&path, &key, ExportStart::Beginning, &first).unwrap();
        assert_eq!((summary.after, summary.last_seq), (0, 30));
        assert_eq!((summary.entries, summary.checkpoints), (30, 3));
        // A header, 30 entries, 3 checkpoints and the end, in ASCII.
        assert_eq!(lines(&first).len(), 35);
        let report = verify_exports(std::slice::from_ref(&first), None).unwrap();
        assert_eq!((report.starts_after, report.last_seq), (0, 30));

        // Entries 31 to 35 are signed when the log is shut down again.
        let log =
            AuditLog::open(&path, key.clone(), crate::tests::counted_checkpoints(10)).unwrap();
        for n in 31..=35 {
            log.append(&json!({"n": n, "text": "s\u{e9}lect \u{202e}1\u{7f}"}))
                .await
                .unwrap();
        }
        log.shutdown().await.unwrap();
        let second = dir.path().join("2.jsonl");
        let summary = export_to(&path, &key, ExportStart::AfterExport(&first), &second).unwrap();
        assert_eq!(
            (summary.after, summary.last_seq, summary.entries),
            (30, 35, 5)
        );
        assert!(std::fs::read(&second).unwrap().is_ascii());
        let both = [first.clone(), second.clone()];
        let report = verify_exports(&both, Some(&key.verifying_key())).unwrap();
        assert_eq!((report.starts_after, report.last_seq), (0, 35));
        // Alone, the second starts after entry 30: only the first links it
        // to the log's start.
        let report = verify_exports(std::slice::from_ref(&second), None).unwrap();
        assert_eq!((report.starts_after, report.entries_checked), (30, 5));
        // In the wrong order, or one left out, they do not chain.
        let error = verify_exports(&[second.clone(), first.clone()], None).unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::ExportBreak {
                    after: 0,
                    expected: 35,
                    ..
                }
            ),
            "{error}"
        );
        // Nothing new: an export of nothing, which the next one continues.
        let third = dir.path().join("3.jsonl");
        let summary = export_to(&path, &key, ExportStart::AfterExport(&second), &third).unwrap();
        assert_eq!(
            (summary.after, summary.last_seq, summary.entries),
            (35, 35, 0)
        );
        verify_exports(&[first, second, third], None).unwrap();
    }

    #[tokio::test]
    async fn a_changed_export_names_what_changed() {
        let (dir, path, key) = sealed_store().await;
        let file = dir.path().join("export.jsonl");
        export_to(&path, &key, ExportStart::Beginning, &file).unwrap();
        let original = std::fs::read(&file).unwrap();
        let check = |file: &Path| verify_exports(&[file.to_path_buf()], Some(&key.verifying_key()));
        let restore = || std::fs::write(&file, &original).unwrap();

        // A body changed.
        rewrite(&file, |lines| {
            lines[5] = lines[5].replace("select 5", "select 6")
        });
        assert!(matches!(check(&file), Err(VerifyError::Changed { seq: 5 })));
        restore();
        // An entry removed.
        rewrite(&file, |lines| {
            lines.remove(5);
        });
        assert!(matches!(
            check(&file),
            Err(VerifyError::Gap { missing: 5, .. })
        ));
        restore();
        // An entry repeated.
        rewrite(&file, |lines| {
            let again = lines[5].clone();
            lines.insert(6, again);
        });
        assert!(matches!(
            check(&file),
            Err(VerifyError::OutOfOrder { seq: 5, after: 5 })
        ));
        restore();
        // The end cut after a checkpoint's entry, before the checkpoint.
        rewrite(&file, |lines| lines.truncate(30));
        let error = check(&file).unwrap_err().to_string();
        assert!(error.contains("come after the last checkpoint"), "{error}");
        restore();
        // A checkpoint moved.
        rewrite(&file, |lines| lines.swap(11, 12));
        assert!(matches!(
            check(&file),
            Err(VerifyError::CheckpointOutOfPlace { seq: 10, .. })
        ));
        restore();
        // Signed again with another key, header included: caught against a
        // key kept apart, not against the one the export names.
        let forged = dir.path().join("forged.jsonl");
        let other = test_key(32);
        let forged_store = dir.path().join("forged.db");
        write_sealed_store(&forged_store, &other, 30, 10).await;
        export_to(&forged_store, &other, ExportStart::Beginning, &forged).unwrap();
        verify_exports(std::slice::from_ref(&forged), None).unwrap();
        let error = check(&forged).unwrap_err().to_string();
        assert!(error.contains("the export names the key"), "{error}");
        // ...also when its header names the kept key.
        let kept = hex::encode(key.verifying_key().as_bytes());
        let other_key = hex::encode(other.verifying_key().as_bytes());
        rewrite(&forged, |lines| {
            lines[0] = lines[0].replace(&other_key, &kept)
        });
        assert!(matches!(
            check(&forged),
            Err(VerifyError::CheckpointKey { seq: 10, .. })
        ));
        // Found in attack: a field twice, the first read by people and
        // tools, the last by the check.
        rewrite(&file, |lines| {
            lines[5] = lines[5].replacen("{\"seq\"", "{\"body\":\"select 1\",\"seq\"", 1)
        });
        let error = check(&file).unwrap_err().to_string();
        assert!(error.contains("line 6: not a line of an export"), "{error}");
        restore();
        // Written another way, or with raw characters an export escapes.
        for (from, to) in [
            (":", ": "),
            ("select 5", "sélect 5"),
            ("select 5", "select 5\u{1b}[2K"),
        ] {
            rewrite(&file, |lines| lines[5] = lines[5].replacen(from, to, 1));
            let error = check(&file).unwrap_err().to_string();
            assert!(error.contains("line 6"), "{from:?}: {error}");
            restore();
        }
        // Found in attack: cut at a checkpoint, it verified as a shorter
        // export. The end line says where it ends.
        rewrite(&file, |lines| lines.truncate(23));
        let error = check(&file).unwrap_err().to_string();
        assert!(error.contains("no end line"), "{error}");
        restore();
        rewrite(&file, |lines| {
            let end = lines.len() - 1;
            lines.swap(end, end - 1);
        });
        let error = check(&file).unwrap_err().to_string();
        assert!(error.contains("a line after the export's end"), "{error}");
        restore();
        rewrite(&file, |lines| {
            let end = lines.len() - 1;
            lines[end] = lines[end].replace("\"entries\":30", "\"entries\":31");
        });
        let error = check(&file).unwrap_err().to_string();
        assert!(error.contains("does not name its last entry"), "{error}");
        restore();
        // Found in attack: cut at a checkpoint with its end line written
        // again from the file's own values. The end is signed.
        rewrite(&file, |lines| {
            let end: serde_json::Value = serde_json::from_str(&lines[lines.len() - 1]).unwrap();
            let twentieth: serde_json::Value = serde_json::from_str(&lines[21]).unwrap();
            lines.truncate(23);
            lines.push(format!(
                "{{\"end\":{{\"last\":20,\"last_hash\":{},\"entries\":20,\"signature\":{}}}}}",
                twentieth["hash"], end["end"]["signature"]
            ));
        });
        let error = check(&file).unwrap_err().to_string();
        assert!(error.contains("signature does not verify"), "{error}");
        restore();
        // Found in attack: upper-case hex read as the same hash.
        rewrite(&file, |lines| {
            let entry: serde_json::Value = serde_json::from_str(&lines[5]).unwrap();
            let hash = entry["hash"].as_str().unwrap().to_owned();
            lines[5] = lines[5].replace(&hash, &hash.to_uppercase());
        });
        let error = check(&file).unwrap_err().to_string();
        assert!(error.contains("lower-case"), "{error}");
        restore();
        // A header that names a key other than its id.
        rewrite(&file, |lines| {
            let id = chain::key_id(&key.verifying_key());
            lines[0] = lines[0].replace(&format!("\"key_id\":\"{id}\""), "\"key_id\":\"00\"");
        });
        let error = verify_exports(std::slice::from_ref(&file), None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`key_id` is not the id of `public_key`"),
            "{error}"
        );
        restore();
        // Not an export.
        std::fs::write(&file, "{}\n").unwrap();
        let error = check(&file).unwrap_err().to_string();
        assert!(
            error.contains("line 1: not the header of an audit export"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_store_cut_back_or_rewritten_since_the_last_export_is_named() {
        let (dir, path, key) = sealed_store().await;
        let file = dir.path().join("export.jsonl");
        export_to(&path, &key, ExportStart::Beginning, &file).unwrap();
        let next = dir.path().join("next.jsonl");
        let conn = rusqlite::Connection::open(&path).unwrap();
        // Cut back to the checkpoint at 20: the store verifies on its own.
        conn.execute("DELETE FROM audit_entries WHERE seq > 20", [])
            .unwrap();
        conn.execute("DELETE FROM audit_checkpoints WHERE seq > 20", [])
            .unwrap();
        crate::verify(&path, &key.verifying_key()).unwrap();
        let error = export_to(&path, &key, ExportStart::AfterExport(&file), &next).unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::AfterBeyondEnd {
                    after: 30,
                    last_seq: 20
                }
            ),
            "{error}"
        );
        // Rewritten from 21 on (with the key: a thief of the data directory).
        drop(conn);
        let log =
            AuditLog::open(&path, key.clone(), crate::tests::counted_checkpoints(10)).unwrap();
        for n in 21..=30 {
            log.append(&json!({"n": n, "text": "rewritten"}))
                .await
                .unwrap();
        }
        log.shutdown().await.unwrap();
        crate::verify(&path, &key.verifying_key()).unwrap();
        let error = export_to(&path, &key, ExportStart::AfterExport(&file), &next).unwrap_err();
        assert!(
            matches!(error, VerifyError::AfterChanged { seq: 30, .. }),
            "{error}"
        );
        // A store that does not verify is not exported.
        let conn = rusqlite::Connection::open(&path).unwrap();
        assert!(export_to(&path, &key, ExportStart::After(20), &next).is_ok());
        conn.execute("UPDATE audit_entries SET body = '{}' WHERE seq = 3", [])
            .unwrap();
        // Nor continued from a range exported before, changed since.
        let error = export_to(&path, &key, ExportStart::After(20), &next).unwrap_err();
        assert!(matches!(error, VerifyError::Changed { seq: 3 }), "{error}");
        conn.execute("UPDATE audit_entries SET body = '{}' WHERE seq = 3", [])
            .unwrap();
        let error = export_to(&path, &key, ExportStart::Beginning, &next).unwrap_err();
        assert!(matches!(error, VerifyError::Changed { seq: 3 }), "{error}");
    }
}
