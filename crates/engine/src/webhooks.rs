//! Webhooks: events rendered when they happen and written to the store's outbox in the same
//! transaction as the change they report; a worker delivers them.
//!
//! The worker is a driver (`run_worker`) around [`Engine::deliver_webhooks_once`]: each
//! pass leases the oldest due event of every session (so a session's events go out in
//! order: N+1 waits until N is delivered or given up), sends them concurrently, and records
//! each attempt. A server killed at any moment leaves the outbox as it was; the next start
//! voids old leases and delivers the rest, so a receiver may see an event twice (same
//! `webhook-id`) but never misses one. Requests are signed the Standard Webhooks way with
//! the user's `whsec_` secret. Targets are resolved at delivery time and private,
//! loopback, link-local and unspecified addresses are refused unless allowed; the request
//! goes to the address that was checked, and redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use agentbox_store::{MessageRecord, NewWebhookEvent, WebhookAttempt, WebhookEventRecord, WebhookState};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{Notify, watch};

use crate::engine::{Engine, SessionView};
use crate::metrics::Metrics;
use crate::time::{iso8601, now_ms};

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Waits between attempts; after the last one fails the event is given up
    /// (so `schedule.len() + 1` attempts).
    pub schedule: Vec<Duration>,
    /// A receiver that has not answered in this long has failed the attempt.
    pub timeout: Duration,
    /// Deliver to loopback, private and link-local addresses (off by default).
    pub allow_private: bool,
    /// How often the worker looks for due events (it is also woken when one is written).
    pub poll: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self { schedule: vec![s(5), s(30), s(120), s(600), s(1800), s(3600)], timeout: s(10), allow_private: false, poll: s(1) }
    }
}

/// The session object as the API shows it (the same shape as `GET /v1/sessions/{id}`).
pub fn session_json(v: &SessionView) -> Value {
    let r = &v.record;
    let mut out = json!({
        "session_id": r.id.to_string(),
        "vnc_url": v.vnc_url,
        "agent_name": r.agent_name,
        "status": r.status.as_str(),
        "created_at": iso8601(r.created_at_ms),
        "environment_id": r.environment_id.to_string(),
        "goal": r.goal,
        "agent_session_type": r.agent_session_type,
        "cdp_url": v.cdp_url,
        "restored_from": r.restored_from,
        "max_steps": r.max_steps,
    });
    if let Some(reason) = &r.status_reason {
        out["status_reason"] = json!(reason);
    }
    out
}

/// A message as the API shows it.
pub fn message_json(m: &MessageRecord) -> Value {
    json!({ "id": m.id, "type": m.kind.as_str(), "content": m.content, "timestamp": iso8601(m.created_at_ms), "metadata": m.metadata })
}

/// Renders one event for the outbox, or nothing when the session has no webhook URL.
pub(crate) fn event(view: &SessionView, name: &str, data: Value) -> Option<NewWebhookEvent> {
    let url = view.record.webhook_url.clone()?;
    let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let body = json!({ "id": id, "event": name, "timestamp": iso8601(now_ms()), "session": session_json(view), "data": data });
    Some(NewWebhookEvent { id, session_id: view.record.id, user_id: view.record.user_id, url, event: name.to_owned(), body: body.to_string() })
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with the secret after `whsec_`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// Addresses a webhook may not reach unless private targets are allowed.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.is_loopback() || a.is_private() || a.is_link_local() || a.is_unspecified() || a.is_broadcast() || a.is_multicast()
                || a.octets()[0] == 0
                || (a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let seg = a.segments()[0];
            a.is_loopback() || a.is_unspecified() || a.is_multicast() || (seg & 0xfe00) == 0xfc00 || (seg & 0xffc0) == 0xfe80
        }
    }
}

/// Why an attempt failed, or that it succeeded.
enum Sent {
    Delivered(u16),
    Failed { status: Option<u16>, error: String },
    Refused(String),
}

impl Engine {
    /// One worker pass: delivers every due event (the oldest pending one per session).
    /// Returns how many were attempted. Tests call it directly; the worker loops on it.
    pub async fn deliver_webhooks_once(&self) -> usize {
        let cfg = &self.config().webhooks;
        let now = now_ms();
        let lease = now + (cfg.timeout.as_millis() as i64) * 2 + 5_000;
        let due = match self.store().claim_webhooks(now, lease, 64).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "could not read the webhook outbox");
                return 0;
            }
        };
        let n = due.len();
        let attempts = due.into_iter().map(|(ev, secret)| async move {
            let sent = deliver(cfg, &ev, &secret).await;
            let result = self.attempt_result(cfg, &ev, sent);
            if let Err(e) = self.store().finish_webhook_attempt(&ev.id, result, now_ms()).await {
                tracing::error!(event = %ev.id, error = %e, "could not record a webhook attempt");
            }
        });
        futures_util::future::join_all(attempts).await;
        n
    }

    fn attempt_result(&self, cfg: &WebhookConfig, ev: &WebhookEventRecord, sent: Sent) -> WebhookAttempt {
        let m = self.metrics();
        let now = now_ms();
        match sent {
            Sent::Delivered(status) => {
                Metrics::count(&m.webhooks_delivered);
                WebhookAttempt { state: WebhookState::Delivered, status: Some(status), error: None, next_attempt_at_ms: now, counted: true }
            }
            Sent::Refused(reason) => {
                Metrics::count(&m.webhooks_refused);
                tracing::warn!(event = %ev.id, session_id = %ev.session_id, %reason, "webhook target refused");
                WebhookAttempt { state: WebhookState::Refused, status: None, error: Some(reason), next_attempt_at_ms: now, counted: false }
            }
            Sent::Failed { status, error } => {
                Metrics::count(&m.webhooks_failed_attempts);
                let made = ev.attempts as usize + 1;
                match cfg.schedule.get(made - 1) {
                    Some(wait) => {
                        let wait = jitter(*wait);
                        WebhookAttempt {
                            state: WebhookState::Pending,
                            status,
                            error: Some(error),
                            next_attempt_at_ms: now + wait.as_millis() as i64,
                            counted: true,
                        }
                    }
                    None => {
                        Metrics::count(&m.webhooks_given_up);
                        tracing::warn!(event = %ev.id, session_id = %ev.session_id, attempts = made, "webhook given up");
                        WebhookAttempt { state: WebhookState::Failed, status, error: Some(error), next_attempt_at_ms: now, counted: true }
                    }
                }
            }
        }
    }
}

/// Up to +20 % so that retries of many events do not arrive together.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 1];
    let _ = getrandom::fill(&mut b);
    d.mul_f64(1.0 + b[0] as f64 / 255.0 * 0.2)
}

async fn deliver(cfg: &WebhookConfig, ev: &WebhookEventRecord, secret: &str) -> Sent {
    let Ok(url) = url::Url::parse(&ev.url) else { return Sent::Refused("the webhook_url is not a URL".into()) };
    let Some(host) = url.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned()) else {
        return Sent::Refused("the webhook_url has no host".into());
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(a) => a.collect(),
        Err(e) => return Sent::Failed { status: None, error: format!("cannot resolve {host}: {e}") },
    };
    let Some(addr) = addrs.first().copied() else { return Sent::Failed { status: None, error: format!("{host} resolves to no address") } };
    if !cfg.allow_private
        && let Some(bad) = addrs.iter().find(|a| is_private(a.ip())) {
            return Sent::Refused(format!(
                "{host} resolves to {}, a private, loopback or link-local address; set webhook_allow_private to deliver there",
                bad.ip()
            ));
        }
    // Connect to the address that was checked, not to a second lookup's answer.
    let client = match reqwest::Client::builder()
        .resolve(&host, addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(cfg.timeout)
        .user_agent(concat!("agentbox-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Sent::Failed { status: None, error: format!("cannot build the HTTP client: {e}") },
    };
    let ts = now_ms() / 1000;
    let Some(signature) = sign(secret, &ev.id, ts, &ev.body) else {
        return Sent::Refused("the user's webhook secret is not valid base64; rotate it".into());
    };
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &ev.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(ev.body.clone())
        .send()
        .await;
    match resp {
        Ok(r) if r.status().is_success() => Sent::Delivered(r.status().as_u16()),
        Ok(r) => Sent::Failed { status: Some(r.status().as_u16()), error: format!("the receiver answered {}", r.status()) },
        Err(e) if e.is_timeout() => Sent::Failed { status: None, error: format!("no answer within {:?}", cfg.timeout) },
        Err(e) => Sent::Failed { status: None, error: format!("could not deliver: {}", e.without_url()) },
    }
}

/// The worker: a pass every `poll`, or at once when an event is written.
pub(crate) async fn run_worker(engine: std::sync::Weak<Engine>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>, poll: Duration) {
    loop {
        let Some(e) = engine.upgrade() else { return };
        let n = e.deliver_webhooks_once().await;
        drop(e);
        if n > 0 {
            continue; // more may be due behind the ones just sent
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let sig = sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, r#"{"test": 2432232314}"#);
        assert_eq!(sig.as_deref(), Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
    }

    #[test]
    fn private_loopback_and_link_local_addresses_are_private() {
        for ip in ["127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.5.4", "169.254.169.254", "0.0.0.0", "100.64.0.1", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1"] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
