//! Masking the rows of a `COPY ... TO STDOUT`: PostgreSQL sends one CopyData
//! message per row, in the text or CSV format the statement asked for. Each
//! row is split into fields, masked with the plan of its column, and written
//! back in the same format. Binary COPY of covered data is refused.

use crate::masking::{mask_value, ColumnPlan, MaskFailure};
use portcullis_core::CopyFormat;
use portcullis_mask::{MaskCounts, Masker};

/// How one COPY's rows are read and written.
pub struct CopyPlan {
    pub format: CopyFormat,
    pub delimiter: u8,
    /// A header line still to be passed over.
    pub header_pending: bool,
    pub columns: Vec<ColumnPlan>,
    /// The rows are in a form the gateway does not split (CSV with another
    /// QUOTE or ESCAPE, another encoding) and hold no covered column: each
    /// row is scanned whole by the content rules of `columns[0]`.
    pub whole_rows: bool,
}

impl CopyPlan {
    pub fn is_noop(&self) -> bool {
        self.columns
            .iter()
            .all(|c| c.whole.is_none() && c.content.is_none())
    }

    /// Masks one row (the payload of a CopyData); `Ok(None)` when unchanged.
    pub fn mask_line(
        &mut self,
        masker: &Masker,
        line: &[u8],
        counts: &mut MaskCounts,
    ) -> Result<Option<Vec<u8>>, MaskFailure> {
        if self.header_pending {
            self.header_pending = false;
            return Ok(None);
        }
        if self.is_noop() {
            return Ok(None);
        }
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if self.whole_rows {
            let Some(plan) = self.columns.first() else {
                return Ok(None);
            };
            return Ok(match mask_value(masker, plan, body, counts, &mut false)? {
                None => None,
                Some(masked) => {
                    let mut out = masked.map(|v| v.into_owned()).unwrap_or_default();
                    out.push(b'\n');
                    Some(out)
                }
            });
        }
        let fields =
            match self.format {
                CopyFormat::Text => split_text(body, self.delimiter),
                CopyFormat::Csv => split_csv(body, self.delimiter)?,
                CopyFormat::Binary => return Err(MaskFailure(
                    "binary COPY of masked columns is not supported; use the text or CSV format"
                        .into(),
                )),
            };
        // A row wider than the plan (a column the catalog did not know) gets
        // the last plan's treatment, which for an unknown relation covers all.
        let mut changed = false;
        let mut out_fields: Vec<Option<Vec<u8>>> = Vec::with_capacity(fields.len());
        for (idx, field) in fields.into_iter().enumerate() {
            let Some(plan) = self.columns.get(idx).or(self.columns.last()) else {
                out_fields.push(field);
                continue;
            };
            let field = match field {
                None if plan.masks_null() => Some(Vec::new()),
                field => field,
            };
            match field {
                None => out_fields.push(None),
                Some(value) => match mask_value(masker, plan, &value, counts, &mut false)? {
                    None => out_fields.push(Some(value)),
                    Some(new) => {
                        changed = true;
                        out_fields.push(new.map(|v| v.into_owned()));
                    }
                },
            }
        }
        if !changed {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(line.len() + 16);
        for (idx, field) in out_fields.iter().enumerate() {
            if idx > 0 {
                out.push(self.delimiter);
            }
            match self.format {
                CopyFormat::Csv => write_csv(&mut out, field.as_deref(), self.delimiter),
                _ => write_text(&mut out, field.as_deref(), self.delimiter),
            }
        }
        out.push(b'\n');
        Ok(Some(out))
    }
}

/// Splits a text-format row into its unescaped fields (`\N` is NULL).
fn split_text(line: &[u8], delimiter: u8) -> Vec<Option<Vec<u8>>> {
    let mut fields = Vec::new();
    let mut field = Vec::new();
    let mut raw_null = true;
    let mut iter = line.iter().copied().peekable();
    let mut is_null_marker = false;
    while let Some(byte) = iter.next() {
        if byte == delimiter {
            fields.push((!is_null_marker).then(|| std::mem::take(&mut field)));
            field.clear();
            is_null_marker = false;
            raw_null = true;
            continue;
        }
        if byte != b'\\' {
            field.push(byte);
            raw_null = false;
            continue;
        }
        let Some(next) = iter.next() else {
            field.push(b'\\');
            break;
        };
        if next == b'N' && raw_null && iter.peek().is_none_or(|b| *b == delimiter) {
            is_null_marker = true;
            continue;
        }
        raw_null = false;
        match next {
            b'b' => field.push(8),
            b'f' => field.push(12),
            b'n' => field.push(b'\n'),
            b'r' => field.push(b'\r'),
            b't' => field.push(b'\t'),
            b'v' => field.push(11),
            b'0'..=b'7' => {
                let mut value = u32::from(next - b'0');
                for _ in 0..2 {
                    match iter.peek() {
                        Some(d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            iter.next();
                        }
                        _ => break,
                    }
                }
                field.push((value & 0xff) as u8);
            }
            b'x' => {
                let mut value = 0u32;
                let mut digits = 0;
                while digits < 2 {
                    match iter.peek().and_then(|d| char::from(*d).to_digit(16)) {
                        Some(d) => {
                            value = value * 16 + d;
                            iter.next();
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    field.push(b'x');
                } else {
                    field.push((value & 0xff) as u8);
                }
            }
            other => field.push(other),
        }
    }
    fields.push((!is_null_marker).then_some(field));
    fields
}

fn write_text(out: &mut Vec<u8>, field: Option<&[u8]>, delimiter: u8) {
    let Some(field) = field else {
        out.extend_from_slice(b"\\N");
        return;
    };
    for &byte in field {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' if delimiter == b'\t' => out.extend_from_slice(b"\\t"),
            b if b == delimiter => {
                out.push(b'\\');
                out.push(b);
            }
            b => out.push(b),
        }
    }
}

/// Splits a CSV row (an unquoted empty field is NULL).
fn split_csv(line: &[u8], delimiter: u8) -> Result<Vec<Option<Vec<u8>>>, MaskFailure> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        if let Some(after_quote) = rest.strip_prefix(b"\"") {
            let mut field = Vec::new();
            let mut tail = after_quote;
            loop {
                match tail.iter().position(|b| *b == b'"') {
                    None => {
                        return Err(MaskFailure(
                            "an unterminated quoted CSV field in COPY output".into(),
                        ))
                    }
                    Some(at) => {
                        field.extend_from_slice(tail.get(..at).unwrap_or(&[]));
                        tail = tail.get(at + 1..).unwrap_or(&[]);
                        if let Some(after) = tail.strip_prefix(b"\"") {
                            field.push(b'"');
                            tail = after;
                        } else {
                            break;
                        }
                    }
                }
            }
            fields.push(Some(field));
            match tail.split_first() {
                None => return Ok(fields),
                Some((d, after)) if *d == delimiter => rest = after,
                Some(_) => {
                    return Err(MaskFailure(
                        "text after a quoted CSV field in COPY output".into(),
                    ))
                }
            }
        } else {
            let end = rest.iter().position(|b| *b == delimiter);
            let value = rest.get(..end.unwrap_or(rest.len())).unwrap_or(&[]);
            fields.push((!value.is_empty()).then(|| value.to_vec()));
            match end {
                None => return Ok(fields),
                Some(at) => rest = rest.get(at + 1..).unwrap_or(&[]),
            }
        }
    }
}

fn write_csv(out: &mut Vec<u8>, field: Option<&[u8]>, delimiter: u8) {
    let Some(field) = field else {
        return;
    };
    let quote = field.is_empty()
        || field
            .iter()
            .any(|b| matches!(*b, b'"' | b'\n' | b'\r') || *b == delimiter);
    if !quote {
        out.extend_from_slice(field);
        return;
    }
    out.push(b'"');
    for &byte in field {
        if byte == b'"' {
            out.push(b'"');
        }
        out.push(byte);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn text_rows_split_and_round_trip() {
        let line = b"1\tjane@example.com\t\\N\ta\\tb\\\\c\\n";
        let fields = split_text(line, b'\t');
        assert_eq!(
            fields,
            vec![
                Some(b"1".to_vec()),
                Some(b"jane@example.com".to_vec()),
                None,
                Some(b"a\tb\\c\n".to_vec()),
            ]
        );
        let mut out = Vec::new();
        for (idx, field) in fields.iter().enumerate() {
            if idx > 0 {
                out.push(b'\t');
            }
            write_text(&mut out, field.as_deref(), b'\t');
        }
        assert_eq!(out, line.to_vec());
    }

    #[test]
    fn csv_rows_split_and_round_trip() {
        let line = b"1,\"Doe, Jane\",,\"\",\"say \"\"hi\"\"\"";
        let fields = split_csv(line, b',').unwrap();
        assert_eq!(
            fields,
            vec![
                Some(b"1".to_vec()),
                Some(b"Doe, Jane".to_vec()),
                None,
                Some(Vec::new()),
                Some(b"say \"hi\"".to_vec()),
            ]
        );
        let mut out = Vec::new();
        for (idx, field) in fields.iter().enumerate() {
            if idx > 0 {
                out.push(b',');
            }
            write_csv(&mut out, field.as_deref(), b',');
        }
        assert_eq!(out, line.to_vec());
    }

    #[test]
    fn broken_csv_is_refused() {
        assert!(split_csv(b"\"open", b',').is_err());
    }
}
