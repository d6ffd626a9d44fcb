/// Which side of the gateway an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client side: a user's client sent something invalid or went away.
    Client,
    /// The target side: the database refused or went away.
    Target,
    /// The gateway itself.
    Internal,
}

/// Everything that can end a PostgreSQL session early.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("client side: {0}")]
    ClientIo(std::io::Error),
    #[error("client side: {0}")]
    ClientProtocol(String),
    #[error("target `{target}`: {source}")]
    TargetIo {
        target: String,
        source: std::io::Error,
    },
    #[error("target `{target}`: {message}")]
    TargetProtocol { target: String, message: String },
    /// The target refused the gateway's login or startup; `fields` are its error's fields.
    #[error("target `{target}` refused the connection: {message}")]
    TargetRefused {
        target: String,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Internal(String),
}

impl PgError {
    pub fn side(&self) -> Side {
        match self {
            PgError::ClientIo(_) | PgError::ClientProtocol(_) => Side::Client,
            PgError::TargetIo { .. }
            | PgError::TargetProtocol { .. }
            | PgError::TargetRefused { .. } => Side::Target,
            PgError::Internal(_) => Side::Internal,
        }
    }

    /// The SQLSTATE a client sees for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            PgError::ClientIo(_) | PgError::ClientProtocol(_) => "08P01",
            PgError::TargetIo { .. }
            | PgError::TargetProtocol { .. }
            | PgError::TargetRefused { .. } => "08006",
            PgError::Internal(_) => "XX000",
        }
    }
}
