//! The messages a result is made of, decoded and re-encoded for masking:
//! RowDescription (`T`), DataRow (`D`), CopyOutResponse (`H`), and the fields
//! of ErrorResponse / NoticeResponse (`E` / `N`) written back.

use super::frame::{take_cstr, take_i16, take_i32};
use bytes::{BufMut, BytesMut};

/// One field of a RowDescription.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldDescription {
    pub name: String,
    /// The OID of the table the column comes from; 0 for a computed column.
    pub table_oid: u32,
    /// The column's attribute number in that table; 0 for a computed column.
    pub column_attnum: i16,
    pub type_oid: u32,
    /// 0 for text, 1 for binary.
    pub format: i16,
}

/// Target `T`: the fields of a result.
pub fn row_description(body: &[u8]) -> Option<Vec<FieldDescription>> {
    let mut rest = body;
    let count = usize::try_from(take_i16(&mut rest)?).ok()?;
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        let name = take_cstr(&mut rest)?.to_string();
        let table_oid = take_i32(&mut rest)? as u32;
        let column_attnum = take_i16(&mut rest)?;
        let type_oid = take_i32(&mut rest)? as u32;
        let _type_len = take_i16(&mut rest)?;
        let _type_modifier = take_i32(&mut rest)?;
        let format = take_i16(&mut rest)?;
        fields.push(FieldDescription {
            name,
            table_oid,
            column_attnum,
            type_oid,
            format,
        });
    }
    Some(fields)
}

/// Target `D`: the values of one row, `None` for SQL NULL. Borrowed from the
/// message body.
pub fn data_row(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let mut rest = body;
    let count = usize::try_from(take_i16(&mut rest)?).ok()?;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let len = take_i32(&mut rest)?;
        if len < 0 {
            values.push(None);
            continue;
        }
        let len = usize::try_from(len).ok()?;
        let value = rest.get(..len)?;
        rest = rest.get(len..)?;
        values.push(Some(value));
    }
    Some(values)
}

/// Writes a DataRow.
pub fn write_data_row(out: &mut BytesMut, values: &[Option<&[u8]>]) {
    let body_len: usize = 2 + values
        .iter()
        .map(|v| 4 + v.map_or(0, <[u8]>::len))
        .sum::<usize>();
    out.reserve(1 + 4 + body_len);
    out.put_u8(b'D');
    out.put_i32((4 + body_len) as i32);
    out.put_i16(values.len() as i16);
    for value in values {
        match value {
            None => out.put_i32(-1),
            Some(bytes) => {
                out.put_i32(bytes.len() as i32);
                out.put_slice(bytes);
            }
        }
    }
}

/// Target `H`: the overall format (0 text, 1 binary) of a `COPY ... TO STDOUT`.
pub fn copy_out_response(body: &[u8]) -> Option<i8> {
    body.first().map(|b| *b as i8)
}

/// Writes an ErrorResponse or NoticeResponse from its fields, in order.
pub fn write_fields(out: &mut BytesMut, tag: u8, fields: &[(u8, &str)]) {
    let body_len: usize = fields.iter().map(|(_, v)| 2 + v.len()).sum::<usize>() + 1;
    out.put_u8(tag);
    out.put_i32((4 + body_len) as i32);
    for (code, value) in fields {
        out.put_u8(*code);
        // A nul inside would end the field early; values come from a nul-
        // terminated field or from masking, which writes none.
        out.put_slice(value.as_bytes());
        out.put_u8(0);
    }
    out.put_u8(0);
}

/// Client `D`: a Describe of a portal, as the gateway adds before an Execute.
pub fn write_describe_portal(out: &mut BytesMut, portal: &str) {
    out.put_u8(b'D');
    out.put_i32((4 + 1 + portal.len() + 1) as i32);
    out.put_u8(b'P');
    out.put_slice(portal.as_bytes());
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn data_rows_round_trip() {
        let values: Vec<Option<&[u8]>> = vec![Some(b"jane@example.com"), None, Some(b"")];
        let mut out = BytesMut::new();
        write_data_row(&mut out, &values);
        assert_eq!(out[0], b'D');
        let len = i32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len + 1, out.len());
        assert_eq!(data_row(&out[5..]).unwrap(), values);
    }

    #[test]
    fn truncated_rows_are_refused() {
        let mut out = BytesMut::new();
        write_data_row(&mut out, &[Some(b"abcdef")]);
        assert!(data_row(&out[5..out.len() - 1]).is_none());
    }

    #[test]
    fn fields_round_trip() {
        let mut out = BytesMut::new();
        write_fields(&mut out, b'E', &[(b'S', "ERROR"), (b'M', "boom")]);
        let parsed = super::super::message::error_fields(&out[5..]).unwrap();
        assert_eq!(parsed, vec![(b'S', "ERROR"), (b'M', "boom")]);
    }
}
