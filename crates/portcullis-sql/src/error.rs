//! Why a query string could not be classified.
//!
//! Every error means the query is refused (fail closed): a statement the
//! gateway cannot classify is a statement it cannot enforce policy on.

/// A query string that could not be classified.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ClassifyError {
    /// The PostgreSQL grammar rejects the query. `message` is PostgreSQL's
    /// own, such as ``syntax error at or near "selec"``.
    ///
    /// pg_query 18 does not expose the cursor position of a parse error, so
    /// `position` (a 1-based character offset, as in PostgreSQL's
    /// `ErrorResponse`) is `None` for now.
    #[error("cannot parse the query: {message}")]
    Syntax {
        message: String,
        position: Option<u32>,
    },
    /// The query contains a NUL byte, which PostgreSQL never accepts in query
    /// text.
    #[error("the query contains a nul byte")]
    NulByte,
    /// The query text is longer than the classifier reads.
    #[error("the query is {len} bytes long, and the gateway reads at most {max} (postgres.max_query_bytes); send bulk data with COPY")]
    TooLong { len: usize, max: usize },
    /// The parse tree is nested more deeply than the classifier can read.
    #[error("the query is nested too deeply to be classified")]
    TooDeep,
    /// A `'...'` string holds a backslash before a quote: with
    /// `standard_conforming_strings` off (which code the gateway cannot see
    /// may set on the target) it is an escaped quote, and the string, and
    /// the statements, end elsewhere.
    #[error("a string in '...' holds a backslash before a quote, which ends the string elsewhere where standard_conforming_strings is off: double the quote (''), or write the string as E'...' or with dollar quotes")]
    BackslashQuote,
    /// A fault of the classifier, not of the query.
    #[error("internal error while classifying the query: {message}")]
    Internal { message: String },
}

impl ClassifyError {
    /// Whether the error is the client's (a query to fix), rather than the
    /// gateway's own.
    pub fn is_client_side(&self) -> bool {
        !matches!(self, ClassifyError::Internal { .. })
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ClassifyError::Internal {
            message: message.into(),
        }
    }
}

impl From<pg_query::Error> for ClassifyError {
    fn from(error: pg_query::Error) -> Self {
        match error {
            pg_query::Error::Parse(message) | pg_query::Error::Split(message) => {
                ClassifyError::Syntax {
                    message,
                    position: None,
                }
            }
            pg_query::Error::Conversion(_) => ClassifyError::NulByte,
            // prost refuses to decode messages nested more than 100 deep.
            pg_query::Error::Decode(error) if error.to_string().contains("recursion limit") => {
                ClassifyError::TooDeep
            }
            other => ClassifyError::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        let errors = [
            ClassifyError::Syntax {
                message: "syntax error at end of input".into(),
                position: None,
            },
            ClassifyError::NulByte,
            ClassifyError::BackslashQuote,
            ClassifyError::TooDeep,
            ClassifyError::internal("boom"),
        ];
        for error in errors {
            let text = error.to_string();
            assert!(!text.ends_with('.'), "{text}");
            assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
        }
    }

    #[test]
    fn sides() {
        assert!(ClassifyError::NulByte.is_client_side());
        assert!(!ClassifyError::internal("x").is_client_side());
    }
}
