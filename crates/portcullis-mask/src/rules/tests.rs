use super::*;
use crate::strategy::Strategy;

fn parse(files: &[(&str, &str)]) -> Result<MaskRules, Vec<String>> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    MaskRules::from_files(&files).map_err(|errors| errors.iter().map(ToString::to_string).collect())
}

fn errors(text: &str) -> Vec<String> {
    match parse(&[("a.masks.toml", text)]) {
        Ok(_) => panic!("expected errors in {text}"),
        Err(errors) => errors,
    }
}

fn column<'a>(
    schema: &'a str,
    table: &'a str,
    name: &'a str,
    type_name: &'a str,
) -> ColumnMeta<'a> {
    ColumnMeta {
        schema,
        table,
        column: name,
        type_name,
    }
}

const EXAMPLE: &str = r#"
[[rule]]
id = "customer-email"
description = "emails of customers"
targets = ["demo", "prod-*"]
columns = ["public.customers.email", "*.email", "contact_*"]
types = ["text", "varchar"]
strategy = "partial"

[[rule]]
id = "notes"
columns = ["notes"]
detectors = ["email", "payment_card", "employee_id"]
json_keys = ["ssn", "card*"]
strategy = "hash"

[[rule]]
id = "cards.v2"
detectors = ["payment_card"]
strategy = "partial"
keep_last = 2

[[detector]]
name = "employee_id"
pattern = 'EMP-[0-9]{6}'
"#;

#[test]
fn parses_the_example() {
    let rules = parse(&[("a.masks.toml", EXAMPLE)]).unwrap();
    let ids: Vec<&str> = rules.rules().iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["customer-email", "notes", "cards.v2"]);
    let [email, notes, cards] = rules.rules() else {
        panic!()
    };
    assert!(email.is_column_rule() && !email.is_content_rule());
    assert!(!notes.is_column_rule() && notes.is_content_rule());
    assert!(cards.is_content_rule());
    assert_eq!(email.description.as_deref(), Some("emails of customers"));
    assert_eq!(email.strategy, Strategy::Partial { keep_last: 4 });
    assert_eq!(cards.strategy, Strategy::Partial { keep_last: 2 });
    assert_eq!(notes.strategy, Strategy::Hash);
    assert_eq!(email.location, "a.masks.toml:3:6");
    assert_eq!(
        notes.detector_names(),
        ["email", "payment_card", "employee_id"]
    );
    assert_eq!(email.targets().collect::<Vec<_>>(), ["demo", "prod-*"]);
    assert_eq!(cards.targets().collect::<Vec<_>>(), ["*"]);
}

#[test]
fn selects_rules_by_target() {
    let rules = parse(&[("a.masks.toml", EXAMPLE)]).unwrap();
    let ids = |target| {
        rules
            .for_target(target)
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("demo"), ["customer-email", "notes", "cards.v2"]);
    assert_eq!(ids("PROD-eu"), ["customer-email", "notes", "cards.v2"]);
    assert_eq!(ids("staging"), ["notes", "cards.v2"]);
    assert!(MaskRules::default().is_empty());
    assert_eq!(MaskRules::default().for_target("x").count(), 0);
}

#[test]
fn columns_and_types_match() {
    let rules = parse(&[("a.masks.toml", EXAMPLE)]).unwrap();
    let email = &rules.rules()[0];
    assert!(email.covers_column(&column("public", "customers", "email", "text")));
    assert!(email.covers_column(&column(
        "Public",
        "Customers",
        "EMAIL",
        "character varying(255)"
    )));
    assert!(email.covers_column(&column("sales", "leads", "email", "pg_catalog.varchar")));
    assert!(email.covers_column(&column("x", "y", "contact_phone", "TEXT")));
    assert!(!email.covers_column(&column("x", "y", "email_verified", "text")));
    // The type restricts the columns.
    assert!(!email.covers_column(&column("public", "customers", "email", "jsonb")));
    assert!(!email.covers_column(&column("public", "customers", "email", "bpchar")));
    // A content rule without columns covers every column.
    let cards = &rules.rules()[2];
    assert!(cards.covers_column(&column("a", "b", "c", "int8")));
}

#[test]
fn column_patterns_have_one_to_three_parts() {
    let meta = column("s", "t", "c", "text");
    let covers = |pattern: &str| ColumnGlob::parse(pattern).unwrap().matches(&meta);
    assert!(covers("c"));
    assert!(covers("t.c"));
    assert!(covers("s.t.c"));
    assert!(covers("*.*.*"));
    assert!(!covers("x.c"));
    assert!(!covers("x.t.c"));
    assert!(ColumnGlob::parse("a.b.c.d").is_none());
    assert!(ColumnGlob::parse("a..c").is_none());
    assert!(ColumnGlob::parse("").is_none());
}

#[test]
fn type_aliases() {
    for (given, canonical) in [
        ("character varying", "varchar"),
        ("VARCHAR(20)", "varchar"),
        ("character", "bpchar"),
        ("char(3)", "bpchar"),
        ("integer", "int4"),
        ("bigint", "int8"),
        ("smallint", "int2"),
        ("boolean", "bool"),
        ("double precision", "float8"),
        ("real", "float4"),
        ("timestamp with time zone", "timestamptz"),
        ("timestamp(3)  with time zone", "timestamptz"),
        ("pg_catalog.text", "text"),
        ("numeric(10,2)", "numeric"),
        ("jsonb", "jsonb"),
    ] {
        assert_eq!(canonical_type(given), canonical, "{given}");
    }
}

#[test]
fn detectors_and_ids_are_shared_across_files() {
    let detectors = "[[detector]]\nname = \"ticket\"\npattern = 'TCK-[0-9]+'\n";
    let rule = "[[rule]]\nid = \"tickets\"\ndetectors = [\"ticket\"]\nstrategy = \"redact\"\n";
    let rules = parse(&[("b.masks.toml", rule), ("a.masks.toml", detectors)]).unwrap();
    assert_eq!(rules.rules()[0].detectors.len(), 1);

    let unknown = "unknown detector `ticket`; the built-in ones are `email`, `phone`, `payment_card`, `iban`, \
                   `us_ssn`, `ipv4`, `ipv6`, `jwt`, `aws_access_key`, `private_key`, others need a `[[detector]]`";
    assert_eq!(
        parse(&[("a.masks.toml", rule), ("b.masks.toml", rule)]).unwrap_err(),
        [
            format!("a.masks.toml:3:14: {unknown}"),
            "b.masks.toml:2:6: duplicate rule id `tickets`, first defined at a.masks.toml:2:6"
                .to_owned(),
            format!("b.masks.toml:3:14: {unknown}"),
        ]
    );
}

#[test]
fn reports_every_problem_with_its_location() {
    let text = r#"[[rule]]
id = "Bad Id"
columns = ["a.b.c.d", ""]
detectors = ["emails"]
strategy = "scramble"

[[rule]]
id = "ok"
columns = ["x"]
strategy = "redact"
keep_last = 2

[[rule]]
id = "zero"
columns = ["x"]
strategy = "partial"
keep_last = 0

[[rule]]
id = "empty"
targets = []
strategy = "null"

[[rule]]
id = "typo"
colums = ["x"]

[[rule]]
id = "nostrategy"
json_keys = ["ssn"]

[[detector]]
name = "email"
pattern = "x"

[[detector]]
name = "broken"
pattern = "EMP-[0-9"

[[detector]]
name = "Upper"
pattern = "x"

[[detector]]
name = "blank"
pattern = "a*"

[oops]
"#;
    assert_eq!(
        errors(text),
        [
            "a.masks.toml:2:6: invalid rule id `Bad Id`: use lowercase letters, digits, `_`, `.` and `-`, starting with a letter or digit",
            "a.masks.toml:3:12: invalid column pattern `a.b.c.d`: use `column`, `table.column` or `schema.table.column`",
            "a.masks.toml:3:23: an entry of `columns` is empty",
            "a.masks.toml:4:14: unknown detector `emails`; the built-in ones are `email`, `phone`, `payment_card`, `iban`, `us_ssn`, `ipv4`, `ipv6`, `jwt`, `aws_access_key`, `private_key`, others need a `[[detector]]`",
            "a.masks.toml:5:12: unknown strategy `scramble`; expected `redact`, `partial`, `hash` or `null`",
            "a.masks.toml:11:13: `keep_last` applies only to the `partial` strategy",
            "a.masks.toml:17:13: `keep_last` must be at least 1, not 0",
            "a.masks.toml:20:6: rule `empty` masks nothing: give it `columns`, `detectors` or `json_keys`",
            "a.masks.toml:21:11: `targets` is empty; leave it out instead",
            "a.masks.toml:26:1: unknown key `colums`, expected one of `id`, `description`, `targets`, `columns`, `types`, `detectors`, `json_keys`, `strategy`, `keep_last`",
            "a.masks.toml:29:6: rule `nostrategy` has no `strategy`; expected `redact`, `partial`, `hash` or `null`",
            "a.masks.toml:33:8: detector `email` is built in; choose another name",
            "a.masks.toml:38:11: invalid pattern for detector `broken`: unclosed character class",
            "a.masks.toml:41:8: invalid detector name `Upper`: use lowercase letters, digits and `_`",
            "a.masks.toml:46:11: the pattern of detector `blank` matches the empty string",
            "a.masks.toml:48:2: unknown key `oops`, expected `[[rule]]` or `[[detector]]` tables",
        ]
    );
}

#[test]
fn reports_syntax_errors_of_every_file() {
    let errors = parse(&[
        ("a.masks.toml", "[[rule]]\nid = \"x\"\nstrategy = \n"),
        (
            "b.masks.toml",
            "[[rule]]\nid = 'y'\nstrategy = 'null'\ncolumns = [1]\n",
        ),
        ("c.masks.toml", "[[rule]\n"),
    ])
    .unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with("a.masks.toml:3:"), "{}", errors[0]);
    assert_eq!(
        errors[1],
        "b.masks.toml:4:12: invalid type: integer `1`, expected a string"
    );
    assert!(errors[2].starts_with("c.masks.toml:1:8: "), "{}", errors[2]);
}

#[test]
fn rejects_a_rule_table_that_is_not_an_array() {
    assert_eq!(
        errors("[rule]\nid = \"x\"\n"),
        ["a.masks.toml:1:1: `rule` must be an array of tables, written `[[rule]]`"]
    );
    assert_eq!(
        errors("[[rule]]\nstrategy = 'null'\ncolumns = ['x']\n"),
        ["a.masks.toml:1:1: missing key `id`"]
    );
}
