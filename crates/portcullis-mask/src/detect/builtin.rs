//! The built-in detectors: their candidate patterns and the checks that turn
//! a candidate into a finding.
//!
//! Patterns are ASCII-only (`(?-u)`), so that they run on bytes (invalid
//! UTF-8 included) and stay in the regex crate's fast DFA. Edges are checked
//! in code rather than with `\b`, because "not next to another digit" is
//! what keeps a card number inside a longer digit string from being
//! half-masked, and the regex crate has no look-around.

use std::net::Ipv6Addr;

use regex::bytes::Regex;

/// The built-in detector names, for docs and validation.
pub const BUILTIN_DETECTORS: &[&str] = &[
    "email",
    "phone",
    "payment_card",
    "iban",
    "us_ssn",
    "ipv4",
    "ipv6",
    "jwt",
    "aws_access_key",
    "private_key",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Email,
    Phone,
    PaymentCard,
    Iban,
    UsSsn,
    Ipv4,
    Ipv6,
    Jwt,
    AwsAccessKey,
    PrivateKey,
    Custom,
}

const EMAIL: &str = r"(?-u)[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}";

/// International (`+` and a country code), North American (3-3-4 with
/// separators) and European forms: a leading 0, then either groups of three
/// or more digits (`030 1234 5678`, `0171/1234567`) or four pairs
/// (`06 12 34 56 78`). The shapes are chosen so that dates and times
/// (`2024-01-15`, `15.01.2024`, `10:30:00.123`) are not even candidates,
/// which keeps log text on the fast path. Plain digit runs are not phones:
/// they are ids and amounts far more often.
const PHONE: &str = concat!(
    r"(?-u)(?:",
    r"\+[1-9][0-9]{0,3}(?:[ .\-]?(?:\([0-9]{1,4}\)|[0-9]{1,6})){1,8}",
    r"|(?:1[ .\-]?)?(?:\([0-9]{3}\)[ .\-]?|[0-9]{3}[ .\-])[0-9]{3}[ .\-][0-9]{4}",
    r"|0[0-9]{1,4}[ /.\-](?:[0-9]{6,8}|[0-9]{3,5}[ /.\-][0-9]{3,5}(?:[ /.\-][0-9]{2,5})?)",
    r"|0[1-9](?:[ .\-][0-9]{2}){4}",
    r")"
);

/// A run of at least 13 digits with single spaces or dashes between them;
/// [`find_cards`] picks the card numbers inside.
const CARD_RUN: &str = r"(?-u)[0-9](?:[ \-]?[0-9]){12,}";

const IBAN: &str = r"(?-u)(?i)\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b";

const US_SSN: &str = r"(?-u)[0-9]{3}-[0-9]{2}-[0-9]{4}";

const IPV4: &str = r"(?-u)(?:[0-9]{1,3}\.){3}[0-9]{1,3}";

/// Eight groups, or fewer around one `::`, optionally ending in dotted IPv4;
/// [`accept`] has `Ipv6Addr` parse it.
const IPV6: &str = r"(?-u)(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){6}[0-9]{1,3}(?:\.[0-9]{1,3}){3}|(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?::(?:(?:[0-9A-Fa-f]{1,4}:){0,6}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4}))?)";

const JWT: &str = r"(?-u)eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*";

const AWS_ACCESS_KEY: &str = r"(?-u)(?:AKIA|ASIA)[A-Z0-9]{16}";

/// The whole block. A block without its END line (a truncated value) is
/// masked to the end of the value.
const PRIVATE_KEY: &str =
    r"(?-u)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.)*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)";

pub(super) fn pattern(name: &str) -> Option<(Kind, &'static str)> {
    Some(match name {
        "email" => (Kind::Email, EMAIL),
        "phone" => (Kind::Phone, PHONE),
        "payment_card" => (Kind::PaymentCard, CARD_RUN),
        "iban" => (Kind::Iban, IBAN),
        "us_ssn" => (Kind::UsSsn, US_SSN),
        "ipv4" => (Kind::Ipv4, IPV4),
        "ipv6" => (Kind::Ipv6, IPV6),
        "jwt" => (Kind::Jwt, JWT),
        "aws_access_key" => (Kind::AwsAccessKey, AWS_ACCESS_KEY),
        "private_key" => (Kind::PrivateKey, PRIVATE_KEY),
        _ => return None,
    })
}

/// Whether the candidate `hay[start..end]` is a finding.
pub(super) fn accept(kind: Kind, hay: &[u8], start: usize, end: usize) -> bool {
    let found = hay.get(start..end).unwrap_or_default();
    let before = start.checked_sub(1).and_then(|i| hay.get(i)).copied();
    let after = hay.get(end).copied();
    let after_next = hay.get(end + 1).copied();
    let digit_follows = matches!(after_next, Some(b'0'..=b'9'));
    // `15.01.2024`, `10:30:00.123456`: a candidate such as `01.2024` or
    // `00.123456` that continues a number before it.
    let digit_precedes = start
        .checked_sub(2)
        .and_then(|i| hay.get(i))
        .is_some_and(u8::is_ascii_digit);
    // `glued`: the candidate continues a word or number around it.
    match kind {
        Kind::Phone => {
            let glued = before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'+')
                || (matches!(before, Some(b'.' | b'-' | b'/' | b':')) && digit_precedes)
                || after.is_some_and(|b| b.is_ascii_alphanumeric())
                || (matches!(after, Some(b' ' | b'.' | b'-' | b'/')) && digit_follows);
            !glued && (8..=15).contains(&count_digits(found)) && !starts_with_date(found)
        }
        Kind::UsSsn => {
            let glued = before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-')
                || after.is_some_and(|b| b.is_ascii_alphanumeric())
                || (after == Some(b'-') && digit_follows);
            !glued && is_us_ssn(found)
        }
        Kind::Ipv4 => {
            let glued = before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.')
                || after.is_some_and(|b| b.is_ascii_alphanumeric())
                || (after == Some(b'.') && digit_follows);
            !glued
                && found
                    .split(|&b| b == b'.')
                    .all(|octet| parse_decimal(octet) <= 255)
        }
        Kind::Ipv6 => {
            let glued = before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b':' || b == b'.')
                || after.is_some_and(|b| b.is_ascii_alphanumeric() || b == b':');
            !glued
                && found.iter().any(u8::is_ascii_hexdigit)
                && std::str::from_utf8(found).is_ok_and(|text| text.parse::<Ipv6Addr>().is_ok())
        }
        Kind::Jwt => !before.is_some_and(is_base64url),
        Kind::AwsAccessKey => {
            !before.is_some_and(|b| b.is_ascii_alphanumeric())
                && !after.is_some_and(|b| b.is_ascii_alphanumeric())
        }
        Kind::Email | Kind::PaymentCard | Kind::Iban | Kind::PrivateKey | Kind::Custom => true,
    }
}

/// Card numbers inside each run of digit groups: the longest stretch of
/// whole groups, from the leftmost group on, that has 13 to 19 digits and
/// passes the Luhn check. A single group of more than 19 digits is a longer
/// number, not a card, and is left whole.
pub(super) fn find_cards(run_regex: &Regex, hay: &[u8], out: &mut Vec<(usize, usize)>) {
    for run in run_regex.find_iter(hay) {
        let groups = digit_groups(hay, run.start(), run.end());
        let mut first = 0;
        while first < groups.len() {
            let mut n_digits = 0;
            let mut card_end = None;
            for (last, group) in groups.iter().enumerate().skip(first) {
                n_digits += group.end - group.start;
                if n_digits > 19 {
                    break;
                }
                let start = groups.get(first).map_or(group.start, |g| g.start);
                if n_digits >= 13 && luhn(hay.get(start..group.end).unwrap_or_default()) {
                    card_end = Some((last, start, group.end));
                }
            }
            match card_end {
                Some((last, start, end)) => {
                    out.push((start, end));
                    first = last + 1;
                }
                None => first += 1,
            }
        }
    }
}

/// The spans of the digit groups in `hay[start..end]`.
fn digit_groups(hay: &[u8], start: usize, end: usize) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut group_start = None;
    for (i, b) in hay.iter().enumerate().take(end).skip(start) {
        match (b.is_ascii_digit(), group_start) {
            (true, None) => group_start = Some(i),
            (false, Some(s)) => {
                groups.push(s..i);
                group_start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = group_start {
        groups.push(s..end);
    }
    groups
}

/// IBANs: a candidate that fails mod-97 may have swallowed the next word
/// (`DE89 3704 0044 0532 0130 00 FROM`), so shorter prefixes ending at a
/// space are tried too.
pub(super) fn find_ibans(regex: &Regex, hay: &[u8], out: &mut Vec<(usize, usize)>) {
    let mut at = 0;
    while at <= hay.len() {
        let Some(candidate) = regex.find_at(hay, at) else {
            break;
        };
        let start = candidate.start();
        let text = candidate.as_bytes();
        let ends = std::iter::once(text.len()).chain(
            text.iter()
                .enumerate()
                .rev()
                .filter(|(_, &b)| b == b' ')
                .map(|(i, _)| i),
        );
        match ends
            .into_iter()
            .find(|&end| is_iban(text.get(..end).unwrap_or_default()))
        {
            Some(end) => {
                out.push((start, start + end));
                at = start + end;
            }
            None => at = start + 1,
        }
    }
}

fn is_iban(text: &[u8]) -> bool {
    let compact: Vec<u8> = text
        .iter()
        .filter(|&&b| b != b' ')
        .map(u8::to_ascii_uppercase)
        .collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    // Move the country code and check digits to the end, read letters as
    // 10..=35, and take the whole number mod 97, a digit at a time.
    let rearranged = compact.iter().skip(4).chain(compact.iter().take(4));
    let mut remainder: u32 = 0;
    for &b in rearranged {
        let value = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        let scale = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * scale + value) % 97;
    }
    remainder == 1
}

fn luhn(text: &[u8]) -> bool {
    let mut sum = 0;
    for (i, digit) in text
        .iter()
        .rev()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
        .enumerate()
    {
        sum += if i % 2 == 1 {
            let doubled = digit * 2;
            if doubled > 9 {
                doubled - 9
            } else {
                doubled
            }
        } else {
            digit
        };
    }
    sum % 10 == 0
}

fn is_us_ssn(text: &[u8]) -> bool {
    let mut parts = text.split(|&b| b == b'-').map(parse_decimal);
    let (Some(area), Some(group), Some(serial)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// A date such as `2024-01-15`, `15.01.2024` or `01/15/2024` at the start of
/// a phone candidate: three groups of digits with the same separator, shaped
/// like a date.
fn starts_with_date(text: &[u8]) -> bool {
    let mut groups = text.split(|b| !b.is_ascii_digit());
    let separators: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_digit())
        .take(2)
        .collect();
    let (Some(a), Some(b), Some(c)) = (groups.next(), groups.next(), groups.next()) else {
        return false;
    };
    let same_separator = matches!(separators.as_slice(), [x, y] if x == y);
    let day_or_month = |g: &[u8]| (1..=2).contains(&g.len());
    same_separator
        && ((a.len() == 4 && day_or_month(b) && day_or_month(c))
            || (day_or_month(a) && day_or_month(b) && c.len() == 4))
}

fn count_digits(text: &[u8]) -> usize {
    text.iter().filter(|b| b.is_ascii_digit()).count()
}

/// The value of a short run of ASCII digits (callers pass at most 4).
fn parse_decimal(digits: &[u8]) -> u32 {
    digits.iter().fold(0u32, |n, &b| {
        n.saturating_mul(10)
            .saturating_add(u32::from(b.wrapping_sub(b'0')))
    })
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn luhn_and_mod97() {
        assert!(luhn(b"4242424242424242"));
        assert!(luhn(b"4242 4242 4242 4242"));
        assert!(!luhn(b"4242424242424241"));
        assert!(is_iban(b"DE89370400440532013000"));
        assert!(is_iban(b"GB82 WEST 1234 5698 7654 32"));
        assert!(is_iban(b"gb82west12345698765432"));
        assert!(!is_iban(b"DE89370400440532013001"));
        assert!(!is_iban(b"DE8937"));
    }

    #[test]
    fn dates() {
        assert!(starts_with_date(b"2024-01-15"));
        assert!(starts_with_date(b"15.01.2024 10"));
        assert!(starts_with_date(b"01/15/2024"));
        assert!(!starts_with_date(b"030 1234 5678"));
        assert!(!starts_with_date(b"555-123-4567"));
    }
}
