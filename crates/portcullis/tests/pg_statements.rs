//! Statements through the gateway with real clients: what runs, what is
//! refused, and that a refused statement leaves the session as any error would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_allowed_statements_and_names_the_policy_that_blocks() {
    let gw = Gateway::start(TestDb::create("e2e_psql", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let out = gw.psql(
        &alice,
        &[
            "-c",
            "select name from customers order by id",
            "-c",
            "delete from orders",
            "-c",
            "select count(*) as n_orders from orders",
        ],
    );
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(o.contains("Jane Doe"), "stdout: {o}\nstderr: {e}");
    assert!(
        e.contains("denied by policy `no-unbounded-writes`"),
        "stderr: {e}"
    );
    assert!(
        e.contains("UPDATE and DELETE need a WHERE clause"),
        "stderr: {e}"
    );
    // The session went on after the refusal, and nothing was deleted.
    assert!(
        o.contains("n_orders") && o.contains("     4"),
        "stdout: {o}"
    );
    let direct = gw.db.direct().await;
    let n = scalar_i64(&direct, "select count(*) from orders").await;
    assert_eq!(n, 4);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_writes_are_found_and_refused() {
    let gw = Gateway::start(TestDb::create("e2e_hidden", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    let attacks = [
        // A delete without WHERE hidden in a CTE of a select.
        (
            "with d as (delete from orders returning *) select count(*) from d",
            "42501",
        ),
        // A second statement after a comment, and after a string with a semicolon.
        ("select 1; -- harmless\n delete from orders", "42501"),
        ("select 'a;b'; delete from orders", "42501"),
        ("select $$;$$; drop table orders", "42501"),
        // EXPLAIN ANALYZE runs the delete.
        ("explain analyze delete from orders", "42501"),
        // A condition that does not look at the row bounds nothing.
        ("update orders set total_cents = 0 where true", "42501"),
        ("delete from orders where 1 = 1", "42501"),
        (
            "merge into orders o using orders s on o.id = s.id \
             when matched and true then update set total_cents = 0",
            "42501",
        ),
        // An upsert of every row is an update of every row.
        (
            "insert into orders select * from orders \
             on conflict (id) do update set total_cents = 0",
            "42501",
        ),
        // A DO block can do anything: nobody may run one.
        ("do $$ begin delete from orders; end $$", "42501"),
        // Privilege changes are DDL/DCL, not for eng.
        ("set role postgres", "42501"),
        ("set session authorization postgres", "42501"),
        ("select set_config('role', 'postgres', false)", "42501"),
        ("create table t (x int)", "42501"),
        // Settings that would make the target read SQL differently from
        // the gateway (a multi-byte encoding whose characters hide quotes,
        // backslash escapes in plain strings).
        ("set client_encoding to 'SJIS'", "0A000"),
        ("set names 'big5'", "0A000"),
        ("set standard_conforming_strings = off", "0A000"),
        (
            "select set_config('client_encoding', 'GBK', false)",
            "0A000",
        ),
        (
            "select set_config('client_' || 'encoding', 'GBK', false)",
            "0A000",
        ),
        // What the gateway cannot parse is refused, never passed on.
        ("selec 1", "42601"),
    ];
    for (sql, code) in attacks {
        let err = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&err), code, "{sql}: {}", db_message(&err));
    }
    // PREPARE of a write without WHERE is refused, so `p` does not exist
    // and an EXECUTE of it is refused as unknown; an EXECUTE of a name the
    // gateway never saw prepared is refused too.
    let err = client
        .batch_execute("prepare p as delete from orders")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    let err = client.batch_execute("execute p").await.unwrap_err();
    assert_eq!(sqlstate(&err), "26000", "{}", db_message(&err));
    let err = client
        .batch_execute("execute never_prepared")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "26000", "{}", db_message(&err));
    // Allowed prepared statements work.
    client
        .batch_execute("prepare q as select count(*) from orders where total_cents > $1")
        .await
        .unwrap();
    let rows = client.simple_query("execute q(1000)").await.unwrap();
    assert!(!rows.is_empty());
    let n = scalar_i64(&gw.db.direct().await, "select count(*) from orders").await;
    assert_eq!(n, 4, "nothing was deleted");
    let tables: i64 = gw
        .db
        .direct()
        .await
        .query_one(
            "select count(*) from pg_tables where tablename in ('orders', 't')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "orders still there, t never created");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_prepared_binary_and_transactions() {
    let gw = Gateway::start(TestDb::create("e2e_extended", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let mut client = gw.connect(&alice).await.unwrap();

    // Prepared statement, binary parameters and results.
    let statement = client
        .prepare("select customers.id, name, total_cents::int8 from customers join orders on orders.customer_id = customers.id where total_cents > $1 order by total_cents")
        .await
        .unwrap();
    for _ in 0..3 {
        let rows = client.query(&statement, &[&1000i32]).await.unwrap();
        let totals: Vec<i64> = rows.iter().map(|r| r.get(2)).collect();
        assert_eq!(totals, vec![1299, 4500, 15000]);
    }
    let bytes: Vec<u8> = client
        .query_one("select $1::bytea", &[&vec![0u8, 1, 2, 255]])
        .await
        .unwrap()
        .get(0);
    assert_eq!(bytes, vec![0, 1, 2, 255]);

    // A refused statement in the extended protocol: 42501, and the
    // connection goes on.
    let err = client.prepare("delete from orders").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(db_message(&err).contains("no-unbounded-writes"));
    let n = scalar_i64(&client, "select count(*) from orders").await;
    assert_eq!(n, 4);

    // Inside a transaction a refusal aborts the transaction, as any error
    // would: the earlier insert is rolled back at COMMIT.
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "insert into orders (customer_id, total_cents) values (1, 1)",
        &[],
    )
    .await
    .unwrap();
    let err = tx
        .batch_execute("update orders set total_cents = 0")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    let err = tx.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "25P02", "the transaction is aborted");
    drop(tx);
    let n = scalar_i64(&client, "select count(*) from orders").await;
    assert_eq!(n, 4, "the insert was rolled back");

    // Several statements in one simple query: one refused means none runs.
    let err = client
        .batch_execute(
            "insert into orders (customer_id, total_cents) values (1, 2); delete from orders",
        )
        .await
        .unwrap_err();
    assert!(
        db_message(&err).contains("statement 2 of 2"),
        "{}",
        db_message(&err)
    );
    let n = scalar_i64(&client, "select count(*) from orders").await;
    assert_eq!(n, 4);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dba_runs_ddl_but_guardrails_hold_for_everyone() {
    let gw = Gateway::start(TestDb::create("e2e_dba", SEED).await).await;
    let dana = gw.token("dana@example.com", &["eng", "dba"]);
    let client = gw.connect(&dana).await.unwrap();
    client
        .batch_execute("create table audit_me (x int)")
        .await
        .unwrap();
    client
        .batch_execute("grant select on audit_me to public")
        .await
        .unwrap();
    for (sql, policy) in [
        ("drop database postgres", "no-drop-database"),
        ("copy orders to program 'cat > /tmp/x'", "no-copy-program"),
        ("copy orders from program 'echo 1'", "no-copy-program"),
        ("alter system set work_mem = '1GB'", "no-alter-system"),
        ("create role evil superuser", "no-role-changes"),
        ("alter role postgres password 'x'", "no-role-changes"),
        ("delete from orders", "no-unbounded-writes"),
        ("truncate orders", "no-unbounded-writes"),
        // A SQL function's body is decided when it is created: calling it
        // is decided only as a call.
        (
            "create function wipe() returns void language sql as 'delete from orders'",
            "no-unbounded-writes",
        ),
    ] {
        let err = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&err), "42501", "{sql}");
        assert!(
            db_message(&err).contains(policy),
            "{sql}: {}",
            db_message(&err)
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_both_ways_and_notifications() {
    let gw = Gateway::start(TestDb::create("e2e_copy", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let csv = gw.dir.path().join("in.csv");
    std::fs::write(&csv, "1,111\n2,222\n").unwrap();
    let out = gw.psql(
        &alice,
        &[
            "-c",
            &format!(
                "\\copy orders (customer_id, total_cents) from '{}' csv",
                csv.display()
            ),
            "-c",
            "copy (select total_cents from orders order by total_cents) to stdout",
            "-c",
            "listen jobs",
            "-c",
            "notify jobs, 'hello'",
        ],
    );
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "stdout: {o}\nstderr: {e}");
    assert!(o.contains("COPY 2"), "{o}");
    assert!(o.contains("111\n222\n999\n1299"), "{o}");
    assert!(
        o.contains("Asynchronous notification \"jobs\" with payload \"hello\""),
        "{o}"
    );
    gw.stop().await;
}

/// A connection that never logs in does not hold the gateway's socket for
/// ever: neither one that sends nothing nor one that never sends its
/// password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_logs_in_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start(TestDb::create("e2e_login_timeout", "").await).await;
    let silent = tokio::net::TcpStream::connect(gw.pg_addr).await.unwrap();
    let mut no_password = tokio::net::TcpStream::connect(gw.pg_addr).await.unwrap();
    let mut startup = Vec::new();
    startup.extend_from_slice(&196608i32.to_be_bytes());
    startup.extend_from_slice(b"user\0alice\0database\0app\0\0");
    let mut message = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    message.extend_from_slice(&startup);
    no_password.write_all(&message).await.unwrap();
    let closed = |mut stream: tokio::net::TcpStream| async move {
        let mut buf = [0u8; 1024];
        let started = std::time::Instant::now();
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(45), stream.read(&mut buf))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => continue,
                Err(_) => return None,
            }
        }
    };
    // Nor can one address hold many: past 64 connections not logged in,
    // the next is closed at once, and a login waits for a place.
    let mut idle = Vec::new();
    for _ in 0..62 {
        idle.push(tokio::net::TcpStream::connect(gw.pg_addr).await.unwrap());
    }
    let extra = tokio::net::TcpStream::connect(gw.pg_addr).await.unwrap();
    let mut buf = [0u8; 16];
    let mut extra = extra;
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), extra.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a 65th connection not logged in was kept: {read:?}"
    );
    drop(idle);
    let alice = gw.token("alice@example.com", &["eng"]);
    let mut logged_in = false;
    for _ in 0..50 {
        if gw.connect(&alice).await.is_ok() {
            logged_in = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(logged_in, "no login once the idle connections closed");
    let (silent, no_password) = tokio::join!(closed(silent), closed(no_password));
    assert!(silent.is_some(), "a silent connection stayed open");
    assert!(
        no_password.is_some(),
        "a connection without a password stayed open"
    );
    gw.stop().await;
}

/// In COPY FROM STDIN the target reads only the copy's messages and ignores
/// Sync and Flush; the gateway follows it, however the client sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_through_every_protocol_path() {
    use futures_util::SinkExt;
    let gw = Gateway::start(TestDb::create("e2e_copy_in", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let orders = "select count(*) from orders";
    let before = scalar_i64(&gw.db.direct().await, orders).await;

    // tokio-postgres: Bind, Execute and Sync before the data; CopyDone and
    // Sync after it.
    let client = gw.connect(&alice).await.unwrap();
    let sink = client
        .copy_in("copy orders (customer_id, total_cents) from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\t101\n2\t102\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    // A bad row ends the copy with an error; the session goes on.
    let sink = client
        .copy_in("copy orders (customer_id, total_cents) from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"not a number\t1\n"))
        .await
        .unwrap();
    let failed = sink.finish().await.unwrap_err();
    assert!(failed.to_string().contains("db error"), "{failed}");
    assert_eq!(scalar_i64(&client, orders).await, before + 2);
    drop(client);

    // Everything in one write: the Query, a Sync and a Flush the target
    // ignores, the data, CopyDone, and a Query after it.
    let mut raw = RawClient::connect(&gw, &alice).await;
    raw.send(&[
        raw::query("copy orders (customer_id, total_cents) from stdin"),
        raw::sync(),
        raw::flush(),
        raw::copy_data("1\t103\n"),
        raw::copy_done(),
        raw::query("select 'after'"),
    ])
    .await;
    let copied = raw_text(&raw.until_ready().await);
    assert!(copied.contains("COPY 1"), "{copied}");
    let after = raw_text(&raw.until_ready().await);
    assert!(after.contains("after"), "{after}");

    // Two copies in one Query, each ended on its own.
    raw.send(&[
        raw::query(
            "copy orders (customer_id, total_cents) from stdin; copy orders (customer_id, total_cents) from stdin",
        ),
        raw::copy_data("1\t104\n"),
        raw::copy_done(),
        raw::copy_data("2\t105\n"),
        raw::copy_done(),
        raw::query("select 'after two'"),
    ])
    .await;
    let copied = raw_text(&raw.until_ready().await);
    assert_eq!(copied.matches("COPY 1").count(), 2, "{copied}");
    let after = raw_text(&raw.until_ready().await);
    assert!(after.contains("after two"), "{after}");

    // A COPY that fails before it starts: what follows is read as usual.
    raw.send(&[
        raw::parse("", "copy no_such_table from stdin"),
        raw::bind("", "", 0),
        raw::execute(""),
        raw::sync(),
        raw::query("select 'still here'"),
    ])
    .await;
    let failed = raw_text(&raw.until_ready().await);
    assert!(failed.contains("no_such_table"), "{failed}");
    let after = raw_text(&raw.until_ready().await);
    assert!(after.contains("still here"), "{after}");
    assert_eq!(scalar_i64(&gw.db.direct().await, orders).await, before + 5);

    // Anything but the copy's messages during the copy ends the session,
    // with a reason.
    raw.send(&[
        raw::query("copy orders (customer_id, total_cents) from stdin"),
        raw::parse("s1", "select 1"),
    ])
    .await;
    let mut text = String::new();
    while !text.contains("E:") {
        text.push_str(&raw_text(&[raw.next().await]));
    }
    assert!(text.contains("during COPY FROM STDIN"), "{text}");
    assert!(raw.closed_within(std::time::Duration::from_secs(5)).await);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_in_every_query_mode() {
    let db = TestDb::create("e2e_pgbench", "").await;
    pgbench_init(&db);
    let gw = Gateway::start(db).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    for mode in ["simple", "extended", "prepared"] {
        for script in [&["-S"][..], &["-N"][..]] {
            let options = ["-n", "-c", "4", "-j", "2", "-t", "50", "-M", mode];
            let out = gw.pgbench("alice", &alice, &[&options[..], script].concat());
            let o = stdout(&out);
            assert!(
                out.status.success(),
                "pgbench -M {mode} {script:?}: {o}\n{}",
                stderr(&out)
            );
            assert!(
                o.contains("number of transactions actually processed: 200/200"),
                "{o}"
            );
            assert!(o.contains("number of failed transactions: 0"), "{o}");
        }
    }
    gw.stop().await;
}

/// An extended-protocol query sent as Parse, Bind, Execute, Sync is decided
/// and audited once, at its Execute; a statement prepared by name and run
/// later is audited when it is prepared and at each run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_parsed_and_run_in_one_batch_is_audited_once() {
    let db = TestDb::create("e2e_pgbench_audit", "").await;
    pgbench_init(&db);
    let gw = Gateway::start(db).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let phases = |mode: &str| -> (usize, usize) {
        let out = gw.pgbench(
            "alice",
            &alice,
            &["-n", "-S", "-c", "1", "-t", "20", "-M", mode],
        );
        assert!(out.status.success(), "pgbench -M {mode}: {}", stderr(&out));
        let entries = gw.audit_entries(100);
        // This run's entries: those after its session's connect.
        let start = entries
            .iter()
            .rposition(|e| e["event"] == "session.connect")
            .expect("a connect entry");
        let count = |phase: &str| {
            entries[start..]
                .iter()
                .filter(|e| {
                    e["event"] == "statement"
                        && e["phase"] == phase
                        && e["statement"]["tables"][0] == "pgbench_accounts"
                })
                .count()
        };
        (count("parse"), count("execute"))
    };
    assert_eq!(phases("extended"), (0, 20));
    assert_eq!(phases("prepared"), (1, 20));
    // Decided once, refused as a whole: a refused statement's Parse does
    // not reach the target either.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("delete.sql");
    std::fs::write(&script, "delete from pgbench_branches;\n").unwrap();
    let script = script.to_str().unwrap();
    let out = gw.pgbench(
        "alice",
        &alice,
        &["-n", "-c", "1", "-t", "1", "-M", "extended", "-f", script],
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("denied by policy `no-unbounded-writes`"),
        "{}",
        stderr(&out)
    );
    let direct = gw.db.direct().await;
    assert_eq!(
        scalar_i64(&direct, "select count(*) from pgbench_branches").await,
        1
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_encodings_that_hide_quotes_and_fast_path_calls_are_refused() {
    let gw = Gateway::start(TestDb::create("e2e_encoding", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    // In SJIS, the bytes of `Ã\` end a string literal early on the target
    // while the gateway's UTF-8 parser sees one literal: refused at startup.
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &gw.pg_addr.port().to_string(),
            "-U",
            "alice",
            "-d",
            "demo",
        ])
        .args(["-c", "select 1"])
        .env("PGPASSWORD", &alice)
        .env("PGCLIENTENCODING", "SJIS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("client encoding `SJIS` is not supported"),
        "{}",
        stderr(&out)
    );
    // psql's \lo_import uses fast-path function calls: refused, and the
    // session is not left waiting.
    let file = gw.dir.path().join("blob");
    std::fs::write(&file, b"data").unwrap();
    let out = std::process::Command::new("timeout")
        .arg("20")
        .arg("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &gw.pg_addr.port().to_string(),
            "-U",
            "alice",
            "-d",
            "demo",
        ])
        .args([
            "-c",
            &format!("\\lo_import {}", file.display()),
            "-c",
            "select 'still here'",
        ])
        .env("PGPASSWORD", &alice)
        .output()
        .unwrap();
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(
        e.contains("fast-path function calls are not allowed"),
        "stdout: {o}\nstderr: {e}"
    );
    assert!(o.contains("still here"), "stdout: {o}\nstderr: {e}");
    let n = scalar_i64(
        &gw.db.direct().await,
        "select count(*) from pg_largeobject_metadata",
    )
    .await;
    assert_eq!(n, 0, "no large object was created");
    gw.stop().await;
}

/// While the target skips to a Sync it answers nothing: a client that never
/// sends one cannot make the gateway hold its messages for ever.
/// Parsing costs several hundred bytes of memory per byte of text: a text
/// past `postgres.max_query_bytes` is refused unparsed, and a long one
/// below it is parsed off the worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_text_past_the_limit_is_refused_and_a_long_one_runs() {
    let gw = Gateway::start(TestDb::create("e2e_long_query", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    let long = format!("select length('{}')", "x".repeat(300_000));
    let rows = client.simple_query(&long).await.unwrap();
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("300000"));
    let too_long = format!("select length('{}')", "x".repeat(1 << 20));
    let err = client.simple_query(&too_long).await.unwrap_err();
    let message = err
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("postgres.max_query_bytes"), "{err:?}");
    // The session goes on.
    assert!(client.simple_query("select 1").await.is_ok());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_syncs_is_cut_off() {
    let gw = Gateway::start(TestDb::create("e2e_never_sync", SEED).await).await;
    let mut raw = RawClient::connect(&gw, &gw.token("alice@example.com", &["eng"])).await;
    // An error: the target now skips everything up to a Sync. Once the
    // client has the error, the gateway has seen it too, and every message
    // sent after it waits for a Sync: the flood below is all counted.
    raw.send(&[raw::parse("", "select * from nosuch"), (b'H', Vec::new())])
        .await;
    let error = raw.next().await;
    assert_eq!(error.0, b'E', "{error:?}");
    let describe = (b'D', b"Sx\0".to_vec());
    let batch: Vec<(u8, Vec<u8>)> = std::iter::repeat_n(describe, 10_000).collect();
    let mut closed = false;
    for _ in 0..12 {
        let mut out = Vec::new();
        for (tag, body) in &batch {
            out.push(*tag);
            out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
            out.extend_from_slice(body);
        }
        if raw.write_raw(&out).await.is_err() {
            closed = true;
            break;
        }
    }
    // The gateway plans each of the 100 000 messages before it cuts the
    // client off: on a loaded 2-core machine, in a debug build, that has
    // taken over 10 s.
    assert!(closed || raw.closed_within(std::time::Duration::from_secs(45)).await);
    gw.stop().await;
}

/// A client that stops reading in the middle of a large result holds up its
/// own session only: the gateway stops reading the target for it rather
/// than buffer the result, so PostgreSQL stops producing rows, and every
/// other session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_up_no_one_else() {
    let gw = Gateway::start(TestDb::create("e2e_stalled_reader", SEED).await).await;
    let direct = gw.db.direct().await;
    direct
        .batch_execute("create sequence produced")
        .await
        .unwrap();
    let alice = gw.token("alice@example.com", &["eng"]);
    // About 1 GB of result, never read; the sequence counts the rows
    // PostgreSQL has produced.
    let mut stalled = RawClient::connect(&gw, &alice).await;
    stalled
        .send(&[raw::query(
            "select nextval('produced'), repeat('x', 1000) from generate_series(1, 1000000)",
        )])
        .await;
    let produced = || async {
        let row = direct
            .query_one("select last_value, is_called from produced", &[])
            .await
            .unwrap();
        if row.get::<_, bool>(1) {
            row.get::<_, i64>(0)
        } else {
            0
        }
    };
    // Production stops short of the end, and stays stopped.
    let mut last = -1;
    let mut still = 0;
    for _ in 0..150 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let now = produced().await;
        still = if now == last && now > 0 { still + 1 } else { 0 };
        last = now;
        if still == 10 {
            break;
        }
    }
    assert_eq!(still, 10, "PostgreSQL kept producing rows: {last}");
    assert!(last < 1_000_000, "the whole result was read: {last} rows");
    // Meanwhile another session is answered.
    let other = gw.connect(&alice).await.unwrap();
    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        for i in 0..200i64 {
            assert_eq!(scalar_i64(&other, &format!("select {i}::int8")).await, i);
        }
    })
    .await;
    assert!(answered.is_ok(), "another session was held up");
    assert_eq!(produced().await, last, "rows were produced for nobody");
    drop(stalled);
    gw.stop().await;
}

/// A cursor a function or DO block opened runs, at each fetch, whatever it
/// was opened for (an `INSERT ... RETURNING` too). A FETCH of it, in SQL or
/// as a protocol Execute of its name, is decided as a CALL, not as a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_of_a_cursor_opened_by_code_is_decided_as_code() {
    let gw = Gateway::start_with_policy(
        TestDb::create("e2e_code_cursor", SEED).await,
        r#"
permit (principal, action == Action::"connect", resource);
permit (principal, action == Action::"query", resource);
@id("no-calls")
@reason("code whose effect cannot be seen is not run here")
forbid (principal, action == Action::"query", resource)
when { context.statement.kinds.contains("call") };
"#,
    )
    .await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let orders = "select count(*) from orders";
    let before = scalar_i64(&gw.db.direct().await, orders).await;
    let open = |name: &str| {
        format!(
            "begin; do $$ declare c refcursor := '{name}'; begin \
             open c for insert into orders (customer_id, total_cents) values (1, 7001) returning id; \
             end $$"
        )
    };
    let mut raw = RawClient::connect(&gw, &alice).await;
    for fetch in [
        vec![raw::query("fetch all from sqlcur")],
        vec![raw::query("move all in sqlcur")],
        vec![raw::execute("sqlcur"), raw::sync()],
    ] {
        raw.send(&[raw::query(&open("sqlcur"))]).await;
        let opened = raw_text(&raw.until_ready().await);
        assert!(!opened.contains("ERROR"), "{opened}");
        raw.send(&fetch).await;
        let fetched = raw_text(&raw.until_ready().await);
        assert!(fetched.contains("no-calls"), "{fetched}");
        raw.send(&[raw::query("rollback")]).await;
        raw.until_ready().await;
    }
    assert_eq!(scalar_i64(&gw.db.direct().await, orders).await, before);
    // A cursor declared through the gateway is decided as its query.
    raw.send(&[raw::query(
        "begin; declare c cursor for select id from orders; fetch 1 from c; commit",
    )])
    .await;
    let read = raw_text(&raw.until_ready().await);
    assert!(!read.contains("ERROR"), "{read}");
    gw.stop().await;
}

/// A read can run code its text does not show: a view's definition, a
/// table's row security condition, a user's operator, a domain's check, a
/// cast through a user's function, a user's function that takes a
/// built-in's name. Each is found in the target's catalog and decided as
/// the call it is; what runs only built-ins is still a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_that_a_read_runs_unseen_is_decided_as_code() {
    let gw = Gateway::start_with_policy(
        TestDb::create("e2e_unseen_code", SEED).await,
        r#"
permit (principal, action == Action::"connect", resource);
permit (principal, action == Action::"query", resource);
@id("no-calls")
@reason("code whose effect cannot be seen is not run here")
forbid (principal, action == Action::"query", resource)
when { context.statement.kinds.contains("call") }
unless { context.statement.kinds.contains("ddl") };
"#,
    )
    .await;
    let direct = gw.db.direct().await;
    // Made by someone who could, as under a grant that has since ended.
    direct
        .batch_execute(
            "create table trail (id int, via text);
             create function w() returns int language plpgsql as
               $$ begin insert into trail values (1, 'function'); return 1; end $$;
             create view v as select w() as x;
             create view pg_v as select w() as x;
             create view over_v as select x from v;
             create view plain_v as select id, name from customers;
             create function op(a int, b int) returns int language plpgsql as
               $$ begin insert into trail values (2, 'operator'); return a + b; end $$;
             create operator ### (leftarg = int, rightarg = int, function = op);
             create function chk(x int) returns bool language plpgsql as
               $$ begin insert into trail values (3, 'domain'); return true; end $$;
             create domain checked as int check (chk(value));
             create domain over_checked as checked;
             create type boxed as (a checked);
             create domain positive as int check (value > 0);
             create type mood as enum ('ok', 'meh');
             create table guarded (a int);
             alter table guarded enable row level security;
             alter table guarded force row level security;
             create policy p on guarded using (w() = 1);
             create type pair as (a int);
             create function pair_int(pair) returns int language plpgsql as
               $$ begin insert into trail values (4, 'cast'); return 1; end $$;
             create cast (pair as int) with function pair_int(pair) as implicit;
             create table pairs (p pair);
             insert into pairs values (row(1));
             create function public.lower(x int) returns int language plpgsql as
               $$ begin insert into trail values (5, 'shadow'); return 1; end $$;
             create domain \"x.checked\" as int check (chk(value));
             create domain public.\"pg_catalog.checked\" as int check (chk(value));
             create function public.\"pg_catalog.upper\"(text) returns text language plpgsql as
               $$ begin insert into trail values (7, 'dotted'); return $1; end $$;
             create view dotted_v as select \"pg_catalog.upper\"('a') as u;
             create domain public.isfinite as int check (chk(value));
             create type mood2 as enum ('a');
             create function mood2_int(mood2) returns int language plpgsql as
               $$ begin insert into trail values (8, 'domain cast'); return 1; end $$;
             create cast (mood2 as int) with function mood2_int(mood2) as implicit;
             create domain mood2d as mood2;
             create table moods (m mood2d);
             insert into moods values ('a');
             create table held (c checked);
             insert into held values (1);
             create function folded() returns int language plpgsql immutable as
               $$ begin perform w(); return 1; end $$;
             create table indexed (a int);
             create index on indexed ((a + folded()));
             create table parted (a int) partition by range ((a + folded()));
             create table parted1 partition of parted for values from (0) to (100);
             create function next_one(x int) returns int language sql immutable as 'select x + 1';
             create table plainly_indexed (a int);
             create index on plainly_indexed ((next_one(a)));
             create function folded_plus(a int, b int) returns int language plpgsql immutable as
               $$ begin perform w(); return a + b; end $$;
             create operator #@# (leftarg = int, rightarg = int, function = folded_plus);
             create table op_indexed (a int);
             create index on op_indexed ((a #@# 1));
             create function five() returns checked language sql immutable as 'select 5';
             create table five_indexed (a int);
             create index on five_indexed ((a + five()));
             create type span as range (subtype = int);
             create table spans (s span);
             -- Would answer the gateway's own catalog queries, were they
             -- to look in public: nothing would seem to run code.
             create function public.never(oid, int) returns bool language sql immutable as 'select false';
             create operator public.>= (leftarg = oid, rightarg = int, function = public.never);
             create operator public.<> (leftarg = oid, rightarg = int, function = public.never);
             -- A trusted extension its creator owns, and so may add to.
             create extension fuzzystrmatch;
             create function public.abs(text) returns int language plpgsql as
               $$ begin insert into trail values (9, 'extension'); return 1; end $$;
             alter extension fuzzystrmatch add function public.abs(text);
             delete from trail;",
        )
        .await
        .unwrap();
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    for sql in [
        "select * from v",
        "select x from public.v",
        "select * from pg_v",
        "select * from over_v",
        "select count(*) from customers where id in (select x from v)",
        "select 1 ### 2",
        "select operator(public.###) 2",
        "select 5::checked",
        "select cast(6 as over_checked)",
        "select '{7}'::checked[]",
        "select row(8)::boxed",
        "select * from (values (1)) t(a) where a::checked = 1",
        "select count(*) from guarded",
        "select p + 1 from pairs",
        "select lower(5)",
        // Names with dots in them, no schema's.
        "select 5::\"x.checked\"",
        "select 5::\"pg_catalog.checked\"",
        "select \"pg_catalog.upper\"('a')",
        "select * from dotted_v",
        // A call of what is a type's name is a cast to it.
        "select isfinite(5)",
        // A row of a table made again from other values.
        "select * from held h, jsonb_populate_record(h, '{\"c\": 7}') j",
        // A domain over a type a user's cast starts from.
        "select m + 1 from moods",
        // Planning a read folds the functions of indexes and partition keys.
        "select * from indexed",
        "select * from parted",
        "select * from op_indexed",
        // A SQL function's result is made of its declared type.
        "select * from five_indexed",
        // Not an extension's for being in one.
        "select abs('x')",
    ] {
        let simple = client.batch_execute(sql).await.unwrap_err();
        assert!(
            db_message(&simple).contains("no-calls"),
            "{sql}: {}",
            db_message(&simple)
        );
        let extended = client.query(sql, &[]).await.unwrap_err();
        assert!(
            db_message(&extended).contains("no-calls"),
            "{sql}: {}",
            db_message(&extended)
        );
    }
    // A parameter's type, given in the protocol's Parse only.
    let checked_oid = scalar_i64(&direct, "select 'checked'::regtype::oid::int8").await as u32;
    let mut raw = RawClient::connect(&gw, &alice).await;
    raw.send(&[
        raw::parse_typed("", "select $1", &[checked_oid]),
        raw::bind_text("", "", &["5"]),
        raw::execute(""),
        raw::sync(),
    ])
    .await;
    let typed = raw_text(&raw.until_ready().await);
    assert!(typed.contains("no-calls"), "{typed}");
    // Even with no statement to decide.
    raw.send(&[
        raw::parse_typed("", "", &[checked_oid]),
        raw::bind_text("", "", &["5"]),
        raw::execute(""),
        raw::sync(),
    ])
    .await;
    let empty = raw_text(&raw.until_ready().await);
    assert!(empty.contains("empty statement"), "{empty}");
    // What runs only built-ins is a read.
    for sql in [
        "select * from plain_v",
        "select * from plainly_indexed",
        "select * from spans",
        "select 5::positive",
        "select 'ok'::mood",
        "select upper('abc')",
        "select 1 where 'a' like 'a%'",
    ] {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", db_message(&e)));
    }
    // A prepared read is decided as of when it runs, not as of its Parse:
    // here another session redefines the view in between (these policies
    // allow DDL; elsewhere it would be under a grant).
    let prepared = client.prepare("select * from plain_v").await.unwrap();
    let other = gw.connect(&alice).await.unwrap();
    other
        .batch_execute(
            "create or replace view plain_v as select id + 0 * w() as id, name from customers",
        )
        .await
        .unwrap();
    let replaced = client.query(&prepared, &[]).await.unwrap_err();
    assert!(
        db_message(&replaced).contains("no-calls"),
        "{}",
        db_message(&replaced)
    );
    // What the session's own transaction made is not in the catalog the
    // gateway reads until it commits: until then, what the rest of that
    // transaction names is decided as code, in a later Query...
    let make = "begin; create function w2(a int, b int) returns int language plpgsql as \
                $$ begin insert into trail values (6, 'uncommitted'); return 1; end $$; \
                create operator #### (leftarg = int, rightarg = int, function = w2)";
    client.batch_execute(make).await.unwrap();
    refused_by_no_calls(&client, "select 1 #### 2").await;
    client.batch_execute("rollback").await.unwrap();
    // ... or in the same one.
    refused_by_no_calls(&client, &format!("{make}; select 1 #### 2")).await;
    client.batch_execute("rollback").await.unwrap();
    // Once the transaction is over, reads are reads again.
    client
        .batch_execute("select * from customers")
        .await
        .unwrap();
    // A temporary view is in the catalog once made.
    client
        .batch_execute("create temp view tv as select w() as x")
        .await
        .unwrap();
    refused_by_no_calls(&client, "select * from tv").await;
    refused_by_no_calls(&client, "select * from pg_temp.tv").await;
    let trail = direct
        .query("select via from trail", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>();
    assert!(trail.is_empty(), "{trail:?}");
    gw.stop().await;
}

/// Found in attack: pieces the catalog read trusts (compiled functions,
/// users' SQL functions followed as their bodies) put together by a user
/// into code that writes. Each is still decided as code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_code_built_from_trusted_pieces_is_still_code() {
    let gw = Gateway::start_with_policy(
        TestDb::create("e2e_trusted_pieces", SEED).await,
        r#"
permit (principal, action == Action::"connect", resource);
permit (principal, action == Action::"query", resource);
@id("no-calls")
forbid (principal, action == Action::"query", resource)
when { context.statement.kinds.contains("call") || context.statement.writes };
"#,
    )
    .await;
    gw.db
        .superuser()
        .await
        .batch_execute(&format!(
            "create extension dblink; create extension citext; create extension postgres_fdw;
             grant usage on foreign data wrapper postgres_fdw to {};
             -- An extension's operator over its SQL, which does not qualify ||.
             create function public.cat_sql(text, text) returns text language sql
               as 'select $1 || $2';
             create operator public.@+@ (leftarg = text, rightarg = text, function = public.cat_sql);
             alter extension citext add function public.cat_sql(text, text);
             alter extension citext add operator public.@+@ (text, text);
             -- And one over its own volatile C function that writes.
             create operator public.%%% (leftarg = text, rightarg = text, function = dblink_exec);
             alter extension dblink add operator public.%%% (text, text);",
            gw.db.user
        ))
        .await
        .unwrap();
    let db = &gw.db;
    let connstr = format!(
        "host={} port={} dbname={} user={} password={}",
        db.host, db.port, db.name, db.user, db.password
    );
    let direct = db.direct().await;
    direct
        .batch_execute(&format!(
            "create table loot (via text);
             create operator ### (leftarg = text, rightarg = text, function = dblink_exec);
             create aggregate public.sum(text) (sfunc = dblink_exec, stype = text,
               initcond = '{connstr}');
             create function wneg(citext, citext) returns boolean language plpgsql as
               $$ begin insert into loot values ('negator'); return true; end $$;
             create operator !~!~ (leftarg = citext, rightarg = citext, function = wneg);
             create operator ~!~! (leftarg = citext, rightarg = citext, function = citext_eq,
               negator = !~!~);
             create table notes (c citext);
             insert into notes values ('a');
             create function wdom(int) returns boolean language plpgsql as
               $$ begin insert into loot values ('domain ' || $1); return true; end $$;
             create domain posdom as int check (wdom(value));
             create type posrange as range (subtype = posdom);
             create table pair (a int, d posdom);
             create function public.upper(x posdom[], y int) returns text language sql as
               $$ select 'ok' $$;
             create function public.initcap(x posrange, y int) returns text language sql as
               $$ select 'ok' $$;
             create function public.rtrim(x pair[], y int, z int) returns text language sql as
               $$ select 'ok' $$;
             create function public.ltrim(a int, b int, c int, out r1 posdom, out r2 int)
               language sql as $$ select $1, $2 $$;
             create function public.btrim(a int, b int, c int) returns table (r1 posdom, r2 int)
               language sql as $$ select $1, $2 $$;
             create function public.strpos(a int, b int, c int) returns text language sql as
               $$ select upper('{{1}}', 1) $$;
             create type mood as enum ('sad', 'happy');
             create function mood_text(m mood) returns text language plpgsql as
               $$ begin insert into loot values ('cast'); return 'x'; end $$;
             create cast (mood as text) with function mood_text(mood);
             create function public.lower(x mood, y int) returns text language sql as
               $$ select $1::text $$;
             -- A trusted extension the gateway's role may install itself:
             -- crosstab2 is a stable C function that runs the query it is
             -- given.
             create extension tablefunc;
             create function w(via text) returns boolean language plpgsql as
               $$ begin insert into public.loot values (via); return true; end $$;
             create operator @!@ (rightarg = text, function = crosstab2);
             -- A body PostgreSQL parses with its own settings.
             set check_function_bodies = off;
             create function public.round(a int, b int, c int, d int, e int) returns int
               language sql set standard_conforming_strings = off set escape_string_warning = off
               as $body$select 'a\\', '; insert into loot values ($q$settings$q$); select 1 --'$body$;
             -- A foreign table over this database's own view that writes.
             create server loopback foreign data wrapper postgres_fdw
               options (host '{host}', port '{port}', dbname '{name}');
             create user mapping for current_user server loopback
               options (user '{user}', password '{password}');
             create view fdw_v as select w('foreign') as x;
             create foreign table ft (x boolean) server loopback
               options (schema_name 'public', table_name 'fdw_v');
             create table parted_ft (x boolean) partition by list (x);
             create foreign table parted_ft_true partition of parted_ft for values in (true)
               server loopback options (schema_name 'public', table_name 'fdw_v');
             -- An extension's SQL resolves the operators it does not
             -- qualify on the caller's search_path, which a role default
             -- puts public first in.
             create function wcat(a text, b text) returns text language plpgsql as
               $$ begin insert into public.loot values ('search_path');
                  return a operator(pg_catalog.||) b; end $$;
             create operator public.|| (leftarg = text, rightarg = text, function = wcat);
             alter role {user} set search_path = public, pg_catalog;
             -- Making strpos checked its body's literal already.
             delete from loot;",
            host = db.host,
            port = db.port,
            name = db.name,
            user = db.user,
            password = db.password,
        ))
        .await
        .unwrap();
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    for sql in [
        // A user's operator and aggregate over a compiled function that
        // writes.
        &format!("select '{connstr}' ### 'insert into loot values (''operator'')'"),
        "select sum(x) from (values ('insert into loot values (''aggregate'')')) v(x)",
        // A compiled operator whose negator is a user's.
        "select not (c ~!~! 'b') from notes",
        // Domain checks behind arrays, ranges, composites, OUT and TABLE
        // columns, and a followed body calling one.
        "select upper('{31}', 1)",
        "select initcap('[32,33)', 1)",
        "select rtrim('{\"(1,34)\"}', 0, 0)",
        "select ltrim(35, 0, 0)",
        "select btrim(36, 0, 0)",
        "select strpos(1, 2, 3)",
        // A user's cast inside a followed body.
        "select lower('happy', 1)",
        // An operator over an extension's function that runs a query.
        "select @!@ 'select w(''crosstab'')::text, ''a''::text, ''b''::text'",
        // A body split otherwise under the function's own settings.
        "select round(1, 2, 3, 4, 5)",
        // A foreign table's rows come from a query on its server.
        "select * from ft",
        // Or from a partition of the table read.
        "select * from parted_ft",
        // citext's regexp_match concatenates with `||`.
        "select regexp_match(c, c, 'x') from notes",
        "select 'a' @+@ 'b'",
        &format!("select '{connstr}' %%% 'insert into loot values (''volatile'')'"),
    ] {
        refused_by_no_calls(&client, sql).await;
    }
    let loot: Vec<String> = direct
        .query("select via from loot", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(loot.is_empty(), "{loot:?}");
    gw.stop().await;
}

/// On a managed service, extensions' objects are owned by an administrator
/// who is no superuser. Its operators over compiled code are still what a
/// superuser installed, and its SQL wrappers around built-ins (`citext`'s
/// `replace`) are what their bodies do: a read using them stays a read. A
/// user's aggregate over SQL that writes, a user's operator over a
/// built-in that writes, the administrator's compiled code under a
/// built-in's name, and anything at all once the gateway's role may create
/// roles, are code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_an_administrator_owns_is_what_it_installed() {
    let gw = Gateway::start_with_policy(
        TestDb::create("e2e_managed_extension", SEED).await,
        r#"
permit (principal, action == Action::"connect", resource);
permit (principal, action == Action::"query", resource);
@id("no-calls")
forbid (principal, action == Action::"query", resource)
when { context.statement.kinds.contains("call") };
"#,
    )
    .await;
    let direct = gw.db.direct().await;
    // The extension installed by a superuser, then handed to an
    // administrator, as a managed service leaves it.
    gw.db
        .superuser()
        .await
        .batch_execute(
            "do $$ begin create role managed_admin; exception when duplicate_object then null; end $$;
             create extension citext;
             do $$ declare r record; begin
               for r in select d.classid::regclass::text as catalog, d.objid from pg_depend d
                 join pg_extension e on e.oid = d.refobjid
                 where d.deptype = 'e' and e.extname = 'citext' loop
                 if r.catalog = 'pg_proc' then
                   execute format('alter routine %s owner to managed_admin', r.objid::regprocedure);
                 elsif r.catalog = 'pg_operator' then
                   execute format('alter operator %s owner to managed_admin', r.objid::regoperator);
                 end if;
               end loop;
             end $$;
             grant create on schema public to managed_admin;
             -- Renamed by whoever could act as the administrator once.
             alter function citext_larger(citext, citext) rename to md5;",
        )
        .await
        .unwrap();
    direct
        .batch_execute(
            "create table emails (e citext);
             insert into emails values ('Ann@Example.com');
             create table trail (id int);
             create sequence counter;
             create function sum_and_note(int, int) returns int language sql as
               'insert into trail values (1); select $1 + $2';
             create aggregate public.every(int) (sfunc = sum_and_note, stype = int, initcond = '0');
             create operator public.### (rightarg = regclass, function = nextval);
             create function public.upper(a int, b int default nextval('counter')) returns int
               language sql as 'select $1';",
        )
        .await
        .unwrap();
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    for (sql, expected) in [
        ("select count(*) from emails where e = 'ann@example.com'", 1),
        ("select count(*) from customers where id = 1", 1),
        ("select count(*) from emails where e like 'ann%'", 1),
        (
            "select length(replace(e, 'Ann', 'Bo'))::int8 from emails",
            14,
        ),
        ("select strpos(e, 'EXAMPLE')::int8 from emails", 5),
    ] {
        let got = scalar_i64(&client, sql).await;
        assert_eq!(got, expected, "{sql}");
    }
    // An administrator's compiled code under a built-in's name.
    refused_by_no_calls(&client, "select md5(e, e) from emails").await;
    // A gateway role that may create roles may grant itself the
    // administrator's and change what it owns: nothing is trusted so.
    gw.db
        .superuser()
        .await
        .batch_execute(&format!("alter role {} createrole", gw.db.user))
        .await
        .unwrap();
    // DDL through the gateway makes it read the catalog again.
    client
        .batch_execute("create table later (a int)")
        .await
        .unwrap();
    refused_by_no_calls(
        &client,
        "select count(*) from emails where e = 'ann@example.com'",
    )
    .await;
    for sql in [
        "select every(id) from trail",
        "select ### 'counter'::regclass",
        // What its body reads, and its default argument writes.
        "select upper(5)",
    ] {
        refused_by_no_calls(&client, sql).await;
    }
    assert_eq!(scalar_i64(&direct, "select count(*) from trail").await, 0);
    assert_eq!(
        scalar_i64(&direct, "select last_value from counter").await,
        1
    );
    assert!(!direct
        .query_one("select is_called from counter", &[])
        .await
        .unwrap()
        .get::<_, bool>(0));
    gw.stop().await;
}

/// Sends `sql` as one Query and checks that policy `no-calls` refused it.
async fn refused_by_no_calls(client: &tokio_postgres::Client, sql: &str) {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("{sql}: not refused"),
        Err(e) => assert!(
            db_message(&e).contains("no-calls"),
            "{sql}: {}",
            db_message(&e)
        ),
    }
}

/// Found in attack: code the gateway cannot see (the SQL `query_to_xml`
/// runs) turned `standard_conforming_strings` off on the target, and a
/// query pipelined before the gateway heard of it was read there as other
/// statements. A `'...'` string with a backslash before a quote, the only
/// text the two readings split apart, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_read_otherwise_without_standard_conforming_strings_is_refused() {
    let gw = Gateway::start(TestDb::create("e2e_backslash_quote", SEED).await).await;
    // In the group that writes, and sees values in clear.
    let erin = gw.token("erin@example.com", &["eng", "pii-readers"]);
    let mut raw = RawClient::connect(&gw, &erin).await;
    raw.send(&[
        raw::parse(
            "",
            "select query_to_xml('select set_config(''standard_conforming_strings'', ''off'', false)', true, false, '')",
        ),
        raw::bind("", "", 0),
        raw::execute(""),
        raw::query("select 'a\\' || ' ; create table pwned_38d (x int); select ' as x -- '"),
        raw::sync(),
    ])
    .await;
    let answers = raw_text(&raw.until_ready().await);
    assert!(answers.contains("backslash before a quote"), "{answers}");
    let direct = gw.db.direct().await;
    assert_eq!(
        scalar_i64(
            &direct,
            "select count(*) from pg_class where relname = 'pwned_38d'"
        )
        .await,
        0,
        "{answers}"
    );
    // Round 38f: the settings changed by an UPDATE of pg_settings; and an
    // E'...' string whose backslashes pair otherwise after a byte that
    // SJIS reads as the first of a character with the next.
    let alice = gw.token("alice@example.com", &["eng"]);
    let out = gw.psql(
        &alice,
        &[
            "-c",
            "update pg_settings set setting = 'SJIS' where name = 'client_encoding'",
        ],
    );
    assert!(
        stderr(&out).contains("changes settings it cannot name"),
        "{}",
        stderr(&out)
    );
    let out = gw.psql(
        &alice,
        &[
            "-c",
            "select E'\u{c1}\\\\\\' ; create table pwned_38f as select * from customers; select ', ' -- '",
        ],
    );
    assert!(
        stderr(&out).contains("backslash before a quote"),
        "{}",
        stderr(&out)
    );
    gw.stop().await;
}
