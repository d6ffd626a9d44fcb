//! The REST API and the web console for approvals, served on the admin
//! listener.
//!
//! - `api`: `/api/v1/requests...`, authenticated with an identity token
//!   (`Authorization: Bearer`), what the CLI speaks.
//! - `console`: server-rendered pages for reviewers, with an OIDC login
//!   (authorization code + PKCE), cookie sessions and CSRF tokens on every
//!   form, and live updates over server-sent events.
//!
//! Architecture Invariant: every decision goes through
//! [`portcullis_approval::Approvals`], which checks who may review; the web
//! layer only authenticates and renders.

mod api;
mod console;
mod html;

use axum::Router;
use portcullis_approval::{Approvals, Request};
use portcullis_core::Principal;
use portcullis_identity::{OidcIssuerSettings, Verifier};
use std::sync::Arc;

/// What the web layer needs from the gateway.
#[derive(Clone)]
pub struct Web {
    pub approvals: Approvals,
    pub verifier: Verifier,
    /// The targets people may ask access to.
    pub targets: Vec<String>,
    /// The console, when configured.
    pub console: Option<ConsoleSettings>,
    /// Session recordings, watched in the console by `recording_viewers`.
    pub recordings: Option<portcullis_record::Recordings>,
    /// Where finished recordings are stored, when not in the data directory.
    pub recordings_remote: Option<portcullis_record::Remote>,
    pub recording_viewers: Vec<String>,
    /// The mask rules of a target a viewer may not `unmask`, asked of the
    /// policy in force; `None` for a target no longer configured.
    pub masked_for: MaskedFor,
    /// Signs SSH user certificates, when the SSH listener is on.
    pub ssh: Option<SshCertificates>,
}

/// The client's address, put on each request by the server that runs the
/// router (the admin listener); absent, limits by address do not apply.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::IpAddr);

/// See [`Web::masked_for`].
pub type MaskedFor = Arc<dyn Fn(&Principal, &str) -> Option<Vec<String>> + Send + Sync>;

#[derive(Clone)]
pub struct SshCertificates {
    pub ca: portcullis_ssh::CertificateAuthority,
    pub certificate_max: std::time::Duration,
}

#[derive(Clone)]
pub struct ConsoleSettings {
    /// Where people reach the console, without a trailing slash.
    pub public_url: String,
    /// The provider reviewers log in with.
    pub oidc: OidcIssuerSettings,
}

/// The API and, when configured, the console.
pub fn router(web: Web) -> Router {
    let state = Arc::new(console::State::new(web));
    let api = api::router(state.clone());
    match state.web.console.is_some() {
        true => api.merge(console::router(state)),
        false => api,
    }
}

/// Whether `principal` may see `request`: they asked, or they may review it.
fn visible_to(request: &Request, principal: &Principal) -> bool {
    request.requester.same_as(principal)
        || request
            .approval
            .groups
            .iter()
            .any(|group| principal.groups.contains(group))
}
