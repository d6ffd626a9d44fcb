//! Policy engines. Policies are code kept in Git; this crate loads them,
//! validates them against the schema the gateway ships, and decides requests.
//! A decision is data: the effect, the policies that determined it, a reason
//! for people, any evaluation errors, and the policy version.
//!
//! Layout:
//! - [`cedar`]: the Cedar engine and its schema (`portcullis.cedarschema`).
//! - `condition.rs`: a Cedar policy's condition prepared for evaluation.
//! - [`source`]: where policies come from: a directory or a Git commit.
//! - [`files`]: which files of a policy directory are read.
//! - `remote.rs`: a remote Git repository, asked for its refs and fetched
//!   into a mirror.
//! - [`engine`]: [`Policies`], either engine behind one type.
//! - [`rego`]: the Rego engine (`regorus`), same input, same decision shape.
//! - `error`: [`PolicyError`].
//!
//! Architecture Invariant: this crate knows nothing of sockets, protocols or
//! the audit log. Protocol crates never call it directly: they go through the
//! Gate.

pub mod cedar;
mod condition;
pub mod engine;
mod error;
pub mod files;
pub mod rego;
mod remote;
pub mod source;

pub use cedar::{CedarPolicies, SCHEMA};
pub use engine::{CaseFile, Engine, Policies, CASE_FILE_SUFFIX};
pub use error::PolicyError;
pub use rego::RegoPolicies;
pub use source::{History, PolicySource};

#[cfg(test)]
mod tests;
