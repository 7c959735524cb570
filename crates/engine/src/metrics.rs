//! Counters and gauges the engine keeps for `/metrics`. Plain atomics: updated on the
//! paths that change them, read when scraped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The engine's counters. Shared by every session's control and the server.
#[derive(Debug, Default)]
pub struct Metrics {
    pub tasks_started: AtomicU64,
    pub tasks_finished: AtomicU64,
    pub tasks_failed: AtomicU64,
    pub tasks_cancelled: AtomicU64,
    pub webhooks_delivered: AtomicU64,
    /// Attempts that failed and will be retried or given up.
    pub webhooks_failed_attempts: AtomicU64,
    pub webhooks_given_up: AtomicU64,
    pub webhooks_refused: AtomicU64,
    /// Live-view frames received from Chromium (none while nobody watches).
    pub screencast_frames: AtomicU64,
    pub sse_subscribers: Arc<AtomicU64>,
    /// Snapshots written: by a delete with `filesystem`, with `memory`, or by `POST …/snapshot`.
    pub snapshots_filesystem: AtomicU64,
    pub snapshots_memory: AtomicU64,
    pub snapshots_live: AtomicU64,
    /// Sessions restored from a parked browser, from an archive; archives refused as damaged.
    pub restores_memory: AtomicU64,
    pub restores_filesystem: AtomicU64,
    pub restores_damaged: AtomicU64,
    /// Parked browsers closed before use (evicted or expired).
    pub parked_evicted: AtomicU64,
}

impl Metrics {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an SSE subscriber for as long as the guard lives.
    pub fn sse_subscriber(&self) -> SubscriberGuard {
        self.sse_subscribers.fetch_add(1, Ordering::Relaxed);
        SubscriberGuard(self.sse_subscribers.clone())
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Decrements the SSE subscriber gauge when the stream ends.
#[derive(Debug)]
pub struct SubscriberGuard(Arc<AtomicU64>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
