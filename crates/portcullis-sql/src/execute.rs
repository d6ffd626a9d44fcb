//! What an SQL `EXECUTE name(args)` runs: the prepared statement, and its
//! own arguments, which are expressions evaluated when it runs.
//!
//! `EXECUTE q(set_config(...))` or `EXECUTE q(query_to_xml('select ...'))`
//! runs the functions of its arguments whatever `q` is, and what they
//! return becomes `q`'s parameters, so its results and what it writes. The
//! statement decided and masked is both together.

use std::collections::BTreeSet;
use std::sync::Arc;

use portcullis_core::{Lineage, OutputColumn, StatementInfo, StatementKind};

use crate::classify::{kind_writes, strength};

/// The statement `execute` (an `EXECUTE name(args)`) runs, given the
/// statement `prepared` under that name.
pub fn resolve_execute(prepared: &StatementInfo, execute: &StatementInfo) -> StatementInfo {
    let union = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter()
            .chain(b)
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    // The EXECUTE's own command counts as `other`; what its arguments do
    // (a call, a privilege change, a read) is what it adds.
    let argument_kinds: Vec<StatementKind> = execute
        .kinds
        .iter()
        .copied()
        .filter(|k| *k != StatementKind::Other)
        .collect();
    let kinds: Vec<_> = prepared
        .kinds
        .iter()
        .chain(&argument_kinds)
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let kind = kinds
        .iter()
        .copied()
        .max_by_key(|k| strength(*k))
        .unwrap_or(prepared.kind);
    // Arguments that are more than constants and parameters may carry any
    // value into the results and what is written.
    let arguments_opaque = !execute.functions.is_empty() || !execute.tables.is_empty();
    let lineage = if execute.command.starts_with("EXPLAIN") {
        // The result is a plan, whatever the statement returns; what it
        // stores, under ANALYZE, is what the statement stores.
        Arc::new(Lineage {
            relations: prepared.lineage.relations.clone(),
            written: prepared.lineage.written.clone(),
            conditions: prepared.lineage.conditions.clone(),
            ..(*execute.lineage).clone()
        })
    } else if arguments_opaque {
        // A parameter's value is the argument's: no output column of the
        // prepared statement can be trusted to be what its text says.
        Arc::new(Lineage {
            opaque: true,
            columns: None,
            written: prepared
                .lineage
                .written
                .as_ref()
                .map(|written| OutputColumn {
                    refs: written.refs.clone(),
                    harmless: false,
                    opaque: true,
                }),
            ..(*prepared.lineage).clone()
        })
    } else {
        prepared.lineage.clone()
    };
    // Both the statement's operators and types and its arguments' (`execute
    // p(5::checked)`) run.
    let operators = union(&prepared.lineage.operators, &execute.lineage.operators);
    let types = union(&prepared.lineage.types, &execute.lineage.types);
    let lineage = if lineage.operators == operators && lineage.types == types {
        lineage
    } else {
        Arc::new(Lineage {
            operators,
            types,
            ..(*lineage).clone()
        })
    };
    StatementInfo {
        kind,
        kinds,
        command: prepared.command.clone(),
        tables: union(&prepared.tables, &execute.tables),
        functions: union(&prepared.functions, &execute.functions),
        has_where: prepared.has_where && execute.has_where,
        writes: prepared.writes || argument_kinds.iter().any(|k| kind_writes(*k)),
        // The text is the EXECUTE's: it is what the user sent, and two
        // EXECUTEs of one statement with other arguments are other requests
        // (the decision cache is keyed by text).
        text: execute.text.clone(),
        prepares: None,
        executes: None,
        prepared_text: Some(prepared.text.clone()),
        settings: union(&prepared.settings, &execute.settings),
        objects: Default::default(),
        lineage,
        shape: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Classifier;

    fn one(classifier: &Classifier, sql: &str) -> StatementInfo {
        classifier.classify(sql).unwrap()[0].clone()
    }

    #[test]
    fn arguments_count_as_part_of_what_runs() {
        let classifier = Classifier::new(0);
        let prepared = one(&classifier, "prepare q(text) as select $1 as v");
        let plain = resolve_execute(&prepared, &one(&classifier, "execute q('x')"));
        assert!(!plain.lineage.opaque);
        assert_eq!(plain.kind, StatementKind::Select);

        let sneaky = resolve_execute(
            &prepared,
            &one(
                &classifier,
                "execute q(set_config('role', 'postgres', false))",
            ),
        );
        assert!(sneaky.lineage.opaque);
        assert!(sneaky.lineage.columns.is_none());
        assert!(
            sneaky.functions.contains(&"set_config".to_string()),
            "{sneaky:?}"
        );
        assert_eq!(sneaky.kind, StatementKind::Dcl);
        assert_ne!(sneaky.text, plain.text);

        let update = one(
            &classifier,
            "prepare p(text) as update t set name = $1 where id = 1",
        );
        let stored = resolve_execute(
            &update,
            &one(
                &classifier,
                "execute p(query_to_xml('select 1', false, false, ''))",
            ),
        );
        assert!(stored.lineage.written.as_ref().unwrap().opaque);

        let explained = resolve_execute(&prepared, &one(&classifier, "explain execute q('x')"));
        assert!(explained.lineage.columns.as_ref().unwrap()[0].harmless);
    }
}
