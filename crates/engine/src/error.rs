//! One error enum per engine operation. The server maps each to a status and a code in
//! one table; their messages are written for the API client.

use agentbox_browser::LaunchError;
use agentbox_store::StoreError;

pub use crate::snapshot::{RestoreError, SaveError};

/// Which limit a create ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityScope {
    Server,
    User,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("agent_name {given:?} is not configured; use one of: {}", valid.join(", "))]
    UnknownAgent { given: String, valid: Vec<String> },
    #[error("{}", match scope {
        CapacityScope::Server => format!("the server is running its maximum of {limit} sessions; delete one or retry later"),
        CapacityScope::User => format!("you have the maximum of {limit} sessions; delete one or retry later"),
    })]
    Capacity { scope: CapacityScope, limit: usize },
    #[error("{0}")]
    RestoreNotFound(String),
    /// The snapshot to restore is damaged or in a format this build cannot read.
    #[error("{0}")]
    SnapshotDamaged(String),
    /// The snapshot was sound but the browser could not be brought back from it.
    #[error("the browser could not be restored: {0}")]
    Restore(String),
    #[error("the browser could not be started: {0}")]
    Launch(#[from] LaunchError),
    /// An `external-cdp` browser that could not be reached.
    #[error("{0}")]
    ExternalCdp(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The goal could not be started (the session was closed again).
    #[error("the goal could not be started: {0}")]
    Goal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Looking up one session.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("session not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Acting on a session's browser (navigate, screenshot).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("session not found")]
    NotFound,
    #[error("{0}")]
    BrowserGone(String),
    #[error("the page could not load {url}: {reason}")]
    Navigation { url: String, reason: String },
    #[error("the browser did not carry out the command: {0}")]
    Browser(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LookupError> for ActionError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NotFound => Self::NotFound,
            LookupError::Store(s) => Self::Store(s),
        }
    }
}

/// Deleting sessions.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// The snapshot asked for could not be saved (see [`SaveError`] for whether the
    /// session is still there).
    #[error(transparent)]
    Snapshot(#[from] SaveError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Saving a snapshot of a running session (`POST …/snapshot`).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("session not found")]
    NotFound,
    #[error(transparent)]
    Save(#[from] SaveError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Deleting an environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    #[error("environment not found")]
    NotFound,
    #[error("{0}")]
    InUse(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Pause, resume and cancel.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("session not found")]
    NotFound,
    #[error("the task is already paused; resume it with POST /resume")]
    AlreadyPaused,
    #[error("the task is not paused; pause it first with POST /pause")]
    NotPaused,
    #[error("no task is running in this session; start one with POST /message")]
    NoTaskRunning,
    #[error("{0}")]
    BrowserGone(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ActionError> for ControlError {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::NotFound => Self::NotFound,
            ActionError::Store(s) => Self::Store(s),
            other => Self::BrowserGone(other.to_string()),
        }
    }
}

/// Opening a DevTools connection to a session's browser.
#[derive(Debug, thiserror::Error)]
pub enum CdpError {
    /// No valid credential: a missing, malformed, expired or foreign token, or a key that
    /// does not own the session.
    #[error("{0}")]
    Unauthorized(String),
    #[error("session not found")]
    NotFound,
    #[error("{0}")]
    BrowserGone(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
