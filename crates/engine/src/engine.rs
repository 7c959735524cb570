//! The [`Engine`]: the registry of live sessions and every operation on them.
//!
//! Ownership: the engine owns the warm pool's driver task, the reaper task and (through
//! its registry) every session actor. [`Engine::shutdown`] signals the drivers, closes
//! every session and joins all of them. The registry lock is a plain mutex held only for
//! map operations, never across an await.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use agentbox_browser::{Launcher, Remains, Screenshot, WarmPool, procfs};
use agentbox_store::{
    EnvironmentRecord, ExecutionStatus, MessageRecord, MessageType, NewSession, SessionRecord, SessionStatus, Store, StoreError, UserRecord,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::EngineConfig;
use crate::error::{
    ActionError, CapacityScope, ControlError, CreateError, DeleteError, EnvironmentError, LookupError, RestoreError, SaveError, SnapshotError,
};
use crate::metrics::Metrics;
use crate::snapshot::{LocalBlobStore, Manifest, ParkedInfo, Snapshots};
use crate::session::{self, ActorSettings, Command, SessionHandle};
use crate::time::now_ms;
use crate::tokens::{Claims, TokenKey, TokenScope};
use crate::validate::{HttpUrl, MaxSteps, SnapshotMode};

/// How long the links in a session object stay valid. They also die with the session.
const LINK_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// Why a previous run's live sessions are now in error.
pub const SERVER_RESTARTED: &str =
    "the server restarted and this session's browser is gone; delete this session and create a new one";
const SERVER_STOPPED: &str = "the server shut down and this session's browser is gone; delete it and create a new one";

/// A session as the API shows it: the stored record plus its links.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub record: SessionRecord,
    pub vnc_url: String,
    pub cdp_url: String,
}

/// Where a new session's browser state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreSource {
    Session(Uuid),
    Environment(Uuid),
    UserDefault(Uuid),
}

/// A validated create request.
#[derive(Debug, Clone, Default)]
pub struct CreateSession {
    pub agent_name: Option<String>,
    pub webhook_url: Option<HttpUrl>,
    pub goal: Option<String>,
    pub max_steps: MaxSteps,
    pub restore: Option<RestoreSource>,
    pub enable_memory_snapshot: bool,
    /// `external-cdp`: attach to the browser at this DevTools URL (`ws(s)://…` or the
    /// `http(s)://host:port` that serves `/json/version`) instead of starting one.
    pub external_cdp: Option<String>,
}

/// A validated user message.
#[derive(Debug, Clone)]
pub struct SendMessage {
    pub text: String,
    pub start_url: Option<HttpUrl>,
    /// From `config_updates`.
    pub max_steps: Option<MaxSteps>,
}

/// Who asks for a session's DevTools connection.
pub enum CdpAccess<'a> {
    /// A `cdp` token from the session's `cdp_url`.
    Token(&'a str),
    /// A user authenticated with an API key.
    User(&'a UserRecord),
}

/// Where to proxy a DevTools client, and when to hang up.
pub struct CdpEndpoint {
    pub devtools_url: String,
    pub ended: watch::Receiver<bool>,
}

/// Most messages one poll returns; page with `after_id` for more.
pub const MESSAGES_PAGE: usize = 5000;

/// What a reaper pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReapReport {
    pub idle_ended: usize,
    /// Parked browsers closed because their TTL passed.
    pub parked_expired: usize,
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<Uuid, Arc<SessionHandle>>,
    /// Creates that passed the capacity check and are starting a browser, per user.
    starting: HashMap<Uuid, usize>,
    shutting_down: bool,
}

impl Registry {
    fn count_for(&self, user: Uuid) -> usize {
        self.sessions.values().filter(|h| h.user_id == user).count() + self.starting.get(&user).copied().unwrap_or(0)
    }

    fn count_all(&self) -> usize {
        self.sessions.len() + self.starting.values().sum::<usize>()
    }

    fn finish_starting(&mut self, user: Uuid) {
        if let Some(n) = self.starting.get_mut(&user) {
            *n -= 1;
            if *n == 0 {
                self.starting.remove(&user);
            }
        }
    }
}

/// The agentbox domain: sessions, their browsers and their links.
pub struct Engine {
    config: EngineConfig,
    store: Arc<dyn Store>,
    pool: Arc<WarmPool>,
    tokens: TokenKey,
    registry: Mutex<Registry>,
    stop: watch::Sender<bool>,
    drivers: Mutex<Vec<JoinHandle<()>>>,
    janitor: mpsc::UnboundedSender<Remains>,
    /// Shared by every planner's requests to its model provider.
    http: reqwest::Client,
    metrics: Arc<crate::metrics::Metrics>,
    /// Wakes the webhook worker when a session writes an event.
    webhooks: Arc<tokio::sync::Notify>,
    /// Set when the server begins to stop: long-lived streams end so that it can.
    closing: watch::Sender<bool>,
    /// Snapshot archives and parked browsers.
    snapshots: Arc<Snapshots>,
}

/// An environment as the API shows it.
#[derive(Debug, Clone)]
pub struct EnvironmentView {
    pub record: EnvironmentRecord,
    pub manifest: Option<Manifest>,
    pub parked: Option<ParkedInfo>,
    pub is_default: bool,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot prepare {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build the HTTP client for model providers: {0}")]
    Http(String),
}

/// How long Chromium may take to quit cleanly before a filesystem snapshot.
const CLEAN_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Engine {
    /// Cleans up after a previous run (its browsers, profile dirs and live sessions), then
    /// starts the warm pool and the reaper.
    pub async fn start(config: EngineConfig, store: Arc<dyn Store>) -> Result<Arc<Self>, StartError> {
        let profiles = config.profiles_dir();
        std::fs::create_dir_all(&profiles).map_err(|source| StartError::Io { path: profiles.display().to_string(), source })?;
        let key_path = config.data_dir.join("token.key");
        let tokens = TokenKey::load_or_create(&key_path).map_err(|source| StartError::Io { path: key_path.display().to_string(), source })?;

        let trash = config.trash_dir();
        std::fs::create_dir_all(&trash).map_err(|source| StartError::Io { path: trash.display().to_string(), source })?;
        reap_previous_run(&profiles, &trash, store.as_ref()).await?;
        // This server is the only deliverer: a previous run's leases are void.
        store.clear_webhook_leases().await?;
        let (janitor, remains) = mpsc::unbounded_channel();
        let snapshots_dir = config.snapshots_dir();
        let blobs = LocalBlobStore::open(&snapshots_dir).map_err(|source| StartError::Io { path: snapshots_dir.display().to_string(), source })?;
        let snapshots = Arc::new(Snapshots::new(Arc::new(blobs), config.snapshot_max_bytes, config.standby));
        let swept = snapshots.sweep(store.snapshot_keys().await?).await;
        if swept > 0 {
            tracing::warn!(archives = swept, "removed snapshot archives no environment refers to (a save was interrupted)");
        }

        let launcher = Launcher {
            executable: config.chromium_path.clone(),
            profiles_root: profiles,
            viewport: config.viewport,
            timeout: config.launch_timeout,
        };
        let pool = WarmPool::new(launcher, config.pool_size);
        let (stop, _) = watch::channel(false);
        let http = reqwest::Client::builder()
            .user_agent(concat!("agentbox/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StartError::Http(e.to_string()))?;
        let engine = Arc::new(Self {
            http,
            metrics: Arc::default(),
            webhooks: Arc::default(),
            closing: watch::channel(false).0,
            snapshots,
            config,
            store,
            pool: pool.clone(),
            tokens,
            registry: Mutex::default(),
            stop,
            drivers: Mutex::default(),
            janitor,
        });
        let pool_driver = tokio::spawn({
            let stop = engine.stop.subscribe();
            async move { pool.run(stop).await }
        });
        let reaper = tokio::spawn(run_reaper(Arc::downgrade(&engine), engine.stop.subscribe(), engine.config.reap_interval));
        let janitor = tokio::spawn(run_janitor(remains, engine.stop.subscribe()));
        let webhooks = tokio::spawn(crate::webhooks::run_worker(
            Arc::downgrade(&engine),
            engine.webhooks.clone(),
            engine.stop.subscribe(),
            engine.config.webhooks.poll,
        ));
        engine.drivers.lock().expect("drivers lock").extend([pool_driver, reaper, janitor, webhooks]);
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The warm pool (benchmarks wait on it to measure the warm path).
    pub fn pool(&self) -> &Arc<WarmPool> {
        &self.pool
    }

    /// The configured agent names, in configuration order.
    pub fn agent_names(&self) -> Vec<String> {
        self.config.agents.iter().map(|a| a.name.clone()).collect()
    }

    /// Resolves a bearer API key to its user.
    pub async fn authenticate(&self, key: &str) -> Result<Option<UserRecord>, StoreError> {
        crate::users::authenticate(self.store.as_ref(), key).await
    }

    /// How many sessions have a running actor.
    pub fn live_sessions(&self) -> usize {
        self.registry.lock().expect("registry lock").sessions.len()
    }

    /// Creates a session with its own browser; returns once the browser is ready.
    #[tracing::instrument(skip_all, fields(user_id = %user.id))]
    pub async fn create_session(&self, user: &UserRecord, req: CreateSession) -> Result<SessionView, CreateError> {
        let agent_name = req.agent_name.clone().unwrap_or_else(|| "agi-0".to_owned());
        if !self.config.agents.iter().any(|a| a.name == agent_name) {
            return Err(CreateError::UnknownAgent { given: agent_name, valid: self.agent_names() });
        }
        let restore = match req.restore {
            Some(_) if req.external_cdp.is_some() => {
                return Err(CreateError::ExternalCdp("a session on an external browser cannot be restored from a snapshot".into()));
            }
            Some(source) => Some((self.resolve_restore(user, source).await?, req.enable_memory_snapshot)),
            None => None,
        };
        {
            let mut reg = self.registry.lock().expect("registry lock");
            if reg.shutting_down {
                return Err(CreateError::ShuttingDown);
            }
            if reg.count_all() >= self.config.max_sessions {
                return Err(CreateError::Capacity { scope: CapacityScope::Server, limit: self.config.max_sessions });
            }
            if reg.count_for(user.id) >= self.config.max_sessions_per_user {
                return Err(CreateError::Capacity { scope: CapacityScope::User, limit: self.config.max_sessions_per_user });
            }
            *reg.starting.entry(user.id).or_default() += 1;
        }
        let result = self.start_session(user, agent_name, req, restore).await;
        let refused = {
            let mut reg = self.registry.lock().expect("registry lock");
            reg.finish_starting(user.id);
            match result {
                Err(e) => return Err(e),
                Ok((view, handle)) if !reg.shutting_down => {
                    reg.sessions.insert(view.record.id, Arc::new(handle));
                    return Ok(view);
                }
                Ok((_, handle)) => handle,
            }
        };
        // Shutdown began while the browser started: do not leave it running.
        refused.close().await;
        Err(CreateError::ShuttingDown)
    }

    async fn start_session(
        &self,
        user: &UserRecord,
        agent_name: String,
        req: CreateSession,
        restore: Option<(EnvironmentRecord, bool)>,
    ) -> Result<(SessionView, SessionHandle), CreateError> {
        let CreateSession { webhook_url, goal, max_steps, external_cdp, .. } = req;
        let Some(spec) = self.config.agents.iter().find(|a| a.name == agent_name).cloned() else {
            return Err(CreateError::UnknownAgent { given: agent_name, valid: self.agent_names() });
        };
        let (mut environment_id, mut restored_from) = (Uuid::new_v4(), None);
        let (browser, warm) = match (&external_cdp, restore) {
            (Some(url), _) => (self.connect_external(url).await?, false),
            (None, Some((env, memory))) => {
                let (browser, from) = self.restore_browser(&env, memory).await?;
                (environment_id, restored_from) = (env.id, Some(from.to_owned()));
                (browser, false)
            }
            (None, None) => self.pool.acquire().await?,
        };
        let external = browser.is_external();
        let id = Uuid::new_v4();
        tracing::debug!(session_id = %id, warm, pid = browser.pid(), "browser acquired");
        let new = NewSession {
            id,
            user_id: user.id,
            agent_name,
            status: SessionStatus::Ready,
            environment_id,
            new_environment: restored_from.is_none(),
            browser_pid: (!external).then(|| browser.pid()),
            profile_dir: (!external).then(|| browser.profile_dir().display().to_string()),
            webhook_url: webhook_url.map(|u| u.to_string()),
            goal: goal.clone(),
            max_steps: max_steps.get(),
            agent_session_type: if external { "external-cdp" } else { "managed-cdp" }.to_owned(),
            restored_from,
            created_at_ms: now_ms(),
        };
        let created = self.view(record_of(&new));
        let outbox: Vec<_> = crate::webhooks::event(&created, "session.created", serde_json::json!({})).into_iter().collect();
        let wake = !outbox.is_empty();
        // If the insert fails, `browser` drops here and its group is killed.
        let record = self.store.insert_session(&new, outbox).await?;
        if wake {
            self.webhooks.notify_one();
        }
        let settings = ActorSettings {
            navigation_timeout: self.config.navigation_timeout,
            screenshot_quality: self.config.screenshot_quality,
            trash_dir: self.config.trash_dir(),
            janitor: self.janitor.clone(),
            agent: spec,
            http: self.http.clone(),
            metrics: self.metrics.clone(),
            task_timeout: self.config.task_timeout,
            webhooks: self.webhooks.clone(),
        };
        let handle = session::spawn(self.view(record.clone()), browser, self.store.clone(), settings);
        let record = match goal {
            // `goal` starts a task at once, as if sent as the first message.
            Some(goal) => {
                if let Err(e) = handle.control.message(goal, None, None).await {
                    handle.close().await;
                    return Err(match e {
                        ActionError::Store(s) => CreateError::Store(s),
                        other => CreateError::Goal(other.to_string()),
                    });
                }
                self.store.get_session(user.id, id).await?.unwrap_or(record)
            }
            None => record,
        };
        Ok((self.view(record), handle))
    }

    /// Attaches to a browser the user runs. An `http(s)://` URL is asked for its
    /// `/json/version` to find the browser's WebSocket.
    async fn connect_external(&self, url: &str) -> Result<agentbox_browser::Browser, CreateError> {
        let fail = |why: String| CreateError::ExternalCdp(format!("could not connect to cdp_url {url}: {why}"));
        let ws = if url.starts_with("http://") || url.starts_with("https://") {
            let version = format!("{}/json/version", url.trim_end_matches('/'));
            let v: serde_json::Value = self
                .http
                .get(&version)
                .timeout(self.config.launch_timeout)
                .send()
                .await
                .map_err(|e| fail(e.without_url().to_string()))?
                .json()
                .await
                .map_err(|e| fail(format!("{version} did not answer with JSON: {}", e.without_url())))?;
            v["webSocketDebuggerUrl"].as_str().map(str::to_owned).ok_or_else(|| fail(format!("{version} names no webSocketDebuggerUrl")))?
        } else {
            url.to_owned()
        };
        agentbox_browser::Browser::connect_external(&ws, self.config.viewport, self.config.launch_timeout)
            .await
            .map_err(|e| fail(e.to_string()))
    }

    /// The environment a create restores from, if it has something to restore (a
    /// filesystem snapshot or a parked browser); else 404 saying which reference failed.
    async fn resolve_restore(&self, user: &UserRecord, source: RestoreSource) -> Result<EnvironmentRecord, CreateError> {
        let env_id = match source {
            RestoreSource::Session(id) => self.store.get_session_any(user.id, id).await?.map(|s| s.environment_id),
            RestoreSource::Environment(id) => Some(id),
            RestoreSource::UserDefault(uid) if uid == user.id => user.default_environment_id,
            RestoreSource::UserDefault(_) => None,
        };
        let env = match env_id {
            Some(id) => self.store.get_environment(user.id, id).await?,
            None => None,
        };
        match env {
            Some(env) if env.snapshot.is_some() || self.snapshots.standby.info(env.id).is_some() => Ok(env),
            _ => Err(CreateError::RestoreNotFound(self.describe_missing_snapshot(user, source).await?)),
        }
    }

    /// A browser with the environment's state: its parked browser when `memory` allows and
    /// one is there, else a new one on its filesystem snapshot. Returns how it was restored.
    async fn restore_browser(&self, env: &EnvironmentRecord, memory: bool) -> Result<(agentbox_browser::Browser, &'static str), CreateError> {
        if memory && let Some(mut browser) = self.snapshots.standby.take(env.id) {
            browser.thaw();
            if browser.is_alive() {
                Metrics::count(&self.metrics.restores_memory);
                return Ok((browser, "memory"));
            }
            tracing::warn!(environment_id = %env.id, "a parked browser died while parked; restoring from disk");
            browser.close().await;
        }
        let Some(snapshot) = &env.snapshot else {
            return Err(CreateError::RestoreNotFound(format!(
                "environment {} has no saved snapshot (its parked browser was used or evicted meanwhile)",
                env.id
            )));
        };
        let started = std::time::Instant::now();
        let dir = self.config.profiles_dir().join(Uuid::new_v4().to_string());
        let state = self.snapshots.read(snapshot, dir.clone()).await.map_err(|e| match e {
            RestoreError::Damaged(why) => {
                Metrics::count(&self.metrics.restores_damaged);
                CreateError::SnapshotDamaged(format!(
                    "environment {}'s snapshot cannot be restored: {why}; save a new snapshot into it or delete it",
                    env.id
                ))
            }
            RestoreError::Io(why) => CreateError::Restore(why),
        })?;
        let extracted = started.elapsed();
        // A failed launch removes the dir itself.
        let mut browser = self.pool.launcher().launch_in(dir).await?;
        let launched = started.elapsed();
        match agentbox_browser::restore_state(browser.page(), &state, self.config.navigation_timeout).await {
            Ok((pages, active)) => {
                browser.set_page(pages[active].clone());
                Metrics::count(&self.metrics.restores_filesystem);
                tracing::debug!(
                    environment_id = %env.id,
                    extract_ms = extracted.as_secs_f64() * 1e3,
                    launch_ms = (launched - extracted).as_secs_f64() * 1e3,
                    state_ms = (started.elapsed() - launched).as_secs_f64() * 1e3,
                    "restored from the filesystem snapshot"
                );
                Ok((browser, "filesystem"))
            }
            Err(e) => {
                browser.close().await;
                Err(CreateError::Restore(e.to_string()))
            }
        }
    }

    async fn describe_missing_snapshot(&self, user: &UserRecord, source: RestoreSource) -> Result<String, StoreError> {
        Ok(match source {
            RestoreSource::Session(id) => match self.store.get_session_any(user.id, id).await? {
                None => format!("restore_from_session_id: session {id} not found"),
                Some(_) => format!(
                    "restore_from_session_id: session {id} has no saved snapshot (delete it with save_snapshot_mode=filesystem to save one)"
                ),
            },
            RestoreSource::Environment(id) => match self.store.get_environment(user.id, id).await? {
                None => format!("restore_from_environment_id: environment {id} not found"),
                Some(_) => format!("restore_from_environment_id: environment {id} has no saved snapshot"),
            },
            RestoreSource::UserDefault(uid) if uid != user.id => {
                format!("restore_default_environment_from_user_id: user {uid} not found")
            }
            RestoreSource::UserDefault(uid) => match user.default_environment_id {
                None => format!(
                    "restore_default_environment_from_user_id: user {uid} has no default environment (delete a session with save_as_default=true to set one)"
                ),
                Some(env) => format!("restore_default_environment_from_user_id: default environment {env} has no saved snapshot"),
            },
        })
    }

    /// One of the user's sessions.
    pub async fn get_session(&self, user: &UserRecord, id: Uuid) -> Result<SessionView, LookupError> {
        self.touch(user, id);
        let record = self.store.get_session(user.id, id).await?.ok_or(LookupError::NotFound)?;
        Ok(self.view(record))
    }

    /// The user's sessions that are not deleted, oldest first.
    pub async fn list_sessions(&self, user: &UserRecord) -> Result<Vec<SessionView>, StoreError> {
        Ok(self.store.list_sessions(user.id).await?.into_iter().map(|r| self.view(r)).collect())
    }

    /// The execution status of the session's task.
    pub async fn execution_status(&self, user: &UserRecord, id: Uuid) -> Result<ExecutionStatus, LookupError> {
        Ok(self.get_session(user, id).await?.record.execution_status)
    }

    /// The session's messages with `id > after_id`, oldest first, and its execution
    /// status. `sanitize` hides LOG messages and strips internal metadata.
    pub async fn messages(&self, user: &UserRecord, id: Uuid, after_id: i64, sanitize: bool) -> Result<(Vec<MessageRecord>, ExecutionStatus), LookupError> {
        let status = self.execution_status(user, id).await?;
        let mut messages = self.store.list_messages(id, after_id, MESSAGES_PAGE).await?;
        if sanitize {
            messages.retain(|m| m.kind != MessageType::Log);
            for m in &mut messages {
                if let Some(meta) = m.metadata.as_object_mut() {
                    for key in INTERNAL_METADATA {
                        meta.remove(*key);
                    }
                }
            }
        }
        Ok((messages, status))
    }

    /// Starts following a session's log: returns a receiver of every message written from
    /// now on (`None` when the session has no live task machinery: its browser is gone and
    /// nothing more will be written). Subscribe first, then read the history, so that no
    /// message falls between the two.
    pub async fn follow(&self, user: &UserRecord, id: Uuid) -> Result<Option<tokio::sync::broadcast::Receiver<MessageRecord>>, LookupError> {
        self.get_session(user, id).await?;
        let live = self.registry.lock().expect("registry lock").sessions.get(&id).filter(|h| h.user_id == user.id).map(|h| h.control.follow());
        Ok(live)
    }

    /// Where a DevTools client of the session connects, and a signal that turns true when
    /// the session ends. Access is a `cdp` token for this session, or its owner's key.
    pub async fn cdp_endpoint(&self, access: CdpAccess<'_>, id: Uuid) -> Result<CdpEndpoint, crate::error::CdpError> {
        use crate::error::CdpError as E;
        let owner = match access {
            CdpAccess::Token(t) => {
                self.verify_link_token(t, id, &[TokenScope::Cdp], "cdp")?;
                None
            }
            CdpAccess::User(u) => Some(u.id),
        };
        let found = self.registry.lock().expect("registry lock").sessions.get(&id).cloned();
        match found {
            Some(h) if owner.is_none_or(|o| o == h.user_id) => {
                h.touch();
                Ok(CdpEndpoint { devtools_url: h.devtools_url.clone(), ended: h.control.ended() })
            }
            Some(_) => Err(E::NotFound),
            None => match owner {
                Some(u) => match self.store.get_session(u, id).await? {
                    Some(rec) => Err(E::BrowserGone(rec.status_reason.unwrap_or_else(|| session::BROWSER_DIED.into()))),
                    None => Err(E::NotFound),
                },
                // A valid token of a session that has ended.
                None => Err(E::Unauthorized("the session of this token has ended".into())),
            },
        }
    }

    /// Joins a session's live view with a `view` or `control` token of that session.
    pub fn live_viewer(&self, token: &str, id: Uuid) -> Result<crate::live::LiveSession, crate::error::CdpError> {
        let scope = self.verify_link_token(token, id, &[TokenScope::View, TokenScope::Control], "live-view")?;
        let h = self.live_handle(id)?;
        h.touch();
        let viewer = h.control.hub.join(scope == TokenScope::Control);
        Ok(crate::live::LiveSession::new(h.control.clone(), viewer))
    }

    /// Checks a link token: valid signature, not expired, this session, one of `scopes`.
    fn verify_link_token(&self, token: &str, id: Uuid, scopes: &[TokenScope], what: &str) -> Result<TokenScope, crate::error::CdpError> {
        use crate::error::CdpError as E;
        let claims = self.tokens.verify(token, now_ms()).map_err(|e| E::Unauthorized(format!("the {what} token is not valid: {e}")))?;
        if claims.session_id != id || !scopes.contains(&claims.scope) {
            return Err(E::Unauthorized(format!("the token is not a {what} token of this session")));
        }
        Ok(claims.scope)
    }

    /// The live session a valid token names; its end makes the token useless.
    fn live_handle(&self, id: Uuid) -> Result<Arc<SessionHandle>, crate::error::CdpError> {
        let found = self.registry.lock().expect("registry lock").sessions.get(&id).cloned();
        found.ok_or_else(|| crate::error::CdpError::Unauthorized("the session of this token has ended".into()))
    }

    /// Checks a live-view token without joining (the viewer page).
    pub fn check_live_token(&self, token: &str, id: Uuid) -> Result<TokenScope, crate::error::CdpError> {
        let scope = self.verify_link_token(token, id, &[TokenScope::View, TokenScope::Control], "live-view")?;
        self.live_handle(id)?;
        Ok(scope)
    }

    /// Mints a live-view link for one of the user's sessions: `(url, expires_at_ms)`.
    pub async fn mint_live_token(&self, user: &UserRecord, id: Uuid, scope: TokenScope, ttl: std::time::Duration) -> Result<(String, i64), ActionError> {
        self.handle(user, id).await?;
        let exp = now_ms() + ttl.as_millis() as i64;
        Ok((format!("{}?token={}", self.public_live_url(id), self.sign_token(id, scope, exp)), exp))
    }

    /// The webhook events of one of the user's sessions (deleted ones too), oldest first.
    pub async fn webhook_deliveries(&self, user: &UserRecord, id: Uuid) -> Result<Vec<agentbox_store::WebhookEventRecord>, LookupError> {
        self.store.get_session_any(user.id, id).await?.ok_or(LookupError::NotFound)?;
        Ok(self.store.list_webhooks(id).await?)
    }

    /// A user message: starts a task, answers the agent, or adds context (API.md §2).
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn send_message(&self, user: &UserRecord, id: Uuid, msg: SendMessage) -> Result<(), ActionError> {
        let handle = self.handle(user, id).await?;
        handle.control.message(msg.text, msg.start_url.map(|u| u.to_string()), msg.max_steps.map(|m| m.get())).await
    }

    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn pause(&self, user: &UserRecord, id: Uuid) -> Result<(), ControlError> {
        self.handle(user, id).await?.control.pause("api").await
    }

    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn resume(&self, user: &UserRecord, id: Uuid) -> Result<(), ControlError> {
        self.handle(user, id).await?.control.resume("api").await
    }

    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn cancel(&self, user: &UserRecord, id: Uuid) -> Result<(), ControlError> {
        self.handle(user, id).await?.control.cancel().await
    }

    /// Navigates the session's active tab; returns the URL it ended on.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn navigate(&self, user: &UserRecord, id: Uuid, url: &HttpUrl) -> Result<String, ActionError> {
        let url = url.to_string();
        self.ask(user, id, |reply| Command::Navigate { url, reply }).await
    }

    /// A JPEG of the session's active tab with its URL and title.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn screenshot(&self, user: &UserRecord, id: Uuid) -> Result<Screenshot, ActionError> {
        self.ask(user, id, |reply| Command::Screenshot { reply }).await
    }

    /// Sends a command to the session's actor and waits for its reply.
    async fn ask<T>(
        &self,
        user: &UserRecord,
        id: Uuid,
        cmd: impl FnOnce(oneshot::Sender<Result<T, ActionError>>) -> Command,
    ) -> Result<T, ActionError> {
        let handle = self.handle(user, id).await?;
        let (reply, rx) = oneshot::channel();
        handle.send(cmd(reply)).await?;
        rx.await.map_err(|_| ActionError::BrowserGone(session::BROWSER_DIED.into()))?
    }

    /// The live actor of one of the user's sessions. A session that exists but has no
    /// actor (its browser died with a previous server run) reports why.
    async fn handle(&self, user: &UserRecord, id: Uuid) -> Result<Arc<SessionHandle>, ActionError> {
        let found = self.registry.lock().expect("registry lock").sessions.get(&id).filter(|h| h.user_id == user.id).cloned();
        match found {
            Some(h) => {
                h.touch();
                Ok(h)
            }
            None => match self.store.get_session(user.id, id).await? {
                Some(rec) => Err(ActionError::BrowserGone(rec.status_reason.unwrap_or_else(|| session::BROWSER_DIED.into()))),
                None => Err(ActionError::NotFound),
            },
        }
    }

    fn touch(&self, user: &UserRecord, id: Uuid) {
        if let Some(h) = self.registry.lock().expect("registry lock").sessions.get(&id).filter(|h| h.user_id == user.id) {
            h.touch();
        }
    }

    /// Deletes one of the user's sessions, first saving its browser as `mode` asks.
    /// `Ok(false)` when there was no such session. A snapshot that cannot be taken at all
    /// (no live browser, an external one, a profile over the limit) is refused before
    /// anything changes: the session is still there.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn delete_session(&self, user: &UserRecord, id: Uuid, mode: SnapshotMode, save_as_default: bool) -> Result<bool, DeleteError> {
        let Some(record) = self.store.get_session(user.id, id).await? else {
            return Ok(false);
        };
        if mode == SnapshotMode::None {
            self.end_session(user.id, id).await?;
            return Ok(true);
        }
        self.snapshot_precheck(&record).await?;
        let handle = self.registry.lock().expect("registry lock").sessions.remove(&id);
        let Some(handle) = handle else {
            // Deleted by a concurrent call meanwhile.
            return Ok(true);
        };
        let view = handle.control.view().await;
        let browser = release_handle(handle).await;
        let saved = match browser {
            Some(browser) => self.save_released(browser, &record, mode, save_as_default).await,
            None => Err(SaveError::BrowserGone(format!(
                "session {id}'s browser was gone before it could be saved; the session is deleted and no snapshot was written"
            ))),
        };
        self.finish_delete(id, Some(view)).await?;
        saved.map_err(|e| match e {
            // The profile grew past the limit between the check and the pack.
            SaveError::TooLarge { limit, .. } => SaveError::TooLarge { limit, session_deleted: true },
            other => other,
        })?;
        Ok(true)
    }

    /// Refuses a snapshot that cannot be taken, before anything changes.
    async fn snapshot_precheck(&self, record: &SessionRecord) -> Result<(), SaveError> {
        if record.agent_session_type == "external-cdp" {
            return Err(SaveError::Unsupported(
                "a session on an external browser (external-cdp) has no profile of agentbox's to save; use save_snapshot_mode=none".into(),
            ));
        }
        let live = record.status != SessionStatus::Error && self.registry.lock().expect("registry lock").sessions.contains_key(&record.id);
        let (true, Some(dir)) = (live, record.profile_dir.as_ref()) else {
            let why = record.status_reason.clone().unwrap_or_else(|| session::BROWSER_DIED.into());
            return Err(SaveError::BrowserGone(format!("{why} (there is no live browser to save; use save_snapshot_mode=none)")));
        };
        self.snapshots.check_size(dir.into()).await
    }

    /// Saves a released browser into its session's environment: `filesystem` quits it
    /// cleanly and packs its profile; `memory` freezes it, packs its profile as the
    /// fallback copy and parks it.
    async fn save_released(&self, mut browser: agentbox_browser::Browser, record: &SessionRecord, mode: SnapshotMode, make_default: bool) -> Result<(), SaveError> {
        let captured = async {
            let state = agentbox_browser::capture_state(browser.connection(), browser.page().target_id()).await?;
            Ok::<_, agentbox_browser::cdp::CdpError>((state, browser.version().await?))
        }
        .await;
        let (state, version) = match captured {
            Ok(c) => c,
            Err(e) => {
                browser.close().await;
                return Err(SaveError::Capture(e.to_string()));
            }
        };
        let (env, sid) = (record.environment_id, record.id);
        match mode {
            SnapshotMode::None => {
                browser.close().await;
                Ok(())
            }
            SnapshotMode::Filesystem => {
                let remains = browser.close_clean(CLEAN_CLOSE_TIMEOUT).await;
                let written = self.snapshots.write(env, sid, remains.dir().to_owned(), state, version, "closed").await;
                let _ = tokio::task::spawn_blocking(move || remains.clear_blocking()).await;
                self.record_snapshot(env, written?.0, make_default).await?;
                Metrics::count(&self.metrics.snapshots_filesystem);
                Ok(())
            }
            SnapshotMode::Memory => {
                browser.freeze();
                let written = self.snapshots.write(env, sid, browser.profile_dir().to_owned(), state, version, "frozen").await;
                let snapshot = match written {
                    Ok((s, _)) => s,
                    Err(e) => {
                        browser.close().await;
                        return Err(e);
                    }
                };
                self.record_snapshot(env, snapshot, make_default).await?;
                Metrics::count(&self.metrics.snapshots_memory);
                let pid = browser.pid();
                let kib = tokio::task::spawn_blocking(move || procfs::group_pss_kib(pid)).await.unwrap_or(0);
                let closing = match self.snapshots.standby.park(env, sid, browser, kib) {
                    Ok(evicted) => {
                        self.metrics.parked_evicted.fetch_add(evicted.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        evicted
                    }
                    Err(not) => {
                        tracing::warn!(environment_id = %env, why = %not.why, "not parking the browser; its filesystem snapshot remains");
                        vec![not.browser]
                    }
                };
                for b in closing {
                    b.close().await;
                }
                Ok(())
            }
        }
    }

    /// Makes `snapshot` its environment's latest (and maybe the user's default), then
    /// removes the archive it replaced.
    async fn record_snapshot(&self, env: Uuid, snapshot: agentbox_store::SnapshotRef, make_default: bool) -> Result<(), SaveError> {
        let key = snapshot.key.clone();
        match self.store.save_snapshot(env, &snapshot, make_default).await {
            Ok(Some(old)) => {
                self.snapshots.delete_blob(old).await;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                self.snapshots.delete_blob(key).await;
                Err(e.into())
            }
        }
    }

    /// Saves a filesystem snapshot of a running session without ending it: the browser is
    /// frozen while its profile is packed, then goes on where it was.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn snapshot_session(&self, user: &UserRecord, id: Uuid, make_default: bool) -> Result<(Uuid, Manifest), SnapshotError> {
        let record = self.store.get_session(user.id, id).await?.ok_or(SnapshotError::NotFound)?;
        self.snapshot_precheck(&record).await?;
        let handle = self.handle(user, id).await.map_err(|e| match e {
            ActionError::NotFound => SnapshotError::NotFound,
            other => SnapshotError::Save(SaveError::BrowserGone(other.to_string())),
        })?;
        let (reply, held) = oneshot::channel();
        let (resume, resumed) = oneshot::channel::<()>();
        let gone = || SaveError::BrowserGone(session::BROWSER_DIED.into());
        handle.send(Command::Hold { reply, resume: resumed }).await.map_err(|_| gone())?;
        let held = held.await.map_err(|_| gone())?.map_err(|e| SaveError::BrowserGone(e.to_string()))?;
        let written = self.snapshots.write(record.environment_id, id, held.profile_dir, held.state, held.chromium_version, "frozen").await;
        drop(resume);
        let (snapshot, manifest) = written?;
        self.record_snapshot(record.environment_id, snapshot, make_default).await?;
        Metrics::count(&self.metrics.snapshots_live);
        Ok((record.environment_id, manifest))
    }

    /// The user's environments, oldest first.
    pub async fn list_environments(&self, user: &UserRecord) -> Result<Vec<EnvironmentView>, StoreError> {
        Ok(self.store.list_environments(user.id).await?.into_iter().map(|r| self.environment_view(user, r)).collect())
    }

    pub async fn get_environment(&self, user: &UserRecord, id: Uuid) -> Result<EnvironmentView, LookupError> {
        let record = self.store.get_environment(user.id, id).await?.ok_or(LookupError::NotFound)?;
        Ok(self.environment_view(user, record))
    }

    fn environment_view(&self, user: &UserRecord, record: EnvironmentRecord) -> EnvironmentView {
        let manifest = record.snapshot.as_ref().and_then(|s| serde_json::from_str(&s.manifest).ok());
        let parked = self.snapshots.standby.info(record.id);
        EnvironmentView { is_default: user.default_environment_id == Some(record.id), manifest, parked, record }
    }

    /// Deletes one of the user's environments with its archive and parked browser.
    /// `Ok(false)` when there is no such environment; refused while a live session uses it.
    pub async fn delete_environment(&self, user: &UserRecord, id: Uuid) -> Result<bool, EnvironmentError> {
        if self.store.get_environment(user.id, id).await?.is_none() {
            return Ok(false);
        }
        let handles: Vec<Arc<SessionHandle>> =
            self.registry.lock().expect("registry lock").sessions.values().filter(|h| h.user_id == user.id).cloned().collect();
        let mut using = Vec::new();
        for h in handles {
            let v = h.control.view().await;
            if v.record.environment_id == id {
                using.push(v.record.id.to_string());
            }
        }
        if !using.is_empty() {
            return Err(EnvironmentError::InUse(format!(
                "environment {id} is used by live session(s) {}; delete them first",
                using.join(", ")
            )));
        }
        let Some(key) = self.store.delete_environment(user.id, id, now_ms()).await? else {
            return Ok(false);
        };
        if let Some(b) = self.snapshots.standby.remove(id) {
            b.close().await;
        }
        if let Some(key) = key {
            self.snapshots.delete_blob(key).await;
        }
        Ok(true)
    }

    /// Closes parked browsers past their TTL; returns how many.
    pub async fn expire_parked_once(&self) -> usize {
        let expired = self.snapshots.standby.expired();
        let n = expired.len();
        self.metrics.parked_evicted.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        for b in expired {
            b.close().await;
        }
        n
    }

    /// How many browsers are parked now.
    pub fn parked_browsers(&self) -> usize {
        self.snapshots.standby.len()
    }

    /// Deletes all of the user's sessions. `Ok(false)` when there were none.
    pub async fn delete_all_sessions(&self, user: &UserRecord) -> Result<bool, DeleteError> {
        let sessions = self.store.list_sessions(user.id).await?;
        for s in &sessions {
            self.end_session(user.id, s.id).await?;
        }
        Ok(!sessions.is_empty())
    }

    /// Closes the session's browser (if it has one) and marks it deleted.
    async fn end_session(&self, user_id: Uuid, id: Uuid) -> Result<(), StoreError> {
        let handle = self.registry.lock().expect("registry lock").sessions.remove(&id);
        let mut view = match &handle {
            Some(h) => Some(h.control.view().await),
            None => None,
        };
        if let Some(h) = handle {
            close_handle(h).await;
        }
        if view.is_none() {
            view = self.store.get_session(user_id, id).await?.map(|r| self.view(r));
        }
        self.finish_delete(id, view).await
    }

    /// Marks a session deleted, with its `session.deleted` event.
    async fn finish_delete(&self, id: Uuid, view: Option<SessionView>) -> Result<(), StoreError> {
        let now = now_ms();
        let outbox: Vec<_> = view
            .map(|mut v| {
                v.record.status = SessionStatus::Terminated;
                v.record.deleted_at_ms = Some(now);
                v
            })
            .and_then(|v| crate::webhooks::event(&v, "session.deleted", serde_json::json!({})))
            .into_iter()
            .collect();
        let wake = !outbox.is_empty();
        self.store.mark_session_deleted(id, now, outbox).await?;
        if wake {
            self.webhooks.notify_one();
        }
        Ok(())
    }

    /// One reaper pass: ends sessions idle for longer than `idle_timeout`.
    pub async fn reap_once(&self) -> ReapReport {
        let idle: Vec<(Uuid, Uuid)> = self
            .registry
            .lock()
            .expect("registry lock")
            .sessions
            .iter()
            // A running task is activity even when no client calls.
            .filter(|(_, h)| h.idle_for() > self.config.idle_timeout && h.control.exec_now() != ExecutionStatus::Running)
            .map(|(id, h)| (h.user_id, *id))
            .collect();
        let mut report = ReapReport { parked_expired: self.expire_parked_once().await, ..ReapReport::default() };
        for (user_id, id) in idle {
            tracing::info!(session_id = %id, "ending a session idle for longer than idle_timeout");
            match self.end_session(user_id, id).await {
                Ok(()) => report.idle_ended += 1,
                Err(e) => tracing::error!(session_id = %id, error = %e, "could not end an idle session"),
            }
        }
        report
    }

    /// The server is stopping: streams that follow sessions should end now.
    pub fn begin_shutdown(&self) {
        let _ = self.closing.send(true);
    }

    /// Resolves once [`Engine::begin_shutdown`] was called.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Stops the drivers, closes every session's browser and waits for all of it.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        let handles: Vec<(Uuid, Arc<SessionHandle>)> = {
            let mut reg = self.registry.lock().expect("registry lock");
            reg.shutting_down = true;
            reg.sessions.drain().collect()
        };
        for (_, h) in handles {
            let control = h.control.clone();
            close_handle(h).await;
            control.stopped_by_server(SERVER_STOPPED).await;
        }
        for b in self.snapshots.standby.drain() {
            b.close().await;
        }
        // Stop the drivers only now: the janitor clears what the closes above left.
        let _ = self.stop.send(true);
        let drivers: Vec<JoinHandle<()>> = self.drivers.lock().expect("drivers lock").drain(..).collect();
        // The pool driver kills the idle browsers as it stops.
        for d in drivers {
            let _ = d.await;
        }
    }

    /// Signs a link token for a session.
    pub fn sign_token(&self, session_id: Uuid, scope: TokenScope, expires_at_ms: i64) -> String {
        self.tokens.sign(&Claims { session_id, scope, expires_at_ms })
    }

    /// The session's live-view page without its token.
    fn public_live_url(&self, id: Uuid) -> url::Url {
        base_with_slash(&self.config.public_url).join(&format!("live/{id}")).expect("a relative path joins")
    }

    /// The session's `cdp_url` without its token.
    pub fn public_cdp_url(&self, id: Uuid) -> String {
        let mut cdp = base_with_slash(&self.config.public_url).join(&format!("v1/sessions/{id}/cdp")).expect("a relative path joins");
        let ws_scheme = if cdp.scheme() == "https" { "wss" } else { "ws" };
        cdp.set_scheme(ws_scheme).expect("http(s) and ws(s) are interchangeable");
        cdp.to_string()
    }

    fn view(&self, record: SessionRecord) -> SessionView {
        let exp = record.created_at_ms + LINK_TTL_MS;
        let vnc_url = format!("{}?token={}", self.public_live_url(record.id), self.sign_token(record.id, TokenScope::Control, exp));
        let cdp_url = format!("{}?token={}", self.public_cdp_url(record.id), self.sign_token(record.id, TokenScope::Cdp, exp));
        SessionView { record, vnc_url, cdp_url }
    }
}

/// Closes a session's actor. The registry held the only other clone, and it is gone.
async fn close_handle(h: Arc<SessionHandle>) {
    match Arc::try_unwrap(h) {
        Ok(h) => h.close().await,
        // A request still holds a clone: ask the actor to close without joining it.
        Err(shared) => {
            let (reply, done) = oneshot::channel();
            if shared.tx.send(Command::Close { reply }).await.is_ok() {
                let _ = done.await;
            }
        }
    }
}

/// Ends a session's actor and takes its live browser.
async fn release_handle(h: Arc<SessionHandle>) -> Option<agentbox_browser::Browser> {
    match Arc::try_unwrap(h) {
        Ok(h) => h.release().await,
        Err(shared) => {
            let (reply, done) = oneshot::channel();
            if shared.tx.send(Command::Release { reply }).await.is_ok() { done.await.ok().flatten() } else { None }
        }
    }
}

/// Metadata keys `sanitize=true` strips: images and internal prompts.
const INTERNAL_METADATA: &[&str] = &["screenshot", "image", "prompt", "observation"];

/// The record a new session will have once inserted.
fn record_of(s: &NewSession) -> SessionRecord {
    SessionRecord {
        id: s.id,
        user_id: s.user_id,
        agent_name: s.agent_name.clone(),
        status: s.status,
        execution_status: ExecutionStatus::Ready,
        status_reason: None,
        environment_id: s.environment_id,
        browser_pid: s.browser_pid,
        profile_dir: s.profile_dir.clone(),
        webhook_url: s.webhook_url.clone(),
        goal: s.goal.clone(),
        max_steps: s.max_steps,
        agent_session_type: s.agent_session_type.clone(),
        restored_from: s.restored_from.clone(),
        created_at_ms: s.created_at_ms,
        updated_at_ms: s.created_at_ms,
        deleted_at_ms: None,
    }
}

fn base_with_slash(u: &url::Url) -> url::Url {
    let mut u = u.clone();
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    u
}

/// Kills what a previous run left: browsers recorded in the store, any process under the
/// profiles dir, the profile dirs themselves and the trash; its live sessions become `error`.
async fn reap_previous_run(profiles: &Path, trash: &Path, store: &dyn Store) -> Result<(), StoreError> {
    // Browsers recorded in the store are found by the /proc scan below: only a process
    // running under our profiles dir is ours (pids are reused), so the scan alone decides.
    let (root, trash) = (profiles.to_owned(), trash.to_owned());
    let killed = tokio::task::spawn_blocking(move || {
        // A browser whose dir went to the trash still names its old path on its command line.
        let killed = procfs::reap_orphans(&root);
        for dir in [&root, &trash] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        killed
    })
    .await
    .unwrap_or(0);
    if killed > 0 {
        tracing::warn!(processes = killed, "killed browser processes left by a previous run");
    }
    let failed = store.fail_live_sessions(SERVER_RESTARTED, now_ms()).await?;
    if failed > 0 {
        tracing::warn!(sessions = failed, "sessions of a previous run are now in error: their browsers are gone");
    }
    Ok(())
}

/// The janitor: clears what killed browsers leave (waits for their process groups to go,
/// removes their profile dirs), one at a time on a blocking thread. On stop it clears what
/// is queued, then returns.
async fn run_janitor(mut remains: mpsc::UnboundedReceiver<Remains>, mut stop: watch::Receiver<bool>) {
    loop {
        let next = tokio::select! {
            r = remains.recv() => r,
            _ = stop.changed() => break,
        };
        let Some(r) = next else { return };
        let _ = tokio::task::spawn_blocking(move || r.clear_blocking()).await;
    }
    while let Ok(r) = remains.try_recv() {
        let _ = tokio::task::spawn_blocking(move || r.clear_blocking()).await;
    }
}

/// The reaper driver: calls [`Engine::reap_once`] every `interval` until stopped. It holds
/// only a weak reference so that it never keeps the engine alive.
async fn run_reaper(engine: std::sync::Weak<Engine>, mut stop: watch::Receiver<bool>, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(engine) = engine.upgrade() else { return };
        engine.reap_once().await;
    }
}
