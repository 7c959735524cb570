//! The LLM planner, common to both wire formats: the conversation of one task, the retry
//! policy and classification, validation of the tool call and the one repair round.
//!
//! The conversation keeps every earlier step as (assistant tool call, tool result, user
//! messages that came after it); only the current step carries the page observation (and
//! the screenshot for vision agents), so the prompt grows by a few lines per step.

use std::time::Duration;

use serde_json::Value;

use super::action::Action;
use super::{Decision, Outcome, PlanError, PlanInput, Usage, anthropic, openai, prompt};
use crate::config::{AgentSpec, Provider};

/// One earlier step of the conversation.
pub(super) struct Turn {
    pub id: String,
    pub name: String,
    pub args: Value,
    pub thought: String,
    /// What running the action gave; filled at the next step.
    pub result: Option<String>,
    /// Messages from the user that arrived after this step.
    pub user_after: Vec<String>,
}

/// The task and what was said so far.
pub(super) struct Conversation {
    pub task: String,
    /// User messages that arrived before the first step.
    pub user_before: Vec<String>,
    pub turns: Vec<Turn>,
}

/// The current step: the observation as text and the screenshot for vision agents.
pub(super) struct Current<'a> {
    pub text: String,
    pub image: Option<&'a str>,
}

/// A tool call as the model sent it.
pub(super) struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments, or why they are not a JSON object.
    pub args: Result<Value, String>,
}

/// A model reply, read from either wire format.
pub(super) struct Reply {
    pub thought: String,
    pub call: Option<ToolCall>,
    pub usage: Usage,
    /// The assistant message as the provider sent it, replayed in a repair round.
    pub assistant: Value,
}

/// A repair round: the invalid reply and what was wrong with it.
pub(super) struct Repair<'a> {
    pub reply: &'a Reply,
    pub problem: &'a str,
}

pub struct LlmPlanner {
    spec: AgentSpec,
    http: reqwest::Client,
    conv: Conversation,
    used: Usage,
    calls: u64,
}

impl LlmPlanner {
    pub fn new(spec: AgentSpec, task: &str, http: reqwest::Client) -> Self {
        let conv = Conversation { task: task.to_owned(), user_before: Vec::new(), turns: Vec::new() };
        Self { spec, http, conv, used: Usage::default(), calls: 0 }
    }

    pub fn vision(&self) -> bool {
        self.spec.vision
    }

    pub async fn next(&mut self, input: &PlanInput<'_>) -> Result<Decision, PlanError> {
        match self.conv.turns.last_mut() {
            Some(last) => {
                if last.result.is_none() {
                    last.result = Some(outcome_text(input.outcome));
                }
                last.user_after.extend(input.user_messages.iter().cloned());
            }
            None => self.conv.user_before.extend(input.user_messages.iter().cloned()),
        }
        let current = Current {
            text: prompt::observation_text(input.observation, input.step, &input.observation.target_id),
            image: if self.spec.vision { input.observation.screenshot.as_deref() } else { None },
        };

        let (reply, mut attempts) = self.ask(&current, None).await?;
        let mut usage = reply.usage;
        let (reply, action, repaired) = match validate(&reply) {
            Ok(action) => (reply, action, false),
            Err(problem) => {
                tracing::info!(agent = %self.spec.name, %problem, "invalid tool call; asking the model to repair it");
                let (fixed, more) = self.ask(&current, Some(Repair { reply: &reply, problem: &problem })).await?;
                attempts += more;
                usage.input_tokens += fixed.usage.input_tokens;
                usage.output_tokens += fixed.usage.output_tokens;
                match validate(&fixed) {
                    Ok(action) => (fixed, action, true),
                    Err(again) => return Err(PlanError::Invalid(again)),
                }
            }
        };
        self.used.input_tokens += usage.input_tokens;
        self.used.output_tokens += usage.output_tokens;
        if let Some(budget) = self.spec.token_budget.filter(|b| self.used.total() > *b) {
            return Err(PlanError::Budget(format!(
                "the task used {} tokens, over its token budget of {budget}",
                self.used.total()
            )));
        }
        self.calls += 1;
        let Some(call) = reply.call else {
            return Err(PlanError::Invalid("the reply has no tool call".into()));
        };
        let id = if call.id.is_empty() { format!("call_{}", self.calls) } else { call.id };
        let args = call.args.unwrap_or_default();
        let thought = reply.thought.trim().to_owned();
        self.conv.turns.push(Turn { id, name: call.name, args, thought: thought.clone(), result: None, user_after: Vec::new() });
        Ok(Decision { thought, action, usage, repaired, attempts })
    }

    /// One request with retries. Returns the reply and how many attempts it took.
    async fn ask(&self, current: &Current<'_>, repair: Option<Repair<'_>>) -> Result<(Reply, u32), PlanError> {
        let (url, headers, body) = match self.spec.provider {
            Provider::Anthropic => anthropic::request(&self.spec, &self.conv, current, repair.as_ref()),
            _ => openai::request(&self.spec, &self.conv, current, repair.as_ref()),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.http.post(&url).timeout(self.spec.request_timeout).json(&body);
            for (k, v) in &headers {
                req = req.header(*k, v);
            }
            let failure = match req.send().await {
                Ok(res) if res.status().is_success() => match res.json::<Value>().await {
                    Ok(v) => {
                        let reply = match self.spec.provider {
                            Provider::Anthropic => anthropic::parse(v),
                            _ => openai::parse(v),
                        };
                        return reply.map(|r| (r, attempt)).map_err(PlanError::Provider);
                    }
                    Err(e) => Failure::Retry(format!("unreadable reply: {e}"), None),
                },
                Ok(res) => {
                    let status = res.status();
                    let retry_after = res
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .map(|s| Duration::from_secs_f64(s.clamp(0.0, 60.0)));
                    let text = res.text().await.unwrap_or_default();
                    let detail = format!("HTTP {status}: {}", snippet(&text));
                    match classify(status.as_u16()) {
                        Retry::Yes => Failure::Retry(detail, retry_after),
                        Retry::No => Failure::Fatal(detail),
                    }
                }
                Err(e) if e.is_timeout() => Failure::Retry(format!("no answer within {:?}", self.spec.request_timeout), None),
                Err(e) => Failure::Retry(format!("could not reach {}: {}", self.host(), e.without_url()), None),
            };
            match failure {
                Failure::Fatal(detail) => return Err(PlanError::Provider(format!("{} ({})", detail, self.host()))),
                Failure::Retry(detail, _) if attempt > self.spec.max_retries => {
                    return Err(PlanError::Provider(format!("{detail} ({}; gave up after {attempt} attempts)", self.host())));
                }
                Failure::Retry(detail, retry_after) => {
                    let wait = backoff(self.spec.retry_base, attempt, retry_after);
                    tracing::warn!(agent = %self.spec.name, attempt, wait_ms = wait.as_millis() as u64, %detail, "model request failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn host(&self) -> String {
        self.spec.base_url.as_ref().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_else(|| "the provider".into())
    }
}

enum Failure {
    Retry(String, Option<Duration>),
    Fatal(String),
}

#[derive(Debug, PartialEq, Eq)]
enum Retry {
    Yes,
    No,
}

/// Which HTTP statuses are worth another attempt: rate limits, timeouts, server errors.
fn classify(status: u16) -> Retry {
    match status {
        408 | 409 | 425 | 429 => Retry::Yes,
        500..=599 => Retry::Yes,
        _ => Retry::No,
    }
}

/// Exponential backoff with up to 25 % jitter; a server's `Retry-After` wins.
fn backoff(base: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(d) = retry_after {
        return d;
    }
    let exp = base.saturating_mul(1u32 << (attempt.saturating_sub(1)).min(6));
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let jitter = u16::from_le_bytes(b) as f64 / u16::MAX as f64 * 0.25;
    exp.mul_f64(1.0 + jitter).min(Duration::from_secs(60))
}

fn snippet(text: &str) -> String {
    let t: String = text.chars().take(300).collect();
    t.replace(['\n', '\r'], " ")
}

/// Checks that a reply holds exactly the tool call we can run.
fn validate(reply: &Reply) -> Result<Action, String> {
    let Some(call) = &reply.call else {
        return Err("the reply has no tool call; call exactly one of the tools".into());
    };
    let args = call.args.as_ref().map_err(|e| format!("the arguments of {} are not valid JSON: {e}", call.name))?;
    Action::from_tool(&call.name, args)
}

/// What the model is told about the previous action.
fn outcome_text(outcome: Option<&Outcome>) -> String {
    match outcome {
        None => "OK".into(),
        Some(o) if o.ok => format!("OK: {}", o.text),
        Some(o) => format!("REFUSED: {}", o.text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_and_server_errors_are_retried_client_errors_are_not() {
        assert_eq!(classify(429), Retry::Yes);
        assert_eq!(classify(503), Retry::Yes);
        assert_eq!(classify(400), Retry::No);
        assert_eq!(classify(401), Retry::No);
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        for attempt in 1..=4 {
            let d = backoff(base, attempt, None);
            let floor = base * (1 << (attempt - 1));
            assert!(d >= floor && d <= floor.mul_f64(1.25), "attempt {attempt}: {d:?}");
        }
        assert_eq!(backoff(base, 3, Some(Duration::from_secs(2))), Duration::from_secs(2));
    }
}
