//! The browser layer against a real Chromium: launch, act on a page, close.

use std::time::Duration;

use agentbox_browser::{Launcher, WarmPool, freeze, procfs};

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

fn data_url(html: &str) -> String {
    let enc: String = html
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    format!("data:text/html;charset=utf-8,{enc}")
}

#[tokio::test]
async fn observation_numbers_what_a_user_can_see_and_actions_use_those_numbers_until_the_page_changes() {
    use agentbox_browser::{Key, ObserveOptions, PageError, ScrollDirection};
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let browser = launcher(&root).launch().await.expect("launch");
    let page = browser.page();
    let html = r#"<title>Obs</title>
        <a href="/x"><span>Home</span></a>
        <button style="display:none">Hidden by display</button>
        <a href="/y" style="visibility:hidden">Hidden by visibility</a>
        <div aria-hidden="true"><button>Hidden from a11y</button></div>
        <label for=e>Email</label><input id=e placeholder="you@example.com">
        <select aria-label=Size><option>Small</option><option>Large</option></select>
        <button disabled>Disabled one</button>
        <button onclick="document.getElementById('out').textContent = 'clicked ' + document.getElementById('e').value">Go</button>
        <p id=out></p>
        <div style="height:3000px"></div>
        <button>Far below</button>"#;
    let wait = Duration::from_secs(10);
    page.navigate(&data_url(html), wait).await.unwrap();
    let obs = page.observe(ObserveOptions { max_text: 200, screenshot_quality: Some(50) }).await.unwrap();
    let names: Vec<(&str, &str)> = obs.elements.iter().map(|e| (e.role.as_str(), e.name.as_str())).collect();
    assert_eq!(
        names,
        [("link", "Home"), ("textbox", "Email"), ("combobox", "Size"), ("button", "Disabled one"), ("button", "Go"), ("button", "Far below")],
        "hidden elements are left out and a link's inner span is not counted twice"
    );
    assert_eq!(obs.elements[1].placeholder.as_deref(), Some("you@example.com"));
    assert_eq!(obs.elements[2].options, ["Small", "Large"]);
    assert!(obs.elements[3].disabled);
    assert!(obs.elements[4].in_view && !obs.elements[5].in_view, "the last button is below the viewport");
    assert_eq!(obs.out_of_view(), (0, 1));
    assert!(obs.screenshot.as_deref().unwrap_or_default().starts_with("/9j/"));
    assert_eq!(obs.tabs.len(), 1);
    assert!(obs.elements[4].describe().starts_with("[4] button \"Go\""));

    let g = obs.generation;
    page.type_text(g, 1, "a@b.c", false, wait).await.unwrap();
    assert_eq!(page.select_option(g, 2, "large").await.unwrap(), "Large");
    let err = page.select_option(g, 2, "Huge").await.unwrap_err();
    assert!(err.to_string().contains("\"Small\""), "{err}");
    assert!(matches!(page.type_text(g, 4, "x", false, wait).await, Err(PageError::Refused(_))), "a button is not a text field");
    assert!(matches!(page.click(g, 3, wait).await, Err(PageError::Refused(_))), "a disabled button is refused");
    page.click(g, 4, wait).await.unwrap();
    assert_eq!(page.read_text(None, 1000).await.unwrap().lines().find(|l| l.starts_with("clicked")), Some("clicked a@b.c"));
    page.click(g, 5, wait).await.expect("an element below the viewport is scrolled to and clicked");
    let (y, _) = page.scroll(ScrollDirection::Top, 1.0).await.unwrap();
    assert_eq!(y, 0);
    page.press_key(Key::Tab, wait).await.unwrap();
    let hits = page.find_text("clicked", 3).await.unwrap();
    assert_eq!(hits[0][0], "clicked a@b.c");

    // A newer observation makes the old numbers stale; so does a new document.
    let newer = page.observe(ObserveOptions::default()).await.unwrap();
    assert!(matches!(page.click(g, 4, wait).await, Err(PageError::StaleElement(4))));
    page.navigate(&data_url("<title>Other</title><button>Go</button>"), wait).await.unwrap();
    assert!(matches!(page.click(newer.generation, 0, wait).await, Err(PageError::StaleElement(0))));
    browser.close().await;
}

#[tokio::test]
async fn a_call_to_a_tab_that_closes_fails_at_once_instead_of_waiting_for_the_timeout() {
    use agentbox_browser::cdp::CdpError;
    use agentbox_browser::Page;
    use serde_json::json;
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let browser = launcher(&root).launch().await.expect("launch");
    let conn = browser.connection().clone();
    let created = conn.call("Target.createTarget", json!({ "url": "about:blank" }), None).await.unwrap();
    let target = created["targetId"].as_str().unwrap().to_owned();
    let tab = Page::attach(&conn, target.clone(), (800, 600)).await.unwrap();
    // A call the page never answers…
    let never = tab.call("Runtime.evaluate", json!({ "expression": "new Promise(() => {})", "awaitPromise": true }));
    let close = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.call("Target.closeTarget", json!({ "targetId": target }), None).await.unwrap();
    };
    // …fails as closed when its tab closes, not with the 30 s call timeout.
    let (result, ()) = tokio::join!(never, close);
    assert!(matches!(result, Err(CdpError::TargetClosed { .. })), "{result:?}");
    browser.close().await;
}

#[tokio::test]
async fn a_frozen_browser_runs_nothing_until_thawed_then_goes_on_with_its_page() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let mut browser = launcher(&root).launch().await.expect("launch");
    let page = browser.page().clone();
    page.call("Runtime.evaluate", serde_json::json!({ "expression": "window.kept = 41" })).await.unwrap();

    browser.freeze();
    let procs = procfs::processes_under(&root);
    assert!(!procs.is_empty());
    let running: Vec<_> = procs.iter().filter(|p| !freeze::is_frozen(p.pid)).collect();
    assert!(running.is_empty(), "every process of the group is frozen: {running:?}");

    browser.thaw();
    assert!(procfs::processes_under(&root).iter().all(|p| !freeze::is_frozen(p.pid)), "thawed");
    let v = page.call("Runtime.evaluate", serde_json::json!({ "expression": "window.kept + 1", "returnByValue": true })).await.unwrap();
    assert_eq!(v["result"]["value"], 42, "the same page, its JS state intact");

    // A frozen browser still dies with its group, and leaves nothing.
    browser.freeze();
    browser.close().await;
    assert!(procfs::processes_under(&root).is_empty());
}
