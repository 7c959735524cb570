//! The router: every route, its fallbacks, the body limit and the request log.

pub mod cdp;
pub mod environments;
pub mod events;
pub mod live;
pub mod meta;
pub mod sessions;

use std::sync::Arc;
use std::time::Instant;

use agentbox_engine::Engine;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

pub fn router(engine: Arc<Engine>) -> Router {
    let http = Arc::new(meta::HttpMetrics::default());
    Router::new()
        .route(
            "/v1/sessions",
            post(sessions::sessions_create).get(sessions::sessions_list).delete(sessions::sessions_delete_all),
        )
        .route("/v1/sessions/{id}", get(sessions::sessions_get).delete(sessions::sessions_delete))
        .route("/v1/sessions/{id}/status", get(sessions::sessions_status))
        .route("/v1/sessions/{id}/message", post(sessions::sessions_message))
        .route("/v1/sessions/{id}/messages", get(sessions::sessions_messages))
        .route("/v1/sessions/{id}/events", get(events::sessions_events))
        .route("/v1/sessions/{id}/cdp", get(cdp::sessions_cdp))
        .route("/v1/sessions/{id}/live_tokens", post(live::sessions_live_tokens))
        .route("/live/{id}", get(live::live_page))
        .route("/live/{id}/ws", get(live::live_ws))
        .route("/v1/sessions/{id}/cdp/json/version", get(cdp::sessions_cdp_version))
        .route("/v1/sessions/{id}/webhook_deliveries", get(sessions::sessions_webhook_deliveries))
        .route("/v1/sessions/{id}/pause", post(sessions::sessions_pause))
        .route("/v1/sessions/{id}/resume", post(sessions::sessions_resume))
        .route("/v1/sessions/{id}/cancel", post(sessions::sessions_cancel))
        .route("/v1/sessions/{id}/navigate", post(sessions::sessions_navigate))
        .route("/v1/sessions/{id}/screenshot", get(sessions::sessions_screenshot))
        .route("/v1/sessions/{id}/snapshot", post(environments::sessions_snapshot))
        .route("/v1/environments", get(environments::environments_list))
        .route("/v1/environments/{id}", get(environments::environments_get).delete(environments::environments_delete))
        .route("/v1/models", get(meta::models_list))
        .route("/v1/users/me", get(meta::users_me))
        .route("/healthz", get(meta::health_get))
        .route("/openapi.json", get(meta::openapi_get))
        .route("/metrics", get(meta::metrics_get))
        .fallback(meta::fallback)
        .method_not_allowed_fallback(meta::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(http.clone(), log_request))
        .layer(axum::Extension(http))
        .with_state(engine)
}

/// Resolves when a session ends or the server begins to stop: long-lived sockets (CDP
/// proxy, live view) close then, since graceful shutdown waits for open connections.
pub(crate) async fn until_ended(mut ended: tokio::sync::watch::Receiver<bool>, mut closing: tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        _ = ended.wait_for(|e| *e) => {}
        _ = closing.wait_for(|c| *c) => {}
    }
}

/// Counts and logs method, route template (never the raw path or query: they may carry tokens),
/// status and latency.
async fn log_request(State(http): State<Arc<meta::HttpMetrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "<unmatched>".into());
    let resp = next.run(req).await;
    http.count(method.as_str(), &route, resp.status().as_u16());
    tracing::info!(%method, route, status = resp.status().as_u16(), ms = start.elapsed().as_secs_f64() * 1e3, "request");
    resp
}
