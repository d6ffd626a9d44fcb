//! The gateway's side toward a target: it logs in with the credentials it
//! holds, after checking the target's host key against the pinned one.

use crate::keys::fingerprint;
use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An SSH target, as the config describes it.
pub struct SshTarget {
    pub target: portcullis_core::Target,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub credential: Credential,
    /// The only host key accepted.
    pub host_key: PublicKey,
}

pub enum Credential {
    Key(Arc<PrivateKey>),
    Password(String),
}

/// Checks the target's host key, and hands a remote forward's connections
/// (`ssh -R`) to the client's session.
pub(crate) struct Pinned {
    expected: PublicKey,
    /// The key the target showed, when it was not the pinned one.
    mismatch: Arc<Mutex<Option<PublicKey>>>,
    pub(crate) remote: Option<crate::connection::RemoteForwards>,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let shown = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        };
        if shown.key_data() == self.expected.key_data() {
            return Ok(true);
        }
        if let Ok(mut slot) = self.mismatch.lock() {
            *slot = Some(shown);
        }
        Ok(false)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        match &self.remote {
            Some(remote) => {
                reply.accept().await;
                remote.open(
                    channel,
                    connected_address.to_string(),
                    connected_port,
                    originator_address.to_string(),
                    originator_port,
                );
            }
            None => {
                reply
                    .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                    .await
            }
        }
        Ok(())
    }
}

pub(crate) type Upstream = client::Handle<Pinned>;

/// Connects and logs in to `target`. The error is for the user: it says
/// what failed and what to do.
pub(crate) async fn connect(
    target: &SshTarget,
    remote: Option<crate::connection::RemoteForwards>,
) -> Result<Upstream, String> {
    let name = &target.target.name;
    let config = Arc::new(client::Config {
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        window_size: 8 << 20,
        maximum_packet_size: 65535,
        window_on_consumption: true,
        channel_buffer_size: crate::CHANNEL_QUEUE,
        preferred: crate::preferred(crate::CIPHERS),
        ..Default::default()
    });
    let mismatch = Arc::new(Mutex::new(None));
    let handler = Pinned {
        expected: target.host_key.clone(),
        mismatch: mismatch.clone(),
        remote,
    };
    let connecting = client::connect(config, (target.host.as_str(), target.port), handler);
    let mut handle = match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(Ok(handle)) => handle,
        Ok(Err(e)) => {
            let shown = mismatch.lock().ok().and_then(|slot| slot.clone());
            if let Some(shown) = shown {
                return Err(format!(
                    "the host key of target `{name}` is {}, not the pinned {}: the connection was refused. If the host was re-keyed, update `host_key` in the gateway's config",
                    fingerprint(&shown),
                    fingerprint(&target.host_key)
                ));
            }
            return Err(format!(
                "cannot reach target `{name}` at {}:{}: {e}",
                target.host, target.port
            ));
        }
        Err(_) => {
            return Err(format!(
                "target `{name}` at {}:{} did not answer within 10 s",
                target.host, target.port
            ))
        }
    };
    let result = match &target.credential {
        Credential::Key(key) => {
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten();
            handle
                .authenticate_publickey(
                    target.user.clone(),
                    PrivateKeyWithHashAlg::new(key.clone(), hash),
                )
                .await
        }
        Credential::Password(password) => {
            handle
                .authenticate_password(target.user.clone(), password.clone())
                .await
        }
    };
    match result {
        Ok(russh::client::AuthResult::Success) => Ok(handle),
        Ok(_) => Err(format!(
            "target `{name}` refused the gateway's credentials for `{}`: check the target's key or password in the gateway's config",
            target.user
        )),
        Err(e) => Err(format!("logging in to target `{name}` failed: {e}")),
    }
}
