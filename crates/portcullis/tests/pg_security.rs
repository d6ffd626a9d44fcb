//! Attempts to get around the gateway: bad tokens, someone else's cancel
//! key, a tampered or unwritable audit log, credentials leaking.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// The claims of a dev token, to forge variants of it.
fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_valid_tokens_get_in_and_only_for_permitted_groups() {
    let gw = Gateway::start(TestDb::create("e2e_tokens", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    assert!(gw.connect(&alice).await.is_ok());

    // A forged token: same claims, signed with another dev issuer's key.
    let other_dir = tempfile::tempdir().unwrap();
    let other =
        portcullis_identity::DevIssuer::load_or_create(portcullis_identity::DevIssuerSettings {
            issuer: "portcullis-dev".into(),
            audience: "portcullis".into(),
            key_path: other_dir.path().join("k"),
        })
        .unwrap();
    let forged = other
        .issue(
            "alice@example.com",
            &["eng".to_string(), "dba".to_string()],
            Duration::from_secs(600),
        )
        .unwrap();
    // An `alg: none` token with alice's claims.
    let claims = claims_of(&alice);
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    // A token whose payload was changed to add a group.
    let mut escalated = claims.clone();
    escalated["groups"] = serde_json::json!(["eng", "dba"]);
    let parts: Vec<&str> = alice.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(escalated.to_string().as_bytes()),
        parts[2]
    );
    for (name, token) in [
        ("forged", forged),
        ("alg none", none),
        ("tampered", tampered),
        ("garbage", "not-a-token".to_string()),
        ("empty", String::new()),
    ] {
        let err = gw
            .connect(&token)
            .await
            .err()
            .unwrap_or_else(|| panic!("{name} got in"));
        assert_eq!(sqlstate(&err), "28P01", "{name}: {}", db_message(&err));
        assert!(
            db_message(&err).starts_with("authentication failed"),
            "{name}: {}",
            db_message(&err)
        );
    }
    // A token whose expiry was moved back (the verifier's expiry checks
    // themselves are tested in portcullis-identity with validly signed tokens).
    let mut old = claims.clone();
    old["exp"] = serde_json::json!(1_000_000_000u64);
    old["iat"] = serde_json::json!(999_999_000u64);
    old["nbf"] = serde_json::json!(999_999_000u64);
    let old_token = format!(
        "{}.{}.{}",
        parts[0],
        b64(old.to_string().as_bytes()),
        parts[2]
    );
    let err = gw.connect(&old_token).await.err().unwrap();
    assert_eq!(sqlstate(&err), "28P01");

    // A valid token for a group without a `connect` permit.
    let mallory = gw.token("mallory@example.com", &["sales"]);
    let err = gw.connect(&mallory).await.err().unwrap();
    assert_eq!(sqlstate(&err), "28000");
    assert!(
        db_message(&err).contains("access to target `demo` denied"),
        "{}",
        db_message(&err)
    );

    // An unknown target.
    let conn = format!(
        "host=127.0.0.1 port={} dbname=nope user=x password={alice}",
        gw.pg_addr.port()
    );
    let err = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&err), "3D000");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_is_the_tokens_and_credentials_never_leak() {
    let gw = Gateway::start(TestDb::create("e2e_identity", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    // The client says it is `postgres`; the gateway knows it is alice.
    let conn = format!(
        "host=127.0.0.1 port={} dbname=demo user=postgres password={alice}",
        gw.pg_addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let who: String = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        who, gw.db.user,
        "the target session runs as the gateway's role"
    );
    // Errors the target raises do not carry the gateway's password.
    let err = client
        .batch_execute("select * from pg_authid")
        .await
        .unwrap_err();
    assert!(!db_message(&err).contains(&gw.db.password));
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let password = gw.db.password.clone();
    let audit_db = gw.audit_db();
    let tail = gw.cli(&["audit", "tail", "-n", "50", "--json"]);
    let lines = stdout(&tail);
    assert!(tail.status.success(), "{}", stderr(&tail));
    let connect = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["entry"]["event"] == "session.connect")
        .expect("a connect entry");
    assert_eq!(connect["entry"]["principal"], "alice@example.com");
    assert_eq!(connect["entry"]["client_user"], "postgres");
    let _dir = gw.stop().await;
    let bytes = std::fs::read(&audit_db).unwrap();
    let needle = password.as_bytes();
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "the target password is in the audit store"
    );
    assert!(!lines.contains(&password));
}

/// Waits until `query` runs on the target: a cancel sent before it starts
/// would find nothing to cancel.
async fn wait_until_running(gw: &Gateway, query: &str) {
    let direct = gw.db.direct().await;
    let running = format!(
        "select count(*) from pg_stat_activity where state = 'active' and query = '{query}'"
    );
    for _ in 0..200 {
        if scalar_i64(&direct, &running).await == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("`{query}` never started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancels_its_own_query_and_no_one_elses() {
    let gw = Gateway::start(TestDb::create("e2e_cancel", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let victim = gw.connect(&alice).await.unwrap();
    let attacker = gw.connect(&alice).await.unwrap();
    let victim_pid: i32 = victim
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    // The victim runs a slow query.
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let result = victim.batch_execute("select pg_sleep(3)").await;
        (result, started.elapsed(), victim)
    });
    wait_until_running(&gw, "select pg_sleep(3)").await;
    // The attacker cancels with its own key, and with the victim's real
    // backend pid (which SQL can reveal) and guessed secrets.
    attacker
        .cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await
        .unwrap();
    for secret in [0, 1, -1, victim_pid] {
        let mut stream = tokio::net::TcpStream::connect(gw.pg_addr).await.unwrap();
        let mut out = bytes::BytesMut::new();
        portcullis_pg::codec::build::cancel_request(&mut out, victim_pid, secret);
        tokio::io::AsyncWriteExt::write_all(&mut stream, &out)
            .await
            .unwrap();
    }
    let (result, elapsed, victim) = slow.await.unwrap();
    assert!(
        result.is_ok(),
        "the victim's query was cancelled: {result:?}"
    );
    assert!(elapsed >= Duration::from_millis(2900), "{elapsed:?}");

    // Nor through SQL: every session reaches the target as the same role,
    // so signalling another backend is decided as a privilege change
    // (`dcl`), which alice's group may not make.
    for sql in [
        format!("select pg_cancel_backend({victim_pid})"),
        format!("select pg_terminate_backend({victim_pid})"),
        format!("select ({victim_pid}).pg_terminate_backend"),
        // Found in attack: a call written as a field of a function in FROM.
        format!("select q.pg_terminate_backend from abs({victim_pid}) q"),
        format!("select abs.pg_cancel_backend from abs({victim_pid})"),
    ] {
        let err = attacker.batch_execute(&sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err:?}");
    }
    assert_eq!(
        victim
            .query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );

    // Its own cancel works.
    let token = victim.cancel_token();
    let slow = tokio::spawn(async move { victim.batch_execute("select pg_sleep(10)").await });
    wait_until_running(&gw, "select pg_sleep(10)").await;
    let started = Instant::now();
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = slow.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    assert!(started.elapsed() < Duration::from_secs(5));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_is_write_ahead_and_refuses_when_unwritable() {
    let gw = Gateway::start_with(
        TestDb::create("e2e_audit_lock", SEED).await,
        Options {
            busy_timeout_ms: 300,
            ..Options::default()
        },
    )
    .await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    client
        .batch_execute("insert into orders (customer_id, total_cents) values (1, 7)")
        .await
        .unwrap();

    // Another process holds the audit store's write lock: nothing may run.
    let locker = rusqlite::Connection::open(gw.audit_db()).unwrap();
    locker.execute_batch("begin exclusive").unwrap();
    let err = client
        .batch_execute("insert into orders (customer_id, total_cents) values (1, 8)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "58000", "{}", db_message(&err));
    assert!(
        db_message(&err).contains("audit log is unavailable"),
        "{}",
        db_message(&err)
    );
    let err = client.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "58000");
    locker.execute_batch("rollback").unwrap();
    drop(locker);

    // Back to normal, and the refused insert never reached the target.
    client
        .batch_execute("insert into orders (customer_id, total_cents) values (1, 9)")
        .await
        .unwrap();
    let totals: Vec<i32> = gw
        .db
        .direct()
        .await
        .query(
            "select total_cents from orders where total_cents < 10 order by 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(totals, vec![7, 9]);
    drop(client);
    let config_path = gw.config_path.clone();
    let audit_db = gw.audit_db();
    let _dir = gw.stop().await;

    // `audit verify`, against the data directory's key or `key`.
    let verify_against = |label: &str, key: Option<&Path>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(["audit", "verify", "--config"])
            .arg(&config_path);
        if let Some(key) = key {
            command.arg("--key").arg(key);
        }
        command.output().unwrap_or_else(|e| panic!("{label}: {e}"))
    };
    let verify = |label: &str| verify_against(label, None);
    let ok = verify("intact");
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));
    assert!(stdout(&ok).contains("audit log intact"));
    assert!(stdout(&ok).contains("--key"), "{}", stdout(&ok));

    // Against a copy of the public key kept apart from the store, and
    // against another key: whoever can change the store can change the
    // data directory's own copy, and sign with a key of their own.
    let keys = tempfile::tempdir().unwrap();
    let kept = keys.path().join("kept.pub");
    let data_dir = audit_db.parent().unwrap();
    std::fs::copy(data_dir.join("audit-signing.pub"), &kept).unwrap();
    let another = keys.path().join("another.pub");
    // The ed25519 base point: a valid public key, not the gateway's.
    std::fs::write(
        &another,
        "5866666666666666666666666666666666666666666666666666666666666666\n",
    )
    .unwrap();
    let pinned = verify_against("a kept key", Some(&kept));
    assert!(pinned.status.success(), "{}", stderr(&pinned));
    assert!(stdout(&pinned).contains("kept.pub"), "{}", stdout(&pinned));
    let other = verify_against("another key", Some(&another));
    assert!(!other.status.success(), "{}", stdout(&other));
    assert!(stderr(&other).contains("key"), "{}", stderr(&other));

    // Tampering, each on a copy of the intact store.
    let intact = std::fs::read(&audit_db).unwrap();
    let tamper = |sql: &str| -> String {
        std::fs::write(&audit_db, &intact).unwrap();
        let _ = std::fs::remove_file(audit_db.with_extension("db-wal"));
        let conn = rusqlite::Connection::open(&audit_db).unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        let out = verify(sql);
        assert!(!out.status.success(), "tampering not detected: {sql}");
        stderr(&out)
    };
    let changed = tamper("update audit_entries set body = replace(body, 'values (1, 9)', 'values (1, 1)') where body like '%values (1, 9)%'");
    assert!(changed.contains("changed"), "{changed}");
    let removed = tamper("delete from audit_entries where seq = 3");
    assert!(removed.contains("entry 3"), "{removed}");
    let reordered = tamper(
        "update audit_entries set body = (select body from audit_entries where seq = 3) where seq = 2;",
    );
    assert!(reordered.contains("entry 2"), "{reordered}");
}

/// `audit export`: the signed log, in parts that chain, verified with
/// nothing but the exports and a copy of the key; and a store cut back
/// after an export, which the store alone does not show, is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_exported_and_verified_elsewhere() {
    let gw = Gateway::start(TestDb::create("e2e_audit_export", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    client
        .batch_execute("select 1; select 'dé\u{202e}jà'")
        .await
        .unwrap();
    let exports = tempfile::tempdir().unwrap();
    let first = exports.path().join("1.jsonl");
    let second = exports.path().join("2.jsonl");
    let kept = exports.path().join("kept.pub");
    std::fs::copy(
        gw.audit_db().parent().unwrap().join("audit-signing.pub"),
        &kept,
    )
    .unwrap();
    let portcullis = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .output()
            .unwrap()
    };
    let config = gw.config_path.to_str().unwrap().to_owned();
    let path = |file: &Path| file.to_str().unwrap().to_owned();
    // While the gateway runs: what is signed so far (within a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = portcullis(&["audit", "export", "--config", &config, "-o", &path(&first)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exported entries 1 to"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&first).unwrap();
    assert!(
        text.is_ascii() && text.contains("d\\u00e9\\u202ej\\u00e0"),
        "{text}"
    );
    // Never over an earlier export.
    let again = portcullis(&["audit", "export", "--config", &config, "-o", &path(&first)]);
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));

    client.batch_execute("select 2").await.unwrap();
    drop(client);
    let config_path = gw.config_path.clone();
    let audit_db = gw.audit_db();
    let _dir = gw.stop().await;
    let out = portcullis(&[
        "audit",
        "export",
        "--config",
        &config,
        "--after-export",
        &path(&first),
        "-o",
        &path(&second),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let verify = |files: &[&Path]| {
        let mut args = vec![
            "audit".to_owned(),
            "verify".into(),
            "--key".into(),
            path(&kept),
        ];
        args.push("--export".into());
        args.extend(files.iter().map(|f| path(f)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        portcullis(&args)
    };
    let ok = verify(&[&first, &second]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        stdout(&ok).contains("exports intact: entries 1 to"),
        "{}",
        stdout(&ok)
    );
    let alone = verify(&[&second]);
    assert!(alone.status.success(), "{}", stderr(&alone));
    assert!(
        stdout(&alone).contains("the first starts after entry"),
        "{}",
        stdout(&alone)
    );
    let swapped = verify(&[&second, &first]);
    assert!(
        stderr(&swapped).contains("does not continue"),
        "{}",
        stderr(&swapped)
    );
    // A changed export.
    let exported = std::fs::read_to_string(&second).unwrap();
    std::fs::write(&second, exported.replace("select 2", "select 3")).unwrap();
    let changed = verify(&[&first, &second]);
    assert!(!changed.status.success());
    assert!(
        stderr(&changed).contains("was changed"),
        "{}",
        stderr(&changed)
    );
    std::fs::write(&second, exported).unwrap();

    // The store cut back to a checkpoint before the last export's end:
    // it verifies alone; the next export says what happened.
    let conn = rusqlite::Connection::open(&audit_db).unwrap();
    let first_end: i64 = conn
        .query_row("select min(seq) from audit_checkpoints", [], |r| r.get(0))
        .unwrap();
    conn.execute("delete from audit_entries where seq > ?1", [first_end])
        .unwrap();
    conn.execute("delete from audit_checkpoints where seq > ?1", [first_end])
        .unwrap();
    drop(conn);
    let store = portcullis(&["audit", "verify", "--config", config_path.to_str().unwrap()]);
    assert!(store.status.success(), "{}", stderr(&store));
    let third = exports.path().join("3.jsonl");
    let cut = portcullis(&[
        "audit",
        "export",
        "--config",
        &config,
        "--after-export",
        &path(&second),
        "-o",
        &path(&third),
    ]);
    assert!(!cut.status.success());
    assert!(
        stderr(&cut).contains("removed from its end"),
        "{}",
        stderr(&cut)
    );
    assert!(!third.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_token_expires() {
    let gw = Gateway::start(TestDb::create("e2e_expiry", SEED).await).await;
    let dev = portcullis_app::dev_issuer(&gw.config).unwrap().unwrap();
    let short = dev
        .issue(
            "alice@example.com",
            &["eng".to_string()],
            Duration::from_secs(2),
        )
        .unwrap();
    let client = gw.connect(&short).await.unwrap();
    assert_eq!(scalar_i64(&client, "select count(*) from orders").await, 4);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let err = client.query_one("select 1", &[]).await.unwrap_err();
    let text = format!("{err:?}");
    assert!(text.contains("expired") || client.is_closed(), "{text}");
    assert!(client.is_closed());
    gw.stop().await;
}

/// Each session holds one of the target's connection slots, which everyone
/// shares: one person may hold no more than `max_sessions_per_user`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_holds_no_more_sessions_than_the_limit() {
    let gw = Gateway::start_with(
        TestDb::create("e2e_session_limit", SEED).await,
        Options {
            postgres_extra: "max_sessions_per_user = 2".into(),
            ..Options::default()
        },
    )
    .await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let first = gw.connect(&alice).await.unwrap();
    let second = gw.connect(&alice).await.unwrap();
    let Err(err) = gw.connect(&alice).await else {
        panic!("a third session was let in");
    };
    assert_eq!(sqlstate(&err), "53300", "{err:?}");
    let message = err.as_db_error().map(|e| e.message().to_owned());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("postgres.max_sessions_per_user")),
        "{err:?}"
    );
    // Others are not held to alice's count.
    let dana = gw.token("dana@example.com", &["eng", "dba"]);
    let other = gw.connect(&dana).await.unwrap();
    assert!(other.simple_query("select 1").await.is_ok());
    // A session that ends gives its place back.
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(client) = gw.connect(&alice).await {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "no session after one ended");
    assert!(second.simple_query("select 1").await.is_ok());
    gw.stop().await;
}
