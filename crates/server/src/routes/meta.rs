//! Handlers outside a session: models, the caller, health, the OpenAPI document, fallbacks.

use std::sync::Arc;

use agentbox_engine::Engine;
use axum::Json;
use axum::extract::State;
use axum::http::{Method, Uri};
use utoipa::OpenApi;

use crate::error::{ApiError, Code, ErrorBody};
use crate::extract::{ApiQuery, AuthUser};
use crate::wire::{HealthResponse, ModelsQuery, ModelsResponse, UserResponse};

/// The configured agent names.
#[utoipa::path(get, path = "/v1/models", tag = "meta", params(ModelsQuery),
    responses((status = 200, body = ModelsResponse), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn models_list(
    State(engine): State<Arc<Engine>>,
    _user: AuthUser,
    ApiQuery(q): ApiQuery<ModelsQuery>,
) -> Json<ModelsResponse> {
    // Every agent here drives a managed browser over CDP; none is a desktop agent.
    let models = match q.filter.as_deref() {
        Some("desktop") => Vec::new(),
        _ => engine.agent_names(),
    };
    Json(ModelsResponse { models })
}

/// (ext) The caller's user id and default environment.
#[utoipa::path(get, path = "/v1/users/me", tag = "meta",
    responses((status = 200, body = UserResponse), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn users_me(AuthUser(user): AuthUser) -> Json<UserResponse> {
    Json(UserResponse {
        user_id: user.id.to_string(),
        default_environment_id: user.default_environment_id.map(|u| u.to_string()),
    })
}

/// (ext) Liveness, with live session and warm browser counts.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = HealthResponse)))]
pub async fn health_get(State(engine): State<Arc<Engine>>) -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok".to_owned(), sessions: engine.live_sessions(), warm_browsers: engine.pool().len() })
}

/// (ext) This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "the OpenAPI 3.1 document")))]
pub async fn openapi_get() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::ApiDoc::openapi())
}

pub async fn fallback(method: Method, uri: Uri) -> ApiError {
    ApiError::new(Code::NotFound, format!("No route for {method} {}; the API is described at /openapi.json.", uri.path()))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(Code::MethodNotAllowed, format!("{} does not accept {method}; see /openapi.json.", uri.path()))
}

/// HTTP requests by method, route template and status, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    counts: std::sync::Mutex<std::collections::BTreeMap<(String, String, u16), u64>>,
}

impl HttpMetrics {
    pub fn count(&self, method: &str, route: &str, status: u16) {
        *self.counts.lock().expect("metrics lock").entry((method.to_owned(), route.to_owned(), status)).or_default() += 1;
    }
}

/// (ext) Prometheus metrics: sessions by status, tasks, SSE subscribers, browsers, HTTP requests.
#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, description = "Prometheus text format 0.0.4")))]
pub async fn metrics_get(
    State(engine): State<Arc<Engine>>,
    axum::Extension(http): axum::Extension<Arc<HttpMetrics>>,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    use std::fmt::Write;
    use agentbox_engine::metrics::Metrics;
    let m = engine.metrics();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family("agentbox_sessions", "gauge", "Sessions by status (deleted ones are terminated).");
    let mut text = String::new();
    for (status, n) in engine.store().count_sessions_by_status().await? {
        let _ = writeln!(text, "agentbox_sessions{{status=\"{}\"}} {n}", status.as_str());
    }
    out.push_str(&text);
    let mut family = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    family("agentbox_live_sessions", "gauge", "Sessions with a running browser.", engine.live_sessions() as u64);
    family("agentbox_warm_browsers", "gauge", "Browsers waiting in the warm pool.", engine.pool().len() as u64);
    family("agentbox_sse_subscribers", "gauge", "Open SSE streams.", Metrics::get(&m.sse_subscribers));
    family("agentbox_parked_browsers", "gauge", "Browsers parked for memory snapshots.", engine.parked_browsers() as u64);
    family("agentbox_parked_evicted_total", "counter", "Parked browsers closed unused (evicted or expired).", Metrics::get(&m.parked_evicted));
    family("agentbox_screencast_frames_total", "counter", "Live-view frames received from Chromium.", Metrics::get(&m.screencast_frames));
    let _ = writeln!(out, "# HELP agentbox_snapshots_total Snapshots written, by how.\n# TYPE agentbox_snapshots_total counter");
    for (mode, c) in [("filesystem", &m.snapshots_filesystem), ("memory", &m.snapshots_memory), ("live", &m.snapshots_live)] {
        let _ = writeln!(out, "agentbox_snapshots_total{{mode=\"{mode}\"}} {}", Metrics::get(c));
    }
    let _ = writeln!(out, "# HELP agentbox_restores_total Sessions restored, by source; damaged archives refused.\n# TYPE agentbox_restores_total counter");
    for (from, c) in [("memory", &m.restores_memory), ("filesystem", &m.restores_filesystem), ("damaged", &m.restores_damaged)] {
        let _ = writeln!(out, "agentbox_restores_total{{from=\"{from}\"}} {}", Metrics::get(c));
    }
    let _ = writeln!(out, "# HELP agentbox_tasks_total Tasks by how they ended (started counts every task).\n# TYPE agentbox_tasks_total counter");
    for (outcome, c) in [("started", &m.tasks_started), ("finished", &m.tasks_finished), ("failed", &m.tasks_failed), ("cancelled", &m.tasks_cancelled)] {
        let _ = writeln!(out, "agentbox_tasks_total{{outcome=\"{outcome}\"}} {}", Metrics::get(c));
    }
    let _ = writeln!(out, "# HELP agentbox_webhook_deliveries_total Webhook delivery attempts by outcome.\n# TYPE agentbox_webhook_deliveries_total counter");
    for (outcome, c) in [("delivered", &m.webhooks_delivered), ("failed_attempt", &m.webhooks_failed_attempts), ("given_up", &m.webhooks_given_up), ("refused", &m.webhooks_refused)] {
        let _ = writeln!(out, "agentbox_webhook_deliveries_total{{outcome=\"{outcome}\"}} {}", Metrics::get(c));
    }
    let _ = writeln!(out, "# HELP agentbox_http_requests_total HTTP requests by method, route template and status.\n# TYPE agentbox_http_requests_total counter");
    for ((method, route, status), n) in http.counts.lock().expect("metrics lock").iter() {
        let _ = writeln!(out, "agentbox_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}");
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out))
}
