//! A scripted LLM provider on 127.0.0.1:0 speaking whatever wire the agent uses: each
//! request is recorded (path, headers, JSON body) and answered by the next scripted reply,
//! which may be computed from the request and may wait on a gate the test opens.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::support::eventually;

/// One request as the provider received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// The text of the newest page observation in the request ("Step N. URL: …").
    pub fn observation(&self) -> String {
        let mut found = Vec::new();
        collect_strings(&self.body, &mut found);
        found.into_iter().rev().find(|s| s.starts_with("Step ")).unwrap_or_default()
    }

    /// The number the observation gives the element described by `needle`
    /// (e.g. `searchbox "Search products"`).
    pub fn element(&self, needle: &str) -> u64 {
        let obs = self.observation();
        let line = obs.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no element {needle:?} in:\n{obs}"));
        let n = line.trim().trim_start_matches('[').split(']').next().unwrap();
        n.parse().unwrap()
    }

    /// Every string anywhere in the body, for "was this sent" checks.
    pub fn text(&self) -> String {
        let mut found = Vec::new();
        collect_strings(&self.body, &mut found);
        found.join("\n")
    }
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// What the provider answers.
pub enum Reply {
    Json(Value),
    Status(u16, &'static str),
}

type Script = Box<dyn FnOnce(&Recorded) -> Reply + Send>;

#[derive(Default)]
struct Inner {
    script: VecDeque<(Option<Arc<Semaphore>>, Script)>,
    log: Vec<Recorded>,
}

pub struct ScriptedLlm {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedLlm {
    pub async fn start() -> ScriptedLlm {
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let state = inner.clone();
        let router = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let rec = Recorded { path: uri.path().to_owned(), headers, body: serde_json::from_slice(&body).unwrap_or(Value::Null) };
                let next = {
                    let mut s = state.lock().unwrap();
                    s.log.push(rec.clone());
                    s.script.pop_front()
                };
                let Some((gate, script)) = next else {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "the test's script has no reply left".to_owned());
                };
                if let Some(g) = gate {
                    g.acquire().await.unwrap().forget();
                }
                match script(&rec) {
                    Reply::Json(v) => (StatusCode::OK, v.to_string()),
                    Reply::Status(code, text) => (StatusCode::from_u16(code).unwrap(), text.to_owned()),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        ScriptedLlm { base, inner, task }
    }

    pub fn push(&self, f: impl FnOnce(&Recorded) -> Reply + Send + 'static) {
        self.inner.lock().unwrap().script.push_back((None, Box::new(f)));
    }

    /// A reply sent only once the test adds a permit to `gate`.
    pub fn push_gated(&self, gate: Arc<Semaphore>, f: impl FnOnce(&Recorded) -> Reply + Send + 'static) {
        self.inner.lock().unwrap().script.push_back((Some(gate), Box::new(f)));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().log.clone()
    }

    pub async fn wait_requests(&self, n: usize) -> Vec<Recorded> {
        eventually(&format!("{n} requests to the model"), Duration::from_secs(30), || async {
            let r = self.requests();
            (r.len() >= n).then_some(r)
        })
        .await
    }
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An OpenAI chat-completions reply with one tool call.
pub fn openai_call(id: &str, thought: &str, name: &str, args: Value) -> Reply {
    Reply::Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
        "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": thought,
            "tool_calls": [{ "id": id, "type": "function", "function": { "name": name, "arguments": args.to_string() } }] } }],
        "usage": { "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120 }
    }))
}

/// An Anthropic Messages reply with a text block and one tool_use block.
pub fn anthropic_call(id: &str, thought: &str, name: &str, input: Value) -> Reply {
    Reply::Json(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test", "stop_reason": "tool_use",
        "content": [{ "type": "text", "text": thought }, { "type": "tool_use", "id": id, "name": name, "input": input }],
        "usage": { "input_tokens": 100, "output_tokens": 20 }
    }))
}
