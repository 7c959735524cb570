//! The engine's part of the configuration, already validated by the server.

use std::path::PathBuf;
use std::time::Duration;

/// An agent name clients may ask for, and what runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    pub name: String,
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
        }
    }

    pub fn profiles_dir(&self) -> PathBuf {
        self.data_dir.join("profiles")
    }

    /// Profile dirs of killed browsers wait here for the janitor.
    pub fn trash_dir(&self) -> PathBuf {
        self.data_dir.join("trash")
    }
}

/// `agi-0` and `agi-0-fast`, the names every client expects.
pub fn default_agents() -> Vec<AgentSpec> {
    ["agi-0", "agi-0-fast"].iter().map(|n| AgentSpec { name: (*n).to_owned() }).collect()
}
