//! Data-driven tests of the lineage `classify_query` gives each statement.

use portcullis_core::{
    ColumnRefName, CopyFormat, CopyOut, CopySource, Lineage, OutputColumn, RelationRef,
};

use crate::classify::classify_query;

fn lineage(sql: &str) -> Lineage {
    let (statements, _) = classify_query(sql).unwrap_or_else(|error| panic!("{sql}: {error}"));
    let [statement] = statements.as_slice() else {
        panic!("{sql}: not one statement: {statements:#?}");
    };
    (*statement.lineage).clone()
}

/// A column reference written as SQL: `email`, `c.email`, `c.*`, `*`.
fn column_ref(text: &str) -> ColumnRefName {
    let mut parts: Vec<String> = text.split('.').map(str::to_owned).collect();
    let last = parts.pop().unwrap();
    ColumnRefName {
        qualifiers: parts,
        column: (last != "*").then_some(last),
    }
}

/// A relation written as `[schema.]name[ alias]`.
fn relation(text: &str) -> RelationRef {
    let (name, alias) = match text.split_once(' ') {
        Some((name, alias)) => (name, Some(alias.to_owned())),
        None => (text, None),
    };
    let (schema, name) = match name.split_once('.') {
        Some((schema, name)) => (Some(schema.to_owned()), name),
        None => (None, name),
    };
    RelationRef {
        schema,
        name: name.to_owned(),
        alias,
    }
}

/// An output column: its references (sorted, as the lineage gives them)
/// and flags, `h` for harmless and `o` for opaque.
type Column = (&'static [&'static str], &'static str);

/// `(sql, columns, relations, renames, opaque)`
type Row = (
    &'static str,
    Option<&'static [Column]>,
    &'static [&'static str],
    bool,
    bool,
);

const H: &str = "h";
const O: &str = "o";

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // Plain columns and expressions over them.
    ("select email from customers", Some(&[(&["email"], "")]), &["customers"], false, false),
    ("select upper(c.email) from customers c", Some(&[(&["c.email"], "")]), &["customers c"], false, false),
    ("select left(card, 8), count(*) from customers group by 1", Some(&[(&["card"], ""), (&[], H)]), &["customers"], false, false),
    ("select public.customers.email from public.customers", Some(&[(&["public.customers.email"], "")]), &["public.customers"], false, false),
    ("select a.x, b.y from a join b on a.id = b.id", Some(&[(&["a.x"], ""), (&["b.y"], "")]), &["a", "b"], false, false),
    ("select sum(amount) filter (where card is not null) from orders", Some(&[(&["amount", "card"], "")]), &["orders"], false, false),
    ("select coalesce(email, name)::text || '!' from customers", Some(&[(&["email", "name"], "")]), &["customers"], false, false),
    ("select from customers", Some(&[]), &["customers"], false, false),
    // A whole row named without `*` is one column.
    ("select row_to_json(c) from customers c", Some(&[(&["c"], "")]), &["customers c"], false, false),
    ("select (c).email from customers c", Some(&[(&["c"], "")]), &["customers c"], false, false),
    ("select row(c.*) from customers c", Some(&[(&["c.*"], "")]), &["customers c"], false, false),
    // Values that cannot carry a source value.
    ("select count(email) from customers", Some(&[(&["email"], H)]), &["customers"], false, false),
    ("select count(distinct email) from customers", Some(&[(&["email"], "")]), &["customers"], false, false),
    ("select pg_catalog.count(*) over (partition by email) from customers", Some(&[(&["email"], H)]), &["customers"], false, false),
    ("select 1, now(), $1", Some(&[(&[], H), (&[], H), (&[], H)]), &[], false, false),
    ("select current_user, 'a' || 'b', lower('X')", Some(&[(&[], H), (&[], H), (&[], H)]), &[], false, false),
    ("select exists (select 1 from customers where email = 'x')", Some(&[(&["email"], H)]), &["customers"], false, false),
    ("select not exists (select * from customers)", Some(&[(&["*"], H)]), &["customers"], false, false),
    ("select email is null, email is not null from customers", Some(&[(&["email"], H), (&["email"], H)]), &["customers"], false, false),
    ("select count(*)::text || ' rows' from customers", Some(&[(&[], H)]), &["customers"], false, false),
    ("select case when email is null then 'none' else 'some' end from customers", Some(&[(&["email"], H)]), &["customers"], false, false),
    ("select case when email is null then 'none' else email end from customers", Some(&[(&["email"], "")]), &["customers"], false, false),
    ("select public.count(email) from customers", Some(&[(&["email"], O)]), &["customers"], false, false),
    // `*` has the catalog's width.
    ("select * from customers", None, &["customers"], false, false),
    ("select c.* from customers c", None, &["customers c"], false, false),
    ("select (c).* from customers c", None, &["customers c"], false, false),
    ("select id, * from customers", None, &["customers"], false, false),
    ("table customers", None, &["customers"], false, false),
    // Sub-selects in the output.
    ("select (select email from customers limit 1)", Some(&[(&["email"], "")]), &["customers"], false, false),
    ("select (select count(*) from customers)", Some(&[(&[], "")]), &["customers"], false, false),
    ("select (select * from customers limit 1)", Some(&[(&["*"], O)]), &["customers"], false, false),
    ("select array(select c.* from customers c)", Some(&[(&["c.*"], O)]), &["customers c"], false, false),
    ("select id in (select * from banned) from customers", Some(&[(&["*", "id"], "")]), &["banned", "customers"], false, false),
    ("select (select email from customers where id = o.customer_id) from orders o", Some(&[(&["email", "id", "o.customer_id"], "")]), &["customers", "orders o"], false, false),
    // Functions whose output cannot be followed.
    ("select my_func(id) from customers", Some(&[(&["id"], O)]), &["customers"], false, false),
    ("select s.f(1)", Some(&[(&[], O)]), &[], false, false),
    ("select query_to_xml('select * from customers', true, true, '')", Some(&[(&[], O)]), &[], false, false),
    ("select pg_catalog.table_to_xml('customers', true, true, '')", Some(&[(&[], O)]), &[], false, false),
    ("select ts_rewrite('a'::tsquery, 'select t, s from aliases')", Some(&[(&[], O)]), &[], false, false),
    ("select dblink('db', 'select email from customers')", Some(&[(&[], O)]), &[], false, false),
    ("select upper((select my_func() limit 1))", Some(&[(&[], O)]), &[], false, false),
    ("select count(my_func(id)) from customers", Some(&[(&["id"], O)]), &["customers"], false, false),
    // A count or a test of nullness of an expression tells what it computes.
    ("select count(nullif(email > 'k', false)) from customers", Some(&[(&["email"], "")]), &["customers"], false, false),
    ("select nullif(ascii(email) & 1, 0) is null from customers", Some(&[(&["email"], "")]), &["customers"], false, false),
    ("select nextval('s')", Some(&[(&[], O)]), &[], false, false),
    // Renames: subqueries, functions, VALUES in FROM, CTEs, set operations,
    // merged join columns, column aliases.
    ("select x from (select email as x from customers) s", Some(&[(&["x"], "")]), &["customers"], true, false),
    ("with t as (select email from customers) select email from t", Some(&[(&["email"], "")]), &["customers"], true, false),
    ("with t as (select email from customers) select t.email from t join t as u on true", Some(&[(&["t.email"], "")]), &["customers"], true, false),
    ("select email from a union select name from b", Some(&[(&["email", "name"], "")]), &["a", "b"], true, false),
    ("select 1 union all select email from customers", Some(&[(&["email"], "")]), &["customers"], true, false),
    ("select count(*) from a union select count(*) from b", Some(&[(&[], H)]), &["a", "b"], true, false),
    ("select x from a except (select y from b intersect select z from c)", Some(&[(&["x", "y", "z"], "")]), &["a", "b", "c"], true, false),
    ("select x from a union select * from b", None, &["a", "b"], true, false),
    ("select e from customers c(e)", Some(&[(&["e"], "")]), &["customers c"], true, false),
    ("select id from a join b using (id)", Some(&[(&["id"], "")]), &["a", "b"], true, false),
    ("select id from a natural join b", Some(&[(&["id"], "")]), &["a", "b"], true, false),
    ("select j.id from (a join b on a.id = b.id) j", Some(&[(&["a.id", "b.id", "j.id"], "")]), &["a", "b"], true, false),
    ("select v.a from (values (1), (2)) v(a)", Some(&[(&["v.a"], "")]), &[], true, false),
    ("select g from generate_series(1, 3) g", Some(&[(&["g"], "")]), &[], true, false),
    ("select x from my_srf() x", Some(&[(&["x"], O)]), &[], true, false),
    ("select 1 from my_srf() x", Some(&[(&[], H)]), &[], true, false),
    ("select s.x from (select my_func() as x) s", Some(&[(&["s.x"], O)]), &[], true, false),
    ("with t as (select query_to_xml('x', true, true, '') as v) select v from t", Some(&[(&["v"], O)]), &[], true, false),
    ("select c.email, l.n from customers c, lateral (select count(*) as n from orders o where o.c = c.id) l", Some(&[(&["c.email"], ""), (&["l.n"], "")]), &["customers c", "orders o"], true, false),
    ("select email from customers where id in (select id from (select id from orders) o)", Some(&[(&["email"], "")]), &["customers", "orders"], true, false),
    // A CTE name is not a relation, but a DML target always is.
    ("with customers as (select 1 as email) select email from customers", Some(&[(&["email"], "")]), &[], true, false),
    ("with t as (select 1) delete from t", None, &["t"], true, false),
    // VALUES.
    ("values (1, 'a'), (2, 'b')", Some(&[(&[], H), (&[], H)]), &[], false, false),
    ("values (1), ((select email from customers limit 1))", Some(&[(&["email"], "")]), &["customers"], false, false),
    // RETURNING.
    ("insert into t values (1) returning email", Some(&[(&["email"], "")]), &["t"], false, false),
    ("insert into t values ($1) returning id, 1", Some(&[(&["id"], ""), (&[], H)]), &["t"], false, false),
    ("insert into t (x) select email from customers returning x", Some(&[(&["email", "x"], "")]), &["customers", "t"], true, false),
    ("update customers set name = 'x' where id = 1 returning *", None, &["customers"], false, false),
    ("update t set a = b where id = 1 returning upper(a)", Some(&[(&["a", "b"], "")]), &["t"], true, false),
    ("update t set a = my_func() returning a", Some(&[(&["a"], O)]), &["t"], true, false),
    ("update t set a = 1 from u where t.id = u.id returning u.secret", Some(&[(&["u.secret"], "")]), &["t", "u"], false, false),
    ("delete from t returning id, email is null", Some(&[(&["id"], ""), (&["email"], H)]), &["t"], false, false),
    ("delete from t using my_srf() f where t.id = f.id returning t.id", Some(&[(&["t.id"], O)]), &["t"], true, false),
    ("merge into t using s on t.id = s.id when matched then update set a = s.b returning t.a", Some(&[(&["s.b", "t.a"], "")]), &["s", "t"], true, false),
    ("with d as (delete from t returning *) select count(*) from d", Some(&[(&[], H)]), &["t"], true, false),
    // No rows.
    ("delete from t", None, &["t"], false, false),
    ("insert into t select * from u", None, &["t", "u"], false, false),
    ("update t set a = 1", None, &["t"], false, false),
    ("create table n as select email from customers", None, &["customers", "n"], false, false),
    ("select email into n from customers", None, &["customers", "n"], false, false),
    ("create view v as select email from customers c", None, &["customers c", "v"], false, false),
    ("set search_path = x", None, &[], false, false),
    ("drop table customers", None, &[], false, false),
    ("begin", None, &[], false, false),
    // Rows whose origin the text does not show.
    ("fetch 10 from c", None, &[], false, true),
    ("fetch all in c", None, &[], false, true),
    ("move 10 in c", None, &[], false, true),
    ("call p(1)", None, &[], false, true),
    ("execute p(1)", None, &[], false, false),
    // EXPLAIN returns plan text.
    ("explain select email from customers", Some(&[(&[], H)]), &["customers"], false, false),
    ("explain analyze select my_func(email) from customers", Some(&[(&[], H)]), &["customers"], false, false),
    ("explain (analyze, format json) delete from t", Some(&[(&[], H)]), &["t"], false, false),
    ("explain execute p(1)", Some(&[(&[], H)]), &[], false, false),
    // PREPARE and DECLARE describe their query.
    ("prepare p as select email from customers", Some(&[(&["email"], "")]), &["customers"], false, false),
    ("prepare p (int) as delete from t where id = $1 returning email", Some(&[(&["email"], "")]), &["t"], false, false),
    ("declare c cursor for select upper(email) from customers", Some(&[(&["email"], "")]), &["customers"], false, false),
];

fn expected_lineage(row: &Row) -> Lineage {
    let &(_, columns, relations, renames, opaque) = row;
    let columns = columns.map(|columns| {
        columns
            .iter()
            .map(|&(refs, flags)| OutputColumn {
                refs: refs.iter().map(|text| column_ref(text)).collect(),
                harmless: flags.contains('h'),
                opaque: flags.contains('o'),
            })
            .collect()
    });
    let mut relations: Vec<RelationRef> = relations.iter().map(|text| relation(text)).collect();
    relations.sort();
    Lineage {
        columns,
        relations,
        renames,
        opaque,
        copy: None,
        written: None,
        conditions: Vec::new(),
        computed: Vec::new(),
        catalog_types: false,
        counts_planning: false,
        operators: Vec::new(),
        types: Vec::new(),
        parameter_types: Vec::new(),
    }
}

#[test]
fn casts_to_catalog_types_are_found_anywhere() {
    for (sql, expected) in [
        ("select 'customers'::regclass", true),
        ("select oid::pg_catalog.regtype from pg_type", true),
        ("select cast(x as regrole) from t", true),
        ("select * from t where id = (select 1::regproc::oid)", true),
        (
            "select (ascii(email) + 1000)::oid::regclass::text from customers",
            true,
        ),
        ("select id::text, 'regclass' from t", false),
        ("select to_regclass('x')", false),
    ] {
        assert_eq!(lineage(sql).catalog_types, expected, "{sql}");
    }
}

#[test]
fn operators_applied_and_types_made_are_found_anywhere() {
    let classifier = crate::Classifier::new(16);
    for (sql, operators, types) in [
        ("select 1 ### 2", &["###"][..], &[][..]),
        ("select operator(public.###) 2", &["public.###"], &[]),
        (
            "select * from t where a between 1 and 2",
            &["<", "<=", ">", ">="],
            &[],
        ),
        ("select * from t where a not like 'x%'", &["!~~"], &[]),
        ("select * from t where a in (select b from u)", &["="], &[]),
        ("select * from t where a = any (array[1])", &["="], &[]),
        (
            "select * from t where a ### any (select b from u)",
            &["###"],
            &[],
        ),
        ("select case a when 1 then 2 end from t", &["="], &[]),
        ("select * from t join u using (a)", &["="], &[]),
        ("select * from t natural join u", &["="], &[]),
        ("select * from t order by a using ###", &["###"], &[]),
        ("select 5::checked", &[], &["checked"]),
        ("select cast(5 as public.checked)", &[], &["public.checked"]),
        ("select checked '5'", &[], &["checked"]),
        ("select '{5}'::checked[]", &[], &["checked"]),
        ("select 5::int", &[], &["pg_catalog.int4"]),
        ("select * from f() as (x checked)", &[], &["checked"]),
        ("values ((select 1 ### 2))", &["###"], &[]),
        ("explain select 1 ### 2::checked", &["###"], &["checked"]),
        (
            "explain analyze select 1 ### 2::checked",
            &["###"],
            &["checked"],
        ),
        ("declare c cursor for select 5::checked", &[], &["checked"]),
        ("select 1", &[], &[]),
    ] {
        let statements = classifier.classify(sql).unwrap();
        let lineage = &statements[0].lineage;
        assert_eq!(lineage.operators, operators, "{sql}");
        assert_eq!(lineage.types, types, "{sql}");
    }
}

#[test]
fn an_explain_that_counts_its_planning_is_told_apart() {
    let classifier = crate::Classifier::new(16);
    for (sql, expected) in [
        ("explain (buffers) select 1::oid::regtype", true),
        ("explain (analyze, buffers on) select 1", true),
        ("explain (BUFFERS false) select 1", false),
        ("explain (costs off) select 1", false),
        ("explain analyze select 1", false),
        ("select 1", false),
    ] {
        let statements = classifier.classify(sql).unwrap();
        assert_eq!(statements[0].lineage.counts_planning, expected, "{sql}");
    }
}

#[test]
fn lineage_table() {
    let mut failures = Vec::new();
    for row in ROWS {
        let sql = row.0;
        let expected = expected_lineage(row);
        // What writes store, the conditions, what outputs compute over,
        // and the operators and types are checked on their own, below.
        let actual = Lineage {
            written: None,
            conditions: Vec::new(),
            computed: Vec::new(),
            operators: Vec::new(),
            types: Vec::new(),
            ..lineage(sql)
        };
        if actual != expected {
            failures.push(format!(
                "{sql}\n  expected {expected:?}\n  actual   {actual:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows differ:\n{}",
        failures.len(),
        ROWS.len(),
        failures.join("\n")
    );
}

/// The references that decide which rows come back, and how many: what a
/// masked column may not be used in.
#[test]
fn conditions_are_everything_but_the_output() {
    let rows: &[(&str, &[&str])] = &[
        // The output list alone is no condition (what it computes over is
        // `computed`, below).
        ("select email, upper(c.name) from customers c", &[]),
        ("select (select email from customers limit 1)", &[]),
        ("select id, (select count(*) from orders o where o.customer_id = c.id) from customers c", &["c.id", "o.customer_id"]),
        // Whether a sub-select runs shows in its side effects: what decides
        // it is a condition.
        ("select case when email > 'j' then (select 1 from orders limit 1 for share) end from customers", &["email"]),
        ("select coalesce(email, (select 'x')) from customers", &["email"]),
        // So does whether a call runs: the session's random sequence,
        // catalog caches.
        ("select case when ascii(email) > 100 then random() end from customers", &["email"]),
        ("select case when ascii(email) > 100 then to_regclass('x') end from customers", &["email"]),
        ("select (email > 'j' and random() > 2) from customers", &["email"]),
        ("select coalesce(nullif(email, 'x'), random()::text) from customers", &["email"]),
        ("select case when id = 1 then lower(email) end from customers", &["id"]),
        ("select case when email > 'j' then 1 else 2 end from customers", &[]),
        ("select count(email) from customers", &[]),
        ("copy (select email from customers) to stdout", &[]),
        ("select email, email is null from customers", &[]),
        // A nullness test in WHERE lets an index on the column drive the
        // scan, which returns the rows in the column's order.
        ("select id from customers where email is not null", &["email"]),
        ("explain select id from customers where email = 'x'", &["email"]),
        ("explain select id, email from customers", &[]),
        // Everything that chooses, counts or orders rows.
        ("select id from customers where email = 'x'", &["email"]),
        ("explain analyze select id from customers where email = 'x'", &["email", "id"]),
        ("explain analyze select case when email > 'j' then (select 1) end from customers", &["email"]),
        (
            "select count(*) from customers c join orders o on o.email = c.email group by c.card having max(c.id) > 1 order by c.name limit 1",
            &["c.card", "c.email", "c.id", "c.name", "o.email"],
        ),
        (
            "select i, g from customers c, generate_series(1, 20) i, generate_series(1, 255) g where g = ascii(substr(c.email, i, 1))",
            &["c.email", "g", "i"],
        ),
        ("select generate_series(1, ascii(email)) from customers", &["email"]),
        ("select count(*) filter (where email like 'a%') from customers", &["email"]),
        ("select row_number() over (order by email) from customers", &["email"]),
        ("select exists (select 1 from customers c where c.email = 'x')", &["c.email"]),
        ("select id from customers where upper(email) is null", &["email"]),
        // What a subquery in FROM or a CTE outputs feeds the rows.
        ("select s.e from (select email e from customers) s", &["email"]),
        ("with x as (select email from customers) select 1 from x", &["email"]),
        // Output expressions named by position or alias.
        ("select id, email from customers order by 2", &["email"]),
        ("select ascii(email) x, count(*) from customers group by x", &["email", "x"]),
        ("select distinct on (2) id, email from customers", &["email"]),
        ("select id, email from customers group by rollup (1, 2)", &["email", "id"]),
        ("select email from customers union all select name from customers order by 1", &["email", "name"]),
        // Names PostgreSQL gives outputs without an alias.
        ("select id, lower(email) from customers order by lower", &["email", "lower"]),
        ("select id, row(email) from customers order by row", &["email", "row"]),
        ("select id, email || '' from customers order by \"?column?\"", &["?column?", "email"]),
        ("select (select least(ascii(email), g) as x) from customers, generate_series(1, 9) g group by x", &["email", "g", "x"]),
        ("select (email)::text from customers order by email", &["email"]),
        ("select case when true then 1 else email end from customers order by email", &["email"]),
        // A cast names an output by its type when its value has no strong
        // name: `case ... end::text` is `text`.
        ("select id, (case when id = 1 then email end)::text from customers order by text", &["email", "id", "text"]),
        ("select id, (c).email[1] from customers c order by email", &["c", "email"]),
        ("select id, email from customers order by id", &["id"]),
        ("select id, lower(email) from customers order by id", &["id"]),
        ("select id, email || '' from customers order by id", &["id"]),
        ("select * from customers order by id", &["id"]),
        // Round 21: the fields of `(expr).*`, VALUES columns by name, and
        // names made for GREATEST, LEAST and XML constructors.
        ("select (row(email)).* from customers order by f1", &["email", "f1"]),
        ("select (select (row(c.email)).*) from customers c order by f1", &["c.email", "f1"]),
        ("values (1, 'x'), (2, 'y') order by column2", &["column2"]),
        ("select id, greatest(email, 'a') from customers order by id", &["id"]),
        ("select id, greatest(email, 'a') from customers order by greatest", &["email", "greatest"]),
        ("select id, xmlelement(name e, email) from customers order by id", &["id"]),
        ("select id, (values (email)) from customers order by column1", &["column1", "email"]),
        ("select c.*, lower(email) from customers c order by lower", &["email", "lower"]),
        // A row of positions in GROUP BY is its items, each a position.
        ("select id, email from customers group by (2, 1)", &["email", "id"]),
        ("select id, email from customers group by rollup ((2, 1))", &["email", "id"]),
        ("select id, email from customers group by grouping sets ((2, 1))", &["email", "id"]),
        // A position counts the columns `*` stands for: at or past one, it
        // may be any output.
        ("select * from customers order by 3", &["*"]),
        ("select id, * from customers order by 1", &["id"]),
        ("select id, *, ascii(email) from customers order by 9", &["*", "email", "id"]),
        ("select distinct on (3) * from customers", &["*"]),
        ("select c.* from customers c order by 2", &["c.*"]),
        // Set operations that compare their branches' values.
        ("select email from customers intersect select 'x'", &["email"]),
        ("select email from customers union select name from customers", &["email", "name"]),
        ("select email from customers union all select name from customers", &[]),
        ("select email from customers intersect all select 'x'", &["email"]),
        ("select email from customers except all select 'x'", &["email"]),
        // Functions written as fields: `(x).unnest` is `unnest(x)`.
        ("select id, (array_fill(1, array[ascii(email)])).unnest from customers", &["email"]),
        // Plain DISTINCT compares what is computed, and sorts by it.
        ("select distinct id, greatest(g, ascii(email)) from customers, generate_series(1, 9) g", &["email", "g", "id"]),
        ("select distinct id, email from customers", &["email", "id"]),
        ("select distinct * from customers", &["*"]),
        // CLUSTER stores the rows in an index's order.
        ("cluster customers using customers_email_key", &["*"]),
        ("alter table customers cluster on customers_email_key", &["*"]),
        ("cluster", &["*"]),
        // ANALYZE's statistics describe the rows left in a transaction.
        ("analyze customers", &["*"]),
        ("vacuum (analyze) customers", &["*"]),
        ("vacuum analyze customers", &["*"]),
        ("vacuum customers", &[]),
        // Columns renamed in FROM stand for the whole relation.
        ("select i from customers t(i, n, z) where z like 'j%'", &["t.*", "z"]),
        ("select i from customers t(i, n, z)", &[]),
        ("select a from (customers c join orders o on o.id = c.id) as j(a, b) where b = 1", &["*", "b", "c.id", "o.id"]),
        // Columns named as strings.
        ("select o.id from customers join orders o using (email)", &["email"]),
        ("select 1 from customers natural join orders", &["*"]),
        ("insert into customers (id) values (1) on conflict (email) do nothing", &["email"]),
        ("insert into customers (id) values (1) on conflict do nothing", &["*"]),
        ("insert into customers (id) values (1) on conflict on constraint customers_email_key do nothing", &["*"]),
        // A join's name stands for its whole row, or for a column of any side.
        ("select 1 from (customers c cross join orders o) j where j::text like '%x%'", &["*", "j"]),
        ("select 1 from (customers c cross join orders o) j where j.email = 'x'", &["c.email", "j.email", "o.email"]),
        ("select 1 from (customers c join orders o using (id) as u) where u.id = 1", &["c.id", "id", "o.id", "u.id"]),
        // `j.to_jsonb` is `to_jsonb(j)`: each side's name with it is
        // matched as a call over that side's row.
        ("select 1 from (customers c join orders o on true) j where j.to_jsonb->>'x' = 'y'", &["c.to_jsonb", "j.to_jsonb", "o.to_jsonb"]),
        (
            "select 1 from ((customers join orders o on true) j cross join (select 1 y) s) k where k.to_jsonb is null",
            &["customers.to_jsonb", "j.to_jsonb", "k.to_jsonb", "o.to_jsonb", "s.to_jsonb"],
        ),
        // Writes: which rows change; what RETURNING returns is output.
        ("delete from orders where id = 1 returning email", &["id"]),
        ("update orders set note = 'x' where email = 'y' returning email", &["email"]),
        ("delete from orders using customers c where c.card = orders.card", &["c.card", "orders.card"]),
    ];
    check_references(rows, |lineage| &lineage.conditions);
}

/// The references outputs compute over: a computation can fail by the
/// value it reads, and whether and where it fails tells the value.
#[test]
fn computed_are_the_references_outputs_compute_over() {
    let rows: &[(&str, &[&str])] = &[
        // Returned as they are.
        ("select email, c.card from customers c", &[]),
        ("select c from customers c", &[]),
        ("select * from customers", &[]),
        ("select (email) as e from customers", &[]),
        ("delete from orders where id = 1 returning email", &[]),
        // Under forms that cannot carry a value.
        ("select count(email), count(*) from customers", &[]),
        ("select email is null, email from customers", &[]),
        ("select case when email is null then 1 end from customers", &[]),
        ("select exists (select 1 from customers)", &[]),
        // Computed over.
        ("select upper(email) from customers", &["email"]),
        ("select email::int from customers", &["email"]),
        ("select c.email || c.name from customers c", &["c.email", "c.name"]),
        ("select count(distinct email) from customers", &["email"]),
        ("select count(ascii(email)) from customers", &["email"]),
        ("select row_to_json(c) from customers c", &["c"]),
        ("select profile->>'ssn' from customers", &["profile"]),
        ("select *, 1 / (ascii(national_id) - 48) from customers", &["national_id"]),
        (
            "select 1 / (ascii(substr(national_id, 1, 1)) - g) from customers, generate_series(1, 127) g where id = 1",
            &["g", "national_id"],
        ),
        // A sub-select's own conditions are conditions too.
        ("select (select 1 / ascii(email) from customers where id = 1)", &["email", "id"]),
        ("select (select email from customers where id = 1)", &["email", "id"]),
        ("values ((select ascii(email) from customers limit 1))", &["email"]),
        ("delete from orders where id = 1 returning 1 / ascii(email)", &["email"]),
        ("copy (select email::int from customers) to stdout", &["email"]),
        ("declare c cursor for select email::int from customers", &["email"]),
        ("prepare q as select email::int from customers", &["email"]),
        // A renamed relation stands whole for its columns.
        ("select upper(z) from customers t(i, n, z)", &["t.*", "z"]),
        // So does a join's name.
        ("select row_to_json(j) from (customers c cross join orders o) j", &["*", "j"]),
        // Every row of a VALUES list is computed, under EXISTS too.
        ("select exists (values (1 / ascii(c.email)), (1)) from customers c", &["c.email"]),
        ("select exists (select 1 / ascii(c.email)) from customers c", &["c.email"]),
    ];
    check_references(rows, |lineage| &lineage.computed);
}

/// Checks, for each statement of `rows`, the references `pick` takes from
/// its lineage, as SQL and sorted; reports every row that differs.
fn check_references(rows: &[(&str, &[&str])], pick: fn(&Lineage) -> &Vec<ColumnRefName>) {
    let mut failures = Vec::new();
    for &(sql, expected) in rows {
        let lineage = lineage(sql);
        let mut actual: Vec<String> = pick(&lineage).iter().map(ToString::to_string).collect();
        actual.sort();
        if actual != expected {
            failures.push(format!(
                "{sql}\n  expected {expected:?}\n  actual   {actual:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn what_writes_store_comes_from() {
    let written = |sql: &str| lineage(sql).written;
    let from = |sql: &str| {
        let column = written(sql).unwrap();
        let refs: Vec<String> = column
            .refs
            .iter()
            .map(|r| {
                let mut parts = r.qualifiers.clone();
                parts.push(r.column.clone().unwrap_or_else(|| "*".into()));
                parts.join(".")
            })
            .collect();
        (refs, column.harmless, column.opaque)
    };
    assert_eq!(
        from("update customers set name = national_id where id = 1"),
        (vec!["national_id".to_string()], false, false)
    );
    assert_eq!(
        from("insert into t (a) select c.email from customers c"),
        (vec!["c.email".to_string()], false, false)
    );
    assert_eq!(
        from("insert into t (a) values (1), ($1)"),
        (Vec::new(), true, false)
    );
    assert!(from("update t set a = my_func(b)").2);
    assert_eq!(written("delete from t where a = 1"), None);
    // Writes hidden in another statement store values too.
    for hidden in [
        "with u as (update customers set name = national_id where id = 1 returning id) select id from u",
        "copy (update customers set name = national_id returning id) to stdout",
        "explain analyze update customers set name = national_id where id = 2",
        "prepare w as with u as (update customers set name = national_id returning 1) select 1",
    ] {
        assert_eq!(
            from(hidden).0,
            vec!["national_id".to_string()],
            "{hidden}"
        );
    }
    assert_eq!(written("select email from customers"), None);
    // A table made from a query stores what the query returns.
    assert_eq!(
        from("create table bak as select id, national_id from customers").0,
        vec!["id".to_string(), "national_id".to_string()]
    );
    assert_eq!(
        from("select email into bak from customers").0,
        vec!["email".to_string()]
    );
    assert!(from("create table bak as table customers").2);
    assert!(from("create table bak as select * from customers").2);
}

#[test]
fn relations_keep_each_alias_and_are_sorted() {
    let actual = lineage("select 1 from s.b x, a, s.b, a y where a.id in (select id from a)");
    let expected: Vec<RelationRef> = ["a", "a y", "s.b", "s.b x"]
        .iter()
        .map(|text| relation(text))
        .collect();
    assert_eq!(actual.relations, expected);
}

#[test]
fn every_statement_of_a_query_has_its_own_lineage() {
    let (statements, _) = classify_query("select email from customers; fetch 1 from c").unwrap();
    let lineages: Vec<(bool, usize)> = statements
        .iter()
        .map(|s| (s.lineage.opaque, s.lineage.relations.len()))
        .collect();
    assert_eq!(lineages, [(false, 1), (true, 0)]);
}

fn copy_out(sql: &str) -> Option<CopyOut> {
    let lineage = lineage(sql);
    assert_eq!(lineage.columns, None, "{sql}: a COPY has no result columns");
    lineage.copy
}

fn copy_relation(name: &str, columns: &[&str]) -> CopySource {
    CopySource::Relation {
        relation: relation(name),
        columns: columns.iter().map(|column| column.to_string()).collect(),
    }
}

#[test]
fn copy_to_stdout_options() {
    use CopyFormat::{Binary, Csv, Text};
    let cases: &[(&str, CopyFormat, u8, bool)] = &[
        ("copy customers to stdout", Text, b'\t', false),
        (
            "copy customers (email, name) to stdout with (format csv, header)",
            Csv,
            b',',
            true,
        ),
        (
            "copy customers to stdout with (format csv, header true)",
            Csv,
            b',',
            true,
        ),
        (
            "copy customers to stdout with (format csv, header on)",
            Csv,
            b',',
            true,
        ),
        (
            "copy customers to stdout with (format csv, header 1)",
            Csv,
            b',',
            true,
        ),
        (
            "copy customers to stdout with (format csv, header match)",
            Csv,
            b',',
            true,
        ),
        (
            "copy customers to stdout with (format csv, header false)",
            Csv,
            b',',
            false,
        ),
        (
            "copy customers to stdout with (format csv, header 0)",
            Csv,
            b',',
            false,
        ),
        (
            "copy customers to stdout with (format csv, delimiter ';')",
            Csv,
            b';',
            false,
        ),
        (
            "copy customers to stdout with (format text, delimiter '|')",
            Text,
            b'|',
            false,
        ),
        (
            "copy customers to stdout with (format binary)",
            Binary,
            b'\t',
            false,
        ),
        (
            "copy customers to stdout with (format csv, quote '\"', escape '\"')",
            Csv,
            b',',
            false,
        ),
        (
            "copy customers to stdout with (encoding 'UTF-8')",
            Text,
            b'\t',
            false,
        ),
        (
            "copy customers to stdout with (null 'x', force_quote *)",
            Text,
            b'\t',
            false,
        ),
        // The legacy keywords.
        ("copy customers to stdout csv header", Csv, b',', true),
        (
            "copy customers to stdout with csv delimiter as ';'",
            Csv,
            b';',
            false,
        ),
        ("copy binary customers to stdout", Binary, b'\t', false),
        ("copy customers to stdout with binary", Binary, b'\t', false),
        (
            "copy customers to stdout using delimiters ','",
            Text,
            b',',
            false,
        ),
    ];
    let mut failures = Vec::new();
    for &(sql, format, delimiter, header) in cases {
        let actual = copy_out(sql).map(|copy| (copy.format, copy.delimiter, copy.header));
        let expected = Some((format, delimiter, header));
        if actual != expected {
            failures.push(format!(
                "{sql}\n  expected {expected:?}\n  actual   {actual:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn copy_sources() {
    let copy = copy_out("copy customers to stdout").unwrap();
    assert_eq!(copy.source, copy_relation("customers", &[]));

    let copy = copy_out("copy public.customers (email, name) to stdout").unwrap();
    assert_eq!(
        copy.source,
        copy_relation("public.customers", &["email", "name"])
    );

    let copy = copy_out("copy (select email from customers) to stdout").unwrap();
    let expected = Lineage {
        columns: Some(vec![OutputColumn {
            refs: vec![column_ref("email")],
            harmless: false,
            opaque: false,
        }]),
        relations: vec![relation("customers")],
        ..Lineage::default()
    };
    assert_eq!(copy.source, CopySource::Query(Box::new(expected)));

    let CopySource::Query(query) = copy_out("copy (select * from customers c) to stdout")
        .unwrap()
        .source
    else {
        panic!("not a query");
    };
    assert_eq!(
        (query.columns, query.relations),
        (None, vec![relation("customers c")])
    );

    let CopySource::Query(query) =
        copy_out("copy (update t set a = 1 where id = 2 returning a, my_func(b)) to stdout")
            .unwrap()
            .source
    else {
        panic!("not a query");
    };
    let flags: Vec<(bool, bool)> = query
        .columns
        .unwrap()
        .iter()
        .map(|column| (column.harmless, column.opaque))
        .collect();
    assert_eq!(flags, [(false, false), (false, true)]);

    // The COPY statement names the relations of its query.
    let outer = lineage("copy (select email from customers c join orders o using (id)) to stdout");
    assert_eq!(
        outer.relations,
        vec![relation("customers c"), relation("orders o")]
    );
    let Some(CopyOut {
        source: CopySource::Query(query),
        ..
    }) = outer.copy
    else {
        panic!("not a query");
    };
    assert!(query.renames);
}

#[test]
fn copy_is_described_only_when_it_sends_rows_to_the_client() {
    for sql in [
        "copy customers from stdin",
        "copy customers from stdin with (format csv)",
        "copy customers to '/tmp/customers'",
        "copy customers to program 'cat'",
        "copy (select 1) to '/tmp/one'",
    ] {
        assert_eq!(lineage(sql).copy, None, "{sql}");
    }
}

#[test]
fn copy_whose_stream_cannot_be_split_is_not_described() {
    // Without a description the masking refuses the COPY rather than
    // misread its fields.
    for sql in [
        "copy customers to stdout with (format csv, quote '''')",
        "copy customers to stdout with (format csv, escape '\\')",
        "copy customers to stdout with (encoding 'SJIS')",
        "copy customers to stdout with (encoding 'latin1')",
        // Values PostgreSQL refuses.
        "copy customers to stdout with (delimiter 'ab')",
        "copy customers to stdout with (format 'CSV')",
        "copy customers to stdout with (format 'json')",
    ] {
        assert_eq!(lineage(sql).copy, None, "{sql}");
    }
}
