//! `portcullis sessions`, `portcullis replay`, `portcullis recording verify`:
//! the recordings in the gateway's data directory, read without changing
//! them (a running gateway's open recordings stay open).

use anyhow::{anyhow, bail, Context, Result};
use portcullis_config::Config;
use portcullis_record::{render, Recordings};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

fn reader(config: &Config) -> Result<Recordings> {
    let data_dir = &config.gateway.data_dir;
    let key = portcullis_audit::load_verifying_key(data_dir)
        .with_context(|| format!("no gateway key in `{}`", data_dir.display()))?;
    Ok(Recordings::reader(&crate::recordings_path(data_dir), key))
}

/// Where recording `id` can be read: the data directory (a running
/// session is only there), or with `[recording.s3]` a temporary copy from
/// the store, which lives as long as the returned guard.
async fn locate(
    config: &Config,
    file: &Path,
    id: &str,
) -> Result<(Recordings, Option<tempfile::TempDir>)> {
    let local = reader(config)?;
    if local.records(id).is_ok() {
        return Ok((local, None));
    }
    let Some(remote) = crate::recording_remote(config, file)? else {
        return Ok((local, None));
    };
    let copy = tempfile::tempdir()?;
    remote.download(id, copy.path()).await?;
    Ok((
        Recordings::reader(copy.path(), local.verifying_key()),
        Some(copy),
    ))
}

/// Every recording: the data directory's, and with `[recording.s3]` those
/// only in the store, read from a temporary copy.
async fn list_all(config: &Config, file: &Path) -> Result<Vec<portcullis_record::Summary>> {
    let local = reader(config)?;
    let mut all = local.list()?;
    let Some(remote) = crate::recording_remote(config, file)? else {
        return Ok(all);
    };
    let copy = tempfile::tempdir()?;
    for id in remote.ids().await? {
        if all.iter().any(|s| s.id == id) {
            continue;
        }
        match remote.download(&id, copy.path()).await {
            Ok(()) | Err(portcullis_record::RecordError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    all.extend(Recordings::reader(copy.path(), local.verifying_key()).list()?);
    all.sort_by(|a, b| (a.started_ms, &a.id).cmp(&(b.started_ms, &b.id)));
    Ok(all)
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

pub async fn sessions(config: &Config, file: &Path, filter: &Filter) -> Result<String> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut out = String::new();
    let mut shown = 0;
    for s in list_all(config, file).await? {
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
            crate::commands::printable(&s.id),
            crate::commands::format_time(s.started_ms),
            duration,
            crate::commands::printable(&s.principal),
            crate::commands::printable(&s.target),
            s.statements,
            s.denied,
            crate::commands::printable(&outcome)
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
/// An SSH session's terminal as an asciicast v2 file. Refuses a recording
/// that does not verify: a cast has no room for the warning.
pub async fn asciicast(config: &Config, file: &Path, id: &str) -> Result<String> {
    let (recordings, _copy) = locate(config, file, id).await?;
    recordings.verify(id).map_err(|e| {
        anyhow::anyhow!("recording {id} does not verify ({e}): a session still running is sealed when it ends; `portcullis replay` shows it with a warning")
    })?;
    Ok(portcullis_record::asciicast(&recordings.records(id)?))
}

/// Whether a recording can be trusted before it is shown.
enum Trust {
    Verified,
    /// Not sealed yet: the session is running.
    Running,
    /// Sealed, or ended, and not verified: why.
    Broken(String),
}

fn trust(recordings: &Recordings, id: &str, ended: bool) -> Trust {
    match recordings.manifest(id) {
        Ok(Some(_)) => match recordings.verify(id) {
            Ok(_) => Trust::Verified,
            Err(e) => Trust::Broken(e.to_string()),
        },
        Ok(None) if ended => Trust::Broken(
            "the session ended but its manifest is gone, so nothing vouches for it".into(),
        ),
        Ok(None) => Trust::Running,
        Err(e) => Trust::Broken(format!("its manifest cannot be read ({e})")),
    }
}

/// A recording that does not verify (changed, cut, its manifest gone) is
/// refused, unless `unverified`: then it is played after a warning.
pub async fn replay(
    config: &Config,
    file: &Path,
    id: &str,
    speed: f64,
    follow: bool,
    unverified: bool,
    out: &mut impl Write,
) -> Result<()> {
    let (recordings, _copy) = locate(config, file, id).await?;
    let ended_in = |records: &[portcullis_record::format::Record]| {
        records
            .iter()
            .any(|r| r.kind == portcullis_record::format::Kind::End)
    };
    let mut records = recordings.records(id)?;
    // What is shown says whether it can be trusted.
    let sealed = match trust(&recordings, id, ended_in(&records)) {
        Trust::Verified => true,
        Trust::Running => {
            out.write_all(b"-- the session has not ended: its recording is sealed and signed when it does; until then nothing vouches for what follows\n")?;
            false
        }
        Trust::Broken(why) if !unverified => bail!(
            "recording `{id}` does not verify: {why}; it is not played (`portcullis recording verify` says more; `--unverified` plays it anyway, under a warning)"
        ),
        Trust::Broken(why) => {
            eprintln!("WARNING: recording `{id}` does not verify: {why}");
            writeln!(out, "-- WARNING: this recording does not verify: {why}")?;
            true
        }
    };
    let mut shown = 0usize;
    let mut last_t: Option<u32> = None;
    loop {
        // A sealed recording cut short has lost its end, not its session.
        let ended = sealed || ended_in(&records);
        let rendered = render(&records);
        for (t_ms, text) in rendered.iter().skip(shown) {
            if speed > 0.0 {
                if let Some(last) = last_t {
                    let wait = f64::from(t_ms.saturating_sub(last)) / speed;
                    tokio::time::sleep(Duration::from_millis(wait.min(10_000.0) as u64)).await;
                }
            }
            last_t = Some(*t_ms);
            // Statements and values came from clients: no control
            // character of theirs reaches the terminal.
            out.write_all(crate::commands::printable_lines(text).as_bytes())?;
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
        records = recordings.records(id)?;
    }
}

/// `Ok` with a report when the recording is complete and unchanged.
pub async fn verify(config: &Config, file: &Path, id: &str) -> Result<String> {
    let (recordings, _copy) = locate(config, file, id).await?;
    let manifest = recordings
        .verify(id)
        .map_err(|e| anyhow!("recording `{id}` does not verify: {e}"))?;
    // The audit log names the hash the session ended with: a recording
    // replaced as a whole (or sealed again after its manifest was removed)
    // does not match it. The whole log is read: where to start cannot be
    // taken from the recording, whose start time is written in it.
    let audit = crate::audit_path(&config.gateway.data_dir);
    let mut logged: Option<String> = None;
    portcullis_audit::scan_since(&audit, 0, |entry| {
        if entry.body["event"] == "session.end" && entry.body["session"] == id {
            logged = entry.body["recording"]["final_hash"]
                .as_str()
                .map(str::to_string);
        }
    })
    .with_context(|| format!("cannot read the audit log `{}`", audit.display()))?;
    match &logged {
        Some(hash) if *hash != manifest.final_hash => {
            return Err(anyhow!(
                "recording `{id}` does not verify: the audit log's session.end names final hash {hash}, the recording has {}; it was replaced",
                manifest.final_hash
            ))
        }
        None if !manifest.recovered => {
            return Err(anyhow!(
                "recording `{id}` does not verify: the audit log has no session.end naming it"
            ))
        }
        _ => {}
    }
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
