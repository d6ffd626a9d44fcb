//! The admin listener: health, readiness, and the enforced policy version
//! next to the newest version at the policy source.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use portcullis_gate::Gate;
use serde_json::json;
use std::sync::{Arc, RwLock};

/// The newest version seen at the policy source, valid or not; `None` when
/// the source could not be read. Written by the reload task, read here.
#[derive(Debug, Clone, Default)]
pub struct SourceVersion(Arc<RwLock<Option<String>>>);

impl SourceVersion {
    pub fn new(version: Option<String>) -> SourceVersion {
        SourceVersion(Arc::new(RwLock::new(version)))
    }

    pub fn set(&self, version: Option<String>) {
        match self.0.write() {
            Ok(mut guard) => *guard = version,
            Err(poisoned) => *poisoned.into_inner() = version,
        }
    }

    pub fn get(&self) -> Option<String> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[derive(Clone)]
struct AdminState {
    gate: Gate,
    source_version: SourceVersion,
    /// The configured targets' names, which the policies are held against.
    targets: Arc<[String]>,
    /// How the policies are read (source, ref, directory, engine).
    read_as: Arc<str>,
}

pub fn router(
    gate: Gate,
    source_version: SourceVersion,
    targets: Arc<[String]>,
    read_as: String,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState {
            gate,
            source_version,
            targets,
            read_as: read_as.into(),
        })
}

/// Ready when the audit log can take entries: without it nothing may run.
async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.gate.audit().is_running() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the audit log is not running\n",
        )
    }
}

/// `drift` is true when the enforced version is not the source's newest,
/// including when the source cannot be read (`source_version` is null): the
/// gateway cannot show that it enforces what the source says.
/// The process-wide Prometheus recorder. Installed once; every gateway in
/// the process (one, outside tests) renders through it.
fn prometheus() -> Option<&'static metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "portcullis_approval_latency_seconds".into(),
                    ),
                    &[
                        5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 14400.0,
                    ],
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
}

/// Installs the metrics recorder, so that counters count from start-up.
pub fn install_metrics() {
    let _ = prometheus();
}

/// Prometheus text: decisions, sessions, audit, and the policy's state
/// (version, drift, the reason a newer version is not enforced).
async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    let gate = &state.gate;
    let enforced = gate.policy_version();
    let source_version = state.source_version.get();
    let drift = source_version.as_deref() != Some(enforced.as_str());
    metrics::gauge!("portcullis_policy_drift").set(if drift { 1.0 } else { 0.0 });
    metrics::gauge!("portcullis_policy_error").set(if gate.policy_error().is_some() {
        1.0
    } else {
        0.0
    });
    {
        // One series per version would pile up: the previous one goes to 0.
        static LAST: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
        if let Ok(mut last) = LAST.lock() {
            if let Some(previous) = last.take().filter(|v| *v != enforced) {
                metrics::gauge!("portcullis_policy_info", "version" => previous).set(0.0);
            }
            *last = Some(enforced.clone());
        }
        metrics::gauge!("portcullis_policy_info", "version" => enforced).set(1.0);
    }
    let audit = gate.audit().stats();
    metrics::gauge!("portcullis_audit_entries").set(audit.entries as f64);
    metrics::gauge!("portcullis_audit_commits").set(audit.commits as f64);
    metrics::gauge!("portcullis_audit_failed_batches").set(audit.failed_batches as f64);
    match prometheus() {
        Some(handle) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            handle.render(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            "metrics unavailable: another metrics recorder is installed\n".to_string(),
        ),
    }
}

async fn status(State(state): State<AdminState>) -> impl IntoResponse {
    let gate = &state.gate;
    let enforced = gate.policy_version();
    let source_version = state.source_version.get();
    let drift = source_version.as_deref() != Some(enforced.as_str());
    Json(json!({
        "policy_version": enforced,
        // A Git version is a commit id: this says which rules of it.
        "policy_source": &*state.read_as,
        "policy_error": gate.policy_error(),
        // Rules of the enforced version for targets this gateway does not
        // have: a typo in a target's name masks or forbids nothing.
        "policy_warnings": gate.unconfigured_targets(&state.targets),
        "source_version": source_version,
        "drift": drift,
        "audit_running": gate.audit().is_running(),
    }))
}

/// Connections one client address may hold open to the admin listener, and
/// all addresses together. The listener is reachable before anyone logs
/// in: without a bound, idle connections would hold the process's file
/// descriptors, and PostgreSQL and SSH users could not connect.
const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
const MAX_CONNECTIONS: usize = 512;

/// How long a request's head may take to arrive, and how long a kept-alive
/// connection may stay idle before the next one.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long reading a request's body and answering it may take (not the
/// sending of a streamed answer, such as the console's live events).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a write may wait for a client that does not read.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `router` on the admin listener: HTTP/1, each connection counted
/// against the bounds above (one over them is closed at once) and closed
/// when a request's head or body is slow, the connection idles, or the
/// client stops reading what it asked for.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        REQUEST_TIMEOUT,
    ));
    let places = portcullis_gate::listen::Places::new(MAX_CONNECTIONS_PER_ADDRESS, MAX_CONNECTIONS);
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = portcullis_gate::listen::accept(&listener).await;
        let Some(place) = places.enter(peer.ip()) else {
            refused += 1;
            // Once, then every 1000 while it lasts.
            if refused % 1000 == 1 {
                tracing::warn!(%peer, refused, "admin listener: too many open connections; closing new ones");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(portcullis_web::Peer(peer.ip()))),
        );
        tokio::spawn(async move {
            let _place = place;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(Box::pin(stream)), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
}
