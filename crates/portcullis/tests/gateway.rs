//! The gateway as an operator meets it: start-up refusals, the admin
//! listener, the login methods of targets, notices passed through.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_stops_the_gateway_from_serving() {
    let db = TestDb::create("e2e_bad_policy", "").await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("broken.cedar"),
        "permit (principal, action == Action::\"query\", resource)\nwhen { context.statement.kindd == \"select\" };\n",
    )
    .unwrap();
    let config_path = write_config(
        dir.path(),
        &db,
        &Options {
            policies,
            ..Options::default()
        },
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("refuses to serve"), "{err}");
    assert!(err.contains("broken.cedar:2:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_reports_health_readiness_and_policy_version() {
    let gw = Gateway::start(TestDb::create("e2e_admin", "").await).await;
    let get = |path: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-w",
                "\n%{http_code}",
                &format!("http://{}{path}", gw.admin_addr),
            ])
            .output()
            .unwrap();
        stdout(&out)
    };
    assert!(get("/healthz").ends_with("200"));
    assert!(get("/readyz").ends_with("200"));
    let status = get("/api/v1/status");
    assert!(status.contains("\"policy_version\":\"sha256:"), "{status}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_that_log_in_with_md5_or_a_cleartext_password() {
    for (name, role, encryption) in [
        ("e2e_md5", "portcullis_md5", "md5"),
        ("e2e_password", "portcullis_password", "scram-sha-256"),
    ] {
        let db = TestDb::create_as(name, role, encryption, SEED).await;
        let gw = Gateway::start(db).await;
        let alice = gw.token("alice@example.com", &["eng"]);
        let client = gw.connect(&alice).await.unwrap();
        let who: String = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, role);
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_and_parameter_changes_reach_the_client() {
    let gw = Gateway::start(TestDb::create("e2e_notices", SEED).await).await;
    let dana = gw.token("dana@example.com", &["eng", "dba"]);
    let out = gw.psql(
        &dana,
        &[
            "-c",
            "drop table if exists no_such_table",
            "-c",
            "set application_name = 'renamed'",
            "-c",
            "show application_name",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("NOTICE:  table \"no_such_table\" does not exist, skipping"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("renamed"), "{}", stdout(&out));
    gw.stop().await;
}
