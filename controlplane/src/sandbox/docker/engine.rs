//! The connection to the engine. Every request has a timeout (bollard's per-client one);
//! builds, which take long, stream and are bounded by the snapshot service instead.

use bollard::models::ContainerSummary;
use bollard::{API_DEFAULT_VERSION, Docker};

use crate::sandbox::SandboxError;

/// Seconds any one engine request may take (a build's stream is bounded elsewhere).
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// The engine's socket when neither `--docker-host` nor `DOCKER_HOST` says otherwise.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// A Docker Engine API endpoint. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DockerEngine {
    pub(crate) docker: Docker,
    host: String,
}

impl DockerEngine {
    /// Connects to `host` (`unix:///path`, `tcp://host:port` or `http://host:port`), else
    /// `DOCKER_HOST`, else the local socket. Checks that the engine answers.
    pub async fn connect(host: Option<&str>) -> Result<Self, SandboxError> {
        let host = host
            .map(str::to_owned)
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(&host, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else {
            return Err(SandboxError::Engine(format!(
                "container engine address {host:?}: expected unix:///path, tcp://host:port or http://host:port"
            )));
        }
        .map_err(|e| SandboxError::Engine(format!("container engine at {host}: {e}")))?;
        docker.ping().await.map_err(|e| {
            SandboxError::Engine(format!("container engine at {host} does not answer: {e}"))
        })?;
        Ok(Self { docker, host })
    }

    /// A client that has asked no engine anything, for tests that never reach one (port 9,
    /// discard, has nothing listening).
    #[cfg(test)]
    pub(crate) fn unconnected() -> Self {
        let host = "http://127.0.0.1:9";
        let docker = Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            .expect("an http client is made without connecting");
        Self {
            docker,
            host: host.to_owned(),
        }
    }

    /// The address it was reached at.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// An engine error, with what was being done.
    pub(crate) fn error(&self, doing: &str, e: bollard::errors::Error) -> SandboxError {
        SandboxError::Engine(format!(
            "{doing} on the container engine at {}: {e}",
            self.host
        ))
    }
}

/// A listed container's name (the engine lists it with a leading `/`).
pub(crate) fn summary_name(c: &ContainerSummary) -> Option<String> {
    c.names
        .as_ref()?
        .first()
        .map(|n| n.trim_start_matches('/').to_owned())
}

/// Whether an engine error means "no such object".
pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerEngine {
    /// Every container, running or not, that carries `label` (`key` or `key=value`);
    /// `listing` says what for, in an error. One label only: engines differ on whether
    /// several label filters must all match or any.
    pub(crate) async fn containers_labelled(
        &self,
        label: &str,
        listing: &str,
    ) -> Result<Vec<ContainerSummary>, SandboxError> {
        let filters = std::collections::HashMap::from([("label", vec![label])]);
        let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.error(&format!("listing {listing}"), e))
    }

    /// The IPv4 gateway of `network` (the engine's default bridge when `None`): the host's
    /// address on the sandboxes' network, where the control plane listens for them.
    pub async fn gateway(&self, network: Option<&str>) -> Result<std::net::Ipv4Addr, SandboxError> {
        let name = network.unwrap_or("bridge");
        let inspect = self
            .docker
            .inspect_network(name, None)
            .await
            .map_err(|e| self.error(&format!("inspecting network {name}"), e))?;
        inspect
            .ipam
            .and_then(|ipam| ipam.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.gateway)
            .find_map(|g| g.parse::<std::net::Ipv4Addr>().ok())
            .ok_or_else(|| {
                SandboxError::Engine(format!(
                    "network {name} on the container engine at {} has no IPv4 gateway; pass --docker-network with one",
                    self.host
                ))
            })
    }
}
