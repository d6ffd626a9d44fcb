//! `portcullis policy stale`: the rules of the enforced policy directory
//! that determined no decision in a window, from the hit counts the gateway
//! keeps in its state store.

use anyhow::{Context, Result};
use portcullis_config::Config;
use portcullis_store::{day_of, StateStore};
use std::time::{SystemTime, UNIX_EPOCH};

/// One rule with no hits in the window.
#[derive(Debug, PartialEq, Eq)]
pub struct StaleRule {
    pub name: String,
    /// The last day it decided something, if ever.
    pub last_day: Option<String>,
}

pub struct StaleReport {
    pub policy_version: String,
    pub days: u64,
    pub n_rules: usize,
    pub stale: Vec<StaleRule>,
}

impl StaleReport {
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} of {} rules decided nothing in the last {} days (policy version {})\n",
            self.stale.len(),
            self.n_rules,
            self.days,
            self.policy_version
        );
        for rule in &self.stale {
            let last = match &rule.last_day {
                Some(day) => format!("last hit {day}"),
                None => "never hit".to_string(),
            };
            out.push_str(&format!("  {:<32} {last}\n", rule.name));
        }
        out
    }
}

pub fn policy_stale(config: &Config, days: u64) -> Result<StaleReport> {
    let source = crate::policy_source(config);
    let policies = source
        .load(crate::policy_engine(config))
        .with_context(|| format!("the policies in the {source} do not load"))?;
    let path = crate::state_path(&config.gateway.data_dir);
    anyhow::ensure!(
        path.exists(),
        "no state store at `{}`: has the gateway run with this data directory?",
        path.display()
    );
    let store = StateStore::open(&path)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let first_day = day_of(now.saturating_sub(days.saturating_mul(86_400)));
    let names = policies.policy_names();
    let mut stale = Vec::new();
    for name in &names {
        let hits = store.hits_since(name, &first_day)?;
        if hits.hits == 0 {
            stale.push(StaleRule {
                name: name.clone(),
                last_day: hits.last_day,
            });
        }
    }
    Ok(StaleReport {
        policy_version: policies.version().to_string(),
        days,
        n_rules: names.len(),
        stale,
    })
}
