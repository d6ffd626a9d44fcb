//! Login flows for people: how the `portcullis` command line gets an ID token
//! from the company's OpenID provider.
//!
//! - [`LoginClient::authorization_code`]: authorization code with PKCE (S256)
//!   and a loopback redirect (RFC 8252 §7.3), for a machine with a browser.
//! - [`LoginClient::device`]: the device authorization grant (RFC 8628), for a
//!   machine without one.
//! - [`LoginClient::refresh`]: a new ID token from a refresh token.
//!
//! These run on the user's machine, not in the gateway. The ID token comes
//! straight from the token endpoint, so the client does not verify its
//! signature (OpenID Connect Core §3.1.3.7 allows that); it does check the
//! `nonce`. The gateway verifies the token when it is presented.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::error::{description_suffix, quote, IdentityError};
use crate::http;
use crate::settings::OidcIssuerSettings;
use crate::token::{base64url, insecure_claims, now_seconds, numeric_date};

/// The scopes asked for unless [`LoginClient::with_scopes`] says otherwise.
pub const DEFAULT_SCOPES: &str = "openid email groups offline_access";

/// The device flow polls at least this far apart when the provider does not
/// say (RFC 8628 §3.2).
const DEFAULT_DEVICE_INTERVAL: Duration = Duration::from_secs(5);

/// How long one browser connection to the loopback listener may take to send
/// its request.
const CALLBACK_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head the loopback listener reads.
const MAX_CALLBACK_REQUEST: usize = 16 * 1024;

/// The tokens a login produced.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub id_token: String,
    pub refresh_token: Option<String>,
    /// The ID token's `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("id_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Tokens {
    /// Whether the ID token stays valid for at least `min_validity` more.
    pub fn is_fresh(&self, min_validity: Duration) -> bool {
        now_seconds().saturating_add(min_validity.as_secs()) < self.expires_at
    }
}

/// What the user must do to finish a device login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCode {
    /// The code to type on the verification page.
    pub user_code: String,
    pub verification_uri: String,
    /// The verification page with the code filled in, when the provider gives
    /// one.
    pub verification_uri_complete: Option<String>,
    /// How long the code stays valid.
    pub expires_in: Duration,
}

#[derive(Deserialize)]
struct ProviderMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    device_authorization_endpoint: Option<String>,
}

#[derive(Deserialize)]
struct DeviceAuthorization {
    device_code: String,
    user_code: String,
    // Some providers spell it `verification_url`.
    #[serde(alias = "verification_url")]
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: u64,
    interval: Option<u64>,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

/// The secrets of one login: unguessable, each used once.
pub struct LoginSecrets {
    pub state: String,
    pub nonce: String,
    pub code_verifier: String,
}

/// One authorization request in flight: where the browser goes, and what
/// finishes it. The secrets never leave the party that made it.
#[derive(Clone)]
pub struct AuthorizationRequest {
    pub url: String,
    /// Must come back unchanged with the code.
    pub state: String,
    nonce: String,
    code_verifier: String,
    redirect_uri: String,
}

impl std::fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationRequest")
            .finish_non_exhaustive()
    }
}

/// An OAuth client of one OpenID provider, ready to log a person in.
#[derive(Clone)]
pub struct LoginClient {
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    authorization_endpoint: String,
    token_endpoint: String,
    device_authorization_endpoint: Option<String>,
    scopes: String,
    prompt: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for LoginClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginClient")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl LoginClient {
    /// Reads the provider's discovery document and prepares the client named
    /// by `settings.client_id`.
    pub async fn discover(settings: &OidcIssuerSettings) -> Result<Self, IdentityError> {
        let Some(client_id) = settings.client_id.clone().filter(|id| !id.is_empty()) else {
            return Err(IdentityError::NoClientId {
                issuer: settings.issuer.clone(),
            });
        };
        let http = http::client()?;
        let discovery_error = |reason: String| IdentityError::Discovery {
            issuer: settings.issuer.clone(),
            reason,
        };
        let metadata: ProviderMetadata = http::get_json(&http, &settings.discovery_url())
            .await
            .map_err(discovery_error)?;
        if metadata.issuer != settings.issuer {
            return Err(discovery_error(format!(
                "the discovery document names the issuer `{}`",
                quote(&metadata.issuer)
            )));
        }
        Ok(LoginClient {
            issuer: settings.issuer.clone(),
            client_id,
            client_secret: settings
                .client_secret
                .clone()
                .filter(|secret| !secret.is_empty()),
            authorization_endpoint: metadata.authorization_endpoint,
            token_endpoint: metadata.token_endpoint,
            device_authorization_endpoint: metadata.device_authorization_endpoint,
            scopes: DEFAULT_SCOPES.to_owned(),
            prompt: None,
            http,
        })
    }

    /// Asks for these scopes (space-separated) instead of [`DEFAULT_SCOPES`].
    pub fn with_scopes(mut self, scopes: impl Into<String>) -> Self {
        self.scopes = scopes.into();
        self
    }

    /// Sends this `prompt` with the authorization request (for example
    /// `consent`, which some providers require before they issue a refresh
    /// token for `offline_access`).
    pub fn with_prompt(mut self, prompt: Option<String>) -> Self {
        self.prompt = prompt;
        self
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where this client's tokens are kept in the [`crate::TokenCache`]:
    /// by issuer and client, so that a config naming another client of the
    /// same provider neither gets them nor spends their refresh token.
    pub fn cache_key(&self) -> String {
        format!("{} {}", self.issuer, self.client_id)
    }

    /// Logs in with the authorization code flow and PKCE: listens on
    /// 127.0.0.1 (a free port), hands the authorization URL to `open_url`
    /// (which prints it or starts a browser), waits up to `timeout` for the
    /// provider to redirect the browser back, and exchanges the code.
    pub async fn authorization_code(
        &self,
        open_url: impl FnOnce(&str),
        timeout: Duration,
    ) -> Result<Tokens, IdentityError> {
        let listener =
            TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(|error| IdentityError::Loopback {
                    reason: error.to_string(),
                })?;
        let port = listener
            .local_addr()
            .map_err(|error| IdentityError::Loopback {
                reason: error.to_string(),
            })?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}/callback");
        let request = self.authorization_request(&redirect_uri)?;

        open_url(&request.url);

        let code = tokio::time::timeout(timeout, wait_for_callback(&listener, &request.state))
            .await
            .map_err(|_| IdentityError::LoginTimeout {
                seconds: timeout.as_secs(),
            })??;
        drop(listener);
        self.exchange_code(&code, &request).await
    }

    /// The first half of the authorization code flow with PKCE: the URL to
    /// send the browser to, and the secrets to finish with.
    pub fn authorization_request(
        &self,
        redirect_uri: &str,
    ) -> Result<AuthorizationRequest, IdentityError> {
        self.authorization_request_with(
            redirect_uri,
            LoginSecrets {
                state: random_token(),
                nonce: random_token(),
                code_verifier: random_token(),
            },
        )
    }

    /// The same with the secrets given: for a caller that derives them from
    /// a key of its own, so that a login in flight needs no state kept.
    pub fn authorization_request_with(
        &self,
        redirect_uri: &str,
        secrets: LoginSecrets,
    ) -> Result<AuthorizationRequest, IdentityError> {
        let LoginSecrets {
            state,
            nonce,
            code_verifier,
        } = secrets;
        let code_challenge = base64url(&Sha256::digest(code_verifier.as_bytes()));

        let mut url = url::Url::parse(&self.authorization_endpoint).map_err(|error| {
            IdentityError::Discovery {
                issuer: self.issuer.clone(),
                reason: format!("the authorization endpoint is not a URL: {error}"),
            }
        })?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &self.scopes)
                .append_pair("state", &state)
                .append_pair("nonce", &nonce)
                .append_pair("code_challenge", &code_challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(prompt) = &self.prompt {
                query.append_pair("prompt", prompt);
            }
        }
        Ok(AuthorizationRequest {
            url: url.into(),
            state,
            nonce,
            code_verifier,
            redirect_uri: redirect_uri.to_owned(),
        })
    }

    /// The second half: trades the code the provider sent back for tokens,
    /// and checks that the ID token answers this request (its nonce).
    pub async fn exchange_code(
        &self,
        code: &str,
        request: &AuthorizationRequest,
    ) -> Result<Tokens, IdentityError> {
        let response = self
            .token_request(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &request.redirect_uri),
                ("code_verifier", &request.code_verifier),
            ])
            .await?
            .map_err(|error| self.token_endpoint_error(error))?;
        let tokens = self.tokens(response, None)?;
        let claims = insecure_claims(&tokens.id_token)?;
        if claims.get("nonce").and_then(|value| value.as_str()) != Some(request.nonce.as_str()) {
            return Err(IdentityError::NonceMismatch);
        }
        Ok(tokens)
    }

    /// Logs in with the device authorization grant: shows the user code and
    /// the verification page through `show`, then polls the token endpoint at
    /// the interval the provider asks for, until the user finishes, refuses,
    /// the code expires, or `timeout` passes.
    pub async fn device(
        &self,
        show: impl FnOnce(&DeviceCode),
        timeout: Duration,
    ) -> Result<Tokens, IdentityError> {
        let Some(endpoint) = &self.device_authorization_endpoint else {
            return Err(IdentityError::NoDeviceEndpoint {
                issuer: self.issuer.clone(),
            });
        };
        let mut form = vec![("scope", self.scopes.as_str())];
        if self.client_secret.is_none() {
            form.push(("client_id", self.client_id.as_str()));
        }
        let body = http::send(self.authenticate(self.http.post(endpoint)).form(&form))
            .await
            .map_err(|reason| self.http_error(endpoint, reason))?;
        if !body.status.is_success() {
            return Err(match body.json::<OAuthError>() {
                Ok(error) => IdentityError::LoginRefused {
                    error: quote(&error.error),
                    description: description_suffix(error.error_description.as_deref()),
                },
                Err(_) => self.http_error(endpoint, format!("HTTP {}", body.status.as_u16())),
            });
        }
        let authorization: DeviceAuthorization = body
            .json()
            .map_err(|reason| self.http_error(endpoint, reason))?;

        let expires_in = Duration::from_secs(authorization.expires_in);
        show(&DeviceCode {
            user_code: authorization.user_code.clone(),
            verification_uri: authorization.verification_uri.clone(),
            verification_uri_complete: authorization.verification_uri_complete.clone(),
            expires_in,
        });

        let started = Instant::now();
        let code_expires = started + expires_in;
        let gives_up = started + timeout;
        let mut interval = authorization
            .interval
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_DEVICE_INTERVAL)
            .max(Duration::from_secs(1));

        loop {
            let next_poll = Instant::now() + interval;
            if next_poll > gives_up {
                tokio::time::sleep_until(gives_up).await;
                return Err(IdentityError::LoginTimeout {
                    seconds: timeout.as_secs(),
                });
            }
            if next_poll > code_expires {
                tokio::time::sleep_until(code_expires).await;
                return Err(IdentityError::DeviceCodeExpired);
            }
            tokio::time::sleep_until(next_poll).await;

            let answer = self
                .token_request(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("device_code", &authorization.device_code),
                ])
                .await?;
            match answer {
                Ok(response) => return self.tokens(response, None),
                Err(error) => match error.error.as_str() {
                    "authorization_pending" => {}
                    "slow_down" => interval += Duration::from_secs(5),
                    "expired_token" => return Err(IdentityError::DeviceCodeExpired),
                    "access_denied" => {
                        return Err(IdentityError::LoginRefused {
                            error: error.error,
                            description: description_suffix(error.error_description.as_deref()),
                        })
                    }
                    _ => return Err(self.token_endpoint_error(error)),
                },
            }
        }
    }

    /// Trades a refresh token for a new ID token. When the provider does not
    /// rotate the refresh token, the old one is kept.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, IdentityError> {
        let response = self
            .token_request(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .await?
            .map_err(|error| self.token_endpoint_error(error))?;
        self.tokens(response, Some(refresh_token))
    }

    /// Adds `client_secret_basic` authentication when there is a secret.
    fn authenticate(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.client_secret {
            Some(secret) => {
                // RFC 6749 §2.3.1: both parts are form-urlencoded first.
                let credentials =
                    format!("{}:{}", form_encode(&self.client_id), form_encode(secret));
                let encoded =
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, credentials);
                request.header("authorization", format!("Basic {encoded}"))
            }
            None => request,
        }
    }

    /// POSTs to the token endpoint. `Ok(Err(..))` is an OAuth error answer,
    /// which the device flow needs to tell apart.
    async fn token_request(
        &self,
        params: &[(&str, &str)],
    ) -> Result<Result<TokenResponse, OAuthError>, IdentityError> {
        let mut form: Vec<(&str, &str)> = params.to_vec();
        if self.client_secret.is_none() {
            form.push(("client_id", &self.client_id));
        }
        let request = self
            .authenticate(self.http.post(&self.token_endpoint))
            .header("accept", "application/json")
            .form(&form);
        let body = http::send(request)
            .await
            .map_err(|reason| self.http_error(&self.token_endpoint, reason))?;
        if body.status.is_success() {
            return body
                .json::<TokenResponse>()
                .map(Ok)
                .map_err(|reason| self.http_error(&self.token_endpoint, reason));
        }
        match body.json::<OAuthError>() {
            Ok(error) => Ok(Err(error)),
            Err(_) => Err(self.http_error(
                &self.token_endpoint,
                format!("HTTP {}", body.status.as_u16()),
            )),
        }
    }

    fn tokens(
        &self,
        response: TokenResponse,
        previous_refresh_token: Option<&str>,
    ) -> Result<Tokens, IdentityError> {
        let Some(id_token) = response.id_token else {
            return Err(IdentityError::NoIdToken {
                issuer: self.issuer.clone(),
            });
        };
        let claims = insecure_claims(&id_token)?;
        let expires_at =
            numeric_date(&claims, "exp").ok_or_else(|| IdentityError::MissingClaim {
                claim: "exp".to_owned(),
            })?;
        Ok(Tokens {
            id_token,
            refresh_token: response
                .refresh_token
                .or_else(|| previous_refresh_token.map(str::to_owned)),
            expires_at,
        })
    }

    fn token_endpoint_error(&self, error: OAuthError) -> IdentityError {
        IdentityError::TokenEndpoint {
            issuer: self.issuer.clone(),
            error: quote(&error.error),
            description: description_suffix(error.error_description.as_deref()),
        }
    }

    fn http_error(&self, url: &str, reason: String) -> IdentityError {
        IdentityError::Http {
            url: url.to_owned(),
            reason,
        }
    }
}

/// 32 random bytes, base64url: for `state`, `nonce` and the PKCE verifier
/// (43 characters, within RFC 7636's 43 to 128).
fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64url(&bytes)
}

fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Accepts connections on the loopback listener until one brings the
/// callback; other requests (a browser's `/favicon.ico`) get a 404.
async fn wait_for_callback(listener: &TcpListener, state: &str) -> Result<String, IdentityError> {
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|error| IdentityError::Loopback {
                reason: error.to_string(),
            })?;
        if let Some(outcome) = handle_callback(stream, state).await {
            return outcome;
        }
    }
}

/// Reads one request. `None` when it was not the callback (or could not be
/// read), so the caller keeps waiting.
async fn handle_callback(
    mut stream: TcpStream,
    expected_state: &str,
) -> Option<Result<String, IdentityError>> {
    let head =
        match tokio::time::timeout(CALLBACK_READ_TIMEOUT, read_request_head(&mut stream)).await {
            Ok(Some(head)) => head,
            Ok(None) | Err(_) => return None,
        };
    let request_line = head.lines().next().unwrap_or_default();
    let mut words = request_line.split(' ');
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        respond(&mut stream, "400 Bad Request", "bad request").await;
        return None;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || path != "/callback" {
        respond(&mut stream, "404 Not Found", "not found").await;
        return None;
    }

    let mut state = None;
    let mut code = None;
    let mut error = None;
    let mut error_description = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "state" => state = Some(value.into_owned()),
            "code" => code = Some(value.into_owned()),
            "error" => error = Some(value.into_owned()),
            "error_description" => error_description = Some(value.into_owned()),
            _ => {}
        }
    }

    if !state
        .as_deref()
        .is_some_and(|state| constant_time_eq(state, expected_state))
    {
        // Anyone on this machine (or a page guessing the port) can send one:
        // it is refused, and the login goes on waiting for its own answer.
        respond(
            &mut stream,
            "400 Bad Request",
            "this answer does not belong to the login in progress",
        )
        .await;
        return None;
    }
    if let Some(error) = error {
        respond(
            &mut stream,
            "200 OK",
            "login failed: the identity provider refused it; see the terminal for details",
        )
        .await;
        return Some(Err(IdentityError::LoginRefused {
            error: quote(&error),
            description: description_suffix(error_description.as_deref()),
        }));
    }
    let Some(code) = code else {
        respond(
            &mut stream,
            "400 Bad Request",
            "login failed: no authorization code",
        )
        .await;
        return Some(Err(IdentityError::MissingCode));
    };
    respond(
        &mut stream,
        "200 OK",
        "login complete, you can close this window",
    )
    .await;
    Some(Ok(code))
}

/// Reads up to the end of the request head. `None` if the connection closes
/// first or sends too much.
async fn read_request_head(stream: &mut TcpStream) -> Option<String> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(chunk.get(..read)?);
        if buffer.windows(4).any(|window| window == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&buffer).into_owned());
        }
        if buffer.len() > MAX_CALLBACK_REQUEST {
            return None;
        }
    }
}

async fn respond(stream: &mut TcpStream, status: &str, message: &str) {
    let body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Portcullis</title></head>\
         <body><p>{message}</p></body></html>\n"
    );
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // The browser may already be gone; the login goes on regardless.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |difference, (x, y)| difference | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn send_request(port: u16, request: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn callback_listener_ignores_other_paths_and_checks_state() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let waiter = tokio::spawn(async move { wait_for_callback(&listener, "s1").await });

        let answer = send_request(port, "GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let answer = send_request(port, "GET /callback?code=c1&state=s1 HTTP/1.1\r\n\r\n").await;
        assert!(
            answer.contains("login complete, you can close this window"),
            "{answer}"
        );
        assert_eq!(waiter.await.unwrap().unwrap(), "c1");

        // An answer with another state is refused without ending the login.
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let waiter = tokio::spawn(async move { wait_for_callback(&listener, "s1").await });
        let answer =
            send_request(port, "GET /callback?code=evil&state=other HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(!waiter.is_finished());
        send_request(port, "GET /callback?code=c2&state=s1 HTTP/1.1\r\n\r\n").await;
        assert_eq!(waiter.await.unwrap().unwrap(), "c2");

        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let waiter = tokio::spawn(async move { wait_for_callback(&listener, "s1").await });
        send_request(
            port,
            "GET /callback?error=access_denied&error_description=no&state=s1 HTTP/1.1\r\n\r\n",
        )
        .await;
        let error = waiter.await.unwrap().unwrap_err();
        assert_eq!(
            error.to_string(),
            "the identity provider refused the login: `access_denied`: no"
        );
    }

    #[test]
    fn tokens_debug_hides_the_tokens() {
        let tokens = Tokens {
            id_token: "secret.id.token".to_owned(),
            refresh_token: Some("secret-refresh".to_owned()),
            expires_at: 1,
        };
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn random_tokens_fit_pkce() {
        let verifier = random_token();
        assert_eq!(verifier.len(), 43);
        assert_ne!(verifier, random_token());
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
