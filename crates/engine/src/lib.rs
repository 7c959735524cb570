//! The agentbox domain: sessions (one actor task per session owns its browser), their
//! tasks and agents (planners, message log, execution state), users and their keys, link
//! tokens. No HTTP here: the server parses requests into the types of
//! this crate, calls the [`Engine`], and maps the typed results and errors to responses.

pub mod agent;
pub mod config;
mod engine;
pub mod error;
pub mod live;
pub mod metrics;
pub mod snapshot;
mod session;
mod task;
pub mod webhooks;
pub mod time;
pub mod tokens;
pub mod users;
pub mod validate;

pub use agentbox_store::{ExecutionStatus, MessageRecord, MessageType};
pub use config::{AgentSpec, EngineConfig, Provider, Secret};
pub use engine::{CdpAccess, CdpEndpoint, CreateSession, Engine, EnvironmentView, MESSAGES_PAGE, ReapReport, RestoreSource, SERVER_RESTARTED, SendMessage, SessionView, StartError};
pub use session::BROWSER_DIED;
