//! The outcome of a policy evaluation: data, not control flow.

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
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
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}
