//! The agent: what it can do ([`Action`]), how it decides ([`Planner`]: a rule planner
//! that needs no model, or an LLM over the OpenAI or Anthropic wire format), and what it is
//! shown at each step ([`prompt`]). The loop that runs a task lives in `crate::task`.

pub mod action;
mod anthropic;
mod llm;
mod openai;
pub mod prompt;
pub mod rules;

pub use action::{Action, ToolSpec, tools};
use agentbox_browser::Observation;
use serde_json::Value;

use crate::config::{AgentSpec, Provider};

/// What happened when the previous action ran, as the planner is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    pub text: String,
    /// Structured results (what `extract` with a query found).
    pub data: Option<Value>,
    /// The action was not run at all (the task was paused first): choosing it again is fine.
    pub held: bool,
}

impl Outcome {
    pub fn ok(text: impl Into<String>) -> Self {
        Self { ok: true, text: text.into(), data: None, held: false }
    }

    pub fn refused(text: impl Into<String>) -> Self {
        Self { ok: false, text: text.into(), data: None, held: false }
    }

    /// An action held back because the user paused the task before it ran.
    pub fn held(text: impl Into<String>) -> Self {
        Self { ok: false, text: text.into(), data: None, held: true }
    }
}

/// Everything a planner sees at one step.
pub struct PlanInput<'a> {
    pub task: &'a str,
    /// 1-based.
    pub step: u32,
    pub observation: &'a Observation,
    /// The result of the previous step's action.
    pub outcome: Option<&'a Outcome>,
    /// Messages the user sent since the previous step.
    pub user_messages: &'a [String],
}

/// Tokens a planner used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// A planner's choice for one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub thought: String,
    pub action: Action,
    pub usage: Usage,
    /// True when the first reply was invalid and the repair round fixed it.
    pub repaired: bool,
    /// Provider attempts this step took (1 without retries; 0 for the rule planner).
    pub attempts: u32,
}

/// Why a planner could not decide. Each ends the task with an ERROR saying so.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("the model provider failed: {0}")]
    Provider(String),
    #[error("the model's reply was invalid even after a repair round: {0}")]
    Invalid(String),
    #[error("{0}")]
    NotUnderstood(String),
    #[error("{0}")]
    Budget(String),
}

/// The planner of one task. Its state (the conversation so far) lives as long as the task.
pub enum Planner {
    Rules(rules::RulePlanner),
    Llm(Box<llm::LlmPlanner>),
}

impl Planner {
    /// A planner for `task` as the agent's spec says. The rule planner reads the task
    /// here and refuses what it does not understand before any step runs.
    pub fn new(spec: &AgentSpec, task: &str, http: &reqwest::Client) -> Result<Planner, PlanError> {
        Ok(match spec.provider {
            Provider::Rules => Planner::Rules(rules::RulePlanner::new(task)?),
            Provider::OpenAi | Provider::Anthropic => Planner::Llm(Box::new(llm::LlmPlanner::new(spec.clone(), task, http.clone()))),
        })
    }

    pub async fn next(&mut self, input: &PlanInput<'_>) -> Result<Decision, PlanError> {
        match self {
            Planner::Rules(r) => r.next(input),
            Planner::Llm(l) => l.next(input).await,
        }
    }

    /// Whether the planner wants a screenshot in the observation.
    pub fn wants_screenshot(&self) -> bool {
        match self {
            Planner::Rules(_) => false,
            Planner::Llm(l) => l.vision(),
        }
    }
}
