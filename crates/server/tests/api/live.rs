//! The live view, with a second real Chromium playing the person who opens `vnc_url`.

use std::time::Duration;

use agentbox_browser::{Browser, Launcher, Page};
use serde_json::{Value, json};

use crate::support::{Server, Site, eventually};

async fn human() -> (Browser, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let launcher = Launcher { executable: None, profiles_root: root.path().to_owned(), viewport: (1280, 800), timeout: Duration::from_secs(30) };
    (launcher.launch().await.unwrap(), root)
}

async fn eval(page: &Page, expr: &str) -> Value {
    let v = page.call("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true, "awaitPromise": true })).await.unwrap();
    v["result"]["value"].clone()
}

/// A digest of the viewer's canvas: (distinct sampled colours, sum of sampled pixels).
async fn canvas_digest(viewer: &Page) -> (u64, u64) {
    let v = eval(viewer, "(() => { const c = document.getElementById('screen'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
        const seen = new Set(); let sum = 0; for (let i = 0; i < d.length; i += 4 * 97) { seen.add((d[i] << 16) | (d[i+1] << 8) | d[i+2]); sum += d[i] + d[i+1] + d[i+2]; } \
        return [seen.size, sum]; })()").await;
    (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
}

/// Clicks the viewer's canvas where the session's page point (x, y) is shown.
async fn click_page_point(viewer: &Page, x: f64, y: f64) {
    let p = eval(viewer, &format!("agentboxLive.pageToClient({x}, {y})")).await;
    let (cx, cy) = (p["x"].as_f64().unwrap(), p["y"].as_f64().unwrap());
    for kind in ["mousePressed", "mouseReleased"] {
        viewer.call("Input.dispatchMouseEvent", json!({ "type": kind, "x": cx, "y": cy, "button": "left", "buttons": 1, "clickCount": 1 })).await.unwrap();
    }
    eval(viewer, "agentboxLive.sync()").await;
}

async fn open_viewer(browser: &Browser, url: &str) -> Page {
    let viewer = browser.page().clone();
    viewer.navigate(url, Duration::from_secs(10)).await.unwrap();
    eventually("the viewer to show frames", Duration::from_secs(20), || async {
        (eval(&viewer, "window.agentboxLive ? agentboxLive.frames : 0").await.as_u64() > Some(0)).then_some(())
    })
    .await;
    viewer
}

async fn title(server: &Server, sid: &str) -> String {
    server.get(&format!("/v1/sessions/{sid}/screenshot")).await.body["title"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_watches_clicks_and_types_through_vnc_url_and_a_view_link_only_watches() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "1"]).await;
    let created = server.post("/v1/sessions", "{}").await.body;
    let sid = created["session_id"].as_str().unwrap().to_owned();
    let vnc_url = created["vnc_url"].as_str().unwrap().to_owned();
    server.post(&format!("/v1/sessions/{sid}/navigate"), &json!({ "url": format!("{}/products", site.base) }).to_string()).await;

    let metrics = || async { reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap() };
    assert!(metrics().await.contains("agentbox_screencast_frames_total 0"), "no viewer, no frames");

    let (browser, _dir) = human().await;
    let viewer = open_viewer(&browser, &vnc_url).await;
    let before = canvas_digest(&viewer).await;
    assert!(before.0 > 3, "the canvas shows the page, not a blank: {before:?}");
    server.post(&format!("/v1/sessions/{sid}/navigate"), &json!({ "url": format!("{}/panel", site.base) }).to_string()).await;
    eventually("the canvas to change with the page", Duration::from_secs(20), || async { (canvas_digest(&viewer).await != before).then_some(()) }).await;

    // Click the session's button through the viewer, then type into its field.
    click_page_point(&viewer, 200.0, 130.0).await;
    eventually("the click to reach the page", Duration::from_secs(10), || async { (title(&server, &sid).await == "clicked").then_some(()) }).await;
    click_page_point(&viewer, 250.0, 220.0).await;
    for ch in ["h", "i"] {
        for kind in ["keyDown", "keyUp"] {
            let mut ev = json!({ "type": kind, "key": ch, "code": format!("Key{}", ch.to_uppercase()), "windowsVirtualKeyCode": ch.to_uppercase().chars().next().unwrap() as u32 });
            if kind == "keyDown" {
                ev["text"] = json!(ch);
            }
            viewer.call("Input.dispatchKeyEvent", ev).await.unwrap();
        }
    }
    eval(&viewer, "agentboxLive.sync()").await;
    eventually("the typing to reach the page", Duration::from_secs(10), || async { (title(&server, &sid).await == "typed:hi").then_some(()) }).await;

    // A view link: frames, but its clicks are dropped server-side.
    let minted = server.post(&format!("/v1/sessions/{sid}/live_tokens"), r#"{"mode": "view", "ttl_seconds": 600}"#).await;
    assert_eq!(minted.status, 201, "{}", minted.body);
    assert_eq!(minted.body["mode"], "view");
    let view_url = minted.body["url"].as_str().unwrap().to_owned();
    let watcher = open_viewer(&browser, &view_url).await;
    server.post(&format!("/v1/sessions/{sid}/navigate"), &json!({ "url": format!("{}/panel", site.base) }).to_string()).await;
    click_page_point(&watcher, 200.0, 130.0).await;
    assert_eq!(title(&server, &sid).await, "Panel", "a view link's click changes nothing");
    let errors = eval(&watcher, "agentboxLive.errors").await;
    assert!(errors.to_string().contains("can only watch"), "{errors}");
    assert!(metrics().await.contains("agentbox_screencast_frames_total"), "frames are counted");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_live_tokens_get_401_and_a_control_click_pauses_a_running_task_until_handed_back() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "2"]).await;
    let a = server.post("/v1/sessions", "{}").await.body;
    let b = server.post("/v1/sessions", "{}").await.body;
    let sid = a["session_id"].as_str().unwrap().to_owned();
    let url = a["vnc_url"].as_str().unwrap().to_owned();
    let other_token = b["vnc_url"].as_str().unwrap().split("token=").nth(1).unwrap().to_owned();
    let status = |u: String| async move { reqwest::get(u).await.unwrap().status().as_u16() };
    assert_eq!(status(url.clone()).await, 200);
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert_eq!(status(url.replace("token=", "token=x")).await, 401, "tampered");
    assert_eq!(status(format!("{}?token={other_token}", url.split('?').next().unwrap())).await, 401, "another session's token");
    assert_eq!(status(url.split('?').next().unwrap().to_owned()).await, 401, "no token");
    assert_eq!(status(url.replace("?token=", "/ws?token=x")).await, 401, "the socket checks too");
    let r = server.post(&format!("/v1/sessions/{sid}/live_tokens"), r#"{"mode": "admin"}"#).await;
    r.assert_error(422, "validation_error", "mode");
    let r = server.post(&format!("/v1/sessions/{sid}/live_tokens"), r#"{"ttl_seconds": 0}"#).await;
    r.assert_error(422, "validation_error", "ttl_seconds");

    // Take-over while a task runs.
    // The task waits for what the person's click shows, so it is running when the click comes.
    let task = json!({ "message": "wait for Clicked! then what is the page title", "start_url": format!("{}/panel", site.base) });
    assert_eq!(server.post(&format!("/v1/sessions/{sid}/message"), &task.to_string()).await.status, 200);
    eventually("the start_url to be open", Duration::from_secs(20), || async {
        let shot = server.get(&format!("/v1/sessions/{sid}/screenshot")).await;
        shot.body["url"].as_str().unwrap_or_default().ends_with("/panel").then_some(())
    })
    .await;
    let (browser, _dir) = human().await;
    let viewer = open_viewer(&browser, &url).await;
    // Moving the pointer over the picture is watching, not taking over.
    let p = eval(&viewer, "agentboxLive.pageToClient(400, 300)").await;
    viewer.call("Input.dispatchMouseEvent", json!({ "type": "mouseMoved", "x": p["x"], "y": p["y"] })).await.unwrap();
    eval(&viewer, "agentboxLive.sync()").await;
    assert_eq!(server.get(&format!("/v1/sessions/{sid}/status")).await.body["status"], "running");
    click_page_point(&viewer, 200.0, 130.0).await;
    assert_eq!(server.get(&format!("/v1/sessions/{sid}/status")).await.body["status"], "paused");
    let log = server.messages(&sid).await;
    let paused = log.iter().rev().find(|m| m["metadata"]["event"] == "paused").expect("a paused entry");
    assert_eq!(paused["metadata"]["by"], "live_view");
    eventually("the viewer to show it has control", Duration::from_secs(10), || async {
        (eval(&viewer, "!document.getElementById('back').disabled").await == json!(true)).then_some(())
    })
    .await;
    eval(&viewer, "document.getElementById('back').click(), agentboxLive.sync()").await;
    eventually("hand back to resume the task", Duration::from_secs(10), || async {
        let s = server.get(&format!("/v1/sessions/{sid}/status")).await.body["status"].as_str().unwrap().to_owned();
        (s != "paused").then_some(())
    })
    .await;
    assert_eq!(server.wait_status(&sid, &["finished", "error"]).await, "finished");
    assert_eq!(server.messages(&sid).await.last().unwrap()["content"], "clicked", "the person's click stayed; the agent read it");

    // A deleted session's link is refused.
    assert_eq!(server.delete(&format!("/v1/sessions/{sid}")).await.body["deleted"], true);
    assert_eq!(status(url.clone()).await, 401);
    browser.close().await;
}
