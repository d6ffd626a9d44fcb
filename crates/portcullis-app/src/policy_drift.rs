//! `portcullis policy drift`: does the running gateway enforce what the
//! policy source holds? The enforced version comes from the gateway's admin
//! API (`/api/v1/status`); the source's version is computed here, the way the
//! gateway computes it: the commit a Git ref points at, or a directory's
//! content hash.

use anyhow::{anyhow, bail, Context, Result};
use portcullis_config::Config;
use portcullis_policy::PolicySource;
use std::net::SocketAddr;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The two versions side by side.
#[derive(Debug, Clone)]
pub struct DriftReport {
    /// The admin API that was asked.
    pub gateway: String,
    /// The version the gateway enforces.
    pub enforced: String,
    /// Why the gateway does not enforce a newer version, when it says so.
    pub gateway_error: Option<String>,
    /// What was compared against, for people.
    pub source: String,
    /// The source's version.
    pub source_version: String,
    /// How the gateway reads its policies, and how this config reads them,
    /// when the two differ: one commit id then names other rules (another
    /// ref, directory or engine).
    pub read_otherwise: Option<(String, String)>,
}

impl DriftReport {
    pub fn in_sync(&self) -> bool {
        self.enforced == self.source_version && self.read_otherwise.is_none()
    }

    /// 0 in sync, 1 on drift. (2, when there is no answer, is the caller's.)
    pub fn exit_code(&self) -> u8 {
        if self.in_sync() {
            0
        } else {
            1
        }
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "enforced: {}  (the gateway at {})\nsource:   {}  ({})\n",
            self.enforced, self.gateway, self.source_version, self.source
        );
        if self.in_sync() {
            out.push_str("in sync\n");
        } else {
            match &self.read_otherwise {
                Some((gateway, here)) => out.push_str(&format!(
                    "drift: the gateway reads {gateway}; this config reads {here}\n"
                )),
                None => out.push_str("drift: the gateway does not enforce the source's version\n"),
            }
            if let Some(error) = &self.gateway_error {
                out.push_str(&format!("the gateway says why: {error}\n"));
            }
        }
        out
    }
}

/// Compares the version the running gateway enforces with the version of
/// the configured policy source; `reference` replaces a Git source's ref.
/// An error means there is no answer (the gateway cannot be reached, or the
/// source cannot be read), which is neither "in sync" nor "drift".
pub async fn policy_drift(config: &Config, reference: Option<&str>) -> Result<DriftReport> {
    let source = match (crate::policy_source(config), reference) {
        (source, None) => source,
        (PolicySource::Git { repo, subdir, .. }, Some(reference)) => PolicySource::Git {
            repo,
            reference: reference.to_string(),
            subdir,
        },
        (
            PolicySource::Remote {
                url,
                mirror,
                subdir,
                ..
            },
            Some(reference),
        ) => PolicySource::Remote {
            url,
            mirror,
            reference: reference.to_string(),
            subdir,
        },
        (PolicySource::Directory(dir), Some(reference)) => bail!(
            "`--ref {reference}` needs a git policy source, and `[policy]` names the directory `{}`",
            dir.display()
        ),
    };
    let admin = config
        .admin
        .as_ref()
        .ok_or_else(|| anyhow!("no `[admin] listen` in the config: the gateway cannot be asked which version it enforces"))?;
    let gateway = admin_url(admin.listen)?;

    let source_version = {
        let reading = source.clone();
        let engine = crate::policy_engine(config);
        crate::read_source(
            move || reading.current_version(engine),
            crate::FIRST_READ_DEADLINE,
        )
        .await
        .ok_or_else(|| {
            anyhow!(
                "the {source} did not answer in {} s",
                crate::FIRST_READ_DEADLINE.as_secs()
            )
        })?
        .with_context(|| format!("cannot read the {source}"))?
    };
    let status = enforced_status(&gateway).await?;
    let enforced = status
        .get("policy_version")
        .and_then(|v| v.as_str())
        .ok_or_else(|| anyhow!("the gateway at {gateway} answered without a `policy_version`"))?
        .to_string();
    let gateway_error = status
        .get("policy_error")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    // With `--ref`, the ref differs on purpose.
    let here = crate::read_as(&source, crate::policy_engine(config));
    let read_otherwise = match status.get("policy_source").and_then(|v| v.as_str()) {
        Some(gateway) if reference.is_none() && gateway != here => {
            Some((gateway.to_string(), here))
        }
        _ => None,
    };
    Ok(DriftReport {
        gateway,
        enforced,
        gateway_error,
        source: source.to_string(),
        source_version,
        read_otherwise,
    })
}

/// The admin API's base URL; a listener on every address is asked on
/// loopback.
fn admin_url(listen: SocketAddr) -> Result<String> {
    if listen.port() == 0 {
        bail!("`[admin] listen` has port 0 (any free port): the running gateway's address is not in the config");
    }
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(format!("http://{addr}"))
}

async fn enforced_status(gateway: &str) -> Result<serde_json::Value> {
    crate::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build an HTTP client")?;
    let url = format!("{gateway}/api/v1/status");
    let unreachable = |error: &reqwest::Error| {
        anyhow!(
            "cannot reach the gateway's admin API at {gateway}: {} (is the gateway running, with this `[admin] listen`?)",
            describe(error)
        )
    };
    let response = client
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "the gateway's admin API answered `{url}` with HTTP {}",
            status.as_u16()
        );
    }
    response.json::<serde_json::Value>().await.map_err(|e| {
        anyhow!(
            "the gateway's answer to `{url}` is not the expected JSON: {}",
            describe(&e)
        )
    })
}

/// reqwest's message stops at the outermost error; the cause (connection
/// refused, timed out) is what a person needs.
fn describe(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn admin_url_asks_loopback_for_a_wildcard_listener() {
        assert_eq!(
            admin_url("0.0.0.0:9090".parse().unwrap()).unwrap(),
            "http://127.0.0.1:9090"
        );
        assert_eq!(
            admin_url("[::]:9090".parse().unwrap()).unwrap(),
            "http://[::1]:9090"
        );
        assert_eq!(
            admin_url("10.0.0.5:9090".parse().unwrap()).unwrap(),
            "http://10.0.0.5:9090"
        );
        let err = admin_url("127.0.0.1:0".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("port 0"), "{err}");
    }

    #[test]
    fn report_says_in_sync_or_drift_with_both_versions() {
        let mut report = DriftReport {
            gateway: "http://127.0.0.1:9090".into(),
            enforced: "a".repeat(40),
            gateway_error: None,
            source: "git repository `/srv/policies` at `main`".into(),
            source_version: "a".repeat(40),
            read_otherwise: None,
        };
        assert_eq!(report.exit_code(), 0);
        assert!(report.render().ends_with("in sync\n"));
        // One commit, read another way (found in attack): drift.
        report.read_otherwise = Some(("`a`, directory `x`".into(), "`a`, directory `y`".into()));
        assert_eq!(report.exit_code(), 1);
        assert!(
            report.render().contains(
                "the gateway reads `a`, directory `x`; this config reads `a`, directory `y`"
            ),
            "{}",
            report.render()
        );
        report.read_otherwise = None;
        report.source_version = "b".repeat(40);
        report.gateway_error = Some("bad.cedar:1:1: oops".into());
        assert_eq!(report.exit_code(), 1);
        let text = report.render();
        assert!(text.contains(&"a".repeat(40)), "{text}");
        assert!(text.contains(&"b".repeat(40)), "{text}");
        assert!(text.contains("drift"), "{text}");
        assert!(text.contains("bad.cedar:1:1: oops"), "{text}");
    }
}
