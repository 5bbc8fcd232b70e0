//! An app's build in the project's snapshot: a container of it (`--sandbox docker`,
//! `sandbox::docker::command`) or a Daytona sandbox of it (`--sandbox daytona`,
//! `sandbox::daytona::command`). The snapshot is what a session of the project boots from —
//! its default template's Dockerfile plus the runtime layer, built once through the snapshot
//! service and shared with sessions — so the build has exactly the tools the project's
//! sessions have. The snapshot's build output goes into the deployment's log; then the
//! source goes in, the command runs with `[apps.env]`, and the workspace comes back for the
//! output directory to be kept. Both backends share this and `sandbox::workspace_archive`.

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::Apps;
use super::build::{BuildJob, LogTail};
use crate::sandbox::command::CommandEnd;
use crate::sandbox::daytona::DaytonaClient;
use crate::sandbox::daytona::command::{self as daytona, SandboxCommand};
use crate::sandbox::docker::DockerEngine;
use crate::sandbox::docker::command::{self as container, ContainerCommand};
use crate::snapshots::{Rebuild, Snapshots};
use crate::store::Project;

/// Where sessions run, so where builds run.
#[derive(Clone)]
pub enum BuildBackend {
    Docker {
        engine: DockerEngine,
        /// The network sessions join (`--docker-network`); `None` is the engine's bridge.
        network: Option<String>,
    },
    Daytona(std::sync::Arc<DaytonaClient>),
}

/// What builds in snapshots need: the backend sessions run on and the snapshot service.
#[derive(Clone)]
pub struct SnapshotBuilds {
    pub backend: BuildBackend,
    pub snapshots: Snapshots,
    /// This deployment's id (`sandbox::deployment_id`).
    pub deployment: String,
}

/// How a build in a snapshot went: how the command ended and where the source tree (with
/// what the command wrote) is now.
pub struct Built {
    pub end: CommandEnd,
    /// The build's `root_path` in the workspace that came back (`None` after a timeout).
    pub base: Option<PathBuf>,
}

impl Apps {
    /// Runs `job` in `project`'s default snapshot. `source` is the whole fetched tree and
    /// `job.base` its `root_path` inside it.
    pub(super) async fn run_in_snapshot(
        &self,
        builds: &SnapshotBuilds,
        project: &Project,
        deployment_id: &str,
        source: &Path,
        job: BuildJob<'_>,
        log: &LogTail,
    ) -> Result<Built, String> {
        let max_output_bytes = self.settings().max_content_bytes;
        let manifest = self
            .manifests()
            .get(&project.id, &project.default_branch)
            .await
            .map_err(|e| format!("reading the project's manifest: {e}"))?
            .for_session()
            .map_err(|e| format!("the project's manifest: {e}"))?;
        let template = manifest
            .resolve_template(None)
            .map_err(|e| format!("the project's default template: {e}"))?;
        let resources = crate::sessions::lifecycle::resources_of(template, &project.id);
        let recipe = builds
            .snapshots
            .recipe(project, template)
            .await
            .map_err(|e| e.to_string())?;
        log.line(&format!(
            "==> the project's snapshot {} (template {})",
            recipe.name, resources.template
        ));
        let sink = log.clone();
        let snapshot = builds
            .snapshots
            .ensure(
                &recipe,
                Rebuild::Never,
                Some(std::sync::Arc::new(move |line: &str| sink.line(line))),
            )
            .await
            .map_err(|e| e.to_string())?;
        let workdir = job
            .base
            .strip_prefix(source)
            .map_err(|_| "the build's root path is outside its source".to_string())?
            .to_string_lossy()
            .into_owned();
        let scratch = job.scratch.to_path_buf();
        tokio::fs::create_dir_all(&scratch)
            .await
            .map_err(|e| format!("creating {}: {e}", scratch.display()))?;
        let name = format!("kortix-app-build-{deployment_id}");
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let sink = log.clone();
        let copier = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                sink.line(&line);
            }
        });
        let ran = match &builds.backend {
            BuildBackend::Docker { engine, network } => {
                let cmd = ContainerCommand {
                    name,
                    image: snapshot.name.clone(),
                    argv: vec!["/bin/sh".into(), "-c".into(), job.command.to_string()],
                    source: source.to_path_buf(),
                    workdir: workdir.clone(),
                    env: job.env.clone(),
                    resources,
                    network: network.clone(),
                    deployment: builds.deployment.clone(),
                    build: deployment_id.to_string(),
                    timeout: job.timeout,
                    max_output_bytes,
                };
                log.line(&format!(
                    "==> running `{}` in a container of {} on {} (timeout {}s)",
                    job.command,
                    snapshot.name,
                    engine.host(),
                    job.timeout.as_secs()
                ));
                container::run(engine, &cmd, &scratch, tx).await
            }
            BuildBackend::Daytona(client) => {
                let cmd = SandboxCommand {
                    name,
                    snapshot: snapshot.name.clone(),
                    command: job.command.to_string(),
                    source: source.to_path_buf(),
                    workdir: workdir.clone(),
                    env: job.env.clone(),
                    deployment: builds.deployment.clone(),
                    build: deployment_id.to_string(),
                    timeout: job.timeout,
                    max_output_bytes,
                };
                log.line(&format!(
                    "==> running `{}` in a Daytona sandbox of {} at {} (timeout {}s)",
                    job.command,
                    snapshot.name,
                    client.api_url(),
                    job.timeout.as_secs()
                ));
                daytona::run(client, &cmd, &scratch, tx).await
            }
        };
        let _ = copier.await;
        let ran = ran.map_err(|e| e.to_string())?;
        log.line(&format!("==> the build {}", ran.end.describe()));
        let base = ran.workspace.map(|w| {
            if workdir.is_empty() {
                w
            } else {
                w.join(&workdir)
            }
        });
        Ok(Built { end: ran.end, base })
    }

    /// Removes build containers or sandboxes whose deployment is no longer building: left
    /// behind by a replica that stopped mid-build.
    pub(super) async fn remove_stale_builds(&self) -> Result<(), String> {
        let Some(builds) = self.snapshot_builds() else {
            return Ok(());
        };
        let found = match &builds.backend {
            BuildBackend::Docker { engine, .. } => {
                container::list(engine, &builds.deployment).await
            }
            BuildBackend::Daytona(client) => daytona::list(client, &builds.deployment).await,
        }
        .map_err(|e| e.to_string())?;
        for (deployment, name) in found {
            let building = self
                .store()
                .get_deployment(&deployment)
                .await
                .map_err(|e| format!("reading deployment {deployment}: {e}"))?
                .is_some_and(|d| d.status == crate::store::DeploymentStatus::Building);
            if building {
                continue;
            }
            match &builds.backend {
                BuildBackend::Docker { engine, .. } => container::remove(engine, &name).await,
                BuildBackend::Daytona(client) => daytona::remove(client, &name).await,
            }
            .map_err(|e| e.to_string())?;
            tracing::info!(build = %name, %deployment, "removed a stale app build");
        }
        Ok(())
    }
}
