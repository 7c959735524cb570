//! One typed configuration, layered: TOML file < environment (`AGENTBOX_*`) < flags.
//! Every field, its default and its variable is listed in the README's configuration
//! table; keep the two in step. [`Config::load`] validates once; nothing later re-checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentbox_engine::{AgentSpec, EngineConfig, Provider, Secret, config::default_agents};
use serde::Deserialize;

/// Flags of `agentbox serve`; each also reads an `AGENTBOX_*` variable.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and variables win over it).
    #[arg(long, env = "AGENTBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "AGENTBOX_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the database, keys and browser profiles [default: ./agentbox-data].
    #[arg(long, env = "AGENTBOX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Base URL clients reach this server at; vnc_url and cdp_url are built on it
    /// [default: http://<listen address>/].
    #[arg(long, env = "AGENTBOX_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Chromium executable [default: the first of /usr/lib/chromium/chromium, /usr/bin/chromium, …].
    #[arg(long, env = "AGENTBOX_CHROMIUM_PATH")]
    pub chromium_path: Option<PathBuf>,
    /// Browsers kept started ahead of demand [default: 2].
    #[arg(long, env = "AGENTBOX_POOL_SIZE")]
    pub pool_size: Option<usize>,
    /// Most live sessions on this server [default: 16].
    #[arg(long, env = "AGENTBOX_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// Most live sessions per user [default: 8].
    #[arg(long, env = "AGENTBOX_MAX_SESSIONS_PER_USER")]
    pub max_sessions_per_user: Option<usize>,
    /// A session with no API call for this long is ended, e.g. 30m, 90s [default: 30m].
    #[arg(long, env = "AGENTBOX_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// How often idle sessions are looked for [default: 1s].
    #[arg(long, env = "AGENTBOX_REAP_INTERVAL")]
    pub reap_interval: Option<String>,
    /// Longest wait for a page's load event on navigate [default: 30s].
    #[arg(long, env = "AGENTBOX_NAVIGATION_TIMEOUT")]
    pub navigation_timeout: Option<String>,
    /// Longest wait for Chromium to start [default: 30s].
    #[arg(long, env = "AGENTBOX_LAUNCH_TIMEOUT")]
    pub launch_timeout: Option<String>,
    /// A task running (not paused or waiting for the user) for longer ends with an ERROR [default: 15m].
    #[arg(long, env = "AGENTBOX_TASK_TIMEOUT")]
    pub task_timeout: Option<String>,
    /// How often an SSE stream sends a heartbeat event [default: 30s].
    #[arg(long, env = "AGENTBOX_SSE_HEARTBEAT")]
    pub sse_heartbeat: Option<String>,
    /// Waits between webhook attempts, comma-separated; one more attempt than waits
    /// [default: 5s,30s,2m,10m,30m,1h].
    #[arg(long, env = "AGENTBOX_WEBHOOK_RETRY_SCHEDULE")]
    pub webhook_retry_schedule: Option<String>,
    /// A webhook receiver that has not answered in this long failed the attempt [default: 10s].
    #[arg(long, env = "AGENTBOX_WEBHOOK_TIMEOUT")]
    pub webhook_timeout: Option<String>,
    /// Deliver webhooks to loopback, private and link-local addresses [default: false].
    #[arg(long, env = "AGENTBOX_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: Option<bool>,
    /// Most MiB of browser profile (caches left out, before compression) one snapshot may
    /// hold [default: 1024].
    #[arg(long, env = "AGENTBOX_SNAPSHOT_MAX_MIB")]
    pub snapshot_max_mib: Option<u64>,
    /// Most browsers parked for memory snapshots at once; 0 turns memory snapshots off
    /// (a memory save then keeps only its filesystem copy) [default: 4].
    #[arg(long, env = "AGENTBOX_STANDBY_MAX_BROWSERS")]
    pub standby_max_browsers: Option<usize>,
    /// Most memory (PSS, MiB) all parked browsers may hold together [default: 4096].
    #[arg(long, env = "AGENTBOX_STANDBY_MAX_MEMORY_MIB")]
    pub standby_max_memory_mib: Option<u64>,
    /// How long a parked browser waits for a restore before it is closed [default: 15m].
    #[arg(long, env = "AGENTBOX_STANDBY_TTL")]
    pub standby_ttl: Option<String>,
    /// Browser viewport, WIDTHxHEIGHT [default: 1280x720].
    #[arg(long, env = "AGENTBOX_VIEWPORT")]
    pub viewport: Option<String>,
    /// Log filter, e.g. info or agentbox=debug,info [default: info].
    #[arg(long, env = "AGENTBOX_LOG")]
    pub log: Option<String>,
}

/// The TOML file: the same settings (snake_case names), plus agent definitions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    public_url: Option<String>,
    chromium_path: Option<PathBuf>,
    pool_size: Option<usize>,
    max_sessions: Option<usize>,
    max_sessions_per_user: Option<usize>,
    idle_timeout: Option<String>,
    reap_interval: Option<String>,
    navigation_timeout: Option<String>,
    launch_timeout: Option<String>,
    task_timeout: Option<String>,
    sse_heartbeat: Option<String>,
    webhook_retry_schedule: Option<String>,
    webhook_timeout: Option<String>,
    webhook_allow_private: Option<bool>,
    snapshot_max_mib: Option<u64>,
    standby_max_browsers: Option<usize>,
    standby_max_memory_mib: Option<u64>,
    standby_ttl: Option<String>,
    viewport: Option<String>,
    log: Option<String>,
    /// Agent names and what runs them, `[agents.my-agent]`; `agi-0` and `agi-0-fast`
    /// always exist (on the rule planner unless configured here).
    #[serde(default)]
    agents: BTreeMap<String, AgentFile>,
}

/// `[agents.NAME]`: which planner runs an agent name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    /// `rules` (default), `openai` (any OpenAI-compatible server) or `anthropic`.
    provider: Option<String>,
    base_url: Option<String>,
    model: Option<String>,
    /// The environment variable holding the API key (never the key itself).
    api_key_env: Option<String>,
    vision: Option<bool>,
    max_text: Option<usize>,
    max_output_tokens: Option<u32>,
    request_timeout: Option<String>,
    max_retries: Option<u32>,
    retry_base: Option<String>,
    token_budget: Option<u64>,
}

impl AgentFile {
    fn into_spec(self, name: &str) -> Result<AgentSpec, ConfigError> {
        let err = |m: String| ConfigError(format!("[agents.{name}] {m}"));
        let mut spec = AgentSpec::rules(name, name.ends_with("-fast"));
        spec.provider = match self.provider.as_deref().unwrap_or("rules") {
            "rules" => Provider::Rules,
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            other => return Err(err(format!("provider {other:?} is unknown; use rules, openai or anthropic"))),
        };
        if let Some(u) = self.base_url {
            let parsed = url::Url::parse(&u).map_err(|e| err(format!("base_url {u:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(err("base_url must be http or https".into()));
            }
            spec.base_url = Some(parsed);
        }
        spec.model = self.model.unwrap_or_default();
        if spec.provider != Provider::Rules && spec.model.trim().is_empty() {
            return Err(err(format!("needs model = \"…\" for provider {}", spec.provider.as_str())));
        }
        if let Some(var) = self.api_key_env {
            let key = std::env::var(&var).map_err(|_| err(format!("api_key_env names {var}, which is not set in the environment")))?;
            spec.api_key = Some(Secret(key));
        }
        if let Some(v) = self.vision {
            spec.vision = v;
        }
        if let Some(n) = self.max_text {
            spec.max_text = n.clamp(200, 100_000);
        }
        if let Some(n) = self.max_output_tokens {
            spec.max_output_tokens = n.max(16);
        }
        if let Some(d) = self.request_timeout {
            spec.request_timeout = parse_duration(&d).map_err(|e| err(format!("request_timeout: {e}")))?;
        }
        if let Some(n) = self.max_retries {
            spec.max_retries = n.min(10);
        }
        if let Some(d) = self.retry_base {
            spec.retry_base = parse_duration(&d).map_err(|e| err(format!("retry_base: {e}")))?;
        }
        spec.token_budget = self.token_budget;
        Ok(spec)
    }
}

/// The validated configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Absolute.
    pub data_dir: PathBuf,
    /// `None`: derived from the bound address at start-up.
    pub public_url: Option<url::Url>,
    pub log: String,
    /// The engine's settings; its `data_dir` and `public_url` are set at start-up.
    pub engine: EngineConfig,
}

/// A configuration problem, said so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./agentbox-data";

impl Config {
    /// Layers file < environment < flags (clap already merged the last two) and validates.
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = args.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
        let data_dir = args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let data_dir = absolute(&data_dir)?;
        let public_url = args
            .public_url
            .clone()
            .or(file.public_url)
            .map(|u| {
                let parsed = url::Url::parse(&u).map_err(|e| ConfigError(format!("public_url {u:?} is not a URL: {e}")))?;
                match parsed.scheme() {
                    "http" | "https" => Ok(parsed),
                    s => Err(ConfigError(format!("public_url must be http or https, not {s}"))),
                }
            })
            .transpose()?;

        let placeholder = url::Url::parse("http://127.0.0.1/").expect("valid");
        let mut engine = EngineConfig::with_data_dir(data_dir.clone(), placeholder);
        engine.chromium_path = args.chromium_path.clone().or(file.chromium_path);
        if let Some(n) = args.pool_size.or(file.pool_size) {
            engine.pool_size = n;
        }
        if let Some(n) = args.max_sessions.or(file.max_sessions) {
            engine.max_sessions = positive("max_sessions", n)?;
        }
        if let Some(n) = args.max_sessions_per_user.or(file.max_sessions_per_user) {
            engine.max_sessions_per_user = positive("max_sessions_per_user", n)?;
        }
        let durations = [
            ("idle_timeout", args.idle_timeout.clone().or(file.idle_timeout), &mut engine.idle_timeout),
            ("reap_interval", args.reap_interval.clone().or(file.reap_interval), &mut engine.reap_interval),
            ("navigation_timeout", args.navigation_timeout.clone().or(file.navigation_timeout), &mut engine.navigation_timeout),
            ("launch_timeout", args.launch_timeout.clone().or(file.launch_timeout), &mut engine.launch_timeout),
            ("task_timeout", args.task_timeout.clone().or(file.task_timeout), &mut engine.task_timeout),
            ("sse_heartbeat", args.sse_heartbeat.clone().or(file.sse_heartbeat), &mut engine.sse_heartbeat),
            ("webhook_timeout", args.webhook_timeout.clone().or(file.webhook_timeout), &mut engine.webhooks.timeout),
            ("standby_ttl", args.standby_ttl.clone().or(file.standby_ttl), &mut engine.standby.ttl),
        ];
        for (name, value, slot) in durations {
            if let Some(v) = value {
                *slot = parse_duration(&v).map_err(|e| ConfigError(format!("{name}: {e}")))?;
                if slot.is_zero() {
                    return Err(ConfigError(format!("{name} must be more than zero")));
                }
            }
        }
        if let Some(v) = args.webhook_retry_schedule.clone().or(file.webhook_retry_schedule) {
            let schedule: Result<Vec<Duration>, String> = v.split(',').map(parse_duration).collect();
            engine.webhooks.schedule = schedule.map_err(|e| ConfigError(format!("webhook_retry_schedule: {e}")))?;
        }
        if let Some(b) = args.webhook_allow_private.or(file.webhook_allow_private) {
            engine.webhooks.allow_private = b;
        }
        if let Some(n) = args.snapshot_max_mib.or(file.snapshot_max_mib) {
            engine.snapshot_max_bytes = positive("snapshot_max_mib", n as usize)? as u64 * 1024 * 1024;
        }
        if let Some(n) = args.standby_max_browsers.or(file.standby_max_browsers) {
            engine.standby.max_browsers = n;
        }
        if let Some(n) = args.standby_max_memory_mib.or(file.standby_max_memory_mib) {
            engine.standby.max_memory_kib = positive("standby_max_memory_mib", n as usize)? as u64 * 1024;
        }
        if let Some(v) = args.viewport.clone().or(file.viewport) {
            engine.viewport = parse_viewport(&v)?;
        }
        let mut agents = default_agents();
        for (name, agent) in file.agents {
            if name.trim().is_empty() || name.len() > 100 {
                return Err(ConfigError("agent names must be 1 to 100 characters".into()));
            }
            let spec = agent.into_spec(&name)?;
            match agents.iter_mut().find(|a| a.name == name) {
                Some(slot) => *slot = spec,
                None => agents.push(spec),
            }
        }
        engine.agents = agents;
        let log = args.log.clone().or(file.log).unwrap_or_else(|| "info".to_owned());
        Ok(Self { listen, data_dir, public_url, log, engine })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))
}

fn absolute(p: &Path) -> Result<PathBuf, ConfigError> {
    if p.is_absolute() {
        return Ok(p.to_owned());
    }
    let cwd = std::env::current_dir().map_err(|e| ConfigError(format!("cannot read the current directory: {e}")))?;
    Ok(cwd.join(p))
}

fn positive(name: &str, n: usize) -> Result<usize, ConfigError> {
    if n == 0 {
        return Err(ConfigError(format!("{name} must be at least 1")));
    }
    Ok(n)
}

/// `500ms`, `90s`, `30m`, `2h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration; write e.g. 500ms, 90s, 30m or 2h"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit {u:?} in {s:?}; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is out of range"))
}

fn parse_viewport(s: &str) -> Result<(u32, u32), ConfigError> {
    let bad = || ConfigError(format!("viewport {s:?} must be WIDTHxHEIGHT, each 100 to 4000, e.g. 1280x720"));
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?);
    if !(100..=4000).contains(&w) || !(100..=4000).contains(&h) {
        return Err(bad());
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("3 weeks").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("99999999999999999999999h").unwrap_err().contains("out of range"));
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agentbox.toml");
        std::fs::write(&file, "pool_size = 5\nmax_sessions = 3\nidle_timeout = \"10m\"\n[agents.my-agent]\n").unwrap();
        let args = ServeArgs { config: Some(file), max_sessions: Some(7), ..Default::default() };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.engine.pool_size, 5);
        assert_eq!(c.engine.max_sessions, 7);
        assert_eq!(c.engine.idle_timeout, Duration::from_secs(600));
        assert_eq!(c.engine.max_sessions_per_user, 8, "default");
        let names: Vec<_> = c.engine.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["agi-0", "agi-0-fast", "my-agent"]);
        assert!(c.data_dir.is_absolute());
    }

    #[test]
    fn a_misspelled_setting_in_the_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agentbox.toml");
        std::fs::write(&file, "pool_sise = 5\n").unwrap();
        let err = Config::load(&ServeArgs { config: Some(file), ..Default::default() }).unwrap_err();
        assert!(err.0.contains("pool_sise"), "{err}");
    }

    #[test]
    fn agents_take_a_provider_and_a_key_from_a_named_variable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agentbox.toml");
        let text = "[agents.agi-0]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key_env = \"PATH\"\n\
                    [agents.claude]\nprovider = \"anthropic\"\nmodel = \"c\"\nvision = false\n";
        std::fs::write(&file, text).unwrap();
        let c = Config::load(&ServeArgs { config: Some(file.clone()), ..Default::default() }).unwrap();
        let a = &c.engine.agents;
        assert_eq!((a[0].name.as_str(), a[0].provider), ("agi-0", Provider::OpenAi));
        assert!(a[0].api_key.is_some() && !format!("{:?}", a[0]).contains(&std::env::var("PATH").unwrap()), "the key never shows in Debug");
        assert_eq!((a[1].name.as_str(), a[1].provider, a[1].vision), ("agi-0-fast", Provider::Rules, false));
        assert_eq!((a[2].name.as_str(), a[2].provider, a[2].vision), ("claude", Provider::Anthropic, false));

        std::fs::write(&file, "[agents.x]\nprovider = \"openai\"\n").unwrap();
        let err = Config::load(&ServeArgs { config: Some(file.clone()), ..Default::default() }).unwrap_err();
        assert!(err.0.contains("[agents.x] needs model"), "{err}");
        std::fs::write(&file, "[agents.x]\nprovider = \"openai\"\nmodel = \"m\"\napi_key_env = \"AGENTBOX_SURELY_UNSET_VAR\"\n").unwrap();
        let err = Config::load(&ServeArgs { config: Some(file), ..Default::default() }).unwrap_err();
        assert!(err.0.contains("AGENTBOX_SURELY_UNSET_VAR"), "{err}");
    }

    #[test]
    fn the_webhook_retry_schedule_is_a_list_of_durations() {
        let c = Config::load(&ServeArgs { webhook_retry_schedule: Some("100ms, 2s,1m".into()), ..Default::default() }).unwrap();
        assert_eq!(c.engine.webhooks.schedule, [Duration::from_millis(100), Duration::from_secs(2), Duration::from_secs(60)]);
        let d = Config::load(&ServeArgs::default()).unwrap();
        assert!(d.engine.webhooks.schedule.len() + 1 >= 5 && d.engine.webhooks.schedule.iter().sum::<Duration>() >= Duration::from_secs(3600));
        assert!(!d.engine.webhooks.allow_private);
        assert!(Config::load(&ServeArgs { webhook_retry_schedule: Some("5s,soon".into()), ..Default::default() }).is_err());
    }

    #[test]
    fn a_bad_viewport_or_zero_limit_is_refused() {
        assert!(Config::load(&ServeArgs { viewport: Some("big".into()), ..Default::default() }).is_err());
        assert!(Config::load(&ServeArgs { max_sessions: Some(0), ..Default::default() }).is_err());
        assert_eq!(parse_viewport("800x600").unwrap(), (800, 600));
    }
}
