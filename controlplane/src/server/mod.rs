//! Assembles and runs a control plane, in named phases: open the data directory
//! ([`foundation`]), bind both listeners, wire the services ([`composition`]), start the
//! background work and the shutdown sequence ([`background`]), serve ([`listeners`]).

mod background;
mod composition;
mod engine;
mod foundation;
mod listeners;

use crate::config::ServerConfig;
use crate::gateway::Gateway;
use crate::sessions::Sessions;
use composition::{Services, Urls};
use engine::Engine;
use foundation::Foundation;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Time for the last exits, flushes and responses after the stop grace at shutdown.
const SHUTDOWN_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
    #[error(transparent)]
    Repos(#[from] crate::git::RepoError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// A running control plane.
pub struct RunningServer {
    pub public_addr: SocketAddr,
    pub agent_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub public_url: String,
    pub sessions: Sessions,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Path of the admin token file.
    pub fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join(ADMIN_TOKEN_FILE)
    }

    /// Stops accepting work, ends live sandboxes of this replica, and waits for the tasks —
    /// at most the stop grace plus a little: long-lived streams (attach, agents) are cut then.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let limit = self.sessions.config().stop_grace + SHUTDOWN_SLACK * 2;
        let tasks = self.tasks;
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        if tokio::time::timeout(limit, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!("shutdown deadline passed; closing remaining connections");
            for abort in aborts {
                abort.abort();
            }
        }
    }

    /// Resolves when every task has ended (after `shutdown`, or a fatal listener error).
    pub async fn wait(&mut self) {
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Opens (creating on first start) everything in the data directory and starts serving.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    // One crypto provider for the whole process; a second install is a no-op error.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if let Some(urls) = &config.agent_url {
        crate::config::check_agent_urls(urls).map_err(ServerError::Setup)?;
    }
    let base = Foundation::open(&config.data_dir, config.database_url.as_deref()).await?;

    let public_bound = listeners::bind(config.listen).await?;
    let agent_bound = listeners::bind(config.agent_listen).await?;
    let (public_addr, agent_addr) = (public_bound.addr, agent_bound.addr);
    let engine = Engine::open(&config, &base).await?;
    let public = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{public_addr}"));
    // Sandboxes get the whole list, normalized (`https://a:1,https://b:2`).
    let agent = config.agent_url.as_deref().map_or_else(
        || format!("https://{agent_addr}"),
        |list| {
            crate::config::agent_url_list(list)
                .collect::<Vec<_>>()
                .join(",")
        },
    );
    let gateways = engine.as_ref().and_then(|e| e.gateways.as_ref());
    let urls = Urls {
        sandbox_public: gateways
            .map_or_else(|| public.clone(), |(p, _)| format!("http://{}", p.addr)),
        sandbox_agent: gateways
            .map_or_else(|| agent.clone(), |(_, a)| format!("https://{}", a.addr)),
        public,
        agent,
    };
    let relay = engine.as_ref().and_then(|e| e.snapshots.take_relay());
    let (engine, gateways) = engine
        .map(|e| ((e.backend, e.snapshots), e.gateways))
        .unzip();
    let (public_gw, agent_gw) = gateways.flatten().unzip();

    let (mut services, exits) = Services::compose(&config, &base, &urls, engine)?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (sandboxes_done_tx, sandboxes_done_rx) = oneshot::channel();
    // Listeners close only once this replica's sandboxes have ended: a stopping agent still
    // pushes its last commits over git and flushes its records over its stream.
    let (drained_tx, drained_rx) = watch::channel(false);

    let mut tasks = background::spawn(&mut services, exits, sandboxes_done_rx, &shutdown_rx);
    if let Some(relay) = relay {
        tasks.push(tokio::spawn(relay.run(signalled(shutdown_rx.clone()))));
    }
    let public = services.public(&base, &urls)?;
    tasks.push(tokio::spawn(crate::auth::token_cache::listen(
        base.store.clone(),
        public.authenticator.cache().clone(),
        signalled(shutdown_rx.clone()),
    )));
    let (store, until) = (base.store.clone(), signalled(shutdown_rx.clone()));
    tasks.push(tokio::spawn(async move {
        tokio::select! {
            _ = until => {}
            _ = store.follow_role_changes() => {}
        }
    }));
    let (store, until) = (base.store.clone(), signalled(shutdown_rx.clone()));
    tasks.push(tokio::spawn(async move {
        tokio::select! {
            _ = until => {}
            _ = store.follow_agent_changes() => {}
        }
    }));
    tasks.push(listeners::serve_public(
        std::iter::once(public_bound).chain(public_gw),
        public,
        drained_rx.clone(),
    )?);
    let gateway = Gateway::new(
        services.sessions.clone(),
        base.ca.clone(),
        services.secrets.clone(),
        services.connectors.clone(),
    );
    tasks.push(listeners::serve_agents(
        std::iter::once(agent_bound).chain(agent_gw),
        [urls.agent.as_str(), urls.sandbox_agent.as_str()],
        &base.ca,
        gateway,
        drained_rx,
    )?);
    tasks.push(background::spawn_shutdown(
        &services,
        shutdown_rx,
        sandboxes_done_tx,
        drained_tx,
    ));

    tracing::info!(%public_addr, %agent_addr, data_dir = %base.data_dir.display(), "control plane listening");
    Ok(RunningServer {
        public_addr,
        agent_addr,
        data_dir: base.data_dir,
        public_url: urls.public,
        sessions: services.sessions,
        shutdown,
        tasks,
    })
}

async fn signalled(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
