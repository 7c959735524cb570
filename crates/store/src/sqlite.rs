//! The SQLite [`Store`]: one connection in WAL mode behind a mutex, used from tokio's
//! blocking pool so that no query runs on an async worker thread.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use crate::records::{
    ApiKeyRecord, EnvironmentRecord, ExecutionStatus, MessageRecord, MessageType, NewMessage, NewSession, NewWebhookEvent, SessionRecord,
    SessionStatus, SnapshotRef, Transition, UserRecord, WebhookAttempt, WebhookEventRecord, WebhookState,
};
use crate::{Result, Store, StoreError, migrations};

/// A [`Store`] in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::migrate(&mut conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Task("database lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn uuid_col(row: &Row<'_>, idx: &str) -> rusqlite::Result<Uuid> {
    let s: String = row.get(idx)?;
    Uuid::parse_str(&s).map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn opt_uuid_col(row: &Row<'_>, idx: &str) -> rusqlite::Result<Option<Uuid>> {
    let s: Option<String> = row.get(idx)?;
    s.map(|s| Uuid::parse_str(&s))
        .transpose()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: uuid_col(row, "id")?,
        name: row.get("name")?,
        webhook_secret: row.get("webhook_secret")?,
        default_environment_id: opt_uuid_col(row, "default_environment_id")?,
        created_at_ms: row.get("created_at")?,
    })
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        prefix: row.get("prefix")?,
        hash: row.get("hash")?,
        user_id: uuid_col(row, "user_id")?,
        created_at_ms: row.get("created_at")?,
        revoked_at_ms: row.get("revoked_at")?,
    })
}

/// A text column holding one of an enum's names.
fn enum_col<T>(row: &Row<'_>, col: &str, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(col)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("unknown {col} {text:?}").into())
    })
}

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: uuid_col(row, "id")?,
        user_id: uuid_col(row, "user_id")?,
        agent_name: row.get("agent_name")?,
        status: enum_col(row, "status", SessionStatus::parse)?,
        execution_status: enum_col(row, "execution_status", ExecutionStatus::parse)?,
        status_reason: row.get("status_reason")?,
        environment_id: uuid_col(row, "environment_id")?,
        browser_pid: row.get("browser_pid")?,
        profile_dir: row.get("profile_dir")?,
        webhook_url: row.get("webhook_url")?,
        goal: row.get("goal")?,
        max_steps: row.get("max_steps")?,
        agent_session_type: row.get("agent_session_type")?,
        restored_from: row.get("restored_from")?,
        created_at_ms: row.get("created_at")?,
        updated_at_ms: row.get("updated_at")?,
        deleted_at_ms: row.get("deleted_at")?,
    })
}

/// One session owned by `user_id`; deleted ones only when `include_deleted`.
fn one_session(c: &Connection, user_id: Uuid, id: Uuid, include_deleted: bool) -> Result<Option<SessionRecord>> {
    let filter = if include_deleted { "" } else { " AND deleted_at IS NULL" };
    Ok(c.query_row(
        &format!("SELECT {SESSION_COLS} FROM sessions WHERE id = ?1 AND user_id = ?2{filter}"),
        [id.to_string(), user_id.to_string()],
        session_from_row,
    )
    .optional()?)
}

const ENV_COLS: &str = "id, user_id, created_at, snapshot_key, snapshot_manifest, snapshot_session_id, snapshot_at";

fn environment_from_row(row: &Row<'_>) -> rusqlite::Result<EnvironmentRecord> {
    let key: Option<String> = row.get("snapshot_key")?;
    let snapshot = match key {
        Some(key) => Some(SnapshotRef {
            key,
            manifest: row.get("snapshot_manifest")?,
            session_id: uuid_col(row, "snapshot_session_id")?,
            created_at_ms: row.get("snapshot_at")?,
        }),
        None => None,
    };
    Ok(EnvironmentRecord { id: uuid_col(row, "id")?, user_id: uuid_col(row, "user_id")?, created_at_ms: row.get("created_at")?, snapshot })
}

const SESSION_COLS: &str = "id, user_id, agent_name, status, status_reason, environment_id, browser_pid, profile_dir, \
     webhook_url, goal, max_steps, agent_session_type, restored_from, created_at, updated_at, deleted_at, execution_status";

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    let json = |col: &str| -> rusqlite::Result<serde_json::Value> {
        let text: String = row.get(col)?;
        serde_json::from_str(&text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
    };
    Ok(MessageRecord {
        session_id: uuid_col(row, "session_id")?,
        id: row.get("id")?,
        kind: enum_col(row, "type", MessageType::parse)?,
        content: json("content")?,
        metadata: json("metadata")?,
        created_at_ms: row.get("created_at")?,
    })
}

/// Writes webhook events to the outbox inside the caller's transaction, due at once.
fn enqueue(tx: &rusqlite::Transaction<'_>, outbox: Vec<NewWebhookEvent>, now_ms: i64) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO webhook_events (id, session_id, user_id, url, event, body, state, next_attempt_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7)",
    )?;
    for e in outbox {
        stmt.execute(params![e.id, e.session_id.to_string(), e.user_id.to_string(), e.url, e.event, e.body, now_ms])?;
    }
    Ok(())
}

fn webhook_from_row(row: &Row<'_>) -> rusqlite::Result<WebhookEventRecord> {
    Ok(WebhookEventRecord {
        id: row.get("id")?,
        seq: row.get("seq")?,
        session_id: uuid_col(row, "session_id")?,
        user_id: uuid_col(row, "user_id")?,
        url: row.get("url")?,
        event: row.get("event")?,
        body: row.get("body")?,
        state: enum_col(row, "state", WebhookState::parse)?,
        attempts: row.get("attempts")?,
        next_attempt_at_ms: row.get("next_attempt_at")?,
        last_status: row.get("last_status")?,
        last_error: row.get("last_error")?,
        created_at_ms: row.get("created_at")?,
        delivered_at_ms: row.get("delivered_at")?,
    })
}

/// Appends messages to a session's log inside the caller's transaction; ids continue
/// from the session's highest.
fn append_messages(tx: &rusqlite::Transaction<'_>, id: Uuid, messages: Vec<NewMessage>, now_ms: i64) -> Result<Vec<MessageRecord>> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let sid = id.to_string();
    let last: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM messages WHERE session_id = ?1", [&sid], |r| r.get(0))?;
    let mut stmt =
        tx.prepare_cached("INSERT INTO messages (session_id, id, type, content, metadata, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    let mut out = Vec::with_capacity(messages.len());
    for (n, m) in messages.into_iter().enumerate() {
        let mid = last + 1 + n as i64;
        stmt.execute(params![sid, mid, m.kind.as_str(), m.content.to_string(), m.metadata.to_string(), now_ms])?;
        out.push(MessageRecord { session_id: id, id: mid, kind: m.kind, content: m.content, metadata: m.metadata, created_at_ms: now_ms });
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: &UserRecord, key: &ApiKeyRecord) -> Result<()> {
        let (user, key) = (user.clone(), key.clone());
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO users (id, name, webhook_secret, default_environment_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    user.id.to_string(),
                    user.name,
                    user.webhook_secret,
                    user.default_environment_id.map(|u| u.to_string()),
                    user.created_at_ms
                ],
            )?;
            tx.execute(
                "INSERT INTO api_keys (hash, prefix, user_id, created_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key.hash, key.prefix, key.user_id.to_string(), key.created_at_ms, key.revoked_at_ms],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn count_users(&self) -> Result<u64> {
        self.with(|c| Ok(c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0))? as u64)).await
    }

    async fn list_users(&self) -> Result<Vec<(UserRecord, Vec<ApiKeyRecord>)>> {
        self.with(|c| {
            let users: Vec<UserRecord> = c
                .prepare("SELECT * FROM users ORDER BY created_at, id")?
                .query_map([], user_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let mut stmt = c.prepare("SELECT * FROM api_keys WHERE user_id = ?1 ORDER BY created_at")?;
            users
                .into_iter()
                .map(|u| {
                    let keys = stmt.query_map([u.id.to_string()], key_from_row)?.collect::<rusqlite::Result<_>>()?;
                    Ok((u, keys))
                })
                .collect()
        })
        .await
    }

    async fn user_by_key_hash(&self, key_hash: &str) -> Result<Option<UserRecord>> {
        let key_hash = key_hash.to_owned();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT u.* FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.hash = ?1 AND k.revoked_at IS NULL",
                [key_hash],
                user_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn revoke_keys(&self, prefix: &str, now_ms: i64) -> Result<u64> {
        // Escape LIKE's wildcards so a prefix matches literally.
        let pattern = format!("{}%", prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        self.with(move |c| {
            Ok(c.execute(
                "UPDATE api_keys SET revoked_at = ?1 WHERE prefix LIKE ?2 ESCAPE '\\' AND revoked_at IS NULL",
                params![now_ms, pattern],
            )? as u64)
        })
        .await
    }

    async fn set_webhook_secret(&self, user_id: Uuid, secret: &str) -> Result<bool> {
        let secret = secret.to_owned();
        self.with(move |c| {
            Ok(c.execute("UPDATE users SET webhook_secret = ?1 WHERE id = ?2", params![secret, user_id.to_string()])? == 1)
        })
        .await
    }

    async fn insert_session(&self, s: &NewSession, outbox: Vec<NewWebhookEvent>) -> Result<SessionRecord> {
        let s = s.clone();
        self.with(move |c| {
            let tx = c.transaction()?;
            if s.new_environment {
                tx.execute(
                    "INSERT INTO environments (id, user_id, created_at) VALUES (?1, ?2, ?3)",
                    params![s.environment_id.to_string(), s.user_id.to_string(), s.created_at_ms],
                )?;
            }
            tx.execute(
                &format!(
                    "INSERT INTO sessions ({SESSION_COLS}) VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, NULL, 'ready')"
                ),
                params![
                    s.id.to_string(),
                    s.user_id.to_string(),
                    s.agent_name,
                    s.status.as_str(),
                    s.environment_id.to_string(),
                    s.browser_pid,
                    s.profile_dir,
                    s.webhook_url,
                    s.goal,
                    s.max_steps,
                    s.agent_session_type,
                    s.restored_from,
                    s.created_at_ms,
                ],
            )?;
            let rec = tx.query_row(&format!("SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"), [s.id.to_string()], session_from_row)?;
            enqueue(&tx, outbox, s.created_at_ms)?;
            tx.commit()?;
            Ok(rec)
        })
        .await
    }

    async fn get_session(&self, user_id: Uuid, id: Uuid) -> Result<Option<SessionRecord>> {
        self.with(move |c| one_session(c, user_id, id, false)).await
    }

    async fn get_session_any(&self, user_id: Uuid, id: Uuid) -> Result<Option<SessionRecord>> {
        self.with(move |c| one_session(c, user_id, id, true)).await
    }

    async fn get_environment(&self, user_id: Uuid, id: Uuid) -> Result<Option<EnvironmentRecord>> {
        self.with(move |c| {
            Ok(c.query_row(
                &format!("SELECT {ENV_COLS} FROM environments WHERE id = ?1 AND user_id = ?2 AND deleted_at IS NULL"),
                [id.to_string(), user_id.to_string()],
                environment_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_environments(&self, user_id: Uuid) -> Result<Vec<EnvironmentRecord>> {
        self.with(move |c| {
            Ok(c.prepare(&format!(
                "SELECT {ENV_COLS} FROM environments WHERE user_id = ?1 AND deleted_at IS NULL ORDER BY created_at, id"
            ))?
            .query_map([user_id.to_string()], environment_from_row)?
            .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn save_snapshot(&self, environment_id: Uuid, snapshot: &SnapshotRef, make_default: bool) -> Result<Option<String>> {
        let snap = snapshot.clone();
        self.with(move |c| {
            let tx = c.transaction()?;
            let (owner, previous): (String, Option<String>) = tx.query_row(
                "SELECT user_id, snapshot_key FROM environments WHERE id = ?1",
                [environment_id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            tx.execute(
                "UPDATE environments SET snapshot_key = ?2, snapshot_manifest = ?3, snapshot_session_id = ?4, snapshot_at = ?5, \
                 deleted_at = NULL WHERE id = ?1",
                params![environment_id.to_string(), snap.key, snap.manifest, snap.session_id.to_string(), snap.created_at_ms],
            )?;
            if make_default {
                tx.execute("UPDATE users SET default_environment_id = ?2 WHERE id = ?1", [owner, environment_id.to_string()])?;
            }
            tx.commit()?;
            Ok(previous.filter(|p| *p != snap.key))
        })
        .await
    }

    async fn delete_environment(&self, user_id: Uuid, id: Uuid, now_ms: i64) -> Result<Option<Option<String>>> {
        self.with(move |c| {
            let tx = c.transaction()?;
            let found: Option<Option<String>> = tx
                .query_row(
                    "SELECT snapshot_key FROM environments WHERE id = ?1 AND user_id = ?2 AND deleted_at IS NULL",
                    [id.to_string(), user_id.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            if found.is_some() {
                tx.execute(
                    "UPDATE environments SET deleted_at = ?2, snapshot_key = NULL, snapshot_manifest = NULL, snapshot_session_id = NULL, \
                     snapshot_at = NULL WHERE id = ?1",
                    params![id.to_string(), now_ms],
                )?;
                tx.execute(
                    "UPDATE users SET default_environment_id = NULL WHERE id = ?1 AND default_environment_id = ?2",
                    [user_id.to_string(), id.to_string()],
                )?;
            }
            tx.commit()?;
            Ok(found)
        })
        .await
    }

    async fn snapshot_keys(&self) -> Result<Vec<String>> {
        self.with(|c| {
            Ok(c.prepare("SELECT snapshot_key FROM environments WHERE snapshot_key IS NOT NULL")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn list_sessions(&self, user_id: Uuid) -> Result<Vec<SessionRecord>> {
        self.with(move |c| {
            Ok(c.prepare(&format!(
                "SELECT {SESSION_COLS} FROM sessions WHERE user_id = ?1 AND deleted_at IS NULL ORDER BY created_at, id"
            ))?
            .query_map([user_id.to_string()], session_from_row)?
            .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn record(
        &self,
        id: Uuid,
        transition: Option<Transition>,
        messages: Vec<NewMessage>,
        outbox: Vec<NewWebhookEvent>,
        now_ms: i64,
    ) -> Result<Vec<MessageRecord>> {
        self.with(move |c| {
            let tx = c.transaction()?;
            if let Some(t) = transition {
                tx.execute(
                    "UPDATE sessions SET execution_status = ?1, status = ?2, status_reason = ?3, updated_at = ?4 \
                     WHERE id = ?5 AND deleted_at IS NULL",
                    params![t.status.as_str(), t.status.session_status().as_str(), t.reason, now_ms, id.to_string()],
                )?;
            }
            let out = append_messages(&tx, id, messages, now_ms)?;
            enqueue(&tx, outbox, now_ms)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn list_messages(&self, id: Uuid, after_id: i64, limit: usize) -> Result<Vec<MessageRecord>> {
        self.with(move |c| {
            Ok(c.prepare_cached("SELECT * FROM messages WHERE session_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3")?
                .query_map(params![id.to_string(), after_id, limit as i64], message_from_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn last_message_id(&self, id: Uuid) -> Result<i64> {
        self.with(move |c| {
            Ok(c.query_row("SELECT COALESCE(MAX(id), 0) FROM messages WHERE session_id = ?1", [id.to_string()], |r| r.get(0))?)
        })
        .await
    }

    async fn set_max_steps(&self, id: Uuid, max_steps: u32, now_ms: i64) -> Result<()> {
        self.with(move |c| {
            c.execute("UPDATE sessions SET max_steps = ?1, updated_at = ?2 WHERE id = ?3", params![max_steps, now_ms, id.to_string()])?;
            Ok(())
        })
        .await
    }

    async fn mark_session_deleted(&self, id: Uuid, now_ms: i64, outbox: Vec<NewWebhookEvent>) -> Result<()> {
        self.with(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE sessions SET status = 'terminated', browser_pid = NULL, updated_at = ?1, deleted_at = ?1 WHERE id = ?2 AND deleted_at IS NULL",
                params![now_ms, id.to_string()],
            )?;
            if n == 1 {
                enqueue(&tx, outbox, now_ms)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn claim_webhooks(&self, now_ms: i64, lease_until_ms: i64, limit: usize) -> Result<Vec<(WebhookEventRecord, String)>> {
        self.with(move |c| {
            let tx = c.transaction()?;
            // The oldest pending event of each session, if it is due and not leased.
            let claimed: Vec<(WebhookEventRecord, String)> = tx
                .prepare_cached(
                    "SELECT e.*, u.webhook_secret AS secret FROM webhook_events e JOIN users u ON u.id = e.user_id \
                     WHERE e.seq IN (SELECT MIN(seq) FROM webhook_events WHERE state = 'pending' GROUP BY session_id) \
                     AND e.next_attempt_at <= ?1 AND (e.lease_until IS NULL OR e.lease_until <= ?1) ORDER BY e.seq LIMIT ?2",
                )?
                .query_map(params![now_ms, limit as i64], |r| Ok((webhook_from_row(r)?, r.get::<_, String>("secret")?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (e, _) in &claimed {
                tx.execute("UPDATE webhook_events SET lease_until = ?1 WHERE seq = ?2", params![lease_until_ms, e.seq])?;
            }
            tx.commit()?;
            Ok(claimed)
        })
        .await
    }

    async fn finish_webhook_attempt(&self, id: &str, a: WebhookAttempt, now_ms: i64) -> Result<()> {
        let id = id.to_owned();
        self.with(move |c| {
            let delivered = (a.state == WebhookState::Delivered).then_some(now_ms);
            c.execute(
                "UPDATE webhook_events SET state = ?1, attempts = attempts + ?2, last_status = ?3, last_error = ?4, \
                 next_attempt_at = ?5, lease_until = NULL, delivered_at = ?6 WHERE id = ?7",
                params![a.state.as_str(), i64::from(a.counted), a.status, a.error, a.next_attempt_at_ms, delivered, id],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_webhooks(&self, session_id: Uuid) -> Result<Vec<WebhookEventRecord>> {
        self.with(move |c| {
            Ok(c.prepare_cached("SELECT * FROM webhook_events WHERE session_id = ?1 ORDER BY seq")?
                .query_map([session_id.to_string()], webhook_from_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn clear_webhook_leases(&self) -> Result<()> {
        self.with(|c| {
            c.execute("UPDATE webhook_events SET lease_until = NULL WHERE lease_until IS NOT NULL", [])?;
            Ok(())
        })
        .await
    }

    async fn count_sessions_by_status(&self) -> Result<Vec<(SessionStatus, u64)>> {
        self.with(|c| {
            let rows: Vec<(String, i64)> = c
                .prepare("SELECT status, COUNT(*) FROM sessions GROUP BY status ORDER BY status")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            rows.into_iter()
                .map(|(s, n)| Ok((SessionStatus::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("unknown status {s}")))?, n as u64)))
                .collect()
        })
        .await
    }

    async fn recorded_browser_pids(&self) -> Result<Vec<u32>> {
        self.with(|c| {
            Ok(c.prepare("SELECT browser_pid FROM sessions WHERE deleted_at IS NULL AND browser_pid IS NOT NULL")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn fail_live_sessions(&self, reason: &str, now_ms: i64) -> Result<u64> {
        let reason = reason.to_owned();
        self.with(move |c| {
            let tx = c.transaction()?;
            let live: Vec<String> = tx
                .prepare("SELECT id FROM sessions WHERE deleted_at IS NULL AND status NOT IN ('error', 'terminated')")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for id in &live {
                tx.execute(
                    "UPDATE sessions SET status = 'error', execution_status = 'error', status_reason = ?1, updated_at = ?2 WHERE id = ?3",
                    params![reason, now_ms, id],
                )?;
                let uuid = Uuid::parse_str(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                append_messages(&tx, uuid, vec![NewMessage::text(MessageType::Error, reason.clone())], now_ms)?;
            }
            tx.execute("UPDATE sessions SET browser_pid = NULL WHERE browser_pid IS NOT NULL", [])?;
            tx.commit()?;
            Ok(live.len() as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> (UserRecord, ApiKeyRecord) {
        let id = Uuid::new_v4();
        let u = UserRecord { id, name: name.into(), webhook_secret: "whsec_x".into(), default_environment_id: None, created_at_ms: 1 };
        let k = ApiKeyRecord { prefix: format!("ab_{name}"), hash: format!("hash-{name}"), user_id: id, created_at_ms: 1, revoked_at_ms: None };
        (u, k)
    }

    fn session(user_id: Uuid) -> NewSession {
        NewSession {
            id: Uuid::new_v4(),
            user_id,
            agent_name: "agi-0".into(),
            status: SessionStatus::Ready,
            environment_id: Uuid::new_v4(),
            new_environment: true,
            browser_pid: Some(4242),
            profile_dir: Some("/p".into()),
            webhook_url: None,
            goal: None,
            max_steps: 100,
            agent_session_type: "managed-cdp".into(),
            restored_from: None,
            created_at_ms: 10,
        }
    }

    /// A fresh store with users `a` and `b`, and one session of `a`'s.
    async fn two_users_and_a_session() -> (tempfile::TempDir, SqliteStore, UserRecord, UserRecord, SessionRecord) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        let (a, ka) = user("a");
        let (b, kb) = user("b");
        store.create_user(&a, &ka).await.unwrap();
        store.create_user(&b, &kb).await.unwrap();
        let s = store.insert_session(&session(a.id), vec![]).await.unwrap();
        (dir, store, a, b, s)
    }

    #[tokio::test]
    async fn keys_resolve_to_their_user_until_revoked_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        let (u, k) = user("alice");
        store.create_user(&u, &k).await.unwrap();
        assert_eq!(store.user_by_key_hash("hash-alice").await.unwrap(), Some(u.clone()));
        assert_eq!(store.revoke_keys("ab_al", 5).await.unwrap(), 1);
        assert_eq!(store.user_by_key_hash("hash-alice").await.unwrap(), None);
        assert_eq!(store.revoke_keys("ab_%", 6).await.unwrap(), 0, "a LIKE wildcard in the prefix is literal");
    }

    #[tokio::test]
    async fn sessions_are_private_to_their_owner_and_vanish_when_deleted() {
        let (_dir, store, a, b, s) = two_users_and_a_session().await;
        assert_eq!(store.get_session(a.id, s.id).await.unwrap().as_ref(), Some(&s));
        assert_eq!(store.get_session(b.id, s.id).await.unwrap(), None);
        assert_eq!(store.list_sessions(b.id).await.unwrap(), vec![]);
        assert_eq!(store.recorded_browser_pids().await.unwrap(), vec![4242]);
        store.mark_session_deleted(s.id, 20, vec![]).await.unwrap();
        assert_eq!(store.get_session(a.id, s.id).await.unwrap(), None);
        assert!(store.recorded_browser_pids().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_snapshot_replaces_the_last_one_can_become_the_default_and_goes_with_its_environment() {
        let (_dir, store, a, b, s) = two_users_and_a_session().await;
        let env = s.environment_id;
        assert_eq!(store.get_environment(a.id, env).await.unwrap().unwrap().snapshot, None);
        assert_eq!(store.get_environment(b.id, env).await.unwrap(), None, "private to its owner");

        let snap = |key: &str| SnapshotRef { key: key.into(), manifest: "{}".into(), session_id: s.id, created_at_ms: 50 };
        assert_eq!(store.save_snapshot(env, &snap("k1"), false).await.unwrap(), None);
        assert_eq!(store.save_snapshot(env, &snap("k2"), true).await.unwrap(), Some("k1".into()), "the old blob is handed back");
        assert_eq!(store.get_environment(a.id, env).await.unwrap().unwrap().snapshot, Some(snap("k2")));
        assert_eq!(store.user_by_key_hash("hash-a").await.unwrap().unwrap().default_environment_id, Some(env));
        assert_eq!(store.snapshot_keys().await.unwrap(), vec!["k2".to_owned()]);
        assert_eq!(store.list_environments(a.id).await.unwrap().len(), 1);

        assert_eq!(store.delete_environment(b.id, env, 60).await.unwrap(), None, "not b's to delete");
        assert_eq!(store.delete_environment(a.id, env, 60).await.unwrap(), Some(Some("k2".into())));
        assert_eq!(store.get_environment(a.id, env).await.unwrap(), None);
        assert_eq!(store.user_by_key_hash("hash-a").await.unwrap().unwrap().default_environment_id, None);
        assert!(store.snapshot_keys().await.unwrap().is_empty());
        assert_eq!(store.delete_environment(a.id, env, 61).await.unwrap(), None, "gone");
    }

    #[tokio::test]
    async fn live_sessions_of_a_previous_run_become_errors_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let (a, ka) = user("a");
        let id = {
            let store = SqliteStore::open(&path).unwrap();
            store.create_user(&a, &ka).await.unwrap();
            store.insert_session(&session(a.id), vec![]).await.unwrap().id
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.fail_live_sessions("server restarted", 30).await.unwrap(), 1);
        let s = store.get_session(a.id, id).await.unwrap().unwrap();
        assert_eq!(s.status, SessionStatus::Error);
        assert_eq!(s.status_reason.as_deref(), Some("server restarted"));
        assert_eq!(s.browser_pid, None);
        assert_eq!(s.execution_status, ExecutionStatus::Error);
        let log = store.list_messages(id, 0, 10).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].id, log[0].kind), (1, MessageType::Error));
    }

    #[tokio::test]
    async fn messages_get_growing_ids_and_a_transition_moves_both_statuses() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        let (a, ka) = user("a");
        store.create_user(&a, &ka).await.unwrap();
        let s = store.insert_session(&session(a.id), vec![]).await.unwrap();
        let t = Transition { status: ExecutionStatus::WaitingForInput, reason: None };
        let first = store
            .record(s.id, Some(t), vec![NewMessage::text(MessageType::User, "hi"), NewMessage::text(MessageType::Question, "which?")], vec![], 11)
            .await
            .unwrap();
        assert_eq!(first.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2]);
        let obj = NewMessage { kind: MessageType::Done, content: serde_json::json!({"price": "$5"}), metadata: serde_json::json!({"step": 3}) };
        store.record(s.id, None, vec![obj.clone()], vec![], 12).await.unwrap();
        let rec = store.get_session(a.id, s.id).await.unwrap().unwrap();
        assert_eq!((rec.execution_status, rec.status), (ExecutionStatus::WaitingForInput, SessionStatus::Running));
        let after = store.list_messages(s.id, 2, 10).await.unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!((after[0].id, &after[0].content, &after[0].metadata), (3, &obj.content, &obj.metadata));
        assert_eq!(store.list_messages(s.id, 0, 2).await.unwrap().len(), 2, "the limit bounds a page");
    }

    #[tokio::test]
    async fn the_outbox_hands_out_one_event_per_session_in_order_with_a_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        let (a, ka) = user("a");
        store.create_user(&a, &ka).await.unwrap();
        let ev = |id: &str, sid: Uuid| NewWebhookEvent {
            id: id.into(),
            session_id: sid,
            user_id: a.id,
            url: "http://x.test/".into(),
            event: "task.started".into(),
            body: "{}".into(),
        };
        let s1 = store.insert_session(&session(a.id), vec![]).await.unwrap();
        let s2 = store.insert_session(&session(a.id), vec![]).await.unwrap();
        store.record(s1.id, None, vec![], vec![ev("e1", s1.id), ev("e2", s1.id)], 10).await.unwrap();
        store.record(s2.id, None, vec![], vec![ev("e3", s2.id)], 10).await.unwrap();
        let got = store.claim_webhooks(10, 100, 10).await.unwrap();
        let ids: Vec<&str> = got.iter().map(|(e, _)| e.id.as_str()).collect();
        assert_eq!(ids, ["e1", "e3"], "one per session, the oldest first");
        assert_eq!(got[0].1, "whsec_x", "with the user's secret");
        assert!(store.claim_webhooks(50, 150, 10).await.unwrap().is_empty(), "leased");
        let retry = WebhookAttempt { state: WebhookState::Pending, status: Some(500), error: None, next_attempt_at_ms: 200, counted: true };
        store.finish_webhook_attempt("e1", retry, 60).await.unwrap();
        let done = WebhookAttempt { state: WebhookState::Delivered, status: Some(200), error: None, next_attempt_at_ms: 60, counted: true };
        store.finish_webhook_attempt("e3", done, 60).await.unwrap();
        assert!(store.claim_webhooks(100, 150, 10).await.unwrap().is_empty(), "e1 waits for its retry time; e2 waits behind e1");
        store.finish_webhook_attempt("e1", WebhookAttempt { state: WebhookState::Delivered, ..retry_ok() }, 210).await.unwrap();
        let next = store.claim_webhooks(210, 300, 10).await.unwrap();
        assert_eq!(next.iter().map(|(e, _)| e.id.as_str()).collect::<Vec<_>>(), ["e2"]);
        store.clear_webhook_leases().await.unwrap();
        assert_eq!(store.claim_webhooks(220, 300, 10).await.unwrap().len(), 1, "a restart voids leases");
        let log = store.list_webhooks(s1.id).await.unwrap();
        assert_eq!((log[0].state, log[0].attempts, log[0].last_status), (WebhookState::Delivered, 2, Some(200)));
    }

    fn retry_ok() -> WebhookAttempt {
        WebhookAttempt { state: WebhookState::Delivered, status: Some(200), error: None, next_attempt_at_ms: 0, counted: true }
    }
}
