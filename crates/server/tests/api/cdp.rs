//! The CDP proxy: Playwright (playwright-core, which launches nothing) connects to a
//! session's `cdp_url` and works its page; the agent goes on in the same page.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Server, Site};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playwright_fills_a_form_through_cdp_url_and_the_agent_continues_in_the_same_page() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "1"]).await;
    let created = server.post("/v1/sessions", "{}").await.body;
    let sid = created["session_id"].as_str().unwrap().to_owned();
    let cdp_url = created["cdp_url"].as_str().unwrap().to_owned();
    assert!(cdp_url.starts_with("ws://127.0.0.1:") && cdp_url.contains(&format!("/v1/sessions/{sid}/cdp?token=")), "{cdp_url}");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cdp/connect.mjs");
    let out = tokio::process::Command::new("node").arg(script).args([&cdp_url, &format!("{}/login", site.base)]).output().await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "playwright failed (scripts/install-deps --test installs playwright-core):\n{stdout}\n{stderr}");
    let said: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(said["text"], "Welcome, alice!");
    assert_eq!(said["pages"], 1, "Playwright saw the session's own page");

    // The agent works the page the script left.
    let (status, msgs) = server.run_task(&sid, "read Welcome").await;
    assert_eq!(status, "finished");
    assert_eq!(msgs.last().unwrap()["content"], "Welcome, alice!");
    let shot = server.get(&format!("/v1/sessions/{sid}/screenshot")).await;
    assert!(shot.body["url"].as_str().unwrap().ends_with("/login"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdp_proxy_checks_access_before_upgrading_and_closes_when_the_session_ends() {
    let server = Server::start(&["--pool-size", "1"]).await;
    let a = server.post("/v1/sessions", "{}").await.body;
    let b = server.post("/v1/sessions", "{}").await.body;
    let (sid, url) = (a["session_id"].as_str().unwrap().to_owned(), a["cdp_url"].as_str().unwrap().to_owned());
    let token_b = b["cdp_url"].as_str().unwrap().split("token=").nth(1).unwrap().to_owned();
    let ws_base = url.split('?').next().unwrap().to_owned();

    let refused = |u: String| async move {
        match tokio_tungstenite::connect_async(u.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            other => panic!("expected an HTTP refusal, got {:?}", other.map(|_| ())),
        }
    };
    assert_eq!(refused(ws_base.clone()).await, 401, "no token");
    assert_eq!(refused(format!("{ws_base}?token=nonsense")).await, 401, "malformed token");
    assert_eq!(refused(format!("{ws_base}?token={token_b}")).await, 401, "another session's token");
    let forged = url.replace("cdp?token=", "cdp?token=x");
    assert_eq!(refused(forged).await, 401, "tampered token");

    // A plain HTTP request is told it needs a WebSocket; discovery names the cdp_url.
    let http = url.replace("ws://", "http://");
    let r = reqwest::get(&http).await.unwrap();
    assert_eq!(r.status(), 426);
    let version: Value = reqwest::get(http.replace("/cdp?", "/cdp/json/version?")).await.unwrap().json().await.unwrap();
    assert_eq!(version["webSocketDebuggerUrl"], url);

    // The owner's key works as a Bearer header too.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = ws_base.as_str().into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", server.key).parse().unwrap());
    let (mut by_key, _) = tokio_tungstenite::connect_async(req).await.expect("the owner's key is accepted");
    by_key.send(Message::text(json!({ "id": 1, "method": "Browser.getVersion" }).to_string())).await.unwrap();
    let reply: Value = loop {
        if let Some(Ok(Message::Text(t))) = by_key.next().await {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == 1 {
                break v;
            }
        }
    };
    assert!(reply["result"]["product"].as_str().unwrap().contains("Chrome"), "{reply}");
    let other = server.new_user("mallet");
    let mut req = ws_base.as_str().into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", other["api_key"].as_str().unwrap()).parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404, "another user's session"),
        other => panic!("another user must be refused: {:?}", other.map(|_| ())),
    }

    // Deleting the session closes the proxied connection, then its token is refused.
    let (mut by_token, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("the token is accepted");
    assert_eq!(server.delete(&format!("/v1/sessions/{sid}")).await.body["deleted"], true);
    // Bounded only so that a regression fails instead of hanging the suite.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(m) = by_token.next().await {
            if matches!(m, Ok(Message::Close(_)) | Err(_)) {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection ends with the session");
    assert_eq!(refused(url.clone()).await, 401, "a deleted session's token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_cdp_session_works_a_browser_the_user_runs_and_leaves_it_running() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "0"]).await;
    // The user's own Chromium, started by the test outside the server's data dir.
    let root = tempfile::tempdir().unwrap();
    let launcher = agentbox_browser::Launcher {
        executable: None,
        profiles_root: root.path().to_owned(),
        viewport: (1024, 768),
        timeout: std::time::Duration::from_secs(30),
    };
    let mine = launcher.launch().await.unwrap();

    let body = json!({ "agent_session_type": "external-cdp", "cdp_url": mine.ws_url() }).to_string();
    let r = server.post("/v1/sessions", &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["agent_session_type"], "external-cdp");
    let sid = r.body["session_id"].as_str().unwrap().to_owned();
    assert!(server.browser_groups().is_empty(), "agentbox started no browser");

    let task = json!({ "message": "what is the price of Widget Mini", "start_url": format!("{}/products", site.base) }).to_string();
    assert_eq!(server.post(&format!("/v1/sessions/{sid}/message"), &task).await.status, 200);
    assert_eq!(server.wait_status(&sid, &["finished", "error"]).await, "finished");
    assert_eq!(server.messages(&sid).await.last().unwrap()["content"], "$9.99");
    // The task ran in the user's browser.
    let (url, _) = mine.page().location().await.unwrap();
    assert!(url.ends_with("/products"), "{url}");
    assert_eq!(server.get(&format!("/v1/sessions/{sid}/screenshot")).await.body["title"], "Products");

    assert_eq!(server.delete(&format!("/v1/sessions/{sid}")).await.body["deleted"], true);
    assert!(mine.is_alive(), "a browser agentbox did not start is never killed");
    assert!(mine.page().location().await.is_ok(), "and still answers");

    // Asking for one without a URL, or at one nobody serves, is a clear 422.
    server
        .post("/v1/sessions", r#"{"agent_session_type": "external-cdp"}"#)
        .await
        .assert_error(422, "validation_error", "cdp_url");
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let r = server.post("/v1/sessions", &json!({ "agent_session_type": "external-cdp", "cdp_url": format!("ws://127.0.0.1:{closed}/devtools/browser/x") }).to_string()).await;
    r.assert_error(422, "validation_error", "could not connect to cdp_url");
    // The http:// discovery form works too.
    let http = format!("http://{}", mine.ws_url().trim_start_matches("ws://").split('/').next().unwrap());
    let r = server.post("/v1/sessions", &json!({ "agent_session_type": "external-cdp", "cdp_url": http }).to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    mine.close().await;
}
