//! What looking for code a statement runs unseen (views, operators, domain
//! checks: `hidden.rs`) adds to each statement, against a catalog of
//! pgbench's tables, 500 other tables, 50 views and users' code.

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_pg::catalog::{Code, Column, Relation, Snapshot};
use portcullis_pg::hidden::unseen_code;
use portcullis_sql::Classifier;
use std::hint::black_box;

fn table(oid: u32, name: &str, columns: &[(&str, &str)], definition: Option<&str>) -> Relation {
    Relation {
        oid,
        schema: "public".into(),
        name: name.into(),
        kind: if definition.is_some() { b'v' } else { b'r' },
        columns: columns
            .iter()
            .map(|(name, type_name)| {
                Some(Column {
                    name: (*name).into(),
                    type_name: (*type_name).into(),
                })
            })
            .collect(),
        definition: definition.map(str::to_owned),
    }
}

fn snapshot() -> Snapshot {
    let mut snapshot = Snapshot::default();
    let int = |name| (name, "int4");
    snapshot.add_relation(table(
        1,
        "pgbench_accounts",
        &[
            int("aid"),
            int("bid"),
            int("abalance"),
            ("filler", "bpchar"),
        ],
        None,
    ));
    snapshot.add_relation(table(
        2,
        "pgbench_branches",
        &[int("bid"), int("bbalance")],
        None,
    ));
    snapshot.add_relation(table(
        3,
        "pgbench_tellers",
        &[int("tid"), int("tbalance")],
        None,
    ));
    snapshot.add_relation(table(
        4,
        "pgbench_history",
        &[int("tid"), int("delta")],
        None,
    ));
    for i in 0..500 {
        snapshot.add_relation(table(
            100 + i,
            &format!("t{i}"),
            &[int("a"), ("b", "text")],
            None,
        ));
    }
    for i in 0..50 {
        let definition = format!(" SELECT a, b FROM t{i} WHERE a > 0;");
        snapshot.add_relation(table(
            1000 + i,
            &format!("v{i}"),
            &[int("a")],
            Some(&definition),
        ));
    }
    snapshot.user_functions.insert("audit_fn".into());
    snapshot.operators.insert("###".into(), vec!["op".into()]);
    snapshot.type_code.insert(
        "checked".into(),
        vec![Code::Sql("SELECT (chk(VALUE))".into())],
    );
    snapshot
}

fn bench(c: &mut Criterion) {
    let snapshot = snapshot();
    let classifier = Classifier::new(1024);
    let mut group = c.benchmark_group("unseen_code");
    for (name, sql) in [
        (
            "pgbench_select",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
        ),
        (
            "pgbench_update",
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
        ),
        ("plain_view", "SELECT a FROM v7 WHERE a = 1"),
        ("operator_and_domain", "SELECT 1 ### 2, 5::checked"),
    ] {
        let Some(statement) = classifier
            .classify(sql)
            .ok()
            .and_then(|s| s.first().cloned())
        else {
            continue;
        };
        group.bench_function(name, |b| {
            b.iter(|| unseen_code(black_box(&statement), &snapshot, &classifier))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
