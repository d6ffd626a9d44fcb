//! The writer thread and group commit.
//!
//! One `std::thread` owns the SQLite connection. It waits for a request,
//! drains whatever else is queued (up to `max_batch`), writes the whole
//! batch in one `BEGIN IMMEDIATE` transaction, commits once (one fsync), and
//! only then answers each waiter with its sequence number. A waiter is never
//! answered `Ok` before the commit that holds its entry has returned.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot, watch};

use crate::chain::{self, EntryHash};
use crate::error::AuditError;
use crate::store::{self, StoreError};

/// A message from an [`AuditLog`](crate::AuditLog) handle to the writer.
pub(crate) enum Request {
    Append {
        time_ms: u64,
        body: String,
        reply: oneshot::Sender<Result<u64, AuditError>>,
    },
    Shutdown {
        reply: oneshot::Sender<Result<(), AuditError>>,
    },
}

/// Counters shared between the writer and the handles.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) entries: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
}

struct PendingAppend {
    time_ms: u64,
    body: String,
    reply: oneshot::Sender<Result<u64, AuditError>>,
}

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    pub(crate) key: SigningKey,
    pub(crate) key_id: String,
    pub(crate) checkpoint_every: u64,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) max_batch: usize,
    pub(crate) counters: Arc<Counters>,
    /// When this writer last wrote a checkpoint (or started).
    pub(crate) last_checkpoint_at: Instant,
    /// Whether entries were committed after the last checkpoint.
    pub(crate) unsigned_entries: bool,
    /// The store's file as opened (device and inode): a batch is written
    /// only while the path still names it.
    pub(crate) file: Option<(u64, u64)>,
    /// When the signed head last went to the log.
    pub(crate) head_logged_at: Option<Instant>,
}

/// How often, at most, the signed head goes to the gateway's log.
const HEAD_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The device and inode of the file at `path`.
pub(crate) fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Tells the handles that the writer is gone when the thread ends, however
/// it ends (a return or a panic).
struct StoppedOnDrop(watch::Sender<bool>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl Writer {
    /// The thread's body. Returns after a shutdown request, or when every
    /// handle is dropped.
    pub(crate) fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        stopped: watch::Sender<bool>,
    ) {
        let stopped = StoppedOnDrop(stopped);
        let mut batch: Vec<PendingAppend> = Vec::with_capacity(self.max_batch);
        // A small clock of the thread's own, so that an idle writer still
        // signs its last entries within `checkpoint_interval`.
        let clock = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .ok();
        loop {
            let received = match (&clock, self.unsigned_entries) {
                (Some(clock), true) => {
                    let wait = self
                        .checkpoint_interval
                        .saturating_sub(self.last_checkpoint_at.elapsed());
                    clock.block_on(async { tokio::time::timeout(wait, requests.recv()).await })
                }
                // Not inside a tokio runtime: this is a plain thread.
                _ => Ok(requests.blocking_recv()),
            };
            let Ok(received) = received else {
                if let Err(error) = self.write_final_checkpoint(false) {
                    tracing::error!(
                        error = %error.to_audit_error(&self.path),
                        "cannot write an audit checkpoint"
                    );
                }
                // Retried only when new entries arrive, not in a tight loop.
                self.unsigned_entries = false;
                continue;
            };
            let Some(first) = received else {
                // Every handle is gone: seal what was written.
                if let Err(error) = self.write_final_checkpoint(true) {
                    tracing::error!(
                        error = %error.to_audit_error(&self.path),
                        "cannot write the final audit checkpoint"
                    );
                }
                return;
            };
            let mut shutdown = None;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Append {
                        time_ms,
                        body,
                        reply,
                    } => batch.push(PendingAppend {
                        time_ms,
                        body,
                        reply,
                    }),
                    // Appends queued behind a shutdown are refused below, so
                    // stop draining here.
                    Request::Shutdown { reply } => {
                        shutdown = Some(reply);
                        break;
                    }
                }
                if batch.len() < self.max_batch {
                    next = requests.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                if file_id(&self.path) != self.file {
                    // Removed or replaced under the gateway: entries would
                    // go to a file nobody reads. Refuse them, and stop, so
                    // that every later append is refused and /readyz says
                    // not ready.
                    tracing::error!(path = %self.path.display(), "the audit store was removed or replaced; the audit log stops");
                    self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                    for pending in batch.drain(..) {
                        let _ = pending.reply.send(Err(AuditError::Gone {
                            path: self.path.clone(),
                        }));
                    }
                    return;
                }
                self.commit_batch(&mut batch);
            }
            if let Some(reply) = shutdown {
                requests.close();
                let result = self
                    .write_final_checkpoint(true)
                    .map_err(|error| error.to_audit_error(&self.path));
                // Appends that raced with the shutdown got into the queue
                // before it closed; they are refused, never left hanging.
                while let Ok(request) = requests.try_recv() {
                    refuse_after_shutdown(request);
                }
                drop(stopped);
                // Ignored: the caller may have stopped waiting.
                let _ = reply.send(result);
                return;
            }
        }
    }

    /// Writes one entry at once, before the thread runs.
    pub(crate) fn append_now(&mut self, time_ms: u64, body: String) -> Result<u64, AuditError> {
        let (reply, mut answer) = oneshot::channel();
        self.commit_batch(&mut vec![PendingAppend {
            time_ms,
            body,
            reply,
        }]);
        answer
            .try_recv()
            .map_err(|_| AuditError::Internal("the audit writer did not answer"))?
    }

    fn commit_batch(&mut self, batch: &mut Vec<PendingAppend>) {
        match self.write_batch(batch) {
            Ok(first_seq) => {
                let n_entries = batch.len() as u64;
                self.counters
                    .entries
                    .fetch_add(n_entries, Ordering::Relaxed);
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                for (seq, pending) in (first_seq..).zip(batch.drain(..)) {
                    // Ignored: a caller that stopped waiting still has its
                    // entry written, which is the safe side.
                    let _ = pending.reply.send(Ok(seq));
                }
            }
            Err(error) => {
                self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                let shown = error.to_audit_error(&self.path);
                tracing::error!(error = %shown, n_entries = batch.len(), "audit batch not written");
                let mut shown = Some(shown);
                for pending in batch.drain(..) {
                    let error = shown
                        .take()
                        .unwrap_or_else(|| error.to_audit_error(&self.path));
                    let _ = pending.reply.send(Err(error));
                }
            }
        }
    }

    /// Writes the batch in one transaction; returns the first entry's seq.
    /// On error the transaction is rolled back when it is dropped, so the
    /// store holds either the whole batch or none of it.
    fn write_batch(&mut self, batch: &[PendingAppend]) -> Result<u64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // INVARIANT: the chain head is read inside the write transaction,
        // never cached across batches. After a failed batch the next one
        // continues from what is really committed, and a second writer on
        // the same file cannot fork the chain.
        let head = store::read_head(&tx)?;
        let last_checkpoint_seq = store::read_last_checkpoint(&tx)?.map_or(0, |(seq, _)| seq);
        let first_seq = next_seq(head.seq)?;
        let mut seq = head.seq;
        let mut prev_hash = head.hash;
        for pending in batch {
            seq = next_seq(seq)?;
            let hash = chain::entry_hash(&prev_hash, seq, pending.time_ms, pending.body.as_bytes());
            store::insert_entry(&tx, seq, pending.time_ms, &pending.body, &prev_hash, &hash)?;
            prev_hash = hash;
        }
        let due = seq.saturating_sub(last_checkpoint_seq) >= self.checkpoint_every
            || self.last_checkpoint_at.elapsed() >= self.checkpoint_interval;
        if due {
            insert_checkpoint(&tx, &self.key, &self.key_id, seq, &prev_hash)?;
        }
        tx.commit()?;
        if due {
            self.checkpoint_written(seq, &prev_hash, false);
        } else {
            self.unsigned_entries = true;
        }
        Ok(first_seq)
    }

    /// Signs the head if it is not signed yet; `sealing` when the writer
    /// stops (the head then always goes to the log).
    fn write_final_checkpoint(&mut self, sealing: bool) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head = store::read_head(&tx)?;
        let last_checkpoint_seq = store::read_last_checkpoint(&tx)?.map_or(0, |(seq, _)| seq);
        if head.seq == 0 || head.seq <= last_checkpoint_seq {
            return Ok(());
        }
        insert_checkpoint(&tx, &self.key, &self.key_id, head.seq, &head.hash)?;
        tx.commit()?;
        self.checkpoint_written(head.seq, &head.hash, sealing);
        Ok(())
    }

    /// After a checkpoint at `seq`: the signed head goes to the gateway's
    /// log at most once a minute, and always when the writer seals what it
    /// wrote (`last`). Shipped off the machine, these lines are what shows
    /// that a store was cut back to an earlier checkpoint, which the store
    /// alone cannot show.
    fn checkpoint_written(&mut self, seq: u64, hash: &EntryHash, last: bool) {
        self.last_checkpoint_at = Instant::now();
        self.unsigned_entries = false;
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        if last
            || self
                .head_logged_at
                .is_none_or(|at| at.elapsed() >= HEAD_LOG_INTERVAL)
        {
            self.head_logged_at = Some(Instant::now());
            tracing::info!(seq, hash = %hex::encode(hash), "audit head signed");
        }
    }
}

/// Signs the chain head `seq`/`hash` now and stores the checkpoint.
fn insert_checkpoint(
    conn: &Connection,
    key: &SigningKey,
    key_id: &str,
    seq: u64,
    hash: &EntryHash,
) -> Result<(), StoreError> {
    let time_ms = crate::now_ms().ok_or(StoreError::Clock)?;
    let signature = chain::sign_checkpoint(key, seq, hash, time_ms);
    store::insert_checkpoint(conn, seq, hash, time_ms, &signature, key_id)
}

fn next_seq(seq: u64) -> Result<u64, StoreError> {
    seq.checked_add(1)
        .ok_or_else(|| StoreError::Damaged("the sequence numbers are exhausted".to_owned()))
}

fn refuse_after_shutdown(request: Request) {
    match request {
        Request::Append { reply, .. } => {
            let _ = reply.send(Err(AuditError::ShutDown));
        }
        Request::Shutdown { reply } => {
            let _ = reply.send(Ok(()));
        }
    }
}
