//! The target side: connecting to the real PostgreSQL with the gateway's own
//! credentials, which never leave this module's caller.

use crate::codec::{build, frame::split_frame, message, Frame};
use crate::error::PgError;
use crate::stream::Stream;
use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetAddr {
    pub host: String,
    pub port: u16,
}

/// How to reach and log in to one PostgreSQL target.
pub struct PgTarget {
    pub target: portcullis_core::Target,
    pub addr: TargetAddr,
    pub database: String,
    pub user: String,
    /// Held in memory only; never logged, audited or sent to a client.
    pub password: String,
    /// TLS to the target, with the name its certificate must carry.
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    )>,
    /// What masking needs of the target's catalog, read on demand.
    pub catalog: crate::catalog::Catalog,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("target", &self.target.name)
            .field("addr", &self.addr)
            .field("database", &self.database)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The rows of a query, each value as text.
pub type Rows = Vec<Vec<Option<String>>>;

/// A logged-in connection to a target, ready for queries.
pub struct TargetConnection {
    pub stream: Stream,
    /// ParameterStatus messages, raw, to pass on to the client.
    pub parameter_status: Vec<Frame>,
    pub pid: i32,
    pub secret: i32,
    /// Bytes already read past the first ReadyForQuery.
    pub leftover: BytesMut,
}

impl TargetConnection {
    /// The value of a ParameterStatus the target reported at startup.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameter_status
            .iter()
            .filter_map(|frame| crate::codec::message::parameter_status(frame.body()))
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value)
    }
}

impl PgTarget {
    fn io(&self, source: std::io::Error) -> PgError {
        PgError::TargetIo {
            target: self.target.name.clone(),
            source,
        }
    }

    pub(crate) fn protocol(&self, message: impl Into<String>) -> PgError {
        PgError::TargetProtocol {
            target: self.target.name.clone(),
            message: message.into(),
        }
    }

    /// Connects, negotiates TLS when configured, starts up with the client's
    /// allowed parameters, and authenticates with the gateway's credentials.
    pub async fn connect(
        &self,
        client_params: &[(&str, &str)],
    ) -> Result<TargetConnection, PgError> {
        let tcp = tokio::net::TcpStream::connect((self.addr.host.as_str(), self.addr.port))
            .await
            .map_err(|e| self.io(e))?;
        let _ = tcp.set_nodelay(true);
        let mut stream: Stream = match &self.tls {
            None => Stream::Tcp(tcp),
            Some((config, name)) => {
                let mut tcp = tcp;
                let mut out = BytesMut::new();
                build::ssl_request(&mut out);
                tcp.write_all(&out).await.map_err(|e| self.io(e))?;
                let answer = tcp.read_u8().await.map_err(|e| self.io(e))?;
                if answer != b'S' {
                    return Err(
                        self.protocol("the target does not accept TLS, and the config requires it")
                    );
                }
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                Stream::Tls(Box::new(
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| self.io(e))?,
                ))
            }
        };
        let mut params: Vec<(&str, &str)> =
            vec![("user", &self.user), ("database", &self.database)];
        params.extend_from_slice(client_params);
        let mut out = BytesMut::new();
        build::startup(&mut out, &params);
        stream.write_all(&out).await.map_err(|e| self.io(e))?;

        let mut buf = BytesMut::with_capacity(8192);
        let mut scram: Option<ScramSha256> = None;
        let mut parameter_status = Vec::new();
        let mut key = None;
        loop {
            let frame = self.read_frame(&mut stream, &mut buf).await?;
            match frame.tag {
                b'R' => {
                    let (code, rest) = message::authentication(frame.body())
                        .ok_or_else(|| self.protocol("malformed authentication request"))?;
                    let mut out = BytesMut::new();
                    match code {
                        // A target that says "ok" in the middle of SCRAM has
                        // not proved it knows the password: it may be an impostor.
                        0 if scram.is_some() => {
                            return Err(self.protocol("the target ended SCRAM authentication without its server signature"))
                        }
                        0 => continue,
                        3 => build::password(&mut out, &self.password),
                        5 => {
                            let salt: [u8; 4] = rest
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| self.protocol("malformed md5 salt"))?;
                            let hash = postgres_protocol::authentication::md5_hash(
                                self.user.as_bytes(),
                                self.password.as_bytes(),
                                salt,
                            );
                            build::password(&mut out, &hash);
                        }
                        10 => {
                            let offers_scram = rest
                                .split(|b| *b == 0)
                                .any(|m| m == SCRAM_SHA_256.as_bytes());
                            if !offers_scram {
                                return Err(self.protocol("the target offers no SASL mechanism the gateway supports (SCRAM-SHA-256)"));
                            }
                            let client = ScramSha256::new(self.password.as_bytes(), ChannelBinding::unsupported());
                            build::sasl_initial_response(&mut out, SCRAM_SHA_256, client.message());
                            scram = Some(client);
                        }
                        11 => {
                            let client = scram
                                .as_mut()
                                .ok_or_else(|| self.protocol("unexpected SASL continue"))?;
                            client.update(rest).map_err(|e| self.protocol(format!("SCRAM: {e}")))?;
                            build::sasl_response(&mut out, client.message());
                        }
                        12 => {
                            let mut client = scram
                                .take()
                                .ok_or_else(|| self.protocol("unexpected SASL final"))?;
                            client
                                .finish(rest)
                                .map_err(|e| self.protocol(format!("SCRAM server signature: {e}")))?;
                            continue;
                        }
                        other => {
                            return Err(self.protocol(format!(
                                "the target asks for authentication method {other}, which the gateway does not support"
                            )))
                        }
                    }
                    stream.write_all(&out).await.map_err(|e| self.io(e))?;
                }
                b'S' => parameter_status.push(frame),
                b'K' => {
                    key = message::backend_key_data(frame.body());
                }
                b'N' | b'v' => {}
                b'E' => {
                    let fields = message::error_fields(frame.body()).unwrap_or_default();
                    let field = |c: u8| {
                        fields
                            .iter()
                            .find(|(f, _)| *f == c)
                            .map(|(_, v)| v.to_string())
                    };
                    return Err(PgError::TargetRefused {
                        target: self.target.name.clone(),
                        code: field(b'C').unwrap_or_else(|| "08006".into()),
                        message: field(b'M').unwrap_or_else(|| "unknown error".into()),
                    });
                }
                b'Z' => {
                    let (pid, secret) =
                        key.ok_or_else(|| self.protocol("no BackendKeyData before ReadyForQuery"))?;
                    return Ok(TargetConnection {
                        stream,
                        parameter_status,
                        pid,
                        secret,
                        leftover: buf,
                    });
                }
                other => {
                    return Err(self.protocol(format!(
                        "unexpected message `{}` during startup",
                        char::from(other)
                    )))
                }
            }
        }
    }

    async fn read_frame(&self, stream: &mut Stream, buf: &mut BytesMut) -> Result<Frame, PgError> {
        loop {
            if let Some(frame) = split_frame(buf).map_err(|e| self.protocol(e.to_string()))? {
                return Ok(frame);
            }
            if stream.read_buf(buf).await.map_err(|e| self.io(e))? == 0 {
                return Err(self.protocol("the target closed the connection during startup"));
            }
        }
    }
}

impl PgTarget {
    /// Ends backend `pid`, a session the gateway opened on this target, with
    /// what it runs and whatever is queued on its connection (a statement
    /// sent behind a long one): the gateway ends a session this way when it
    /// ends it itself, so that nothing sent runs after. When no connection
    /// can be had (the target is full), the backend's running statement is
    /// cancelled instead, which skips the rest of its Query or cycle: a
    /// statement that may change something is never sent behind another
    /// (see `Relay::client_to_target`), so nothing more that writes waits on
    /// the connection. Logged, not returned: the session's connection is
    /// closed either way.
    pub async fn terminate_backend(&self, pid: i32, secret: i32) {
        let ending = async {
            let mut params = crate::PINNED_PARAMETERS.to_vec();
            params.push(("search_path", "pg_catalog"));
            let mut connection = self.connect(&params).await?;
            let rows = connection
                .query_rows(
                    self,
                    &format!("SELECT pg_catalog.pg_terminate_backend({pid})"),
                )
                .await;
            connection.close().await;
            rows
        };
        // A target that does not answer is not waited on: the session ends.
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), ending)
            .await
            .unwrap_or_else(|_| Err(self.protocol("no answer in 5 s")));
        match ended {
            Ok(rows)
                if rows.first().and_then(|row| row.first()) == Some(&Some("t".to_string())) => {}
            Ok(_) => {
                tracing::info!(target = %self.target.name, pid, "the session's backend had already ended")
            }
            Err(e) => {
                tracing::warn!(target = %self.target.name, pid, error = %e, "could not end the session's backend on the target; cancelling what it runs");
                let key = crate::cancel::TargetCancelKey {
                    addr: self.addr.clone(),
                    pid,
                    secret,
                };
                if let Err(e) = crate::cancel::cancel_on_target(&key).await {
                    tracing::warn!(target = %self.target.name, pid, error = %e, "could not cancel what the session's backend runs");
                }
            }
        }
    }
}

impl TargetConnection {
    /// Runs one simple-protocol query and returns its rows as text, for the
    /// gateway's own catalog queries. Any error ends the query with `Err`.
    pub async fn query_rows(&mut self, target: &PgTarget, sql: &str) -> Result<Rows, PgError> {
        self.query_many(target, &[sql])
            .await?
            .pop()
            .unwrap_or_else(|| Err(target.protocol("no answer to a catalog query")))
    }

    /// Runs simple-protocol queries sent together, in one round trip: each
    /// is answered on its own, with its rows as text or its error. `Err`
    /// when the connection fails, which leaves it unusable.
    pub async fn query_many(
        &mut self,
        target: &PgTarget,
        queries: &[&str],
    ) -> Result<Vec<Result<Rows, PgError>>, PgError> {
        let mut out = BytesMut::new();
        for sql in queries {
            build::query(&mut out, sql);
        }
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| target.io(e))?;
        let mut answers = Vec::with_capacity(queries.len());
        let mut rows = Vec::new();
        let mut error = None;
        while answers.len() < queries.len() {
            let frame = target
                .read_frame(&mut self.stream, &mut self.leftover)
                .await?;
            match frame.tag {
                b'D' => {
                    let values = crate::codec::result::data_row(frame.body())
                        .ok_or_else(|| target.protocol("malformed DataRow"))?;
                    rows.push(
                        values
                            .into_iter()
                            .map(|v| v.map(|bytes| String::from_utf8_lossy(bytes).into_owned()))
                            .collect(),
                    );
                }
                b'E' => {
                    let fields = message::error_fields(frame.body()).unwrap_or_default();
                    let text = fields
                        .iter()
                        .find(|(code, _)| *code == b'M')
                        .map_or("unknown error", |(_, m)| *m)
                        .to_string();
                    error = Some(target.protocol(format!("catalog query failed: {text}")));
                }
                b'Z' => answers.push(match error.take() {
                    Some(error) => Err(error),
                    None => Ok(std::mem::take(&mut rows)),
                }),
                _ => {}
            }
        }
        Ok(answers)
    }

    /// Ends the session politely.
    pub async fn close(mut self) {
        let mut out = BytesMut::new();
        build::terminate(&mut out);
        let _ = self.stream.write_all(&out).await;
        let _ = self.stream.shutdown().await;
    }
}
