//! The gateway's configuration: typed, loaded once from a TOML file, with
//! `${VAR}` / `${VAR:-default}` interpolation, unknown keys refused, and every
//! error naming the file and the key.
//!
//! Layout:
//! - [`interpolate`]: environment interpolation over parsed string values.
//! - [`secret`]: secrets by reference (`{ env = ... }`, `{ file = ... }`).
//! - `error`: [`ConfigError`].

mod error;
pub mod interpolate;
pub mod secret;

pub use error::ConfigError;
pub use secret::SecretRef;

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub postgres: Option<PostgresListenerConfig>,
    #[serde(default)]
    pub ssh: Option<SshListenerConfig>,
    #[serde(default)]
    pub identity: IdentityConfig,
    pub policy: PolicyConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
    #[serde(default)]
    pub recording: RecordingConfig,
}

/// `[recording]`: every session recorded in `<data_dir>/recordings`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Per statement, the rows and bytes of results kept in the recording;
    /// what is over is marked as truncated.
    #[serde(default = "default_max_rows", deserialize_with = "number")]
    pub max_rows_per_statement: u64,
    #[serde(default = "default_max_bytes", deserialize_with = "number")]
    pub max_bytes_per_statement: u64,
    /// How long finished recordings are kept (`90d`); none: for ever.
    #[serde(default)]
    pub retention: Option<String>,
    /// Groups whose members may watch recordings in the web console.
    #[serde(default)]
    pub viewers: Vec<String>,
    /// A chunk is sealed (and uploaded) when it reaches this size.
    #[serde(default = "default_chunk_bytes", deserialize_with = "number")]
    pub chunk_bytes: u64,
    /// S3-compatible object storage for recordings; the data directory is
    /// then the spool.
    #[serde(default)]
    pub s3: Option<S3Config>,
}

fn default_chunk_bytes() -> u64 {
    1 << 20
}

/// `[recording.s3]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// An S3-compatible server; AWS's regional endpoint when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub prefix: String,
    pub access_key_id: SecretRef,
    pub secret_access_key: SecretRef,
    /// Keep recordings in the data directory once stored.
    #[serde(default)]
    pub keep_local: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            enabled: true,
            max_rows_per_statement: default_max_rows(),
            max_bytes_per_statement: default_max_bytes(),
            retention: None,
            viewers: Vec::new(),
            chunk_bytes: default_chunk_bytes(),
            s3: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_max_rows() -> u64 {
    10_000
}

fn default_max_bytes() -> u64 {
    16 << 20
}

/// `[approvals]`: held statements and access requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// How long a request waits for reviewers (`15m`, `1h`).
    #[serde(default = "default_expiry")]
    pub expiry: String,
    /// Groups whose members review access requests (`portcullis request`);
    /// empty turns access requests off.
    #[serde(default)]
    pub access_approvers: Vec<String>,
    #[serde(default = "default_one", deserialize_with = "number")]
    pub access_min_approvals: u32,
    /// The longest access window that may be asked for.
    #[serde(default = "default_access_max")]
    pub access_max: String,
    /// Webhooks told of each request and decision.
    #[serde(default)]
    pub notify: Vec<NotifyConfig>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            expiry: default_expiry(),
            access_approvers: Vec::new(),
            access_min_approvals: 1,
            access_max: default_access_max(),
            notify: Vec::new(),
        }
    }
}

fn default_expiry() -> String {
    "15m".into()
}

fn default_access_max() -> String {
    "12h".into()
}

fn default_one() -> u32 {
    1
}

/// One webhook. Its URL is a secret (a Slack URL is a credential).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub url: SecretRef,
    /// `json` (the request as JSON) or `slack` (an incoming-webhook message).
    #[serde(default = "default_notify_format")]
    pub format: String,
}

fn default_notify_format() -> String {
    "json".into()
}

/// `[console]`: the web console, served on the admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The address people reach the console at; links in notices and
    /// notifications use it, and the OIDC redirect is `<public_url>/auth/callback`.
    pub public_url: String,
    /// The `[[identity.oidc]]` issuer reviewers log in with; that entry
    /// needs a `client_id`. Defaults to the first one that has one.
    #[serde(default)]
    pub issuer: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where state lives: the audit database, keys. Relative paths are taken
    /// from the config file's directory.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresListenerConfig {
    pub listen: SocketAddr,
    /// TLS on the client side. Without it, clients connect in cleartext.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Where a token may travel as a cleartext password (no TLS).
    #[serde(default)]
    pub cleartext_password: CleartextPassword,
    /// Entries kept in the statement classification cache.
    #[serde(default = "default_statement_cache", deserialize_with = "number")]
    pub statement_cache: usize,
    /// The longest query text the gateway reads, in bytes; longer ones are
    /// refused. Parsing costs up to several hundred bytes of memory per
    /// byte of text.
    #[serde(default = "default_max_query_bytes", deserialize_with = "number")]
    pub max_query_bytes: usize,
    /// The most sessions one person may have open at once: each holds one
    /// of the target's connection slots.
    #[serde(default = "default_max_sessions_per_user", deserialize_with = "number")]
    pub max_sessions_per_user: usize,
}

fn default_max_sessions_per_user() -> usize {
    32
}

fn default_statement_cache() -> usize {
    10_000
}

fn default_max_query_bytes() -> usize {
    1 << 20
}

/// `[ssh]`: the SSH listener. The SSH user name is the target's name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshListenerConfig {
    pub listen: SocketAddr,
    /// A connection with no traffic for this long is closed: `30m`, `0` for
    /// never.
    #[serde(default = "default_ssh_idle_timeout")]
    pub idle_timeout: String,
    /// How often a quiet client is asked whether it is still there; it is
    /// disconnected after 3 unanswered asks. `0` (the default) for never.
    /// A client that answers is never idle: with keepalives on,
    /// `idle_timeout` closes only connections whose client stopped
    /// answering.
    #[serde(default = "default_ssh_keepalive")]
    pub keepalive: String,
    /// How long the certificates `portcullis ssh-cert` gets may be valid at
    /// most (they never outlive the token they were issued for).
    #[serde(default = "default_ssh_cert_max")]
    pub certificate_max: String,
    /// The ciphers offered to clients, in the order the gateway prefers
    /// them; unset: every cipher the gateway speaks (AES-GCM, then
    /// ChaCha20-Poly1305, then AES-CTR). OpenSSH clients pick the first of
    /// their own list that is offered, so `["aes256-gcm@openssh.com",
    /// "aes128-gcm@openssh.com"]` makes them use AES-GCM.
    #[serde(default)]
    pub ciphers: Option<Vec<String>>,
}

fn default_ssh_idle_timeout() -> String {
    "30m".into()
}

fn default_ssh_keepalive() -> String {
    "0".into()
}

fn default_ssh_cert_max() -> String {
    "12h".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CleartextPassword {
    /// Only from loopback clients.
    #[default]
    Loopback,
    /// From anywhere (behind a TLS-terminating load balancer, say).
    Always,
    /// Never: clients must use TLS.
    Never,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The development issuer: `portcullis dev token` mints tokens it signs.
    #[serde(default)]
    pub dev: Option<DevIssuerConfig>,
    #[serde(default)]
    pub oidc: Vec<OidcConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevIssuerConfig {
    #[serde(default = "default_dev_issuer")]
    pub issuer: String,
    #[serde(default = "default_audience")]
    pub audience: String,
}

fn default_dev_issuer() -> String {
    "portcullis-dev".to_string()
}

fn default_audience() -> String {
    "portcullis".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The exact `iss` value of the provider's tokens.
    pub issuer: String,
    /// Accepted `aud` values; usually the client id.
    pub audience: Vec<String>,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The claim that names the user (default: `email`, then `sub`).
    #[serde(default)]
    pub user_claim: Option<String>,
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// For `portcullis login`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    #[serde(default = "default_leeway", deserialize_with = "number")]
    pub leeway_seconds: u64,
}

fn default_groups_claim() -> String {
    "groups".to_string()
}

fn default_leeway() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawPolicyConfig")]
pub struct PolicyConfig {
    pub engine: PolicyEngineKind,
    /// Where the policies come from: `dir = "..."` or `git = { ... }`.
    pub source: PolicySourceConfig,
    /// How often the source is checked for a new version; 0 turns
    /// reloading off.
    pub reload_interval_seconds: u64,
    /// Whether a version is refused (like an invalid one) unless it holds
    /// test cases (`*.cases.toml`) and every one passes.
    pub require_cases: bool,
}

/// `[policy]` as written: exactly one of `dir` and `git`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyConfig {
    #[serde(default)]
    engine: PolicyEngineKind,
    #[serde(default)]
    dir: Option<PathBuf>,
    #[serde(default)]
    git: Option<GitSourceConfig>,
    #[serde(default = "default_reload_interval", deserialize_with = "number")]
    reload_interval_seconds: u64,
    #[serde(default)]
    require_cases: bool,
}

impl TryFrom<RawPolicyConfig> for PolicyConfig {
    type Error = String;

    fn try_from(raw: RawPolicyConfig) -> Result<PolicyConfig, String> {
        let source = match (raw.dir, raw.git) {
            (Some(dir), None) => PolicySourceConfig::Dir(dir),
            (None, Some(git)) => PolicySourceConfig::Git(git),
            (Some(_), Some(_)) => {
                return Err(
                    "both `dir` and `git` are set: give exactly one policy source".to_string(),
                )
            }
            (None, None) => {
                return Err(
                    "no policy source: give `dir = \"...\"` or `git = { repo = \"...\" }`"
                        .to_string(),
                )
            }
        };
        Ok(PolicyConfig {
            engine: raw.engine,
            source,
            reload_interval_seconds: raw.reload_interval_seconds,
            require_cases: raw.require_cases,
        })
    }
}

fn default_reload_interval() -> u64 {
    5
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySourceConfig {
    /// A directory holding the policy files.
    Dir(PathBuf),
    /// A commit of a Git repository.
    Git(GitSourceConfig),
}

/// Policies read from a Git repository's commits, without a checkout.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GitSourceConfig {
    /// A repository on this machine (a path, relative to the config file's
    /// directory, or a `file://` URL), or a remote one (`https://`,
    /// `http://`, `git://`, `ssh://` or `user@host:path`) that the gateway
    /// fetches into a mirror in its data directory.
    #[serde(deserialize_with = "git_repo")]
    pub repo: GitRepo,
    /// The ref to follow: a branch (`main`), `HEAD`, a full ref name, a
    /// remote-tracking branch (`origin/main`), a tag, or a full commit id.
    /// Default `HEAD`: the repository's current branch (for a bare mirror,
    /// the remote's default branch).
    #[serde(
        rename = "ref",
        default = "default_git_ref",
        deserialize_with = "git_ref"
    )]
    pub reference: String,
    /// The directory inside the repository holding the policy files, with
    /// `/` between components; empty (the default) is the repository's root.
    #[serde(default, deserialize_with = "git_subdir")]
    pub subdir: String,
}

fn default_git_ref() -> String {
    "HEAD".to_string()
}

/// Where a Git policy source is.
#[derive(Clone, PartialEq, Eq)]
pub enum GitRepo {
    /// A repository on this machine, read in place.
    Local(PathBuf),
    /// A remote repository's URL, as written (credentials in it are never
    /// shown: see [`GitRepo::shown`]).
    Remote(String),
}

impl GitRepo {
    /// The repository as it may be shown in logs and errors: a remote URL
    /// without the user name and password it may carry.
    pub fn shown(&self) -> String {
        match self {
            GitRepo::Local(path) => path.display().to_string(),
            GitRepo::Remote(url) => redact_url(url),
        }
    }
}

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitRepo::Local(path) => f.debug_tuple("Local").field(path).finish(),
            GitRepo::Remote(_) => f.debug_tuple("Remote").field(&self.shown()).finish(),
        }
    }
}

/// A URL without its credentials: `https://token@host/x` is
/// `https://***@host/x`.
pub fn redact_url(text: &str) -> String {
    let parsed = url::Url::parse(text)
        .ok()
        .filter(|url| REMOTE_SCHEMES.contains(&url.scheme()) || url.scheme() == "file");
    match parsed {
        Some(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_password(None);
            let _ = url.set_username("***");
            url.to_string()
        }
        Some(_) => text.to_string(),
        // Not a URL the gateway fetches from (a token holding `/`, `?` or
        // `#`, a typo, or the `user:password@host:path` form, which parses
        // with `user` as its scheme): everything before the last `@` goes,
        // after the scheme when there is one.
        None => {
            let (scheme, rest) = match text.split_once("://") {
                Some((scheme, rest)) => (format!("{scheme}://"), rest),
                None => (String::new(), text),
            };
            match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}***@{host}"),
                None => text.to_string(),
            }
        }
    }
}

/// Schemes the gateway fetches from.
const REMOTE_SCHEMES: &[&str] = &["https", "http", "git", "ssh"];

/// A local path or a `file://` URL turned into one, or a remote URL.
fn git_repo<'de, D>(deserializer: D) -> Result<GitRepo, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Err(serde::de::Error::custom("must not be empty"));
    }
    if text.starts_with("file:") {
        return url::Url::parse(&text)
            .ok()
            .and_then(|url| url.to_file_path().ok())
            .map(GitRepo::Local)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("`{text}` is not a `file://` URL of a local path"))
            });
    }
    if let Some((scheme, _)) = text.split_once("://") {
        return match url::Url::parse(&text) {
            Ok(url) if REMOTE_SCHEMES.contains(&scheme) && url.host_str().is_some() => {
                Ok(GitRepo::Remote(text))
            }
            Ok(_) if REMOTE_SCHEMES.contains(&scheme) => Err(serde::de::Error::custom(format!(
                "`{}` has no host",
                redact_url(&text)
            ))),
            _ => Err(serde::de::Error::custom(format!(
                "`{}` is not a URL the gateway fetches from: use https://, http://, git://, ssh:// or file://",
                redact_url(&text)
            ))),
        };
    }
    // git reads `host:path` (a colon before the first slash) as a remote over
    // ssh; a local path like that is written `./host:path`.
    let before_slash = text.split('/').next().unwrap_or_default();
    if before_slash.contains(':') {
        // In `user:secret@host:path` git takes `user` for the host and runs
        // ssh with the secret in its command line, where anyone on the
        // machine can read it.
        if let Some((user, _)) = text.split_once('@') {
            if user.contains(':') {
                return Err(serde::de::Error::custom(
                    "a password in a `user@host:path` address is not used over ssh (and would show on the machine's process list): log in with the gateway user's ssh key, or use an https:// URL",
                ));
            }
        }
        return Ok(GitRepo::Remote(text));
    }
    Ok(GitRepo::Local(PathBuf::from(text)))
}

fn git_ref<'de, D>(deserializer: D) -> Result<String, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Err(serde::de::Error::custom("must not be empty"));
    }
    Ok(text)
}

/// Normalized to components joined by `/`: `./policies/` is `policies`.
fn git_subdir<'de, D>(deserializer: D) -> Result<String, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    if text.starts_with('/') {
        return Err(serde::de::Error::custom(format!(
            "`{text}` must be a path inside the repository, not an absolute path"
        )));
    }
    let mut components = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(serde::de::Error::custom(format!(
                    "`{text}` must be a path inside the repository, without `..`"
                )))
            }
            part => components.push(part),
        }
    }
    Ok(components.join("/"))
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PolicyEngineKind {
    /// `*.cedar` files, validated against the gateway's schema.
    #[default]
    Cedar,
    /// `*.rego` files, evaluated with regorus (see docs/rego.md).
    Rego,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// How long an append waits for a locked store before the statement is refused.
    #[serde(default = "default_busy_timeout", deserialize_with = "number")]
    pub busy_timeout_ms: u64,
    #[serde(default = "default_checkpoint_every", deserialize_with = "number")]
    pub checkpoint_every: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            busy_timeout_ms: default_busy_timeout(),
            checkpoint_every: default_checkpoint_every(),
        }
    }
}

fn default_busy_timeout() -> u64 {
    5_000
}

fn default_checkpoint_every() -> u64 {
    1_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The name users connect to (`dbname=` for PostgreSQL) and policies see.
    pub name: String,
    pub kind: TargetKindConfig,
    pub host: String,
    #[serde(deserialize_with = "number")]
    pub port: u16,
    /// PostgreSQL: the database the gateway opens.
    #[serde(default)]
    pub database: String,
    /// The account the gateway logs in as.
    pub user: String,
    /// PostgreSQL: required. SSH: used when no `key_file` is given.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// SSH: the private key (OpenSSH format) the gateway logs in with.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// SSH: the target's public host key, as in a `known_hosts` line
    /// (`ssh-ed25519 AAAA...`, a leading host name is ignored). Required:
    /// a target whose host key differs is refused.
    #[serde(default)]
    pub host_key: Option<String>,
    #[serde(default)]
    pub tls: TargetTls,
    /// PEM CA bundle for `tls = "verify-full"`; the system roots otherwise.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TargetKindConfig {
    Postgres,
    Ssh,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TargetTls {
    /// No TLS to the target.
    #[default]
    Disable,
    /// TLS, certificate verified against the CA and the host name.
    VerifyFull,
}

/// Accepts a number, or a string holding one (what `${VAR}` gives).
fn number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr + TryFrom<i64>,
    <T as std::str::FromStr>::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(i64),
        String(String),
    }
    match NumberOrString::deserialize(deserializer)? {
        NumberOrString::Number(n) => {
            T::try_from(n).map_err(|_| serde::de::Error::custom(format!("{n} is out of range")))
        }
        NumberOrString::String(s) => s
            .trim()
            .parse()
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a valid number: {e}"))),
    }
}

impl Config {
    /// Reads, interpolates, parses and validates a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Config::parse(&text, file, &interpolate::ProcessEnv)
    }

    /// Parses a config held in memory; `file` is used for errors and to
    /// resolve relative paths.
    pub fn parse(
        text: &str,
        file: &Path,
        env: &dyn interpolate::Env,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        interpolate::interpolate_value(&mut value, &mut Vec::new(), file, env)?;
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid {
                file: file.to_path_buf(),
                key,
                message: e.into_inner().to_string(),
            }
        })?;
        let base = file.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate(file)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.gateway.data_dir);
        match &mut self.policy.source {
            PolicySourceConfig::Dir(dir) => join(dir),
            PolicySourceConfig::Git(git) => {
                if let GitRepo::Local(repo) = &mut git.repo {
                    join(repo)
                }
            }
        }
        if let Some(tls) = self.postgres.as_mut().and_then(|pg| pg.tls.as_mut()) {
            join(&mut tls.cert);
            join(&mut tls.key);
        }
        for target in &mut self.targets {
            if let Some(ca) = target.ca_file.as_mut() {
                join(ca);
            }
            // `key_file = "${VAR:-}"` with VAR unset means no key.
            if target
                .key_file
                .as_ref()
                .is_some_and(|k| k.as_os_str().is_empty())
            {
                target.key_file = None;
            }
            if let Some(key) = &mut target.key_file {
                join(key);
            }
            if let Some(SecretRef::File(p)) = &mut target.password {
                join(p);
            }
        }
        for oidc in &mut self.identity.oidc {
            if let Some(SecretRef::File(p)) = oidc.client_secret.as_mut() {
                join(p);
            }
        }
        if let Some(s3) = self.recording.s3.as_mut() {
            for secret in [&mut s3.access_key_id, &mut s3.secret_access_key] {
                if let SecretRef::File(p) = secret {
                    join(p);
                }
            }
        }
        for notify in &mut self.approvals.notify {
            if let SecretRef::File(p) = &mut notify.url {
                join(p);
            }
        }
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key,
            message,
        };
        let mut names = std::collections::HashSet::new();
        for (idx, target) in self.targets.iter().enumerate() {
            if target.name.is_empty() {
                return Err(invalid(
                    format!("targets[{idx}].name"),
                    "must not be empty".into(),
                ));
            }
            if !names.insert(target.name.as_str()) {
                return Err(invalid(
                    format!("targets[{idx}].name"),
                    format!("target `{}` is defined twice", target.name),
                ));
            }
            match target.kind {
                TargetKindConfig::Postgres => {
                    if target.database.is_empty() {
                        return Err(invalid(
                            format!("targets[{idx}].database"),
                            "a postgres target needs the database the gateway opens".into(),
                        ));
                    }
                    if target.password.is_none() {
                        return Err(invalid(
                            format!("targets[{idx}].password"),
                            "a postgres target needs the password the gateway logs in with: { env = \"VAR\" } or { file = \"PATH\" }".into(),
                        ));
                    }
                }
                // An SSH target's key and host key are read when the
                // gateway serves (`portcullis_app`), like passwords: the
                // other commands load this config without them.
                TargetKindConfig::Ssh => {}
            }
        }
        for (idx, oidc) in self.identity.oidc.iter().enumerate() {
            if oidc.audience.is_empty() {
                return Err(invalid(
                    format!("identity.oidc[{idx}].audience"),
                    "give at least one accepted audience".into(),
                ));
            }
        }
        for (idx, notify) in self.approvals.notify.iter().enumerate() {
            if !matches!(notify.format.as_str(), "json" | "slack") {
                return Err(invalid(
                    format!("approvals.notify[{idx}].format"),
                    format!("`{}` is not a format: use `json` or `slack`", notify.format),
                ));
            }
        }
        if let Some(console) = &self.console {
            if self.admin.is_none() {
                return Err(invalid(
                    "console".into(),
                    "the console is served on the admin listener: configure [admin] listen".into(),
                ));
            }
            if !(console.public_url.starts_with("http://")
                || console.public_url.starts_with("https://"))
            {
                return Err(invalid(
                    "console.public_url".into(),
                    format!("`{}` is not an http or https URL", console.public_url),
                ));
            }
            // Browsers send the session cookie and the OIDC code there.
            if !url::Url::parse(&console.public_url).is_ok_and(|u| credentials_may_go_to(&u)) {
                return Err(invalid(
                    "console.public_url".into(),
                    format!(
                        "`{}` would carry reviewers' sessions in clear: use https (TLS in front of the admin listener), or http only on this machine (127.0.0.1, localhost)",
                        console.public_url
                    ),
                ));
            }
        }
        if self.identity.dev.is_none() && self.identity.oidc.is_empty() {
            return Err(invalid(
                "identity".into(),
                "no identity source: configure [[identity.oidc]] or enable [identity.dev]".into(),
            ));
        }
        Ok(())
    }

    /// The `[recording.s3]` settings with their secrets read, if configured.
    pub fn recording_s3(
        &self,
        file: &Path,
    ) -> Result<Option<(S3Config, String, String)>, ConfigError> {
        let Some(s3) = &self.recording.s3 else {
            return Ok(None);
        };
        let read = |secret: &SecretRef, key: &str| {
            secret.resolve().map_err(|message| ConfigError::Secret {
                file: file.to_path_buf(),
                key: format!("recording.s3.{key}"),
                message,
            })
        };
        Ok(Some((
            s3.clone(),
            read(&s3.access_key_id, "access_key_id")?,
            read(&s3.secret_access_key, "secret_access_key")?,
        )))
    }

    /// Resolves a target's secret, with the file and key in the error.
    pub fn target_password(&self, file: &Path, idx: usize) -> Result<String, ConfigError> {
        let target = self.targets.get(idx).ok_or_else(|| ConfigError::Invalid {
            file: file.to_path_buf(),
            key: format!("targets[{idx}]"),
            message: "no such target".into(),
        })?;
        target
            .password
            .as_ref()
            .ok_or_else(|| ConfigError::Invalid {
                file: file.to_path_buf(),
                key: format!("targets[{idx}].password"),
                message: "no password is configured".into(),
            })?
            .resolve()
            .map_err(|message| ConfigError::Secret {
                file: file.to_path_buf(),
                key: format!("targets[{idx}].password"),
                message,
            })
    }
}

#[cfg(test)]
mod tests;

/// Whether a credential (an identity token, a session cookie) may travel to
/// `url`: over TLS, or over plain HTTP to this machine only.
pub fn credentials_may_go_to(url: &url::Url) -> bool {
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Domain(name))) => name.eq_ignore_ascii_case("localhost"),
        _ => false,
    }
}
