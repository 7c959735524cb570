//! Server-Sent Events against the real server: order, shapes, history, resume, filters,
//! heartbeats, pause/resume, many subscribers; and `/metrics`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, Site, eventually};

const NAMES: &[&str] = &["step", "thought", "question", "done", "error", "log", "paused", "resumed", "heartbeat", "user"];

#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<i64>,
    pub event: String,
    pub data: Value,
}

/// A minimal SSE reader over a streaming HTTP response.
pub struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    pub async fn open(server: &Server, sid: &str, query: &str, last_event_id: Option<i64>) -> Sse {
        let mut req = reqwest::Client::new().get(format!("{}/v1/sessions/{sid}/events{query}", server.base)).bearer_auth(&server.key);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        Sse { resp, buf: String::new() }
    }

    /// The next event, or `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent { id: None, event: "message".into(), data: Value::Null };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        ev.data = serde_json::from_str(v.trim()).unwrap();
                    }
                }
                if ev.data.is_null() && ev.id.is_none() {
                    continue; // a comment / keep-alive
                }
                return Some(ev);
            }
            // Bounded only so that a regression fails instead of hanging the suite.
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.resp.chunk()).await.expect("an event within 60 s").ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Every event until the stream ends.
    pub async fn all(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }
}

fn names(evs: &[SseEvent]) -> Vec<&str> {
    evs.iter().map(|e| e.event.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_streams_in_order_and_late_filtered_and_resuming_clients_get_exactly_their_part() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "1"]).await;
    let sid = server.create_session().await;
    let mut early = Sse::open(&server, &sid, "?sanitize=false", None).await;

    let task = "wait 1 seconds then click Products then what is the price of Widget Pro";
    let body = json!({ "message": task, "start_url": format!("{}/", site.base) }).to_string();
    assert_eq!(server.post(&format!("/v1/sessions/{sid}/message"), &body).await.status, 200);
    // A second client joins mid-task and asks for the history.
    eventually("the task to be under way", Duration::from_secs(20), || async {
        server.messages(&sid).await.iter().any(|m| m["type"] == "THOUGHT").then_some(())
    })
    .await;
    let mut late = Sse::open(&server, &sid, "?sanitize=false&include_history=true", None).await;

    let all = early.all().await;
    assert!(all.iter().all(|e| NAMES.contains(&e.event.as_str())), "{all:#?}");
    assert_eq!(all.last().unwrap().event, "done", "the stream ends after done");
    assert_eq!(all.last().unwrap().data["result"], "$24.99");
    assert_eq!(all.last().unwrap().data["text"], "$24.99");
    let ids: Vec<i64> = all.iter().map(|e| e.id.expect("every non-heartbeat event has an id")).collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "in order: {ids:?}");
    assert_eq!(names(&all[..2]), ["user", "log"]);
    assert_eq!(all[0].data, json!({ "text": task, "message_id": 1 }));
    let steps: Vec<&SseEvent> = all.iter().filter(|e| e.event == "step").collect();
    assert!(steps.len() >= 3, "{all:#?}");
    assert_eq!(steps[0].data["step"], 1);
    assert_eq!(steps[0].data["action"]["type"], "wait");
    assert!(steps[1].data["url"].as_str().unwrap().starts_with(&site.base));
    for (i, e) in all.iter().enumerate() {
        if e.event == "step" {
            assert_eq!(all[i + 1].event, "thought", "a step is followed by its thought");
            assert_eq!(all[i + 1].id, e.id);
        }
    }
    // The message log and the stream agree: one id per message, none missing.
    let log_ids: Vec<i64> = server.messages(&sid).await.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    let mut stream_ids = ids.clone();
    stream_ids.dedup();
    assert_eq!(stream_ids, log_ids);

    assert_eq!(late.all().await, all, "history then live: everything once, no gap at the seam");

    let cut = all[4].id.unwrap();
    let resumed = Sse::open(&server, &sid, "?sanitize=false", Some(cut)).await.all().await;
    let want: Vec<SseEvent> = all.iter().filter(|e| e.id.unwrap() > cut).cloned().collect();
    assert_eq!(resumed, want, "Last-Event-ID resumes exactly after it");
    let by_query = Sse::open(&server, &sid, &format!("?sanitize=false&after_id={cut}"), None).await.all().await;
    assert_eq!(by_query, want);

    let only_done = Sse::open(&server, &sid, "?event_types=done,error", None).await.all().await;
    assert_eq!(names(&only_done), ["done"]);
    let sanitized = Sse::open(&server, &sid, "", None).await.all().await;
    assert!(!sanitized.iter().any(|e| e.event == "log"), "sanitize (the default) hides log events");
    assert_eq!(sanitized.len(), all.iter().filter(|e| e.event != "log").count());

    // include_history=false: only what happens from now on.
    let mut fresh = Sse::open(&server, &sid, "?include_history=false", None).await;
    let (status, _) = server.run_task(&sid, "what is the page title").await;
    assert_eq!(status, "finished");
    let next = fresh.all().await;
    assert_eq!(next[0].event, "user");
    assert_eq!(next[0].data["text"], "what is the page title");
    assert!(next[0].id.unwrap() > *ids.last().unwrap());
    assert_eq!(next.last().unwrap().data["result"], "Products");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_pause_and_resume_events_and_bad_requests() {
    let server = Server::start(&["--pool-size", "1", "--sse-heartbeat", "200ms"]).await;
    let sid = server.create_session().await;
    let mut sse = Sse::open(&server, &sid, "", None).await;
    let hb = sse.next().await.unwrap();
    assert_eq!((hb.event.as_str(), hb.id), ("heartbeat", None));
    assert!(hb.data["timestamp"].as_str().unwrap().ends_with('Z'));

    let r = server.post(&format!("/v1/sessions/{sid}/message"), r#"{"message": "wait 2 seconds then wait 1 seconds"}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(server.post(&format!("/v1/sessions/{sid}/pause"), "{}").await.status, 200);
    assert_eq!(server.post(&format!("/v1/sessions/{sid}/resume"), "{}").await.status, 200);
    let mut seen = Vec::new();
    while let Some(e) = sse.next().await {
        if e.event != "heartbeat" {
            seen.push(e);
        }
    }
    let n = names(&seen);
    let (p, r) = (n.iter().position(|x| *x == "paused").unwrap(), n.iter().position(|x| *x == "resumed").unwrap());
    assert!(p < r && *n.last().unwrap() == "done", "{n:?}");
    assert!(seen[p].data["timestamp"].is_string() && seen[p].id.is_some());

    let q = |s: &str| format!("/v1/sessions/{sid}/events{s}");
    server.get(&q("?event_types=done,nope")).await.assert_error(422, "validation_error", "nope");
    server.get(&q("?after_id=-3")).await.assert_error(422, "validation_error", "after_id");
    server.get("/v1/sessions/00000000-0000-4000-8000-000000000000/events").await.assert_error(404, "not_found", "session");
    let other = server.new_user("eve");
    let r = server.call(reqwest::Method::GET, &q(""), other["api_key"].as_str(), None).await;
    r.assert_error(404, "not_found", "session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_subscribers_each_receive_every_event_and_metrics_count_them() {
    let site = Site::start().await;
    let server = Server::start(&["--pool-size", "1"]).await;
    let sid = server.create_session().await;
    let mut streams = Vec::new();
    for _ in 0..100 {
        streams.push(Sse::open(&server, &sid, "", None).await);
    }
    let metrics = server.call(reqwest::Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, 200);
    let text = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
    assert!(text.contains("agentbox_sse_subscribers 100"), "{text}");

    let task = format!("go to {}/products then what is the price of Gizmo Lite", site.base);
    let (status, _) = server.run_task(&sid, &task).await;
    assert_eq!(status, "finished");
    let all = futures_util::future::join_all(streams.iter_mut().map(|s| s.all())).await;
    assert_eq!(names(&all[0]).last(), Some(&"done"));
    assert!(all.iter().all(|evs| *evs == all[0]), "every subscriber got the same events");

    let text = eventually("the streams to be closed", Duration::from_secs(10), || async {
        let t = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
        t.contains("agentbox_sse_subscribers 0").then_some(t)
    })
    .await;
    assert!(text.contains("agentbox_tasks_total{outcome=\"started\"} 1"), "{text}");
    assert!(text.contains("agentbox_tasks_total{outcome=\"finished\"} 1"), "{text}");
    assert!(text.contains("agentbox_sessions{status=\"completed\"} 1"), "{text}");
    assert!(text.contains("agentbox_http_requests_total{method=\"POST\",route=\"/v1/sessions/{id}/message\",status=\"200\"} 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_never_holds_up_the_others_and_loses_nothing_by_resuming() {
    let server = Server::start(&["--pool-size", "1"]).await;
    let sid = server.create_session().await;
    let r = server.post(&format!("/v1/sessions/{sid}/message"), r#"{"message": "wait 30 seconds then wait 30 seconds"}"#).await;
    assert_eq!(r.status, 200);
    let mut slow = Sse::open(&server, &sid, "?event_types=user", None).await; // reads nothing for now
    let mut fast = Sse::open(&server, &sid, "?event_types=user", None).await;
    let filler = "x".repeat(9000);
    let n = 1200; // more than the live buffer, and more bytes than the socket buffers hold
    let reader = tokio::spawn(async move {
        let mut texts = Vec::new();
        while texts.len() < n + 1 {
            texts.push(fast.next().await.expect("the fast subscriber keeps its stream").data["text"].as_str().unwrap().to_owned());
        }
        texts
    });
    for i in 0..n {
        let body = json!({ "message": format!("{i} {filler}") }).to_string();
        assert_eq!(server.post(&format!("/v1/sessions/{sid}/message"), &body).await.status, 200);
    }
    let texts = reader.await.unwrap();
    assert_eq!(texts.len(), n + 1, "the task's message and every context message");

    // The slow one now reads: its stream may have been cut; resuming fills the gap.
    let mut ids = Vec::new();
    let mut last = None;
    loop {
        while let Some(e) = tokio::time::timeout(Duration::from_secs(2), slow.next()).await.ok().flatten() {
            ids.push(e.id.unwrap());
            last = e.id;
        }
        if ids.len() > n {
            break;
        }
        slow = Sse::open(&server, &sid, "?event_types=user", last).await;
    }
    let want: Vec<i64> = (1..=(n as i64 + 1)).collect();
    assert_eq!(ids, want, "every message once, in order");
}
