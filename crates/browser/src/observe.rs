//! What an agent sees of a page at one step: URL, title, open tabs, the numbered
//! interactive elements, a bounded digest of the visible text and, when asked, a JPEG.
//!
//! `observe.js` runs in the page and keeps the elements it numbered in `window.__agentbox`
//! under a generation number unique to this observation; actions of the same step name an
//! element by (generation, number), and anything else is refused as unknown or stale.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cdp::{CdpError, Connection};
use crate::page::{Page, PageError};

const OBSERVE_JS: &str = include_str!("observe.js");

/// Generations are unique in the process, so a number from another page or an older step
/// can never resolve by accident.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// One interactive element as the page showed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Element {
    pub index: usize,
    pub role: String,
    /// Accessible name: aria-label, label, text, alt, title or placeholder.
    pub name: String,
    pub tag: String,
    pub in_view: bool,
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The element's `name` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attr_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expanded: Option<bool>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Element {
    /// One line for a prompt: `[3] textbox "Email" value="a@b" placeholder="you@example.com"`.
    pub fn describe(&self) -> String {
        let mut s = format!("[{}] {} {:?}", self.index, self.role, self.name);
        if let Some(v) = &self.value {
            s.push_str(&format!(" value={v:?}"));
        }
        if let Some(p) = self.placeholder.as_ref().filter(|p| **p != self.name) {
            s.push_str(&format!(" placeholder={p:?}"));
        }
        if let Some(c) = self.checked {
            s.push_str(if c { " checked" } else { " unchecked" });
        }
        if let Some(e) = self.expanded {
            s.push_str(if e { " expanded" } else { " collapsed" });
        }
        if self.disabled {
            s.push_str(" disabled");
        }
        if !self.options.is_empty() {
            s.push_str(&format!(" options={:?}", self.options));
        }
        s
    }
}

/// An open tab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TabInfo {
    pub target_id: String,
    pub url: String,
    pub title: String,
    /// The tab that opened this one, if a page opened it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opener_id: Option<String>,
}

/// What to include in an observation.
#[derive(Debug, Clone, Copy)]
pub struct ObserveOptions {
    /// The visible-text digest is cut at this many characters.
    pub max_text: usize,
    /// A JPEG of the viewport at this quality, for vision models.
    pub screenshot_quality: Option<u8>,
}

impl Default for ObserveOptions {
    fn default() -> Self {
        Self { max_text: 4000, screenshot_quality: None }
    }
}

/// One step's view of the page.
#[derive(Debug, Clone, Deserialize)]
pub struct Observation {
    #[serde(skip)]
    pub generation: u64,
    /// The tab observed (its target id, as in `tabs`).
    #[serde(skip)]
    pub target_id: String,
    pub url: String,
    pub title: String,
    pub elements: Vec<Element>,
    pub text: String,
    pub text_truncated: bool,
    pub scroll_y: i64,
    pub page_height: i64,
    pub viewport_height: i64,
    #[serde(skip)]
    pub tabs: Vec<TabInfo>,
    /// Base64 JPEG of the viewport, when asked for.
    #[serde(skip)]
    pub screenshot: Option<String>,
}

impl Observation {
    /// How many elements are outside the viewport above and below it.
    pub fn out_of_view(&self) -> (usize, usize) {
        let above = self.elements.iter().filter(|e| !e.in_view && e.y < 0).count();
        let below = self.elements.iter().filter(|e| !e.in_view && e.y >= 0).count();
        (above, below)
    }
}

impl Page {
    /// Observes the page: elements and text in one script run, the tab list and the
    /// optional screenshot concurrently.
    pub async fn observe(&self, opts: ObserveOptions) -> Result<Observation, PageError> {
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let script = OBSERVE_JS.replace("__GEN__", &generation.to_string()).replace("__MAX_TEXT__", &opts.max_text.to_string());
        let dom = self.call("Runtime.evaluate", json!({ "expression": script, "returnByValue": true }));
        let shot = async {
            let Some(q) = opts.screenshot_quality else { return Ok(None) };
            let capture = self.call("Page.captureScreenshot", json!({ "format": "jpeg", "quality": q }));
            // A capture can go unanswered while a document commits: observe without it then.
            match tokio::time::timeout(std::time::Duration::from_secs(5), capture).await {
                Ok(r) => r.map(|mut v| v.get_mut("data").map(Value::take).and_then(|d| d.as_str().map(str::to_owned))),
                Err(_) => Ok(None),
            }
        };
        let (dom, shot, tabs) = tokio::join!(dom, shot, list_tabs(&self.conn));
        let dom = dom?;
        if let Some(ex) = dom.get("exceptionDetails") {
            return Err(PageError::Refused(format!("the page's script failed while observing it: {}", ex["text"])));
        }
        let mut obs: Observation = serde_json::from_value(dom["result"]["value"].clone())
            .map_err(|e| PageError::Refused(format!("the page could not be observed: {e}")))?;
        obs.generation = generation;
        obs.target_id = self.target_id().to_owned();
        obs.screenshot = shot?;
        obs.tabs = tabs?;
        Ok(obs)
    }
}

/// The browser's open tabs (page targets), in Chromium's order.
pub async fn list_tabs(conn: &Arc<Connection>) -> Result<Vec<TabInfo>, CdpError> {
    let targets = conn.call("Target.getTargets", json!({}), None).await?;
    Ok(targets["targetInfos"]
        .as_array()
        .map(|infos| {
            infos
                .iter()
                .filter(|t| t["type"] == "page")
                .map(|t| TabInfo {
                    target_id: t["targetId"].as_str().unwrap_or_default().to_owned(),
                    url: t["url"].as_str().unwrap_or_default().to_owned(),
                    title: t["title"].as_str().unwrap_or_default().to_owned(),
                    opener_id: t["openerId"].as_str().map(str::to_owned),
                })
                .collect()
        })
        .unwrap_or_default())
}
