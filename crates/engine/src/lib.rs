//! The agentbox domain: sessions (one actor task per session owns its browser), users and
//! their keys, link tokens. No HTTP here: the server parses requests into the types of
//! this crate, calls the [`Engine`], and maps the typed results and errors to responses.

pub mod config;
mod engine;
pub mod error;
mod session;
pub mod time;
pub mod tokens;
pub mod users;
pub mod validate;

pub use config::{AgentSpec, EngineConfig};
pub use engine::{CreateSession, Engine, ExecutionStatus, ReapReport, RestoreSource, SERVER_RESTARTED, SessionView, StartError};
pub use session::BROWSER_DIED;
