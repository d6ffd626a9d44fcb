//! Code a statement runs that its text does not show: a view's definition,
//! a table's row security conditions, a user's operator, a domain's check,
//! a cast through a user's function, a user's function that carries a
//! built-in's name. The classifier judges a statement by its text alone, so
//! `select * from v` is a read whatever `v` runs; here the target's catalog
//! snapshot shows what runs, and a statement that runs code which may write
//! is decided as the call it is (`portcullis_sql::calls_unseen`).
//!
//! What is found is judged as the classifier judges a statement: a view's
//! definition and a check's condition are classified as SQL, and followed
//! in turn (a view over a view, a check calling an operator). A user's
//! function, operator or cast counts as code that may write, as any call of
//! an unknown function does.

use std::collections::BTreeSet;

use portcullis_core::{Lineage, StatementInfo, StatementKind};
use portcullis_sql::Classifier;

use crate::catalog::{lacks_relations, Code, Snapshot};

/// How deep views over views (and checks calling operators...) are followed;
/// deeper counts as code that may write.
const MAX_DEPTH: usize = 16;

/// Code a statement runs that its text does not show, and that may write.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unseen {
    /// The functions it calls, where they are known.
    pub functions: BTreeSet<String>,
    /// Something that cannot be followed: a view whose definition was not
    /// read, a text that does not parse, nesting deeper than [`MAX_DEPTH`].
    pub unknown: bool,
}

impl Unseen {
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty() && !self.unknown
    }
}

/// What `statement` runs that its text does not show, and that may write,
/// as the catalog `snapshot` tells it.
pub fn unseen_code(
    statement: &StatementInfo,
    snapshot: &Snapshot,
    classifier: &Classifier,
) -> Unseen {
    let mut search = Search {
        snapshot,
        classifier,
        followed: Vec::new(),
        functions_followed: Vec::new(),
        late_bound: false,
        found: Unseen::default(),
    };
    search.statement(&statement.lineage, &statement.functions, 0);
    search.found
}

/// Whether a statement names anything that may run code it does not show.
pub fn names_code(statement: &StatementInfo) -> bool {
    let lineage = &statement.lineage;
    !lineage.relations.is_empty()
        || !lineage.operators.is_empty()
        || !lineage.types.is_empty()
        || !lineage.parameter_types.is_empty()
        || !statement.functions.is_empty()
}

struct Search<'a> {
    snapshot: &'a Snapshot,
    classifier: &'a Classifier,
    /// Relations whose code was followed (a row security condition may
    /// read its own table); a few, so a list.
    followed: Vec<u32>,
    /// Users' SQL functions whose bodies were followed.
    functions_followed: Vec<String>,
    /// Following a function's body, whose names are bound when it runs: a
    /// name the snapshot lacks may be something made since it was read.
    late_bound: bool,
    found: Unseen,
}

impl Search<'_> {
    fn statement(&mut self, lineage: &Lineage, functions: &[String], depth: usize) {
        let snapshot = self.snapshot;
        // A statement's own names are read again when the snapshot lacks
        // them (`Catalog::lacks_names`); a function body's are not seen
        // until it runs, so what it names that the snapshot lacks (a view
        // made since) cannot be followed.
        if self.late_bound
            && (snapshot.lacks_names(lineage) || lacks_relations(snapshot, &lineage.relations))
        {
            self.found.unknown = true;
        }
        for function in functions {
            let (_, name) = unqualified(function);
            // `public.lower(int)` wins over `pg_catalog.lower(text)` for an
            // int.
            if snapshot.is_user_function(&name) {
                match snapshot.sql_bodies.get(&name) {
                    Some(bodies) => self.sql_function(function, &name, bodies, depth),
                    None => {
                        self.found.functions.insert(function.clone());
                    }
                }
            }
            // `f(x)` with no function `f` that takes x's type exactly is a
            // cast to a type named `f`.
            self.code(snapshot.type_code.get(&name), depth);
        }
        self.hidden_calls(lineage);
        for operator in &lineage.operators {
            match unqualified(operator) {
                (Some(schema), _) if schema == "pg_catalog" => {}
                (_, name) => {
                    if let Some(functions) = snapshot.operators.get(&name) {
                        self.found.functions.extend(functions.iter().cloned());
                    }
                }
            }
        }
        for type_name in &lineage.types {
            match unqualified(type_name) {
                (Some(schema), _) if schema == "pg_catalog" => {}
                (_, name) => self.code(snapshot.type_code.get(&name), depth),
            }
        }
        for oid in &lineage.parameter_types {
            self.code(snapshot.type_code_by_oid.get(oid), depth);
        }
        for relation in &lineage.relations {
            let schema = relation.schema.as_deref();
            // `pg_temp` is the session's own temporary schema, `pg_temp_N`
            // in the catalog: any of them may be it.
            let candidates = match schema {
                Some("pg_temp") => snapshot
                    .named(None, &relation.name)
                    .into_iter()
                    .filter(|r| r.schema.starts_with("pg_temp_"))
                    .collect(),
                _ => snapshot.named(schema, &relation.name),
            };
            for relation in candidates {
                if self.followed.contains(&relation.oid) {
                    continue;
                }
                self.followed.push(relation.oid);
                // A foreign table's rows come from a query on its server,
                // which may be this database's own view over anything.
                if snapshot.reads_foreign(relation) {
                    self.found.unknown = true;
                }
                if relation.kind == b'v' {
                    match &relation.definition {
                        Some(definition) => self.query(definition, depth),
                        None => self.found.unknown = true,
                    }
                }
                self.late_bound(|search| {
                    search.code(snapshot.relation_code.get(&relation.oid), depth)
                });
                for condition in snapshot.policies.get(&relation.oid).into_iter().flatten() {
                    self.query(condition, depth);
                }
                for column in relation.columns.iter().flatten() {
                    if let Some(functions) = snapshot.cast_from.get(&column.type_name) {
                        self.found.functions.extend(functions.iter().cloned());
                    }
                    // A row of the relation can be made again from other
                    // values (`jsonb_populate_record(t, ...)`), checking its
                    // columns' domains.
                    self.code(snapshot.type_code.get(&column.type_name), depth);
                }
            }
        }
    }

    /// Code found in the catalog: SQL followed, a function counted.
    fn code(&mut self, code: Option<&Vec<Code>>, depth: usize) {
        for code in code.into_iter().flatten() {
            match code {
                Code::Function(function) => {
                    self.found.functions.insert(function.clone());
                }
                Code::Sql(query) => self.query(query, depth),
            }
        }
    }

    /// A call of users' SQL functions (every function of that name): what
    /// their bodies run; the function itself is counted when that may
    /// write. Each name is followed once: a call of it within its bodies
    /// (itself, or the built-in it wraps: `pg_catalog.` is not kept in
    /// names) runs one of the bodies already followed, or the built-in.
    fn sql_function(&mut self, function: &str, name: &str, bodies: &[String], depth: usize) {
        if self.functions_followed.iter().any(|f| f == name) {
            return;
        }
        self.functions_followed.push(name.to_owned());
        let before = (self.found.functions.len(), self.found.unknown);
        self.late_bound(|search| {
            for body in bodies {
                search.query(body, depth);
            }
        });
        if (self.found.functions.len(), self.found.unknown) != before {
            self.found.functions.insert(function.to_owned());
        }
    }

    /// Runs `follow` with what it follows taken as a function's body.
    fn late_bound(&mut self, follow: impl FnOnce(&mut Self)) {
        let was = std::mem::replace(&mut self.late_bound, true);
        follow(self);
        self.late_bound = was;
    }

    /// `c.f` is `f(c)` when `c` has no column `f`: where users made a
    /// function of that name, a statement naming it so may call it.
    fn hidden_calls(&mut self, lineage: &Lineage) {
        if self.snapshot.user_functions.is_empty() {
            return;
        }
        let hidden = lineage
            .columns
            .iter()
            .flatten()
            .flat_map(|column| column.refs.iter())
            .chain(lineage.conditions.iter())
            .chain(lineage.computed.iter())
            .chain(lineage.written.iter().flat_map(|w| w.refs.iter()))
            .filter(|r| !r.qualifiers.is_empty())
            .filter_map(|r| r.column.clone())
            .filter(|name| self.snapshot.is_user_function(name));
        self.found.functions.extend(hidden);
    }

    /// Code given as SQL (a view's definition, `SELECT (condition)`): what
    /// it calls when it may write, and what it runs unseen in turn.
    fn query(&mut self, sql: &str, depth: usize) {
        if depth >= MAX_DEPTH {
            self.found.unknown = true;
            return;
        }
        let Ok(statements) = self.classifier.classify(sql) else {
            self.found.unknown = true;
            return;
        };
        for statement in statements.iter() {
            let reads =
                !statement.writes && statement.kinds.iter().all(|k| *k == StatementKind::Select);
            if reads {
                self.statement(&statement.lineage, &statement.functions, depth + 1);
            } else if statement.functions.is_empty() {
                self.found.unknown = true;
            } else {
                self.found
                    .functions
                    .extend(statement.functions.iter().cloned());
            }
        }
    }
}

/// A name as a statement lists it (`portcullis_sql::join_name`) as its
/// schema, if given, and its last part.
fn unqualified(name: &str) -> (Option<String>, String) {
    let mut parts = portcullis_sql::name_parts(name);
    let last = parts.pop().unwrap_or_default();
    (parts.pop(), last)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::catalog::{Column, Relation};

    fn relation(oid: u32, schema: &str, name: &str, definition: Option<&str>) -> Relation {
        Relation {
            oid,
            schema: schema.into(),
            name: name.into(),
            kind: if definition.is_some() { b'v' } else { b'r' },
            columns: vec![Some(Column {
                name: "a".into(),
                type_name: "int4".into(),
            })],
            definition: definition.map(str::to_owned),
        }
    }

    fn snapshot() -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.add_relation(relation(1, "public", "t", None));
        snapshot.add_relation(relation(2, "public", "writes_v", Some(" SELECT w() AS x;")));
        snapshot.add_relation(relation(
            3,
            "public",
            "over_v",
            Some(" SELECT x FROM writes_v;"),
        ));
        snapshot.add_relation(relation(
            4,
            "public",
            "plain_v",
            Some(" SELECT a FROM t WHERE a > 1;"),
        ));
        snapshot.add_relation(relation(5, "public", "locked_v", None));
        snapshot.relations.get_mut(&5).unwrap().kind = b'v';
        snapshot.add_relation(relation(
            6,
            "pg_temp_3",
            "tv",
            Some(" SELECT nextval('s');"),
        ));
        snapshot.add_relation(relation(7, "public", "guarded", None));
        snapshot
            .policies
            .insert(7, vec!["SELECT (w() = 1)".into(), "SELECT (a > 0)".into()]);
        snapshot.add_relation(relation(8, "public", "self_ref", None));
        snapshot
            .policies
            .insert(8, vec!["SELECT (EXISTS (SELECT 1 FROM self_ref))".into()]);
        snapshot.operators.insert("###".into(), vec!["op".into()]);
        snapshot.type_code.insert(
            "checked".into(),
            vec![Code::Sql("SELECT (chk(VALUE))".into())],
        );
        snapshot.type_code.insert(
            "positive".into(),
            vec![Code::Sql("SELECT ((VALUE > 0))".into())],
        );
        snapshot
            .type_code
            .insert("pair".into(), vec![Code::Function("pair_int".into())]);
        snapshot.user_functions.insert("lower".into());
        // A user's function of a name that is SQL/JSON syntax on newer
        // servers.
        snapshot.user_functions.insert("json_serialize".into());
        // Users' SQL functions named like built-ins: one reads, one writes,
        // one calls what writes.
        for (name, body) in [
            (
                "replace",
                "SELECT pg_catalog.replace($1::pg_catalog.text, 'a', 'b')",
            ),
            ("strpos", "DELETE FROM t RETURNING 1"),
            ("translate", "SELECT 1; SELECT * FROM writes_v"),
        ] {
            snapshot.user_functions.insert(name.into());
            snapshot.sql_bodies.insert(name.into(), vec![body.into()]);
        }
        // Names the catalog knows: a function's body naming others is
        // not followed.
        snapshot.known_operators.insert("+".into());
        snapshot.add_relation(relation(9, "public", "indexed", None));
        snapshot
            .relation_code
            .insert(9, vec![Code::Function("folded".into())]);
        snapshot.add_relation(relation(10, "public", "sql_indexed", None));
        snapshot
            .relation_code
            .insert(10, vec![Code::Sql("select $1 + 1".into())]);
        snapshot
    }

    fn unseen(sql: &str) -> Unseen {
        let classifier = Classifier::new(64);
        let statements = classifier.classify(sql).unwrap();
        unseen_code(&statements[0], &snapshot(), &classifier)
    }

    fn calls(sql: &str) -> Vec<String> {
        let found = unseen(sql);
        assert!(!found.unknown, "{sql}");
        found.functions.into_iter().collect()
    }

    #[test]
    fn views_policies_operators_types_and_shadows_are_followed() {
        for (sql, expected) in [
            ("select * from writes_v", &["w"][..]),
            ("select * from public.writes_v", &["w"]),
            ("select * from over_v", &["w"]),
            ("select * from t where a in (select x from over_v)", &["w"]),
            ("select * from tv", &["nextval"]),
            ("select * from pg_temp.tv", &["nextval"]),
            ("select count(*) from guarded", &["w"]),
            ("select 1 ### 2", &["op"]),
            ("select operator(public.###) 2", &["op"]),
            ("select 5::checked", &["chk"]),
            ("select '{5}'::checked[]", &["chk"]),
            ("select row(1)::pair::int", &["pair_int"]),
            ("select lower(5)", &["lower"]),
            ("select t.lower from t", &["lower"]),
            ("select *, t.lower::text from t", &["lower"]),
            ("select json_serialize('{}'::json)", &["json_serialize"]),
            ("select * from indexed", &["folded"]),
            ("select translate('a', 'b', 'c')", &["translate", "w"]),
        ] {
            assert_eq!(calls(sql), expected, "{sql}");
        }
    }

    #[test]
    fn what_runs_only_built_ins_is_nothing_unseen() {
        for sql in [
            "select * from t",
            "select * from plain_v",
            "select * from other.writes_v",
            "select * from self_ref",
            "select * from sql_indexed",
            "select 5::positive",
            "select 5::pg_catalog.int4",
            "select operator(pg_catalog.+) 2",
            "select upper('a')",
            "select * from missing",
            // A users' SQL function is what its body does.
            "select replace('abc', 'a', 'b')",
            "select public.replace('abc', 'a', 'b')",
        ] {
            assert_eq!(unseen(sql), Unseen::default(), "{sql}");
        }
    }

    #[test]
    fn what_cannot_be_followed_counts_as_code() {
        assert!(unseen("select * from locked_v").unknown);
        // A SQL function's body that writes, with nothing to name.
        let found = unseen("select strpos('a', 'b')");
        assert!(
            found.unknown && found.functions.contains("strpos"),
            "{found:?}"
        );
        // A function's body naming what the catalog lacks (made since it
        // was read), or a foreign table.
        let mut later = snapshot();
        later.user_functions.insert("initcap".into());
        later
            .sql_bodies
            .insert("initcap".into(), vec!["SELECT x FROM made_since".into()]);
        later.add_relation(relation(20, "public", "remote", None));
        later.relations.get_mut(&20).unwrap().kind = b'f';
        // A partitioned table with a foreign partition.
        later.add_relation(relation(21, "public", "parted_remote", None));
        later.foreign_reads.insert(21);
        let classifier = Classifier::new(64);
        for sql in [
            "select initcap('a')",
            "select * from remote",
            "select * from parted_remote",
        ] {
            let statements = classifier.classify(sql).unwrap();
            assert!(
                unseen_code(&statements[0], &later, &classifier).unknown,
                "{sql}"
            );
        }
        let mut deep = snapshot();
        for depth in 0..=MAX_DEPTH as u32 {
            deep.add_relation(relation(
                100 + depth,
                "public",
                &format!("v{depth}"),
                Some(&format!("SELECT 1 FROM v{}", depth + 1)),
            ));
        }
        let classifier = Classifier::new(64);
        let statements = classifier.classify("select * from v0").unwrap();
        assert!(unseen_code(&statements[0], &deep, &classifier).unknown);
    }
}
