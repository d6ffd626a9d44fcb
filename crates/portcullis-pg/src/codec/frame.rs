//! Splitting a stream of tagged messages (`tag: u8, length: i32, body`).

use bytes::{Buf, Bytes, BytesMut};

/// Largest message accepted from either side. PostgreSQL itself refuses
/// most messages above 1 GB; a query text or a row beyond this is refused.
pub const MAX_MESSAGE_LEN: usize = 256 * 1024 * 1024;

/// One complete message: its tag and its whole raw bytes (tag and length included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub raw: Bytes,
}

impl Frame {
    /// The message body, after the tag and the length.
    pub fn body(&self) -> &[u8] {
        self.raw.get(5..).unwrap_or(&[])
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("message `{}` has an invalid length {len}", char::from(*tag))]
    BadLength { tag: u8, len: i64 },
}

/// Takes one complete message off the front of `buf`. `Ok(None)` means more
/// bytes are needed.
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Some(header) = buf.get(..5) else {
        return Ok(None);
    };
    let tag = header[0];
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len < 4 || len as usize > MAX_MESSAGE_LEN {
        return Err(FrameError::BadLength {
            tag,
            len: i64::from(len),
        });
    }
    let total = 1 + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let raw = buf.split_to(total).freeze();
    Ok(Some(Frame { tag, raw }))
}

/// Reads a nul-terminated string at the front of `body`, advancing it.
pub fn take_cstr<'a>(body: &mut &'a [u8]) -> Option<&'a str> {
    let end = memchr::memchr(0, body)?;
    let (s, rest) = body.split_at(end);
    *body = rest.get(1..)?;
    std::str::from_utf8(s).ok()
}

pub fn take_i16(body: &mut &[u8]) -> Option<i16> {
    if body.len() < 2 {
        return None;
    }
    Some(body.get_i16())
}

pub fn take_i32(body: &mut &[u8]) -> Option<i32> {
    if body.len() < 4 {
        return None;
    }
    Some(body.get_i32())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_then_complete() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x0dselect 1"[..]);
        assert_eq!(split_frame(&mut buf), Ok(None));
        buf.extend_from_slice(b"\0S\0\0\0\x04");
        let q = split_frame(&mut buf).unwrap().unwrap();
        assert_eq!(q.tag, b'Q');
        assert_eq!(q.body(), b"select 1\0");
        let s = split_frame(&mut buf).unwrap().unwrap();
        assert_eq!(s.tag, b'S');
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x02"[..]);
        assert!(split_frame(&mut buf).is_err());
        let mut buf = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        assert!(split_frame(&mut buf).is_err());
        let mut buf = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
        assert!(split_frame(&mut buf).is_err());
    }

    #[test]
    fn cstr_parsing() {
        let mut body: &[u8] = b"abc\0def\0";
        assert_eq!(take_cstr(&mut body), Some("abc"));
        assert_eq!(take_cstr(&mut body), Some("def"));
        assert_eq!(take_cstr(&mut body), None);
        let mut unterminated: &[u8] = b"abc";
        assert_eq!(take_cstr(&mut unterminated), None);
    }
}
