//! A minimal Chrome DevTools Protocol client over one WebSocket.
//!
//! One IO task per [`Connection`] owns the socket: it writes requests that callers queue on
//! an mpsc channel, matches responses to callers by `id`, and broadcasts events. The task
//! stops when the socket closes or the [`Connection`] is dropped; every pending call then
//! fails with [`CdpError::Closed`]. We speak flat-session CDP (`sessionId` on each message),
//! so one socket drives the browser and all of its pages.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// How long one CDP call may take before the caller gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a CDP call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CdpError {
    #[error("the DevTools connection is closed")]
    Closed,
    #[error("DevTools call {method} got no answer within {0:?}", CALL_TIMEOUT)]
    Timeout { method: String },
    #[error("DevTools call {method} failed: {message} ({code})")]
    Protocol { method: String, code: i64, message: String },
    #[error("could not connect to DevTools at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The tab the call was for closed (or detached) before answering.
    #[error("the tab closed before DevTools call {method} was answered")]
    TargetClosed { method: String },
}

/// A CDP event, as broadcast to subscribers.
#[derive(Debug, Clone)]
pub struct Event {
    pub method: String,
    pub params: Value,
    pub session_id: Option<String>,
}

struct Request {
    id: u64,
    session: Option<String>,
    text: String,
    reply: oneshot::Sender<Result<Value, CdpError>>,
}

/// A live DevTools connection. Cheap to share behind an `Arc`.
pub struct Connection {
    requests: mpsc::UnboundedSender<Request>,
    events: broadcast::Sender<Event>,
    next_id: AtomicU64,
    closed: watch::Receiver<bool>,
    io: JoinHandle<()>,
}

impl Connection {
    /// Connects to a DevTools WebSocket URL (`ws://127.0.0.1:PORT/devtools/browser/…`).
    pub async fn connect(url: &str) -> Result<Arc<Self>, CdpError> {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| CdpError::Connect {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let (requests, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let (closed_tx, closed) = watch::channel(false);
        let io = tokio::spawn(run_io(socket, rx, events.clone(), closed_tx));
        Ok(Arc::new(Self { requests, events, next_id: AtomicU64::new(1), closed, io }))
    }

    /// Sends one command and waits for its result. `session` targets a page session
    /// attached with `Target.attachToTarget {flatten: true}`; `None` talks to the browser.
    pub async fn call(&self, method: &str, params: Value, session: Option<&str>) -> Result<Value, CdpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = Value::String(s.to_owned());
        }
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request { id, session: session.map(str::to_owned), text: msg.to_string(), reply })
            .map_err(|_| CdpError::Closed)?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(result)) => result.map_err(|e| match e {
                CdpError::Protocol { code, message, .. } => CdpError::Protocol { method: method.to_owned(), code, message },
                CdpError::TargetClosed { .. } => CdpError::TargetClosed { method: method.to_owned() },
                other => other,
            }),
            Ok(Err(_)) => Err(CdpError::Closed),
            Err(_) => Err(CdpError::Timeout { method: method.to_owned() }),
        }
    }

    /// Subscribes to every event from now on. Subscribe *before* sending the command whose
    /// events you wait for, so none is missed.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Resolves once the socket has closed.
    pub async fn wait_closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// True once the socket has closed (the browser exited or dropped us).
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.io.abort();
    }
}

type Reply = oneshot::Sender<Result<Value, CdpError>>;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn run_io(
    socket: Socket,
    mut requests: mpsc::UnboundedReceiver<Request>,
    events: broadcast::Sender<Event>,
    closed: watch::Sender<bool>,
) {
    let (mut sink, mut stream) = socket.split();
    // Each pending call with the page session it went to: a tab that closes never answers
    // its calls, so they fail when its session detaches instead of waiting for the timeout.
    let mut pending: HashMap<u64, (Option<String>, Reply)> = HashMap::new();
    loop {
        tokio::select! {
            req = requests.recv() => {
                let Some(req) = req else { break };
                if sink.send(Message::text(req.text)).await.is_err() {
                    let _ = req.reply.send(Err(CdpError::Closed));
                    break;
                }
                pending.insert(req.id, (req.session, req.reply));
                // Callers that gave up (timed out, or their task was aborted) dropped their
                // receiver: forget those calls so they do not pile up.
                if pending.len() > 64 {
                    pending.retain(|_, (_, reply)| !reply.is_closed());
                }
            }
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Ok(mut value) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if let Some(id) = value.get("id").and_then(Value::as_u64) {
                    let Some((_, reply)) = pending.remove(&id) else { continue };
                    let result = match value.get_mut("error") {
                        Some(err) => Err(CdpError::Protocol {
                            method: String::new(),
                            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                            message: err.get("message").and_then(Value::as_str).unwrap_or("").to_owned(),
                        }),
                        None => Ok(value.get_mut("result").map(Value::take).unwrap_or(Value::Null)),
                    };
                    let _ = reply.send(result);
                } else if let Some(method) = value.get("method").and_then(Value::as_str) {
                    if let Some(gone) = value["params"]["sessionId"].as_str().filter(|_| method == "Target.detachedFromTarget") {
                        let ids: Vec<u64> = pending.iter().filter(|(_, (s, _))| s.as_deref() == Some(gone)).map(|(id, _)| *id).collect();
                        for id in ids {
                            if let Some((_, reply)) = pending.remove(&id) {
                                let _ = reply.send(Err(CdpError::TargetClosed { method: String::new() }));
                            }
                        }
                    }
                    let event = Event {
                        method: method.to_owned(),
                        session_id: value.get("sessionId").and_then(Value::as_str).map(str::to_owned),
                        params: value.get_mut("params").map(Value::take).unwrap_or(Value::Null),
                    };
                    // No subscriber is fine: nobody is waiting for this event.
                    let _ = events.send(event);
                }
            }
        }
    }
    let _ = closed.send(true);
    for (_, (_, reply)) in pending.drain() {
        let _ = reply.send(Err(CdpError::Closed));
    }
}
