//! `GET /v1/sessions/{id}/events`: the session's message log as Server-Sent Events.
//!
//! Each stream subscribes to the session's live messages *before* it reads the history
//! from the store, replays the history after the resume point, then forwards live
//! messages whose id is greater than the last one sent: no gap and no duplicate at the
//! seam. The stream is a plain state machine (no task is spawned per subscriber); it ends
//! when the client goes, after a `done` or `error` event, when the session ends, or when
//! the subscriber falls more than the live buffer behind (the client then resumes with
//! `Last-Event-ID`), or when the server begins to stop. A heartbeat is sent every `sse_heartbeat`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use agentbox_engine::{Engine, ExecutionStatus, MessageRecord, MessageType};
use agentbox_engine::time::{iso8601, now_ms};
use agentbox_store::UserRecord;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, AuthUser, SessionId};

/// Every event name, exactly as official clients accept them.
pub const EVENT_TYPES: &[&str] = &["step", "thought", "question", "done", "error", "log", "paused", "resumed", "heartbeat", "user"];

/// Query of `GET /v1/sessions/{id}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Hide `log` events (default true).
    pub sanitize: Option<bool>,
    /// Comma list of event names to send (default: all).
    pub event_types: Option<String>,
    /// Replay the log before live events (default true).
    pub include_history: Option<bool>,
    /// (ext) Resume after this message id; the `Last-Event-ID` header wins.
    pub after_id: Option<i64>,
}

/// Stream the session's events.
#[utoipa::path(get, path = "/v1/sessions/{id}/events", tag = "tasks",
    params(("id" = String, Path, description = "session id"), EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this message id")),
    responses((status = 200, description = "text/event-stream of step, thought, question, done, error, log, paused, resumed, heartbeat and user events"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sessions_events(
    State(engine): State<Arc<Engine>>,
    AuthUser(user): AuthUser,
    id: SessionId,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = id.require()?;
    let types = match &q.event_types {
        None => EVENT_TYPES.to_vec(),
        Some(list) => {
            let mut types = Vec::new();
            for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                match EVENT_TYPES.iter().find(|e| **e == t) {
                    Some(e) => types.push(*e),
                    None => {
                        return Err(ApiError::field("query", "event_types", format!("{t:?} is not an event type; use any of {}", EVENT_TYPES.join(","))));
                    }
                }
            }
            types
        }
    };
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok()).filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::field("header", "Last-Event-ID", "must be a message id (a non-negative integer)")
        })?),
        None => match q.after_id {
            Some(n) if n < 0 => return Err(ApiError::field("query", "after_id", format!("must be 0 or more (got {n})"))),
            other => other,
        },
    };
    // Subscribe first, then find where the history starts: nothing written in between is lost.
    let live = engine.follow(&user, id).await?;
    let after = match resume {
        Some(n) => n,
        None if q.include_history.unwrap_or(true) => 0,
        None => engine.store().last_message_id(id).await?,
    };
    let guard = engine.metrics().sse_subscriber();
    let closing = engine.closing();
    let heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + engine.config().sse_heartbeat, engine.config().sse_heartbeat);
    let feed = Feed {
        engine,
        user,
        id,
        types,
        sanitize: q.sanitize.unwrap_or(true),
        last_id: after,
        history_done: false,
        live,
        queue: VecDeque::new(),
        ending: false,
        heartbeat,
        closing,
        _guard: guard,
    };
    let stream = futures_util::stream::unfold(feed, |mut f| async move { f.next().await.map(|ev| (Ok(ev), f)) });
    Ok(Sse::new(stream))
}

struct Feed {
    engine: Arc<Engine>,
    user: UserRecord,
    id: Uuid,
    types: Vec<&'static str>,
    sanitize: bool,
    /// The id of the last message sent (or skipped by a filter).
    last_id: i64,
    history_done: bool,
    live: Option<broadcast::Receiver<MessageRecord>>,
    queue: VecDeque<Event>,
    /// A `done` or `error` is queued: end once the queue is sent.
    ending: bool,
    heartbeat: tokio::time::Interval,
    /// The server is stopping.
    closing: tokio::sync::watch::Receiver<bool>,
    _guard: agentbox_engine::metrics::SubscriberGuard,
}

impl Feed {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some(ev);
            }
            if self.ending || *self.closing.borrow() {
                return None;
            }
            if !self.history_done {
                let (page, status) = self.engine.messages(&self.user, self.id, self.last_id, false).await.ok()?;
                if page.is_empty() {
                    self.history_done = true;
                    // A session nothing more will be written to: the history was all of it.
                    self.live.as_ref()?;
                    continue;
                }
                let last = page.len() < agentbox_engine::MESSAGES_PAGE;
                let n = page.len();
                for (i, m) in page.into_iter().enumerate() {
                    // History ends the stream only where the task has ended for good.
                    let final_message = last && i + 1 == n && !status.task_active() && status != ExecutionStatus::Ready;
                    self.push(m, final_message);
                }
                continue;
            }
            let live = self.live.as_mut()?;
            tokio::select! {
                m = live.recv() => match m {
                    Ok(m) if m.id > self.last_id => self.push(m, true),
                    Ok(_) => {}
                    // Too far behind, or the session ended: the client resumes from the log.
                    Err(_) => return None,
                },
                _ = self.closing.changed() => return None,
                _ = self.heartbeat.tick() => {
                    if self.types.contains(&"heartbeat") {
                        return Some(Event::default().event("heartbeat").data(json!({ "timestamp": iso8601(now_ms()) }).to_string()));
                    }
                }
            }
        }
    }

    /// Queues the events of one message; `may_end` lets a `done` or `error` end the stream.
    fn push(&mut self, m: MessageRecord, may_end: bool) {
        self.last_id = self.last_id.max(m.id);
        let ends = matches!(m.kind, MessageType::Done | MessageType::Error) && may_end;
        for (name, data) in events_of(&m) {
            if !self.types.contains(&name) || (self.sanitize && name == "log") {
                continue;
            }
            let mut ev = Event::default().event(name).data(data.to_string());
            if name != "heartbeat" {
                ev = ev.id(m.id.to_string());
            }
            self.queue.push_back(ev);
        }
        if ends {
            self.ending = true;
        }
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The SSE events one message makes (API.md §4): a THOUGHT with an action is a `step`
/// and a `thought`; pause and resume LOG messages are `paused` and `resumed`.
pub fn events_of(m: &MessageRecord) -> Vec<(&'static str, Value)> {
    let text = text_of(&m.content);
    let ts = json!({ "timestamp": iso8601(m.created_at_ms) });
    match m.kind {
        MessageType::Thought => {
            let mut out = Vec::new();
            if let Some(action) = m.metadata.get("action").filter(|a| a.is_object()) {
                out.push(("step", json!({ "step": m.metadata["step"], "action": action, "url": m.metadata["url"] })));
            }
            out.push(("thought", json!({ "text": text, "message_id": m.id })));
            out
        }
        MessageType::Question => vec![("question", json!({ "text": text, "message_id": m.id }))],
        MessageType::User => vec![("user", json!({ "text": text, "message_id": m.id }))],
        MessageType::Done => vec![("done", json!({ "text": text, "result": m.content, "message_id": m.id }))],
        MessageType::Error => {
            let code = m.metadata.get("status_code").and_then(Value::as_u64).unwrap_or(500);
            vec![("error", json!({ "error": text, "status_code": code, "message_id": m.id }))]
        }
        MessageType::Log => match m.metadata.get("event").and_then(Value::as_str) {
            Some("paused") => vec![("paused", ts)],
            Some("resumed") => vec![("resumed", ts)],
            _ => vec![("log", json!({ "text": text, "message_id": m.id }))],
        },
    }
}
