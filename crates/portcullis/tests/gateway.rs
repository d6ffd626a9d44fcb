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
    let err = serve_refusal(&config_path);
    assert!(err.contains("broken.cedar:2:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_reports_health_readiness_and_policy_version() {
    let gw = Gateway::start(TestDb::create("e2e_admin", "").await).await;
    // The data directory it made (audit log, recordings, keys) is its own.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&gw.config.gateway.data_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
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
    // The quickstart's SSH rules name a target this gateway does not have.
    assert!(
        status.contains("names target `demo-ssh`, which is not configured"),
        "{status}"
    );
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    client.batch_execute("select 1").await.unwrap();
    let metrics = get("/metrics");
    assert!(metrics.ends_with("200"), "{metrics}");
    assert!(metrics.contains("portcullis_policy_drift 0"), "{metrics}");
    assert!(
        metrics.contains("portcullis_policy_info{version=\"sha256:"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_decisions_total{effect=\"allow\",target=\"demo\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_sessions_active{protocol=\"postgres\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("portcullis_audit_entries "), "{metrics}");
    // The version it started with is in the audit log.
    let tail = stdout(&gw.cli(&["audit", "tail", "-n", "50", "--json"]));
    let version = status
        .split("\"policy_version\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    assert!(
        tail.lines().any(|line| line.contains("\"policy.loaded\"")
            && line.contains("\"previous\":\"\"")
            && line.contains(version)),
        "{tail}"
    );
    // So are its files, wherever they are copied with their modes: the
    // databases and what SQLite makes beside them, and each recording.
    let data = &gw.config.gateway.data_dir;
    let mode = |path: std::path::PathBuf| {
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    for file in ["audit.db", "audit.db-wal", "approvals.db", "state.db"] {
        assert_eq!(mode(data.join(file)), 0o600, "{file}");
    }
    let recordings: Vec<_> = std::fs::read_dir(data.join("recordings"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    assert!(!recordings.is_empty());
    for recording in recordings {
        assert_eq!(mode(recording.clone()), 0o700, "{}", recording.display());
    }
    gw.stop().await;
}

/// Found in attack: idle connections to the admin listener held the
/// process's file descriptors until PostgreSQL and SSH users could not
/// connect. Now one address holds at most 64, and a slow head or an idle
/// connection is closed after 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_bounds_idle_connections_and_closes_slow_ones() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};
    let gw = Gateway::start(TestDb::create("e2e_admin_idle", "").await).await;
    let half_sent = || async {
        let mut stream = TcpStream::connect(gw.admin_addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        stream
    };
    // Waits for the gateway to close `stream`: true if it did within `secs`.
    async fn closed(stream: &mut TcpStream, secs: u64) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }
    // A body that never comes (attack round 30): the request is answered
    // 408 and its connection closed after 30 s.
    let mut stalled = TcpStream::connect(gw.admin_addr).await.unwrap();
    stalled
        .write_all(b"POST /api/v1/requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let stalled_at = tokio::time::Instant::now();
    let mut idle = Vec::new();
    for _ in 0..63 {
        idle.push(half_sent().await);
    }
    let mut one_more = half_sent().await;
    assert!(
        closed(&mut one_more, 5).await,
        "the 65th connection is closed at once"
    );

    // Another address is served, and so are PostgreSQL users.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(gw.admin_addr).await.unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    client.batch_execute("select 1").await.unwrap();

    // A head that does not arrive in 10 s ends its connection, and the
    // address may connect again.
    let started = tokio::time::Instant::now();
    assert!(closed(&mut idle[0], 20).await, "a slow head is cut off");
    assert!(started.elapsed() >= std::time::Duration::from_secs(5));
    for stream in &mut idle[1..] {
        assert!(closed(stream, 5).await);
    }
    let mut again = TcpStream::connect(gw.admin_addr).await.unwrap();
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = again.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Kept alive and idle, it is closed too.
    assert!(
        closed(&mut again, 20).await,
        "an idle kept-alive connection is closed"
    );
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(40),
        stalled.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "a stalled body holds its connection");
    assert!(stalled_at.elapsed() >= std::time::Duration::from_secs(25));
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
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

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_are_followed_an_invalid_one_never_replaces_a_valid_one_and_revoked_sessions_end(
) {
    let policy_dir = tempfile::tempdir().unwrap();
    let policies = policy_dir.path().join("policies");
    copy_dir(&quickstart_policies(), &policies);
    let gw = Gateway::start_with(
        TestDb::create("e2e_reload", SEED).await,
        Options {
            policies: policies.clone(),
            extra: String::new(),
            ..Options::default()
        },
    )
    .await;
    // The test config reloads every second.
    let first = gw.status().await["policy_version"]
        .as_str()
        .unwrap()
        .to_string();
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    assert_eq!(scalar_i64(&client, "select count(*) from orders").await, 4);

    // An invalid version: refused, reported, and the valid one stays.
    std::fs::write(
        policies.join("broken.cedar"),
        "permit (principal, action, resource) when { nope };",
    )
    .unwrap();
    let s = gw
        .wait_for("the reload error", |s| s["policy_error"].is_string())
        .await;
    assert!(
        s["policy_error"]
            .as_str()
            .unwrap()
            .contains("broken.cedar:1:"),
        "{s}"
    );
    assert_eq!(s["policy_version"], first.as_str());
    let validate = policy_validate(&policies);
    assert!(!validate.status.success());
    assert!(
        stderr(&validate).starts_with(&format!("{}:1:", policies.join("broken.cedar").display())),
        "{}",
        stderr(&validate)
    );
    assert_eq!(scalar_i64(&client, "select count(*) from orders").await, 4);

    // A valid version that takes `connect` away from eng: alice's live
    // session is ended with a message that says why, and she cannot return.
    std::fs::remove_file(policies.join("broken.cedar")).unwrap();
    std::fs::write(
        policies.join("access.cedar"),
        "@id(\"dba-connect\")\npermit (principal in Group::\"dba\", action == Action::\"connect\", resource == Target::\"demo\");\n",
    )
    .unwrap();
    let validate = policy_validate(&policies);
    assert!(validate.status.success(), "{}", stderr(&validate));
    let s = gw
        .wait_for("the new version", |s| s["policy_version"] != first.as_str())
        .await;
    assert!(s["policy_error"].is_null(), "{s}");
    let mut ended = false;
    for _ in 0..20 {
        if client.is_closed() {
            ended = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ended, "the revoked session is still open");
    let err = gw.connect(&alice).await.err().unwrap();
    assert_eq!(sqlstate(&err), "28000");
    let tail = gw.cli(&["audit", "tail", "-n", "10", "--json"]);
    let text = stdout(&tail);
    assert!(text.contains("\"policy.loaded\""), "{text}");
    assert!(text.contains("\"session.recheck\""), "{text}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rego_engine_enforces_the_quickstart_policies() {
    let rego =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/rego");
    // The Rego example masks what the Cedar one does: a copy (a policy
    // directory's links may not lead out of it), kept the same.
    assert_eq!(
        std::fs::read_to_string(rego.join("masks.toml")).unwrap(),
        std::fs::read_to_string(rego.join("../policies/masks.toml")).unwrap(),
        "examples/quickstart/rego/masks.toml differs from policies/masks.toml"
    );
    let gw = Gateway::start_with(
        TestDb::create("e2e_rego", SEED).await,
        Options {
            policy_source: Some(format!("engine = \"rego\"\ndir = \"{}\"", rego.display())),
            // Held statements give up at once: nobody reviews here.
            extra: "[approvals]\nexpiry = \"1s\"\n".into(),
            ..Options::default()
        },
    )
    .await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    assert_eq!(scalar_i64(&client, "select count(*) from orders").await, 4);
    let err = client
        .batch_execute("with d as (delete from orders returning *) select 1")
        .await
        .unwrap_err();
    // Held for a DBA (the `approvals` object), then expired.
    assert_eq!(sqlstate(&err), "42501");
    assert!(db_message(&err).contains("expired"), "{}", db_message(&err));
    let err = client
        .batch_execute("create table t (x int)")
        .await
        .unwrap_err();
    assert!(db_message(&err).contains("expired"), "{}", db_message(&err));
    assert_eq!(scalar_i64(&client, "select count(*) from orders").await, 4);
    let err = client
        .batch_execute("drop database postgres")
        .await
        .unwrap_err();
    assert!(
        db_message(&err).contains("no-drop-database"),
        "{}",
        db_message(&err)
    );
    let mallory = gw.token("mallory@example.com", &["sales"]);
    assert_eq!(
        sqlstate(&gw.connect(&mallory).await.err().unwrap()),
        "28000"
    );
    gw.stop().await;
}

/// With `require_cases`, a version whose own test cases fail is refused
/// like an invalid one: the last one stays enforced, and the error names
/// the case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_cases_fail_is_refused_when_cases_are_required() {
    let policy_dir = tempfile::tempdir().unwrap();
    let policies = policy_dir.path().join("policies");
    copy_dir(&quickstart_policies_as_shipped(), &policies);
    // The cases describe `demo` as the test gateway has it.
    let cases = policies.join("quickstart.cases.toml");
    let as_shipped = std::fs::read_to_string(&cases).unwrap();
    let dev = "target = { name = \"demo\", kind = \"postgres\", labels = { env = \"dev\" } }";
    assert!(as_shipped.contains(dev), "the quickstart's cases changed");
    std::fs::write(&cases, as_shipped.replace(dev, &dev.replace("dev", "test"))).unwrap();
    let gw = Gateway::start_with(
        TestDb::create("e2e_required_cases", SEED).await,
        Options {
            policy_source: Some(format!(
                "dir = \"{}\"\nrequire_cases = true",
                policies.display()
            )),
            ..Options::default()
        },
    )
    .await;
    let first = gw.status().await["policy_version"]
        .as_str()
        .unwrap()
        .to_string();
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    // A rule that takes customers away from engineers, whose cases say
    // they read them.
    std::fs::write(
        policies.join("support.cedar"),
        "@id(\"support-only\")\nforbid (principal in Group::\"eng\", action == Action::\"query\", resource)\n\
         when { context.statement.tables.contains(\"customers\") };\n",
    )
    .unwrap();
    let s = gw
        .wait_for_refusal(
            "case `engineers read` fails: expected `allow`, got `deny`",
            &first,
        )
        .await;
    assert!(
        s["policy_error"]
            .as_str()
            .unwrap()
            .contains("quickstart.cases.toml:"),
        "{s}"
    );
    assert_eq!(
        scalar_i64(&client, "select count(*) from customers").await,
        3
    );
    // The cases updated with the rule (the case file alone changes): enforced.
    let text = std::fs::read_to_string(&cases).unwrap();
    let case = "name = \"engineers read\"\nprincipal = { id = \"alice@example.com\", groups = [\"eng\"] }\naction = \"query\"\nstatement = \"select name, email from customers limit 1\"\nexpect = \"allow\"\npolicy = \"eng-read-write\"";
    assert!(text.contains(case), "the quickstart's case changed");
    std::fs::write(
        &cases,
        text.replace(
            case,
            &case
                .replace("expect = \"allow\"", "expect = \"deny\"")
                .replace("eng-read-write", "support-only"),
        ),
    )
    .unwrap();
    let s = gw
        .wait_for("the version with its cases", |s| {
            s["policy_version"] != first.as_str()
        })
        .await;
    assert!(s["policy_error"].is_null(), "{s}");
    let err = client
        .batch_execute("select count(*) from customers")
        .await
        .unwrap_err();
    assert!(
        db_message(&err).contains("support-only"),
        "{}",
        db_message(&err)
    );
    let tested = s["policy_version"].as_str().unwrap().to_string();
    // Cases that describe `demo` otherwise than the gateway has it test
    // nothing enforced here (found in attack).
    let text = std::fs::read_to_string(&cases).unwrap();
    std::fs::write(&cases, text.replace(&dev.replace("dev", "test"), dev)).unwrap();
    gw.wait_for_refusal("does not test what is enforced", &tested)
        .await;
    // Case files emptied: no version is tested by them, and none enforced.
    std::fs::remove_file(policies.join("support.cedar")).unwrap();
    for file in ["quickstart.cases.toml", "ssh.cases.toml"] {
        std::fs::write(policies.join(file), "").unwrap();
    }
    gw.wait_for_refusal(
        "no cases in the case files (quickstart.cases.toml, ssh.cases.toml)",
        &tested,
    )
    .await;
    let err = client
        .batch_execute("select count(*) from customers")
        .await
        .unwrap_err();
    assert!(db_message(&err).contains("support-only"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_directory_is_watched_not_only_polled() {
    let policy_dir = tempfile::tempdir().unwrap();
    let policies = policy_dir.path().join("policies");
    copy_dir(&quickstart_policies(), &policies);
    let gw = Gateway::start_with(
        TestDb::create("e2e_watch", SEED).await,
        Options {
            policies: policies.clone(),
            // Polling alone would not see the change within this test.
            reload_interval_seconds: 3600,
            ..Options::default()
        },
    )
    .await;
    let first = gw.status().await["policy_version"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(
        policies.join("extra.cedar"),
        "@id(\"extra\")\nforbid (principal, action == Action::\"query\", resource) when { context.statement.tables.contains(\"secrets\") };\n",
    )
    .unwrap();
    let second = gw
        .wait_for_version_after("the watched change", &first)
        .await;
    // A team's directory moved in (as a checkout does), with a forbid in it:
    // seen, and enforced.
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    assert_eq!(scalar_i64(&client, "select count(*) from orders").await, 4);
    let staged = policy_dir.path().join("staged");
    std::fs::create_dir_all(staged.join("payments")).unwrap();
    let forbid = |table: &str| {
        format!(
            "@id(\"payments-closed\")\nforbid (principal, action == Action::\"query\", resource) \
             when {{ context.statement.tables.contains(\"{table}\") }};\n"
        )
    };
    std::fs::write(staged.join("payments/closed.cedar"), forbid("orders")).unwrap();
    std::fs::rename(&staged, policies.join("teams")).unwrap();
    let third = gw
        .wait_for_version_after("the change in a sub-directory", &second)
        .await;
    let err = client
        .batch_execute("select count(*) from orders")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    // And an edit inside it, two levels down, is seen too.
    std::fs::write(
        policies.join("teams/payments/closed.cedar"),
        forbid("secrets"),
    )
    .unwrap();
    let fourth = gw
        .wait_for_version_after("the edit in a sub-directory", &third)
        .await;
    assert_eq!(scalar_i64(&client, "select count(*) from orders").await, 4);
    // The sub-directory moved away behind a link that now leads nowhere:
    // refused (its rules would be gone), and the refusal audited.
    std::fs::rename(policies.join("teams"), policy_dir.path().join("teams")).unwrap();
    std::os::unix::fs::symlink(policy_dir.path().join("gone"), policies.join("teams")).unwrap();
    gw.wait_for_refusal("leads nowhere", &fourth).await;
    let refused = gw
        .audit_entry_within(50, |entry| entry["event"] == "policy.refused")
        .await;
    assert_eq!(refused["version"], "", "{refused}");
    assert_eq!(refused["enforced"], fourth.as_str(), "{refused}");
    gw.stop().await;
}

/// A person in psql sees, in psql, why the session ended when a policy
/// change takes their access away; until then a reload does not disturb it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_psql_session_survives_a_reload_and_is_told_when_revoked() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let policy_dir = tempfile::tempdir().unwrap();
    let policies = policy_dir.path().join("policies");
    copy_dir(&quickstart_policies(), &policies);
    let gw = Gateway::start_with(
        TestDb::create("e2e_psql_reload", SEED).await,
        Options {
            policies: policies.clone(),
            ..Options::default()
        },
    )
    .await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let mut psql = tokio::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-tA",
            "-h",
            "127.0.0.1",
            "-p",
            &gw.pg_addr.port().to_string(),
            "-U",
            "alice",
            "-d",
            "demo",
        ])
        .env("PGPASSWORD", &alice)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = psql.stdin.take().unwrap();
    let mut out = BufReader::new(psql.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(psql.stderr.take().unwrap()).lines();
    async fn ask(stdin: &mut tokio::process::ChildStdin, sql: &str) {
        stdin
            .write_all(format!("{sql}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }
    ask(&mut stdin, "select count(*) from orders;").await;
    assert_eq!(out.next_line().await.unwrap().as_deref(), Some("4"));

    // A new version that still lets eng in: the session goes on.
    let first = gw.status().await["policy_version"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(policies.join("extra.cedar"), "@id(\"extra\")\nforbid (principal, action == Action::\"query\", resource) when { context.statement.tables.contains(\"secrets\") };\n").unwrap();
    gw.wait_for("the first reload", |s| {
        s["policy_version"] != first.as_str()
    })
    .await;
    ask(&mut stdin, "select count(*) from customers;").await;
    assert_eq!(out.next_line().await.unwrap().as_deref(), Some("3"));

    // A version that takes `connect` away from eng: psql is told why.
    let second = gw.status().await["policy_version"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(
        policies.join("access.cedar"),
        "@id(\"dba-connect\")\npermit (principal in Group::\"dba\", action == Action::\"connect\", resource == Target::\"demo\");\n",
    )
    .unwrap();
    gw.wait_for("the revoking reload", |s| {
        s["policy_version"] != second.as_str()
    })
    .await;
    // psql reads the FATAL error when it next talks to the server.
    ask(&mut stdin, "select 1;").await;
    drop(stdin);
    let mut told = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Some(line) = tokio::time::timeout_at(deadline, err.next_line())
        .await
        .expect("psql said nothing")
        .unwrap()
    {
        told.push_str(&format!("{line}\n"));
    }
    assert!(
        told.contains("access to target `demo` was revoked"),
        "{told}"
    );
    gw.stop().await;
}
