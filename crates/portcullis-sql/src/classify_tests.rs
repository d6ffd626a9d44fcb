//! Data-driven tests of `classify_query`: one row per statement shape.

use super::*;
use StatementKind as K;

fn one(sql: &str) -> StatementInfo {
    let (mut statements, _) = classify_query(sql).unwrap_or_else(|error| panic!("{sql}: {error}"));
    assert_eq!(statements.len(), 1, "{sql}: {statements:#?}");
    statements.remove(0)
}

/// `(sql, kind, command, has_where, writes, tables)`
type Row = (
    &'static str,
    StatementKind,
    &'static str,
    bool,
    bool,
    &'static [&'static str],
);

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // Plain DML.
    ("select * from t", K::Select, "SELECT", true, false, &["t"]),
    ("select count(*) from t where a > 1", K::Select, "SELECT", true, false, &["t"]),
    ("select * from t for update", K::Select, "SELECT", true, true, &["t"]),
    ("select * from t where a in (select b from u for share)", K::Select, "SELECT", true, true, &["t", "u"]),
    ("table s.t", K::Select, "SELECT", true, false, &["s.t"]),
    ("values (1), (2)", K::Select, "SELECT", true, false, &[]),
    ("insert into t values (1)", K::Insert, "INSERT", true, true, &["t"]),
    ("insert into t select * from u", K::Insert, "INSERT", true, true, &["t", "u"]),
    ("insert into t values (1) on conflict (a) do update set b = 2", K::Update, "INSERT", true, true, &["t"]),
    ("insert into t values (1) on conflict do nothing", K::Insert, "INSERT", true, true, &["t"]),
    ("update t set a = 1 where b = 2", K::Update, "UPDATE", true, true, &["t"]),
    ("update t set a = 1", K::Update, "UPDATE", false, true, &["t"]),
    ("update t set a = u.a from u where t.id = u.id", K::Update, "UPDATE", true, true, &["t", "u"]),
    ("delete from t where a = 1", K::Delete, "DELETE", true, true, &["t"]),
    ("delete from t", K::Delete, "DELETE", false, true, &["t"]),
    ("delete from t where current of c", K::Delete, "DELETE", true, true, &["t"]),
    ("delete from t using u where t.id = u.id", K::Delete, "DELETE", true, true, &["t", "u"]),
    ("merge into t using s on t.id = s.id when matched then do nothing", K::Merge, "MERGE", true, true, &["s", "t"]),
    // MERGE's ON is a join, not a row filter: without `WHEN MATCHED AND`,
    // its DELETE or UPDATE is unbounded.
    ("merge into t using s on t.id = s.id when matched then delete", K::Delete, "MERGE", false, true, &["s", "t"]),
    ("merge into t using s on t.id = s.id when not matched then insert values (1)", K::Merge, "MERGE", true, true, &["s", "t"]),
    // Data-modifying CTEs: the command stays SELECT, the kind is the effect.
    ("with d as (delete from t returning *) select * from d", K::Delete, "SELECT", false, true, &["t"]),
    ("with d as (delete from t where a = 1 returning *) select * from d", K::Delete, "SELECT", true, true, &["t"]),
    ("with u as (update t set a = 1 returning *) select * from u", K::Update, "SELECT", false, true, &["t"]),
    ("with i as (insert into t values (1) returning *) select * from i", K::Insert, "SELECT", true, true, &["t"]),
    ("with a as (select 1), d as (delete from t returning *) insert into log select * from d", K::Delete, "INSERT", false, true, &["log", "t"]),
    ("with m as (merge into t using s on t.id = s.id when matched then delete returning *) select * from m", K::Delete, "SELECT", false, true, &["s", "t"]),
    ("with t as (select 1) delete from t", K::Delete, "DELETE", false, true, &["t"]),
    // ... hidden in a CTE of a subquery.
    ("select * from (with d as (delete from t returning *) select * from d) x", K::Delete, "SELECT", false, true, &["t"]),
    ("select (with d as (update t set a = 1 returning a) select a from d)", K::Update, "SELECT", false, true, &["t"]),
    // EXPLAIN plans, EXPLAIN ANALYZE runs.
    ("explain delete from t", K::Select, "EXPLAIN", false, false, &["t"]),
    ("explain select * from t", K::Select, "EXPLAIN", true, false, &["t"]),
    ("explain (analyze false) delete from t", K::Select, "EXPLAIN", false, false, &["t"]),
    ("explain (analyze off, costs on) delete from t", K::Select, "EXPLAIN", false, false, &["t"]),
    ("explain analyze delete from t", K::Delete, "DELETE", false, true, &["t"]),
    ("explain (analyze) delete from t where a = 1", K::Delete, "DELETE", true, true, &["t"]),
    ("explain (analyze true, buffers) update t set a = 1", K::Update, "UPDATE", false, true, &["t"]),
    ("explain (analyze 1) delete from t", K::Delete, "DELETE", false, true, &["t"]),
    ("explain (analyze false, analyze on) delete from t", K::Delete, "DELETE", false, true, &["t"]),
    ("explain analyze select * from t", K::Select, "SELECT", true, false, &["t"]),
    ("explain analyse delete from t", K::Delete, "DELETE", false, true, &["t"]),
    ("explain (format json, analyse) delete from t", K::Delete, "DELETE", false, true, &["t"]),
    ("explain analyze create table n as select * from t", K::Ddl, "CREATE TABLE AS", true, true, &["n", "t"]),
    ("explain select nextval('s')", K::Call, "EXPLAIN", true, true, &[]),
    // Code whose effect cannot be seen.
    ("do $$ begin delete from t; end $$", K::Other, "DO", true, true, &[]),
    ("call p(1)", K::Call, "CALL", true, true, &[]),
    ("load 'plugin'", K::Other, "LOAD", true, true, &[]),
    // Functions.
    ("select nextval('s')", K::Call, "SELECT", true, true, &[]),
    ("select pg_catalog.pg_terminate_backend(pid) from pg_stat_activity", K::Dcl, "SELECT", true, true, &["pg_stat_activity"]),
    ("select my_func(a) from t", K::Call, "SELECT", true, true, &["t"]),
    ("select * from my_srf()", K::Call, "SELECT", true, true, &[]),
    ("select lower(name), pg_catalog.now(), extract(year from d) from t", K::Select, "SELECT", true, false, &["t"]),
    ("select set_config('role', 'admin', false)", K::Dcl, "SELECT", true, true, &[]),
    ("select a from t where a in (select setval('s', 1))", K::Call, "SELECT", true, true, &["t"]),
    ("select 1 from t where exists (select 1 from u where pg_sleep(10) is null)", K::Call, "SELECT", true, true, &["t", "u"]),
    ("select \"nextval\"('s')", K::Call, "SELECT", true, true, &[]),
    ("select \"pg_catalog\".\"set_config\"('role', 'x', false)", K::Dcl, "SELECT", true, true, &[]),
    ("values (1, nextval('s'))", K::Call, "SELECT", true, true, &[]),
    ("select * from t order by a limit (select count(*) from lo_import('/etc/passwd'))", K::Call, "SELECT", true, true, &["t"]),
    // COPY.
    ("copy t from stdin", K::Copy, "COPY FROM STDIN", true, true, &["t"]),
    ("copy t to stdout", K::Copy, "COPY TO STDOUT", true, false, &["t"]),
    ("copy t from '/tmp/x'", K::Copy, "COPY FROM FILE", true, true, &["t"]),
    ("copy t to '/tmp/x'", K::Copy, "COPY TO FILE", true, true, &["t"]),
    ("copy t from program 'id'", K::Copy, "COPY FROM PROGRAM", true, true, &["t"]),
    ("copy t to program 'sh'", K::Copy, "COPY TO PROGRAM", true, true, &["t"]),
    ("copy (select * from t) to stdout", K::Copy, "COPY TO STDOUT", true, false, &["t"]),
    ("copy (delete from t returning *) to stdout", K::Copy, "COPY TO STDOUT", false, true, &["t"]),
    // Identity and privileges.
    ("set role admin", K::Dcl, "SET ROLE", true, true, &[]),
    ("set local role admin", K::Dcl, "SET ROLE", true, true, &[]),
    ("set \"ROLE\" to admin", K::Dcl, "SET ROLE", true, true, &[]),
    ("set role to default", K::Dcl, "SET ROLE", true, true, &[]),
    ("reset role", K::Dcl, "RESET ROLE", true, true, &[]),
    ("set session authorization admin", K::Dcl, "SET SESSION AUTHORIZATION", true, true, &[]),
    ("reset session authorization", K::Dcl, "RESET SESSION AUTHORIZATION", true, true, &[]),
    ("reset all", K::Dcl, "RESET ALL", true, true, &[]),
    ("discard all", K::Dcl, "DISCARD ALL", true, true, &[]),
    ("grant select on t to bob", K::Dcl, "GRANT", true, true, &["t"]),
    ("revoke all on schema s from bob", K::Dcl, "REVOKE", true, true, &[]),
    ("grant admin to bob", K::Dcl, "GRANT", true, true, &[]),
    ("create schema s grant select on t to bob", K::Dcl, "CREATE SCHEMA", true, true, &["t"]),
    ("create role bob", K::Dcl, "CREATE ROLE", true, true, &[]),
    ("create user bob password 'x'", K::Dcl, "CREATE ROLE", true, true, &[]),
    ("create group g", K::Dcl, "CREATE ROLE", true, true, &[]),
    ("alter role bob superuser", K::Dcl, "ALTER ROLE", true, true, &[]),
    ("alter user bob set search_path = x", K::Dcl, "ALTER ROLE", true, true, &[]),
    ("alter role bob rename to eve", K::Dcl, "ALTER ROLE", true, true, &[]),
    ("drop role bob", K::Dcl, "DROP ROLE", true, true, &[]),
    ("alter default privileges grant select on tables to bob", K::Dcl, "ALTER DEFAULT PRIVILEGES", true, true, &[]),
    ("create policy p on t using (true)", K::Dcl, "CREATE POLICY", true, true, &["t"]),
    ("drop policy p on t", K::Dcl, "DROP POLICY", true, true, &[]),
    ("alter table t disable row level security", K::Dcl, "ALTER TABLE", true, true, &["t"]),
    ("alter table t owner to bob", K::Dcl, "ALTER TABLE", true, true, &["t"]),
    ("alter schema s owner to bob", K::Dcl, "ALTER SCHEMA", true, true, &[]),
    ("reassign owned by bob to eve", K::Dcl, "REASSIGN OWNED", true, true, &[]),
    ("alter database d set role = admin", K::Dcl, "ALTER DATABASE", true, true, &[]),
    ("alter function f() set role = admin", K::Dcl, "ALTER FUNCTION", true, true, &[]),
    // Schema.
    ("drop database prod", K::Ddl, "DROP DATABASE", true, true, &[]),
    ("create database d", K::Ddl, "CREATE DATABASE", true, true, &[]),
    ("alter system set fsync = off", K::Ddl, "ALTER SYSTEM", true, true, &[]),
    ("create table t (a int default nextval('s'))", K::Ddl, "CREATE TABLE", true, true, &["t"]),
    ("create table n as select * from t", K::Ddl, "CREATE TABLE AS", true, true, &["n", "t"]),
    ("create materialized view m as select * from t", K::Ddl, "CREATE MATERIALIZED VIEW", true, true, &["m", "t"]),
    ("select * into n from t", K::Ddl, "SELECT INTO", true, true, &["n", "t"]),
    ("drop table a, s.b", K::Ddl, "DROP TABLE", true, true, &["a", "s.b"]),
    ("drop materialized view m", K::Ddl, "DROP MATERIALIZED VIEW", true, true, &["m"]),
    ("drop function f(int)", K::Ddl, "DROP FUNCTION", true, true, &[]),
    ("alter table t add column b int", K::Ddl, "ALTER TABLE", true, true, &["t"]),
    ("alter table t rename column a to b", K::Ddl, "ALTER TABLE", true, true, &["t"]),
    ("create index on t (a)", K::Ddl, "CREATE INDEX", true, true, &["t"]),
    ("create view v as select * from t", K::Ddl, "CREATE VIEW", true, true, &["t", "v"]),
    ("create function f() returns int language sql return 1", K::Ddl, "CREATE FUNCTION", true, true, &[]),
    // A string body of SQL is read when the function is created: its
    // effects are the CREATE's (a call is decided only as a call).
    ("create function f() returns void language sql as 'delete from t'", K::Ddl, "CREATE FUNCTION", false, true, &["t"]),
    ("create procedure p() language sql as $$update t set a = 1 where a = 2$$", K::Ddl, "CREATE PROCEDURE", true, true, &["t"]),
    ("create function f() returns int language sql as 'select count(*) from t; truncate u'", K::Ddl, "CREATE FUNCTION", false, true, &["t", "u"]),
    ("create function f() returns int language plpgsql as 'begin return 1; end'", K::Ddl, "CREATE FUNCTION", true, true, &[]),
    ("comment on table t is 'x'", K::Ddl, "COMMENT", true, true, &[]),
    ("create extension pgcrypto", K::Ddl, "CREATE EXTENSION", true, true, &[]),
    ("truncate t, u", K::Delete, "TRUNCATE", false, true, &["t", "u"]),
    // Session settings.
    ("set search_path = public", K::Set, "SET", true, true, &[]),
    ("set local statement_timeout = 0", K::Set, "SET", true, true, &[]),
    ("reset work_mem", K::Set, "RESET", true, true, &[]),
    ("show search_path", K::Set, "SHOW", true, false, &[]),
    ("set transaction isolation level serializable", K::Set, "SET", true, true, &[]),
    // Transactions.
    ("begin", K::Transaction, "BEGIN", true, false, &[]),
    ("start transaction read only", K::Transaction, "START TRANSACTION", true, false, &[]),
    ("commit", K::Transaction, "COMMIT", true, false, &[]),
    ("end", K::Transaction, "COMMIT", true, false, &[]),
    ("rollback", K::Transaction, "ROLLBACK", true, false, &[]),
    ("savepoint a", K::Transaction, "SAVEPOINT", true, false, &[]),
    ("rollback to savepoint a", K::Transaction, "ROLLBACK TO SAVEPOINT", true, false, &[]),
    ("prepare transaction 'x'", K::Transaction, "PREPARE TRANSACTION", true, false, &[]),
    // Utilities.
    ("vacuum t", K::Utility, "VACUUM", true, true, &["t"]),
    ("analyze t", K::Utility, "ANALYZE", true, true, &["t"]),
    ("checkpoint", K::Utility, "CHECKPOINT", true, true, &[]),
    ("listen c", K::Utility, "LISTEN", true, false, &[]),
    ("notify c, 'x'", K::Utility, "NOTIFY", true, true, &[]),
    ("discard plans", K::Utility, "DISCARD PLANS", true, false, &[]),
    ("lock table t in access exclusive mode", K::Utility, "LOCK TABLE", true, true, &["t"]),
    ("lock table t", K::Utility, "LOCK TABLE", true, true, &["t"]),
    ("lock table t in access share mode", K::Utility, "LOCK TABLE", true, false, &["t"]),
    ("cluster t using i", K::Utility, "CLUSTER", true, true, &["t"]),
    ("reindex table t", K::Utility, "REINDEX", true, true, &["t"]),
    ("refresh materialized view m", K::Utility, "REFRESH MATERIALIZED VIEW", true, true, &["m"]),
    ("fetch 10 from c", K::Utility, "FETCH", true, false, &[]),
    ("close c", K::Utility, "CLOSE", true, false, &[]),
    ("deallocate p", K::Utility, "DEALLOCATE", true, false, &[]),
    // A cursor is what its query is.
    ("declare c cursor for select * from t", K::Select, "DECLARE CURSOR", true, false, &["t"]),
    ("declare c cursor for select nextval('s')", K::Call, "DECLARE CURSOR", true, true, &[]),
];

#[test]
fn classification_table() {
    let mut failures = Vec::new();
    for &(sql, kind, command, has_where, writes, tables) in ROWS {
        let info = one(sql);
        let actual = (
            info.kind,
            info.command.as_str(),
            info.has_where,
            info.writes,
            info.tables.clone(),
        );
        let expected = (
            kind,
            command,
            has_where,
            writes,
            tables.iter().map(|t| t.to_string()).collect(),
        );
        if actual != expected {
            failures.push(format!(
                "{sql}\n  expected {expected:?}\n  actual   {actual:?}"
            ));
        }
        assert!(info.kinds.contains(&info.kind), "{sql}: kind not in kinds");
        assert!(
            info.kinds.windows(2).all(|pair| pair[0] < pair[1]),
            "{sql}: kinds not sorted"
        );
        assert_eq!(info.text, sql, "{sql}: text");
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows differ:\n{}",
        failures.len(),
        ROWS.len(),
        failures.join("\n")
    );
}

#[test]
fn kinds_list_every_effect() {
    let cases: &[(&str, &[StatementKind])] = &[
        ("select 1", &[K::Select]),
        ("insert into t values (1)", &[K::Insert]),
        ("insert into t select * from u", &[K::Select, K::Insert]),
        (
            "with d as (delete from t returning *) select * from d",
            &[K::Select, K::Delete],
        ),
        ("select nextval('s') from t", &[K::Select, K::Call]),
        (
            "select set_config('role', 'x', false), nextval('s')",
            &[K::Select, K::Dcl, K::Call],
        ),
        (
            "copy (update t set a = 1 returning *) to stdout",
            &[K::Update, K::Copy],
        ),
        (
            "insert into t values (1) on conflict (a) do update set b = 2",
            &[K::Insert, K::Update],
        ),
        ("explain delete from t", &[K::Select]),
        ("create table t as select nextval('s')", &[K::Ddl, K::Call]),
    ];
    for (sql, kinds) in cases {
        assert_eq!(one(sql).kinds, *kinds, "{sql}");
    }
}

#[test]
fn functions_are_listed_without_pg_catalog() {
    let info = one("select pg_catalog.lower(a), count(*), s.f(1), trim(b) from t group by 1");
    assert_eq!(info.functions, ["btrim", "count", "lower", "s.f"]);
}

/// `q.f` over a function in FROM is `f(q)` where `q` has no column `f`.
#[test]
fn a_call_written_as_a_field_of_a_function_in_from_is_a_call() {
    for (sql, call) in [
        (
            "select q.pg_terminate_backend from abs(1) q",
            "pg_terminate_backend",
        ),
        ("select q.ts_stat from lower('select 1') q", "ts_stat"),
        (
            "select 1 from abs(1) q where q.pg_sleep is null",
            "pg_sleep",
        ),
        ("select lower.nextval from lower('s')", "nextval"),
        ("select e.f from jsonb_each('{}') e", "f"),
    ] {
        let info = one(sql);
        assert!(
            info.functions.iter().any(|f| f == call),
            "{sql}: {:?}",
            info.functions
        );
        assert!(
            matches!(info.kind, K::Call | K::Dcl),
            "{sql}: {:?}",
            info.kind
        );
    }
    for sql in [
        "select q.q from abs(1) q",
        "select e.key, e.value from jsonb_each('{}') e",
        "select t.a, t.ordinality from generate_series(1, 3) with ordinality t(a)",
        "select x.a from jsonb_to_record('{}') as x(a int)",
        "select r.a, r.b from rows from (jsonb_to_record('{}') as (a int), generate_series(1, 2)) r(x, b)",
        "select generate_series.generate_series from generate_series(1, 2)",
        "select c.f from customers c",
    ] {
        let info = one(sql);
        assert_ne!(info.kind, K::Call, "{sql}: {:?}", info.functions);
    }
}

/// SQL/JSON syntax is a call of a function of that name to a target older
/// than PostgreSQL 16, where a user's function may have it.
#[test]
fn sql_json_syntax_counts_as_the_calls_it_is_to_older_targets() {
    for (sql, call) in [
        ("select json_serialize('{}'::json)", "json_serialize"),
        ("select json('{}')", "json"),
        ("select json_scalar(1)", "json_scalar"),
        ("select json_value('{}'::jsonb, '$.a')", "json_value"),
        ("select json_query('{}'::jsonb, '$.a')", "json_query"),
        ("select json_exists('{}'::jsonb, '$.a')", "json_exists"),
        ("select json_array(1, 2)", "json_array"),
        ("select json_object('a': 1)", "json_object"),
        ("select json_arrayagg(x) from t", "json_arrayagg"),
    ] {
        let info = one(sql);
        assert!(
            info.functions.iter().any(|f| f == call),
            "{sql}: {:?}",
            info.functions
        );
        assert_ne!(info.kind, K::Call, "{sql}: a built-in that only reads");
    }
}

#[test]
fn prepare_is_classified_as_its_statement() {
    let info = one("prepare p (int) as delete from t where a = $1");
    assert_eq!(
        (info.kind, info.command.as_str(), info.has_where),
        (K::Delete, "DELETE", true)
    );
    assert_eq!(info.tables, ["t"]);
    assert_eq!(info.prepares.as_deref(), Some("p"));
    assert!(info.writes);

    let info = one("prepare q as select * from t");
    assert_eq!(
        (info.kind, info.writes, info.prepares.as_deref()),
        (K::Select, false, Some("q"))
    );
}

#[test]
fn execute_is_resolved_by_the_caller() {
    let info = one("execute p(1)");
    assert_eq!(
        (info.kind, info.command.as_str(), info.writes),
        (K::Other, "EXECUTE", true)
    );
    assert_eq!(info.executes.as_deref(), Some("p"));

    let info = one("explain analyze execute p(1)");
    assert_eq!((info.kind, info.executes.as_deref()), (K::Other, Some("p")));

    let info = one("create table n as execute p(1)");
    assert_eq!(
        (info.kind, info.command.as_str(), info.executes.as_deref()),
        (K::Ddl, "CREATE TABLE AS", Some("p"))
    );

    let info = one("explain execute p(1)");
    assert_eq!(
        (info.kind, info.command.as_str(), info.executes.as_deref()),
        (K::Select, "EXPLAIN", Some("p"))
    );
}

#[test]
fn every_statement_is_found_and_classified_on_its_own() {
    let cases: &[(&str, &[(&str, StatementKind)])] = &[
        (
            "select 1; -- x\n delete from t",
            &[("select 1", K::Select), ("delete from t", K::Delete)],
        ),
        (
            "select 'a;b'; delete from t",
            &[("select 'a;b'", K::Select), ("delete from t", K::Delete)],
        ),
        (
            "SeLeCt 1; CoMmIt; DeLeTe FROM t",
            &[
                ("SeLeCt 1", K::Select),
                ("CoMmIt", K::Transaction),
                ("DeLeTe FROM t", K::Delete),
            ],
        ),
        (
            "select $$;$$; drop table t",
            &[("select $$;$$", K::Select), ("drop table t", K::Ddl)],
        ),
        (
            "select $x$ $$; $x$; drop table t;",
            &[("select $x$ $$; $x$", K::Select), ("drop table t", K::Ddl)],
        ),
        (
            "select 1 /* ; delete from t */; select 2",
            &[
                ("select 1 /* ; delete from t */", K::Select),
                ("select 2", K::Select),
            ],
        ),
        (
            "select e'\\';'; delete from t",
            &[("select e'\\';'", K::Select), ("delete from t", K::Delete)],
        ),
        (
            "select \"a;\" from t;;; update t set a = 1",
            &[
                ("select \"a;\" from t", K::Select),
                ("update t set a = 1", K::Update),
            ],
        ),
        (
            "/* é */ select 'ü'; delete from t",
            &[("select 'ü'", K::Select), ("delete from t", K::Delete)],
        ),
    ];
    for (sql, expected) in cases {
        let (statements, _) = classify_query(sql).unwrap();
        let actual: Vec<(&str, StatementKind)> = statements
            .iter()
            .map(|s| (s.text.as_str(), s.kind))
            .collect();
        assert_eq!(actual, *expected, "{sql}");
    }
}

#[test]
fn empty_and_comment_only_input_has_no_statement() {
    for sql in [
        "",
        "   \n",
        ";",
        " ; ; ",
        "-- only a comment",
        "/* a */ -- b\n",
    ] {
        assert_eq!(classify_query(sql).unwrap().0, Vec::new(), "{sql:?}");
    }
}

#[test]
fn unparseable_input_fails_closed() {
    let cases = [
        "selec 1",
        "select 1; delete frm t",
        "select 'unterminated",
        "select $$ unterminated",
        "/* unterminated",
    ];
    for sql in cases {
        match classify_query(sql) {
            Err(ClassifyError::Syntax { message, .. }) => assert!(!message.is_empty()),
            other => panic!("{sql}: {other:?}"),
        }
    }
    assert_eq!(
        classify_query("select 1\0; delete from t"),
        Err(ClassifyError::NulByte)
    );
    // A SQL function's body too: it would fail only when called.
    match classify_query("create function f() returns int language sql as 'selec 1'") {
        Err(ClassifyError::Syntax { message, .. }) => {
            assert!(message.starts_with("the function's body"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // A body that creates a function with a body of its own.
    let nested = "create function f() returns void language sql as $a$\
                  create function g() returns void language sql as $b$delete from t$b$\
                  $a$";
    assert_eq!(classify_query(nested), Err(ClassifyError::TooDeep));
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let sql = format!("select {}1{}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(classify_query(&sql).is_err());
    let sql = format!("select {}1{}", "array[".repeat(1_000), "]".repeat(1_000));
    assert!(classify_query(&sql).is_err());
}

#[test]
fn settings_a_statement_changes_are_named() {
    let cases: &[(&str, &[&str])] = &[
        ("set names 'sjis'", &["client_encoding"]),
        ("set client_encoding to 'BIG5'", &["client_encoding"]),
        (
            "set local standard_conforming_strings = off",
            &["standard_conforming_strings"],
        ),
        ("reset client_encoding", &["client_encoding"]),
        ("reset all", &["*"]),
        (
            "select set_config('client_encoding', 'GBK', false)",
            &["client_encoding"],
        ),
        (
            "select pg_catalog.set_config('Search_Path', 'x', true)",
            &["search_path"],
        ),
        (
            "select set_config('client_' || 'encoding', 'GBK', false)",
            &["*"],
        ),
        (
            "select app.pg_catalog.set_config('standard_conforming_strings', 'off', true)",
            &["standard_conforming_strings"],
        ),
        (
            "alter role app set standard_conforming_strings = off",
            &["standard_conforming_strings"],
        ),
        ("select 1", &[]),
        ("show client_encoding", &[]),
    ];
    for (sql, expected) in cases {
        assert_eq!(one(sql).settings, *expected, "{sql}");
    }
}

#[test]
fn unseen_calls_make_a_read_a_call_and_leave_a_write_its_kind() {
    let mut read = one("select * from v");
    crate::calls_unseen(&mut read, ["w".to_owned()]);
    assert_eq!(read.kind, StatementKind::Call);
    assert_eq!(read.kinds, [StatementKind::Select, StatementKind::Call]);
    assert!(read.writes);
    assert_eq!(read.functions, ["w"]);
    let mut update = one("update t set a = 1 where b in (select x from v)");
    crate::calls_unseen(&mut update, []);
    assert_eq!(update.kind, StatementKind::Update);
    assert!(update.kinds.contains(&StatementKind::Call));
}

#[test]
fn a_name_of_unicode_blanks_stays_in_the_text() {
    // Found in attack: `trim()` dropped the no-break space PostgreSQL reads
    // as a second table's name; reviewers saw `drop table scratch_tmp,`.
    let sql = "drop table scratch_tmp, \u{a0}";
    let info = one(sql);
    assert_eq!(info.text, sql);
    assert!(
        info.tables.iter().any(|t| t == "\u{a0}"),
        "{:?}",
        info.tables
    );
    let classifier = crate::Classifier::new(16);
    for _ in 0..2 {
        let cached = classifier.classify(sql).unwrap();
        assert_eq!(cached[0].text, sql);
    }
    assert_eq!(one(" \t\nselect 1;\n ").text, "select 1");
}
