//! SQL statement classification with the real PostgreSQL grammar.
//!
//! The gateway's policies decide on what a statement does, not on its first
//! keyword. This crate parses a query string with PostgreSQL's own parser
//! (through `pg_query`), splits it into statements and describes each one as
//! a [`StatementInfo`]: its strongest effect and every effect found anywhere
//! in its tree (a `DELETE` in a CTE, a writing function in a `SELECT`,
//! `EXPLAIN ANALYZE` of an `UPDATE`), the relations and functions it
//! touches, whether its UPDATEs and DELETEs have a WHERE clause, and whether
//! it writes, and its lineage: where each column of its result comes from,
//! for masking. Input the grammar rejects is an error, never a guess. The
//! crate is pure: no I/O, no catalog, so it judges functions by name and
//! cannot see what views, triggers, rules or user-defined operators run. It
//! lists the operators a statement applies and the types it makes values
//! of, and [`calls_unseen`] lets a caller that reads the catalog make a
//! statement the call it is.
//!
//! Layout:
//! - `cache.rs`: [`Classifier`], the entry point, with its cache keyed by
//!   exact query text.
//! - `classify.rs`: splitting a query into statements; EXPLAIN, PREPARE and
//!   DECLARE CURSOR; combining effects into one [`StatementInfo`].
//! - `command.rs`: the top-level command of a statement, its name and own
//!   effect; `objects.rs`: the SQL names of object types.
//! - `tree.rs`: a generic, complete view of pg_query's parse tree.
//! - `walk.rs`: effects, relations and functions found anywhere in a
//!   statement, with CTE scoping.
//! - `lineage.rs`: where each output column of a statement's result comes
//!   from, and what a `COPY ... TO STDOUT` sends, for masking.
//! - `functions.rs`: the built-in functions known to be read-only, and those
//!   that change privileges.
//! - `immutable.rs`: [`is_immutable`], the built-ins PostgreSQL marks
//!   IMMUTABLE in some form.
//! - `execute.rs`: [`resolve_execute`], what an SQL `EXECUTE` with its
//!   arguments runs.
//! - `error.rs`: [`ClassifyError`].

// Tests may unwrap and panic; the library itself may not (the workspace lints
// still apply to the non-test build, which `--all-targets` checks too).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod cache;
mod classify;
mod command;
mod error;
mod execute;
mod functions;
mod immutable;
mod lineage;
mod objects;
mod tree;
mod walk;

pub use cache::{Classifier, LONG_QUERY_LEN, MAX_CACHED_QUERY_LEN};
pub use classify::{calls_unseen, setting_assignment};
pub use error::ClassifyError;
pub use execute::resolve_execute;
pub use functions::{join_name, name_parts, runs_portal_function, runs_query_text_function};
pub use immutable::is_immutable;
pub use portcullis_core::{StatementInfo, StatementKind};
