//! Every documented client error: status, stable code, and a detail naming the problem.

use reqwest::Method;

use crate::support::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_key_are_401_and_other_users_sessions_are_404() {
    let server = Server::start(&["--pool-size", "0"]).await;
    let id = server.create_session().await;
    let path = format!("/v1/sessions/{id}");

    server.call(Method::GET, &path, None, None).await.assert_error(401, "unauthorized", "Authorization header");
    server.call(Method::GET, &path, Some("ab_not-a-real-key"), None).await.assert_error(401, "unauthorized", "unknown or revoked");
    let basic = reqwest::Client::new()
        .get(format!("{}{path}", server.base))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    assert_eq!(basic.headers()["www-authenticate"], "Bearer");

    let eve = server.new_user("eve");
    let eve_key = eve["api_key"].as_str().unwrap();
    for (method, p, body) in [
        (Method::GET, path.clone(), None),
        (Method::GET, format!("{path}/status"), None),
        (Method::GET, format!("{path}/screenshot"), None),
        (Method::POST, format!("{path}/navigate"), Some(r#"{"url": "http://127.0.0.1:1/"}"#)),
    ] {
        let r = server.call(method.clone(), &p, Some(eve_key), body).await;
        r.assert_error(404, "not_found", "session not found");
    }
    let r = server.call(Method::DELETE, &path, Some(eve_key), None).await;
    assert_eq!(r.body["deleted"], false, "another user's session cannot be deleted");
    let r = server.call(Method::GET, "/v1/sessions", Some(eve_key), None).await;
    assert_eq!(r.body, serde_json::json!([]));
    assert_eq!(server.get(&path).await.status, 200, "the owner still has it");

    // A revoked key stops working at once.
    let prefix = &eve_key[..11];
    let (ok, out, err) = server.cli(&["keys", "revoke", prefix]);
    assert!(ok, "{err}");
    assert!(out.contains("\"revoked\":1"), "{out}");
    server.call(Method::GET, "/v1/sessions", Some(eve_key), None).await.assert_error(401, "unauthorized", "revoked");
    let (listed_ok, listed, _) = server.cli(&["users", "list"]);
    assert!(listed_ok);
    assert!(listed.contains(prefix) && listed.contains("\"revoked\":true"), "{listed}");
    assert!(!listed.contains(eve_key), "users list never shows a key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_create_bodies_are_422_naming_the_field_and_start_no_browser() {
    let server = Server::start(&["--pool-size", "0"]).await;
    let long_url = format!("https://example.com/{}", "a".repeat(2000));
    let cases: Vec<(String, &str, &str)> = vec![
        (r#"{"agent_name": "gpt-99"}"#.into(), "agent_name", "agi-0, agi-0-fast"),
        (r#"{"agent_name": 5}"#.into(), "agent_name", "expected a string"),
        (r#"{"max_steps": "ten"}"#.into(), "max_steps", "expected an integer"),
        (r#"{"max_steps": 0}"#.into(), "max_steps", "between 1 and 1000"),
        (r#"{"max_steps": 1001}"#.into(), "max_steps", "between 1 and 1000"),
        (r#"{"enable_memory_snapshot": "yes"}"#.into(), "enable_memory_snapshot", "expected a boolean"),
        (r#"{"webhook_url": "ftp://example.com/hook"}"#.into(), "webhook_url", "http or https"),
        (r#"{"webhook_url": "/relative/hook"}"#.into(), "webhook_url", "absolute"),
        (format!(r#"{{"webhook_url": "{long_url}"}}"#), "webhook_url", "2000 characters"),
        (r#"{"goal": ""}"#.into(), "goal", "1 to 10000 characters"),
        (r#"{"agent_session_type": "desktop"}"#.into(), "agent_session_type", "managed-cdp"),
        (r#"{"restore_from_session_id": "not-a-uuid"}"#.into(), "restore_from_session_id", "UUID"),
        (r#"{"agent_name": "agi-0""#.into(), "", "not valid JSON"),
        ("[1, 2]".into(), "", "must be a JSON object"),
    ];
    for (body, field, needle) in cases {
        let r = server.post("/v1/sessions", &body).await;
        r.assert_error(422, "validation_error", needle);
        if !field.is_empty() {
            assert_eq!(r.body["errors"][0]["loc"], serde_json::json!(["body", field]), "{body}");
            assert!(r.body["detail"].as_str().unwrap().starts_with(field), "{}", r.body);
        }
    }
    assert!(server.browser_groups().is_empty(), "no browser was started for a bad request");
    assert_eq!(server.get("/v1/sessions").await.body, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_request_fields_are_accepted_and_ignored() {
    let server = Server::start(&["--pool-size", "0"]).await;
    let body = r#"{"agent_name": "agi-0", "max_steps": 7, "goal": "look around", "config_updates": {"x": 1},
                   "cdp_url": null, "environment_type": "chrome-1", "something_new": [1, {"a": 2}]}"#;
    let r = server.post("/v1/sessions", body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["max_steps"], 7);
    assert_eq!(r.body["goal"], "look around");
    let id = r.body["session_id"].as_str().unwrap();
    let nav = server.post(&format!("/v1/sessions/{id}/navigate"), r#"{"url": "about:blank", "extra": true}"#).await;
    nav.assert_error(400, "invalid_url", "http or https");
    // An empty body is an empty object.
    let r = server.call(Method::POST, "/v1/sessions", Some(&server.key), None).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_navigate_and_delete_requests_say_what_to_fix() {
    let server = Server::start(&["--pool-size", "0"]).await;
    let id = server.create_session().await;
    let nav = format!("/v1/sessions/{id}/navigate");
    let long_url = format!("https://example.com/{}", "a".repeat(2000));
    server.post(&nav, r#"{"url": "ftp://example.com/file"}"#).await.assert_error(400, "invalid_url", "http or https");
    server.post(&nav, r#"{"url": "/just/a/path"}"#).await.assert_error(400, "invalid_url", "absolute");
    server.post(&nav, &format!(r#"{{"url": "{long_url}"}}"#)).await.assert_error(400, "invalid_url", "2000 characters");
    server.post(&nav, r#"{"url": 42}"#).await.assert_error(422, "validation_error", "url: invalid type");
    server.post(&nav, r#"{}"#).await.assert_error(422, "validation_error", "url: is required");
    server.post(&nav, "{broken").await.assert_error(422, "validation_error", "not valid JSON");

    // A page that cannot load is the site's failure, named as such.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    server
        .post(&nav, &format!(r#"{{"url": "http://127.0.0.1:{closed_port}/"}}"#))
        .await
        .assert_error(502, "navigation_failed", "ERR_CONNECTION_REFUSED");

    let del = format!("/v1/sessions/{id}");
    server
        .delete(&format!("{del}?save_snapshot_mode=none&save_as_default=true"))
        .await
        .assert_error(422, "validation_error", "save_as_default");
    server.delete(&format!("{del}?save_snapshot_mode=disk")).await.assert_error(422, "validation_error", "none, memory, filesystem");
    server.delete(&format!("{del}?save_as_default=maybe")).await.assert_error(422, "validation_error", "save_as_default");
    assert_eq!(server.get(&del).await.status, 200, "refused deletes delete nothing");

    // Restoring from something that has no snapshot is a 404 that says which.
    let r = server.post("/v1/sessions", &format!(r#"{{"restore_from_session_id": "{id}"}}"#)).await;
    r.assert_error(404, "snapshot_not_found", &format!("session {id} has no saved snapshot"));
    let unknown = uuid::Uuid::new_v4();
    let r = server.post("/v1/sessions", &format!(r#"{{"restore_from_environment_id": "{unknown}"}}"#)).await;
    r.assert_error(404, "snapshot_not_found", &format!("environment {unknown} not found"));
    let me = server.get("/v1/users/me").await.body["user_id"].as_str().unwrap().to_owned();
    let r = server.post("/v1/sessions", &format!(r#"{{"restore_default_environment_from_user_id": "{me}"}}"#)).await;
    r.assert_error(404, "snapshot_not_found", "no default environment");
    let r = server.post("/v1/sessions", &format!(r#"{{"restore_default_environment_from_user_id": "{unknown}"}}"#)).await;
    r.assert_error(404, "snapshot_not_found", "not found");

    server.get("/v1/nowhere").await.assert_error(404, "not_found", "/openapi.json");
    server.call(Method::PUT, &del, Some(&server.key), None).await.assert_error(405, "method_not_allowed", "PUT");
    server.get("/v1/sessions/not-a-uuid").await.assert_error(404, "not_found", "session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_chromium_makes_create_fail_with_500_naming_the_cause() {
    let server = Server::start(&["--pool-size", "0", "--chromium-path", "/nonexistent/chromium"]).await;
    let r = server.post("/v1/sessions", "{}").await;
    r.assert_error(500, "browser_launch_failed", "Chromium was not found");
    assert!(!r.body["detail"].as_str().unwrap().contains("/nonexistent"), "5xx bodies carry no paths");
    assert_eq!(server.get("/v1/sessions").await.body, serde_json::json!([]), "no half-created session");
    assert!(server.profile_dirs().is_empty());
}
