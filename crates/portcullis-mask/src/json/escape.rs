//! JSON string escapes: decoding a string's content to scan it, and writing
//! masked text back as a JSON string.

/// Decodes the escapes of a string's content (already checked). A lone
/// surrogate becomes U+FFFD.
pub(super) fn decode_escapes(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    let mut i = 0;
    let hex4 = |at: usize| {
        content
            .get(at..at + 4)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u32::from_str_radix(digits, 16).ok())
    };
    while let Some(&b) = content.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let escaped = content.get(i + 1).copied().unwrap_or_default();
        i += 2;
        let c = match escaped {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = hex4(i).unwrap_or(0xFFFD);
                i += 4;
                let is_high = (0xD800..0xDC00).contains(&unit);
                let low = if is_high && content.get(i..i + 2) == Some(b"\\u") {
                    hex4(i + 2)
                } else {
                    None
                };
                match low {
                    Some(low) if (0xDC00..0xE000).contains(&low) => {
                        i += 6;
                        char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                    }
                    _ => char::from_u32(unit),
                }
                .unwrap_or('\u{FFFD}')
            }
            other => char::from(other),
        };
        let mut buf = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    out
}

/// `text` as a JSON string. Bytes that are not valid UTF-8 are copied as
/// they are, as they were in the input.
pub(super) fn json_string(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(b'"');
    for &b in text {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x00..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
    out
}
