//! Black-box API tests: the real `agentbox` binary, real Chromium, a real SQLite file and
//! real HTTP on 127.0.0.1. One test binary; modules by theme.

mod agent;
mod cdp;
mod errors;
mod events;
mod live;
mod llm;
mod planners;
mod recovery;
mod sdk;
mod sessions;
mod snapshots;
mod support;
mod webhooks;
