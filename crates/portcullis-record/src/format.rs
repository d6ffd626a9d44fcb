//! The recording format, version 1. See `docs/recording-format.md`.
//!
//! A recording is a directory named after its session. Events are appended
//! to numbered chunk files (`000001.chunk`, ...); a chunk is sealed when it
//! reaches its size and a new one begins. Each event is one record:
//!
//! ```text
//! kind: u8 | t_ms: u32 (big-endian, since the session began) | len: u32 | payload: len bytes
//! ```
//!
//! `manifest.json` is written when the recording ends: the session's facts,
//! each chunk's size and SHA-256, the hash chain over the chunks, and an
//! ed25519 signature over all of it.

use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// JSON [`Start`]: who, where, when.
    Start = 1,
    /// JSON [`Statement`]: a statement the client sent, and its decision.
    Statement = 2,
    /// The bytes the client received, as sent: PostgreSQL backend messages,
    /// after masking.
    ToClient = 3,
    /// JSON [`Truncated`]: results left out of the recording by the cap.
    Truncated = 4,
    /// JSON [`End`]: how the session ended.
    End = 5,
    /// What an SSH channel's terminal printed: the channel (u32,
    /// big-endian), then the bytes as the client received them.
    Output = 6,
    /// JSON [`Resize`]: an SSH channel's terminal size, at its pty request
    /// and at each window change.
    Resize = 7,
    /// JSON [`Masking`]: the mask rules whose values the session's
    /// principal sees in clear, at its start and whenever the policy
    /// changes them.
    Masking = 8,
}

impl Kind {
    pub fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Start,
            2 => Kind::Statement,
            3 => Kind::ToClient,
            4 => Kind::Truncated,
            5 => Kind::End,
            6 => Kind::Output,
            7 => Kind::Resize,
            8 => Kind::Masking,
            _ => return None,
        })
    }
}

pub const HEADER_LEN: usize = 9;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    pub version: u32,
    pub session: String,
    pub principal: String,
    pub target: String,
    pub client_addr: String,
    /// Unix milliseconds.
    pub started_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// `query`, `parse`, `execute`.
    pub phase: String,
    pub text: String,
    /// `allow`, `deny`, `hold`.
    pub effect: String,
    #[serde(default)]
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// An Execute's bound parameters (text, or `\\x<hex>` for binary);
    /// `None` is SQL NULL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Option<String>>,
    /// Values were bound that are not kept (more, or longer, than a
    /// reviewer is shown): the replay says so rather than show none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parameters_withheld: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncated {
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resize {
    pub channel: u32,
    pub cols: u32,
    pub rows: u32,
}

/// The rules that apply to the session's target which its principal may
/// `unmask`: the results recorded after it hold their values in clear.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Masking {
    pub unmasked: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    pub outcome: String,
}

/// One chunk as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    pub n: u32,
    pub bytes: u64,
    pub sha256: String,
    /// SHA-256 of the previous chunk's `chain` and this chunk's `sha256`.
    pub chain: String,
}

/// What is signed, and the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub session: String,
    pub principal: String,
    pub target: String,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub outcome: String,
    pub chunks: Vec<ChunkEntry>,
    /// The last chunk's `chain`: the recording's hash, linked from the audit log.
    pub final_hash: String,
    /// True when the gateway stopped before the session ended and the
    /// recording was sealed at the next start.
    #[serde(default)]
    pub recovered: bool,
    /// Hex ed25519 signature over the manifest with this field empty.
    #[serde(default)]
    pub signature: String,
}

impl Manifest {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature = String::new();
        serde_json::to_vec(&unsigned).unwrap_or_default()
    }
}

/// The hash chain's first link.
pub const CHAIN_START: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub fn chain(previous: &str, chunk_sha256: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(previous.as_bytes());
    hasher.update(chunk_sha256.as_bytes());
    hex::encode(hasher.finalize())
}

/// Appends one record; a payload longer than a record can say (4 GiB) is
/// cut, which the writer never asks for (frames are at most 1 GiB).
pub fn encode(out: &mut Vec<u8>, kind: Kind, t_ms: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.push(kind as u8);
    out.extend_from_slice(&t_ms.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload.get(..len as usize).unwrap_or(payload));
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub t_ms: u32,
    pub payload: Vec<u8>,
}

/// Splits `bytes` into records; `Err` names the offset of the first that
/// does not decode (a truncated or damaged chunk).
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Record>, usize> {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let header = bytes.get(pos..pos + HEADER_LEN).ok_or(pos)?;
        let kind = Kind::from_u8(header[0]).ok_or(pos)?;
        let t_ms = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
        let payload = bytes
            .get(pos + HEADER_LEN..pos + HEADER_LEN + len)
            .ok_or(pos)?;
        records.push(Record {
            kind,
            t_ms,
            payload: payload.to_vec(),
        });
        pos += HEADER_LEN + len;
    }
    Ok(records)
}
