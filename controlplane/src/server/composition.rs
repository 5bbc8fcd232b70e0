//! The object graph of a running control plane: which domain service gets which
//! collaborators. Built once per process from the [`Foundation`]; the listeners and the
//! background tasks only borrow from it.

use super::ServerError;
use super::engine::Backend;
use super::foundation::Foundation;
use crate::auth::Authenticator;
use crate::channels::slack::{Slack, web::WebApi};
use crate::config::{SandboxKind, ServerConfig, locate_agent_bin};
use crate::manifests::Manifests;
use crate::public::PublicServices;
use crate::sandbox::daytona::{DaytonaConfig, DaytonaProvider};
use crate::sandbox::docker::{DockerConfig, DockerProvider};
use crate::sandbox::local::{LocalConfig, LocalProvider};
use crate::sandbox::opencode_packages::OpencodePackages;
use crate::sandbox::{SandboxExit, SandboxProvider, deployment_id};
use crate::secrets::ProjectSecrets;
use crate::sessions::cluster::Cluster;
use crate::sessions::{SessionConfig, Sessions, live::Hub};
use crate::snapshots::Snapshots;
use crate::triggers::Triggers;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Where this replica is reached: by people and git (public) and by agents; and where its
/// sandboxes reach it (the container network's gateway under `--sandbox docker`, else the
/// same addresses: under `--sandbox daytona` the advertised ones).
pub(super) struct Urls {
    pub public: String,
    pub agent: String,
    pub sandbox_public: String,
    pub sandbox_agent: String,
}

/// Every long-lived service of one replica, wired together.
pub(super) struct Services {
    pub provider: Arc<dyn SandboxProvider>,
    pub hub: Hub,
    /// Wake-ups to and from the other replicas (PostgreSQL only); taken by the background.
    pub cluster: Option<Cluster>,
    pub manifests: Arc<Manifests>,
    pub secrets: ProjectSecrets,
    pub sessions: Sessions,
    pub triggers: Triggers,
    pub connectors: crate::connectors::Connectors,
    pub slack: Slack,
    pub apps: crate::apps::Apps,
}

impl Services {
    /// Wires the services; sandbox exits arrive on the returned channel.
    pub fn compose(
        config: &ServerConfig,
        base: &Foundation,
        urls: &Urls,
        engine: Option<(Backend, Snapshots)>,
    ) -> Result<(Self, mpsc::Receiver<SandboxExit>), ServerError> {
        let (exit_tx, exit_rx) = mpsc::channel::<SandboxExit>(1024);
        let (backend, snapshots) = engine.unzip();
        // Under `--sandbox docker` and `daytona` an app builds in its project's snapshot.
        let snapshot_builds = match (&backend, &snapshots) {
            (Some(backend), Some(snapshots)) => Some(crate::apps::SnapshotBuilds {
                backend: match backend {
                    Backend::Docker(docker) => crate::apps::BuildBackend::Docker {
                        engine: docker.clone(),
                        network: config.docker.network.clone(),
                    },
                    Backend::Daytona(client) => crate::apps::BuildBackend::Daytona(client.clone()),
                },
                snapshots: snapshots.clone(),
                deployment: deployment_id(&base.ca.fingerprint()),
            }),
            _ => None,
        };
        let provider = sandbox_provider(config, base, backend, exit_tx)?;
        let hub = Hub::new();
        let cluster = Cluster::attach(&base.store, &hub);
        let manifests = Arc::new(Manifests::new(base.repos.clone()));
        let secrets = ProjectSecrets::new(base.store.clone(), base.master_key.clone(), hub.clone());
        let mut sessions = Sessions::new(
            base.store.clone(),
            base.repos.clone(),
            provider.clone(),
            hub.clone(),
            manifests.clone(),
            session_config(config, base, urls),
        );
        if let Some(snapshots) = snapshots {
            sessions = sessions.with_snapshots(snapshots);
        }
        let triggers = Triggers::new(
            base.store.clone(),
            manifests.clone(),
            secrets.clone(),
            Arc::new(sessions.clone()),
        );
        let connectors = crate::connectors::Connectors::new(
            sessions.clone(),
            manifests.clone(),
            base.repos.clone(),
            base.master_key.clone(),
            secrets.clone(),
            crate::connectors::ConnectorSettings {
                call_journal: Some(base.data_dir.join("connector-calls")),
                ..config.connectors.clone()
            },
        )
        .map_err(|e| ServerError::Setup(e.to_string()))?;
        let web = WebApi::new(&config.slack_api_url)
            .map_err(|e| ServerError::Setup(format!("the Slack Web API client: {e}")))?;
        let slack = Slack::new(
            base.store.clone(),
            base.master_key.clone(),
            sessions.clone(),
            connectors.clone(),
            web,
            urls.public.clone(),
        );
        let apps = crate::apps::Apps::new(
            base.store.clone(),
            base.repos.clone(),
            manifests.clone(),
            config.apps.clone(),
            config.isolation.clone(),
            &base.data_dir,
            urls.public.clone(),
        );
        let apps = match snapshot_builds {
            Some(builds) => apps.build_in_snapshots(builds),
            None => apps,
        };
        if apps.enabled() {
            tracing::warn!("apps are on ({}=true): experimental", crate::apps::FLAG);
        }
        Ok((
            Self {
                apps,
                slack,
                provider,
                hub,
                cluster,
                manifests,
                secrets,
                sessions,
                triggers,
                connectors,
            },
            exit_rx,
        ))
    }

    /// The services behind the public listener (gRPC API, git, webhooks, metrics).
    pub fn public(&self, base: &Foundation, urls: &Urls) -> Result<PublicServices, ServerError> {
        let hooks_dir = base.data_dir.join("hooks");
        let store = &base.store;
        // One authenticator (and so one token cache) for the API and git.
        let authenticator = Authenticator::new(store.clone());
        Ok(PublicServices {
            accounts: crate::accounts::Accounts::new(store.clone(), authenticator.clone()),
            project_access: crate::project_access::ProjectAccess::new(
                store.clone(),
                authenticator.clone(),
            ),
            projects: crate::projects::Projects::new(
                store.clone(),
                base.repos.clone(),
                self.manifests.clone(),
                urls.public.clone(),
                base.data_dir.clone(),
            ),
            change_requests: crate::change_requests::ChangeRequests::new(
                store.clone(),
                base.repos.clone(),
            ),
            secrets: self.secrets.clone(),
            sessions: self.sessions.clone(),
            connectors: self.connectors.clone(),
            triggers: self.triggers.clone(),
            apps: self.apps.clone(),
            slack: self.slack.clone(),
            authenticator: Arc::new(authenticator.clone()),
            git: crate::git::GitHttpState::new(
                Arc::new(crate::auth::GitAuth::new(store.clone(), authenticator)),
                base.repos.clone(),
                hooks_dir.clone(),
                crate::git::GitHttpLimits::default(),
            )
            .map_err(|source| ServerError::DataDir {
                path: hooks_dir,
                source,
            })?,
            store: store.clone(),
            hub: self.hub.clone(),
            public_url: urls.public.clone(),
        })
    }
}

fn sandbox_provider(
    config: &ServerConfig,
    base: &Foundation,
    backend: Option<Backend>,
    exit_tx: mpsc::Sender<SandboxExit>,
) -> Result<Arc<dyn SandboxProvider>, ServerError> {
    let data_dir = &base.data_dir;
    Ok(match config.sandbox {
        SandboxKind::Docker => {
            let Some(Backend::Docker(docker)) = backend else {
                return Err(ServerError::Setup(
                    "--sandbox docker without a container engine".into(),
                ));
            };
            Arc::new(DockerProvider::new(
                docker,
                DockerConfig {
                    network: config.docker.network.clone(),
                    extra_env: config.agent_env.clone(),
                    deployment: deployment_id(&base.ca.fingerprint()),
                    warm_pool: config.docker.warm_pool,
                },
                exit_tx,
            ))
        }
        SandboxKind::Daytona => {
            let Some(Backend::Daytona(client)) = backend else {
                return Err(ServerError::Setup(
                    "--sandbox daytona without Daytona's API".into(),
                ));
            };
            Arc::new(DaytonaProvider::new(
                client,
                DaytonaConfig {
                    extra_env: config.agent_env.clone(),
                    deployment: deployment_id(&base.ca.fingerprint()),
                },
                exit_tx,
            ))
        }
        SandboxKind::Local => {
            let local = LocalProvider::new(
                LocalConfig {
                    root: data_dir.join("sandboxes"),
                    agent_bin: config.agent_bin.clone().unwrap_or_else(locate_agent_bin),
                    extra_env: config.agent_env.clone(),
                    isolation: config.isolation.clone(),
                    retention: config.sandbox_retention,
                },
                exit_tx,
            );
            let local = match sandbox_opencode(&config.agent_env) {
                Some(bin) => local.with_opencode_packages(Arc::new(OpencodePackages::new(
                    config.opencode_packages_root(),
                    bin,
                ))),
                None => {
                    tracing::info!(
                        "no OpenCode found for sandboxes (KORTIX_OPENCODE_BIN or PATH): OpenCode's packages are not pre-installed"
                    );
                    local
                }
            };
            Arc::new(local)
        }
        SandboxKind::External => Arc::new(
            crate::sandbox::external::ExternalProvider::new(data_dir.join("bootstrap"), exit_tx)
                .map_err(|source| ServerError::DataDir {
                    path: data_dir.join("bootstrap"),
                    source,
                })?,
        ),
    })
}

/// The OpenCode local sandboxes run: `KORTIX_OPENCODE_BIN` of the agents' environment or of
/// this process, else `opencode` on `PATH` (what the agent falls back to).
fn sandbox_opencode(agent_env: &[(String, String)]) -> Option<PathBuf> {
    let named = agent_env
        .iter()
        .rev()
        .find(|(k, _)| k == "KORTIX_OPENCODE_BIN")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("KORTIX_OPENCODE_BIN").ok())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "opencode".into());
    let named = PathBuf::from(named);
    if named.components().count() > 1 {
        return named.is_file().then_some(named);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(&named))
            .find(|candidate| candidate.is_file())
    })
}

fn session_config(config: &ServerConfig, base: &Foundation, urls: &Urls) -> SessionConfig {
    let timings = &config.timings;
    let mut session = SessionConfig::new(
        urls.sandbox_agent.clone(),
        urls.sandbox_public.clone(),
        base.ca.cert_pem().to_string(),
    );
    session.connect_deadline = timings.connect_deadline;
    session.stop_grace = timings.stop_grace;
    session.idle_timeout = timings.idle_timeout;
    session.heartbeat_timeout = timings.heartbeat_timeout;
    session.start_deadline = timings.start_deadline;
    session.reconnect_grace = timings.reconnect_grace;
    session.store_poll = timings.store_poll;
    session
}
