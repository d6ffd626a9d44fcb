//! SSH through the gateway, with the real OpenSSH clients (`ssh`, `scp`,
//! `sftp`, `ssh -L`, `ssh -tt` driven by `tmux`) against a real `sshd`
//! (started by `scripts/test.sh`, which exports `DEMO_SSH_*`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../portcullis-identity/tests/support/mod.rs"]
mod support;

use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The SSH target's config, from the sshd `scripts/test.sh` started;
/// `host_key` replaces the pinned key when given; `listener` is added to
/// `[ssh]`.
fn ssh_target(host_key: Option<&str>, recording: &str, listener: &str) -> String {
    let host_key = host_key
        .map(str::to_string)
        .unwrap_or_else(|| env("DEMO_SSH_HOST_KEY"));
    format!(
        r#"
[ssh]
listen = "127.0.0.1:0"
{listener}

[recording]
enabled = true
{recording}

[[targets]]
name = "demo-ssh"
kind = "ssh"
host = "{host}"
port = {port}
user = "{user}"
key_file = "{key}"
host_key = "{host_key}"
labels = {{ env = "test" }}
"#,
        host = env("DEMO_SSH_HOST"),
        port = env("DEMO_SSH_PORT"),
        user = env("DEMO_SSH_USER"),
        key = env("DEMO_SSH_KEY_FILE"),
    )
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn gateway(db: &str, policies: PathBuf, host_key: Option<&str>) -> Gateway {
    gateway_with(db, policies, host_key, "").await
}

/// A gateway whose `[ssh]` listener also has the settings in `listener`.
async fn gateway_with(
    db: &str,
    policies: PathBuf,
    host_key: Option<&str>,
    listener: &str,
) -> Gateway {
    let db = TestDb::create(db, "").await;
    Gateway::start_with(
        db,
        Options {
            policies,
            extra: ssh_target(host_key, "", listener),
            ..Options::default()
        },
    )
    .await
}

/// Policies written for one test, in a directory of their own.
fn policies(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.cedar"), text).unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

const OPTIONS: &[&str] = &[
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=error",
    "-o",
    "ConnectTimeout=10",
];

/// An OpenSSH client command that logs in to `demo-ssh` through the gateway
/// with `token`, typed at the keyboard-interactive prompt by SSH_ASKPASS.
fn client(gw: &Gateway, program: &str, token: &str) -> Command {
    let askpass = gw.dir.path().join("askpass");
    if !askpass.exists() {
        std::fs::write(
            &askpass,
            "#!/bin/sh\nprintf '%s\\n' \"$PORTCULLIS_TEST_TOKEN\"\n",
        )
        .unwrap();
        std::fs::set_permissions(
            &askpass,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    let mut command = Command::new(program);
    command
        .args(OPTIONS)
        .args([
            "-o",
            "PreferredAuthentications=keyboard-interactive,password",
            "-o",
            "NumberOfPasswordPrompts=1",
        ])
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("PORTCULLIS_TEST_TOKEN", token)
        .stdin(Stdio::null());
    command
}

fn port(gw: &Gateway) -> String {
    gw.ssh_addr.expect("an ssh listener").port().to_string()
}

/// `ssh demo-ssh@gateway LINE`.
fn ssh(gw: &Gateway, token: &str, line: &str) -> Output {
    client(gw, "ssh", token)
        .args(["-p", &port(gw), "demo-ssh@127.0.0.1", line])
        .output()
        .unwrap()
}

/// The id of the (one) finished SSH session `portcullis sessions` lists,
/// waiting up to 10 s for its recording to end.
async fn closed_ssh_session(gw: &Gateway) -> String {
    for _ in 0..50 {
        let list = gw.cli(&["sessions"]);
        if let Some(line) = stdout(&list)
            .lines()
            .find(|l| l.starts_with("ssh-") && l.contains("closed"))
        {
            return line.split_whitespace().next().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "no finished ssh session: {}",
        stdout(&gw.cli(&["sessions"]))
    );
}

/// A fresh path under /tmp that the target's user may write.
fn scratch(name: &str) -> PathBuf {
    let path = PathBuf::from(format!("/tmp/portcullis-ssh-test-{name}-{}", rand_suffix()));
    let _ = std::fs::remove_file(&path);
    path
}

fn rand_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_line_runs_only_when_every_command_in_it_is_allowed() {
    // Everything but rm, python3 and substitution may run (redirections
    // included), so that what is refused is the gateway's splitting.
    let (_dir, dir) = policies(
        r#"
permit (principal, action == Action::"connect", resource);
permit (principal, action == Action::"exec", resource)
unless { ["rm", "python3", "$()"].contains(context.command.name) };
@id("no-recursive-delete-of-root")
@reason("recursive deletes of / are refused")
forbid (principal, action == Action::"exec", resource)
when { context.command.name == "rm" && context.command.args.contains("/") };
"#,
    );
    let gw = gateway("ssh_commands", dir, None).await;
    let alice = gw.token("alice@example.com", &["eng"]);

    let ok = ssh(&gw, &alice, "whoami; uptime | wc -l");
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(
        stdout(&ok).starts_with(&format!("{}\n", env("DEMO_SSH_USER"))),
        "{}",
        stdout(&ok)
    );

    // Output, errors and the exit status come through as they are.
    let failing = ssh(&gw, &alice, "ls /no/such/dir");
    assert_eq!(failing.status.code(), Some(2));
    assert!(
        stderr(&failing).contains("No such file"),
        "{}",
        stderr(&failing)
    );

    // A refused command hidden anywhere in the line refuses the whole line:
    // the allowed `echo` before it does not run either.
    for (hidden, refused) in [
        ("echo ran > {m}; rm -rf /", "rm -rf /"),
        ("echo ran > {m} && rm -rf /", "rm -rf /"),
        ("sh -c 'echo ran > {m}; rm -rf /'", "rm -rf /"),
        ("bash -lc \"echo ran > {m} && sudo rm -rf /\"", "rm -rf /"),
        ("env LANG=C rm -rf / ; echo ran > {m}", "rm -rf /"),
        ("echo ran > {m} $(rm -rf /)", "$(rm -rf /)"),
        ("echo ran > {m} `id`", "`id`"),
        (
            "echo ran > {m}; python3 -c 'print(1)'",
            "python3 -c print(1)",
        ),
    ] {
        let marker = scratch("marker");
        let line = hidden.replace("{m}", &marker.display().to_string());
        let out = ssh(&gw, &alice, &line);
        assert_eq!(out.status.code(), Some(126), "{line}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("portcullis: ") && err.contains(&format!("`{refused}` refused")),
            "{line}: {err}"
        );
        assert!(!marker.exists(), "{line}: something ran");
    }
    // The reason a policy gives is what the user reads.
    let out = ssh(&gw, &alice, "rm -rf /");
    assert!(
        stderr(&out).contains("recursive deletes of / are refused"),
        "{}",
        stderr(&out)
    );
    // What cannot be inspected is refused, with why.
    let out = ssh(&gw, &alice, "echo ${X:-$(rm -rf /)}");
    assert_eq!(out.status.code(), Some(126));
    assert!(stderr(&out).contains("not inspected"), "{}", stderr(&out));
    // Found in attack: code in arithmetic inside `${ }` ran as one `echo`.
    for hidden in [
        "echo ${z:-$((touch {m}) )}",
        "for y in 'a[$(touch {m})]'; do echo ${z:-$((y))}; done",
        "for y in 'a[$(touch {m})]'; do echo ${*:y}; done",
        "v='a[$(touch {m})]'; read \"$v\" < /dev/null",
        "echo {$,x}{y:='$(touch {m})'}{$,x}{y@P}",
        "echo ${x#<<true}\ntouch {m}\ntrue",
        "cat <<EOF $((touch {m}) )\nEOF",
        "true || echo $(( 1 # )); touch {m}\n))",
        // Round 37a.
        "cat <<EOF \"a\n$((touch {m}) )\"\nEOF",
        "cat <<\"'\"true\n'true\ntouch {m}\ntrue",
        "for y in 'a[$(touch {m})]'; do echo ${y:y:1:1}; done",
        "echo \"$\\\n(touch {m}; echo \"a b\")\"",
        "sh -c 'function $(touch {m})\n{ true; }'",
    ] {
        let marker = scratch("arith");
        let line = hidden.replace("{m}", &marker.display().to_string());
        let out = ssh(&gw, &alice, &line);
        assert_eq!(out.status.code(), Some(126), "{line}: {}", stderr(&out));
        assert!(!marker.exists(), "{line}: something ran");
    }
    // Found in attack (round 37d): a wrapper's own redirections were
    // dropped. They are decided with the line it runs.
    for line in ["eval echo x > {m}", "bash -c 'echo x' > {m}"] {
        let marker = scratch("wrapped");
        let path = marker.display().to_string();
        let line = line.replace("{m}", &path);
        let out = ssh(&gw, &alice, &line);
        assert_eq!(out.status.code(), Some(0), "{line}: {}", stderr(&out));
        assert!(
            gw.audit_entries(200).iter().any(|e| {
                e["command"]["name"] == "echo" && e["command"]["redirects"][0] == path.as_str()
            }),
            "{line}: the write is not in the audit log"
        );
    }
    // So is what bash and sh read differently: to bash this is one `echo`,
    // to the target's /bin/sh (dash) `echo`, `touch` and `echo`.
    let marker = scratch("dash");
    let line = format!(
        "sh -c \"echo \\$'\\\\' ; touch {} ; echo ' #'\"",
        marker.display()
    );
    let out = ssh(&gw, &alice, &line);
    assert_eq!(out.status.code(), Some(126), "{line}: {}", stderr(&out));
    assert!(
        stderr(&out).contains("read differently by sh and bash"),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "{line}: the hidden command ran");
    // Quotes inside `${ }` within double quotes: one `echo` to bash, three
    // commands to dash.
    let marker = scratch("dash-expansion");
    let inner = format!(
        r#"echo "${{u:-'}}'" ; touch {} ; echo "'}}'}}""#,
        marker.display()
    );
    let line = format!("sh -c '{}'", inner.replace('\'', r"'\''"));
    let out = ssh(&gw, &alice, &line);
    assert_eq!(out.status.code(), Some(126), "{line}: {}", stderr(&out));
    assert!(!marker.exists(), "{line}: the hidden command ran");
    // Round 38c: quotes inside `$(( ))` are plain characters to dash, which
    // ends the arithmetic at the first `))`: to the gateway, `true` and one
    // `echo`; to dash, `true`, then `.` of a file with a command in it.
    // The script's name has no letter, which arithmetic would evaluate.
    let marker = scratch("dash-arith");
    let digits = 380_000_000 + std::process::id();
    let script = PathBuf::from(format!("/tmp/{digits}"));
    std::fs::write(&script, format!("touch {}\n", marker.display())).unwrap();
    let line = format!("sh -c 'true || echo $(( \" )) ; . /???/{digits} ; : \" )) #\"'");
    let out = ssh(&gw, &alice, &line);
    assert_eq!(out.status.code(), Some(126), "{line}: {}", stderr(&out));
    assert!(
        stderr(&out).contains("`$(( ))` may hold only"),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "{line}: the hidden command ran");
    let _ = std::fs::remove_file(&script);

    // Shell options that make the shell read another line than the one
    // after -c, or read it differently; a tunnel through /dev/tcp; a locale
    // in which a backslash can end a character.
    for hidden in [
        "sh -sc 'ls {m}'",
        "sh +c -s 'ls {m}'",
        "bash --rcfile -c -s 'ls {m}'",
        "bash -kc 'cat PATH=/tmp {m}'",
        "bash +O interactive_comments -ic 'echo # ; touch {m}'",
        "{ cat 1<&3 & cat <&3; } 3</dev/tcp/127.0.0.1/22; touch {m}",
        "LC_ALL=zh_CN.GBK eval 'touch {m}'",
        "for PATH in /tmp; do ls {m}; done",
        "echo sh | xargs -I wc nice wc -c 'touch {m}'",
        "exec -a reboot systemctl status {m}",
        "echo {PATH}</dev/null; ls {m}",
        r#"env -S 'LC_X=C.UTF-8@\_sh\_-c\_"touch {m}" ls'"#,
        "env -S 'TZ=x\rsh\r-c\r\"touch {m}\" ls'",
        &format!("{}ls {{m}}", ": ; ".repeat(64)),
    ] {
        let marker = scratch("options");
        let line = hidden.replace("{m}", &marker.display().to_string());
        let out = ssh(&gw, &alice, &line);
        assert_eq!(out.status.code(), Some(126), "{line}: {}", stderr(&out));
        assert!(stderr(&out).contains("refused"), "{line}: {}", stderr(&out));
        assert!(!marker.exists(), "{line}: something ran");
    }

    // Every command is in the audit log with its decision and its policy.
    let entries = gw.audit_entries(2000);
    let decided = |text: &str, effect: &str| {
        entries.iter().any(|e| {
            e["event"] == "ssh"
                && e["action"] == "exec"
                && e["command"]["text"] == text
                && e["decision"]["effect"] == effect
        })
    };
    assert!(decided("whoami", "allow"));
    assert!(decided("wc -l", "allow"));
    assert!(decided("rm -rf /", "deny"));
    assert!(decided("$(rm -rf /)", "deny"));
    let wrapped = entries
        .iter()
        .find(|e| {
            e["command"]["text"] == "rm -rf /"
                && e["command"]["wrappers"] == serde_json::json!(["bash -c", "sudo"])
        })
        .expect("the wrappers are audited");
    assert_eq!(
        wrapped["decision"]["policies"],
        serde_json::json!(["no-recursive-delete-of-root"])
    );
    assert!(entries
        .iter()
        .any(|e| e["event"] == "ssh.event" && e["kind"] == "exec.refused"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_foreign_certificates_are_refused_and_a_signed_certificate_logs_in() {
    let gw = gateway("ssh_login", quickstart_policies(), None).await;
    let alice = gw.token("alice@example.com", &["eng"]);

    // A forged token (the signature of another), and garbage.
    let mut forged = alice.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    for token in [forged.as_str(), "not-a-token"] {
        let out = ssh(&gw, token, "whoami");
        assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("Permission denied"),
            "{}",
            stderr(&out)
        );
    }
    // A group without `connect` is told why, on every channel.
    let sam = gw.token("sam@example.com", &["sales"]);
    let out = ssh(&gw, &sam, "whoami");
    assert_eq!(out.status.code(), Some(126));
    assert!(
        stderr(&out).contains("connecting to `demo-ssh` is denied"),
        "{}",
        stderr(&out)
    );

    // `portcullis ssh-cert` gets a certificate for the user's key; plain ssh
    // then logs in with it, no token typed.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let cert = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "ssh-cert",
            "--gateway",
            &format!("http://{}", gw.admin_addr),
            "--key",
        ])
        .arg(key.with_extension("pub"))
        .env("PORTCULLIS_TOKEN", &alice)
        .output()
        .unwrap();
    assert!(cert.status.success(), "{}", stderr(&cert));
    let cert_path = dir.path().join("id_ed25519-cert.pub");
    assert!(cert_path.exists(), "{}", stdout(&cert));
    let with_key = |key: &Path| {
        Command::new("ssh")
            .args(OPTIONS)
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(key)
            .args(["-p", &port(&gw), "demo-ssh@127.0.0.1", "whoami"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = with_key(&key);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), env("DEMO_SSH_USER"));
    let connects: Vec<_> = gw
        .audit_entries(2000)
        .into_iter()
        .filter(|e| e["event"] == "session.connect" && e["decision"]["effect"] == "allow")
        .collect();
    assert!(connects
        .iter()
        .all(|e| e["principal"] == "alice@example.com"));

    // A certificate from another authority, naming the same person, is not
    // taken; nor is the bare key.
    let ca = dir.path().join("other_ca");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&ca)
        .status()
        .unwrap();
    std::fs::remove_file(&cert_path).unwrap();
    let signed = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca)
        .args(["-I", "alice@example.com", "-V", "+1h"])
        .arg(key.with_extension("pub"))
        .status()
        .unwrap();
    assert!(signed.success());
    let out = with_key(&key);
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    std::fs::remove_file(&cert_path).unwrap();
    let out = with_key(&key);
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_whose_host_key_changed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("k");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    let pinned = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let gw = gateway("ssh_host_key", quickstart_policies(), Some(pinned.trim())).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let out = ssh(&gw, &alice, "whoami");
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("host key of target `demo-ssh` is SHA256:") && err.contains("not the pinned"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
    gw.stop().await;
}

/// Reads what a forwarded local port gives within 5 s.
fn read_forwarded(port: u16) -> String {
    let mut stream = match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(stream) => stream,
        Err(_) => return String::new(),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Waits up to 10 s for `child` to end (killing it after): whether it
/// ended by itself, and what it wrote.
async fn ends_within_10s(mut child: std::process::Child) -> (bool, Output) {
    let mut ended = false;
    for _ in 0..100 {
        if child.try_wait().unwrap().is_some() {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ended {
        let _ = child.kill();
    }
    (ended, child.wait_with_output().unwrap())
}

/// What comes first through a forwarded port, once the forward is up (up
/// to 10 s).
async fn forwarded_banner(port: u16) -> String {
    let mut banner = String::new();
    for _ in 0..50 {
        banner = read_forwarded(port);
        if !banner.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    banner
}

/// Found in attack: a shell or a forward opened under an access grant went
/// on after the grant was revoked; only `connect` was decided again. Now
/// what a connection holds open is decided again too, and the connection
/// ends when it no longer stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_connection_holds_open_under_a_grant_ends_with_the_grant() {
    let sshd_port = env("DEMO_SSH_PORT");
    let (_dir, dir) = policies(
        r#"
permit (principal, action == Action::"connect", resource);
permit (principal, action == Action::"forward", resource) when { context has grant };
permit (principal, action == Action::"exec", resource) when { context has grant };
permit (principal, action == Action::"shell", resource) when { context has grant };
permit (principal, action == Action::"sftp", resource) when { context has grant };
"#,
    );
    let gw = Gateway::start_with(
        TestDb::create("ssh_grant_forward", "").await,
        Options {
            policies: dir,
            extra: format!(
                "{}\n[approvals]\naccess_approvers = [\"dba\"]\n",
                ssh_target(None, "", "")
            ),
            ..Options::default()
        },
    )
    .await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let dba = gw.token("dba@example.com", &["dba"]);
    let cli = |token: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .args(["--gateway", &format!("http://{}", gw.admin_addr)])
            .env("PORTCULLIS_TOKEN", token)
            .output()
            .unwrap()
    };
    let asked = cli(
        &alice,
        &[
            "request", "--target", "demo-ssh", "--for", "1h", "--reason", "INC-2",
        ],
    );
    assert!(asked.status.success(), "{}", stderr(&asked));
    let grant = stdout(&asked)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    let approved = cli(&dba, &["approve", &grant, "--comment", "ok"]);
    assert!(approved.status.success(), "{}", stderr(&approved));

    let local = free_port();
    let remote = free_port();
    let tunnel = client(&gw, "ssh", &alice)
        .args(["-N", "-p", &port(&gw)])
        .args(["-L", &format!("127.0.0.1:{local}:127.0.0.1:{sshd_port}")])
        .args(["-R", &format!("127.0.0.1:{remote}:127.0.0.1:{sshd_port}")])
        .arg("demo-ssh@127.0.0.1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let banner = forwarded_banner(local).await;
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner:?}");
    let banner = forwarded_banner(remote).await;
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner:?}");
    let held_remote = std::net::TcpStream::connect(("127.0.0.1", remote)).unwrap();
    // A forwarded connection held open while the grant goes, a command
    // that runs on, a shell waiting for its next line, and a file being
    // read over SFTP.
    let held = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
    // Lengths no other run uses, so that what an earlier run left behind
    // is not taken for what this one started.
    let long = 100_000 + std::process::id() % 100_000;
    let (sleeping, stubborn_sleeping) = (format!("sleep {long}"), format!("sleep {}", long + 1));
    let running = client(&gw, "ssh", &alice)
        .args(["-p", &port(&gw), "demo-ssh@127.0.0.1", &sleeping])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // One that ignores the hangup and the terminate signal.
    let stubborn = client(&gw, "ssh", &alice)
        .args([
            "-p",
            &port(&gw),
            "demo-ssh@127.0.0.1",
            &format!("sh -c 'trap \"\" HUP TERM; {stubborn_sleeping}'"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let shell = client(&gw, "ssh", &alice)
        .args(["-T", "-p", &port(&gw), "demo-ssh@127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reading = client(&gw, "sftp", &alice)
        .args(["-P", &port(&gw), "demo-ssh@127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A file far longer than the test (64 GB, sparse): its handle stays
    // open until the connection ends.
    let endless = scratch("endless");
    std::fs::File::create(&endless)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    let endless = endless.display().to_string();
    std::io::Write::write_all(
        reading.stdin.as_mut().unwrap(),
        format!("get {endless} /dev/null\n").as_bytes(),
    )
    .unwrap();
    // Until all four run.
    for _ in 0..100 {
        let entries = gw.audit_entries(2000);
        let exec = |part: &str| {
            entries.iter().any(|e| {
                e["action"] == "exec"
                    && e["command"]["text"]
                        .as_str()
                        .is_some_and(|t| t.contains(part))
            })
        };
        if exec(&sleeping)
            && exec(&stubborn_sleeping)
            && entries.iter().any(|e| e["action"] == "shell")
            && entries
                .iter()
                .any(|e| e["sftp"]["path"] == endless.as_str())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let revoked = cli(&alice, &["revoke", &grant, "--comment", "done"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let (ended, out) = ends_within_10s(tunnel).await;
    drop(held);
    // What sshd listened on for `-R` goes with the connection.
    let mut listening = true;
    for _ in 0..50 {
        listening = std::net::TcpStream::connect(("127.0.0.1", remote)).is_ok();
        if !listening {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held_remote);
    assert!(!listening, "the -R listener outlived the revoke");
    assert!(ended, "the forward outlived its grant: {}", stderr(&out));
    assert!(
        stderr(&out).contains("this connection holds open is no longer allowed"),
        "{}",
        stderr(&out)
    );
    let (ended, out) = ends_within_10s(running).await;
    assert!(ended, "the command outlived its grant: {}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "the command `{sleeping}` this connection holds open"
        )),
        "{}",
        stderr(&out)
    );
    // And it ends on the target too: a command without a terminal, which
    // writes nothing, would otherwise run on there; so does one that
    // ignores the hangup and the terminate signal.
    let (ended, _) = ends_within_10s(stubborn).await;
    assert!(
        ended,
        "the stubborn command's connection outlived its grant"
    );
    for command in [format!("^{sleeping}$"), format!("^{stubborn_sleeping}$")] {
        let mut running_on = true;
        for _ in 0..50 {
            let found = Command::new("pgrep")
                .args(["-u", &env("DEMO_SSH_USER"), "-f", &command])
                .output()
                .unwrap();
            running_on = found.status.success();
            if !running_on {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            !running_on,
            "`{command}` runs on after its connection was ended"
        );
    }
    let (ended, out) = ends_within_10s(shell).await;
    assert!(ended, "the shell outlived its grant: {}", stderr(&out));
    assert!(
        stderr(&out).contains("the shell this connection holds open"),
        "{}",
        stderr(&out)
    );
    let (ended, out) = ends_within_10s(reading).await;
    let _ = std::fs::remove_file(&endless);
    assert!(ended, "the SFTP read outlived its grant: {}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("the SFTP file `{endless}` open for read")),
        "{}",
        stderr(&out)
    );
    assert!(gw
        .audit_entries(2000)
        .iter()
        .any(|e| e["event"] == "session.recheck" && e["action"] == "forward"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_goes_only_where_a_policy_allows() {
    let sshd_port = env("DEMO_SSH_PORT");
    let remote_allowed = free_port();
    let (_dir, dir) = policies(&format!(
        r#"
permit (principal, action == Action::"connect", resource);
permit (principal, action == Action::"forward", resource)
when {{ context.forward.direction == "local" && context.forward.host == "127.0.0.1" && context.forward.port == {sshd_port} }};
permit (principal, action == Action::"forward", resource)
when {{ context.forward.direction == "remote" && context.forward.host == "127.0.0.1" && context.forward.port == {remote_allowed} }};
"#
    ));
    let gw = gateway("ssh_forward", dir, None).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    // Each forwarded connection is audited when it closes, with its bytes
    // each way: the banner comes to the client through -L, and goes to the
    // target through -R.
    let moved = |direction: &str| {
        gw.audit_entries(2000).iter().any(|e| {
            let up = e["detail"]["bytes_to_target"].as_u64().unwrap_or(0);
            let down = e["detail"]["bytes_to_client"].as_u64().unwrap_or(0);
            e["kind"] == "forward.close"
                && e["detail"]["forward"]["direction"] == direction
                && if direction == "remote" {
                    up > 0 && down == 0
                } else {
                    down > 0 && up == 0
                }
        })
    };
    let closed = |direction: &'static str| async move {
        for _ in 0..50 {
            if moved(direction) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    };
    let allowed = free_port();
    let refused = free_port();
    let pg_port = gw.db.port;
    let mut tunnel = client(&gw, "ssh", &alice)
        .args(["-N", "-p", &port(&gw)])
        .args(["-L", &format!("127.0.0.1:{allowed}:127.0.0.1:{sshd_port}")])
        .args(["-L", &format!("127.0.0.1:{refused}:127.0.0.1:{pg_port}")])
        .arg("demo-ssh@127.0.0.1")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = forwarded_banner(allowed).await;
    // The target's sshd answers through the allowed forward...
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner:?}");
    // ...and nothing comes through the other one.
    assert_eq!(read_forwarded(refused), "");
    assert!(
        closed("local").await,
        "no local forward carried bytes to the client"
    );
    let _ = tunnel.kill();
    let _ = tunnel.wait();

    // A remote forward the policy allows: the target listens, and what
    // connects there reaches a service on the client's side (sshd again).
    let mut tunnel = client(&gw, "ssh", &alice)
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-p", &port(&gw)])
        .args([
            "-R",
            &format!("127.0.0.1:{remote_allowed}:127.0.0.1:{sshd_port}"),
        ])
        .arg("demo-ssh@127.0.0.1")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = forwarded_banner(remote_allowed).await;
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner:?}");
    assert!(
        closed("remote").await,
        "no remote forward carried bytes to the target"
    );
    let _ = tunnel.kill();
    let _ = tunnel.wait();

    // Remote forwarding elsewhere is refused.
    let remote = client(&gw, "ssh", &alice)
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-p", &port(&gw)])
        .args(["-R", &format!("127.0.0.1:{}:127.0.0.1:22", free_port())])
        .arg("demo-ssh@127.0.0.1")
        .output()
        .unwrap();
    assert_ne!(remote.status.code(), Some(0));
    assert!(
        stderr(&remote).contains("remote port forwarding failed"),
        "{}",
        stderr(&remote)
    );

    let entries = gw.audit_entries(2000);
    let forwards: Vec<(String, String, u64)> = entries
        .iter()
        .filter(|e| e["event"] == "ssh" && e["action"] == "forward")
        .map(|e| {
            (
                e["forward"]["direction"].as_str().unwrap_or("").to_string(),
                e["decision"]["effect"].as_str().unwrap_or("").to_string(),
                e["forward"]["port"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let sshd_port: u64 = sshd_port.parse().unwrap();
    assert!(
        forwards.contains(&("local".into(), "allow".into(), sshd_port)),
        "{forwards:?}"
    );
    assert!(
        forwards.contains(&("local".into(), "deny".into(), u64::from(pg_port))),
        "{forwards:?}"
    );
    assert!(
        forwards
            .iter()
            .any(|(d, e, _)| d == "remote" && e == "deny"),
        "{forwards:?}"
    );
    assert!(
        forwards.contains(&("remote".into(), "allow".into(), u64::from(remote_allowed))),
        "{forwards:?}"
    );

    // Found in attack: forwards to and from Unix sockets were refused
    // without a word in the audit log.
    let out = client(&gw, "ssh", &alice)
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-p", &port(&gw)])
        .args(["-R", "/tmp/portcullis-remote-socket:127.0.0.1:22"])
        .arg("demo-ssh@127.0.0.1")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let local_socket = free_port();
    let mut tunnel = client(&gw, "ssh", &alice)
        .args(["-N", "-p", &port(&gw)])
        .args([
            "-L",
            &format!("127.0.0.1:{local_socket}:/tmp/portcullis-no-socket"),
        ])
        .arg("demo-ssh@127.0.0.1")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket_refused = |direction: &str| {
        gw.audit_entries(2000)
            .iter()
            .any(|e| e["kind"] == "forward.refused" && e["detail"]["direction"] == direction)
    };
    let mut refused_local = false;
    for _ in 0..50 {
        assert_eq!(read_forwarded(local_socket), "");
        refused_local = socket_refused("local");
        if refused_local {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    assert!(refused_local);
    assert!(socket_refused("remote"), "{}", stderr(&out));

    // Agent and X11 forwarding, and tunnel devices, are refused whatever
    // the policy says, and each refusal is audited.
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = agent_dir.path().join("agent.sock");
    let mut ssh_agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&agent)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..50 {
        if agent.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = client(&gw, "ssh", &alice)
        .env("DISPLAY", "127.0.0.1:99")
        .env("SSH_AUTH_SOCK", &agent)
        .args(["-X", "-A"])
        .args(["-p", &port(&gw), "demo-ssh@127.0.0.1", "true"])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("X11 forwarding request failed"),
        "{}",
        stderr(&out)
    );
    let tunnel = client(&gw, "ssh", &alice)
        .args(["-N", "-w", "any", "-o", "ExitOnForwardFailure=yes"])
        .args(["-p", &port(&gw), "demo-ssh@127.0.0.1"])
        .output()
        .unwrap();
    assert_ne!(tunnel.status.code(), Some(0));
    let _ = ssh_agent.kill();
    let _ = ssh_agent.wait();
    let refused: Vec<String> = gw
        .audit_entries(2000)
        .iter()
        .filter(|e| e["kind"] == "forward.refused")
        .filter_map(|e| e["detail"]["kind"].as_str().map(str::to_string))
        .collect();
    for kind in ["x11", "agent", "channel"] {
        assert!(refused.iter().any(|k| k == kind), "{kind}: {refused:?}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_and_scp_write_only_where_a_policy_allows() {
    let gw = gateway("ssh_sftp", quickstart_policies(), None).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("payload");
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &payload).unwrap();

    // scp (which speaks SFTP) to /tmp, which engineers may write, and back.
    let remote = scratch("scp");
    let up = client(&gw, "scp", &alice)
        .args(["-P", &port(&gw)])
        .arg(&local)
        .arg(format!("demo-ssh@127.0.0.1:{}", remote.display()))
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", stderr(&up));
    assert_eq!(std::fs::read(&remote).unwrap(), payload);
    let back = dir.path().join("back");
    let down = client(&gw, "scp", &alice)
        .args(["-P", &port(&gw)])
        .arg(format!("demo-ssh@127.0.0.1:{}", remote.display()))
        .arg(&back)
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", stderr(&down));
    assert_eq!(std::fs::read(&back).unwrap(), payload);

    // Outside /tmp, writes are refused by path, and nothing is written.
    let home = format!("/home/{}", env("DEMO_SSH_USER"));
    let forbidden = format!("{home}/portcullis-sftp-{}", rand_suffix());
    let refused = client(&gw, "scp", &alice)
        .args(["-P", &port(&gw)])
        .arg(&local)
        .arg(format!("demo-ssh@127.0.0.1:{forbidden}"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("Permission denied"),
        "{}",
        stderr(&refused)
    );
    assert!(!Path::new(&forbidden).exists());

    // sftp: reads and listing go; removing or moving a file outside /tmp
    // does not (the target's user could).
    let kept = format!("{home}/kept-{}", rand_suffix());
    std::fs::write(&kept, "keep me").unwrap();
    let chowned = Command::new("chown")
        .arg(env("DEMO_SSH_USER"))
        .arg(&kept)
        .status()
        .unwrap();
    assert!(chowned.success());
    let renamed = scratch("renamed");
    // Commands on standard input (`-b` would forbid the token prompt).
    let batch = dir.path().join("batch");
    let sftp_batch = |commands: String| {
        std::fs::write(&batch, commands).unwrap();
        client(&gw, "sftp", &alice)
            .args(["-P", &port(&gw)])
            .arg("demo-ssh@127.0.0.1")
            .stdin(std::fs::File::open(&batch).unwrap())
            .output()
            .unwrap()
    };
    let out = sftp_batch(format!(
        "ls /tmp\nrm {kept}\nrename {kept} {renamed}\nget {r} {b}2\n",
        r = remote.display(),
        renamed = renamed.display(),
        b = back.display()
    ));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(Path::new(&kept).exists(), "the refused remove went through");
    assert!(!renamed.exists(), "the refused rename went through");
    let _ = std::fs::remove_file(&kept);
    assert_eq!(
        std::fs::read(format!("{}2", back.display())).unwrap(),
        payload
    );
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );

    // A link under /tmp whose target climbs through another link leads
    // out of /tmp, whatever its text says (`/tmp/base/b/c/l/../../..` is
    // `/tmp/base` by its text and `/` on the target): refused.
    let base = scratch("climb");
    let root = format!("{}-root", base.display());
    let escaped = format!("{home}/portcullis-climbed-{}", rand_suffix());
    let b = base.display();
    let out = sftp_batch(format!(
        "mkdir {b}\nmkdir {b}/b\nmkdir {b}/b/c\nsymlink {b} {b}/b/c/l\n\
         symlink {b}/b/c/l/../../.. {root}\nput {local} {root}{escaped}\n\
         put {local} {b}/b/c/l/../../../..{escaped}\n",
        local = local.display()
    ));
    let climbed = Path::new(&escaped).exists();
    let linked = Path::new(&root).symlink_metadata().is_ok();
    let _ = std::fs::remove_file(&escaped);
    let _ = std::fs::remove_file(&root);
    let _ = std::fs::remove_dir_all(&base);
    assert!(!climbed, "a write climbed out of /tmp through a link");
    assert!(!linked, "a link whose target climbs was made");
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    let entries = gw.audit_entries(2000);
    let refused_for = |path: String| {
        entries.iter().any(|e| {
            e["kind"] == "sftp.refused"
                && e["detail"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(&format!("`{path}` climbs with `..`")))
        })
    };
    assert!(refused_for(format!("{b}/b/c/l/../../..")));
    assert!(refused_for(format!("{b}/b/c/l/../../../..{escaped}")));
    let sftp = |operation: &str, path: &str, effect: &str| {
        entries.iter().any(|e| {
            e["action"] == "sftp"
                && e["sftp"]["operation"] == operation
                && e["sftp"]["path"] == path
                && e["decision"]["effect"] == effect
        })
    };
    let remote = remote.display().to_string();
    assert!(sftp("write", &remote, "allow"));
    assert!(sftp("read", &remote, "allow"));
    assert!(sftp("write", &forbidden, "deny"));
    assert!(sftp("remove", &kept, "deny"));
    assert!(sftp("rename", &kept, "deny"));
    let _ = std::fs::remove_file(&remote);
    gw.stop().await;
}

/// What `ssh -tt -s ... sftp` types, on a terminal whose line discipline
/// erases with DEL: a WRITE (passed on undecided) whose data first erases
/// its own header, then an OPEN and a WRITE of `argv[1]`. The rest of argv
/// is the ssh command.
const SFTP_THROUGH_A_TERMINAL: &str = r#"
import os, pty, sys, time, termios, struct
def s(b): return struct.pack(">I", len(b)) + b
def frame(t, body): return struct.pack(">I", 1 + len(body)) + bytes([t]) + body
target = sys.argv[1].encode()
opened = frame(3, struct.pack(">I", 100) + s(target) + struct.pack(">I", 0x1a) + struct.pack(">I", 0))
written = frame(6, struct.pack(">I", 101) + s(b"\0\0\0\0") + struct.pack(">Q", 0) + s(b"undecided\n"))
handle = b"\0\0\0\0"
header = 4 + 1 + 4 + 4 + len(handle) + 8 + 4
carrier = frame(6, struct.pack(">I", 7) + s(handle) + struct.pack(">Q", 0) + s(b"\x7f" * header + opened + written))
pid, fd = pty.fork()
if pid == 0:
    modes = termios.tcgetattr(0)
    modes[0] = 0; modes[1] = 0; modes[3] = termios.ICANON
    cc = [b"\0"] * len(modes[6]); cc[termios.VERASE] = b"\x7f"; cc[termios.VMIN] = 1; modes[6] = cc
    termios.tcsetattr(0, termios.TCSANOW, modes)
    os.execvp(sys.argv[2], sys.argv[2:])
time.sleep(4)
os.write(fd, frame(1, struct.pack(">I", 3)) + carrier)
time.sleep(3)
os.kill(pid, 15)
"#;

/// Found in attack: SFTP asked for with a terminal went to the target
/// through one, whose line discipline rewrote the stream after the gateway
/// had read it: any file written, by anyone who may connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_asked_for_with_a_terminal_reaches_the_target_without_one() {
    let gw = gateway("ssh_sftp_pty", quickstart_policies(), None).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let home = format!("/home/{}", env("DEMO_SSH_USER"));
    let smuggled = format!("{home}/portcullis-pty-sftp-{}", rand_suffix());
    let ssh = client(&gw, "ssh", &alice);
    let mut command = Command::new("python3");
    command
        .args([
            "-c",
            SFTP_THROUGH_A_TERMINAL,
            &smuggled,
            "ssh",
            "-tt",
            "-e",
            "none",
            "-s",
        ])
        .args(ssh.get_args())
        .args(["-p", &port(&gw), "demo-ssh@127.0.0.1", "sftp"]);
    for (name, value) in ssh.get_envs() {
        if let Some(value) = value {
            command.env(name, value);
        }
    }
    let out = command.output().unwrap();
    let written = Path::new(&smuggled).exists();
    let _ = std::fs::remove_file(&smuggled);
    assert!(
        !written,
        "an SFTP request no policy saw wrote {smuggled}: {}",
        stderr(&out)
    );
    gw.stop().await;
}

/// Opens one connection (a ControlMaster on `socket`) and returns how to
/// make an `ssh` command whose channel goes over it.
/// A gateway and a ControlMaster connection to it as alice (group `eng`):
/// every `channel` is a channel of that one connection.
struct Mux {
    gw: Gateway,
    token: String,
    socket: PathBuf,
    dirs: (Option<tempfile::TempDir>, tempfile::TempDir),
}

impl Mux {
    /// With the quickstart's policies, or with `policies` when given.
    async fn start(db: &str, policies: Option<&str>) -> Mux {
        let (policy_dir, path) = match policies {
            Some(text) => {
                let (dir, path) = self::policies(text);
                (Some(dir), path)
            }
            None => (None, quickstart_policies()),
        };
        let gw = gateway(db, path, None).await;
        let token = gw.token("alice@example.com", &["eng"]);
        let dir = tempfile::tempdir().unwrap();
        let mux = Mux {
            socket: dir.path().join("mux"),
            gw,
            token,
            dirs: (policy_dir, dir),
        };
        let master = mux.ssh(&["-M", "-f", "-N"]).status().unwrap();
        assert!(master.success());
        mux
    }

    /// `ssh` through the control socket to demo-ssh, with `options` first.
    fn ssh(&self, options: &[&str]) -> Command {
        let mut command = client(&self.gw, "ssh", &self.token);
        command
            .arg("-S")
            .arg(&self.socket)
            .args(["-p", &port(&self.gw)])
            .args(options)
            .arg("demo-ssh@127.0.0.1");
        command
    }

    /// A new channel running `line`.
    fn channel(&self, line: &str) -> Command {
        let mut command = self.ssh(&[]);
        command.arg(line);
        command
    }

    /// A new channel running `echo text`, its stderr kept for `said`.
    fn echo(&self, text: &str) -> std::process::Child {
        let stderr = std::fs::File::create(self.stderr_of(text)).unwrap();
        self.channel(&format!("echo {text}"))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    /// What `echo(text)` said on stderr.
    fn said(&self, text: &str) -> String {
        std::fs::read_to_string(self.stderr_of(text)).unwrap_or_default()
    }

    fn stderr_of(&self, text: &str) -> PathBuf {
        self.dirs.1.path().join(format!("{text}.err"))
    }

    async fn stop(self) {
        let _ = self.ssh(&["-O", "exit"]).output();
        self.gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_of_one_connection_close_on_their_own() {
    let mux = Mux::start("ssh_channels", None).await;
    let mut long = mux
        .channel("tail -f /dev/null")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let second = mux.channel("echo second").output().unwrap();
    assert_eq!(stdout(&second), "second\n", "{}", stderr(&second));
    // Closing one channel (its client goes away) leaves the others.
    long.kill().unwrap();
    long.wait().unwrap();
    let third = mux.channel("echo third").output().unwrap();
    assert_eq!(stdout(&third), "third\n", "{}", stderr(&third));

    // All of it was one session.
    let entries = mux.gw.audit_entries(2000);
    let sessions: std::collections::BTreeSet<String> = entries
        .iter()
        .filter(|e| e["event"] == "ssh" && e["action"] == "exec")
        .map(|e| e["session"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let channels: std::collections::BTreeSet<u64> = entries
        .iter()
        .filter(|e| e["event"] == "ssh" && e["action"] == "exec")
        .map(|e| e["channel"].as_u64().unwrap())
        .collect();
    assert_eq!(channels.len(), 3, "{channels:?}");
    mux.stop().await;
}

fn tmux(args: &[&str]) -> Output {
    Command::new("tmux").args(args).output().unwrap()
}

/// Waits up to `within` for `text` on the tmux pane's screen.
async fn shown_within(socket: &str, session: &str, text: &str, within: Duration) {
    let started = std::time::Instant::now();
    let mut screen = String::new();
    while started.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(100)).await;
        screen = stdout(&tmux(&["-S", socket, "capture-pane", "-p", "-t", session]));
        if screen.contains(text) {
            return;
        }
    }
    panic!("`{text}` never showed: {screen}");
}

/// Types `line` and Enter into the tmux pane, and waits up to 5 s for
/// `shown` on its screen.
async fn typed_until_shown(socket: &str, session: &str, line: &str, shown: &str) {
    tmux(&["-S", socket, "send-keys", "-t", session, line, "Enter"]);
    shown_within(socket, session, shown, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_shell_is_recorded_and_replays() {
    let gw = gateway("ssh_shell", quickstart_policies(), None).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let askpass_env = {
        // Make the askpass script, and read its path back.
        let _ = client(&gw, "true", &alice);
        gw.dir.path().join("askpass")
    };
    let socket = gw.dir.path().join("tmux.sock");
    let socket = socket.to_str().unwrap();
    let session = "portcullis";
    let command = format!(
        "SSH_ASKPASS={} SSH_ASKPASS_REQUIRE=force PORTCULLIS_TEST_TOKEN={alice} ssh -tt {} -o PreferredAuthentications=keyboard-interactive -p {} demo-ssh@127.0.0.1",
        askpass_env.display(),
        OPTIONS.join(" "),
        port(&gw)
    );
    let started = tmux(&[
        "-S",
        socket,
        "new-session",
        "-d",
        "-s",
        session,
        "-x",
        "100",
        "-y",
        "30",
        &command,
    ]);
    assert!(started.status.success(), "{}", stderr(&started));
    let word = format!("portcullis-{}", rand_suffix());
    // The prompt.
    shown_within(socket, session, "$", Duration::from_secs(10)).await;
    let upper = word.to_uppercase();
    let line = format!("echo {word} | tr a-z A-Z");
    typed_until_shown(socket, session, &line, &upper).await;
    tmux(&[
        "-S",
        socket,
        "resize-window",
        "-t",
        session,
        "-x",
        "120",
        "-y",
        "40",
    ]);
    // The shell on the target sees the new size once the gateway passed
    // (and recorded) the window change.
    typed_until_shown(socket, session, "stty size", "40 120").await;
    // What the target prints that would act on a terminal beyond drawing
    // (a clipboard write, a window title) is not played to an auditor's.
    typed_until_shown(
        socket,
        session,
        r"printf 'R\033]52;c;aGk=\007A\033]0;t\007B\n'",
        "RAB",
    )
    .await;
    // A line abandoned with Ctrl-C is told, and the next one marked: the
    // terminal interrupts only if its modes say so.
    let gone = format!("echo gone-{word}");
    tmux(&["-S", socket, "send-keys", "-t", session, &gone, "C-c"]);
    let next = format!("echo next-{word}");
    typed_until_shown(socket, session, &next, &format!("next-{word}")).await;
    tmux(&["-S", socket, "send-keys", "-t", session, "exit", "Enter"]);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !tmux(&["-S", socket, "has-session", "-t", session])
            .status
            .success()
        {
            break;
        }
    }
    let _ = tmux(&["-S", socket, "kill-server"]);

    // The session's recording replays what the terminal showed.
    let id = closed_ssh_session(&gw).await;
    let replay = gw.cli(&["replay", &id, "--speed", "0"]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    let replayed = stdout(&replay);
    assert!(replayed.contains(&upper), "{replayed}");
    assert!(
        replayed.contains("allow shell by eng-ssh-shell"),
        "{replayed}"
    );
    // What was typed is shown apart from the terminal's output, which the
    // user controls (and could draw in the background's colour).
    assert!(
        replayed.contains(&format!("typed at the prompt (best effort): {line}")),
        "{replayed}"
    );

    // As asciicast v2: a header with the terminal's size, output events,
    // and the window change.
    let cast = gw.cli(&["replay", &id, "--asciicast"]);
    let cast = stdout(&cast);
    let mut lines = cast.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(100), Some(30))
    );
    let events: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events
        .iter()
        .any(|e| e[1] == "o" && e[2].as_str().unwrap().contains(&upper)));
    assert!(
        events.iter().any(|e| e[1] == "r" && e[2] == "120x40"),
        "{events:?}"
    );
    let output: String = events
        .iter()
        .filter(|e| e[1] == "o")
        .filter_map(|e| e[2].as_str())
        .collect();
    assert!(output.contains("RAB"), "{output:?}");
    assert!(
        !output.contains("\u{1b}]52") && !output.contains("\u{1b}]0;"),
        "{output:?}"
    );
    let verify = gw.cli(&["recording", "verify", &id]);
    assert!(verify.status.success(), "{}", stdout(&verify));

    // What was typed is in the audit log, labelled best effort.
    let entries = gw.audit_entries(2000);
    assert!(entries.iter().any(|e| e["kind"] == "shell.typed"
        && e["detail"]["best_effort"] == true
        && e["detail"]["line"]
            .as_str()
            .is_some_and(|l| l.contains(&word))));
    let typed = |starts: &str, mark: &str| {
        entries.iter().any(|e| {
            e["kind"] == "shell.typed"
                && e["detail"]["line"]
                    .as_str()
                    .is_some_and(|l| l.starts_with(starts) && l.contains(mark))
        })
    };
    assert!(typed(&gone, "abandoned with Ctrl-C"), "{entries:?}");
    assert!(typed(&next, "edited with keys"), "{entries:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_command_runs_once_a_reviewer_approves() {
    let (policy_dir, dir) = policies(
        r#"
permit (principal, action == Action::"connect", resource);
permit (principal in Group::"eng", action == Action::"exec", resource);
@approval("ops")
@reason("hostname needs ops")
forbid (principal, action == Action::"exec", resource)
when { context.command.name == "hostname" };
"#,
    );
    let gw = gateway("ssh_hold", dir, None).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let olga = gw.token("olga@example.com", &["ops"]);
    let child = client(&gw, "ssh", &alice)
        .args(["-p", &port(&gw), "demo-ssh@127.0.0.1", "hostname"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let review = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .args(["--gateway", &format!("http://{}", gw.admin_addr)])
            .env("PORTCULLIS_TOKEN", &olga)
            .output()
            .unwrap()
    };
    let mut listed = String::new();
    for _ in 0..50 {
        listed = stdout(&review(&["requests"]));
        if listed.contains("hostname") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !listed.contains("hostname") {
        let mut child = child;
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("no held request: {listed}; ssh said: {}", stderr(&out));
    }
    let id = listed.split_whitespace().next().unwrap().to_string();
    assert!(id.parse::<i64>().is_ok(), "{listed}");
    let approved = review(&["approve", &id, "--comment", "fine"]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("held for approval by ops"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).trim().is_empty());
    assert!(gw
        .audit_entries(2000)
        .iter()
        .any(|e| e["event"] == "approval.executed"));

    // Found in attack: an approval ran its command as decided when it was
    // held. A forbid no approval lifts, added while it waits, refuses it.
    let child = client(&gw, "ssh", &alice)
        .args(["-p", &port(&gw), "demo-ssh@127.0.0.1", "hostname"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut second = None;
    for _ in 0..50 {
        listed = stdout(&review(&["requests"]));
        second = listed
            .split_whitespace()
            .next()
            .filter(|second| *second != id && second.parse::<i64>().is_ok())
            .map(str::to_string);
        if second.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = second.unwrap_or_else(|| panic!("no second request: {listed}"));
    let version = || {
        let out = Command::new("curl")
            .args(["-sS", &format!("http://{}/api/v1/status", gw.admin_addr)])
            .output()
            .unwrap();
        stdout(&out)
    };
    let before = version();
    std::fs::write(
        policy_dir.path().join("freeze.cedar"),
        "@reason(\"hostname is frozen\")\nforbid (principal, action == Action::\"exec\", resource)\nwhen { context.command.name == \"hostname\" };\n",
    )
    .unwrap();
    for _ in 0..100 {
        if version() != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(version(), before, "the new policy is not in force");
    let approved = review(&["approve", &second, "--comment", "fine"]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("decided again once approved")
            && stderr(&out).contains("hostname is frozen"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).trim().is_empty(), "{}", stdout(&out));
    assert_eq!(
        gw.audit_entries(2000)
            .iter()
            .filter(|e| e["event"] == "approval.executed")
            .count(),
        1
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_ends_when_the_policy_no_longer_lets_it_connect() {
    let allowing = r#"
permit (principal, action == Action::"connect", resource);
permit (principal, action == Action::"exec", resource);
"#;
    let (dir, path) = policies(allowing);
    let gw = gateway("ssh_recheck", path, None).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let child = client(&gw, "ssh", &alice)
        .args(["-p", &port(&gw), "demo-ssh@127.0.0.1", "tail -f /dev/null"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the command runs, then take `connect` away.
    for _ in 0..50 {
        if gw.audit_entries(2000).iter().any(|e| e["action"] == "exec") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(
        dir.path().join("p.cedar"),
        r#"permit (principal, action == Action::"exec", resource);"#,
    )
    .unwrap();
    let (ended, out) = ends_within_10s(child).await;
    assert!(ended, "the session outlived its policy: {}", stderr(&out));
    assert!(
        stderr(&out).contains("access to target `demo-ssh` was revoked"),
        "{}",
        stderr(&out)
    );
    assert!(gw
        .audit_entries(2000)
        .iter()
        .any(|e| e["event"] == "session.recheck" && e["decision"]["effect"] == "deny"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_terminal_plays_in_the_web_console_in_a_real_browser() {
    let provider = support::OidcProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let console_url = format!("http://127.0.0.1:{port}");
    let extra = format!(
        "{}{}",
        ssh_target(None, "viewers = [\"dba\"]", ""),
        provider.console_config(&dir.path().join("client-secret"), &console_url)
    );
    let gw = Gateway::start_with(
        TestDb::create("ssh_console", "").await,
        Options {
            policies: quickstart_policies(),
            extra,
            admin_listen: Some(format!("127.0.0.1:{port}")),
            ..Options::default()
        },
    )
    .await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let word = format!("console-{}", rand_suffix());
    let out = ssh(&gw, &alice, &format!("echo {word}"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = closed_ssh_session(&gw).await;

    // Without a session, the asciicast is not given away.
    let anonymous = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{console_url}/sessions/{id}/cast"),
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&anonymous), "303");

    let played = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/console/play.mjs"))
        .args([&console_url, "dba@example.com", &id, &word])
        .output()
        .await
        .expect("node runs");
    assert!(
        played.status.success(),
        "{}{}",
        String::from_utf8_lossy(&played.stdout),
        String::from_utf8_lossy(&played.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&played.stdout).trim(), "played");
    drop(provider);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_x11_forwarding_are_refused() {
    let gw = gateway("ssh_agent", quickstart_policies(), None).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..50 {
        if sock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The client asks for both; the target's session sees neither.
    let out = client(&gw, "ssh", &alice)
        .env("SSH_AUTH_SOCK", &sock)
        .env("DISPLAY", "127.0.0.1:99")
        .args([
            "-A",
            "-X",
            "-o",
            "LogLevel=info",
            "-p",
            &port(&gw),
            "demo-ssh@127.0.0.1",
        ])
        .arg("echo \"[$SSH_AUTH_SOCK][$DISPLAY]\"")
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "[][]\n", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("X11 forwarding request failed"),
        "{}",
        stderr(&out)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_offers_only_the_ciphers_it_is_told() {
    let listener = r#"ciphers = ["aes128-gcm@openssh.com"]"#;
    let gw = gateway_with("ssh_ciphers", quickstart_policies(), None, listener).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    // OpenSSH's first choice, ChaCha20-Poly1305, is not offered: the client
    // takes the one that is.
    let out = ssh_verbose(&gw, &alice, &[], "echo hi");
    assert_eq!(stdout(&out), "hi\n", "{}", stderr(&out));
    for direction in ["client->server", "server->client"] {
        let negotiated = format!("{direction} cipher: aes128-gcm@openssh.com");
        assert!(stderr(&out).contains(&negotiated), "{}", stderr(&out));
    }
    // A client that insists on another cipher is refused before it logs in.
    let out = ssh_verbose(
        &gw,
        &alice,
        &["-c", "chacha20-poly1305@openssh.com"],
        "echo hi",
    );
    exited_saying(&out, 255, "no matching cipher found");
    gw.stop().await;

    // A cipher the gateway does not speak, or a weak one, keeps it from
    // starting, and the error lists those it speaks.
    let db = TestDb::create("ssh_ciphers_refused", "").await;
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        extra: ssh_target(
            None,
            "",
            r#"ciphers = ["aes256-gcm@openssh.com", "aes128-cbc"]"#,
        ),
        ..Options::default()
    };
    let path = write_config(dir.path(), &db, &options);
    let config = portcullis_config::Config::load(&path).unwrap();
    let refused = match portcullis_app::start(config, &path).await {
        Ok(_) => panic!("a gateway offering aes128-cbc started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        refused.contains(
            "`ssh.ciphers`: `aes128-cbc` is not a cipher the gateway offers: choose from aes256-gcm@openssh.com, aes128-gcm@openssh.com, chacha20-poly1305@openssh.com"
        ),
        "{refused}"
    );
}

/// `ssh -v [extra] demo-ssh@gateway LINE`: OpenSSH's debug output says what
/// it negotiated and received, above the error log level the others use.
fn ssh_verbose(gw: &Gateway, token: &str, extra: &[&str], line: &str) -> Output {
    client(gw, "ssh", token)
        .arg("-v")
        .args(extra)
        .args(["-p", &port(gw), "demo-ssh@127.0.0.1", line])
        .output()
        .unwrap()
}

fn exited_saying(out: &Output, status: i32, says: &str) {
    assert_eq!(out.status.code(), Some(status), "{}", stderr(out));
    assert!(stderr(out).contains(says), "{}", stderr(out));
}

/// Policies that let everyone connect and run anything.
const RUN_ANYTHING: &str = r#"
permit (principal, action == Action::"connect", resource);
permit (principal, action == Action::"exec", resource);
"#;

/// Waits up to 30 s for a `session.end` whose outcome contains `outcome`.
async fn session_ended(gw: &Gateway, outcome: &str) -> serde_json::Value {
    gw.audit_entry_within(2000, |e| {
        e["event"] == "session.end" && e["outcome"].as_str().unwrap_or("").contains(outcome)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_end_and_exit_signals_pass_through() {
    let (_dir, dir) = policies(RUN_ANYTHING);
    let gw = gateway_with("ssh_idle", dir, None, r#"idle_timeout = "2s""#).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    // A command killed by a signal: the target's `exit-signal` reaches the
    // client (OpenSSH names it in its debug output, and exits 255, as it
    // does against sshd itself).
    let out = ssh_verbose(&gw, &alice, &[], "kill -TERM $$");
    exited_saying(&out, 255, "rtype exit-signal");
    // A connection with no traffic for `idle_timeout` is closed, and the
    // audit log says why.
    let started = std::time::Instant::now();
    let out = ssh(&gw, &alice, "sleep 30");
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed after {:?}",
        started.elapsed()
    );
    session_ended(&gw, "Inactivity timeout").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_let_go_of_a_client_that_stopped_answering() {
    let (_dir, dir) = policies(RUN_ANYTHING);
    let listener = "idle_timeout = \"0\"\nkeepalive = \"1s\"";
    let gw = gateway_with("ssh_keepalive", dir, None, listener).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let spawn = |line: &str| {
        client(&gw, "ssh", &alice)
            .args(["-p", &port(&gw), "demo-ssh@127.0.0.1", line])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A client that answers the keepalives stays, however long nothing else
    // is said; one that stops answering (SIGSTOP) is let go after three
    // unanswered asks.
    let live = spawn("sleep 8; echo still here");
    let mut frozen = spawn("sleep 60");
    for _ in 0..100 {
        let running = gw
            .audit_entries(2000)
            .iter()
            .filter(|e| e["event"] == "ssh" && e["action"] == "exec")
            .count();
        if running == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let signal = |name: &str, pid: u32| {
        let sent = Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    signal("-STOP", frozen.id());
    session_ended(&gw, "Keepalive timeout").await;
    signal("-CONT", frozen.id());
    let status = frozen.wait().unwrap();
    assert_eq!(status.code(), Some(255));
    let out = live.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "still here\n", "{}", stderr(&out));
    // The gateway writes the live session's end once it sees the client
    // go, which may be after the client has exited.
    session_ended(&gw, "closed").await;
    let ends: Vec<_> = gw
        .audit_entries(2000)
        .into_iter()
        .filter(|e| e["event"] == "session.end")
        .map(|e| e["outcome"].clone())
        .collect();
    assert_eq!(ends.len(), 2, "{ends:?}");
    assert!(ends.contains(&serde_json::json!("closed")), "{ends:?}");
    gw.stop().await;
}

/// How `child` (its stdout piped) ended, and what it printed; `None`, and
/// the child killed, when it is still running after 20 s.
async fn ended_within_20s(
    child: &mut std::process::Child,
) -> Option<(std::process::ExitStatus, String)> {
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                stdout.read_to_string(&mut out).unwrap();
            }
            return Some((status, out));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill();
    None
}

/// A channel whose reader stops reading holds up no other channel of its
/// connection, and once its reader goes away the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_channel_holds_up_no_other_channel() {
    let mux = Mux::start("ssh_stalled_channel", Some(RUN_ANYTHING)).await;
    // `yes` writes without end into a pipe nobody reads: its channel's
    // window toward the client closes, and the target keeps sending.
    let mut stalled = mux.channel("yes").stdout(Stdio::piped()).spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Other channels of the same connection run meanwhile.
    let mut beside = mux.echo("beside");
    let beside = ended_within_20s(&mut beside).await;
    // The reader goes away: the client closes the channel.
    drop(stalled.stdout.take());
    let _ = stalled.kill();
    let _ = stalled.wait();
    let mut after = mux.echo("after");
    let after = ended_within_20s(&mut after).await;
    let (status, out) = beside.expect("a stalled channel held up another one");
    assert!(status.success(), "{status:?}: {}", mux.said("beside"));
    assert_eq!(out, "beside\n");
    let (status, out) =
        after.expect("the connection stayed stopped after its stalled channel closed");
    assert!(status.success(), "{status:?}: {}", mux.said("after"));
    assert_eq!(out, "after\n");
    mux.stop().await;
}

/// A command that stops reading its input while the client keeps sending
/// holds up its own channel only: the gateway opens a channel's window as it
/// takes the channel's data, not as data arrives, so the client's other
/// channels go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_stops_reading_holds_up_no_other_channel() {
    let mux = Mux::start("ssh_deaf_command", Some(RUN_ANYTHING)).await;
    // `sleep` never reads its input, and the client sends far more than
    // every window and buffer on the way holds.
    let mut deaf = mux
        .channel("sleep 60")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = deaf.stdin.take().unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = sent.clone();
    let feeder = std::thread::spawn(move || {
        let block = vec![b'x'; 64 * 1024];
        // Ends when the channel goes and the pipe breaks.
        while input.write_all(&block).is_ok() {
            counted.fetch_add(block.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // Until the client is stopped by the windows on the way.
    let mut last = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = sent.load(std::sync::atomic::Ordering::Relaxed);
        if now > 0 && now == last {
            break;
        }
        last = now;
    }
    let mut beside = mux.echo("beside");
    let beside = ended_within_20s(&mut beside).await;
    let _ = deaf.kill();
    let _ = deaf.wait();
    let _ = feeder.join();
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    let (status, out) = beside.expect("a command that does not read held up another channel");
    assert!(status.success(), "{status:?}: {}", mux.said("beside"));
    assert_eq!(out, "beside\n");
    // The client was held back by the windows, not left to send without
    // end: what it sent fits in the gateway's window toward it, the
    // target's toward the gateway, and the sockets and pipe between.
    assert!(
        sent < 64 << 20,
        "the client sent {sent} bytes to a command that reads nothing"
    );
    mux.stop().await;
}

/// A forwarded connection whose reader stalls holds up no other forwarded
/// connection, though they share one connection to the target: the gateway
/// opens each channel's window toward the target as the client's side takes
/// its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_forward_holds_up_no_other_forward() {
    // A service on the target's side that sends without end to whoever
    // connects.
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let service_port = service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in service.incoming() {
            let Ok(mut stream) = stream else { break };
            std::thread::spawn(move || {
                let block = vec![b'z'; 64 * 1024];
                while stream.write_all(&block).is_ok() {}
            });
        }
    });
    let (_dir, dir) = policies(&format!(
        r#"
permit (principal, action == Action::"connect", resource);
permit (principal, action == Action::"forward", resource)
when {{ context.forward.direction == "local" && context.forward.port == {service_port} }};
"#
    ));
    let gw = gateway("ssh_stalled_forward", dir, None).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let local = free_port();
    let mut tunnel = client(&gw, "ssh", &alice)
        .args(["-N", "-p", &port(&gw)])
        .args(["-L", &format!("127.0.0.1:{local}:127.0.0.1:{service_port}")])
        .arg("demo-ssh@127.0.0.1")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let connect = || {
        for _ in 0..50 {
            if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", local)) {
                return stream;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the forwarded port never opened");
    };
    let (_stalled, read) = tokio::task::block_in_place(|| {
        // Connected, and never read: its windows fill on the way.
        let stalled = connect();
        std::thread::sleep(Duration::from_secs(3));
        let mut other = connect();
        other
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut read = 0usize;
        while read < 4 << 20 {
            match other.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
        (stalled, read)
    });
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    assert!(
        read >= 4 << 20,
        "a second forwarded connection got {read} bytes while the first stalled"
    );
    gw.stop().await;
}

/// Each session channel open at a time has a connection of its own to the
/// target: one client connection opens at most ten, as sshd's
/// `MaxSessions`, and a channel opened once others ended runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_opens_at_most_ten_sessions_at_a_time() {
    let mux = Mux::start("ssh_max_sessions", Some(RUN_ANYTHING)).await;
    let (eleventh, again) = tokio::task::block_in_place(|| {
        let mut open: Vec<_> = (0..10)
            .map(|_| {
                mux.channel("echo up; exec sleep 60")
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in &mut open {
            let mut up = [0u8; 3];
            child.stdout.as_mut().unwrap().read_exact(&mut up).unwrap();
        }
        let eleventh = mux.channel("echo eleventh").output().unwrap();
        for child in &mut open {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The ten channels close on their own time: ask until one runs.
        let mut again = None;
        for _ in 0..50 {
            let out = mux.channel("echo again").output().unwrap();
            if out.status.success() {
                again = Some(out);
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        (eleventh, again)
    });
    exited_saying(
        &eleventh,
        255,
        "this connection has 10 sessions open already",
    );
    let again = again.expect("no session ran once the ten had ended");
    assert_eq!(String::from_utf8_lossy(&again.stdout), "again\n");
    mux.stop().await;
}

/// Every command's exit status reaches its client, also when many end at
/// once on one connection: a client whose input is done closes the channel
/// as soon as output ends, so the gateway passes the status on first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_statuses_reach_clients_of_a_busy_connection() {
    let mux = Mux::start("ssh_exit_statuses", Some(RUN_ANYTHING)).await;
    let statuses = tokio::task::block_in_place(|| {
        let mut statuses = Vec::new();
        for round in 0..3 {
            let running: Vec<_> = (1..=10)
                .map(|n| {
                    let line = format!("echo {round}; exit {n}");
                    let child = mux
                        .channel(&line)
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap();
                    (n, child)
                })
                .collect();
            for (n, child) in running {
                statuses.push((n, child.wait_with_output().unwrap()));
            }
        }
        statuses
    });
    for (n, out) in &statuses {
        exited_saying(out, *n, "");
    }
    mux.stop().await;
}

/// `head -c 5 < big-file`: the command ends without reading its input. The
/// client gets its output and exit status at once, as from sshd, and the
/// rest of the input is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_stops_reading_its_input_still_ends() {
    let (_dir, dir) = policies(RUN_ANYTHING);
    let gw = gateway("ssh_unread_input", dir, None).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let input = gw.dir.path().join("input");
    std::fs::write(&input, vec![b'x'; 32 << 20]).unwrap();
    for line in ["head -c 5", "sleep 1; echo done"] {
        let mut ssh = client(&gw, "ssh", &alice)
            .args(["-p", &port(&gw), "demo-ssh@127.0.0.1", line])
            .stdin(std::fs::File::open(&input).unwrap())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let ended = ended_within_20s(&mut ssh).await;
        let (status, out) = ended.unwrap_or_else(|| panic!("`{line}` never ended"));
        assert!(status.success(), "{line}: {status:?}");
        let expected = if line.starts_with("head") {
            "xxxxx"
        } else {
            "done\n"
        };
        assert_eq!(out, expected, "{line}");
    }
    gw.stop().await;
}

/// A shell without a terminal runs a last line that has no line end when
/// its input ends (found in attack: it ran unaudited). It is audited,
/// marked so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_typed_line_without_a_line_end_is_audited() {
    let shells =
        format!("{RUN_ANYTHING}permit (principal, action == Action::\"shell\", resource);\n");
    let (_dir, dir) = policies(&shells);
    let gw = gateway("ssh_last_line", dir, None).await;
    let alice = gw.token("alice@example.com", &["eng"]);
    let marker = scratch("last-line");
    let input = gw.dir.path().join("typed");
    let last = format!("touch {}", marker.display());
    std::fs::write(&input, format!("echo first\n{last}")).unwrap();
    let mut ssh = client(&gw, "ssh", &alice)
        .args(["-T", "-p", &port(&gw), "demo-ssh@127.0.0.1"])
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, out) = ended_within_20s(&mut ssh)
        .await
        .expect("the shell never ended");
    assert!(status.success(), "{status:?}");
    assert_eq!(out, "first\n");
    assert!(marker.exists(), "the last line did not run");
    let entries = gw.audit_entries(200);
    assert!(
        entries.iter().any(|e| e["kind"] == "shell.typed"
            && e["detail"]["line"]
                .as_str()
                .is_some_and(|l| l.starts_with(&last) && l.contains("without a line end"))),
        "{entries:?}"
    );
    let _ = std::fs::remove_file(&marker);
    gw.stop().await;
}
