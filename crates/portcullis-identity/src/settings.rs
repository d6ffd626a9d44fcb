//! What this crate needs to know about each issuer.
//!
//! These are plain structs, not the configuration file's types: the
//! configuration crate loads and validates the file, the wiring crate turns it
//! into these.

use std::path::PathBuf;
use std::time::Duration;

/// The default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The largest leeway accepted: more would make expiry meaningless.
pub const MAX_LEEWAY: Duration = Duration::from_secs(600);

/// The default name of the groups claim.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";

/// One OpenID Connect provider whose tokens the gateway trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcIssuerSettings {
    /// The exact `iss` value of its tokens (no trailing slash is added or
    /// removed).
    pub issuer: String,
    /// The `aud` values accepted; a token must name at least one of them.
    pub audience: Vec<String>,
    /// The claim that holds the user's groups (`groups` by default).
    pub groups_claim: String,
    /// The claim that names the user; `None` means `email` (a token without
    /// one is refused).
    pub user_claim: Option<String>,
    /// Where the discovery document is; `None` means
    /// `<issuer>/.well-known/openid-configuration`.
    pub discovery_url: Option<String>,
    /// The OAuth client used by the login flows (not needed to verify tokens).
    pub client_id: Option<String>,
    /// The client secret, for confidential clients; sent with
    /// `client_secret_basic`.
    pub client_secret: Option<String>,
    /// Clock-skew allowance for `exp` and `nbf`.
    pub leeway: Duration,
}

impl OidcIssuerSettings {
    /// Settings with the defaults: groups in `groups`, the user from
    /// `email`, discovery at the well-known address, 30 s of leeway, no
    /// login client.
    pub fn new(issuer: impl Into<String>, audience: Vec<String>) -> Self {
        OidcIssuerSettings {
            issuer: issuer.into(),
            audience,
            groups_claim: DEFAULT_GROUPS_CLAIM.to_owned(),
            user_claim: None,
            discovery_url: None,
            client_id: None,
            client_secret: None,
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// The discovery document's address.
    pub fn discovery_url(&self) -> String {
        match &self.discovery_url {
            Some(url) => url.clone(),
            None => format!(
                "{}/.well-known/openid-configuration",
                self.issuer.trim_end_matches('/')
            ),
        }
    }
}

/// The gateway's own issuer, for development and tests: tokens signed with a
/// local ed25519 key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevIssuerSettings {
    /// The `iss` of its tokens, e.g. `portcullis-dev`.
    pub issuer: String,
    /// The single `aud` of its tokens.
    pub audience: String,
    /// The ed25519 key file; created (mode 0600) when absent.
    pub key_path: PathBuf,
}
