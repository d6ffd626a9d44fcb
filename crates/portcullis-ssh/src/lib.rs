//! The SSH adapter. OpenSSH clients connect with the target's name as their
//! user name and a token (password or keyboard-interactive) or a
//! certificate the gateway signed; the gateway logs in to the target with
//! the credentials it holds, after checking the target's pinned host key.
//! Every command, shell, forwarding and SFTP operation is decided by the
//! Gate before it reaches the target.
//!
//! Layout:
//! - [`command`]: what a command line runs, as the policy sees it.
//! - `connection`: the listener's side: authentication, channels,
//!   forwarding, the per-channel bridge to the target.
//! - `sftp`: reading SFTP requests as they pass.
//! - `upstream`: the gateway's login to the target.
//! - [`keys`]: the gateway's host key and user certificate authority.
//!
//! Architecture Invariant: nothing reaches the target before its decision
//! is durable in the audit log: a command line runs only when each of its
//! commands is allowed; an SFTP request goes only when allowed, and is
//! answered "permission denied" otherwise; a forward opens only when
//! allowed. Agent and X11 forwarding are always refused.
//!
//! Architecture Invariant: a shell's terminal output is in its recording
//! before the client gets it. What is typed at a prompt is audited as best
//! effort only: exec and SFTP are the enforced paths.

pub mod command;
mod connection;
pub mod keys;
mod sftp;
mod upstream;

pub use keys::CertificateAuthority;
pub use sftp::normalize as sftp_path;
pub use upstream::{Credential, SshTarget};

use portcullis_gate::Gate;
use portcullis_identity::Verifier;
use russh::keys::PrivateKey;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// How many messages a channel's queue holds before its connection waits
/// for the channel's reader. Windows open as the reader takes data (russh's
/// `window_on_consumption`), so a whole 8 MiB window of full packets is 256
/// messages and never waits; only a flood of tiny packets at a command that
/// does not read (more than this many) holds up its connection.
pub(crate) const CHANNEL_QUEUE: usize = 4096;

/// The ciphers the gateway speaks, in the order it prefers them: AES-GCM
/// first, which `aws-lc-rs` runs on the CPU's AES instructions (ChaCha20-Poly1305
/// spends most of a large transfer in Poly1305 there), then ChaCha20-Poly1305
/// (OpenSSH clients pick it first when it is offered), then AES-CTR. CBC,
/// 3DES and `none` are never offered.
pub const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_128_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

/// The ciphers named in `names` (`[ssh] ciphers`), in that order. An empty
/// list, a repeated name, or a name outside [`CIPHERS`] is an error that
/// lists the ones to choose from.
pub fn ciphers(names: &[String]) -> Result<Vec<russh::cipher::Name>, String> {
    let known = || {
        CIPHERS
            .iter()
            .map(|c| c.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if names.is_empty() {
        return Err(format!("name at least one of {}", known()));
    }
    let mut chosen: Vec<russh::cipher::Name> = Vec::with_capacity(names.len());
    for name in names {
        let Some(cipher) = CIPHERS.iter().find(|c| c.as_ref() == name) else {
            return Err(format!(
                "`{name}` is not a cipher the gateway offers: choose from {}",
                known()
            ));
        };
        if chosen.contains(cipher) {
            return Err(format!("`{name}` is named twice"));
        }
        chosen.push(*cipher);
    }
    Ok(chosen)
}

/// The algorithms of one side: `ciphers`, and russh's defaults for the rest.
pub(crate) fn preferred(ciphers: &[russh::cipher::Name]) -> russh::Preferred {
    russh::Preferred {
        cipher: std::borrow::Cow::Owned(ciphers.to_vec()),
        ..Default::default()
    }
}

/// How the listener behaves.
pub struct Settings {
    /// Connections without traffic for this long are closed.
    pub idle_timeout: Option<Duration>,
    /// How often an idle client is asked whether it is still there.
    pub keepalive: Option<Duration>,
    /// The ciphers offered to clients, in order (from [`ciphers`]).
    pub ciphers: Vec<russh::cipher::Name>,
}

/// The SSH listener's service: shared by every connection.
pub struct SshService {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) targets: HashMap<String, Arc<SshTarget>>,
    pub(crate) verifier: Verifier,
    pub(crate) gate: Gate,
    pub(crate) recordings: Option<portcullis_record::Recordings>,
    pub(crate) ca: CertificateAuthority,
    pub(crate) config: Arc<russh::server::Config>,
    pub(crate) sessions: AtomicU64,
}

impl SshService {
    pub fn new(
        targets: HashMap<String, Arc<SshTarget>>,
        verifier: Verifier,
        gate: Gate,
        host_key: PrivateKey,
        ca: CertificateAuthority,
        settings: Settings,
    ) -> SshService {
        use russh::MethodKind;
        let config = russh::server::Config {
            server_id: russh::SshId::Standard(
                format!("SSH-2.0-Portcullis_{}", env!("CARGO_PKG_VERSION")).into(),
            ),
            methods: russh::MethodSet::from(
                &[
                    MethodKind::PublicKey,
                    MethodKind::KeyboardInteractive,
                    MethodKind::Password,
                ][..],
            ),
            keys: vec![host_key],
            auth_rejection_time: Duration::from_millis(500),
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: settings.idle_timeout,
            keepalive_interval: settings.keepalive,
            keepalive_max: 3,
            nodelay: true,
            // Large transfers (scp, sftp) move in big windows.
            window_size: 8 << 20,
            maximum_packet_size: 65535,
            // A channel's window opens as the gateway takes its data, so a
            // channel whose command stops reading holds up nothing else;
            // its queue holds a whole window of full packets.
            window_on_consumption: true,
            channel_buffer_size: CHANNEL_QUEUE,
            preferred: preferred(&settings.ciphers),
            ..Default::default()
        };
        SshService {
            inner: Arc::new(Inner {
                targets,
                verifier,
                gate,
                recordings: None,
                ca,
                config: Arc::new(config),
                sessions: AtomicU64::new(0),
            }),
        }
    }

    /// Records every session in `recordings`.
    pub fn with_recordings(mut self, recordings: portcullis_record::Recordings) -> SshService {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.recordings = Some(recordings);
        }
        self
    }

    /// Accepts connections until the task is dropped.
    pub async fn serve(&self, listener: tokio::net::TcpListener) {
        let logins = portcullis_gate::listen::Logins::logins();
        loop {
            let (socket, peer) = portcullis_gate::listen::accept(&listener).await;
            let Some(logging_in) = logins.enter(peer.ip()) else {
                tracing::info!(%peer, "too many connections from one address not logged in yet; closed");
                continue;
            };
            let _ = socket.set_nodelay(true);
            let inner = self.inner.clone();
            tokio::spawn(connection::serve(inner, socket, peer, logging_in));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_offers_only_the_ciphers_named_in_their_order() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let chosen = ciphers(&names(&[
            "aes128-gcm@openssh.com",
            "aes256-gcm@openssh.com",
        ]));
        assert_eq!(
            chosen,
            Ok(vec![russh::cipher::AES_128_GCM, russh::cipher::AES_256_GCM])
        );
        for (list, error) in [
            (names(&[]), "name at least one of aes256-gcm@openssh.com"),
            (
                names(&["aes128-cbc"]),
                "`aes128-cbc` is not a cipher the gateway offers: choose from aes256-gcm@openssh.com, aes128-gcm@openssh.com, chacha20-poly1305@openssh.com, aes256-ctr, aes192-ctr, aes128-ctr",
            ),
            (names(&["none"]), "`none` is not a cipher"),
            (names(&["aes256-ctr", "aes256-ctr"]), "`aes256-ctr` is named twice"),
        ] {
            let refused = ciphers(&list).expect_err("refused");
            assert!(refused.starts_with(error), "{list:?}: {refused}");
        }
    }
}
