//! The HTTP client shared by discovery, JWKS fetches and the login flows.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{quote_long, IdentityError};

/// Responses larger than this (discovery documents, key sets, token
/// responses) are refused: they are a few kilobytes in practice.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the client. reqwest panics when no rustls crypto provider is
/// installed, so that is checked first and reported as an error.
pub fn client() -> Result<reqwest::Client, IdentityError> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        return Err(IdentityError::NoTlsProvider);
    }
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| IdentityError::HttpClient {
            reason: error.to_string(),
        })
}

/// A response body, read up to [`MAX_RESPONSE_BYTES`].
pub struct Body {
    pub status: reqwest::StatusCode,
    pub bytes: Vec<u8>,
}

impl Body {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.bytes)
            .map_err(|error| format!("the answer is not the expected JSON: {error}"))
    }
}

/// Sends a request and reads its body, with a size limit. The error is a
/// reason to put in a message, with the address left to the caller.
pub async fn send(request: reqwest::RequestBuilder) -> Result<Body, String> {
    let mut response = request.send().await.map_err(|error| describe(&error))?;
    let status = response.status();
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| describe(&error))? {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!(
                "the answer is larger than {MAX_RESPONSE_BYTES} bytes"
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body { status, bytes })
}

/// GETs a JSON document that must come with a success status.
pub async fn get_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let body = send(client.get(url).header("accept", "application/json")).await?;
    if !body.status.is_success() {
        return Err(format!("`{url}` answered HTTP {}", body.status.as_u16()));
    }
    body.json().map_err(|reason| format!("`{url}`: {reason}"))
}

/// reqwest's messages stop at the outermost error; the cause (connection
/// refused, timed out) is what a person needs.
fn describe(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    quote_long(&message)
}
