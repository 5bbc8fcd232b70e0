//! `kortix server`: the control plane in the foreground.

use crate::Global;
use crate::logging::{self, LogFormat};
use anyhow::{Context, Result};
use kortix_controlplane::config::{SandboxKind, ServerConfig, default_data_dir};
use kortix_controlplane::sandbox::local::IsolationMode;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sandbox {
    /// `kortix-agent` as a child process of the control plane.
    Local,
    /// Write each sandbox's bootstrap environment to `<data-dir>/bootstrap/<session>.json`
    /// for an outside orchestrator to run `kortix-agent` with.
    External,
    /// One container per session, booted from the project's snapshot, on a Docker Engine API
    /// (Docker, or Podman's compatible service).
    Docker,
    /// One Daytona sandbox per session through Daytona's REST API, booted from the project's
    /// snapshot built by Daytona (API key in DAYTONA_API_KEY; needs --public-url and
    /// --agent-url reachable from the internet).
    Daytona,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// Namespaces where the kernel allows them, else plain processes (with a warning).
    Auto,
    /// Each agent in new user, mount, PID, IPC and UTS namespaces, PID 1 there, seeing its
    /// workspace at /workspace and nothing of the data directory; refuse to boot without.
    Namespaces,
    /// Agents as plain child processes that see what the control plane sees.
    None,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Public listener: gRPC API, git smart HTTP, webhooks.
    #[arg(long, default_value = "127.0.0.1:8008")]
    pub listen: SocketAddr,
    /// Agent listener (mTLS gRPC).
    #[arg(long, default_value = "127.0.0.1:8009")]
    pub agent_listen: SocketAddr,
    /// PostgreSQL for scale-out (`postgres://…`); default SQLite in the data directory.
    #[arg(long, env = "KORTIX_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Sandbox provider.
    #[arg(long, value_enum, default_value = "local")]
    pub sandbox: Sandbox,
    /// URL sandboxes and clients use for the public listener [default: http://<listen>].
    #[arg(long)]
    pub public_url: Option<String>,
    /// URL sandboxes use for the agent listener [default: https://<agent-listen>]. With
    /// replicas, a comma-separated list of every replica's agent URL: agents enroll through
    /// any that answers and fail over between them.
    #[arg(long, env = "KORTIX_AGENT_URLS")]
    pub agent_url: Option<String>,
    /// The kortix-agent binary for local sandboxes [default: beside this binary, else PATH].
    #[arg(long, env = "KORTIX_AGENT_BIN")]
    pub agent_bin: Option<PathBuf>,
    /// How local sandboxes are confined.
    #[arg(long, value_enum, default_value = "auto", env = "KORTIX_ISOLATION")]
    pub isolation: Isolation,
    /// Root filesystem for isolated local sandboxes: a directory built by
    /// image/assemble-rootfs.sh (its own kortix-agent, git and OpenCode) [default: a minimal
    /// root derived from the host].
    #[arg(long, env = "KORTIX_SANDBOX_ROOT")]
    pub sandbox_root: Option<PathBuf>,
    /// Container engine for `--sandbox docker`: unix:///PATH or tcp://HOST:PORT [default:
    /// DOCKER_HOST, else unix:///var/run/docker.sock].
    #[arg(long)]
    pub docker_host: Option<String>,
    /// Network the containers of `--sandbox docker` join [default: the engine's bridge].
    #[arg(long)]
    pub docker_network: Option<String>,
    /// Containers per snapshot `--sandbox docker` starts ahead of sessions, so a session
    /// skips the container's start (0: none; at most 8).
    #[arg(long, default_value_t = 0, env = "KORTIX_WARM_POOL",
          value_parser = clap::value_parser!(u8).range(0..=8))]
    pub warm_pool: u8,
    /// Image of the platform default template for `--sandbox docker` and `--sandbox
    /// daytona` (no template chosen) [default: debian:bookworm-slim].
    #[arg(long, visible_alias = "docker-base-image")]
    pub base_image: Option<String>,
    /// OpenCode's native binary, copied into every snapshot's runtime layer (`--sandbox
    /// docker`, `--sandbox daytona`).
    #[arg(long, env = "KORTIX_SANDBOX_OPENCODE_BIN")]
    pub sandbox_opencode_bin: Option<PathBuf>,
    /// Daytona's API for `--sandbox daytona`. The API key is read from DAYTONA_API_KEY
    /// only, never from the command line.
    #[arg(long, default_value = kortix_controlplane::config::DAYTONA_API_URL)]
    pub daytona_api_url: String,
    /// Daytona organization to act in (`X-Daytona-Organization-ID`) [default: the API key's].
    #[arg(long, env = "DAYTONA_ORGANIZATION_ID")]
    pub daytona_organization_id: Option<String>,
    /// Hibernate running sessions idle this many seconds (0: never).
    #[arg(long, default_value_t = 900)]
    pub idle_timeout_secs: u64,
    /// Fail provisioning sessions whose agent has not connected after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub connect_deadline_secs: u64,
    /// Seconds a stopping agent gets before its sandbox is killed.
    #[arg(long, default_value_t = 30)]
    pub stop_grace_secs: u64,
    /// Fail a running session whose agent has not sent a heartbeat for this many seconds
    /// (after a restart, agents first get this plus 45 s to reconnect).
    #[arg(long, default_value_t = 90)]
    pub heartbeat_timeout_secs: u64,
    /// After a start, give the agents of sessions that were already live this many seconds
    /// beyond the heartbeat timeout to reconnect before any is judged lost (at least the
    /// agent's longest reconnect backoff, 30 s).
    #[arg(long, default_value_t = 45)]
    pub reconnect_grace_secs: u64,
    /// Fail a session whose agent connected but whose OpenCode is not ready this many seconds
    /// after the agent started; the session's reason carries OpenCode's last output.
    #[arg(long, default_value_t = 300)]
    pub start_deadline_secs: u64,
    /// Keep an ended local sandbox's directory (workspace, HOME, agent.log) this many seconds
    /// for debugging; 0 removes it as soon as its agent exits. It may hold secrets in
    /// OpenCode's database: keep it off outside debugging.
    #[arg(long, default_value_t = 0)]
    pub sandbox_retention_secs: u64,
    /// Longest a connector's upstream may take to answer one call, in seconds.
    #[arg(long, default_value_t = 30)]
    pub connector_timeout_secs: u64,
    /// Largest upstream answer passed to the agent, in bytes; longer ones are cut with a note.
    #[arg(long, default_value_t = 256 * 1024)]
    pub connector_max_response_bytes: usize,
    /// How long a connector call of a session started by a trigger (nobody to ask) waits for
    /// approval before it is denied, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub unattended_approval_secs: u64,
    /// The Slack Web API that Slack-bound projects post to.
    #[arg(long, default_value = kortix_controlplane::channels::slack::web::DEFAULT_API_URL)]
    pub slack_api_url: String,
    /// Turns on `[[apps]]` (experimental): the deploy sweep, `kortix apps …` and serving at
    /// `/apps/<project>/<slug>/` and by custom domain. `true` or `1` turns it on.
    #[arg(
        long = "apps-experimental",
        env = "KORTIX_APPS_EXPERIMENTAL",
        value_name = "BOOL",
        default_value = "false"
    )]
    pub apps_experimental: String,
    /// The longest an app's build command may run, in seconds.
    #[arg(long, default_value_t = 900)]
    pub app_build_timeout_secs: u64,
    /// Log lines for people (`pretty`) or one JSON object per line (`json`); `RUST_LOG`
    /// filters them.
    #[arg(long, value_enum, default_value = "pretty", env = "KORTIX_LOG_FORMAT")]
    pub log_format: LogFormat,
}

impl ServerArgs {
    pub fn config(&self, global: &Global) -> ServerConfig {
        let mut config =
            ServerConfig::new(global.data_dir.clone().unwrap_or_else(default_data_dir));
        config.listen = self.listen;
        config.agent_listen = self.agent_listen;
        config.database_url = self.database_url.clone();
        config.sandbox = match self.sandbox {
            Sandbox::Local => SandboxKind::Local,
            Sandbox::External => SandboxKind::External,
            Sandbox::Docker => SandboxKind::Docker,
            Sandbox::Daytona => SandboxKind::Daytona,
        };
        config.docker = kortix_controlplane::config::DockerSettings {
            host: self.docker_host.clone(),
            network: self.docker_network.clone(),
            warm_pool: usize::from(self.warm_pool),
        };
        config.images = kortix_controlplane::config::ImageSettings {
            base_image: self.base_image.clone(),
            opencode_bin: self.sandbox_opencode_bin.clone(),
        };
        config.daytona = kortix_controlplane::config::DaytonaSettings {
            api_url: self.daytona_api_url.clone(),
            api_key: std::env::var("DAYTONA_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            organization_id: self.daytona_organization_id.clone(),
        };
        config.public_url = self.public_url.clone();
        config.agent_url = self.agent_url.clone();
        config.agent_bin = self.agent_bin.clone();
        config.isolation = kortix_controlplane::sandbox::local::Isolation {
            mode: match self.isolation {
                Isolation::Auto => IsolationMode::Auto,
                Isolation::Namespaces => IsolationMode::Namespaces,
                Isolation::None => IsolationMode::None,
            },
            root: self
                .sandbox_root
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        };
        config.timings.idle_timeout = Duration::from_secs(self.idle_timeout_secs);
        config.timings.connect_deadline = Duration::from_secs(self.connect_deadline_secs);
        config.timings.stop_grace = Duration::from_secs(self.stop_grace_secs);
        config.timings.heartbeat_timeout = Duration::from_secs(self.heartbeat_timeout_secs);
        config.timings.start_deadline = Duration::from_secs(self.start_deadline_secs);
        config.timings.reconnect_grace = Duration::from_secs(self.reconnect_grace_secs);
        config.sandbox_retention = Duration::from_secs(self.sandbox_retention_secs);
        config.connectors = kortix_controlplane::connectors::ConnectorSettings {
            call_timeout: Duration::from_secs(self.connector_timeout_secs.max(1)),
            max_response_bytes: self.connector_max_response_bytes.max(1024),
            unattended_approval_ttl: Duration::from_secs(self.unattended_approval_secs),
            // The server journals under its data directory.
            call_journal: None,
        };
        config.slack_api_url = self.slack_api_url.clone();
        config.apps.enabled = kortix_controlplane::apps::flag_on(Some(&self.apps_experimental));
        config.apps.build_timeout = Duration::from_secs(self.app_build_timeout_secs.max(1));
        // Local agents log in the same shape as the server that runs them.
        if self.log_format == crate::logging::LogFormat::Json {
            config
                .agent_env
                .push(("KORTIX_LOG_FORMAT".into(), "json".into()));
        }
        config
    }
}

pub fn run(global: &Global, args: ServerArgs) -> Result<ExitCode> {
    logging::init(args.log_format);
    let config = args.config(global);
    runtime()?.block_on(serve(config, |_| {}))
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs a control plane until SIGINT or SIGTERM, then shuts it down gracefully.
pub async fn serve(
    config: ServerConfig,
    on_ready: impl FnOnce(&kortix_controlplane::server::RunningServer),
) -> Result<ExitCode> {
    let data_dir = config.data_dir.clone();
    let server = kortix_controlplane::server::start(config)
        .await
        .with_context(|| {
            format!(
                "starting the control plane (data dir {})",
                data_dir.display()
            )
        })?;
    on_ready(&server);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
