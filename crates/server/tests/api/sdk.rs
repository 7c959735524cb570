//! The official Python SDK (`agi-python`) against agentbox: proof that its clients work by
//! changing the base URL.

use crate::support::{Server, Site};

/// Runs `tests/sdk/<script>` with `args`; fails the test unless it exits 0 and prints `done`.
async fn run_sdk_script(script: &str, args: &[&str], done: &str) {
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new("python3")
        .arg(path)
        .args(args)
        .output()
        .await
        .expect("python3 runs (the test script installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK script failed (pip install -r crates/server/tests/sdk/requirements.txt):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(done), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_creates_drives_and_deletes_a_session() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "0"]).await;
    run_sdk_script("sessions_smoke.py", &[&server.base, &server.key, &format!("{}/", site.base)], "sdk smoke ok").await;
    server.wait_browser_groups(0).await; // the SDK's deletes ended the browsers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_runs_a_task_to_its_result_and_reports_a_failed_one() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "1"]).await;
    run_sdk_script("run_task.py", &[&server.base, &server.key, &site.base], "sdk run_task ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_saves_a_filesystem_snapshot_and_restores_it_by_environment() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "0"]).await;
    run_sdk_script("snapshot_restore.py", &[&server.base, &server.key, &site.base], "sdk snapshot ok").await;
}
