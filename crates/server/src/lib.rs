//! The agentbox server: configuration, start-up, HTTP routes, auth, error mapping, the CLI
//! and the benchmarks. The only crate that speaks HTTP.

pub mod bench;
pub mod cli;
pub mod config;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod routes;
pub mod run;
pub mod startup;
pub mod wire;

pub use config::{Config, ServeArgs};
pub use startup::Application;
