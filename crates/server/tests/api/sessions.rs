//! The session lifecycle and its limits.

use std::time::Duration;

use crate::support::{Server, Site, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lives_from_create_to_delete_with_its_own_chromium_and_leaves_nothing() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "0"]).await;
    assert!(server.browser_groups().is_empty(), "no browser before the first create");

    let created = server.post("/v1/sessions", r#"{"agent_name": "agi-0-fast"}"#).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let s = &created.body;
    let id = s["session_id"].as_str().unwrap().to_owned();
    assert_eq!(s["status"], "ready");
    assert_eq!(s["agent_name"], "agi-0-fast");
    assert_eq!(s["agent_session_type"], "managed-cdp");
    assert_eq!(s["max_steps"], 100);
    assert_eq!(s["goal"], serde_json::Value::Null);
    assert_eq!(s["restored_from"], serde_json::Value::Null);
    assert!(uuid::Uuid::parse_str(s["environment_id"].as_str().unwrap()).is_ok());
    let created_at = s["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z') && created_at.len() == 24, "{created_at}");
    let vnc = s["vnc_url"].as_str().unwrap();
    assert!(vnc.starts_with(&format!("{}/live/{id}?token=", server.base)), "{vnc}");
    let cdp = s["cdp_url"].as_str().unwrap();
    assert!(cdp.starts_with(&format!("{}/v1/sessions/{id}/cdp?token=", server.base.replace("http://", "ws://"))), "{cdp}");
    assert_eq!(server.browser_groups().len(), 1, "one Chromium process group for the session");
    assert_eq!(server.profile_dirs().len(), 1);

    let got = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["session_id"], id.as_str());
    let listed = server.get("/v1/sessions").await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    assert_eq!(listed.body[0]["session_id"], id.as_str());
    assert_eq!(server.get(&format!("/v1/sessions/{id}/status")).await.body["status"], "ready");

    let blank = server.get(&format!("/v1/sessions/{id}/screenshot")).await;
    assert_eq!(blank.status, 200, "a blank tab can be screenshotted: {}", blank.body);
    assert_eq!(blank.body["title"], "", "an untitled page has an empty title, not null");

    let page = format!("{}/", site.base);
    let nav = server.post(&format!("/v1/sessions/{id}/navigate"), &format!(r#"{{"url": "{page}"}}"#)).await;
    assert_eq!(nav.status, 200, "{}", nav.body);
    assert_eq!(nav.body["current_url"], page.as_str());

    let shot = server.get(&format!("/v1/sessions/{id}/screenshot")).await;
    assert_eq!(shot.status, 200);
    assert_eq!(shot.body["title"], "Fixture Home");
    assert_eq!(shot.body["url"], page.as_str());
    let data = shot.body["screenshot"].as_str().unwrap();
    let b64 = data.strip_prefix("data:image/jpeg;base64,").expect("a JPEG data URL");
    use base64::Engine as _;
    let jpeg = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF], "JPEG magic");
    assert!(jpeg.len() > 2000, "a real rendered page, not an empty image");

    let gone = server.delete(&format!("/v1/sessions/{id}")).await;
    assert_eq!(gone.status, 200);
    assert_eq!(gone.body, serde_json::json!({"success": true, "deleted": true, "message": "Session deleted successfully"}));
    assert!(server.profile_dirs().is_empty(), "the profile dir is gone from the profiles dir once delete returns");
    server.wait_browser_groups(0).await;
    eventually("the janitor removes the profile", Duration::from_secs(10), || async { server.trash_dirs().is_empty().then_some(()) })
        .await;

    server.get(&format!("/v1/sessions/{id}")).await.assert_error(404, "not_found", "session");
    server.get(&format!("/v1/sessions/{id}/screenshot")).await.assert_error(404, "not_found", "session");
    let again = server.delete(&format!("/v1/sessions/{id}")).await;
    assert_eq!(again.body, serde_json::json!({"success": true, "deleted": false, "message": "Session not found"}));
    assert_eq!(server.get("/v1/sessions").await.body, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_all_ends_every_session_of_the_caller_and_no_one_elses() {
    let server = Server::start(&["--pool-size", "0"]).await;
    let other = server.new_user("other");
    let other_key = other["api_key"].as_str().unwrap();
    let theirs = server.call(reqwest::Method::POST, "/v1/sessions", Some(other_key), Some("{}")).await;
    assert_eq!(theirs.status, 201);
    server.create_session().await;
    server.create_session().await;
    assert_eq!(server.browser_groups().len(), 3);

    let r = server.delete("/v1/sessions").await;
    assert_eq!(r.body, serde_json::json!({"success": true, "deleted": true, "message": "Sessions deleted successfully"}));
    assert_eq!(server.get("/v1/sessions").await.body, serde_json::json!([]));
    server.wait_browser_groups(1).await; // the other user's browser still runs
    let mine = server.call(reqwest::Method::GET, "/v1/sessions", Some(other_key), None).await;
    assert_eq!(mine.body.as_array().unwrap().len(), 1);

    let r = server.delete("/v1/sessions").await;
    assert_eq!(r.body["deleted"], false, "nothing left to delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_beyond_the_session_limits_get_503_with_retry_after() {
    let server = Server::start(&["--pool-size", "0", "--max-sessions", "2", "--max-sessions-per-user", "1"]).await;
    let bob = server.new_user("bob");
    let bob_key = bob["api_key"].as_str().unwrap();

    let first = server.create_session().await;
    server
        .post("/v1/sessions", "{}")
        .await
        .assert_error(503, "capacity_exceeded", "maximum of 1 sessions");
    let r = server.call(reqwest::Method::POST, "/v1/sessions", Some(bob_key), Some("{}")).await;
    assert_eq!(r.status, 201, "{}", r.body);

    let third = server.call(reqwest::Method::POST, "/v1/sessions", Some(bob_key), Some("{}")).await;
    third.assert_error(503, "capacity_exceeded", "maximum of 2 sessions");
    let retry: u64 = third.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0);

    server.delete(&format!("/v1/sessions/{first}")).await;
    let r = server.call(reqwest::Method::POST, "/v1/sessions", Some(bob_key), Some("{}")).await;
    assert_eq!(r.status, 503, "bob is at his own limit now");
    assert_eq!(server.post("/v1/sessions", "{}").await.status, 201, "a freed slot is usable again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_pool_hands_over_a_running_browser_and_refills() {
    let server = Server::start(&["--pool-size", "1"]).await;
    let warm = |s: &Server| {
        let base = s.base.clone();
        async move {
            let v: serde_json::Value = reqwest::get(format!("{base}/healthz")).await.unwrap().json().await.unwrap();
            v["warm_browsers"].as_u64().unwrap()
        }
    };
    eventually("the pool fills", Duration::from_secs(30), || async { (warm(&server).await == 1).then_some(()) }).await;
    let pooled = server.browser_groups();
    assert_eq!(pooled.len(), 1);
    server.create_session().await;
    let after = server.browser_groups();
    assert!(after.contains(&pooled[0]), "the session got the pooled browser");
    eventually("the pool refills", Duration::from_secs(30), || async { (warm(&server).await == 1).then_some(()) }).await;
    assert_eq!(server.browser_groups().len(), 2, "one in use, one warm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_idle_past_the_timeout_is_ended_and_its_browser_killed() {
    let server = Server::start(&["--pool-size", "0", "--idle-timeout", "1s", "--reap-interval", "100ms"]).await;
    let id = server.create_session().await;
    assert_eq!(server.browser_groups().len(), 1);
    // Listing does not count as using a session, so it can watch without keeping it alive.
    eventually("the idle session ends", Duration::from_secs(30), || async {
        server.get("/v1/sessions").await.body.as_array().unwrap().is_empty().then_some(())
    })
    .await;
    eventually("its browser is killed", Duration::from_secs(10), || async { server.browser_processes().is_empty().then_some(()) }).await;
    server.get(&format!("/v1/sessions/{id}")).await.assert_error(404, "not_found", "session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_sessions_and_kills_every_browser_before_exit() {
    let mut server = Server::start(&["--pool-size", "1"]).await;
    let sid = server.create_session().await;
    assert!(!server.browser_processes().is_empty());
    // Open event streams, DevTools proxies and live viewers do not hold the server up.
    let mut sse = crate::events::Sse::open(&server, &sid, "", None).await;
    let s = server.get(&format!("/v1/sessions/{sid}")).await.body;
    let (_cdp, _) = tokio_tungstenite::connect_async(s["cdp_url"].as_str().unwrap()).await.unwrap();
    let live_ws = s["vnc_url"].as_str().unwrap().replacen("http", "ws", 1).replacen("?token=", "/ws?token=", 1);
    let (_viewer, _) = tokio_tungstenite::connect_async(live_ws.as_str()).await.unwrap();
    assert!(server.stop(), "clean exit on SIGTERM; log:\n{}", server.log());
    assert_eq!(sse.next().await, None, "the stream ended");
    assert!(server.browser_processes().is_empty(), "no browser outlives the server");
    assert!(server.profile_dirs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_me_health_and_openapi_describe_the_server() {
    let server = Server::start(&["--pool-size", "0"]).await;
    assert_eq!(server.get("/v1/models").await.body, serde_json::json!({"models": ["agi-0", "agi-0-fast"]}));
    assert_eq!(server.get("/v1/models?filter=desktop").await.body, serde_json::json!({"models": []}));
    let me = server.get("/v1/users/me").await.body;
    assert!(uuid::Uuid::parse_str(me["user_id"].as_str().unwrap()).is_ok());
    assert_eq!(me["default_environment_id"], serde_json::Value::Null);
    let health = reqwest::get(format!("{}/healthz", server.base)).await.unwrap();
    assert_eq!(health.status(), 200, "health needs no key");

    let doc: serde_json::Value = reqwest::get(format!("{}/openapi.json", server.base)).await.unwrap().json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/sessions", "post"),
        ("/v1/sessions", "get"),
        ("/v1/sessions", "delete"),
        ("/v1/sessions/{id}", "get"),
        ("/v1/sessions/{id}", "delete"),
        ("/v1/sessions/{id}/status", "get"),
        ("/v1/sessions/{id}/navigate", "post"),
        ("/v1/sessions/{id}/screenshot", "get"),
        ("/v1/models", "get"),
        ("/v1/users/me", "get"),
        ("/healthz", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "openapi.json lacks {method} {path}");
    }
    assert!(doc["components"]["schemas"]["SessionResponse"]["properties"]["cdp_url"].is_object());
}
