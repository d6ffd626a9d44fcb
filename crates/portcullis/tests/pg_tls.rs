//! TLS on both sides: clients reach the gateway over TLS (and only over TLS
//! when the config says so); the gateway reaches the target over verified TLS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::process::Command;

/// A self-signed certificate for 127.0.0.1 in `dir`: (cert, key).
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("gw.crt"), dir.join("gw.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{}", stderr(&out));
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_use_tls_and_tokens_never_travel_in_cleartext_when_refused() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let gw = Gateway::start_with(
        TestDb::create("e2e_client_tls", SEED).await,
        Options {
            postgres_extra: format!(
                "tls = {{ cert = \"{}\", key = \"{}\" }}\ncleartext_password = \"never\"",
                cert.display(),
                key.display()
            ),
            ..Options::default()
        },
    )
    .await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let port = gw.pg_addr.port().to_string();
    let psql = |sslmode: &str| {
        Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={port} dbname=demo user=alice sslmode={sslmode} sslrootcert={}",
                cert.display()
            ))
            .args(["-X", "-tA", "-c", "select ssl from pg_stat_ssl where pid = pg_backend_pid()", "-c", "select 42"])
            .env("PGPASSWORD", &alice)
            .output()
            .unwrap()
    };
    let tls = psql("verify-full");
    assert!(tls.status.success(), "{}", stderr(&tls));
    assert!(stdout(&tls).contains("42"), "{}", stdout(&tls));
    let plain = psql("disable");
    assert!(!plain.status.success());
    assert!(
        stderr(&plain).contains("only over TLS"),
        "{}",
        stderr(&plain)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reaches_the_target_over_verified_tls() {
    let ca = env("PORTCULLIS_TEST_PG_CA");
    let gw = Gateway::start_with(
        TestDb::create("e2e_target_tls", SEED).await,
        Options {
            target_extra: format!("tls = \"verify-full\"\nca_file = \"{ca}\""),
            ..Options::default()
        },
    )
    .await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    let ssl: bool = client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the target session is not encrypted");
    let db = TestDb::create("e2e_target_tls_bad_ca", "").await;
    let _ = gw.stop().await;

    // A CA that did not sign the target's certificate: the session is refused.
    let certs = tempfile::tempdir().unwrap();
    let (other_ca, _) = self_signed(certs.path());
    let gw = Gateway::start_with(
        db,
        Options {
            target_extra: format!(
                "tls = \"verify-full\"\nca_file = \"{}\"",
                other_ca.display()
            ),
            ..Options::default()
        },
    )
    .await;
    let Err(err) = gw.connect(&alice_token(&gw)).await else {
        panic!("an unverified target must be refused");
    };
    assert!(
        db_message(&err).contains("cannot reach target `demo`"),
        "{}",
        db_message(&err)
    );
    gw.stop().await;
}

fn alice_token(gw: &Gateway) -> String {
    gw.token("alice@example.com", &["eng"])
}
