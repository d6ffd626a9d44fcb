//! Who is asking: this crate turns a bearer token into a
//! [`portcullis_core::Principal`], and helps people get such a token.
//!
//! The gateway side is [`Verifier`]: it trusts a set of OpenID Connect
//! providers (discovery, JWKS, signature, `iss`, `aud`, `exp`, `nbf`) and,
//! when enabled, the gateway's own [`DevIssuer`]. It fails closed: any doubt
//! about a token is an [`IdentityError`] that says what was wrong, and never
//! contains the token.
//!
//! The user side is [`LoginClient`] (authorization code with PKCE, device
//! authorization grant, refresh) and [`TokenCache`] (the tokens of the last
//! login, in the user's configuration directory).
//!
//! Architecture Invariant: this crate knows nothing of the configuration file,
//! policies or protocols. It receives plain settings and returns a principal;
//! what the principal may do is decided elsewhere.
//!
//! Layout:
//! - [`settings`]: what the crate needs to know about each issuer.
//! - [`verify`]: [`Verifier`], from token to principal, and the order of the
//!   checks.
//! - `token`: reading a token's header and `iss` before it is verified; the
//!   list of accepted algorithms.
//! - `jwks`: parsing key sets, choosing a token's key, the per-issuer key
//!   cache with its re-fetch rate limit.
//! - [`dev`]: the dev issuer and its local ed25519 key.
//! - [`login`]: the login flows for people.
//! - [`cache`]: the user's token cache file.
//! - `http`: the HTTP client, with size limits and readable errors.
//! - [`error`]: the crate's error type, [`IdentityError`].

// Tests may unwrap: a panic there is a failed test, not a crashed gateway.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod cache;
pub mod dev;
pub mod error;
mod http;
mod jwks;
pub mod login;
pub mod settings;
mod token;
pub mod verify;

pub use cache::TokenCache;
pub use dev::DevIssuer;
pub use error::{ErrorSide, IdentityError};
pub use login::{
    AuthorizationRequest, DeviceCode, LoginClient, LoginSecrets, Tokens, DEFAULT_SCOPES,
};
pub use settings::{DevIssuerSettings, OidcIssuerSettings, DEFAULT_LEEWAY};
pub use verify::Verifier;

#[cfg(test)]
mod tests;
