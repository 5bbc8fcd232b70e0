//! The container engine side of `--sandbox docker`: the engine connection, the snapshot
//! service building from it, and the two extra listeners on the engine network's gateway —
//! a container reaches the control plane there, never on the host's loopback.

use super::ServerError;
use super::foundation::Foundation;
use super::listeners::Bound;
use crate::config::{ServerConfig, locate_agent_bin};
use crate::sandbox::docker::DockerEngine;
use crate::sandbox::opencode_packages::OpencodePackages;
use crate::snapshots::{RuntimeLayer, SnapshotConfig, Snapshots};
use std::net::SocketAddr;
use std::sync::Arc;

/// What `--sandbox docker` adds to a replica.
pub(super) struct Engine {
    pub docker: DockerEngine,
    pub snapshots: Snapshots,
    /// The public listener again, on the gateway (git for the sandboxes).
    pub public_gw: Bound,
    /// The agent listener again, on the gateway.
    pub agent_gw: Bound,
}

impl Engine {
    pub async fn open(config: &ServerConfig, base: &Foundation) -> Result<Self, ServerError> {
        let setup = |e: crate::sandbox::SandboxError| ServerError::Setup(e.to_string());
        let docker = DockerEngine::connect(config.docker.host.as_deref())
            .await
            .map_err(setup)?;
        let gateway = docker
            .gateway(config.docker.network.as_deref())
            .await
            .map_err(setup)?;
        let public_gw = bind_freely(SocketAddr::from((gateway, 0)))?;
        let agent_gw = bind_freely(SocketAddr::from((gateway, 0)))?;
        let agent_bin = config.agent_bin.clone().unwrap_or_else(locate_agent_bin);
        let opencode_bin = config.docker.opencode_bin.clone().ok_or_else(|| {
            ServerError::Setup(
                "--sandbox docker needs the OpenCode binary of the runtime layer (--opencode-bin or KORTIX_OPENCODE_BIN)".into(),
            )
        })?;
        // OpenCode's package set goes into every image, so a container's OpenCode starts
        // without a registry; without npm or a registry here, containers fetch it themselves.
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
        .map_err(|e| ServerError::Setup(e.to_string()))?;
        let snapshots = Snapshots::new(
            base.store.clone(),
            base.repos.clone(),
            Arc::new(docker.clone()),
            Arc::new(runtime),
            SnapshotConfig {
                base_image: config
                    .docker
                    .base_image
                    .clone()
                    .unwrap_or_else(|| SnapshotConfig::default().base_image),
                ..Default::default()
            },
        );
        Ok(Self {
            docker,
            snapshots,
            public_gw,
            agent_gw,
        })
    }
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
