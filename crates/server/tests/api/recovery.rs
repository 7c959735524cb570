//! Crashes: of the server (SIGKILL) and of a browser behind the server's back.

use std::time::Duration;

use agentbox_browser::procfs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{Server, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_crash_a_restart_kills_the_old_browsers_and_fails_their_sessions() {
    let mut server = Server::start(&["--pool-size", "1"]).await;
    let a = server.create_session().await;
    let b = server.create_session().await;
    let before = server.browser_processes();
    assert!(server.browser_groups().len() >= 2);

    server.kill9();
    assert!(
        before.iter().any(|p| procfs::is_running(p.pid)),
        "precondition: browsers survive a SIGKILLed server"
    );

    let restarted = Server::restart_in(&server.data_dir.clone(), &["--pool-size", "0"]);
    let survivors: Vec<_> = before.iter().filter(|p| procfs::is_running(p.pid)).collect();
    assert!(survivors.is_empty(), "no Chromium of the first run survives the restart: {survivors:?}");
    assert!(restarted.profile_dirs().is_empty(), "old profile dirs are removed");

    for id in [&a, &b] {
        let s = restarted.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(s.status, 200);
        assert_eq!(s.body["status"], "error", "never ready with a dead browser");
        assert!(s.body["status_reason"].as_str().unwrap().contains("restarted"));
        assert_eq!(restarted.get(&format!("/v1/sessions/{id}/status")).await.body["status"], "error");
        restarted
            .get(&format!("/v1/sessions/{id}/screenshot"))
            .await
            .assert_error(409, "browser_gone", "server restarted");
    }
    // Sessions of the dead run can still be deleted, and new ones work.
    assert_eq!(restarted.delete(&format!("/v1/sessions/{a}")).await.body["deleted"], true);
    restarted.create_session().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_killed_behind_the_servers_back_turns_only_its_session_to_error() {
    let server = Server::start(&["--pool-size", "0"]).await;
    let healthy = server.create_session().await;
    let first = server.browser_groups();
    let doomed = server.create_session().await;
    let victim = *server.browser_groups().iter().find(|g| !first.contains(g)).expect("the second session's browser");

    // A task is running when the browser dies.
    let r = server.post(&format!("/v1/sessions/{doomed}/message"), r#"{"message": "wait 30 seconds"}"#).await;
    assert_eq!(r.status, 200);

    // Kill only the browser's main process, as a crash would.
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();

    let reason = eventually("the session turns to error", Duration::from_secs(10), || async {
        let s = server.get(&format!("/v1/sessions/{doomed}")).await.body;
        (s["status"] == "error").then(|| s["status_reason"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert!(reason.contains("exited unexpectedly"), "{reason}");
    assert_eq!(server.get(&format!("/v1/sessions/{doomed}/status")).await.body["status"], "error");
    let log = server.messages(&doomed).await;
    let last = log.last().unwrap();
    assert_eq!(last["type"], "ERROR", "the task's end is in the log: {log:#?}");
    assert!(last["content"].as_str().unwrap().contains("exited unexpectedly"));
    server
        .post(&format!("/v1/sessions/{doomed}/message"), r#"{"message": "try again"}"#)
        .await
        .assert_error(409, "browser_gone", "create a new one");
    server
        .post(&format!("/v1/sessions/{doomed}/navigate"), r#"{"url": "http://127.0.0.1:1/"}"#)
        .await
        .assert_error(409, "browser_gone", "create a new one");

    // The server keeps serving the other session.
    assert_eq!(server.get(&format!("/v1/sessions/{healthy}")).await.body["status"], "ready");
    assert_eq!(server.get(&format!("/v1/sessions/{healthy}/screenshot")).await.status, 200);
    assert_eq!(server.delete(&format!("/v1/sessions/{doomed}")).await.body["deleted"], true);
}
