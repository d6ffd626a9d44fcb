//! Accepting connections, for the protocol listeners, and counting them.

use std::collections::HashMap;
use std::hash::Hash;
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

/// Places counted by key (connections by client address, sessions by
/// person): at most `per_key` for one key and `total` in all. A place is
/// given back when its guard drops.
pub struct Places<K: Eq + Hash>(Arc<Mutex<Counts<K>>>);

impl<K: Eq + Hash> Clone for Places<K> {
    fn clone(&self) -> Self {
        Places(self.0.clone())
    }
}

struct Counts<K> {
    per_key: usize,
    most: usize,
    total: usize,
    by_key: HashMap<K, usize>,
}

/// One place of a [`Places`], given back when dropped.
pub struct Place<K: Eq + Hash> {
    places: Places<K>,
    key: K,
}

/// Connections not logged in yet, by client address.
pub type Logins = Places<IpAddr>;

/// A connection's place among those not logged in yet, given back at login
/// or when the connection ends.
pub type LoggingIn = Place<IpAddr>;

impl Places<IpAddr> {
    /// At most [`MAX_LOGINS_PER_ADDRESS`] connections from one address not
    /// logged in yet, and [`MAX_LOGINS`] in all.
    pub fn logins() -> Logins {
        Places::new(MAX_LOGINS_PER_ADDRESS, MAX_LOGINS)
    }
}

impl<K: Eq + Hash + Clone> Places<K> {
    pub fn new(per_key: usize, total: usize) -> Places<K> {
        Places(Arc::new(Mutex::new(Counts {
            per_key,
            most: total,
            total: 0,
            by_key: HashMap::new(),
        })))
    }

    /// The most places one key may have.
    pub fn per_key(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).per_key
    }

    /// A place for one more of `key`; `None` when `key` has its most
    /// already, or all have.
    pub fn enter(&self, key: K) -> Option<Place<K>> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= counts.most {
            return None;
        }
        let per_key = counts.per_key;
        let count = counts.by_key.entry(key.clone()).or_default();
        if *count >= per_key {
            return None;
        }
        *count += 1;
        counts.total += 1;
        Some(Place {
            places: self.clone(),
            key,
        })
    }
}

impl<K: Eq + Hash> Drop for Place<K> {
    fn drop(&mut self) {
        let mut counts = self.places.0.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.by_key.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.by_key.remove(&self.key);
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
        let logins = Logins::logins();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<LoggingIn> = (0..MAX_LOGINS_PER_ADDRESS)
            .map(|_| logins.enter(ip).unwrap())
            .collect();
        assert!(logins.enter(ip).is_none());
        assert!(logins.enter("192.0.2.2".parse().unwrap()).is_some());
        drop(held);
        assert!(logins.enter(ip).is_some());
        assert!(logins.0.lock().unwrap().by_key.len() <= 1);
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
