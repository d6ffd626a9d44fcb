//! The one error type of this crate.
//!
//! Messages are written for the person who reads them (a user whose login was
//! refused, an operator reading the log): lowercase, no trailing period, user
//! input quoted in backticks. No message ever contains a token: claims and
//! header values quoted here are shortened and stripped of control characters
//! by [`quote`].

use std::path::PathBuf;

/// Which side an error belongs to, so the protocol adapter can tell a refused
/// client from a gateway that cannot do its job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorSide {
    /// The token (or the login the user attempted) is not acceptable.
    Client,
    /// The gateway or the identity provider failed: configuration, network,
    /// files.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    // --- the token itself ---------------------------------------------------
    #[error("token is malformed: {reason}")]
    MalformedToken { reason: String },

    #[error("token is too long ({length} bytes, at most {limit})")]
    TokenTooLong { length: usize, limit: usize },

    #[error(
        "token algorithm `{alg}` is not accepted (use an asymmetric algorithm such as RS256, ES256 or EdDSA)"
    )]
    AlgorithmNotAccepted { alg: String },

    #[error(
        "token header marks `{extensions}` as critical, and no critical extension is supported"
    )]
    CriticalHeader { extensions: String },

    #[error("token has no `{claim}` claim")]
    MissingClaim { claim: String },

    #[error("token has no `email` claim, which names the user: log in asking for the `email` scope (`portcullis login` does), or name this issuer's users by another claim (`user_claim`)")]
    NoEmail,

    #[error("token claim `{claim}` is not valid: {reason}")]
    InvalidClaim { claim: String, reason: String },

    #[error("unknown token issuer `{issuer}`")]
    UnknownIssuer { issuer: String },

    #[error("token issuer does not match `{issuer}`")]
    WrongIssuer { issuer: String },

    #[error("token audience {audience} is not accepted for issuer `{issuer}` (expected one of {expected})")]
    WrongAudience {
        issuer: String,
        audience: String,
        expected: String,
    },

    #[error("token expired at {at}")]
    Expired { at: String },

    #[error("token is not valid before {at}")]
    NotYetValid { at: String },

    #[error("token signature is not valid for issuer `{issuer}`")]
    InvalidSignature { issuer: String },

    #[error("token signing key `{kid}` is not among the keys of issuer `{issuer}`")]
    UnknownKeyId { issuer: String, kid: String },

    #[error("token has no `kid` header and issuer `{issuer}` has {candidates} keys usable for `{alg}` (exactly one is needed to do without `kid`)")]
    AmbiguousKey {
        issuer: String,
        alg: String,
        candidates: usize,
    },

    #[error("signing key `{kid}` of issuer `{issuer}` cannot verify `{alg}` tokens{detail}")]
    KeyAlgorithmMismatch {
        issuer: String,
        kid: String,
        alg: String,
        /// Either empty or ` (the key is for `RS256`)`.
        detail: String,
    },

    #[error("token email `{email}` is not verified (`email_verified` is false)")]
    EmailNotVerified { email: String },

    // --- the identity provider --------------------------------------------
    #[error("could not fetch the signing keys of issuer `{issuer}`: {reason}")]
    KeysUnavailable { issuer: String, reason: String },

    #[error("could not discover the OpenID provider `{issuer}`: {reason}")]
    Discovery { issuer: String, reason: String },

    #[error("signing key `{kid}` of issuer `{issuer}` is not usable: {reason}")]
    KeyUnusable {
        issuer: String,
        kid: String,
        reason: String,
    },

    // --- configuration and local files ------------------------------------
    #[error("invalid identity settings: {reason}")]
    InvalidSettings { reason: String },

    #[error("no TLS crypto provider is installed (the application installs rustls' `ring` provider at start-up)")]
    NoTlsProvider,

    #[error("could not build the HTTP client: {reason}")]
    HttpClient { reason: String },

    #[error("dev issuer key `{path}`: {reason}", path = path.display())]
    DevKey { path: PathBuf, reason: String },

    #[error("could not sign the dev token: {reason}")]
    Signing { reason: String },

    #[error("token cache `{path}`: {reason}", path = path.display())]
    TokenCache { path: PathBuf, reason: String },

    #[error(
        "cannot find the configuration directory: neither `XDG_CONFIG_HOME` nor `HOME` is set"
    )]
    NoConfigDir,

    // --- login flows ------------------------------------------------------
    #[error("issuer `{issuer}` has no `client_id` configured, which login needs")]
    NoClientId { issuer: String },

    #[error("issuer `{issuer}` does not offer the device authorization grant (no `device_authorization_endpoint` in its discovery document)")]
    NoDeviceEndpoint { issuer: String },

    #[error("could not listen for the login callback on 127.0.0.1: {reason}")]
    Loopback { reason: String },

    #[error("login timed out after {seconds} s")]
    LoginTimeout { seconds: u64 },

    #[error("login callback has no `code`")]
    MissingCode,

    #[error("the identity provider refused the login: `{error}`{description}")]
    LoginRefused {
        error: String,
        /// Either empty or `: <error_description>`.
        description: String,
    },

    #[error("the device code expired before the login was completed")]
    DeviceCodeExpired,

    #[error("the token endpoint of `{issuer}` answered `{error}`{description}")]
    TokenEndpoint {
        issuer: String,
        error: String,
        /// Either empty or `: <error_description>`.
        description: String,
    },

    #[error("the token response of `{issuer}` has no `id_token`")]
    NoIdToken { issuer: String },

    #[error("the id token `nonce` does not match the login request")]
    NonceMismatch,

    #[error("request to `{url}` failed: {reason}")]
    Http { url: String, reason: String },
}

impl IdentityError {
    /// Whether the client presented something unacceptable, or the gateway (or
    /// its identity provider) failed.
    pub fn side(&self) -> ErrorSide {
        match self {
            IdentityError::MalformedToken { .. }
            | IdentityError::TokenTooLong { .. }
            | IdentityError::AlgorithmNotAccepted { .. }
            | IdentityError::CriticalHeader { .. }
            | IdentityError::MissingClaim { .. }
            | IdentityError::NoEmail
            | IdentityError::InvalidClaim { .. }
            | IdentityError::UnknownIssuer { .. }
            | IdentityError::WrongIssuer { .. }
            | IdentityError::WrongAudience { .. }
            | IdentityError::Expired { .. }
            | IdentityError::NotYetValid { .. }
            | IdentityError::InvalidSignature { .. }
            | IdentityError::UnknownKeyId { .. }
            | IdentityError::AmbiguousKey { .. }
            | IdentityError::KeyAlgorithmMismatch { .. }
            | IdentityError::EmailNotVerified { .. }
            | IdentityError::MissingCode
            | IdentityError::LoginRefused { .. }
            | IdentityError::DeviceCodeExpired
            | IdentityError::LoginTimeout { .. }
            | IdentityError::NonceMismatch => ErrorSide::Client,
            IdentityError::KeysUnavailable { .. }
            | IdentityError::Discovery { .. }
            | IdentityError::KeyUnusable { .. }
            | IdentityError::InvalidSettings { .. }
            | IdentityError::NoTlsProvider
            | IdentityError::HttpClient { .. }
            | IdentityError::DevKey { .. }
            | IdentityError::Signing { .. }
            | IdentityError::TokenCache { .. }
            | IdentityError::NoConfigDir
            | IdentityError::NoClientId { .. }
            | IdentityError::NoDeviceEndpoint { .. }
            | IdentityError::Loopback { .. }
            | IdentityError::TokenEndpoint { .. }
            | IdentityError::NoIdToken { .. }
            | IdentityError::Http { .. } => ErrorSide::Internal,
        }
    }
}

/// Shortens a value taken from untrusted input (a claim, a header field, an
/// error from a remote server) so it can be quoted in a message: at most 64
/// characters, control characters and backticks replaced.
pub(crate) fn quote(value: &str) -> String {
    const LIMIT: usize = 64;
    let mut out: String = value
        .chars()
        .take(LIMIT)
        .map(|c| if c.is_control() || c == '`' { '?' } else { c })
        .collect();
    if value.chars().nth(LIMIT).is_some() {
        out.push('…');
    }
    out
}

/// `: description` when the remote server gave one, nothing otherwise.
pub(crate) fn description_suffix(description: Option<&str>) -> String {
    match description {
        Some(text) if !text.is_empty() => format!(": {}", quote_long(text)),
        _ => String::new(),
    }
}

/// Like [`quote`], with room for a sentence.
pub(crate) fn quote_long(value: &str) -> String {
    const LIMIT: usize = 200;
    let mut out: String = value
        .chars()
        .take(LIMIT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if value.chars().nth(LIMIT).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_shortens_and_strips_control_characters() {
        assert_eq!(quote("a`b\nc"), "a?b?c");
        let long = "x".repeat(100);
        let quoted = quote(&long);
        assert_eq!(quoted.chars().count(), 65);
        assert!(quoted.ends_with('…'));
    }

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        let errors = [
            IdentityError::AlgorithmNotAccepted {
                alg: "HS256".into(),
            },
            IdentityError::UnknownIssuer { issuer: "x".into() },
            IdentityError::Expired {
                at: "2026-11-24T08:00:00Z".into(),
            },
            IdentityError::NoConfigDir,
        ];
        for error in errors {
            let message = error.to_string();
            assert!(!message.ends_with('.'), "{message}");
            assert!(
                message.chars().next().is_some_and(|c| c.is_lowercase()),
                "{message}"
            );
        }
        assert_eq!(
            IdentityError::AlgorithmNotAccepted { alg: "HS256".into() }.to_string(),
            "token algorithm `HS256` is not accepted (use an asymmetric algorithm such as RS256, ES256 or EdDSA)"
        );
    }
}
