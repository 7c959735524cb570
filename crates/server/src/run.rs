//! `agentbox run "TASK"`: runs one task and prints its progress and result.
//!
//! Against a running server (`--server URL --api-key K`) it is a plain API client. Without
//! one it starts this same app in-process on 127.0.0.1:0 with a temporary data dir (or
//! `--data-dir`) and talks to it over HTTP, so both paths exercise the real API. Progress
//! (one line per step) goes to stderr, the result to stdout; the exit code is 1 when the
//! task ends in ERROR.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::config::{Config, ServeArgs};
use crate::startup::Application;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The task, in words ("go to example.com then what is the page title").
    pub task: String,
    /// Opened before the first step.
    #[arg(long)]
    pub start_url: Option<String>,
    /// The agent name (see `/v1/models`).
    #[arg(long, default_value = "agi-0")]
    pub agent: String,
    /// Most actions the task may take.
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// A running agentbox (e.g. http://127.0.0.1:8080); in-process when absent.
    #[arg(long, env = "AGENTBOX_SERVER", requires = "api_key")]
    pub server: Option<String>,
    /// API key for `--server`.
    #[arg(long, env = "AGENTBOX_API_KEY")]
    pub api_key: Option<String>,
    /// In-process: a config file (agents and their providers).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// In-process: the data dir [default: a temporary one, removed after].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    match (&args.server, &args.api_key) {
        (Some(server), Some(key)) => drive(server.trim_end_matches('/'), key, &args).await,
        _ => {
            let temp = tempfile::tempdir().context("cannot create a temporary data dir")?;
            let serve = ServeArgs {
                config: args.config.clone(),
                listen: Some("127.0.0.1:0".parse()?),
                data_dir: Some(args.data_dir.clone().unwrap_or_else(|| temp.path().to_owned())),
                pool_size: Some(0),
                ..Default::default()
            };
            let config = Config::load(&serve)?;
            crate::cli::init_logging(&std::env::var("AGENTBOX_LOG").unwrap_or_else(|_| "warn".into()))?;
            let app = Application::build(config).await?;
            let key = match &app.first_user {
                Some(u) => u.api_key.clone(),
                None => bail!("--data-dir already has users; use --server and --api-key against its server instead"),
            };
            let base = format!("http://{}", app.local_addr());
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(app.run_until_stopped(async move {
                let _ = stop_rx.await;
            }));
            let result = drive(&base, &key, &args).await;
            let _ = stop_tx.send(());
            server.await.context("the in-process server panicked")??;
            result
        }
    }
}

async fn drive(base: &str, key: &str, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let req = http.request(method, format!("{base}{path}")).bearer_auth(key);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        async move {
            let resp = req.send().await.with_context(|| format!("cannot reach {base}"))?;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("{status}: {}", body["detail"].as_str().unwrap_or("no detail"));
            }
            Ok::<Value, anyhow::Error>(body)
        }
    };
    let mut create = json!({ "agent_name": args.agent });
    if let Some(n) = args.max_steps {
        create["max_steps"] = json!(n);
    }
    let session = call(reqwest::Method::POST, "/v1/sessions".into(), Some(create)).await?;
    let sid = session["session_id"].as_str().context("no session_id in the reply")?.to_owned();
    let outcome = follow(&call, &sid, args).await;
    let _ = call(reqwest::Method::DELETE, format!("/v1/sessions/{sid}"), None).await;
    outcome
}

async fn follow<F, Fut>(call: &F, sid: &str, args: &RunArgs) -> anyhow::Result<ExitCode>
where
    F: Fn(reqwest::Method, String, Option<Value>) -> Fut,
    Fut: Future<Output = anyhow::Result<Value>>,
{
    let mut msg = json!({ "message": args.task });
    if let Some(u) = &args.start_url {
        msg["start_url"] = json!(u);
    }
    call(reqwest::Method::POST, format!("/v1/sessions/{sid}/message"), Some(msg)).await?;
    let mut after = 0;
    loop {
        let page = call(reqwest::Method::GET, format!("/v1/sessions/{sid}/messages?after_id={after}"), None).await?;
        for m in page["messages"].as_array().into_iter().flatten() {
            after = m["id"].as_i64().unwrap_or(after);
            let text = match &m["content"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match m["type"].as_str().unwrap_or_default() {
                "THOUGHT" => {
                    let step = m["metadata"]["step"].as_u64().unwrap_or(0);
                    let action = m["metadata"]["action"]["type"].as_str().unwrap_or("");
                    eprintln!("step {step:>3}  {action:<10} {text}");
                }
                "QUESTION" => {
                    eprintln!("agent asks: {text}");
                    let answer = read_answer()?;
                    call(reqwest::Method::POST, format!("/v1/sessions/{sid}/message"), Some(json!({ "message": answer }))).await?;
                }
                "DONE" => {
                    match &m["content"] {
                        Value::String(s) => println!("{s}"),
                        other => println!("{}", serde_json::to_string_pretty(other)?),
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                "ERROR" => {
                    eprintln!("error: {text}");
                    return Ok(ExitCode::FAILURE);
                }
                _ => {}
            }
        }
        if page["status"] == "finished" {
            // Ended with no DONE (cancelled elsewhere).
            eprintln!("the task ended without a result");
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The user's answer to a question, from the terminal.
fn read_answer() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("your answer> ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
        bail!("the agent asked a question and no answer came on stdin");
    }
    Ok(line.trim().to_owned())
}
