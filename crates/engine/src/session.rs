//! The session actor: one tokio task per session that owns its browser.
//!
//! Every direct action on a session's browser (the API's navigate and screenshot) is a
//! [`Command`] sent to its actor, so those run one at a time in arrival order. The agent
//! works the same browser from its own task (see `task.rs`); both act on the current tab.
//! The actor also watches the browser: when Chromium exits behind our back, the session is
//! marked `error` in the store at once (with an ERROR message) and later commands are
//! refused with the reason. The session's task runs beside the actor, owned by its
//! [`Control`] (see `task.rs`); the actor stops it before it closes the browser.
//! The actor ends on [`Command::Close`] (it SIGKILLs the browser group, moves the profile
//! dir into the trash, hands the rest to the engine's janitor, then replies) or when every handle is dropped (the browser is killed by
//! its `Drop`). Its owner is the engine's registry, which joins it on delete and shutdown.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentbox_browser::{Browser, BrowserState, PageError, Remains, Screenshot, capture_state};
use agentbox_store::Store;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::AgentSpec;
use crate::error::ActionError;
use crate::task::{AgentEnv, Control, Tabs};

/// The text every later call on a session with a dead browser reports.
pub const BROWSER_DIED: &str =
    "the session's browser exited unexpectedly; delete this session and create a new one";

pub(crate) enum Command {
    Navigate { url: String, reply: oneshot::Sender<Result<String, ActionError>> },
    Screenshot { reply: oneshot::Sender<Result<Screenshot, ActionError>> },
    Close { reply: oneshot::Sender<()> },
    /// Ends the session but hands its live browser back (for a memory or filesystem
    /// snapshot) instead of killing it; `None` when the browser is already gone.
    Release { reply: oneshot::Sender<Option<Browser>> },
    /// Captures the browser's state and freezes it; it stays frozen, and every later
    /// command waits, until `resume` fires or is dropped.
    Hold { reply: oneshot::Sender<Result<Held, ActionError>>, resume: oneshot::Receiver<()> },
}

/// A frozen browser's state, for a snapshot taken while the session goes on.
pub(crate) struct Held {
    pub state: BrowserState,
    pub profile_dir: std::path::PathBuf,
    pub chromium_version: String,
}

enum End {
    Close(oneshot::Sender<()>),
    Release(oneshot::Sender<Option<Browser>>),
    Dropped,
}

/// The registry's handle on a running actor.
pub(crate) struct SessionHandle {
    pub user_id: Uuid,
    /// The browser-level DevTools WebSocket on 127.0.0.1, for the CDP proxy.
    pub devtools_url: String,
    pub control: Arc<Control>,
    pub tx: mpsc::Sender<Command>,
    pub task: JoinHandle<()>,
    last_used: Mutex<Instant>,
}

impl SessionHandle {
    pub fn touch(&self) {
        *self.last_used.lock().expect("last_used lock") = Instant::now();
    }

    pub fn idle_for(&self) -> Duration {
        self.last_used.lock().expect("last_used lock").elapsed()
    }

    /// Sends a command; an actor that has gone away means the browser is gone.
    pub async fn send(&self, cmd: Command) -> Result<(), ActionError> {
        self.tx.send(cmd).await.map_err(|_| ActionError::BrowserGone(BROWSER_DIED.into()))
    }

    /// Ends the actor and takes its live browser (`None` when it is gone).
    pub async fn release(self) -> Option<Browser> {
        let (reply, done) = oneshot::channel();
        let browser = if self.tx.send(Command::Release { reply }).await.is_ok() { done.await.ok().flatten() } else { None };
        let _ = self.task.await;
        browser
    }

    /// Asks the actor to close the browser and waits for it to finish.
    pub async fn close(self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Command::Close { reply }).await.is_ok() {
            let _ = done.await;
        }
        let _ = self.task.await;
    }
}

pub(crate) struct ActorSettings {
    pub navigation_timeout: Duration,
    pub screenshot_quality: u8,
    /// Where a killed browser's profile dir is moved before the janitor removes it.
    pub trash_dir: std::path::PathBuf,
    /// The engine's janitor, which clears what killed browsers leave.
    pub janitor: mpsc::UnboundedSender<Remains>,
    pub agent: AgentSpec,
    pub http: reqwest::Client,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub task_timeout: Duration,
    /// Wakes the webhook worker.
    pub webhooks: Arc<tokio::sync::Notify>,
}

/// Starts the actor for a session that now owns `browser`.
pub(crate) fn spawn(view: crate::engine::SessionView, browser: Browser, store: Arc<dyn Store>, settings: ActorSettings) -> SessionHandle {
    let (id, user_id) = (view.record.id, view.record.user_id);
    let (tx, rx) = mpsc::channel(32);
    let env = AgentEnv {
        webhooks: settings.webhooks.clone(),
        tabs: Arc::new(Tabs::new(browser.page().clone())),
        spec: settings.agent.clone(),
        http: settings.http.clone(),
        metrics: settings.metrics.clone(),
        navigation_timeout: settings.navigation_timeout,
        task_timeout: settings.task_timeout,
        screenshot_quality: settings.screenshot_quality,
    };
    let control = Control::new(view, store, env);
    let devtools_url = browser.ws_url().to_owned();
    let task = tokio::spawn(run(id, browser, rx, control.clone(), settings));
    SessionHandle { user_id, devtools_url, control, tx, task, last_used: Mutex::new(Instant::now()) }
}

#[tracing::instrument(skip_all, fields(session_id = %id))]
async fn run(id: Uuid, mut browser: Browser, mut rx: mpsc::Receiver<Command>, control: Arc<Control>, settings: ActorSettings) {
    let mut alive = true;
    let end = loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => break End::Dropped,
                Some(Command::Close { reply }) => break End::Close(reply),
                Some(Command::Release { reply }) => break End::Release(reply),
                Some(Command::Hold { reply, resume }) => {
                    if !alive {
                        let _ = reply.send(Err(gone()));
                        continue;
                    }
                    let current = control.tabs().current();
                    let captured = async {
                        let state = capture_state(browser.connection(), current.target_id()).await?;
                        let version = browser.version().await?;
                        Ok::<_, agentbox_browser::cdp::CdpError>((state, version))
                    }
                    .await;
                    match captured {
                        Ok((state, chromium_version)) => {
                            browser.freeze();
                            let held = Held { state, profile_dir: browser.profile_dir().to_owned(), chromium_version };
                            if reply.send(Ok(held)).is_ok() {
                                let _ = resume.await;
                            }
                            browser.thaw();
                        }
                        Err(e) => {
                            let _ = reply.send(blame_death(&browser, Err(ActionError::Browser(e.to_string()))));
                        }
                    }
                }
                Some(Command::Navigate { url, reply }) => {
                    let result = if alive { navigate(&control, &url, settings.navigation_timeout).await } else { Err(gone()) };
                    let _ = reply.send(blame_death(&browser, result));
                }
                Some(Command::Screenshot { reply }) => {
                    let result = if alive {
                        control.tabs().current().screenshot(settings.screenshot_quality).await.map_err(|e| ActionError::Browser(e.to_string()))
                    } else {
                        Err(gone())
                    };
                    let _ = reply.send(blame_death(&browser, result));
                }
            },
            () = browser.gone(), if alive => {
                alive = false;
                tracing::warn!(pid = browser.pid(), "browser exited unexpectedly; session is now in error");
                control.browser_died(BROWSER_DIED).await;
            }
        }
    };
    // The task stops before the browser goes.
    control.close().await;
    let close_reply = match end {
        End::Release(reply) if alive && browser.is_alive() => {
            // The next owner starts on the tab this session was acting on.
            browser.set_page(control.tabs().current());
            if let Err(Some(unwanted)) = reply.send(Some(browser)) {
                unwanted.close().await;
            }
            return;
        }
        End::Release(reply) => {
            let _ = reply.send(None);
            None
        }
        End::Close(reply) => Some(reply),
        End::Dropped => None,
    };
    // Kill now, clean up off the request path; if the janitor is gone (shutdown), clean here.
    let remains = browser.kill_detached(&settings.trash_dir);
    if let Err(unsent) = settings.janitor.send(remains) {
        let _ = tokio::task::spawn_blocking(move || unsent.0.clear_blocking()).await;
    }
    if let Some(reply) = close_reply {
        let _ = reply.send(());
    }
}

/// A command that failed because the browser died under it reports the death, not a
/// protocol error.
fn blame_death<T>(browser: &Browser, result: Result<T, ActionError>) -> Result<T, ActionError> {
    match result {
        Err(ActionError::Browser(_)) if !browser.is_alive() => Err(gone()),
        other => other,
    }
}

fn gone() -> ActionError {
    ActionError::BrowserGone(BROWSER_DIED.into())
}

async fn navigate(control: &Control, url: &str, wait: Duration) -> Result<String, ActionError> {
    control.tabs().current().navigate(url, wait).await.map_err(|e| match e {
        PageError::Navigation { url, reason } => ActionError::Navigation { url, reason },
        other => ActionError::Browser(other.to_string()),
    })
}
