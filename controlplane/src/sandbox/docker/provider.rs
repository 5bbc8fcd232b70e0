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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bollard::models::{ContainerCreateBody, HostConfig};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::engine::{DockerEngine, is_not_found};
use crate::sandbox::{
    Inventory, LABEL_DEPLOYMENT, SandboxError, SandboxExit, SandboxProvider, SandboxResources,
    SandboxSpec, belongs_to,
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
}

pub struct DockerProvider {
    engine: DockerEngine,
    config: DockerConfig,
    exits: mpsc::Sender<SandboxExit>,
    /// Sessions whose container this replica watches.
    watched: Arc<Mutex<HashSet<String>>>,
}

fn container_name(session_id: &str) -> String {
    format!("kortix-session-{session_id}")
}

impl DockerProvider {
    pub fn new(
        engine: DockerEngine,
        config: DockerConfig,
        exits: mpsc::Sender<SandboxExit>,
    ) -> Self {
        Self {
            engine,
            config,
            exits,
            watched: Arc::default(),
        }
    }

    pub fn engine(&self) -> &DockerEngine {
        &self.engine
    }

    /// Follows a container until it exits, then removes it and reports the exit.
    fn watch(&self, session_id: &str) {
        if !self
            .watched
            .lock()
            .expect("watched lock")
            .insert(session_id.to_owned())
        {
            return;
        }
        let (engine, exits, watched, id) = (
            self.engine.clone(),
            self.exits.clone(),
            self.watched.clone(),
            session_id.to_owned(),
        );
        tokio::spawn(async move {
            let name = container_name(&id);
            let status = loop {
                // The wait request is bounded by the client's timeout: wait again until the
                // container has exited or is gone.
                let mut wait = engine.docker.wait_container(&name, None);
                match wait.next().await {
                    Some(Ok(r)) => {
                        break (format!("exit status {}", r.status_code), r.status_code == 0);
                    }
                    Some(Err(bollard::errors::Error::DockerContainerWaitError {
                        code, ..
                    })) => {
                        break (format!("exit status {code}"), code == 0);
                    }
                    Some(Err(e)) if is_not_found(&e) => {
                        break ("container removed".to_owned(), false);
                    }
                    Some(Err(e)) => {
                        tracing::debug!(session = %id, error = %e, "waiting for a container; again");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    None => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
                }
            };
            let _ = remove(&engine, &name).await;
            watched.lock().expect("watched lock").remove(&id);
            let _ = exits
                .send(SandboxExit {
                    session_id: id,
                    status: status.0,
                    success: status.1,
                })
                .await;
        });
    }
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
            let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            // The control plane's git endpoint is plain HTTP on the bridge's gateway: traffic
            // between a container and its bridge stays inside this host, so the session's
            // git token never crosses a network in clear text.
            env.push("KORTIX_ALLOW_CLEARTEXT_GIT=1".into());
            env.extend(
                self.config
                    .extra_env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}")),
            );
            let labels = HashMap::from([
                (LABEL_SESSION.to_owned(), spec.session_id.clone()),
                (LABEL_PROJECT.to_owned(), spec.resources.project_id.clone()),
                (LABEL_SNAPSHOT.to_owned(), image.clone()),
                (LABEL_DEPLOYMENT.to_owned(), self.config.deployment.clone()),
            ]);
            let body = ContainerCreateBody {
                image: Some(image),
                env: Some(env),
                labels: Some(labels),
                hostname: Some("sandbox".into()),
                host_config: Some(host_config(&spec.resources, self.config.network.as_deref())),
                ..Default::default()
            };
            let options = bollard::query_parameters::CreateContainerOptionsBuilder::default()
                .name(&name)
                .build();
            self.engine
                .docker
                .create_container(Some(options), body)
                .await
                .map_err(|e| boot_err(format!("creating container {name}: {e}")))?;
            if let Err(e) = self.engine.docker.start_container(&name, None).await {
                let _ = remove(&self.engine, &name).await;
                return Err(boot_err(format!("starting container {name}: {e}")));
            }
            self.watch(&spec.session_id);
            Ok(())
        })
    }

    fn kill<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move { remove(&self.engine, &container_name(session_id)).await })
    }

    fn is_running(&self, session_id: &str) -> bool {
        self.watched
            .lock()
            .expect("watched lock")
            .contains(session_id)
    }

    fn inventory(&self) -> BoxFuture<'_, Result<Inventory, SandboxError>> {
        Box::pin(async move {
            let filters = HashMap::from([("label", vec![LABEL_SESSION])]);
            let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            let containers = self
                .engine
                .docker
                .list_containers(Some(options))
                .await
                .map_err(|e| self.engine.error("listing sandboxes", e))?;
            let mut sandboxes = Vec::new();
            for c in containers {
                let labels = c.labels.as_ref();
                let Some(id) = labels.and_then(|l| l.get(LABEL_SESSION)).cloned() else {
                    continue;
                };
                let deployment = labels.and_then(|l| l.get(LABEL_DEPLOYMENT));
                if !belongs_to(deployment.map(String::as_str), &self.config.deployment) {
                    continue;
                }
                let running = matches!(
                    c.state,
                    Some(
                        bollard::models::ContainerSummaryStateEnum::RUNNING
                            | bollard::models::ContainerSummaryStateEnum::CREATED
                            | bollard::models::ContainerSummaryStateEnum::RESTARTING
                    )
                );
                if running {
                    // Started by an earlier run of the control plane (or another replica):
                    // follow it from now on, so its exit is reported.
                    self.watch(&id);
                    sandboxes.push(id);
                } else {
                    // Exited with nobody watching: what is left goes.
                    let _ = remove(&self.engine, &container_name(&id)).await;
                }
            }
            Ok(Inventory {
                sandboxes,
                complete: true,
            })
        })
    }

    fn ends_with_control_plane(&self) -> bool {
        false
    }

    fn discard<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move { remove(&self.engine, &container_name(session_id)).await })
    }
}
