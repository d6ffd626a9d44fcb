//! The reviewers' web console: an inbox of pending requests, a page per
//! request with everything needed to decide, approve or deny with a comment,
//! and a history. Pages update live (server-sent events).
//!
//! Login is OpenID Connect, authorization code with PKCE, against the
//! configured provider. A session is a random id in an `HttpOnly`,
//! `SameSite=Lax` cookie (`Secure` when the console is served over https),
//! kept in memory no longer than the ID token it came from; every form
//! carries the session's CSRF token.

use crate::html;
use crate::{visible_to, Web};
use axum::extract::{Form, Path, Query, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use portcullis_approval::Request;
use portcullis_core::Principal;
use portcullis_identity::LoginClient;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SESSION_COOKIE: &str = "portcullis_console";
const LOGIN_COOKIE: &str = "portcullis_login";
/// How long a login may take at the provider.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// A recording's page shows at most this much of it (payloads read, and
/// twice as much text drawn): a page is built in memory, and any user can
/// make a recording large.
const MAX_PAGE_BYTES: usize = 4 << 20;
/// The player gets at most this much of a terminal's output.
const MAX_CAST_BYTES: usize = 64 << 20;
/// At most this many sessions open.
const MAX_SESSIONS: usize = 10_000;
/// At most this many sessions for one person; their oldest gives way.
const MAX_SESSIONS_PER_PERSON: usize = 8;
/// Logins whose answer came back, remembered for [`LOGIN_TTL`] so that
/// each is completed once: at most this many at once.
const MAX_LOGINS_ANSWERED: usize = 10_000;
/// Answers one client address may bring back in a minute: each costs a
/// request to the provider signed with the gateway's client secret, and a
/// provider may lock a client that sends many bad ones.
const ANSWERS_PER_MINUTE: u32 = 20;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub(crate) struct State {
    pub(crate) web: Web,
    login_client: tokio::sync::OnceCell<LoginClient>,
    sessions: Mutex<HashMap<String, ConsoleSession>>,
    /// Signs the login cookie and derives each login's secrets from it: a
    /// login in flight is kept in the browser that started it, so that
    /// nobody can crowd out another's by starting many.
    login_key: [u8; 32],
    /// Logins whose answer came back (their key, when they started).
    answered: Mutex<HashMap<String, u64>>,
    /// Answers brought back per client address this minute.
    answers: Mutex<HashMap<std::net::IpAddr, (Instant, u32)>>,
}

#[derive(Clone)]
struct ConsoleSession {
    principal: Principal,
    csrf: String,
    /// The ID token's expiry (Unix seconds).
    expires_at: u64,
    created: Instant,
}

/// A login in flight, as its cookie carries it.
struct PendingLogin {
    key: String,
    /// Unix seconds.
    started: u64,
    return_to: String,
}

impl PendingLogin {
    fn mac(&self, login_key: &[u8; 32], label: &str) -> HmacSha256 {
        use hmac::Mac;
        let mut mac = <HmacSha256 as Mac>::new_from_slice(login_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        for part in [label, &self.key, &self.started.to_string(), &self.return_to] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        mac
    }

    /// The login's state, nonce and code verifier, derived from the key.
    fn secrets(&self, login_key: &[u8; 32]) -> portcullis_identity::LoginSecrets {
        use hmac::Mac;
        let derive = |label: &str| base64url(&self.mac(login_key, label).finalize().into_bytes());
        portcullis_identity::LoginSecrets {
            state: derive("state"),
            nonce: derive("nonce"),
            code_verifier: derive("code_verifier"),
        }
    }

    fn cookie(&self, login_key: &[u8; 32]) -> String {
        use hmac::Mac;
        let signature = self.mac(login_key, "cookie").finalize().into_bytes();
        format!(
            "{}.{}.{}.{}",
            self.key,
            self.started,
            base64url(self.return_to.as_bytes()),
            base64url(&signature)
        )
    }

    /// The login a cookie carries, if this gateway signed it and it is
    /// not too old.
    fn from_cookie(value: &str, login_key: &[u8; 32]) -> Option<PendingLogin> {
        use base64::Engine;
        use hmac::Mac;
        let mut parts = value.splitn(4, '.');
        let (key, started, return_to, signature) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let decode = |text: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text)
                .ok()
        };
        let login = PendingLogin {
            key: key.to_string(),
            started: started.parse().ok()?,
            return_to: String::from_utf8(decode(return_to)?).ok()?,
        };
        login
            .mac(login_key, "cookie")
            .verify_slice(&decode(signature)?)
            .ok()?;
        let age = now().checked_sub(login.started)?;
        (age < LOGIN_TTL.as_secs() && is_local_path(&login.return_to)).then_some(login)
    }
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl State {
    pub(crate) fn new(web: Web) -> State {
        use rand::RngCore;
        let mut login_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut login_key);
        State {
            web,
            login_client: tokio::sync::OnceCell::new(),
            sessions: Mutex::new(HashMap::new()),
            login_key,
            answered: Mutex::new(HashMap::new()),
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a login's answer once, and at most [`ANSWERS_PER_MINUTE`]
    /// from one address; why not, otherwise.
    fn take_answer(
        &self,
        login: &PendingLogin,
        peer: Option<std::net::IpAddr>,
    ) -> Result<(), (StatusCode, &'static str)> {
        if let Some(peer) = peer {
            let mut answers = lock(&self.answers);
            let minute = Duration::from_secs(60);
            answers.retain(|_, (since, _)| since.elapsed() < minute);
            let (_, count) = answers.entry(peer).or_insert((Instant::now(), 0));
            *count += 1;
            if *count > ANSWERS_PER_MINUTE {
                return Err((
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many logins from this address; wait a minute and log in again",
                ));
            }
        }
        let mut answered = lock(&self.answered);
        let oldest = now().saturating_sub(LOGIN_TTL.as_secs());
        answered.retain(|_, started| *started >= oldest);
        if answered.contains_key(&login.key) {
            return Err((
                StatusCode::BAD_REQUEST,
                "this login was answered already; log in again",
            ));
        }
        if answered.len() >= MAX_LOGINS_ANSWERED {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "too many logins at once; try again in a few minutes",
            ));
        }
        answered.insert(login.key.clone(), login.started);
        Ok(())
    }

    fn public_url(&self) -> &str {
        self.web
            .console
            .as_ref()
            .map(|c| c.public_url.as_str())
            .unwrap_or_default()
    }

    fn secure(&self) -> bool {
        self.public_url().starts_with("https://")
    }

    /// A cookie's name: over https with the `__Host-` prefix, so that no
    /// other host of the site (nor a plain-http page) can set it.
    fn named(&self, name: &str) -> String {
        if self.secure() {
            format!("__Host-{name}")
        } else {
            name.to_string()
        }
    }

    fn cookie(&self, name: &str, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure() { "; Secure" } else { "" };
        let name = self.named(name);
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn session(&self, headers: &HeaderMap) -> Option<ConsoleSession> {
        let id = cookie(headers, &self.named(SESSION_COOKIE))?;
        let mut sessions = lock(&self.sessions);
        let session = sessions.get(&id)?.clone();
        if session.expires_at <= now() {
            sessions.remove(&id);
            return None;
        }
        Some(session)
    }

    async fn login_client(&self) -> Result<&LoginClient, String> {
        let Some(console) = &self.web.console else {
            return Err("the console is not configured".into());
        };
        self.login_client
            .get_or_try_init(|| async {
                LoginClient::discover(&console.oidc)
                    .await
                    .map(|c| c.with_scopes("openid email groups"))
            })
            .await
            .map_err(|e| format!("the identity provider cannot be reached: {e}"))
    }
}

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/", get(inbox))
        .route("/history", get(history))
        .route("/requests/{id}", get(request_page).post(decide))
        .route("/events", get(events))
        .route("/sessions", get(sessions_page))
        .route("/sessions/{id}", get(session_page))
        .route("/sessions/{id}/cast", get(session_cast))
        .route("/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/logout", post(logout))
        .route(
            "/logged-out",
            get(|| async { Page::Html(html::logged_out()) }),
        )
        .route("/static/console.js", get(script))
        .route("/static/console.css", get(style))
        .route("/static/asciinema-player.min.js", get(player_script))
        .route("/static/asciinema-player.css", get(player_style))
        .with_state(state)
        .layer(axum::middleware::map_response(security_headers))
}

/// Every answer of the console and the API, pages, assets, casts, JSON and
/// the framework's own refusals alike: no script from elsewhere, never framed, never
/// sniffed into another type, never cached.
pub(crate) async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            // The player runs its terminal in WebAssembly.
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// A page for a logged-in reviewer, or a redirect to the login.
enum Page {
    Html(String),
    Login(String),
    Error(StatusCode, String),
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        // The headers every answer gets: [`security_headers`].
        match self {
            Page::Html(body) => Html(body).into_response(),
            Page::Login(return_to) => {
                Redirect::to(&format!("/login?return_to={}", url_encode(&return_to)))
                    .into_response()
            }
            Page::Error(status, message) => {
                (status, Html(html::error_page(&message))).into_response()
            }
        }
    }
}

#[derive(Deserialize)]
struct FragmentQuery {
    #[serde(default)]
    fragment: Option<String>,
}

async fn inbox(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Query(query): Query<FragmentQuery>,
) -> Page {
    let Some(session) = state.session(&headers) else {
        return Page::Login("/".into());
    };
    let pending = match state.web.approvals.pending().await {
        Ok(pending) => pending,
        Err(e) => return Page::Error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let mine: Vec<&Request> = pending
        .iter()
        .filter(|r| visible_to(r, &session.principal))
        .collect();
    let list = html::request_list("inbox", &mine, "No request waits for you.");
    if query.fragment.is_some() {
        return Page::Html(list);
    }
    Page::Html(html::layout(
        "Inbox",
        &session.principal,
        &session.csrf,
        &html::live(&list),
    ))
}

async fn history(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Query(query): Query<FragmentQuery>,
) -> Page {
    let Some(session) = state.session(&headers) else {
        return Page::Login("/history".into());
    };
    let decided = match state.web.approvals.history(200).await {
        Ok(decided) => decided,
        Err(e) => return Page::Error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let mine: Vec<&Request> = decided
        .iter()
        .filter(|r| visible_to(r, &session.principal))
        .collect();
    let list = html::request_list("history", &mine, "Nothing decided yet.");
    if query.fragment.is_some() {
        return Page::Html(list);
    }
    Page::Html(html::layout(
        "History",
        &session.principal,
        &session.csrf,
        &html::live(&list),
    ))
}

async fn request_page(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(query): Query<FragmentQuery>,
) -> Page {
    let Some(session) = state.session(&headers) else {
        return Page::Login(format!("/requests/{id}"));
    };
    let request = match state.web.approvals.get(id).await {
        Ok(request) if visible_to(&request, &session.principal) => request,
        Ok(_) | Err(portcullis_approval::ApprovalError::NotFound(_)) => {
            return Page::Error(StatusCode::NOT_FOUND, format!("no request {id} for you"))
        }
        Err(e) => return Page::Error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let status = html::request_status(&request);
    if query.fragment.is_some() {
        return Page::Html(status);
    }
    let may_review = request.may_review(&session.principal);
    let body = html::request_page(&request, &status, may_review, &session.csrf, None);
    Page::Html(html::layout(
        &format!("Request {id}"),
        &session.principal,
        &session.csrf,
        &body,
    ))
}

/// Whether this reviewer may watch recordings; the page to show if not.
fn may_watch<'a>(
    state: &'a State,
    principal: &Principal,
) -> Result<&'a portcullis_record::Recordings, Page> {
    let Some(recordings) = &state.web.recordings else {
        return Err(Page::Error(
            StatusCode::NOT_FOUND,
            "sessions are not recorded here".into(),
        ));
    };
    if !state
        .web
        .recording_viewers
        .iter()
        .any(|g| principal.groups.contains(g))
    {
        return Err(Page::Error(
            StatusCode::FORBIDDEN,
            format!(
                "recordings are for members of {}",
                if state.web.recording_viewers.is_empty() {
                    "the groups in `[recording] viewers` (none is configured)".to_string()
                } else {
                    portcullis_approval::model::groups_list(&state.web.recording_viewers)
                }
            ),
        ));
    }
    Ok(recordings)
}

async fn sessions_page(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap) -> Page {
    let Some(session) = state.session(&headers) else {
        return Page::Login("/sessions".into());
    };
    let recordings = match may_watch(&state, &session.principal) {
        Ok(r) => r.clone(),
        Err(page) => return page,
    };
    let list = match tokio::task::spawn_blocking(move || recordings.list()).await {
        Ok(Ok(list)) => list,
        Ok(Err(e)) => return Page::Error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => return Page::Error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // Finished recordings that left the data directory for the store.
    let stored: Vec<String> = match &state.web.recordings_remote {
        Some(remote) => match remote.ids().await {
            Ok(ids) => ids
                .into_iter()
                .filter(|id| !list.iter().any(|s| &s.id == id))
                .collect(),
            Err(e) => return Page::Error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        None => Vec::new(),
    };
    let body = html::session_list(&list, &stored);
    Page::Html(html::layout(
        "Sessions",
        &session.principal,
        &session.csrf,
        &body,
    ))
}

/// A recording's records, from the data directory or else the store, and
/// whether a finished one verifies (`None` while it runs).
async fn load_recording(
    state: &State,
    recordings: &portcullis_record::Recordings,
    id: &str,
    budget: usize,
) -> Result<
    (
        Vec<portcullis_record::format::Record>,
        u64,
        Option<Result<(), String>>,
    ),
    Page,
> {
    let lookup = id.to_string();
    let local = recordings.clone();
    let mut found =
        tokio::task::spawn_blocking(move || local.records_within(&lookup, budget)).await;
    // Not in the data directory: from the store, through a temporary copy.
    let copy = match (&found, &state.web.recordings_remote) {
        (Ok(Err(portcullis_record::RecordError::NotFound(_))), Some(remote)) => {
            let copy = tempfile::tempdir()
                .map_err(|e| Page::Error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            if let Err(e) = remote.download(id, copy.path()).await {
                return Err(match e {
                    portcullis_record::RecordError::NotFound(_) => {
                        Page::Error(StatusCode::NOT_FOUND, "no such recording".into())
                    }
                    e => Page::Error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                });
            }
            let reader =
                portcullis_record::Recordings::reader(copy.path(), recordings.verifying_key());
            let lookup = id.to_string();
            found =
                tokio::task::spawn_blocking(move || reader.records_within(&lookup, budget)).await;
            Some(copy)
        }
        _ => None,
    };
    let (records, left_out) = match found {
        Ok(Ok(found)) => found,
        Ok(Err(portcullis_record::RecordError::NotFound(_))) => {
            return Err(Page::Error(
                StatusCode::NOT_FOUND,
                "no such recording".into(),
            ))
        }
        Ok(Err(e)) => return Err(Page::Error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(e) => {
            return Err(Page::Error(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            ))
        }
    };
    let ended = records
        .iter()
        .any(|r| r.kind == portcullis_record::format::Kind::End);
    // Without its end, a recording is running only while this gateway
    // writes it: one whose end was cut off is not followed as if it ran.
    let running = !ended && (copy.is_some() || recordings.is_live(id) != Some(false));
    // A finished recording says whether it verifies.
    let verified = if running {
        None
    } else {
        let reader = match &copy {
            Some(copy) => {
                portcullis_record::Recordings::reader(copy.path(), recordings.verifying_key())
            }
            None => recordings.clone(),
        };
        let lookup = id.to_string();
        Some(
            tokio::task::spawn_blocking(move || {
                reader
                    .verify(&lookup)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string())),
        )
    };
    Ok((records, left_out, verified))
}

async fn session_page(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<FragmentQuery>,
) -> Page {
    let Some(session) = state.session(&headers) else {
        return Page::Login(format!("/sessions/{id}"));
    };
    let recordings = match may_watch(&state, &session.principal) {
        Ok(r) => r.clone(),
        Err(page) => return page,
    };
    let (records, left_out, verified) =
        match load_recording(&state, &recordings, &id, MAX_PAGE_BYTES).await {
            Ok(found) => found,
            Err(page) => return page,
        };
    let running = verified.is_none();
    let mut left_cut = 2 * MAX_PAGE_BYTES;
    // An SSH terminal plays in the player; the text shows the decisions.
    let terminal = records
        .iter()
        .any(|r| r.kind == portcullis_record::format::Kind::Output);
    let withheld = withheld_rules(&state, &session.principal, &records);
    let shown: Vec<portcullis_record::format::Record> = records
        .iter()
        .filter(|r| r.kind != portcullis_record::format::Kind::Output)
        .filter(|r| withheld.is_none() || r.kind != portcullis_record::format::Kind::ToClient)
        .cloned()
        .collect();
    let mut text = String::new();
    if let Some(rules) = &withheld {
        text.push_str(&format!(
            "-- results withheld: this session saw the values of {rules} in clear, and the policy does not let you unmask them\n"
        ));
    }
    let rendered: String = portcullis_record::render(&shown)
        .into_iter()
        .map(|(_, t)| t)
        .take_while(|t| {
            left_cut = left_cut.saturating_sub(t.len());
            left_cut > 0
        })
        .collect();
    text.push_str(&rendered);
    if left_out > 0 || left_cut == 0 {
        text.push_str(&format!(
            "-- the page shows the first {} MB of this recording; `portcullis replay {id}` plays all of it\n",
            MAX_PAGE_BYTES >> 20
        ));
    }
    let replay = html::replay(&text, running, verified);
    if query.fragment.is_some() {
        return Page::Html(replay);
    }
    let player = if terminal {
        html::player(&format!("/sessions/{}/cast", url_encode(&id)))
    } else {
        String::new()
    };
    Page::Html(html::layout(
        &format!("Session {id}"),
        &session.principal,
        &session.csrf,
        &format!("{player}{}", html::live_polled(&replay, running)),
    ))
}

/// The mask rules whose values a PostgreSQL recording holds in clear and
/// this viewer may not see so, named for the page; `None` when the viewer
/// may see all it holds. A recording that does not say what it holds in
/// clear (made before it did) may hold anything.
fn withheld_rules(
    state: &State,
    viewer: &Principal,
    records: &[portcullis_record::format::Record],
) -> Option<String> {
    use portcullis_record::format::{Kind, Start};
    if !records.iter().any(|r| r.kind == Kind::ToClient) {
        return None;
    }
    let target = records
        .iter()
        .find(|r| r.kind == Kind::Start)
        .and_then(|r| serde_json::from_slice::<Start>(&r.payload).ok())
        .map(|start| start.target);
    let masked = target.and_then(|t| (state.web.masked_for)(viewer, &t));
    let rules = withheld(portcullis_record::unmasked(records), masked)?;
    if rules.is_empty() {
        return Some("any mask rule".into());
    }
    let named: Vec<String> = rules.iter().map(|r| format!("`{r}`")).collect();
    Some(format!("mask rule {}", named.join(", ")))
}

/// The rules a recording holds in clear (`None`: any) that the viewer may
/// not unmask (`None`: none is known, as for a target no longer
/// configured, so every rule counts); empty for "any rule".
fn withheld(
    unmasked: Option<std::collections::BTreeSet<String>>,
    masked: Option<Vec<String>>,
) -> Option<Vec<String>> {
    let rules: Vec<String> = match (unmasked, masked) {
        (_, Some(masked)) if masked.is_empty() => return None,
        (Some(unmasked), Some(masked)) => masked
            .into_iter()
            .filter(|r| unmasked.contains(r))
            .collect(),
        (Some(unmasked), None) => unmasked.into_iter().collect(),
        (None, Some(masked)) => return Some(masked),
        (None, None) => return Some(Vec::new()),
    };
    (!rules.is_empty()).then_some(rules)
}

/// An SSH session's terminal as asciicast v2, for the player.
async fn session_cast(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(session) = state.session(&headers) else {
        return Page::Login(format!("/sessions/{id}")).into_response();
    };
    let recordings = match may_watch(&state, &session.principal) {
        Ok(r) => r.clone(),
        Err(page) => return page.into_response(),
    };
    match load_recording(&state, &recordings, &id, MAX_CAST_BYTES).await {
        // A recording that does not verify is not played as if it did.
        Ok((_, _, Some(Err(e)))) => Page::Error(
            StatusCode::CONFLICT,
            format!("recording `{id}` does not verify: {e}"),
        )
        .into_response(),
        Ok((records, _, _)) => (
            [
                (
                    header::CONTENT_TYPE,
                    "application/x-asciicast; charset=utf-8",
                ),
                (header::CACHE_CONTROL, "no-store"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            portcullis_record::asciicast(&records),
        )
            .into_response(),
        Err(page) => page.into_response(),
    }
}

#[derive(Deserialize)]
struct DecisionForm {
    csrf: String,
    decision: String,
    #[serde(default)]
    comment: String,
}

async fn decide(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let Some(session) = state.session(&headers) else {
        return Page::Login(format!("/requests/{id}")).into_response();
    };
    if !constant_time_eq(&form.csrf, &session.csrf) {
        return Page::Error(
            StatusCode::FORBIDDEN,
            "this form is stale or was not sent by the console; reload the page and decide again"
                .into(),
        )
        .into_response();
    }
    match state.web.approvals.get(id).await {
        Ok(request) if visible_to(&request, &session.principal) => {}
        _ => {
            return Page::Error(StatusCode::NOT_FOUND, format!("no request {id} for you"))
                .into_response()
        }
    }
    let approve = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return Page::Error(StatusCode::BAD_REQUEST, "choose approve or deny".into())
                .into_response()
        }
    };
    match state
        .web
        .approvals
        .review(id, &session.principal, approve, &form.comment)
        .await
    {
        Ok(_) => Redirect::to(&format!("/requests/{id}")).into_response(),
        Err(e) => {
            // The page again, with the reason the decision was not taken.
            let request = match state.web.approvals.get(id).await {
                Ok(request) if visible_to(&request, &session.principal) => request,
                _ => return Page::Error(StatusCode::NOT_FOUND, e.to_string()).into_response(),
            };
            let status = html::request_status(&request);
            let may_review = request.may_review(&session.principal);
            let body = html::request_page(
                &request,
                &status,
                may_review,
                &session.csrf,
                Some(&e.to_string()),
            );
            let page = Page::Html(html::layout(
                &format!("Request {id}"),
                &session.principal,
                &session.csrf,
                &body,
            ));
            (StatusCode::UNPROCESSABLE_ENTITY, page).into_response()
        }
    }
}

/// One event per change of a request the reviewer may see; the page then
/// fetches its fragment again.
async fn events(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap) -> Response {
    let Some(session) = state.session(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Some(session_id) = cookie(&headers, &state.named(SESSION_COOKIE)) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let changes = state.web.approvals.changes();
    let principal = session.principal.clone();
    let console = state.clone();
    let stream = futures_util::stream::unfold(changes, move |mut changes| {
        let principal = principal.clone();
        let console = console.clone();
        let session_id = session_id.clone();
        async move {
            loop {
                let change = changes.recv().await;
                // A session that logged out hears nothing more.
                if !lock(&console.sessions).contains_key(&session_id) {
                    return None;
                }
                match change {
                    Ok(request) if visible_to(&request, &principal) => {
                        let event = Event::default().event("request").data(format!(
                            "{} {}",
                            request.id,
                            request.status.as_str()
                        ));
                        return Some((Ok::<_, std::convert::Infallible>(event), changes));
                    }
                    Ok(_) => continue,
                    // Missed some: tell the page to refresh anyway.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let event = Event::default().event("request").data("lagged");
                        return Some((Ok(event), changes));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    // The stream lasts no longer than the console session.
    let left = Duration::from_secs(session.expires_at.saturating_sub(now()));
    let stream = futures_util::StreamExt::take_until(stream, tokio::time::sleep(left));
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    return_to: Option<String>,
}

async fn login(
    AxumState(state): AxumState<Arc<State>>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let client = match state.login_client().await {
        Ok(client) => client,
        Err(e) => return Page::Error(StatusCode::BAD_GATEWAY, e).into_response(),
    };
    let redirect_uri = format!("{}/auth/callback", state.public_url());
    // Only a path of this console: never an open redirect.
    let return_to = query
        .return_to
        .filter(|r| is_local_path(r))
        .unwrap_or_else(|| "/".into());
    let login = PendingLogin {
        key: random_token(),
        started: now(),
        return_to,
    };
    let request =
        match client.authorization_request_with(&redirect_uri, login.secrets(&state.login_key)) {
            Ok(request) => request,
            Err(e) => return Page::Error(StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        };
    let mut response = Redirect::to(&request.url).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        state.cookie(
            LOGIN_COOKIE,
            &login.cookie(&state.login_key),
            LOGIN_TTL.as_secs(),
        ),
    );
    response
}

#[derive(Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

async fn callback(
    AxumState(state): AxumState<Arc<State>>,
    peer: Option<axum::Extension<crate::Peer>>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let fail = |message: String| Page::Error(StatusCode::BAD_REQUEST, message).into_response();
    let pending = cookie(&headers, &state.named(LOGIN_COOKIE))
        .and_then(|value| PendingLogin::from_cookie(&value, &state.login_key));
    let Some(pending) = pending else {
        return fail("this login was not started here, or took too long; log in again".into());
    };
    let client = match state.login_client().await {
        Ok(client) => client,
        Err(e) => return Page::Error(StatusCode::BAD_GATEWAY, e).into_response(),
    };
    let redirect_uri = format!("{}/auth/callback", state.public_url());
    let request =
        match client.authorization_request_with(&redirect_uri, pending.secrets(&state.login_key)) {
            Ok(request) => request,
            Err(e) => return Page::Error(StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        };
    if query
        .state
        .as_deref()
        .map(|s| constant_time_eq(s, &request.state))
        != Some(true)
    {
        return fail(
            "the login answer does not match the login that was started; log in again".into(),
        );
    }
    // Only an answer to the login this browser started says why the
    // provider refused: anyone can write a link with an `error` of their
    // own words.
    if let Some(error) = query.error {
        let description = query.error_description.unwrap_or_default();
        return fail(format!(
            "the identity provider refused the login: {error} {description}"
        ));
    }
    let Some(code) = query.code else {
        return fail("the identity provider sent no code".into());
    };
    // Each login is completed once (found in attack: one login cookie
    // brought back again and again made the gateway send the provider as
    // many signed token requests).
    if let Err((status, why)) = state.take_answer(&pending, peer.map(|p| p.0 .0)) {
        return Page::Error(status, why.into()).into_response();
    }
    let tokens = match client.exchange_code(&code, &request).await {
        Ok(tokens) => tokens,
        Err(e) => return fail(format!("the login could not be completed: {e}")),
    };
    let principal = match state.web.verifier.verify(&tokens.id_token).await {
        Ok(principal) => principal,
        Err(e) => return fail(format!("the identity token was refused: {e}")),
    };
    let id = random_token();
    let session = ConsoleSession {
        expires_at: principal.expires_at,
        principal,
        csrf: random_token(),
        created: Instant::now(),
    };
    let max_age = session.expires_at.saturating_sub(now());
    if !admit(&mut lock(&state.sessions), id.clone(), session) {
        return Page::Error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many console sessions are open; try again later".into(),
        )
        .into_response();
    }
    let mut response = Redirect::to(&pending.return_to).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        state.cookie(SESSION_COOKIE, &id, max_age),
    );
    headers.append(header::SET_COOKIE, state.cookie(LOGIN_COOKIE, "", 0));
    response
}

/// Adds a session, dropping expired ones and, past
/// [`MAX_SESSIONS_PER_PERSON`], that person's oldest: one person's logins
/// crowd out only their own. `false` when [`MAX_SESSIONS`] are open.
fn admit(
    sessions: &mut HashMap<String, ConsoleSession>,
    id: String,
    session: ConsoleSession,
) -> bool {
    let now = now();
    sessions.retain(|_, s| s.expires_at > now);
    let person = |s: &ConsoleSession| {
        s.principal.subject == session.principal.subject
            && s.principal.issuer == session.principal.issuer
    };
    while sessions.values().filter(|s| person(s)).count() >= MAX_SESSIONS_PER_PERSON {
        let Some(oldest) = sessions
            .iter()
            .filter(|(_, s)| person(s))
            .min_by_key(|(_, s)| s.created)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        sessions.remove(&oldest);
    }
    if sessions.len() >= MAX_SESSIONS {
        return false;
    }
    sessions.insert(id, session);
    true
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    // A form without the session's token changes nothing, the cookie
    // included: a browser that forgot a session the gateway still holds
    // would leave it usable by whoever copied the cookie.
    if let (Some(id), Some(session)) = (
        cookie(&headers, &state.named(SESSION_COOKIE)),
        state.session(&headers),
    ) {
        if !constant_time_eq(&form.csrf, &session.csrf) {
            return Page::Error(
                StatusCode::FORBIDDEN,
                "this logout form is out of date: reload the page and log out again".into(),
            )
            .into_response();
        }
        lock(&state.sessions).remove(&id);
    }
    let mut response = Redirect::to("/logged-out").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, state.cookie(SESSION_COOKIE, "", 0));
    response
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        html::SCRIPT,
    )
}

/// The asciinema player (`assets/asciinema-player`, Apache-2.0), served
/// from the gateway: the console loads nothing from elsewhere.
async fn player_script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../assets/asciinema-player/asciinema-player.min.js"),
    )
}

async fn player_style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../assets/asciinema-player/asciinema-player.css"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        html::STYLE,
    )
}

/// A path of this console (`/`, `/history`, `/requests/17`): never another
/// site, never a character a browser would read differently.
fn is_local_path(path: &str) -> bool {
    // Short: it travels in the login cookie, which browsers drop past 4 KB.
    path.len() <= 256
        && path.starts_with('/')
        && !path.starts_with("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_'))
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty())
}

fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_sees_recorded_results_only_as_clear_as_they_may() {
        let set = |rules: &[&str]| Some(rules.iter().map(|r| r.to_string()).collect());
        let list = |rules: &[&str]| Some(rules.iter().map(|r| r.to_string()).collect::<Vec<_>>());
        // The recorded principal saw `card` in clear; the viewer may not.
        assert_eq!(
            withheld(set(&["card"]), list(&["card", "email"])),
            list(&["card"])
        );
        // Nothing in clear, or nothing the viewer may not see.
        assert_eq!(withheld(set(&[]), list(&["card"])), None);
        assert_eq!(withheld(set(&["card"]), list(&["email"])), None);
        assert_eq!(withheld(None, list(&[])), None);
        // A recording that does not say: anything the viewer may not see.
        assert_eq!(withheld(None, list(&["email"])), list(&["email"]));
        // A target no longer configured: whatever was in clear.
        assert_eq!(withheld(set(&["card"]), None), list(&["card"]));
        assert_eq!(withheld(set(&[]), None), None);
        assert_eq!(withheld(None, None), list(&[]));
    }

    #[test]
    fn a_login_lives_in_its_signed_cookie_and_nowhere_else() {
        let key = [7u8; 32];
        let login = PendingLogin {
            key: "k".into(),
            started: now(),
            return_to: "/requests/3".into(),
        };
        let cookie = login.cookie(&key);
        let back = PendingLogin::from_cookie(&cookie, &key).unwrap();
        assert_eq!(back.return_to, "/requests/3");
        assert_eq!(back.secrets(&key).state, login.secrets(&key).state);
        assert_ne!(login.secrets(&key).state, login.secrets(&key).nonce);
        // Another gateway's key, any change, an old or a foreign return path.
        assert!(PendingLogin::from_cookie(&cookie, &[8u8; 32]).is_none());
        let mut tampered = cookie.clone();
        tampered.replace_range(0..1, "x");
        assert!(PendingLogin::from_cookie(&tampered, &key).is_none());
        for login in [
            PendingLogin {
                started: now() - LOGIN_TTL.as_secs(),
                ..login
            },
            PendingLogin {
                key: "k".into(),
                started: now(),
                return_to: "//evil.example".into(),
            },
        ] {
            assert!(PendingLogin::from_cookie(&login.cookie(&key), &key).is_none());
        }
        assert!(PendingLogin::from_cookie("a.b.c", &key).is_none());
    }

    #[test]
    fn one_person_crowds_out_only_their_own_sessions() {
        let session = |subject: &str| ConsoleSession {
            principal: Principal {
                id: subject.into(),
                subject: subject.into(),
                email: None,
                groups: Vec::new(),
                issuer: "i".into(),
                expires_at: now() + 3600,
            },
            csrf: String::new(),
            expires_at: now() + 3600,
            created: Instant::now(),
        };
        let mut sessions = HashMap::new();
        assert!(admit(&mut sessions, "dana".into(), session("dana")));
        for n in 0..100 {
            assert!(admit(&mut sessions, format!("m{n}"), session("mallory")));
        }
        assert_eq!(sessions.len(), 1 + MAX_SESSIONS_PER_PERSON);
        assert!(sessions.contains_key("dana") && sessions.contains_key("m99"));
        assert!(!sessions.contains_key("m0"));
    }

    #[test]
    fn only_local_paths_are_returned_to() {
        assert!(is_local_path("/requests/17"));
        assert!(!is_local_path(&format!("/{}", "a".repeat(300))));
        assert!(is_local_path("/"));
        for bad in [
            "//evil.example",
            "/\t/evil.example",
            "/\\evil",
            "https://x",
            "/a\nb",
            "/a?b",
        ] {
            assert!(!is_local_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("_session=x; portcullis_console_x=y; portcullis_console=abc"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), None);
    }
}
