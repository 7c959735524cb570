//! The OpenAI chat-completions wire format (also Ollama, vLLM, llama.cpp server, OpenRouter):
//! function tools, `image_url` parts for screenshots, `usage.prompt_tokens`.

use serde_json::{Value, json};

use super::action::tools;
use super::llm::{Conversation, Current, Repair, Reply, ToolCall};
use super::{Usage, prompt};
use crate::config::AgentSpec;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

pub(super) fn request(spec: &AgentSpec, conv: &Conversation, current: &Current<'_>, repair: Option<&Repair<'_>>) -> (String, Vec<(&'static str, String)>, Value) {
    let base = spec.base_url.as_ref().map(|u| u.as_str().to_owned()).unwrap_or_else(|| DEFAULT_BASE_URL.into());
    let url = format!("{}/chat/completions", base.trim_end_matches('/'));
    let mut messages = vec![json!({ "role": "system", "content": prompt::SYSTEM_PROMPT }), json!({ "role": "user", "content": format!("Task: {}", conv.task) })];
    for m in &conv.user_before {
        messages.push(user_says(m));
    }
    for t in &conv.turns {
        messages.push(json!({
            "role": "assistant",
            "content": if t.thought.is_empty() { Value::Null } else { json!(t.thought) },
            "tool_calls": [{ "id": t.id, "type": "function", "function": { "name": t.name, "arguments": t.args.to_string() } }],
        }));
        messages.push(json!({ "role": "tool", "tool_call_id": t.id, "content": t.result.as_deref().unwrap_or("OK") }));
        for m in &t.user_after {
            messages.push(user_says(m));
        }
    }
    let mut parts = vec![json!({ "type": "text", "text": current.text })];
    if let Some(img) = current.image {
        parts.push(json!({ "type": "image_url", "image_url": { "url": format!("data:image/jpeg;base64,{img}") } }));
    }
    messages.push(json!({ "role": "user", "content": parts }));
    if let Some(r) = repair {
        messages.push(r.reply.assistant.clone());
        let fix = format!("Your reply was invalid: {}. Reply again with exactly one valid tool call.", r.problem);
        match &r.reply.call {
            // Every tool call must be answered by a tool message with its id.
            Some(c) if !c.id.is_empty() => messages.push(json!({ "role": "tool", "tool_call_id": c.id, "content": fix })),
            _ => messages.push(json!({ "role": "user", "content": fix })),
        }
    }
    let tools: Vec<Value> = tools()
        .into_iter()
        .map(|t| json!({ "type": "function", "function": { "name": t.name, "description": t.description, "parameters": t.parameters } }))
        .collect();
    let body = json!({
        "model": spec.model,
        "messages": messages,
        "tools": tools,
        "tool_choice": "auto",
        "max_tokens": spec.max_output_tokens,
    });
    let mut headers = Vec::new();
    if let Some(k) = &spec.api_key {
        headers.push(("authorization", format!("Bearer {}", k.0)));
    }
    (url, headers, body)
}

fn user_says(m: &str) -> Value {
    json!({ "role": "user", "content": format!("Message from the user: {m}") })
}

pub(super) fn parse(mut v: Value) -> Result<Reply, String> {
    let usage = Usage {
        input_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        output_tokens: v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
    };
    let Some(msg) = v.get_mut("choices").and_then(|c| c.get_mut(0)).and_then(|c| c.get_mut("message")).map(Value::take) else {
        return Err("the reply has no choices[0].message".into());
    };
    let thought = msg["content"].as_str().unwrap_or_default().to_owned();
    let call = msg["tool_calls"].get(0).map(|c| {
        let f = &c["function"];
        let args = match &f["arguments"] {
            Value::String(s) => serde_json::from_str::<Value>(s).map_err(|e| e.to_string()),
            Value::Object(_) => Ok(f["arguments"].clone()),
            Value::Null => Ok(json!({})),
            other => Err(format!("arguments is {other}, not a JSON object")),
        };
        ToolCall { id: c["id"].as_str().unwrap_or_default().to_owned(), name: f["name"].as_str().unwrap_or_default().to_owned(), args }
    });
    // Replayed in a repair round: keep only the first tool call, the one we answer.
    let mut assistant = json!({ "role": "assistant", "content": msg["content"].clone() });
    if let Some(first) = msg["tool_calls"].get(0) {
        assistant["tool_calls"] = json!([first]);
    }
    Ok(Reply { thought, call, usage, assistant })
}
