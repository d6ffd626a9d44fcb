//! The tamper-evident, write-ahead audit log.
//!
//! Every session and every decision the gateway makes is appended here
//! before anything is forwarded to a target. Entries are numbered from 1
//! without gaps and hash-chained: each entry's hash covers the previous
//! entry's hash, its sequence number, its time and its JSON body. Signed
//! checkpoints (ed25519) pin the chain head at regular intervals, so that
//! rewriting the whole chain after a point, or cutting off its end before
//! the last checkpoint, is detected too. The store is one SQLite file in WAL
//! mode with `synchronous=FULL`.
//!
//! [`AuditLog::append`] resolves only once its entry is committed durably,
//! and fails when it cannot be: the gateway then refuses the statement. One
//! writer thread batches concurrent appends into one transaction (group
//! commit), so each statement waits for its own entry to be durable but not
//! for an fsync of its own.
//!
//! [`verify`] and [`tail`] are pure reads of the file, for `portcullis audit
//! verify` and `portcullis audit tail`; they work while the gateway runs.
//!
//! What verification of the store alone cannot see: entries appended after
//! the last checkpoint and then removed together with nothing else (the
//! report says how many entries are not covered by a checkpoint yet), and a
//! store replaced wholesale by an older copy of itself. Exports kept
//! elsewhere ([`export`]) show the second: the next export does not
//! continue the last one.
//!
//! Layout:
//! - `lib.rs`: [`AuditLog`], the handle the gateway holds, and
//!   [`AuditOptions`].
//! - `chain.rs`: the entry hash and the checkpoint signature formats.
//! - `writer.rs`: the writer thread and group commit.
//! - `store.rs`: the SQLite schema and statements, and [`tail`].
//! - `verify.rs`: [`verify`], the streaming check of a whole store, and the
//!   chain walk exports are checked with too.
//! - `export.rs`: [`export`] and [`verify_exports`]: the signed part of the
//!   log as JSON lines to keep elsewhere, checked there.
//! - `keys.rs`: the signing key files in the data directory.
//! - `error.rs`: [`AuditError`] and [`VerifyError`].

// Tests may unwrap and panic; the library itself may not (the workspace lints
// still apply to the non-test build, which `--all-targets` checks too).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod chain;
mod error;
mod export;
mod keys;
mod store;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};

pub use chain::{key_id, CHECKPOINT_DOMAIN, ENTRY_DOMAIN};
pub use error::{AuditError, VerifyError};
pub use export::{export, verify_exports, ExportStart, ExportSummary, EXPORT_FORMAT};
pub use keys::{
    check_store_present, load_or_create_signing_key, load_signing_key, load_verifying_key,
    load_verifying_key_file, SIGNING_KEY_FILE, VERIFYING_KEY_FILE,
};
pub use store::{scan_since, tail, StoredEntry};
pub use verify::{verify, VerifyReport};

use writer::{Counters, Request, Writer};

/// The event of the entry an opening writer adds when it finds entries that
/// no checkpoint covers: `{"event": ..., "first": N, "last": M}`.
pub const UNSIGNED_AT_OPEN: &str = "audit.unsigned_at_open";

/// The largest batch the writer accepts, whatever the options say.
const MAX_BATCH_LIMIT: usize = 65_536;

/// Tuning of the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// How long a write waits for another connection's lock before it fails
    /// (default 5 s).
    pub busy_timeout: Duration,
    /// Sign a checkpoint once this many entries were written since the last
    /// one (default 1000; 0 signs every batch).
    pub checkpoint_every: u64,
    /// Sign a checkpoint with the next batch once this much time passed since
    /// the last one (default 1 s).
    pub checkpoint_interval: Duration,
    /// The most entries written in one transaction (default 1024; taken as
    /// at least 1 and at most 65536).
    pub max_batch: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            busy_timeout: Duration::from_secs(5),
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(1),
            max_batch: 1024,
        }
    }
}

/// What the writer did since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Entries committed.
    pub entries: u64,
    /// Transactions committed with at least one entry; fewer than `entries`
    /// when appends were batched.
    pub commits: u64,
    /// Checkpoints committed, the final one included.
    pub checkpoints: u64,
    /// Batches that failed and were rolled back.
    pub failed_batches: u64,
}

/// A handle on the audit log; cheap to clone. The writer thread stops after
/// [`AuditLog::shutdown`], or when the last handle is dropped (after signing
/// a final checkpoint in both cases).
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` once shutdown was requested.
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    /// Becomes `true` when the writer thread has ended.
    stopped: watch::Receiver<bool>,
    counters: Arc<Counters>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.inner.path)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens or creates the database at `path` (creating tables), loads the
    /// chain head, starts the writer thread.
    ///
    /// Fails when the store's last checkpoint was signed with another key:
    /// the log could no longer be verified with one key.
    pub fn open(
        path: &Path,
        key: ed25519_dalek::SigningKey,
        options: AuditOptions,
    ) -> Result<AuditLog, AuditError> {
        let open_error = |source| AuditError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = store::open_for_writing(path, options.busy_timeout).map_err(open_error)?;
        let key_id = chain::key_id(&key.verifying_key());
        let head = store::read_head(&conn).map_err(|error| error.to_audit_error(path))?;
        let last_checkpoint =
            store::read_last_checkpoint(&conn).map_err(|error| error.to_audit_error(path))?;
        if let Some((_, store_key_id)) = &last_checkpoint {
            if *store_key_id != key_id {
                return Err(AuditError::KeyMismatch {
                    path: path.to_owned(),
                    store_key_id: store_key_id.clone(),
                    key_id,
                });
            }
        }
        tracing::info!(
            path = %path.display(),
            last_seq = head.seq,
            last_checkpoint_seq = last_checkpoint.as_ref().map(|(seq, _)| *seq),
            "audit log opened"
        );

        // Entries no checkpoint covers were written before a crash, or
        // added while the gateway was stopped: the next checkpoint would
        // vouch for them as if this gateway had written them. Said in the
        // log first, where every later checkpoint keeps it.
        let last_signed = last_checkpoint.as_ref().map_or(0, |(seq, _)| *seq);
        let found_unsigned = (head.seq > last_signed).then(|| {
            tracing::warn!(
                first = last_signed + 1,
                last = head.seq,
                "audit entries not covered by a signed checkpoint were found at start; they are recorded as such, and `audit verify` lists them"
            );
            serde_json::json!({
                "event": UNSIGNED_AT_OPEN,
                "first": last_signed + 1,
                "last": head.seq,
            })
            .to_string()
        });

        let max_batch = options.max_batch.clamp(1, MAX_BATCH_LIMIT);
        let (request_sender, request_receiver) = mpsc::channel(max_batch * 2);
        let (stopped_sender, stopped) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let mut writer = Writer {
            conn,
            path: path.to_owned(),
            key,
            key_id,
            checkpoint_every: options.checkpoint_every,
            checkpoint_interval: options.checkpoint_interval,
            max_batch,
            counters: Arc::clone(&counters),
            last_checkpoint_at: Instant::now(),
            unsigned_entries: false,
            file: writer::file_id(path),
            head_logged_at: None,
        };
        if let Some(body) = found_unsigned {
            writer.append_now(now_ms().ok_or(AuditError::Clock)?, body)?;
        }
        std::thread::Builder::new()
            .name("portcullis-audit-writer".to_owned())
            .spawn(move || writer.run(request_receiver, stopped_sender))
            .map_err(AuditError::Spawn)?;
        Ok(AuditLog {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                requests: Mutex::new(Some(request_sender)),
                stopped,
                counters,
            }),
        })
    }

    /// Appends one entry; resolves when it is durable. Body is serialized
    /// with serde_json. The entry's time is taken now.
    ///
    /// An error means the entry was not written (with one exception:
    /// [`AuditError::WriterStopped`], after a crash of the writer thread,
    /// cannot say); either way the caller must refuse what it was about to
    /// do. Dropping the future does not withdraw the entry.
    pub async fn append<T: serde::Serialize + ?Sized>(&self, body: &T) -> Result<u64, AuditError> {
        let body = serde_json::to_string(body).map_err(AuditError::Encode)?;
        let time_ms = now_ms().ok_or(AuditError::Clock)?;
        let requests = self.request_sender()?.ok_or(AuditError::ShutDown)?;
        let (reply, answer) = oneshot::channel();
        requests
            .send(Request::Append {
                time_ms,
                body,
                reply,
            })
            .await
            .map_err(|_| self.closed_error())?;
        answer.await.map_err(|_| self.closed_error())?
    }

    /// Writes a final checkpoint and stops the writer thread (idempotent);
    /// later appends fail with [`AuditError::ShutDown`]. Appends queued
    /// before the call are written first. Resolves once the writer has
    /// stopped; the error, if any, is the final checkpoint's.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let requests = self
            .inner
            .requests
            .lock()
            .map_err(|_| AuditError::Internal("the audit request lock is poisoned"))?
            .take();
        let mut result = Ok(());
        if let Some(requests) = requests {
            let (reply, answer) = oneshot::channel();
            result = match requests.send(Request::Shutdown { reply }).await {
                // A dropped reply means the writer died before signing.
                Ok(()) => answer.await.unwrap_or(Err(AuditError::WriterStopped)),
                Err(_) => Err(AuditError::WriterStopped),
            };
        }
        let mut stopped = self.inner.stopped.clone();
        // An error means the writer's end is gone, which only happens after
        // it has reported stopping.
        let _ = stopped.wait_for(|stopped| *stopped).await;
        result
    }

    /// Whether the writer is running and accepting entries (for /readyz).
    pub fn is_running(&self) -> bool {
        let accepting = self
            .inner
            .requests
            .lock()
            .map(|requests| requests.is_some())
            .unwrap_or(false);
        accepting && !*self.inner.stopped.borrow()
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Counters of what the writer did since the log was opened.
    pub fn stats(&self) -> AuditStats {
        let counters = &self.inner.counters;
        AuditStats {
            entries: counters.entries.load(Ordering::Relaxed),
            commits: counters.commits.load(Ordering::Relaxed),
            checkpoints: counters.checkpoints.load(Ordering::Relaxed),
            failed_batches: counters.failed_batches.load(Ordering::Relaxed),
        }
    }

    fn request_sender(&self) -> Result<Option<mpsc::Sender<Request>>, AuditError> {
        let requests = self
            .inner
            .requests
            .lock()
            .map_err(|_| AuditError::Internal("the audit request lock is poisoned"))?;
        Ok(requests.clone())
    }

    /// The error for a request the writer did not answer: it was shut down,
    /// or it died.
    fn closed_error(&self) -> AuditError {
        match self.inner.requests.lock() {
            Ok(requests) if requests.is_none() => AuditError::ShutDown,
            _ => AuditError::WriterStopped,
        }
    }
}

/// Unix time in milliseconds; `None` if the clock is before 1970.
pub(crate) fn now_ms() -> Option<u64> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_millis()).ok()
}
