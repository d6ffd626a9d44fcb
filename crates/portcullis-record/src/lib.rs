//! Session recordings: every session's statements, decisions and the exact
//! bytes its client received (after masking), in an appendable, chunked,
//! hash-chained and signed format (`format`), kept in the data directory.
//!
//! Architecture Invariant: what is recorded is what the client got. The
//! recorder is fed the bytes after masking, so a masked value is masked in
//! the recording too.
//!
//! Architecture Invariant: each event is written to its chunk file before
//! the client sees it, so a gateway that dies loses nothing recorded; the
//! next start seals what it left (`recovered`).

pub mod format;
mod read;
mod remote;
mod terminal;
mod write;

pub use read::{asciicast, render, unmasked, Summary, VerifyError};
pub use remote::{Remote, S3Settings};
pub use write::Recorder;

use ed25519_dalek::{SigningKey, VerifyingKey};
use format::Manifest;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the recording cannot be written ({0}); check the data directory's disk")]
    Write(String),
    #[error("no recording `{0}`")]
    NotFound(String),
    #[error("recording `{id}` cannot be read: {reason}")]
    Read { id: String, reason: String },
}

/// How sessions are recorded; from the config's `[recording]`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A chunk is sealed when it reaches this size.
    pub chunk_bytes: u64,
    /// Per statement: rows and bytes of results kept; the rest is marked as
    /// truncated.
    pub max_rows_per_statement: u64,
    pub max_bytes_per_statement: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            chunk_bytes: 1 << 20,
            max_rows_per_statement: 10_000,
            max_bytes_per_statement: 16 << 20,
        }
    }
}

/// The recordings of one gateway: a directory, and the key that signs them.
#[derive(Clone)]
pub struct Recordings {
    /// Held while the gateway runs: one writer per directory.
    _lock: Option<std::sync::Arc<std::fs::File>>,
    dir: PathBuf,
    /// The gateway's key; `None` for a reader (the CLI), which never writes.
    key: Option<SigningKey>,
    verifying: VerifyingKey,
    settings: Settings,
    /// The recordings this gateway is writing now; `None` for a reader,
    /// which cannot know.
    live: Option<std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>>,
}

impl Recordings {
    /// Opens (creates) `dir` and seals the recordings a previous run left
    /// open, so that nothing recorded before a crash is lost.
    pub fn open(
        dir: &Path,
        key: SigningKey,
        settings: Settings,
    ) -> Result<Recordings, RecordError> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .map_err(|e| RecordError::Write(format!("{}: {e}", dir.display())))?;
        // Another gateway writing here would see our open recordings as
        // left by a crash, and seal them under us.
        // Beside the directory, so that the directory holds recordings only.
        let lock_path = dir.with_extension("lock");
        let lock = std::fs::File::create(&lock_path)
            .map_err(|e| RecordError::Write(format!("{}: {e}", lock_path.display())))?;
        if lock.try_lock().is_err() {
            return Err(RecordError::Write(format!(
                "another gateway records in `{}`; give each gateway its own data directory",
                dir.display()
            )));
        }
        let recordings = Recordings {
            _lock: Some(std::sync::Arc::new(lock)),
            dir: dir.to_path_buf(),
            verifying: key.verifying_key(),
            key: Some(key),
            settings,
            live: Some(Default::default()),
        };
        for id in recordings.ids()? {
            if !recordings.path(&id).join("manifest.json").exists() {
                match write::recover(&recordings, &id) {
                    Ok(()) => {
                        tracing::warn!(recording = %id, "sealed a recording the gateway left open")
                    }
                    Err(e) => {
                        tracing::error!(recording = %id, error = %e, "could not seal a recording left open")
                    }
                }
            }
        }
        Ok(recordings)
    }

    /// Reads the recordings in `dir` without changing anything (a running
    /// gateway's open recordings stay open); verifies with `verifying`.
    pub fn reader(dir: &Path, verifying: VerifyingKey) -> Recordings {
        Recordings {
            _lock: None,
            dir: dir.to_path_buf(),
            key: None,
            verifying,
            settings: Settings::default(),
            live: None,
        }
    }

    /// Whether this gateway is writing recording `id` now: `None` when
    /// these recordings were opened only to read (another process may be).
    /// A recording without an end that no gateway writes was cut short, or
    /// had its end removed: nothing vouches for it.
    pub fn is_live(&self, id: &str) -> Option<bool> {
        let live = self.live.as_ref()?;
        Some(live.lock().map_or(true, |live| live.contains(id)))
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.verifying
    }

    fn signing_key(&self) -> Result<&SigningKey, RecordError> {
        self.key
            .as_ref()
            .ok_or_else(|| RecordError::Write("a reader cannot write recordings".into()))
    }

    pub(crate) fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Every recording's id, oldest first.
    pub(crate) fn ids(&self) -> Result<Vec<String>, RecordError> {
        let mut ids = Vec::new();
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| RecordError::Write(e.to_string()))?;
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                if let Some(name) = entry.file_name().to_str() {
                    ids.push(name.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Starts recording a session.
    pub fn start(&self, start: format::Start) -> Result<Recorder, RecordError> {
        Recorder::create(self, start)
    }

    /// The manifest of a finished recording.
    pub fn manifest(&self, id: &str) -> Result<Option<Manifest>, RecordError> {
        read::manifest(&self.path(id), id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
