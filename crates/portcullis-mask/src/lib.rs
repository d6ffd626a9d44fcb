//! Masking of sensitive data in what the gateway sends back to clients.
//!
//! Mask rules, kept beside the policies in `*.masks.toml` files, say which
//! columns to mask whole (column rules) and what to look for inside values
//! (content rules: detectors such as `email` or `payment_card`, and keys of
//! JSON values), and how to mask it: `redact`, `partial`, `hash` or `null`.
//! The proxy asks the policy which rules a principal may not unmask, builds
//! one [`Masker`] per session from them, and calls it for each value of each
//! row and for the text of error and notice messages. The crate is pure: no
//! I/O, no clocks, no configuration; the caller reads the files and gives
//! the hash key. What cannot be masked is an error, never the value as it
//! was (fail closed).
//!
//! Layout:
//! - `rules/`: [`MaskRules`] and [`MaskRule`], [`ColumnMeta`] and what a
//!   rule covers; `parse.rs` reads rules files (every problem with its
//!   `file:line:column`), `parse/validate.rs` checks each table's fields.
//! - `detect/`: the content detectors, built-in (`builtin.rs`: patterns,
//!   Luhn, mod-97 and the other checks) and from `[[detector]]` tables, run
//!   behind one prefilter over all of them.
//! - `strategy.rs`: [`Strategy`], [`Masked`] and [`HashKey`]: what a value or
//!   a found substring becomes.
//! - `json/`: the JSON walker that masks inside `json` and `jsonb` values,
//!   keeping key order; `escape.rs` decodes and writes JSON strings.
//! - `masker/`: [`Masker`], the masking of one session, and
//!   [`ContentPlan`].
//! - `counts.rs`: [`MaskCounts`], what was masked, for the audit log.
//! - `glob.rs`: the tiny `*`/`?` glob of `targets`, `columns` and
//!   `json_keys`.
//! - `error.rs`: [`MaskRuleError`] and [`MaskError`].

// Tests may unwrap and panic; the library itself may not (the workspace lints
// still apply to the non-test build, which `--all-targets` checks too).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod counts;
mod detect;
mod error;
mod glob;
mod json;
mod masker;
mod rules;
mod strategy;

pub use counts::MaskCounts;
pub use detect::BUILTIN_DETECTORS;
pub use error::{MaskError, MaskRuleError};
pub use masker::{ContentPlan, Masker, RuleIdx};
pub use rules::{ColumnMeta, MaskRule, MaskRules};
pub use strategy::{HashKey, Masked, Strategy, DEFAULT_KEEP_LAST};
