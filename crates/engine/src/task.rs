//! A session's task: its execution state machine ([`Control`]) and the agent loop that
//! works the browser step by step.
//!
//! Ownership and threads: every session has one [`Control`], shared by its actor, the
//! engine's request handlers and the agent task. All state changes go through the
//! control's async mutex and are written to the store (status and messages in one
//! transaction) before the lock is released, so the log and the status never disagree and
//! a request sees its own change on return. The agent task is spawned and owned by the
//! control: a new task, a cancel, the browser's death or the session's end abort it, and
//! [`Control::close`] joins it. Each task has an id; the agent's writes carry it and are
//! refused once the task is superseded, so a cancelled agent can never write again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentbox_browser::cdp::Connection;
use agentbox_browser::{Observation, ObserveOptions, Page, PageError, list_tabs};
use agentbox_store::{ExecutionStatus, MessageRecord, MessageType, NewMessage, Store, StoreError, Transition};
use serde_json::{Value, json};
use tokio::sync::{MutexGuard, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::agent::{Action, Outcome, PlanInput, Planner, Usage};
use crate::config::AgentSpec;
use crate::engine::SessionView;
use crate::error::{ActionError, ControlError};
use crate::metrics::Metrics;
use crate::time::now_ms;

/// The tabs of a session's browser and which one is current. Shared by the agent (which
/// follows new tabs and switches) and the actor (navigate and screenshot act on the current one).
pub(crate) struct Tabs {
    conn: Arc<Connection>,
    viewport: (u32, u32),
    current: Mutex<Page>,
    attached: Mutex<HashMap<String, Page>>,
    /// The current tab's target id, for followers (the live view).
    changed: watch::Sender<String>,
}

impl Tabs {
    pub fn new(first: Page) -> Self {
        let attached = HashMap::from([(first.target_id().to_owned(), first.clone())]);
        let changed = watch::channel(first.target_id().to_owned()).0;
        Self { conn: first.connection().clone(), viewport: first.viewport(), current: Mutex::new(first), attached: Mutex::new(attached), changed }
    }

    /// Turns to the new tab's target id whenever the current tab changes.
    pub fn watch_current(&self) -> watch::Receiver<String> {
        self.changed.subscribe()
    }

    pub fn viewport(&self) -> (u32, u32) {
        self.viewport
    }

    pub fn current(&self) -> Page {
        self.current.lock().expect("tabs lock").clone()
    }

    fn conn_ref(&self) -> &Arc<Connection> {
        &self.conn
    }

    /// Makes a tab current, attaching to it the first time.
    async fn switch_to(&self, target_id: &str) -> Result<Page, PageError> {
        let known = self.attached.lock().expect("tabs lock").get(target_id).cloned();
        let page = match known {
            Some(p) => p,
            None => {
                let p = Page::attach(&self.conn, target_id.to_owned(), self.viewport).await?;
                self.attached.lock().expect("tabs lock").insert(target_id.to_owned(), p.clone());
                p
            }
        };
        let _ = self.conn.call("Target.activateTarget", json!({ "targetId": target_id }), None).await;
        *self.current.lock().expect("tabs lock") = page.clone();
        self.changed.send_replace(target_id.to_owned());
        Ok(page)
    }
}

/// The mutable part of a session's execution state. Only touched under [`Control`]'s lock.
pub(crate) struct State {
    pub exec: ExecutionStatus,
    /// While paused: the status to go back to on resume.
    paused_from: Option<ExecutionStatus>,
    /// The id of the current (or last) task; 0 before the first.
    task: u64,
    /// User messages for the agent's next step.
    inbox: Vec<String>,
    /// The answer to the agent's question, once the user gave it.
    answer: Option<String>,
    /// The browser died: the session takes no more tasks.
    dead: bool,
    /// The id of the last message written (every write of a live session comes here).
    last_id: i64,
    /// The session as the API shows it now, for webhook bodies.
    view: SessionView,
}

/// What the agent needs besides the control.
pub(crate) struct AgentEnv {
    /// Wakes the webhook worker when an event is written.
    pub webhooks: Arc<tokio::sync::Notify>,
    pub tabs: Arc<Tabs>,
    pub spec: AgentSpec,
    pub http: reqwest::Client,
    pub metrics: Arc<Metrics>,
    pub navigation_timeout: Duration,
    pub task_timeout: Duration,
    pub screenshot_quality: u8,
}

/// A session's execution state machine and the owner of its agent task.
pub(crate) struct Control {
    id: Uuid,
    store: Arc<dyn Store>,
    state: tokio::sync::Mutex<State>,
    /// Bumped after every change; the agent waits on it while paused or asking.
    bump: watch::Sender<u64>,
    /// A copy of `state.exec` readable without the async lock (the idle reaper).
    exec_now: Mutex<ExecutionStatus>,
    max_steps: AtomicU32,
    agent: Mutex<Option<JoinHandle<()>>>,
    env: Arc<AgentEnv>,
    /// Every message as it is written, in id order, for live followers (SSE). Bounded:
    /// a follower that falls behind by more than this many messages is dropped and resumes
    /// from the log.
    live: tokio::sync::broadcast::Sender<MessageRecord>,
    /// Set when the session ends: proxied DevTools connections close.
    ended: watch::Sender<bool>,
    /// The live view's hub and its screencast task (aborted on close).
    pub hub: Arc<crate::live::LiveHub>,
    screencast: Mutex<Option<JoinHandle<()>>>,
}

/// How many messages a live follower may fall behind before it is dropped.
pub const LIVE_BUFFER: usize = 1024;

/// Why the agent loop stopped without ending its task itself.
enum Stop {
    /// Cancelled, replaced by a newer task, or the browser died: someone else wrote the end.
    Superseded,
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

impl Control {
    pub fn new(view: SessionView, store: Arc<dyn Store>, env: AgentEnv) -> Arc<Self> {
        let (id, max_steps) = (view.record.id, view.record.max_steps);
        let live = crate::live::LiveHub::new(env.metrics.clone());
        let screencast = tokio::spawn(crate::live::run_screencast(live.clone(), env.tabs.clone()));
        let state =
            State { exec: ExecutionStatus::Ready, paused_from: None, task: 0, inbox: Vec::new(), answer: None, dead: false, last_id: 0, view };
        Arc::new(Self {
            id,
            store,
            state: tokio::sync::Mutex::new(state),
            bump: watch::channel(0).0,
            exec_now: Mutex::new(ExecutionStatus::Ready),
            max_steps: AtomicU32::new(max_steps),
            agent: Mutex::new(None),
            env: Arc::new(env),
            live: tokio::sync::broadcast::channel(LIVE_BUFFER).0,
            ended: watch::channel(false).0,
            hub: live,
            screencast: Mutex::new(Some(screencast)),
        })
    }

    pub fn tabs(&self) -> &Arc<Tabs> {
        &self.env.tabs
    }

    /// Turns true when the session ends.
    pub fn ended(&self) -> watch::Receiver<bool> {
        self.ended.subscribe()
    }

    /// Follows the messages written from now on.
    pub fn follow(&self) -> tokio::sync::broadcast::Receiver<MessageRecord> {
        self.live.subscribe()
    }

    pub fn exec_now(&self) -> ExecutionStatus {
        *self.exec_now.lock().expect("exec lock")
    }

    /// Writes a status change (if any), messages and the webhook events they make in one
    /// transaction, then applies the change to `st`.
    async fn commit(&self, st: &mut MutexGuard<'_, State>, to: Option<(ExecutionStatus, Option<String>)>, messages: Vec<NewMessage>) -> Result<Vec<MessageRecord>, StoreError> {
        let now = now_ms();
        let mut view = st.view.clone();
        if let Some((status, reason)) = &to {
            view.record.execution_status = *status;
            view.record.status = status.session_status();
            view.record.status_reason = reason.clone();
            view.record.updated_at_ms = now;
        }
        let outbox = if view.record.webhook_url.is_some() { self.webhook_events(st, &view, to.as_ref().map(|t| t.0), &messages, now) } else { Vec::new() };
        let wake = !outbox.is_empty();
        let transition = to.as_ref().map(|(status, reason)| Transition { status: *status, reason: reason.clone() });
        let written = self.store.record(self.id, transition, messages, outbox, now).await?;
        if wake {
            self.env.webhooks.notify_one();
        }
        st.view = view;
        if let Some(last) = written.last() {
            st.last_id = last.id;
        }
        if let Some((status, _)) = to {
            st.exec = status;
            *self.exec_now.lock().expect("exec lock") = status;
        }
        // Sent under the state lock: followers see messages in id order.
        for m in &written {
            let _ = self.live.send(m.clone());
        }
        self.bump.send_modify(|n| *n += 1);
        Ok(written)
    }

    /// A user message: starts a task, answers the agent's question, or adds context
    /// (API.md §2). `max_steps` from `config_updates` applies from the next step on.
    pub async fn message(self: &Arc<Self>, text: String, start_url: Option<String>, max_steps: Option<u32>) -> Result<(), ActionError> {
        let mut st = self.state.lock().await;
        if st.dead {
            return Err(ActionError::BrowserGone(crate::session::BROWSER_DIED.into()));
        }
        if let Some(n) = max_steps {
            self.store.set_max_steps(self.id, n, now_ms()).await?;
            self.max_steps.store(n, Ordering::Relaxed);
            st.view.record.max_steps = n;
        }
        let user = NewMessage::text(MessageType::User, text.clone());
        match st.exec {
            ExecutionStatus::WaitingForInput => {
                self.commit(&mut st, Some((ExecutionStatus::Running, None)), vec![user]).await?;
                st.answer = Some(text);
            }
            ExecutionStatus::Paused if st.paused_from == Some(ExecutionStatus::WaitingForInput) => {
                self.commit(&mut st, None, vec![user]).await?;
                st.answer = Some(text);
                st.paused_from = Some(ExecutionStatus::Running);
            }
            ExecutionStatus::Running | ExecutionStatus::Paused => {
                self.commit(&mut st, None, vec![user]).await?;
                st.inbox.push(text);
            }
            ExecutionStatus::Ready | ExecutionStatus::Finished | ExecutionStatus::Error => {
                let planner = Planner::new(&self.env.spec, &text, &self.env.http);
                st.task += 1;
                st.inbox.clear();
                st.answer = None;
                st.paused_from = None;
                let mut log = vec![user];
                if let Some(u) = &start_url {
                    log.push(NewMessage::text(MessageType::Log, format!("task started; opening {u} first")));
                }
                self.commit(&mut st, Some((ExecutionStatus::Running, None)), log).await?;
                Metrics::count(&self.env.metrics.tasks_started);
                match planner {
                    Err(e) => {
                        Metrics::count(&self.env.metrics.tasks_failed);
                        let reason = e.to_string();
                        self.commit(&mut st, Some((ExecutionStatus::Error, Some(reason.clone()))), vec![NewMessage::text(MessageType::Error, reason)])
                            .await?;
                    }
                    Ok(planner) => {
                        let run = AgentRun { ctl: self.clone(), task: st.task, text, start_url, planner, usage: Usage::default() };
                        let old = self.agent.lock().expect("agent lock").replace(tokio::spawn(run.run()));
                        if let Some(old) = old {
                            old.abort();
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The webhook events a commit makes (API.md §5): task events for the messages that
    /// start, question, complete, fail or cancel a task, then `session.status_changed`.
    fn webhook_events(&self, st: &State, view: &SessionView, to: Option<ExecutionStatus>, messages: &[NewMessage], now: i64) -> Vec<agentbox_store::NewWebhookEvent> {
        use crate::webhooks::{event, message_json};
        let old = st.exec;
        // Ids are given under this lock, so the next ones are known.
        let records: Vec<MessageRecord> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| MessageRecord {
                session_id: self.id,
                id: st.last_id + 1 + i as i64,
                kind: m.kind,
                content: m.content.clone(),
                metadata: m.metadata.clone(),
                created_at_ms: now,
            })
            .collect();
        let mut out = Vec::new();
        let data = |m: &MessageRecord| json!({ "message": message_json(m) });
        if to == Some(ExecutionStatus::Running) && !old.task_active() {
            let started = records.iter().find(|m| m.kind == MessageType::User).map(data).unwrap_or_else(|| json!({}));
            out.extend(event(view, "task.started", started));
        }
        for m in &records {
            let name = match m.kind {
                MessageType::Question => Some("task.question"),
                MessageType::Done => Some("task.completed"),
                MessageType::Error if to == Some(ExecutionStatus::Error) && old.task_active() => Some("task.failed"),
                MessageType::Log if m.metadata["event"] == "cancelled" => Some("task.cancelled"),
                _ => None,
            };
            if let Some(name) = name {
                out.extend(event(view, name, data(m)));
            }
        }
        if let Some(new) = to.filter(|n| n.session_status() != old.session_status()) {
            let change = json!({ "from": old.session_status().as_str(), "to": new.session_status().as_str() });
            out.extend(event(view, "session.status_changed", change));
        }
        out
    }

    /// Pauses the task; `by` (`api`, `live_view`) is kept in the log entry's metadata.
    pub async fn pause(&self, by: &str) -> Result<(), ControlError> {
        let mut st = self.state.lock().await;
        match st.exec {
            ExecutionStatus::Paused => Err(ControlError::AlreadyPaused),
            from @ (ExecutionStatus::Running | ExecutionStatus::WaitingForInput) => {
                let log = NewMessage::text(MessageType::Log, "task paused by the user").with_metadata(json!({ "event": "paused", "by": by }));
                self.commit(&mut st, Some((ExecutionStatus::Paused, None)), vec![log]).await?;
                st.paused_from = Some(from);
                Ok(())
            }
            _ => Err(ControlError::NoTaskRunning),
        }
    }

    pub async fn resume(&self, by: &str) -> Result<(), ControlError> {
        let mut st = self.state.lock().await;
        if st.exec != ExecutionStatus::Paused {
            return Err(ControlError::NotPaused);
        }
        let to = st.paused_from.take().unwrap_or(ExecutionStatus::Running);
        // An answer that came while paused means the question is settled.
        let to = if to == ExecutionStatus::WaitingForInput && st.answer.is_some() { ExecutionStatus::Running } else { to };
        let log = NewMessage::text(MessageType::Log, "task resumed by the user").with_metadata(json!({ "event": "resumed", "by": by }));
        self.commit(&mut st, Some((to, None)), vec![log]).await?;
        Ok(())
    }

    /// Ends the current task; the session stays usable (status `finished`).
    pub async fn cancel(&self) -> Result<(), ControlError> {
        let mut st = self.state.lock().await;
        if !st.exec.task_active() {
            return Err(ControlError::NoTaskRunning);
        }
        st.task += 1;
        let log = NewMessage::text(MessageType::Log, "task cancelled by the user").with_metadata(json!({ "event": "cancelled" }));
        self.commit(&mut st, Some((ExecutionStatus::Finished, None)), vec![log]).await?;
        Metrics::count(&self.env.metrics.tasks_cancelled);
        drop(st);
        self.abort_agent();
        Ok(())
    }

    /// The browser died: the task (if any) ends, the session is `error` for good.
    pub async fn browser_died(&self, reason: &str) {
        let mut st = self.state.lock().await;
        st.dead = true;
        st.task += 1;
        if st.exec.task_active() {
            Metrics::count(&self.env.metrics.tasks_failed);
        }
        let msg = NewMessage::text(MessageType::Error, reason);
        if let Err(e) = self.commit(&mut st, Some((ExecutionStatus::Error, Some(reason.to_owned()))), vec![msg]).await {
            tracing::error!(session_id = %self.id, error = %e, "could not record the browser's death");
        }
        drop(st);
        self.abort_agent();
    }

    /// The server is stopping: the session ends in `error` saying so (after `close`).
    pub async fn stopped_by_server(&self, reason: &str) {
        let mut st = self.state.lock().await;
        let msg = NewMessage::text(MessageType::Error, reason);
        if let Err(e) = self.commit(&mut st, Some((ExecutionStatus::Error, Some(reason.to_owned()))), vec![msg]).await {
            tracing::error!(session_id = %self.id, error = %e, "could not record a session's end at shutdown");
        }
    }

    /// The session as the API shows it now.
    pub async fn view(&self) -> SessionView {
        self.state.lock().await.view.clone()
    }

    /// The session ends: stops the agent and waits for it to be gone.
    pub async fn close(&self) {
        let _ = self.ended.send(true);
        let screencast = self.screencast.lock().expect("screencast lock").take();
        if let Some(s) = screencast {
            s.abort();
            let _ = s.await;
        }
        {
            let mut st = self.state.lock().await;
            st.task += 1;
            st.dead = true;
        }
        let handle = self.agent.lock().expect("agent lock").take();
        if let Some(h) = handle {
            h.abort();
            let _ = h.await;
        }
    }

    fn abort_agent(&self) {
        if let Some(h) = self.agent.lock().expect("agent lock").as_ref() {
            h.abort();
        }
    }
}

/// One task's agent loop.
struct AgentRun {
    ctl: Arc<Control>,
    task: u64,
    text: String,
    start_url: Option<String>,
    planner: Planner,
    usage: Usage,
}

impl AgentRun {
    #[tracing::instrument(skip_all, fields(session_id = %self.ctl.id, task = self.task))]
    async fn run(mut self) {
        match self.steps().await {
            Ok(()) | Err(Stop::Superseded) => {}
            Err(Stop::Store(e)) => tracing::error!(error = %e, "the agent could not record its progress; its task stops"),
        }
    }

    /// Locks the state if this task is still the current one.
    async fn lock(&self) -> Result<MutexGuard<'_, State>, Stop> {
        let st = self.ctl.state.lock().await;
        if st.task != self.task || st.dead { Err(Stop::Superseded) } else { Ok(st) }
    }

    async fn record(&self, to: Option<(ExecutionStatus, Option<String>)>, messages: Vec<NewMessage>) -> Result<(), Stop> {
        let mut st = self.lock().await?;
        let ended = to.as_ref().map(|(s, _)| *s);
        self.ctl.commit(&mut st, to, messages).await?;
        match ended {
            Some(ExecutionStatus::Finished) => Metrics::count(&self.ctl.env.metrics.tasks_finished),
            Some(ExecutionStatus::Error) => Metrics::count(&self.ctl.env.metrics.tasks_failed),
            _ => {}
        }
        Ok(())
    }

    async fn fail(&self, reason: String, metadata: Value) -> Result<(), Stop> {
        // A browser that went away fails the task through the session's actor, which watches
        // the same socket; its words ("exited unexpectedly") are the ones the user should see.
        if self.ctl.env.tabs.conn_ref().is_closed() {
            return Err(Stop::Superseded);
        }
        let msg = NewMessage::text(MessageType::Error, reason.clone()).with_metadata(metadata);
        self.record(Some((ExecutionStatus::Error, Some(reason))), vec![msg]).await
    }

    /// Returns once the task may run (not paused); `Superseded` if it ended meanwhile.
    async fn runnable(&self) -> Result<(), Stop> {
        loop {
            let mut changed = self.ctl.bump.subscribe();
            {
                let st = self.lock().await?;
                match st.exec {
                    ExecutionStatus::Running => return Ok(()),
                    ExecutionStatus::Paused | ExecutionStatus::WaitingForInput => {}
                    _ => return Err(Stop::Superseded),
                }
            }
            if changed.changed().await.is_err() {
                return Err(Stop::Superseded);
            }
        }
    }

    async fn answer(&self) -> Result<String, Stop> {
        loop {
            let mut changed = self.ctl.bump.subscribe();
            {
                let mut st = self.lock().await?;
                if let Some(a) = st.answer.take() {
                    return Ok(a);
                }
            }
            if changed.changed().await.is_err() {
                return Err(Stop::Superseded);
            }
        }
    }

    async fn steps(&mut self) -> Result<(), Stop> {
        let env = self.ctl.env.clone();
        if let Some(url) = self.start_url.clone()
            && let Err(e) = env.tabs.current().navigate(&url, env.navigation_timeout).await {
                return self.fail(format!("could not open start_url: {e}"), json!({})).await;
            }
        let mut active = Duration::ZERO;
        let mut outcome: Option<Outcome> = None;
        let mut step: u32 = 0;
        loop {
            self.runnable().await?;
            let slice = Instant::now();
            let max = self.ctl.max_steps.load(Ordering::Relaxed);
            if step >= max {
                let reason = format!(
                    "the task reached max_steps ({max}) before it was done; send a message to go on, with config_updates {{\"max_steps\": n}} to allow more"
                );
                return self.fail(reason, json!({ "limit": "max_steps", "max_steps": max })).await;
            }
            if active >= env.task_timeout {
                let reason = format!("the task ran for longer than its time limit ({} s) and was stopped", env.task_timeout.as_secs());
                return self.fail(reason, json!({ "limit": "task_timeout" })).await;
            }
            step += 1;
            let user_messages = std::mem::take(&mut self.lock().await?.inbox);

            let page = env.tabs.current();
            let t = Instant::now();
            let opts = ObserveOptions {
                max_text: env.spec.max_text,
                screenshot_quality: self.planner.wants_screenshot().then_some(env.screenshot_quality.min(70)),
            };
            let obs = match page.observe(opts).await {
                Ok(o) => o,
                Err(e) => {
                    // The page closed its own tab: go on in another one.
                    if let Some(other) = another_tab(&env, page.target_id()).await {
                        outcome = Some(Outcome::ok(format!("the page closed its tab; the tab at {other} is now current")));
                        step -= 1;
                        active += slice.elapsed();
                        continue;
                    }
                    return self.fail(format!("could not read the page: {e}"), json!({ "step": step })).await;
                }
            };
            let observe_ms = ms(t);

            let t = Instant::now();
            let input = PlanInput { task: &self.text, step, observation: &obs, outcome: outcome.as_ref(), user_messages: &user_messages };
            let decision = self.planner.next(&input).await;
            let plan_ms = ms(t);
            let d = match decision {
                Ok(d) => d,
                Err(e) => return self.fail(e.to_string(), json!({ "step": step, "timings": { "observe_ms": observe_ms, "plan_ms": plan_ms } })).await,
            };
            self.usage.input_tokens += d.usage.input_tokens;
            self.usage.output_tokens += d.usage.output_tokens;
            let mut meta = json!({
                "step": step,
                "action": d.action.to_json(),
                "url": obs.url,
                "usage": { "input_tokens": d.usage.input_tokens, "output_tokens": d.usage.output_tokens,
                           "task_input_tokens": self.usage.input_tokens, "task_output_tokens": self.usage.output_tokens },
                "timings": { "observe_ms": observe_ms, "plan_ms": plan_ms },
                "agent": env.spec.name,
            });
            if d.repaired {
                meta["repaired"] = json!(true);
            }
            if d.attempts > 1 {
                meta["attempts"] = json!(d.attempts);
            }
            let thought = if d.thought.is_empty() { describe(&d.action) } else { d.thought.clone() };

            // Paused while planning: the action waits for resume, and the planner is told.
            if self.lock().await?.exec == ExecutionStatus::Paused {
                outcome = Some(Outcome::held("not run: the user paused the task before this action; the page may have changed since"));
                self.record(None, vec![NewMessage::text(MessageType::Log, format!("paused before: {thought}")).with_metadata(meta)]).await?;
                active += slice.elapsed();
                continue;
            }

            match d.action {
                Action::Done { result } => {
                    let mut log = Vec::new();
                    if !d.thought.is_empty() {
                        log.push(NewMessage::text(MessageType::Thought, d.thought.clone()).with_metadata(meta.clone()));
                    }
                    log.push(NewMessage { kind: MessageType::Done, content: result, metadata: meta });
                    return self.record(Some((ExecutionStatus::Finished, None)), log).await;
                }
                Action::Fail { reason } => {
                    let mut log = Vec::new();
                    if !d.thought.is_empty() && d.thought != format!("Stopping: {reason}") {
                        log.push(NewMessage::text(MessageType::Thought, d.thought.clone()).with_metadata(meta.clone()));
                    }
                    log.push(NewMessage::text(MessageType::Error, reason.clone()).with_metadata(meta));
                    return self.record(Some((ExecutionStatus::Error, Some(reason))), log).await;
                }
                Action::AskUser { question } => {
                    let msg = NewMessage::text(MessageType::Question, question).with_metadata(meta);
                    self.record(Some((ExecutionStatus::WaitingForInput, None)), vec![msg]).await?;
                    active += slice.elapsed();
                    let answer = self.answer().await?;
                    outcome = Some(Outcome::ok(format!("the user answered: {answer}")));
                    continue;
                }
                action => {
                    let t = Instant::now();
                    let (result, executed) = execute(&env, &page, &obs, &action).await;
                    meta["timings"]["act_ms"] = json!(ms(t));
                    meta["outcome"] = json!({ "ok": result.ok, "text": result.text });
                    let kind = if executed { MessageType::Thought } else { MessageType::Log };
                    let content = if executed { thought } else { format!("refused: {}", result.text) };
                    self.record(None, vec![NewMessage::text(kind, content).with_metadata(meta)]).await?;
                    outcome = Some(result);
                }
            }
            active += slice.elapsed();
        }
    }
}

/// When the tab `gone` no longer exists, makes the first open tab current and returns its URL.
async fn another_tab(env: &AgentEnv, gone: &str) -> Option<String> {
    let tabs = list_tabs(env.tabs.conn_ref()).await.ok()?;
    if tabs.iter().any(|t| t.target_id == gone) {
        return None;
    }
    let first = tabs.first()?;
    env.tabs.switch_to(&first.target_id).await.ok()?;
    Some(first.url.clone())
}

fn ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

fn describe(a: &Action) -> String {
    format!("{} {}", a.name(), a.to_json())
}

/// Runs one browser action. Returns its outcome and whether it ran at all (an unknown or
/// stale element number is refused before anything happens).
pub(crate) async fn execute(env: &AgentEnv, page: &Page, obs: &Observation, action: &Action) -> (Outcome, bool) {
    if let Some(i) = action.element()
        && i >= obs.elements.len() {
            let text = format!(
                "element {i} does not exist; this step listed elements 0 to {}",
                obs.elements.len().saturating_sub(1)
            );
            return (Outcome::refused(text), false);
        }
    let wait = env.navigation_timeout;
    let g = obs.generation;
    let tabs_before: Vec<String> = obs.tabs.iter().map(|t| t.target_id.clone()).collect();
    let result: Result<Outcome, PageError> = async {
        Ok(match action {
            Action::Navigate { url } => Outcome::ok(format!("now at {}", page.navigate(url, wait).await?)),
            Action::Click { element } => {
                page.click(g, *element, wait).await?;
                Outcome::ok("clicked")
            }
            Action::Type { element, text, submit } => {
                page.type_text(g, *element, text, *submit, wait).await?;
                Outcome::ok(if *submit { "typed and pressed Enter" } else { "typed" })
            }
            Action::Select { element, option } => Outcome::ok(format!("chose {:?}", page.select_option(g, *element, option).await?)),
            Action::PressKey { key } => {
                page.press_key(*key, wait).await?;
                Outcome::ok(format!("pressed {}", key.name()))
            }
            Action::Scroll { direction, pages } => match page.scroll(*direction, *pages).await? {
                (y, true) => Outcome::ok(format!("the page did not move (it is at {y}px already)")),
                (y, false) => Outcome::ok(format!("scrolled to {y}px")),
            },
            Action::Back => Outcome::ok(format!("now at {}", page.go_history(-1, wait).await?)),
            Action::Forward => Outcome::ok(format!("now at {}", page.go_history(1, wait).await?)),
            Action::SwitchTab { tab } => match obs.tabs.get(*tab) {
                Some(t) => {
                    env.tabs.switch_to(&t.target_id).await?;
                    Outcome::ok(format!("tab {tab} is now current: {}", t.url))
                }
                None => Outcome::refused(format!("there is no tab {tab}; this step listed {} tabs", obs.tabs.len())),
            },
            Action::Wait { seconds, text: Some(text) } => {
                if page.wait_for_text(text, Duration::from_secs_f64(*seconds)).await? {
                    Outcome::ok(format!("{text:?} is on the page"))
                } else {
                    Outcome::refused(format!("{text:?} did not appear within {seconds} s"))
                }
            }
            Action::Wait { seconds, text: None } => {
                tokio::time::sleep(Duration::from_secs_f64(*seconds)).await;
                Outcome::ok(format!("waited {seconds} s"))
            }
            Action::Extract { element: Some(i), .. } => Outcome::ok(page.read_text(Some((g, *i)), 4000).await?),
            Action::Extract { element: None, query: Some(q) } => {
                let found = page.find_text(q, 5).await?;
                let text = match found.first() {
                    Some(chain) => chain.iter().take(2).cloned().collect::<Vec<_>>().join("\n---\n"),
                    None => format!("{q:?} is not on the page"),
                };
                Outcome { ok: !found.is_empty(), text, data: Some(json!(found)), held: false }
            }
            Action::Extract { element: None, query: None } => Outcome::ok(page.read_text(None, 4000).await?),
            Action::AskUser { .. } | Action::Done { .. } | Action::Fail { .. } => Outcome::ok(""),
        })
    }
    .await;
    let mut outcome = match result {
        Ok(o) => o,
        Err(e @ (PageError::UnknownElement(_) | PageError::StaleElement(_))) => return (Outcome::refused(e.to_string()), false),
        Err(e) => Outcome::refused(e.to_string()),
    };
    // A page that opened a tab: follow it, as a user would.
    if matches!(action, Action::Click { .. } | Action::PressKey { .. } | Action::Type { submit: true, .. })
        && let Ok(tabs) = list_tabs(env.tabs.conn_ref()).await
            && let Some(new) = tabs.iter().rev().find(|t| !tabs_before.contains(&t.target_id) && t.opener_id.as_deref() == Some(page.target_id()))
                && let Ok(p) = env.tabs.switch_to(&new.target_id).await {
                    let url = p.wait_loaded(wait).await.unwrap_or_default();
                    outcome.text.push_str(&format!("; a new tab opened and is now current: {url}"));
                }
    (outcome, true)
}
