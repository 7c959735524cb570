//! Schema migrations, applied in order and tracked in `PRAGMA user_version`.
//! Never edit a shipped migration; append a new one.

use rusqlite::Connection;

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: users, keys, environments, sessions.
    r#"
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        webhook_secret TEXT NOT NULL,
        default_environment_id TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        hash TEXT PRIMARY KEY,
        prefix TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users(id),
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE INDEX api_keys_prefix ON api_keys(prefix);
    CREATE TABLE environments (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id),
        created_at INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id),
        agent_name TEXT NOT NULL,
        status TEXT NOT NULL,
        status_reason TEXT,
        environment_id TEXT NOT NULL REFERENCES environments(id),
        browser_pid INTEGER,
        profile_dir TEXT,
        webhook_url TEXT,
        goal TEXT,
        max_steps INTEGER NOT NULL,
        agent_session_type TEXT NOT NULL,
        restored_from TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        deleted_at INTEGER
    );
    CREATE INDEX sessions_user ON sessions(user_id, deleted_at);
    "#,
    // 2: the task's execution status and the message log.
    r#"
    ALTER TABLE sessions ADD COLUMN execution_status TEXT NOT NULL DEFAULT 'ready';
    CREATE TABLE messages (
        session_id TEXT NOT NULL REFERENCES sessions(id),
        id INTEGER NOT NULL,
        type TEXT NOT NULL,
        content TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (session_id, id)
    ) WITHOUT ROWID;
    "#,
    // 3: the webhook outbox and its delivery log.
    r#"
    CREATE TABLE webhook_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users(id),
        url TEXT NOT NULL,
        event TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        lease_until INTEGER,
        last_status INTEGER,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        delivered_at INTEGER
    );
    CREATE INDEX webhook_events_due ON webhook_events(state, next_attempt_at);
    CREATE INDEX webhook_events_session ON webhook_events(session_id, seq);
    "#,
    // 4: an environment's latest filesystem snapshot (a blob key and its manifest).
    r#"
    ALTER TABLE environments ADD COLUMN snapshot_key TEXT;
    ALTER TABLE environments ADD COLUMN snapshot_manifest TEXT;
    ALTER TABLE environments ADD COLUMN snapshot_session_id TEXT;
    ALTER TABLE environments ADD COLUMN snapshot_at INTEGER;
    ALTER TABLE environments ADD COLUMN deleted_at INTEGER;
    CREATE INDEX environments_user ON environments(user_id, deleted_at);
    "#,
];

/// Brings the schema up to date inside one transaction per migration.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::SchemaTooNew { found: current, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
