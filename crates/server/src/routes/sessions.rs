//! `/v1/sessions…` handlers: parse into an engine command, await the typed reply, map it.

use std::sync::Arc;

use agentbox_engine::Engine;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, AuthUser, SessionId};
use crate::wire::{
    CreateSessionRequest, DeleteQuery, DeleteResponse, MessageRequest, MessagesQuery, MessagesResponse, NavigateRequest, NavigateResponse,
    ScreenshotResponse, SessionResponse, StatusResponse, SuccessResponse, WebhookDeliveriesResponse,
};

type Eng = State<Arc<Engine>>;

/// Create a session with its own browser; returns when the browser is ready.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSessionRequest,
    responses(
        (status = 201, body = SessionResponse),
        (status = 401, body = ErrorBody), (status = 404, description = "restore source has no snapshot", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 500, description = "browser failed to start", body = ErrorBody),
        (status = 503, description = "capacity full; see Retry-After", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_create(
    State(engine): Eng,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> Result<(StatusCode, Json<SessionResponse>), ApiError> {
    let cmd = req.into_command()?;
    let view = engine.create_session(&user, cmd).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// List the caller's sessions that are not deleted (a bare array, oldest first).
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    responses((status = 200, body = Vec<SessionResponse>), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_list(State(engine): Eng, AuthUser(user): AuthUser) -> Result<Json<Vec<SessionResponse>>, ApiError> {
    Ok(Json(engine.list_sessions(&user).await?.into_iter().map(Into::into).collect()))
}

/// One session.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = SessionResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_get(State(engine): Eng, AuthUser(user): AuthUser, id: SessionId) -> Result<Json<SessionResponse>, ApiError> {
    Ok(Json(engine.get_session(&user, id.require()?).await?.into()))
}

/// Delete a session (cancelling its task); an unknown id answers `deleted: false`.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "session id"), DeleteQuery),
    responses((status = 200, body = DeleteResponse), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 409, description = "no live browser to save, or an external one; the session is kept", body = ErrorBody),
        (status = 413, description = "the profile is over snapshot_max_mib; the session is kept", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_delete(
    State(engine): Eng,
    AuthUser(user): AuthUser,
    id: SessionId,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Json<DeleteResponse>, ApiError> {
    let mode = q.snapshot_mode()?;
    let deleted = match id.0 {
        Some(id) => engine.delete_session(&user, id, mode, q.save_as_default.unwrap_or(false)).await?,
        None => false,
    };
    Ok(Json(DeleteResponse {
        success: true,
        deleted,
        message: if deleted { "Session deleted successfully" } else { "Session not found" }.to_owned(),
    }))
}

/// Delete all of the caller's sessions.
#[utoipa::path(delete, path = "/v1/sessions", tag = "sessions",
    responses((status = 200, body = DeleteResponse), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_delete_all(State(engine): Eng, AuthUser(user): AuthUser) -> Result<Json<DeleteResponse>, ApiError> {
    let deleted = engine.delete_all_sessions(&user).await?;
    Ok(Json(DeleteResponse { success: true, deleted, message: "Sessions deleted successfully".to_owned() }))
}

/// The execution status of the session's task.
#[utoipa::path(get, path = "/v1/sessions/{id}/status", tag = "sessions", params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = StatusResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_status(State(engine): Eng, AuthUser(user): AuthUser, id: SessionId) -> Result<Json<StatusResponse>, ApiError> {
    let status = engine.execution_status(&user, id.require()?).await?;
    Ok(Json(StatusResponse { status: status.as_str().to_owned() }))
}

/// Drive the browser directly to a URL; answers with the URL it ended on.
#[utoipa::path(post, path = "/v1/sessions/{id}/navigate", tag = "browser", params(("id" = String, Path, description = "session id")),
    request_body = NavigateRequest,
    responses((status = 200, body = NavigateResponse), (status = 400, description = "bad URL", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the session's browser is gone", body = ErrorBody),
        (status = 502, description = "the page could not load", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_navigate(
    State(engine): Eng,
    AuthUser(user): AuthUser,
    id: SessionId,
    ApiJson(req): ApiJson<NavigateRequest>,
) -> Result<Json<NavigateResponse>, ApiError> {
    let id = id.require()?;
    let url = req.into_url()?;
    let current_url = engine.navigate(&user, id, &url).await?;
    Ok(Json(NavigateResponse { current_url }))
}

/// A JPEG of the active tab with its URL and title.
#[utoipa::path(get, path = "/v1/sessions/{id}/screenshot", tag = "browser", params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = ScreenshotResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the session's browser is gone", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_screenshot(
    State(engine): Eng,
    AuthUser(user): AuthUser,
    id: SessionId,
) -> Result<Json<ScreenshotResponse>, ApiError> {
    let shot = engine.screenshot(&user, id.require()?).await?;
    // Chromium already sends base64: no decode and re-encode on this path.
    Ok(Json(ScreenshotResponse {
        screenshot: format!("data:image/jpeg;base64,{}", shot.jpeg_base64),
        url: shot.url,
        title: shot.title,
    }))
}

/// Send a message: starts a task, answers the agent's question, or adds context to the
/// running task. Never 409; on return `/status` already shows the new state.
#[utoipa::path(post, path = "/v1/sessions/{id}/message", tag = "tasks", params(("id" = String, Path, description = "session id")),
    request_body = MessageRequest,
    responses((status = 200, body = SuccessResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the session's browser is gone", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_message(
    State(engine): Eng,
    AuthUser(user): AuthUser,
    id: SessionId,
    ApiJson(req): ApiJson<MessageRequest>,
) -> Result<Json<SuccessResponse>, ApiError> {
    let id = id.require()?;
    let cmd = req.into_command()?;
    engine.send_message(&user, id, cmd).await?;
    Ok(Json(SuccessResponse { success: true, message: "Message sent successfully".to_owned() }))
}

/// Poll the message log: messages with `id > after_id`, oldest first, and the status.
#[utoipa::path(get, path = "/v1/sessions/{id}/messages", tag = "tasks",
    params(("id" = String, Path, description = "session id"), MessagesQuery),
    responses((status = 200, body = MessagesResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_messages(
    State(engine): Eng,
    AuthUser(user): AuthUser,
    id: SessionId,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> Result<Json<MessagesResponse>, ApiError> {
    let id = id.require()?;
    let after_id = q.after_id.unwrap_or(0);
    if after_id < 0 {
        return Err(ApiError::field("query", "after_id", format!("must be 0 or more (got {after_id})")));
    }
    let (messages, status) = engine.messages(&user, id, after_id, q.sanitize.unwrap_or(true)).await?;
    Ok(Json(MessagesResponse {
        messages: messages.into_iter().map(Into::into).collect(),
        status: status.as_str().to_owned(),
        has_agent: true,
    }))
}

/// Pause the task between actions (an action in flight finishes).
#[utoipa::path(post, path = "/v1/sessions/{id}/pause", tag = "tasks", params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = SuccessResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "already_paused or no_task_running", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_pause(State(engine): Eng, AuthUser(user): AuthUser, id: SessionId) -> Result<Json<SuccessResponse>, ApiError> {
    engine.pause(&user, id.require()?).await?;
    Ok(Json(SuccessResponse { success: true, message: "Session paused successfully".to_owned() }))
}

/// Resume a paused task with its context.
#[utoipa::path(post, path = "/v1/sessions/{id}/resume", tag = "tasks", params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = SuccessResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "not_paused", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_resume(State(engine): Eng, AuthUser(user): AuthUser, id: SessionId) -> Result<Json<SuccessResponse>, ApiError> {
    engine.resume(&user, id.require()?).await?;
    Ok(Json(SuccessResponse { success: true, message: "Session resumed successfully".to_owned() }))
}

/// Cancel the task; the session stays usable (status `finished`).
#[utoipa::path(post, path = "/v1/sessions/{id}/cancel", tag = "tasks", params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = SuccessResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "no_task_running", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_cancel(State(engine): Eng, AuthUser(user): AuthUser, id: SessionId) -> Result<Json<SuccessResponse>, ApiError> {
    engine.cancel(&user, id.require()?).await?;
    Ok(Json(SuccessResponse { success: true, message: "Session cancelled successfully".to_owned() }))
}

/// (ext) The session's webhook events and how their delivery went, oldest first.
#[utoipa::path(get, path = "/v1/sessions/{id}/webhook_deliveries", tag = "sessions", params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = WebhookDeliveriesResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_webhook_deliveries(
    State(engine): Eng,
    AuthUser(user): AuthUser,
    id: SessionId,
) -> Result<Json<WebhookDeliveriesResponse>, ApiError> {
    let list = engine.webhook_deliveries(&user, id.require()?).await?;
    Ok(Json(WebhookDeliveriesResponse { deliveries: list.into_iter().map(Into::into).collect() }))
}
