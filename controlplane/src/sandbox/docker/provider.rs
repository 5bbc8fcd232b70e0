//! One container per session, from the session's snapshot.
//!
//! - Labels `kortix.session`, `kortix.project`, `kortix.snapshot`, `kortix.deployment`: the
//!   inventory is "every container with `kortix.session` of this deployment", complete, so a
//!   live session whose container is gone fails as "sandbox lost" and a container whose
//!   session is not live is removed — never another deployment's on the same engine.
//! - Limits from the template: CPUs (`NanoCpus`), memory (`Memory`, swap equal so it is a
//!   hard limit) and always a PIDs limit. Disk is not enforced (the common storage drivers
//!   take no per-container size); the session's records say so.
//! - Not privileged, `no-new-privileges`, every capability dropped except [`CAPABILITIES`]:
//!   the agent runs as root in the container and OpenCode's tools install packages and
//!   change file ownership, which needs those; nothing else (no `NET_RAW`, no `SYS_*`).
//! - No host mounts. The engine's default bridge network unless configured otherwise: the
//!   sandbox reaches the internet and the bridge's addresses, including the control plane's
//!   listeners on the bridge gateway (see `sandbox_address`), but not the host's loopback.
//! - The container goes when its agent exits (the branch persists); stop and hibernate
//!   remove it.

use std::collections::HashMap;
use std::sync::Arc;

use bollard::models::{ContainerCreateBody, HostConfig};
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::engine::{DockerEngine, is_not_found, summary_name};
use super::exit_watch::ExitWatch;
use super::pool::{
    self, ASSIGNMENT_ENV, ASSIGNMENT_FILE, LABEL_POOL, MEMBER_PREFIX, Recipe, WarmPool,
};
use crate::sandbox::{
    Inventory, LABEL_DEPLOYMENT, SandboxError, SandboxExit, SandboxProvider, SandboxResources,
    SandboxSpec, SnapshotBuilder, belongs_to,
};

pub const LABEL_SESSION: &str = "kortix.session";
pub const LABEL_PROJECT: &str = "kortix.project";
pub const LABEL_SNAPSHOT: &str = "kortix.snapshot";

/// The capabilities a sandbox keeps (all others are dropped).
pub const CAPABILITIES: [&str; 7] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
];

/// Processes a sandbox may have when the template says nothing.
const PIDS_LIMIT: i64 = 4096;

#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The network sandboxes join; `None` is the engine's default bridge.
    pub network: Option<String>,
    /// Extra environment for every sandbox.
    pub extra_env: Vec<(String, String)>,
    /// This deployment's id (`sandbox::deployment_id`), on every container it makes.
    pub deployment: String,
    /// Containers per snapshot started ahead of sessions (`--warm-pool`; 0: none).
    pub warm_pool: usize,
}

pub struct DockerProvider {
    engine: DockerEngine,
    config: DockerConfig,
    /// The sessions whose container this replica follows, and their exits.
    exit_watch: Arc<ExitWatch>,
    pool: Option<Arc<WarmPool>>,
}

const SESSION_PREFIX: &str = "kortix-session-";

pub(crate) fn container_name(session_id: &str) -> String {
    format!("{SESSION_PREFIX}{session_id}")
}

/// The session whose container is named `name`, if it is a session's.
pub(crate) fn session_of_container(name: &str) -> Option<&str> {
    name.strip_prefix(SESSION_PREFIX)
}

impl DockerProvider {
    pub fn new(
        engine: DockerEngine,
        config: DockerConfig,
        exits: mpsc::Sender<SandboxExit>,
    ) -> Self {
        let pool = (config.warm_pool > 0).then(|| Arc::new(WarmPool::new(config.warm_pool)));
        let exit_watch = ExitWatch::new(engine.clone(), exits);
        Self {
            engine,
            config,
            exit_watch,
            pool,
        }
    }

    pub fn engine(&self) -> &DockerEngine {
        &self.engine
    }

    /// Follows a session's container until it exits, then removes it and reports the exit.
    fn watch(&self, session_id: &str) {
        self.exit_watch.follow(session_id);
    }
}

impl DockerProvider {
    /// What every container of this provider gets, whatever its session.
    fn provider_env(&self) -> Vec<String> {
        // The control plane's git endpoint is plain HTTP on the bridge's gateway: traffic
        // between a container and its bridge stays inside this host, so the session's git
        // token never crosses a network in clear text.
        std::iter::once("KORTIX_ALLOW_CLEARTEXT_GIT=1".to_owned())
            .chain(
                self.config
                    .extra_env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}")),
            )
            .collect()
    }

    /// Starts what the pool lacks for `recipe`, a moment later: a container's start takes
    /// CPU the session just assigned needs for its own start.
    fn refill(&self, pool: &Arc<WarmPool>, recipe: &Recipe) {
        let (count, evicted) = pool.want(recipe);
        if !evicted.is_empty() {
            let engine = self.engine.clone();
            tokio::spawn(async move {
                for name in evicted {
                    let _ = remove(&engine, &name).await;
                }
            });
        }
        if count > 0 {
            self.create_members(pool, recipe.clone(), count, REFILL_DELAY);
        }
    }

    fn create_members(
        &self,
        pool: &Arc<WarmPool>,
        recipe: Recipe,
        count: usize,
        delay: std::time::Duration,
    ) {
        let (engine, pool) = (self.engine.clone(), pool.clone());
        let mut env = self.provider_env();
        env.push(format!("{ASSIGNMENT_ENV}={ASSIGNMENT_FILE}"));
        let (network, deployment) = (self.config.network.clone(), self.config.deployment.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for _ in 0..count {
                // A pruned snapshot (or an image removed by hand) is not kept warm: a session
                // that wants it again builds it and asks anew.
                if matches!(engine.exists(&recipe.image).await, Ok(false)) {
                    tracing::info!(image = %recipe.image, "the image is gone; no longer kept warm");
                    for name in pool.forget(&recipe) {
                        let _ = remove(&engine, &name).await;
                    }
                    return;
                }
                let name = format!("{MEMBER_PREFIX}{:016x}", rand::random::<u64>());
                let labels = HashMap::from([
                    (LABEL_POOL.to_owned(), pool::key_digest(&recipe)),
                    (
                        LABEL_PROJECT.to_owned(),
                        recipe.resources.project_id.clone(),
                    ),
                    (LABEL_SNAPSHOT.to_owned(), recipe.image.clone()),
                    (LABEL_DEPLOYMENT.to_owned(), deployment.clone()),
                ]);
                let body = container_body(
                    recipe.image.clone(),
                    env.clone(),
                    labels,
                    &recipe.resources,
                    network.as_deref(),
                );
                let created = match create_and_start(&engine, &name, body).await {
                    Ok(()) => Some(name.clone()),
                    Err(e) => {
                        tracing::warn!(image = %recipe.image, error = %e, "starting a warm container");
                        None
                    }
                };
                let made = created.is_some();
                if !pool.filled(&recipe, created) || !made {
                    let _ = remove(&engine, &name).await;
                }
            }
        });
    }

    /// Gives a warm container to a session: its name becomes the session's, and its agent
    /// gets the session's variables.
    async fn assign(
        &self,
        member: &str,
        name: &str,
        spec: &SandboxSpec,
    ) -> Result<(), SandboxError> {
        let options = bollard::query_parameters::RenameContainerOptionsBuilder::default()
            .name(name)
            .build();
        self.engine
            .docker
            .rename_container(member, options)
            .await
            .map_err(|e| {
                self.engine
                    .error(&format!("renaming {member} to {name}"), e)
            })?;
        let archive = pool::assignment_archive(&spec.env)
            .map_err(|e| SandboxError::Engine(format!("the assignment of {name}: {e}")))?;
        let options = bollard::query_parameters::UploadToContainerOptionsBuilder::default()
            .path("/")
            .build();
        self.engine
            .docker
            .upload_to_container(name, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(|e| self.engine.error(&format!("assigning {name}"), e))
    }
}

impl DockerProvider {
    /// A warm container this replica's pool does not hold: another replica's (left alone
    /// while it could still be in use), or left by a replica that died (removed once past
    /// any member's lifetime), or one that exited.
    async fn sweep_stray_member(&self, name: &str, created: Option<i64>, running: bool) {
        if self.pool.as_ref().is_some_and(|p| p.holds(name)) {
            return;
        }
        let age = created
            .and_then(|c| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_secs() as i64;
                u64::try_from(now - c).ok()
            })
            .map(std::time::Duration::from_secs);
        // A minute past the lifetime: its own replica had time to replace it.
        let expired =
            age.is_none_or(|a| a > pool::MEMBER_LIFETIME + std::time::Duration::from_secs(60));
        if !running || expired {
            let _ = remove(&self.engine, name).await;
        }
    }
}

/// How long after a take the pool starts a replacement. The session that took a member
/// starts OpenCode in the seconds after (2.5 s on 2 cores); a replacement created 3 s after
/// the take overlapped it and made it 1–1.5 s slower in three of four benchmark runs
/// (BENCHMARKS.md, "warm pool"), so the replacement waits until that start is over.
const REFILL_DELAY: std::time::Duration = std::time::Duration::from_secs(10);

/// A sandbox container's definition.
fn container_body(
    image: String,
    env: Vec<String>,
    labels: HashMap<String, String>,
    resources: &SandboxResources,
    network: Option<&str>,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image),
        env: Some(env),
        labels: Some(labels),
        hostname: Some("sandbox".into()),
        host_config: Some(host_config(resources, network)),
        ..Default::default()
    }
}

/// Creates and starts a container; one that does not start is removed.
async fn create_and_start(
    engine: &DockerEngine,
    name: &str,
    body: ContainerCreateBody,
) -> Result<(), String> {
    let options = bollard::query_parameters::CreateContainerOptionsBuilder::default()
        .name(name)
        .build();
    engine
        .docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| format!("creating container {name}: {e}"))?;
    if let Err(e) = engine.docker.start_container(name, None).await {
        let _ = remove(engine, name).await;
        return Err(format!("starting container {name}: {e}"));
    }
    Ok(())
}

pub(crate) async fn remove(engine: &DockerEngine, name: &str) -> Result<(), SandboxError> {
    let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
        .force(true)
        .build();
    match engine.docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        // Removal already under way (the engine's 409) is as good as done.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(e) => Err(engine.error(&format!("removing container {name}"), e)),
    }
}

/// The host configuration of a sandbox: limits, capabilities, network, no mounts.
pub(crate) fn host_config(r: &SandboxResources, network: Option<&str>) -> HostConfig {
    let memory = r.memory_gib.map(|g| i64::from(g) << 30);
    HostConfig {
        nano_cpus: r.cpu.map(|c| i64::from(c) * 1_000_000_000),
        memory,
        memory_swap: memory,
        pids_limit: Some(PIDS_LIMIT),
        privileged: Some(false),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
        security_opt: Some(vec!["no-new-privileges".into()]),
        network_mode: Some(network.unwrap_or("bridge").to_owned()),
        binds: None,
        mounts: None,
        init: Some(false),
        ..Default::default()
    }
}

impl SandboxProvider for DockerProvider {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn boot(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(async move {
            let boot_err = |message: String| spec.boot_error(message);
            let image = spec.snapshot()?;
            let name = container_name(&spec.session_id);
            let recipe = Recipe {
                image: image.clone(),
                resources: spec.resources.clone(),
            };
            if let Some(pool) = &self.pool {
                let taken = pool.take(&recipe);
                self.refill(pool, &recipe);
                if let Some(member) = taken {
                    match self.assign(&member.name, &name, &spec).await {
                        Ok(()) => {
                            tracing::info!(session = %spec.session_id, member = %member.name, "sandbox from the warm pool");
                            self.watch(&spec.session_id);
                            return Ok(());
                        }
                        Err(e) => {
                            tracing::warn!(session = %spec.session_id, member = %member.name, error = %e, "a warm container could not be assigned; starting a new one");
                            let _ = remove(&self.engine, &member.name).await;
                            let _ = remove(&self.engine, &name).await;
                        }
                    }
                }
            }
            let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            env.extend(self.provider_env());
            let labels = HashMap::from([
                (LABEL_SESSION.to_owned(), spec.session_id.clone()),
                (LABEL_PROJECT.to_owned(), spec.resources.project_id.clone()),
                (LABEL_SNAPSHOT.to_owned(), image.clone()),
                (LABEL_DEPLOYMENT.to_owned(), self.config.deployment.clone()),
            ]);
            let body = container_body(
                image,
                env,
                labels,
                &spec.resources,
                self.config.network.as_deref(),
            );
            create_and_start(&self.engine, &name, body)
                .await
                .map_err(boot_err)?;
            self.watch(&spec.session_id);
            Ok(())
        })
    }

    fn kill<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move { remove(&self.engine, &container_name(session_id)).await })
    }

    fn is_running(&self, session_id: &str) -> bool {
        self.exit_watch.is_followed(session_id)
    }

    fn inventory(&self) -> BoxFuture<'_, Result<Inventory, SandboxError>> {
        Box::pin(async move {
            let mut sandboxes = Vec::new();
            // A session's container carries its session's label, or — taken from the warm
            // pool, whose labels were set before any session — the pool's and the session's
            // name.
            for label in [LABEL_SESSION, LABEL_POOL] {
                for c in self.engine.containers_labelled(label, "sandboxes").await? {
                    let labels = c.labels.as_ref();
                    let deployment = labels.and_then(|l| l.get(LABEL_DEPLOYMENT));
                    if !belongs_to(deployment.map(String::as_str), &self.config.deployment) {
                        continue;
                    }
                    let name = summary_name(&c).unwrap_or_default();
                    let session = match label {
                        LABEL_SESSION => labels.and_then(|l| l.get(LABEL_SESSION)).cloned(),
                        _ => session_of_container(&name).map(str::to_owned),
                    };
                    let running = matches!(
                        c.state,
                        Some(
                            bollard::models::ContainerSummaryStateEnum::RUNNING
                                | bollard::models::ContainerSummaryStateEnum::CREATED
                                | bollard::models::ContainerSummaryStateEnum::RESTARTING
                        )
                    );
                    match session {
                        Some(id) if running => {
                            // Started by an earlier run of the control plane (or another
                            // replica): follow it from now on, so its exit is reported.
                            self.watch(&id);
                            sandboxes.push(id);
                        }
                        // Exited with nobody watching: what is left goes.
                        Some(_) => {
                            let _ = remove(&self.engine, &name).await;
                        }
                        None => self.sweep_stray_member(&name, c.created, running).await,
                    }
                }
            }
            Ok(Inventory {
                sandboxes,
                complete: true,
            })
        })
    }

    fn housekeep(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(pool) = &self.pool else { return };
            let upkeep = pool.upkeep();
            for name in upkeep.remove {
                let _ = remove(&self.engine, &name).await;
            }
            for (recipe, count) in upkeep.create {
                self.create_members(pool, recipe, count, std::time::Duration::ZERO);
            }
        })
    }

    fn release_spares(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(pool) = &self.pool else { return };
            let removals = pool.drain().into_iter().map(|name| {
                let engine = self.engine.clone();
                async move { remove(&engine, &name).await }
            });
            futures::future::join_all(removals).await;
        })
    }

    fn ends_with_control_plane(&self) -> bool {
        false
    }

    fn discard<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move { remove(&self.engine, &container_name(session_id)).await })
    }
}
