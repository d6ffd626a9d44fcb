//! One client connection: authentication, then each channel bridged to a
//! channel of one of the gateway's own connections to the target, under
//! policy.

use crate::sftp::{self, Handles, Piece, Request};
use crate::upstream::{self, SshTarget, Upstream};
use crate::Inner;
use bytes::Bytes;
use portcullis_core::{Action, Decision, Effect, Forward, Principal, SessionId};
use portcullis_gate::Session as GateSession;
use portcullis_record::format::{Resize, Statement};
use portcullis_record::Recorder;
use russh::keys::Certificate;
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, ChannelOpenFailure, Pty};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;
use tracing::{debug, info, warn};

/// Exit status of a refused command, as a shell gives for "cannot execute".
const REFUSED: u32 = 126;
/// Exit status when the target cannot be reached, as `ssh` gives.
const UNREACHABLE: u32 = 255;
/// Client messages kept for a held command until it runs.
const MAX_EARLY: usize = 256;
const MAX_EARLY_BYTES: usize = 1 << 20;
/// A typed line longer than this is cut.
const MAX_TYPED: usize = 4096;

/// Runs one connection to its end, then audits and seals its session.
/// How long a connection may take to log in (OpenSSH's `LoginGraceTime`).
const LOGIN_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) async fn serve(
    inner: Arc<Inner>,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    logging_in: portcullis_gate::listen::LoggingIn,
) {
    let slot: Arc<Mutex<Option<Arc<Authed>>>> = Arc::default();
    let handler = Connection {
        inner: inner.clone(),
        peer,
        slot: slot.clone(),
        authed: None,
        logging_in: Some(logging_in),
    };
    let config = inner.config.clone();
    let running = match tokio::time::timeout(
        LOGIN_GRACE,
        server::run_stream(config, socket, handler),
    )
    .await
    {
        Ok(Ok(running)) => running,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "ssh handshake failed");
            return;
        }
        Err(_) => {
            debug!(%peer, "no ssh handshake in time");
            return;
        }
    };
    let grace = {
        let (slot, handle) = (slot.clone(), running.handle());
        tokio::spawn(async move {
            tokio::time::sleep(LOGIN_GRACE).await;
            if slot.lock().map_or(true, |s| s.is_none()) {
                debug!(%peer, "no login in time");
                let _ = handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        "no login within the login grace time".into(),
                        "en".into(),
                    )
                    .await;
            }
        })
    };
    let outcome = match running.await {
        Ok(()) => "closed".to_string(),
        Err(e) => {
            debug!(%peer, error = %e, "ssh connection ended");
            format!("ended: {e}")
        }
    };
    grace.abort();
    let authed = slot.lock().ok().and_then(|mut s| s.take());
    if let Some(authed) = authed {
        authed.end(&outcome).await;
    }
}

/// The russh handler of one connection.
struct Connection {
    inner: Arc<Inner>,
    peer: SocketAddr,
    /// Shared with [`serve`], which ends the session.
    slot: Arc<Mutex<Option<Arc<Authed>>>>,
    authed: Option<Arc<Authed>>,
    /// Its place among its address's connections not logged in yet.
    logging_in: Option<portcullis_gate::listen::LoggingIn>,
}

/// An authenticated connection.
pub(crate) struct Authed {
    inner: Arc<Inner>,
    /// `None` for a target name that does not exist.
    session: Option<tokio::sync::Mutex<GateSession>>,
    target: Option<Arc<SshTarget>>,
    /// Why every channel is refused, when the connection may not go on.
    refused: Option<String>,
    upstream: OnceCell<Result<Arc<Upstream>, String>>,
    /// The connections that carry session channels.
    sessions: Arc<SessionUpstreams>,
    recorder: Option<Arc<Recorder>>,
    /// The client's side, to open `ssh -R` connections toward it.
    handle: OnceCell<server::Handle>,
    /// Re-checks `connect` when the policy or a grant changes.
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// What this connection holds open under a decision (shells, forwards),
    /// which the watcher decides again too.
    standing: Standings,
    /// Remote forwards allowed: they stand as long as the connection.
    remote_forwards: Mutex<Vec<Standing>>,
}

/// The shells and forwards a connection holds open, each with the decision
/// it was opened under.
#[derive(Clone, Default)]
struct Standings {
    open: Arc<Mutex<HashMap<u64, (Action, Decision)>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
    /// Set when the gateway ends the connection itself (a revoke, an
    /// expired token): what its channels started on the target is hung up.
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl Standings {
    /// Registers `action`, allowed by `decision`, until the guard drops.
    fn stand(&self, action: Action, decision: &Decision) -> Standing {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut open) = self.open.lock() {
            open.insert(key, (action, decision.clone()));
        }
        Standing {
            open: self.open.clone(),
            key,
        }
    }

    /// What stands, each action once (many forwarded connections to one
    /// destination are one decision).
    fn snapshot(&self) -> Vec<(Action, Decision)> {
        let mut out: Vec<(Action, Decision)> = Vec::new();
        if let Ok(open) = self.open.lock() {
            for (action, decision) in open.values() {
                if !out.iter().any(|(a, d)| a == action && d == decision) {
                    out.push((action.clone(), decision.clone()));
                }
            }
        }
        out
    }
}

/// One entry of [`Standings`], taken out when dropped.
struct Standing {
    open: Arc<Mutex<HashMap<u64, (Action, Decision)>>>,
    key: u64,
}

impl Drop for Standing {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&self.key);
        }
    }
}

impl Authed {
    /// The gateway's connection to the target for forwarded connections,
    /// made on first use and shared by all of them.
    async fn upstream(self: &Arc<Self>) -> Result<Arc<Upstream>, String> {
        let result = self
            .upstream
            .get_or_init(|| async {
                let Some(target) = &self.target else {
                    return Err("no target".to_string());
                };
                let remote = RemoteForwards {
                    authed: Arc::downgrade(self),
                };
                upstream::connect(target, Some(remote)).await.map(Arc::new)
            })
            .await;
        result.clone()
    }

    /// A connection to the target for one session channel: a free one, or
    /// a new one. At most [`MAX_SESSIONS`] are in use at once; beyond, the
    /// channel waits up to [`SESSION_WAIT`] for one to end (a client sees
    /// its channels closed a moment before the gateway is done with them).
    /// `fresh` skips the free ones.
    async fn session_upstream(&self, fresh: bool) -> Result<Lease, String> {
        let Some(target) = &self.target else {
            return Err("no target".to_string());
        };
        let permit = self.sessions.permits.clone().acquire_owned();
        let Ok(Ok(permit)) = tokio::time::timeout(SESSION_WAIT, permit).await else {
            return Err(format!(
                "this connection has {MAX_SESSIONS} sessions open already: close one, or open another connection"
            ));
        };
        let idle = self.sessions.idle.lock().ok().and_then(|mut idle| {
            if fresh {
                idle.clear();
            }
            std::iter::from_fn(|| idle.pop()).find(|upstream| !upstream.is_closed())
        });
        let (upstream, reused) = match idle {
            Some(upstream) => (upstream, true),
            None => (Arc::new(upstream::connect(target, None).await?), false),
        };
        Ok(Lease {
            pool: self.sessions.clone(),
            upstream,
            reused,
            _permit: permit,
        })
    }

    async fn check(&self, channel: u32, actions: &[Action]) -> Result<Vec<Decision>, String> {
        let Some(session) = &self.session else {
            return Err("no session".into());
        };
        let mut session = session.lock().await;
        self.inner
            .gate
            .check_ssh(&mut session, channel, actions)
            .await
            .map_err(|e| format!("the decision could not be recorded, so nothing was run: {e}"))
    }

    /// Registers what `decided` allowed as standing, where the connection's
    /// watcher decides it again on every change of policy or grants, for as
    /// long as the guards live. `seen` is [`Gate::generations`] read before
    /// deciding: a change since may have been acted on by the watcher before
    /// these were registered, so they are then decided again here.
    ///
    /// [`Gate::generations`]: portcullis_gate::Gate::generations
    async fn stand(
        &self,
        seen: portcullis_gate::Generations,
        actions: &[Action],
        decided: &[Decision],
    ) -> Result<Vec<Standing>, String> {
        let standing = actions
            .iter()
            .zip(decided)
            .map(|(action, decision)| self.standing.stand(action.clone(), decision))
            .collect();
        let Some(session) = &self.session else {
            return Err("no session".into());
        };
        let session = session.lock().await;
        match self
            .inner
            .gate
            .confirm(&session, seen, actions.iter().zip(decided))
            .await
        {
            Ok(None) => Ok(standing),
            Ok(Some((action, now))) => Err(format!(
                "{} is no longer allowed: {}",
                held_open(action),
                now.reason
            )),
            Err(e) => Err(format!(
                "the decision could not be recorded, so nothing was run: {e}"
            )),
        }
    }

    /// Audits an event without a decision; spawned when `wait` is false.
    async fn event(
        &self,
        channel: u32,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<(), String> {
        let Some(session) = &self.session else {
            return Ok(());
        };
        let session = session.lock().await;
        self.inner
            .gate
            .ssh_event(&session, channel, kind, detail)
            .await
            .map_err(|e| format!("the audit log cannot be written, so nothing was run: {e}"))
    }

    fn record(&self, statement: Statement) -> Result<(), String> {
        match &self.recorder {
            Some(recorder) => recorder
                .statement(&statement)
                .map_err(|e| format!("the session cannot be recorded, so nothing was run: {e}")),
            None => Ok(()),
        }
    }

    async fn end(&self, outcome: &str) {
        if let Some(watcher) = self.watcher.lock().ok().and_then(|mut w| w.take()) {
            watcher.abort();
        }
        // Forwarded connections share one connection to the target, kept
        // by their relays: it ends with the client's, and with it what sshd
        // listens on there for `ssh -R`.
        if let Some(Ok(upstream)) = self.upstream.get() {
            let _ = upstream
                .disconnect(
                    russh::Disconnect::ByApplication,
                    "the client's connection ended",
                    "en",
                )
                .await;
        }
        let Some(session) = &self.session else { return };
        let session = session.lock().await;
        let recording = match &self.recorder {
            Some(recorder) => match recorder.finish(outcome) {
                Ok(done) => Some(done),
                Err(e) => {
                    warn!(session = %session.id, error = %e, "the recording could not be sealed");
                    None
                }
            },
            None => None,
        };
        self.inner
            .gate
            .end_recorded(
                &session,
                outcome,
                &Default::default(),
                recording
                    .as_ref()
                    .map(|(id, hash)| (id.as_str(), hash.as_str())),
            )
            .await;
    }
}

impl Connection {
    /// Establishes the session for a verified identity. Returns how the
    /// authentication ends: only a failure to audit rejects it; a denied
    /// `connect` is told on every channel, with its reason.
    async fn authenticate(
        &mut self,
        user: &str,
        principal: Principal,
    ) -> Result<Auth, russh::Error> {
        let inner = &self.inner;
        let number = inner.sessions.fetch_add(1, Ordering::Relaxed);
        let id = SessionId::new(format!("ssh-{:08x}-{number}", rand::random::<u32>()));
        let Some(target) = inner.targets.get(user).cloned() else {
            info!(principal = %principal.id, target = user, "ssh login to an unknown target");
            self.set(Authed {
                inner: inner.clone(),
                session: None,
                target: None,
                refused: Some(format!(
                    "there is no SSH target named `{user}`: the SSH user name is the target's name"
                )),
                upstream: OnceCell::new(),
                sessions: Arc::default(),
                recorder: None,
                handle: OnceCell::new(),
                watcher: Mutex::new(None),
                standing: Standings::default(),
                remote_forwards: Mutex::new(Vec::new()),
            });
            return Ok(Auth::Accept);
        };
        let session = GateSession::new(id, principal, target.target.clone(), self.peer, user);
        let decision = match inner.gate.connect(&session).await {
            Ok(decision) => decision,
            Err(e) => {
                warn!(error = %e, "ssh login refused: the audit log cannot be written");
                return Ok(Auth::reject());
            }
        };
        let refused = (!decision.is_allowed())
            .then(|| format!("connecting to `{user}` is denied: {}", decision.reason));
        let recorder = match (&refused, &inner.recordings) {
            (None, Some(recordings)) => {
                match recordings.start(portcullis_record::format::Start {
                    version: portcullis_record::format::VERSION,
                    session: session.id.to_string(),
                    principal: session.principal.id.clone(),
                    target: user.to_string(),
                    client_addr: self.peer.to_string(),
                    started_ms: unix_ms(),
                }) {
                    Ok(recorder) => Some(Arc::new(recorder)),
                    Err(e) => {
                        warn!(error = %e, "ssh login refused: the session cannot be recorded");
                        return Ok(Auth::reject());
                    }
                }
            }
            _ => None,
        };
        info!(session = %session.id, principal = %session.principal.id, target = user, allowed = refused.is_none(), "ssh session");
        self.set(Authed {
            inner: inner.clone(),
            session: Some(tokio::sync::Mutex::new(session)),
            target: Some(target),
            refused,
            upstream: OnceCell::new(),
            sessions: Arc::default(),
            recorder,
            handle: OnceCell::new(),
            watcher: Mutex::new(None),
            standing: Standings::default(),
            remote_forwards: Mutex::new(Vec::new()),
        });
        Ok(Auth::Accept)
    }

    fn set(&mut self, authed: Authed) {
        self.logging_in = None;
        let authed = Arc::new(authed);
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(authed.clone());
        }
        self.authed = Some(authed);
    }

    async fn token(&mut self, user: &str, token: &str) -> Result<Auth, russh::Error> {
        match self.inner.verifier.verify(token.trim()).await {
            Ok(principal) => self.authenticate(user, principal).await,
            Err(e) => {
                info!(peer = %self.peer, error = %e, "ssh login with an invalid token");
                Ok(Auth::reject())
            }
        }
    }
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        self.token(user, password).await
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let answer = response.and_then(|mut r| r.next());
        match answer {
            Some(token) => {
                let token = String::from_utf8_lossy(&token).into_owned();
                self.token(user, &token).await
            }
            None => Ok(Auth::Partial {
                name: "Portcullis".into(),
                instructions: "Paste a token (`portcullis login` prints one).".into(),
                prompts: vec![("Token: ".into(), false)].into(),
            }),
        }
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        // Plain keys mean nothing here: only certificates this gateway
        // signed (checked in `auth_openssh_certificate`). An offer cannot
        // tell a certificate from its key, so every offer goes on to here.
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let verifier = &self.inner.verifier;
        match self
            .inner
            .ca
            .verify(certificate, |issuer| verifier.trusts(issuer))
        {
            Ok(principal) => self.authenticate(user, principal).await,
            Err(e) => {
                info!(peer = %self.peer, error = %e, "ssh login with a certificate refused");
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        if let Some(authed) = &self.authed {
            let _ = authed.handle.set(session.handle());
            if authed.refused.is_none() {
                if let Some(gate_session) = &authed.session {
                    let observer = gate_session.lock().await.observer();
                    let watcher = tokio::spawn(recheck(
                        self.inner.gate.clone(),
                        observer,
                        authed.standing.clone(),
                        session.handle(),
                    ));
                    if let Ok(mut slot) = authed.watcher.lock() {
                        *slot = Some(watcher);
                    }
                }
            }
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(authed) = self.authed.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(session_channel(authed, channel, session.handle()));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(authed) = self.authed.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let forward = Forward {
            direction: "local".into(),
            host: host_to_connect.to_string(),
            port: port_to_connect,
        };
        let Some(standing) =
            forward_allowed(&authed, u32::from(channel.id()), forward.clone()).await
        else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let (host, originator) = (host_to_connect.to_string(), originator_address.to_string());
        tokio::spawn(async move {
            let _standing = standing;
            let upstream = match authed.upstream().await {
                Ok(upstream) => upstream,
                Err(e) => {
                    info!(error = %e, "forwarding refused: the target is unreachable");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                    return;
                }
            };
            let target = match upstream
                .channel_open_direct_tcpip(host, port_to_connect, originator, originator_port)
                .await
            {
                Ok(target) => target,
                Err(e) => {
                    info!(error = %e, "the target could not open the forwarded connection");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                    return;
                }
            };
            reply.accept().await;
            relay_forward(&authed, &forward, channel, target).await;
        });
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(authed) = self.authed.clone() else {
            return Ok(false);
        };
        let forward = Forward {
            direction: "remote".into(),
            host: address.to_string(),
            port: *port,
        };
        // Global requests have no channel: audited on channel 0.
        let Some(standing) = forward_allowed(&authed, 0, forward).await else {
            return Ok(false);
        };
        if let Ok(mut remote) = authed.remote_forwards.lock() {
            remote.push(standing);
        }
        let upstream = match authed.upstream().await {
            Ok(upstream) => upstream,
            Err(e) => {
                info!(error = %e, "remote forwarding refused: the target is unreachable");
                return Ok(false);
            }
        };
        match upstream.tcpip_forward(address.to_string(), *port).await {
            Ok(bound) => {
                if *port == 0 {
                    *port = bound;
                }
                Ok(true)
            }
            Err(e) => {
                info!(error = %e, "the target refused the remote forward");
                Ok(false)
            }
        }
    }

    /// Forwarding to or from a Unix socket (`ssh -L port:/path`, `-R
    /// /path:...`) is refused, and the refusal audited: a policy's
    /// `forward` names a host and a port.
    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        socket_forward_refused(
            self.authed.as_ref(),
            u32::from(channel.id()),
            "local",
            socket_path,
        )
        .await;
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        socket_forward_refused(self.authed.as_ref(), 0, "remote", socket_path).await;
        Ok(false)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(Ok(upstream)) = self.authed.as_ref().and_then(|a| a.upstream.get()).cloned()
        else {
            return Ok(false);
        };
        Ok(upstream
            .cancel_tcpip_forward(address.to_string(), port)
            .await
            .is_ok())
    }

    // The requests of a session channel are answered here; the channel's
    // task sees them too, decides, and tells the client on stderr when it
    // refuses (with exit status 126), as OpenSSH shows nothing for a
    // failed request.
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let detail =
            serde_json::json!({"kind": "x11", "reason": "X11 forwarding is not supported"});
        forward_refused(self.authed.as_ref(), u32::from(channel), detail).await;
        session.channel_failure(channel)
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let detail = serde_json::json!({"kind": "agent", "reason": "agent forwarding is not supported: the gateway holds the target's credentials"});
        forward_refused(self.authed.as_ref(), u32::from(channel), detail).await;
        Ok(false)
    }

    /// `ssh -w` (a tunnel device, `tun@openssh.com`) and any other channel
    /// type the gateway does not know: refused by the SSH library, audited
    /// here.
    async fn channel_open_unknown(
        &mut self,
        channel_type: &str,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let reason = match channel_type {
            "tun@openssh.com" => "tunnel devices (`ssh -w`) are not supported".to_string(),
            _ => format!("channels of type `{channel_type}` are not supported"),
        };
        let detail =
            serde_json::json!({"kind": "channel", "channel_type": channel_type, "reason": reason});
        forward_refused(self.authed.as_ref(), 0, detail).await;
        Ok(())
    }
}

/// Decides the connection's `connect`, and each shell and forward it holds
/// open, again whenever the policy changes or an access grant starts or
/// ends, and disconnects it, saying why, when one is no longer allowed (or
/// cannot be checked), or when its token expires.
async fn recheck(
    gate: portcullis_gate::Gate,
    session: GateSession,
    standing: Standings,
    handle: server::Handle,
) {
    let mut changes = gate.policy_changes();
    let mut grants = gate.grant_changes();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Ten years at most: far from overflowing a deadline.
    let left = session
        .principal
        .expires_at
        .saturating_sub(now)
        .min(10 * 365 * 86_400);
    let expiry = tokio::time::sleep(std::time::Duration::from_secs(left));
    tokio::pin!(expiry);
    let reason = loop {
        let changed = tokio::select! {
            changed = changes.changed() => changed,
            changed = grants.changed() => changed,
            () = &mut expiry => break "the token this session logged in with has expired".to_string(),
        };
        if changed.is_err() {
            return;
        }
        match gate.recheck(&session).await {
            Ok(decision) if decision.is_allowed() => {}
            Ok(decision) => break portcullis_gate::revoked_reason(&session.target.name, &decision),
            Err(e) => break format!("the session is ended: {e}"),
        }
        if let Some(reason) = standing_refused(&gate, &session, &standing).await {
            break reason;
        }
    };
    info!(session = %session.id, %reason, "ssh session ended by the gateway");
    standing.ended.store(true, Ordering::SeqCst);
    let _ = handle
        .disconnect(
            russh::Disconnect::ByApplication,
            format!("portcullis: {reason}"),
            "en".into(),
        )
        .await;
}

/// Why a shell or forward the connection holds open may no longer stand
/// under the policy and grants in force now, if so.
async fn standing_refused(
    gate: &portcullis_gate::Gate,
    session: &GateSession,
    standing: &Standings,
) -> Option<String> {
    let held = standing.snapshot();
    match gate
        .first_fallen(session, held.iter().map(portcullis_gate::held))
        .await
    {
        Ok(None) => None,
        Ok(Some((action, now))) => Some(format!(
            "{} this connection holds open is no longer allowed: {}",
            held_open(action),
            now.reason
        )),
        Err(e) => Some(format!("the session is ended: {e}")),
    }
}

/// What a connection holds open under `action`, in words.
fn held_open(action: &Action) -> String {
    match action {
        Action::Forward(f) => format!("the {} forward to {}:{}", f.direction, f.host, f.port),
        Action::Exec(command) => format!("the command `{}`", command.text),
        Action::Sftp(op) => format!("the SFTP file `{}` open for {}", op.path, op.operation),
        _ => "the shell".to_string(),
    }
}

/// Decides a forwarding; `false` for anything but allow (a hold cannot
/// wait in a channel open: ask for access with `portcullis request`).
async fn forward_allowed(authed: &Arc<Authed>, channel: u32, forward: Forward) -> Option<Standing> {
    if let Some(reason) = &authed.refused {
        info!(%reason, "forwarding refused");
        return None;
    }
    let text = format!("{} {}:{}", forward.direction, forward.host, forward.port);
    let actions = [Action::Forward(forward)];
    let seen = authed.inner.gate.generations();
    let decided = match authed.check(channel, &actions).await {
        Ok(decided) => decided,
        Err(e) => {
            warn!(error = %e, "forwarding refused");
            return None;
        }
    };
    let _ = authed.record(statement("forward", &text, &decided[0]));
    if !decided[0].is_allowed() {
        info!(forward = %text, reason = %decided[0].reason, "forwarding refused");
        return None;
    }
    match authed.stand(seen, &actions, &decided).await {
        Ok(mut standing) => standing.pop(),
        Err(reason) => {
            info!(forward = %text, %reason, "forwarding refused");
            None
        }
    }
}

/// Audits a refused forward to or from a Unix socket.
async fn socket_forward_refused(
    authed: Option<&Arc<Authed>>,
    channel: u32,
    direction: &str,
    path: &str,
) {
    let reason = "forwarding to or from a Unix socket is not supported: forward a TCP port";
    let detail = serde_json::json!({"direction": direction, "socket": path, "reason": reason});
    forward_refused(authed, channel, detail).await;
}

/// Audits a forward refused whatever the policy says: agent, X11, a Unix
/// socket, a tunnel device. `detail` holds its `reason`.
async fn forward_refused(authed: Option<&Arc<Authed>>, channel: u32, detail: serde_json::Value) {
    info!(%detail, "forwarding refused");
    if let Some(authed) = authed {
        if let Err(e) = authed.event(channel, "forward.refused", detail).await {
            warn!(error = %e, "a refused forward was not audited");
        }
    }
}

/// At most this many session channels of one client connection are open on
/// the target at once, as sshd's default `MaxSessions`.
const MAX_SESSIONS: usize = 10;
/// How long a session channel waits for one of those to end.
const SESSION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Connections whose channel ended kept for the next channels; those beyond
/// are closed.
const MAX_IDLE: usize = 2;

/// The gateway's connections to the target for the session channels of one
/// client connection. Each carries one session channel at a time: russh
/// queues a channel's data inside its connection's loop, so a channel whose
/// reader stalls (a paused pager, a pipe nobody drains) would hold up every
/// other channel sharing its connection. A connection whose channel ended
/// waits here for the next one (up to [`MAX_IDLE`] of them), so channels
/// opened one after another (a ControlMaster, Ansible) reuse it.
struct SessionUpstreams {
    idle: Mutex<Vec<Arc<Upstream>>>,
    /// One for each channel in use.
    permits: Arc<tokio::sync::Semaphore>,
}

impl Default for SessionUpstreams {
    fn default() -> Self {
        SessionUpstreams {
            idle: Mutex::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_SESSIONS)),
        }
    }
}

/// One session channel's connection to the target; back to the pool when
/// dropped, or closed if the target ended it or enough wait there.
struct Lease {
    pool: Arc<SessionUpstreams>,
    upstream: Arc<Upstream>,
    /// Whether an earlier channel used it.
    reused: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::ops::Deref for Lease {
    type Target = Upstream;

    fn deref(&self) -> &Upstream {
        &self.upstream
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut idle) = self.pool.idle.lock() {
            if !self.upstream.is_closed() && idle.len() < MAX_IDLE {
                idle.push(self.upstream.clone());
            }
        }
    }
}

/// `ssh -R`: connections the target accepts, handed to the client.
#[derive(Clone)]
pub(crate) struct RemoteForwards {
    authed: std::sync::Weak<Authed>,
}

impl RemoteForwards {
    pub(crate) fn open(
        &self,
        target: Channel<russh::client::Msg>,
        address: String,
        port: u32,
        originator: String,
        originator_port: u32,
    ) {
        let authed = self.authed.clone();
        tokio::spawn(async move {
            let Some(authed) = authed.upgrade() else {
                return;
            };
            let Some(handle) = authed.handle.get() else {
                return;
            };
            let forward = Forward {
                direction: "remote".into(),
                host: address.clone(),
                port,
            };
            let client = match handle
                .channel_open_forwarded_tcpip(address, port, originator, originator_port)
                .await
            {
                Ok(client) => client,
                Err(e) => {
                    debug!(error = %e, "the client refused a remote-forwarded connection");
                    return;
                }
            };
            relay_forward(&authed, &forward, client, target).await;
        });
    }
}

/// Moves a forwarded connection's bytes both ways until both sides close,
/// then audits which forward it was and how many bytes went each way.
async fn relay_forward(
    authed: &Authed,
    forward: &Forward,
    client: Channel<Msg>,
    target: Channel<russh::client::Msg>,
) {
    let id = client.id();
    let mut client = client.into_stream();
    let mut target = target.into_stream();
    let moved = tokio::io::copy_bidirectional(&mut client, &mut target).await;
    let detail = match moved {
        Ok((to_target, to_client)) => serde_json::json!({
            "forward": forward,
            "bytes_to_target": to_target,
            "bytes_to_client": to_client,
        }),
        // A side that broke off: the counts are lost with it.
        Err(e) => serde_json::json!({ "forward": forward, "error": e.to_string() }),
    };
    let _ = authed.event(u32::from(id), "forward.close", detail).await;
}

/// What a session channel asked to run.
enum Start {
    Exec(String),
    Shell,
    Subsystem(String),
}

struct PtyRequest {
    term: String,
    cols: u32,
    rows: u32,
    pix_width: u32,
    pix_height: u32,
    modes: Vec<(Pty, u32)>,
}

type ToClient = russh::ChannelWriteHalf<Msg>;

/// Refuses a session channel: the reason on stderr, then `status`.
async fn refuse(to_client: &ToClient, reason: &str, status: u32) {
    let line = format!("portcullis: {reason}\r\n");
    let _ = to_client.extended_data(1, line.as_bytes()).await;
    let _ = to_client.exit_status(status).await;
    let _ = to_client.eof().await;
    let _ = to_client.close().await;
}

async fn session_channel(authed: Arc<Authed>, channel: Channel<Msg>, handle: server::Handle) {
    let id = channel.id();
    let (mut from_client, to_client) = channel.split();
    let mut pty = None;
    let mut env = Vec::new();
    let start = loop {
        match from_client.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            }) => {
                pty = Some(PtyRequest {
                    term,
                    cols: col_width,
                    rows: row_height,
                    pix_width,
                    pix_height,
                    modes: terminal_modes,
                })
            }
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => {
                if let Some(pty) = &mut pty {
                    pty.cols = col_width;
                    pty.rows = row_height;
                }
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => {
                // Only the locale, and only one read as UTF-8: a variable
                // such as BASH_ENV or LD_PRELOAD would run what no policy
                // saw, and a GBK locale would make the shell read the line
                // differently from the gateway.
                if (variable_name == "LANG" || variable_name.starts_with("LC_"))
                    && crate::command::utf8_locale(&variable_value)
                {
                    env.push((variable_name, variable_value));
                }
            }
            Some(ChannelMsg::Exec { command, .. }) => match String::from_utf8(command) {
                // A NUL ends the line for the target's shell: refused rather
                // than decided differently from what would run.
                Ok(line) if !line.contains('\0') => break Start::Exec(line),
                _ => {
                    let reason = "the command line is not UTF-8 text, or holds a NUL byte";
                    let detail = serde_json::json!({ "reason": reason });
                    let _ = authed.event(u32::from(id), "exec.refused", detail).await;
                    return refuse(&to_client, reason, REFUSED).await;
                }
            },
            Some(ChannelMsg::RequestShell { .. }) => break Start::Shell,
            Some(ChannelMsg::RequestSubsystem { name, .. }) => break Start::Subsystem(name),
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    if let Some(reason) = &authed.refused {
        return refuse(&to_client, reason, REFUSED).await;
    }
    let mut early = Vec::new();
    let (kind, _standing) = match decide_start(
        &authed,
        id,
        &start,
        &mut from_client,
        &to_client,
        pty.is_some(),
        &mut early,
    )
    .await
    {
        Ok(started) => started,
        Err((reason, status)) => return refuse(&to_client, &reason, status).await,
    };
    // SFTP goes to the target without a terminal: its line discipline would
    // rewrite the stream after the gateway read it (found in attack: erase
    // characters in a WRITE's data deleted its header, and the target read
    // an OPEN and a WRITE of any path that no policy saw).
    if kind == Kind::Sftp {
        pty = None;
    }
    let mut fresh = false;
    let (upstream, target) = loop {
        let upstream = match authed.session_upstream(fresh).await {
            Ok(upstream) => upstream,
            Err(e) => return refuse(&to_client, &e, UNREACHABLE).await,
        };
        match upstream.channel_open_session().await {
            Ok(target) => break (upstream, target),
            // A connection kept from an earlier channel may have been
            // closed by the target meanwhile: one more try, on a new one.
            Err(_) if upstream.reused => fresh = true,
            Err(e) => {
                let reason = format!("the target did not open a session: {e}");
                return refuse(&to_client, &reason, UNREACHABLE).await;
            }
        }
    };
    if let Some(pty) = &pty {
        if let Some(recorder) = &authed.recorder {
            let _ = recorder.resize(&Resize {
                channel: u32::from(id),
                cols: pty.cols,
                rows: pty.rows,
            });
        }
        let _ = target
            .request_pty(
                false,
                &pty.term,
                pty.cols,
                pty.rows,
                pty.pix_width,
                pty.pix_height,
                &pty.modes,
            )
            .await;
    }
    for (name, value) in env {
        let _ = target.set_env(false, name, value).await;
    }
    let started = match &start {
        Start::Exec(line) => target.exec(false, line.as_bytes()).await,
        Start::Shell => target.request_shell(false).await,
        Start::Subsystem(name) => target.request_subsystem(false, name.as_str()).await,
    };
    if let Err(e) = started {
        // Closed, so that the connection goes back to the pool clean.
        let _ = target.close().await;
        let reason = format!("the target did not start the session: {e}");
        return refuse(&to_client, &reason, UNREACHABLE).await;
    }
    let client = ClientSide {
        id,
        from: from_client,
        to: to_client,
        early,
        handle,
    };
    let followed = pty.as_ref().is_none_or(|pty| modes_followed(&pty.modes));
    bridge(authed, kind, client, target, pty.is_some(), followed).await;
    drop(upstream);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    Shell,
    Sftp,
}

/// Decides what a session channel starts. `Err` is the refusal for the
/// client and the exit status.
async fn decide_start(
    authed: &Arc<Authed>,
    id: ChannelId,
    start: &Start,
    from_client: &mut russh::ChannelReadHalf,
    to_client: &ToClient,
    pty: bool,
    early: &mut Vec<ChannelMsg>,
) -> Result<(Kind, Vec<Standing>), (String, u32)> {
    let fail = |e: String| (e, REFUSED);
    match start {
        Start::Exec(line) => {
            let commands = match crate::command::parse(line) {
                Ok(commands) => commands,
                Err(reason) => {
                    authed
                        .event(
                            u32::from(id),
                            "exec.refused",
                            serde_json::json!({"line": line, "reason": reason}),
                        )
                        .await
                        .map_err(fail)?;
                    authed
                        .record(Statement {
                            phase: "exec".into(),
                            text: line.clone(),
                            effect: "deny".into(),
                            policies: Vec::new(),
                            reason: reason.clone(),
                            parameters: Vec::new(),
                            parameters_withheld: false,
                        })
                        .map_err(fail)?;
                    return Err((format!("`{line}` refused: {reason}"), REFUSED));
                }
            };
            let actions: Vec<Action> = commands.iter().cloned().map(Action::Exec).collect();
            let seen = authed.inner.gate.generations();
            let decisions = authed.check(u32::from(id), &actions).await.map_err(fail)?;
            for (command, decision) in commands.iter().zip(&decisions) {
                authed
                    .record(statement("exec", &command.text, decision))
                    .map_err(fail)?;
            }
            if let Some((command, decision)) = commands
                .iter()
                .zip(&decisions)
                .find(|(_, d)| d.effect == Effect::Deny)
            {
                return Err((
                    format!("`{}` refused: {}", command.text, decision.reason),
                    REFUSED,
                ));
            }
            let holds: Vec<&Decision> = decisions
                .iter()
                .filter(|d| d.effect == Effect::Hold)
                .collect();
            // One request covers one set of approvers.
            if holds
                .windows(2)
                .any(|pair| pair[0].approval != pair[1].approval)
            {
                return Err((
                    "the commands of this line need approval from different groups: run them one by one".into(),
                    REFUSED,
                ));
            }
            if let Some(decision) = holds.first() {
                let request =
                    hold(authed, line, decision, from_client, to_client, pty, early).await?;
                run_approved(authed, id, request, &actions, &decisions, to_client).await?;
            }
            // A command runs what it is given for as long as it runs (`bash`,
            // `tail -f`): it stands only while its decision would still allow it.
            let standing = authed
                .stand(seen, &actions, &decisions)
                .await
                .map_err(fail)?;
            Ok((Kind::Exec, standing))
        }
        Start::Shell => {
            let seen = authed.inner.gate.generations();
            let decisions = authed
                .check(u32::from(id), &[Action::Shell])
                .await
                .map_err(fail)?;
            let decision = &decisions[0];
            authed
                .record(statement("shell", "shell", decision))
                .map_err(fail)?;
            // A shell runs what is typed into it for as long as it is
            // open: it stands only while its decision would still allow it.
            let standing = || async {
                authed
                    .stand(seen, &[Action::Shell], &decisions)
                    .await
                    .map_err(fail)
            };
            match decision.effect {
                Effect::Allow => Ok((Kind::Shell, standing().await?)),
                Effect::Deny => Err((format!("a shell is refused: {}", decision.reason), REFUSED)),
                Effect::Hold => {
                    let request = hold(
                        authed,
                        "interactive shell",
                        decision,
                        from_client,
                        to_client,
                        pty,
                        early,
                    )
                    .await?;
                    run_approved(authed, id, request, &[Action::Shell], &decisions, to_client)
                        .await?;
                    Ok((Kind::Shell, standing().await?))
                }
            }
        }
        Start::Subsystem(name) if name == "sftp" => {
            authed
                .event(u32::from(id), "sftp.start", serde_json::json!({}))
                .await
                .map_err(fail)?;
            Ok((Kind::Sftp, Vec::new()))
        }
        Start::Subsystem(name) => Err((
            format!("the subsystem `{name}` is not served through the gateway"),
            REFUSED,
        )),
    }
}

/// An approved request's line or shell: decided again under the policy
/// and grants in force now (a grant may have ended, a policy changed while
/// the request waited), then recorded as run before it runs.
async fn run_approved(
    authed: &Arc<Authed>,
    id: ChannelId,
    request: i64,
    actions: &[Action],
    decided: &[Decision],
    to_client: &ToClient,
) -> Result<(), (String, u32)> {
    let Some(session) = &authed.session else {
        return Err(("no session".into(), REFUSED));
    };
    let now = authed
        .check(u32::from(id), actions)
        .await
        .map_err(|e| (e, REFUSED))?;
    for ((action, then), now) in actions.iter().zip(decided).zip(&now) {
        portcullis_gate::still_allowed(then, now).map_err(|why| {
            let what = match action {
                Action::Exec(command) => format!("`{}`", command.text),
                _ => "the shell".to_string(),
            };
            (format!("{what} (request {request}): {why}"), REFUSED)
        })?;
    }
    let session = session.lock().await;
    authed
        .inner
        .gate
        .approved_statement_runs(&session, request)
        .await
        .map_err(|e| {
            (
                format!("approval request {request}: {e}; nothing was run"),
                REFUSED,
            )
        })?;
    let _ = to_client
        .extended_data(
            1,
            format!("portcullis: approved (request {request})\r\n").as_bytes(),
        )
        .await;
    Ok(())
}

/// Waits for a reviewer. `Ok` is the id of the approved request, which
/// [`run_approved`] decides again before it runs.
async fn hold(
    authed: &Arc<Authed>,
    text: &str,
    decision: &Decision,
    from_client: &mut russh::ChannelReadHalf,
    to_client: &ToClient,
    pty: bool,
    early: &mut Vec<ChannelMsg>,
) -> Result<i64, (String, u32)> {
    use portcullis_gate::approval::Status;
    let Some(session) = &authed.session else {
        return Err(("no session".into(), REFUSED));
    };
    let held = {
        let session = session.lock().await;
        authed
            .inner
            .gate
            .hold(
                &session,
                portcullis_gate::Asked {
                    text: text.to_string(),
                    ..Default::default()
                },
                decision,
            )
            .await
    };
    let mut held = held.map_err(|e| {
        (
            format!("`{text}` could not be held for approval: {e}"),
            REFUSED,
        )
    })?;
    let groups = decision
        .approval
        .as_ref()
        .map(|a| a.groups.join(", "))
        .unwrap_or_default();
    let notice = format!(
        "portcullis: `{text}` is held for approval by {groups}: request {} — {}\r\nportcullis: {}; waiting (Ctrl-C withdraws the request)\r\n",
        held.id, held.url, decision.reason
    );
    let _ = to_client.extended_data(1, notice.as_bytes()).await;
    let mut early_bytes = 0usize;
    let decided = loop {
        tokio::select! {
            decided = held.wait() => break decided,
            msg = from_client.wait() => match msg {
                // Ctrl-C at a terminal.
                Some(ChannelMsg::Data { data }) if pty && data.contains(&3) => {
                    break held.cancel("the client withdrew the command").await;
                }
                Some(ChannelMsg::Signal { .. } | ChannelMsg::Close) | None => {
                    break held.cancel("the client left").await;
                }
                // Input (and its end) goes to the command once it runs.
                Some(msg @ (ChannelMsg::Data { .. } | ChannelMsg::Eof | ChannelMsg::WindowChange { .. })) => {
                    if let ChannelMsg::Data { data } = &msg {
                        early_bytes += data.len();
                    }
                    early.push(msg);
                    if early.len() > MAX_EARLY || early_bytes > MAX_EARLY_BYTES {
                        break held.cancel("the client sent too much input while waiting").await;
                    }
                }
                _ => continue,
            },
        }
    };
    let request = decided.map_err(|e| {
        (
            format!("approval request {}: {e}; nothing was run", held.id),
            REFUSED,
        )
    })?;
    let outcome = request.outcome.clone().unwrap_or_default();
    match request.status {
        Status::Approved => Ok(request.id),
        Status::Denied => Err((
            format!(
                "denied by a reviewer: {outcome} (request {}); nothing was run",
                request.id
            ),
            REFUSED,
        )),
        _ => Err((
            format!(
                "approval request {} ended: {outcome}; nothing was run",
                request.id
            ),
            REFUSED,
        )),
    }
}

fn statement(phase: &str, text: &str, decision: &Decision) -> Statement {
    Statement {
        phase: phase.into(),
        text: text.into(),
        effect: decision.effect.as_str().into(),
        policies: decision.policies.clone(),
        reason: decision.reason.clone(),
        parameters: Vec::new(),
        parameters_withheld: false,
    }
}

/// The client's side of a session channel.
struct ClientSide {
    id: ChannelId,
    from: russh::ChannelReadHalf,
    to: ToClient,
    /// Messages read while the command was held, to replay first.
    early: Vec<ChannelMsg>,
    handle: server::Handle,
}

/// Moves a session channel's bytes both ways until either side closes.
async fn bridge(
    authed: Arc<Authed>,
    kind: Kind,
    client: ClientSide,
    target: Channel<russh::client::Msg>,
    terminal: bool,
    followed_modes: bool,
) {
    let ClientSide {
        id,
        from: mut from_client,
        to: to_client,
        early,
        handle,
    } = client;
    let (mut from_target, to_target) = target.split();
    let handles = Arc::new(Mutex::new(Handles::default()));
    // The terminal's current line, to tell a password prompt.
    let prompt = Arc::new(Mutex::new(String::new()));
    // SFTP answers the gateway gives itself, written between whole frames.
    let (inject, mut injected) = tokio::sync::mpsc::channel::<Bytes>(64);
    // Set when the target's side is over (an exit status, or the channel
    // closed): it reads nothing more (see `send_to_target`).
    let (target_over, mut target_done) = tokio::sync::watch::channel(false);
    let mut down = {
        let authed = authed.clone();
        let handles = handles.clone();
        let prompt = prompt.clone();
        tokio::spawn(async move {
            let mut stream = sftp::Stream::default();
            // Refusals wait for the target's stream to be between frames.
            let mut queued: std::collections::VecDeque<Bytes> = Default::default();
            // The target's end of output, passed on after its exit status.
            // A client whose input is done closes the channel as soon as
            // output ends, and russh answers that close at once: an exit
            // status relayed after it would be lost (`ssh` exits 255).
            let mut eof_held = false;
            'relay: loop {
                let msg = tokio::select! {
                    msg = from_target.wait() => msg,
                    Some(frame) = injected.recv() => {
                        queued.push_back(frame);
                        while stream.at_boundary() {
                            let Some(frame) = queued.pop_front() else { break };
                            if to_client.data_bytes(frame).await.is_err() {
                                break 'relay;
                            }
                        }
                        continue;
                    }
                };
                // Said before anything is relayed to the client, which may
                // have to wait.
                if matches!(
                    msg,
                    Some(
                        ChannelMsg::ExitStatus { .. }
                            | ChannelMsg::ExitSignal { .. }
                            | ChannelMsg::Close
                    ) | None
                ) {
                    let _ = target_over.send(true);
                }
                match msg {
                    Some(ChannelMsg::Data { data }) if kind == Kind::Sftp => {
                        let mut pieces = Vec::new();
                        if let Err(e) = stream.feed(data, sftp::untouched_response, &mut pieces) {
                            warn!(error = %e, "the target's SFTP stream is malformed");
                            let _ = to_client.close().await;
                            return;
                        }
                        for piece in pieces {
                            let bytes = match piece {
                                Piece::Pass(bytes) => bytes,
                                Piece::Frame(frame) => {
                                    if let Ok(mut h) = handles.lock() {
                                        h.response(&frame);
                                    }
                                    frame
                                }
                                Piece::Starts { kind, id } => {
                                    if let Ok(mut h) = handles.lock() {
                                        h.starts_response(kind, id);
                                    }
                                    continue;
                                }
                            };
                            if to_client.data_bytes(bytes).await.is_err() {
                                break 'relay;
                            }
                        }
                        while stream.at_boundary() {
                            let Some(frame) = queued.pop_front() else {
                                break;
                            };
                            if to_client.data_bytes(frame).await.is_err() {
                                break 'relay;
                            }
                        }
                    }
                    Some(ChannelMsg::Data { data }) => {
                        if let Some(recorder) = &authed.recorder {
                            if let Err(e) = recorder.output(u32::from(id), &data) {
                                warn!(error = %e, "the session cannot be recorded: closing it");
                                let _ = to_client.close().await;
                                return;
                            }
                        }
                        if kind == Kind::Shell {
                            if let Ok(mut line) = prompt.lock() {
                                current_line(&mut line, &data);
                            }
                        }
                        if !data.is_empty() && to_client.data_bytes(data).await.is_err() {
                            break;
                        }
                    }
                    Some(ChannelMsg::ExtendedData { data, ext }) => {
                        if let Some(recorder) = &authed.recorder {
                            if let Err(e) = recorder.output(u32::from(id), &data) {
                                warn!(error = %e, "the session cannot be recorded: closing it");
                                let _ = to_client.close().await;
                                return;
                            }
                        }
                        if to_client.extended_data_bytes(ext, data).await.is_err() {
                            break;
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        let _ = to_client.exit_status(exit_status).await;
                        if std::mem::take(&mut eof_held) {
                            let _ = to_client.eof().await;
                        }
                    }
                    Some(ChannelMsg::ExitSignal {
                        signal_name,
                        core_dumped,
                        error_message,
                        lang_tag,
                    }) => {
                        let _ = handle
                            .exit_signal_request(
                                id,
                                signal_name,
                                core_dumped,
                                error_message,
                                lang_tag,
                            )
                            .await;
                        if std::mem::take(&mut eof_held) {
                            let _ = to_client.eof().await;
                        }
                    }
                    Some(ChannelMsg::Eof) => eof_held = true,
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                }
            }
            if eof_held {
                let _ = to_client.eof().await;
            }
            let _ = to_client.close().await;
        })
    };
    let mut stream = sftp::Stream::default();
    // Without a terminal the shell reads the bytes as they come: no line
    // editing to follow (`rm ... #^Uls` runs rm).
    let mut typed = Typed {
        editing: terminal,
        unfollowed: !followed_modes,
        ..Typed::default()
    };
    // Typed lines are audited in the order typed, by one task; a client
    // typing faster than the audit log takes them waits.
    let (typed_lines, typed_writer) = if kind == Kind::Shell {
        let (lines, mut queue) = tokio::sync::mpsc::channel::<String>(256);
        let authed = authed.clone();
        let writer = tokio::spawn(async move {
            while let Some(line) = queue.recv().await {
                let detail = serde_json::json!({"line": line, "best_effort": true});
                if let Err(e) = authed.event(u32::from(id), "shell.typed", detail).await {
                    warn!(error = %e, "a typed line was not audited");
                }
            }
        });
        (Some(lines), Some(writer))
    } else {
        (None, None)
    };
    let mut early = early.into_iter();
    let mut client_closed = false;
    let mut down_done = false;
    loop {
        let msg = match early.next() {
            Some(msg) => msg,
            None => tokio::select! {
                biased;
                msg = from_client.wait() => match msg {
                    Some(msg) => msg,
                    None => {
                        client_closed = true;
                        break;
                    }
                },
                // The channel is closed toward the client: russh ignores
                // the client's answering close, so `wait` would never end.
                _ = &mut down => {
                    down_done = true;
                    break;
                }
            },
        };
        match msg {
            ChannelMsg::Data { data } if kind == Kind::Sftp => {
                let mut pieces = Vec::new();
                let passed = match stream.feed(data, sftp::untouched_request, &mut pieces) {
                    Ok(()) => sftp_requests(&authed, id, pieces, &handles, &inject).await,
                    Err(e) => Err(e),
                };
                let passed = match passed {
                    Ok(passed) => passed,
                    Err(e) => {
                        warn!(error = %e, "sftp session closed");
                        break;
                    }
                };
                let mut gone = false;
                for bytes in passed {
                    if send_to_target(&to_target, bytes, &mut target_done)
                        .await
                        .is_err()
                    {
                        gone = true;
                        break;
                    }
                }
                if gone {
                    break;
                }
            }
            ChannelMsg::Data { data } => {
                if kind == Kind::Shell {
                    keep_typed(typed.feed(&data), &prompt, &authed, typed_lines.as_ref()).await;
                }
                if !data.is_empty()
                    && send_to_target(&to_target, data, &mut target_done)
                        .await
                        .is_err()
                {
                    break;
                }
            }
            ChannelMsg::Eof => {
                // A shell runs a last line that has no line end when its
                // input ends (found in attack: it went unaudited).
                if kind == Kind::Shell {
                    keep_typed(typed.end(), &prompt, &authed, typed_lines.as_ref()).await;
                }
                let _ = to_target.eof().await;
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Some(recorder) = &authed.recorder {
                    let _ = recorder.resize(&Resize {
                        channel: u32::from(id),
                        cols: col_width,
                        rows: row_height,
                    });
                }
                let _ = to_target
                    .window_change(col_width, row_height, pix_width, pix_height)
                    .await;
            }
            ChannelMsg::Signal { signal } => {
                let _ = to_target.signal(signal).await;
            }
            ChannelMsg::Close => {
                client_closed = true;
                break;
            }
            _ => {}
        }
    }
    // A command without a terminal outlives its channel on the target
    // (sshd hangs up only a terminal's), and one that writes nothing never
    // notices: when the gateway ended the connection, what it started is
    // signalled to end, as a terminal's hangup would.
    if authed.standing.ended.load(Ordering::SeqCst) && !*target_done.borrow() {
        for signal in [russh::Sig::HUP, russh::Sig::TERM] {
            let _ = to_target.signal(signal).await;
        }
        // What ignores those is killed a moment later.
        let over = tokio::time::timeout(KILL_AFTER, target_done.wait_for(|over| *over))
            .await
            .is_ok_and(|over| over.is_ok());
        if !over {
            let _ = to_target.signal(russh::Sig::KILL).await;
        }
    }
    if client_closed {
        // Nothing more goes to the client on this channel. The relay toward
        // it may be waiting for window the client will never give, while
        // the target's connection waits for the relay to take this
        // channel's next message (russh queues it inside the connection's
        // loop): stopping the relay frees the connection for the next
        // channel.
        down.abort();
    }
    let _ = to_target.close().await;
    if !down_done {
        let _ = down.await;
    }
    // The channel's typed lines are audited before it is told ended, a
    // last one without a line end included.
    if kind == Kind::Shell {
        keep_typed(typed.end(), &prompt, &authed, typed_lines.as_ref()).await;
    }
    drop(typed_lines);
    if let Some(writer) = typed_writer {
        let _ = writer.await;
    }
}

/// Records lines typed into a shell, and queues them for the audit log;
/// what is typed at a password prompt is not echoed, and not kept.
async fn keep_typed(
    lines: Vec<String>,
    prompt: &Mutex<String>,
    authed: &Authed,
    audit: Option<&tokio::sync::mpsc::Sender<String>>,
) {
    for line in lines {
        let secret = prompt.lock().is_ok_and(|p| asks_secret(&p));
        let line = if secret {
            format!(
                "(typed at a password prompt: not recorded; {} characters)",
                line.chars().count()
            )
        } else {
            line
        };
        let _ = authed.record(Statement {
            phase: "typed".into(),
            text: line.clone(),
            effect: "unchecked".into(),
            policies: Vec::new(),
            reason: String::new(),
            parameters: Vec::new(),
            parameters_withheld: false,
        });
        if let Some(audit) = audit {
            let _ = audit.send(line).await;
        }
    }
}

/// How long what a connection the gateway ended had started on the target
/// is given to end on a hangup and a terminate signal, before it is killed.
const KILL_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends the client's `bytes` on to the target, waiting for the target's
/// window, unless the target's side is over first (`done`): then they are
/// dropped, as sshd drops input to a command that has ended. Waiting on
/// would hold up the client's whole connection (russh queues a channel's
/// data inside the connection's loop), and with it the exit status and the
/// close on their way to the client. An error when the channel is gone.
async fn send_to_target(
    to_target: &russh::ChannelWriteHalf<russh::client::Msg>,
    bytes: Bytes,
    done: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), russh::Error> {
    if *done.borrow() {
        return Ok(());
    }
    tokio::select! {
        sent = to_target.data_bytes(bytes) => sent,
        // Over, or the relay toward the client is gone: either way the
        // target reads nothing more.
        _ = done.wait_for(|over| *over) => Ok(()),
    }
}

/// Audits why an SFTP session ends, and says it: the error that ends it.
async fn end_sftp(authed: &Arc<Authed>, id: ChannelId, reason: String) -> String {
    let detail = serde_json::json!({"reason": reason});
    match authed.event(u32::from(id), "sftp.ended", detail).await {
        Ok(()) => format!("the SFTP session is ended: {reason}"),
        Err(e) => e,
    }
}

/// Decides the whole SFTP requests among `pieces`; returns what may go to
/// the target, in order. Refused requests are answered through `inject`.
async fn sftp_requests(
    authed: &Arc<Authed>,
    id: ChannelId,
    pieces: Vec<Piece>,
    handles: &Arc<Mutex<Handles>>,
    inject: &tokio::sync::mpsc::Sender<Bytes>,
) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let frame = match piece {
            Piece::Pass(bytes) => {
                out.push(bytes);
                continue;
            }
            Piece::Starts { kind, id: request } => {
                let started = match handles.lock() {
                    Ok(mut h) => h.starts_request(kind, request),
                    Err(_) => return Err("internal error: the SFTP state is poisoned".into()),
                };
                if let Err(reason) = started {
                    return Err(end_sftp(authed, id, reason).await);
                }
                continue;
            }
            Piece::Frame(frame) => frame,
        };
        let request = match handles.lock() {
            Ok(mut h) => h.request(&frame),
            Err(_) => return Err("internal error: the SFTP state is poisoned".into()),
        };
        let refusal = match request {
            Request::Pass => {
                out.push(frame);
                continue;
            }
            Request::Refuse {
                id: request,
                reason,
            } => {
                authed
                    .event(
                        u32::from(id),
                        "sftp.refused",
                        serde_json::json!({"reason": reason}),
                    )
                    .await?;
                Some((request, reason))
            }
            Request::End { reason } => return Err(end_sftp(authed, id, reason).await),
            Request::Decide { id: request, ops } => {
                let actions: Vec<Action> = ops.iter().cloned().map(Action::Sftp).collect();
                let seen = authed.inner.gate.generations();
                let decisions = authed.check(u32::from(id), &actions).await?;
                for (op, decision) in ops.iter().zip(&decisions) {
                    let text = match &op.to {
                        Some(to) => format!("{} {} {}", op.operation, op.path, to),
                        None => format!("{} {}", op.operation, op.path),
                    };
                    authed.record(statement("sftp", &text, decision))?;
                }
                let mut refused = decisions.iter().find(|d| !d.is_allowed()).map(|d| {
                    let reason = if d.effect == Effect::Hold {
                        format!(
                            "needs approval ({}): ask for access with `portcullis request`",
                            d.reason
                        )
                    } else {
                        d.reason.clone()
                    };
                    (request, reason)
                });
                // An open file is read and written with no more decisions:
                // it stands, until closed, while its open would still be
                // allowed.
                let opens = handles.lock().is_ok_and(|h| h.opens(request));
                if refused.is_none() && opens {
                    match authed.stand(seen, &actions, &decisions).await {
                        Ok(standing) => {
                            if let Ok(mut h) = handles.lock() {
                                h.keep(request, Box::new(standing));
                            }
                        }
                        Err(reason) => refused = Some((request, reason)),
                    }
                }
                refused
            }
        };
        match refusal {
            None => out.push(frame),
            Some((request, reason)) => {
                if let Ok(mut h) = handles.lock() {
                    h.refused(request);
                }
                let status = sftp::permission_denied(request, &format!("portcullis: {reason}"));
                inject
                    .send(status)
                    .await
                    .map_err(|_| "the client's side is gone".to_string())?;
            }
        }
    }
    Ok(out)
}

/// Keeps the terminal's last line of output (its prompt), at most 200 bytes.
fn current_line(line: &mut String, output: &[u8]) {
    let text = String::from_utf8_lossy(output);
    match text.rfind(['\n', '\r']) {
        Some(at) => {
            line.clear();
            line.push_str(&text[at + 1..]);
        }
        None => line.push_str(&text),
    }
    if line.len() > 200 {
        let cut = line.len() - 200;
        let cut = (cut..line.len())
            .find(|&i| line.is_char_boundary(i))
            .unwrap_or(0);
        line.drain(..cut);
    }
}

/// Whether a prompt asks for something that must not be recorded: it ends
/// in a colon (`[sudo] password for deploy: `, `Enter passphrase for key
/// '...': `), as a shell's prompt does not (`deploy@web-1:/tmp/secret$ `),
/// and names a secret. The prompt is the user's to shape: a shell prompt
/// made to look like one is a `PS1=...` typed, and recorded, before.
fn asks_secret(prompt: &str) -> bool {
    let prompt = prompt.trim_end().to_lowercase();
    prompt.ends_with(':')
        && [
            "password",
            "passphrase",
            "passcode",
            "token",
            "secret",
            "pin",
        ]
        .iter()
        .any(|word| prompt.contains(word))
}

/// Lines typed at a prompt, as far as the bytes show them: best effort
/// (line editing, history and completion happen in the shell, unseen).
/// Without a terminal (`editing` false) nothing edits the line: every byte
/// up to a newline is what the shell reads. With one, a line on which a key
/// the gateway does not follow was pressed (any control key but Enter,
/// Backspace and Ctrl-U: cursor moves, cuts and yanks, history, completion,
/// operate-and-get-next, quoted insert) is marked: what ran may differ. A
/// line abandoned with Ctrl-C is told, and the next one marked: the
/// terminal interrupts on Ctrl-C only if its modes say so. A line longer
/// than [`MAX_TYPED`] is marked as cut. Once the terminal's or the shell's
/// input settings are not those followed (the client's terminal modes, or
/// a line typed with `stty`, `set -o`/`+o` or `bind`), every line is marked.
#[derive(Default)]
struct Typed {
    line: Vec<u8>,
    escape: bool,
    editing: bool,
    edited: bool,
    cut: bool,
    unfollowed: bool,
}

/// How a line edited with keys [`Typed`] does not follow is marked.
const EDITED: &str = " [edited with keys the gateway does not follow: what ran may differ]";
/// How a line longer than [`MAX_TYPED`] is marked.
const CUT: &str = " [cut: only its first 4096 bytes are kept, what ran may differ]";
/// How a line abandoned with Ctrl-C is marked.
const ABANDONED: &str =
    " [abandoned with Ctrl-C; if the terminal did not interrupt, it ran with the next line]";
/// How a line the input ended without a line end is marked.
const AT_END: &str = " [ended by the end of input, without a line end]";
/// How lines typed under input settings [`Typed`] does not follow are
/// marked.
const UNFOLLOWED: &str =
    " [typed under terminal or shell input settings the gateway does not follow: what ran may differ]";

impl Typed {
    fn feed(&mut self, data: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in data {
            if !self.editing {
                match b {
                    b'\n' => lines.extend(self.finish("")),
                    b => self.push(b),
                }
                continue;
            }
            if self.escape {
                // The end of an escape sequence (arrows, ...) is a letter or `~`.
                if b.is_ascii_alphabetic() || b == b'~' {
                    self.escape = false;
                }
                continue;
            }
            match b {
                0x1b => {
                    self.escape = true;
                    self.edited = true;
                }
                b'\r' | b'\n' => lines.extend(self.finish("")),
                0x7f | 0x08 => {
                    // One character: its continuation bytes, then its first.
                    // Over a character outside ASCII, the shell erases a
                    // character or a byte, as its locale says (found in
                    // attack: a lone continuation byte, then Backspace).
                    let mut erased = 0;
                    while let Some(b) = self.line.pop() {
                        erased += 1;
                        if b & 0xc0 != 0x80 {
                            if b >= 0x80 {
                                self.edited = true;
                            }
                            break;
                        }
                    }
                    if erased > 1 {
                        self.edited = true;
                    }
                }
                // Ctrl-C: the line is abandoned, if the terminal interrupts.
                0x03 if self.line.is_empty() && !self.edited => {}
                0x03 => {
                    lines.extend(self.finish(ABANDONED));
                    self.edited = true;
                }
                // Ctrl-U: the line is cut.
                0x15 => {
                    self.line.clear();
                    self.edited = true;
                }
                b if b < 0x20 => self.edited = true,
                b => self.push(b),
            }
        }
        lines
    }

    /// The input ended: a line typed without a line end, which a shell
    /// reading its input runs then, marked so.
    fn end(&mut self) -> Vec<String> {
        let blank = self.line.iter().all(u8::is_ascii_whitespace);
        if blank && !self.edited && !self.cut {
            self.line.clear();
            return Vec::new();
        }
        self.finish(AT_END).into_iter().collect()
    }

    fn push(&mut self, b: u8) {
        if self.line.len() < MAX_TYPED {
            self.line.push(b);
        } else {
            self.cut = true;
        }
    }

    /// The line ended: as text, marked as it needs to be, and `also`.
    fn finish(&mut self, also: &str) -> Option<String> {
        let bytes = std::mem::take(&mut self.line);
        let edited = std::mem::take(&mut self.edited);
        let cut = std::mem::take(&mut self.cut);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if text.trim().is_empty() && !edited && !cut && also.is_empty() {
            return None;
        }
        let unfollowed = self.unfollowed;
        // What changes how later lines are read (best effort: a line can
        // say so in ways this does not see).
        // Quotes and backslashes left out: `st''ty` is `stty` to the shell.
        let unquoted: String = text
            .chars()
            .filter(|c| !matches!(c, '\'' | '"' | '\\'))
            .collect();
        let words: Vec<&str> = unquoted
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '+' && c != '_')
            .collect();
        if words
            .iter()
            .any(|w| ["stty", "bind", "INPUTRC"].contains(w))
            || words.windows(2).any(|w| {
                w[0] == "set"
                    && (w[1].starts_with('-') || w[1].starts_with('+'))
                    && w[1].ends_with('o')
            })
        {
            self.unfollowed = true;
        }
        let mut line = text;
        for (marked, mark) in [
            (edited, EDITED),
            (cut, CUT),
            (unfollowed, UNFOLLOWED),
            (true, also),
        ] {
            if marked {
                line.push_str(mark);
            }
        }
        Some(line)
    }
}

/// Whether a client's terminal modes have the target's terminal read keys
/// as [`Typed`] follows them: Ctrl-C interrupts, DEL or Backspace erases,
/// Ctrl-U kills, Ctrl-D ends input, nothing else ends or edits a line (no
/// printable character is made a control key). A mode not sent keeps the
/// target's default, which does.
fn modes_followed(modes: &[(Pty, u32)]) -> bool {
    let disabled = |value: u32| value == 0 || value == 255;
    let control = |value: u32| value < 0x20 || value == 0x7f || disabled(value);
    modes.iter().all(|&(mode, value)| match mode {
        Pty::VINTR => value == 3,
        Pty::VERASE => value == 0x7f || value == 8,
        Pty::VKILL => value == 0x15,
        Pty::VEOF => value == 4,
        Pty::VEOL | Pty::VEOL2 => disabled(value),
        mode if (mode as u8) < 30 => control(value),
        // What changes the bytes the shell reads: carriage returns dropped
        // or made line feeds (found in attack: `stty igncr` on the client
        // joined two typed lines into one command), upper case made lower,
        // the eighth bit stripped.
        Pty::ISIG | Pty::ICANON | Pty::ICRNL | Pty::IEXTEN => value == 1,
        Pty::IGNCR | Pty::INLCR | Pty::IUCLC | Pty::ISTRIP | Pty::XCASE | Pty::PARMRK => value == 0,
        _ => true,
    })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::Typed;

    #[test]
    fn a_password_prompt_is_told() {
        let mut line = String::new();
        super::current_line(&mut line, b"Last login: today\r\n[sudo] password for ");
        super::current_line(&mut line, b"deploy: ");
        assert!(super::asks_secret(&line));
        super::current_line(&mut line, b"\r\ndeploy@web-1:~$ ");
        assert!(!super::asks_secret(&line));
        // A shell's prompt naming a secret is no password prompt.
        super::current_line(&mut line, b"\r\ndeploy@web-1:/tmp/secret-token$ ");
        assert!(!super::asks_secret(&line));
        super::current_line(&mut line, b"\r\nEnter PIN: ");
        assert!(super::asks_secret(&line));
    }

    #[test]
    fn a_last_line_without_a_line_end_is_kept_when_input_ends() {
        let mut typed = Typed::default();
        assert_eq!(typed.feed(b"echo a\ntouch x"), ["echo a"]);
        assert_eq!(typed.end(), [format!("touch x{}", super::AT_END)]);
        assert!(typed.end().is_empty());
        assert!(typed.feed(b"ls\n  ").len() == 1 && typed.end().is_empty());
    }

    #[test]
    fn typed_lines_follow_backspace_and_skip_escapes() {
        let mut typed = Typed {
            editing: true,
            ..Typed::default()
        };
        assert!(typed.feed(b"ls -x\x7fl").is_empty());
        assert_eq!(typed.feed(b"a\r"), ["ls -la"]);
        // Ctrl-C on an empty line is nothing; on a line, it is told, and
        // the next line marked (found in attack: with the terminal's
        // interrupt turned off, `touch x #^Cid` ran and `id` was audited).
        assert!(typed.feed(b"\x03").is_empty());
        assert_eq!(
            typed.feed(b"touch x #\x03id\r"),
            [
                format!("touch x #{}", super::ABANDONED),
                format!("id{}", super::EDITED)
            ]
        );
        // Text in any script; erasing a character outside ASCII marks the
        // line, as the shell's locale may erase a byte of it instead.
        assert_eq!(typed.feed("echo café\r".as_bytes()), ["echo café"]);
        assert_eq!(
            typed.feed("echo café\x7f\x7fé\r".as_bytes()),
            [format!("echo caé{}", super::EDITED)]
        );
        // Found in attack: cut, move and put back, and what ran was not
        // what was shown. Such a line is marked, and so is an arrow key
        // (history).
        assert_eq!(
            typed.feed(b"echo covert > /tmp/m; \x15ls\x01\x19\r"),
            [format!("ls{}", super::EDITED)]
        );
        assert_eq!(typed.feed(b"\x1b[A\r"), [super::EDITED.to_string()]);
        // Found in attack: Ctrl-O (operate-and-get-next) ran the line and
        // the backspaces after it erased it from the gateway's copy only;
        // Ctrl-X Ctrl-X moved the cursor. Every control key not followed
        // marks the line.
        for keys in [
            &b"touch x\x0f\x7f\x7f\x7f\x7f\x7f\x7f\x7fid\r"[..],
            b"/tmp/x\x18\x18touch \r",
        ] {
            let lines = typed.feed(keys);
            assert!(
                lines.len() == 1 && lines[0].ends_with(super::EDITED),
                "{lines:?}"
            );
        }
        // Without a terminal nothing edits: what bash reads is the line.
        let mut raw = Typed::default();
        assert_eq!(
            raw.feed(b"id > /tmp/x; ls -la #\x15ls -la\n"),
            ["id > /tmp/x; ls -la #\u{15}ls -la"]
        );
        // Found in attack: a long line was cut without a word, and what
        // came after its first 4096 bytes ran unseen.
        let long = format!("true{}; touch /tmp/x\n", " ".repeat(9000));
        let lines = raw.feed(long.as_bytes());
        assert!(
            lines.len() == 1 && lines[0].ends_with(super::CUT),
            "{lines:?}"
        );
    }

    /// Found in attack: with the client's terminal modes, or `stty` and
    /// `set +o emacs` typed in the shell, keys do other things than those
    /// followed: every line after is marked.
    #[test]
    fn lines_typed_under_settings_not_followed_are_marked() {
        use russh::Pty;
        assert!(super::modes_followed(&[
            (Pty::VINTR, 3),
            (Pty::VERASE, 0x7f),
            (Pty::VEOL, 255),
            (Pty::ISIG, 1),
            (Pty::ECHO, 0)
        ]));
        for modes in [
            [(Pty::VINTR, 255)],
            [(Pty::ISIG, 0)],
            [(Pty::VEOL, u32::from(b';'))],
            [(Pty::VWERASE, u32::from(b'a'))],
            [(Pty::VERASE, 0x15)],
            [(Pty::IGNCR, 1)],
            [(Pty::IUCLC, 1)],
            [(Pty::ICRNL, 0)],
        ] {
            assert!(!super::modes_followed(&modes), "{modes:?}");
        }
        let mut typed = Typed {
            editing: true,
            ..Typed::default()
        };
        assert_eq!(typed.feed(b"ls\r"), ["ls"]);
        let lines = typed.feed(b"stty -echo; set +o emacs\rtouch x\r");
        assert_eq!(lines[0], "stty -echo; set +o emacs");
        assert_eq!(lines[1], format!("touch x{}", super::UNFOLLOWED));
        let mut vi = Typed {
            editing: true,
            ..Typed::default()
        };
        let lines = vi.feed(b"set -o vi\rls\r");
        assert_eq!(lines[1], format!("ls{}", super::UNFOLLOWED));
        let mut quoted = Typed {
            editing: true,
            ..Typed::default()
        };
        let lines = quoted.feed(b"st''ty igncr\rls\r");
        assert_eq!(lines[1], format!("ls{}", super::UNFOLLOWED));
        // Found in attack: Backspace over a byte outside ASCII erases a
        // character or a byte, as the shell's locale says.
        let mut bytes = Typed {
            editing: true,
            ..Typed::default()
        };
        let lines = bytes.feed(b"echo hello;touch x\x80\x7f\r");
        assert!(lines[0].ends_with(super::EDITED), "{lines:?}");
        assert_eq!(
            bytes.feed("echo é\x7f\r".as_bytes())[0],
            format!("echo {}", super::EDITED)
        );
    }
}
