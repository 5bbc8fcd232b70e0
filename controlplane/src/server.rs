//! Assembles and runs a control plane: both listeners, the background sweeps, and graceful
//! shutdown.

use crate::auth::Authenticator;
use crate::ca::Ca;
use crate::config::{SandboxKind, ServerConfig, locate_agent_bin};
use crate::gateway::Gateway;
use crate::git::Repos;
use crate::manifests::Manifests;
use crate::public::PublicServices;
use crate::sandbox::local::{LocalConfig, LocalProvider};
use crate::sandbox::{SandboxExit, SandboxProvider};
use crate::secrets::{MasterKey, ProjectSecrets};
use crate::sessions::{SessionConfig, Sessions, live::Hub};
use crate::store::Store;
use kortix_proto::v1 as pb;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Agent record batches are at most 4 MiB; leave headroom for framing.
const MAX_AGENT_MESSAGE: usize = 8 * 1024 * 1024;
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
    let data_dir = config.data_dir.clone();
    create_private_dir(&data_dir)?;

    let store = Store::open(&data_dir, config.database_url.as_deref()).await?;
    let master_key = Arc::new(MasterKey::load_or_create(&data_dir.join("master.key"))?);
    ensure_admin_token(&store, &data_dir).await?;
    let ca = Arc::new(Ca::load_or_create(&data_dir.join("ca"))?);
    let repos = Repos::in_data_dir(&data_dir)?;

    let public_listener = bind(config.listen).await?;
    let agent_listener = bind(config.agent_listen).await?;
    let public_addr = local_addr(&public_listener, config.listen)?;
    let agent_addr = local_addr(&agent_listener, config.agent_listen)?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{public_addr}"));
    let agent_url = config
        .agent_url
        .clone()
        .unwrap_or_else(|| format!("https://{agent_addr}"));

    let (exit_tx, mut exit_rx) = mpsc::channel::<SandboxExit>(1024);
    // A container engine's sandboxes reach the control plane on their network's gateway:
    // both listeners are opened there too, and sandboxes are given those addresses.
    let mut engine_side = None;
    let provider: Arc<dyn SandboxProvider> = match config.sandbox {
        SandboxKind::Docker => {
            let docker =
                crate::sandbox::docker::DockerEngine::connect(config.docker.host.as_deref())
                    .await
                    .map_err(|e| ServerError::Setup(e.to_string()))?;
            let gateway = docker
                .gateway(config.docker.network.as_deref())
                .await
                .map_err(|e| ServerError::Setup(e.to_string()))?;
            let public_gw = bind_freely(SocketAddr::from((gateway, 0)))?;
            let agent_gw = bind_freely(SocketAddr::from((gateway, 0)))?;
            let agent_bin = config.agent_bin.clone().unwrap_or_else(locate_agent_bin);
            let opencode_bin = config.docker.opencode_bin.clone().ok_or_else(|| {
                ServerError::Setup(
                    "--sandbox docker needs the OpenCode binary of the runtime layer (--opencode-bin or KORTIX_OPENCODE_BIN)".into(),
                )
            })?;
            let runtime = tokio::task::spawn_blocking(move || {
                crate::snapshots::RuntimeLayer::load(&agent_bin, &opencode_bin)
            })
            .await
            .map_err(|e| ServerError::Setup(format!("fingerprinting the runtime layer: {e}")))?
            .map_err(|e| ServerError::Setup(e.to_string()))?;
            let snapshots =
                crate::snapshots::Snapshots::new(
                    store.clone(),
                    repos.clone(),
                    Arc::new(docker.clone()),
                    Arc::new(runtime),
                    crate::snapshots::SnapshotConfig {
                        base_image: config.docker.base_image.clone().unwrap_or_else(|| {
                            crate::snapshots::SnapshotConfig::default().base_image
                        }),
                        ..Default::default()
                    },
                );
            engine_side = Some((public_gw, agent_gw, snapshots));
            Arc::new(crate::sandbox::docker::DockerProvider::new(
                docker,
                crate::sandbox::docker::DockerConfig {
                    network: config.docker.network.clone(),
                    extra_env: config.agent_env.clone(),
                },
                exit_tx,
            ))
        }
        SandboxKind::Local => Arc::new(LocalProvider::new(
            LocalConfig {
                root: data_dir.join("sandboxes"),
                agent_bin: config.agent_bin.clone().unwrap_or_else(locate_agent_bin),
                extra_env: config.agent_env.clone(),
                isolation: config.isolation.clone(),
                retention: config.sandbox_retention,
            },
            exit_tx,
        )),
        SandboxKind::External => Arc::new(
            crate::sandbox::external::ExternalProvider::new(data_dir.join("bootstrap"), exit_tx)
                .map_err(|source| ServerError::DataDir {
                    path: data_dir.join("bootstrap"),
                    source,
                })?,
        ),
    };
    let hub = Hub::new();
    let manifests = Arc::new(Manifests::new(repos.clone()));
    let secrets = ProjectSecrets::new(store.clone(), master_key.clone(), hub.clone());
    let (sandbox_agent_url, sandbox_public_url) = match &engine_side {
        Some((public_gw, agent_gw, _)) => (
            format!("https://{}", local_addr(agent_gw, config.agent_listen)?),
            format!("http://{}", local_addr(public_gw, config.listen)?),
        ),
        None => (agent_url.clone(), public_url.clone()),
    };
    let mut session_config = SessionConfig::new(
        sandbox_agent_url.clone(),
        sandbox_public_url,
        ca.cert_pem().to_string(),
    );
    session_config.connect_deadline = config.timings.connect_deadline;
    session_config.stop_grace = config.timings.stop_grace;
    session_config.idle_timeout = config.timings.idle_timeout;
    session_config.heartbeat_timeout = config.timings.heartbeat_timeout;
    session_config.start_deadline = config.timings.start_deadline;
    session_config.reconnect_grace = config.timings.reconnect_grace;
    let mut sessions = Sessions::new(
        store.clone(),
        repos.clone(),
        provider.clone(),
        hub.clone(),
        manifests.clone(),
        session_config,
    );
    let (public_gw, agent_gw) = match engine_side {
        Some((public_gw, agent_gw, snapshots)) => {
            sessions = sessions.with_snapshots(snapshots);
            (Some(public_gw), Some(agent_gw))
        }
        None => (None, None),
    };

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // Sandbox exits → session states. At shutdown this keeps running until the sandboxes this
    // replica ends have reported (or the shutdown task gives up on them).
    let (sandboxes_done, mut sandboxes_done_rx) = tokio::sync::oneshot::channel::<()>();
    {
        let sessions = sessions.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    exit = exit_rx.recv() => match exit {
                        Some(exit) => sessions.sandbox_exited(exit).await,
                        None => return,
                    },
                    _ = &mut sandboxes_done_rx => break,
                }
            }
            while let Ok(exit) = exit_rx.try_recv() {
                sessions.sandbox_exited(exit).await;
            }
        }));
    }
    tasks.push(tokio::spawn(
        sessions.clone().run_sweeper(signalled(shutdown_rx.clone())),
    ));
    tasks.push(tokio::spawn(
        sessions
            .clone()
            .run_heartbeat_flusher(signalled(shutdown_rx.clone())),
    ));
    tasks.push(tokio::spawn(
        sessions
            .clone()
            .run_reconciler(signalled(shutdown_rx.clone())),
    ));
    // Listeners close only once this replica's sandboxes have ended: a stopping agent still
    // pushes its last commits over git and flushes its records over its stream.
    let (drained_tx, drained_rx) = watch::channel(false);
    let triggers = crate::triggers::Triggers::new(
        store.clone(),
        manifests.clone(),
        secrets.clone(),
        Arc::new(sessions.clone()),
    );
    tasks.push(tokio::spawn(
        crate::triggers::Sweeper::new(triggers.clone()).run(signalled(shutdown_rx.clone())),
    ));

    // Public listener.
    let hooks_dir = data_dir.join("hooks");
    let public = PublicServices {
        accounts: crate::accounts::Accounts::new(store.clone()),
        projects: crate::projects::Projects::new(
            store.clone(),
            repos.clone(),
            manifests.clone(),
            public_url.clone(),
            data_dir.clone(),
        ),
        change_requests: crate::change_requests::ChangeRequests::new(store.clone(), repos.clone()),
        secrets: secrets.clone(),
        sessions: sessions.clone(),
        triggers,
        authenticator: Arc::new(Authenticator::new(store.clone())),
        git: crate::git::GitHttpState::new(
            Arc::new(crate::auth::GitAuth::new(store.clone())),
            repos.clone(),
            hooks_dir.clone(),
            crate::git::GitHttpLimits::default(),
        )
        .map_err(|source| ServerError::DataDir {
            path: hooks_dir,
            source,
        })?,
        store: store.clone(),
        hub: hub.clone(),
    };
    let router = public
        .router()
        .map_err(|e| ServerError::Setup(format!("reflection: {e}")))?;
    for listener in std::iter::once(public_listener).chain(public_gw) {
        let (drained_rx, router) = (drained_rx.clone(), router.clone());
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(signalled(drained_rx));
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "public listener failed");
            }
        }));
    }

    // Agent listener (mTLS; Enroll works without a client certificate).
    let mut names = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "::1".to_string(),
    ];
    for url in [&agent_url, &sandbox_agent_url] {
        if let Some(host) = host_of(url)
            && !names.contains(&host)
        {
            names.push(host);
        }
    }
    let server_cert = ca.issue_server_cert(&names)?;
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &server_cert.cert_pem,
            &server_cert.key_pem,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(ca.cert_pem()))
        .client_auth_optional(true);
    let gateway = Gateway::new(sessions.clone(), ca.clone(), secrets);
    let agent_service = pb::agent_gateway_server::AgentGatewayServer::new(gateway)
        .max_decoding_message_size(MAX_AGENT_MESSAGE)
        .max_encoding_message_size(MAX_AGENT_MESSAGE);
    let mut agent_server = tonic::transport::Server::builder()
        .tls_config(tls)
        .map_err(|e| ServerError::Setup(e.to_string()))?
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .tcp_nodelay(true);
    {
        // `Server::tcp_nodelay` does not apply to a caller-supplied listener; without it every
        // small frame waits out Nagle's delay.
        let incoming =
            tonic::transport::server::TcpIncoming::from(agent_listener).with_nodelay(Some(true));
        let incoming = futures::stream::select(
            incoming,
            futures::StreamExt::flat_map(futures::stream::iter(agent_gw), |l| {
                tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true))
            }),
        );
        let drained_rx = drained_rx.clone();
        let router = agent_server.add_service(agent_service);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, signalled(drained_rx))
                .await
            {
                tracing::error!(error = %e, "agent listener failed");
            }
        }));
    }

    // On shutdown, end this replica's sandboxes: their agents push and flush first.
    {
        let sessions = sessions.clone();
        let provider = provider.clone();
        let mut rx = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = rx.wait_for(|s| *s).await;
            sessions.drain();
            if provider.ends_with_control_plane() {
                end_sandboxes(&sessions, provider.as_ref()).await;
            }
            let _ = sandboxes_done.send(());
            // Only now end the live streams and close the listeners, so stopping agents could
            // still push and flush.
            sessions.hub().close();
            let _ = drained_tx.send(true);
        }));
    }

    tracing::info!(%public_addr, %agent_addr, data_dir = %data_dir.display(), "control plane listening");
    Ok(RunningServer {
        public_addr,
        agent_addr,
        data_dir,
        public_url,
        sessions,
        shutdown,
        tasks,
    })
}

async fn end_sandboxes(sessions: &Sessions, provider: &dyn SandboxProvider) {
    use crate::store::SessionStatus;
    let live = match sessions
        .store()
        .list_sessions_in_status(&SessionStatus::ACTIVE, None, 10_000)
        .await
    {
        Ok(live) => live,
        Err(e) => {
            tracing::error!(error = %e, "listing live sessions at shutdown");
            return;
        }
    };
    let mine: Vec<_> = live
        .into_iter()
        .filter(|s| provider.is_running(&s.id))
        .collect();
    let stops = mine
        .iter()
        .map(|s| sessions.stop(&s.id, false, "control plane shutting down"));
    for result in futures::future::join_all(stops).await {
        if let Err(e) = result {
            tracing::warn!(error = %e, "stopping a session at shutdown");
        }
    }
    // Give agents the grace period to push and flush, then make sure nothing is left.
    let deadline = tokio::time::Instant::now() + sessions.config().stop_grace;
    while mine.iter().any(|s| provider.is_running(&s.id)) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for s in &mine {
        let _ = provider.kill(&s.id).await;
    }
}

async fn signalled(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Binds even where the address is not (yet) the host's: a container engine creates its
/// bridge, and the gateway address with it, only when the first container joins.
fn bind_freely(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
    let bind = || -> std::io::Result<tokio::net::TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_freebind_v4(true)?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        tokio::net::TcpListener::from_std(socket.into())
    };
    bind().map_err(|source| ServerError::Bind { addr, source })
}

fn local_addr(
    listener: &tokio::net::TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, ServerError> {
    listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split("://").nth(1)?;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_string())
}

fn create_private_dir(path: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| ServerError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(err)?;
    }
    Ok(())
}

/// First start: the admin account and its token in `admin.token` (0600; only its hash is
/// stored). A missing `admin.token` later gets a fresh admin token (older ones stay valid until
/// revoked), so an operator who lost the file can recover by deleting it.
async fn ensure_admin_token(store: &Store, data_dir: &Path) -> Result<(), ServerError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        return Ok(());
    }
    let token = match crate::auth::bootstrap_admin(store)
        .await
        .map_err(auth_err)?
    {
        Some(token) => token,
        None => {
            let admin = store
                .get_account_by_name(crate::auth::ADMIN_ACCOUNT_NAME)
                .await?;
            let token = crate::auth::generate_token(crate::auth::TokenKind::Person);
            store
                .create_api_token(
                    &admin.id,
                    ADMIN_TOKEN_FILE,
                    &crate::auth::hash_token(&token),
                )
                .await?;
            token
        }
    };
    crate::secrets::write_private_file(&path, format!("{token}\n").as_bytes(), true).map_err(
        |source| ServerError::DataDir {
            path: path.clone(),
            source,
        },
    )?;
    tracing::info!(path = %path.display(), "wrote the admin token");
    Ok(())
}

fn auth_err(e: crate::auth::AuthError) -> ServerError {
    match e {
        crate::auth::AuthError::Store(e) => ServerError::Store(e),
        other => ServerError::Setup(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_handles_ports_and_ipv6() {
        assert_eq!(
            super::host_of("https://10.0.0.5:8009").as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(
            super::host_of("https://cp.example.com").as_deref(),
            Some("cp.example.com")
        );
        assert_eq!(
            super::host_of("https://[::1]:8009/x").as_deref(),
            Some("::1")
        );
        assert_eq!(super::host_of("nonsense"), None);
    }
}
