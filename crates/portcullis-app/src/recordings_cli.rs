//! `portcullis sessions`, `portcullis replay`, `portcullis recording verify`:
//! the recordings in the gateway's data directory, read without changing
//! them (a running gateway's open recordings stay open).

use anyhow::{anyhow, Context, Result};
use portcullis_config::Config;
use portcullis_record::{render, Recordings};
use std::io::Write;
use std::time::Duration;

fn reader(config: &Config) -> Result<Recordings> {
    let data_dir = &config.gateway.data_dir;
    let key = portcullis_audit::load_verifying_key(data_dir)
        .with_context(|| format!("no gateway key in `{}`", data_dir.display()))?;
    Ok(Recordings::reader(&crate::recordings_path(data_dir), key))
}

/// Which sessions to list.
#[derive(Default)]
pub struct Filter {
    pub user: Option<String>,
    pub target: Option<String>,
    /// Only sessions that started this recently.
    pub since: Option<Duration>,
    /// A word of the outcome (`terminated`, `revoked`, `running`).
    pub outcome: Option<String>,
}

pub fn sessions(config: &Config, filter: &Filter) -> Result<String> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut out = String::new();
    let mut shown = 0;
    for s in reader(config)?.list()? {
        if filter.user.as_ref().is_some_and(|u| &s.principal != u)
            || filter.target.as_ref().is_some_and(|t| &s.target != t)
            || filter
                .since
                .is_some_and(|since| s.started_ms + (since.as_millis() as u64) < now_ms)
        {
            continue;
        }
        let outcome = s.outcome.clone().unwrap_or_else(|| "running".into());
        if filter
            .outcome
            .as_ref()
            .is_some_and(|o| !outcome.contains(o.as_str()))
        {
            continue;
        }
        let duration = match s.ended_ms {
            Some(end) => format!("{:.1}s", (end.saturating_sub(s.started_ms)) as f64 / 1000.0),
            None => "-".into(),
        };
        out.push_str(&format!(
            "{}  {}  {:>8}  {:<24} {:<12} {:>4} statements {:>3} refused  {}\n",
            s.id,
            crate::commands::format_time(s.started_ms),
            duration,
            s.principal,
            s.target,
            s.statements,
            s.denied,
            outcome
        ));
        shown += 1;
    }
    if shown == 0 {
        out.push_str("no recorded sessions match\n");
    }
    Ok(out)
}

/// Plays a recording on `out` as it happened: `speed` 1 is real time, 0
/// no waiting; with `follow`, a running session is played until it ends.
pub async fn replay(
    config: &Config,
    id: &str,
    speed: f64,
    follow: bool,
    out: &mut impl Write,
) -> Result<()> {
    let recordings = reader(config)?;
    let mut shown = 0usize;
    let mut last_t: Option<u32> = None;
    loop {
        let records = recordings.records(id)?;
        let ended = records
            .iter()
            .any(|r| r.kind == portcullis_record::format::Kind::End);
        let rendered = render(&records);
        for (t_ms, text) in rendered.iter().skip(shown) {
            if speed > 0.0 {
                if let Some(last) = last_t {
                    let wait = f64::from(t_ms.saturating_sub(last)) / speed;
                    tokio::time::sleep(Duration::from_millis(wait.min(10_000.0) as u64)).await;
                }
            }
            last_t = Some(*t_ms);
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
        shown = rendered.len();
        if ended || !follow {
            if !ended {
                writeln!(
                    out,
                    "-- the session is still running (--follow plays it as it goes)"
                )?;
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `Ok` with a report when the recording is complete and unchanged.
pub fn verify(config: &Config, id: &str) -> Result<String> {
    let recordings = reader(config)?;
    let manifest = recordings
        .verify(id)
        .map_err(|e| anyhow!("recording `{id}` does not verify: {e}"))?;
    Ok(format!(
        "recording {id}: intact ({} chunks, final hash {}{}), signed by the gateway's key\n",
        manifest.chunks.len(),
        manifest.final_hash,
        if manifest.recovered {
            "; sealed after the gateway stopped during the session"
        } else {
            ""
        }
    ))
}
