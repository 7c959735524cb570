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
