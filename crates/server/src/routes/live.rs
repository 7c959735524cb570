//! The live view: `GET /live/{id}?token=…` (the viewer page, embedded in the binary),
//! `GET /live/{id}/ws?token=…` (frames out, input in) and
//! `POST /v1/sessions/{id}/live_tokens` (mint `view` or `control` links).
//!
//! Tokens are checked before the page is served and before the upgrade (401 otherwise);
//! the request log records the route template only, so tokens never reach the logs. The
//! page builds its WebSocket URL from its own location, so it works under a path prefix.

use std::sync::Arc;
use std::time::Duration;

use agentbox_engine::Engine;
use agentbox_engine::live::{LiveInput, LiveSession};
use agentbox_engine::time::iso8601;
use agentbox_engine::tokens::TokenScope;
use axum::Json;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, Code, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, AuthUser, SessionId};

const VIEWER_HTML: &str = include_str!("live.html");

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveQuery {
    /// A `view` or `control` token of this session.
    pub token: Option<String>,
}

fn token_of(q: &LiveQuery) -> Result<&str, ApiError> {
    q.token.as_deref().ok_or_else(|| ApiError::new(Code::Unauthorized, "The live view needs its link's ?token=…."))
}

/// The viewer page.
pub async fn live_page(State(engine): State<Arc<Engine>>, id: SessionId, ApiQuery(q): ApiQuery<LiveQuery>) -> Result<Response, ApiError> {
    let id = id.0.ok_or_else(|| ApiError::new(Code::Unauthorized, "The token is not a live-view token of this session."))?;
    engine.check_live_token(token_of(&q)?, id)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // The URL carries the token: never send it on as a referrer.
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self' ws: wss:"),
        ],
        VIEWER_HTML,
    )
        .into_response())
}

/// The viewer's WebSocket.
pub async fn live_ws(
    State(engine): State<Arc<Engine>>,
    id: SessionId,
    ApiQuery(q): ApiQuery<LiveQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = id.0.ok_or_else(|| ApiError::new(Code::Unauthorized, "The token is not a live-view token of this session."))?;
    let session = engine.live_viewer(token_of(&q)?, id)?;
    let ws = ws.map_err(|_| ApiError::new(Code::WebsocketRequired, "This is the live view's WebSocket; open the live view page instead."))?;
    let closing = engine.closing();
    Ok(ws.on_upgrade(move |socket| serve_viewer(socket, session, closing)).into_response())
}

async fn status_message(s: &LiveSession) -> String {
    let st = s.status().await;
    json!({ "type": "status", "url": st.url, "status": st.status, "viewers": st.viewers, "controlling": st.controlling,
            "controlled_elsewhere": st.controlled_elsewhere, "can_control": s.viewer.can_control })
    .to_string()
}

async fn serve_viewer(socket: WebSocket, s: LiveSession, closing: tokio::sync::watch::Receiver<bool>) {
    let (mut tx, mut rx) = socket.split();
    let session_ended = super::until_ended(s.ended(), closing);
    tokio::pin!(session_ended);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut frames = s.viewer.frames.clone();
    frames.mark_changed(); // send the newest frame at once, if there is one
    loop {
        let out = tokio::select! {
            changed = frames.changed() => {
                if changed.is_err() { break }
                let frame = frames.borrow_and_update().clone();
                match frame {
                    Some(f) => json!({ "type": "frame", "seq": f.seq, "data": f.jpeg_base64, "width": f.width, "height": f.height, "at": f.at_ms }).to_string(),
                    None => continue,
                }
            }
            _ = tick.tick() => status_message(&s).await,
            m = rx.next() => match m {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(v) if v["type"] == "ping" => json!({ "type": "pong", "id": v["id"] }).to_string(),
                    Ok(v) => match parse_input(&v) {
                        Ok(input) => {
                            // Control can change with these: the status bar must say so at once.
                            let changes_control = s.viewer.can_control && !matches!(input, LiveInput::Mouse { ref kind, .. } if kind == "mouseMoved")
                                && (matches!(input, LiveInput::Take | LiveInput::HandBack) || !s.status_is_controlling());
                            match s.input(input).await {
                                Ok(()) if changes_control => status_message(&s).await,
                                Ok(()) => continue,
                                Err(e) => json!({ "type": "error", "message": e.to_string() }).to_string(),
                            }
                        }
                        Err(why) => json!({ "type": "error", "message": why }).to_string(),
                    },
                    Err(_) => json!({ "type": "error", "message": "messages are JSON objects" }).to_string(),
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
            _ = &mut session_ended => {
                let _ = tx.send(Message::Close(Some(CloseFrame { code: 1001, reason: "the session ended".into() }))).await;
                break;
            }
        };
        if tx.send(Message::text(out)).await.is_err() {
            break;
        }
    }
    drop(s);
}

/// A viewer message as input, checked field by field.
fn parse_input(v: &Value) -> Result<LiveInput, String> {
    let num = |k: &str| v[k].as_f64().filter(|n| n.is_finite() && n.abs() < 1e6).ok_or_else(|| format!("{k} must be a number"));
    let text = |k: &str| v[k].as_str().filter(|t| t.chars().count() <= 10_000).map(str::to_owned).ok_or_else(|| format!("{k} must be a string"));
    Ok(match v["type"].as_str().unwrap_or_default() {
        "mouse" => {
            let kind = text("kind")?;
            if !matches!(kind.as_str(), "mouseMoved" | "mousePressed" | "mouseReleased") {
                return Err("mouse kind must be mouseMoved, mousePressed or mouseReleased".into());
            }
            let button = v["button"].as_str().filter(|b| matches!(*b, "none" | "left" | "middle" | "right")).unwrap_or("none").to_owned();
            LiveInput::Mouse { kind, x: num("x")?, y: num("y")?, button, click_count: v["clickCount"].as_u64().unwrap_or(0).min(3) as u32 }
        }
        "wheel" => LiveInput::Wheel { x: num("x")?, y: num("y")?, dx: num("dx")?, dy: num("dy")? },
        "key" => {
            let kind = text("kind")?;
            if !matches!(kind.as_str(), "keyDown" | "keyUp") {
                return Err("key kind must be keyDown or keyUp".into());
            }
            LiveInput::Key {
                kind,
                key: text("key")?,
                code: v["code"].as_str().unwrap_or_default().to_owned(),
                key_code: v["keyCode"].as_i64().unwrap_or(0),
                text: v["text"].as_str().filter(|t| !t.is_empty() && t.chars().count() <= 4).map(str::to_owned),
                modifiers: v["modifiers"].as_i64().unwrap_or(0) & 0xf,
            }
        }
        "text" => LiveInput::Text(text("text")?),
        "take" => LiveInput::Take,
        "handback" => LiveInput::HandBack,
        other => return Err(format!("unknown message type {other:?}")),
    })
}

/// `POST /v1/sessions/{id}/live_tokens`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LiveTokenRequest {
    /// `view` (watch only) or `control` (default `view`).
    pub mode: Option<String>,
    /// Lifetime, 1 s to 30 days (default 3600).
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LiveTokenResponse {
    /// The viewer link (`…/live/{id}?token=…`).
    pub url: String,
    pub mode: String,
    pub expires_at: String,
}

/// (ext) Mint a live-view link.
#[utoipa::path(post, path = "/v1/sessions/{id}/live_tokens", tag = "browser", params(("id" = String, Path, description = "session id")),
    request_body = LiveTokenRequest,
    responses((status = 201, body = LiveTokenResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the session's browser is gone", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_live_tokens(
    State(engine): State<Arc<Engine>>,
    AuthUser(user): AuthUser,
    id: SessionId,
    ApiJson(req): ApiJson<LiveTokenRequest>,
) -> Result<(axum::http::StatusCode, Json<LiveTokenResponse>), ApiError> {
    let id = id.require()?;
    let scope = match req.mode.as_deref().unwrap_or("view") {
        "view" => TokenScope::View,
        "control" => TokenScope::Control,
        other => return Err(ApiError::field("body", "mode", format!("must be \"view\" or \"control\" (got {other:?})"))),
    };
    let ttl = req.ttl_seconds.unwrap_or(3600);
    if !(1..=30 * 24 * 3600).contains(&ttl) {
        return Err(ApiError::field("body", "ttl_seconds", format!("must be 1 to 2592000 seconds (got {ttl})")));
    }
    let (url, exp) = engine.mint_live_token(&user, id, scope, Duration::from_secs(ttl as u64)).await?;
    Ok((axum::http::StatusCode::CREATED, Json(LiveTokenResponse { url, mode: scope.as_str().to_owned(), expires_at: iso8601(exp) })))
}
