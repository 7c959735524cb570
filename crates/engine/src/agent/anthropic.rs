//! Anthropic's Messages API: `tool_use` / `tool_result` blocks, base64 image blocks,
//! `usage.input_tokens`. Roles must alternate, so each earlier step's tool result, the user
//! messages after it and (for the last) the current observation share one user turn.

use serde_json::{Value, json};

use super::action::tools;
use super::llm::{Conversation, Current, Repair, Reply, ToolCall};
use super::{Usage, prompt};
use crate::config::AgentSpec;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
const API_VERSION: &str = "2023-06-01";

pub(super) fn request(spec: &AgentSpec, conv: &Conversation, current: &Current<'_>, repair: Option<&Repair<'_>>) -> (String, Vec<(&'static str, String)>, Value) {
    let base = spec.base_url.as_ref().map(|u| u.as_str().to_owned()).unwrap_or_else(|| DEFAULT_BASE_URL.into());
    let url = format!("{}/v1/messages", base.trim_end_matches('/'));
    let observation = || {
        let mut blocks = vec![json!({ "type": "text", "text": current.text })];
        if let Some(img) = current.image {
            blocks.push(json!({ "type": "image", "source": { "type": "base64", "media_type": "image/jpeg", "data": img } }));
        }
        blocks
    };
    let mut first = vec![json!({ "type": "text", "text": format!("Task: {}", conv.task) })];
    first.extend(conv.user_before.iter().map(|m| user_says(m)));
    if conv.turns.is_empty() {
        first.extend(observation());
    }
    let mut messages = vec![json!({ "role": "user", "content": first })];
    for (i, t) in conv.turns.iter().enumerate() {
        let mut said = Vec::new();
        if !t.thought.is_empty() {
            said.push(json!({ "type": "text", "text": t.thought }));
        }
        said.push(json!({ "type": "tool_use", "id": t.id, "name": t.name, "input": t.args }));
        messages.push(json!({ "role": "assistant", "content": said }));
        let mut back = vec![json!({ "type": "tool_result", "tool_use_id": t.id, "content": t.result.as_deref().unwrap_or("OK") })];
        back.extend(t.user_after.iter().map(|m| user_says(m)));
        if i + 1 == conv.turns.len() {
            back.extend(observation());
        }
        messages.push(json!({ "role": "user", "content": back }));
    }
    if let Some(r) = repair {
        messages.push(r.reply.assistant.clone());
        let fix = format!("Your reply was invalid: {}. Reply again with exactly one valid tool call.", r.problem);
        let block = match &r.reply.call {
            Some(c) if !c.id.is_empty() => json!({ "type": "tool_result", "tool_use_id": c.id, "content": fix, "is_error": true }),
            _ => json!({ "type": "text", "text": fix }),
        };
        messages.push(json!({ "role": "user", "content": [block] }));
    }
    let tools: Vec<Value> =
        tools().into_iter().map(|t| json!({ "name": t.name, "description": t.description, "input_schema": t.parameters })).collect();
    let body = json!({
        "model": spec.model,
        "max_tokens": spec.max_output_tokens,
        "system": prompt::SYSTEM_PROMPT,
        "tools": tools,
        "messages": messages,
    });
    let mut headers = vec![("anthropic-version", API_VERSION.to_owned())];
    if let Some(k) = &spec.api_key {
        headers.push(("x-api-key", k.0.clone()));
    }
    (url, headers, body)
}

fn user_says(m: &str) -> Value {
    json!({ "type": "text", "text": format!("Message from the user: {m}") })
}

pub(super) fn parse(v: Value) -> Result<Reply, String> {
    let usage = Usage {
        input_tokens: v["usage"]["input_tokens"].as_u64().unwrap_or(0),
        output_tokens: v["usage"]["output_tokens"].as_u64().unwrap_or(0),
    };
    let Some(blocks) = v["content"].as_array() else {
        return Err("the reply has no content blocks".into());
    };
    let thought = blocks.iter().filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join("\n");
    let first_call = blocks.iter().find(|b| b["type"] == "tool_use");
    let call = first_call.map(|b| ToolCall {
        id: b["id"].as_str().unwrap_or_default().to_owned(),
        name: b["name"].as_str().unwrap_or_default().to_owned(),
        args: match &b["input"] {
            Value::Object(_) => Ok(b["input"].clone()),
            Value::String(s) => serde_json::from_str::<Value>(s).map_err(|e| e.to_string()),
            other => Err(format!("input is {other}, not a JSON object")),
        },
    });
    // Replayed in a repair round: the text and the first tool_use, the one we answer.
    let mut content: Vec<Value> = blocks.iter().filter(|b| b["type"] == "text").cloned().collect();
    content.extend(first_call.cloned());
    Ok(Reply { thought, call, usage, assistant: json!({ "role": "assistant", "content": content }) })
}
