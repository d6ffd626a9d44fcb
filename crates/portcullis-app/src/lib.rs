//! Wiring: builds the gateway's services from a [`Config`] and starts its
//! listeners. Shared by the `portcullis` binary and the end-to-end tests, so
//! the tests run the real thing in-process.
//!
//! Layout:
//! - [`admin`]: the admin listener (`/healthz`, `/readyz`, `/api/v1/status`).
//! - [`commands`]: what the CLI's subcommands do.
//! - [`policy_drift`]: the enforced policy version against the source's.
//! - [`policy_impact`]: a candidate policy evaluated on the recorded decisions.
//! - [`policy_stale`]: rules that decided nothing for a while.
//! - [`policy_test`]: test cases kept beside the policies (`*.cases.toml`).
//! - [`tls`]: TLS configuration from PEM files.

pub mod admin;
pub mod commands;
pub mod policy_drift;
pub mod policy_impact;
pub mod policy_stale;
pub mod policy_test;
pub mod recordings_cli;
pub mod requests_cli;
pub mod tls;

use anyhow::{bail, Context, Result};
use portcullis_audit::{AuditLog, AuditOptions};
use portcullis_config::{
    CleartextPassword, Config, GitRepo, PolicyEngineKind, PolicySourceConfig, TargetConfig,
    TargetKindConfig, TargetTls,
};
use portcullis_core::{Target, TargetKind};
use portcullis_gate::Gate;
use portcullis_identity::{DevIssuer, DevIssuerSettings, OidcIssuerSettings, Verifier};
use portcullis_pg::{CleartextPolicy, PgService, PgTarget, TargetAddr};
use portcullis_policy::{Engine, History, Policies, PolicyError, PolicySource};
use portcullis_sql::Classifier;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The audit database inside the data directory.
pub fn audit_path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit.db")
}

/// The dev issuer's key inside the data directory.
pub fn dev_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("dev-issuer.key")
}

/// A started gateway. Dropping it does not stop it: call [`Running::shutdown`].
pub struct Running {
    pub pg_addr: Option<SocketAddr>,
    pub ssh_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub gate: Gate,
    state: Option<SharedState>,
    tasks: Vec<JoinHandle<()>>,
}

type SharedState = Arc<std::sync::Mutex<portcullis_store::StateStore>>;

/// The state database inside the data directory.
pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state.db")
}

/// Writes the policy hits counted since the last flush. Statistics only: a
/// failure is logged, never fatal.
async fn flush_policy_hits(gate: &Gate, state: &SharedState) {
    let hits = gate.take_policy_hits();
    if hits.is_empty() {
        return;
    }
    let day = portcullis_store::day_of(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    write_state(state.clone(), "policy hit counts not saved", move |store| {
        store.add_hits(&day, &hits)
    })
    .await;
}

/// Runs `write` on the state store off the runtime's workers; a failure is
/// logged as `failed`, never fatal (statistics only).
async fn write_state(
    state: SharedState,
    failed: &'static str,
    write: impl FnOnce(&mut portcullis_store::StateStore) -> Result<(), portcullis_store::StoreError>
        + Send
        + 'static,
) {
    let written = tokio::task::spawn_blocking(move || match state.lock() {
        Ok(mut store) => write(&mut store).map_err(|e| e.to_string()),
        Err(_) => Err("the state store lock is poisoned".to_string()),
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "{failed}"),
        Err(e) => warn!(error = %e, "{failed}"),
    }
}

/// Records `version`, read as `load` reads, as the one enforced, so that
/// the next start compares its own with it. Statistics only: a failure is
/// logged, never fatal.
async fn record_enforced(state: Option<&SharedState>, version: &str, load: &PolicyLoad) {
    let Some(state) = state.cloned() else {
        return;
    };
    let version = version.to_string();
    let read_as = load.read_as();
    write_state(
        state,
        "the enforced policy version not saved",
        move |store| store.set_enforced_policy(&version, &read_as),
    )
    .await;
}

/// Logs a step back, a rewritten history or an unknown one of a Git
/// source; `true` when it did.
fn warn_if_not_forward(
    history: Option<History>,
    version: &str,
    previous: &str,
    source: &PolicySource,
) -> bool {
    match history {
        Some(History::Back) => tracing::warn!(
            %version, %previous, %source,
            "the policy source went back to an older commit: rules taken out since are enforced again"
        ),
        Some(History::Diverged) => tracing::warn!(
            %version, %previous, %source,
            "the policy source's history was rewritten: the new commit does not descend from the enforced one"
        ),
        Some(History::Unknown) => tracing::warn!(
            %version, %previous, %source,
            "the new commit cannot be related to the version enforced before it (a commit gone from the repository after a force-push, one not recorded, or not a commit): it may be a step back, with rules taken out since enforced again"
        ),
        Some(History::Forward) | None => return false,
    }
    true
}

impl Running {
    /// Stops the listeners and closes the audit log with a final checkpoint.
    pub async fn shutdown(self) -> Result<()> {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(state) = &self.state {
            flush_policy_hits(&self.gate, state).await;
        }
        self.gate
            .audit()
            .shutdown()
            .await
            .context("closing the audit log")?;
        Ok(())
    }
}

/// Creates the data directory, readable by the gateway's user alone: it
/// holds every statement and command (the audit log), the recordings (with
/// what unmasked sessions saw) and the keys.
fn create_data_dir(data_dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create data directory `{}`", data_dir.display()))
}

/// Makes the database at `path` readable by the gateway's user alone,
/// creating it empty if it is not there: SQLite makes the journal and
/// shared-memory files beside it with its mode, and a copy or backup of the
/// data directory keeps the files' own modes.
fn make_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let private = |path: &Path| -> std::io::Result<()> {
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .and_then(|_| private(path))
        .with_context(|| format!("cannot make `{}` private to the gateway", path.display()))?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut beside = path.as_os_str().to_owned();
        beside.push(suffix);
        let beside = PathBuf::from(beside);
        if beside.exists() {
            private(&beside).with_context(|| {
                format!("cannot make `{}` private to the gateway", beside.display())
            })?;
        }
    }
    Ok(())
}

/// Says so when others may read a data directory made before the gateway
/// ran (it creates its own 0700).
fn warn_if_shared(data_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(data_dir) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        warn!(
            path = %data_dir.display(),
            mode = format!("{mode:o}"),
            "other users can read the data directory, which holds the audit log, the recordings and the keys; run `chmod 700` on it"
        );
    }
}

/// The dev issuer for this config, when enabled.
pub fn dev_issuer(config: &Config) -> Result<Option<DevIssuer>> {
    let Some(dev) = &config.identity.dev else {
        return Ok(None);
    };
    create_data_dir(&config.gateway.data_dir)?;
    let issuer = DevIssuer::load_or_create(DevIssuerSettings {
        issuer: dev.issuer.clone(),
        audience: dev.audience.clone(),
        key_path: dev_key_path(&config.gateway.data_dir),
    })?;
    Ok(Some(issuer))
}

/// The OIDC issuers of a config, secrets resolved.
pub fn oidc_settings(config: &Config, file: &Path) -> Result<Vec<OidcIssuerSettings>> {
    config
        .identity
        .oidc
        .iter()
        .enumerate()
        .map(|(idx, oidc)| {
            let client_secret = match &oidc.client_secret {
                None => None,
                Some(secret) => Some(secret.resolve().map_err(|message| {
                    anyhow::anyhow!(
                        "{}: `identity.oidc[{idx}].client_secret`: cannot read secret: {message}",
                        file.display()
                    )
                })?),
            };
            let mut settings = OidcIssuerSettings::new(oidc.issuer.clone(), oidc.audience.clone());
            settings.groups_claim = oidc.groups_claim.clone();
            settings.user_claim = oidc.user_claim.clone();
            settings.discovery_url = oidc.discovery_url.clone();
            settings.client_id = oidc.client_id.clone();
            settings.client_secret = client_secret;
            settings.leeway = Duration::from_secs(oidc.leeway_seconds);
            Ok(settings)
        })
        .collect()
}

/// `[recording.s3]`, ready to use.
pub fn recording_remote(config: &Config, file: &Path) -> Result<Option<portcullis_record::Remote>> {
    let Some((s3, access_key_id, secret_access_key)) = config.recording_s3(file)? else {
        return Ok(None);
    };
    let remote = portcullis_record::Remote::new(&portcullis_record::S3Settings {
        bucket: s3.bucket,
        endpoint: s3.endpoint,
        region: s3.region,
        access_key_id,
        secret_access_key,
        prefix: s3.prefix,
        keep_local: s3.keep_local,
    })
    .with_context(|| format!("{}: `recording.s3`", file.display()))?;
    Ok(Some(remote))
}

/// Uploads sealed chunks and finished recordings every second; what
/// cannot be uploaded stays in the spool and is tried again.
async fn upload_recordings(
    recordings: portcullis_record::Recordings,
    remote: portcullis_record::Remote,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut failing = false;
    loop {
        tick.tick().await;
        match remote.upload_pending(&recordings).await {
            Ok(_) if failing => {
                info!("recordings upload again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                warn!(error = %e, "recordings cannot be uploaded; they stay in the data directory and are tried again");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Deletes recordings older than `keep`, hourly and at start. Each
/// deletion is written ahead to the audit log, naming the recording and its
/// final hash: a recording the log cannot take stays, and a deletion that
/// then fails is an entry of its own.
async fn retire_recordings(
    recordings: portcullis_record::Recordings,
    gate: Gate,
    keep: Duration,
    shown: String,
    stored_only: bool,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let cutoff = now_ms.saturating_sub(keep.as_millis() as u64);
        let listing = recordings.clone();
        let old =
            match tokio::task::spawn_blocking(move || listing.ended_before(cutoff, stored_only))
                .await
            {
                Ok(Ok(old)) => old,
                Ok(Err(e)) => {
                    warn!(error = %e, "could not apply the recording retention");
                    continue;
                }
                Err(_) => continue,
            };
        for (id, final_hash) in old {
            let entry = serde_json::json!({
                "event": "recording.deleted",
                "recording": id,
                "final_hash": final_hash,
                "reason": format!("older than the retention period ({shown})"),
            });
            if let Err(e) = gate.audit().append(&entry).await {
                warn!(recording = %id, error = %e, "a recording past its retention is kept: its deletion cannot be audited");
                continue;
            }
            let deleting = recordings.clone();
            let target = id.clone();
            let failed = match tokio::task::spawn_blocking(move || deleting.delete(&target)).await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            warn!(recording = %id, error = %failed, "a recording past its retention could not be deleted");
            let entry = serde_json::json!({
                "event": "recording.delete_failed",
                "recording": id,
                "error": failed,
            });
            if let Err(e) = gate.audit().append(&entry).await {
                tracing::error!(recording = %id, error = %e, "a failed deletion is not in the audit log");
            }
        }
    }
}

/// Where session recordings are kept.
pub fn recordings_path(data_dir: &Path) -> PathBuf {
    data_dir.join("recordings")
}

/// `[approvals]` as the workflow takes it.
fn approval_settings(config: &Config, file: &Path) -> Result<portcullis_gate::approval::Settings> {
    use portcullis_gate::approval::{parse_duration, Format, Settings, Sink};
    let a = &config.approvals;
    let seconds = |key: &str, text: &str| -> Result<Duration> {
        let n = parse_duration(text)
            .map_err(|e| anyhow::anyhow!("{}: `approvals.{key}`: {e}", file.display()))?;
        Ok(Duration::from_secs(u64::try_from(n).unwrap_or(0)))
    };
    let mut notify = Vec::new();
    for (idx, sink) in a.notify.iter().enumerate() {
        let url = sink.url.resolve().map_err(|message| {
            anyhow::anyhow!(
                "{}: `approvals.notify[{idx}].url`: cannot read secret: {message}",
                file.display()
            )
        })?;
        notify.push(Sink {
            url,
            format: if sink.format == "slack" {
                Format::Slack
            } else {
                Format::Json
            },
        });
    }
    let console_url = config
        .console
        .as_ref()
        .map(|console| console.public_url.trim_end_matches('/').to_string());
    Ok(Settings {
        expiry: seconds("expiry", &a.expiry)?,
        console_url,
        access_approvers: a.access_approvers.clone(),
        access_min_approvals: a.access_min_approvals.max(1),
        access_max: seconds("access_max", &a.access_max)?,
        notify,
        ..Settings::default()
    })
}

/// `[console]`: the public URL and the OIDC client reviewers log in with.
fn console_settings(
    config: &Config,
    file: &Path,
) -> Result<Option<portcullis_web::ConsoleSettings>> {
    let Some(console) = &config.console else {
        return Ok(None);
    };
    let issuers = oidc_settings(config, file)?;
    let chosen = match &console.issuer {
        Some(issuer) => issuers.into_iter().find(|s| &s.issuer == issuer),
        None => issuers.into_iter().find(|s| s.client_id.is_some()),
    };
    let Some(oidc) = chosen.filter(|s| s.client_id.is_some()) else {
        anyhow::bail!(
            "{}: `console`: reviewers log in through an `[[identity.oidc]]` issuer with a `client_id`; configure one (and `console.issuer` to pick it)",
            file.display()
        );
    };
    Ok(Some(portcullis_web::ConsoleSettings {
        public_url: console.public_url.trim_end_matches('/').to_string(),
        oidc,
    }))
}

fn targets(config: &Config, file: &Path) -> Result<HashMap<String, Arc<PgTarget>>> {
    let mut targets = HashMap::new();
    for (idx, target) in config.targets.iter().enumerate() {
        if target.kind != portcullis_config::TargetKindConfig::Postgres {
            continue;
        }
        let password = config.target_password(file, idx)?;
        let tls = match target.tls {
            TargetTls::Disable => {
                let loopback = target.host == "localhost"
                    || target
                        .host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if !loopback {
                    warn!(
                        target = %target.name,
                        host = %target.host,
                        "this target is reached without TLS: its login and its data cross the network in the clear; set tls = \"verify-full\" and ca_file"
                    );
                }
                None
            }
            TargetTls::VerifyFull => {
                let Some(ca) = &target.ca_file else {
                    bail!(
                        "{}: `targets[{idx}].ca_file`: tls = \"verify-full\" needs a CA file",
                        file.display()
                    );
                };
                let name = rustls_pki_types::ServerName::try_from(target.host.clone())
                    .with_context(|| {
                        format!(
                            "{}: `targets[{idx}].host`: not a valid TLS server name",
                            file.display()
                        )
                    })?;
                Some((tls::client_config(ca)?, name))
            }
        };
        let pg_target = PgTarget {
            target: policy_target(target),
            addr: TargetAddr {
                host: target.host.clone(),
                port: target.port,
            },
            database: target.database.clone(),
            user: target.user.clone(),
            password,
            tls,
            catalog: Default::default(),
        };
        targets.insert(target.name.clone(), Arc::new(pg_target));
    }
    Ok(targets)
}

/// The SSH targets of a config, with their credentials and pinned host keys.
fn ssh_targets(
    config: &Config,
    file: &Path,
) -> Result<HashMap<String, Arc<portcullis_ssh::SshTarget>>> {
    let mut targets = HashMap::new();
    for (idx, target) in config.targets.iter().enumerate() {
        if target.kind != portcullis_config::TargetKindConfig::Ssh {
            continue;
        }
        let credential = match target.key_file.as_ref().filter(|p| !p.as_os_str().is_empty()) {
            None if target.password.is_none() => bail!(
                "{}: `targets[{idx}].key_file`: an ssh target needs the private key (key_file) or the password the gateway logs in with",
                file.display()
            ),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "{}: `targets[{idx}].key_file`: cannot read `{}`",
                        file.display(),
                        path.display()
                    )
                })?;
                let key = russh_key(&text).with_context(|| {
                    format!(
                        "{}: `targets[{idx}].key_file`: `{}` is not an unencrypted OpenSSH private key",
                        file.display(),
                        path.display()
                    )
                })?;
                portcullis_ssh::Credential::Key(Arc::new(key))
            }
            None => portcullis_ssh::Credential::Password(config.target_password(file, idx)?),
        };
        let host_key = match target.host_key.as_deref().map(str::trim) {
            None | Some("") => bail!(
                "{}: `targets[{idx}].host_key`: an ssh target needs its pinned public host key, as in a known_hosts line (`ssh-keyscan -t ed25519 HOST`)",
                file.display()
            ),
            Some(line) => portcullis_ssh::keys::parse_public(line).map_err(|e| {
                anyhow::anyhow!("{}: `targets[{idx}].host_key`: {e}", file.display())
            })?,
        };
        targets.insert(
            target.name.clone(),
            Arc::new(portcullis_ssh::SshTarget {
                target: policy_target(target),
                host: target.host.clone(),
                port: target.port,
                user: target.user.clone(),
                credential,
                host_key,
            }),
        );
    }
    Ok(targets)
}

fn russh_key(text: &str) -> Result<portcullis_ssh::keys::PrivateKey> {
    let key = portcullis_ssh::keys::PrivateKey::from_openssh(text)?;
    if key.is_encrypted() {
        bail!("the key is encrypted");
    }
    Ok(key)
}

/// The gateway's SSH host key: `<data_dir>/ssh_host_ed25519_key`.
pub fn ssh_host_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ssh_host_ed25519_key")
}

/// The SSH user certificate authority's key: `<data_dir>/ssh_user_ca_key`.
pub fn ssh_ca_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ssh_user_ca_key")
}

/// The policy source a config names.
pub fn policy_source(config: &Config) -> PolicySource {
    match &config.policy.source {
        PolicySourceConfig::Dir(dir) => PolicySource::Directory(dir.clone()),
        PolicySourceConfig::Git(git) => match &git.repo {
            GitRepo::Local(repo) => PolicySource::Git {
                repo: repo.clone(),
                reference: git.reference.clone(),
                subdir: git.subdir.clone(),
            },
            GitRepo::Remote(url) => PolicySource::Remote {
                url: url.clone(),
                mirror: policy_mirror_path(&config.gateway.data_dir, url),
                reference: git.reference.clone(),
                subdir: git.subdir.clone(),
            },
        },
    }
}

/// Where the gateway keeps its mirror of a remote policy repository: one
/// bare repository per URL under `<data_dir>/policy-mirrors/`.
pub fn policy_mirror_path(data_dir: &Path, url: &str) -> PathBuf {
    use sha2::Digest;
    // Named by the URL without its credentials: a rotated token keeps the
    // mirror.
    let digest = hex::encode(sha2::Sha256::digest(
        portcullis_config::redact_url(url).as_bytes(),
    ));
    data_dir
        .join("policy-mirrors")
        .join(format!("{}.git", digest.get(..16).unwrap_or(&digest)))
}

/// The policy engine a config names.
/// A configured target as policies see it.
fn policy_target(target: &TargetConfig) -> Target {
    Target {
        name: target.name.clone(),
        kind: match target.kind {
            TargetKindConfig::Postgres => TargetKind::Postgres,
            TargetKindConfig::Ssh => TargetKind::Ssh,
        },
        labels: target.labels.clone(),
    }
}

/// How policies are read, as the status API shows it and `policy drift`
/// compares it: the source (its ref and directory) and the engine.
/// Paths are shown canonical: a config given by a relative path names
/// the same directory from anywhere.
pub(crate) fn read_as(source: &PolicySource, engine: Engine) -> String {
    let canonical =
        |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let source = match source {
        PolicySource::Directory(dir) => PolicySource::Directory(canonical(dir)),
        PolicySource::Git {
            repo,
            reference,
            subdir,
        } => PolicySource::Git {
            repo: canonical(repo),
            reference: reference.clone(),
            subdir: subdir.clone(),
        },
        remote @ PolicySource::Remote { .. } => remote.clone(),
    };
    format!("{source}, {} engine", engine.extension())
}

pub fn policy_engine(config: &Config) -> Engine {
    match config.policy.engine {
        PolicyEngineKind::Cedar => Engine::Cedar,
        PolicyEngineKind::Rego => Engine::Rego,
    }
}

/// Watches `dir` and its sub-directories, and sends on `changed` when
/// anything in them changes. `None`
/// (with a warning) when the system cannot watch it: polling still works.
fn watch_directory(
    dir: &Path,
    changed: tokio::sync::mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| changes_content(&event.kind)) {
            // Full means a reload is already due: nothing is lost.
            let _ = changed.try_send(());
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(e) => {
            warn!(error = %e, "cannot watch the policy directory: changes are seen at the next poll");
            return None;
        }
    };
    if let Err(e) = watcher.watch(dir, notify::RecursiveMode::Recursive) {
        warn!(dir = %dir.display(), error = %e, "cannot watch the policy directory: changes are seen at the next poll");
        return None;
    }
    Some(watcher)
}

/// Whether an event in the policy directory can change what it holds.
/// Opening and reading a file is reported too (inotify's `IN_OPEN`,
/// `IN_CLOSE_NOWRITE`), and every reload reads the whole directory: taken
/// for changes, those would start the next reload, for ever.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

/// What one look at the policy source found.
enum Polled {
    /// The source could not be read at all: its version is unknown.
    Unreadable(PolicyError),
    /// The version enforced now, or one already known to be invalid.
    Unchanged(String),
    /// A new valid version (boxed: it is large, and rare), and how it
    /// relates to the enforced one in Git.
    Loaded(Box<Policies>, Option<History>),
    /// A new version that does not load, and why.
    Invalid(String, PolicyError),
    /// A new version that did not load, but the source changed while it
    /// was read: what failed may not be that version, so it is read again
    /// rather than remembered as invalid (which would keep it, valid, from
    /// being enforced until the source moved on).
    Moving,
}

/// How long a poll of the policy source may take before it is reported
/// late, and after how long a late one is given up for a fresh one (a few
/// times in a row at most: each given up may hold a thread; a poll that
/// answers makes room again).
const POLL_DEADLINE: Duration = Duration::from_secs(30);
const POLL_ABANDON: Duration = Duration::from_secs(300);
const MAX_ABANDONED_POLLS: usize = 4;
/// How long the first read of the policy source may take: a source that
/// does not answer keeps the gateway from starting, and says so.
pub(crate) const FIRST_READ_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `read` on a thread of its own and waits for it at most `deadline`
/// ([`FIRST_READ_DEADLINE`]); `None` when it did not answer. A source that
/// never answers (a remote that accepts the connection and says nothing)
/// holds that thread, not the caller, nor the runtime's shutdown, as a
/// thread of its blocking pool would.
pub(crate) async fn read_source<T: Send + 'static>(
    read: impl FnOnce() -> T + Send + 'static,
    deadline: Duration,
) -> Option<T> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("policy-source".into())
        .spawn(move || {
            let _ = answer.send(read());
        })
        .ok()?;
    tokio::time::timeout(deadline, answered).await.ok()?.ok()
}

/// Where the policies come from, and what a version is checked against.
#[derive(Clone)]
struct PolicyLoad {
    source: PolicySource,
    engine: Engine,
    /// Refuse a version unless its test cases all pass.
    require_cases: bool,
    /// The configured targets: rules for none of them are warned of, and
    /// cases are run for them.
    targets: Arc<[Target]>,
}

impl PolicyLoad {
    /// What a version is read from and with: a Git version is a commit id,
    /// which says nothing of the directory in it or the engine that read it.
    fn read_as(&self) -> String {
        read_as(&self.source, self.engine)
    }

    /// Reads and validates the version the source holds; with
    /// `require_cases`, refuses it unless its test cases all pass. Logs what
    /// of it names targets not configured.
    fn load(&self) -> Result<Policies, PolicyError> {
        let policies = self.source.load(self.engine)?;
        if self.require_cases {
            policy_test::check_cases(&policies, &self.targets)?;
        }
        let names: Vec<String> = self.targets.iter().map(|t| t.name.clone()).collect();
        for unconfigured in policies.unconfigured_targets(&names) {
            warn!(version = policies.version(), "{unconfigured}");
        }
        Ok(policies)
    }
}

/// Follows the policy source (a directory, or a Git ref): a new valid
/// version replaces the enforced one (and live sessions re-check their
/// `connect`); an invalid one never does, and the reason is logged and shown
/// on the admin API until fixed. `source_version` is kept up to date with
/// the newest version seen, valid or not.
async fn reload_policies(
    gate: Gate,
    load: PolicyLoad,
    source_version: admin::SourceVersion,
    state: Option<SharedState>,
    every: Duration,
) {
    let source = &load.source;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    // A directory is also watched, so that a change is seen at once; the
    // interval stays as the fallback (and is all a Git source has).
    let (changed, mut changes) = tokio::sync::mpsc::channel::<()>(1);
    let _watcher = match source {
        PolicySource::Directory(dir) => watch_directory(dir, changed),
        PolicySource::Git { .. } | PolicySource::Remote { .. } => None,
    };
    // The newest version that did not load: not parsed again (nor logged
    // again) until the source moves on.
    let mut known_invalid: Option<String> = None;
    // The reason a directory was last refused as a whole, once audited.
    let mut unreadable_audited: Option<String> = None;
    let mut in_flight: Option<(tokio::task::JoinHandle<Polled>, tokio::time::Instant)> = None;
    let mut abandoned = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(()) = changes.recv() => {
                // Editors write a file in several steps: let them finish.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while changes.try_recv().is_ok() {}
            }
        }
        // A poll still running from an earlier tick (a remote that stopped
        // answering) is waited for again rather than started anew: a stuck
        // connection must not pile up threads. One late past
        // `POLL_ABANDON` is left to itself, a few times at most.
        let (mut task, started) = match in_flight.take() {
            Some(in_flight) => in_flight,
            None => {
                let enforced = gate.policy_version();
                let poll = load.clone();
                let skip = known_invalid.clone();
                let task = tokio::task::spawn_blocking(move || {
                    match poll.source.current_version(poll.engine) {
                        Err(e) => Polled::Unreadable(e),
                        Ok(version) if version == enforced || skip.as_ref() == Some(&version) => {
                            Polled::Unchanged(version)
                        }
                        Ok(version) => match poll.load() {
                            Ok(policies) => {
                                let history = poll.source.history(&enforced, policies.version());
                                Polled::Loaded(Box::new(policies), history)
                            }
                            Err(e) => match poll.source.current_version(poll.engine) {
                                Ok(now) if now == version => Polled::Invalid(version, e),
                                _ => Polled::Moving,
                            },
                        },
                    }
                });
                (task, tokio::time::Instant::now())
            }
        };
        let left = POLL_DEADLINE.saturating_sub(started.elapsed());
        let Ok(polled) = tokio::time::timeout(left, &mut task).await else {
            let message = format!(
                "the {source} has not answered for {} s: the enforced version may be behind it",
                started.elapsed().as_secs()
            );
            if gate.policy_error().is_none() {
                tracing::error!(error = %message, enforced = %gate.policy_version(), "policy source late");
            }
            gate.set_policy_error(Some(message));
            source_version.set(None);
            if started.elapsed() >= POLL_ABANDON && abandoned < MAX_ABANDONED_POLLS {
                abandoned += 1;
            } else {
                in_flight = Some((task, started));
            }
            continue;
        };
        let was_late = started.elapsed() >= POLL_DEADLINE;
        abandoned = 0;
        let polled = match polled {
            Ok(polled) => polled,
            Err(e) => {
                tracing::error!(error = %e, "policy reload task failed");
                continue;
            }
        };
        if !matches!(polled, Polled::Unreadable(_)) {
            unreadable_audited = None;
        }
        let failure = match polled {
            // Read again at the next tick, or the next change seen.
            Polled::Moving => continue,
            Polled::Unchanged(version) => {
                if version == gate.policy_version() {
                    known_invalid = None;
                    gate.set_policy_error(None);
                }
                source_version.set(Some(version));
                None
            }
            Polled::Loaded(policies, history) => {
                let version = policies.version().to_string();
                known_invalid = None;
                source_version.set(Some(version.clone()));
                let previous = gate.policy_version();
                match gate.replace_policies_moved(*policies, history).await {
                    Ok(()) => {
                        if !warn_if_not_forward(history, &version, &previous, source) {
                            info!(%version, %source, "new policy version enforced");
                        }
                    }
                    Err(e) => {
                        tracing::error!(%version, error = %e, "new policy version enforced, but not audited")
                    }
                }
                record_enforced(state.as_ref(), &version, &load).await;
                None
            }
            Polled::Invalid(version, e) => {
                let error = e.to_string();
                if let Err(e) = gate.policy_refused(&version, &error).await {
                    tracing::error!(%version, error = %e, "a refused policy version is not audited");
                }
                known_invalid = Some(version.clone());
                source_version.set(Some(version));
                Some(error)
            }
            Polled::Unreadable(e) => {
                known_invalid = None;
                source_version.set(None);
                let error = e.to_string();
                // A directory refused as a whole (a link that leads nowhere,
                // a look-alike name) has no version, but is a version tried
                // all the same; audited once per reason.
                if matches!(source, PolicySource::Directory(_))
                    && unreadable_audited.as_ref() != Some(&error)
                {
                    if let Err(e) = gate.policy_refused("", &error).await {
                        tracing::error!(error = %e, "a refused policy directory is not audited");
                    }
                    unreadable_audited = Some(error.clone());
                }
                Some(error)
            }
        };
        if was_late && failure.is_none() {
            // The source answers again: what was said of it while it was
            // late is over, and a version known to be invalid is read again
            // so that its own error is shown.
            known_invalid = None;
            if gate.policy_version() == source_version.get().unwrap_or_default() {
                gate.set_policy_error(None);
            }
        }
        if let Some(message) = failure {
            if gate.policy_error().as_deref() != Some(message.as_str()) {
                tracing::error!(
                    error = %message,
                    enforced = %gate.policy_version(),
                    %source,
                    "the policy source holds no valid new version: the last valid one stays enforced"
                );
            }
            gate.set_policy_error(Some(message));
        }
    }
}

/// Builds every service and starts the listeners. `file` is the config's
/// path, for errors.
pub async fn start(config: Config, file: &Path) -> Result<Running> {
    tls::install_crypto_provider();
    admin::install_metrics();
    let data_dir = &config.gateway.data_dir;
    create_data_dir(data_dir)?;
    warn_if_shared(data_dir);

    let source = policy_source(&config);
    let load = PolicyLoad {
        source: source.clone(),
        engine: policy_engine(&config),
        require_cases: config.policy.require_cases,
        targets: config.targets.iter().map(policy_target).collect(),
    };
    let loading = {
        let load = load.clone();
        read_source(move || load.load(), FIRST_READ_DEADLINE)
    };
    let policies = loading
        .await
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the {source} did not answer in {} s: the gateway refuses to serve without a policy (check that the remote is reachable)",
                FIRST_READ_DEADLINE.as_secs()
            )
        })?
        .with_context(|| {
            format!("no valid policy in the {source}: the gateway refuses to serve without one")
        })?;
    info!(
        version = policies.version(),
        policies = policies.len(),
        %source,
        "policy loaded"
    );
    let source_version = admin::SourceVersion::new(Some(policies.version().to_string()));

    portcullis_audit::check_store_present(data_dir, &audit_path(data_dir))?;
    // No audit log yet: a first start, with no version before it.
    let first_start = !audit_path(data_dir).exists();
    let key = portcullis_audit::load_or_create_signing_key(data_dir)?;
    for database in [
        audit_path(data_dir),
        data_dir.join("approvals.db"),
        state_path(data_dir),
    ] {
        make_private(&database)?;
    }
    let recordings = if config.recording.enabled {
        Some(
            portcullis_record::Recordings::open(
                &recordings_path(data_dir),
                key.clone(),
                portcullis_record::Settings {
                    max_rows_per_statement: config.recording.max_rows_per_statement,
                    max_bytes_per_statement: config.recording.max_bytes_per_statement,
                    chunk_bytes: config.recording.chunk_bytes.max(4096),
                },
            )
            .context("cannot open the recordings directory")?,
        )
    } else {
        None
    };
    let audit = AuditLog::open(
        &audit_path(data_dir),
        key,
        AuditOptions {
            busy_timeout: Duration::from_millis(config.audit.busy_timeout_ms),
            checkpoint_every: config.audit.checkpoint_every,
            ..AuditOptions::default()
        },
    )?;
    let approvals = portcullis_gate::Approvals::open(
        &data_dir.join("approvals.db"),
        audit.clone(),
        approval_settings(&config, file)?,
    )
    .await
    .context("cannot open the approval store")?;
    let gate = Gate::new(
        policies,
        audit,
        100_000,
        mask_key(data_dir)?,
        approvals.clone(),
    );
    let state = match portcullis_store::StateStore::open(&state_path(data_dir)) {
        Ok(store) => Some(Arc::new(std::sync::Mutex::new(store))),
        Err(e) => {
            warn!(error = %e, "no state store: policy hit counts and the enforced policy version will not be kept");
            None
        }
    };
    // The version enforced before this start: a restart onto an older
    // commit is a step back like one made while running.
    let (previous, previous_read_as) = match state.as_ref().map(|state| state.lock()) {
        Some(Ok(store)) => store.enforced_policy().unwrap_or_else(|e| {
            warn!(error = %e, "the policy version enforced before this start is unknown");
            None
        }),
        _ => None,
    }
    .unwrap_or_default();
    let version = gate.policy_version();
    // Read from another source, another directory of it or with another
    // engine: the two versions say nothing of each other.
    let read_as = load.read_as();
    let moved = !previous_read_as.is_empty() && previous_read_as != read_as;
    if moved {
        warn!(
            before = %previous_read_as, now = %read_as,
            "the policies are not read as they were before this start: what was enforced then and now cannot be compared"
        );
    }
    let history = match source {
        _ if moved => Some(History::Unknown),
        // A Git version whose predecessor is not recorded (state.db new or
        // removed), is not a commit (the source was a directory), or is
        // gone: nothing says it is no step back.
        PolicySource::Git { .. } | PolicySource::Remote { .. }
            if previous != version && !(first_start && previous.is_empty()) =>
        {
            Some(
                source
                    .history(&previous, &version)
                    .unwrap_or(History::Unknown),
            )
        }
        _ => source.history(&previous, &version),
    };
    warn_if_not_forward(history, &version, &previous, &source);
    gate.policy_started(&previous, history)
        .await
        .context("cannot write the policy version to the audit log")?;
    record_enforced(state.as_ref(), &version, &load).await;

    let dev = dev_issuer(&config)?;
    if let Some(dev) = &dev {
        warn!(
            issuer = dev.issuer(),
            "the dev issuer is enabled: anyone who can run `portcullis dev token` with this data directory can mint tokens; disable [identity.dev] in production"
        );
    }
    let verifier = Verifier::new(oidc_settings(&config, file)?, dev)?;
    {
        let verifier = verifier.clone();
        tokio::spawn(async move { verifier.warm_up().await });
    }

    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(approvals.clone().run_timers()));
    let remote = recording_remote(&config, file)?;
    if let (Some(recordings), Some(remote)) = (&recordings, &remote) {
        tasks.push(tokio::spawn(upload_recordings(
            recordings.clone(),
            remote.clone(),
        )));
    }
    if let (Some(recordings), Some(retention)) = (&recordings, &config.recording.retention) {
        let keep = commands::parse_duration(retention)
            .with_context(|| format!("{}: `recording.retention`", file.display()))?;
        tasks.push(tokio::spawn(retire_recordings(
            recordings.clone(),
            gate.clone(),
            keep,
            retention.clone(),
            remote.is_some(),
        )));
    }
    if let Some(state) = state.clone() {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(10));
            loop {
                ticker.tick().await;
                flush_policy_hits(&gate, &state).await;
            }
        }));
    }
    if config.policy.reload_interval_seconds > 0 {
        tasks.push(tokio::spawn(reload_policies(
            gate.clone(),
            load.clone(),
            source_version.clone(),
            state.clone(),
            Duration::from_secs(config.policy.reload_interval_seconds),
        )));
    }
    let mut pg_addr = None;
    if let Some(pg) = &config.postgres {
        let acceptor = match &pg.tls {
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(
                &files.cert,
                &files.key,
            )?)),
            None => None,
        };
        let cleartext = match pg.cleartext_password {
            CleartextPassword::Loopback => CleartextPolicy::Loopback,
            CleartextPassword::Always => CleartextPolicy::Always,
            CleartextPassword::Never => CleartextPolicy::Never,
        };
        let mut service = PgService::new(
            targets(&config, file)?,
            verifier.clone(),
            gate.clone(),
            Arc::new(Classifier::new(pg.statement_cache).with_max_len(pg.max_query_bytes)),
            acceptor,
            cleartext,
        )
        .with_max_sessions_per_user(pg.max_sessions_per_user);
        if let Some(recordings) = recordings.clone() {
            service = service.with_recordings(recordings);
        }
        let service = Arc::new(service);
        let listener = tokio::net::TcpListener::bind(pg.listen)
            .await
            .with_context(|| format!("cannot listen on {} (postgres.listen)", pg.listen))?;
        let addr = listener.local_addr()?;
        info!(%addr, tls = pg.tls.is_some(), "postgres listener ready");
        pg_addr = Some(addr);
        tasks.push(tokio::spawn(async move { service.serve(listener).await }));
    }
    let mut ssh_addr = None;
    let mut ssh_certificates = None;
    if let Some(ssh) = &config.ssh {
        let host_key = portcullis_ssh::keys::load_or_create(&ssh_host_key_path(data_dir))
            .map_err(|e| anyhow::anyhow!("the SSH host key: {e}"))?;
        let ca = portcullis_ssh::CertificateAuthority::new(
            portcullis_ssh::keys::load_or_create(&ssh_ca_key_path(data_dir))
                .map_err(|e| anyhow::anyhow!("the SSH certificate authority's key: {e}"))?,
        );
        let duration = |value: &str, key: &str| -> Result<Option<Duration>> {
            if value.trim() == "0" {
                return Ok(None);
            }
            commands::parse_duration(value)
                .map(Some)
                .with_context(|| format!("{}: `ssh.{key}`", file.display()))
        };
        let settings = portcullis_ssh::Settings {
            idle_timeout: duration(&ssh.idle_timeout, "idle_timeout")?,
            keepalive: duration(&ssh.keepalive, "keepalive")?,
            ciphers: match &ssh.ciphers {
                Some(names) => portcullis_ssh::ciphers(names)
                    .map_err(|e| anyhow::anyhow!("{}: `ssh.ciphers`: {e}", file.display()))?,
                None => portcullis_ssh::CIPHERS.to_vec(),
            },
        };
        ssh_certificates = Some(portcullis_web::SshCertificates {
            ca: ca.clone(),
            certificate_max: duration(&ssh.certificate_max, "certificate_max")?
                .unwrap_or(Duration::from_secs(12 * 3600)),
        });
        let mut service = portcullis_ssh::SshService::new(
            ssh_targets(&config, file)?,
            verifier.clone(),
            gate.clone(),
            host_key,
            ca,
            settings,
        );
        if let Some(recordings) = recordings.clone() {
            service = service.with_recordings(recordings);
        }
        let listener = tokio::net::TcpListener::bind(ssh.listen)
            .await
            .with_context(|| format!("cannot listen on {} (ssh.listen)", ssh.listen))?;
        let addr = listener.local_addr()?;
        info!(%addr, "ssh listener ready");
        ssh_addr = Some(addr);
        tasks.push(tokio::spawn(async move { service.serve(listener).await }));
    }
    let mut admin_addr = None;
    if let Some(admin) = &config.admin {
        let listener = tokio::net::TcpListener::bind(admin.listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin.listen)", admin.listen))?;
        let addr = listener.local_addr()?;
        info!(%addr, "admin listener ready");
        admin_addr = Some(addr);
        let web = portcullis_web::Web {
            approvals: approvals.clone(),
            verifier: verifier.clone(),
            targets: config.targets.iter().map(|t| t.name.clone()).collect(),
            console: console_settings(&config, file)?,
            recordings: recordings.clone(),
            recordings_remote: remote.clone(),
            recording_viewers: config.recording.viewers.clone(),
            masked_for: {
                let gate = gate.clone();
                let targets: Vec<Target> = config.targets.iter().map(policy_target).collect();
                Arc::new(move |viewer, name| {
                    let target = targets.iter().find(|t| t.name == name)?;
                    Some(gate.masked_for(viewer, target))
                })
            },
            ssh: ssh_certificates,
        };
        let router = admin::router(
            gate.clone(),
            source_version.clone(),
            config.targets.iter().map(|t| t.name.clone()).collect(),
            read_as.clone(),
        )
        .merge(portcullis_web::router(web));
        tasks.push(tokio::spawn(async move {
            admin::serve(listener, router).await;
        }));
    }
    Ok(Running {
        pg_addr,
        ssh_addr,
        admin_addr,
        gate,
        state,
        tasks,
    })
}

/// The key of the `hash` masking strategy: 32 random bytes in
/// `<data_dir>/mask.key` (hex, mode 0600), made on first start. Gateways that
/// must hash alike share this file.
fn mask_key(data_dir: &Path) -> anyhow::Result<portcullis_mask::HashKey> {
    let path = data_dir.join("mask.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .with_context(|| {
                    format!("`{}` is not a masking key (64 hex digits)", path.display())
                })?;
            Ok(portcullis_mask::HashKey::new(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes: [u8; 32] = rand::random();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(&path)
                .with_context(|| format!("cannot create masking key `{}`", path.display()))?;
            std::io::Write::write_all(&mut file, hex::encode(bytes).as_bytes())
                .with_context(|| format!("cannot write masking key `{}`", path.display()))?;
            Ok(portcullis_mask::HashKey::new(bytes))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read masking key `{}`", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config named by a relative path, or from another directory, reads
    /// the policies the same way: no false drift, no restart taken for a
    /// move.
    #[test]
    fn how_policies_are_read_names_directories_canonically() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        let read = |path: PathBuf| read_as(&PolicySource::Directory(path), Engine::Cedar);
        assert_eq!(
            read(dir.path().join("policies")),
            read(dir.path().join("policies/../policies/."))
        );
        assert_ne!(
            read(dir.path().join("policies")),
            read_as(
                &PolicySource::Directory(dir.path().join("policies")),
                Engine::Rego
            )
        );
    }

    /// Found in attack: a remote that accepted the connection and never
    /// answered held the gateway's start (and `policy drift`) for ever.
    #[tokio::test]
    async fn a_source_that_does_not_answer_is_given_up_on() {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let never = read_source(
            move || {
                let _ = held.recv();
                1
            },
            Duration::from_millis(200),
        );
        assert_eq!(never.await, None);
        assert_eq!(read_source(|| 2, Duration::from_secs(5)).await, Some(2));
        drop(release);
    }

    /// Each reload lists the directory and reads every file in it. Taken for
    /// a change, that would start the next reload, five times a second for
    /// as long as the gateway runs.
    #[tokio::test]
    async fn reading_the_policy_directory_is_not_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("access.cedar");
        std::fs::write(&file, "permit (principal, action, resource);\n").unwrap();
        let (changed, mut changes) = tokio::sync::mpsc::channel(1);
        let _watcher = watch_directory(dir.path(), changed).expect("the directory is watched");
        for _ in 0..3 {
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                std::fs::read_to_string(entry.unwrap().path()).unwrap();
            }
        }
        let read = tokio::time::timeout(Duration::from_millis(500), changes.recv()).await;
        assert!(
            read.is_err(),
            "reading the directory was taken for a change"
        );

        std::fs::write(&file, "forbid (principal, action, resource);\n").unwrap();
        let written = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await;
        assert!(matches!(written, Ok(Some(()))), "a write was not seen");
    }
}
