//! Why a rules file is refused, and why a value could not be masked.
//!
//! A rules file with any error is refused whole, like a policy directory.
//! A value that cannot be masked is an error, never sent as it was (fail
//! closed).

/// One problem in a rules file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct MaskRuleError {
    /// `file:line:column` (1-based; the column counts characters), or only
    /// `file` when the problem has no place in the text.
    pub location: String,
    /// What is wrong, lowercase, input quoted in backticks.
    pub message: String,
}

/// A value that could not be masked; the caller must not send it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// A json_keys rule applies but the value is not JSON.
    #[error("cannot mask a json value that does not parse ({reason} at byte {offset})")]
    InvalidJson { offset: usize, reason: &'static str },
    /// The JSON value nests deeper than the masker walks.
    #[error("cannot mask a json value nested more than {max_depth} levels deep")]
    JsonTooDeep { max_depth: usize },
    /// The plan names a rule this masker does not have: it was made by
    /// another masker. A fault of the caller, not of the value.
    #[error(
        "internal error: the content plan names rule {rule_idx}, which this masker does not have"
    )]
    UnknownRule { rule_idx: usize },
}
