//! Start-up as a library function: [`Application::build`] prepares the data dir, the
//! store, the first user and the engine, and binds the listener (port 0 in tests), so
//! `main` and the tests start the very same app.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use agentbox_engine::users::{NewUserCredentials, create_user};
use agentbox_engine::{Engine, EngineConfig};
use agentbox_store::{SqliteStore, Store};
use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;

/// The database file inside the data dir.
pub const DB_FILE: &str = "agentbox.db";
/// Where the first user's credentials are written once.
pub const FIRST_USER_FILE: &str = "first-user.json";

/// A built, bound, not yet serving agentbox.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    engine: Arc<Engine>,
    /// Set when this start created the first user: show it once.
    pub first_user: Option<NewUserCredentials>,
}

/// Opens (creating) the data dir and its database.
pub fn open_store(data_dir: &Path) -> anyhow::Result<SqliteStore> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let path = data_dir.join(DB_FILE);
    SqliteStore::open(&path).with_context(|| format!("cannot open the database {}", path.display()))
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = open_store(&config.data_dir)?;
        let data_dir = config.data_dir.canonicalize().context("cannot resolve the data dir")?;
        let store: Arc<dyn Store> = Arc::new(store);

        let first_user = if store.count_users().await? == 0 {
            let creds = create_user(store.as_ref(), "default").await?;
            write_private_json(&data_dir.join(FIRST_USER_FILE), &creds)?;
            Some(creds)
        } else {
            None
        };

        let listener = TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let public_url = match config.public_url {
            Some(u) => u,
            None => {
                let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
                let host = if addr.is_ipv6() && !addr.ip().is_unspecified() { format!("[{host}]") } else { host };
                url::Url::parse(&format!("http://{host}:{}/", addr.port()))?
            }
        };
        let engine_config = EngineConfig { data_dir, public_url, ..config.engine };
        let engine = Engine::start(engine_config, store).await?;
        Ok(Self { listener, addr, engine, first_user })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Serves until `shutdown` resolves, then stops accepting, ends every session and
    /// kills every browser before returning.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let router = crate::routes::router(self.engine.clone());
        let engine = self.engine.clone();
        // Graceful shutdown waits for open requests; SSE streams end when told to.
        let shutdown = async move {
            shutdown.await;
            engine.begin_shutdown();
        };
        // DevTools and SSE traffic is many small frames: send them without Nagle's delay.
        use axum::serve::ListenerExt;
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let served = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
        self.engine.shutdown().await;
        served.context("the HTTP server failed")
    }
}

/// Writes JSON to a 0600 file atomically (temp file, fsync, rename).
fn write_private_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    serde_json::to_writer_pretty(&mut f, value)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
