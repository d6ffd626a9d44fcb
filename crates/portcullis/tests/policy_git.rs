//! Policies followed from a Git repository: the gateway enforces the commit
//! its branch points at, follows the branch while sessions stay open, keeps
//! the last good commit when a bad one is pushed after it, and says so on the
//! admin API and through `portcullis policy drift`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// A policy repository made with the `git` command line, the way a platform
/// team makes one (the gateway itself never runs `git`).
struct PolicyRepo {
    dir: tempfile::TempDir,
}

impl PolicyRepo {
    fn new() -> PolicyRepo {
        let repo = PolicyRepo {
            dir: tempfile::tempdir().unwrap(),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        // No user or system config: works on a fresh machine, and the
        // author is fixed here.
        let out = Command::new("git")
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "core.hooksPath=/dev/null",
            ])
            .args(args)
            .current_dir(self.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Platform Team")
            .env("GIT_AUTHOR_EMAIL", "platform@example.com")
            .env("GIT_COMMITTER_NAME", "Platform Team")
            .env("GIT_COMMITTER_EMAIL", "platform@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn write(&self, path: &str, text: &str) {
        let path = self.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn remove(&self, path: &str) {
        std::fs::remove_file(self.path().join(path)).unwrap();
    }

    /// Commits everything in the worktree on `main`; returns the commit id.
    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "main"])
    }
}

/// The audit entries of statements with this exact text, oldest first.
fn audited_statements(gw: &Gateway, text: &str) -> Vec<serde_json::Value> {
    let tail = gw.cli(&["audit", "tail", "-n", "20", "--json"]);
    assert!(tail.status.success(), "{}", stderr(&tail));
    stdout(&tail)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["entry"].clone())
        .filter(|entry| entry["event"] == "statement" && entry["statement"]["text"] == text)
        .collect()
}

const COUNT_ORDERS: &str = "select count(*) from orders";

/// The `policy.loaded` entries of the audit log: previous, version,
/// history and whether the gateway started with it.
fn policy_loads(gw: &Gateway) -> Vec<(String, String, String, bool)> {
    let tail = gw.cli(&["audit", "tail", "-n", "500", "--json"]);
    stdout(&tail)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["entry"].clone())
        .filter(|entry| entry["event"] == "policy.loaded")
        .map(|entry| {
            let field = |name: &str| entry[name].as_str().unwrap_or_default().to_string();
            (
                field("previous"),
                field("version"),
                field("history"),
                entry["start"] == true,
            )
        })
        .collect()
}

/// `portcullis policy drift` says the gateway enforces `version`, in sync.
fn assert_in_sync(gw: &Gateway, version: &str) {
    let drift = gw.cli(&["policy", "drift"]);
    let out = stdout(&drift);
    assert_eq!(drift.status.code(), Some(0), "{out}{}", stderr(&drift));
    assert!(out.contains(version), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_follows_a_git_branch_keeps_the_last_good_commit_and_reports_drift() {
    let repo = PolicyRepo::new();
    for entry in std::fs::read_dir(quickstart_policies()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cedar") {
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            repo.write(
                &format!("policies/{name}"),
                &std::fs::read_to_string(&path).unwrap(),
            );
        }
    }
    repo.write("README.md", "Access policies for the demo database.\n");
    let first = repo.commit("quickstart policies");

    let gw = Gateway::start_with(
        TestDb::create("e2e_policy_git", SEED).await,
        Options {
            policy_source: Some(format!(
                "git = {{ repo = \"{}\", ref = \"main\", subdir = \"policies\" }}",
                repo.path().display()
            )),
            ..Options::default()
        },
    )
    .await;
    gw.pin_admin_listen();

    // The gateway enforces the branch's commit, named by its id.
    let s = gw.status().await;
    assert_eq!(s["policy_version"], first.as_str(), "{s}");
    assert_eq!(s["source_version"], first.as_str(), "{s}");
    assert_eq!(s["drift"], false, "{s}");
    assert!(s["policy_error"].is_null(), "{s}");
    let drift = gw.cli(&["policy", "drift"]);
    assert_eq!(drift.status.code(), Some(0), "{}", stderr(&drift));
    assert!(stdout(&drift).contains(&first), "{}", stdout(&drift));
    assert!(stdout(&drift).contains("in sync"), "{}", stdout(&drift));

    let alice = gw.token("alice@example.com", &["eng"]);
    let client = gw.connect(&alice).await.unwrap();
    assert_eq!(scalar_i64(&client, COUNT_ORDERS).await, 4);

    // What is in the worktree but not committed is never enforced or read.
    repo.write(
        "policies/draft.cedar",
        "permit (principal, action, resource) when { nope };",
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let s = gw.status().await;
    assert_eq!(s["policy_version"], first.as_str(), "{s}");
    assert!(s["policy_error"].is_null(), "{s}");
    repo.remove("policies/draft.cedar");

    // The branch moves forward while alice's session is open: the new commit
    // is enforced, her session goes on, and the new rule decides in it.
    repo.write(
        "policies/customers.cedar",
        "@id(\"no-customer-data\")\n@reason(\"customer data is read through the support tool\")\nforbid (principal, action == Action::\"query\", resource)\nwhen { context.statement.tables.contains(\"customers\") };\n",
    );
    let second = repo.commit("customer data through the support tool only");
    let s = gw
        .wait_for("the second commit", |s| {
            s["policy_version"] == second.as_str()
        })
        .await;
    assert_eq!(s["source_version"], second.as_str(), "{s}");
    assert_eq!(s["drift"], false, "{s}");
    assert!(!client.is_closed());
    assert_eq!(scalar_i64(&client, COUNT_ORDERS).await, 4);
    let err = client
        .query("select count(*) from customers", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(
        db_message(&err).contains("customer data is read through the support tool"),
        "{}",
        db_message(&err)
    );
    // Every audit entry names the commit that decided it.
    let entries = audited_statements(&gw, COUNT_ORDERS);
    let mut versions: Vec<&str> = entries
        .iter()
        .map(|e| e["decision"]["policy_version"].as_str().unwrap())
        .collect();
    // The extended protocol audits a statement at `parse` and at `execute`.
    versions.dedup();
    assert_eq!(versions, [first.as_str(), second.as_str()], "{entries:?}");
    let denied = audited_statements(&gw, "select count(*) from customers");
    assert!(!denied.is_empty());
    for entry in &denied {
        assert_eq!(entry["decision"]["effect"], "deny", "{entry}");
        assert_eq!(
            entry["decision"]["policy_version"],
            second.as_str(),
            "{entry}"
        );
    }

    // A bad commit pushed after the good one: refused, reported with the
    // commit and the file, the good commit stays enforced, and that is drift.
    repo.write(
        "policies/broken.cedar",
        "permit (principal, action == Action::\"query\", resource)\nwhen { context.statement.kindd == \"select\" };\n",
    );
    let bad = repo.commit("a typo");
    let s = gw
        .wait_for("the bad commit's error", |s| s["policy_error"].is_string())
        .await;
    let error = s["policy_error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{}:policies/broken.cedar:2:", &bad[..12])),
        "{s}"
    );
    assert_eq!(s["policy_version"], second.as_str(), "{s}");
    assert_eq!(s["source_version"], bad.as_str(), "{s}");
    assert_eq!(s["drift"], true, "{s}");
    // And it is in the audit log, after the source goes back.
    let tail = gw.cli(&["audit", "tail", "-n", "500", "--json"]);
    let refused: Vec<serde_json::Value> = stdout(&tail)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["entry"].clone())
        .filter(|entry| entry["event"] == "policy.refused")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["version"], bad.as_str());
    assert_eq!(refused[0]["enforced"], second.as_str());
    assert!(
        refused[0]["error"]
            .as_str()
            .unwrap()
            .contains("policies/broken.cedar:2:"),
        "{refused:?}"
    );
    assert_eq!(scalar_i64(&client, COUNT_ORDERS).await, 4);
    assert_eq!(
        audited_statements(&gw, COUNT_ORDERS).last().unwrap()["decision"]["policy_version"],
        second.as_str()
    );
    let drift = gw.cli(&["policy", "drift"]);
    let out = stdout(&drift);
    assert_eq!(drift.status.code(), Some(1), "{out}{}", stderr(&drift));
    assert!(out.contains(&format!("enforced: {second}")), "{out}");
    assert!(out.contains(&format!("source:   {bad}")), "{out}");
    assert!(out.contains("drift"), "{out}");
    assert!(out.contains("policies/broken.cedar:2:"), "{out}");
    // Against the good commit, the gateway is in sync.
    let drift = gw.cli(&["policy", "drift", "--ref", &second]);
    assert_eq!(
        drift.status.code(),
        Some(0),
        "{}{}",
        stdout(&drift),
        stderr(&drift)
    );

    // A fixing commit clears the error and the drift.
    repo.remove("policies/broken.cedar");
    let fixed = repo.commit("fix the typo");
    let s = gw
        .wait_for("the fixing commit", |s| {
            s["policy_version"] == fixed.as_str()
        })
        .await;
    assert!(s["policy_error"].is_null(), "{s}");
    assert_eq!(s["source_version"], fixed.as_str(), "{s}");
    assert_eq!(s["drift"], false, "{s}");
    assert_in_sync(&gw, &fixed);
    assert_eq!(scalar_i64(&client, COUNT_ORDERS).await, 4);
    assert_eq!(
        audited_statements(&gw, COUNT_ORDERS).last().unwrap()["decision"]["policy_version"],
        fixed.as_str()
    );

    // The branch forced back to the first commit: enforced (it is what the
    // branch holds), the customer rule gone again, and the audit log marks
    // the step back, as it marks steps forward.
    repo.git(&["reset", "-q", "--hard", &first]);
    gw.wait_for("the branch forced back", |s| {
        s["policy_version"] == first.as_str()
    })
    .await;
    assert_eq!(
        scalar_i64(&client, "select count(*) from customers").await,
        3
    );
    let loaded = |previous: &str, version: &str, history: &str, start: bool| {
        (
            previous.to_string(),
            version.to_string(),
            history.to_string(),
            start,
        )
    };
    assert_eq!(
        policy_loads(&gw),
        [
            loaded("", &first, "", true),
            loaded(&first, &second, "forward", false),
            loaded(&second, &fixed, "forward", false),
            loaded(&fixed, &first, "back", false),
        ]
    );

    // A restart compares the version it starts with against the one
    // enforced before it: a branch moved while the gateway was down is
    // marked as one moved while it runs.
    drop(client);
    repo.git(&["reset", "-q", "--hard", &fixed]);
    let gw = gw.restart().await;
    assert_in_sync(&gw, &fixed);
    repo.git(&["reset", "-q", "--hard", &second]);
    let gw = gw.restart().await;
    assert_in_sync(&gw, &second);
    // With state.db gone (found in attack), what came before is unknown,
    // and said so rather than shown as a first start.
    std::fs::remove_file(portcullis_app::state_path(&gw.config.gateway.data_dir)).unwrap();
    let gw = gw.restart().await;
    // Read another way (another ref, directory or engine; found in attack),
    // the same commit id says nothing of what was enforced before.
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let moved = text.replace("ref = \"main\"", "ref = \"refs/heads/main\"");
    assert_ne!(text, moved);
    std::fs::write(&gw.config_path, moved).unwrap();
    let gw = gw.restart().await;
    assert_eq!(
        policy_loads(&gw)[4..],
        [
            loaded(&first, &fixed, "forward", true),
            loaded(&fixed, &second, "back", true),
            loaded("", &second, "unknown", true),
            loaded(&second, &second, "unknown", true),
        ]
    );
    assert_in_sync(&gw, &second);
    // The reviewed config reads the same commit another way: drift, though
    // the commit ids are the same.
    let other = gw.config_path.with_file_name("reviewed.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&gw.config_path)
            .unwrap()
            .replace("ref = \"refs/heads/main\"", "ref = \"main\""),
    )
    .unwrap();
    let drift = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["policy", "drift", "--config"])
        .arg(&other)
        .output()
        .unwrap();
    let out = stdout(&drift);
    assert_eq!(drift.status.code(), Some(1), "{out}{}", stderr(&drift));
    assert!(
        out.contains("drift: the gateway reads") && out.contains("this config reads"),
        "{out}"
    );

    // No gateway, no answer: exit 2 with a message that says so.
    let config_path = gw.config_path.clone();
    let _dir = gw.stop().await;
    let drift = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["policy", "drift", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert_eq!(drift.status.code(), Some(2), "{}", stdout(&drift));
    assert!(
        stderr(&drift).contains("cannot reach the gateway's admin API"),
        "{}",
        stderr(&drift)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refuses_to_start_without_a_valid_commit() {
    let repo = PolicyRepo::new();
    repo.write(
        "policies/broken.cedar",
        "permit (principal, action, resource) when { nope };\n",
    );
    let bad = repo.commit("broken from the start");
    let db = TestDb::create("e2e_policy_git_bad", "").await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(
        dir.path(),
        &db,
        &Options {
            policy_source: Some(format!(
                "git = {{ repo = \"file://{}\", ref = \"main\", subdir = \"policies\" }}",
                repo.path().display()
            )),
            ..Options::default()
        },
    );
    let err = serve_refusal(&config_path);
    assert!(
        err.contains(&format!("{}:policies/broken.cedar:1:", &bad[..12])),
        "{err}"
    );
}

/// A server on loopback, stopped when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something listens on `port`.
fn wait_listening(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}");
}

/// `root/policies.git`, a bare repository that `repo` pushes to, served by
/// `git daemon` (git://) and by `git http-backend` behind Python's CGI
/// server (http://), as a Git host would serve it.
struct GitHost {
    root: tempfile::TempDir,
    _daemon: Server,
    _http: Server,
    git_port: u16,
    http_port: u16,
}

impl GitHost {
    fn start(repo: &PolicyRepo) -> GitHost {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        // The CGI server runs its scripts as `nobody` when started as root.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bare = root.path().join("policies.git");
        repo.git(&["clone", "-q", "--bare", ".", bare.to_str().unwrap()]);
        let out = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(root.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        let git_port = free_port();
        let daemon = Server(
            Command::new("git")
                .args([
                    "daemon",
                    "--reuseaddr",
                    "--export-all",
                    "--listen=127.0.0.1",
                ])
                .arg(format!("--port={git_port}"))
                .arg(format!("--base-path={}", root.path().display()))
                .arg(root.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let cgi = root.path().join("cgi-bin");
        std::fs::create_dir(&cgi).unwrap();
        std::fs::write(
            cgi.join("git"),
            format!(
                "#!/bin/sh\nexport GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*' GIT_PROJECT_ROOT={} GIT_HTTP_EXPORT_ALL=1\nexec git http-backend\n",
                root.path().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(cgi.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).unwrap();
        let http_port = free_port();
        let http = Server(
            Command::new("python3")
                .args(["-m", "http.server", "--cgi", "--bind", "127.0.0.1"])
                .arg(http_port.to_string())
                .current_dir(root.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_listening(git_port);
        wait_listening(http_port);
        GitHost {
            root,
            _daemon: daemon,
            _http: http,
            git_port,
            http_port,
        }
    }

    fn push(&self, repo: &PolicyRepo) {
        let bare = self.root.path().join("policies.git");
        repo.git(&["push", "-q", "-f", bare.to_str().unwrap(), "main"]);
        let out = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(self.root.path())
            .output()
            .unwrap();
        assert!(out.status.success());
    }
}

fn repo_with_quickstart_policies() -> PolicyRepo {
    let repo = PolicyRepo::new();
    for entry in std::fs::read_dir(quickstart_policies()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".cedar") || name.ends_with("masks.toml") {
            repo.write(
                &format!("policies/{name}"),
                &std::fs::read_to_string(&path).unwrap(),
            );
        }
    }
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_fetches_remote_repositories_over_git_and_http() {
    let repo = repo_with_quickstart_policies();
    let first = repo.commit("quickstart policies");
    let host = GitHost::start(&repo);
    for url in [
        format!("git://127.0.0.1:{}/policies.git", host.git_port),
        format!(
            "http://127.0.0.1:{}/cgi-bin/git/policies.git",
            host.http_port
        ),
    ] {
        let gw = Gateway::start_with(
            TestDb::create("e2e_policy_remote", SEED).await,
            Options {
                policy_source: Some(format!(
                    "git = {{ repo = \"{url}\", ref = \"main\", subdir = \"policies\" }}"
                )),
                ..Options::default()
            },
        )
        .await;
        gw.pin_admin_listen();
        let s = gw.status().await;
        assert_eq!(
            s["policy_version"],
            repo.git(&["rev-parse", "main"]).as_str(),
            "{url}: {s}"
        );
        assert!(!s.to_string().contains("s3cret"), "{s}");
        let alice = gw.token("alice@example.com", &["eng"]);
        let client = gw.connect(&alice).await.unwrap();
        assert_eq!(scalar_i64(&client, COUNT_ORDERS).await, 4);

        // The branch moves on the host: the gateway fetches and enforces it.
        repo.write(
            "policies/customers.cedar",
            "@id(\"no-customer-data\")\n@reason(\"customer data is read through the support tool\")\nforbid (principal, action == Action::\"query\", resource)\nwhen { context.statement.tables.contains(\"customers\") };\n",
        );
        let second = repo.commit("customer data through the support tool only");
        host.push(&repo);
        gw.wait_for("the pushed commit", |s| {
            s["policy_version"] == second.as_str()
        })
        .await;
        let err = client
            .query("select count(*) from customers", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501");
        assert_in_sync(&gw, &second);

        // Back to the first commit for the next round.
        repo.remove("policies/customers.cedar");
        repo.commit("revert");
        host.push(&repo);
        drop(client);
        gw.stop().await;
    }
    let _ = first;

    // Credentials over plain HTTP, and a host that cannot be reached: the
    // gateway refuses to start, says why, and never shows the credentials.
    let db = TestDb::create("e2e_policy_remote_down", "").await;
    for (url, why) in [
        (
            format!(
                "http://portcullis:s3cret-token@127.0.0.1:{}/cgi-bin/git/policies.git",
                host.http_port
            ),
            "clear text",
        ),
        (
            format!(
                "https://portcullis:s3cret-token@127.0.0.1:{}/policies.git",
                free_port()
            ),
            "cannot fetch",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config_path = write_config(
            dir.path(),
            &db,
            &Options {
                policy_source: Some(format!("git = {{ repo = \"{url}\", ref = \"main\" }}")),
                ..Options::default()
            },
        );
        let err = serve_refusal(&config_path);
        assert!(err.contains(why), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}
