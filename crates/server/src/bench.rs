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
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<std::process::ExitCode> {
    crate::cli::init_logging(&std::env::var("AGENTBOX_LOG").unwrap_or_else(|_| "warn".into()))?;
    match cmd {
        BenchCommand::Create { iterations, idle_sessions, chromium_path } => {
            bench_create(iterations.max(1), idle_sessions, chromium_path).await?
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
