//! The vocabulary every other Portcullis crate speaks: who is asking
//! ([`Principal`]), what they ask for ([`Action`], [`StatementInfo`]), on what
//! ([`Target`]), and what the gateway answers ([`Decision`]).
//!
//! This crate is pure: no sockets, files, clocks or configuration.
//!
//! Layout:
//! - [`ids`]: newtypes for identifiers, so the compiler keeps them apart.
//! - [`statement`]: what a parsed SQL statement does, as the policy sees it.
//! - [`decision`]: the outcome of a policy evaluation.
//! - [`lineage`]: where the values of a statement's result come from.
//! - [`ssh`]: what an SSH command, forwarding or SFTP operation does.
//! - [`text`]: characters that are not drawn as themselves, for reviewers.

pub mod decision;
pub mod ids;
pub mod lineage;
pub mod ssh;
pub mod statement;
pub mod text;

use std::collections::BTreeMap;
use std::net::IpAddr;

pub use decision::{Approval, Decision, Effect};
pub use ids::SessionId;
pub use lineage::{
    ColumnRefName, CopyFormat, CopyOut, CopySource, Lineage, OutputColumn, RelationRef,
};
pub use ssh::{Command, Forward, SftpOp};
pub use statement::{SessionObjects, StatementInfo, StatementKind};

/// An authenticated identity, as established from a verified token.
///
/// The id is the token's `email` claim when present, its `sub` otherwise. It is
/// never the name a client typed into its connection string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    /// `User::"<id>"` in the policy model.
    pub id: String,
    /// The `sub` claim.
    pub subject: String,
    pub email: Option<String>,
    /// `Group::"<name>"` for each entry of the token's groups claim.
    pub groups: Vec<String>,
    /// The `iss` claim of the token that established this identity.
    pub issuer: String,
    /// When the token stops being valid, in seconds since the Unix epoch.
    pub expires_at: u64,
}

/// The kind of system a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetKind {
    Postgres,
    Ssh,
    Http,
    Kubernetes,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Postgres => "postgres",
            TargetKind::Ssh => "ssh",
            TargetKind::Http => "http",
            TargetKind::Kubernetes => "kubernetes",
        }
    }
}

/// A system behind the gateway, as the policy sees it (never its credentials).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// `Target::"<name>"` in the policy model.
    pub name: String,
    pub kind: TargetKind,
    /// Free-form labels such as `env = "prod"`.
    pub labels: BTreeMap<String, String>,
}

/// What a principal asks to do on a target.
// Built for one decision and dropped; never stored in bulk, so boxing the
// statement would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Open a session.
    Connect,
    /// Run one SQL statement.
    Query(StatementInfo),
    /// See the values a mask rule covers in clear.
    Unmask {
        /// The mask rule's id.
        rule: String,
    },
    /// Run one command over SSH.
    Exec(Command),
    /// Open an interactive shell over SSH.
    Shell,
    /// Forward a TCP connection through an SSH session.
    Forward(Forward),
    /// One SFTP operation.
    Sftp(SftpOp),
}

impl Action {
    /// The action's name in the policy model (`Action::"<name>"`).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Connect => "connect",
            Action::Query(_) => "query",
            Action::Unmask { .. } => "unmask",
            Action::Exec(_) => "exec",
            Action::Shell => "shell",
            Action::Forward(_) => "forward",
            Action::Sftp(_) => "sftp",
        }
    }
}

/// Everything a policy engine needs to decide one action.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub principal: &'a Principal,
    pub target: &'a Target,
    pub action: &'a Action,
    pub client_addr: Option<IpAddr>,
    /// The principal's approved access grant on this target, in force now.
    pub grant: Option<&'a Grant>,
    /// Why the user says they act (`SET portcullis.reason`, or the client's
    /// `application_name`), when they said.
    pub reason: Option<&'a str>,
}

/// An approved access request: the principal holds it on one target until
/// `until` (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    /// The access request's id.
    pub id: i64,
    pub reason: String,
    pub until: i64,
}
