//! The `portcullis` command: argument parsing only. What each subcommand
//! does lives in `portcullis-app`.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use portcullis_app::commands;
use portcullis_config::{Config, LogFormat};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An access gateway that enforces policy on every connection and every statement"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Development helpers.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// Log in with the company's identity provider and cache the token.
    Login {
        #[arg(long, short)]
        config: PathBuf,
        /// Which [[identity.oidc]] issuer, when several have a client_id.
        #[arg(long)]
        issuer: Option<String>,
        /// Use the device flow (for machines without a browser).
        #[arg(long)]
        device: bool,
    },
    /// Start psql on a target with the cached token.
    Connect {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        issuer: Option<String>,
        /// The target's name.
        target: String,
        /// Extra arguments for psql, after `--`.
        #[arg(last = true)]
        psql_args: Vec<String>,
    },
    /// List approval requests you may review or asked for.
    Requests {
        #[command(flatten)]
        api: ApiArgs,
        /// Decided requests instead of pending ones.
        #[arg(long)]
        decided: bool,
    },
    /// Approve a held statement or an access request.
    Approve {
        #[command(flatten)]
        api: ApiArgs,
        id: i64,
        /// Why; kept in the audit log and shown to the requester.
        #[arg(long)]
        comment: String,
    },
    /// Deny a held statement or an access request.
    Deny {
        #[command(flatten)]
        api: ApiArgs,
        id: i64,
        #[arg(long)]
        comment: String,
    },
    /// Ask for access to a target for a time window.
    Request {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        target: String,
        /// How long: 30m, 2h, 1h30m.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        #[arg(long)]
        reason: String,
    },
    /// List recorded sessions.
    Sessions {
        #[arg(long, short)]
        config: PathBuf,
        /// Only this principal's.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        target: Option<String>,
        /// Only sessions started this recently: 90s, 15m, 1h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Only sessions whose outcome contains this (`running`, `terminated`, `revoked`).
        #[arg(long)]
        outcome: Option<String>,
    },
    /// Play a recorded session in the terminal as it happened.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// The session id (`portcullis sessions`).
        id: String,
        /// 1 is real time, 2 twice as fast, 0 without waiting.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Keep playing a running session until it ends.
        #[arg(long)]
        follow: bool,
        /// Write an SSH session's terminal as an asciicast v2 file (for
        /// `asciinema play` or any asciinema player) instead of playing it.
        #[arg(long, conflicts_with = "follow")]
        asciicast: bool,
        /// Play a recording that does not verify (changed, cut short, its
        /// manifest gone), under a warning; without it, one is refused.
        #[arg(long, conflicts_with = "asciicast")]
        unverified: bool,
    },
    /// Session recordings.
    Recording {
        #[command(subcommand)]
        command: RecordingCommand,
    },
    /// Get an SSH certificate for your key, valid as long as your token:
    /// plain `ssh` then logs in without a token.
    SshCert {
        #[command(flatten)]
        api: ApiArgs,
        /// Your public key; the certificate is written beside it
        /// (`id_ed25519-cert.pub`).
        #[arg(long, default_value = "~/.ssh/id_ed25519.pub")]
        key: String,
    },
    /// Take back an access grant before its end.
    Revoke {
        #[command(flatten)]
        api: ApiArgs,
        id: i64,
        #[arg(long, default_value = "")]
        comment: String,
    },
}

/// How the approval commands reach the gateway, and as whom.
#[derive(clap::Args)]
struct ApiArgs {
    /// The gateway's config (its console URL or admin listener is used).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The gateway's console or admin URL, instead of --config.
    #[arg(long)]
    gateway: Option<String>,
    /// Your identity token.
    #[arg(long, env = "PORTCULLIS_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ApiArgs {
    fn client(self) -> Result<portcullis_app::requests_cli::ApiClient> {
        let config = self.config.as_deref().map(load).transpose()?;
        portcullis_app::requests_cli::ApiClient::new(
            config.as_ref(),
            self.gateway.as_deref(),
            self.token,
        )
    }
}

#[derive(Subcommand)]
enum RecordingCommand {
    /// Prove a recording complete and unchanged; exit 1 naming what is wrong.
    Verify {
        #[arg(long, short)]
        config: PathBuf,
        id: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the whole hash chain and the signed checkpoints, of the store or
    /// of exports.
    Verify {
        #[arg(
            long,
            short,
            required_unless_present = "export",
            conflicts_with = "export"
        )]
        config: Option<PathBuf>,
        /// A copy of the public key (`audit-signing.pub`) kept apart from
        /// the store; without it, the data directory's own copy is used
        /// (for exports, the key the first one names), which whoever can
        /// change the store can change too.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Exports (`audit export`) to check as one log, in order, instead
        /// of the store: each must continue the one before. Needs no
        /// gateway, config or data directory.
        #[arg(long, num_args = 1..)]
        export: Vec<PathBuf>,
    },
    /// Write the signed part of the log as JSON lines, to keep elsewhere:
    /// every entry up to the last checkpoint, after the last export's end.
    Export {
        #[arg(long, short)]
        config: PathBuf,
        /// Continue from where this earlier export ends, once the store is
        /// seen to still hold its last entry unchanged (a store cut back or
        /// rewritten since is an error).
        #[arg(long, conflicts_with = "after")]
        after_export: Option<PathBuf>,
        /// Start after this entry.
        #[arg(long)]
        after: Option<u64>,
        /// Write here (a new file, made whole or not at all) instead of to
        /// standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the last entries.
    Tail {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// List the rules that decided nothing in the last days.
    Stale {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
    /// Compare the policy version the running gateway enforces with the
    /// source's (a Git ref's commit, or a directory's content hash); exit 0
    /// in sync, 1 on drift, 2 when there is no answer.
    Drift {
        #[arg(long, short)]
        config: PathBuf,
        /// The Git ref to compare with (default: the configured one).
        #[arg(long = "ref", value_name = "REF")]
        reference: Option<String>,
    },
    /// Evaluate the decisions in the audit log again with candidate policies
    /// and show what would change, by rule.
    Impact {
        #[arg(long, short)]
        config: PathBuf,
        /// The directory holding the candidate `*.cedar` files.
        #[arg(long)]
        candidate: PathBuf,
        /// How far back to look: 90s, 15m, 1h, 7d.
        #[arg(long, default_value = "7d")]
        since: String,
    },
    /// Parse and validate a policy directory against the gateway's schema;
    /// errors are `file:line:column: message`, the exit status non-zero.
    Validate {
        /// The directory holding the `*.cedar` (or `*.rego`) files.
        dir: PathBuf,
        /// The engine the gateway reads them with (its `[policy] engine`);
        /// without it, the one the files are written for.
        #[arg(long, value_enum)]
        engine: Option<EngineArg>,
    },
    /// Run the test cases (`*.cases.toml`) kept beside the policies; exit 1
    /// when a case fails, 2 when the cases or policies are invalid.
    Test {
        /// The directory holding the `*.cedar` (or `*.rego`) and
        /// `*.cases.toml` files.
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: TestFormat,
        /// The engine the gateway reads them with (its `[policy] engine`);
        /// without it, the one the files are written for.
        #[arg(long, value_enum)]
        engine: Option<EngineArg>,
    },
}

/// A policy engine, as `--engine` names it.
#[derive(Clone, Copy, clap::ValueEnum)]
enum EngineArg {
    Cedar,
    Rego,
}

impl From<EngineArg> for portcullis_app::policy_test::Engine {
    fn from(engine: EngineArg) -> Self {
        match engine {
            EngineArg::Cedar => Self::Cedar,
            EngineArg::Rego => Self::Rego,
        }
    }
}

/// How `policy test` prints its results.
#[derive(Clone, Copy, clap::ValueEnum)]
enum TestFormat {
    /// One line per case, the failures, and `N passed, M failed`.
    Text,
    /// JUnit XML, for CI systems.
    Junit,
}

#[derive(Subcommand)]
enum DevCommand {
    /// Print a token signed by the dev issuer.
    Token {
        #[arg(long, short)]
        config: PathBuf,
        /// The user (an email address).
        #[arg(long)]
        user: String,
        /// Comma-separated groups.
        #[arg(long, value_delimiter = ',', default_value = "")]
        groups: Vec<String>,
        /// How long the token is valid: 90s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

fn load(path: &Path) -> Result<Config> {
    Ok(Config::load(path)?)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve { config: path } => {
            let config = load(&path)?;
            init_logging(config.gateway.log_format);
            let running = portcullis_app::start(config, &path).await?;
            wait_for_signal().await?;
            tracing::info!("shutting down");
            running.shutdown().await?;
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    config: Some(config),
                    key,
                    ..
                },
        } => {
            let config = load(&config)?;
            print!("{}", commands::audit_verify(&config, key.as_deref())?);
        }
        Command::Audit {
            command: AuditCommand::Verify { key, export, .. },
        } => {
            print!(
                "{}",
                commands::audit_verify_exports(&export, key.as_deref())?
            );
        }
        Command::Audit {
            command:
                AuditCommand::Export {
                    config,
                    after_export,
                    after,
                    output,
                },
        } => {
            let config = load(&config)?;
            eprint!(
                "{}",
                commands::audit_export(&config, after_export.as_deref(), after, output.as_deref())?
            );
        }
        Command::Audit {
            command: AuditCommand::Tail { config, n, json },
        } => {
            let config = load(&config)?;
            print!("{}", commands::audit_tail(&config, n, json)?);
        }
        Command::Policy {
            command: PolicyCommand::Stale { config, days },
        } => {
            let config = load(&config)?;
            print!(
                "{}",
                portcullis_app::policy_stale::policy_stale(&config, days)?.render()
            );
        }
        Command::Policy {
            command:
                PolicyCommand::Impact {
                    config,
                    candidate,
                    since,
                },
        } => {
            let config = load(&config)?;
            let since = commands::parse_duration(&since)?;
            let report = portcullis_app::policy_impact::policy_impact(&config, &candidate, since)?;
            print!("{}", report.render());
        }
        Command::Policy {
            command: PolicyCommand::Drift { config, reference },
        } => {
            // Exit 1 means drift, so anything that leaves the question
            // unanswered (no config, no gateway, no source) is 2.
            let report = match load(&config) {
                Ok(config) => {
                    portcullis_app::policy_drift::policy_drift(&config, reference.as_deref()).await
                }
                Err(e) => Err(e),
            };
            match report {
                Ok(report) => {
                    print!("{}", report.render());
                    return Ok(ExitCode::from(report.exit_code()));
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        Command::Policy {
            command: PolicyCommand::Validate { dir, engine },
        } => {
            // CI reads `file:line:column: message` as it is, with no prefix.
            match commands::policy_validate(&dir, engine.map(Into::into)) {
                Ok(report) => print!("{report}"),
                Err(e) => {
                    eprintln!("{e:#}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Policy {
            command:
                PolicyCommand::Test {
                    dir,
                    format,
                    engine,
                },
        } => {
            use portcullis_app::policy_test::{run, Format};
            let format = match format {
                TestFormat::Text => Format::Text,
                TestFormat::Junit => Format::Junit,
            };
            // Exit 1 for a failing case, 2 when the cases cannot run; errors
            // are `file:line: ...` with no prefix, like `policy validate`.
            match run(&dir, engine.map(Into::into)) {
                Ok(results) => {
                    print!("{}", results.render(format));
                    if results.n_failed() > 0 {
                        return Ok(ExitCode::from(1));
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        Command::Dev {
            command:
                DevCommand::Token {
                    config,
                    user,
                    groups,
                    ttl,
                },
        } => {
            let config = load(&config)?;
            let groups: Vec<String> = groups.into_iter().filter(|g| !g.is_empty()).collect();
            let ttl = commands::parse_duration(&ttl)?;
            println!("{}", commands::dev_token(&config, &user, &groups, ttl)?);
        }
        Command::Login {
            config: path,
            issuer,
            device,
        } => {
            let config = load(&path)?;
            eprint!(
                "{}",
                commands::login(&config, &path, issuer.as_deref(), device).await?
            );
        }
        Command::Connect {
            config: path,
            issuer,
            target,
            psql_args,
        } => {
            let config = load(&path)?;
            let mut command = commands::connect(&config, &path, &target, issuer.as_deref()).await?;
            command.args(psql_args);
            let status = command
                .status()
                .context("cannot start psql (is it installed?)")?;
            return Ok(ExitCode::from(
                status
                    .code()
                    .and_then(|c| u8::try_from(c).ok())
                    .unwrap_or(1),
            ));
        }
        Command::Sessions {
            config,
            user,
            target,
            since,
            outcome,
        } => {
            let path = config;
            let config = load(&path)?;
            let filter = portcullis_app::recordings_cli::Filter {
                user,
                target,
                since: since.as_deref().map(commands::parse_duration).transpose()?,
                outcome,
            };
            print!(
                "{}",
                portcullis_app::recordings_cli::sessions(&config, &path, &filter).await?
            );
        }
        Command::Replay {
            config,
            id,
            speed,
            follow,
            asciicast,
            unverified,
        } => {
            let path = config;
            let config = load(&path)?;
            if asciicast {
                let cast = portcullis_app::recordings_cli::asciicast(&config, &path, &id).await?;
                print!("{cast}");
                return Ok(ExitCode::SUCCESS);
            }
            if !(speed >= 0.0 && speed.is_finite()) {
                anyhow::bail!("--speed must be 0 or more");
            }
            portcullis_app::recordings_cli::replay(
                &config,
                &path,
                &id,
                speed,
                follow,
                unverified,
                &mut std::io::stdout(),
            )
            .await?;
        }
        Command::Recording {
            command: RecordingCommand::Verify { config, id },
        } => {
            let path = config;
            let config = load(&path)?;
            match portcullis_app::recordings_cli::verify(&config, &path, &id).await {
                Ok(report) => print!("{report}"),
                Err(e) => {
                    eprintln!("{e:#}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Requests { api, decided } => print!("{}", api.client()?.list(decided).await?),
        Command::Approve { api, id, comment } => {
            print!("{}", api.client()?.review(id, true, &comment).await?)
        }
        Command::Deny { api, id, comment } => {
            print!("{}", api.client()?.review(id, false, &comment).await?)
        }
        Command::Request {
            api,
            target,
            duration,
            reason,
        } => print!(
            "{}",
            api.client()?
                .request_access(&target, &duration, &reason)
                .await?
        ),
        Command::SshCert { api, key } => {
            let key = match key.strip_prefix("~/") {
                Some(rest) => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(rest),
                None => PathBuf::from(key),
            };
            print!("{}", api.client()?.ssh_certificate(&key).await?);
        }
        Command::Revoke { api, id, comment } => {
            print!("{}", api.client()?.revoke(id, &comment).await?)
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() -> Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every HTTPS client of any command (OIDC, a remote policy repository)
    // uses the one crypto provider.
    portcullis_app::tls::install_crypto_provider();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
