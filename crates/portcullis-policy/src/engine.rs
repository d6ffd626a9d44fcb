//! The policy engines behind one type: what the Gate holds and asks.

use crate::cedar::{content_version, read_dir, CedarPolicies, SourceFile};
use crate::error::PolicyError;
use crate::rego::RegoPolicies;
use portcullis_core::{Decision, Request};
use std::path::Path;

/// Which language the policies are written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    #[default]
    Cedar,
    Rego,
}

impl Engine {
    /// The extension of its policy files.
    pub fn extension(self) -> &'static str {
        match self {
            Engine::Cedar => "cedar",
            Engine::Rego => "rego",
        }
    }
}

/// A loaded, validated policy version of either engine.
#[derive(Debug)]
pub enum Policies {
    Cedar(CedarPolicies),
    Rego(RegoPolicies),
}

impl From<CedarPolicies> for Policies {
    fn from(policies: CedarPolicies) -> Self {
        Policies::Cedar(policies)
    }
}

impl From<RegoPolicies> for Policies {
    fn from(policies: RegoPolicies) -> Self {
        Policies::Rego(policies)
    }
}

impl Policies {
    /// Loads the `*.cedar` or `*.rego` files of `dir`.
    pub fn load_dir(dir: &Path, engine: Engine) -> Result<Policies, PolicyError> {
        Ok(match engine {
            Engine::Cedar => CedarPolicies::load_dir(dir)?.into(),
            Engine::Rego => RegoPolicies::load_dir(dir)?.into(),
        })
    }

    /// Loads `dir` with the engine its files are written for: Cedar when it
    /// holds `*.cedar` files, Rego when it holds only `*.rego` files. For
    /// tools that run without a config (`policy validate`, `policy test`).
    pub fn load_dir_detected(dir: &Path) -> Result<Policies, PolicyError> {
        let has = |extension| read_dir(dir, extension).is_ok_and(|files| !files.is_empty());
        let engine = if !has("cedar") && has("rego") {
            Engine::Rego
        } else {
            Engine::Cedar
        };
        Policies::load_dir(dir, engine)
    }

    /// The version a directory holds for `engine`, without parsing.
    pub fn dir_version(dir: &Path, engine: Engine) -> Result<String, PolicyError> {
        Ok(content_version(&read_dir(dir, engine.extension())?))
    }

    /// Policies read from a commit: `(path, text)` pairs, named by the commit.
    pub(crate) fn from_commit_files(
        files: Vec<(String, String)>,
        commit_prefix: &str,
        version: String,
        engine: Engine,
    ) -> Result<Policies, PolicyError> {
        Ok(match engine {
            Engine::Cedar => CedarPolicies::from_commit_files(files, commit_prefix)?
                .with_version(version)
                .into(),
            Engine::Rego => {
                let files = files
                    .into_iter()
                    .map(|(path, text)| SourceFile {
                        path: format!("{commit_prefix}{path}").into(),
                        text,
                    })
                    .collect();
                RegoPolicies::from_files(files, version)?.into()
            }
        })
    }

    pub fn engine(&self) -> Engine {
        match self {
            Policies::Cedar(_) => Engine::Cedar,
            Policies::Rego(_) => Engine::Rego,
        }
    }

    pub fn decide(&self, request: &Request<'_>) -> Decision {
        match self {
            Policies::Cedar(p) => p.decide(request),
            Policies::Rego(p) => p.decide(request),
        }
    }

    pub fn version(&self) -> &str {
        match self {
            Policies::Cedar(p) => p.version(),
            Policies::Rego(p) => p.version(),
        }
    }

    pub fn policy_names(&self) -> Vec<String> {
        match self {
            Policies::Cedar(p) => p.policy_names(),
            Policies::Rego(p) => p.policy_names(),
        }
    }

    pub fn len(&self) -> usize {
        self.policy_names().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
