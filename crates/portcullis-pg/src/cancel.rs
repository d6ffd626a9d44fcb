//! Cancel requests, mapped so that a client can cancel only its own query.
//!
//! Each client session gets a process id and secret of the gateway's own
//! making; the target's real ones never leave the gateway. A cancel request
//! is forwarded only when both the id and the secret match a live session.

use crate::server::TargetAddr;
use bytes::BytesMut;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// Where and how to cancel one session's running query on its target.
#[derive(Clone, Debug)]
pub struct TargetCancelKey {
    pub addr: TargetAddr,
    pub pid: i32,
    pub secret: i32,
}

#[derive(Clone, Default)]
pub struct CancelRegistry {
    sessions: Arc<Mutex<HashMap<i32, Registered>>>,
}

struct Registered {
    secret: i32,
    key: TargetCancelKey,
    /// Bumped on every cancel request for the session: a statement held for
    /// approval, which the target has not seen, is cancelled through it.
    signal: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Removes its session from the registry when dropped.
pub struct CancelRegistration {
    registry: CancelRegistry,
    pub pid: i32,
    pub secret: i32,
    pub signal: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Drop for CancelRegistration {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.registry.sessions.lock() {
            sessions.remove(&self.pid);
        }
    }
}

impl CancelRegistry {
    /// Registers a session and returns the key its client is given.
    pub fn register(&self, target: TargetCancelKey) -> Option<CancelRegistration> {
        let mut sessions = self.sessions.lock().ok()?;
        let mut rng = rand::thread_rng();
        let pid = loop {
            let pid = rng.gen_range(1..i32::MAX);
            if !sessions.contains_key(&pid) {
                break pid;
            }
        };
        let secret: i32 = rng.gen();
        let signal = Arc::new(tokio::sync::watch::Sender::new(0));
        sessions.insert(
            pid,
            Registered {
                secret,
                key: target,
                signal: signal.clone(),
            },
        );
        Some(CancelRegistration {
            registry: self.clone(),
            pid,
            secret,
            signal,
        })
    }

    /// The target key for a client's cancel request, when the request's
    /// secret matches the session's; the session's held statement, if any,
    /// is told too.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<TargetCancelKey> {
        let sessions = self.sessions.lock().ok()?;
        let registered = sessions.get(&pid)?;
        // Constant-time comparison: a timing difference must not help guess a secret.
        let diff = (registered.secret ^ secret) as u32;
        if diff == 0 {
            registered.signal.send_modify(|n| *n = n.wrapping_add(1));
            Some(registered.key.clone())
        } else {
            None
        }
    }
}

/// Sends a cancel request to the target. Best effort, as in PostgreSQL.
pub async fn cancel_on_target(key: &TargetCancelKey) -> std::io::Result<()> {
    let mut stream =
        tokio::net::TcpStream::connect((key.addr.host.as_str(), key.addr.port)).await?;
    let mut out = BytesMut::new();
    crate::codec::build::cancel_request(&mut out, key.pid, key.secret);
    stream.write_all(&out).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TargetCancelKey {
        TargetCancelKey {
            addr: TargetAddr {
                host: "127.0.0.1".into(),
                port: 5432,
            },
            pid: 42,
            secret: 7,
        }
    }

    #[test]
    fn only_the_exact_key_finds_a_session() {
        let registry = CancelRegistry::default();
        let a = registry.register(key()).unwrap();
        let b = registry.register(key()).unwrap();
        assert!(registry.lookup(a.pid, a.secret).is_some());
        assert!(registry.lookup(a.pid, b.secret).is_none() || a.secret == b.secret);
        assert!(registry.lookup(a.pid, a.secret.wrapping_add(1)).is_none());
        assert!(
            registry.lookup(42, 7).is_none(),
            "the target's own key must not work"
        );
        let pid = a.pid;
        drop(a);
        assert!(registry.lookup(pid, 0).is_none());
    }
}
