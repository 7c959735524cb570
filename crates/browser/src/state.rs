//! The part of a browser's state that a copy of its profile dir would miss.
//!
//! Session cookies and sessionStorage never reach the profile dir; persistent cookies and
//! localStorage reach it only after a clean close or Chromium's periodic flush. [`capture`]
//! reads all of it over CDP from a running browser (every cookie, and each tab's URL,
//! title, sessionStorage and localStorage of its document's origin); [`restore`] puts it
//! back into a browser started on a restored profile: cookies first, then each tab is
//! opened with a script that fills its storage before any page script runs.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cdp::{CdpError, Connection};
use crate::observe::list_tabs;
use crate::page::Page;

/// Longest wait for one tab's storage to be read: a hung page must not hold a snapshot up.
const TAB_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`capture`] reads and [`restore`] writes back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BrowserState {
    /// Every cookie as `Storage.getCookies` reports it (session cookies included).
    pub cookies: Vec<Value>,
    pub tabs: Vec<TabState>,
    /// Index into `tabs` of the tab the session was acting on.
    pub active: usize,
}

/// One open tab.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TabState {
    pub url: String,
    pub title: String,
    /// The document's origin (`"null"` for opaque ones such as `about:blank`).
    pub origin: String,
    pub session_storage: Vec<(String, String)>,
    pub local_storage: Vec<(String, String)>,
}

/// Reads the browser's cookies and every tab's storage. `active` is the target id of the
/// tab the caller acts on.
pub async fn capture(conn: &Arc<Connection>, active: &str) -> Result<BrowserState, CdpError> {
    let cookies = conn.call("Storage.getCookies", json!({}), None).await?;
    let cookies = cookies["cookies"].as_array().cloned().unwrap_or_default();
    let tabs = list_tabs(conn).await?;
    let reads = tabs.iter().map(|t| read_tab(conn, &t.target_id));
    let storages = futures_util::future::join_all(reads).await;
    let active = tabs.iter().position(|t| t.target_id == active).unwrap_or(0);
    let tabs = tabs
        .into_iter()
        .zip(storages)
        .map(|(t, s)| {
            let (origin, session_storage, local_storage) = s.unwrap_or_default();
            TabState { url: t.url, title: t.title, origin, session_storage, local_storage }
        })
        .collect();
    Ok(BrowserState { cookies, tabs, active })
}

type Storage = (String, Vec<(String, String)>, Vec<(String, String)>);

/// One tab's origin, sessionStorage and localStorage, through a short-lived CDP session.
async fn read_tab(conn: &Arc<Connection>, target_id: &str) -> Option<Storage> {
    const READ: &str = r#"(() => {
        const dump = (area) => { try { const s = area(); const out = [];
            for (let i = 0; i < s.length; i++) { const k = s.key(i); out.push([k, s.getItem(k)]); } return out; } catch (e) { return []; } };
        return { origin: location.origin, ss: dump(() => sessionStorage), ls: dump(() => localStorage) };
    })()"#;
    let attached = conn.call("Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }), None).await.ok()?;
    let session = attached["sessionId"].as_str()?.to_owned();
    let read = tokio::time::timeout(
        TAB_READ_TIMEOUT,
        conn.call("Runtime.evaluate", json!({ "expression": READ, "returnByValue": true }), Some(&session)),
    )
    .await;
    let _ = conn.call("Target.detachFromTarget", json!({ "sessionId": session }), None).await;
    let value = read.ok()?.ok()?;
    let v = &value["result"]["value"];
    let pairs = |key: &str| -> Vec<(String, String)> { serde_json::from_value(v[key].clone()).unwrap_or_default() };
    Some((v["origin"].as_str().unwrap_or("null").to_owned(), pairs("ss"), pairs("ls")))
}

/// Puts `state` back into a browser whose only tab is `first`: sets the cookies, opens each
/// tab with its storage filled before its page's scripts run, and makes the active one
/// current. Returns the pages in `state.tabs` order and the index of the active one. A tab
/// whose site does not load stays open on its error page: a restore does not fail
/// because one site is down.
pub async fn restore(first: &Page, state: &BrowserState, wait: Duration) -> Result<(Vec<Page>, usize), CdpError> {
    let conn = first.connection().clone();
    set_cookies(&conn, &state.cookies).await?;
    let mut pages = vec![first.clone()];
    for _ in 1..state.tabs.len() {
        let created = conn.call("Target.createTarget", json!({ "url": "about:blank" }), None).await?;
        let id = created["targetId"].as_str().unwrap_or_default().to_owned();
        pages.push(Page::attach(&conn, id, first.viewport()).await?);
    }
    let opens = state.tabs.iter().zip(&pages).map(|(tab, page)| open_tab(page, tab, wait));
    for r in futures_util::future::join_all(opens).await {
        r?;
    }
    let active = state.active.min(pages.len() - 1);
    let _ = conn.call("Target.activateTarget", json!({ "targetId": pages[active].target_id() }), None).await;
    Ok((pages, active))
}

async fn open_tab(page: &Page, tab: &TabState, wait: Duration) -> Result<(), CdpError> {
    if tab.url.is_empty() || tab.url == "about:blank" {
        return Ok(());
    }
    let fill = !(tab.session_storage.is_empty() && tab.local_storage.is_empty()) && tab.origin.starts_with("http");
    let script = if fill {
        // Only into the document of the captured origin, and never over what the page (or
        // the restored profile) already has.
        let source = format!(
            r#"(() => {{ if (location.origin !== {origin}) return;
                const fill = (area, pairs) => {{ try {{ const s = area(); for (const [k, v] of pairs) if (s.getItem(k) === null) s.setItem(k, v); }} catch (e) {{}} }};
                fill(() => sessionStorage, {ss}); fill(() => localStorage, {ls}); }})()"#,
            origin = Value::from(tab.origin.clone()),
            ss = json!(tab.session_storage),
            ls = json!(tab.local_storage),
        );
        let added = page.call("Page.addScriptToEvaluateOnNewDocument", json!({ "source": source })).await?;
        added["identifier"].as_str().map(str::to_owned)
    } else {
        None
    };
    if let Err(e) = page.navigate(&tab.url, wait).await {
        // The origin only: a URL's path and query may carry secrets.
        let why = match e {
            crate::page::PageError::Navigation { reason, .. } => reason,
            other => other.to_string(),
        };
        tracing::warn!(origin = %tab.origin, error = %why, "a restored tab did not load");
    }
    if let Some(id) = script {
        // Later documents of this tab are the page's own business.
        page.call("Page.removeScriptToEvaluateOnNewDocument", json!({ "identifier": id })).await?;
    }
    Ok(())
}

/// Sets cookies as `Storage.getCookies` reported them. Chromium refuses the whole batch
/// when one cookie is invalid, so a refused batch is retried one cookie at a time.
async fn set_cookies(conn: &Arc<Connection>, cookies: &[Value]) -> Result<(), CdpError> {
    if cookies.is_empty() {
        return Ok(());
    }
    let params: Vec<Value> = cookies.iter().map(cookie_param).collect();
    if conn.call("Storage.setCookies", json!({ "cookies": params }), None).await.is_ok() {
        return Ok(());
    }
    for p in params {
        if let Err(e) = conn.call("Storage.setCookies", json!({ "cookies": [p] }), None).await {
            tracing::warn!(name = %p["name"], domain = %p["domain"], error = %e, "a saved cookie was refused");
        }
    }
    Ok(())
}

/// A `Network.Cookie` as a `Network.CookieParam`: the read-only fields go, and a session
/// cookie gets no expiry.
fn cookie_param(c: &Value) -> Value {
    let mut p = serde_json::Map::new();
    for key in ["name", "value", "domain", "path", "secure", "httpOnly", "sameSite", "priority", "sourceScheme", "sourcePort", "partitionKey"] {
        if let Some(v) = c.get(key).filter(|v| !v.is_null()) {
            p.insert(key.to_owned(), v.clone());
        }
    }
    if c["session"] != true
        && let Some(exp) = c.get("expires").filter(|e| e.as_f64().is_some_and(|e| e > 0.0))
    {
        p.insert("expires".into(), exp.clone());
    }
    Value::Object(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_cookie_is_set_without_an_expiry_and_read_only_fields_are_dropped() {
        let c = json!({"name": "sid", "value": "v", "domain": "127.0.0.1", "path": "/", "expires": -1, "size": 4,
                       "httpOnly": true, "secure": false, "session": true, "priority": "Medium", "sourcePort": 8080});
        let p = cookie_param(&c);
        assert_eq!(p.get("expires"), None);
        assert_eq!(p.get("size"), None);
        assert_eq!(p.get("session"), None);
        assert_eq!(p["httpOnly"], true);
        assert_eq!(p["sourcePort"], 8080);
        let persistent = json!({"name": "p", "value": "v", "domain": "a.test", "path": "/", "expires": 1.9e9, "session": false});
        assert_eq!(cookie_param(&persistent)["expires"], 1.9e9);
    }
}
