//! The warm pool: browsers started ahead of demand so that creating a session only hands
//! one over.
//!
//! The pool owns its idle browsers. [`WarmPool::fill_once`] is the one-step function (start
//! one browser if the pool is below its target); [`WarmPool::run`] is the driver that calls
//! it whenever a browser was taken, until its stop signal fires. A browser found dead when
//! taken is dropped (which kills its group) and the next one is tried.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::launch::{Browser, LaunchError, LaunchOptions, find_chromium};

/// Starts browsers with one shared configuration, each in a fresh profile dir under `profiles_root`.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The configured Chromium; `None` looks in the usual places at each launch, so a
    /// Chromium installed while the server runs is found without a restart.
    pub executable: Option<PathBuf>,
    pub profiles_root: PathBuf,
    pub viewport: (u32, u32),
    pub timeout: Duration,
}

impl Launcher {
    pub async fn launch(&self) -> Result<Browser, LaunchError> {
        self.launch_in(self.profiles_root.join(uuid::Uuid::new_v4().to_string())).await
    }

    /// Starts a browser on a profile dir that already holds a profile (a restored one).
    pub async fn launch_in(&self, profile_dir: PathBuf) -> Result<Browser, LaunchError> {
        let opts = LaunchOptions { executable: find_chromium(self.executable.as_deref())?, profile_dir, viewport: self.viewport, timeout: self.timeout };
        Browser::launch(&opts).await
    }

    pub fn profiles_root(&self) -> &Path {
        &self.profiles_root
    }
}

/// A bounded set of idle, ready browsers.
pub struct WarmPool {
    launcher: Launcher,
    target: usize,
    ready: Mutex<VecDeque<Browser>>,
    /// Wakes the driver when a browser was taken.
    taken: Notify,
    /// Wakes waiters of [`WarmPool::wait_full`] when a browser was added.
    added: Notify,
}

impl WarmPool {
    pub fn new(launcher: Launcher, target: usize) -> Arc<Self> {
        Arc::new(Self { launcher, target, ready: Mutex::default(), taken: Notify::new(), added: Notify::new() })
    }

    pub fn launcher(&self) -> &Launcher {
        &self.launcher
    }

    /// How many idle browsers are ready now.
    pub fn len(&self) -> usize {
        self.ready.lock().expect("pool lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands over a ready browser and whether it came warm from the pool; starts one when
    /// the pool is empty.
    pub async fn acquire(&self) -> Result<(Browser, bool), LaunchError> {
        loop {
            let next = self.ready.lock().expect("pool lock").pop_front();
            match next {
                Some(b) => {
                    self.taken.notify_one();
                    if b.is_alive() {
                        return Ok((b, true));
                    }
                    tracing::warn!(pid = b.pid(), "a pooled browser had died; discarding it");
                }
                None => {
                    self.taken.notify_one();
                    return Ok((self.launcher.launch().await?, false));
                }
            }
        }
    }

    /// One step of the refill loop: starts one browser if the pool is below target.
    /// Returns whether it added one.
    pub async fn fill_once(&self) -> Result<bool, LaunchError> {
        if self.len() >= self.target {
            return Ok(false);
        }
        let browser = self.launcher.launch().await?;
        self.ready.lock().expect("pool lock").push_back(browser);
        self.added.notify_waiters();
        Ok(true)
    }

    /// The refill driver: keeps the pool at its target until `stop` turns true, then
    /// kills the idle browsers. A launch failure is logged and retried after a pause.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        loop {
            let wake = self.taken.notified();
            let pause = match self.fill_once().await {
                Ok(true) => None,
                Ok(false) => Some(None),
                Err(e) => {
                    tracing::error!(error = %e, "warm pool could not start a browser; retrying in 5 s");
                    Some(Some(Duration::from_secs(5)))
                }
            };
            if *stop.borrow() {
                break;
            }
            match pause {
                None => continue,
                Some(None) => tokio::select! {
                    _ = wake => {}
                    _ = stop.changed() => break,
                },
                Some(Some(d)) => tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stop.changed() => break,
                },
            }
        }
        self.drain().await;
    }

    /// Waits until the pool holds its target number of browsers (used by benchmarks and
    /// tests to measure the warm path, not by request handling).
    pub async fn wait_full(&self) {
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if self.len() >= self.target {
                return;
            }
            added.await;
        }
    }

    /// Kills every idle browser.
    pub async fn drain(&self) {
        let idle: Vec<Browser> = self.ready.lock().expect("pool lock").drain(..).collect();
        for b in idle {
            b.close().await;
        }
    }
}
