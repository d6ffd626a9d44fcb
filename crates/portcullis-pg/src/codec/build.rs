//! Encoding the messages the gateway writes itself.

use bytes::{BufMut, BytesMut};

fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let len_at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - len_at) as i32;
    if let Some(slot) = out.get_mut(len_at..len_at + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

fn cstr(out: &mut BytesMut, s: &str) {
    // A nul inside would end the string early; the gateway never writes one.
    out.put_slice(s.replace('\0', "").as_bytes());
    out.put_u8(0);
}

pub fn authentication_ok(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_i32(0));
}

pub fn authentication_cleartext_password(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_i32(3));
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    message(out, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    message(out, b'Z', |b| b.put_u8(status));
}

/// An ErrorResponse (`severity` ERROR or FATAL) or, with `tag` `N`, a notice.
pub fn error_response(
    out: &mut BytesMut,
    severity: &str,
    code: &str,
    message_text: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    notice_or_error(out, b'E', severity, code, message_text, detail, hint);
}

pub fn notice_or_error(
    out: &mut BytesMut,
    tag: u8,
    severity: &str,
    code: &str,
    message_text: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    message(out, tag, |b| {
        for (field, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', message_text),
        ] {
            b.put_u8(field);
            cstr(b, value);
        }
        if let Some(detail) = detail {
            b.put_u8(b'D');
            cstr(b, detail);
        }
        if let Some(hint) = hint {
            b.put_u8(b'H');
            cstr(b, hint);
        }
        b.put_u8(0);
    });
}

pub fn negotiate_protocol_version(out: &mut BytesMut, newest_minor: i32, unrecognized: &[String]) {
    message(out, b'v', |b| {
        b.put_i32(newest_minor);
        b.put_i32(unrecognized.len() as i32);
        for option in unrecognized {
            cstr(b, option);
        }
    });
}

pub fn startup(out: &mut BytesMut, params: &[(&str, &str)]) {
    let len_at = out.len();
    out.put_i32(0);
    out.put_i32(super::startup::PROTOCOL_3_0);
    for (name, value) in params {
        cstr(out, name);
        cstr(out, value);
    }
    out.put_u8(0);
    let len = (out.len() - len_at) as i32;
    if let Some(slot) = out.get_mut(len_at..len_at + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

pub fn ssl_request(out: &mut BytesMut) {
    out.put_i32(8);
    out.put_i32(super::startup::SSL_REQUEST);
}

pub fn cancel_request(out: &mut BytesMut, pid: i32, secret: i32) {
    out.put_i32(16);
    out.put_i32(super::startup::CANCEL_REQUEST);
    out.put_i32(pid);
    out.put_i32(secret);
}

pub fn password(out: &mut BytesMut, password: &str) {
    message(out, b'p', |b| cstr(b, password));
}

pub fn sasl_initial_response(out: &mut BytesMut, mechanism: &str, data: &[u8]) {
    message(out, b'p', |b| {
        cstr(b, mechanism);
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

pub fn sasl_response(out: &mut BytesMut, data: &[u8]) {
    message(out, b'p', |b| b.put_slice(data));
}

pub fn query(out: &mut BytesMut, sql: &str) {
    message(out, b'Q', |b| cstr(b, sql));
}

pub fn parse(out: &mut BytesMut, statement: &str, sql: &str) {
    message(out, b'P', |b| {
        cstr(b, statement);
        cstr(b, sql);
        b.put_i16(0);
    });
}

/// Asks the target to send what it has answered so far.
pub fn flush(out: &mut BytesMut) {
    message(out, b'H', |_| {});
}

/// Ends a COPY FROM STDIN in failure: the target rolls the copy back and
/// reports `reason`.
pub fn copy_fail(out: &mut BytesMut, reason: &str) {
    message(out, b'f', |b| cstr(b, reason));
}

pub fn terminate(out: &mut BytesMut) {
    message(out, b'X', |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::frame::split_frame;
    use crate::codec::message;

    #[test]
    fn error_round_trips() {
        let mut out = BytesMut::new();
        error_response(&mut out, "ERROR", "42501", "denied", Some("d"), None);
        let frame = split_frame(&mut out).unwrap().unwrap();
        assert_eq!(frame.tag, b'E');
        let fields = message::error_fields(frame.body()).unwrap();
        assert!(fields.contains(&(b'C', "42501")));
        assert!(fields.contains(&(b'M', "denied")));
        assert!(fields.contains(&(b'D', "d")));
    }

    #[test]
    fn query_round_trips() {
        let mut out = BytesMut::new();
        query(&mut out, "select 1");
        let frame = split_frame(&mut out).unwrap().unwrap();
        assert_eq!(message::query(frame.body()), Some("select 1"));
    }
}
