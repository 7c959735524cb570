//! (ext) `/v1/environments…` and `POST /v1/sessions/{id}/snapshot`: saved browser states.

use std::sync::Arc;

use agentbox_engine::Engine;
use axum::Json;
use axum::extract::{Path, State};
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, AuthUser, SessionId};
use crate::wire::{DeleteResponse, EnvironmentResponse, SnapshotRequest, SnapshotResponse};

type Eng = State<Arc<Engine>>;

/// An id that cannot name an environment is simply not found.
fn environment_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found("environment"))
}

/// (ext) Save a filesystem snapshot of a running session into its environment without
/// ending it. The browser is frozen while its profile is packed, then goes on as it was.
#[utoipa::path(post, path = "/v1/sessions/{id}/snapshot", tag = "environments", params(("id" = String, Path, description = "session id")),
    request_body(content = SnapshotRequest, description = "optional"),
    responses((status = 200, body = SnapshotResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the browser is gone, or is external", body = ErrorBody),
        (status = 413, description = "the profile is over snapshot_max_mib", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_snapshot(
    State(engine): Eng,
    AuthUser(user): AuthUser,
    id: SessionId,
    ApiJson(req): ApiJson<SnapshotRequest>,
) -> Result<Json<SnapshotResponse>, ApiError> {
    let (environment_id, manifest) = engine.snapshot_session(&user, id.require()?, req.save_as_default).await?;
    Ok(Json(SnapshotResponse { success: true, environment_id: environment_id.to_string(), snapshot: manifest.into() }))
}

/// (ext) The caller's environments (a bare array, oldest first).
#[utoipa::path(get, path = "/v1/environments", tag = "environments",
    responses((status = 200, body = Vec<EnvironmentResponse>), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn environments_list(State(engine): Eng, AuthUser(user): AuthUser) -> Result<Json<Vec<EnvironmentResponse>>, ApiError> {
    Ok(Json(engine.list_environments(&user).await?.into_iter().map(Into::into).collect()))
}

/// (ext) One environment.
#[utoipa::path(get, path = "/v1/environments/{id}", tag = "environments", params(("id" = String, Path, description = "environment id")),
    responses((status = 200, body = EnvironmentResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn environments_get(State(engine): Eng, AuthUser(user): AuthUser, Path(id): Path<String>) -> Result<Json<EnvironmentResponse>, ApiError> {
    let view = engine.get_environment(&user, environment_id(&id)?).await.map_err(|e| match e {
        agentbox_engine::error::LookupError::NotFound => ApiError::not_found("environment"),
        other => other.into(),
    })?;
    Ok(Json(view.into()))
}

/// (ext) Delete an environment with its snapshot and parked browser; an unknown id answers
/// `deleted: false`. Refused (409) while a live session uses it.
#[utoipa::path(delete, path = "/v1/environments/{id}", tag = "environments", params(("id" = String, Path, description = "environment id")),
    responses((status = 200, body = DeleteResponse), (status = 401, body = ErrorBody),
        (status = 409, description = "a live session uses it", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn environments_delete(State(engine): Eng, AuthUser(user): AuthUser, Path(id): Path<String>) -> Result<Json<DeleteResponse>, ApiError> {
    let deleted = match Uuid::parse_str(&id) {
        Ok(id) => engine.delete_environment(&user, id).await?,
        Err(_) => false,
    };
    Ok(Json(DeleteResponse {
        success: true,
        deleted,
        message: if deleted { "Environment deleted successfully" } else { "Environment not found" }.to_owned(),
    }))
}
