//! Writing a recording: records appended to the open chunk and flushed per
//! event; chunks sealed by size; the signed manifest at the end.

use crate::format::{self, ChunkEntry, Kind, Manifest, Start};
use crate::{RecordError, Recordings};
use ed25519_dalek::Signer;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

/// One session's recording; shared by both directions of the session.
pub struct Recorder {
    inner: Mutex<Writer>,
    /// The gateway's set of recordings being written, left when dropped.
    live: Option<std::sync::Arc<Mutex<std::collections::HashSet<String>>>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let id = self.id();
        if let Some(Ok(mut live)) = self.live.as_ref().map(|l| l.lock()) {
            live.remove(&id);
        }
    }
}

struct Writer {
    id: String,
    dir: PathBuf,
    key: ed25519_dalek::SigningKey,
    settings: crate::Settings,
    start: Start,
    began: Instant,
    file: Option<std::fs::File>,
    chunk_n: u32,
    chunk_bytes: u64,
    chunk_hash: Sha256,
    chain: String,
    chunks: Vec<ChunkEntry>,
    /// Results of the current statement: kept, and left out.
    rows: u64,
    bytes: u64,
    skipped_rows: u64,
    skipped_bytes: u64,
    finished: Option<(String, String)>,
    buf: Vec<u8>,
    /// Sealed chunks being made durable, each on a thread of its own.
    syncing: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
}

/// How many sealed chunks of one recording may be syncing at once.
const MAX_SYNCING: usize = 4;

fn io(e: std::io::Error) -> RecordError {
    RecordError::Write(e.to_string())
}

impl Recorder {
    pub(crate) fn create(recordings: &Recordings, start: Start) -> Result<Recorder, RecordError> {
        let id = start.session.clone();
        if id.is_empty() || id.contains(['/', '\\', '.']) {
            return Err(RecordError::Write(format!("`{id}` is not a recording id")));
        }
        let dir = recordings.path(&id);
        // What a session showed is for the gateway's user alone.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io)?;
        let mut writer = Writer {
            id,
            dir,
            key: recordings.signing_key()?.clone(),
            settings: recordings.settings.clone(),
            start: start.clone(),
            began: Instant::now(),
            file: None,
            chunk_n: 0,
            chunk_bytes: 0,
            chunk_hash: Sha256::new(),
            chain: format::CHAIN_START.to_string(),
            chunks: Vec::new(),
            rows: 0,
            bytes: 0,
            skipped_rows: 0,
            skipped_bytes: 0,
            finished: None,
            buf: Vec::with_capacity(16 * 1024),
            syncing: Vec::new(),
        };
        let payload = serde_json::to_vec(&start).map_err(|e| RecordError::Write(e.to_string()))?;
        writer.append(Kind::Start, &payload)?;
        let live = recordings.live.clone();
        if let Some(Ok(mut live)) = live.as_ref().map(|l| l.lock()) {
            live.insert(writer.id.clone());
        }
        Ok(Recorder {
            inner: Mutex::new(writer),
            live,
        })
    }

    pub fn id(&self) -> String {
        self.lock().id.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A statement the client sent, and what was decided.
    pub fn statement(&self, statement: &format::Statement) -> Result<(), RecordError> {
        let payload =
            serde_json::to_vec(statement).map_err(|e| RecordError::Write(e.to_string()))?;
        self.lock().append(Kind::Statement, &payload)
    }

    /// Bytes about to be written to the client: whole backend messages.
    /// Rows past the per-statement cap are left out and counted.
    pub fn to_client(&self, bytes: &[u8]) -> Result<(), RecordError> {
        let mut writer = self.lock();
        writer.append_to_client(bytes)
    }

    /// What an SSH channel's terminal printed, before the client gets it.
    pub fn output(&self, channel: u32, bytes: &[u8]) -> Result<(), RecordError> {
        let mut payload = Vec::with_capacity(4 + bytes.len());
        payload.extend_from_slice(&channel.to_be_bytes());
        payload.extend_from_slice(bytes);
        self.lock().append(Kind::Output, &payload)
    }

    /// Which mask rules the session's principal sees in clear from now on.
    pub fn masking(&self, masking: &format::Masking) -> Result<(), RecordError> {
        let payload = serde_json::to_vec(masking).map_err(|e| RecordError::Write(e.to_string()))?;
        self.lock().append(Kind::Masking, &payload)
    }

    /// An SSH channel's terminal size.
    pub fn resize(&self, resize: &format::Resize) -> Result<(), RecordError> {
        let payload = serde_json::to_vec(resize).map_err(|e| RecordError::Write(e.to_string()))?;
        self.lock().append(Kind::Resize, &payload)
    }

    /// Ends the recording: seals the last chunk and writes the signed
    /// manifest. Returns the recording's id and final hash.
    pub fn finish(&self, outcome: &str) -> Result<(String, String), RecordError> {
        let mut writer = self.lock();
        if let Some(done) = &writer.finished {
            return Ok(done.clone());
        }
        let end = format::End {
            outcome: outcome.to_string(),
        };
        let payload = serde_json::to_vec(&end).map_err(|e| RecordError::Write(e.to_string()))?;
        writer.append(Kind::End, &payload)?;
        let done = writer.seal_and_sign(outcome, false)?;
        writer.finished = Some(done.clone());
        Ok(done)
    }
}

impl Writer {
    fn t_ms(&self) -> u32 {
        u32::try_from(self.began.elapsed().as_millis()).unwrap_or(u32::MAX)
    }

    fn append_to_client(&mut self, bytes: &[u8]) -> Result<(), RecordError> {
        let max_rows = self.settings.max_rows_per_statement;
        let max_bytes = self.settings.max_bytes_per_statement;
        // Walk the messages: rows count against the cap; the end of a
        // result (CommandComplete, an error, ReadyForQuery...) resets it.
        let mut kept: Option<Vec<u8>> = None;
        let mut pos = 0;
        let mut truncated_here = Vec::new();
        while let Some(header) = bytes.get(pos..pos + 5) {
            let tag = header[0];
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let end = (pos + 1 + len).min(bytes.len());
            let frame = bytes.get(pos..end).unwrap_or_default();
            let mut keep = true;
            match tag {
                b'D' => {
                    // Once a row is left out, the rest of the result is too:
                    // the mark then says exactly what is missing.
                    if self.skipped_rows > 0
                        || self.rows >= max_rows
                        || self.bytes + frame.len() as u64 > max_bytes
                    {
                        self.skipped_rows += 1;
                        self.skipped_bytes += frame.len() as u64;
                        keep = false;
                    } else {
                        self.rows += 1;
                        self.bytes += frame.len() as u64;
                    }
                }
                b'C' | b'E' | b'Z' | b's' | b'I' => {
                    if self.skipped_rows > 0 {
                        truncated_here.push((
                            kept.as_ref().map(Vec::len),
                            pos,
                            self.skipped_rows,
                            self.skipped_bytes,
                        ));
                    }
                    self.rows = 0;
                    self.bytes = 0;
                    self.skipped_rows = 0;
                    self.skipped_bytes = 0;
                }
                _ => {}
            }
            match (&mut kept, keep) {
                (Some(kept), true) => kept.extend_from_slice(frame),
                (None, false) => kept = Some(bytes.get(..pos).unwrap_or_default().to_vec()),
                _ => {}
            }
            pos = end;
        }
        let recorded = kept.as_deref().unwrap_or(bytes);
        if truncated_here.is_empty() {
            return self.append(Kind::ToClient, recorded);
        }
        // Mark each truncation where its result ended.
        let mut from = 0;
        for (kept_len, original_pos, rows, skipped) in truncated_here {
            let at = kept_len.unwrap_or(original_pos);
            self.append(Kind::ToClient, recorded.get(from..at).unwrap_or_default())?;
            let marker = serde_json::to_vec(&format::Truncated {
                rows,
                bytes: skipped,
            })
            .map_err(|e| RecordError::Write(e.to_string()))?;
            self.append(Kind::Truncated, &marker)?;
            from = at;
        }
        self.append(Kind::ToClient, recorded.get(from..).unwrap_or_default())
    }

    fn append(&mut self, kind: Kind, payload: &[u8]) -> Result<(), RecordError> {
        if self.finished.is_some() {
            return Ok(());
        }
        if payload.is_empty() && kind == Kind::ToClient {
            return Ok(());
        }
        if self.file.is_none() || self.chunk_bytes >= self.settings.chunk_bytes {
            self.seal()?;
            self.chunk_n += 1;
            let path = self.dir.join(chunk_name(self.chunk_n));
            self.file = Some(
                std::fs::OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?,
            );
        }
        let t_ms = self.t_ms();
        self.buf.clear();
        format::encode(&mut self.buf, kind, t_ms, payload);
        let Some(file) = self.file.as_mut() else {
            return Err(RecordError::Write("no open chunk".into()));
        };
        // One write per event: what the client is about to see is on disk
        // (in the page cache) first, so a gateway that dies loses nothing.
        if let Err(e) = file.write_all(&self.buf) {
            // Whatever part was written goes: the chunk stays what its hash
            // says, and the recording can still be sealed and verified.
            let _ = file.set_len(self.chunk_bytes);
            return Err(io(e));
        }
        self.chunk_hash.update(&self.buf);
        self.chunk_bytes += self.buf.len() as u64;
        Ok(())
    }

    /// Closes the open chunk and links it into the chain. The chunk is
    /// made durable on a thread of its own: a 1 MiB sync takes about a
    /// millisecond, which the session, and every other session on its
    /// worker, would otherwise wait for. A failed sync fails this seal or a
    /// later one, and the manifest is written only once every chunk is
    /// synced.
    fn seal(&mut self) -> Result<(), RecordError> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let spawned = file.try_clone().and_then(|file| {
            std::thread::Builder::new()
                .name("portcullis-chunk-sync".into())
                .spawn(move || file.sync_data())
        });
        let here = match spawned {
            Ok(syncing) => {
                self.syncing.push(syncing);
                Ok(())
            }
            // No thread to spare: sync here.
            Err(_) => file.sync_data().map_err(io),
        };
        let sha256 = hex::encode(std::mem::take(&mut self.chunk_hash).finalize());
        self.chain = format::chain(&self.chain, &sha256);
        self.chunks.push(ChunkEntry {
            n: self.chunk_n,
            bytes: self.chunk_bytes,
            sha256,
            chain: self.chain.clone(),
        });
        self.chunk_bytes = 0;
        here?;
        // A disk slower than the session: wait for the oldest syncs rather
        // than let them pile up.
        while self.syncing.len() > MAX_SYNCING {
            joined(self.syncing.remove(0))?;
        }
        self.synced(false)
    }

    /// Collects the chunk syncs that are done, or all of them (waiting)
    /// when `all`; the first failure is the error.
    fn synced(&mut self, all: bool) -> Result<(), RecordError> {
        let mut result = Ok(());
        let mut pending = Vec::new();
        for syncing in self.syncing.drain(..) {
            if !all && !syncing.is_finished() {
                pending.push(syncing);
                continue;
            }
            let done = joined(syncing);
            if result.is_ok() {
                result = done;
            }
        }
        self.syncing = pending;
        result
    }

    fn seal_and_sign(
        &mut self,
        outcome: &str,
        recovered: bool,
    ) -> Result<(String, String), RecordError> {
        self.seal()?;
        self.synced(true)?;
        let ended_ms = self.start.started_ms + self.began.elapsed().as_millis() as u64;
        let manifest = sign(
            &self.key,
            Manifest {
                version: format::VERSION,
                session: self.id.clone(),
                principal: self.start.principal.clone(),
                target: self.start.target.clone(),
                started_ms: self.start.started_ms,
                ended_ms,
                outcome: outcome.to_string(),
                chunks: self.chunks.clone(),
                final_hash: self.chain.clone(),
                recovered,
                signature: String::new(),
            },
        );
        write_manifest(&self.dir, &manifest)?;
        Ok((self.id.clone(), manifest.final_hash))
    }
}

/// Waits for a chunk's sync to end; its error, if it failed.
fn joined(syncing: std::thread::JoinHandle<std::io::Result<()>>) -> Result<(), RecordError> {
    match syncing.join() {
        Ok(done) => done.map_err(io),
        Err(_) => Err(RecordError::Write("a chunk could not be synced".into())),
    }
}

fn sign(key: &ed25519_dalek::SigningKey, mut manifest: Manifest) -> Manifest {
    manifest.signature = hex::encode(key.sign(&manifest.signed_bytes()).to_bytes());
    manifest
}

fn write_manifest(dir: &std::path::Path, manifest: &Manifest) -> Result<(), RecordError> {
    let text =
        serde_json::to_vec_pretty(manifest).map_err(|e| RecordError::Write(e.to_string()))?;
    let tmp = dir.join("manifest.json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&text).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, dir.join("manifest.json")).map_err(io)
}

pub fn chunk_name(n: u32) -> String {
    format!("{n:06}.chunk")
}

/// Seals a recording a previous run left open: every chunk as it is on
/// disk (a record cut short by the crash is dropped), an `End` saying so,
/// and a signed manifest marked `recovered`.
pub(crate) fn recover(recordings: &Recordings, id: &str) -> Result<(), RecordError> {
    let dir = recordings.path(id);
    let chunks = crate::read::chunk_files(&dir)?;
    let mut entries = Vec::new();
    let mut chain = format::CHAIN_START.to_string();
    let mut start: Option<Start> = None;
    let mut last_t = 0u32;
    for (n, path) in &chunks {
        let mut bytes = std::fs::read(path).map_err(io)?;
        // Keep whole records only.
        let good = match format::decode_all(&bytes) {
            Ok(_) => bytes.len(),
            Err(offset) => offset,
        };
        if good < bytes.len() {
            bytes.truncate(good);
            std::fs::write(path, &bytes).map_err(io)?;
        }
        if let Ok(records) = format::decode_all(&bytes) {
            for record in &records {
                last_t = record.t_ms;
                if record.kind == Kind::Start {
                    start = serde_json::from_slice(&record.payload).ok();
                }
            }
        }
        let sha256 = hex::encode(Sha256::digest(&bytes));
        chain = format::chain(&chain, &sha256);
        entries.push(ChunkEntry {
            n: *n,
            bytes: bytes.len() as u64,
            sha256,
            chain: chain.clone(),
        });
    }
    let Some(start) = start else {
        return Err(RecordError::Read {
            id: id.to_string(),
            reason: "it has no start record".into(),
        });
    };
    // The end, in a chunk of its own.
    let n = entries.last().map(|e| e.n + 1).unwrap_or(1);
    let mut end = Vec::new();
    let outcome = "the gateway stopped during the session; sealed at the next start";
    let payload = serde_json::to_vec(&format::End {
        outcome: outcome.into(),
    })
    .map_err(|e| RecordError::Write(e.to_string()))?;
    format::encode(&mut end, Kind::End, last_t, &payload);
    std::fs::write(dir.join(chunk_name(n)), &end).map_err(io)?;
    let sha256 = hex::encode(Sha256::digest(&end));
    chain = format::chain(&chain, &sha256);
    entries.push(ChunkEntry {
        n,
        bytes: end.len() as u64,
        sha256,
        chain: chain.clone(),
    });
    let manifest = sign(
        recordings.signing_key()?,
        Manifest {
            version: format::VERSION,
            session: id.to_string(),
            principal: start.principal,
            target: start.target,
            started_ms: start.started_ms,
            ended_ms: start.started_ms + u64::from(last_t),
            outcome: outcome.into(),
            chunks: entries,
            final_hash: chain,
            recovered: true,
            signature: String::new(),
        },
    );
    write_manifest(&dir, &manifest)
}
