//! Accepting connections, for the protocol listeners.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

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
