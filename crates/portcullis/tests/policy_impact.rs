//! `portcullis policy impact` on a recorded audit log with a known answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impact_of_a_candidate_on_recorded_decisions() {
    let gw = Gateway::start(TestDb::create("e2e_impact", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    client
        .batch_execute("select * from customers")
        .await
        .unwrap();
    client
        .batch_execute("select name from customers where id = 2")
        .await
        .unwrap();
    client
        .batch_execute("select count(*) from orders")
        .await
        .unwrap();
    client
        .batch_execute("delete from orders where id = 1")
        .await
        .unwrap();
    client
        .batch_execute("delete from orders")
        .await
        .unwrap_err();
    drop(client);

    // The candidate drops the guardrails and forbids reading customers.
    let candidate = tempfile::tempdir().unwrap();
    for name in ["access.cedar", "statements.cedar"] {
        std::fs::copy(
            quickstart_policies().join(name),
            candidate.path().join(name),
        )
        .unwrap();
    }
    std::fs::write(
        candidate.path().join("customers.cedar"),
        "@id(\"no-customers\")\nforbid (principal, action == Action::\"query\", resource)\nwhen { context.statement.tables.contains(\"customers\") };\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["policy", "impact", "--since", "1h", "--candidate"])
        .arg(candidate.path())
        .arg("--config")
        .arg(&gw.config_path)
        .output()
        .unwrap();
    let report = stdout(&out);
    assert!(out.status.success(), "{report}{}", stderr(&out));
    assert!(report.contains("3 would change"), "{report}");
    assert!(
        report.contains("allowed, would be denied:\n  no-customers: 2\n"),
        "{report}"
    );
    assert!(
        report.contains("e.g. alice@example.com on demo: select * from customers"),
        "{report}"
    );
    assert!(
        report.contains("denied, would be allowed:\n  eng-read-write: 1\n"),
        "{report}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_rules_after_a_known_set_of_decisions() {
    let gw = Gateway::start(TestDb::create("e2e_stale", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    client.batch_execute("select 1").await.unwrap();
    client
        .batch_execute("delete from orders")
        .await
        .unwrap_err();
    client.batch_execute("drop table orders").await.unwrap_err();
    drop(client);
    let config_path = gw.config_path.clone();
    // Hit counts are saved at shutdown (and every 10 s while running).
    let _dir = gw.stop().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["policy", "stale", "--days", "30", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    let report = stdout(&out);
    assert!(out.status.success(), "{report}{}", stderr(&out));
    // Hit: eng-connect, eng-read-write, no-unbounded-writes, and
    // eng-ddl-needs-a-dba (`drop table` by an engineer); the SSH rules
    // (ssh.cedar) decided nothing either.
    assert!(
        report.starts_with("17 of 21 rules decided nothing in the last 30 days"),
        "{report}"
    );
    for stale in [
        "dba-connect",
        "dba-ddl-dcl",
        "no-alter-system",
        "no-copy-program",
        "no-drop-database",
        "no-role-changes",
        "eng-ssh-commands",
        "no-forwarding",
    ] {
        assert!(
            report.contains(&format!("  {stale:<32} never hit")),
            "{stale}: {report}"
        );
    }
    for hit in [
        "eng-connect",
        "eng-read-write",
        "no-unbounded-writes",
        "eng-ddl-needs-a-dba",
    ] {
        assert!(!report.contains(&format!("  {hit} ")), "{hit}: {report}");
    }
}
