//! Session recordings end to end: sessions made with real `psql` and
//! `pgbench`, listed and replayed with the real binary, verified, tampered
//! with, and recovered after the gateway is killed mid-session.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn cli(gw: &Gateway, args: &[&str]) -> std::process::Output {
    gw.cli(args)
}

/// The one recording whose session `principal` opened, by `portcullis sessions`.
fn session_of(gw: &Gateway, principal: &str) -> String {
    let out = cli(gw, &["sessions", "--user", principal]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&out);
    let ids: Vec<&str> = listed
        .lines()
        .filter(|l| l.contains(principal))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids.len(), 1, "{listed}");
    ids[0].to_string()
}

fn all_chunk_bytes(gw: &Gateway) -> Vec<u8> {
    let mut bytes = Vec::new();
    let dir = gw.config.gateway.data_dir.join("recordings");
    for session in std::fs::read_dir(dir).unwrap() {
        for file in std::fs::read_dir(session.unwrap().path()).unwrap() {
            bytes.extend(std::fs::read(file.unwrap().path()).unwrap());
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psql_session_replays_as_the_client_saw_it_masked_and_verifies() {
    let gw = Gateway::start(TestDb::create("rec_psql", SEED).await).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let out = gw.psql(
        &alice,
        &[
            "-c",
            "select name, email from customers order by id limit 2",
            "-c",
            "delete from orders",
        ],
    );
    let seen = stdout(&out);
    assert!(seen.contains("j***@example.com"), "{seen}");
    assert!(
        stderr(&out).contains("no-unbounded-writes"),
        "{}",
        stderr(&out)
    );
    // The session ends; its recording is sealed.
    let id = session_of(&gw, "alice@example.com");
    // Its end carries the sealed recording's hash.
    gw.audit_entry_within(50, |e| {
        e["event"] == "session.end" && e["session"] == id.as_str()
    })
    .await;
    let replay = cli(&gw, &["replay", &id, "--speed", "0"]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    let replayed = stdout(&replay);
    // Every row psql printed is in the replay, as printed.
    for line in seen
        .lines()
        .filter(|l| l.contains('|') && !l.contains("name"))
    {
        assert!(
            replayed.contains(line.trim_end()),
            "{line:?} not in\n{replayed}"
        );
    }
    assert!(replayed.contains("select name, email from customers order by id limit 2"));
    assert!(replayed.contains("(2 rows)"), "{replayed}");
    assert!(
        replayed.contains("deny query by no-unbounded-writes"),
        "{replayed}"
    );
    assert!(
        replayed.contains("ERROR:  denied by policy `no-unbounded-writes`"),
        "{replayed}"
    );
    // Masked in the recording too: the clear value is nowhere on disk.
    let clear = scalar_text(
        &gw.db.direct().await,
        "select email from customers order by id limit 1",
    )
    .await;
    assert!(!seen.contains(&clear));
    let bytes = all_chunk_bytes(&gw);
    assert!(
        !bytes.windows(clear.len()).any(|w| w == clear.as_bytes()),
        "a clear value in the recording"
    );

    let verified = cli(&gw, &["recording", "verify", &id]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert!(stdout(&verified).contains("intact"));
    // The audit log links the session to the recording's final hash.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            gw.config
                .gateway
                .data_dir
                .join("recordings")
                .join(&id)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let audit = stdout(&cli(&gw, &["audit", "tail", "-n", "50", "--json"]));
    let end = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["entry"]["event"] == "session.end" && e["entry"]["session"] == id.as_str())
        .expect("a session.end entry");
    assert_eq!(
        end["entry"]["recording"]["final_hash"],
        manifest["final_hash"]
    );

    // Tampering is named, with a non-zero exit.
    let chunk = gw
        .config
        .gateway
        .data_dir
        .join("recordings")
        .join(&id)
        .join("000001.chunk");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&chunk, bytes).unwrap();
    let tampered = cli(&gw, &["recording", "verify", &id]);
    assert!(!tampered.status.success());
    assert!(
        stderr(&tampered).contains("chunk 1 was changed"),
        "{}",
        stderr(&tampered)
    );
    // Not played, with a non-zero exit, unless asked for: then under a
    // warning, on the terminal and on stderr.
    let refused = cli(&gw, &["replay", &id, "--speed", "0"]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    assert!(stdout(&refused).is_empty(), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("does not verify: chunk 1 was changed")
            && stderr(&refused).contains("--unverified"),
        "{}",
        stderr(&refused)
    );
    let forced = cli(&gw, &["replay", &id, "--speed", "0", "--unverified"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(
        stdout(&forced).starts_with("-- WARNING: this recording does not verify"),
        "{}",
        stdout(&forced)
    );
    assert!(stderr(&forced).contains("WARNING"), "{}", stderr(&forced));
    // A sealed recording cut short lost its end, not its session: it is
    // not said to be running.
    assert!(
        !stdout(&forced).contains("still running"),
        "{}",
        stdout(&forced)
    );

    // With its manifest gone, replay refuses too, and no asciicast is made.
    let dir = gw.config.gateway.data_dir.join("recordings").join(&id);
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    let refused = cli(&gw, &["replay", &id, "--speed", "0"]);
    assert!(
        !refused.status.success()
            && stderr(&refused).contains("the session ended but its manifest is gone"),
        "{}",
        stderr(&refused)
    );
    let cast = cli(&gw, &["replay", &id, "--asciicast"]);
    assert!(!cast.status.success());
    assert!(
        stderr(&cast).contains("does not verify"),
        "{}",
        stderr(&cast)
    );
    std::fs::write(dir.join("manifest.json"), b"{").unwrap();
    let refused = cli(&gw, &["replay", &id, "--speed", "0"]);
    assert!(
        !refused.status.success() && stderr(&refused).contains("its manifest cannot be read"),
        "{}",
        stderr(&refused)
    );
    gw.stop().await;
}

async fn scalar_text(client: &tokio_postgres::Client, sql: &str) -> String {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_sessions_are_recorded_one_statement_each() {
    let db = TestDb::create("rec_pgbench", "").await;
    pgbench_init(&db);
    let gw = Gateway::start(db).await;
    let bob = gw.token("bob@example.com", &["eng"]);
    let out = gw.pgbench(
        "bob",
        &bob,
        &[
            "-n", "-c", "2", "-j", "2", "-t", "40", "-M", "prepared", "-S",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listed = stdout(&cli(
        &gw,
        &["sessions", "--user", "bob@example.com", "--since", "1h"],
    ));
    // pgbench first checks its tables on a connection of its own; then one
    // session per client: a Parse and 40 Executes each.
    let all: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(all.len(), 3, "{listed}");
    let clients: Vec<&str> = listed
        .lines()
        .filter(|l| l.contains(" 41 statements"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(clients.len(), 2, "{listed}");
    for id in all {
        let verified = cli(&gw, &["recording", "verify", id]);
        assert!(verified.status.success(), "{}", stderr(&verified));
    }
    for id in clients {
        let replay = stdout(&cli(&gw, &["replay", id, "--speed", "0"]));
        assert_eq!(replay.matches("allow execute").count(), 40, "{replay}");
        // Each execution with its parameter (pgbench's random aid).
        assert_eq!(replay.matches("-- $1 = ").count(), 40, "{replay}");
        assert_eq!(replay.matches("(1 row)\n").count(), 40, "{replay}");
    }
    gw.stop().await;
}

/// A gateway run as its own process (`portcullis serve`), so that a test
/// can kill it and start it again on the same data directory.
struct Served {
    config: std::path::PathBuf,
    pg_port: u16,
    admin_port: u16,
    dir: tempfile::TempDir,
}

impl Served {
    fn new(db: &TestDb, extra: &str) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let (pg_port, admin_port) = (free_port(), free_port());
        let options = Options {
            pg_listen: Some(format!("127.0.0.1:{pg_port}")),
            admin_listen: Some(format!("127.0.0.1:{admin_port}")),
            extra: extra.into(),
            ..Options::default()
        };
        let config = write_config(dir.path(), db, &options);
        Served {
            config,
            pg_port,
            admin_port,
            dir,
        }
    }

    /// Starts the gateway and waits until it is ready.
    async fn start(&self) -> std::process::Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            let ok = Command::new("curl")
                .args([
                    "-fsS",
                    &format!("http://127.0.0.1:{}/readyz", self.admin_port),
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return child;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the gateway did not start");
    }

    /// The binary with `args` and `--config`.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// A tokio-postgres session through the gateway as `user`.
    async fn connect(
        &self,
        user: &str,
        token: &str,
    ) -> (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ) {
        tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} dbname=demo user={user} password={token}",
                self.pg_port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap()
    }

    fn token(&self, user: &str) -> String {
        stdout(&self.cli(&["dev", "token", "--user", user, "--groups", "eng"]))
            .trim()
            .to_string()
    }
}

fn stop(mut gateway: std::process::Child, signal: &str) {
    Command::new("kill")
        .args([signal, &gateway.id().to_string()])
        .status()
        .unwrap();
    gateway.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_recording_resealed_with_its_start_moved_does_not_verify() {
    use portcullis_record::format::{self, Kind};
    let db = TestDb::create("rec_moved", SEED).await;
    let served = Served::new(&db, "");
    let gateway = served.start().await;
    let token = served.token("carol@example.com");
    let (client, connection) = served.connect("carol", &token).await;
    let running = tokio::spawn(connection);
    client.simple_query("select 'seen'").await.unwrap();
    drop(client);
    let _ = running.await;
    // Ended, sealed and in the audit log on the gateway's side first.
    let listed = stdout(&served.cli(&["sessions"]));
    let id = listed.split_whitespace().next().unwrap().to_string();
    let mut verified = served.cli(&["recording", "verify", &id]);
    for _ in 0..100 {
        if verified.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        verified = served.cli(&["recording", "verify", &id]);
    }
    assert!(verified.status.success(), "{listed}\n{}", stderr(&verified));
    stop(gateway, "-TERM");

    // Someone who can write the recordings: the manifest goes, and the
    // start moves a day later, out of any window read from the recording.
    let dir = served.dir.path().join("data/recordings").join(&id);
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    let chunk = dir.join("000001.chunk");
    let records = format::decode_all(&std::fs::read(&chunk).unwrap()).unwrap();
    let mut bytes = Vec::new();
    for record in records {
        let mut payload = record.payload.clone();
        if record.kind == Kind::Start {
            let mut start: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            start["started_ms"] = (start["started_ms"].as_u64().unwrap() + 86_400_000).into();
            payload = serde_json::to_vec(&start).unwrap();
        }
        format::encode(&mut bytes, record.kind, record.t_ms, &payload);
    }
    std::fs::write(&chunk, bytes).unwrap();
    // The next start seals it again, as after a crash, and signs it.
    let gateway = served.start().await;
    let verify = served.cli(&["recording", "verify", &id]);
    assert!(!verify.status.success(), "{}", stdout(&verify));
    assert!(
        stderr(&verify).contains("it was replaced"),
        "{}",
        stderr(&verify)
    );
    stop(gateway, "-TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_session_loses_nothing_and_finishes_the_upload_after_restart() {
    let db = TestDb::create("rec_kill", SEED).await;
    // Stored in S3: the data directory is only the spool.
    let (endpoint, bucket) = s3_bucket("crash");
    let served = Served::new(
        &db,
        &format!(
            "[recording.s3]\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\naccess_key_id = {{ file = \"s3-key\" }}\nsecret_access_key = {{ file = \"s3-key\" }}\n"
        ),
    );
    std::fs::write(served.dir.path().join("s3-key"), "k").unwrap();
    let gateway = served.start().await;
    let token = served.token("carol@example.com");
    let (client, connection) = served.connect("carol", &token).await;
    tokio::spawn(connection);
    let rows = client
        .simple_query("select id, total_cents from orders order by id")
        .await
        .unwrap();
    assert!(rows.len() > 2);
    client
        .simple_query("select 'before the crash'")
        .await
        .unwrap();

    // Killed, not stopped: nothing is sealed.
    stop(gateway, "-9");
    let gateway = served.start().await;
    // Sealed at the start, then uploaded: the spool empties.
    assert!(
        emptied(&served.dir.path().join("data/recordings")).await,
        "not uploaded after the restart"
    );

    let listed = stdout(&served.cli(&["sessions"]));
    let id = listed.split_whitespace().next().unwrap().to_string();
    assert!(
        listed.contains("the gateway stopped during the session"),
        "{listed}"
    );
    let replayed = stdout(&served.cli(&["replay", &id, "--speed", "0"]));
    assert!(replayed.contains("select 'before the crash'"), "{replayed}");
    assert!(replayed.contains(" before the crash"), "{replayed}");
    assert!(replayed.contains("(4 rows)"), "{replayed}");
    let verify = served.cli(&["recording", "verify", &id]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    assert!(
        stdout(&verify).contains("sealed after the gateway stopped"),
        "{}",
        stdout(&verify)
    );
    stop(gateway, "-KILL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_past_their_retention_are_deleted_and_the_audit_log_says_so() {
    let db = TestDb::create("rec_retention", SEED).await;
    let served = Served::new(&db, "[recording]\nretention = \"1s\"\n");
    let gateway = served.start().await;
    let token = served.token("dave@example.com");
    let out = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &served.pg_port.to_string(),
            "-U",
            "dave",
            "-d",
            "demo",
            "-c",
            "select 1",
        ])
        .env("PGPASSWORD", &token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listed = stdout(&served.cli(&["sessions"]));
    let id = listed.split_whitespace().next().unwrap().to_string();
    assert!(id.starts_with("pg-"), "{listed}");
    stop(gateway, "-TERM");

    // Older than a second at the next start: deleted, and audited.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let gateway = served.start().await;
    // The sweep runs at start, beside the listeners.
    let mut gone = false;
    for _ in 0..100 {
        if stdout(&served.cli(&["sessions"])).contains("no recorded sessions") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the recording outlived its retention");
    // The entry is written ahead: once the recording is gone, it is there.
    let audit = stdout(&served.cli(&["audit", "tail", "-n", "100", "--json"]));
    let entries: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ended = entries
        .iter()
        .find(|e| e["entry"]["event"] == "session.end" && e["entry"]["session"] == id.as_str())
        .expect("the session's end");
    let deleted = entries
        .iter()
        .find(|e| e["entry"]["event"] == "recording.deleted")
        .expect("a recording.deleted entry");
    assert_eq!(deleted["entry"]["recording"], id.as_str());
    assert_eq!(
        deleted["entry"]["final_hash"],
        ended["entry"]["recording"]["final_hash"]
    );
    stop(gateway, "-KILL");
}

/// Keys in `bucket` under `prefix`, from the S3 server's own listing.
fn s3_keys(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            &format!("{endpoint}/{bucket}?list-type=2&prefix={prefix}"),
        ])
        .output()
        .unwrap();
    stdout(&out)
        .split("<Key>")
        .skip(1)
        .filter_map(|part| part.split("</Key>").next().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_go_to_s3_while_the_session_runs_and_replay_from_there() {
    let (endpoint, bucket) = s3_bucket("recordings");
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("key"), "test-key").unwrap();
    std::fs::write(secrets.path().join("secret"), "test-secret").unwrap();
    let extra = format!(
        r#"[recording]
chunk_bytes = 4096

[recording.s3]
bucket = "{bucket}"
endpoint = "{endpoint}"
prefix = "gw1"
access_key_id = {{ file = "{key}" }}
secret_access_key = {{ file = "{secret}" }}
"#,
        key = secrets.path().join("key").display(),
        secret = secrets.path().join("secret").display(),
    );
    let gw = Gateway::start_with(
        TestDb::create("rec_s3", SEED).await,
        Options {
            extra,
            ..Options::default()
        },
    )
    .await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    // More than a chunk of results.
    client
        .simple_query("select g, repeat('x', 100) from generate_series(1, 200) g")
        .await
        .unwrap();
    client.simple_query("select 'still running'").await.unwrap();
    // While the session runs, its sealed chunks are stored.
    let mut stored = Vec::new();
    for _ in 0..50 {
        stored = s3_keys(&endpoint, &bucket, "gw1/");
        if stored.iter().any(|k| k.ends_with("/000001.chunk")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        stored.iter().any(|k| k.ends_with("/000001.chunk")),
        "{stored:?}"
    );
    assert!(!stored.iter().any(|k| k.ends_with("manifest.json")));
    drop(client);

    // Ended: all of it stored, and the spool emptied.
    let local = gw.config.gateway.data_dir.join("recordings");
    assert!(emptied(&local).await, "the spool still holds a recording");
    let stored = s3_keys(&endpoint, &bucket, "gw1/");
    let id = stored
        .iter()
        .find(|k| k.ends_with("/manifest.json"))
        .and_then(|k| k.split('/').nth(1))
        .expect("a stored manifest")
        .to_string();

    // Listed, replayed and verified from the store.
    let listed = stdout(&cli(&gw, &["sessions"]));
    assert!(listed.contains(&id), "{listed}");
    let replay = cli(&gw, &["replay", &id, "--speed", "0"]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    let replayed = stdout(&replay);
    assert!(replayed.contains("(200 rows)"), "{replayed}");
    assert!(replayed.contains(" still running"), "{replayed}");
    let verified = cli(&gw, &["recording", "verify", &id]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_follow_plays_a_running_session_until_it_ends() {
    let gw = Gateway::start(TestDb::create("rec_follow", SEED).await).await;
    let erin = gw.token("erin@example.com", &["eng"]);
    let client = gw.connect(&erin).await.unwrap();
    client.simple_query("select 'first'").await.unwrap();
    let id = session_of(&gw, "erin@example.com");
    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["replay", &id, "--follow", "--speed", "0", "--config"])
        .arg(&gw.config_path)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    client
        .simple_query("select 'second, while followed'")
        .await
        .unwrap();
    drop(client);
    let output = tokio::time::timeout(Duration::from_secs(10), async {
        let status = follow.wait().await.unwrap();
        let mut text = String::new();
        use tokio::io::AsyncReadExt;
        follow
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .await
            .unwrap();
        (status, text)
    })
    .await
    .expect("--follow ends with the session");
    assert!(output.0.success());
    let text = output.1;
    assert!(text.contains(" first\n"), "{text}");
    assert!(text.contains(" second, while followed\n"), "{text}");
    assert!(text.contains("session ended"), "{text}");
    gw.stop().await;
}
