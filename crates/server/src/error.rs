//! The one error shape on the wire: `{"detail": …, "code": …}` (plus `errors` for 422),
//! from one table of stable codes to HTTP statuses. Engine errors and extractor rejections
//! are converted here and nowhere else. 5xx bodies are opaque; their cause is logged once.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use agentbox_browser::LaunchError;
use agentbox_engine::error::{
    ActionError, CapacityScope, CdpError, ControlError, CreateError, DeleteError, EnvironmentError, LookupError, SaveError, SnapshotError,
};
use agentbox_store::StoreError;

/// Stable error codes. The status each maps to is fixed in [`Code::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unauthorized,
    NotFound,
    SnapshotNotFound,
    MethodNotAllowed,
    ValidationError,
    InvalidUrl,
    PayloadTooLarge,
    WebsocketRequired,
    BrowserGone,
    AlreadyPaused,
    NotPaused,
    NoTaskRunning,
    CapacityExceeded,
    ShuttingDown,
    BrowserLaunchFailed,
    NavigationFailed,
    NotImplemented,
    SnapshotDamaged,
    SnapshotTooLarge,
    SnapshotUnsupported,
    EnvironmentInUse,
    InternalError,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::SnapshotNotFound => "snapshot_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::ValidationError => "validation_error",
            Self::InvalidUrl => "invalid_url",
            Self::PayloadTooLarge => "payload_too_large",
            Self::WebsocketRequired => "websocket_required",
            Self::BrowserGone => "browser_gone",
            Self::AlreadyPaused => "already_paused",
            Self::NotPaused => "not_paused",
            Self::NoTaskRunning => "no_task_running",
            Self::CapacityExceeded => "capacity_exceeded",
            Self::ShuttingDown => "shutting_down",
            Self::BrowserLaunchFailed => "browser_launch_failed",
            Self::NavigationFailed => "navigation_failed",
            Self::NotImplemented => "not_implemented",
            Self::SnapshotDamaged => "snapshot_damaged",
            Self::SnapshotTooLarge => "snapshot_too_large",
            Self::SnapshotUnsupported => "snapshot_unsupported",
            Self::EnvironmentInUse => "environment_in_use",
            Self::InternalError => "internal_error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound | Self::SnapshotNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::ValidationError => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InvalidUrl => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge | Self::SnapshotTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::WebsocketRequired => StatusCode::UPGRADE_REQUIRED,
            Self::BrowserGone
            | Self::AlreadyPaused
            | Self::NotPaused
            | Self::NoTaskRunning
            | Self::SnapshotDamaged
            | Self::SnapshotUnsupported
            | Self::EnvironmentInUse => StatusCode::CONFLICT,
            Self::CapacityExceeded | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::BrowserLaunchFailed | Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NavigationFailed => StatusCode::BAD_GATEWAY,
            Self::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// One field-level validation problem.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Where the problem is, e.g. `["body", "agent_name"]`.
    pub loc: Vec<String>,
    pub msg: String,
}

/// The error body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// One human sentence: what was wrong and how to fix it.
    pub detail: String,
    /// Stable snake_case code.
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    detail: String,
    errors: Option<Vec<FieldError>>,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into(), errors: None, retry_after_secs: None }
    }

    /// A 422 about one field of the body (or of the query, with `loc_root` "query").
    pub fn field(loc_root: &str, field: &str, msg: impl Into<String>) -> Self {
        let msg = msg.into();
        let detail = if field.is_empty() { msg.clone() } else { format!("{field}: {msg}") };
        let loc = if field.is_empty() { vec![loc_root.to_owned()] } else { vec![loc_root.to_owned(), field.to_owned()] };
        Self { code: Code::ValidationError, detail, errors: Some(vec![FieldError { loc, msg }]), retry_after_secs: None }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(Code::NotFound, format!("{what} not found"))
    }

    /// A 500 whose cause is logged here, once, and never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(Code::InternalError, "An internal error occurred; the server log has the details.")
    }

    pub fn code(&self) -> Code {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { detail: self.detail, code: self.code.as_str(), errors: self.errors };
        let mut resp = (self.code.status(), axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == Code::Unauthorized {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal(&e)
    }
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NotFound => Self::not_found("session"),
            LookupError::Store(s) => s.into(),
        }
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::UnknownAgent { .. } => {
                let msg = e.to_string();
                let msg = msg.trim_start_matches("agent_name ").to_owned();
                Self::field("body", "agent_name", msg)
            }
            CreateError::Capacity { scope, .. } => {
                let mut err = Self::new(Code::CapacityExceeded, capitalize(&e.to_string()));
                err.retry_after_secs = Some(match scope {
                    CapacityScope::Server => 5,
                    CapacityScope::User => 10,
                });
                err
            }
            CreateError::RestoreNotFound(detail) => Self::new(Code::SnapshotNotFound, capitalize(&detail)),
            CreateError::SnapshotDamaged(detail) => {
                tracing::warn!(detail = %detail, "a snapshot was refused");
                Self::new(Code::SnapshotDamaged, capitalize(&detail))
            }
            CreateError::Restore(cause) => Self::internal(&format!("restore failed: {cause}")),
            CreateError::Launch(launch) => {
                tracing::error!(error = %launch, "browser launch failed");
                Self::new(Code::BrowserLaunchFailed, launch_detail(&launch))
            }
            CreateError::ShuttingDown => {
                let mut err = Self::new(Code::ShuttingDown, "The server is shutting down; retry against its replacement.");
                err.retry_after_secs = Some(5);
                err
            }
            CreateError::Goal(cause) => Self::internal(&cause),
            CreateError::ExternalCdp(why) => Self::field("body", "cdp_url", why),
            CreateError::Store(s) => s.into(),
        }
    }
}

/// What a client is told about a failed launch: the cause, without paths or output.
fn launch_detail(e: &LaunchError) -> String {
    let cause = match e {
        LaunchError::NotFound(_) => "Chromium was not found on the server; install it (apt-get install chromium) or set chromium_path",
        LaunchError::ProfileDir { .. } => "the browser profile directory could not be created (is the data dir writable and not full?)",
        LaunchError::Spawn { .. } => "Chromium could not be executed",
        LaunchError::Exited(_) => "Chromium exited during start-up",
        LaunchError::Timeout(_) => "Chromium did not become ready in time",
        LaunchError::Cdp(_) => "Chromium started but its DevTools endpoint failed",
    };
    format!("The browser could not be started: {cause}. The server log has the details.")
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::NotFound => Self::not_found("session"),
            ActionError::BrowserGone(reason) => Self::new(Code::BrowserGone, capitalize(&reason)),
            ActionError::Navigation { .. } => Self::new(Code::NavigationFailed, capitalize(&e.to_string())),
            ActionError::Browser(cause) => {
                tracing::error!(error = %cause, "browser command failed");
                Self::new(Code::InternalError, "The browser did not carry out the command; the server log has the details.")
            }
            ActionError::Store(s) => s.into(),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let detail = capitalize(&e.to_string());
        match e {
            ControlError::NotFound => Self::not_found("session"),
            ControlError::AlreadyPaused => Self::new(Code::AlreadyPaused, detail),
            ControlError::NotPaused => Self::new(Code::NotPaused, detail),
            ControlError::NoTaskRunning => Self::new(Code::NoTaskRunning, detail),
            ControlError::BrowserGone(_) => Self::new(Code::BrowserGone, detail),
            ControlError::Store(s) => s.into(),
        }
    }
}

impl From<CdpError> for ApiError {
    fn from(e: CdpError) -> Self {
        match e {
            CdpError::Unauthorized(why) => Self::new(Code::Unauthorized, format!("{}.", capitalize(&why))),
            CdpError::NotFound => Self::not_found("session"),
            CdpError::BrowserGone(why) => Self::new(Code::BrowserGone, capitalize(&why)),
            CdpError::Store(s) => s.into(),
        }
    }
}

impl From<DeleteError> for ApiError {
    fn from(e: DeleteError) -> Self {
        match e {
            DeleteError::Snapshot(save) => save.into(),
            DeleteError::Store(s) => s.into(),
        }
    }
}

impl From<SaveError> for ApiError {
    fn from(e: SaveError) -> Self {
        let detail = capitalize(&e.to_string());
        match e {
            SaveError::TooLarge { .. } => Self::new(Code::SnapshotTooLarge, detail),
            SaveError::Unsupported(_) => Self::new(Code::SnapshotUnsupported, detail),
            SaveError::BrowserGone(_) => Self::new(Code::BrowserGone, detail),
            SaveError::Capture(cause) | SaveError::Io(cause) => Self::internal(&format!("snapshot failed: {cause}")),
            SaveError::Store(s) => s.into(),
        }
    }
}

impl From<SnapshotError> for ApiError {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::NotFound => Self::not_found("session"),
            SnapshotError::Save(save) => save.into(),
            SnapshotError::Store(s) => s.into(),
        }
    }
}

impl From<EnvironmentError> for ApiError {
    fn from(e: EnvironmentError) -> Self {
        match e {
            EnvironmentError::NotFound => Self::not_found("environment"),
            EnvironmentError::InUse(why) => Self::new(Code::EnvironmentInUse, capitalize(&why)),
            EnvironmentError::Store(s) => s.into(),
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_the_status_the_contract_names() {
        assert_eq!(Code::Unauthorized.status(), 401);
        assert_eq!(Code::NotFound.status(), 404);
        assert_eq!(Code::ValidationError.status(), 422);
        assert_eq!(Code::InvalidUrl.status(), 400);
        assert_eq!(Code::CapacityExceeded.status(), 503);
        assert_eq!(Code::NotImplemented.status(), 501);
        assert_eq!(Code::BrowserLaunchFailed.status(), 500);
        assert_eq!(Code::AlreadyPaused.status(), 409);
        assert_eq!(Code::NoTaskRunning.status(), 409);
    }

    #[test]
    fn a_launch_failure_names_its_cause_but_no_path() {
        let d = launch_detail(&LaunchError::NotFound("/usr/lib/chromium/chromium".into()));
        assert!(d.contains("Chromium was not found"));
        assert!(!d.contains("/usr/lib"));
    }
}
