//! `portcullis policy test` run as a user and a CI job run it: the real
//! binary on the quickstart's policies and case file, and on copies with a
//! wrong expectation and a malformed case file. No database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Output;

fn quickstart_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/policies")
}

fn portcullis(args: &[&str], dir: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["policy", "test"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A temp dir with the quickstart's `.cedar` files (not its cases) and one
/// case file.
fn policies_with_cases(cases: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(quickstart_policies()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cedar") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(dir.path().join("ci.cases.toml"), cases).unwrap();
    dir
}

const ONE_WRONG: &str = r#"
[defaults]
target = { name = "demo" }

[[case]]
name = "engineers read"
principal = { id = "alice@example.com", groups = ["eng"] }
action = "query"
statement = "select * from orders"
expect = "allow"
policy = "eng-read-write"

[[case]]
name = "engineers drop tables"
principal = { id = "alice@example.com", groups = ["eng"] }
action = "query"
statement = "drop table orders"
expect = "allow"

[[case]]
name = "deletes need a where clause"
principal = { id = "dana@example.com", groups = ["eng", "dba"] }
action = "query"
statement = "with d as (delete from orders returning *) select * from d"
expect = "hold"
policy = "no-unbounded-writes"
"#;

#[test]
fn quickstart_cases_pass() {
    let out = portcullis(&[], &quickstart_policies());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("test quickstart.cases.toml::engineers read ... ok\n"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|line| line == "51 passed, 0 failed"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
}

#[test]
fn a_wrong_expectation_fails_and_is_named() {
    let dir = policies_with_cases(ONE_WRONG);
    let out = portcullis(&[], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("test ci.cases.toml::engineers drop tables ... FAILED\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("test ci.cases.toml::engineers read ... ok\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("---- ci.cases.toml::engineers drop tables ----\n"),
        "{stdout}"
    );
    assert!(stdout.contains("expected `allow`, got `hold`"), "{stdout}");
    assert!(
        stdout.contains("reason:    schema changes need a DBA's approval"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|line| line == "2 passed, 1 failed"),
        "{stdout}"
    );
}

#[test]
fn junit_reports_the_failure() {
    let dir = policies_with_cases(ONE_WRONG);
    let out = portcullis(&["--format", "junit"], dir.path());
    let xml = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{xml}{}", text(&out.stderr));
    assert!(xml.starts_with("<?xml "), "{xml}");
    assert!(xml.contains("<testsuites "), "{xml}");
    assert!(xml.contains("<testsuite name=\"ci.cases.toml\""), "{xml}");
    assert!(xml.contains("tests=\"3\""), "{xml}");
    assert!(xml.contains("failures=\"1\""), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 3, "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    assert!(
        xml.contains("<testcase name=\"engineers drop tables\""),
        "{xml}"
    );
    assert!(xml.trim_end().ends_with("</testsuites>"), "{xml}");
}

#[test]
fn a_malformed_case_file_exits_2_naming_the_file() {
    let dir = policies_with_cases(
        r#"
[[case]]
name = "misspelt"
principal = { id = "alice@example.com", groups = ["eng"] }
target = { name = "demo" }
action = "query"
statment = "select 1"
expect = "allow"
"#,
    );
    let out = portcullis(&[], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}{stderr}", text(&out.stdout));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(
        stderr.contains("ci.cases.toml:7:1: case 1 `misspelt`"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `statment`"), "{stderr}");

    // The same exit status in JUnit mode, where stdout stays empty.
    let out = portcullis(&["--format", "junit"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_statement_that_does_not_parse_exits_2() {
    let dir = policies_with_cases(
        r#"
[[case]]
name = "typo"
principal = { id = "alice@example.com", groups = ["eng"] }
target = { name = "demo" }
action = "query"
statement = "selec * from orders"
expect = "allow"
"#,
    );
    let out = portcullis(&[], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ci.cases.toml:2: case 1 `typo`: `statement`: cannot parse the query"),
        "{stderr}"
    );
}

#[test]
fn a_directory_without_cases_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        quickstart_policies().join("access.cedar"),
        dir.path().join("access.cedar"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.toml"), "not = \"cases\"\n").unwrap();
    let out = portcullis(&[], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no `*.cases.toml` case files"), "{stderr}");
    // A file that only looks like a policy file: said once, and why.
    std::fs::write(dir.path().join("Guard.CEDAR"), "").unwrap();
    let out = portcullis(&[], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.matches("not exactly").count(), 1, "{stderr}");
    std::fs::remove_file(dir.path().join("Guard.CEDAR")).unwrap();
    // Case files that hold no case are no tests either.
    std::fs::write(dir.path().join("empty.cases.toml"), "# to do\n").unwrap();
    std::fs::write(
        dir.path().join("defaults.cases.toml"),
        "[defaults]\nclient_ip = \"127.0.0.1\"\n",
    )
    .unwrap();
    let out = portcullis(&[], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no cases in the case files of")
            && stderr.contains("(defaults.cases.toml, empty.cases.toml)"),
        "{stderr}"
    );
}

/// The quickstart's case table passes against its Rego policies too: one
/// table, both engines.
#[test]
fn the_same_cases_pass_with_the_rego_policies() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("rego/portcullis.rego"),
        dir.path().join("portcullis.rego"),
    )
    .unwrap();
    for cases in ["quickstart.cases.toml", "ssh.cases.toml"] {
        std::fs::copy(root.join("policies").join(cases), dir.path().join(cases)).unwrap();
    }
    std::fs::copy(root.join("rego/masks.toml"), dir.path().join("masks.toml")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["policy", "test"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" passed, 0 failed"), "{text}");
    // Found in attack: with Cedar files beside the Rego, the Cedar ones
    // were tested, whatever the gateway reads. Now the engine is asked for.
    std::fs::copy(
        root.join("policies/guardrails.cedar"),
        dir.path().join("guardrails.cedar"),
    )
    .unwrap();
    let out = portcullis(&[], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("holds both `*.cedar` and `*.rego` files"),
        "{stderr}"
    );
    let out = portcullis(&["--engine", "rego"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(" passed, 0 failed"));
}

/// Teams keep their rules in sub-directories: a `forbid` there is enforced
/// and the cases beside it are run, as at the top. Before, both were
/// silently left out.
#[test]
fn policies_and_cases_in_sub_directories_count() {
    let dir = policies_with_cases(
        r#"
[[case]]
name = "engineers read"
principal = { id = "alice@example.com", groups = ["eng"] }
target = { name = "demo" }
action = "query"
statement = "select * from orders"
expect = "allow"
"#,
    );
    let team = dir.path().join("teams/payments");
    std::fs::create_dir_all(&team).unwrap();
    std::fs::write(
        team.join("orders.cedar"),
        "@id(\"payments-no-order-reads\")\n\
         forbid (principal, action == Action::\"query\", resource)\n\
         when { context.statement.tables.contains(\"orders\") };\n",
    )
    .unwrap();
    std::fs::write(
        team.join("payments.cases.toml"),
        r#"
[[case]]
name = "orders are closed"
principal = { id = "alice@example.com", groups = ["eng"] }
target = { name = "demo" }
action = "query"
statement = "select * from orders"
expect = "deny"
policy = "payments-no-order-reads"
"#,
    )
    .unwrap();
    let out = portcullis(&[], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("test teams/payments/payments.cases.toml::orders are closed ... ok\n"),
        "{stdout}"
    );
    // The top-level case now meets the team's forbid.
    assert!(
        stdout.contains("test ci.cases.toml::engineers read ... FAILED\n"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|line| line == "1 passed, 1 failed"),
        "{stdout}"
    );
}
