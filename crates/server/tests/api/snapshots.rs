//! Snapshots and environments (API.md §6): save a browser, restore it elsewhere.

use std::path::PathBuf;
use std::time::Duration;

use agentbox_browser::{freeze, procfs};
use serde_json::json;

use crate::support::{Server, Site, eventually};

/// What `/account` shows when all five kinds of state came back.
const ALL_FIVE: &[&str] = &["remember=yes", "sid=abc123", "ls=dark", "ss=hello", "idb=alice"];

/// The current tab's title once it starts with `prefix`.
async fn title_when(server: &Server, sid: &str, prefix: &str) -> String {
    eventually(&format!("a title starting with {prefix:?}"), Duration::from_secs(15), || async {
        let t = server.get(&format!("/v1/sessions/{sid}/screenshot")).await.body["title"].as_str().unwrap_or_default().to_owned();
        t.starts_with(prefix).then_some(t)
    })
    .await
}

async fn navigate(server: &Server, sid: &str, url: &str) {
    let r = server.post(&format!("/v1/sessions/{sid}/navigate"), &json!({ "url": url }).to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A session that signed in on the fixture site and now shows its account page.
async fn signed_in(server: &Server, site: &Site) -> String {
    let sid = server.create_session().await;
    navigate(server, &sid, &format!("{}/account/login", site.base)).await;
    title_when(server, &sid, "Logged in").await;
    navigate(server, &sid, &format!("{}/account", site.base)).await;
    let before = title_when(server, &sid, "State:").await;
    for part in ALL_FIVE {
        assert!(before.contains(part), "precondition: the page shows {part}: {before}");
    }
    sid
}

fn assert_all_five(title: &str) {
    for part in ALL_FIVE {
        assert!(title.contains(part), "restored state lacks {part}: {title}");
    }
}

fn archives(server: &Server) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![server.data_dir.join("snapshots")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_with_a_filesystem_snapshot_restores_cookies_storage_and_indexeddb_in_a_new_session() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "0"]).await;
    let sid = signed_in(&server, &site).await;
    let env = server.get(&format!("/v1/sessions/{sid}")).await.body["environment_id"].as_str().unwrap().to_owned();

    let r = server.delete(&format!("/v1/sessions/{sid}?save_snapshot_mode=filesystem&save_as_default=true")).await;
    assert_eq!(r.body["deleted"], true, "{}", r.body);
    server.wait_browser_groups(0).await;
    assert!(server.profile_dirs().is_empty(), "the closed browser's profile is gone once packed");
    let saved = server.get(&format!("/v1/environments/{env}")).await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    let snap = &saved.body["snapshot"];
    assert_eq!(snap["captured"], "closed");
    assert_eq!(snap["session_id"], sid.as_str());
    assert_eq!(snap["sha256"].as_str().unwrap().len(), 64);
    assert!(snap["tabs"][0].as_str().unwrap().ends_with("/account"), "{snap}");
    assert!(!saved.body.to_string().contains("abc123"), "no cookie value in the manifest: {}", saved.body);
    assert_eq!(saved.body["is_default"], true);
    assert_eq!(server.get("/v1/users/me").await.body["default_environment_id"], env.as_str());

    // By the deleted session's id (it wins over the other restore fields, which name
    // nothing here): the tab comes back on /account with all five.
    let nothing = "00000000-0000-4000-8000-000000000000";
    let body = json!({ "restore_from_session_id": sid, "restore_from_environment_id": nothing,
                       "restore_default_environment_from_user_id": nothing });
    let r = server.post("/v1/sessions", &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["restored_from"], "filesystem");
    assert_eq!(r.body["environment_id"], env.as_str(), "a restored session joins the environment");
    let restored = r.body["session_id"].as_str().unwrap().to_owned();
    let shot = server.get(&format!("/v1/sessions/{restored}/screenshot")).await;
    assert!(shot.body["url"].as_str().unwrap().ends_with("/account"), "{}", shot.body);
    assert_all_five(&title_when(&server, &restored, "State:").await);
    assert_eq!(server.delete(&format!("/v1/sessions/{restored}")).await.body["deleted"], true);

    // By the user's default environment, again all five.
    let me = server.get("/v1/users/me").await.body["user_id"].as_str().unwrap().to_owned();
    let r = server.post("/v1/sessions", &json!({ "restore_default_environment_from_user_id": me }).to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let again = r.body["session_id"].as_str().unwrap().to_owned();
    assert_all_five(&title_when(&server, &again, "State:").await);

    // Another user cannot reach either; an environment with no snapshot is 404 too.
    let other = server.new_user("mallory");
    let other_key = other["api_key"].as_str().unwrap();
    for body in [json!({ "restore_from_environment_id": env }), json!({ "restore_default_environment_from_user_id": me })] {
        let r = server.call(reqwest::Method::POST, "/v1/sessions", Some(other_key), Some(&body.to_string())).await;
        r.assert_error(404, "snapshot_not_found", "not found");
    }
    assert_eq!(server.call(reqwest::Method::GET, &format!("/v1/environments/{env}"), Some(other_key), None).await.status, 404);
    let fresh = server.create_session().await;
    let fresh_env = server.get(&format!("/v1/sessions/{fresh}")).await.body["environment_id"].as_str().unwrap().to_owned();
    server
        .post("/v1/sessions", &json!({ "restore_from_environment_id": fresh_env }).to_string())
        .await
        .assert_error(404, "snapshot_not_found", "has no saved snapshot");

    // An environment in use cannot be deleted; once free it goes with its archive.
    server.delete(&format!("/v1/environments/{env}")).await.assert_error(409, "environment_in_use", &again);
    assert_eq!(server.delete(&format!("/v1/sessions/{again}")).await.body["deleted"], true);
    assert_eq!(archives(&server).len(), 1);
    assert_eq!(server.delete(&format!("/v1/environments/{env}")).await.body["deleted"], true);
    assert!(archives(&server).is_empty(), "the archive went with its environment");
    assert_eq!(server.get("/v1/users/me").await.body["default_environment_id"], serde_json::Value::Null);
    server
        .post("/v1/sessions", &json!({ "restore_from_session_id": sid }).to_string())
        .await
        .assert_error(404, "snapshot_not_found", &sid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_snapshot_brings_back_the_live_page_once_then_the_disk_copy_and_eviction_falls_back_to_disk() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "0", "--standby-max-browsers", "1"]).await;
    let sid = server.create_session().await;
    navigate(&server, &sid, &format!("{}/form", site.base)).await;
    let (status, log) = server.run_task(&sid, "type draft text into Notes, then click Bump, then scroll down").await;
    assert_eq!(status, "finished", "{log:#?}");
    let live = title_when(&server, &sid, "Form v=draft text n=1 y=").await;
    assert!(!live.ends_with("y=0"), "precondition: scrolled: {live}");
    let env = server.get(&format!("/v1/sessions/{sid}")).await.body["environment_id"].as_str().unwrap().to_owned();

    let r = server.delete(&format!("/v1/sessions/{sid}?save_snapshot_mode=memory")).await;
    assert_eq!(r.body["deleted"], true, "{}", r.body);
    let parked = server.get(&format!("/v1/environments/{env}")).await.body;
    assert_eq!(parked["memory_snapshot"]["session_id"], sid.as_str(), "{parked}");
    assert_eq!(parked["snapshot"]["captured"], "frozen", "a filesystem copy is written too: {parked}");
    let group = server.browser_groups();
    assert_eq!(group.len(), 1, "the parked browser still runs");
    assert!(procfs::processes_under(&server.profiles_dir()).iter().all(|p| freeze::is_frozen(p.pid)), "and is stopped");

    // From memory: the very same page, typed text, counter and scroll offset included.
    let r = server.post("/v1/sessions", &json!({ "restore_from_environment_id": env }).to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["restored_from"], "memory");
    let back = r.body["session_id"].as_str().unwrap().to_owned();
    assert_eq!(server.browser_groups(), group, "the parked process itself was handed over");
    assert_eq!(title_when(&server, &back, "Form").await, live);
    // The agent works the thawed page: the counter goes on from where it was.
    let (status, log) = server.run_task(&back, "click Bump").await;
    assert_eq!(status, "finished", "{log:#?}");
    assert!(title_when(&server, &back, "Form").await.contains(" n=2 "), "{log:#?}");
    assert_eq!(server.delete(&format!("/v1/sessions/{back}")).await.body["deleted"], true);

    // A parked browser is used once: the next restore reads the disk copy (a fresh page).
    let r = server.post("/v1/sessions", &json!({ "restore_from_environment_id": env }).to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["restored_from"], "filesystem");
    let disk = r.body["session_id"].as_str().unwrap().to_owned();
    assert_eq!(title_when(&server, &disk, "Form").await, "Form v= n=0 y=0");

    // With room for one parked browser, parking a second evicts the first: its
    // environment still restores, from disk.
    assert_eq!(server.delete(&format!("/v1/sessions/{disk}?save_snapshot_mode=memory")).await.body["deleted"], true);
    let other = server.create_session().await;
    assert_eq!(server.delete(&format!("/v1/sessions/{other}?save_snapshot_mode=memory")).await.body["deleted"], true);
    server.wait_browser_groups(1).await;
    assert_eq!(server.get(&format!("/v1/environments/{env}")).await.body["memory_snapshot"], serde_json::Value::Null);
    let r = server.post("/v1/sessions", &json!({ "restore_from_environment_id": env }).to_string()).await;
    assert_eq!(r.body["restored_from"], "filesystem", "{}", r.body);
    // enable_memory_snapshot=false skips a parked browser even when there is one.
    let other_env = server.get("/v1/environments").await.body.as_array().unwrap().iter()
        .find(|e| !e["memory_snapshot"].is_null()).expect("the second parked browser")["environment_id"].as_str().unwrap().to_owned();
    let r = server.post("/v1/sessions", &json!({ "restore_from_environment_id": other_env, "enable_memory_snapshot": false }).to_string()).await;
    assert_eq!(r.body["restored_from"], "filesystem", "{}", r.body);

    let metrics = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
    for line in [
        "agentbox_snapshots_total{mode=\"memory\"} 3",
        "agentbox_restores_total{from=\"memory\"} 1",
        "agentbox_restores_total{from=\"filesystem\"} 3",
        "agentbox_parked_evicted_total 1",
        "agentbox_parked_browsers 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "/metrics lacks {line:?}:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_refused_naming_its_environment_and_leaves_nothing_behind() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "0"]).await;
    let sid = signed_in(&server, &site).await;
    let env = server.get(&format!("/v1/sessions/{sid}")).await.body["environment_id"].as_str().unwrap().to_owned();
    assert_eq!(server.delete(&format!("/v1/sessions/{sid}?save_snapshot_mode=filesystem")).await.body["deleted"], true);
    server.wait_browser_groups(0).await;
    let files = archives(&server);
    assert_eq!(files.len(), 1, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&files[0], &bytes).unwrap();

    let r = server.post("/v1/sessions", &json!({ "restore_from_environment_id": env }).to_string()).await;
    r.assert_error(409, "snapshot_damaged", &env);
    assert!(r.body["detail"].as_str().unwrap().contains("damaged"), "{}", r.body);
    assert!(server.browser_groups().is_empty(), "no browser was started");
    assert!(server.profile_dirs().is_empty(), "nothing half restored: {:?}", server.profile_dirs());
    assert_eq!(server.get("/v1/sessions").await.body.as_array().unwrap().len(), 0, "no session was made");

    // A truncated archive is refused the same way.
    std::fs::write(&files[0], &bytes[..100]).unwrap();
    server
        .post("/v1/sessions", &json!({ "restore_from_session_id": sid }).to_string())
        .await
        .assert_error(409, "snapshot_damaged", &env);
    assert!(server.profile_dirs().is_empty());
    let tmp = std::fs::read_dir(server.data_dir.join("snapshots/.tmp")).unwrap().count();
    assert_eq!(tmp, 0, "no temp files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_mid_session_restores_the_state_of_that_moment_while_the_session_goes_on() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "0"]).await;
    let sid = signed_in(&server, &site).await;
    let r = server.post(&format!("/v1/sessions/{sid}/snapshot"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["snapshot"]["captured"], "frozen");
    let env = r.body["environment_id"].as_str().unwrap().to_owned();

    // The session goes on, on the same tab, and changes its state afterwards.
    let shot = server.get(&format!("/v1/sessions/{sid}/screenshot")).await;
    assert!(shot.body["url"].as_str().unwrap().ends_with("/account"), "{}", shot.body);
    navigate(&server, &sid, &format!("{}/about", site.base)).await;
    assert_eq!(title_when(&server, &sid, "About").await, "About the fixture");

    let r = server.post("/v1/sessions", &json!({ "restore_from_environment_id": env }).to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["restored_from"], "filesystem");
    let copy = r.body["session_id"].as_str().unwrap().to_owned();
    assert_all_five(&title_when(&server, &copy, "State:").await);
    assert_eq!(server.get(&format!("/v1/sessions/{sid}")).await.body["status"], "ready", "the original is still there");

    // A profile over the size limit is refused before anything changes.
    let small = Server::start(&["--pool-size", "0", "--snapshot-max-mib", "1"]).await;
    let s = small.create_session().await;
    navigate(&small, &s, &format!("{}/big", site.base)).await;
    title_when(&small, &s, "Big stored").await;
    small.post(&format!("/v1/sessions/{s}/snapshot"), "").await.assert_error(413, "snapshot_too_large", "snapshot_max_mib");
    let r = small.delete(&format!("/v1/sessions/{s}?save_snapshot_mode=filesystem")).await;
    r.assert_error(413, "snapshot_too_large", "nothing was changed");
    assert_eq!(small.get(&format!("/v1/sessions/{s}")).await.body["status"], "ready", "the session was kept");
    assert!(archives(&small).is_empty(), "no archive was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_kill_no_parked_browser_survives_and_its_environment_restores_from_disk() {
    let site = Site::start().await;
    let mut server = Server::start(&["--pool-size", "0"]).await;
    let sid = signed_in(&server, &site).await;
    let env = server.get(&format!("/v1/sessions/{sid}")).await.body["environment_id"].as_str().unwrap().to_owned();
    assert_eq!(server.delete(&format!("/v1/sessions/{sid}?save_snapshot_mode=memory")).await.body["deleted"], true);
    let parked = server.browser_processes();
    assert!(!parked.is_empty() && parked.iter().all(|p| freeze::is_frozen(p.pid)), "precondition: a frozen browser: {parked:?}");

    server.kill9();
    assert!(parked.iter().any(|p| procfs::is_running(p.pid)), "precondition: it outlives a SIGKILLed server");
    let restarted = Server::restart_in(&server.data_dir.clone(), &["--pool-size", "0"]);
    let left: Vec<_> = parked.iter().filter(|p| procfs::is_running(p.pid)).collect();
    assert!(left.is_empty(), "no frozen process remains after the restart: {left:?}");

    let r = restarted.post("/v1/sessions", &json!({ "restore_from_environment_id": env }).to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["restored_from"], "filesystem");
    let back = r.body["session_id"].as_str().unwrap().to_owned();
    assert_all_five(&title_when(&restarted, &back, "State:").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_of_sessions_without_a_live_browser_are_refused_and_the_session_is_kept() {
    let server = Server::start(&["--pool-size", "0"]).await;
    let sid = server.create_session().await;
    let victim = server.browser_groups()[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    eventually("the session turns to error", Duration::from_secs(10), || async {
        (server.get(&format!("/v1/sessions/{sid}")).await.body["status"] == "error").then_some(())
    })
    .await;
    server.post(&format!("/v1/sessions/{sid}/snapshot"), "{}").await.assert_error(409, "browser_gone", "no live browser");
    server
        .delete(&format!("/v1/sessions/{sid}?save_snapshot_mode=filesystem"))
        .await
        .assert_error(409, "browser_gone", "save_snapshot_mode=none");
    assert_eq!(server.get(&format!("/v1/sessions/{sid}")).await.status, 200, "kept");
    server.post("/v1/sessions/00000000-0000-4000-8000-000000000000/snapshot", "{}").await.assert_error(404, "not_found", "session");
    server.get("/v1/environments/not-a-uuid").await.assert_error(404, "not_found", "environment");
    assert_eq!(server.delete("/v1/environments/00000000-0000-4000-8000-000000000000").await.body["deleted"], false);
    server.post(&format!("/v1/sessions/{sid}/snapshot"), r#"{"save_as_default": "yes"}"#).await.assert_error(422, "validation_error", "save_as_default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_browser_past_its_ttl_is_closed_and_its_environment_restores_from_disk() {
    let server = Server::start(&["--pool-size", "0", "--standby-ttl", "1s", "--reap-interval", "100ms"]).await;
    let sid = server.create_session().await;
    let env = server.get(&format!("/v1/sessions/{sid}")).await.body["environment_id"].as_str().unwrap().to_owned();
    assert_eq!(server.delete(&format!("/v1/sessions/{sid}?save_snapshot_mode=memory")).await.body["deleted"], true);
    let parked = server.get(&format!("/v1/environments/{env}")).await.body;
    assert!(!parked["memory_snapshot"]["expires_at"].is_null(), "{parked}");

    // The reaper closes it once its TTL has passed; nothing of it is left running.
    eventually("the parked browser expires", Duration::from_secs(15), || async {
        server.get(&format!("/v1/environments/{env}")).await.body["memory_snapshot"].is_null().then_some(())
    })
    .await;
    server.wait_browser_groups(0).await;
    let r = server.post("/v1/sessions", &json!({ "restore_from_environment_id": env }).to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["restored_from"], "filesystem");
}
