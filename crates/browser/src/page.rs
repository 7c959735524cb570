//! One page (tab) over a flat CDP session: attach, navigate, screenshot, URL and title.
//! Observation and input actions live in `observe.rs` and `act.rs`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cdp::{CdpError, Connection};

/// Why a page action failed.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("the page could not load {url}: {reason}")]
    Navigation { url: String, reason: String },
    /// The element number is not in the latest observation of this page.
    #[error("element {0} does not exist in the latest observation; use a number from the current element list")]
    UnknownElement(usize),
    /// The page changed (navigated or was observed again) since the number was given.
    #[error("element {0} is stale: the page changed since it was observed; use a number from the current element list")]
    StaleElement(usize),
    /// The action cannot be done as asked (no such option, not a text field, …).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Cdp(#[from] CdpError),
}

/// A JPEG screenshot of a page with the page's URL and title.
#[derive(Debug, Clone)]
pub struct Screenshot {
    /// Base64 of the JPEG bytes, as Chromium sends it.
    pub jpeg_base64: String,
    pub url: String,
    pub title: String,
}

/// One attached page target. Cheap to clone: clones talk to the same target.
#[derive(Clone)]
pub struct Page {
    pub(crate) conn: Arc<Connection>,
    target_id: String,
    pub(crate) session_id: String,
    viewport: (u32, u32),
}

impl Page {
    /// Attaches to the browser's first page target (creating one if there is none), turns
    /// on the events we wait for and sets the viewport.
    pub(crate) async fn attach_first(conn: &Arc<Connection>, viewport: (u32, u32)) -> Result<Page, CdpError> {
        let targets = conn.call("Target.getTargets", json!({}), None).await?;
        let existing = targets["targetInfos"]
            .as_array()
            .and_then(|infos| infos.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["targetId"].as_str())
            .map(str::to_owned);
        let target_id = match existing {
            Some(id) => id,
            None => {
                let created = conn.call("Target.createTarget", json!({ "url": "about:blank" }), None).await?;
                created["targetId"].as_str().unwrap_or_default().to_owned()
            }
        };
        Self::attach(conn, target_id, viewport).await
    }

    /// Attaches to a page target (a tab), turns on the events we wait for and sets the viewport.
    pub async fn attach(conn: &Arc<Connection>, target_id: String, viewport: (u32, u32)) -> Result<Page, CdpError> {
        let attached = conn
            .call("Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }), None)
            .await?;
        let session_id = attached["sessionId"].as_str().unwrap_or_default().to_owned();
        let page = Page { conn: conn.clone(), target_id, session_id, viewport };
        let s = Some(page.session_id.as_str());
        let (a, b, c) = tokio::join!(
            conn.call("Page.enable", json!({}), s),
            conn.call("Page.setLifecycleEventsEnabled", json!({ "enabled": true }), s),
            conn.call(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": viewport.0, "height": viewport.1, "deviceScaleFactor": 1, "mobile": false }),
                s,
            ),
        );
        a?;
        b?;
        c?;
        Ok(page)
    }

    pub fn target_id(&self) -> &str {
        &self.target_id
    }

    /// The flat CDP session id this page's commands and events carry.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    pub fn viewport(&self) -> (u32, u32) {
        self.viewport
    }

    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    /// Sends a command to this page's session.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, CdpError> {
        self.conn.call(method, params, Some(&self.session_id)).await
    }

    /// Navigates and waits for the page's `load` (at most `wait`; a slow page is not an
    /// error, it is still loading). Returns the URL the page ended on.
    pub async fn navigate(&self, url: &str, wait: Duration) -> Result<String, PageError> {
        let mut events = self.conn.subscribe();
        let result = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(reason) = result["errorText"].as_str().filter(|s| !s.is_empty()) {
            return Err(PageError::Navigation { url: url.to_owned(), reason: reason.to_owned() });
        }
        // Same-document navigations (a #fragment) have no loader and fire no load event.
        if let Some(loader) = result["loaderId"].as_str() {
            let frame = result["frameId"].as_str().unwrap_or_default();
            let _ = tokio::time::timeout(wait, async {
                loop {
                    match events.recv().await {
                        Ok(ev) if ev.session_id.as_deref() == Some(&self.session_id)
                            && ev.method == "Page.lifecycleEvent"
                            && ev.params["name"] == "load"
                            && ev.params["loaderId"] == loader
                            && ev.params["frameId"] == frame =>
                        {
                            return;
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            })
            .await;
        }
        Ok(self.location().await?.0)
    }

    /// The page's URL and title (`""` when the page has none).
    pub async fn location(&self) -> Result<(String, String), CdpError> {
        let v = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": "[location.href, document.title]", "returnByValue": true }),
            )
            .await?;
        let pair = &v["result"]["value"];
        Ok((
            pair[0].as_str().unwrap_or_default().to_owned(),
            pair[1].as_str().unwrap_or_default().to_owned(),
        ))
    }

    /// A JPEG of the viewport plus the URL and title, taken concurrently. A page between
    /// two documents (a navigation committing) refuses captures or never answers one sent
    /// at the wrong moment; those are retried, each attempt bounded.
    pub async fn screenshot(&self, quality: u8) -> Result<Screenshot, CdpError> {
        const ATTEMPT: Duration = Duration::from_secs(5);
        let mut tries = 0;
        loop {
            tries += 1;
            let shot = self.call("Page.captureScreenshot", json!({ "format": "jpeg", "quality": quality }));
            let attempt = tokio::time::timeout(ATTEMPT, async { tokio::join!(shot, self.location()) }).await;
            let Ok((shot, loc)) = attempt else {
                if tries < 4 {
                    continue;
                }
                return Err(CdpError::Timeout { method: "Page.captureScreenshot".into() });
            };
            match (shot, loc) {
                (Ok(mut shot), Ok((url, title))) => {
                    let jpeg_base64 = match shot.get_mut("data").map(Value::take) {
                        Some(Value::String(s)) => s,
                        _ => String::new(),
                    };
                    return Ok(Screenshot { jpeg_base64, url, title });
                }
                (Err(CdpError::Protocol { .. }), _) | (_, Err(CdpError::Protocol { .. })) if tries < 20 => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                (Err(e), _) | (_, Err(e)) => return Err(e),
            }
        }
    }
}
