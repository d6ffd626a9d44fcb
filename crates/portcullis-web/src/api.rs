//! `/api/v1/requests`: the reviewers' and requesters' REST API. Every call
//! carries an identity token (`Authorization: Bearer <token>`), verified
//! like a database login's.

use crate::console::State;
use crate::visible_to;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis_approval::{parse_duration, ApprovalError};
use portcullis_core::Principal;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/api/v1/requests", get(list).post(create))
        .route("/api/v1/requests/{id}", get(one))
        .route("/api/v1/requests/{id}/approve", post(approve))
        .route("/api/v1/requests/{id}/deny", post(deny))
        .route("/api/v1/requests/{id}/revoke", post(revoke))
        .route("/api/v1/ssh/certificate", post(ssh_certificate))
        .with_state(state)
        // Held statements and their bound values: never cached, never
        // sniffed into another type.
        .layer(axum::middleware::map_response(
            crate::console::security_headers,
        ))
}

/// An API error: a status and a sentence.
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> ApiError {
        let status = match &e {
            ApprovalError::NotFound(_) => StatusCode::NOT_FOUND,
            ApprovalError::Refused(_) => StatusCode::FORBIDDEN,
            ApprovalError::Store(_) | ApprovalError::Audit(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

async fn caller(state: &State, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "send an identity token: `Authorization: Bearer <token>` (`portcullis login`, or `--token`)".into(),
            )
        })?;
    state.web.verifier.verify(token).await.map_err(|e| {
        ApiError(
            StatusCode::UNAUTHORIZED,
            format!("the token was refused: {e}"),
        )
    })
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    status: Option<String>,
}

async fn list(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = caller(&state, &headers).await?;
    let requests = match query.status.as_deref() {
        None | Some("pending") => state.web.approvals.pending().await?,
        Some("decided") => state.web.approvals.history(200).await?,
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("`status={other}`: use `pending` or `decided`"),
            ))
        }
    };
    let visible: Vec<_> = requests
        .into_iter()
        .filter(|r| visible_to(r, &me))
        .collect();
    Ok(Json(json!({ "requests": visible })))
}

async fn one(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = caller(&state, &headers).await?;
    let request = state.web.approvals.get(id).await?;
    if !visible_to(&request, &me) {
        return Err(ApiError::from(ApprovalError::NotFound(id)));
    }
    Ok(Json(json!(request)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessBody {
    target: String,
    /// `2h`, `30m`, `1h30m`.
    duration: String,
    reason: String,
}

async fn create(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Json(body): Json<AccessBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let me = caller(&state, &headers).await?;
    if !state.web.targets.iter().any(|t| t == &body.target) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no target `{}`", body.target),
        ));
    }
    let seconds =
        parse_duration(&body.duration).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let request = state
        .web
        .approvals
        .request_access(&me, &body.target, seconds, body.reason)
        .await?;
    let link = state.web.approvals.link(request.id);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "request": request, "url": link })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    #[serde(default)]
    comment: String,
}

async fn approve(
    state: AxumState<Arc<State>>,
    headers: HeaderMap,
    id: Path<i64>,
    body: Json<CommentBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    review(state, headers, id, body, true).await
}

async fn deny(
    state: AxumState<Arc<State>>,
    headers: HeaderMap,
    id: Path<i64>,
    body: Json<CommentBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    review(state, headers, id, body, false).await
}

async fn review(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(body): Json<CommentBody>,
    approve: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = caller(&state, &headers).await?;
    if !visible_to(&state.web.approvals.get(id).await?, &me) {
        return Err(ApiError::from(ApprovalError::NotFound(id)));
    }
    let request = state
        .web
        .approvals
        .review(id, &me, approve, &body.comment)
        .await?;
    Ok(Json(json!(request)))
}

async fn revoke(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(body): Json<CommentBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = caller(&state, &headers).await?;
    let request = state.web.approvals.revoke(id, &me, &body.comment).await?;
    Ok(Json(json!(request)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateBody {
    /// The user's public key, one OpenSSH line.
    public_key: String,
}

/// `POST /api/v1/ssh/certificate`: a user certificate for the caller's
/// public key, signed by the gateway's SSH certificate authority, valid
/// until the token expires (at most `[ssh] certificate_max`).
async fn ssh_certificate(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Json(body): Json<CertificateBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = caller(&state, &headers).await?;
    let Some(ssh) = &state.web.ssh else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "this gateway has no SSH listener ([ssh] in its config)".into(),
        ));
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let until = me
        .expires_at
        .min(now.saturating_add(ssh.certificate_max.as_secs()));
    let certificate = ssh
        .ca
        .sign(&body.public_key, &me, until)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    tracing::info!(principal = %me.id, until, "ssh certificate issued");
    Ok(Json(
        json!({ "certificate": certificate, "valid_before": until, "principal": me.id }),
    ))
}
