//! One command in a container of a snapshot, to its end: what an app's build runs in under
//! `--sandbox docker`, so it sees exactly the tools a session of the project sees.
//!
//! The engine may be remote (`tcp://`), so nothing is bind-mounted: the source goes in as a
//! tar archive (`PUT /containers/{id}/archive`) before the command starts and the workspace
//! comes back the same way (`GET …/archive`) after it ends, both bounded. The container has
//! a session's confinement (limits of the template, capabilities dropped, no privileges),
//! the command as its entrypoint (the snapshot's own, the agent, is not run), its output
//! followed line by line, and it is removed however the command ends. Containers carry
//! [`LABEL_BUILD`] and the deployment's label, so one left behind by a control plane that
//! died mid-build is found ([`list`]) and removed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::ContainerCreateBody;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::engine::{DockerEngine, is_not_found};
use super::provider::host_config;
use crate::sandbox::command::CommandEnd;
use crate::sandbox::namespaces::Ended;
pub use crate::sandbox::workspace_archive::WORKSPACE;
use crate::sandbox::workspace_archive::{self as archive, Lines, WorkspaceRun, ended};
use crate::sandbox::{LABEL_DEPLOYMENT, SandboxError, SandboxResources};

/// Names what a one-off container runs for (an app deployment's id).
pub const LABEL_BUILD: &str = "kortix.build";
/// The longest a copy into or out of the container may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// What to run, in which image, on what.
#[derive(Debug, Clone)]
pub struct ContainerCommand {
    /// The container's name (unique per engine).
    pub name: String,
    /// The snapshot's image.
    pub image: String,
    /// e.g. `["/bin/sh", "-c", "npm run build"]`.
    pub argv: Vec<String>,
    /// Copied to [`WORKSPACE`] before the command starts, and copied back after.
    pub source: PathBuf,
    /// The working directory, relative to [`WORKSPACE`] (`""` is the workspace itself).
    pub workdir: String,
    /// Exactly the variables the command gets besides what the image sets.
    pub env: BTreeMap<String, String>,
    /// The template's limits.
    pub resources: SandboxResources,
    pub network: Option<String>,
    /// This deployment's id (`sandbox::deployment_id`).
    pub deployment: String,
    /// What [`LABEL_BUILD`] says.
    pub build: String,
    pub timeout: Duration,
    /// The most the workspace may weigh when it comes back (its archive).
    pub max_output_bytes: u64,
}

/// How the command went, and where its workspace came back to.
pub type ContainerRun = WorkspaceRun;

/// Runs `cmd` on `engine`; its output lines go to `lines`; the workspace afterwards is
/// unpacked under `scratch` (an empty directory of the caller's).
pub async fn run(
    engine: &DockerEngine,
    cmd: &ContainerCommand,
    scratch: &Path,
    lines: mpsc::UnboundedSender<String>,
) -> Result<ContainerRun, SandboxError> {
    // Whatever happens below, the container goes.
    let _cleanup = Removal {
        engine: engine.clone(),
        name: cmd.name.clone(),
    };
    remove(engine, &cmd.name).await?;
    create(engine, cmd).await?;
    tokio::time::timeout(TRANSFER_TIMEOUT, upload(engine, cmd, scratch))
        .await
        .map_err(|_| transfer_timeout("copying the source into", &cmd.name))??;
    engine
        .docker
        .start_container(&cmd.name, None)
        .await
        .map_err(|e| engine.error(&format!("starting container {}", cmd.name), e))?;
    let follower = tokio::spawn(follow(engine.clone(), cmd.name.clone(), lines));
    let end = match tokio::time::timeout(cmd.timeout, wait(engine, &cmd.name)).await {
        Ok(ended) => CommandEnd::Exited(ended?),
        Err(_) => {
            let _ = remove(engine, &cmd.name).await;
            CommandEnd::TimedOut(cmd.timeout)
        }
    };
    // The last lines reach the caller before the end is reported (bounded: the log stream
    // of a removed container may not end cleanly on every engine).
    let _ = tokio::time::timeout(Duration::from_secs(5), follower).await;
    let workspace = match end {
        CommandEnd::Exited(_) => Some(
            tokio::time::timeout(TRANSFER_TIMEOUT, download(engine, cmd, scratch))
                .await
                .map_err(|_| transfer_timeout("copying the workspace out of", &cmd.name))??,
        ),
        CommandEnd::TimedOut(_) => None,
    };
    Ok(WorkspaceRun { end, workspace })
}

fn transfer_timeout(doing: &str, name: &str) -> SandboxError {
    SandboxError::Engine(format!(
        "{doing} container {name} took over {}s",
        TRANSFER_TIMEOUT.as_secs()
    ))
}

async fn create(engine: &DockerEngine, cmd: &ContainerCommand) -> Result<(), SandboxError> {
    let workdir = archive::workdir_in_workspace(&cmd.workdir);
    let labels = HashMap::from([
        (LABEL_BUILD.to_owned(), cmd.build.clone()),
        (LABEL_DEPLOYMENT.to_owned(), cmd.deployment.clone()),
    ]);
    let body = ContainerCreateBody {
        image: Some(cmd.image.clone()),
        // The command is the entrypoint, so the snapshot's (the agent) does not run.
        entrypoint: Some(cmd.argv.clone()),
        cmd: Some(Vec::new()),
        env: Some(cmd.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: Some(workdir),
        labels: Some(labels),
        hostname: Some("build".into()),
        host_config: Some(host_config(&cmd.resources, cmd.network.as_deref())),
        ..Default::default()
    };
    let options = bollard::query_parameters::CreateContainerOptionsBuilder::default()
        .name(&cmd.name)
        .build();
    engine
        .docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| {
            engine.error(
                &format!("creating container {} from {}", cmd.name, cmd.image),
                e,
            )
        })?;
    Ok(())
}

/// The source as `workspace/…` in a tar file under `scratch`, then into the container's `/`.
async fn upload(
    engine: &DockerEngine,
    cmd: &ContainerCommand,
    scratch: &Path,
) -> Result<(), SandboxError> {
    let archive = scratch.join("source.tar");
    archive::pack_source(&cmd.source, &archive).await?;
    let file = tokio::fs::File::open(&archive)
        .await
        .map_err(|e| SandboxError::Engine(format!("{}: {e}", archive.display())))?;
    let body =
        tokio_util::io::ReaderStream::new(file).filter_map(|chunk| async move { chunk.ok() });
    let options = bollard::query_parameters::UploadToContainerOptionsBuilder::default()
        .path("/")
        .build();
    let uploaded = engine
        .docker
        .upload_to_container(&cmd.name, Some(options), bollard::body_stream(body))
        .await
        .map_err(|e| engine.error(&format!("copying the source into {}", cmd.name), e));
    let _ = tokio::fs::remove_file(&archive).await;
    uploaded
}

/// The container's workspace after the command, unpacked under `scratch`: the directory it
/// came back to.
async fn download(
    engine: &DockerEngine,
    cmd: &ContainerCommand,
    scratch: &Path,
) -> Result<PathBuf, SandboxError> {
    let archive = scratch.join("workspace.tar");
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
        .path(WORKSPACE)
        .build();
    let stream = engine
        .docker
        .download_from_container(&cmd.name, Some(options));
    let what = format!("copying the workspace out of {}", cmd.name);
    archive::write_capped(
        stream.map(|c| c.map_err(|e| engine.error(&what, e))),
        &archive,
        cmd.max_output_bytes,
        &what,
    )
    .await?;
    archive::unpack_workspace(&archive, scratch).await
}

/// The command's exit, waiting again whenever the engine's request times out first.
async fn wait(engine: &DockerEngine, name: &str) -> Result<Ended, SandboxError> {
    loop {
        let mut wait = engine.docker.wait_container(name, None);
        match wait.next().await {
            Some(Ok(r)) => return Ok(ended(r.status_code)),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                return Ok(ended(code));
            }
            Some(Err(e)) if is_not_found(&e) => {
                return Err(SandboxError::Engine(format!(
                    "container {name} went away while its command ran"
                )));
            }
            Some(Err(bollard::errors::Error::RequestTimeoutError)) | None => continue,
            Some(Err(e)) => return Err(engine.error(&format!("waiting for {name}"), e)),
        }
    }
}

/// Follows the container's output until it ends, a line at a time.
async fn follow(engine: DockerEngine, name: String, lines: mpsc::UnboundedSender<String>) {
    let options = bollard::query_parameters::LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = engine.docker.logs(&name, Some(options));
    let (mut out, mut err) = (Lines::default(), Lines::default());
    while let Some(Ok(chunk)) = logs.next().await {
        let (buffer, bytes) = match chunk {
            LogOutput::StdOut { message } | LogOutput::Console { message } => (&mut out, message),
            LogOutput::StdErr { message } => (&mut err, message),
            LogOutput::StdIn { .. } => continue,
        };
        for line in buffer.push(&bytes) {
            let _ = lines.send(line);
        }
    }
    for line in out.finish().into_iter().chain(err.finish()) {
        let _ = lines.send(line);
    }
}

/// Removes container `name` (gone already is fine).
pub async fn remove(engine: &DockerEngine, name: &str) -> Result<(), SandboxError> {
    super::provider::remove(engine, name).await
}

/// Removes the container when the run ends, however it ends (also when its future is
/// dropped mid-way).
struct Removal {
    engine: DockerEngine,
    name: String,
}

impl Drop for Removal {
    fn drop(&mut self) {
        let (engine, name) = (self.engine.clone(), std::mem::take(&mut self.name));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = remove(&engine, &name).await {
                    tracing::warn!(container = %name, error = %e, "removing a build container");
                }
            });
        }
    }
}

/// This deployment's one-off containers: `(what LABEL_BUILD says, container name)`, for the
/// caller to remove those whose build is no longer running (left behind by a control plane
/// that stopped mid-build).
pub async fn list(
    engine: &DockerEngine,
    deployment: &str,
) -> Result<Vec<(String, String)>, SandboxError> {
    let containers = engine
        .containers_labelled(LABEL_BUILD, "build containers")
        .await?;
    let mut found = Vec::new();
    for c in containers {
        let labels = c.labels.unwrap_or_default();
        if labels.get(LABEL_DEPLOYMENT).map(String::as_str) != Some(deployment) {
            continue;
        }
        let Some(build) = labels.get(LABEL_BUILD) else {
            continue;
        };
        for name in c.names.unwrap_or_default() {
            found.push((build.clone(), name.trim_start_matches('/').to_string()));
        }
    }
    Ok(found)
}
