use std::path::PathBuf;

/// Why a configuration could not be loaded. Every variant names the file, and
/// the key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{}`: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", file.display())]
    Parse { file: PathBuf, message: String },
    #[error("{}: `{key}`: {message}", file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
    #[error("{}: `{key}`: environment variable `{var}` is not set (set it, or give a default with `${{{var}:-default}}`)", file.display())]
    MissingEnv {
        file: PathBuf,
        key: String,
        var: String,
    },
    #[error("{}: `{key}`: cannot read secret: {message}", file.display())]
    Secret {
        file: PathBuf,
        key: String,
        message: String,
    },
}
