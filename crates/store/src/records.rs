//! Plain records as stored.

use uuid::Uuid;

/// A user: owner of keys, sessions and environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: Uuid,
    pub name: String,
    /// The Standard Webhooks signing secret (`whsec_…`). Kept in clear: it signs, so it
    /// must be readable; it grants no API access.
    pub webhook_secret: String,
    pub default_environment_id: Option<Uuid>,
    pub created_at_ms: i64,
}

/// An API key, by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The first characters of the key, shown in listings and used to revoke it.
    pub prefix: String,
    /// SHA-256 of the whole key, hex.
    pub hash: String,
    pub user_id: Uuid,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// Session status as stored (the API's session status vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Initializing,
    Ready,
    Running,
    Paused,
    Completed,
    Error,
    Terminated,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initializing => "initializing",
            Self::Ready => "ready",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Error => "error",
            Self::Terminated => "terminated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "initializing" => Self::Initializing,
            "ready" => Self::Ready,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "completed" => Self::Completed,
            "error" => Self::Error,
            "terminated" => Self::Terminated,
            _ => return None,
        })
    }
}

/// The execution status of a session's task (the API's `/status` vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionStatus {
    Ready,
    Running,
    WaitingForInput,
    Paused,
    Finished,
    Error,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Running => "running",
            Self::WaitingForInput => "waiting_for_input",
            Self::Paused => "paused",
            Self::Finished => "finished",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ready" => Self::Ready,
            "running" => Self::Running,
            "waiting_for_input" => Self::WaitingForInput,
            "paused" => Self::Paused,
            "finished" => Self::Finished,
            "error" => Self::Error,
            _ => return None,
        })
    }

    /// The session status this execution status shows as (API.md §3).
    pub fn session_status(self) -> SessionStatus {
        match self {
            Self::Ready => SessionStatus::Ready,
            Self::Running | Self::WaitingForInput => SessionStatus::Running,
            Self::Paused => SessionStatus::Paused,
            Self::Finished => SessionStatus::Completed,
            Self::Error => SessionStatus::Error,
        }
    }

    /// True while a task exists and has not ended.
    pub fn task_active(self) -> bool {
        matches!(self, Self::Running | Self::WaitingForInput | Self::Paused)
    }
}

/// The type of a message in a session's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Thought,
    Question,
    User,
    Done,
    Error,
    Log,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Thought => "THOUGHT",
            Self::Question => "QUESTION",
            Self::User => "USER",
            Self::Done => "DONE",
            Self::Error => "ERROR",
            Self::Log => "LOG",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "THOUGHT" => Self::Thought,
            "QUESTION" => Self::Question,
            "USER" => Self::User,
            "DONE" => Self::Done,
            "ERROR" => Self::Error,
            "LOG" => Self::Log,
            _ => return None,
        })
    }
}

/// A message to append to a session's log; the store gives it its id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub kind: MessageType,
    /// A JSON string or object.
    pub content: serde_json::Value,
    /// A JSON object.
    pub metadata: serde_json::Value,
}

impl NewMessage {
    pub fn text(kind: MessageType, content: impl Into<String>) -> Self {
        Self { kind, content: serde_json::Value::String(content.into()), metadata: serde_json::json!({}) }
    }

    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// A stored message. `id` grows from 1 per session and never repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    pub session_id: Uuid,
    pub id: i64,
    pub kind: MessageType,
    pub content: serde_json::Value,
    pub metadata: serde_json::Value,
    pub created_at_ms: i64,
}

/// A change of a session's execution status, written with the messages that report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub status: ExecutionStatus,
    /// Why the session is in error (kept on the session record).
    pub reason: Option<String>,
}

/// A webhook event to write to the outbox with the change it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhookEvent {
    /// `evt_…`; also the `webhook-id` header, stable across retries.
    pub id: String,
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub url: String,
    pub event: String,
    /// The JSON body, rendered when the event happened.
    pub body: String,
}

/// Where a webhook event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookState {
    Pending,
    Delivered,
    /// Every attempt failed.
    Failed,
    /// The target is not allowed (a private address); never sent.
    Refused,
}

impl WebhookState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            "refused" => Self::Refused,
            _ => return None,
        })
    }
}

/// A webhook event in the outbox, with its delivery record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEventRecord {
    pub id: String,
    /// Global write order; per session, events are delivered in this order.
    pub seq: i64,
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub url: String,
    pub event: String,
    pub body: String,
    pub state: WebhookState,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    /// `Pending` means: retry at `next_attempt_at_ms`.
    pub state: WebhookState,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub next_attempt_at_ms: i64,
    /// Whether a request was made (a refused target makes none).
    pub counted: bool,
}

/// A saved browser state's home; every session belongs to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at_ms: i64,
    /// Its latest filesystem snapshot, if one was saved.
    pub snapshot: Option<SnapshotRef>,
}

/// Where an environment's snapshot lives and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    /// The blob's key in the engine's blob store.
    pub key: String,
    /// The manifest (format version, checksum, sizes, …) as JSON text; the engine owns its shape.
    pub manifest: String,
    /// The session it was saved from.
    pub session_id: Uuid,
    pub created_at_ms: i64,
}

/// What creating a session writes.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub user_id: Uuid,
    pub agent_name: String,
    pub status: SessionStatus,
    pub environment_id: Uuid,
    /// True when the environment is new and must be inserted with the session.
    pub new_environment: bool,
    pub browser_pid: Option<u32>,
    pub profile_dir: Option<String>,
    pub webhook_url: Option<String>,
    pub goal: Option<String>,
    pub max_steps: u32,
    pub agent_session_type: String,
    pub restored_from: Option<String>,
    pub created_at_ms: i64,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub agent_name: String,
    pub status: SessionStatus,
    pub execution_status: ExecutionStatus,
    /// Why the session is in `error`, when it is.
    pub status_reason: Option<String>,
    pub environment_id: Uuid,
    pub browser_pid: Option<u32>,
    pub profile_dir: Option<String>,
    pub webhook_url: Option<String>,
    pub goal: Option<String>,
    pub max_steps: u32,
    pub agent_session_type: String,
    pub restored_from: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub deleted_at_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::SessionStatus;

    #[test]
    fn every_execution_status_and_message_type_round_trips_through_its_name() {
        use super::{ExecutionStatus as E, MessageType as M};
        for s in [E::Ready, E::Running, E::WaitingForInput, E::Paused, E::Finished, E::Error] {
            assert_eq!(E::parse(s.as_str()), Some(s));
        }
        for m in [M::Thought, M::Question, M::User, M::Done, M::Error, M::Log] {
            assert_eq!(M::parse(m.as_str()), Some(m));
        }
        assert_eq!(E::WaitingForInput.session_status(), SessionStatus::Running);
        assert_eq!(E::Finished.session_status(), SessionStatus::Completed);
    }

    #[test]
    fn every_status_round_trips_through_its_name() {
        use SessionStatus::*;
        for s in [Initializing, Ready, Running, Paused, Completed, Error, Terminated] {
            assert_eq!(SessionStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(SessionStatus::parse("finished"), None);
    }
}
