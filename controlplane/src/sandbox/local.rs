//! The `local` provider: `kortix-agent` as a child process of the control plane, in its own
//! process group, with its own workspace and `HOME` under the data directory.

use super::{SandboxError, SandboxExit, SandboxProvider, SandboxSpec};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Each sandbox's `agent.log` stops growing here; the agent's records carry the real stream.
const AGENT_LOG_CAP: u64 = 16 * 1024 * 1024;
/// Variables handed through from the control plane's environment.
const PASSTHROUGH_ENV: &[&str] = &["PATH", "KORTIX_OPENCODE_BIN", "LANG", "TZ", "RUST_LOG"];

#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Per-session directories live under here (`<root>/<session-id>/{workspace,home}`).
    pub root: PathBuf,
    pub agent_bin: PathBuf,
    /// Extra variables for every agent (tests use this for the OpenCode binary, timeouts, ...).
    pub extra_env: Vec<(String, String)>,
}

pub struct LocalProvider {
    config: LocalConfig,
    children: Arc<Mutex<HashMap<String, i32>>>,
    exits: mpsc::Sender<SandboxExit>,
}

impl LocalProvider {
    pub fn new(config: LocalConfig, exits: mpsc::Sender<SandboxExit>) -> Self {
        Self {
            config,
            children: Arc::default(),
            exits,
        }
    }

    /// The directory of one session's sandbox.
    pub fn sandbox_dir(&self, session_id: &str) -> PathBuf {
        self.config.root.join(session_id)
    }

    async fn spawn(&self, spec: SandboxSpec) -> Result<(), SandboxError> {
        let id = spec.session_id.clone();
        let io = |source| SandboxError::Io {
            session_id: id.clone(),
            source,
        };
        if !is_safe_component(&id) {
            return Err(SandboxError::Boot {
                session_id: id.clone(),
                message: "session id is not a safe directory name".into(),
            });
        }
        let dir = self.sandbox_dir(&id);
        let workspace = dir.join("workspace");
        let home = dir.join("home");
        for d in [&workspace, &home] {
            tokio::fs::create_dir_all(d).await.map_err(io)?;
        }
        let mut cmd = tokio::process::Command::new(&self.config.agent_bin);
        cmd.env_clear();
        for key in PASSTHROUGH_ENV {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd.env("HOME", &home)
            .env("KORTIX_WORKSPACE", &workspace)
            .env("KORTIX_SPOOL_DIR", dir.join("spool"))
            .env("TMPDIR", std::env::temp_dir());
        for (k, v) in &self.config.extra_env {
            cmd.env(k, v);
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        cmd.current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| SandboxError::Boot {
            session_id: id.clone(),
            message: format!("cannot run {}: {e}", self.config.agent_bin.display()),
        })?;
        let pid = child.id().unwrap_or_default() as i32;
        self.children
            .lock()
            .expect("children lock")
            .insert(id.clone(), pid);
        let log_path = dir.join("agent.log");
        let log = Arc::new(tokio::sync::Mutex::new(
            CappedLog::open(&log_path).await.map_err(io)?,
        ));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(copy_lines(out, log.clone(), id.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(copy_lines(err, log, id.clone()));
        }
        let children = self.children.clone();
        let exits = self.exits.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => status,
                Err(e) => {
                    tracing::error!(session = %id, error = %e, "waiting for agent failed");
                    return;
                }
            };
            // The agent may have left descendants in its group; they go with it.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            children.lock().expect("children lock").remove(&id);
            let exit = SandboxExit {
                session_id: id.clone(),
                status: describe(&status),
                success: status.success(),
            };
            tracing::info!(session = %id, status = %exit.status, "local sandbox exited");
            let _ = exits.send(exit).await;
        });
        tracing::info!(session = %spec.session_id, pid, dir = %dir.display(), "local sandbox started");
        Ok(())
    }
}

impl SandboxProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn boot(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(self.spawn(spec))
    }

    fn kill<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let pid = self
                .children
                .lock()
                .expect("children lock")
                .get(session_id)
                .copied();
            if let Some(pid) = pid {
                match nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                ) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                    Err(e) => {
                        return Err(SandboxError::Io {
                            session_id: session_id.to_string(),
                            source: e.into(),
                        });
                    }
                }
            }
            Ok(())
        })
    }

    fn is_running(&self, session_id: &str) -> bool {
        self.children
            .lock()
            .expect("children lock")
            .contains_key(session_id)
    }
}

fn describe(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown exit".to_string(),
    }
}

fn is_safe_component(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

struct CappedLog {
    file: tokio::fs::File,
    written: u64,
    capped: bool,
}

impl CappedLog {
    async fn open(path: &Path) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let written = file.metadata().await?.len();
        Ok(Self {
            file,
            written,
            capped: false,
        })
    }

    async fn write_line(&mut self, line: &str) {
        if self.capped {
            return;
        }
        if self.written + line.len() as u64 + 1 > AGENT_LOG_CAP {
            self.capped = true;
            let _ = self
                .file
                .write_all(b"[kortix] agent.log reached its size cap; further output dropped\n")
                .await;
            return;
        }
        self.written += line.len() as u64 + 1;
        let _ = self.file.write_all(line.as_bytes()).await;
        let _ = self.file.write_all(b"\n").await;
    }
}

async fn copy_lines(
    stream: impl AsyncRead + Unpin,
    log: Arc<tokio::sync::Mutex<CappedLog>>,
    session_id: String,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(session = %session_id, "agent: {line}");
        log.lock().await.write_line(&line).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec(id: &str) -> SandboxSpec {
        SandboxSpec {
            session_id: id.to_string(),
            env: BTreeMap::from([("KORTIX_SESSION_ID".to_string(), id.to_string())]),
            resources: Default::default(),
        }
    }

    #[tokio::test]
    async fn runs_the_agent_and_reports_its_exit() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("agent.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"session=$KORTIX_SESSION_ID home=$HOME\"\nexit 3\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let provider = LocalProvider::new(
            LocalConfig {
                root: dir.path().join("sandboxes"),
                agent_bin: script,
                extra_env: vec![],
            },
            tx,
        );
        provider.boot(spec("s1")).await.unwrap();
        let exit = rx.recv().await.unwrap();
        assert_eq!(exit.status, "exit status 3");
        assert!(!exit.success);
        assert!(!provider.is_running("s1"));
        let log = std::fs::read_to_string(dir.path().join("sandboxes/s1/agent.log")).unwrap();
        assert!(log.contains("session=s1"), "{log}");
        assert!(log.contains("sandboxes/s1/home"), "{log}");
    }

    #[tokio::test]
    async fn kill_ends_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("agent.sh");
        // A child that would outlive a plain kill of the parent.
        std::fs::write(&script, "#!/bin/sh\nsleep 300 &\nwait\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let provider = LocalProvider::new(
            LocalConfig {
                root: dir.path().join("sandboxes"),
                agent_bin: script,
                extra_env: vec![],
            },
            tx,
        );
        provider.boot(spec("s2")).await.unwrap();
        assert!(provider.is_running("s2"));
        provider.kill("s2").await.unwrap();
        let exit = rx.recv().await.unwrap();
        assert_eq!(exit.status, "killed by signal 9");
        assert!(provider.kill("s2").await.is_ok(), "killing twice is fine");
    }

    #[tokio::test]
    async fn unsafe_ids_and_missing_binaries_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let provider = LocalProvider::new(
            LocalConfig {
                root: dir.path().to_path_buf(),
                agent_bin: dir.path().join("nope"),
                extra_env: vec![],
            },
            tx,
        );
        assert!(provider.boot(spec("../x")).await.is_err());
        let err = provider.boot(spec("ok")).await.unwrap_err().to_string();
        assert!(err.contains("cannot run"), "{err}");
    }
}
