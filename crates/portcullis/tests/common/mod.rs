//! The end-to-end harness: a real PostgreSQL (started by `scripts/test.sh`),
//! the real gateway started in-process from a real config file, and real
//! clients (`psql`, `pgbench`, `tokio-postgres`, the `portcullis` binary).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_app::Running;
use portcullis_config::Config;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
    })
}

/// A database of its own for one test, owned by a login role of its own.
pub struct TestDb {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    pub password: String,
}

async fn superuser() -> tokio_postgres::Client {
    let conn = format!(
        "host={} port={} user={} password={} dbname=postgres",
        env("PORTCULLIS_TEST_PG_HOST"),
        env("PORTCULLIS_TEST_PG_PORT"),
        env("PORTCULLIS_TEST_PG_SUPERUSER"),
        env("PORTCULLIS_TEST_PG_SUPERPASSWORD"),
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

impl TestDb {
    /// Creates (or recreates) database `name` with owner `name_app`, and runs `seed` in it.
    pub async fn create(name: &str, seed: &str) -> TestDb {
        TestDb::create_as(name, &format!("{name}_app"), "scram-sha-256", seed).await
    }

    /// Like [`TestDb::create`], with the owner role's name and how its
    /// password is stored (`scram-sha-256` or `md5`). The test cluster logs
    /// in `portcullis_md5` with md5 and `portcullis_password` with a cleartext password.
    pub async fn create_as(name: &str, user: &str, encryption: &str, seed: &str) -> TestDb {
        let admin = superuser().await;
        let user = user.to_string();
        let password = format!("pw-{name}-{}", std::process::id());
        admin
            .batch_execute(&format!("drop database if exists {name} with (force)"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("drop role if exists {user}"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!(
                "set password_encryption = '{encryption}'; create role {user} login password '{password}'"
            ))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("create database {name} owner {user}"))
            .await
            .unwrap();
        let db = TestDb {
            host: env("PORTCULLIS_TEST_PG_HOST"),
            port: env("PORTCULLIS_TEST_PG_PORT").parse().unwrap(),
            name: name.to_string(),
            user,
            password,
        };
        db.direct().await.batch_execute(seed).await.unwrap();
        db
    }

    /// A superuser's client to the database, bypassing the gateway.
    pub async fn superuser(&self) -> tokio_postgres::Client {
        let conn = format!(
            "host={} port={} user={} password={} dbname={}",
            self.host,
            self.port,
            env("PORTCULLIS_TEST_PG_SUPERUSER"),
            env("PORTCULLIS_TEST_PG_SUPERPASSWORD"),
            self.name
        );
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    /// A client straight to the database, bypassing the gateway.
    pub async fn direct(&self) -> tokio_postgres::Client {
        let conn = format!(
            "host={} port={} user={} password={} dbname={}",
            self.host, self.port, self.user, self.password, self.name
        );
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

pub const SEED: &str = include_str!("../../../../examples/quickstart/seed.sql");

/// The quickstart policies as shipped, with their `@approval` forbids.
pub fn quickstart_policies_as_shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/policies")
}

/// The quickstart policies with every `@approval(...)` line taken out: their
/// approvable forbids deny outright, so a test of denials never waits for a
/// reviewer. `approvals.rs` tests the shipped ones.
pub fn quickstart_policies() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(quickstart_policies_as_shipped()).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let text: String = if path.extension().is_some_and(|e| e == "cedar") {
                text.lines()
                    .filter(|line| !line.trim_start().starts_with("@approval("))
                    .map(|line| format!("{line}\n"))
                    .collect()
            } else {
                text
            };
            std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
        }
        dir
    })
    .path()
    .to_path_buf()
}

pub struct Gateway {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub config: Config,
    pub pg_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
    /// When the config has an `[ssh]` listener.
    pub ssh_addr: Option<std::net::SocketAddr>,
    pub db: TestDb,
    /// The policy directory made for the gateway, if one was.
    pub policy_dir: Option<tempfile::TempDir>,
}

pub struct Options {
    pub policies: PathBuf,
    /// The `[policy]` source instead of `dir = <policies>`, such as
    /// `git = { repo = "...", ref = "main" }`.
    pub policy_source: Option<String>,
    /// Appended at the end of the config.
    pub extra: String,
    /// Added to the `[postgres]` section.
    pub postgres_extra: String,
    /// Added to the `[[targets]]` entry.
    pub target_extra: String,
    pub busy_timeout_ms: u64,
    /// How often the policy source is polled (a directory is also watched).
    pub reload_interval_seconds: u64,
    /// The admin listener's address, when a test must know it in advance.
    pub admin_listen: Option<String>,
    /// The PostgreSQL listener's address, likewise.
    pub pg_listen: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policies: quickstart_policies(),
            policy_source: None,
            extra: String::new(),
            postgres_extra: String::new(),
            target_extra: String::new(),
            busy_timeout_ms: 5000,
            reload_interval_seconds: 1,
            admin_listen: None,
            pg_listen: None,
        }
    }
}

pub fn write_config(dir: &Path, db: &TestDb, options: &Options) -> PathBuf {
    let password_file = dir.join("target-password");
    std::fs::write(&password_file, format!("{}\n", db.password)).unwrap();
    let text = format!(
        r#"
[gateway]
data_dir = "data"

[admin]
listen = "{admin_listen}"

[postgres]
listen = "{pg_listen}"
{postgres_extra}

[identity.dev]

[policy]
{policy_source}
reload_interval_seconds = {reload}

[audit]
busy_timeout_ms = {busy}

[[targets]]
name = "demo"
kind = "postgres"
host = "{host}"
port = {port}
database = "{database}"
user = "{user}"
password = {{ file = "target-password" }}
labels = {{ env = "test" }}
{target_extra}
{extra}
"#,
        policy_source = options
            .policy_source
            .clone()
            .unwrap_or_else(|| format!("dir = \"{}\"", options.policies.display())),
        busy = options.busy_timeout_ms,
        admin_listen = options.admin_listen.as_deref().unwrap_or("127.0.0.1:0"),
        pg_listen = options.pg_listen.as_deref().unwrap_or("127.0.0.1:0"),
        reload = options.reload_interval_seconds,
        host = db.host,
        port = db.port,
        database = db.name,
        user = db.user,
        extra = options.extra,
        postgres_extra = options.postgres_extra,
        target_extra = options.target_extra,
    );
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, text).unwrap();
    path
}

impl Gateway {
    pub async fn start(db: TestDb) -> Gateway {
        Gateway::start_with(db, Options::default()).await
    }

    pub async fn start_with(db: TestDb, options: Options) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config_path = write_config(dir.path(), &db, &options);
        let config = Config::load(&config_path).unwrap();
        let running = portcullis_app::start(config.clone(), &config_path)
            .await
            .unwrap();
        Gateway {
            pg_addr: running.pg_addr.unwrap(),
            admin_addr: running.admin_addr.unwrap(),
            ssh_addr: running.ssh_addr,
            running: Some(running),
            dir,
            config_path,
            config,
            db,
            policy_dir: None,
        }
    }

    /// A gateway deciding by the Cedar policy `cedar` alone.
    pub async fn start_with_policy(db: TestDb, cedar: &str) -> Gateway {
        let policies = tempfile::tempdir().unwrap();
        std::fs::write(policies.path().join("policy.cedar"), cedar).unwrap();
        let mut gw = Gateway::start_with(
            db,
            Options {
                policies: policies.path().to_path_buf(),
                ..Options::default()
            },
        )
        .await;
        // Kept as long as the gateway, which watches it.
        gw.policy_dir = Some(policies);
        gw
    }

    pub fn token(&self, user: &str, groups: &[&str]) -> String {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        portcullis_app::commands::dev_token(&self.config, user, &groups, Duration::from_secs(600))
            .unwrap()
    }

    pub fn conn_string(&self, token: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=demo user=someone password='{token}'",
            self.pg_addr.port()
        )
    }

    pub async fn connect(
        &self,
        token: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.conn_string(token), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Runs psql through the gateway; the token goes in the environment.
    pub fn psql(&self, token: &str, args: &[&str]) -> Output {
        Command::new("psql")
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &self.pg_addr.port().to_string(),
                "-U",
                "alice",
                "-d",
                "demo",
            ])
            .args(args)
            .env("PGPASSWORD", token)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql runs")
    }

    /// Runs pgbench through the gateway as `user`, with `args` (its options
    /// and script); the token goes in the environment.
    pub fn pgbench(&self, user: &str, token: &str, args: &[&str]) -> Output {
        Command::new("pgbench")
            .args(args)
            .args(["-h", "127.0.0.1", "-p", &self.pg_addr.port().to_string()])
            .args(["-U", user, "demo"])
            .env("PGPASSWORD", token)
            .output()
            .expect("pgbench runs")
    }

    /// The last `n` audit entries (the `entry` of each line of the real
    /// binary's `audit tail --json`), oldest first.
    pub fn audit_entries(&self, n: usize) -> Vec<serde_json::Value> {
        let out = self.cli(&["audit", "tail", "-n", &n.to_string(), "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|line| {
                let line: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("`audit tail --json` printed {line:?}: {e}"));
                line["entry"].clone()
            })
            .collect()
    }

    /// Waits up to 30 s for an entry among the last `n` that `found`
    /// accepts, and returns it. Some entries (a session's end) are written
    /// once the gateway sees the client go, which may be after the client
    /// has exited.
    pub async fn audit_entry_within(
        &self,
        n: usize,
        found: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        for _ in 0..150 {
            if let Some(entry) = self.audit_entries(n).into_iter().find(|e| found(e)) {
                return entry;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "no such audit entry within 30 s: {:?}",
            self.audit_entries(n)
        );
    }

    pub fn audit_db(&self) -> PathBuf {
        portcullis_app::audit_path(&self.config.gateway.data_dir)
    }

    /// Runs the real binary with `args`, plus `--config` for this gateway.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .output()
            .expect("portcullis runs")
    }

    /// Writes the admin listener's real address into the config file (it
    /// says port 0), for commands that ask the running gateway.
    pub fn pin_admin_listen(&self) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let pinned = text.replacen(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            &format!("[admin]\nlisten = \"{}\"", self.admin_addr),
            1,
        );
        assert_ne!(text, pinned, "no `[admin] listen` to pin");
        std::fs::write(&self.config_path, pinned).unwrap();
    }

    /// What `/api/v1/status` says now.
    pub async fn status(&self) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sS", &format!("http://{}/api/v1/status", self.admin_addr)])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Polls `/api/v1/status` until `done` says yes (10 s at most).
    pub async fn wait_for<F: Fn(&serde_json::Value) -> bool>(
        &self,
        what: &str,
        done: F,
    ) -> serde_json::Value {
        for _ in 0..40 {
            let status = self.status().await;
            if done(&status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("timed out waiting for {what}: {}", self.status().await);
    }

    /// Waits until a version other than `enforced` is enforced, and gives it.
    pub async fn wait_for_version_after(&self, what: &str, enforced: &str) -> String {
        self.wait_for(what, |s| s["policy_version"] != enforced)
            .await["policy_version"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until a newer policy version is refused for a reason that
    /// holds `why`, and checks that `enforced` stays enforced.
    pub async fn wait_for_refusal(&self, why: &str, enforced: &str) -> serde_json::Value {
        let status = self
            .wait_for(&format!("a refusal for `{why}`"), |s| {
                s["policy_error"].as_str().is_some_and(|e| e.contains(why))
            })
            .await;
        assert_eq!(status["policy_version"], enforced, "{status}");
        status
    }

    /// Stops the gateway and starts it again on the same configuration file
    /// (with the admin listener's address, if pinned) and data directory.
    pub async fn restart(mut self) -> Gateway {
        if let Some(running) = self.running.take() {
            running.shutdown().await.unwrap();
        }
        self.config = Config::load(&self.config_path).unwrap();
        let running = portcullis_app::start(self.config.clone(), &self.config_path)
            .await
            .unwrap();
        self.pg_addr = running.pg_addr.unwrap();
        self.admin_addr = running.admin_addr.unwrap();
        self.ssh_addr = running.ssh_addr;
        self.running = Some(running);
        self
    }

    /// Stops the gateway; the returned directory keeps its data until dropped.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(running) = self.running.take() {
            running.shutdown().await.unwrap();
        }
        self.dir
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The SQLSTATE of a tokio-postgres error, or a panic with the error.
pub fn sqlstate(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.code().code().to_string(),
        None => panic!("not a database error: {error:?}"),
    }
}

pub fn db_message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_else(|| format!("{error:?}"))
}

/// The single `int8` a query returns.
pub async fn scalar_i64(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// A client that speaks the wire protocol message by message, for what
/// `psql` and drivers never send (a Parse that the target refuses, then
/// another of the same name; an Execute of a portal a transaction ended).
pub struct RawClient {
    stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
}

/// One message from the gateway: its tag and body.
pub type RawMessage = (u8, Vec<u8>);

impl RawClient {
    /// Starts a session on `demo` with `token` as the password.
    pub async fn connect(gw: &Gateway, token: &str) -> RawClient {
        use tokio::io::AsyncWriteExt;
        let stream = tokio::net::TcpStream::connect(gw.pg_addr).await.unwrap();
        let mut client = RawClient {
            stream,
            buf: bytes::BytesMut::new(),
        };
        let mut out = bytes::BytesMut::new();
        portcullis_pg::codec::build::startup(&mut out, &[("user", "alice"), ("database", "demo")]);
        client.stream.write_all(&out).await.unwrap();
        let auth = client.next().await;
        assert_eq!(auth.0, b'R', "{auth:?}");
        let mut out = bytes::BytesMut::new();
        portcullis_pg::codec::build::password(&mut out, token);
        client.stream.write_all(&out).await.unwrap();
        let messages = client.until_ready().await;
        assert!(messages.iter().all(|(tag, _)| *tag != b'E'), "{messages:?}");
        client
    }

    /// Sends messages, each given as its tag and body.
    pub async fn send(&mut self, messages: &[(u8, Vec<u8>)]) {
        use tokio::io::AsyncWriteExt;
        let mut out = Vec::new();
        for (tag, body) in messages {
            out.push(*tag);
            out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
            out.extend_from_slice(body);
        }
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn next(&mut self) -> RawMessage {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let frame = self.buf.split_to(len + 1);
                    return (frame[0], frame[5..].to_vec());
                }
            }
            let n =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("the gateway answers")
                    .unwrap();
            assert!(n > 0, "the gateway closed the connection");
        }
    }

    /// Every message up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<RawMessage> {
        let mut messages = Vec::new();
        loop {
            let message = self.next().await;
            let ready = message.0 == b'Z';
            messages.push(message);
            if ready {
                return messages;
            }
        }
    }
}

/// Message bodies of the extended protocol.
pub mod raw {
    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    pub fn parse(name: &str, sql: &str) -> (u8, Vec<u8>) {
        let mut body = Vec::new();
        cstr(&mut body, name);
        cstr(&mut body, sql);
        body.extend_from_slice(&0i16.to_be_bytes());
        (b'P', body)
    }

    /// A Bind of `statement` to `portal`, no parameters, every result column in `format`.
    pub fn bind(portal: &str, statement: &str, format: i16) -> (u8, Vec<u8>) {
        let mut body = Vec::new();
        cstr(&mut body, portal);
        cstr(&mut body, statement);
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&format.to_be_bytes());
        (b'B', body)
    }

    /// A Parse that gives its parameters' types.
    pub fn parse_typed(name: &str, sql: &str, types: &[u32]) -> (u8, Vec<u8>) {
        let mut body = Vec::new();
        cstr(&mut body, name);
        cstr(&mut body, sql);
        body.extend_from_slice(&(types.len() as i16).to_be_bytes());
        for oid in types {
            body.extend_from_slice(&oid.to_be_bytes());
        }
        (b'P', body)
    }

    /// A Bind of `statement` to `portal` with text parameters, results in text.
    pub fn bind_text(portal: &str, statement: &str, parameters: &[&str]) -> (u8, Vec<u8>) {
        let mut body = Vec::new();
        cstr(&mut body, portal);
        cstr(&mut body, statement);
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&(parameters.len() as i16).to_be_bytes());
        for parameter in parameters {
            body.extend_from_slice(&(parameter.len() as i32).to_be_bytes());
            body.extend_from_slice(parameter.as_bytes());
        }
        body.extend_from_slice(&0i16.to_be_bytes());
        (b'B', body)
    }

    pub fn execute(portal: &str) -> (u8, Vec<u8>) {
        let mut body = Vec::new();
        cstr(&mut body, portal);
        body.extend_from_slice(&0i32.to_be_bytes());
        (b'E', body)
    }

    pub fn sync() -> (u8, Vec<u8>) {
        (b'S', Vec::new())
    }

    pub fn query(sql: &str) -> (u8, Vec<u8>) {
        let mut body = Vec::new();
        cstr(&mut body, sql);
        (b'Q', body)
    }

    /// A Close (`kind` b'S' for a statement, b'P' for a portal).
    pub fn close(kind: u8, name: &str) -> (u8, Vec<u8>) {
        let mut body = vec![kind];
        cstr(&mut body, name);
        (b'C', body)
    }

    /// A Describe (`kind` b'S' for a statement, b'P' for a portal).
    pub fn describe(kind: u8, name: &str) -> (u8, Vec<u8>) {
        let mut body = vec![kind];
        cstr(&mut body, name);
        (b'D', body)
    }

    pub fn copy_data(data: &str) -> (u8, Vec<u8>) {
        (b'd', data.as_bytes().to_vec())
    }

    pub fn copy_done() -> (u8, Vec<u8>) {
        (b'c', Vec::new())
    }

    pub fn flush() -> (u8, Vec<u8>) {
        (b'H', Vec::new())
    }
}

/// Everything the messages say, lossily as text, to search for a value.
pub fn raw_text(messages: &[RawMessage]) -> String {
    messages
        .iter()
        .map(|(tag, body)| format!("{}:{}\n", char::from(*tag), String::from_utf8_lossy(body)))
        .collect()
}

/// The first column of the first row a simple query returns, as text.
pub async fn first_text(client: &tokio_postgres::Client, sql: &str) -> String {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no row from `{sql}`"))
}

/// `portcullis serve --config FILE`, expected to refuse to start: its stderr.
pub fn serve_refusal(config_path: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(config_path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the gateway started");
    let err = stderr(&out);
    assert!(err.contains("refuses to serve"), "{err}");
    err
}

/// `portcullis policy validate DIR`.
pub fn policy_validate(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["policy", "validate"])
        .arg(dir)
        .output()
        .unwrap()
}

impl RawClient {
    /// Writes bytes as they are; an error once the gateway has closed.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await
    }

    /// Whether the gateway closed the connection within `wait`, reading and
    /// dropping whatever it sends until then.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.buf.clear();
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }
}

/// `pgbench -i -s 1` in `db`, directly.
pub fn pgbench_init(db: &TestDb) {
    let init = Command::new("pgbench")
        .args([
            "-i",
            "-q",
            "-s",
            "1",
            "-h",
            &db.host,
            "-p",
            &db.port.to_string(),
            "-U",
            &db.user,
            &db.name,
        ])
        .env("PGPASSWORD", &db.password)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
}

/// A free TCP port on loopback, for a server a test starts later.
///
/// Taken below the kernel's range for outgoing connections (32768-60999 by
/// default): a port from that range, free now, can be taken by any client
/// connection before the server binds it. Each test process walks
/// 20000-31999 from a place of its own.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + start.wrapping_add(n) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}-{}", FIRST + COUNT - 1);
}

/// A new bucket on the test's S3 server (`scripts/test.sh` starts moto):
/// its endpoint and name.
pub fn s3_bucket(prefix: &str) -> (String, String) {
    let endpoint = env("PORTCULLIS_TEST_S3_ENDPOINT");
    let bucket = format!("{}-{}", prefix.replace('_', "-"), std::process::id());
    let made = Command::new("curl")
        .args(["-sS", "-f", "-X", "PUT", &format!("{endpoint}/{bucket}")])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    (endpoint, bucket)
}

/// Waits up to 10 s for `dir` to be empty (the recordings spool after
/// upload); whether it is.
pub async fn emptied(dir: &Path) -> bool {
    for _ in 0..50 {
        if std::fs::read_dir(dir).unwrap().next().is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::read_dir(dir).unwrap().next().is_none()
}
