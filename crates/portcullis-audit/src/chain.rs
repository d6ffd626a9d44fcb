//! The hash chain and the checkpoint signature format: the two byte layouts
//! that the writer produces and the verifier checks. Changing either one
//! makes every existing audit store fail verification, so both carry a
//! version in their domain prefix.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Domain prefix of every entry hash.
pub const ENTRY_DOMAIN: &[u8] = b"portcullis-audit-v1\n";

/// Domain prefix of every checkpoint signature.
pub const CHECKPOINT_DOMAIN: &[u8] = b"portcullis-audit-checkpoint-v1\n";

/// A SHA-256 digest; the chain's link type.
pub type EntryHash = [u8; 32];

/// The `prev_hash` of entry 1.
pub const GENESIS_HASH: EntryHash = [0; 32];

/// `SHA-256(ENTRY_DOMAIN || prev_hash || seq BE || time_ms BE || body)`.
pub fn entry_hash(prev_hash: &EntryHash, seq: u64, time_ms: u64, body: &[u8]) -> EntryHash {
    let mut hasher = Sha256::new();
    hasher.update(ENTRY_DOMAIN);
    hasher.update(prev_hash);
    hasher.update(seq.to_be_bytes());
    hasher.update(time_ms.to_be_bytes());
    hasher.update(body);
    hasher.finalize().into()
}

/// The bytes a checkpoint signs:
/// `CHECKPOINT_DOMAIN || seq BE || hash || time_ms BE`.
pub fn checkpoint_message(seq: u64, hash: &EntryHash, time_ms: u64) -> Vec<u8> {
    let mut message = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 8 + 32 + 8);
    message.extend_from_slice(CHECKPOINT_DOMAIN);
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(hash);
    message.extend_from_slice(&time_ms.to_be_bytes());
    message
}

/// What an export's end line signs: where the export starts and ends, and
/// how many entries it holds. A checkpoint vouches for the entries up to
/// it; this vouches that the export ends where it says, so that one cut at
/// an earlier checkpoint does not verify as a shorter export.
pub const EXPORT_END_DOMAIN: &[u8] = b"portcullis-audit-export-end-v1\n";

/// `EXPORT_END_DOMAIN || after BE || after_hash || last BE || last_hash ||
/// entries BE`.
pub fn export_end_message(
    after: u64,
    after_hash: &EntryHash,
    last: u64,
    last_hash: &EntryHash,
    entries: u64,
) -> Vec<u8> {
    let mut message = Vec::with_capacity(EXPORT_END_DOMAIN.len() + 8 + 32 + 8 + 32 + 8);
    message.extend_from_slice(EXPORT_END_DOMAIN);
    message.extend_from_slice(&after.to_be_bytes());
    message.extend_from_slice(after_hash);
    message.extend_from_slice(&last.to_be_bytes());
    message.extend_from_slice(last_hash);
    message.extend_from_slice(&entries.to_be_bytes());
    message
}

/// Checks a signature over `message` strictly.
pub fn signature_is_valid(key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool {
    key.verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

/// Signs a checkpoint; returns the signature as 64 bytes.
pub fn sign_checkpoint(key: &SigningKey, seq: u64, hash: &EntryHash, time_ms: u64) -> [u8; 64] {
    key.sign(&checkpoint_message(seq, hash, time_ms)).to_bytes()
}

/// Checks a checkpoint signature strictly (no malleable or small-order
/// encodings).
pub fn checkpoint_signature_is_valid(
    key: &VerifyingKey,
    seq: u64,
    hash: &EntryHash,
    time_ms: u64,
    signature: &[u8; 64],
) -> bool {
    signature_is_valid(key, &checkpoint_message(seq, hash, time_ms), signature)
}

/// The key id stored with each checkpoint: the public key in lowercase hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// Decodes a stored hex hash; `None` when it is not 64 hex digits.
pub fn decode_hash(text: &str) -> Option<EntryHash> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash).ok()?;
    Some(hash)
}

/// Decodes a stored hex signature; `None` when it is not 128 hex digits.
pub fn decode_signature(text: &str) -> Option<[u8; 64]> {
    let mut signature = [0u8; 64];
    hex::decode_to_slice(text, &mut signature).ok()?;
    Some(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_hash_covers_every_field() {
        let base = entry_hash(&GENESIS_HASH, 1, 1000, b"{}");
        assert_ne!(base, entry_hash(&[1; 32], 1, 1000, b"{}"));
        assert_ne!(base, entry_hash(&GENESIS_HASH, 2, 1000, b"{}"));
        assert_ne!(base, entry_hash(&GENESIS_HASH, 1, 1001, b"{}"));
        assert_ne!(base, entry_hash(&GENESIS_HASH, 1, 1000, b"[]"));
        assert_eq!(base, entry_hash(&GENESIS_HASH, 1, 1000, b"{}"));
    }

    #[test]
    fn entry_hash_matches_the_documented_layout() {
        let mut input = Vec::new();
        input.extend_from_slice(b"portcullis-audit-v1\n");
        input.extend_from_slice(&[7; 32]);
        input.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5]);
        input.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 0]);
        input.extend_from_slice(b"\"x\"");
        let expected: EntryHash = Sha256::digest(&input).into();
        assert_eq!(entry_hash(&[7; 32], 5, 256, b"\"x\""), expected);
    }

    #[test]
    fn checkpoint_signature_round_trips_and_binds_every_field() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let public = key.verifying_key();
        let signature = sign_checkpoint(&key, 10, &[3; 32], 77);
        assert!(checkpoint_signature_is_valid(
            &public, 10, &[3; 32], 77, &signature
        ));
        assert!(!checkpoint_signature_is_valid(
            &public, 11, &[3; 32], 77, &signature
        ));
        assert!(!checkpoint_signature_is_valid(
            &public, 10, &[4; 32], 77, &signature
        ));
        assert!(!checkpoint_signature_is_valid(
            &public, 10, &[3; 32], 78, &signature
        ));
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(!checkpoint_signature_is_valid(
            &other, 10, &[3; 32], 77, &signature
        ));
    }

    #[test]
    fn decode_rejects_wrong_lengths_and_non_hex() {
        assert_eq!(decode_hash(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(decode_hash(&"ab".repeat(31)), None);
        assert_eq!(decode_hash(&"zz".repeat(32)), None);
        assert_eq!(decode_signature(&"01".repeat(64)), Some([1; 64]));
        assert_eq!(decode_signature(&"01".repeat(32)), None);
    }
}
