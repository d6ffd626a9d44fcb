//! The admin listener: health, readiness, and the enforced policy version.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use portcullis_gate::Gate;
use serde_json::json;

pub fn router(gate: Gate) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status))
        .with_state(gate)
}

/// Ready when the audit log can take entries: without it nothing may run.
async fn readyz(State(gate): State<Gate>) -> impl IntoResponse {
    if gate.audit().is_running() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the audit log is not running\n",
        )
    }
}

async fn status(State(gate): State<Gate>) -> impl IntoResponse {
    Json(json!({
        "policy_version": gate.policy_version(),
        "policy_error": gate.policy_error(),
        "audit_running": gate.audit().is_running(),
    }))
}
