//! The engine's part of the configuration, already validated by the server.

use std::path::PathBuf;
use std::time::Duration;

/// What decides an agent's actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// The built-in rule planner: imperative tasks, no model, works offline.
    Rules,
    /// Any OpenAI-compatible chat-completions endpoint (OpenAI, Ollama, vLLM, llama.cpp, OpenRouter).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Rules => "rules",
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// An agent name clients may ask for, and what runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    pub name: String,
    pub provider: Provider,
    /// The provider's base URL (`…/v1` for OpenAI-compatible servers, the host for Anthropic).
    pub base_url: Option<url::Url>,
    pub model: String,
    pub api_key: Option<Secret>,
    /// Send a screenshot with each step (models that take images).
    pub vision: bool,
    /// The visible-text digest is cut at this many characters.
    pub max_text: usize,
    /// Most tokens a reply may use.
    pub max_output_tokens: u32,
    pub request_timeout: Duration,
    /// Retries after a 429, a 5xx or no answer (so `max_retries + 1` attempts at most).
    pub max_retries: u32,
    /// First retry delay; doubled each retry, with jitter; a `Retry-After` header wins.
    pub retry_base: Duration,
    /// A task that has used this many tokens ends with an ERROR.
    pub token_budget: Option<u64>,
}

impl AgentSpec {
    /// An agent run by the rule planner; `fast` ones get a shorter text digest.
    pub fn rules(name: &str, fast: bool) -> Self {
        Self {
            name: name.to_owned(),
            provider: Provider::Rules,
            base_url: None,
            model: String::new(),
            api_key: None,
            vision: !fast,
            max_text: if fast { 1500 } else { 4000 },
            max_output_tokens: if fast { 512 } else { 1024 },
            request_timeout: Duration::from_secs(60),
            max_retries: 3,
            retry_base: Duration::from_millis(500),
            token_budget: None,
        }
    }
}

/// Everything the engine needs to run sessions.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Absolute; holds the database, the token key and the browser profiles.
    pub data_dir: PathBuf,
    /// Base of `vnc_url` and `cdp_url` (scheme, host, port and optional path prefix).
    pub public_url: url::Url,
    /// Chromium to run; found among the usual paths when `None`.
    pub chromium_path: Option<PathBuf>,
    pub pool_size: usize,
    pub max_sessions: usize,
    pub max_sessions_per_user: usize,
    pub idle_timeout: Duration,
    pub reap_interval: Duration,
    pub navigation_timeout: Duration,
    pub launch_timeout: Duration,
    pub viewport: (u32, u32),
    pub screenshot_quality: u8,
    pub agents: Vec<AgentSpec>,
    /// A task running (not paused, not waiting for the user) for longer ends with an ERROR.
    pub task_timeout: Duration,
    /// How often an SSE stream sends a heartbeat.
    pub sse_heartbeat: Duration,
    pub webhooks: crate::webhooks::WebhookConfig,
    /// Most bytes of profile (caches left out, before compression) a snapshot may hold.
    pub snapshot_max_bytes: u64,
    /// Bounds of the pool of parked browsers (memory snapshots).
    pub standby: crate::snapshot::StandbyLimits,
}

impl EngineConfig {
    /// Defaults for a data dir, as documented in the README.
    pub fn with_data_dir(data_dir: PathBuf, public_url: url::Url) -> Self {
        Self {
            data_dir,
            public_url,
            chromium_path: None,
            pool_size: 2,
            max_sessions: 16,
            max_sessions_per_user: 8,
            idle_timeout: Duration::from_secs(30 * 60),
            reap_interval: Duration::from_secs(1),
            navigation_timeout: Duration::from_secs(30),
            launch_timeout: Duration::from_secs(30),
            viewport: (1280, 720),
            screenshot_quality: 80,
            agents: default_agents(),
            task_timeout: Duration::from_secs(15 * 60),
            sse_heartbeat: Duration::from_secs(30),
            webhooks: crate::webhooks::WebhookConfig::default(),
            snapshot_max_bytes: 1 << 30,
            standby: crate::snapshot::StandbyLimits { max_browsers: 4, max_memory_kib: 4 << 20, ttl: Duration::from_secs(15 * 60) },
        }
    }

    pub fn profiles_dir(&self) -> PathBuf {
        self.data_dir.join("profiles")
    }

    /// Snapshot archives (the local blob store).
    pub fn snapshots_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }

    /// Profile dirs of killed browsers wait here for the janitor.
    pub fn trash_dir(&self) -> PathBuf {
        self.data_dir.join("trash")
    }
}

/// `agi-0` (vision, full) and `agi-0-fast` (text-only, fewer tokens), the names every
/// client expects; on the rule planner until configured otherwise.
pub fn default_agents() -> Vec<AgentSpec> {
    vec![AgentSpec::rules("agi-0", false), AgentSpec::rules("agi-0-fast", true)]
}
