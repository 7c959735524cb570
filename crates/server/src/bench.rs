//! `agentbox bench …`: measurements printed as percentiles and ratios to targets. They
//! start the real app in-process on 127.0.0.1:0 with a temp data dir and talk to it over
//! HTTP, like a client would. Nothing here asserts: numbers are for people to read.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentbox_browser::procfs;
use anyhow::Context;
use serde_json::{Value, json};

use crate::config::{Config, ServeArgs};
use crate::startup::Application;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Session create (warm pool and cold), delete, full lifecycle, and memory per session.
    Create {
        /// Samples per measurement.
        #[arg(long, default_value_t = 30)]
        iterations: usize,
        /// Idle sessions to measure memory over.
        #[arg(long, default_value_t = 3)]
        idle_sessions: usize,
        #[arg(long, env = "AGENTBOX_CHROMIUM_PATH")]
        chromium_path: Option<PathBuf>,
    },
    /// SSE fan-out latency (message appended → event received) at 1 and N subscribers,
    /// and webhook deliveries per second to a local receiver.
    Events {
        /// Messages per fan-out measurement.
        #[arg(long, default_value_t = 50)]
        messages: usize,
        /// The large subscriber count.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Webhook events to deliver.
        #[arg(long, default_value_t = 1000)]
        webhooks: usize,
        #[arg(long, env = "AGENTBOX_CHROMIUM_PATH")]
        chromium_path: Option<PathBuf>,
    },
    /// The live view: frames per second and page-change-to-viewer latency at 1 and N
    /// viewers, and the browser's CPU with no viewer and with one.
    Live {
        /// Page changes timed per viewer count.
        #[arg(long, default_value_t = 30)]
        changes: usize,
        #[arg(long, default_value_t = 20)]
        viewers: usize,
        #[arg(long, env = "AGENTBOX_CHROMIUM_PATH")]
        chromium_path: Option<PathBuf>,
    },
    /// The CDP proxy against Chromium directly: connect time and `Runtime.evaluate 1+1`
    /// round trips.
    Cdp {
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        #[arg(long, env = "AGENTBOX_CHROMIUM_PATH")]
        chromium_path: Option<PathBuf>,
    },
    /// Snapshots: save time and archive size (filesystem, memory), and restore to ready and
    /// to the first page showing its state, for the memory and filesystem paths.
    Snapshot {
        /// Samples per measurement.
        #[arg(long, default_value_t = 10)]
        iterations: usize,
        #[arg(long, env = "AGENTBOX_CHROMIUM_PATH")]
        chromium_path: Option<PathBuf>,
    },
    /// Agent step overhead without a model: observation build and action execution on a
    /// page with about 500 interactive elements, directly and through a running task.
    Step {
        /// Samples per measurement.
        #[arg(long, default_value_t = 40)]
        iterations: usize,
        #[arg(long, env = "AGENTBOX_CHROMIUM_PATH")]
        chromium_path: Option<PathBuf>,
    },
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<std::process::ExitCode> {
    crate::cli::init_logging(&std::env::var("AGENTBOX_LOG").unwrap_or_else(|_| "warn".into()))?;
    match cmd {
        BenchCommand::Create { iterations, idle_sessions, chromium_path } => {
            bench_create(iterations.max(1), idle_sessions, chromium_path).await?
        }
        BenchCommand::Step { iterations, chromium_path } => bench_step(iterations.max(1), chromium_path).await?,
        BenchCommand::Live { changes, viewers, chromium_path } => bench_live(changes.max(1), viewers.max(1), chromium_path).await?,
        BenchCommand::Cdp { iterations, chromium_path } => bench_cdp(iterations.max(1), chromium_path).await?,
        BenchCommand::Snapshot { iterations, chromium_path } => bench_snapshot(iterations.max(1), chromium_path).await?,
        BenchCommand::Events { messages, subscribers, webhooks, chromium_path } => {
            bench_events(messages.max(1), subscribers.max(1), webhooks.max(1), chromium_path).await?
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// A running in-process server for a benchmark, stopped on drop of `stop`.
struct Server {
    base: String,
    key: String,
    app_engine: std::sync::Arc<agentbox_engine::Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(pool_size: usize, chromium_path: Option<PathBuf>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let args = ServeArgs {
            listen: Some("127.0.0.1:0".parse()?),
            data_dir: Some(dir.path().to_owned()),
            pool_size: Some(pool_size),
            max_sessions: Some(64),
            max_sessions_per_user: Some(64),
            chromium_path,
            // The events bench delivers to a receiver on 127.0.0.1.
            webhook_allow_private: Some(true),
            ..Default::default()
        };
        let app = Application::build(Config::load(&args)?).await?;
        let key = app.first_user.as_ref().context("a fresh data dir has a first user")?.api_key.clone();
        let base = format!("http://{}", app.local_addr());
        let app_engine = app.engine().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Ok(Self { base, key, app_engine, stop: Some(stop), task, http: reqwest::Client::new(), _dir: dir })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let v: Value = resp.json().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {v}");
        Ok(v)
    }

    async fn create(&self) -> anyhow::Result<String> {
        let v = self.call(reqwest::Method::POST, "/v1/sessions", Some(json!({}))).await?;
        Ok(v["session_id"].as_str().context("session_id")?.to_owned())
    }

    async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::DELETE, &format!("/v1/sessions/{id}"), None).await.map(|_| ())
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await??;
        Ok(())
    }
}

/// A local page to navigate to.
async fn page_server() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            axum::response::Html("<!doctype html><title>bench</title><h1>agentbox bench</h1><p>a small local page</p>")
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((format!("http://{addr}/"), task))
}

/// A page that keeps a cookie, localStorage, sessionStorage and an IndexedDB record; its
/// title is `state ok` when it finds all four, else it sets them (`state set`).
async fn state_server() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    const PAGE: &str = "<!doctype html><title>loading</title><p>state</p><script>\
        const o = indexedDB.open('b', 1); o.onupgradeneeded = () => o.result.createObjectStore('kv');\
        o.onsuccess = () => { const r = o.result.transaction('kv').objectStore('kv').get('k'); r.onsuccess = () => {\
          const ok = r.result === 'v' && localStorage.getItem('k') === 'v' && sessionStorage.getItem('k') === 'v' && document.cookie.includes('c=v');\
          if (ok) { document.title = 'state ok'; return; }\
          localStorage.setItem('k', 'v'); sessionStorage.setItem('k', 'v'); document.cookie = 'c=v; max-age=86400; path=/';\
          const tx = o.result.transaction('kv', 'readwrite'); tx.objectStore('kv').put('v', 'k'); tx.oncomplete = () => { document.title = 'state set'; }; }; };\
        </script>";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = axum::Router::new().route("/", axum::routing::get(|| async { axum::response::Html(PAGE) }));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((format!("http://{addr}/"), task))
}

async fn wait_title(server: &Server, id: &str, title: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shot = server.call(reqwest::Method::GET, &format!("/v1/sessions/{id}/screenshot"), None).await?;
        if shot["title"] == title {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the page never showed {title:?} (it shows {})", shot["title"]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn bench_snapshot(n: usize, chromium_path: Option<PathBuf>) -> anyhow::Result<()> {
    println!("agentbox bench snapshot: {n} samples each, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let (page, page_task) = state_server().await?;
    let server = Server::start(2, chromium_path).await?;
    for mode in ["filesystem", "memory"] {
        let (mut save, mut ready, mut first, mut sizes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let id = server.create().await?;
            let nav = json!({ "url": page });
            server.call(reqwest::Method::POST, &format!("/v1/sessions/{id}/navigate"), Some(nav.clone())).await?;
            wait_title(&server, &id, "state set").await?;
            server.call(reqwest::Method::POST, &format!("/v1/sessions/{id}/navigate"), Some(nav)).await?;
            wait_title(&server, &id, "state ok").await?;
            let env = server.call(reqwest::Method::GET, &format!("/v1/sessions/{id}"), None).await?["environment_id"].clone();
            let t = Instant::now();
            server.call(reqwest::Method::DELETE, &format!("/v1/sessions/{id}?save_snapshot_mode={mode}"), None).await?;
            save.push(t.elapsed());
            let e = server.call(reqwest::Method::GET, &format!("/v1/environments/{}", env.as_str().unwrap_or_default()), None).await?;
            sizes.push(e["snapshot"]["size_bytes"].as_u64().unwrap_or(0));
            server.app_engine.pool().wait_full().await;
            let t = Instant::now();
            let r = server.call(reqwest::Method::POST, "/v1/sessions", Some(json!({ "restore_from_environment_id": env }))).await?;
            ready.push(t.elapsed());
            anyhow::ensure!(r["restored_from"] == mode, "restored from {} instead of {mode}", r["restored_from"]);
            let restored = r["session_id"].as_str().context("session_id")?.to_owned();
            wait_title(&server, &restored, "state ok").await?;
            first.push(t.elapsed());
            server.delete(&restored).await?;
        }
        sizes.sort();
        let target = if mode == "memory" { 50.0 } else { 500.0 };
        report(&format!("save ({mode})"), save, None);
        report(&format!("restore → ready ({mode})"), ready, Some(target));
        report(&format!("restore → page with state ({mode})"), first, None);
        println!("{:<34} median {:.1} KiB (min {:.1}, max {:.1})", format!("archive size ({mode})"),
            sizes[sizes.len() / 2] as f64 / 1024.0, sizes[0] as f64 / 1024.0, sizes[sizes.len() - 1] as f64 / 1024.0);
    }
    server.stop().await?;
    page_task.abort();
    Ok(())
}

/// A page with 500 interactive elements (links, buttons, labelled inputs, selects), most
/// of them below the fold, and some text.
pub fn many_elements_page() -> String {
    let mut body = String::from("<h1>Five hundred controls</h1><p>A page to measure observation on.</p><div style='display:grid;grid-template-columns:repeat(5,1fr);gap:4px'>");
    for i in 1..=200 {
        body.push_str(&format!("<a href='#l{i}'>Link number {i}</a>"));
    }
    for i in 1..=150 {
        body.push_str(&format!("<button onclick='void 0'>Button {i}</button>"));
    }
    for i in 1..=100 {
        body.push_str(&format!("<label>Field {i} <input name=f{i} placeholder='value {i}'></label>"));
    }
    for i in 1..=50 {
        body.push_str(&format!("<select aria-label='Choice {i}'><option>One</option><option>Two</option><option>Three</option></select>"));
    }
    body.push_str("</div>");
    format!("<!doctype html><html><head><title>500 elements</title></head><body>{body}</body></html>")
}

async fn many_server() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let html = many_elements_page();
    let router = axum::Router::new().route("/", axum::routing::get(move || { let h = html.clone(); async move { axum::response::Html(h) } }));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((format!("http://{addr}/"), task))
}

async fn bench_step(n: usize, chromium_path: Option<PathBuf>) -> anyhow::Result<()> {
    use agentbox_browser::{Launcher, ObserveOptions};
    println!("agentbox bench step: {n} samples each, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let (url, site) = many_server().await?;
    let root = tempfile::tempdir()?;
    let launcher = Launcher { executable: chromium_path.clone(), profiles_root: root.path().to_owned(), viewport: (1280, 720), timeout: Duration::from_secs(30) };
    let browser = launcher.launch().await?;
    let page = browser.page().clone();
    page.navigate(&url, Duration::from_secs(30)).await?;
    let first = page.observe(ObserveOptions::default()).await?;
    let in_view = first.elements.iter().filter(|e| e.in_view).count();
    println!("page: {} interactive elements ({in_view} in view)", first.elements.len());

    let (mut observe, mut observe_shot, mut prompt, mut click, mut typing) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let t = Instant::now();
        let obs = page.observe(ObserveOptions::default()).await?;
        observe.push(t.elapsed());
        let t = Instant::now();
        let text = agentbox_engine::agent::prompt::observation_text(&obs, 1, &obs.target_id);
        prompt.push(t.elapsed());
        std::hint::black_box(text);
        let button = obs.elements.iter().filter(|e| e.role == "button").nth(i % 150).context("buttons")?.index;
        let t = Instant::now();
        page.click(obs.generation, button, Duration::from_secs(10)).await?;
        click.push(t.elapsed());
        let field = obs.elements.iter().filter(|e| e.role == "textbox").nth(i % 100).context("fields")?.index;
        let t = Instant::now();
        page.type_text(obs.generation, field, "hello agentbox", false, Duration::from_secs(10)).await?;
        typing.push(t.elapsed());
        let t = Instant::now();
        page.observe(ObserveOptions { screenshot_quality: Some(70), ..Default::default() }).await?;
        observe_shot.push(t.elapsed());
    }
    report("observe (500 elements)", observe, Some(50.0));
    report("observe + JPEG (vision agents)", observe_shot, None);
    report("prompt text from observation", prompt, None);
    report("click (scroll, mouse, settle)", click, None);
    report("type into a field", typing, None);
    browser.close().await;

    // The same, through the engine: a rule-planner task of clicks, timings from its log.
    let server = Server::start(1, chromium_path).await?;
    server.app_engine.pool().wait_full().await;
    let id = server.create().await?;
    let steps: Vec<String> = (1..=n).map(|i| format!("click Button {}", i % 150 + 1)).collect();
    let task = format!("go to {url}\n{}", steps.join("\n"));
    let body = json!({ "message": task });
    server.call(reqwest::Method::POST, &format!("/v1/sessions/{id}/message"), Some(body)).await?;
    let started = Instant::now();
    let log = loop {
        let r = server.call(reqwest::Method::GET, &format!("/v1/sessions/{id}/messages?sanitize=false"), None).await?;
        if r["status"] == "finished" || r["status"] == "error" {
            break r;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the task did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    anyhow::ensure!(log["status"] == "finished", "the bench task failed: {}", log["messages"]);
    let clicks: Vec<&Value> = log["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["type"] == "THOUGHT" && m["metadata"]["action"]["type"] == "click")
        .collect();
    let pick = |key: &str| -> Vec<Duration> {
        clicks.iter().map(|m| Duration::from_secs_f64(m["metadata"]["timings"][key].as_f64().unwrap_or(0.0) / 1e3)).collect()
    };
    let total: Vec<Duration> = clicks
        .iter()
        .map(|m| {
            let t = &m["metadata"]["timings"];
            let sum = ["observe_ms", "plan_ms", "act_ms"].iter().map(|k| t[*k].as_f64().unwrap_or(0.0)).sum::<f64>();
            Duration::from_secs_f64(sum / 1e3)
        })
        .collect();
    report("task step: observe", pick("observe_ms"), Some(50.0));
    report("task step: rule planner", pick("plan_ms"), None);
    report("task step: click", pick("act_ms"), None);
    report("task step: total without a model", total, None);
    server.delete(&id).await?;
    server.stop().await?;
    site.abort();
    Ok(())
}

/// Reads `user` events "ping N" from one SSE stream and reports when each arrived.
async fn sse_reader(
    resp: reqwest::Response,
    arrived: tokio::sync::mpsc::UnboundedSender<(usize, Instant)>,
) {
    let mut resp = resp;
    let mut buf = String::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let now = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:"))
                && let Ok(v) = serde_json::from_str::<Value>(data.trim())
                    && let Some(n) = v["text"].as_str().and_then(|t| t.strip_prefix("ping ")).and_then(|n| n.parse().ok()) {
                        let _ = arrived.send((n, now));
                    }
        }
    }
}

async fn fan_out(server: &Server, id: &str, subscribers: usize, messages: usize) -> anyhow::Result<Vec<Duration>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut readers = Vec::new();
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    for _ in 0..subscribers {
        let resp = http
            .get(format!("{}/v1/sessions/{id}/events?event_types=user&include_history=false", server.base))
            .bearer_auth(&server.key)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "SSE answered {}", resp.status());
        readers.push(tokio::spawn(sse_reader(resp, tx.clone())));
    }
    drop(tx);
    let mut samples = Vec::with_capacity(subscribers * messages);
    for n in 0..messages {
        let sent = Instant::now();
        server.call(reqwest::Method::POST, &format!("/v1/sessions/{id}/message"), Some(json!({ "message": format!("ping {n}") }))).await?;
        let mut got = 0;
        while got < subscribers {
            let (m, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await?.context("a reader ended")?;
            if m == n {
                samples.push(at - sent);
                got += 1;
            }
        }
    }
    for r in readers {
        r.abort();
    }
    Ok(samples)
}

async fn bench_events(messages: usize, subscribers: usize, webhooks: usize, chromium_path: Option<PathBuf>) -> anyhow::Result<()> {
    println!("agentbox bench events: {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let server = Server::start(1, chromium_path).await?;
    let id = server.create().await?;
    // A long task, so each message is context appended to the log (and streamed).
    server.call(reqwest::Method::POST, &format!("/v1/sessions/{id}/message"), Some(json!({ "message": "wait 30 seconds then wait 30 seconds" }))).await?;
    let one = fan_out(&server, &id, 1, messages).await?;
    report("SSE append → receive, 1 subscriber", one, None);
    let many = fan_out(&server, &id, subscribers, messages).await?;
    let mut sorted = many.clone();
    sorted.sort();
    report(&format!("SSE append → receive, {subscribers} subscribers"), many, None);
    println!("  p99 at {subscribers} subscribers: {:.1} ms (target ≤ 50 ms)", ms(percentile(&sorted, 99.0)));

    // Webhooks: a receiver on 127.0.0.1 answering 200; events written straight to the outbox
    // for 50 sessions (order is per session, so sessions deliver in parallel) and for one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = received.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let c = counter.clone();
            async move {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let receiver = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let user_id = server.app_engine.authenticate(&server.key).await?.context("the bench user")?.id;
    for sessions in [50usize, 1] {
        received.store(0, std::sync::atomic::Ordering::Relaxed);
        let per = webhooks.div_ceil(sessions);
        let started = Instant::now();
        for _ in 0..sessions {
            let sid = uuid::Uuid::new_v4();
            let outbox = (0..per)
                .map(|i| agentbox_store::NewWebhookEvent {
                    id: format!("evt_bench_{}_{i}", sid.simple()),
                    session_id: sid,
                    user_id,
                    url: hook.clone(),
                    event: "task.started".into(),
                    body: json!({ "n": i }).to_string(),
                })
                .collect();
            server.app_engine.store().record(sid, None, vec![], outbox, agentbox_engine::time::now_ms()).await?;
        }
        let total = per * sessions;
        while received.load(std::sync::atomic::Ordering::Relaxed) < total {
            server.app_engine.deliver_webhooks_once().await;
        }
        let secs = started.elapsed().as_secs_f64();
        println!("webhooks: {total} events over {sessions} session(s) delivered in {:.2} s = {:.0}/s", secs, total as f64 / secs);
    }
    receiver.abort();
    server.delete(&id).await?;
    server.stop().await?;
    Ok(())
}

/// Reads one viewer's socket: reports (frame seq, when it arrived) for every frame.
async fn live_reader(mut ws: Ws, out: tokio::sync::mpsc::UnboundedSender<(usize, Instant)>, me: usize) {
    use futures_util::StreamExt;
    while let Some(Ok(m)) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m
            && t.as_str().contains("\"type\":\"frame\"") {
                let _ = out.send((me, Instant::now()));
            }
    }
}

async fn bench_live(changes: usize, viewers: usize, chromium_path: Option<PathBuf>) -> anyhow::Result<()> {
    println!("agentbox bench live: {changes} page changes per viewer count, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let server = Server::start(1, chromium_path).await?;
    let id = server.create().await?;
    let session = server.call(reqwest::Method::GET, &format!("/v1/sessions/{id}"), None).await?;
    let live_url = session["vnc_url"].as_str().context("vnc_url")?.to_owned();
    let ws_url = live_url.replacen("http", "ws", 1).replacen("?token=", "/ws?token=", 1);
    let user = server.app_engine.authenticate(&server.key).await?.context("the bench user")?;
    let sid = uuid::Uuid::parse_str(&id)?;
    let direct = server.app_engine.cdp_endpoint(agentbox_engine::CdpAccess::User(&user), sid).await?.devtools_url;
    let (mut cdp, _) = tokio_tungstenite::connect_async(direct.as_str()).await?;
    let targets = cdp_call(&mut cdp, 1, "Target.getTargets", json!({}), None).await?;
    let page = targets["result"]["targetInfos"].as_array().and_then(|t| t.iter().find(|t| t["type"] == "page")).context("a page")?["targetId"].clone();
    let attached = cdp_call(&mut cdp, 2, "Target.attachToTarget", json!({ "targetId": page, "flatten": true }), None).await?;
    let cs = attached["result"]["sessionId"].as_str().context("a session")?.to_owned();
    let mut next_id = 10u64;
    let mut eval = async |cdp: &mut Ws, expr: &str| -> anyhow::Result<()> {
        next_id += 1;
        cdp_call(cdp, next_id, "Runtime.evaluate", json!({ "expression": expr }), Some(&cs)).await.map(|_| ())
    };
    eval(&mut cdp, "document.body.innerHTML = '<h1 id=t>live bench</h1>'; document.body.style.margin = '0'").await?;
    // The session's own browser (the warm pool's spare runs beside it).
    let group = server.app_engine.store().get_session(user.id, sid).await?.and_then(|r| r.browser_pid).context("the session's browser")?;
    let cpu = |secs: f64, before: u64| (procfs::group_cpu_ticks(group).saturating_sub(before)) as f64 / 100.0 / secs * 100.0;

    // CPU with an animation running and nobody watching, then with one viewer.
    eval(&mut cdp, "(function f() { document.getElementById('t').textContent = 'frame ' + performance.now().toFixed(0); requestAnimationFrame(f); })()").await?;
    let t0 = procfs::group_cpu_ticks(group);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_cpu = cpu(3.0, t0);
    for n in [1usize, viewers] {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut readers = Vec::new();
        for v in 0..n {
            let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await?;
            readers.push(tokio::spawn(live_reader(ws, tx.clone(), v)));
        }
        drop(tx);
        // Frames per second while the page animates.
        tokio::time::sleep(Duration::from_millis(500)).await;
        while rx.try_recv().is_ok() {}
        let t0 = procfs::group_cpu_ticks(group);
        let started = Instant::now();
        let mut counts = vec![0usize; n];
        while started.elapsed() < Duration::from_secs(3) {
            if let Ok(Some((v, _))) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                counts[v] += 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let watched_cpu = cpu(secs, t0);
        let fps: Vec<f64> = counts.iter().map(|c| *c as f64 / secs).collect();
        let min_fps = fps.iter().cloned().fold(f64::INFINITY, f64::min);
        let mean_fps = fps.iter().sum::<f64>() / n as f64;
        // Latency: a still page, one change at a time, until every viewer has its frame.
        eval(&mut cdp, "window.__stop = true; document.body.innerHTML = '<h1 id=t>still</h1>'").await?;
        eval(&mut cdp, "0").await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        while rx.try_recv().is_ok() {}
        let mut samples = Vec::new();
        for i in 0..changes {
            let color = format!("hsl({}, 70%, 50%)", (i * 47) % 360);
            let sent = Instant::now();
            eval(&mut cdp, &format!("document.body.style.background = '{color}'")).await?;
            let mut seen = vec![false; n];
            let mut got = 0;
            while got < n {
                let (v, at) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await?.context("a viewer left")?;
                if !seen[v] {
                    seen[v] = true;
                    got += 1;
                    samples.push(at - sent);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            while rx.try_recv().is_ok() {}
        }
        println!("{n} viewer(s): {mean_fps:.1} fps mean, {min_fps:.1} fps slowest viewer (target ≥ 25); browser CPU {watched_cpu:.0}%");
        report(&format!("page change → viewer, {n} viewer(s)"), samples, Some(100.0));
        for r in readers {
            r.abort();
        }
        // Restart the animation for the next round.
        eval(&mut cdp, "document.body.innerHTML = '<h1 id=t>live bench</h1>'; (function f() { document.getElementById('t').textContent = 'frame ' + performance.now().toFixed(0); requestAnimationFrame(f); })()").await?;
    }
    println!("browser CPU with the page animating and no viewer: {idle_cpu:.0}% (the screencast is off)");
    server.delete(&id).await?;
    server.stop().await?;
    Ok(())
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends one CDP command and waits for its reply.
async fn cdp_call(ws: &mut Ws, id: u64, method: &str, params: Value, session: Option<&str>) -> anyhow::Result<Value> {
    use futures_util::{SinkExt, StreamExt};
    let mut msg = json!({ "id": id, "method": method, "params": params });
    if let Some(s) = session {
        msg["sessionId"] = json!(s);
    }
    ws.send(tokio_tungstenite::tungstenite::Message::text(msg.to_string())).await?;
    while let Some(m) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m? {
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["id"] == id {
                return Ok(v);
            }
        }
    }
    anyhow::bail!("the connection closed")
}

/// Connect times and `Runtime.evaluate 1+1` round trips through `url`.
async fn cdp_samples(url: &str, n: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut connects = Vec::with_capacity(n);
    for _ in 0..n.min(100) {
        // Connected means answering: the proxy dials Chromium after the client's upgrade.
        let t = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
        cdp_call(&mut ws, 1, "Browser.getVersion", json!({}), None).await?;
        connects.push(t.elapsed());
        let _ = ws.close(None).await;
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let targets = cdp_call(&mut ws, 1, "Target.getTargets", json!({}), None).await?;
    let page = targets["result"]["targetInfos"].as_array().and_then(|t| t.iter().find(|t| t["type"] == "page")).context("a page")?["targetId"].clone();
    let attached = cdp_call(&mut ws, 2, "Target.attachToTarget", json!({ "targetId": page, "flatten": true }), None).await?;
    let session = attached["result"]["sessionId"].as_str().context("a session")?.to_owned();
    let mut trips = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let v = cdp_call(&mut ws, 10 + i as u64, "Runtime.evaluate", json!({ "expression": "1+1" }), Some(&session)).await?;
        trips.push(t.elapsed());
        anyhow::ensure!(v["result"]["result"]["value"] == 2, "1+1 = {}", v);
    }
    let _ = ws.close(None).await;
    Ok((connects, trips))
}

async fn bench_cdp(n: usize, chromium_path: Option<PathBuf>) -> anyhow::Result<()> {
    println!("agentbox bench cdp: {n} round trips, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let server = Server::start(1, chromium_path).await?;
    let id = server.create().await?;
    let session = server.call(reqwest::Method::GET, &format!("/v1/sessions/{id}"), None).await?;
    let proxy = session["cdp_url"].as_str().context("cdp_url")?.to_owned();
    let user = server.app_engine.authenticate(&server.key).await?.context("the bench user")?;
    let sid = uuid::Uuid::parse_str(&id)?;
    let direct = server.app_engine.cdp_endpoint(agentbox_engine::CdpAccess::User(&user), sid).await?.devtools_url;
    let (dc, dt) = cdp_samples(&direct, n).await?;
    let (pc, pt) = cdp_samples(&proxy, n).await?;
    let p50 = |v: &[Duration]| {
        let mut s = v.to_vec();
        s.sort();
        percentile(&s, 50.0)
    };
    let (connect_ratio, trip_ratio) = (ms(p50(&pc)) / ms(p50(&dc)), ms(p50(&pt)) / ms(p50(&dt)));
    report("connect + first answer, directly", dc, None);
    report("connect + first answer, via the proxy", pc, None);
    report("Runtime.evaluate 1+1, directly", dt, None);
    report("Runtime.evaluate 1+1, via the proxy", pt, None);
    println!("  proxy/direct p50: connect {connect_ratio:.2}x, round trip {trip_ratio:.2}x (target ≤ 1.2x)");
    server.delete(&id).await?;
    server.stop().await?;
    Ok(())
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(name: &str, mut samples: Vec<Duration>, target_p50_ms: Option<f64>) {
    samples.sort();
    let (p50, p95, p99) = (percentile(&samples, 50.0), percentile(&samples, 95.0), percentile(&samples, 99.0));
    let target = match target_p50_ms {
        Some(t) => format!("  target p50 ≤ {t:.0} ms  (p50/target = {:.2})", ms(p50) / t),
        None => String::new(),
    };
    println!(
        "{name:<34} n={:<4} p50 {:>8.1} ms  p95 {:>8.1} ms  p99 {:>8.1} ms{target}",
        samples.len(),
        ms(p50),
        ms(p95),
        ms(p99)
    );
}

async fn bench_create(n: usize, idle_sessions: usize, chromium_path: Option<PathBuf>) -> anyhow::Result<()> {
    println!("agentbox bench create: {n} samples each, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let (page, page_task) = page_server().await?;

    // Warm pool: wait until the pool is full before each create so each one is warm.
    let warm = Server::start(2, chromium_path.clone()).await?;
    let (mut warm_create, mut delete, mut lifecycle) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        warm.app_engine.pool().wait_full().await;
        let t = Instant::now();
        let id = warm.create().await?;
        warm_create.push(t.elapsed());
        let t = Instant::now();
        warm.delete(&id).await?;
        delete.push(t.elapsed());
    }
    for _ in 0..n {
        warm.app_engine.pool().wait_full().await;
        let t = Instant::now();
        let id = warm.create().await?;
        warm.call(reqwest::Method::POST, &format!("/v1/sessions/{id}/navigate"), Some(json!({ "url": page }))).await?;
        warm.delete(&id).await?;
        lifecycle.push(t.elapsed());
    }

    // Memory of idle sessions that have loaded the local page.
    let mut ids = Vec::new();
    for _ in 0..idle_sessions {
        warm.app_engine.pool().wait_full().await;
        let id = warm.create().await?;
        warm.call(reqwest::Method::POST, &format!("/v1/sessions/{id}/navigate"), Some(json!({ "url": page }))).await?;
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // let start-up allocations settle before reading PSS
    let pids = warm.app_engine.store().recorded_browser_pids().await?;
    let pss: Vec<u64> = pids.iter().map(|pid| procfs::group_pss_kib(*pid)).collect();
    for id in &ids {
        warm.delete(id).await?;
    }
    warm.stop().await?;

    // Cold: no pool, every create starts Chromium.
    let cold = Server::start(0, chromium_path).await?;
    let mut cold_create = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let id = cold.create().await?;
        cold_create.push(t.elapsed());
        cold.delete(&id).await?;
    }
    cold.stop().await?;
    page_task.abort();

    report("create → ready (warm pool)", warm_create.clone(), Some(30.0));
    report("create → ready (pool size 0)", cold_create.clone(), Some(350.0));
    report("delete", delete, None);
    report("create → navigate → delete (warm)", lifecycle, Some(150.0));
    let mid = |v: &mut Vec<Duration>| {
        v.sort();
        ms(percentile(v, 50.0))
    };
    let (mut w, mut c) = (warm_create, cold_create);
    println!("cold/warm create p50 ratio: {:.1}x", mid(&mut c) / mid(&mut w).max(0.001));
    if !pss.is_empty() {
        let avg = pss.iter().sum::<u64>() as f64 / pss.len() as f64;
        println!(
            "PSS per idle session (process group, one local page loaded): mean {:.0} MiB over {} sessions (min {:.0}, max {:.0})",
            avg / 1024.0,
            pss.len(),
            *pss.iter().min().unwrap_or(&0) as f64 / 1024.0,
            *pss.iter().max().unwrap_or(&0) as f64 / 1024.0
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 95.0), Duration::from_millis(1));
    }
}
