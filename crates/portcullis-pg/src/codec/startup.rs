//! The untagged messages a connection starts with: SSLRequest,
//! GSSENCRequest, CancelRequest and StartupMessage.

use super::frame::{take_cstr, take_i32};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;
pub const PROTOCOL_3_0: i32 = 196_608;

/// Startup packets are small; this bounds what an unauthenticated client can
/// make the gateway buffer.
const MAX_STARTUP_LEN: usize = 10_000;

#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        secret: i32,
    },
    Startup {
        version: i32,
        params: Vec<(String, String)>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid startup packet length {0}")]
    BadLength(i32),
    #[error("malformed startup packet")]
    Malformed,
    #[error("unsupported frontend protocol {}.{}: the gateway speaks 3.0", .0 >> 16, .0 & 0xffff)]
    Version(i32),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub async fn read_startup<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<StartupPacket, StartupError> {
    let len = reader.read_i32().await?;
    if len < 8 || len as usize > MAX_STARTUP_LEN {
        return Err(StartupError::BadLength(len));
    }
    let mut body = vec![0u8; len as usize - 4];
    reader.read_exact(&mut body).await?;
    parse_startup(&body)
}

pub fn parse_startup(body: &[u8]) -> Result<StartupPacket, StartupError> {
    let mut rest = body;
    let code = take_i32(&mut rest).ok_or(StartupError::Malformed)?;
    match code {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => {
            let pid = take_i32(&mut rest).ok_or(StartupError::Malformed)?;
            let secret = take_i32(&mut rest).ok_or(StartupError::Malformed)?;
            Ok(StartupPacket::Cancel { pid, secret })
        }
        version if version >> 16 == 3 => {
            let mut params = Vec::new();
            loop {
                let name = take_cstr(&mut rest).ok_or(StartupError::Malformed)?;
                if name.is_empty() {
                    break;
                }
                let value = take_cstr(&mut rest).ok_or(StartupError::Malformed)?;
                params.push((name.to_string(), value.to_string()));
            }
            Ok(StartupPacket::Startup { version, params })
        }
        other => Err(StartupError::Version(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_startup_and_requests() {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0alice\0database\0demo\0\0");
        assert_eq!(
            parse_startup(&body).unwrap(),
            StartupPacket::Startup {
                version: PROTOCOL_3_0,
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "demo".into())
                ]
            }
        );
        assert_eq!(
            parse_startup(&SSL_REQUEST.to_be_bytes()).unwrap(),
            StartupPacket::SslRequest
        );
        let mut cancel = CANCEL_REQUEST.to_be_bytes().to_vec();
        cancel.extend_from_slice(&7i32.to_be_bytes());
        cancel.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            parse_startup(&cancel).unwrap(),
            StartupPacket::Cancel { pid: 7, secret: 9 }
        );
    }

    #[test]
    fn malformed_startups_are_errors() {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0alice");
        assert!(parse_startup(&body).is_err());
        assert!(parse_startup(&CANCEL_REQUEST.to_be_bytes()).is_err());
        assert!(parse_startup(&(2i32 << 16).to_be_bytes()).is_err());
        assert!(parse_startup(&[1, 2]).is_err());
    }
}
