//! The image side of `--sandbox docker` and `--sandbox daytona`: the runtime layer and the
//! snapshot service both build from, and each one's backend — the container engine with both
//! listeners opened again on its network's gateway (a container reaches the control plane
//! there, never on the host's loopback), or Daytona's API (a Daytona sandbox is on the
//! internet and reaches the control plane at its advertised URLs).

use super::ServerError;
use super::foundation::Foundation;
use super::listeners::Bound;
use crate::config::{SandboxKind, ServerConfig, locate_agent_bin};
use crate::sandbox::SnapshotBuilder;
use crate::sandbox::daytona::{DaytonaClient, DaytonaSnapshots};
use crate::sandbox::docker::DockerEngine;
use crate::sandbox::opencode_packages::OpencodePackages;
use crate::snapshots::{RuntimeLayer, SnapshotConfig, Snapshots};
use std::net::SocketAddr;
use std::sync::Arc;

/// Where sandboxes run.
pub(super) enum Backend {
    Docker(DockerEngine),
    Daytona(Arc<DaytonaClient>),
}

/// What an image-booting provider adds to a replica.
pub(super) struct Engine {
    pub backend: Backend,
    pub snapshots: Snapshots,
    /// The public and agent listeners again, on the container network's gateway (docker).
    pub gateways: Option<(Bound, Bound)>,
}

fn setup(e: impl std::fmt::Display) -> ServerError {
    ServerError::Setup(e.to_string())
}

impl Engine {
    /// The backend of `config.sandbox`; `None` for providers that boot no images.
    pub async fn open(
        config: &ServerConfig,
        base: &Foundation,
    ) -> Result<Option<Self>, ServerError> {
        match config.sandbox {
            SandboxKind::Docker => Self::docker(config, base).await.map(Some),
            SandboxKind::Daytona => Self::daytona(config, base).await.map(Some),
            SandboxKind::Local | SandboxKind::External => Ok(None),
        }
    }

    async fn docker(config: &ServerConfig, base: &Foundation) -> Result<Self, ServerError> {
        let docker = DockerEngine::connect(config.docker.host.as_deref())
            .await
            .map_err(setup)?;
        let gateway = docker
            .gateway(config.docker.network.as_deref())
            .await
            .map_err(setup)?;
        let public_gw = bind_freely(SocketAddr::from((gateway, 0)))?;
        let agent_gw = bind_freely(SocketAddr::from((gateway, 0)))?;
        let snapshots =
            snapshot_service(config, base, Arc::new(docker.clone()), "--sandbox docker").await?;
        Ok(Self {
            backend: Backend::Docker(docker),
            snapshots,
            gateways: Some((public_gw, agent_gw)),
        })
    }

    async fn daytona(config: &ServerConfig, base: &Foundation) -> Result<Self, ServerError> {
        let settings = &config.daytona;
        if config.public_url.is_none() || config.agent_url.is_none() {
            return Err(ServerError::Setup(
                "--sandbox daytona needs --public-url and --agent-url: the addresses at which a Daytona sandbox, on the internet, reaches this control plane's public and agent listeners".into(),
            ));
        }
        let key = settings
            .api_key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ServerError::Setup(
                    "--sandbox daytona needs Daytona's API key in DAYTONA_API_KEY".into(),
                )
            })?;
        let client = Arc::new(
            DaytonaClient::new(&settings.api_url, key, settings.organization_id.clone())
                .map_err(setup)?,
        );
        // The key is checked now, so a wrong one stops the server with Daytona's answer
        // rather than failing every session.
        client
            .call(reqwest::Method::GET, "/sandbox", &[("limit", "1")], None)
            .await
            .map_err(|e| ServerError::Setup(format!("Daytona at {}: {e}", client.api_url())))?;
        let builder = Arc::new(DaytonaSnapshots::new(client.clone()));
        let snapshots = snapshot_service(config, base, builder, "--sandbox daytona").await?;
        Ok(Self {
            backend: Backend::Daytona(client),
            snapshots,
            gateways: None,
        })
    }
}

/// The snapshot service over `builder`, with the runtime layer fingerprinted once.
async fn snapshot_service(
    config: &ServerConfig,
    base: &Foundation,
    builder: Arc<dyn SnapshotBuilder>,
    flag: &str,
) -> Result<Snapshots, ServerError> {
    let agent_bin = config.agent_bin.clone().unwrap_or_else(locate_agent_bin);
    let opencode_bin = config.images.opencode_bin.clone().ok_or_else(|| {
        ServerError::Setup(format!(
            "{flag} needs the OpenCode binary of the runtime layer (--sandbox-opencode-bin or KORTIX_SANDBOX_OPENCODE_BIN)"
        ))
    })?;
    // OpenCode's package set goes into every image, so a sandbox's OpenCode starts without
    // a registry; without npm or a registry here, sandboxes fetch it themselves.
    let packages = OpencodePackages::new(config.opencode_packages_root(), opencode_bin.clone())
        .get()
        .await;
    // Fingerprinting reads the binaries and the set whole: off the runtime's threads.
    let runtime = tokio::task::spawn_blocking(move || {
        let layer = RuntimeLayer::load(&agent_bin, &opencode_bin)?;
        match packages {
            Some(dir) => layer.with_packages(&dir),
            None => Ok(layer),
        }
    })
    .await
    .map_err(|e| ServerError::Setup(format!("fingerprinting the runtime layer: {e}")))?
    .map_err(setup)?;
    Ok(Snapshots::new(
        base.store.clone(),
        base.repos.clone(),
        builder,
        Arc::new(runtime),
        SnapshotConfig {
            base_image: config
                .images
                .base_image
                .clone()
                .unwrap_or_else(|| SnapshotConfig::default().base_image),
            ..Default::default()
        },
    ))
}

/// Binds even where the address is not (yet) the host's: a container engine creates its
/// bridge, and the gateway address with it, only when the first container joins.
fn bind_freely(addr: SocketAddr) -> Result<Bound, ServerError> {
    let bind = || -> std::io::Result<Bound> {
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
        let listener = tokio::net::TcpListener::from_std(socket.into())?;
        let addr = listener.local_addr()?;
        Ok(Bound { listener, addr })
    };
    bind().map_err(|source| ServerError::Bind { addr, source })
}
