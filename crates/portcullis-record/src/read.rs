//! Reading recordings: listing, verifying, and rendering them for people.

use crate::format::{self, Kind, Manifest, Record};
use crate::{RecordError, Recordings};
use ed25519_dalek::Verifier;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The numbered chunk files of a recording, in order.
pub(crate) fn chunk_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>, RecordError> {
    let entries = std::fs::read_dir(dir).map_err(|e| RecordError::Read {
        id: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut chunks = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Only the names the writer gives (`000001.chunk`): `1.chunk` is
        // not chunk 1.
        if let Some(n) = name
            .strip_suffix(".chunk")
            .and_then(|n| n.parse::<u32>().ok())
        {
            if name == crate::write::chunk_name(n) {
                chunks.push((n, entry.path()));
            }
        }
    }
    chunks.sort();
    Ok(chunks)
}

/// Files named like chunks that the writer did not name so.
fn stray_chunk_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut stray: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".chunk"))
        .filter(|name| {
            name.strip_suffix(".chunk")
                .and_then(|n| n.parse::<u32>().ok())
                .is_none_or(|n| *name != crate::write::chunk_name(n))
        })
        .collect();
    stray.sort();
    stray
}

pub(crate) fn manifest(dir: &Path, id: &str) -> Result<Option<Manifest>, RecordError> {
    match std::fs::read(dir.join("manifest.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RecordError::Read {
                id: id.to_string(),
                reason: format!("manifest.json does not decode: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RecordError::Read {
            id: id.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// One recording, for `portcullis sessions`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub id: String,
    pub principal: String,
    pub target: String,
    pub started_ms: u64,
    /// `None` while the session runs.
    pub ended_ms: Option<u64>,
    pub outcome: Option<String>,
    pub statements: u64,
    pub denied: u64,
}

/// What is wrong with a recording.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("recording `{0}` has no manifest: it is still running, or was cut short")]
    NoManifest(String),
    #[error("the manifest's signature does not verify: the manifest was changed, or signed by another key")]
    Signature,
    #[error("chunk {0} is missing")]
    Missing(u32),
    #[error("chunk {0} is not in the manifest (added, or renumbered)")]
    Extra(u32),
    #[error("`{0}` is not a chunk the gateway wrote (added)")]
    Stray(String),
    #[error("chunk {n} was changed: {what}")]
    Changed { n: u32, what: String },
    #[error("the hash chain breaks at chunk {0}")]
    Chain(u32),
    #[error("{0}")]
    Other(String),
}

impl Recordings {
    /// Every recording, oldest first. Read a chunk at a time: a large
    /// recording costs reading, not memory.
    pub fn list(&self) -> Result<Vec<Summary>, RecordError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            let mut summary: Option<Summary> = None;
            let read = self.each_chunk(&id, |records| {
                for record in records {
                    match (&mut summary, record.kind) {
                        (None, Kind::Start) => {
                            summary = serde_json::from_slice::<format::Start>(&record.payload)
                                .ok()
                                .map(|start| Summary {
                                    id: id.clone(),
                                    principal: start.principal,
                                    target: start.target,
                                    started_ms: start.started_ms,
                                    ended_ms: None,
                                    outcome: None,
                                    statements: 0,
                                    denied: 0,
                                });
                        }
                        (Some(summary), Kind::Statement) => {
                            if let Ok(s) =
                                serde_json::from_slice::<format::Statement>(&record.payload)
                            {
                                // A line typed at a prompt is no decision.
                                if s.phase != "typed" {
                                    summary.statements += 1;
                                    if s.effect != "allow" {
                                        summary.denied += 1;
                                    }
                                }
                            }
                        }
                        (Some(summary), Kind::End) => {
                            summary.ended_ms = Some(summary.started_ms + u64::from(record.t_ms));
                            summary.outcome =
                                serde_json::from_slice::<format::End>(&record.payload)
                                    .ok()
                                    .map(|e| e.outcome);
                        }
                        _ => {}
                    }
                }
            });
            if let Err(e) = read {
                tracing::warn!(recording = %id, error = %e, "skipping a recording that cannot be read");
                continue;
            }
            out.extend(summary);
        }
        Ok(out)
    }

    /// Every record of a recording, in order; whole records only (a
    /// running session's last record may still be on its way).
    pub fn records(&self, id: &str) -> Result<Vec<Record>, RecordError> {
        let mut all = Vec::new();
        self.each_chunk(id, |records| all.extend(records))?;
        Ok(all)
    }

    /// Like [`Recordings::records`], keeping records (beyond the start and
    /// the end) only while their payloads come to at most `budget` bytes:
    /// for a view of the beginning of what may be very large. The second
    /// value is the payload bytes left out.
    pub fn records_within(
        &self,
        id: &str,
        budget: usize,
    ) -> Result<(Vec<Record>, u64), RecordError> {
        let (mut kept, mut used, mut left_out) = (Vec::new(), 0usize, 0u64);
        self.each_chunk(id, |records| {
            for record in records {
                let size = record.payload.len();
                let fits = left_out == 0 && used + size <= budget;
                if fits || matches!(record.kind, Kind::Start | Kind::End) {
                    used += size;
                    kept.push(record);
                } else {
                    left_out += size as u64;
                }
            }
        })?;
        Ok((kept, left_out))
    }

    /// Reads a recording's chunks in order, handing each one's whole
    /// records to `visit`.
    fn each_chunk(&self, id: &str, mut visit: impl FnMut(Vec<Record>)) -> Result<(), RecordError> {
        let dir = self.path(id);
        if !dir.is_dir() || id.contains(['/', '\\']) || id.starts_with('.') {
            return Err(RecordError::NotFound(id.to_string()));
        }
        for (_, path) in chunk_files(&dir)? {
            let bytes = std::fs::read(&path).map_err(|e| RecordError::Read {
                id: id.to_string(),
                reason: e.to_string(),
            })?;
            let whole = match format::decode_all(&bytes) {
                Ok(r) => r,
                Err(offset) => {
                    format::decode_all(bytes.get(..offset).unwrap_or_default()).unwrap_or_default()
                }
            };
            visit(whole);
        }
        Ok(())
    }

    /// Proves a recording complete and unchanged, or names what is wrong.
    pub fn verify(&self, id: &str) -> Result<Manifest, VerifyError> {
        let dir = self.path(id);
        if !dir.is_dir() || id.contains(['/', '\\']) || id.starts_with('.') {
            return Err(VerifyError::Other(format!("no recording `{id}`")));
        }
        let manifest = manifest(&dir, id)
            .map_err(|e| VerifyError::Other(e.to_string()))?
            .ok_or_else(|| VerifyError::NoManifest(id.to_string()))?;
        let signature = hex::decode(&manifest.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| ed25519_dalek::Signature::from_bytes(&b))
            .ok_or(VerifyError::Signature)?;
        self.verifying_key()
            .verify(&manifest.signed_bytes(), &signature)
            .map_err(|_| VerifyError::Signature)?;
        if manifest.session != id {
            return Err(VerifyError::Other(format!(
                "the manifest is session `{}`'s, not `{id}`'s",
                manifest.session
            )));
        }
        if let Some(stray) = stray_chunk_files(&dir).into_iter().next() {
            return Err(VerifyError::Stray(stray));
        }
        let on_disk = chunk_files(&dir).map_err(|e| VerifyError::Other(e.to_string()))?;
        let mut chain = format::CHAIN_START.to_string();
        for (idx, entry) in manifest.chunks.iter().enumerate() {
            let expected_n = u32::try_from(idx + 1).unwrap_or(u32::MAX);
            if entry.n != expected_n {
                return Err(VerifyError::Other(format!(
                    "the manifest lists chunk {} where chunk {expected_n} belongs",
                    entry.n
                )));
            }
            let Some((_, path)) = on_disk.iter().find(|(n, _)| *n == entry.n) else {
                return Err(VerifyError::Missing(entry.n));
            };
            let bytes = std::fs::read(path).map_err(|e| VerifyError::Other(e.to_string()))?;
            if bytes.len() as u64 != entry.bytes {
                return Err(VerifyError::Changed {
                    n: entry.n,
                    what: format!(
                        "{} bytes, the manifest says {}{}",
                        bytes.len(),
                        entry.bytes,
                        if (bytes.len() as u64) < entry.bytes {
                            " (truncated)"
                        } else {
                            ""
                        }
                    ),
                });
            }
            let sha256 = hex::encode(Sha256::digest(&bytes));
            if sha256 != entry.sha256 {
                return Err(VerifyError::Changed {
                    n: entry.n,
                    what: "its content does not match its hash".into(),
                });
            }
            chain = format::chain(&chain, &sha256);
            if chain != entry.chain {
                return Err(VerifyError::Chain(entry.n));
            }
        }
        if let Some((n, _)) = on_disk
            .iter()
            .find(|(n, _)| !manifest.chunks.iter().any(|c| c.n == *n))
        {
            return Err(VerifyError::Extra(*n));
        }
        if chain != manifest.final_hash {
            return Err(VerifyError::Other(
                "the final hash does not match the chain".into(),
            ));
        }
        Ok(manifest)
    }
}

/// Renders records the way psql showed them: each statement with its time
/// and decision, the rows, command tags, errors and notices. `from` skips
/// records already rendered (for `--follow`).
pub fn render(records: &[Record]) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for record in records {
        match record.kind {
            Kind::Start => {
                if let Ok(start) = serde_json::from_slice::<format::Start>(&record.payload) {
                    out.push((
                        record.t_ms,
                        format!(
                            "-- session {} of {} on {} from {}\n",
                            start.session, start.principal, start.target, start.client_addr
                        ),
                    ));
                }
            }
            Kind::Statement => {
                if let Ok(s) = serde_json::from_slice::<format::Statement>(&record.payload) {
                    // A line typed at a shell's prompt, as the gateway saw
                    // the keys: shown apart from the terminal's output,
                    // which the user controls (text drawn in the
                    // background's colour shows nothing).
                    if s.phase == "typed" {
                        out.push((
                            record.t_ms,
                            format!(
                                "-- +{} typed at the prompt (best effort): {}\n",
                                seconds(record.t_ms),
                                s.text
                            ),
                        ));
                        continue;
                    }
                    let by = if s.policies.is_empty() {
                        String::new()
                    } else {
                        format!(" by {}", s.policies.join(", "))
                    };
                    let reason = if s.reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", s.reason)
                    };
                    let parameters: String = s
                        .parameters
                        .iter()
                        .enumerate()
                        .map(|(i, p)| match p {
                            Some(v) => format!("-- ${} = {v:?}\n", i + 1),
                            None => format!("-- ${} = NULL\n", i + 1),
                        })
                        .collect::<String>()
                        + if s.parameters_withheld {
                            "-- (bound values not kept: too many, too long, or not known to the gateway)\n"
                        } else {
                            ""
                        };
                    out.push((
                        record.t_ms,
                        format!(
                            "-- +{} {} {}{by}{reason}\n{}\n{parameters}",
                            seconds(record.t_ms),
                            s.effect,
                            s.phase,
                            s.text
                        ),
                    ));
                }
            }
            Kind::ToClient => {
                let mut text = String::new();
                for (tag, body) in frames(&record.payload) {
                    match tag {
                        b'T' => {
                            columns = row_description(body);
                            rows.clear();
                        }
                        b'D' => rows.push(data_row(body)),
                        b'C' => {
                            if !columns.is_empty() {
                                text.push_str(&table(&columns, &rows));
                            }
                            columns.clear();
                            rows.clear();
                            text.push_str(&cstr(body));
                            text.push('\n');
                        }
                        b'E' | b'N' => {
                            let fields = notice_fields(body);
                            let severity = fields
                                .iter()
                                .find(|(c, _)| *c == b'S')
                                .map(|(_, v)| v.as_str())
                                .unwrap_or("ERROR");
                            let message = fields
                                .iter()
                                .find(|(c, _)| *c == b'M')
                                .map(|(_, v)| v.as_str())
                                .unwrap_or("");
                            text.push_str(&format!("{severity}:  {message}\n"));
                            if let Some((_, detail)) = fields.iter().find(|(c, _)| *c == b'D') {
                                text.push_str(&format!("DETAIL:  {detail}\n"));
                            }
                            if tag == b'E' {
                                columns.clear();
                                rows.clear();
                            }
                        }
                        _ => {}
                    }
                }
                if !text.is_empty() {
                    out.push((record.t_ms, text));
                }
            }
            Kind::Truncated => {
                if let Ok(t) = serde_json::from_slice::<format::Truncated>(&record.payload) {
                    if !columns.is_empty() {
                        out.push((record.t_ms, table(&columns, &rows)));
                        rows.clear();
                    }
                    out.push((
                        record.t_ms,
                        format!(
                            "-- {} more rows ({} bytes) not recorded: over the per-statement cap\n",
                            t.rows, t.bytes
                        ),
                    ));
                }
            }
            Kind::Output => {
                if let Some(bytes) = record.payload.get(4..) {
                    out.push((record.t_ms, String::from_utf8_lossy(bytes).into_owned()));
                }
            }
            Kind::Resize | Kind::Masking => {}
            Kind::End => {
                if let Ok(end) = serde_json::from_slice::<format::End>(&record.payload) {
                    out.push((
                        record.t_ms,
                        format!(
                            "-- +{} session ended: {}\n",
                            seconds(record.t_ms),
                            end.outcome
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// The largest terminal an asciicast says, in columns and rows. A client
/// chooses its terminal's size; players allocate a screen of that size (a
/// 65535 by 65535 terminal stops the web console's player). Larger sizes
/// are cut to these; the recording keeps what the client said.
const PLAYABLE_COLS: u32 = 512;
const PLAYABLE_ROWS: u32 = 256;

fn playable(r: &format::Resize) -> (u32, u32) {
    (r.cols.min(PLAYABLE_COLS), r.rows.min(PLAYABLE_ROWS))
}

/// The mask rules whose values a recording may hold in clear: every rule
/// its [`format::Masking`] records name. `None` when it has none (a
/// recording made before they were written): then anything may be.
pub fn unmasked(records: &[Record]) -> Option<std::collections::BTreeSet<String>> {
    let mut found: Option<std::collections::BTreeSet<String>> = None;
    for record in records.iter().filter(|r| r.kind == Kind::Masking) {
        let set = found.get_or_insert_with(Default::default);
        match serde_json::from_slice::<format::Masking>(&record.payload) {
            Ok(masking) => set.extend(masking.unmasked),
            // Unreadable: it may name any rule.
            Err(_) => return None,
        }
    }
    found
}

/// An SSH session's terminals as an asciicast v2 file, which any asciinema
/// player plays: the header (with the first terminal size), then each
/// output as an `"o"` event and each window change as an `"r"` event;
/// sizes at most [`PLAYABLE_COLS`] by [`PLAYABLE_ROWS`].
/// Output that is not UTF-8 is carried to the next event when it is a
/// character cut in two, and replaced otherwise. Only what draws goes in
/// ([`crate::terminal`]): a cast is played to a real terminal.
pub fn asciicast(records: &[Record]) -> String {
    let mut started = 0u64;
    let mut title = String::new();
    let mut size = None;
    for record in records {
        match record.kind {
            Kind::Start => {
                if let Ok(start) = serde_json::from_slice::<format::Start>(&record.payload) {
                    started = start.started_ms / 1000;
                    title = format!("{} on {}", start.principal, start.target);
                }
            }
            Kind::Resize if size.is_none() => {
                if let Ok(r) = serde_json::from_slice::<format::Resize>(&record.payload) {
                    size = Some(playable(&r));
                }
            }
            _ => {}
        }
    }
    let (width, height) = size.unwrap_or((80, 24));
    let header = serde_json::json!({
        "version": 2,
        "width": width,
        "height": height,
        "timestamp": started,
        "title": title,
    });
    let mut out = header.to_string();
    out.push('\n');
    let mut carry: Vec<u8> = Vec::new();
    // Played to a real terminal: only what draws.
    let mut drawing = crate::terminal::Drawing::default();
    let mut first_resize = true;
    for record in records {
        let t = f64::from(record.t_ms) / 1000.0;
        match record.kind {
            Kind::Output => {
                carry.extend_from_slice(record.payload.get(4..).unwrap_or_default());
                let text = match std::str::from_utf8(&carry) {
                    Ok(text) => {
                        let text = text.to_string();
                        carry.clear();
                        text
                    }
                    Err(e) if e.error_len().is_none() => {
                        let valid = e.valid_up_to();
                        let text = String::from_utf8_lossy(&carry[..valid]).into_owned();
                        carry.drain(..valid);
                        text
                    }
                    Err(_) => {
                        let text = String::from_utf8_lossy(&carry).into_owned();
                        carry.clear();
                        text
                    }
                };
                let text = drawing.filter(&text);
                if !text.is_empty() {
                    out.push_str(&serde_json::json!([t, "o", text]).to_string());
                    out.push('\n');
                }
            }
            Kind::Resize => {
                if first_resize {
                    first_resize = false;
                    continue;
                }
                if let Ok(r) = serde_json::from_slice::<format::Resize>(&record.payload) {
                    let (cols, rows) = playable(&r);
                    let size = format!("{cols}x{rows}");
                    out.push_str(&serde_json::json!([t, "r", size]).to_string());
                    out.push('\n');
                }
            }
            _ => {}
        }
    }
    out
}

fn seconds(ms: u32) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

fn frames(bytes: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(header) = bytes.get(pos..pos + 5) {
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let Some(body) = bytes.get(pos + 5..pos + 1 + len) else {
            break;
        };
        out.push((header[0], body));
        pos += 1 + len;
    }
    out
}

fn cstr(body: &[u8]) -> String {
    let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(body.get(..end).unwrap_or_default()).into_owned()
}

fn row_description(body: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let Some(count) = body.get(0..2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
        return names;
    };
    let mut pos = 2;
    for _ in 0..count.max(0) {
        let name = cstr(body.get(pos..).unwrap_or_default());
        pos += name.len() + 1 + 18;
        names.push(name);
    }
    names
}

fn data_row(body: &[u8]) -> Vec<String> {
    let mut values = Vec::new();
    let Some(count) = body.get(0..2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
        return values;
    };
    let mut pos = 2;
    for _ in 0..count.max(0) {
        let Some(len) = body
            .get(pos..pos + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            break;
        };
        pos += 4;
        if len < 0 {
            values.push(String::new());
            continue;
        }
        let len = len as usize;
        let value = body.get(pos..pos + len).unwrap_or_default();
        values.push(match std::str::from_utf8(value) {
            Ok(text) => text.to_string(),
            Err(_) => format!("\\x{}", hex::encode(value)),
        });
        pos += len;
    }
    values
}

fn notice_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while let Some(&code) = body.get(pos) {
        if code == 0 {
            break;
        }
        let value = cstr(body.get(pos + 1..).unwrap_or_default());
        pos += value.len() + 2;
        fields.push((code, value));
    }
    fields
}

/// psql's aligned format.
/// Columns are padded to their widest cell, as psql aligns them, up to
/// this many characters: one wide cell would otherwise pad every row of a
/// large result to its width (a small recording drawn as gigabytes).
const MAX_PADDED_WIDTH: usize = 40;

pub(crate) fn table(columns: &[String], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|v| v.chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
                .min(MAX_PADDED_WIDTH)
        })
        .collect();
    let line = |cells: Vec<String>| format!(" {}\n", cells.join(" | ").trim_end());
    let mut out = line(
        columns
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                let pad = w.saturating_sub(c.chars().count());
                format!("{}{c}{}", " ".repeat(pad / 2), " ".repeat(pad - pad / 2))
            })
            .collect(),
    );
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+"),
    );
    out.push('\n');
    for row in rows {
        out.push_str(&line(
            widths
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let v = row.get(i).map(String::as_str).unwrap_or("");
                    format!("{v}{}", " ".repeat(w.saturating_sub(v.chars().count())))
                })
                .collect(),
        ));
    }
    out.push_str(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}

impl Recordings {
    /// The finished recordings that ended before `cutoff_ms` (Unix ms):
    /// each one's id and final hash. Running sessions' recordings are never
    /// listed.
    ///
    /// With `stored_only` (recordings go to object storage), a recording
    /// not yet stored is never listed: its spool copy is the only one.
    pub fn ended_before(
        &self,
        cutoff_ms: u64,
        stored_only: bool,
    ) -> Result<Vec<(String, String)>, RecordError> {
        let mut old = Vec::new();
        for id in self.ids()? {
            let dir = self.path(&id);
            if stored_only && !dir.join(".stored").exists() {
                continue;
            }
            let Some(manifest) = manifest(&dir, &id)? else {
                continue;
            };
            if manifest.ended_ms < cutoff_ms {
                old.push((id, manifest.final_hash));
            }
        }
        Ok(old)
    }

    /// Deletes recording `id` from the data directory.
    pub fn delete(&self, id: &str) -> Result<(), RecordError> {
        let dir = self.path(id);
        std::fs::remove_dir_all(&dir)
            .map_err(|e| RecordError::Write(format!("{}: {e}", dir.display())))
    }
}
