//! The command line: `serve`, `users`, `keys`, `run`, `bench`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use agentbox_engine::users::{KEY_PREFIX_LEN, create_user};
use agentbox_engine::time::{iso8601, now_ms};
use agentbox_store::Store;
use clap::{Parser, Subcommand};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use crate::config::{Config, DEFAULT_DATA_DIR, ServeArgs};
use crate::startup::{Application, FIRST_USER_FILE, open_store};

#[derive(Parser)]
#[command(name = "agentbox", version, about = "Self-hosted AI browser-agent sessions (Agent Sessions API v1).")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Manage users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run one task and print its steps and result (in-process, or against --server).
    Run(Box<crate::run::RunArgs>),
    /// Measure performance (prints percentiles; see the README).
    Bench {
        #[command(subcommand)]
        command: crate::bench::BenchCommand,
    },
}

#[derive(clap::Args)]
struct DataDirArg {
    /// The server's data dir.
    #[arg(long, env = "AGENTBOX_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a user; prints {"user_id", "api_key", "webhook_secret"} once.
    Create {
        name: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// List users and their key prefixes, one JSON line each.
    List {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Give a user a new webhook signing secret; prints {"user_id", "webhook_secret"} once.
    /// Events not yet delivered are signed with the new one.
    RotateWebhookSecret {
        user_id: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Revoke every key starting with this prefix (as shown by `users list`).
    Revoke {
        prefix: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime starts");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Users { command } => users(command).await,
            Command::Keys { command } => keys(command).await,
            Command::Run(args) => crate::run::run(*args).await,
            Command::Bench { command } => crate::bench::run(command).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agentbox: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn init_logging(filter: &str) -> anyhow::Result<()> {
    let targets = Targets::from_str(filter).map_err(|e| anyhow::anyhow!("log filter {filter:?}: {e}"))?;
    tracing_subscriber::registry().with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).with(targets).init();
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agentbox: configuration: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    init_logging(&config.log)?;
    let data_dir = config.data_dir.clone();
    let app = Application::build(config).await?;
    if let Some(first) = &app.first_user {
        println!("agentbox: created the first user; its API key (shown once, also in {}):", data_dir.join(FIRST_USER_FILE).display());
        println!("  {}", first.api_key);
    }
    let engine = app.engine().clone();
    println!("agentbox listening on http://{}", app.local_addr());
    for a in &engine.config().agents {
        match a.provider {
            agentbox_engine::Provider::Rules => println!(
                "  agent {}: built-in rule planner (no model configured; runs imperative tasks offline)",
                a.name
            ),
            p => println!(
                "  agent {}: {} model {:?} at {}",
                a.name,
                p.as_str(),
                a.model,
                a.base_url.as_ref().map(|u| u.to_string()).unwrap_or_else(|| "the provider's default URL".into())
            ),
        }
    }
    println!("  data dir: {}", engine.config().data_dir.display());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: ending sessions and killing browsers");
}

async fn users(command: UsersCommand) -> anyhow::Result<ExitCode> {
    match command {
        UsersCommand::Create { name, dir } => {
            let name = name.trim();
            if name.is_empty() || name.len() > 200 {
                anyhow::bail!("the user name must be 1 to 200 characters");
            }
            let store = open_store(&dir.data_dir)?;
            let creds = create_user(&store, name).await?;
            println!("{}", serde_json::to_string(&creds)?);
        }
        UsersCommand::List { dir } => {
            let store = open_store(&dir.data_dir)?;
            for (user, keys) in store.list_users().await? {
                let keys: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "prefix": k.prefix,
                            "created_at": iso8601(k.created_at_ms),
                            "revoked": k.revoked_at_ms.is_some(),
                        })
                    })
                    .collect();
                let line = serde_json::json!({
                    "user_id": user.id, "name": user.name, "created_at": iso8601(user.created_at_ms), "keys": keys,
                });
                println!("{line}");
            }
        }
        UsersCommand::RotateWebhookSecret { user_id, dir } => {
            let id = uuid::Uuid::parse_str(&user_id).map_err(|_| anyhow::anyhow!("{user_id:?} is not a user id; `users list` shows them"))?;
            let store = open_store(&dir.data_dir)?;
            let secret = agentbox_engine::users::generate_webhook_secret();
            if !store.set_webhook_secret(id, &secret).await? {
                eprintln!("agentbox: no user {id}");
                return Ok(ExitCode::FAILURE);
            }
            println!("{}", serde_json::json!({ "user_id": id, "webhook_secret": secret }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Revoke { prefix, dir } => {
            if prefix.len() < 8 {
                anyhow::bail!("give at least 8 characters of the key (the {KEY_PREFIX_LEN}-character prefix `users list` shows)");
            }
            let store = open_store(&dir.data_dir)?;
            // A prefix longer than the stored one is a whole key: match on its prefix part.
            let lookup = prefix.get(..prefix.len().min(KEY_PREFIX_LEN)).unwrap_or(&prefix);
            let n = store.revoke_keys(lookup, now_ms()).await?;
            println!("{}", serde_json::json!({ "revoked": n }));
            if n == 0 {
                eprintln!("agentbox: no active key starts with {lookup}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
