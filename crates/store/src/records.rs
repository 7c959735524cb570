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

/// A saved browser state's home; every session belongs to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRecord {
    pub id: Uuid,
    pub user_id: Uuid,
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
    fn every_status_round_trips_through_its_name() {
        use SessionStatus::*;
        for s in [Initializing, Ready, Running, Paused, Completed, Error, Terminated] {
            assert_eq!(SessionStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(SessionStatus::parse("finished"), None);
    }
}
