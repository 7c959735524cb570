//! The live view's engine side: one hub per session that runs a CDP screencast of the
//! current tab while anyone watches, shares its newest frame with every viewer, and turns
//! a controlling viewer's input into CDP input events (pausing the agent while a person
//! has control).
//!
//! Ownership: the hub lives in the session's [`Control`]; its screencast task is started
//! by the session and aborted when the session closes. Frames go through a `watch`
//! channel, so a slow viewer simply sees fewer frames and never holds up the others or the
//! agent. With no viewer the screencast is stopped (no frames, no encoding cost).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::task::{Control, Tabs};
use crate::time::now_ms;

/// One screencast frame.
#[derive(Debug)]
pub struct Frame {
    pub seq: u64,
    /// Base64 JPEG, as Chromium sends it.
    pub jpeg_base64: String,
    /// The page area the frame shows, in CSS pixels (input coordinates use these).
    pub width: f64,
    pub height: f64,
    /// When the frame arrived from Chromium (ms since the epoch).
    pub at_ms: i64,
}

/// Input from a controlling viewer, in the page's CSS pixels.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveInput {
    /// `kind` is `mouseMoved`, `mousePressed` or `mouseReleased`.
    Mouse { kind: String, x: f64, y: f64, button: String, click_count: u32 },
    Wheel { x: f64, y: f64, dx: f64, dy: f64 },
    /// `kind` is `keyDown` or `keyUp`; `text` is what the key types, if anything.
    Key { kind: String, key: String, code: String, key_code: i64, text: Option<String>, modifiers: i64 },
    /// Pasted or composed text.
    Text(String),
    /// Take control without sending input yet.
    Take,
    /// Give control back; the agent resumes if the take-over paused it.
    HandBack,
}

/// Why input was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiveInputError {
    #[error("this link can only watch: input needs a control link")]
    ViewOnly,
    #[error("another viewer has control; wait until they hand it back")]
    Busy,
    #[error("the browser did not take the input: {0}")]
    Browser(String),
}

/// A session's live-view hub.
pub struct LiveHub {
    frames: watch::Sender<Option<Arc<Frame>>>,
    viewers: watch::Sender<usize>,
    controller: Mutex<Option<u64>>,
    next_viewer: AtomicU64,
    /// The current pause was made by a take-over (hand back resumes it).
    paused_by_us: AtomicBool,
    metrics: Arc<Metrics>,
}

/// A connected viewer; dropping it leaves the hub (and gives control back to nobody).
pub struct Viewer {
    pub id: u64,
    pub can_control: bool,
    pub frames: watch::Receiver<Option<Arc<Frame>>>,
    hub: Arc<LiveHub>,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.hub.viewers.send_modify(|n| *n = n.saturating_sub(1));
        let mut c = self.hub.controller.lock().expect("controller lock");
        if *c == Some(self.id) {
            *c = None;
        }
    }
}

impl LiveHub {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            frames: watch::channel(None).0,
            viewers: watch::channel(0).0,
            controller: Mutex::new(None),
            next_viewer: AtomicU64::new(1),
            paused_by_us: AtomicBool::new(false),
            metrics,
        })
    }

    /// Joins as a viewer; the screencast starts with the first one.
    pub fn join(self: &Arc<Self>, can_control: bool) -> Viewer {
        self.viewers.send_modify(|n| *n += 1);
        Viewer { id: self.next_viewer.fetch_add(1, Ordering::Relaxed), can_control, frames: self.frames.subscribe(), hub: self.clone() }
    }

    pub fn viewers(&self) -> usize {
        *self.viewers.borrow()
    }

    /// Which viewer has control, if any.
    pub fn controller(&self) -> Option<u64> {
        *self.controller.lock().expect("controller lock")
    }
}

/// A viewer joined to a session: its frames, its input and the session's status.
pub struct LiveSession {
    control: Arc<Control>,
    pub viewer: Viewer,
}

/// What the viewer's status bar shows.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveStatus {
    pub url: String,
    /// The task's execution status.
    pub status: &'static str,
    pub viewers: usize,
    /// This viewer has control.
    pub controlling: bool,
    /// Another viewer has control.
    pub controlled_elsewhere: bool,
}

impl LiveSession {
    pub(crate) fn new(control: Arc<Control>, viewer: Viewer) -> Self {
        Self { control, viewer }
    }

    pub async fn input(&self, input: LiveInput) -> Result<(), LiveInputError> {
        self.control.live_input(&self.viewer, input).await
    }

    pub async fn status(&self) -> LiveStatus {
        let page = self.control.tabs().current();
        let url = tokio::time::timeout(Duration::from_secs(2), page.location()).await.ok().and_then(Result::ok).map(|l| l.0).unwrap_or_default();
        let controller = self.viewer.hub.controller();
        LiveStatus {
            url,
            status: self.control.exec_now().as_str(),
            viewers: self.viewer.hub.viewers(),
            controlling: controller == Some(self.viewer.id),
            controlled_elsewhere: controller.is_some_and(|c| c != self.viewer.id),
        }
    }

    /// This viewer has control now.
    pub fn status_is_controlling(&self) -> bool {
        self.viewer.hub.controller() == Some(self.viewer.id)
    }

    /// Turns true when the session ends.
    pub fn ended(&self) -> watch::Receiver<bool> {
        self.control.ended()
    }
}

impl Control {
    /// Applies a viewer's input: takes control for it if nobody has it (pausing a running
    /// task), then sends the input to the current tab.
    pub async fn live_input(&self, viewer: &Viewer, input: LiveInput) -> Result<(), LiveInputError> {
        if !viewer.can_control {
            return Err(LiveInputError::ViewOnly);
        }
        let hub = &viewer.hub;
        if input == LiveInput::HandBack {
            let was_ours = {
                let mut c = hub.controller.lock().expect("controller lock");
                let ours = *c == Some(viewer.id);
                if ours {
                    *c = None;
                }
                ours
            };
            if was_ours && hub.paused_by_us.swap(false, Ordering::Relaxed) {
                let _ = self.resume("live_view").await;
            }
            return Ok(());
        }
        {
            let mut c = hub.controller.lock().expect("controller lock");
            let hover = matches!(&input, LiveInput::Mouse { kind, .. } if kind == "mouseMoved");
            match *c {
                // A pointer passing over the picture is not taking over.
                _ if hover && *c != Some(viewer.id) => return Ok(()),
                Some(other) if other != viewer.id => return Err(LiveInputError::Busy),
                _ => *c = Some(viewer.id),
            }
        }
        if self.exec_now().task_active() && self.pause("live_view").await.is_ok() {
            hub.paused_by_us.store(true, Ordering::Relaxed);
        }
        let page = self.tabs().current();
        let result = match input {
            LiveInput::Take | LiveInput::HandBack => Ok(serde_json::Value::Null),
            LiveInput::Mouse { kind, x, y, button, click_count } => {
                let buttons = if kind == "mousePressed" { 1 } else { 0 };
                page.call(
                    "Input.dispatchMouseEvent",
                    json!({ "type": kind, "x": x, "y": y, "button": button, "buttons": buttons, "clickCount": click_count }),
                )
                .await
            }
            LiveInput::Wheel { x, y, dx, dy } => {
                page.call("Input.dispatchMouseEvent", json!({ "type": "mouseWheel", "x": x, "y": y, "deltaX": dx, "deltaY": dy })).await
            }
            LiveInput::Key { kind, key, code, key_code, text, modifiers } => {
                let mut ev = json!({ "type": if kind == "keyDown" && text.is_none() { "rawKeyDown" } else { kind.as_str() },
                    "key": key, "code": code, "windowsVirtualKeyCode": key_code, "nativeVirtualKeyCode": key_code, "modifiers": modifiers });
                if let Some(t) = text.filter(|_| kind == "keyDown") {
                    ev["text"] = json!(t);
                    ev["unmodifiedText"] = json!(t);
                }
                page.call("Input.dispatchKeyEvent", ev).await
            }
            LiveInput::Text(text) => page.call("Input.insertText", json!({ "text": text })).await,
        };
        result.map(|_| ()).map_err(|e| LiveInputError::Browser(e.to_string()))
    }
}

/// The screencast driver of one session: runs while at least one viewer watches, follows
/// the current tab, acks every frame and publishes it to the hub.
pub(crate) async fn run_screencast(hub: Arc<LiveHub>, tabs: Arc<Tabs>) {
    let mut viewers = hub.viewers.subscribe();
    let mut current = tabs.watch_current();
    let mut seq = 0u64;
    let (w, h) = tabs.viewport();
    loop {
        if viewers.wait_for(|n| *n > 0).await.is_err() {
            return;
        }
        let page = tabs.current();
        current.mark_unchanged();
        let mut events = page.connection().subscribe();
        let params = json!({ "format": "jpeg", "quality": 60, "maxWidth": w, "maxHeight": h, "everyNthFrame": 1 });
        if let Err(e) = page.call("Page.startScreencast", params).await {
            if page.connection().is_closed() {
                return; // the browser is gone; the session reports it
            }
            tracing::debug!(error = %e, "screencast did not start; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) if ev.method == "Page.screencastFrame" && ev.session_id.as_deref() == Some(page.session_id()) => {
                        let ack = json!({ "sessionId": ev.params["sessionId"] });
                        let _ = page.call("Page.screencastFrameAck", ack).await;
                        seq += 1;
                        Metrics::count(&hub.metrics.screencast_frames);
                        let meta = &ev.params["metadata"];
                        let frame = Frame {
                            seq,
                            jpeg_base64: ev.params["data"].as_str().unwrap_or_default().to_owned(),
                            width: meta["deviceWidth"].as_f64().unwrap_or(w as f64),
                            height: meta["deviceHeight"].as_f64().unwrap_or(h as f64),
                            at_ms: now_ms(),
                        };
                        hub.frames.send_replace(Some(Arc::new(frame)));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                changed = viewers.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *viewers.borrow() == 0 {
                        let _ = page.call("Page.stopScreencast", json!({})).await;
                        break;
                    }
                }
                _ = current.changed() => {
                    // The agent or the page moved to another tab: follow it.
                    let _ = page.call("Page.stopScreencast", json!({})).await;
                    break;
                }
            }
        }
    }
}
