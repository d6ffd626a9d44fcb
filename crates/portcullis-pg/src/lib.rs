//! The PostgreSQL wire proxy. Clients (psql, drivers, pgbench) connect with a
//! token as their password and a target's name as their database; the
//! gateway verifies the token, asks the Gate, logs in to the target with its
//! own credentials, and relays the session with every statement decided.
//!
//! Layout:
//! - [`codec`]: the wire protocol, one module per concern.
//! - [`client`]: the client side of the startup (TLS, startup packet, password).
//! - [`server`]: the target side (connect, TLS, authentication).
//! - [`session`]: the relay, where each statement meets the Gate.
//! - [`cancel`]: cancel requests, mapped per session.
//! - `error`: [`PgError`] and the side it came from.
//!
//! Architecture Invariant: this crate decides nothing. It describes each
//! connect and statement to the Gate and enforces the answer.

pub mod cancel;
pub mod catalog;
pub mod client;
pub mod codec;
mod copy_out;
mod error;
pub mod hidden;
pub mod masking;
mod prepared;
mod results;
pub mod server;
pub mod session;
pub mod stream;

pub use error::{PgError, Side};
pub use server::{PgTarget, TargetAddr};

use cancel::{CancelRegistry, TargetCancelKey};
use client::Hello;
use portcullis_core::SessionId;
use portcullis_gate::listen::Places;
use portcullis_gate::{Gate, Session};
use portcullis_identity::Verifier;
use portcullis_sql::Classifier;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn, Instrument};

/// Where a token may be sent without TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleartextPolicy {
    Loopback,
    Always,
    Never,
}

/// The gateway parses SQL as UTF-8 with standard-conforming strings, so the
/// target session must read it the same way: these are set at its startup,
/// checked once it is up, watched while it runs, and statements that would
/// change them are refused.
/// How long a client has to send its startup message, and then its
/// password: a connection that never logs in holds a socket and a task.
const LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub const PINNED_PARAMETERS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
];

/// Client encodings the gateway accepts: they read SQL as UTF-8 does.
fn utf8_compatible(encoding: &str) -> bool {
    let normalised: String = encoding
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(normalised.as_str(), "utf8" | "unicode" | "sqlascii")
}

/// Startup parameters passed on to the target. Others (`options` above
/// all, which could set `role`) are dropped.
const PASSED_PARAMETERS: &[&str] = &[
    "application_name",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "extra_float_digits",
];

/// `application_name`s that clients send by themselves: not a reason.
const CLIENT_DEFAULT_NAMES: &[&str] = &[
    "psql",
    "pgbench",
    "pg_dump",
    "pg_dumpall",
    "pg_restore",
    "pg_basebackup",
    "pg_isready",
    "vacuumdb",
    "reindexdb",
    "clusterdb",
    "createdb",
    "dropdb",
    "createuser",
    "dropuser",
    "portcullis-connect",
];

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub struct PgService {
    pub targets: HashMap<String, Arc<PgTarget>>,
    pub verifier: Verifier,
    pub gate: Gate,
    pub classifier: Arc<Classifier>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub cleartext: CleartextPolicy,
    pub cancels: CancelRegistry,
    /// Where sessions are recorded; `None` when recording is off.
    pub recordings: Option<portcullis_record::Recordings>,
    next_session: AtomicU64,
    /// Sessions open per principal (at most `postgres.max_sessions_per_user`
    /// each).
    open: Places<String>,
    /// Per principal with a session open: held while one of their long
    /// texts is parsed.
    long_parses: std::sync::Mutex<HashMap<String, std::sync::Weak<std::sync::Mutex<()>>>>,
}

impl PgService {
    pub fn new(
        targets: HashMap<String, Arc<PgTarget>>,
        verifier: Verifier,
        gate: Gate,
        classifier: Arc<Classifier>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        cleartext: CleartextPolicy,
    ) -> PgService {
        PgService {
            targets,
            verifier,
            gate,
            classifier,
            tls,
            cleartext,
            cancels: CancelRegistry::default(),
            recordings: None,
            next_session: AtomicU64::new(1),
            open: Places::new(usize::MAX, usize::MAX),
            long_parses: Default::default(),
        }
    }

    /// The lock `principal`'s sessions share for parsing long texts.
    fn long_parses(&self, principal: &str) -> Arc<std::sync::Mutex<()>> {
        let mut locks = self.long_parses.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = locks.get(principal).and_then(std::sync::Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(std::sync::Mutex::new(()));
        locks.insert(principal.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Refuses a principal's sessions past `max` open at once: each holds
    /// one of the target's connection slots, which everyone shares.
    pub fn with_max_sessions_per_user(mut self, max: usize) -> PgService {
        self.open = Places::new(max, usize::MAX);
        self
    }

    /// Starts the session's recording with the startup messages the client
    /// is about to get; `None` when sessions are not recorded.
    fn start_recording(
        &self,
        session: &Session,
        target_name: &str,
        peer: SocketAddr,
        startup: &[u8],
        unmasked: &[String],
    ) -> Result<Option<Arc<portcullis_record::Recorder>>, portcullis_record::RecordError> {
        let Some(recordings) = &self.recordings else {
            return Ok(None);
        };
        let recorder = recordings.start(portcullis_record::format::Start {
            version: portcullis_record::format::VERSION,
            session: session.id.to_string(),
            principal: session.principal.id.clone(),
            target: target_name.to_string(),
            client_addr: peer.to_string(),
            started_ms: unix_ms(),
        })?;
        // What its results hold in clear: the console shows them only to
        // those who may see as much.
        recorder.masking(&portcullis_record::format::Masking {
            unmasked: unmasked.to_vec(),
        })?;
        recorder.to_client(startup)?;
        Ok(Some(Arc::new(recorder)))
    }

    /// Records every session in `recordings`.
    pub fn with_recordings(mut self, recordings: portcullis_record::Recordings) -> PgService {
        self.recordings = Some(recordings);
        self
    }

    /// Accepts connections until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let logins = portcullis_gate::listen::Logins::logins();
        loop {
            let (tcp, peer) = portcullis_gate::listen::accept(&listener).await;
            let Some(logging_in) = logins.enter(peer.ip()) else {
                info!(%peer, "too many connections from one address not logged in yet; closed");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let service = self.clone();
            tokio::spawn(async move { service.handle(tcp, peer, logging_in).await });
        }
    }

    async fn handle(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        logging_in: portcullis_gate::listen::LoggingIn,
    ) {
        let hello =
            match tokio::time::timeout(LOGIN_TIMEOUT, client::accept(tcp, self.tls.as_ref())).await
            {
                Ok(Ok(hello)) => hello,
                Ok(Err(e)) => {
                    info!(%peer, error = %e, "connection ended before startup");
                    return;
                }
                Err(_) => {
                    info!(%peer, "no startup message in time");
                    return;
                }
            };
        match hello {
            Hello::Cancel { pid, secret } => self.cancel(pid, secret, peer).await,
            Hello::Session(startup) => {
                let number = self.next_session.fetch_add(1, Ordering::Relaxed);
                let id = SessionId::new(format!("pg-{:08x}-{number}", rand::random::<u32>()));
                let span = tracing::info_span!("session", session = %id, %peer);
                self.session(id, startup, peer, logging_in)
                    .instrument(span)
                    .await
            }
        }
    }

    async fn cancel(&self, pid: i32, secret: i32, peer: SocketAddr) {
        match self.cancels.lookup(pid, secret) {
            Some(key) => {
                if let Err(e) = cancel::cancel_on_target(&key).await {
                    warn!(%peer, error = %e, "could not forward a cancel request");
                }
            }
            None => warn!(%peer, pid, "cancel request with an unknown key ignored"),
        }
    }

    async fn session(
        &self,
        id: SessionId,
        mut startup: client::ClientStartup,
        peer: SocketAddr,
        logging_in: portcullis_gate::listen::LoggingIn,
    ) {
        let cleartext_ok = startup.tls
            || match self.cleartext {
                CleartextPolicy::Always => true,
                CleartextPolicy::Loopback => peer.ip().is_loopback(),
                CleartextPolicy::Never => false,
            };
        if !cleartext_ok {
            client::refuse(
                &mut startup.stream,
                "28000",
                "the gateway accepts tokens only over TLS from this address",
                Some("connect with sslmode=require"),
            )
            .await;
            return;
        }
        let client_user = startup.param("user").unwrap_or_default().to_string();
        let target_name = startup
            .param("database")
            .filter(|d| !d.is_empty())
            .unwrap_or(&client_user)
            .to_string();
        if startup
            .param("replication")
            .is_some_and(|r| r != "false" && r != "0")
        {
            client::refuse(
                &mut startup.stream,
                "42501",
                "replication connections are not allowed through the gateway",
                None,
            )
            .await;
            return;
        }
        if let Some(encoding) = startup
            .param("client_encoding")
            .filter(|e| !utf8_compatible(e))
            .map(str::to_string)
        {
            client::refuse(
                &mut startup.stream,
                "22023",
                &format!("client encoding `{encoding}` is not supported: the gateway speaks UTF8"),
                Some("connect with client_encoding=UTF8 (PGCLIENTENCODING=UTF8)"),
            )
            .await;
            return;
        }
        let token =
            match tokio::time::timeout(LOGIN_TIMEOUT, client::read_password(&mut startup.stream))
                .await
            {
                Ok(Ok(token)) => token,
                Ok(Err(e)) => {
                    info!(error = %e, "client left before authenticating");
                    return;
                }
                Err(_) => {
                    info!(client_user, "no password in time");
                    client::refuse(
                        &mut startup.stream,
                        "08006",
                        "no password within the login timeout",
                        None,
                    )
                    .await;
                    return;
                }
            };
        let principal = match self.verifier.verify(token.trim()).await {
            Ok(principal) => principal,
            Err(e) => {
                info!(error = %e, client_user, "authentication failed");
                client::refuse(
                    &mut startup.stream,
                    "28P01",
                    &format!("authentication failed: {e}"),
                    Some("give a token from `portcullis login` or `portcullis dev token` as the password"),
                )
                .await;
                return;
            }
        };
        // Logged in: no longer counted among its address's logins.
        drop(logging_in);
        let Some(target) = self.targets.get(&target_name).cloned() else {
            client::refuse(
                &mut startup.stream,
                "3D000",
                &format!("unknown target `{target_name}`"),
                Some("the database name is the target's name"),
            )
            .await;
            return;
        };
        let mut session = Session::new(
            id.clone(),
            principal,
            target.target.clone(),
            peer,
            &client_user,
        );
        if let Some(reason) = startup
            .params
            .iter()
            .find(|(name, _)| name == "application_name")
            .map(|(_, value)| value.as_str())
            .filter(|value| !CLIENT_DEFAULT_NAMES.contains(value))
        {
            session.set_reason(reason);
        }
        let decision = match self.gate.connect(&session).await {
            Ok(decision) => decision,
            Err(e) => {
                client::refuse(&mut startup.stream, "58000", &e.to_string(), None).await;
                return;
            }
        };
        if !decision.is_allowed() {
            let by = match decision.policies.as_slice() {
                [] => String::new(),
                policies => format!(" by policy `{}`", policies.join("`, `")),
            };
            info!(principal = %session.principal.id, target = %target_name, "connect denied");
            client::refuse(
                &mut startup.stream,
                "28000",
                &format!(
                    "access to target `{target_name}` denied{by}: {}",
                    decision.reason
                ),
                // A session is not held at login: an approvable `connect`
                // is asked for as an access grant.
                (decision.effect == portcullis_core::Effect::Hold)
                    .then(|| format!("a reviewer may grant it: portcullis request --target {target_name} --for 1h --reason \"...\"")).as_deref(),
            )
            .await;
            self.gate
                .end(&session, "connect denied", &Default::default())
                .await;
            return;
        }
        let Some(_open) = self.open.enter(session.principal.id.clone()) else {
            info!(principal = %session.principal.id, target = %target_name, "too many sessions");
            client::refuse(
                &mut startup.stream,
                "53300",
                &format!(
                    "you have {} sessions open through the gateway, the most one person may (postgres.max_sessions_per_user)",
                    self.open.per_key()
                ),
                Some("close one of them, and try again"),
            )
            .await;
            self.gate
                .end(&session, "too many sessions", &Default::default())
                .await;
            return;
        };
        // Which mask rules this principal sees in clear is decided before the
        // session starts; a masking that cannot be decided refuses it.
        let masking = match self.gate.masking(&session).await {
            Ok(masking) => masking,
            Err(e) => {
                client::refuse(&mut startup.stream, "58000", &e.to_string(), None).await;
                self.gate
                    .end(&session, "masking unavailable", &Default::default())
                    .await;
                return;
            }
        };
        let mut params: Vec<(&str, &str)> = startup
            .params
            .iter()
            .filter(|(name, _)| PASSED_PARAMETERS.contains(&name.as_str()))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        params.extend_from_slice(PINNED_PARAMETERS);
        let connection = match target.connect(&params).await {
            Ok(connection) => connection,
            Err(e) => {
                warn!(error = %e, "cannot open the target session");
                let (code, text) = match &e {
                    PgError::TargetRefused { code, message, .. } => (
                        code.clone(),
                        format!("target `{target_name}` refused the session: {message}"),
                    ),
                    other => (
                        other.sqlstate().to_string(),
                        format!("cannot reach target `{target_name}`: {other}"),
                    ),
                };
                client::refuse(&mut startup.stream, &code, &text, None).await;
                self.gate
                    .end(
                        &session,
                        &format!("target unavailable: {e}"),
                        &Default::default(),
                    )
                    .await;
                return;
            }
        };
        if let Some((name, expected)) = PINNED_PARAMETERS
            .iter()
            .find(|(name, value)| connection.parameter(name) != Some(*value))
        {
            warn!(
                parameter = name,
                "the target session does not have the pinned setting"
            );
            client::refuse(
                &mut startup.stream,
                "XX000",
                &format!("target `{target_name}` did not accept `{name} = {expected}`, which the gateway needs to read SQL as the target does"),
                None,
            )
            .await;
            self.gate
                .end(&session, "target settings not pinned", &Default::default())
                .await;
            return;
        }
        let Some(registration) = self.cancels.register(TargetCancelKey {
            addr: target.addr.clone(),
            pid: connection.pid,
            secret: connection.secret,
        }) else {
            client::refuse(
                &mut startup.stream,
                "XX000",
                "internal error: cancel registry unavailable",
                None,
            )
            .await;
            return;
        };
        let mut out = bytes::BytesMut::new();
        codec::build::authentication_ok(&mut out);
        for status in &connection.parameter_status {
            out.extend_from_slice(&status.raw);
        }
        codec::build::backend_key_data(&mut out, registration.pid, registration.secret);
        codec::build::ready_for_query(&mut out, b'I');
        // Fail closed: a session that cannot be recorded does not start.
        let recorder =
            match self.start_recording(&session, &target_name, peer, &out, &masking.unmasked) {
                Ok(recorder) => recorder,
                Err(e) => {
                    warn!(error = %e, "cannot record the session");
                    client::refuse(
                        &mut startup.stream,
                        "58030",
                        &format!("the session cannot be recorded, so it does not start: {e}"),
                        None,
                    )
                    .await;
                    self.gate
                        .end(&session, "recording unavailable", &Default::default())
                        .await;
                    return;
                }
            };
        if let Err(e) = startup.stream.write_all(&out).await {
            info!(error = %e, "client left during startup");
            self.gate
                .end(&session, "client disconnected", &Default::default())
                .await;
            return;
        }
        info!(principal = %session.principal.id, target = %target_name, "session started");
        let principal_id = session.principal.id.clone();
        let relay = session::Relay {
            gate: self.gate.clone(),
            classifier: self.classifier.clone(),
            session,
            target: target.clone(),
            masking: masking.masker,
            cancels: registration.signal.clone(),
            recorder: recorder.clone(),
            long_parses: self.long_parses(&principal_id),
            copying: Default::default(),
            backend_pid: connection.pid,
            backend_secret: connection.secret,
        };
        metrics::gauge!("portcullis_sessions_active", "protocol" => "postgres").increment(1.0);
        metrics::counter!("portcullis_sessions_total", "protocol" => "postgres").increment(1);
        let (session, ending, masked) = relay
            .run(startup.stream, connection.stream, connection.leftover)
            .await;
        drop(registration);
        metrics::gauge!("portcullis_sessions_active", "protocol" => "postgres").decrement(1.0);
        info!(outcome = %ending.describe(), "session ended");
        let outcome = ending.describe();
        let recorded = match recorder.as_deref().map(|r| r.finish(&outcome)) {
            Some(Ok(done)) => Some(done),
            Some(Err(e)) => {
                tracing::error!(error = %e, "could not seal the session's recording");
                None
            }
            None => None,
        };
        self.gate
            .end_recorded(
                &session,
                &outcome,
                &masked,
                recorded
                    .as_ref()
                    .map(|(id, hash)| (id.as_str(), hash.as_str())),
            )
            .await;
    }
}
