//! One command in a Daytona sandbox of a snapshot, to its end: an app's build under
//! `--sandbox daytona`, so it sees exactly the tools a session of the project sees.
//!
//! The sandbox is created from the session's snapshot (`POST /sandbox`), so with the
//! template's resources, which the snapshot carries (Daytona refuses resources beside a
//! snapshot). Its entrypoint, the agent, runs in hold mode (`KORTIX_AGENT_HOLD=1`: up, no
//! enrollment, no credential) while the toolbox does the work: the source goes in as a tar
//! archive (`files/upload`, unpacked by `process/execute`), the command runs with its
//! environment in its working directory (`process/execute`, the daemon's timeout), and the
//! workspace comes back as a tar archive (`files/download`), bounded. The sandbox carries
//! [`LABEL_BUILD`] and the deployment's label and is deleted however the build ends; one left
//! behind by a control plane that died mid-build is found ([`list`]) and removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::api::{CreateSandbox, ExecuteRequest, Sandbox};
use super::client::{ApiError, DaytonaClient};
use super::provider::{self, LABEL_MANAGED, LABEL_SNAPSHOT};
use super::toolbox::{TRANSFER_TIMEOUT, Toolbox};
use crate::sandbox::command::CommandEnd;
use crate::sandbox::docker::command::LABEL_BUILD;
use crate::sandbox::workspace_archive::{self as archive, Lines, WORKSPACE, WorkspaceRun};
use crate::sandbox::{LABEL_DEPLOYMENT, SandboxError};

/// The variable that keeps the snapshot's agent in hold mode (`kortix_agent::hold`).
pub const HOLD_ENV: &str = "KORTIX_AGENT_HOLD";
/// Where the archives are inside the sandbox, outside the workspace.
const SOURCE_TAR: &str = "/tmp/kortix-build-source.tar";
const WORKSPACE_TAR: &str = "/tmp/kortix-build-workspace.tar";
const OUTPUT_FILE: &str = "/tmp/kortix-build-output.log";
/// The command's output kept (its tail): the log keeps less.
const MAX_OUTPUT: u64 = 1 << 20;
/// The largest execute answer read: the output's tail, JSON-escaped.
const MAX_RESULT: usize = 8 << 20;

/// What to run, from which snapshot, on what.
#[derive(Debug, Clone)]
pub struct SandboxCommand {
    /// The sandbox's name (unique per organization).
    pub name: String,
    pub snapshot: String,
    /// A shell command line (run as `sh -c`).
    pub command: String,
    /// Copied to [`WORKSPACE`] before the command starts, and copied back after.
    pub source: PathBuf,
    /// The working directory, relative to [`WORKSPACE`] (`""` is the workspace itself).
    pub workdir: String,
    /// The variables the command gets besides the sandbox's.
    pub env: BTreeMap<String, String>,
    /// This deployment's id (`sandbox::deployment_id`).
    pub deployment: String,
    /// What [`LABEL_BUILD`] says.
    pub build: String,
    pub timeout: Duration,
    /// The most the workspace may weigh when it comes back (its archive).
    pub max_output_bytes: u64,
}

fn engine(e: ApiError) -> SandboxError {
    SandboxError::Engine(e.to_string())
}

/// The `POST /sandbox` body of a build.
pub(crate) fn create_request(cmd: &SandboxCommand) -> CreateSandbox {
    CreateSandbox {
        name: cmd.name.clone(),
        snapshot: cmd.snapshot.clone(),
        env: BTreeMap::from([(HOLD_ENV.to_owned(), "1".to_owned())]),
        labels: BTreeMap::from([
            (LABEL_BUILD.to_owned(), cmd.build.clone()),
            (LABEL_DEPLOYMENT.to_owned(), cmd.deployment.clone()),
            (LABEL_SNAPSHOT.to_owned(), cmd.snapshot.clone()),
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
        ]),
        public: false,
        auto_stop_interval: 0,
        auto_delete_interval: 0,
    }
}

/// `command` as `sh -c` with its output into a file, of which the answer carries the tail:
/// a chatty build cannot grow the answer past [`MAX_OUTPUT`].
fn wrapped(command: &str) -> String {
    let quoted = command.replace('\'', r"'\''");
    format!(
        "sh -c '{quoted}' >{OUTPUT_FILE} 2>&1\nstatus=$?\ntail -c {MAX_OUTPUT} {OUTPUT_FILE}\nrm -f {OUTPUT_FILE}\nexit $status\n"
    )
}

/// Runs `cmd` on Daytona; its output lines go to `lines`; the workspace afterwards is
/// unpacked under `scratch` (an empty directory of the caller's).
pub async fn run(
    client: &DaytonaClient,
    cmd: &SandboxCommand,
    scratch: &Path,
    lines: mpsc::UnboundedSender<String>,
) -> Result<WorkspaceRun, SandboxError> {
    // A sandbox of this name left by an earlier attempt goes first.
    provider::delete(client, &cmd.name).await.map_err(engine)?;
    // Whatever happens below, the sandbox goes.
    let _cleanup = Removal {
        client: client.clone(),
        name: cmd.name.clone(),
    };
    let created: Sandbox = client
        .post("/sandbox", &create_request(cmd))
        .await
        .map_err(engine)?;
    let started = provider::wait_started(client, created)
        .await
        .map_err(SandboxError::Engine)?;
    let toolbox = client.toolbox(&started.id).await.map_err(engine)?;
    upload(&toolbox, cmd, scratch).await?;
    let request = ExecuteRequest {
        command: wrapped(&cmd.command),
        cwd: Some(archive::workdir_in_workspace(&cmd.workdir)),
        envs: cmd.env.clone(),
        timeout: Some(u32::try_from(cmd.timeout.as_secs().max(1)).unwrap_or(u32::MAX)),
    };
    let end = match toolbox.execute(&request, true, MAX_RESULT).await {
        Ok(done) => {
            let mut split = Lines::default();
            for line in split.push(done.result.as_bytes()) {
                let _ = lines.send(line);
            }
            if let Some(last) = split.finish() {
                let _ = lines.send(last);
            }
            CommandEnd::Exited(archive::ended(done.exit_code))
        }
        // The daemon's answer when the command overran (it killed its process group).
        Err(e) if e.status() == Some(408) => CommandEnd::TimedOut(cmd.timeout),
        Err(e) => return Err(engine(e)),
    };
    let workspace = match end {
        CommandEnd::Exited(_) => Some(download(&toolbox, cmd, scratch).await?),
        CommandEnd::TimedOut(_) => None,
    };
    Ok(WorkspaceRun { end, workspace })
}

/// Runs a step of the transfer (`tar`) in the sandbox; a failure names it.
async fn step(toolbox: &Toolbox, doing: &str, command: String) -> Result<(), SandboxError> {
    let request = ExecuteRequest {
        command,
        cwd: None,
        envs: BTreeMap::new(),
        timeout: Some(TRANSFER_TIMEOUT.as_secs() as u32),
    };
    let done = toolbox
        .execute(&request, false, MAX_RESULT)
        .await
        .map_err(engine)?;
    if done.exit_code == 0 {
        Ok(())
    } else {
        Err(SandboxError::Engine(format!(
            "{doing} in Daytona sandbox {}: exit status {}: {}",
            toolbox.sandbox(),
            done.exit_code,
            done.result.trim()
        )))
    }
}

async fn upload(
    toolbox: &Toolbox,
    cmd: &SandboxCommand,
    scratch: &Path,
) -> Result<(), SandboxError> {
    let local = scratch.join("source.tar");
    archive::pack_source(&cmd.source, &local).await?;
    let sent = toolbox.upload(&local, SOURCE_TAR).await;
    let _ = tokio::fs::remove_file(&local).await;
    sent.map_err(engine)?;
    step(
        toolbox,
        "unpacking the build's source",
        format!("mkdir -p {WORKSPACE} && tar -xf {SOURCE_TAR} -C / && rm -f {SOURCE_TAR}"),
    )
    .await
}

async fn download(
    toolbox: &Toolbox,
    cmd: &SandboxCommand,
    scratch: &Path,
) -> Result<PathBuf, SandboxError> {
    step(
        toolbox,
        "archiving the build's workspace",
        format!(
            "tar -cf {WORKSPACE_TAR} -C / {}",
            WORKSPACE.trim_start_matches('/')
        ),
    )
    .await?;
    let local = scratch.join("workspace.tar");
    toolbox
        .download(WORKSPACE_TAR, &local, cmd.max_output_bytes)
        .await?;
    archive::unpack_workspace(&local, scratch).await
}

/// Deletes the sandbox when the run ends, however it ends (also when its future is dropped
/// mid-way).
struct Removal {
    client: DaytonaClient,
    name: String,
}

impl Drop for Removal {
    fn drop(&mut self) {
        let (client, name) = (self.client.clone(), std::mem::take(&mut self.name));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = provider::delete(&client, &name).await {
                    tracing::warn!(sandbox = %name, error = %e, "deleting a build sandbox");
                }
            });
        }
    }
}

/// This deployment's build sandboxes: `(what LABEL_BUILD says, sandbox id)`, for the caller
/// to delete those whose build is no longer running.
pub async fn list(
    client: &DaytonaClient,
    deployment: &str,
) -> Result<Vec<(String, String)>, SandboxError> {
    let labels = BTreeMap::from([(LABEL_MANAGED, "true"), (LABEL_DEPLOYMENT, deployment)]);
    let found = provider::list_labelled(client, &labels)
        .await
        .map_err(|e| SandboxError::Engine(format!("listing build sandboxes: {e}")))?;
    Ok(found
        .into_iter()
        .filter_map(|s| Some((s.labels.get(LABEL_BUILD)?.clone(), s.id)))
        .collect())
}

/// Deletes build sandbox `id` (gone already is fine).
pub async fn remove(client: &DaytonaClient, id: &str) -> Result<(), SandboxError> {
    provider::delete(client, id).await.map_err(engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> SandboxCommand {
        SandboxCommand {
            name: "kortix-app-build-d1".into(),
            snapshot: "kortix-snap-a-b".into(),
            command: "npm run build".into(),
            source: PathBuf::from("/src"),
            workdir: "site".into(),
            env: BTreeMap::new(),
            deployment: "0123456789abcdef".into(),
            build: "d1".into(),
            timeout: Duration::from_secs(600),
            max_output_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_build_asks_for_a_holding_labelled_sandbox_of_the_snapshot() {
        assert_eq!(
            serde_json::to_value(create_request(&command())).unwrap(),
            serde_json::json!({
                "name": "kortix-app-build-d1",
                "snapshot": "kortix-snap-a-b",
                "env": {"KORTIX_AGENT_HOLD": "1"},
                "labels": {
                    "kortix.build": "d1",
                    "kortix.deployment": "0123456789abcdef",
                    "kortix.snapshot": "kortix-snap-a-b",
                    "kortix.managed": "true"
                },
                "public": false,
                "autoStopInterval": 0,
                "autoDeleteInterval": 0
            }),
            "no session variable, no credential: the agent holds"
        );
    }

    #[test]
    fn the_command_runs_as_sh_c_with_its_output_bounded() {
        let w = wrapped("echo 'it''s' && make");
        assert!(
            w.starts_with(r"sh -c 'echo '\''it'\'''\''s'\'' && make' >"),
            "{w}"
        );
        assert!(w.contains(&format!("tail -c {MAX_OUTPUT} ")), "{w}");
        assert!(w.ends_with("exit $status\n"), "{w}");
        // The quoting survives a real shell.
        let w = wrapped("printf %s \"it's\"");
        let run = w.split(" >").next().unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(run)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's");
    }
}
