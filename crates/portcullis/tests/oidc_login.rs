//! A person's whole path with a real OpenID provider: `portcullis login`
//! (authorization code + PKCE through the browser), then `portcullis connect`
//! starts psql through the gateway with the cached token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../portcullis-identity/tests/support/mod.rs"]
mod oidc;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_then_connect_through_the_gateway() {
    let provider = oidc::OidcProvider::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("client-secret");
    std::fs::write(&secret_file, oidc::CLIENT_SECRET).unwrap();
    let gw = Gateway::start_with(
        TestDb::create("e2e_oidc", SEED).await,
        Options {
            extra: format!(
                "[[identity.oidc]]\nissuer = \"{}\"\naudience = [\"portcullis\"]\nclient_id = \"portcullis\"\nclient_secret = {{ file = \"{}\" }}\n",
                provider.issuer,
                secret_file.display()
            ),
            ..Options::default()
        },
    )
    .await;
    let home = tempfile::tempdir().unwrap();

    // `portcullis login` prints the address to open; the in-test browser
    // signs in on the provider's pages as dba@example.com.
    let mut login = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["login", "--config"])
        .arg(&gw.config_path)
        .env("XDG_CONFIG_HOME", home.path())
        .env("PATH", "/usr/bin:/bin")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(login.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("login printed no address");
        if let Some(url) = line.trim().strip_prefix("http") {
            break format!("http{url}");
        }
    };
    let mut browser = oidc::Browser::new();
    let first = browser.get(&url::Url::parse(&url).unwrap()).await;
    let last = browser.sign_in_from(first, "dba@example.com").await;
    assert_eq!(last.url.path(), "/callback");
    let status = login.wait().await.unwrap();
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push_str(&line);
    }
    assert!(status.success(), "{rest}");
    let cache = home.path().join("portcullis/tokens.json");
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token cache must be private");

    // `portcullis connect` runs psql with the token in its environment (the
    // test gateway listens on a port of its own, given to psql with -p).
    let port = gw.pg_addr.port().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["connect", "--config"])
        .arg(&gw.config_path)
        .args([
            "demo",
            "--",
            "-p",
            &port,
            "-X",
            "-tA",
            "-c",
            "create table made_by_dba (x int)",
            "-c",
            "select count(*) from customers",
        ])
        .env("XDG_CONFIG_HOME", home.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains('3'), "{}", stdout(&out));

    // The audit log knows who it was, from the provider's token.
    let entries = gw.audit_entries(20);
    let ddl = entries
        .iter()
        .find(|e| e["statement"]["command"] == "CREATE TABLE")
        .expect("the DDL statement is audited");
    assert_eq!(ddl["principal"], "dba@example.com");
    assert_eq!(ddl["issuer"], provider.issuer.as_str());
    assert_eq!(ddl["decision"]["effect"], "allow");
    gw.stop().await;
}
