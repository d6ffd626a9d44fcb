//! Masking inside JSON text (`json` and `jsonb` values in text form).
//!
//! A hand-written walker rather than `serde_json`: it rewrites only the
//! tokens that change and copies everything else byte for byte, so key order,
//! spacing and number spelling are kept, and a value in which nothing is
//! found costs no allocation but the decoding of escaped strings. Strings
//! are scanned decoded, so that an escape (`\u0040` for `@`) cannot hide
//! what a detector looks for. Keys and numbers are scanned too; a number in
//! which something is found becomes a string, since masked text is not a
//! number.

use std::borrow::Cow;

use crate::strategy::Masked;

mod escape;
#[cfg(test)]
mod tests;

use escape::{decode_escapes, json_string};

/// How deep the walker follows nested objects and arrays. Deeper values are
/// refused rather than passed through unscanned.
pub(crate) const MAX_DEPTH: usize = 512;

/// What the walker asks of the masker.
pub(crate) trait ValueMasker {
    /// Spans of the whole document outside which `scan` cannot find
    /// anything in an unescaped token (see `Detectors::candidate_spans`);
    /// `None`: scan every token.
    fn candidate_spans(&self, document: &[u8]) -> Option<Vec<(usize, usize)>>;
    /// Masks what the detectors find in `text`; `None` when nothing is found.
    fn scan(&mut self, text: &[u8]) -> Option<Vec<u8>>;
    /// The json_keys rule (an opaque index) that covers the value under `key`.
    fn key_rule(&self, key: &str) -> Option<usize>;
    /// Masks a whole value under a key covered by `rule`.
    fn mask_under_key(&mut self, rule: usize, value: &[u8]) -> Masked;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JsonError {
    Invalid { offset: usize, reason: &'static str },
    TooDeep,
}

/// Masks `src`; `Ok(None)` when nothing changed.
pub(crate) fn mask_json(
    src: &[u8],
    masker: &mut impl ValueMasker,
) -> Result<Option<Vec<u8>>, JsonError> {
    let candidates = masker.candidate_spans(src);
    let mut walker = Walker {
        src,
        pos: 0,
        out: None,
        copied: 0,
        candidates,
        next_candidate: 0,
        masker,
    };
    walker.skip_whitespace();
    walker.value(0, true)?;
    walker.skip_whitespace();
    if walker.pos != src.len() {
        return Err(walker.invalid("unexpected text after the value"));
    }
    Ok(walker.finish())
}

/// A string token: `start` is its opening quote, `end` is just past its
/// closing quote.
#[derive(Clone, Copy)]
struct StringToken {
    start: usize,
    end: usize,
    has_escapes: bool,
}

struct Walker<'a, M> {
    src: &'a [u8],
    pos: usize,
    /// The rewritten text, made at the first change.
    out: Option<Vec<u8>>,
    /// `src[..copied]` is accounted for in `out`.
    copied: usize,
    /// Where findings may be; tokens elsewhere are not scanned.
    candidates: Option<Vec<(usize, usize)>>,
    /// The first of `candidates` that may overlap the current token (tokens
    /// come in order).
    next_candidate: usize,
    masker: &'a mut M,
}

impl<M: ValueMasker> Walker<'_, M> {
    /// Walks one value. `scan: false` only checks it (it is masked whole).
    fn value(&mut self, depth: usize, scan: bool) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1, scan),
            Some(b'[') => self.array(depth + 1, scan),
            Some(b'"') => {
                let token = self.string()?;
                if scan {
                    self.scan_string(token);
                }
                Ok(())
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.number()?;
                if scan && self.may_find(start, self.pos, false) {
                    let end = self.pos;
                    let masked = self
                        .src
                        .get(start..end)
                        .and_then(|number| self.masker.scan(number));
                    if let Some(masked) = masked {
                        self.replace(start, end, &json_string(&masked));
                    }
                }
                Ok(())
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => Err(self.invalid("expected a value")),
        }
    }

    fn object(&mut self, depth: usize, scan: bool) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        self.pos += 1;
        self.skip_whitespace();
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.invalid("expected a key"));
            }
            let key = self.string()?;
            let rule = if scan {
                let rule = self
                    .masker
                    .key_rule(&String::from_utf8_lossy(&decoded(self.src, key)));
                self.scan_string(key);
                rule
            } else {
                None
            };
            self.skip_whitespace();
            if !self.eat(b':') {
                return Err(self.invalid("expected `:`"));
            }
            self.skip_whitespace();
            match rule {
                Some(rule) => self.mask_whole(rule, depth)?,
                None => self.value(depth, scan)?,
            }
            self.skip_whitespace();
            if self.eat(b'}') {
                return Ok(());
            }
            if !self.eat(b',') {
                return Err(self.invalid("expected `,` or `}`"));
            }
            self.skip_whitespace();
        }
    }

    fn array(&mut self, depth: usize, scan: bool) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        self.pos += 1;
        self.skip_whitespace();
        if self.eat(b']') {
            return Ok(());
        }
        loop {
            self.value(depth, scan)?;
            self.skip_whitespace();
            if self.eat(b']') {
                return Ok(());
            }
            if !self.eat(b',') {
                return Err(self.invalid("expected `,` or `]`"));
            }
            self.skip_whitespace();
        }
    }

    /// The value under a covered key, masked whole: a string by its decoded
    /// text, anything else by its JSON text. A JSON `null` hides nothing
    /// and stays.
    fn mask_whole(&mut self, rule: usize, depth: usize) -> Result<(), JsonError> {
        let start = self.pos;
        let is_string = self.peek() == Some(b'"');
        let token = if is_string {
            Some(self.string()?)
        } else {
            None
        };
        if token.is_none() {
            self.value(depth, false)?;
        }
        let end = self.pos;
        let src = self.src;
        let raw = src.get(start..end).unwrap_or_default();
        if raw == b"null" {
            return Ok(());
        }
        let text = match token {
            Some(token) => decoded(src, token),
            None => Cow::Borrowed(raw),
        };
        let replacement = match self.masker.mask_under_key(rule, &text) {
            Masked::Value(masked) => json_string(&masked),
            Masked::Null => b"null".to_vec(),
        };
        self.replace(start, end, &replacement);
        Ok(())
    }

    fn scan_string(&mut self, token: StringToken) {
        if !self.may_find(token.start, token.end, token.has_escapes) {
            return;
        }
        let text = decoded(self.src, token);
        if let Some(masked) = self.masker.scan(&text) {
            self.replace(token.start, token.end, &json_string(&masked));
        }
    }

    /// Whether a detector may find something in the token `src[start..end]`.
    /// A token with escapes is always scanned: decoding may make what the
    /// candidate spans of the raw text could not see.
    fn may_find(&mut self, start: usize, end: usize, has_escapes: bool) -> bool {
        let Some(candidates) = &self.candidates else {
            return true;
        };
        if has_escapes {
            return true;
        }
        while candidates
            .get(self.next_candidate)
            .is_some_and(|&(_, candidate_end)| candidate_end <= start)
        {
            self.next_candidate += 1;
        }
        candidates
            .get(self.next_candidate)
            .is_some_and(|&(candidate_start, _)| candidate_start < end)
    }

    /// Reads a string token, checking its escapes.
    fn string(&mut self) -> Result<StringToken, JsonError> {
        let start = self.pos;
        self.pos += 1;
        let mut has_escapes = false;
        loop {
            // Skip plain characters in one go; only quotes, backslashes and
            // control characters need a look.
            let rest = self.src.get(self.pos..).unwrap_or_default();
            self.pos += rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(rest.len());
            match self.next() {
                Some(b'"') => {
                    return Ok(StringToken {
                        start,
                        end: self.pos,
                        has_escapes,
                    })
                }
                Some(b'\\') => {
                    has_escapes = true;
                    match self.next() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                        Some(b'u') => {
                            for _ in 0..4 {
                                if !self.next().is_some_and(|b| b.is_ascii_hexdigit()) {
                                    return Err(self.invalid("bad `\\u` escape"));
                                }
                            }
                        }
                        _ => return Err(self.invalid("bad escape")),
                    }
                }
                Some(0x00..=0x1f) => return Err(self.invalid("control character in a string")),
                Some(_) => {}
                None => return Err(self.invalid("unterminated string")),
            }
        }
    }

    fn number(&mut self) -> Result<(), JsonError> {
        self.eat(b'-');
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.invalid("bad number")),
        }
        if self.eat(b'.') {
            self.required_digits()?;
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            self.required_digits()?;
        }
        Ok(())
    }

    fn required_digits(&mut self) -> Result<(), JsonError> {
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(self.invalid("bad number"));
        }
        self.digits();
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), JsonError> {
        if self.src.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.invalid("expected a value"))
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn eat(&mut self, b: u8) -> bool {
        let matched = self.peek() == Some(b);
        if matched {
            self.pos += 1;
        }
        matched
    }

    fn invalid(&self, reason: &'static str) -> JsonError {
        JsonError::Invalid {
            offset: self.pos,
            reason,
        }
    }

    /// Puts `with` in place of `src[start..end]`. Replacements come in
    /// order, never overlapping.
    fn replace(&mut self, start: usize, end: usize, with: &[u8]) {
        let src = self.src;
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity(src.len() + 16));
        out.extend_from_slice(src.get(self.copied..start).unwrap_or_default());
        out.extend_from_slice(with);
        self.copied = end;
    }

    fn finish(self) -> Option<Vec<u8>> {
        let mut out = self.out?;
        out.extend_from_slice(self.src.get(self.copied..).unwrap_or_default());
        Some(out)
    }
}

/// The text of a string token, escapes decoded.
fn decoded(src: &[u8], token: StringToken) -> Cow<'_, [u8]> {
    let content = src.get(token.start + 1..token.end - 1).unwrap_or_default();
    if token.has_escapes {
        Cow::Owned(decode_escapes(content))
    } else {
        Cow::Borrowed(content)
    }
}
