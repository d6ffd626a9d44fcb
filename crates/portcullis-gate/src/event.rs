//! The audit entries the Gate writes. Their field names are part of the
//! audit format: keep them stable.

use portcullis_core::{Decision, StatementInfo};
use portcullis_mask::MaskCounts;
use serde::Serialize;

/// Who and where, repeated in every entry of a session so that each entry
/// stands on its own.
#[derive(Debug, Clone, Serialize)]
pub struct SessionFields {
    pub session: String,
    pub principal: String,
    /// With `email`, `issuer`, `groups` and the target's labels: everything
    /// the policy saw, so that a decision can be evaluated again later
    /// (`portcullis policy impact`).
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub issuer: String,
    /// The user name the client typed; kept for the record, never trusted.
    pub client_user: String,
    pub client_addr: String,
    pub target: String,
    pub target_labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct DecisionFields<'a> {
    pub effect: &'static str,
    pub policies: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub errors: &'a [String],
    pub policy_version: &'a str,
    /// Who may approve a held action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<&'a portcullis_core::Approval>,
}

impl<'a> From<&'a Decision> for DecisionFields<'a> {
    fn from(d: &'a Decision) -> Self {
        DecisionFields {
            effect: d.effect.as_str(),
            policies: &d.policies,
            reason: &d.reason,
            errors: &d.errors,
            policy_version: &d.policy_version,
            approval: d.approval.as_ref(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RecordingFields<'a> {
    pub id: &'a str,
    pub final_hash: &'a str,
}

#[derive(Debug, Serialize)]
pub struct StatementFields<'a> {
    pub kind: &'static str,
    pub command: &'a str,
    pub tables: &'a [String],
    pub text: &'a str,
}

impl<'a> From<&'a StatementInfo> for StatementFields<'a> {
    fn from(s: &'a StatementInfo) -> Self {
        StatementFields {
            kind: s.kind.as_str(),
            command: &s.command,
            tables: &s.tables,
            text: &s.text,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "event")]
pub enum AuditEvent<'a> {
    /// A `connect` decision: the session starts, or is refused.
    #[serde(rename = "session.connect")]
    Connect {
        #[serde(flatten)]
        session: &'a SessionFields,
        decision: DecisionFields<'a>,
    },
    /// One statement, before it is forwarded (or instead of it, when refused).
    #[serde(rename = "statement")]
    Statement {
        #[serde(flatten)]
        session: &'a SessionFields,
        /// `query` (simple protocol), `parse` or `execute` (extended
        /// protocol). A Parse run by an Execute read with it has no entry
        /// of its own: the Execute's stands for both.
        phase: &'a str,
        statement: StatementFields<'a>,
        decision: DecisionFields<'a>,
    },
    /// A statement refused before any policy could see it (it did not parse).
    #[serde(rename = "statement.refused")]
    Refused {
        #[serde(flatten)]
        session: &'a SessionFields,
        phase: &'a str,
        text: &'a str,
        reason: &'a str,
    },
    /// A live session's `connect`, or a shell or forward it holds open,
    /// decided again after a policy or grant change.
    #[serde(rename = "session.recheck")]
    Recheck {
        #[serde(flatten)]
        session: &'a SessionFields,
        action: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        forward: Option<&'a portcullis_core::Forward>,
        decision: DecisionFields<'a>,
    },
    /// A new policy version is enforced from now on. `start` marks the
    /// version the gateway started with, whose `previous` is the version
    /// enforced before the restart (empty when none was recorded). For a
    /// Git source, `history` says how the new commit relates to the
    /// previous one: `forward`, `back` (an older commit: rules taken out
    /// since apply again), `diverged` (a rewritten history) or `unknown`
    /// (the previous commit is gone from the repository).
    #[serde(rename = "policy.loaded")]
    PolicyLoaded {
        previous: &'a str,
        version: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        history: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        start: bool,
    },
    /// A new policy version was refused (invalid, its cases failing, or
    /// unreadable in part); `enforced` stays enforced.
    #[serde(rename = "policy.refused")]
    PolicyRefused {
        version: &'a str,
        enforced: &'a str,
        error: &'a str,
    },
    /// The `unmask` decisions of a session: for each mask rule that applies
    /// to its target, whether the principal sees its values in clear.
    #[serde(rename = "session.masking")]
    Masking {
        #[serde(flatten)]
        session: &'a SessionFields,
        /// Rule id to the decision.
        rules: std::collections::BTreeMap<&'a str, DecisionFields<'a>>,
    },
    /// Values masked in one statement's result, by rule and detector.
    #[serde(rename = "statement.masked")]
    Masked {
        #[serde(flatten)]
        session: &'a SessionFields,
        /// The statement's text.
        text: &'a str,
        masked: &'a MaskCounts,
    },
    /// An SSH action and its decision: `exec` (one command of a command
    /// line), `shell`, `forward`, `sftp`.
    #[serde(rename = "ssh")]
    Ssh {
        #[serde(flatten)]
        session: &'a SessionFields,
        /// The SSH channel, within the connection.
        channel: u32,
        action: &'static str,
        #[serde(flatten)]
        detail: SshDetail<'a>,
        decision: DecisionFields<'a>,
    },
    /// An SSH event without a decision of its own (`event_kind`):
    /// `exec.refused` (a command line that does not parse), `shell.typed`
    /// (best effort: a line typed at a prompt), `sftp.close`.
    #[serde(rename = "ssh.event")]
    SshEvent {
        #[serde(flatten)]
        session: &'a SessionFields,
        #[serde(rename = "kind")]
        event_kind: &'a str,
        channel: u32,
        detail: serde_json::Value,
    },
    #[serde(rename = "session.end")]
    End {
        #[serde(flatten)]
        session: &'a SessionFields,
        outcome: &'a str,
        statements: u64,
        denied: u64,
        duration_ms: u64,
        /// Values masked in the whole session, by rule and detector.
        #[serde(skip_serializing_if = "MaskCounts::is_empty")]
        masked: &'a MaskCounts,
        /// The session's recording: deleting or changing it shows against
        /// this entry.
        #[serde(skip_serializing_if = "Option::is_none")]
        recording: Option<RecordingFields<'a>>,
    },
}

/// What an SSH action was about.
#[derive(Debug, Serialize)]
pub struct SshDetail<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<&'a portcullis_core::Command>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward: Option<&'a portcullis_core::Forward>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sftp: Option<&'a portcullis_core::SftpOp>,
}

impl<'a> From<&'a portcullis_core::Action> for SshDetail<'a> {
    fn from(action: &'a portcullis_core::Action) -> Self {
        use portcullis_core::Action;
        SshDetail {
            command: match action {
                Action::Exec(c) => Some(c),
                _ => None,
            },
            forward: match action {
                Action::Forward(f) => Some(f),
                _ => None,
            },
            sftp: match action {
                Action::Sftp(op) => Some(op),
                _ => None,
            },
        }
    }
}
