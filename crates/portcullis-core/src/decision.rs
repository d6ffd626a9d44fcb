//! The outcome of a policy evaluation: data, not control flow.

/// Allow, deny, or hold for a person's approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    Allow,
    Deny,
    /// Denied by policies that are all approvable (`@approval("group")`),
    /// and allowed without them: the action waits for a reviewer.
    Hold,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::Hold => "hold",
        }
    }
}

/// What the policy decided for one request, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    /// The policies that determined the decision (their `@id` annotation when
    /// present, the policy id otherwise). Empty for a default deny.
    pub policies: Vec<String>,
    /// A reason for people, from the deciding policy's `@reason` annotation,
    /// or a sentence saying that no policy allowed the action.
    pub reason: String,
    /// Errors met while evaluating; a policy that errors does not apply.
    pub errors: Vec<String>,
    /// The policy version (commit id or content hash) that decided.
    pub policy_version: String,
    /// Who may approve a held action; `Some` exactly when `effect` is
    /// [`Effect::Hold`].
    pub approval: Option<Approval>,
}

/// Who must approve a held action: at least one member of every group,
/// and `min_approvals` approvals in all, never from the requester.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Approval {
    /// Sorted, without duplicates.
    pub groups: Vec<String>,
    pub min_approvals: u32,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}
