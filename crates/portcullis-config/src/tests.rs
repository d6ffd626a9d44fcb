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
    assert_eq!(target.password, SecretRef::Env("PGPASSWORD".into()));
    assert_eq!(config.gateway.data_dir, Path::new("/etc/portcullis/./data"));
    assert_eq!(config.policy.dir, Path::new("/etc/portcullis/policies"));
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
