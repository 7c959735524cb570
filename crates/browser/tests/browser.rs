//! The browser layer against a real Chromium: launch, act on a page, close.

use std::time::Duration;

use agentbox_browser::{Launcher, WarmPool, procfs};

fn launcher(root: &std::path::Path) -> Launcher {
    Launcher {
        executable: None,
        profiles_root: root.to_owned(),
        viewport: (800, 600),
        timeout: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn a_launched_browser_navigates_screenshots_and_leaves_nothing_behind_when_closed() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let browser = launcher(&root).launch().await.expect("launch");
    assert!(browser.is_alive());
    assert!(!procfs::processes_under(&root).is_empty(), "chromium runs under the profiles root");

    let url = "data:text/html,<title>Hello%20agentbox</title><h1>hi</h1>";
    let landed = browser.page().navigate(url, Duration::from_secs(10)).await.expect("navigate");
    assert!(landed.starts_with("data:text/html"), "{landed}");
    let shot = browser.page().screenshot(80).await.expect("screenshot");
    assert_eq!(shot.title, "Hello agentbox");
    assert!(shot.jpeg_base64.starts_with("/9j/"), "a JPEG starts with FF D8 FF");

    let profile = browser.profile_dir().to_owned();
    browser.close().await;
    assert!(!profile.exists(), "profile dir removed");
    assert!(procfs::processes_under(&root).is_empty(), "no chromium process survives close");
}

#[tokio::test]
async fn navigating_to_a_closed_port_reports_the_network_error() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let browser = launcher(&root).launch().await.expect("launch");
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = browser.page().navigate(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(10)).await.unwrap_err();
    assert!(err.to_string().contains("ERR_CONNECTION_REFUSED"), "{err}");
    browser.close().await;
}

#[tokio::test]
async fn the_warm_pool_fills_to_its_target_and_hands_over_live_browsers() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let pool = WarmPool::new(launcher(&root), 1);
    assert!(pool.fill_once().await.unwrap());
    assert!(!pool.fill_once().await.unwrap(), "already at target");
    let (browser, warm) = pool.acquire().await.unwrap();
    assert!(warm && browser.is_alive());
    let (cold, warm) = pool.acquire().await.unwrap();
    assert!(!warm && cold.is_alive(), "an empty pool launches one");
    browser.close().await;
    cold.close().await;
    pool.drain().await;
    assert!(procfs::processes_under(&root).is_empty());
}

#[tokio::test]
async fn a_detached_kill_moves_the_profile_aside_and_clearing_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let trash = root.join("trash");
    std::fs::create_dir(&trash).unwrap();
    let profiles = root.join("profiles");
    let browser = launcher(&profiles).launch().await.expect("launch");
    let profile = browser.profile_dir().to_owned();
    let remains = browser.kill_detached(&trash);
    assert!(!profile.exists(), "the profile dir left the profiles dir at once");
    assert_eq!(std::fs::read_dir(&trash).unwrap().count(), 1);
    tokio::task::spawn_blocking(move || remains.clear_blocking()).await.unwrap();
    assert_eq!(std::fs::read_dir(&trash).unwrap().count(), 0);
    assert!(procfs::processes_under(&profiles).is_empty(), "no process of the group runs after clearing");
}
