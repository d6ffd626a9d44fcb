//! What an approval request is. The JSON shape of these types is the REST
//! API's and the store's: keep field names stable.

use portcullis_core::{Approval, Principal};
use serde::{Deserialize, Serialize};

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
    /// An approved access grant taken back before its end.
    Revoked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
            Status::Revoked => "revoked",
        }
    }
}

/// What is asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[allow(
    clippy::large_enum_variant,
    reason = "one per request, built once per held statement; boxing would only add an allocation"
)]
pub enum Subject {
    /// One statement held inside a live session; approval runs exactly it.
    Statement {
        session: String,
        client_addr: String,
        text: String,
        /// For an SQL `EXECUTE name(...)`: the statement prepared under
        /// that name, which is what runs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prepared: Option<String>,
        /// For a statement sent with others in one simple Query: that whole
        /// query, all of which runs once this statement is approved.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch: Option<String>,
        /// Bound parameters (text, or `\x<hex>` for binary), for the
        /// extended protocol.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        parameters: Vec<Option<String>>,
        /// The policies that held it, their reason and version.
        policies: Vec<String>,
        policy_reason: String,
        policy_version: String,
    },
    /// Access for a time window, seen by policies as `context.grant`.
    Access { seconds: i64 },
}

/// The person who asked, as the token said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: String,
    pub subject: String,
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub groups: Vec<String>,
}

impl From<&Principal> for Person {
    fn from(p: &Principal) -> Person {
        Person {
            id: p.id.clone(),
            subject: p.subject.clone(),
            issuer: p.issuer.clone(),
            email: p.email.clone(),
            groups: p.groups.clone(),
        }
    }
}

impl Person {
    /// The same person: the same subject at the same issuer, or the same
    /// principal id (an email seen through two issuers), or the same email.
    pub fn same_as(&self, other: &Principal) -> bool {
        one_person(
            (&self.id, &self.subject, &self.issuer, self.email.as_deref()),
            other,
        )
    }
}

/// Whether names compare as one person's: without regard to letter case,
/// since identity providers differ in how they case an email (`Dana@` and
/// `dana@`). Taking two people for one only ever refuses a review.
fn same_name(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// Whether `(id, subject, issuer, email)` names the person `other` is.
fn one_person(
    (id, subject, issuer, email): (&str, &str, &str, Option<&str>),
    other: &Principal,
) -> bool {
    (same_name(subject, &other.subject) && same_name(issuer, &other.issuer))
        || same_name(id, &other.id)
        || email
            .zip(other.email.as_deref())
            .is_some_and(|(a, b)| same_name(a, b))
}

/// One reviewer's decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub reviewer: String,
    pub reviewer_subject: String,
    pub reviewer_issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer_email: Option<String>,
    /// The reviewer's groups when they reviewed.
    pub groups: Vec<String>,
    pub approve: bool,
    pub comment: String,
    pub at: i64,
}

/// One approval request, with everything a reviewer needs to decide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: i64,
    pub status: Status,
    pub requester: Person,
    pub target: String,
    #[serde(flatten)]
    pub subject: Subject,
    /// Why the requester acts, when they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub approval: Approval,
    pub created_at: i64,
    pub expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<i64>,
    /// Why it ended when no reviewer ended it (expired, cancelled), or the
    /// deciding comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// For an approved access request: the end of the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_until: Option<i64>,
    #[serde(default)]
    pub reviews: Vec<Review>,
}

impl Request {
    /// Whether `reviewer` may review this request now, and why not.
    pub fn may_review(&self, reviewer: &Principal) -> Result<(), String> {
        if self.status != Status::Pending {
            return Err(format!(
                "request {} is {} already",
                self.id,
                self.status.as_str()
            ));
        }
        if self.requester.same_as(reviewer) {
            return Err(format!(
                "`{}` asked for request {}, and nobody approves their own request",
                reviewer.id, self.id
            ));
        }
        if !self
            .approval
            .groups
            .iter()
            .any(|group| reviewer.groups.contains(group))
        {
            return Err(format!(
                "request {} is reviewed by members of {}; `{}` is in none of them",
                self.id,
                groups_list(&self.approval.groups),
                reviewer.id
            ));
        }
        if self.reviews.iter().any(|review| {
            one_person(
                (
                    &review.reviewer,
                    &review.reviewer_subject,
                    &review.reviewer_issuer,
                    review.reviewer_email.as_deref(),
                ),
                reviewer,
            )
        }) {
            return Err(format!(
                "`{}` has reviewed request {} already",
                reviewer.id, self.id
            ));
        }
        Ok(())
    }

    /// Whether the approvals so far are enough: `min_approvals` in all and
    /// one from every group.
    pub fn is_approved(&self) -> bool {
        let approvals: Vec<&Review> = self.reviews.iter().filter(|r| r.approve).collect();
        let enough = approvals.len() >= self.approval.min_approvals as usize;
        let every_group = self
            .approval
            .groups
            .iter()
            .all(|group| approvals.iter().any(|review| review.groups.contains(group)));
        enough && every_group
    }

    /// A one-line summary for people: the statement, or the access asked.
    pub fn summary(&self) -> String {
        match &self.subject {
            Subject::Statement {
                text,
                batch: Some(batch),
                ..
            } => format!("{text} (sent in one query: {batch})"),
            Subject::Statement { text, .. } => text.clone(),
            Subject::Access { seconds } => {
                format!("access to `{}` for {}", self.target, duration(*seconds))
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.subject {
            Subject::Statement { .. } => "statement",
            Subject::Access { .. } => "access",
        }
    }
}

/// `dba`, `dba` or `ops`, ...: for messages.
pub fn groups_list(groups: &[String]) -> String {
    let quoted: Vec<String> = groups.iter().map(|g| format!("`{g}`")).collect();
    quoted.join(" or ")
}

/// `2h`, `15m`, `1h30m`, `45s`.
pub fn duration(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Parses `90s`, `15m`, `2h`, `1h30m`, `1d` into seconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let mut total: i64 = 0;
    let mut number = String::new();
    let mut seen_unit = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => {
                return Err(format!(
                    "`{text}` is not a duration such as `30m`, `2h` or `1h30m`"
                ))
            }
        };
        let n: i64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration such as `30m`, `2h` or `1h30m`"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
        seen_unit = true;
    }
    if !number.is_empty() || !seen_unit || total <= 0 {
        return Err(format!(
            "`{text}` is not a duration such as `30m`, `2h` or `1h30m`"
        ));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("0m").is_err());
        assert!(parse_duration("-1h").is_err());
        assert_eq!(duration(5400), "1h30m");
        assert_eq!(duration(0), "0s");
    }
}
