use std::path::PathBuf;

/// Why a policy directory could not be loaded. Positions are `file:line:column`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy directory `{}`: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read policy file `{}`: {source}", file.display())]
    ReadFile {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("no `*.cedar` policy files in `{}`", dir.display())]
    Empty { dir: PathBuf },
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
    #[error("the built-in schema does not load: {0}")]
    Schema(String),
}
