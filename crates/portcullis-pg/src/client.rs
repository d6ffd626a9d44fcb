//! The client side: what a user's client (psql, a driver) sends before its
//! session starts, TLS negotiation included.

use crate::codec::startup::{read_startup, StartupError, StartupPacket, PROTOCOL_3_0};
use crate::codec::{build, frame::split_frame, message};
use crate::error::PgError;
use crate::stream::Stream;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a new connection turned out to be.
pub enum Hello {
    /// A cancel request for some session's running query.
    Cancel { pid: i32, secret: i32 },
    /// A client starting a session.
    Session(ClientStartup),
}

pub struct ClientStartup {
    pub stream: Stream,
    pub params: Vec<(String, String)>,
    pub tls: bool,
}

impl ClientStartup {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn startup_error(e: StartupError) -> PgError {
    match e {
        StartupError::Io(e) => PgError::ClientIo(e),
        other => PgError::ClientProtocol(other.to_string()),
    }
}

/// Reads the startup sequence, upgrading to TLS when the client asks and
/// the gateway has a certificate.
pub async fn accept(
    mut tcp: TcpStream,
    tls: Option<&tokio_rustls::TlsAcceptor>,
) -> Result<Hello, PgError> {
    loop {
        match read_startup(&mut tcp).await.map_err(startup_error)? {
            StartupPacket::SslRequest => match tls {
                Some(acceptor) => {
                    tcp.write_all(b"S").await.map_err(PgError::ClientIo)?;
                    let mut stream = acceptor.accept(tcp).await.map_err(PgError::ClientIo)?;
                    return match read_startup(&mut stream).await.map_err(startup_error)? {
                        StartupPacket::Startup { version, params } => {
                            startup(Stream::Tls(Box::new(stream)), version, params, true).await
                        }
                        StartupPacket::Cancel { pid, secret } => Ok(Hello::Cancel { pid, secret }),
                        _ => Err(PgError::ClientProtocol(
                            "unexpected request inside TLS".into(),
                        )),
                    };
                }
                None => tcp.write_all(b"N").await.map_err(PgError::ClientIo)?,
            },
            StartupPacket::GssEncRequest => tcp.write_all(b"N").await.map_err(PgError::ClientIo)?,
            StartupPacket::Cancel { pid, secret } => return Ok(Hello::Cancel { pid, secret }),
            StartupPacket::Startup { version, params } => {
                return startup(Stream::Tcp(tcp), version, params, false).await
            }
        }
    }
}

async fn startup(
    mut stream: Stream,
    version: i32,
    params: Vec<(String, String)>,
    tls: bool,
) -> Result<Hello, PgError> {
    // Protocol options (`_pq_.*`) and minor versions above 3.0 are declined,
    // as PostgreSQL does for options it does not know.
    let unrecognized: Vec<String> = params
        .iter()
        .filter(|(name, _)| name.starts_with("_pq_."))
        .map(|(name, _)| name.clone())
        .collect();
    if version != PROTOCOL_3_0 || !unrecognized.is_empty() {
        let mut out = BytesMut::new();
        build::negotiate_protocol_version(&mut out, 0, &unrecognized);
        stream.write_all(&out).await.map_err(PgError::ClientIo)?;
    }
    let params = params
        .into_iter()
        .filter(|(name, _)| !name.starts_with("_pq_."))
        .collect();
    Ok(Hello::Session(ClientStartup {
        stream,
        params,
        tls,
    }))
}

const MAX_PASSWORD_MESSAGE: i32 = 64 * 1024;

/// Asks the client for its password (the token) and reads it.
pub async fn read_password(stream: &mut Stream) -> Result<String, PgError> {
    let mut out = BytesMut::new();
    build::authentication_cleartext_password(&mut out);
    stream.write_all(&out).await.map_err(PgError::ClientIo)?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        // Before authentication a client may not make the gateway buffer
        // much: a token is a few kilobytes.
        if let Some(len) = buf.get(1..5) {
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            if !(4..=MAX_PASSWORD_MESSAGE).contains(&len) {
                return Err(PgError::ClientProtocol(format!(
                    "password message of {len} bytes refused"
                )));
            }
        }
        if let Some(frame) =
            split_frame(&mut buf).map_err(|e| PgError::ClientProtocol(e.to_string()))?
        {
            if frame.tag != b'p' {
                return Err(PgError::ClientProtocol(format!(
                    "expected a password message, got `{}`",
                    char::from(frame.tag)
                )));
            }
            return message::password(frame.body())
                .map(str::to_string)
                .ok_or_else(|| PgError::ClientProtocol("malformed password message".into()));
        }
        if stream.read_buf(&mut buf).await.map_err(PgError::ClientIo)? == 0 {
            return Err(PgError::ClientIo(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Sends a fatal error and closes. Errors while doing so are moot.
pub async fn refuse(stream: &mut Stream, code: &str, text: &str, hint: Option<&str>) {
    let mut out = BytesMut::new();
    build::error_response(&mut out, "FATAL", code, text, None, hint);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}
