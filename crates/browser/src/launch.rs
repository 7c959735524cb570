//! Starting and stopping one Chromium process group.
//!
//! [`Browser::launch`] spawns Chromium in a process group of its own (so that killing the
//! group also kills its zygotes, renderers and utility processes), reads the DevTools URL
//! from its stderr, connects, and attaches to one page with a fixed viewport. The returned
//! [`Browser`] owns the process: [`Browser::close`] kills the group, waits for the main
//! process and removes the profile dir; dropping it does the same without waiting.
//! Two small tasks belong to each browser and are aborted with it: one drains stderr (so
//! Chromium never blocks on a full pipe), one waits for the main process to exit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cdp::{CdpError, Connection};
use crate::page::Page;

/// Where Chromium is looked for when no path is configured, in order.
pub const CHROMIUM_CANDIDATES: &[&str] = &[
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
];

/// Finds a Chromium executable: the configured path if given, else the first candidate that exists.
pub fn find_chromium(configured: Option<&Path>) -> Result<PathBuf, LaunchError> {
    if let Some(p) = configured {
        return if p.is_file() { Ok(p.to_owned()) } else { Err(LaunchError::NotFound(p.display().to_string())) };
    }
    CHROMIUM_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| LaunchError::NotFound(CHROMIUM_CANDIDATES.join(", ")))
}

/// What a launch needs.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    pub executable: PathBuf,
    /// A fresh directory for this browser's profile; created if missing, removed on close.
    pub profile_dir: PathBuf,
    pub viewport: (u32, u32),
    /// How long Chromium may take to print its DevTools URL and accept the connection.
    pub timeout: Duration,
}

/// Why a browser could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("Chromium was not found (looked at: {0}); install it (apt-get install chromium) or set chromium_path")]
    NotFound(String),
    #[error("could not create the profile directory {path}: {source}")]
    ProfileDir { path: String, source: std::io::Error },
    #[error("could not start Chromium ({path}): {source}")]
    Spawn { path: String, source: std::io::Error },
    #[error("Chromium exited before it was ready; last output: {0}")]
    Exited(String),
    #[error("Chromium did not become ready within {0:?}")]
    Timeout(Duration),
    #[error("Chromium started but its DevTools endpoint failed: {0}")]
    Cdp(#[from] CdpError),
}

/// One running Chromium process group with a DevTools connection and an active page.
pub struct Browser {
    pid: u32,
    ws_url: String,
    profile_dir: PathBuf,
    conn: Arc<Connection>,
    page: Page,
    exited: watch::Receiver<bool>,
    tasks: [JoinHandle<()>; 2],
    killed: bool,
    /// A browser someone else runs: never killed, no profile dir of ours.
    external: bool,
    /// How it is frozen, while it is.
    frozen: Option<crate::freeze::Freezer>,
}

impl Browser {
    /// Starts Chromium and returns once a page is attached and ready for commands.
    pub async fn launch(opts: &LaunchOptions) -> Result<Browser, LaunchError> {
        let started = std::time::Instant::now();
        std::fs::create_dir_all(&opts.profile_dir)
            .map_err(|source| LaunchError::ProfileDir { path: opts.profile_dir.display().to_string(), source })?;
        let mut child = Command::new(&opts.executable)
            .args(chromium_args(&opts.profile_dir, opts.viewport))
            .env("DBUS_SESSION_BUS_ADDRESS", "disabled:")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|source| LaunchError::Spawn { path: opts.executable.display().to_string(), source })?;
        let pid = child.id().unwrap_or(0);
        // From here on a failure must not leave the group behind.
        let guard = KillGuard { pid, profile_dir: Some(opts.profile_dir.clone()) };

        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let mut tail: Vec<String> = Vec::new();
        let found = tokio::time::timeout(opts.timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return Some(url.trim().to_owned());
                }
                if tail.len() == 5 {
                    tail.remove(0);
                }
                tail.push(line);
            }
            None
        })
        .await;
        let devtools_after = started.elapsed();
        let ws_url = match found {
            Ok(Some(url)) => url,
            Ok(None) => return Err(LaunchError::Exited(tail.join(" | "))),
            Err(_) => return Err(LaunchError::Timeout(opts.timeout)),
        };

        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::trace!(target: "chromium", "{line}");
            }
        });
        let (exited_tx, exited) = watch::channel(false);
        let waiter = tokio::spawn(async move {
            let _ = child.wait().await;
            let _ = exited_tx.send(true);
        });
        let tasks = [drain, waiter];

        let setup = async {
            let conn = Connection::connect(&ws_url).await?;
            let page = Page::attach_first(&conn, opts.viewport).await?;
            Ok::<_, CdpError>((conn, page))
        };
        let (conn, page) = match tokio::time::timeout(opts.timeout, setup).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tasks.iter().for_each(JoinHandle::abort);
                return Err(e.into());
            }
            Err(_) => {
                tasks.iter().for_each(JoinHandle::abort);
                return Err(LaunchError::Timeout(opts.timeout));
            }
        };
        std::mem::forget(guard);
        tracing::debug!(pid, devtools_ms = devtools_after.as_secs_f64() * 1e3, ready_ms = started.elapsed().as_secs_f64() * 1e3, "browser launched");
        Ok(Browser { pid, ws_url, profile_dir: opts.profile_dir.clone(), conn, page, exited, tasks, killed: false, external: false, frozen: None })
    }

    /// Attaches to a browser someone else runs, by its browser-level DevTools WebSocket URL.
    /// Closing or dropping it only disconnects: a browser agentbox did not start is never
    /// killed. It counts as exited when the connection drops.
    pub async fn connect_external(ws_url: &str, viewport: (u32, u32), timeout: Duration) -> Result<Browser, LaunchError> {
        let setup = async {
            let conn = Connection::connect(ws_url).await?;
            let page = Page::attach_first(&conn, viewport).await?;
            Ok::<_, CdpError>((conn, page))
        };
        let (conn, page) = tokio::time::timeout(timeout, setup).await.map_err(|_| LaunchError::Timeout(timeout))??;
        let (exited_tx, exited) = watch::channel(false);
        let watched = conn.clone();
        let waiter = tokio::spawn(async move {
            watched.wait_closed().await;
            let _ = exited_tx.send(true);
        });
        let idle = tokio::spawn(async {});
        Ok(Browser {
            pid: 0,
            ws_url: ws_url.to_owned(),
            profile_dir: PathBuf::new(),
            conn,
            page,
            exited,
            tasks: [idle, waiter],
            killed: true,
            external: true,
            frozen: None,
        })
    }

    /// True for a browser agentbox attached to but did not start.
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// The main process id; it is also the process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The browser-level DevTools WebSocket URL (on 127.0.0.1).
    pub fn ws_url(&self) -> &str {
        &self.ws_url
    }

    pub fn profile_dir(&self) -> &Path {
        &self.profile_dir
    }

    /// The page actions act on.
    pub fn page(&self) -> &Page {
        &self.page
    }

    /// The browser-level DevTools connection.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    /// False once the main process has exited or the DevTools socket closed.
    pub fn is_alive(&self) -> bool {
        !*self.exited.borrow() && !self.conn.is_closed()
    }

    /// Resolves when the main Chromium process exits (at once if it already has).
    pub async fn exited(&self) {
        let mut rx = self.exited.clone();
        let _ = rx.wait_for(|gone| *gone).await;
    }

    /// Resolves when the browser can no longer be used: its main process exited or its
    /// DevTools socket closed, whichever is seen first.
    pub async fn gone(&self) {
        tokio::select! {
            () = self.exited() => {}
            () = self.conn.wait_closed() => {}
        }
    }

    /// Makes `page` the one [`Browser::page`] returns (the tab a session was acting on,
    /// before the browser is handed to another session).
    pub fn set_page(&mut self, page: Page) {
        self.page = page;
    }

    /// Chromium's product string (`Chrome/131.0.6778.85`).
    pub async fn version(&self) -> Result<String, CdpError> {
        let v = self.conn.call("Browser.getVersion", serde_json::json!({}), None).await?;
        Ok(v["product"].as_str().unwrap_or_default().to_owned())
    }

    /// Stops every process of the group (the cgroup v2 freezer, else SIGSTOP; see
    /// `freeze.rs`): the browser keeps its memory and its DevTools socket but runs nothing
    /// until [`Browser::thaw`]. SIGKILL still ends it. Blocks for a few milliseconds.
    pub fn freeze(&mut self) {
        if !self.external && self.pid > 1 && self.frozen.is_none() {
            self.frozen = Some(crate::freeze::freeze(self.pid));
        }
    }

    /// Lets a frozen browser run again.
    pub fn thaw(&mut self) {
        if let Some(how) = self.frozen.take() {
            crate::freeze::thaw(self.pid, &how);
        }
    }

    /// Asks Chromium to quit (`Browser.close`), so that it writes cookies, localStorage and
    /// IndexedDB to the profile dir, and waits up to `timeout` for it to exit (then kills
    /// the group). The profile dir stays; the returned [`Remains`] removes it.
    pub async fn close_clean(mut self, timeout: Duration) -> Remains {
        let remains = Remains { pgid: self.pid, dir: self.profile_dir.clone() };
        if self.external {
            return Remains { pgid: 0, dir: PathBuf::new() };
        }
        // The reply may never come: the socket closes as Chromium quits.
        let _ = tokio::time::timeout(timeout, self.conn.call("Browser.close", serde_json::json!({}), None)).await;
        if tokio::time::timeout(timeout, self.exited()).await.is_err() {
            tracing::warn!(pid = self.pid, "Chromium did not quit after Browser.close; killing it");
        }
        kill_group(self.pid);
        self.killed = true;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.exited()).await;
        remains
    }

    /// Kills the process group, waits until none of its processes runs, then removes the
    /// profile dir: when this returns, nothing of the browser is left.
    pub async fn close(mut self) {
        if self.external {
            return;
        }
        kill_group(self.pid);
        self.killed = true;
        // SIGKILL cannot be ignored; the waits are bounded anyway so a stuck kernel state
        // never wedges a delete.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.exited()).await;
        let remains = Remains { pgid: self.pid, dir: self.profile_dir.clone() };
        let _ = tokio::task::spawn_blocking(move || remains.clear_blocking()).await;
    }
}

/// What is left of a browser killed by [`Browser::kill_detached`]: its dying process group
/// and its profile dir, moved aside. [`Remains::clear_blocking`] finishes the job.
#[derive(Debug)]
pub struct Remains {
    pgid: u32,
    dir: PathBuf,
}

impl Remains {
    /// The profile dir (until [`Remains::clear_blocking`] removes it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits (up to 5 s) until no process of the group runs, then removes the dir.
    /// Blocking: run it on a blocking thread.
    pub fn clear_blocking(self) {
        if self.pgid == 0 {
            return; // an external browser leaves nothing of ours
        }
        let started = std::time::Instant::now();
        if !crate::procfs::wait_group_gone(self.pgid, Duration::from_secs(5)) {
            tracing::warn!(pgid = self.pgid, "browser processes still running 5 s after SIGKILL");
        }
        let group_gone = started.elapsed();
        crate::freeze::remove_cgroup(self.pgid);
        remove_dir(&self.dir);
        tracing::debug!(
            pgid = self.pgid,
            group_gone_ms = group_gone.as_secs_f64() * 1e3,
            removed_ms = started.elapsed().as_secs_f64() * 1e3,
            "browser remains cleared"
        );
    }
}

impl Browser {
    /// Kills the process group and moves the profile dir into `trash` (same filesystem, so
    /// a rename), without waiting: the kernel needs tens of milliseconds to tear down a
    /// SIGKILLed Chromium, and a delete should not wait for that. The caller hands the
    /// returned [`Remains`] to a cleaner.
    pub fn kill_detached(mut self, trash: &Path) -> Remains {
        if self.external {
            return Remains { pgid: 0, dir: PathBuf::new() };
        }
        kill_group(self.pid);
        self.killed = true;
        let dir = match self.profile_dir.file_name() {
            Some(name) if std::fs::rename(&self.profile_dir, trash.join(name)).is_ok() => trash.join(name),
            _ => self.profile_dir.clone(),
        };
        Remains { pgid: self.pid, dir }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
        if !self.killed {
            kill_group(self.pid);
            remove_dir(&self.profile_dir);
        }
    }
}

/// Kills what a half-finished launch left.
struct KillGuard {
    pid: u32,
    profile_dir: Option<PathBuf>,
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        kill_group(self.pid);
        if let Some(dir) = &self.profile_dir {
            remove_dir(dir);
        }
    }
}

/// Sends SIGKILL to a process group. A group that is already gone is not an error.
pub fn kill_group(pgid: u32) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove a profile directory");
    }
}

fn chromium_args(profile_dir: &Path, (w, h): (u32, u32)) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--password-store=basic",
        "--use-mock-keychain",
        // Back/forward wait for the page's `load`, which a back-forward-cache restore never fires.
        "--disable-features=BackForwardCache",
        // A tab the agent left keeps running its timers (a page it opened may still load).
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        "--remote-debugging-port=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile_dir.display()), format!("--window-size={w},{h}"), "about:blank".into()])
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_chromium_path_that_does_not_exist_is_reported_by_name() {
        let err = find_chromium(Some(Path::new("/nonexistent/chrome"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/chrome"), "{err}");
    }

    #[test]
    fn the_profile_dir_and_window_size_reach_the_command_line() {
        let args = chromium_args(Path::new("/data/profiles/x"), (800, 600));
        assert!(args.contains(&"--user-data-dir=/data/profiles/x".to_string()));
        assert!(args.contains(&"--window-size=800,600".to_string()));
        assert!(args.contains(&"--remote-debugging-port=0".to_string()));
    }
}
