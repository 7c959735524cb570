//! Wire types: the JSON the API reads and writes, apart from the engine's types. Request
//! structs turn into engine commands through `into_command`, which is where field-level
//! validation errors come from.

use agentbox_engine::validate::{HttpUrl, MaxSteps};
use agentbox_engine::{CreateSession, MessageRecord, RestoreSource, SendMessage, SessionView, time::iso8601};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, Code};

/// Longest `message` / `goal`, in characters.
pub const MAX_MESSAGE_CHARS: usize = 10_000;

/// `POST /v1/sessions`. Every field is optional; unknown fields are ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateSessionRequest {
    /// A configured agent name (see `/v1/models`); default `agi-0`.
    pub agent_name: Option<String>,
    /// Where to POST this session's events (absolute http(s) URL, ≤ 2,000 characters).
    pub webhook_url: Option<String>,
    pub restore_from_session_id: Option<String>,
    pub restore_from_environment_id: Option<String>,
    pub restore_default_environment_from_user_id: Option<String>,
    /// Restore from a parked live browser when one exists (default true).
    pub enable_memory_snapshot: Option<bool>,
    /// A task to start at once (1–10,000 characters).
    pub goal: Option<String>,
    /// Most actions per task, 1–1,000 (default 100).
    pub max_steps: Option<i64>,
    /// `managed-cdp` (default: agentbox starts a browser) or `external-cdp` (attach to `cdp_url`).
    pub agent_session_type: Option<String>,
    /// For `external-cdp`: the browser's DevTools URL, `ws(s)://…/devtools/browser/…` or `http(s)://host:port`.
    pub cdp_url: Option<String>,
}

fn parse_uuid(field: &str, s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| ApiError::field("body", field, format!("must be a UUID (got {s:?})")))
}

impl CreateSessionRequest {
    pub fn into_command(self) -> Result<CreateSession, ApiError> {
        let webhook_url = self
            .webhook_url
            .as_deref()
            .map(|u| HttpUrl::parse(u).map_err(|e| ApiError::field("body", "webhook_url", e.to_string())))
            .transpose()?;
        let max_steps = match self.max_steps {
            Some(n) => MaxSteps::new(n).map_err(|m| ApiError::field("body", "max_steps", m))?,
            None => MaxSteps::default(),
        };
        if let Some(goal) = &self.goal {
            check_text("goal", goal)?;
        }
        let external_cdp = match self.agent_session_type.as_deref() {
            None | Some("managed-cdp") => None,
            Some("external-cdp") => {
                let url = self.cdp_url.as_deref().filter(|u| !u.trim().is_empty()).ok_or_else(|| {
                    ApiError::field("body", "cdp_url", "is required with agent_session_type \"external-cdp\": the browser's DevTools URL")
                })?;
                match url::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "ws" | "wss" | "http" | "https") && u.host_str().is_some() && url.len() <= 2000 => {}
                    _ => {
                        return Err(ApiError::field("body", "cdp_url", format!("must be a ws://, wss://, http:// or https:// URL of at most 2,000 characters (got {url:?})")));
                    }
                }
                Some(url.to_owned())
            }
            Some(other) => {
                return Err(ApiError::field(
                    "body",
                    "agent_session_type",
                    format!("must be \"managed-cdp\" or \"external-cdp\" (got {other:?})"),
                ));
            }
        };
        // Precedence: session > environment > user default.
        let restore = if let Some(s) = &self.restore_from_session_id {
            Some(RestoreSource::Session(parse_uuid("restore_from_session_id", s)?))
        } else if let Some(s) = &self.restore_from_environment_id {
            Some(RestoreSource::Environment(parse_uuid("restore_from_environment_id", s)?))
        } else if let Some(s) = &self.restore_default_environment_from_user_id {
            Some(RestoreSource::UserDefault(parse_uuid("restore_default_environment_from_user_id", s)?))
        } else {
            None
        };
        Ok(CreateSession {
            agent_name: self.agent_name,
            webhook_url,
            goal: self.goal,
            max_steps,
            restore,
            enable_memory_snapshot: self.enable_memory_snapshot.unwrap_or(true),
            external_cdp,
        })
    }
}

/// Checks a free-text field against the 1–10,000 character limit.
pub fn check_text(field: &str, text: &str) -> Result<(), ApiError> {
    let n = text.chars().count();
    if n == 0 || n > MAX_MESSAGE_CHARS {
        return Err(ApiError::field("body", field, format!("must be 1 to {MAX_MESSAGE_CHARS} characters long (got {n})")));
    }
    Ok(())
}

/// The session object.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    pub session_id: String,
    /// Live view of the browser; carries a `control` token valid for the session's life.
    pub vnc_url: String,
    pub agent_name: String,
    /// `initializing`, `ready`, `running`, `paused`, `completed`, `error` or `terminated`.
    pub status: String,
    pub created_at: String,
    pub environment_id: String,
    pub goal: Option<String>,
    pub agent_session_type: String,
    /// (ext) DevTools WebSocket of the session's browser, with a token.
    pub cdp_url: String,
    /// (ext) `null`, `"memory"` or `"filesystem"`.
    pub restored_from: Option<String>,
    pub max_steps: u32,
    /// (ext) Why the session is in `error`, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
}

impl From<SessionView> for SessionResponse {
    fn from(v: SessionView) -> Self {
        let r = v.record;
        Self {
            session_id: r.id.to_string(),
            vnc_url: v.vnc_url,
            agent_name: r.agent_name,
            status: r.status.as_str().to_owned(),
            created_at: iso8601(r.created_at_ms),
            environment_id: r.environment_id.to_string(),
            goal: r.goal,
            agent_session_type: r.agent_session_type,
            cdp_url: v.cdp_url,
            restored_from: r.restored_from,
            max_steps: r.max_steps,
            status_reason: r.status_reason,
        }
    }
}

/// Query of `DELETE /v1/sessions/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// `none` (default), `memory` or `filesystem`.
    pub save_snapshot_mode: Option<String>,
    /// Make the saved environment the caller's default (needs a snapshot mode).
    pub save_as_default: Option<bool>,
}

impl DeleteQuery {
    pub fn snapshot_mode(&self) -> Result<agentbox_engine::validate::SnapshotMode, ApiError> {
        let mode = match self.save_snapshot_mode.as_deref() {
            None => agentbox_engine::validate::SnapshotMode::None,
            Some(s) => agentbox_engine::validate::SnapshotMode::parse(s)
                .map_err(|m| ApiError::field("query", "save_snapshot_mode", m))?,
        };
        if self.save_as_default == Some(true) && mode == agentbox_engine::validate::SnapshotMode::None {
            return Err(ApiError::field(
                "query",
                "save_as_default",
                "needs a snapshot to save: pass save_snapshot_mode=filesystem or memory with save_as_default=true",
            ));
        }
        Ok(mode)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteResponse {
    pub success: bool,
    pub deleted: bool,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessResponse {
    pub success: bool,
    pub message: String,
}

/// `POST /v1/sessions/{id}/navigate`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NavigateRequest {
    /// Absolute http(s) URL, ≤ 2,000 characters.
    pub url: String,
}

impl NavigateRequest {
    pub fn into_url(self) -> Result<HttpUrl, ApiError> {
        HttpUrl::parse(&self.url).map_err(|e| ApiError::new(Code::InvalidUrl, format!("url {e}.")))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NavigateResponse {
    pub current_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScreenshotResponse {
    /// `data:image/jpeg;base64,…`
    pub screenshot: String,
    pub url: String,
    /// `""` for an untitled page, never null.
    pub title: String,
}

/// `POST /v1/sessions/{id}/message`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MessageRequest {
    /// 1–10,000 characters: a task, an answer, or context for the running task.
    pub message: String,
    /// Opened before the first step when the message starts a task.
    pub start_url: Option<String>,
    /// Settings for this session from now on; `max_steps` (1–1,000) is the one read.
    #[schema(value_type = Option<Object>)]
    pub config_updates: Option<serde_json::Value>,
}

impl MessageRequest {
    pub fn into_command(self) -> Result<SendMessage, ApiError> {
        check_text("message", &self.message)?;
        let start_url = self
            .start_url
            .as_deref()
            .map(|u| HttpUrl::parse(u).map_err(|e| ApiError::field("body", "start_url", e.to_string())))
            .transpose()?;
        let max_steps = match &self.config_updates {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Object(o)) => match o.get("max_steps") {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => {
                    let n = v.as_i64().ok_or_else(|| ApiError::field("body", "config_updates.max_steps", "expected an integer"))?;
                    Some(MaxSteps::new(n).map_err(|m| ApiError::field("body", "config_updates.max_steps", m))?)
                }
            },
            Some(_) => return Err(ApiError::field("body", "config_updates", "must be a JSON object, e.g. {\"max_steps\": 50}")),
        };
        Ok(SendMessage { text: self.message, start_url, max_steps })
    }
}

/// Query of `GET /v1/sessions/{id}/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Only messages with a greater id (default 0: all).
    pub after_id: Option<i64>,
    /// Hide LOG messages and internal metadata (default true).
    pub sanitize: Option<bool>,
}

/// One message of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    pub id: i64,
    /// `THOUGHT`, `QUESTION`, `USER`, `DONE`, `ERROR` or `LOG`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A string, or a JSON object (structured results).
    #[schema(value_type = Object)]
    pub content: serde_json::Value,
    pub timestamp: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

impl From<MessageRecord> for MessageResponse {
    fn from(m: MessageRecord) -> Self {
        Self { id: m.id, kind: m.kind.as_str(), content: m.content, timestamp: iso8601(m.created_at_ms), metadata: m.metadata }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessagesResponse {
    pub messages: Vec<MessageResponse>,
    /// The execution status, as `/status` reports it.
    pub status: String,
    pub has_agent: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    /// `ready`, `running`, `waiting_for_input`, `paused`, `finished` or `error`.
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelsResponse {
    pub models: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ModelsQuery {
    /// `cdp` (browser agents: all of ours) or `desktop` (none).
    pub filter: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub user_id: String,
    pub default_environment_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    pub status: String,
    pub sessions: usize,
    pub warm_browsers: usize,
}

/// (ext) One webhook event and its delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDelivery {
    /// `evt_…`, also the `webhook-id` header.
    pub id: String,
    pub event: String,
    /// `pending`, `delivered`, `failed` (every attempt failed) or `refused` (target not allowed).
    pub state: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// When the next attempt is due (pending events only).
    pub next_retry_at: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

impl From<agentbox_store::WebhookEventRecord> for WebhookDelivery {
    fn from(e: agentbox_store::WebhookEventRecord) -> Self {
        Self {
            next_retry_at: (e.state == agentbox_store::WebhookState::Pending).then(|| iso8601(e.next_attempt_at_ms)),
            id: e.id,
            event: e.event,
            state: e.state.as_str().to_owned(),
            attempts: e.attempts,
            last_status: e.last_status,
            last_error: e.last_error,
            created_at: iso8601(e.created_at_ms),
            delivered_at: e.delivered_at_ms.map(iso8601),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveriesResponse {
    pub deliveries: Vec<WebhookDelivery>,
}

/// (ext) A saved snapshot's manifest: what it holds, never its secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotInfo {
    pub created_at: String,
    /// The session it was saved from.
    pub session_id: String,
    pub format: String,
    pub format_version: u32,
    /// SHA-256 of the archive, checked on every restore.
    pub sha256: String,
    /// Size of the compressed archive.
    pub size_bytes: u64,
    /// Bytes of profile it holds before compression.
    pub unpacked_bytes: u64,
    pub files: u64,
    pub chromium_version: String,
    /// `closed` (Chromium quit cleanly first) or `frozen` (copied while stopped).
    pub captured: String,
    /// The URLs of the saved tabs, and which one was active.
    pub tabs: Vec<String>,
    pub active_tab: usize,
    pub cookies: usize,
}

impl From<agentbox_engine::snapshot::Manifest> for SnapshotInfo {
    fn from(m: agentbox_engine::snapshot::Manifest) -> Self {
        Self {
            created_at: iso8601(m.created_at_ms),
            session_id: m.session_id.to_string(),
            format: m.format,
            format_version: m.format_version,
            sha256: m.sha256,
            size_bytes: m.archive_bytes,
            unpacked_bytes: m.unpacked_bytes,
            files: m.files,
            chromium_version: m.chromium_version,
            captured: m.captured,
            tabs: m.tabs,
            active_tab: m.active_tab,
            cookies: m.cookies,
        }
    }
}

/// (ext) A parked browser (memory snapshot).
#[derive(Debug, Serialize, ToSchema)]
pub struct MemorySnapshotInfo {
    pub session_id: String,
    pub parked_at: String,
    /// When it is closed if no restore uses it first.
    pub expires_at: String,
    pub memory_bytes: u64,
}

/// (ext) An environment: where a session's saved browser state lives.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnvironmentResponse {
    pub environment_id: String,
    pub created_at: String,
    /// True when it is the caller's default (`restore_default_environment_from_user_id`).
    pub is_default: bool,
    /// The latest filesystem snapshot, if any.
    pub snapshot: Option<SnapshotInfo>,
    /// The parked browser, if any.
    pub memory_snapshot: Option<MemorySnapshotInfo>,
}

impl From<agentbox_engine::EnvironmentView> for EnvironmentResponse {
    fn from(v: agentbox_engine::EnvironmentView) -> Self {
        Self {
            environment_id: v.record.id.to_string(),
            created_at: iso8601(v.record.created_at_ms),
            is_default: v.is_default,
            snapshot: v.manifest.map(Into::into),
            memory_snapshot: v.parked.map(|p| MemorySnapshotInfo {
                session_id: p.session_id.to_string(),
                parked_at: iso8601(p.parked_at_ms),
                expires_at: iso8601(p.expires_at_ms),
                memory_bytes: p.memory_kib * 1024,
            }),
        }
    }
}

/// Body of `POST /v1/sessions/{id}/snapshot` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SnapshotRequest {
    /// Also make the session's environment the caller's default.
    #[serde(default)]
    pub save_as_default: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotResponse {
    pub success: bool,
    pub environment_id: String,
    pub snapshot: SnapshotInfo,
}
