//! Webhooks against real receivers on 127.0.0.1: signatures checked by the receiver's own
//! code, order, retries, timeouts, the SSRF guard and durability across a SIGKILL.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::support::{Server, eventually};

/// A webhook receiver: records every request; answers with the scripted statuses, then 200.
struct Receiver {
    base: String,
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(listener: tokio::net::TcpListener, script: &[u16], hang: bool) -> Receiver {
        let base = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<u16>>()));
        let (g, s) = (got.clone(), script.clone());
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (g, s) = (g.clone(), s.clone());
                async move {
                    g.lock().unwrap().push((headers, body));
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    StatusCode::from_u16(s.lock().unwrap().pop_front().unwrap_or(200)).unwrap()
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Receiver { base, got, task }
    }

    async fn on_port_0(script: &[u16], hang: bool) -> Receiver {
        Self::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), script, hang).await
    }

    fn requests(&self) -> Vec<(HeaderMap, String)> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The receiver's own Standard Webhooks check (not agentbox's code).
fn verify(secret: &str, headers: &HeaderMap, body: &str) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let key = STANDARD.decode(secret.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", h("webhook-id"), h("webhook-timestamp"), body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    h("webhook-signature").split(' ').any(|s| s == expected)
}

fn secret_of(server: &Server) -> String {
    let creds: Value = serde_json::from_slice(&std::fs::read(server.data_dir.join("first-user.json")).unwrap()).unwrap();
    creds["webhook_secret"].as_str().unwrap().to_owned()
}

async fn deliveries(server: &Server, sid: &str) -> Vec<Value> {
    let r = server.get(&format!("/v1/sessions/{sid}/webhook_deliveries")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["deliveries"].as_array().cloned().unwrap()
}

async fn settled(server: &Server, sid: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} webhook events settled"), Duration::from_secs(30), || async {
        let d = deliveries(server, sid).await;
        (d.len() >= n && d.iter().all(|e| e["state"] != "pending")).then_some(d)
    })
    .await
}

const FAST: &[&str] = &["--pool-size", "1", "--webhook-allow-private", "true", "--webhook-retry-schedule", "100ms,100ms,100ms,100ms"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_signed_delivered_in_order_and_retried_after_failures() {
    let receiver = Receiver::on_port_0(&[500, 500], false).await;
    let server = Server::start(FAST).await;
    let secret = secret_of(&server);
    let r = server.post("/v1/sessions", &json!({ "webhook_url": receiver.base }).to_string()).await;
    let sid = r.body["session_id"].as_str().unwrap().to_owned();
    let (status, _) = server.run_task(&sid, "what is the page title").await;
    assert_eq!(status, "finished");
    let live = server.get(&format!("/v1/sessions/{sid}")).await.body;
    assert_eq!(server.delete(&format!("/v1/sessions/{sid}")).await.body["deleted"], true);

    let log = settled(&server, &sid, 6).await;
    let names: Vec<&str> = log.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["session.created", "task.started", "session.status_changed", "task.completed", "session.status_changed", "session.deleted"]
    );
    assert!(log.iter().all(|e| e["state"] == "delivered"), "{log:#?}");
    assert_eq!((log[0]["attempts"].as_u64(), log[0]["last_status"].as_u64()), (Some(3), Some(200)), "500, 500, then 200");

    let reqs = receiver.requests();
    assert_eq!(reqs.len(), 8, "two retries of the first event, then one request per event");
    for (headers, body) in &reqs {
        assert!(verify(&secret, headers, body), "every request verifies with the receiver's own check");
        assert!(!verify(&secret, headers, &body.replacen("session", "sessions", 1)), "a tampered body does not");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["id"], headers["webhook-id"].to_str().unwrap());
    }
    // In order: each id arrives first after the previous one has been delivered.
    let mut order: Vec<String> = Vec::new();
    for (h, _) in &reqs {
        let id = h["webhook-id"].to_str().unwrap().to_owned();
        if order.last() != Some(&id) {
            assert!(!order.contains(&id), "no event goes out again after a later one");
            order.push(id);
        }
    }
    assert_eq!(order, log.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>());

    let bodies: Vec<Value> = reqs.iter().map(|(_, b)| serde_json::from_str(b).unwrap()).collect();
    let completed = bodies.iter().find(|b| b["event"] == "task.completed").unwrap();
    assert_eq!(completed["data"]["message"]["type"], "DONE");
    assert_eq!(completed["session"]["status"], "completed");
    assert_eq!(completed["session"], live, "the session object is the API's");
    let changed: Vec<&Value> = bodies.iter().filter(|b| b["event"] == "session.status_changed").collect();
    assert_eq!(changed.last().unwrap()["data"], json!({ "from": "running", "to": "completed" }));
    let deleted = bodies.last().unwrap();
    assert_eq!((deleted["event"].as_str(), deleted["session"]["status"].as_str()), (Some("session.deleted"), Some("terminated")));
    assert!(deleted["timestamp"].as_str().unwrap().ends_with('Z'));

    let metrics = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("agentbox_webhook_deliveries_total{outcome=\"delivered\"} 6"), "{metrics}");
    assert!(metrics.contains("agentbox_webhook_deliveries_total{outcome=\"failed_attempt\"} 2"), "{metrics}");

    // A rotated secret signs what is sent from then on.
    let me = server.get("/v1/users/me").await.body["user_id"].as_str().unwrap().to_owned();
    let (ok, out, err) = server.cli(&["users", "rotate-webhook-secret", &me]);
    assert!(ok, "{err}");
    let rotated: Value = serde_json::from_str(out.trim()).unwrap();
    let new_secret = rotated["webhook_secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let r = server.post("/v1/sessions", &json!({ "webhook_url": receiver.base }).to_string()).await;
    let second = r.body["session_id"].as_str().unwrap().to_owned();
    settled(&server, &second, 1).await;
    let (headers, body) = receiver.requests().pop().unwrap();
    assert!(verify(&new_secret, &headers, &body) && !verify(&secret, &headers, &body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_target_is_refused_by_default_and_a_silent_receiver_times_out() {
    let receiver = Receiver::on_port_0(&[], false).await;
    let server = Server::start(&["--pool-size", "0"]).await;
    let r = server.post("/v1/sessions", &json!({ "webhook_url": receiver.base }).to_string()).await;
    let sid = r.body["session_id"].as_str().unwrap().to_owned();
    let log = settled(&server, &sid, 1).await;
    assert_eq!(log[0]["state"], "refused");
    assert_eq!(log[0]["attempts"], 0);
    let why = log[0]["last_error"].as_str().unwrap();
    assert!(why.contains("127.0.0.1") && why.contains("private") && why.contains("webhook_allow_private"), "{why}");
    assert!(receiver.requests().is_empty(), "nothing was sent");
    drop(server);

    let silent = Receiver::on_port_0(&[], true).await;
    let flags = ["--pool-size", "0", "--webhook-allow-private", "true", "--webhook-retry-schedule", "100ms", "--webhook-timeout", "300ms"];
    let server = Server::start(&flags).await;
    let r = server.post("/v1/sessions", &json!({ "webhook_url": silent.base }).to_string()).await;
    let sid = r.body["session_id"].as_str().unwrap().to_owned();
    let log = settled(&server, &sid, 1).await;
    assert_eq!((log[0]["state"].as_str(), log[0]["attempts"].as_u64()), (Some("failed"), Some(2)));
    assert!(log[0]["last_error"].as_str().unwrap().contains("no answer within 300ms"), "{log:#?}");
    assert_eq!(silent.requests().len(), 2);
    server.get(&format!("/v1/sessions/{sid}/webhook_deliveries")).await;
    let other = server.new_user("trudy");
    let r = server.call(reqwest::Method::GET, &format!("/v1/sessions/{sid}/webhook_deliveries"), other["api_key"].as_str(), None).await;
    r.assert_error(404, "not_found", "session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_while_the_receiver_is_down_survive_a_server_kill_and_are_all_delivered() {
    // Reserve a port, then close it: the receiver is down.
    let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let schedule = vec!["200ms"; 200].join(",");
    let flags = ["--pool-size", "1", "--webhook-allow-private", "true", "--webhook-retry-schedule", schedule.as_str()];
    let mut server = Server::start(&flags).await;
    let r = server.post("/v1/sessions", &json!({ "webhook_url": url }).to_string()).await;
    let sid = r.body["session_id"].as_str().unwrap().to_owned();
    let (status, _) = server.run_task(&sid, "what is the page title").await;
    assert_eq!(status, "finished");
    let before = eventually("a failed attempt", Duration::from_secs(20), || async {
        let d = deliveries(&server, &sid).await;
        (d.len() == 5 && d[0]["attempts"].as_u64() >= Some(1)).then_some(d)
    })
    .await;
    assert!(before.iter().all(|e| e["state"] == "pending"), "{before:#?}");

    server.kill9();
    let receiver = Receiver::start(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap(), &[], false).await;
    let restarted = Server::restart_in(&server.data_dir, &flags);
    let after = settled(&restarted, &sid, 5).await;
    assert!(after[..5].iter().all(|e| e["state"] == "delivered"), "{after:#?}");
    let want: Vec<&str> = before.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut got: Vec<String> = Vec::new();
    for (h, _) in receiver.requests() {
        let id = h["webhook-id"].to_str().unwrap().to_owned();
        if !got.contains(&id) {
            got.push(id);
        }
    }
    assert_eq!(&got[..5], &want[..], "every event written before the kill arrived, in order");
}
