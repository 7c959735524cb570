//! `GET /v1/sessions/{id}/cdp`: a WebSocket that proxies the Chrome DevTools Protocol to
//! the session's browser (its browser-level endpoint, so Playwright's `connectOverCDP` and
//! `puppeteer.connect` see its contexts and pages), and the `/json/version` discovery
//! document clients probe.
//!
//! Access is checked before the upgrade: the `cdp` token of the session's `cdp_url`, or
//! the owner's API key as a Bearer header. Each connection is one task that axum runs for
//! the upgraded socket; it pumps frames both ways and ends when either side closes or the
//! session ends (deleting a session closes its proxied connections).

use std::sync::Arc;

use agentbox_engine::{CdpAccess, Engine};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message as Upstream;
use utoipa::IntoParams;

use crate::error::{ApiError, Code, ErrorBody};
use crate::extract::{ApiQuery, SessionId, user_from_headers};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CdpQuery {
    /// The token of the session's `cdp_url` (or send `Authorization: Bearer <api key>`).
    pub token: Option<String>,
}

async fn authorize(engine: &Engine, id: SessionId, headers: &HeaderMap, q: &CdpQuery) -> Result<agentbox_engine::CdpEndpoint, ApiError> {
    let id = id.0;
    let endpoint = match (&q.token, headers.contains_key(axum::http::header::AUTHORIZATION)) {
        (Some(token), _) => {
            let id = id.ok_or_else(|| ApiError::new(Code::Unauthorized, "The token is not a cdp token of this session."))?;
            engine.cdp_endpoint(CdpAccess::Token(token), id).await
        }
        (None, true) => {
            let user = user_from_headers(headers, engine).await?;
            engine.cdp_endpoint(CdpAccess::User(&user), id.ok_or_else(|| ApiError::not_found("session"))?).await
        }
        (None, false) => {
            return Err(ApiError::new(Code::Unauthorized, "Pass the session's cdp_url token as ?token=… or send 'Authorization: Bearer <api key>'."));
        }
    };
    endpoint.map_err(ApiError::from)
}

/// (ext) DevTools WebSocket of the session's browser.
#[utoipa::path(get, path = "/v1/sessions/{id}/cdp", tag = "browser", params(("id" = String, Path, description = "session id"), CdpQuery),
    responses((status = 101, description = "WebSocket speaking the Chrome DevTools Protocol (browser-level)"),
        (status = 426, description = "not a WebSocket upgrade", body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "the session's browser is gone", body = ErrorBody)))]
pub async fn sessions_cdp(
    State(engine): State<Arc<Engine>>,
    id: SessionId,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<CdpQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let endpoint = authorize(&engine, id, &headers, &q).await?;
    let ws = ws.map_err(|_| ApiError::new(Code::WebsocketRequired, "This is a WebSocket endpoint: connect with a DevTools client (Playwright connectOverCDP, puppeteer.connect)."))?;
    let closing = engine.closing();
    Ok(ws.max_message_size(256 << 20).max_frame_size(256 << 20).on_upgrade(move |socket| proxy(socket, endpoint, closing)).into_response())
}

/// (ext) The discovery document DevTools clients read before connecting.
#[utoipa::path(get, path = "/v1/sessions/{id}/cdp/json/version", tag = "browser", params(("id" = String, Path, description = "session id"), CdpQuery),
    responses((status = 200, description = "`Browser`, `Protocol-Version` and `webSocketDebuggerUrl` (this session's cdp_url)"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn sessions_cdp_version(
    State(engine): State<Arc<Engine>>,
    id: SessionId,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<CdpQuery>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let sid = id.0;
    authorize(&engine, SessionId(sid), &headers, &q).await?;
    let sid = sid.ok_or_else(|| ApiError::not_found("session"))?;
    let mut url = engine.public_cdp_url(sid);
    if let Some(t) = &q.token {
        url = format!("{}?token={t}", url.split('?').next().unwrap_or(&url));
    }
    Ok(axum::Json(serde_json::json!({ "Browser": "agentbox/Chromium", "Protocol-Version": "1.3", "webSocketDebuggerUrl": url })))
}

/// Pumps frames between the client and Chromium until either side closes or the session ends.
async fn proxy(client: WebSocket, endpoint: agentbox_engine::CdpEndpoint, closing: tokio::sync::watch::Receiver<bool>) {
    let agentbox_engine::CdpEndpoint { devtools_url, ended } = endpoint;
    let upstream = match tokio_tungstenite::connect_async_with_config(
        devtools_url.as_str(),
        Some(tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().max_message_size(Some(256 << 20)).max_frame_size(Some(256 << 20))),
        // Small request/response frames: no Nagle delay on the hop to Chromium.
        true,
    )
    .await
    {
        Ok((s, _)) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not reach the session's DevTools endpoint");
            let mut client = client;
            let _ = client.send(Message::Close(Some(CloseFrame { code: 1011, reason: "the browser is not reachable".into() }))).await;
            return;
        }
    };
    let (mut up_tx, mut up_rx) = upstream.split();
    let (mut cl_tx, mut cl_rx) = client.split();
    let session_ended = super::until_ended(ended, closing);
    tokio::pin!(session_ended);
    let reason = loop {
        tokio::select! {
            m = cl_rx.next() => match m {
                Some(Ok(Message::Text(t))) => if up_tx.send(Upstream::text(t.as_str())).await.is_err() { break "the browser closed the connection" },
                Some(Ok(Message::Binary(b))) => if up_tx.send(Upstream::binary(b)).await.is_err() { break "the browser closed the connection" },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => break "",
            },
            m = up_rx.next() => match m {
                Some(Ok(Upstream::Text(t))) => if cl_tx.send(Message::text(t.as_str())).await.is_err() { break "" },
                Some(Ok(Upstream::Binary(b))) => if cl_tx.send(Message::binary(b)).await.is_err() { break "" },
                Some(Ok(Upstream::Ping(_) | Upstream::Pong(_) | Upstream::Frame(_))) => {}
                _ => break "the browser closed the connection",
            },
            _ = &mut session_ended => break "the session ended",
        }
    };
    let _ = up_tx.close().await;
    if !reason.is_empty() {
        let _ = cl_tx.send(Message::Close(Some(CloseFrame { code: 1001, reason: reason.into() }))).await;
    }
    let _ = cl_tx.close().await;
}
