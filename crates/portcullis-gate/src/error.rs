/// Why the Gate could not reach a decision. Every variant means refusal: the
/// action does not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("the audit log is unavailable, so nothing can run ({0}); ask an operator to check the gateway's data directory")]
    Audit(#[from] portcullis_audit::AuditError),
    #[error("the statement needs an approval, and the approval workflow is unavailable ({0}); nothing was run")]
    Approval(String),
}
