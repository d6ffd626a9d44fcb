//! Accepting connections, for the protocol listeners.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// How many connections one client address may have open before they log
/// in: idle connections that never log in would otherwise hold the
/// process's file descriptors until their login timeout, for everyone.
pub const MAX_LOGINS_PER_ADDRESS: usize = 64;

/// How many connections a listener may have open before they log in, from
/// all addresses: a flood from many addresses then holds off new logins
/// while it lasts, but leaves the descriptors that running sessions, the
/// audit log and policy reloads need.
pub const MAX_LOGINS: usize = 512;

/// Connections not logged in yet, by client address.
#[derive(Clone, Default)]
pub struct Logins(Arc<Mutex<Counts>>);

#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A connection's place among those not logged in yet, given back when
/// dropped (at login, or when the connection ends).
pub struct LoggingIn {
    logins: Logins,
    ip: IpAddr,
}

impl Logins {
    /// A place for one more connection from `ip` that has yet to log in;
    /// `None` when that address has [`MAX_LOGINS_PER_ADDRESS`] already, or
    /// all have [`MAX_LOGINS`].
    pub fn enter(&self, ip: IpAddr) -> Option<LoggingIn> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= MAX_LOGINS {
            return None;
        }
        let count = counts.by_address.entry(ip).or_default();
        if *count >= MAX_LOGINS_PER_ADDRESS {
            return None;
        }
        *count += 1;
        counts.total += 1;
        Some(LoggingIn {
            logins: self.clone(),
            ip,
        })
    }
}

impl Drop for LoggingIn {
    fn drop(&mut self) {
        let mut counts = self.logins.0.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.by_address.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.by_address.remove(&self.ip);
            }
        }
    }
}

/// How long to wait after an error accepting a connection: out of file
/// descriptors, the next try fails too until some close.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// The next connection. An error accepting one (out of file descriptors
/// under a flood of idle connections, a connection reset before it was
/// taken) ends neither the listener nor the gateway: it is logged, and
/// the listener tries again a moment later.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut failures: u64 = 0;
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                failures += 1;
                // Once, then every 10 s while it lasts.
                if failures % 100 == 1 {
                    tracing::warn!(
                        addr = ?listener.local_addr().ok(),
                        error = %e,
                        failures,
                        "cannot accept connections; trying again (raise the open-files limit if this is EMFILE)"
                    );
                }
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_a_bounded_number_of_logins_and_gets_them_back() {
        let logins = Logins::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<LoggingIn> = (0..MAX_LOGINS_PER_ADDRESS)
            .map(|_| logins.enter(ip).unwrap())
            .collect();
        assert!(logins.enter(ip).is_none());
        assert!(logins.enter("192.0.2.2".parse().unwrap()).is_some());
        drop(held);
        assert!(logins.enter(ip).is_some());
        assert!(logins.0.lock().unwrap().by_address.len() <= 1);
        // From many addresses, no more than MAX_LOGINS in all.
        let many: Vec<LoggingIn> = (0..MAX_LOGINS)
            .map(|i| {
                let octets = u32::try_from(i).unwrap().to_be_bytes();
                let ip = IpAddr::from([10, octets[1], octets[2], octets[3]]);
                logins.enter(ip).unwrap()
            })
            .collect();
        assert!(logins.enter("192.0.2.3".parse().unwrap()).is_none());
        drop(many);
        assert!(logins.enter("192.0.2.3".parse().unwrap()).is_some());
        assert_eq!(logins.0.lock().unwrap().total, 0);
    }

    /// Sets this process's soft limit of open files; the one before.
    fn set_open_files_limit(soft: &str) -> String {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let fields: Vec<&str> = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .split_whitespace()
            .collect();
        let (before, hard) = (fields[3].to_owned(), fields[4]);
        let status = std::process::Command::new("prlimit")
            .args([
                "--pid",
                &std::process::id().to_string(),
                &format!("--nofile={soft}:{hard}"),
            ])
            .status()
            .unwrap();
        assert!(status.success());
        before
    }

    /// Out of file descriptors, the listener waits, and takes the waiting
    /// connection once some close.
    #[tokio::test]
    async fn the_listener_outlives_running_out_of_file_descriptors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count();
        let before = set_open_files_limit(&(open + 32).to_string());
        let mut files = Vec::new();
        while let Ok(file) = std::fs::File::open("/dev/null") {
            files.push(file);
        }
        // One descriptor for the client's socket; none left for the
        // listener to accept it with.
        files.pop();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let accepting = tokio::spawn(async move { accept(&listener).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!accepting.is_finished());
        files.clear();
        let (_, peer) = tokio::time::timeout(Duration::from_secs(5), accepting)
            .await
            .expect("accepted once descriptors were free")
            .unwrap();
        assert!(peer.ip().is_loopback());
        set_open_files_limit(&before);
    }
}
