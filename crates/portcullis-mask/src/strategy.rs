//! Masking strategies: what a whole value or a found substring becomes.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How a rule masks what it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The fixed text `****`.
    Redact,
    /// Keep the shape: an email keeps its first character and its domain,
    /// anything else its last `keep_last` letters and digits.
    Partial { keep_last: usize },
    /// `h:` and the first 16 hex digits of HMAC-SHA256 under the gateway's
    /// key: equal values stay equal, so joins and group-bys still work.
    Hash,
    /// SQL NULL for a whole value; `****` for a substring.
    Null,
}

/// `keep_last` when a `partial` rule does not say.
pub const DEFAULT_KEEP_LAST: usize = 4;

/// What `redact` (and `null` on a substring) writes.
pub(crate) const REDACTED: &[u8] = b"****";

/// A whole value after masking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Masked {
    /// The text to send instead of the value.
    Value(Vec<u8>),
    /// Send SQL NULL instead of the value.
    Null,
}

/// The gateway's key for the `hash` strategy. Its `Debug` does not show it.
#[derive(Clone)]
pub struct HashKey([u8; 32]);

impl HashKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        HashKey(bytes)
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

/// The HMAC keyed once per masker; each hash clones the keyed state, which is
/// cheaper than keying again.
#[derive(Clone)]
pub(crate) struct Hasher {
    mac: Option<Hmac<Sha256>>,
}

impl Hasher {
    pub(crate) fn new(key: &HashKey) -> Hasher {
        // HMAC takes keys of any length, so this never fails; if it ever did,
        // `hash` redacts rather than leaks.
        Hasher {
            mac: Hmac::<Sha256>::new_from_slice(&key.0).ok(),
        }
    }

    fn hash(&self, value: &[u8]) -> Vec<u8> {
        let Some(mac) = &self.mac else {
            return REDACTED.to_vec();
        };
        let mut mac = mac.clone();
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        let mut out = b"h:".to_vec();
        out.extend(hex::encode(digest).bytes().take(16));
        out
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher(..)")
    }
}

/// Masks a whole value. `derived`: the value is computed from a covered
/// column (`left(card, 8)`), so what `partial` would keep may be the part it
/// should hide, and a hash of it would hash a value the user chose
/// (`substr(national_id, n, 1)` for each digit, compared with the hashes of
/// `'0'` to `'9'`): both redact instead.
pub(crate) fn mask_value(
    strategy: Strategy,
    value: &[u8],
    derived: bool,
    hasher: &Hasher,
) -> Masked {
    match strategy {
        Strategy::Redact => Masked::Value(REDACTED.to_vec()),
        Strategy::Partial { .. } | Strategy::Hash if derived => Masked::Value(REDACTED.to_vec()),
        Strategy::Partial { keep_last } => Masked::Value(partial(value, keep_last)),
        Strategy::Hash => Masked::Value(hasher.hash(value)),
        Strategy::Null => Masked::Null,
    }
}

/// Masks a substring found by a detector: like a whole value, except that
/// `null` redacts (a part of a value cannot be NULL).
pub(crate) fn mask_substring(strategy: Strategy, found: &[u8], hasher: &Hasher) -> Vec<u8> {
    match mask_value(strategy, found, false, hasher) {
        Masked::Value(masked) => masked,
        Masked::Null => REDACTED.to_vec(),
    }
}

fn partial(value: &[u8], keep_last: usize) -> Vec<u8> {
    // Invalid UTF-8 becomes U+FFFD, which is then masked like any non-ASCII
    // character.
    let text = String::from_utf8_lossy(value);
    let masked = partial_email(&text).unwrap_or_else(|| partial_characters(&text, keep_last));
    // Fail closed: `partial` must hide something. A value with nothing to
    // hide (only separators), or whose masked form still holds it whole
    // (`*@x.io` becomes `****@x.io`), is redacted instead.
    if contains(masked.as_bytes(), value) {
        REDACTED.to_vec()
    } else {
        masked.into_bytes()
    }
}

/// `jane@example.com` -> `j***@example.com`. `None` when the text is not one
/// address (no `@` or more than one, an empty side, or whitespace).
fn partial_email(text: &str) -> Option<String> {
    let (local, domain) = text.split_once('@')?;
    if domain.is_empty() || domain.contains('@') || text.chars().any(char::is_whitespace) {
        return None;
    }
    let first = local.chars().next()?;
    Some(format!("{first}***@{domain}"))
}

/// Every ASCII letter or digit and every non-ASCII character becomes `*`,
/// except the last `keep_last` of them; separators stay. A value with fewer
/// than `2 * keep_last` of them is masked entirely, so that a short value is
/// never mostly revealed.
fn partial_characters(text: &str, keep_last: usize) -> String {
    let maskable = text.chars().filter(|&c| is_maskable(c)).count();
    let keep = if maskable < keep_last.saturating_mul(2) {
        0
    } else {
        keep_last
    };
    let mut to_mask = maskable.saturating_sub(keep);
    text.chars()
        .map(|c| {
            if is_maskable(c) && to_mask > 0 {
                to_mask -= 1;
                '*'
            } else {
                c
            }
        })
        .collect()
}

fn is_maskable(c: char) -> bool {
    c.is_ascii_alphanumeric() || !c.is_ascii()
}

/// Whether `needle` occurs in `haystack`; the empty needle occurs everywhere.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(byte: u8) -> Hasher {
        Hasher::new(&HashKey::new([byte; 32]))
    }

    fn value(strategy: Strategy, input: &str, derived: bool) -> Masked {
        mask_value(strategy, input.as_bytes(), derived, &hasher(1))
    }

    fn text(masked: Masked) -> String {
        match masked {
            Masked::Value(bytes) => String::from_utf8(bytes).unwrap(),
            Masked::Null => panic!("expected a value, got null"),
        }
    }

    const PARTIAL: Strategy = Strategy::Partial { keep_last: 4 };

    #[test]
    fn redact_and_null() {
        assert_eq!(text(value(Strategy::Redact, "secret", false)), "****");
        assert_eq!(value(Strategy::Null, "secret", false), Masked::Null);
        assert_eq!(
            mask_substring(Strategy::Null, b"secret", &hasher(1)),
            b"****"
        );
    }

    #[test]
    fn partial_keeps_an_email_domain_and_first_character() {
        assert_eq!(
            text(value(PARTIAL, "jane@example.com", false)),
            "j***@example.com"
        );
        assert_eq!(text(value(PARTIAL, "a@b.io", false)), "a***@b.io");
        // Not one address: the generic rule applies.
        assert_eq!(text(value(PARTIAL, "a@b@c.io1234", false)), "*@*@*.**1234");
        assert_eq!(text(value(PARTIAL, "@example.com", false)), "@******e.com");
    }

    #[test]
    fn partial_keeps_separators_and_the_last_characters() {
        assert_eq!(
            text(value(PARTIAL, "4242 4242 4242 4242", false)),
            "**** **** **** 4242"
        );
        assert_eq!(text(value(PARTIAL, "123-45-6789", false)), "***-**-6789");
        assert_eq!(
            text(value(Strategy::Partial { keep_last: 2 }, "abcdef", false)),
            "****ef"
        );
        // Non-ASCII characters are masked and count as characters.
        assert_eq!(text(value(PARTIAL, "Zoë Ångström", false)), "*** ****tröm");
    }

    #[test]
    fn partial_masks_short_values_entirely() {
        assert_eq!(text(value(PARTIAL, "1234567", false)), "*******");
        assert_eq!(text(value(PARTIAL, "12-34-5", false)), "**-**-*");
        assert_eq!(text(value(PARTIAL, "12345678", false)), "****5678");
    }

    #[test]
    fn partial_redacts_what_it_cannot_hide() {
        assert_eq!(text(value(PARTIAL, "- -", false)), "****");
        assert_eq!(text(value(PARTIAL, "", false)), "****");
        assert_eq!(text(value(PARTIAL, "*@x.io", false)), "****");
    }

    #[test]
    fn partial_of_a_derived_value_redacts() {
        assert_eq!(text(value(PARTIAL, "4242 4242", true)), "****");
        assert_eq!(text(value(PARTIAL, "jane@example.com", true)), "****");
    }

    #[test]
    fn partial_masks_invalid_utf8() {
        let masked = mask_value(PARTIAL, b"ab\xffcd\xfe", false, &hasher(1));
        assert_eq!(masked, Masked::Value(b"******".to_vec()));
    }

    #[test]
    fn hash_is_deterministic_and_keyed() {
        let a = mask_value(Strategy::Hash, b"jane@example.com", false, &hasher(1));
        let again = mask_value(Strategy::Hash, b"jane@example.com", false, &hasher(1));
        let other_value = mask_value(Strategy::Hash, b"john@example.com", false, &hasher(1));
        let other_key = mask_value(Strategy::Hash, b"jane@example.com", false, &hasher(2));
        assert_eq!(a, again);
        assert_ne!(a, other_value);
        assert_ne!(a, other_key);
        let a = text(a);
        assert_eq!(a.len(), 18);
        assert!(a.starts_with("h:"));
        assert!(a[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        // A derived value is redacted: hashing values a user can shape
        // would let them match hashes of their own guesses.
        assert_eq!(text(value(Strategy::Hash, "x", true)), "****");
    }

    #[test]
    fn hash_is_hmac_sha256() {
        // printf abc | openssl dgst -sha256 -mac HMAC -macopt hexkey:0101...01
        // (32 bytes of 0x01) gives 73860612aa6aadf6...
        assert_eq!(
            text(value(Strategy::Hash, "abc", false)),
            "h:73860612aa6aadf6"
        );
    }

    #[test]
    fn hash_key_debug_hides_the_key() {
        assert_eq!(format!("{:?}", HashKey::new([7; 32])), "HashKey(..)");
    }
}
