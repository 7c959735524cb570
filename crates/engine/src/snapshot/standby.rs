//! Parked browsers: the memory snapshots.
//!
//! A parked browser is a session's live Chromium, frozen (SIGSTOP on its process group) and
//! kept for one later restore of its environment. The pool is bounded by count, by total
//! memory (PSS measured when parked) and by age; what falls out is handed back to the caller
//! to close. The registry lock is a plain mutex held only for list operations.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentbox_browser::Browser;
use uuid::Uuid;

use crate::time::now_ms;

/// The standby pool's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyLimits {
    /// Most browsers parked at once (0 turns memory snapshots off).
    pub max_browsers: usize,
    /// Most memory (PSS, KiB) all parked browsers may hold together.
    pub max_memory_kib: u64,
    /// How long a browser stays parked.
    pub ttl: Duration,
}

/// What the API shows of a parked browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkedInfo {
    pub session_id: Uuid,
    pub parked_at_ms: i64,
    pub expires_at_ms: i64,
    pub memory_kib: u64,
}

struct Parked {
    environment_id: Uuid,
    browser: Browser,
    since: Instant,
    info: ParkedInfo,
}

/// The parked browsers, one per environment at most, oldest first.
pub struct Standby {
    limits: StandbyLimits,
    parked: Mutex<Vec<Parked>>,
}

/// Why a browser was not parked; it comes back to be closed.
pub struct NotParked {
    pub browser: Browser,
    pub why: String,
}

impl Standby {
    pub fn new(limits: StandbyLimits) -> Self {
        Self { limits, parked: Mutex::default() }
    }

    pub fn limits(&self) -> StandbyLimits {
        self.limits
    }

    /// Parks a frozen browser for `environment_id`, replacing the one parked there before.
    /// Returns the browsers that must now be closed (the replaced one and any evicted to stay
    /// within bounds), or the browser itself when it can never fit.
    pub fn park(&self, environment_id: Uuid, session_id: Uuid, browser: Browser, memory_kib: u64) -> Result<Vec<Browser>, Box<NotParked>> {
        if self.limits.max_browsers == 0 {
            return Err(Box::new(NotParked { browser, why: "memory snapshots are turned off (standby_max_browsers = 0)".into() }));
        }
        if memory_kib > self.limits.max_memory_kib {
            let why = format!("the browser holds {memory_kib} KiB, more than the standby pool's {} KiB", self.limits.max_memory_kib);
            return Err(Box::new(NotParked { browser, why }));
        }
        let now = now_ms();
        let info = ParkedInfo { session_id, parked_at_ms: now, expires_at_ms: now + self.limits.ttl.as_millis() as i64, memory_kib };
        let mut parked = self.parked.lock().expect("standby lock");
        let mut out: Vec<Browser> = Vec::new();
        if let Some(i) = parked.iter().position(|p| p.environment_id == environment_id) {
            out.push(parked.remove(i).browser);
        }
        parked.push(Parked { environment_id, browser, since: Instant::now(), info });
        while parked.len() > self.limits.max_browsers || parked.iter().map(|p| p.info.memory_kib).sum::<u64>() > self.limits.max_memory_kib {
            let evicted = parked.remove(0);
            tracing::info!(environment_id = %evicted.environment_id, "evicting a parked browser to stay within the standby pool's bounds");
            out.push(evicted.browser);
        }
        Ok(out)
    }

    /// Takes the browser parked for `environment_id` (still frozen): a parked browser is
    /// used once.
    pub fn take(&self, environment_id: Uuid) -> Option<Browser> {
        let mut parked = self.parked.lock().expect("standby lock");
        let i = parked.iter().position(|p| p.environment_id == environment_id && p.since.elapsed() < self.limits.ttl)?;
        Some(parked.remove(i).browser)
    }

    pub fn info(&self, environment_id: Uuid) -> Option<ParkedInfo> {
        self.parked.lock().expect("standby lock").iter().find(|p| p.environment_id == environment_id).map(|p| p.info)
    }

    /// Removes what is parked for `environment_id`, to be closed.
    pub fn remove(&self, environment_id: Uuid) -> Option<Browser> {
        let mut parked = self.parked.lock().expect("standby lock");
        let i = parked.iter().position(|p| p.environment_id == environment_id)?;
        Some(parked.remove(i).browser)
    }

    /// Removes the browsers parked for longer than the TTL, to be closed.
    pub fn expired(&self) -> Vec<Browser> {
        let mut parked = self.parked.lock().expect("standby lock");
        let (old, keep): (Vec<Parked>, Vec<Parked>) = parked.drain(..).partition(|p| p.since.elapsed() >= self.limits.ttl);
        *parked = keep;
        old.into_iter().map(|p| p.browser).collect()
    }

    /// Removes every parked browser (shutdown).
    pub fn drain(&self) -> Vec<Browser> {
        self.parked.lock().expect("standby lock").drain(..).map(|p| p.browser).collect()
    }

    pub fn len(&self) -> usize {
        self.parked.lock().expect("standby lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
