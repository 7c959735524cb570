//! The agent with its offline rule planner: tasks on the fixture site end in DONE with the
//! right content; the message log, status machine, pause/cancel/max_steps and paging.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, Site, eventually};

fn kinds(msgs: &[Value]) -> Vec<&str> {
    msgs.iter().map(|m| m["type"].as_str().unwrap()).collect()
}

fn done_content(msgs: &[Value]) -> Value {
    msgs.iter().find(|m| m["type"] == "DONE").map(|m| m["content"].clone()).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rule_planner_runs_imperative_tasks_on_the_fixture_site_to_the_right_result() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "1"]).await;
    let sid = server.create_session().await;
    let b = &site.base;
    let cases: Vec<(String, &str)> = vec![
        (format!("go to {b}/ then click Products then what is the price of Widget Pro"), "$24.99"),
        (format!("go to {b}/, search for gadget, then what is the price of Gadget Max?"), "$129.00"),
        (format!("open {b}/\ntype widget into the search box\npress Enter\nwhat is the price of Widget Mini"), "$9.99"),
        (
            format!("go to {b}/login; type alice into Username; fill Password with secret; click the Sign in button; read Welcome"),
            "Welcome, alice!",
        ),
        (format!("go to {b}/settings, select Large in the size dropdown, click Save, what is the saved size"), "Large"),
        (format!("go to {b}/settings, check Subscribe to newsletter, click Save, what is the newsletter"), "yes"),
        (format!("go to {b}/reports then click Open report then switch to the new tab then what is the report total"), "$1,234.00"),
        (format!("go to {b}/slow then click Show details then what is the status"), "shipped"),
        (format!("go to {b}/reports, click Open report, click Close report, what is the page title"), "Reports"),
        (format!("go to {b}/long, scroll to the bottom, click Bottom button, read Clicked at the bottom"), "Clicked at the bottom"),
        (format!("go to {b}/ then click about us then what is the page title"), "About the fixture"),
        (format!("go to {b}/ then click Products then go back then go forward then what is the title"), "Products"),
        (format!("go to {b}/slow, click Show details, wait for Track package, click Track package, what is the url"), "/slow"),
    ];
    for (task, want) in &cases {
        let (status, msgs) = server.run_task(&sid, task).await;
        let content = done_content(&msgs);
        assert_eq!(status, "finished", "task {task:?} ended {status}: {msgs:#?}");
        let text = content.as_str().unwrap_or_default();
        assert!(text.contains(want), "task {task:?}: DONE content {content} should contain {want:?}; log: {msgs:#?}");
        // Every executed action is a THOUGHT with its action and step number.
        let thoughts: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "THOUGHT" && m["metadata"]["action"]["type"] != "done").collect();
        assert!(!thoughts.is_empty(), "{msgs:#?}");
        for t in thoughts {
            assert!(t["metadata"]["step"].as_u64().unwrap() >= 1 && t["metadata"]["action"]["type"].is_string(), "{t}");
        }
    }
    assert_eq!(server.get(&format!("/v1/sessions/{sid}")).await.body["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_the_rule_planner_cannot_understand_ends_in_an_error_listing_what_it_understands() {
    let server = Server::start(&["--pool-size", "1"]).await;
    let said = server.stdout_with("agent agi-0-fast").await;
    assert!(said.contains("agent agi-0: built-in rule planner (no model configured"), "the server says what runs each name: {said}");
    let sid = server.create_session().await;
    let (status, msgs) = server.run_task(&sid, "make me a sandwich").await;
    assert_eq!(status, "error");
    assert_eq!(kinds(&msgs), ["USER", "ERROR"]);
    let err = msgs[1]["content"].as_str().unwrap();
    assert!(err.contains("\"make me a sandwich\"") && err.contains("type TEXT into FIELD") && err.contains("LLM provider"), "{err}");
    let s = server.get(&format!("/v1/sessions/{sid}")).await;
    assert_eq!(s.body["status"], "error");
    // An errored session still takes a new task.
    let (status, _) = server.run_task(&sid, "what is the page title").await;
    assert_eq!(status, "finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_element_that_never_appears_ends_the_task_with_an_error_naming_it() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "1"]).await;
    let sid = server.create_session().await;
    let (status, msgs) = server.run_task(&sid, &format!("go to {}/about then click Checkout", site.base)).await;
    assert_eq!(status, "error");
    let err = msgs.iter().find(|m| m["type"] == "ERROR").unwrap()["content"].as_str().unwrap().to_owned();
    assert!(err.contains("no element matches \"Checkout\"") && err.contains("link \"Home\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_steps_ends_the_task_with_an_error_that_names_the_limit_and_config_updates_raises_it() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "1"]).await;
    let r = server.post("/v1/sessions", r#"{"max_steps": 2}"#).await;
    let sid = r.body["session_id"].as_str().unwrap().to_owned();
    let task = format!("go to {}/ then click Products then go back then click About us then what is the page title", site.base);
    let (status, msgs) = server.run_task(&sid, &task).await;
    assert_eq!(status, "error");
    let err = msgs.iter().find(|m| m["type"] == "ERROR").unwrap();
    assert!(err["content"].as_str().unwrap().contains("max_steps (2)"), "{err}");
    assert_eq!(msgs.iter().filter(|m| m["type"] == "THOUGHT").count(), 2, "exactly two actions ran: {msgs:#?}");

    let body = json!({ "message": task, "config_updates": { "max_steps": 10 } }).to_string();
    assert_eq!(server.post(&format!("/v1/sessions/{sid}/message"), &body).await.status, 200);
    assert_eq!(server.wait_status(&sid, &["finished", "error"]).await, "finished");
    assert_eq!(server.get(&format!("/v1/sessions/{sid}")).await.body["max_steps"], 10);

    let bad = json!({ "message": "x", "config_updates": { "max_steps": 0 } }).to_string();
    server.post(&format!("/v1/sessions/{sid}/message"), &bad).await.assert_error(422, "validation_error", "max_steps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_the_task_and_the_session_takes_a_new_one() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "1"]).await;
    let sid = server.create_session().await;
    let p = |a: &str| format!("/v1/sessions/{sid}/{a}");
    server.post(&p("cancel"), "{}").await.assert_error(409, "no_task_running", "no task");
    server.post(&p("pause"), "{}").await.assert_error(409, "no_task_running", "no task");
    server.post(&p("resume"), "{}").await.assert_error(409, "not_paused", "not paused");

    let body = json!({ "message": "wait 30 seconds then what is the page title", "start_url": format!("{}/about", site.base) }).to_string();
    assert_eq!(server.post(&p("message"), &body).await.status, 200);
    // The status is running as soon as the call returns.
    assert_eq!(server.get(&p("status")).await.body["status"], "running");
    eventually("the start_url to be open", Duration::from_secs(20), || async {
        let shot = server.get(&p("screenshot")).await;
        shot.body["url"].as_str().unwrap_or_default().ends_with("/about").then_some(())
    })
    .await;
    assert_eq!(server.post(&p("cancel"), "{}").await.body["message"], "Session cancelled successfully");
    assert_eq!(server.get(&p("status")).await.body["status"], "finished");
    server.post(&p("cancel"), "{}").await.assert_error(409, "no_task_running", "no task");

    let (status, msgs) = server.run_task(&sid, "what is the page title").await;
    assert_eq!(status, "finished");
    assert_eq!(done_content(&msgs), "About the fixture", "the new task sees the page the cancelled one opened");
    let all = server.messages(&sid).await;
    assert!(all.iter().any(|m| m["type"] == "LOG" && m["content"] == "task cancelled by the user"));
    assert!(!all.iter().any(|m| m["type"] == "DONE" && m["content"] != "About the fixture"), "the cancelled task wrote no DONE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_id_paging_while_a_task_runs_never_skips_or_repeats_and_the_log_survives_a_restart() {
    let site = Site::start().await;
    let mut server = Server::start(&["--pool-size", "1"]).await;
    let sid = server.create_session().await;
    let task = format!("go to {}/ then click Products then go back then click About us then go back then click Products then what is the price of Gizmo Lite", site.base);
    let body = json!({ "message": task }).to_string();
    assert_eq!(server.post(&format!("/v1/sessions/{sid}/message"), &body).await.status, 200);
    let mut seen: Vec<i64> = Vec::new();
    let mut last = 0;
    loop {
        let r = server.get(&format!("/v1/sessions/{sid}/messages?after_id={last}&sanitize=false")).await;
        for m in r.body["messages"].as_array().unwrap() {
            let id = m["id"].as_i64().unwrap();
            seen.push(id);
            last = id;
        }
        if r.body["status"] == "finished" || r.body["status"] == "error" {
            // One more poll after the end: nothing new may appear after the final status.
            let tail = server.get(&format!("/v1/sessions/{sid}/messages?after_id={last}&sanitize=false")).await;
            assert_eq!(tail.body["messages"], json!([]));
            break;
        }
    }
    let all: Vec<i64> = server.messages(&sid).await.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(seen, all, "paging saw every message once, in order");
    assert_eq!(all, (1..=all.len() as i64).collect::<Vec<_>>(), "ids grow from 1 without gaps");
    let before = server.messages(&sid).await;
    assert_eq!(done_content(&before), "$5.49");

    // sanitize=true (the default) hides LOG messages.
    let sanitized = server.get(&format!("/v1/sessions/{sid}/messages")).await;
    assert!(sanitized.body["messages"].as_array().unwrap().iter().all(|m| m["type"] != "LOG"));
    assert_eq!(sanitized.body["has_agent"], true);

    let data_dir = server.data_dir.clone();
    assert!(server.stop());
    let restarted = Server::restart_in(&data_dir, &["--pool-size", "0"]);
    let after = restarted.messages(&sid).await;
    assert_eq!(&after[..before.len()], &before[..], "every message survived the restart");
    assert_eq!(after.last().unwrap()["type"], "ERROR", "the restart's end is in the log");
    assert_eq!(restarted.get(&format!("/v1/sessions/{sid}/status")).await.body["status"], "error");
    restarted
        .post(&format!("/v1/sessions/{sid}/message"), r#"{"message": "hi"}"#)
        .await
        .assert_error(409, "browser_gone", "shut down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goal_on_create_starts_the_task_at_once_and_messages_are_validated() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "1"]).await;
    let goal = format!("go to {}/products then what is the price of Widget Mini", site.base);
    let r = server.post("/v1/sessions", &json!({ "goal": goal }).to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["status"], "running");
    let sid = r.body["session_id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait_status(&sid, &["finished", "error"]).await, "finished");
    assert_eq!(done_content(&server.messages(&sid).await), "$9.99");

    let m = |b: &str| (format!("/v1/sessions/{sid}/message"), b.to_owned());
    for (body, field) in [
        (r#"{}"#, "message"),
        (r#"{"message": ""}"#, "message"),
        (r#"{"message": 5}"#, "message"),
        (r#"{"message": "x", "start_url": "ftp://x"}"#, "start_url"),
        (r#"{"message": "x", "config_updates": []}"#, "config_updates"),
    ] {
        let (path, body) = m(body);
        let r = server.post(&path, &body).await;
        r.assert_error(422, "validation_error", field);
    }
    server.get(&format!("/v1/sessions/{sid}/messages?after_id=-1")).await.assert_error(422, "validation_error", "after_id");
    let other = server.new_user("mallory");
    let r = server.call(reqwest::Method::POST, &format!("/v1/sessions/{sid}/message"), other["api_key"].as_str(), Some(r#"{"message":"hi"}"#)).await;
    r.assert_error(404, "not_found", "session");
    let r = server.call(reqwest::Method::GET, &format!("/v1/sessions/{sid}/messages"), other["api_key"].as_str(), None).await;
    r.assert_error(404, "not_found", "session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentbox_run_prints_one_line_per_step_and_the_result_and_exits_non_zero_on_error() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "0"]).await;
    let task = format!("go to {}/ then click Products then what is the price of Gadget Max", site.base);
    // In-process: no server given.
    let out = tokio::process::Command::new(crate::support::BIN).args(["run", &task]).output().await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "$129.00");
    assert!(stderr.contains("step   1  navigate") && stderr.contains("step   2  click"), "{stderr}");

    // Against a running server; a failing task exits 1 with the ERROR on stderr.
    let out = tokio::process::Command::new(crate::support::BIN)
        .args(["run", "juggle three balls", "--server", &server.base, "--api-key", &server.key])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: I could not understand \"juggle three balls\""), "{stderr}");
    assert_eq!(server.get("/v1/sessions").await.body, json!([]), "the run deleted its session");
    server.wait_browser_groups(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_time_limit_ends_with_an_error_that_names_the_limit() {
    let server = Server::start(&["--pool-size", "1", "--task-timeout", "1s"]).await;
    let sid = server.create_session().await;
    let (status, msgs) = server.run_task(&sid, "wait 2 seconds then wait 2 seconds then what is the page title").await;
    assert_eq!(status, "error");
    let err = msgs.last().unwrap();
    assert_eq!(err["type"], "ERROR");
    assert!(err["content"].as_str().unwrap().contains("time limit (1 s)"), "{err}");
    assert_eq!(err["metadata"]["limit"], "task_timeout");
    assert_eq!(msgs.iter().filter(|m| m["type"] == "THOUGHT").count(), 1, "it stopped after the first wait: {msgs:#?}");
}
