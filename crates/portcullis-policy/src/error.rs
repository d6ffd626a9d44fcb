use std::path::PathBuf;

/// Why a policy source could not be read or loaded. Positions are
/// `file:line:column`; a file read from Git is named `<commit 12 hex>:<path>`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    // `error`, not `source`: the message holds it already, and a chain
    // of sources (anyhow's `{:#}`) would say it twice.
    #[error("cannot read policy directory `{}`: {error}", dir.display())]
    ReadDir { dir: PathBuf, error: std::io::Error },
    #[error("cannot read policy file `{}`: {error}", file.display())]
    ReadFile {
        file: PathBuf,
        error: std::io::Error,
    },
    #[error("no `*.{extension}` policy files under `{}`", dir.display())]
    Empty { dir: PathBuf, extension: String },
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
    /// Several problems, one per line, in file order.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Several(Vec<PolicyError>),
    #[error("the built-in schema does not load: {0}")]
    Schema(String),
    #[error("cannot read git repository `{}`: {message}", repo.display())]
    GitRepository { repo: PathBuf, message: String },
    #[error("cannot resolve ref `{reference}` in git repository `{}`: {message}", repo.display())]
    GitRef {
        repo: PathBuf,
        reference: String,
        message: String,
    },
    /// `location` is `<commit 12 hex>:<path>`, like the policy files' names.
    #[error("cannot read `{location}` from git repository `{}`: {message}", repo.display())]
    GitRead {
        repo: PathBuf,
        location: String,
        message: String,
    },
    #[error("no directory `{subdir}` in commit `{commit}` of git repository `{}`", repo.display())]
    GitNoSubdir {
        repo: PathBuf,
        commit: String,
        subdir: String,
    },
    #[error("no `*.{extension}` policy files under `{location}` of git repository `{}`", repo.display())]
    GitEmpty {
        repo: PathBuf,
        location: String,
        extension: String,
    },
    /// `url` is shown without credentials.
    #[error("cannot fetch from git repository `{url}`: {message}")]
    GitFetch { url: String, message: String },
}

impl PolicyError {
    /// `(file, line, column, message)` of an `Invalid`, to report problems
    /// in the order of the files.
    pub(crate) fn sort_key(&self) -> (String, u64, u64, String) {
        match self {
            PolicyError::Invalid { location, message } => {
                let mut parts = location.rsplitn(3, ':');
                let column = parts.next().and_then(|c| c.parse().ok());
                let line = parts.next().and_then(|l| l.parse().ok());
                match (parts.next(), line, column) {
                    (Some(file), Some(line), Some(column)) => {
                        (file.to_string(), line, column, message.clone())
                    }
                    _ => (location.clone(), 0, 0, message.clone()),
                }
            }
            other => (String::new(), 0, 0, other.to_string()),
        }
    }

    /// No error for no problems, the problem itself for one, `Several` for more.
    pub fn from_problems(mut problems: Vec<PolicyError>) -> Option<PolicyError> {
        match problems.len() {
            0 => None,
            1 => problems.pop(),
            _ => Some(PolicyError::Several(problems)),
        }
    }
}
