//! Persistence for agentbox behind the [`Store`] trait, and its SQLite implementation.
//!
//! All SQL lives in this crate. Records are plain data; the engine owns their meaning.
//! Timestamps are milliseconds since the Unix epoch. API keys arrive here already hashed:
//! the store never sees a key in clear.

mod migrations;
mod records;
mod sqlite;

pub use records::{
    ApiKeyRecord, EnvironmentRecord, ExecutionStatus, MessageRecord, MessageType, NewMessage, NewSession, NewWebhookEvent, SessionRecord,
    SessionStatus, SnapshotRef, Transition, UserRecord, WebhookAttempt, WebhookEventRecord, WebhookState,
};
pub use sqlite::SqliteStore;
use uuid::Uuid;

/// A storage failure. These are never the client's fault; the server answers 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database was written by a newer agentbox (schema {found}, this build knows {known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("a stored value is invalid: {0}")]
    Corrupt(String),
    #[error("database task failed: {0}")]
    Task(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Everything the engine persists. A Postgres backend can implement the same trait.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a user with one API key (given as its hash and display prefix).
    async fn create_user(&self, user: &UserRecord, key: &ApiKeyRecord) -> Result<()>;
    async fn count_users(&self) -> Result<u64>;
    async fn list_users(&self) -> Result<Vec<(UserRecord, Vec<ApiKeyRecord>)>>;
    /// The user owning an unrevoked key with this hash.
    async fn user_by_key_hash(&self, key_hash: &str) -> Result<Option<UserRecord>>;
    /// Revokes every key whose prefix starts with `prefix`; returns how many.
    async fn revoke_keys(&self, prefix: &str, now_ms: i64) -> Result<u64>;
    async fn set_webhook_secret(&self, user_id: Uuid, secret: &str) -> Result<bool>;

    /// Inserts a session and, when it is new, its environment, with its webhook events,
    /// in one transaction.
    async fn insert_session(&self, session: &NewSession, outbox: Vec<NewWebhookEvent>) -> Result<SessionRecord>;
    /// A session that is not deleted, if `user_id` owns it.
    async fn get_session(&self, user_id: Uuid, id: Uuid) -> Result<Option<SessionRecord>>;
    /// A session of this user's, deleted or not.
    async fn get_session_any(&self, user_id: Uuid, id: Uuid) -> Result<Option<SessionRecord>>;
    /// An environment of this user's.
    async fn get_environment(&self, user_id: Uuid, id: Uuid) -> Result<Option<EnvironmentRecord>>;
    /// The user's environments that are not deleted, oldest first.
    async fn list_environments(&self, user_id: Uuid) -> Result<Vec<EnvironmentRecord>>;
    /// Records a new snapshot of an environment (and, with `make_default`, makes it its
    /// owner's default) in one transaction. Returns the key of the snapshot it replaced.
    async fn save_snapshot(&self, environment_id: Uuid, snapshot: &SnapshotRef, make_default: bool) -> Result<Option<String>>;
    /// Deletes one of the user's environments (and unsets it as the default). `None` when
    /// there is no such environment; else the key of its snapshot, if it had one.
    async fn delete_environment(&self, user_id: Uuid, id: Uuid, now_ms: i64) -> Result<Option<Option<String>>>;
    /// The blob key of every snapshot still referenced, for sweeping orphans at start-up.
    async fn snapshot_keys(&self) -> Result<Vec<String>>;
    /// The user's sessions that are not deleted, oldest first.
    async fn list_sessions(&self, user_id: Uuid) -> Result<Vec<SessionRecord>>;
    /// In one transaction: moves the session to `transition` (when given; its session
    /// status follows), appends `messages` to its log and `outbox` to the webhook outbox.
    /// Returns the stored messages.
    async fn record(
        &self,
        id: Uuid,
        transition: Option<Transition>,
        messages: Vec<NewMessage>,
        outbox: Vec<NewWebhookEvent>,
        now_ms: i64,
    ) -> Result<Vec<MessageRecord>>;
    /// Leases up to `limit` due webhook events, at most one per session (the oldest
    /// pending one: per-session order), until `lease_until_ms`. Each comes with its
    /// user's signing secret.
    async fn claim_webhooks(&self, now_ms: i64, lease_until_ms: i64, limit: usize) -> Result<Vec<(WebhookEventRecord, String)>>;
    /// Records an attempt's result and releases the lease.
    async fn finish_webhook_attempt(&self, id: &str, attempt: WebhookAttempt, now_ms: i64) -> Result<()>;
    /// A session's webhook events, oldest first.
    async fn list_webhooks(&self, session_id: Uuid) -> Result<Vec<WebhookEventRecord>>;
    /// On start-up: leases held by a previous run are void.
    async fn clear_webhook_leases(&self) -> Result<()>;
    /// Up to `limit` messages of a session with `id > after_id`, oldest first.
    async fn list_messages(&self, id: Uuid, after_id: i64, limit: usize) -> Result<Vec<MessageRecord>>;
    /// The id of a session's newest message (0 when it has none).
    async fn last_message_id(&self, id: Uuid) -> Result<i64>;
    async fn set_max_steps(&self, id: Uuid, max_steps: u32, now_ms: i64) -> Result<()>;
    /// Marks a session deleted (`terminated`) and forgets its browser pid; writes its
    /// webhook events in the same transaction.
    async fn mark_session_deleted(&self, id: Uuid, now_ms: i64, outbox: Vec<NewWebhookEvent>) -> Result<()>;
    /// How many sessions are in each status (deleted ones are `terminated`).
    async fn count_sessions_by_status(&self) -> Result<Vec<(SessionStatus, u64)>>;
    /// Every browser pid recorded for a session that is not deleted.
    async fn recorded_browser_pids(&self) -> Result<Vec<u32>>;
    /// On start-up: every session that was live when the last run ended becomes `error`
    /// with `reason` (also appended as an ERROR message), and loses its pid. Returns how many.
    async fn fail_live_sessions(&self, reason: &str, now_ms: i64) -> Result<u64>;
}
