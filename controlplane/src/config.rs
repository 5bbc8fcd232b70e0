//! How a control plane is configured (`kortix server` flags and their defaults).

use crate::sessions::SessionConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxKind {
    /// `kortix-agent` as a child process.
    Local,
    /// Bootstrap files for an outside orchestrator (see `sandbox::external`).
    External,
    /// One container per session on a Docker Engine API (see `sandbox::docker`), booted from
    /// the session's snapshot.
    Docker,
    /// One Daytona sandbox per session through Daytona's REST API (see `sandbox::daytona`),
    /// booted from the session's snapshot built by Daytona.
    Daytona,
}

/// What every image-booting provider (docker, daytona) builds snapshots from.
#[derive(Debug, Clone, Default)]
pub struct ImageSettings {
    /// The image of the platform default template; `None`: `debian:bookworm-slim`.
    pub base_image: Option<String>,
    /// The OpenCode binary of the runtime layer (the native one, not the npm wrapper).
    pub opencode_bin: Option<PathBuf>,
}

/// The container engine of `SandboxKind::Docker`.
#[derive(Debug, Clone, Default)]
pub struct DockerSettings {
    /// `unix:///path` or `tcp://host:port`; `None`: `DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// The network sandboxes join; `None`: the engine's default bridge.
    pub network: Option<String>,
    /// Containers per snapshot started ahead of sessions (0: none; at most
    /// `sandbox::docker::pool::MAX_PER_SNAPSHOT`).
    pub warm_pool: usize,
}

/// Daytona's API of `SandboxKind::Daytona`.
#[derive(Clone)]
pub struct DaytonaSettings {
    /// The API's base URL, `https://app.daytona.io/api` unless configured otherwise.
    pub api_url: String,
    /// The API key (`DAYTONA_API_KEY`); never logged, never on a command line.
    pub api_key: Option<String>,
    /// Sent as `X-Daytona-Organization-ID` when set.
    pub organization_id: Option<String>,
}

/// Daytona's hosted API.
pub const DAYTONA_API_URL: &str = "https://app.daytona.io/api";

impl Default for DaytonaSettings {
    fn default() -> Self {
        Self {
            api_url: DAYTONA_API_URL.into(),
            api_key: None,
            organization_id: None,
        }
    }
}

impl std::fmt::Debug for DaytonaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaytonaSettings")
            .field("api_url", &self.api_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("organization_id", &self.organization_id)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// Public listener: people's gRPC, git smart HTTP, webhooks, metrics.
    pub listen: SocketAddr,
    /// Agent listener: mTLS gRPC for session agents.
    pub agent_listen: SocketAddr,
    /// `postgres://…` for scale-out; `None` is SQLite in the data directory.
    pub database_url: Option<String>,
    pub sandbox: SandboxKind,
    /// How sandboxes and clients reach the public listener; defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// How sandboxes reach the agent listener; defaults to `https://<agent_listen>`. A
    /// comma-separated list names every replica's agent listener: sandboxes get all of them
    /// (`KORTIX_CONTROL_PLANE`), enroll through any that answers and fail over between them.
    pub agent_url: Option<String>,
    /// The `kortix-agent` binary the local provider runs; defaults to the one beside this
    /// executable, else `kortix-agent` on `PATH`.
    pub agent_bin: Option<PathBuf>,
    /// Extra environment for every local sandbox.
    pub agent_env: Vec<(String, String)>,
    /// Where OpenCode's packages are installed for local sandboxes, one directory per
    /// OpenCode version (`sandbox::opencode_packages`); `None` is `<data-dir>/opencode-packages`.
    pub opencode_packages: Option<PathBuf>,
    /// How local sandboxes are confined: namespaces where the kernel allows (the default),
    /// and the root filesystem they get.
    pub isolation: crate::sandbox::local::Isolation,
    /// Session timings (connect deadline, stop grace, idle timeout, …).
    pub timings: Timings,
    /// How long an ended local sandbox's directory is kept for debugging (zero: removed when
    /// its agent exits).
    pub sandbox_retention: Duration,
    /// The engine of `SandboxKind::Docker`.
    pub docker: DockerSettings,
    /// The API of `SandboxKind::Daytona`.
    pub daytona: DaytonaSettings,
    /// The base image and runtime layer of snapshots (`Docker` and `Daytona`).
    pub images: ImageSettings,
    /// The connector broker's limits (upstream timeout, answer cap, unattended approvals).
    pub connectors: crate::connectors::ConnectorSettings,
    /// The Slack Web API the Slack channel calls (tests point it at a local stand-in).
    pub slack_api_url: String,
    /// `[[apps]]` (experimental): off unless `KORTIX_APPS_EXPERIMENTAL=true`.
    pub apps: crate::apps::AppSettings,
}

#[derive(Debug, Clone)]
pub struct Timings {
    pub connect_deadline: Duration,
    pub stop_grace: Duration,
    pub idle_timeout: Duration,
    pub heartbeat_timeout: Duration,
    pub start_deadline: Duration,
    pub reconnect_grace: Duration,
    /// Attach and WatchSession re-read the store this often without a wake-up.
    pub store_poll: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        let d = SessionConfig::new(String::new(), String::new(), String::new());
        Self {
            connect_deadline: d.connect_deadline,
            stop_grace: d.stop_grace,
            idle_timeout: d.idle_timeout,
            heartbeat_timeout: d.heartbeat_timeout,
            start_deadline: d.start_deadline,
            reconnect_grace: d.reconnect_grace,
            store_poll: d.store_poll,
        }
    }
}

/// The URLs of a comma-separated agent URL list, trimmed, without empty entries.
pub fn agent_url_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|u| !u.is_empty())
}

/// Checks an agent URL list: at least one URL, each `https://host[:port]`, at most 16.
pub fn check_agent_urls(list: &str) -> Result<(), String> {
    let urls: Vec<&str> = agent_url_list(list).collect();
    if urls.is_empty() {
        return Err("--agent-url names no URL".into());
    }
    if urls.len() > 16 {
        return Err(format!("--agent-url names {} URLs; at most 16", urls.len()));
    }
    for url in urls {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("--agent-url {url:?} must be an https:// URL"))?;
        if rest.split('/').next().is_none_or(str::is_empty) {
            return Err(format!("--agent-url {url:?} has no host"));
        }
    }
    Ok(())
}

impl ServerConfig {
    /// Where OpenCode's package sets are installed: `opencode_packages`, else
    /// `<data-dir>/opencode-packages`.
    pub fn opencode_packages_root(&self) -> PathBuf {
        self.opencode_packages
            .clone()
            .unwrap_or_else(|| self.data_dir.join("opencode-packages"))
    }

    /// The embedded defaults: SQLite and repos in `data_dir`, local sandboxes.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
            agent_listen: SocketAddr::from(([127, 0, 0, 1], 8009)),
            database_url: None,
            sandbox: SandboxKind::Local,
            public_url: None,
            agent_url: None,
            agent_bin: None,
            agent_env: Vec::new(),
            opencode_packages: None,
            isolation: Default::default(),
            timings: Timings::default(),
            sandbox_retention: Duration::ZERO,
            docker: DockerSettings::default(),
            daytona: DaytonaSettings::default(),
            images: ImageSettings::default(),
            connectors: Default::default(),
            slack_api_url: crate::channels::slack::web::DEFAULT_API_URL.to_string(),
            apps: crate::apps::AppSettings::default(),
        }
    }
}

/// `~/.kortix`, or `./.kortix` when there is no home directory.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".kortix")
}

/// Where the `kortix-agent` binary is: beside the running executable, else on `PATH`.
pub fn locate_agent_bin() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        for dir in [exe.parent(), exe.parent().and_then(|p| p.parent())]
            .into_iter()
            .flatten()
        {
            let candidate = dir.join("kortix-agent");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("kortix-agent")
}
