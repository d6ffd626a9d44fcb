use super::*;
use std::collections::HashMap;

struct MapEnv(HashMap<&'static str, &'static str>);
impl interpolate::Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|v| v.to_string())
    }
}

const BASE: &str = r#"
[gateway]
data_dir = "${DATA:-./data}"

[postgres]
listen = "${LISTEN:-127.0.0.1:15432}"

[identity.dev]

[policy]
dir = "policies"

[[targets]]
name = "demo"
kind = "postgres"
host = "${PGHOST}"
port = "${PGPORT:-5432}"
database = "app"
user = "app"
password = { env = "PGPASSWORD" }
labels = { env = "dev" }
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let env = MapEnv(HashMap::from([
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", "55432"),
    ]));
    Config::parse(text, Path::new("/etc/portcullis/portcullis.toml"), &env)
}

#[test]
fn parses_interpolates_and_resolves_paths() {
    let config = parse(BASE).unwrap();
    let target = &config.targets[0];
    assert_eq!(target.host, "127.0.0.1");
    assert_eq!(target.port, 55432);
    assert_eq!(target.password, Some(SecretRef::Env("PGPASSWORD".into())));
    assert_eq!(config.gateway.data_dir, Path::new("/etc/portcullis/./data"));
    assert_eq!(
        config.policy.source,
        PolicySourceConfig::Dir("/etc/portcullis/policies".into())
    );
    assert_eq!(config.postgres.unwrap().listen.port(), 15432);
    assert_eq!(config.audit.busy_timeout_ms, 5000);
}

#[test]
fn unknown_key_names_file_and_key() {
    let err = parse(&BASE.replace(
        "[identity.dev]",
        "[identity.dev]\nissuer = \"x\"\ncolour = 1",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("/etc/portcullis/portcullis.toml"), "{err}");
    assert!(err.contains("identity.dev"), "{err}");
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn bad_value_names_the_key() {
    let err = parse(&BASE.replace("\"${PGPORT:-5432}\"", "\"fifty\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("targets[0].port"), "{err}");
    assert!(err.contains("fifty"), "{err}");
}

#[test]
fn inline_secret_is_refused() {
    let err = parse(&BASE.replace("{ env = \"PGPASSWORD\" }", "\"hunter2\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("targets[0].password"), "{err}");
    assert!(err.contains("not accepted inline"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn missing_env_names_the_variable() {
    let env = MapEnv(HashMap::new());
    let err = Config::parse(BASE, Path::new("p.toml"), &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("p.toml") && err.contains("targets[0].host") && err.contains("PGHOST"),
        "{err}"
    );
}

#[test]
fn missing_secret_is_an_error_naming_the_key() {
    let config = parse(&BASE.replace("PGPASSWORD", "PORTCULLIS_TEST_UNSET_SECRET")).unwrap();
    let err = config
        .target_password(Path::new("p.toml"), 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("targets[0].password") && err.contains("PORTCULLIS_TEST_UNSET_SECRET"),
        "{err}"
    );
}

#[test]
fn duplicate_targets_and_no_identity_are_refused() {
    let twice = format!("{BASE}\n{}", &BASE[BASE.find("[[targets]]").unwrap()..]);
    assert!(parse(&twice)
        .unwrap_err()
        .to_string()
        .contains("defined twice"));
    let err = parse(&BASE.replace("[identity.dev]", ""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no identity source"), "{err}");
}

#[test]
fn syntax_error_names_the_file() {
    let err = parse("[gateway\n").unwrap_err().to_string();
    assert!(err.starts_with("/etc/portcullis/portcullis.toml"), "{err}");
}

fn with_policy(section: &str) -> Result<Config, ConfigError> {
    parse(&BASE.replace(
        "[policy]\ndir = \"policies\"",
        &format!("[policy]\n{section}"),
    ))
}

#[test]
fn git_policy_source_with_defaults() {
    let config = with_policy("git = { repo = \"policy-repo\" }").unwrap();
    assert_eq!(
        config.policy.source,
        PolicySourceConfig::Git(GitSourceConfig {
            repo: GitRepo::Local("/etc/portcullis/policy-repo".into()),
            reference: "HEAD".into(),
            subdir: String::new(),
        })
    );
    assert_eq!(config.policy.reload_interval_seconds, 5);
}

#[test]
fn git_policy_source_with_ref_subdir_and_file_url() {
    let config = with_policy(
        "git = { repo = \"file:///srv/policies%20repo.git\", ref = \"refs/heads/main\", subdir = \"./gateway/policies/\" }",
    )
    .unwrap();
    assert_eq!(
        config.policy.source,
        PolicySourceConfig::Git(GitSourceConfig {
            repo: GitRepo::Local("/srv/policies repo.git".into()),
            reference: "refs/heads/main".into(),
            subdir: "gateway/policies".into(),
        })
    );
    // The table form, with an absolute path kept as it is.
    let config = with_policy("[policy.git]\nrepo = \"/srv/policies\"\nref = \"main\"").unwrap();
    let PolicySourceConfig::Git(git) = config.policy.source else {
        panic!("not a git source");
    };
    assert_eq!(git.repo, GitRepo::Local("/srv/policies".into()));
    assert_eq!(git.reference, "main");
}

#[test]
fn remote_git_sources_are_kept_as_urls_and_never_shown_with_credentials() {
    for url in [
        "https://github.com/acme/policies.git",
        "git://git.example.com/policies.git",
        "ssh://git@example.com/acme/policies.git",
        "git@github.com:acme/policies.git",
    ] {
        let config = with_policy(&format!("git = {{ repo = \"{url}\" }}")).unwrap();
        let PolicySourceConfig::Git(git) = config.policy.source else {
            panic!("not a git source");
        };
        assert_eq!(git.repo, GitRepo::Remote(url.to_string()));
    }
    let secret = GitRepo::Remote("https://x-access-token:s3cret@github.com/acme/p.git".into());
    assert_eq!(secret.shown(), "https://***@github.com/acme/p.git");
    assert!(!format!("{secret:?}").contains("s3cret"));
    let err = with_policy("git = { repo = \"ftp://token:s3cret@example.com/p\" }")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("s3cret"), "{err}");
    // Over ssh a password is not used, and git would put it on ssh's
    // command line (its host: `token`).
    let err = with_policy("git = { repo = \"token:s3cret@example.com:acme/p.git\" }")
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("s3cret") && err.contains("not used over ssh"),
        "{err}"
    );
}

#[test]
fn policy_source_must_be_exactly_one_of_dir_and_git() {
    let both = with_policy("dir = \"policies\"\ngit = { repo = \"/srv/policies\" }")
        .unwrap_err()
        .to_string();
    assert!(
        both.starts_with("/etc/portcullis/portcullis.toml: `policy`:"),
        "{both}"
    );
    assert!(both.contains("both `dir` and `git`"), "{both}");
    let neither = with_policy("reload_interval_seconds = 1")
        .unwrap_err()
        .to_string();
    assert!(
        neither.starts_with("/etc/portcullis/portcullis.toml: `policy`:"),
        "{neither}"
    );
    assert!(neither.contains("no policy source"), "{neither}");
}

#[test]
fn git_policy_source_errors_name_the_key() {
    let cases = [
        (
            "git = { repo = \"ftp://token:secret@example.com/policies.git\" }",
            "policy.git.repo",
            "not a URL the gateway fetches from",
        ),
        (
            "git = { repo = \"file://server/policies\" }",
            "policy.git.repo",
            "not a `file://` URL of a local path",
        ),
        (
            "git = { repo = \"\" }",
            "policy.git.repo",
            "must not be empty",
        ),
        (
            "git = { repo = \"/srv/p\", ref = \"\" }",
            "policy.git.ref",
            "must not be empty",
        ),
        (
            "git = { repo = \"/srv/p\", subdir = \"../etc\" }",
            "policy.git.subdir",
            "without `..`",
        ),
        (
            "git = { repo = \"/srv/p\", subdir = \"/etc\" }",
            "policy.git.subdir",
            "not an absolute path",
        ),
        (
            "git = { repo = \"/srv/p\", branch = \"main\" }",
            "policy.git",
            "branch",
        ),
        ("dir = \"p\"\ncolour = 1", "policy", "colour"),
    ];
    for (section, key, message) in cases {
        let err = with_policy(section).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("/etc/portcullis/portcullis.toml: `{key}")),
            "{section}: {err}"
        );
        assert!(err.contains(message), "{section}: {err}");
    }
    // A local path with a colon is written so that git would read it as local.
    let config = with_policy("git = { repo = \"./host:policies\" }").unwrap();
    let PolicySourceConfig::Git(git) = config.policy.source else {
        panic!("not a git source");
    };
    assert_eq!(
        git.repo,
        GitRepo::Local("/etc/portcullis/./host:policies".into())
    );
}

#[test]
fn credentials_in_a_repository_that_is_no_url_are_not_shown() {
    for (text, shown) in [
        (
            "https://tok:S3CRETab/cd@127.0.0.1:1/p.git",
            "https://***@127.0.0.1:1/p.git",
        ),
        (
            "https://tok:S3CRET?x@host:1:2/p.git",
            "https://***@host:1:2/p.git",
        ),
        ("tok:S3CRET@127.0.0.1:p.git", "***@127.0.0.1:p.git"),
        (
            "https://github.com/acme/p.git",
            "https://github.com/acme/p.git",
        ),
    ] {
        assert_eq!(redact_url(text), shown);
    }
}

#[test]
fn the_console_is_served_in_clear_only_on_this_machine() {
    let with_console = |url: &str| {
        parse(&format!(
            "{BASE}\n[admin]\nlisten = \"127.0.0.1:9090\"\n\n[console]\npublic_url = \"{url}\"\n"
        ))
    };
    let err = with_console("http://gateway.example.com").unwrap_err();
    assert!(err.to_string().contains("in clear"), "{err}");
    assert!(with_console("http://10.0.0.2:9090").is_err());
    assert!(with_console("https://gateway.example.com").is_ok());
    assert!(with_console("http://127.0.0.1:9090").is_ok());
    assert!(with_console("http://localhost:9090").is_ok());
}
