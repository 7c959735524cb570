//! Input actions on a page, over CDP: click, type, select, keys, scroll, history, reading
//! text. Elements are named by the (generation, number) of the observation that listed them.
//! Actions that may start a navigation wait for it to load (see [`Page::settle`]).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::cdp::Event;
use crate::page::{Page, PageError};

/// A key the agent may press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Enter,
    Tab,
    Escape,
    Backspace,
    Delete,
    Space,
    ArrowUp,
    ArrowDown,
    ArrowLeft,
    ArrowRight,
    PageUp,
    PageDown,
    Home,
    End,
}

impl Key {
    pub const NAMES: &'static [&'static str] = &[
        "Enter", "Tab", "Escape", "Backspace", "Delete", "Space", "ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "PageUp",
        "PageDown", "Home", "End",
    ];

    /// Parses a key name, case-insensitively, with common aliases ("return", "esc", "down").
    pub fn parse(name: &str) -> Option<Key> {
        let n = name.trim().to_ascii_lowercase().replace([' ', '_', '-'], "");
        Some(match n.as_str() {
            "enter" | "return" => Key::Enter,
            "tab" => Key::Tab,
            "escape" | "esc" => Key::Escape,
            "backspace" => Key::Backspace,
            "delete" | "del" => Key::Delete,
            "space" | "spacebar" => Key::Space,
            "arrowup" | "up" => Key::ArrowUp,
            "arrowdown" | "down" => Key::ArrowDown,
            "arrowleft" | "left" => Key::ArrowLeft,
            "arrowright" | "right" => Key::ArrowRight,
            "pageup" => Key::PageUp,
            "pagedown" => Key::PageDown,
            "home" => Key::Home,
            "end" => Key::End,
            _ => return None,
        })
    }

    /// (key, code, Windows virtual key code, text it types).
    fn definition(self) -> (&'static str, &'static str, i64, Option<&'static str>) {
        match self {
            Key::Enter => ("Enter", "Enter", 13, Some("\r")),
            Key::Tab => ("Tab", "Tab", 9, None),
            Key::Escape => ("Escape", "Escape", 27, None),
            Key::Backspace => ("Backspace", "Backspace", 8, None),
            Key::Delete => ("Delete", "Delete", 46, None),
            Key::Space => (" ", "Space", 32, Some(" ")),
            Key::ArrowUp => ("ArrowUp", "ArrowUp", 38, None),
            Key::ArrowDown => ("ArrowDown", "ArrowDown", 40, None),
            Key::ArrowLeft => ("ArrowLeft", "ArrowLeft", 37, None),
            Key::ArrowRight => ("ArrowRight", "ArrowRight", 39, None),
            Key::PageUp => ("PageUp", "PageUp", 33, None),
            Key::PageDown => ("PageDown", "PageDown", 34, None),
            Key::Home => ("Home", "Home", 36, None),
            Key::End => ("End", "End", 35, None),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Key::Space => "Space",
            other => other.definition().0,
        }
    }
}

/// Which way to scroll the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrollDirection {
    Up,
    Down,
    Top,
    Bottom,
}

/// Longest wait, after a navigation's `load`, for the network to be almost idle.
const NETWORK_IDLE_WAIT: Duration = Duration::from_millis(500);

const RESOLVE_JS: &str = "(() => { const a = window.__agentbox; if (!a || a.gen !== __GEN__) return 'stale'; \
     const el = a.els[__INDEX__]; if (!el) return 'unknown'; if (!el.isConnected) return 'stale'; return el; })()";

const CENTER_JS: &str = "function() { this.scrollIntoView({block: 'center', inline: 'center', behavior: 'instant'}); \
     const r = this.getBoundingClientRect(); \
     const disabled = !!(this.disabled || this.getAttribute('aria-disabled') === 'true'); \
     return [r.left + r.width / 2, r.top + r.height / 2, r.width, r.height, disabled]; }";

const FOCUS_FIELD_JS: &str = "function() { const t = this.tagName; \
     const noText = ['checkbox','radio','submit','button','reset','file','image','range','color','hidden']; \
     const field = t === 'TEXTAREA' || (t === 'INPUT' && !noText.includes(this.type)) || this.isContentEditable; \
     if (!field) return 'not-a-field'; \
     if (this.disabled || this.readOnly) return 'disabled'; \
     this.scrollIntoView({block: 'center', behavior: 'instant'}); this.focus(); \
     if (this.isContentEditable) { document.execCommand('selectAll'); } else { try { this.select(); } catch (e) { this.value = ''; } } \
     return 'ok'; }";

const SELECT_JS: &str = "function(choice) { if (this.tagName !== 'SELECT') return {err: 'not-a-select'}; \
     const norm = (s) => (s || '').replace(/\\s+/g, ' ').trim().toLowerCase(); const c = norm(choice); \
     const opts = Array.from(this.options); \
     const o = opts.find((o) => norm(o.text) === c || norm(o.value) === c) || opts.find((o) => norm(o.text).includes(c)); \
     if (!o) return {err: 'no-option', options: opts.map((o) => o.text.trim())}; \
     if (this.disabled) return {err: 'disabled'}; \
     this.value = o.value; this.dispatchEvent(new Event('input', {bubbles: true})); \
     this.dispatchEvent(new Event('change', {bubbles: true})); return {ok: o.text.trim()}; }";

const TEXT_JS: &str = "function(max) { const v = (this.tagName === 'INPUT' || this.tagName === 'TEXTAREA' || this.tagName === 'SELECT') \
     ? (this.tagName === 'SELECT' ? (this.selectedOptions[0] || {}).text : this.value) : this.innerText; \
     return (v || '').replace(/[ \\t]+/g, ' ').replace(/\\n\\s*\\n+/g, '\\n').trim().slice(0, max); }";

const FIND_JS: &str = r#"(needle, limit) => {
  const n = needle.toLowerCase();
  const squash = (s) => (s || '').replace(/\s+/g, ' ').trim();
  const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const hits = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let t = walker.nextNode(); t && hits.length < limit; t = walker.nextNode()) {
    const el = t.parentElement;
    if (el && t.data.toLowerCase().includes(n) && visible(el) && !['SCRIPT', 'STYLE'].includes(el.tagName)) hits.push(el);
  }
  if (!hits.length) {
    for (const el of document.body.querySelectorAll('*')) {
      if (hits.length >= limit) break;
      if (!(el.textContent || '').toLowerCase().includes(n) || !visible(el)) continue;
      if (Array.from(el.children).some((c) => (c.textContent || '').toLowerCase().includes(n))) continue;
      hits.push(el);
    }
  }
  return hits.map((el) => {
    const chain = [];
    for (let e = el; e && e !== document.documentElement && chain.length < 5; e = e.parentElement) {
      const text = squash(e.innerText);
      if (!chain.length || text !== chain[chain.length - 1]) chain.push(text.slice(0, 600));
      if (e === document.body) break;
    }
    return chain;
  });
}"#;

impl Page {
    /// The remote object of element `index` of observation `generation`.
    async fn element(&self, generation: u64, index: usize) -> Result<String, PageError> {
        let expr = RESOLVE_JS.replace("__GEN__", &generation.to_string()).replace("__INDEX__", &index.to_string());
        let v = self.call("Runtime.evaluate", json!({ "expression": expr })).await?;
        let r = &v["result"];
        match (r["objectId"].as_str(), r["value"].as_str()) {
            (Some(id), _) => Ok(id.to_owned()),
            (None, Some("unknown")) => Err(PageError::UnknownElement(index)),
            _ => Err(PageError::StaleElement(index)),
        }
    }

    async fn call_on(&self, object_id: &str, function: &str, args: Vec<Value>) -> Result<Value, PageError> {
        let arguments: Vec<Value> = args.into_iter().map(|v| json!({ "value": v })).collect();
        let v = self
            .call(
                "Runtime.callFunctionOn",
                json!({ "objectId": object_id, "functionDeclaration": function, "arguments": arguments, "returnByValue": true }),
            )
            .await?;
        if let Some(ex) = v.get("exceptionDetails") {
            return Err(PageError::Refused(format!("the page refused the action: {}", ex["text"])));
        }
        Ok(v["result"]["value"].clone())
    }

    /// Clicks the centre of an element (scrolled into view) with a real mouse event, then
    /// waits for what the click started.
    pub async fn click(&self, generation: u64, index: usize, wait: Duration) -> Result<(), PageError> {
        let el = self.element(generation, index).await?;
        let c = self.call_on(&el, CENTER_JS, vec![]).await?;
        if c[4].as_bool() == Some(true) {
            return Err(PageError::Refused(format!("element {index} is disabled")));
        }
        let (x, y) = (c[0].as_f64().unwrap_or(0.0), c[1].as_f64().unwrap_or(0.0));
        let events = self.conn.subscribe();
        self.call("Input.dispatchMouseEvent", json!({ "type": "mouseMoved", "x": x, "y": y })).await?;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1 }),
            )
            .await?;
        }
        self.settle(events, wait).await;
        Ok(())
    }

    /// Replaces the text of a field with `text`; with `submit`, presses Enter after.
    pub async fn type_text(&self, generation: u64, index: usize, text: &str, submit: bool, wait: Duration) -> Result<(), PageError> {
        let el = self.element(generation, index).await?;
        match self.call_on(&el, FOCUS_FIELD_JS, vec![]).await?.as_str() {
            Some("ok") => {}
            Some("disabled") => return Err(PageError::Refused(format!("element {index} is disabled or read-only"))),
            _ => return Err(PageError::Refused(format!("element {index} is not a text field; type into a textbox or searchbox"))),
        }
        self.call("Input.insertText", json!({ "text": text })).await?;
        if submit {
            self.press_key(Key::Enter, wait).await?;
        }
        Ok(())
    }

    /// Chooses an option of a `<select>` by its text or value; returns the option's text.
    pub async fn select_option(&self, generation: u64, index: usize, choice: &str) -> Result<String, PageError> {
        let el = self.element(generation, index).await?;
        let r = self.call_on(&el, SELECT_JS, vec![json!(choice)]).await?;
        if let Some(ok) = r["ok"].as_str() {
            return Ok(ok.to_owned());
        }
        Err(PageError::Refused(match r["err"].as_str() {
            Some("no-option") => format!("element {index} has no option {choice:?}; its options are {}", r["options"]),
            Some("disabled") => format!("element {index} is disabled"),
            _ => format!("element {index} is not a select box; click it instead"),
        }))
    }

    /// Presses a key in the focused element, then waits for what it started.
    pub async fn press_key(&self, key: Key, wait: Duration) -> Result<(), PageError> {
        let (k, code, vk, text) = key.definition();
        let events = self.conn.subscribe();
        let mut down = json!({ "type": if text.is_some() { "keyDown" } else { "rawKeyDown" }, "key": k, "code": code,
            "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk });
        if let Some(t) = text {
            down["text"] = json!(t);
            down["unmodifiedText"] = json!(t);
        }
        self.call("Input.dispatchKeyEvent", down).await?;
        self.call(
            "Input.dispatchKeyEvent",
            json!({ "type": "keyUp", "key": k, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk }),
        )
        .await?;
        self.settle(events, wait).await;
        Ok(())
    }

    /// Scrolls the page by `pages` viewport heights (or to an end); returns the new scroll
    /// offset and whether the page did not move.
    pub async fn scroll(&self, direction: ScrollDirection, pages: f64) -> Result<(i64, bool), PageError> {
        let by = match direction {
            ScrollDirection::Up => format!("window.scrollBy(0, -innerHeight * 0.8 * {pages})"),
            ScrollDirection::Down => format!("window.scrollBy(0, innerHeight * 0.8 * {pages})"),
            ScrollDirection::Top => "window.scrollTo(0, 0)".to_owned(),
            ScrollDirection::Bottom => "window.scrollTo(0, (document.scrollingElement || document.documentElement).scrollHeight)".to_owned(),
        };
        let expr = format!("(() => {{ const before = window.scrollY; {by}; return [Math.round(window.scrollY), window.scrollY === before]; }})()");
        let v = self.call("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true })).await?;
        let r = &v["result"]["value"];
        Ok((r[0].as_i64().unwrap_or(0), r[1].as_bool().unwrap_or(false)))
    }

    /// Goes back (`-1`) or forward (`1`) in the tab's history; returns the URL it ended on.
    pub async fn go_history(&self, delta: i64, wait: Duration) -> Result<String, PageError> {
        let h = self.call("Page.getNavigationHistory", json!({})).await?;
        let current = h["currentIndex"].as_i64().unwrap_or(0);
        let Some(entry) = h["entries"].as_array().and_then(|e| e.get((current + delta).max(-1) as usize)).filter(|_| current + delta >= 0)
        else {
            let which = if delta < 0 { "back to" } else { "forward to" };
            return Err(PageError::Refused(format!("there is no page to go {which} in this tab")));
        };
        let events = self.conn.subscribe();
        self.call("Page.navigateToHistoryEntry", json!({ "entryId": entry["id"] })).await?;
        self.settle(events, wait).await;
        Ok(self.location().await?.0)
    }

    /// The text of an element (a field's value), or of the whole page, cut at `max` chars.
    pub async fn read_text(&self, target: Option<(u64, usize)>, max: usize) -> Result<String, PageError> {
        match target {
            Some((generation, index)) => {
                let el = self.element(generation, index).await?;
                Ok(self.call_on(&el, TEXT_JS, vec![json!(max)]).await?.as_str().unwrap_or_default().to_owned())
            }
            None => {
                let expr = format!("(document.body ? document.body.innerText : '').replace(/[ \\t]+/g, ' ').replace(/\\n\\s*\\n+/g, '\\n').trim().slice(0, {max})");
                let v = self.call("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true })).await?;
                Ok(v["result"]["value"].as_str().unwrap_or_default().to_owned())
            }
        }
    }

    /// Finds visible text containing `needle` (case-insensitive). For each hit (at most
    /// `limit`) returns the text of the element holding it and of up to four ancestors,
    /// innermost first, so a caller can look for what sits next to it (a price by a name).
    pub async fn find_text(&self, needle: &str, limit: usize) -> Result<Vec<Vec<String>>, PageError> {
        let expr = format!("({FIND_JS})({}, {limit})", Value::String(needle.to_owned()));
        let v = self.call("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true })).await?;
        Ok(serde_json::from_value(v["result"]["value"].clone()).unwrap_or_default())
    }

    /// Waits for a freshly opened tab to have its document: a URL other than
    /// `about:blank` and a complete `readyState`, at most `wait`. Returns the URL.
    pub async fn wait_loaded(&self, wait: Duration) -> Result<String, PageError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let v = self
                .call("Runtime.evaluate", json!({ "expression": "[location.href, document.readyState]", "returnByValue": true }))
                .await;
            let ready = v.as_ref().ok().map(|v| v["result"]["value"].clone());
            if let Some(r) = ready {
                let url = r[0].as_str().unwrap_or_default().to_owned();
                if (url != "about:blank" && r[1] == "complete") || tokio::time::Instant::now() >= deadline {
                    return Ok(url);
                }
            } else if tokio::time::Instant::now() >= deadline {
                return Err(v.err().map(PageError::from).unwrap_or(PageError::Refused("the tab did not load".into())));
            }
            // A new tab has no load event we could have subscribed to in time: look again shortly.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `text` shows in the page's visible text (case-insensitive), at most
    /// `wait`. Watches DOM changes in the page rather than polling; a navigation in
    /// between restarts the watch in the new document.
    pub async fn wait_for_text(&self, text: &str, wait: Duration) -> Result<bool, PageError> {
        let deadline = tokio::time::Instant::now() + wait;
        let needle = Value::String(text.to_lowercase());
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let expr = format!(
                "new Promise((resolve) => {{ const n = {needle}; \
                 const has = () => !!document.body && document.body.innerText.toLowerCase().includes(n); \
                 if (has()) return resolve(true); \
                 const o = new MutationObserver(() => {{ if (has()) {{ o.disconnect(); resolve(true); }} }}); \
                 o.observe(document, {{subtree: true, childList: true, characterData: true, attributes: true}}); \
                 setTimeout(() => {{ o.disconnect(); resolve(has()); }}, {}); }})",
                left.as_millis()
            );
            match self.call("Runtime.evaluate", json!({ "expression": expr, "awaitPromise": true, "returnByValue": true })).await {
                Ok(v) if v["result"]["value"].as_bool() == Some(true) => return Ok(true),
                Ok(v) if v.get("exceptionDetails").is_none() => return Ok(false),
                // The document went away under the promise (a navigation): look again.
                Ok(_) | Err(crate::cdp::CdpError::Protocol { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(_) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// After an input event: lets the page react (one trip through its event loop), and
    /// if the main frame started navigating, waits for the new document's `load` (at most
    /// `wait`) and then for the network to be almost idle (at most `NETWORK_IDLE_WAIT`).
    /// `events` must have been subscribed before the input was sent.
    pub async fn settle(&self, mut events: broadcast::Receiver<Event>, wait: Duration) {
        // A navigation destroys the context and fails this call; that is fine. A page that
        // closed its own tab never answers: bound the wait.
        let tick = self.call("Runtime.evaluate", json!({ "expression": "new Promise((r) => setTimeout(r, 30))", "awaitPromise": true }));
        let _ = tokio::time::timeout(Duration::from_secs(2), tick).await;
        let (mut navigating, mut idle, mut started) = (false, false, false);
        loop {
            match events.try_recv() {
                Ok(ev) => self.track_navigation(&ev, &mut navigating, &mut idle, &mut started),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        if !started {
            return;
        }
        // The new document's `load`, at most `wait`; then a short grace for the network to
        // quiet down (pages fetch their content after load), never more than NETWORK_IDLE_WAIT.
        let _ = tokio::time::timeout(wait, async {
            while navigating {
                match events.recv().await {
                    Ok(ev) => self.track_navigation(&ev, &mut navigating, &mut idle, &mut started),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
        .await;
        let _ = tokio::time::timeout(NETWORK_IDLE_WAIT, async {
            while !idle {
                match events.recv().await {
                    Ok(ev) => self.track_navigation(&ev, &mut navigating, &mut idle, &mut started),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
        .await;
    }

    /// Follows the main frame: a navigation start sets `navigating` (and `started`), its
    /// `load` clears it; `networkAlmostIdle` sets `idle`.
    fn track_navigation(&self, ev: &Event, navigating: &mut bool, idle: &mut bool, started: &mut bool) {
        if ev.session_id.as_deref() != Some(self.session_id.as_str()) {
            return;
        }
        let main_frame = ev.params["frameId"].as_str() == Some(self.target_id());
        match ev.method.as_str() {
            // A link or form aimed at another tab does not navigate this one.
            "Page.frameRequestedNavigation" if main_frame && ev.params["disposition"] != "currentTab" => {}
            "Page.frameRequestedNavigation" | "Page.frameStartedNavigating" | "Page.frameStartedLoading" if main_frame => {
                (*navigating, *idle, *started) = (true, false, true);
            }
            "Page.lifecycleEvent" if main_frame && ev.params["name"] == "load" => *navigating = false,
            "Page.lifecycleEvent" if main_frame && ev.params["name"] == "networkAlmostIdle" => *idle = true,
            "Page.loadEventFired" => *navigating = false,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Key;

    #[test]
    fn key_names_and_aliases_parse() {
        for name in Key::NAMES {
            let key = Key::parse(name).unwrap_or_else(|| panic!("{name} parses"));
            assert_eq!(key.name(), *name);
        }
        assert_eq!(Key::parse("return"), Some(Key::Enter));
        assert_eq!(Key::parse("Page Down"), Some(Key::PageDown));
        assert_eq!(Key::parse("F13"), None);
    }
}
