//! Test support: the real `agentbox` binary on 127.0.0.1:0 with a temp data dir, a client
//! for it, a fixture site on 127.0.0.1:0, and `/proc` checks for browser processes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentbox_browser::procfs::{self, ProcInfo};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Servers with real browsers running at once in this process (`cargo test` runs tests as
/// threads). Under nextest each test is its own process and the `browser` test group in
/// `.config/nextest.toml` bounds them instead.
static SLOTS: Semaphore = Semaphore::const_new(2);

pub const BIN: &str = env!("CARGO_BIN_EXE_agentbox");

/// A running `agentbox serve`. Dropping it stops it with SIGTERM (which ends its browsers).
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub key: String,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    _slot: Option<SemaphorePermit<'static>>,
    http: reqwest::Client,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// A reply: status, headers and JSON body (`Value::Null` when the body is not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts an error reply's status, code, and that `detail` mentions `needle`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str, needle: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        let detail = self.body["detail"].as_str().unwrap_or_default();
        assert!(detail.to_lowercase().contains(&needle.to_lowercase()), "detail {detail:?} should mention {needle:?}");
    }
}

impl Server {
    /// Starts a server on a fresh temp data dir with these extra `serve` flags.
    pub async fn start(flags: &[&str]) -> Server {
        Self::start_with_config("", flags, &[]).await
    }

    /// Starts a server with a config file (`config` is its TOML text; empty for none),
    /// extra flags and extra environment variables.
    pub async fn start_with_config(config: &str, flags: &[&str], env: &[(&str, &str)]) -> Server {
        let slot = SLOTS.acquire().await.expect("semaphore open");
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().canonicalize().unwrap();
        let mut all: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        if !config.is_empty() {
            let file = data_dir.join("agentbox.toml");
            std::fs::write(&file, config).unwrap();
            all.extend(["--config".to_owned(), file.display().to_string()]);
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut s = Self::spawn(&data_dir, &all, env);
        s._dir = Some(dir);
        s._slot = Some(slot);
        s
    }

    /// Starts a server on an existing data dir (a restart), without taking a new slot.
    pub fn restart_in(data_dir: &Path, flags: &[&str]) -> Server {
        Self::spawn(data_dir, flags, &[])
    }

    fn spawn(data_dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> Server {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("server.log")).unwrap();
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .env("AGENTBOX_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("agentbox binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("agentbox listening on ") {
                        break addr.trim().to_owned();
                    }
                }
                _ => {
                    let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
                    panic!("agentbox exited before listening; its log:\n{log}");
                }
            }
        };
        // Keep draining stdout so the server never blocks on it; keep what it says.
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = stdout.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let creds: Value = serde_json::from_slice(&std::fs::read(data_dir.join("first-user.json")).unwrap()).unwrap();
        Server {
            child: Some(child),
            base,
            key: creds["api_key"].as_str().unwrap().to_owned(),
            data_dir: data_dir.to_owned(),
            _dir: None,
            _slot: None,
            http: reqwest::Client::new(),
            stdout,
        }
    }

    /// What the server printed on stdout after its "listening" line, waiting for `needle`.
    pub async fn stdout_with(&self, needle: &str) -> String {
        eventually(&format!("{needle:?} on the server's stdout"), Duration::from_secs(10), || async {
            let text = self.stdout.lock().unwrap().join("\n");
            text.contains(needle).then_some(text)
        })
        .await
    }

    pub async fn call(&self, method: Method, path: &str, key: Option<&str>, body: Option<&str>) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_owned());
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, Some(&self.key), None).await
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.call(Method::POST, path, Some(&self.key), Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, Some(&self.key), None).await
    }

    /// Creates a session and returns its id.
    pub async fn create_session(&self) -> String {
        let r = self.post("/v1/sessions", "{}").await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["session_id"].as_str().unwrap().to_owned()
    }

    /// Waits until the session's execution status is one of `wanted`; returns it.
    pub async fn wait_status(&self, sid: &str, wanted: &[&str]) -> String {
        eventually(&format!("session status in {wanted:?}"), Duration::from_secs(60), || async {
            let r = self.get(&format!("/v1/sessions/{sid}/status")).await;
            let s = r.body["status"].as_str().unwrap_or_default().to_owned();
            wanted.contains(&s.as_str()).then_some(s)
        })
        .await
    }

    /// Every message of a session, LOG included.
    pub async fn messages(&self, sid: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/sessions/{sid}/messages?sanitize=false")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["messages"].as_array().cloned().unwrap_or_default()
    }

    /// Sends a message that starts a task and waits for the task to stop (finished,
    /// error or waiting for input). Returns the status and the messages after `after_id`.
    pub async fn run_task(&self, sid: &str, task: &str) -> (String, Vec<Value>) {
        let before = self.messages(sid).await.last().map(|m| m["id"].as_i64().unwrap()).unwrap_or(0);
        let body = serde_json::json!({ "message": task }).to_string();
        let r = self.post(&format!("/v1/sessions/{sid}/message"), &body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let status = self.wait_status(sid, &["finished", "error", "waiting_for_input"]).await;
        let msgs = self.messages(sid).await.into_iter().filter(|m| m["id"].as_i64().unwrap() > before).collect();
        (status, msgs)
    }

    /// Runs another `agentbox` subcommand on this server's data dir; returns stdout.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(BIN).args(args).arg("--data-dir").arg(&self.data_dir).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Creates another user through the CLI; returns its API key.
    pub fn new_user(&self, name: &str) -> Value {
        let (ok, out, err) = self.cli(&["users", "create", name]);
        assert!(ok, "{err}");
        serde_json::from_str(out.trim()).unwrap()
    }

    pub fn profiles_dir(&self) -> PathBuf {
        self.data_dir.join("profiles")
    }

    /// Every Chromium process running under this server's data dir.
    pub fn browser_processes(&self) -> Vec<ProcInfo> {
        procfs::processes_under(&self.profiles_dir())
    }

    /// The process groups (one per browser) running under this server's data dir.
    pub fn browser_groups(&self) -> Vec<u32> {
        let mut g: Vec<u32> = self.browser_processes().iter().map(|p| p.pgid).collect();
        g.sort();
        g.dedup();
        g
    }

    /// Waits until exactly `n` browser process groups run: a delete SIGKILLs a browser at
    /// once, and the kernel takes tens of milliseconds to tear a Chromium down.
    pub async fn wait_browser_groups(&self, n: usize) {
        eventually(&format!("{n} browser process groups"), Duration::from_secs(10), || async {
            (self.browser_groups().len() == n).then_some(())
        })
        .await
    }

    /// Killed browsers' profile dirs waiting for the janitor.
    pub fn trash_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.data_dir.join("trash")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
    }

    /// Profile directories present now.
    pub fn profile_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.profiles_dir()).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// Kills the server with SIGKILL, as a crash would; its browsers are left running.
    pub fn kill9(&mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.child.take().unwrap().wait();
    }

    /// Stops the server with SIGTERM and returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- agentbox server log ---\n{}", self.log());
        }
        // A test that killed the server leaves browsers; never let them outlive the test.
        procfs::reap_orphans(&self.profiles_dir());
    }
}

/// Polls `check` until it returns `Some`, failing the test after `limit`. Used for things
/// that happen in the background (a browser's death noticed, an idle session reaped).
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A small website on 127.0.0.1:0 for the browser (and the agent) to visit: home with nav
/// links and a search form, search results, products with prices, a login form, a select
/// box, a page that opens a new tab, a slow element, a long page. Stops when dropped.
pub struct Site {
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

pub const PRODUCTS: &[(&str, &str)] = &[("Widget Mini", "$9.99"), ("Widget Pro", "$24.99"), ("Gadget Max", "$129.00"), ("Gizmo Lite", "$5.49")];

fn page(title: &str, body: &str) -> axum::response::Html<String> {
    axum::response::Html(format!("<!doctype html><html><head><meta charset=utf-8><title>{title}</title></head><body>{body}</body></html>"))
}

fn product_list(filter: &str) -> String {
    let items: String = PRODUCTS
        .iter()
        .filter(|(n, _)| n.to_lowercase().contains(&filter.to_lowercase()))
        .map(|(n, p)| format!("<li class=product><span class=name>{n}</span> <span class=price>{p}</span> <button>Add {n} to cart</button></li>"))
        .collect();
    format!("<ul>{items}</ul>")
}

impl Site {
    pub async fn start() -> Site {
        use axum::extract::Query;
        use axum::routing::get;
        use std::collections::HashMap;
        let nav = "<nav><a href=/products>Products</a> | <a href=/about>About us</a> | <a href=/login>Login</a> | \
                   <a href=/settings>Settings</a> | <a href=/reports>Reports</a> | <a href=/slow>Orders</a> | <a href=/long>Long page</a></nav>";
        let search = "<form action=/search role=search><input type=search name=q placeholder='Search products' aria-label='Search products'> \
                      <button type=submit>Search</button></form>";
        let home = format!("{nav}<h1>Welcome to the fixture</h1>{search}");
        let router = axum::Router::new()
            .route("/", get(move || { let home = home.clone(); async move { page("Fixture Home", &home) } }))
            .route("/untitled", get(|| async { axum::response::Html("<!doctype html><p>no title here</p>") }))
            .route("/products", get(|| async { page("Products", &format!("<h1>Our products</h1>{}", product_list(""))) }))
            .route("/search", get(|Query(q): Query<HashMap<String, String>>| async move {
                let term = q.get("q").cloned().unwrap_or_default();
                let n = PRODUCTS.iter().filter(|(p, _)| p.to_lowercase().contains(&term.to_lowercase())).count();
                let safe: String = term.chars().filter(|c| c.is_alphanumeric() || *c == ' ').collect();
                page("Search results", &format!("<h1>{n} results for {safe}</h1>{}", product_list(&term)))
            }))
            .route("/about", get(|| async { page("About the fixture", "<h1>About us</h1><p>We make widgets.</p><a href=/>Home</a>") }))
            .route("/login", get(|| async { page("Login", "<form id=f><label for=u>Username</label><input id=u name=username> \
                <label for=p>Password</label><input id=p name=password type=password> <button type=submit>Sign in</button></form>\
                <div id=out></div><script>document.getElementById('f').addEventListener('submit', (e) => { e.preventDefault(); \
                const u = document.getElementById('u').value, p = document.getElementById('p').value; \
                document.getElementById('out').textContent = p === 'secret' ? 'Welcome, ' + u + '!' : 'Wrong password'; });</script>") }))
            .route("/settings", get(|| async { page("Settings", "<label for=size>Size</label><select id=size><option>Small</option>\
                <option>Medium</option><option>Large</option></select> <label><input type=checkbox id=news> Subscribe to newsletter</label> \
                <button id=save>Save</button><p id=saved></p><script>document.getElementById('save').onclick = () => { \
                document.getElementById('saved').innerText = 'Saved size: ' + document.getElementById('size').value + '\\nNewsletter: ' + \
                (document.getElementById('news').checked ? 'yes' : 'no'); };</script>") }))
            .route("/reports", get(|| async { page("Reports", "<button onclick=\"window.open('/report')\">Open report</button>") }))
            .route("/report", get(|| async { page("Quarterly report", "<h1>Quarterly report</h1><p>Report total: $1,234.00</p><button onclick=window.close()>Close report</button>") }))
            .route("/slow", get(|| async { page("Orders", "<h1>Order 42</h1><button id=b>Show details</button><div id=d></div><script>\
                document.getElementById('b').onclick = () => setTimeout(() => { document.getElementById('d').innerHTML = \
                '<p>Status: shipped</p><button>Track package</button>'; }, 700);</script>") }))
            .route("/panel", get(|| async { page("Panel", "<style>body{margin:0;background:#fff} #b{position:absolute;left:100px;top:100px;width:200px;height:60px;background:#36c;color:#fff;font-size:20px}\
                #i{position:absolute;left:100px;top:200px;width:300px;height:40px;font-size:20px}</style>\
                <button id=b onclick=\"document.title='clicked'; document.getElementById('said').textContent='Clicked!'\">Press me</button><p id=said style='position:absolute;top:300px'></p>\
                <input id=i oninput=\"document.title='typed:'+this.value\">") }))
            .route("/long", get(|| async { page("Long page", "<h1>Top</h1><div style='height:4000px'></div>\
                <p>Footer note: you reached the end</p><button onclick=\"this.innerText='Clicked at the bottom'\">Bottom button</button>") }));
        let router = router
            // Sets all five kinds of state a snapshot must keep; the title says when done.
            .route("/account/login", get(|| async {
                let body = "<p>Signing in…</p><script>\
                    localStorage.setItem('theme', 'dark'); sessionStorage.setItem('draft', 'hello');\
                    const open = indexedDB.open('app', 1);\
                    open.onupgradeneeded = () => open.result.createObjectStore('kv');\
                    open.onsuccess = () => { const tx = open.result.transaction('kv', 'readwrite');\
                      tx.objectStore('kv').put('alice', 'user'); tx.oncomplete = () => { document.title = 'Logged in'; }; };</script>";
                (
                    axum::response::AppendHeaders([(axum::http::header::SET_COOKIE, "remember=yes; Max-Age=86400; Path=/"),
                     (axum::http::header::SET_COOKIE, "sid=abc123; Path=/; HttpOnly")]),
                    page("Signing in", body),
                )
            }))
            // Shows the state: cookies as the server received them, then each storage.
            .route("/account", get(|headers: axum::http::HeaderMap| async move {
                let cookies: String = headers.get("cookie").and_then(|c| c.to_str().ok()).unwrap_or("").chars()
                    .filter(|c| c.is_alphanumeric() || "=; ".contains(*c)).collect();
                let body = format!("<p id=c>{cookies}</p><script>\
                    const show = (idb) => {{ document.title = 'State: cookie=[' + document.getElementById('c').textContent + '] ls=' + \
                      localStorage.getItem('theme') + ' ss=' + sessionStorage.getItem('draft') + ' idb=' + idb; }};\
                    const open = indexedDB.open('app', 1);\
                    open.onupgradeneeded = () => open.result.createObjectStore('kv');\
                    open.onsuccess = () => {{ const r = open.result.transaction('kv').objectStore('kv').get('user');\
                      r.onsuccess = () => show(r.result); r.onerror = () => show('error'); }};\
                    open.onerror = () => show('error');</script>");
                page("Account", &body)
            }))
            // 2 MiB of incompressible data in IndexedDB (written through to disk at commit).
            .route("/big", get(|| async { page("Big", "<script>const bytes = new Uint8Array(2 << 20);\
                for (let i = 0; i < bytes.length; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));\
                const o = indexedDB.open('big', 1); o.onupgradeneeded = () => o.result.createObjectStore('kv');\
                o.onsuccess = () => { const tx = o.result.transaction('kv', 'readwrite'); tx.objectStore('kv').put(bytes, 'blob');\
                  tx.oncomplete = () => { document.title = 'Big stored'; }; };</script>") }))
            // Live state only a memory snapshot keeps: typed text, a JS counter, the scroll offset.
            .route("/form", get(|| async { page("Form", "<label for=n>Notes</label><input id=n> <button id=b>Bump</button>\
                <div style='height:4000px'></div><p>End</p><script>window.bumps = 0; const t = () => { document.title = \
                'Form v=' + document.getElementById('n').value + ' n=' + window.bumps + ' y=' + Math.round(scrollY); };\
                document.getElementById('n').oninput = t; document.getElementById('b').onclick = () => { window.bumps++; t(); };\
                addEventListener('scroll', t); t();</script>") }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Site { base, task }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}
