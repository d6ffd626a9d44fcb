//! What the CLI's subcommands do, apart from `serve`. Each returns the text
//! to print or an error; the binary prints and sets the exit status.

use anyhow::{anyhow, bail, Context, Result};
use portcullis_config::Config;
use portcullis_identity::{LoginClient, TokenCache};
use std::path::Path;
use std::time::Duration;

/// `portcullis audit verify`: checks the whole chain and the checkpoints,
/// against `key_file` (a copy of the public key kept apart from the store)
/// or else the data directory's own copy.
pub fn audit_verify(config: &Config, key_file: Option<&Path>) -> Result<String> {
    let data_dir = &config.gateway.data_dir;
    let key = match key_file {
        Some(file) => portcullis_audit::load_verifying_key_file(file)?,
        None => portcullis_audit::load_verifying_key(data_dir)?,
    };
    let path = crate::audit_path(data_dir);
    if !path.exists() {
        bail!("no audit log at `{}`", path.display());
    }
    let report = portcullis_audit::verify(&path, &key)?;
    let mut out = format!(
        "audit log intact: {} entries, {} signed checkpoints, last entry {}, last checkpoint at entry {}, {} entries after it\n",
        report.entries_checked,
        report.checkpoints_checked,
        report.last_seq,
        report.last_checkpoint_seq.map_or("none".to_string(), |s| s.to_string()),
        report.entries_after_last_checkpoint,
    );
    for (first, last) in &report.found_unsigned {
        out.push_str(&format!(
            "WARNING: entries {first} to {last} had no signed checkpoint when the gateway next started (it stopped without signing them, or they were added while it was stopped): they are signed as found, and nothing vouches that the gateway wrote them\n"
        ));
    }
    let key_id = portcullis_audit::key_id(&key);
    out.push_str(&match key_file {
        Some(file) => format!("checked against the key in `{}` (key id {key_id})\n", file.display()),
        // Whoever can change the store can change the key file beside it,
        // and sign again with a key of their own.
        None => format!(
            "checked against the data directory's own public key (key id {key_id}); give a copy kept elsewhere with --key to rule out a store signed again with another key\n"
        ),
    });
    if let (Some(seq), Some(hash)) = (report.last_checkpoint_seq, &report.last_checkpoint_hash) {
        // The store alone cannot show that it was cut back to an earlier
        // checkpoint: the gateway's log can.
        out.push_str(&format!(
            "signed head: entry {seq}, hash {hash}; the gateway's log has no later `audit head signed` line if nothing was cut from the end\n"
        ));
    }
    Ok(out)
}

/// `portcullis audit verify --export FILE...`: checks exports as one log,
/// away from the gateway.
pub fn audit_verify_exports(
    files: &[std::path::PathBuf],
    key_file: Option<&Path>,
) -> Result<String> {
    let key = key_file
        .map(portcullis_audit::load_verifying_key_file)
        .transpose()?;
    let report = portcullis_audit::verify_exports(files, key.as_ref())?;
    let mut out = format!(
        "exports intact: entries {} to {} ({} entries, {} signed checkpoints)\n",
        report.starts_after + 1,
        report.last_seq,
        report.entries_checked,
        report.checkpoints_checked,
    );
    if report.entries_checked == 0 {
        out = format!(
            "exports intact: no entries after entry {}\n",
            report.starts_after
        );
    }
    if report.starts_after > 0 {
        out.push_str(&format!(
            "the first starts after entry {}: only the export that ends there links it to the log's start\n",
            report.starts_after
        ));
    }
    for (first, last) in &report.found_unsigned {
        out.push_str(&format!(
            "WARNING: entries {first} to {last} had no signed checkpoint when the gateway next started: they are signed as found, and nothing vouches that the gateway wrote them\n"
        ));
    }
    out.push_str(&match (key_file, &key) {
        (Some(file), Some(key)) => format!(
            "checked against the key in `{}` (key id {})\n",
            file.display(),
            portcullis_audit::key_id(key)
        ),
        _ => "checked against the key the first export names; give a copy kept elsewhere with --key to rule out exports signed again with another key\n".to_string(),
    });
    Ok(out)
}

/// `portcullis audit export`: the signed part of the log, after where
/// `after_export` ends or after entry `after`, to `output` (a new file,
/// written whole or not at all) or standard output. Returns what to tell on
/// standard error.
pub fn audit_export(
    config: &Config,
    after_export: Option<&Path>,
    after: Option<u64>,
    output: Option<&Path>,
) -> Result<String> {
    use portcullis_audit::ExportStart;
    use std::io::Write;
    let start = match (after_export, after) {
        (Some(file), _) => ExportStart::AfterExport(file),
        (None, Some(seq)) => ExportStart::After(seq),
        (None, None) => ExportStart::Beginning,
    };
    let data_dir = &config.gateway.data_dir;
    // The private key: an export's end line is signed, so that one cut at
    // an earlier checkpoint does not verify as a shorter one.
    let key = portcullis_audit::load_signing_key(data_dir)?;
    let path = crate::audit_path(data_dir);
    if !path.exists() {
        bail!("no audit log at `{}`", path.display());
    }
    let summary = match output {
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            portcullis_audit::export(&path, &key, start, &mut out)?
        }
        Some(output) => {
            if output.exists() {
                bail!(
                    "`{}` exists: an export goes to a new file",
                    output.display()
                );
            }
            let dir = output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut file = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot write in `{}`", dir.display()))?;
            let summary = {
                let mut out = std::io::BufWriter::new(file.as_file_mut());
                let summary = portcullis_audit::export(&path, &key, start, &mut out)?;
                out.flush()?;
                summary
            };
            file.as_file().sync_all()?;
            file.persist_noclobber(output)
                .with_context(|| format!("cannot write `{}`", output.display()))?;
            summary
        }
    };
    let to = output.map_or("standard output".to_string(), |o| {
        format!("`{}`", o.display())
    });
    Ok(if summary.entries == 0 {
        format!(
            "nothing signed after entry {} yet: {to} holds the export's header only, which the next export continues\n",
            summary.after
        )
    } else {
        format!(
            "exported entries {} to {} ({} entries, {} signed checkpoints) to {to}; the next export continues it with --after-export\n",
            summary.after + 1,
            summary.last_seq,
            summary.entries,
            summary.checkpoints,
        )
    })
}

/// `portcullis policy validate DIR`: parses and validates a policy directory
/// against the gateway's schema, without a running gateway.
pub fn policy_validate(dir: &Path, engine: Option<portcullis_policy::Engine>) -> Result<String> {
    let policies = portcullis_policy::Policies::load_dir_detected(dir, engine)?;
    Ok(format!(
        "{}: {} policies valid, version {}\n",
        dir.display(),
        policies.len(),
        policies.version()
    ))
}

/// Text from users (statements, command lines, comments, names) made safe
/// to print on one line of a terminal: line breaks (`\n`), other control
/// characters, hidden ones (direction changes, zero-width characters,
/// blanks other than the space) and right-to-left letters are shown
/// escaped, so that a carriage return, an escape sequence, a comment that
/// seems to run on past its line or text a terminal turns around cannot
/// make one entry or request look like another.
pub(crate) fn printable(text: &str) -> String {
    escaped(text, false)
}

/// Like [`printable`], keeping line breaks: for text the gateway lays out
/// in lines (a replayed session) whose parts came from users.
pub(crate) fn printable_lines(text: &str) -> String {
    escaped(text, true)
}

fn escaped(text: &str, keep_lines: bool) -> String {
    use portcullis_core::text::{is_right_to_left, is_unshown};
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' if keep_lines => out.push(c),
            '\t' => out.push(c),
            // Escapes start with one: a backslash typed is shown doubled, so
            // that `\n` typed cannot pass for a line break shown (found in
            // attack: `-- comment\n where id = 3` read as a WHERE clause).
            '\\' => out.push_str("\\\\"),
            c if c == '\n' || is_unshown(c) || is_right_to_left(c) => {
                out.extend(c.escape_default())
            }
            c => out.push(c),
        }
    }
    out
}

/// JSON that prints as itself on a terminal: `serde_json` escapes only
/// ASCII controls, so C1 controls (U+009B starts an escape sequence on many
/// terminals), direction changes, zero-width characters and right-to-left
/// letters are written as `\u` escapes here. Outside strings JSON is ASCII,
/// so the result is the same JSON.
fn terminal_json(value: &serde_json::Value) -> String {
    use portcullis_core::text::{is_right_to_left, is_unshown};
    use std::fmt::Write;
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_ascii() && (is_unshown(c) || is_right_to_left(c)) {
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `portcullis audit tail`: the last `n` entries, as text or JSON lines.
pub fn audit_tail(config: &Config, n: usize, json: bool) -> Result<String> {
    let path = crate::audit_path(&config.gateway.data_dir);
    let entries = portcullis_audit::tail(&path, n)?;
    let mut out = String::new();
    for entry in entries {
        if json {
            let line = serde_json::json!({
                "seq": entry.seq,
                "time_ms": entry.time_ms,
                "hash": entry.hash,
                "entry": entry.body,
            });
            out.push_str(&terminal_json(&line));
            out.push('\n');
            continue;
        }
        let body = &entry.body;
        let field = |name: &str| printable(body.get(name).and_then(|v| v.as_str()).unwrap_or("-"));
        // A review's person is its reviewer, and its decision a word.
        let who = printable(
            body.get("principal")
                .or_else(|| body.get("reviewer"))
                .and_then(|v| v.as_str())
                .unwrap_or("-"),
        );
        let decision = body
            .pointer("/decision/effect")
            .or_else(|| body.get("decision"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let policies = body
            .pointer("/decision/policies")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let sftp = body.get("sftp").map(|op| {
            let field = |name: &str| op.get(name).and_then(|v| v.as_str()).unwrap_or("");
            format!(
                "sftp {} {} {}",
                field("operation"),
                field("path"),
                field("to")
            )
            .trim_end()
            .to_string()
        });
        let forward = body.get("forward").map(|f| {
            format!(
                "forward {} {}:{}",
                f.get("direction").and_then(|v| v.as_str()).unwrap_or(""),
                f.get("host").and_then(|v| v.as_str()).unwrap_or(""),
                f.get("port").and_then(|v| v.as_u64()).unwrap_or(0)
            )
        });
        let what = sftp
            .or(forward)
            .or_else(|| {
                body.pointer("/statement/text")
                    .or_else(|| body.pointer("/command/text"))
                    .or_else(|| body.get("text"))
                    .or_else(|| body.get("outcome"))
                    .or_else(|| body.get("comment"))
                    .or_else(|| body.pointer("/detail/line"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .or_else(|| {
                (body.get("action").and_then(|v| v.as_str()) == Some("shell"))
                    .then(|| "shell".to_string())
            })
            .or_else(|| {
                body.get("kind")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let what = printable(&what);
        let policies = printable(&policies);
        out.push_str(&format!(
            "{:>6} {} {:<17} {} {} {} {}{} {}\n",
            entry.seq,
            format_time(entry.time_ms),
            field("event"),
            field("session"),
            who,
            field("target"),
            decision,
            if policies.is_empty() {
                String::new()
            } else {
                format!(" [{policies}]")
            },
            what,
        ));
    }
    Ok(out)
}

/// UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn format_time(time_ms: u64) -> String {
    let secs = time_ms / 1000;
    let rem = secs % 86_400;
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        portcullis_store::day_of(secs),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        time_ms % 1000
    )
}

/// Parses `90s`, `15m`, `1h`, `7d`, `1h30m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let with_unit = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        format!("{text}s")
    } else {
        text.to_string()
    };
    let seconds = portcullis_gate::approval::parse_duration(&with_unit).map_err(|e| anyhow!(e))?;
    Ok(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

/// `portcullis dev token`: a token from the dev issuer.
pub fn dev_token(config: &Config, user: &str, groups: &[String], ttl: Duration) -> Result<String> {
    let Some(issuer) = crate::dev_issuer(config)? else {
        bail!("the dev issuer is not enabled in this config (add an [identity.dev] section)");
    };
    Ok(issuer.issue(user, groups, ttl)?)
}

fn login_client_settings(
    config: &Config,
    file: &Path,
    issuer: Option<&str>,
) -> Result<portcullis_identity::OidcIssuerSettings> {
    let settings = crate::oidc_settings(config, file)?;
    let with_client: Vec<_> = settings
        .into_iter()
        .filter(|s| s.client_id.is_some())
        .collect();
    match issuer {
        Some(wanted) => with_client
            .into_iter()
            .find(|s| s.issuer == wanted)
            .ok_or_else(|| anyhow!("no [[identity.oidc]] issuer `{wanted}` with a client_id in the config")),
        None => match <[_; 1]>::try_from(with_client) {
            Ok([one]) => Ok(one),
            Err(v) if v.is_empty() => Err(anyhow!(
                "no [[identity.oidc]] issuer with a client_id in the config: `portcullis login` needs one"
            )),
            Err(_) => Err(anyhow!("several issuers have a client_id: choose one with --issuer")),
        },
    }
}

/// `portcullis login`: the authorization code flow through a browser, or
/// the device flow, and the token cached for later.
pub async fn login(
    config: &Config,
    file: &Path,
    issuer: Option<&str>,
    device: bool,
) -> Result<String> {
    crate::tls::install_crypto_provider();
    let settings = login_client_settings(config, file, issuer)?;
    let client = LoginClient::discover(&settings).await?;
    let tokens = if device {
        client
            .device(
                |code| {
                    eprintln!(
                        "To log in, open {} and enter the code {}",
                        code.verification_uri, code.user_code
                    );
                    if let Some(complete) = &code.verification_uri_complete {
                        eprintln!("(or open {complete})");
                    }
                },
                Duration::from_secs(600),
            )
            .await?
    } else {
        client
            .authorization_code(
                |url| {
                    eprintln!(
                        "Opening the browser to log in. If it does not open, visit:\n\n  {url}\n"
                    );
                    let _ = std::process::Command::new("xdg-open")
                        .arg(url)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn();
                },
                Duration::from_secs(300),
            )
            .await?
    };
    let cache = TokenCache::in_config_dir()?;
    cache.store(&client.cache_key(), &tokens)?;
    Ok(format!(
        "logged in to {}; token cached in {}\n",
        client.issuer(),
        cache.path().display()
    ))
}

/// How psql reaches the listener with a token. The token is a bearer
/// credential: it travels only where no one can read it or pose as the
/// gateway. Over TLS the gateway's certificate is verified (against
/// PGSSLROOTCERT or ~/.postgresql/root.crt, as libpq does); in clear, only
/// to this machine.
fn token_sslmode(pg: &portcullis_config::PostgresListenerConfig) -> Result<&'static str> {
    let ip = pg.listen.ip();
    match (&pg.tls, ip.is_loopback() || ip.is_unspecified()) {
        (Some(_), _) => Ok("verify-full"),
        (None, true) => Ok("disable"),
        (None, false) => bail!(
            "the gateway's PostgreSQL listener {} has no TLS: `connect` sends your token only over TLS, or to this machine; configure [postgres] tls",
            pg.listen
        ),
    }
}

/// `portcullis connect TARGET`: starts psql with the cached token in its
/// environment (never on its command line).
pub async fn connect(
    config: &Config,
    file: &Path,
    target: &str,
    issuer: Option<&str>,
) -> Result<std::process::Command> {
    crate::tls::install_crypto_provider();
    if !config.targets.iter().any(|t| t.name == target) {
        bail!("no target `{target}` in the config");
    }
    let Some(pg) = &config.postgres else {
        bail!("the config has no [postgres] listener");
    };
    let settings = login_client_settings(config, file, issuer)?;
    let client = LoginClient::discover(&settings).await?;
    let cache = TokenCache::in_config_dir()?;
    let tokens = cache
        .get_fresh(&client, Duration::from_secs(30))
        .await?
        .context("no valid cached token: run `portcullis login` first")?;
    let sslmode = token_sslmode(pg)?;
    let mut command = std::process::Command::new("psql");
    command
        .env("PGHOST", pg.listen.ip().to_string())
        .env("PGPORT", pg.listen.port().to_string())
        .env("PGDATABASE", target)
        .env("PGPASSWORD", &tokens.id_token)
        .env("PGAPPNAME", "portcullis-connect")
        .env("PGSSLMODE", sslmode);
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_goes_only_over_verified_tls_or_to_this_machine() {
        let listener = |listen: &str, tls: bool| {
            let text = format!(
                "listen = \"{listen}\"\n{}",
                if tls {
                    "tls = { cert = \"c.pem\", key = \"k.pem\" }\n"
                } else {
                    ""
                }
            );
            toml::from_str::<portcullis_config::PostgresListenerConfig>(&text).unwrap()
        };
        assert_eq!(
            token_sslmode(&listener("127.0.0.1:15432", false)).unwrap(),
            "disable"
        );
        assert_eq!(
            token_sslmode(&listener("0.0.0.0:15432", false)).unwrap(),
            "disable"
        );
        assert_eq!(
            token_sslmode(&listener("10.9.8.7:5432", true)).unwrap(),
            "verify-full"
        );
        assert_eq!(
            token_sslmode(&listener("127.0.0.1:5432", true)).unwrap(),
            "verify-full"
        );
        let refused = token_sslmode(&listener("10.9.8.7:5432", false)).unwrap_err();
        assert!(refused.to_string().contains("has no TLS"), "{refused}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("1y").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_time(1_795_523_045_123), "2026-11-24T12:24:05.123Z");
    }
}

#[cfg(test)]
mod printable_tests {
    use super::{printable, printable_lines};

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(
            printable("systemctl isolate x # \r\u{1b}[Ksystemctl restart cron\nnext"),
            "systemctl isolate x # \\r\\u{1b}[Ksystemctl restart cron\\nnext"
        );
        // A comment ends with its line: the next line is seen to run.
        assert_eq!(
            printable("add column note text -- for support\n, drop column total"),
            "add column note text -- for support\\n, drop column total"
        );
        // Blanks that look like a space, and letters a terminal may turn around.
        assert_eq!(
            printable("systemctl restart cron\u{a0}# only; echo 'א # ' ב"),
            "systemctl restart cron\\u{a0}# only; echo '\\u{5d0} # ' \\u{5d1}"
        );
        assert_eq!(printable("select 'é'\tx"), "select 'é'\tx");
        assert_eq!(
            printable("set total = 0 -- order 3\\n where id = 3\nx"),
            "set total = 0 -- order 3\\\\n where id = 3\\nx"
        );
        assert_eq!(
            printable_lines("drop database app /*\r\u{1b}[1A-- allow\n*/"),
            "drop database app /*\\r\\u{1b}[1A-- allow\n*/"
        );
        // Drawn by a terminal, this reads `delete from t where id = 1 --`.
        assert_eq!(
            printable("delete from t \u{202E}-- 1 = di erehw\u{200B}"),
            "delete from t \\u{202e}-- 1 = di erehw\\u{200b}"
        );
    }
}

#[cfg(test)]
mod terminal_json_tests {
    use super::terminal_json;

    #[test]
    fn what_a_terminal_would_act_on_is_escaped_and_the_json_is_the_same() {
        let value = serde_json::json!({
            "text": "a\u{9b}2J\u{1b}b \u{202e}c\u{200b} \u{5d0} é \u{e0041}",
        });
        let line = terminal_json(&value);
        assert_eq!(
            line,
            r#"{"text":"a\u009b2J\u001bb \u202ec\u200b \u05d0 é \udb40\udc41"}"#
        );
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value);
    }
}
