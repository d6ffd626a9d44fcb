//! Decoding the few messages the gateway inspects. Each function takes a
//! message body (after tag and length) and gives `None` when it is malformed.

use super::frame::{take_cstr, take_i16, take_i32};

/// Client `Q`: the query string.
pub fn query(body: &[u8]) -> Option<&str> {
    let mut rest = body;
    take_cstr(&mut rest)
}

/// Client `P`.
pub struct Parse<'a> {
    pub statement: &'a str,
    pub query: &'a str,
    /// The parameters' type OIDs the client gives (0: the target infers it).
    pub parameter_types: Vec<u32>,
}

pub fn parse(body: &[u8]) -> Option<Parse<'_>> {
    let mut rest = body;
    let statement = take_cstr(&mut rest)?;
    let query = take_cstr(&mut rest)?;
    let count = usize::try_from(take_i16(&mut rest)?).ok()?;
    let parameter_types = (0..count)
        .map(|_| take_i32(&mut rest).map(|oid| oid as u32))
        .collect::<Option<Vec<u32>>>()?;
    Some(Parse {
        statement,
        query,
        parameter_types,
    })
}

/// Client `B`: the portal and the statement it binds.
pub struct Bind<'a> {
    pub portal: &'a str,
    pub statement: &'a str,
}

pub fn bind(body: &[u8]) -> Option<Bind<'_>> {
    let mut rest = body;
    let portal = take_cstr(&mut rest)?;
    let statement = take_cstr(&mut rest)?;
    Some(Bind { portal, statement })
}

/// The parameters of a Bind, for people to read: text as it came (lossy
/// UTF-8), binary as `\x<hex>`, each cut at `max_len` bytes; at most
/// `max_count` of them. `None` when the message is malformed.
pub fn bind_parameters(
    body: &[u8],
    max_count: usize,
    max_len: usize,
) -> Option<Vec<Option<String>>> {
    let mut rest = body;
    take_cstr(&mut rest)?;
    take_cstr(&mut rest)?;
    let n_formats = usize::try_from(take_i16(&mut rest)?).ok()?;
    let mut formats = Vec::with_capacity(n_formats.min(64));
    for _ in 0..n_formats {
        formats.push(take_i16(&mut rest)?);
    }
    let n_params = usize::try_from(take_i16(&mut rest)?).ok()?;
    let mut params = Vec::new();
    for i in 0..n_params {
        let len = take_i32(&mut rest)?;
        let value = if len < 0 {
            None
        } else {
            let len = usize::try_from(len).ok()?;
            if len > max_len {
                return None;
            }
            let bytes = rest.get(..len)?;
            rest = rest.get(len..)?;
            let shown = bytes;
            let binary = match formats.as_slice() {
                [] => false,
                [one] => *one == 1,
                many => many.get(i).is_some_and(|f| *f == 1),
            };
            let text = if binary {
                let mut hex = String::from("\\x");
                for b in shown {
                    hex.push_str(&format!("{b:02x}"));
                }
                hex
            } else {
                // A text value that starts with a backslash is shown with
                // one more, so that it cannot pass for a binary one
                // (`\x41646d696e` typed as text is `\\x41646d696e`).
                let text = String::from_utf8_lossy(shown);
                if text.starts_with('\\') {
                    format!("\\{text}")
                } else {
                    text.into_owned()
                }
            };
            Some(text)
        };
        if params.len() >= max_count {
            return None;
        }
        params.push(value);
    }
    Some(params)
}

/// Client `E`: the portal to execute.
pub fn execute(body: &[u8]) -> Option<&str> {
    let mut rest = body;
    let portal = take_cstr(&mut rest)?;
    take_i32(&mut rest)?;
    Some(portal)
}

/// Client `C`: what to close (`S` statement or `P` portal) and its name.
pub fn close(body: &[u8]) -> Option<(u8, &str)> {
    let (&kind, mut rest) = body.split_first()?;
    Some((kind, take_cstr(&mut rest)?))
}

/// Client `p`: a password (here, a token).
pub fn password(body: &[u8]) -> Option<&str> {
    let mut rest = body;
    take_cstr(&mut rest)
}

/// Target `R`: the authentication request code and what follows it.
pub fn authentication(body: &[u8]) -> Option<(i32, &[u8])> {
    let mut rest = body;
    let code = take_i32(&mut rest)?;
    Some((code, rest))
}

/// Target `K`: process id and secret key.
pub fn backend_key_data(body: &[u8]) -> Option<(i32, i32)> {
    let mut rest = body;
    Some((take_i32(&mut rest)?, take_i32(&mut rest)?))
}

/// Target `E` / `N`: the fields of an error or notice, `(code, value)`.
pub fn error_fields(body: &[u8]) -> Option<Vec<(u8, &str)>> {
    let mut fields = Vec::new();
    let mut rest = body;
    loop {
        let (&code, after) = rest.split_first()?;
        if code == 0 {
            return Some(fields);
        }
        rest = after;
        fields.push((code, take_cstr(&mut rest)?));
    }
}

/// Skips a parameter-type list; used to check that a Parse is well formed.
pub fn parse_param_count(body: &[u8]) -> Option<i16> {
    let mut rest = body;
    take_cstr(&mut rest)?;
    take_cstr(&mut rest)?;
    take_i16(&mut rest)
}

/// Target `S`: a parameter's name and value.
pub fn parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let mut rest = body;
    Some((take_cstr(&mut rest)?, take_cstr(&mut rest)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// Found in attack: a binary value and a text one spelled like its hex
    /// were shown alike to the reviewer.
    #[test]
    fn a_text_value_cannot_pass_for_a_binary_one() {
        let mut body = b"\0\0".to_vec();
        body.extend_from_slice(&2i16.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&3i16.to_be_bytes());
        for value in [&b"\\x41"[..], b"A", b"plain"] {
            body.extend_from_slice(&(value.len() as i32).to_be_bytes());
            body.extend_from_slice(value);
        }
        let shown = super::bind_parameters(&body, 10, 100).unwrap();
        assert_eq!(
            shown,
            [
                Some("\\\\x41".to_string()),
                Some("\\x41".to_string()),
                Some("plain".to_string())
            ]
        );
    }
}
