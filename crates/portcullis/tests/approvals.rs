//! Just-in-time approvals end to end: a real `psql` whose statement is held
//! inside its live session until a reviewer decides, from the CLI (the real
//! binary) or the web console (a real headless Chromium logging in through a
//! real OpenID provider); access requests for a time window; notifications.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../portcullis-identity/tests/support/mod.rs"]
mod support;

use common::*;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::{hidden_field, Browser, OidcProvider};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

const POLICIES: &str = r#"
@id("eng-connect")
permit (principal in Group::"eng", action == Action::"connect", resource);

@id("eng-query")
permit (principal in Group::"eng", action == Action::"query", resource);

@id("deletes-need-a-dba")
@approval("dba")
@reason("a DELETE needs a DBA's approval")
forbid (principal, action == Action::"query", resource)
when { context.statement.kinds.contains("delete") };

@id("no-drop")
@reason("tables are not dropped here")
forbid (principal, action == Action::"query", resource)
when { context.statement.command == "DROP TABLE" };

@id("updates-need-a-grant")
@reason("UPDATE needs an access grant: portcullis request --target demo")
forbid (principal, action == Action::"query", resource)
when { context.statement.kind == "update" }
unless { context has grant };
"#;

fn policy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.cedar"), POLICIES).unwrap();
    dir
}

async fn gateway(db: &str, policies: &tempfile::TempDir, approvals: &str) -> Gateway {
    let db = TestDb::create(db, SEED).await;
    Gateway::start_with(
        db,
        Options {
            policies: policies.path().to_path_buf(),
            extra: format!("[approvals]\naccess_approvers = [\"dba\"]\n{approvals}\n"),
            ..Options::default()
        },
    )
    .await
}

/// A `psql -c` running in the background, its stderr read line by line.
struct Held {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Held {
    fn start(gw: &Gateway, token: &str, sql: &str) -> Held {
        Held::start_all(gw, token, &[sql])
    }

    /// `psql -c` for each statement, in order (each its own Query).
    fn start_all(gw: &Gateway, token: &str, statements: &[&str]) -> Held {
        let port = gw.pg_addr.port().to_string();
        let mut args = vec![
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "alice",
            "-d",
            "demo",
            "-v",
            "ON_ERROR_STOP=1",
        ];
        for sql in statements {
            args.extend(["-c", sql]);
        }
        let mut child = tokio::process::Command::new("psql")
            .args(&args)
            .env("PGPASSWORD", token)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send(line);
            }
        });
        Held {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the NOTICE that the statement is held; its request id.
    async fn request_id(&mut self) -> i64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no hold notice; psql said: {:?}", self.seen))
                .unwrap_or_else(|| panic!("psql ended without a hold notice: {:?}", self.seen));
            self.seen.push(line.clone());
            if let Some(rest) = line.split("held for approval: request ").nth(1) {
                let id = rest.split_whitespace().next().unwrap();
                return id.parse().unwrap();
            }
        }
    }

    /// Waits for psql to end: (exit code, stdout, all of stderr).
    async fn finish(mut self) -> (i32, String, String) {
        let output = tokio::time::timeout(Duration::from_secs(30), async {
            let status = self.child.wait().await.unwrap();
            let mut stdout = String::new();
            if let Some(mut out) = self.child.stdout.take() {
                use tokio::io::AsyncReadExt;
                out.read_to_string(&mut stdout).await.unwrap();
            }
            (status.code().unwrap_or(-1), stdout)
        })
        .await
        .expect("psql ends");
        tokio::time::sleep(Duration::from_millis(100)).await;
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        (output.0, output.1, self.seen.join("\n"))
    }

    fn still_waiting(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// A request that ended without a reviewer: a late approval is refused,
/// and the audit log has the ending.
async fn ended_as(gw: &Gateway, reviewer: &str, id: i64, status: &str) {
    let late = review_cli(
        gw,
        reviewer,
        &["approve", &id.to_string(), "--comment", "late"],
    );
    assert!(
        stderr(&late).contains(&format!("{status} already")),
        "{}",
        stderr(&late)
    );
    let events = audit_events(gw, id).await;
    assert!(events.contains(&format!("approval.{status}")), "{events:?}");
}

/// The id in `portcullis request`'s answer (`request 17: ...`).
fn requested_id(answer: &std::process::Output) -> i64 {
    stdout(answer)
        .split_whitespace()
        .nth(1)
        .and_then(|id| id.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("no request id in {:?}", stdout(answer)))
}

/// The real binary's approval commands, against this gateway's API.
fn review_cli(gw: &Gateway, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .args(["--gateway", &format!("http://{}", gw.admin_addr)])
        .env("PORTCULLIS_TOKEN", token)
        .output()
        .expect("portcullis runs")
}

async fn count(gw: &Gateway, sql: &str) -> i64 {
    scalar_i64(&gw.db.direct().await, sql).await
}

async fn audit_events(gw: &Gateway, request: i64) -> Vec<String> {
    let out = gw.cli(&["audit", "tail", "-n", "500", "--json"]);
    stdout(&out)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["entry"]["request"].as_i64() == Some(request))
        .filter_map(|entry| entry["entry"]["event"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_statement_runs_in_its_session_once_a_dba_approves_from_the_cli() {
    let policies = policy_dir();
    let gw = gateway("appr_cli", &policies, "").await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let dba = gw.token("dba@example.com", &["eng", "dba"]);
    let before = count(&gw, "select count(*) from orders").await;

    let mut psql = Held::start_all(
        &gw,
        &alice,
        &[
            "set portcullis.reason = 'INC-4711 cleanup'",
            "delete from orders where id = 1",
        ],
    );
    let id = psql.request_id().await;
    assert!(psql.still_waiting(), "psql waits for the decision");
    assert_eq!(
        count(&gw, "select count(*) from orders").await,
        before,
        "nothing ran yet"
    );

    // The requester cannot approve, and neither can someone outside `dba`.
    let own = review_cli(
        &gw,
        &alice,
        &["approve", &id.to_string(), "--comment", "mine"],
    );
    assert!(!own.status.success());
    assert!(
        stderr(&own).contains("nobody approves their own request"),
        "{}",
        stderr(&own)
    );
    let bob = gw.token("bob@example.com", &["eng"]);
    let outsider = review_cli(
        &gw,
        &bob,
        &["approve", &id.to_string(), "--comment", "sure"],
    );
    // Someone who may not review it does not even see it.
    assert!(
        stderr(&outsider).contains(&format!("no approval request {id}")),
        "{}",
        stderr(&outsider)
    );
    // A comment is required.
    let silent = review_cli(&gw, &dba, &["approve", &id.to_string(), "--comment", " "]);
    assert!(
        stderr(&silent).contains("needs a comment"),
        "{}",
        stderr(&silent)
    );

    // The reviewer sees what is asked.
    let listed = review_cli(&gw, &dba, &["requests"]);
    assert!(
        stdout(&listed).contains("delete from orders where id = 1"),
        "{}",
        stdout(&listed)
    );
    assert!(stdout(&listed).contains("alice@example.com"));
    assert!(
        !stdout(&listed).contains("sent in one query"),
        "a statement sent alone: {}",
        stdout(&listed)
    );
    assert!(
        stdout(&listed).contains("(reason: INC-4711 cleanup)"),
        "{}",
        stdout(&listed)
    );

    let approved = review_cli(
        &gw,
        &dba,
        &["approve", &id.to_string(), "--comment", "old order, fine"],
    );
    assert!(approved.status.success(), "{}", stderr(&approved));
    assert!(stdout(&approved).contains("approved"));
    // The text tail says who reviewed, how, and why.
    let tail = stdout(&gw.cli(&["audit", "tail", "-n", "50"]));
    assert!(
        tail.lines().any(|l| l.contains("approval.reviewed")
            && l.contains("dba@example.com")
            && l.contains("approve")
            && l.contains("old order, fine")),
        "{tail}"
    );

    let (code, out, err) = psql.finish().await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("DELETE 1"), "{out}");
    assert!(
        err.contains(&format!("held for approval: request {id}")),
        "{err}"
    );
    assert_eq!(count(&gw, "select count(*) from orders").await, before - 1);

    // A second approval of a decided request changes nothing.
    let again = review_cli(
        &gw,
        &dba,
        &["approve", &id.to_string(), "--comment", "again"],
    );
    assert!(
        stderr(&again).contains("approved already"),
        "{}",
        stderr(&again)
    );

    // An SQL EXECUTE is held with what it runs; its PREPARE runs nothing
    // and goes ahead.
    let mut psql = Held::start_all(
        &gw,
        &alice,
        &[
            "prepare p as delete from orders where id = $1",
            "execute p(3)",
        ],
    );
    let executed = psql.request_id().await;
    let listed = review_cli(&gw, &dba, &["requests"]);
    assert!(
        stdout(&listed)
            .contains("execute p(3) (runs: prepare p as delete from orders where id = $1)"),
        "{}",
        stdout(&listed)
    );
    review_cli(
        &gw,
        &dba,
        &["approve", &executed.to_string(), "--comment", "one more"],
    );
    let (code, out, err) = psql.finish().await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("DELETE 1"), "{out}");

    let events = audit_events(&gw, id).await;
    for event in [
        "approval.requested",
        "approval.reviewed",
        "approval.approved",
        "approval.executed",
    ] {
        assert!(
            events.iter().any(|e| e == event),
            "{event} missing from {events:?}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_covers_only_its_statement_and_a_denial_says_why() {
    let policies = policy_dir();
    let gw = gateway("appr_deny", &policies, "").await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let dba = gw.token("dba@example.com", &["eng", "dba"]);
    let before = count(&gw, "select count(*) from orders").await;

    // One session, two statements: approving the first does not let the
    // second (a different statement) through.
    let mut psql = Held::start(
        &gw,
        &alice,
        "delete from orders where id = 2; delete from orders where id > 0",
    );
    let first = psql.request_id().await;
    // Approved, the whole query runs: the reviewer is shown all of it, in
    // the CLI, the API and the audit log.
    let whole = "delete from orders where id = 2; delete from orders where id > 0";
    let listed = review_cli(&gw, &dba, &["requests"]);
    assert!(
        stdout(&listed).contains(&format!("sent in one query: {whole}")),
        "{}",
        stdout(&listed)
    );
    let asked = reqwest::Client::new()
        .get(format!("http://{}/api/v1/requests/{first}", gw.admin_addr))
        .bearer_auth(&dba)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(asked["batch"], whole, "{asked}");
    let audited = stdout(&gw.cli(&["audit", "tail", "-n", "50", "--json"]));
    assert!(
        audited
            .lines()
            .any(|l| l.contains("approval.requested") && l.contains(whole)),
        "{audited}"
    );
    let ok = review_cli(
        &gw,
        &dba,
        &["approve", &first.to_string(), "--comment", "one row"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let second = psql.request_id().await;
    assert_ne!(first, second, "the second statement asks anew");
    let denied = review_cli(
        &gw,
        &dba,
        &["deny", &second.to_string(), "--comment", "every order? no"],
    );
    assert!(denied.status.success(), "{}", stderr(&denied));

    let (code, _out, err) = psql.finish().await;
    assert_ne!(code, 0);
    assert!(
        err.contains("denied by reviewer `dba@example.com`: every order? no"),
        "{err}"
    );
    // psql sends both in one Query: one statement was refused, so the
    // implicit transaction ran nothing.
    assert_eq!(count(&gw, "select count(*) from orders").await, before);
    assert!(audit_events(&gw, second)
        .await
        .contains(&"approval.denied".to_string()));
    gw.stop().await;
}

/// Found in attack: an approval ran its statement, and the statements sent
/// with it, as decided when it was held, after the access grant they needed
/// was revoked, or after a forbid no approval lifts was added. What runs
/// once approved is decided again under the policy and grants in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_does_not_outlive_the_grant_or_policy_it_was_decided_under() {
    let policies = policy_dir();
    let gw = gateway("appr_again", &policies, "").await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let dba = gw.token("dba@example.com", &["eng", "dba"]);
    let total = "select total_cents::int8 from orders where id = 3";
    let total_before = count(&gw, total).await;
    let orders_before = count(&gw, "select count(*) from orders").await;

    // Under a grant, an UPDATE goes with a held DELETE; the grant is
    // revoked while the DELETE waits.
    let asked = review_cli(
        &gw,
        &alice,
        &[
            "request", "--target", "demo", "--for", "1h", "--reason", "INC-1",
        ],
    );
    let grant = requested_id(&asked);
    let ok = review_cli(
        &gw,
        &dba,
        &["approve", &grant.to_string(), "--comment", "ok"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let mut psql = Held::start(
        &gw,
        &alice,
        "update orders set total_cents = 1 where id = 3; delete from orders where id = 2",
    );
    let id = psql.request_id().await;
    let revoked = review_cli(
        &gw,
        &alice,
        &["revoke", &grant.to_string(), "--comment", "done"],
    );
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let ok = review_cli(
        &gw,
        &dba,
        &["approve", &id.to_string(), "--comment", "fine"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let (code, _out, err) = psql.finish().await;
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("decided again once approved"), "{err}");
    assert!(err.contains("needs an access grant"), "{err}");
    assert_eq!(
        count(&gw, total).await,
        total_before,
        "the UPDATE did not run"
    );
    assert_eq!(
        count(&gw, "select count(*) from orders").await,
        orders_before
    );

    // A forbid no approval lifts, added while the DELETE waits.
    let status = || async {
        reqwest::get(format!("http://{}/api/v1/status", gw.admin_addr))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()["policy_version"]
            .clone()
    };
    let version = status().await;
    let mut psql = Held::start(&gw, &alice, "delete from orders where id = 2");
    let id = psql.request_id().await;
    std::fs::write(
        policies.path().join("freeze.cedar"),
        "@id(\"freeze\")\n@reason(\"orders are frozen\")\nforbid (principal, action == Action::\"query\", resource)\nwhen { context.statement.kinds.contains(\"delete\") };\n",
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while status().await == version {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new policy is not in force"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ok = review_cli(
        &gw,
        &dba,
        &["approve", &id.to_string(), "--comment", "fine"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let (code, _out, err) = psql.finish().await;
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("decided again once approved") && err.contains("orders are frozen"),
        "{err}"
    );
    assert_eq!(
        count(&gw, "select count(*) from orders").await,
        orders_before
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_decides_expires_and_nothing_runs() {
    let policies = policy_dir();
    let gw = gateway("appr_expire", &policies, "expiry = \"2s\"").await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let before = count(&gw, "select count(*) from orders").await;
    let mut psql = Held::start(&gw, &alice, "delete from orders where id = 3");
    let id = psql.request_id().await;
    let (code, _out, err) = psql.finish().await;
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("approval request {id} expired")),
        "{err}"
    );
    assert_eq!(count(&gw, "select count(*) from orders").await, before);
    let dba = gw.token("dba@example.com", &["eng", "dba"]);
    ended_as(&gw, &dba, id, "expired").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_withdraws_the_request_and_other_sessions_keep_working() {
    let policies = policy_dir();
    let gw = gateway("appr_cancel", &policies, "").await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let dba = gw.token("dba@example.com", &["eng", "dba"]);
    let before = count(&gw, "select count(*) from orders").await;

    let mut psql = Held::start(&gw, &alice, "delete from orders where id = 4");
    let id = psql.request_id().await;

    // While one statement is held, another session works.
    let other = gw.connect(&alice).await.unwrap();
    let n: i64 = other
        .query_one("select count(*) from customers", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
    assert!(psql.still_waiting());

    // Ctrl-C: psql sends a cancel request on a new connection.
    let pid = psql.child.id().unwrap();
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let (code, _out, err) = psql.finish().await;
    assert_ne!(code, 0);
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    assert_eq!(count(&gw, "select count(*) from orders").await, before);
    ended_as(&gw, &dba, id, "cancelled").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_grant_lets_updates_through_until_it_is_revoked_or_ends() {
    let policies = policy_dir();
    let gw = gateway("appr_grant", &policies, "").await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let dba = gw.token("dba@example.com", &["eng", "dba"]);
    let client = gw.connect(&alice).await.unwrap();
    let update = "update customers set name = name where id = 1";
    let refused = client.batch_execute(update).await.unwrap_err();
    assert!(
        db_message(&refused).contains("needs an access grant"),
        "{}",
        db_message(&refused)
    );

    let asked = review_cli(
        &gw,
        &alice,
        &[
            "request", "--target", "demo", "--for", "2h", "--reason", "INC-4711",
        ],
    );
    assert!(asked.status.success(), "{}", stderr(&asked));
    let id = requested_id(&asked);
    let nope = review_cli(
        &gw,
        &dba,
        &[
            "request", "--target", "nowhere", "--for", "2h", "--reason", "x",
        ],
    );
    assert!(
        stderr(&nope).contains("no target `nowhere`"),
        "{}",
        stderr(&nope)
    );
    let long = "y".repeat(5000);
    let verbose = review_cli(
        &gw,
        &dba,
        &[
            "request", "--target", "demo", "--for", "2h", "--reason", &long,
        ],
    );
    assert!(
        stderr(&verbose).contains("5000 characters long"),
        "{}",
        stderr(&verbose)
    );
    // A comment goes to the requester's terminal as written: one that
    // would write their clipboard is refused, and the request stays open.
    let escapes = review_cli(
        &gw,
        &dba,
        &[
            "approve",
            &id.to_string(),
            "--comment",
            "ok\u{1b}]52;c;cm0gLXJmIH4K\u{7}",
        ],
    );
    assert!(
        !escapes.status.success() && stderr(&escapes).contains("[U+001B]"),
        "{}",
        stderr(&escapes)
    );
    let approved = review_cli(
        &gw,
        &dba,
        &["approve", &id.to_string(), "--comment", "for the incident"],
    );
    assert!(approved.status.success(), "{}", stderr(&approved));

    // The same live session sees the grant.
    client.batch_execute(update).await.unwrap();

    let revoked = review_cli(&gw, &dba, &["revoke", &id.to_string(), "--comment", "done"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let after = client.batch_execute(update).await.unwrap_err();
    assert!(db_message(&after).contains("needs an access grant"));

    // A short grant ends on time.
    let asked = review_cli(
        &gw,
        &alice,
        &[
            "request", "--target", "demo", "--for", "3s", "--reason", "quick",
        ],
    );
    let id = requested_id(&asked);
    review_cli(&gw, &dba, &["approve", &id.to_string(), "--comment", "ok"]);
    client.batch_execute(update).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ended = client.batch_execute(update).await.unwrap_err();
    assert!(db_message(&ended).contains("needs an access grant"));
    assert!(audit_events(&gw, id)
        .await
        .contains(&"grant.ended".to_string()));

    // The metrics show the workflow.
    let metrics = Command::new("curl")
        .args(["-sS", &format!("http://{}/metrics", gw.admin_addr)])
        .output()
        .unwrap();
    let metrics = stdout(&metrics);
    assert!(
        metrics.contains("portcullis_approval_latency_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("portcullis_approval_requests_pending"));
    assert!(metrics.contains(r#"portcullis_decisions_total{effect="deny",target="demo"}"#));
    gw.stop().await;
}

/// A COPY FROM STDIN begun under a grant takes no more rows once the grant
/// is revoked: the gateway fails the copy before anything more of it goes,
/// and PostgreSQL keeps none of it. The session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_begun_under_a_grant_is_failed_when_the_grant_is_revoked() {
    use futures_util::SinkExt;
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(
        policies.path().join("policy.cedar"),
        format!(
            r#"{POLICIES}
@id("copies-need-a-grant")
@reason("COPY needs an access grant: portcullis request --target demo")
forbid (principal, action == Action::"query", resource)
when {{ context.statement.command == "COPY FROM STDIN" }}
unless {{ context has grant }};
"#
        ),
    )
    .unwrap();
    let gw = gateway("appr_copy_grant", &policies, "").await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let dba = gw.token("dba@example.com", &["eng", "dba"]);
    let orders = "select count(*) from orders";
    let before = count(&gw, orders).await;
    let client = gw.connect(&alice).await.unwrap();
    let copy = "copy orders (customer_id, total_cents) from stdin";
    let refused = client.copy_in::<_, bytes::Bytes>(copy).await.err().unwrap();
    assert!(
        db_message(&refused).contains("COPY needs an access grant"),
        "{}",
        db_message(&refused)
    );
    let asked = review_cli(
        &gw,
        &alice,
        &[
            "request", "--target", "demo", "--for", "1h", "--reason", "load",
        ],
    );
    let id = requested_id(&asked);
    let approved = review_cli(&gw, &dba, &["approve", &id.to_string(), "--comment", "ok"]);
    assert!(approved.status.success(), "{}", stderr(&approved));

    // Rows sent under the grant, then the grant revoked, then more rows.
    let sink = client.copy_in(copy).await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\t101\n2\t102\n"))
        .await
        .unwrap();
    let revoked = review_cli(&gw, &dba, &["revoke", &id.to_string(), "--comment", "done"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let _ = sink.send(bytes::Bytes::from_static(b"3\t103\n")).await;
    let failed = sink.finish().await.unwrap_err();
    assert!(
        db_message(&failed).contains("the COPY is no longer allowed")
            && db_message(&failed).contains("COPY needs an access grant"),
        "{}",
        db_message(&failed)
    );
    assert_eq!(
        count(&gw, orders).await,
        before,
        "rows of the failed copy were kept"
    );
    assert_eq!(scalar_i64(&client, "select 7::bigint").await, 7);

    // Without a change, a copy under a grant goes through whole.
    let asked = review_cli(
        &gw,
        &alice,
        &[
            "request", "--target", "demo", "--for", "1h", "--reason", "load",
        ],
    );
    let id = requested_id(&asked);
    review_cli(&gw, &dba, &["approve", &id.to_string(), "--comment", "ok"]);
    let sink = client.copy_in(copy).await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\t101\n2\t102\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    assert!(gw
        .audit_entries(2000)
        .iter()
        .any(|e| e["event"] == "session.recheck" && e["action"] == "query"));
    gw.stop().await;
}

/// The text of the next error the gateway sends.
async fn first_error(raw: &mut RawClient) -> String {
    for _ in 0..20 {
        let (tag, body) = raw.next().await;
        if tag == b'E' {
            return String::from_utf8_lossy(&body).into_owned();
        }
    }
    String::new()
}

/// A write sent under a grant behind a slow statement does not run once the
/// grant is revoked. Sent as a Query of its own, it waits at the gateway
/// until the target has answered the slow one, and is decided then. Sent
/// in the same Query, it is on the target's connection already: the gateway
/// decides it again, and ends the session and its backend before it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_queued_behind_a_slow_statement_does_not_run_after_the_revoke() {
    let policies = policy_dir();
    let gw = gateway("appr_queued_write", &policies, "").await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let dba = gw.token("dba@example.com", &["eng", "dba"]);
    let grant = || {
        let asked = review_cli(
            &gw,
            &alice,
            &[
                "request", "--target", "demo", "--for", "1h", "--reason", "INC-9",
            ],
        );
        let id = requested_id(&asked);
        let approved = review_cli(&gw, &dba, &["approve", &id.to_string(), "--comment", "ok"]);
        assert!(approved.status.success(), "{}", stderr(&approved));
        id
    };
    let revoke = |id: i64| {
        let revoked = review_cli(&gw, &dba, &["revoke", &id.to_string(), "--comment", "done"]);
        assert!(revoked.status.success(), "{}", stderr(&revoked));
    };
    let queued = "select count(*) from customers where name = 'queued'";

    // Two Queries: the update waits at the gateway, and is refused.
    let id = grant();
    let mut raw = RawClient::connect(&gw, &alice).await;
    raw.send(&[
        raw::query("select pg_sleep(3)"),
        raw::query("update customers set name = 'queued' where id = 1"),
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    revoke(id);
    let why = first_error(&mut raw).await;
    assert!(why.contains("needs an access grant"), "{why}");
    raw.until_ready().await;
    assert_eq!(
        count(&gw, queued).await,
        0,
        "the held-back update ran after the revoke"
    );

    // One Query: decided again, and the session and its backend ended.
    let id = grant();
    let mut raw = RawClient::connect(&gw, &alice).await;
    raw.send(&[raw::query(
        "select pg_sleep(4); update customers set name = 'queued' where id = 1",
    )])
    .await;
    // Revoked once the target runs the Query (deciding it may have needed
    // a read of the catalog first).
    let running = "select count(*) from pg_stat_activity where query like 'select pg_sleep(4)%'";
    for _ in 0..100 {
        if count(&gw, running).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    revoke(id);
    let why = first_error(&mut raw).await;
    assert!(
        why.contains("sent before the policy or access grants changed")
            && why.contains("needs an access grant"),
        "{why}"
    );
    // Past the sleep's end: the update never ran, and the backend is gone.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        count(&gw, queued).await,
        0,
        "the queued update ran after the revoke"
    );
    let sleeping = count(
        &gw,
        "select count(*) from pg_stat_activity where query like 'select pg_sleep(4)%'",
    )
    .await;
    assert_eq!(sleeping, 0);
    gw.stop().await;
}

/// A webhook receiver that fails its first `failures` calls.
async fn webhook(failures: usize) -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut calls = 0usize;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Headers, then Content-Length bytes of body.
            let body = loop {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break Some(buf[end + 4..end + 4 + length].to_vec());
                    }
                }
            };
            calls += 1;
            let ok = calls > failures;
            let status = if ok {
                "200 OK"
            } else {
                "500 Internal Server Error"
            };
            let _ = stream
                .write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
            if let (true, Some(body)) = (ok, body) {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or_default());
            }
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewers_are_notified_and_a_failing_webhook_is_retried() {
    let policies = policy_dir();
    let (json_url, mut json_calls) = webhook(2).await;
    let (slack_url, mut slack_calls) = webhook(0).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("json"), &json_url).unwrap();
    std::fs::write(dir.path().join("slack"), &slack_url).unwrap();
    let extra = format!(
        "[[approvals.notify]]\nurl = {{ file = \"{}\" }}\n\n[[approvals.notify]]\nurl = {{ file = \"{}\" }}\nformat = \"slack\"\n",
        dir.path().join("json").display(),
        dir.path().join("slack").display()
    );
    let gw = gateway("appr_notify", &policies, &extra).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let mut psql = Held::start(&gw, &alice, "delete from orders where id = 5");
    let id = psql.request_id().await;

    let slack = tokio::time::timeout(Duration::from_secs(10), slack_calls.recv())
        .await
        .unwrap()
        .unwrap();
    let text = slack["text"].as_str().unwrap();
    assert!(
        text.contains("alice@example.com") && text.contains(&format!("portcullis approve {id}")),
        "{text}"
    );
    // Two failures, then delivered (retries back off 1 s, then 2 s).
    let json = tokio::time::timeout(Duration::from_secs(15), json_calls.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(json["event"], "requested");
    assert_eq!(json["request"]["id"], id);
    assert_eq!(json["request"]["text"], "delete from orders where id = 5");

    let dba = gw.token("dba@example.com", &["eng", "dba"]);
    review_cli(&gw, &dba, &["deny", &id.to_string(), "--comment", "no"]);
    let (code, _, _) = psql.finish().await;
    assert_ne!(code, 0);
    let decided = tokio::time::timeout(Duration::from_secs(10), slack_calls.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        decided["text"].as_str().unwrap().contains("*denied*"),
        "{decided}"
    );
    gw.stop().await;
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A gateway with the console on a known port, reviewers logging in at
/// `provider`.
async fn console_gateway(
    db: &str,
    policies: &tempfile::TempDir,
    provider: &OidcProvider,
) -> (Gateway, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    // Finished recordings go to S3, so the console reads them from there.
    let (endpoint, bucket) = s3_bucket(db);
    let port = free_port();
    let console_url = format!("http://127.0.0.1:{port}");
    let extra = format!(
        r#"{console}
[recording]
viewers = ["dba"]

[recording.s3]
bucket = "{bucket}"
endpoint = "{endpoint}"
access_key_id = {{ file = "{secret}" }}
secret_access_key = {{ file = "{secret}" }}
"#,
        console = provider.console_config(&secret, &console_url),
        bucket = bucket,
        endpoint = endpoint,
        secret = secret.display(),
    );
    let gw = Gateway::start_with(
        TestDb::create(db, SEED).await,
        Options {
            policies: policies.path().to_path_buf(),
            extra,
            admin_listen: Some(format!("127.0.0.1:{port}")),
            ..Options::default()
        },
    )
    .await;
    (gw, console_url, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_wants_a_login_and_its_forms_want_their_csrf_token() {
    let provider = OidcProvider::start().await;
    let policies = policy_dir();
    // The quickstart's mask rules, which `pii-readers` may unmask.
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/quickstart/policies/masks.toml"
        ),
        policies.path().join("masks.toml"),
    )
    .unwrap();
    std::fs::write(
        policies.path().join("unmask.cedar"),
        "permit (principal in Group::\"pii-readers\", action == Action::\"unmask\", resource);\n",
    )
    .unwrap();
    let (gw, console_url, _secret) = console_gateway("appr_csrf", &policies, &provider).await;
    let base = url::Url::parse(&console_url).unwrap();
    let alice = gw.token("alice@example.com", &["eng"]);
    let mut psql = Held::start(
        &gw,
        &alice,
        "select 1 as \"<b>\"; delete from orders where id = 2",
    );
    let id = psql.request_id().await;
    let request_url = base.join(&format!("/requests/{id}")).unwrap();

    // Without a session: to the login, and a decision is not taken.
    let mut browser = Browser::new();
    let first = browser.get(&request_url).await;
    assert_eq!(first.status, 303);
    assert_eq!(first.location.as_ref().unwrap().path(), "/login");
    let forged = browser
        .post(
            &request_url,
            &[("csrf", "x"), ("decision", "approve"), ("comment", "hi")],
        )
        .await;
    assert_eq!(forged.status, 303, "{}", forged.body);

    // Every answer carries the console's headers, the framework's own
    // refusals and the assets too.
    for (path, status) in [
        ("/requests/abc", 400),
        ("/static/console.js", 200),
        ("/api/v1/requests", 401),
    ] {
        let answer = reqwest::get(base.join(path).unwrap()).await.unwrap();
        assert_eq!(answer.status().as_u16(), status, "{path}");
        let headers = answer.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
    }

    // The login cookie is HttpOnly and SameSite=Lax.
    let start_login = || {
        let url = base.join("/login").unwrap();
        async move {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
                .get(url)
                .send()
                .await
                .unwrap()
        }
    };
    let login = start_login().await;
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    // A login's answer is taken once: each costs the provider a signed
    // token request (found in attack: one cookie brought back again and
    // again), and an address brings back a few a minute at most.
    let answer = |login: &reqwest::Response, code: &str| {
        let cookie = login.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_string();
        let location = url::Url::parse(login.headers()["location"].to_str().unwrap()).unwrap();
        let state = location
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .to_string();
        let url = base
            .join(&format!("/auth/callback?state={state}&code={code}"))
            .unwrap();
        async move {
            let answer = reqwest::Client::new()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        }
    };
    let (status, body) = answer(&login, "made-up").await;
    assert_eq!(status, 400);
    assert!(body.contains("could not be completed"), "{body}");
    let (status, body) = answer(&login, "made-up-again").await;
    assert_eq!(status, 400);
    assert!(body.contains("answered already"), "{body}");

    // Logged in through the provider, back on the request's page.
    let page = browser.sign_in_from(first, "dba@example.com").await;
    assert_eq!(page.url.path(), format!("/requests/{id}"), "{}", page.body);
    assert!(
        page.body.contains("delete from orders where id = 2"),
        "{}",
        page.body
    );
    // What runs with it, once approved, is on the page too (escaped).
    assert!(
        page.body.contains(r#"<pre id="batch">select 1 as &quot;&lt;b&gt;&quot;; delete from orders where id = 2</pre>"#),
        "{}",
        page.body
    );
    let csrf = hidden_field(&page.body, "csrf");

    // A form without the session's CSRF token is refused.
    let forged = browser
        .post(
            &request_url,
            &[
                ("csrf", "forged"),
                ("decision", "approve"),
                ("comment", "hi"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(psql.still_waiting());

    // A decision without a comment is not taken, and says why.
    let silent = browser
        .post(
            &request_url,
            &[("csrf", &csrf), ("decision", "deny"), ("comment", "")],
        )
        .await;
    assert_eq!(silent.status, 422);
    assert!(silent.body.contains("needs a comment"), "{}", silent.body);
    // Nor with a comment too long to keep, list and send to webhooks.
    let long = "x".repeat(2001);
    let verbose = browser
        .post(
            &request_url,
            &[("csrf", &csrf), ("decision", "deny"), ("comment", &long)],
        )
        .await;
    assert_eq!(verbose.status, 422);
    assert!(
        verbose.body.contains("2001 characters long"),
        "{}",
        verbose.body
    );
    assert!(psql.still_waiting());

    let denied = browser
        .post(
            &request_url,
            &[
                ("csrf", &csrf),
                ("decision", "deny"),
                ("comment", "<b>no</b>"),
            ],
        )
        .await;
    assert_eq!(denied.status, 303);
    let (code, _, err) = psql.finish().await;
    assert_ne!(code, 0);
    assert!(err.contains("<b>no</b>"), "{err}");

    // The history shows it, escaped.
    let history = browser.get(&base.join("/history").unwrap()).await;
    assert!(
        history.body.contains(&format!("data-id=\"{id}\"")),
        "{}",
        history.body
    );
    let page = browser.get(&request_url).await;
    assert!(page.body.contains("&lt;b&gt;no&lt;/b&gt;") && !page.body.contains("<b>no</b>"));

    // The recorded session plays in the console, with the denial, from
    // the object store once it is uploaded.
    assert!(emptied(&gw.config.gateway.data_dir.join("recordings")).await);
    let sessions = browser.get(&base.join("/sessions").unwrap()).await;
    assert!(
        sessions.body.contains("in object storage"),
        "{}",
        sessions.body
    );
    assert_eq!(sessions.status, 200, "{}", sessions.body);
    let marker = r#"href="/sessions/"#;
    let start = sessions.body.find(marker).expect("a recorded session") + marker.len();
    let session_id = &sessions.body[start..start + sessions.body[start..].find('"').unwrap()];
    let replay = browser
        .get(&base.join(&format!("/sessions/{session_id}")).unwrap())
        .await;
    assert!(
        replay.body.contains("delete from orders where id = 2"),
        "{}",
        replay.body
    );
    assert!(
        replay.body.contains("denied by reviewer"),
        "{}",
        replay.body
    );
    assert!(
        replay.body.contains("The session has ended."),
        "{}",
        replay.body
    );
    assert!(!replay.body.contains("results withheld"), "{}", replay.body);

    // A session of someone who may unmask is recorded in clear: a viewer
    // whom the policy does not let unmask sees its statements, not its
    // results (found in attack).
    let dana = gw.token("dana@example.com", &["eng", "pii-readers"]);
    let out = gw.psql(
        &dana,
        &["-At", "-c", "select email from customers where id = 1"],
    );
    assert_eq!(stdout(&out).trim(), "jane@example.com", "{}", stderr(&out));
    let end = gw
        .audit_entry_within(200, |e| {
            e["event"] == "session.end" && e["principal"] == "dana@example.com"
        })
        .await;
    let dana_session = end["session"].as_str().unwrap().to_string();
    assert!(emptied(&gw.config.gateway.data_dir.join("recordings")).await);
    let page = browser
        .get(&base.join(&format!("/sessions/{dana_session}")).unwrap())
        .await;
    assert!(
        page.body
            .contains("select email from customers where id = 1")
            && page.body.contains("results withheld")
            && page.body.contains("customer-email"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("jane@example.com"), "{}", page.body);

    // The provider's refusal is shown only for a login this browser
    // started: another site's link cannot put its words on the console.
    let spoofed = browser
        .get(
            &base
                .join("/auth/callback?error=Call+the+help+desk&error_description=at+evil.example")
                .unwrap(),
        )
        .await;
    assert_eq!(spoofed.status, 400);
    assert!(!spoofed.body.contains("evil.example"), "{}", spoofed.body);
    assert!(
        spoofed.body.contains("not started here"),
        "{}",
        spoofed.body
    );

    // A logout without the session's token changes nothing; with it, the
    // session is gone on the gateway's side too.
    let logout = base.join("/logout").unwrap();
    let stale = browser.post(&logout, &[("csrf", "forged")]).await;
    assert_eq!(stale.status, 403, "{}", stale.body);
    assert_eq!(
        browser.get(&base.join("/history").unwrap()).await.status,
        200
    );
    let mut copied = browser.clone();
    let out = browser.post(&logout, &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303, "{}", out.body);
    let after = copied.get(&base.join("/history").unwrap()).await;
    assert_eq!(after.status, 303, "{}", after.body);
    let mut limited = false;
    for _ in 0..25 {
        let login = start_login().await;
        let (status, _) = answer(&login, "made-up").await;
        limited |= status == 429;
    }
    assert!(limited);
    drop(provider);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_approves_in_the_web_console_in_a_real_browser() {
    let provider = OidcProvider::start().await;
    let policies = policy_dir();
    let (gw, console_url, _secret) = console_gateway("appr_console", &policies, &provider).await;
    let before = count(&gw, "select count(*) from orders").await;

    // The reviewer logs in first and watches the inbox.
    let mut browser = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/console/approve.mjs"))
        .args([
            &console_url,
            "dba@example.com",
            "approve",
            "checked: <one> old order",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut out = BufReader::new(browser.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), out.next_line()).await;
    if !matches!(ready, Ok(Ok(Some(ref l))) if l == "ready") {
        let output = browser.wait_with_output().await.unwrap();
        panic!(
            "the browser did not log in: {ready:?} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // Then a statement is held; the inbox shows it without a reload. Its
    // right-to-left letters are drawn as stored, and its reason's long word
    // within the page (approve.mjs checks).
    let alice = gw.token("alice@example.com", &["eng"]);
    let reason = format!("set portcullis.reason = 'INC-{}'", "x".repeat(400));
    let statement = "delete from orders where id = 1 /* \"א --\", ב */";
    let mut psql = Held::start_all(&gw, &alice, &[&reason, statement]);
    let id = psql.request_id().await;
    let decided = tokio::time::timeout(Duration::from_secs(60), out.next_line()).await;
    let line = match decided {
        Ok(Ok(Some(line))) => line,
        other => {
            let output = browser.wait_with_output().await.unwrap();
            panic!(
                "the browser did not decide: {other:?} {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    };
    assert_eq!(line, format!("decided {id} approved"));
    let (code, stdout_text, err) = psql.finish().await;
    assert_eq!(code, 0, "{err}");
    assert!(stdout_text.contains("DELETE 1"));
    assert_eq!(count(&gw, "select count(*) from orders").await, before - 1);

    // The review carries the reviewer from the provider's token.
    let dba = gw.token("dba@example.com", &["eng", "dba"]);
    let history = review_cli(&gw, &dba, &["requests", "--decided"]);
    assert!(
        stdout(&history).contains("approved"),
        "{}",
        stdout(&history)
    );
    let events = audit_events(&gw, id).await;
    assert!(
        events.contains(&"approval.executed".to_string()),
        "{events:?}"
    );
    drop(provider);
    gw.stop().await;
}

/// A gateway with the quickstart's policies as shipped, and tokens for
/// alice (eng) and dana (a DBA who sees personal data).
async fn quickstart_gateway(db: &str) -> (Gateway, String, String) {
    let db = TestDb::create(db, SEED).await;
    let gw = Gateway::start_with(
        db,
        Options {
            policies: quickstart_policies_as_shipped(),
            ..Options::default()
        },
    )
    .await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let dana = gw.token("dana@example.com", &["eng", "dba", "pii-readers"]);
    (gw, alice, dana)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_holds_unbounded_writes_and_engineers_ddl_for_a_dba() {
    let (gw, alice, dana) = quickstart_gateway("appr_quickstart").await;

    let mut psql = Held::start(&gw, &alice, "delete from orders");
    let id = psql.request_id().await;
    let approved = review_cli(
        &gw,
        &dana,
        &["approve", &id.to_string(), "--comment", "test data"],
    );
    assert!(approved.status.success(), "{}", stderr(&approved));
    let (code, out, err) = psql.finish().await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("DELETE 4"), "{out}");

    let mut psql = Held::start(&gw, &alice, "alter table orders add column note text");
    let id = psql.request_id().await;
    review_cli(
        &gw,
        &dana,
        &["deny", &id.to_string(), "--comment", "not today"],
    );
    let (code, _, err) = psql.finish().await;
    assert_ne!(code, 0);
    assert!(err.contains("not today"), "{err}");

    // Guardrails that are not approvable still refuse at once.
    let out = gw.psql(&alice, &["-c", "drop database postgres"]);
    assert!(
        stderr(&out).contains("no-drop-database"),
        "{}",
        stderr(&out)
    );
    gw.stop().await;
}

/// The first request pending for `reviewer` other than `seen`, waiting up
/// to 10 s for one; `Null` if none came.
async fn pending_request(gw: &Gateway, reviewer: &str, seen: &[i64]) -> serde_json::Value {
    let url = format!("http://{}/api/v1/requests", gw.admin_addr);
    for _ in 0..40 {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-H",
                &format!("Authorization: Bearer {reviewer}"),
                &url,
            ])
            .output()
            .unwrap();
        let pending: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let new = pending["requests"].as_array().and_then(|requests| {
            requests
                .iter()
                .find(|r| !r["id"].as_i64().is_some_and(|id| seen.contains(&id)))
                .cloned()
        });
        if let Some(request) = new {
            return request;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    serde_json::Value::Null
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_protocol_execute_is_held_with_its_parameters() {
    let policies = policy_dir();
    let gw = gateway("appr_extended", &policies, "").await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let dba = gw.token("dba@example.com", &["eng", "dba"]);
    let client = gw.connect(&alice).await.unwrap();
    let task = tokio::spawn(async move {
        // Prepared first (Parse, Describe, Sync), which goes ahead; then
        // Bind, Execute, Sync, whose Execute waits with its parameters.
        let deleted = client
            .execute(
                "delete from orders where id = $1 and total_cents > $2",
                &[&2i32, &0i32],
            )
            .await?;
        // Parse, Bind, Describe, Execute, Sync sent at once: the Parse
        // takes the Execute's decision, and goes with it once approved.
        let returned = client
            .query_typed(
                "delete from orders where id = $1 returning id",
                &[(&3i32, tokio_postgres::types::Type::INT4)],
            )
            .await?;
        Ok::<_, tokio_postgres::Error>((deleted, returned.len()))
    });
    let request = pending_request(&gw, &dba, &[]).await;
    if request.is_null() {
        panic!("nothing held: {:?}", task.await);
    }
    assert_eq!(
        request["text"],
        "delete from orders where id = $1 and total_cents > $2"
    );
    // Binary-format parameters, as tokio-postgres sends them.
    assert_eq!(
        request["parameters"],
        serde_json::json!(["\\x00000002", "\\x00000000"]),
        "{request}"
    );
    // Without a token, the API says how to authenticate.
    let url = format!("http://{}/api/v1/requests", gw.admin_addr);
    let anonymous = Command::new("curl").args(["-sS", &url]).output().unwrap();
    assert!(
        stdout(&anonymous).contains("Authorization: Bearer"),
        "{}",
        stdout(&anonymous)
    );

    let id = request["id"].as_i64().unwrap();
    let ok = review_cli(
        &gw,
        &dba,
        &["approve", &id.to_string(), "--comment", "one row"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let second = pending_request(&gw, &dba, &[id]).await;
    if second.is_null() {
        panic!("the second delete was not held: {:?}", task.await);
    }
    assert_eq!(
        second["text"],
        "delete from orders where id = $1 returning id"
    );
    assert_eq!(second["parameters"], serde_json::json!(["\\x00000003"]));
    let second_id = second["id"].as_i64().unwrap();
    assert_eq!(
        count(&gw, "select count(*) from orders where id = 3").await,
        1
    );
    let ok = review_cli(
        &gw,
        &dba,
        &["approve", &second_id.to_string(), "--comment", "one row"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let done = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(done, (1, 1));
    // A statement prepared and run in one pipeline is one statement to
    // the reviewer: no `batch`.
    assert!(
        request["batch"].is_null() && second["batch"].is_null(),
        "{second}"
    );

    // A pipeline whose other statements run once the held one is
    // approved: the reviewer is shown them too.
    let mut pipeline = RawClient::connect(&gw, &alice).await;
    pipeline
        .send(&[
            raw::parse("", "delete from orders where id = 4"),
            raw::bind("", "", 0),
            raw::execute(""),
            raw::parse("", "select 42"),
            raw::bind("", "", 0),
            raw::execute(""),
            raw::sync(),
        ])
        .await;
    let third = pending_request(&gw, &dba, &[id, second_id]).await;
    assert_eq!(
        third["batch"], "delete from orders where id = 4;\nselect 42",
        "{third}"
    );
    drop(pipeline);
    gw.stop().await;
}

/// Found in attack: a Bind the target refused (a portal that exists, in a
/// transaction kept by a savepoint) changed the values the reviewer was
/// shown, while the portal ran with those bound before. And a FETCH of a
/// bound portal, which runs its statement with its values, showed none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_sees_the_values_a_portal_runs_with() {
    let policies = policy_dir();
    let gw = gateway("appr_rebind", &policies, "").await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let dba = gw.token("dba@example.com", &["eng", "dba"]);
    let mut raw = RawClient::connect(&gw, &alice).await;
    for messages in [
        vec![raw::query("begin")],
        vec![
            raw::parse("s1", "delete from orders where id = $1"),
            raw::bind_text("p1", "s1", &["2"]),
            raw::sync(),
        ],
        vec![raw::query("savepoint sp")],
    ] {
        raw.send(&messages).await;
        let answer = raw_text(&raw.until_ready().await);
        assert!(!answer.contains("E:"), "{answer}");
    }
    raw.send(&[raw::bind_text("p1", "s1", &["3"]), raw::sync()])
        .await;
    let refused = raw_text(&raw.until_ready().await);
    assert!(refused.contains("already exists"), "{refused}");
    raw.send(&[raw::query("rollback to sp")]).await;
    raw.until_ready().await;
    raw.send(&[raw::execute("p1"), raw::sync()]).await;
    let request = pending_request(&gw, &dba, &[]).await;
    assert_eq!(request["parameters"], serde_json::json!(["2"]), "{request}");
    let id = request["id"].as_i64().unwrap();
    let ok = review_cli(
        &gw,
        &dba,
        &["approve", &id.to_string(), "--comment", "order 2"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let ran = raw_text(&raw.until_ready().await);
    assert!(ran.contains("DELETE 1"), "{ran}");
    raw.send(&[raw::query("commit")]).await;
    raw.until_ready().await;
    assert_eq!(
        count(&gw, "select count(*) from orders where id = 2").await,
        0
    );

    // The values a FETCH of a bound portal runs with.
    raw.send(&[raw::query("begin")]).await;
    raw.until_ready().await;
    raw.send(&[
        raw::parse("s2", "delete from orders where id = $1 returning id"),
        raw::bind_text("p2", "s2", &["3"]),
        raw::sync(),
    ])
    .await;
    raw.until_ready().await;
    raw.send(&[raw::query("fetch all from p2")]).await;
    let fetch = pending_request(&gw, &dba, &[id]).await;
    assert_eq!(fetch["parameters"], serde_json::json!(["3"]), "{fetch}");
    let fetch_id = fetch["id"].as_i64().unwrap();
    let ok = review_cli(
        &gw,
        &dba,
        &["deny", &fetch_id.to_string(), "--comment", "no"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    raw.until_ready().await;
    raw.send(&[raw::query("commit")]).await;
    raw.until_ready().await;
    assert_eq!(
        count(&gw, "select count(*) from orders where id = 2").await,
        0
    );
    assert_eq!(
        count(&gw, "select count(*) from orders where id = 3").await,
        1
    );

    // Found in attack: the values of a FETCHed portal were shown for the
    // other statements of its query. Values that cannot be told apart are
    // not shown, and a held statement then does not run.
    for messages in [
        vec![raw::query("begin")],
        vec![raw::query(
            "prepare s3(int) as delete from orders where id = $1",
        )],
        vec![
            raw::parse("s4", "select $1::int"),
            raw::bind_text("p4", "s4", &["4500"]),
            raw::sync(),
        ],
    ] {
        raw.send(&messages).await;
        let answer = raw_text(&raw.until_ready().await);
        assert!(!answer.contains("E:"), "{answer}");
    }
    raw.send(&[raw::query("execute s3(3); fetch all from p4")])
        .await;
    let refused = raw_text(&raw.until_ready().await);
    assert!(refused.contains("cannot all be shown"), "{refused}");
    assert_eq!(
        count(&gw, "select count(*) from orders where id = 3").await,
        1
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_approval_store_a_held_statement_is_refused_not_run() {
    let policies = policy_dir();
    let gw = gateway("appr_nostore", &policies, "").await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let before = count(&gw, "select count(*) from orders").await;
    // The store breaks under the running gateway.
    let store =
        rusqlite::Connection::open(gw.config.gateway.data_dir.join("approvals.db")).unwrap();
    store.execute_batch("drop table requests").unwrap();
    drop(store);
    let out = gw.psql(&alice, &["-c", "delete from orders where id = 1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the approval workflow is unavailable"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("nothing was run"), "{}", stderr(&out));
    assert_eq!(count(&gw, "select count(*) from orders").await, before);
    // Statements that need no approval still run.
    let ok = gw.psql(&alice, &["-c", "select 1"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    gw.stop().await;
}

/// A portal bound through the protocol from a held statement runs only as
/// an Execute that waits for a reviewer: not through SQL's FETCH (which runs
/// a `DELETE ... RETURNING` portal as it fetches), and not behind a close
/// that the target skips (an error earlier in its Query) while a savepoint's
/// rollback keeps the portal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_portal_of_a_held_statement_runs_only_as_a_held_execute() {
    let (gw, alice, dana) = quickstart_gateway("appr_portals").await;
    let rows = count(&gw, "select count(*) from orders").await;
    assert!(rows > 0);
    let mut fetching = RawClient::connect(&gw, &alice).await;
    fetching.send(&[raw::query("begin")]).await;
    fetching.until_ready().await;
    fetching
        .send(&[
            raw::parse("s1", "delete from orders returning id"),
            raw::bind("p1", "s1", 0),
            raw::sync(),
        ])
        .await;
    let prepared = fetching.until_ready().await;
    assert!(
        !raw_text(&prepared).contains("E:"),
        "{}",
        raw_text(&prepared)
    );
    fetching.send(&[raw::query("fetch all from p1")]).await;
    let request = pending_request(&gw, &dana, &[]).await;
    assert!(!request.is_null(), "the FETCH ran without being held");
    assert!(
        request["text"]
            .as_str()
            .is_some_and(|t| t.contains("fetch all from p1")),
        "{request}"
    );
    drop(fetching);
    assert_eq!(count(&gw, "select count(*) from orders").await, rows);

    let mut closing = RawClient::connect(&gw, &alice).await;
    for setup in [
        vec![raw::query("begin")],
        vec![
            raw::parse("s1", "delete from orders returning id"),
            raw::bind("p1", "s1", 0),
            raw::sync(),
        ],
        vec![raw::query("savepoint a")],
    ] {
        closing.send(&setup).await;
        closing.until_ready().await;
    }
    closing
        .send(&[
            raw::query("select 1/0; close p1"),
            raw::query("rollback to savepoint a"),
            raw::execute("p1"),
            raw::sync(),
        ])
        .await;
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.extend(closing.until_ready().await);
    }
    assert!(
        raw_text(&answers).contains("ROLLBACK"),
        "{}",
        raw_text(&answers)
    );
    // Planned while the close was on its way, the Execute is refused; had
    // the gateway seen the close skipped first, it would be held instead.
    match tokio::time::timeout(Duration::from_secs(5), closing.until_ready()).await {
        Ok(answer) => {
            let text = raw_text(&answer);
            assert!(text.contains("is being closed"), "{text}");
            assert!(!text.contains("DELETE"), "{text}");
        }
        Err(_) => {
            let first = request["id"].as_i64().unwrap();
            let held = pending_request(&gw, &dana, &[first]).await;
            assert!(!held.is_null(), "the Execute neither refused nor held");
        }
    }
    drop(closing);

    // A statement prepared with SQL PREPARE runs, through a protocol Bind
    // and Execute, as what it prepared: held.
    let mut prepared = RawClient::connect(&gw, &alice).await;
    prepared
        .send(&[raw::query("prepare s5 as delete from orders")])
        .await;
    prepared.until_ready().await;
    prepared
        .send(&[raw::bind("p5", "s5", 0), raw::execute("p5"), raw::sync()])
        .await;
    let seen = [request["id"].as_i64().unwrap()];
    let held = pending_request(&gw, &dana, &seen).await;
    assert!(
        !held.is_null(),
        "the Execute of a PREPAREd delete was not held"
    );
    drop(prepared);
    assert_eq!(count(&gw, "select count(*) from orders").await, rows);

    // A Parse of a name that exists fails; past its Sync, a Bind of that
    // name would run the old statement, not the decoy the gateway saw.
    let mut redefining = RawClient::connect(&gw, &alice).await;
    redefining
        .send(&[raw::parse("s6", "delete from orders"), raw::sync()])
        .await;
    redefining.until_ready().await;
    redefining
        .send(&[
            raw::parse("s6", "select 1"),
            raw::sync(),
            raw::bind("p6", "s6", 0),
            raw::execute("p6"),
            raw::sync(),
        ])
        .await;
    let mut answers = redefining.until_ready().await;
    answers.extend(redefining.until_ready().await);
    let text = raw_text(&answers);
    assert!(text.contains("is being redefined"), "{text}");
    assert!(!text.contains("DELETE"), "{text}");
    drop(redefining);
    assert_eq!(count(&gw, "select count(*) from orders").await, rows);
    gw.stop().await;
}

/// A name runs what it names now: a decision made while `q` was a select
/// (cached, for any later session of the same person) does not let `q` run
/// unheld once it names a delete, through EXECUTE or through a FETCH of a
/// portal bound again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_ran_a_select_is_held_once_it_names_a_delete() {
    let (gw, alice, dana) = quickstart_gateway("appr_renamed").await;
    let rows = count(&gw, "select count(*) from orders").await;
    assert!(rows > 0);
    let warm = gw.psql(&alice, &["-c", "prepare q as select 1", "-c", "execute q"]);
    assert!(warm.status.success(), "{}", stderr(&warm));
    let mut psql = Held::start_all(
        &gw,
        &alice,
        &["prepare q as delete from orders", "execute q"],
    );
    let first = psql.request_id().await;
    assert!(psql.still_waiting());
    drop(psql);
    assert_eq!(count(&gw, "select count(*) from orders").await, rows);

    let mut fetching = RawClient::connect(&gw, &alice).await;
    for messages in [
        vec![raw::query("begin")],
        vec![
            raw::parse("s1", "select id from orders"),
            raw::bind("p1", "s1", 0),
            raw::sync(),
        ],
        vec![raw::query("fetch 1 from p1")],
        vec![
            raw::close(b'P', "p1"),
            raw::parse("s2", "delete from orders returning id"),
            raw::bind("p1", "s2", 0),
            raw::sync(),
        ],
    ] {
        fetching.send(&messages).await;
        let answer = fetching.until_ready().await;
        assert!(!raw_text(&answer).contains("E:"), "{}", raw_text(&answer));
    }
    fetching.send(&[raw::query("fetch 1 from p1")]).await;
    let held = pending_request(&gw, &dana, &[first]).await;
    assert!(
        !held.is_null(),
        "the FETCH of a portal bound again ran unheld"
    );
    drop(fetching);
    assert_eq!(count(&gw, "select count(*) from orders").await, rows);
    gw.stop().await;
}

/// PostgreSQL keys portals and prepared statements by their first 63 bytes:
/// an Execute of a longer name runs the portal of its first 63, which the
/// gateway would not find under the name it was sent. And `cursor_to_xml`
/// fetches from a portal as FETCH does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_statement_does_not_run_through_a_long_name_or_cursor_to_xml() {
    let (gw, alice, dana) = quickstart_gateway("appr_long_names").await;
    let rows = count(&gw, "select count(*) from orders").await;
    assert!(rows > 0);
    let name = "p".repeat(63);
    let longer = format!("{name}Z");
    let mut client = RawClient::connect(&gw, &alice).await;
    client
        .send(&[
            raw::parse("", "delete from orders"),
            raw::bind(&name, "", 0),
            raw::describe(b'P', &longer),
            raw::execute(&longer),
            raw::sync(),
        ])
        .await;
    let text = raw_text(&client.until_ready().await);
    assert!(text.contains("longer than 63 bytes"), "{text}");
    assert!(!text.contains("DELETE"), "{text}");
    client.send(&[raw::close(b'P', &longer), raw::sync()]).await;
    let text = raw_text(&client.until_ready().await);
    assert!(text.contains("longer than 63 bytes"), "{text}");
    drop(client);

    let mut dba = RawClient::connect(&gw, &dana).await;
    dba.send(&[raw::query("begin")]).await;
    dba.until_ready().await;
    dba.send(&[
        raw::parse("s1", "delete from orders returning id"),
        raw::bind("p1", "s1", 0),
        raw::sync(),
    ])
    .await;
    dba.until_ready().await;
    dba.send(&[raw::query(
        "select cursor_to_xml('p1', 10, false, false, '')",
    )])
    .await;
    let text = raw_text(&dba.until_ready().await);
    assert!(text.contains("runs a portal given by name"), "{text}");
    drop(dba);
    assert_eq!(count(&gw, "select count(*) from orders").await, rows);
    gw.stop().await;
}

/// PostgreSQL ignores a Sync sent during COPY FROM STDIN. Had the gateway
/// waited for its ReadyForQuery, it would fall one answer behind, and a
/// later error would make it take back a Close and a Parse the target ran:
/// a name it believes is `select 1` would run a held delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_during_copy_in_does_not_put_the_gateway_out_of_step() {
    let (gw, alice, dana) = quickstart_gateway("appr_copy_step").await;
    let rows = count(&gw, "select count(*) from orders").await;
    assert!(rows > 0);
    let mut client = RawClient::connect(&gw, &alice).await;
    for (step, expected) in [
        (vec![raw::parse("s1", "select 1"), raw::sync()], "1:"),
        (
            vec![
                raw::query("copy orders from stdin"),
                raw::sync(),
                raw::copy_done(),
            ],
            "COPY 0",
        ),
        (
            vec![
                raw::close(b'S', "s1"),
                raw::parse("s1", "delete from orders"),
                raw::sync(),
            ],
            "3:",
        ),
        (
            vec![raw::describe(b'S', "no_such_statement"), raw::sync()],
            "does not exist",
        ),
    ] {
        client.send(&step).await;
        let text = raw_text(&client.until_ready().await);
        assert!(text.contains(expected), "{text}");
    }
    client
        .send(&[raw::bind("p1", "s1", 0), raw::execute("p1"), raw::sync()])
        .await;
    if let Ok(answer) = tokio::time::timeout(Duration::from_secs(3), client.until_ready()).await {
        let text = raw_text(&answer);
        assert!(!text.contains("DELETE"), "the delete ran unheld: {text}");
    }
    let held = pending_request(&gw, &dana, &[]).await;
    assert!(
        held["text"]
            .as_str()
            .is_some_and(|t| t.contains("delete from orders")),
        "the delete was not held: {held}"
    );
    drop(client);
    assert_eq!(count(&gw, "select count(*) from orders").await, rows);
    gw.stop().await;
}
