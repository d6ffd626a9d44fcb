//! The errors of the audit log: [`AuditError`] for opening, writing, reading
//! and keys, [`VerifyError`] for what verification finds.
//!
//! Every audit error is on the gateway's internal side: the gateway turns any
//! of them into a refusal of the statement it was about to forward.

use std::path::PathBuf;

/// What went wrong while opening, writing or reading the audit log, or while
/// loading its keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The database file could not be opened or prepared.
    #[error("cannot open the audit store at `{path}`: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The store holds something this crate did not write.
    #[error(
        "the audit store at `{path}` is damaged ({detail}); run `portcullis audit verify` on it"
    )]
    Damaged { path: PathBuf, detail: String },

    /// The store's checkpoints were signed with another key than the one the
    /// gateway was started with.
    #[error(
        "the audit store at `{path}` is signed with key `{store_key_id}`, but the signing key is \
         `{key_id}`; restore the original `audit-signing.key`, or start a new audit store"
    )]
    KeyMismatch {
        path: PathBuf,
        store_key_id: String,
        key_id: String,
    },

    /// The store's file was removed or replaced while the gateway wrote
    /// to it: what it writes would reach no file anyone reads.
    #[error(
        "the audit store at `{path}` was removed or replaced while the gateway ran; nothing more \
         is written or forwarded: put the store back and restart the gateway"
    )]
    Gone { path: PathBuf },

    /// The store is missing from a data directory that has its key.
    #[error(
        "the audit store `{path}` is missing, but `{key}` was made with it: the log was moved or \
         deleted. Put it back; to begin a new log on purpose, move the key files aside first"
    )]
    Missing { path: PathBuf, key: PathBuf },

    /// Another connection holds the write lock for longer than the busy
    /// timeout.
    #[error(
        "the audit store at `{path}` is locked by another process ({detail}); the entry was not \
         written"
    )]
    Locked { path: PathBuf, detail: String },

    /// Any other failure to write or commit a batch.
    #[error("cannot write to the audit store at `{path}` ({detail}); the entry was not written")]
    Write { path: PathBuf, detail: String },

    /// `shutdown` was called; the log takes no more entries.
    #[error("the audit log is shut down; the entry was not written")]
    ShutDown,

    /// The writer thread is gone without a shutdown (it panicked).
    #[error("the audit writer stopped unexpectedly; the entry may not have been written")]
    WriterStopped,

    /// The caller's body could not be serialized.
    #[error("cannot encode the audit entry as json: {0}")]
    Encode(#[source] serde_json::Error),

    /// The system clock is before 1970 or beyond what fits in 64 bits of
    /// milliseconds.
    #[error("the system clock is out of range; cannot timestamp the audit entry")]
    Clock,

    /// The writer thread could not be started.
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(#[source] std::io::Error),

    /// A key file exists but cannot be read, or the data directory cannot be
    /// read.
    #[error("cannot read the audit key file `{path}`: {source}")]
    KeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A key file could not be created.
    #[error("cannot write the audit key file `{path}`: {source}")]
    KeyWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A key file does not hold a valid key.
    #[error(
        "the audit key file `{path}` is malformed ({detail}); restore it from a backup, or move \
         it away to create a new key"
    )]
    KeyMalformed { path: PathBuf, detail: String },

    /// The public key file does not belong to the private key beside it.
    #[error(
        "the audit public key `{public_path}` does not belong to the signing key `{private_path}`; \
         restore the matching pair, or remove the public key file to write it again"
    )]
    KeyPairMismatch {
        private_path: PathBuf,
        public_path: PathBuf,
    },

    /// Reading the store (for `tail`) failed.
    #[error("cannot read the audit store at `{path}`: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// A stored body is not JSON.
    #[error("audit entry {seq} has a body that is not valid json: {source}")]
    Body {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },

    /// A lock inside the log was poisoned by a panic elsewhere.
    #[error("internal error in the audit log: {0}")]
    Internal(&'static str),
}

impl AuditError {
    /// Whether the store could not take the entry for now (locked, full disk,
    /// I/O error) while the log itself is still running, so a retry later
    /// can succeed.
    pub fn is_store_unavailable(&self) -> bool {
        matches!(self, AuditError::Locked { .. } | AuditError::Write { .. })
    }
}

/// The first problem verification found. Variants about an entry or a
/// checkpoint carry its sequence number; see [`VerifyError::seq`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Entries older than a running gateway leaves unsigned have no
    /// checkpoint after them.
    #[error(
        "entries {first} to {last} are older than a minute and no signed checkpoint covers them: \
         a running gateway signs within seconds and at shutdown, so they were changed, or the \
         gateway stopped without signing them; nothing vouches for them"
    )]
    Unsigned { first: u64, last: u64 },

    /// An entry is dated later than this machine's clock allows. Unsigned
    /// entries are judged by their age, so a forger who cannot sign would
    /// date them in the future to keep them young.
    #[error(
        "entry {seq} is dated {minutes_ahead} minutes after this machine's clock: the gateway dates an entry when it writes it, so it was forged, or this machine's clock is behind the gateway's (check it, and verify again)"
    )]
    FromTheFuture { seq: u64, minutes_ahead: u64 },

    /// The file does not exist or is not an SQLite database.
    #[error("cannot open the audit store at `{path}`: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// Reading failed half-way (I/O error, missing table).
    #[error("cannot read the audit store at `{path}`: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// A row's columns have the wrong type or encoding.
    #[error("entry {seq} is malformed: {detail}")]
    MalformedEntry { seq: i64, detail: String },

    /// The log does not start at 1.
    #[error("entry 1 is missing (the log starts at entry {first})")]
    StartMissing { first: u64 },

    /// A sequence number is missing in the middle.
    #[error("entry {missing} is missing (entries jump from {before} to {after})")]
    Gap {
        missing: u64,
        before: u64,
        after: u64,
    },

    /// Entry 1 does not link to the all-zero hash.
    #[error("entry 1 does not start the chain: its prev_hash is not zero")]
    BadStart,

    /// An entry's prev_hash is not the previous entry's hash: entries were
    /// reordered, removed and renumbered, or inserted.
    #[error("entry {seq} does not follow entry {previous}: prev_hash mismatch")]
    BrokenLink { seq: u64, previous: u64 },

    /// An entry's stored hash is not the hash of its content.
    #[error("entry {seq} was changed: its hash does not match its content")]
    Changed { seq: u64 },

    /// A checkpoint row has the wrong type or encoding.
    #[error("checkpoint at entry {seq} is malformed: {detail}")]
    MalformedCheckpoint { seq: i64, detail: String },

    /// A checkpoint names another key than the expected one.
    #[error(
        "checkpoint at entry {seq} was signed by key `{key_id}`, not by the expected key \
         `{expected_key_id}`"
    )]
    CheckpointKey {
        seq: u64,
        key_id: String,
        expected_key_id: String,
    },

    /// A checkpoint's signature does not verify: it was forged or altered.
    #[error("checkpoint at entry {seq} has an invalid signature: it was forged or altered")]
    CheckpointSignature { seq: u64 },

    /// A genuine checkpoint disagrees with the chain: the entries up to it
    /// were rewritten.
    #[error(
        "checkpoint at entry {seq} does not match the chain: entries up to {seq} were rewritten"
    )]
    CheckpointMismatch { seq: u64 },

    /// A checkpoint refers to an entry that is no longer there: the end of
    /// the log was cut off.
    #[error(
        "checkpoint at entry {seq} refers to an entry that no longer exists (the log ends at \
         entry {last_seq}): entries were removed from the end"
    )]
    CheckpointBeyondEnd { seq: u64, last_seq: u64 },

    /// An entry comes again, or before one it should follow (in an export:
    /// lines reordered or repeated).
    #[error("entry {seq} comes after entry {after}: entries were reordered or repeated")]
    OutOfOrder { seq: u64, after: u64 },

    /// A checkpoint is not right after the entry it signs (in an export:
    /// lines moved).
    #[error(
        "the checkpoint at entry {seq} comes after entry {after}, not after the entry it signs"
    )]
    CheckpointOutOfPlace { seq: u64, after: u64 },

    /// An export cannot be read.
    #[error("cannot read the export `{file}`: {source}")]
    ExportRead {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A line of an export is not what an export holds.
    #[error("`{file}` line {line}: {detail}")]
    ExportLine {
        file: PathBuf,
        line: u64,
        detail: String,
    },

    /// An export does not start where the one before it ended.
    #[error(
        "`{file}` does not continue the export before it: it starts after entry {after} (hash \
         {after_hash}), and the one before ends at entry {expected} (hash {expected_hash})"
    )]
    ExportBreak {
        file: PathBuf,
        after: u64,
        after_hash: String,
        expected: u64,
        expected_hash: String,
    },

    /// `audit export --after`: the store ends before the entry an earlier
    /// export ended at.
    #[error(
        "the log ends at entry {last_seq}, before entry {after} where the last export ended: \
         entries were removed from its end since"
    )]
    AfterBeyondEnd { after: u64, last_seq: u64 },

    /// `audit export --after-export`: the store's entry is not the one the
    /// earlier export ended with.
    #[error(
        "entry {seq} is not the one the last export ended with (hash {exported}, the store's \
         {stored}): the log was rewritten since"
    )]
    AfterChanged {
        seq: u64,
        exported: String,
        stored: String,
    },

    /// Writing an export failed.
    #[error("cannot write the export: {0}")]
    ExportWrite(#[source] std::io::Error),
}

impl VerifyError {
    /// The sequence number of the first bad entry or checkpoint, when the
    /// problem is about one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            VerifyError::Open { .. }
            | VerifyError::Read { .. }
            | VerifyError::ExportRead { .. }
            | VerifyError::ExportLine { .. }
            | VerifyError::ExportWrite(_) => None,
            VerifyError::ExportBreak { after, .. } => Some(after + 1),
            VerifyError::AfterBeyondEnd { after, .. } => Some(*after),
            VerifyError::MalformedEntry { seq, .. }
            | VerifyError::MalformedCheckpoint { seq, .. } => u64::try_from(*seq).ok(),
            VerifyError::StartMissing { .. } | VerifyError::BadStart => Some(1),
            VerifyError::Gap { missing, .. } => Some(*missing),
            VerifyError::Unsigned { first, .. } => Some(*first),
            VerifyError::BrokenLink { seq, .. }
            | VerifyError::Changed { seq }
            | VerifyError::CheckpointKey { seq, .. }
            | VerifyError::CheckpointSignature { seq }
            | VerifyError::CheckpointMismatch { seq }
            | VerifyError::CheckpointBeyondEnd { seq, .. }
            | VerifyError::OutOfOrder { seq, .. }
            | VerifyError::CheckpointOutOfPlace { seq, .. }
            | VerifyError::AfterChanged { seq, .. }
            | VerifyError::FromTheFuture { seq, .. } => Some(*seq),
        }
    }
}
