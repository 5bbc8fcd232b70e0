//! The control plane under test: a `kortix server` child process the load generator starts
//! (fresh data directory, `--sandbox external`), or one already running.

use crate::errors::BenchError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How long a started server gets to write its admin token and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped server gets to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the control plane is (flags shared by every scenario).
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// Public URL of a running control plane. Without it the load generator starts
    /// `kortix server --sandbox external` itself with a fresh data directory.
    #[arg(long, requires = "data_dir")]
    pub url: Option<String>,
    /// Bearer token for the public API [default: `<data-dir>/admin.token`].
    #[arg(long, env = "KORTIX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory of the running control plane (its `bootstrap/` holds the agents'
    /// environments; it must run with `--sandbox external`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Pid of the running control plane, to read its memory and CPU from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The `kortix` binary to start [default: `kortix` beside this executable].
    #[arg(long)]
    pub kortix_bin: Option<PathBuf>,
    /// `--database-url` for the started server (default: SQLite in its data directory).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Directory for the started server's data directory and log [default: $TMPDIR].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the started server's data directory and log.
    #[arg(long)]
    pub keep_data: bool,
    /// `RUST_LOG` of the started server.
    #[arg(long, default_value = "info")]
    pub server_log: String,
}

/// A control plane to talk to.
pub struct Target {
    pub public_url: String,
    pub token: String,
    pub data_dir: PathBuf,
    pub pid: Option<u32>,
    /// Human-readable description for the report.
    pub description: String,
    child: Option<Child>,
    log_path: Option<PathBuf>,
    cleanup: Option<PathBuf>,
}

impl Target {
    pub async fn open(args: &TargetArgs, scenario: &str) -> Result<Target, BenchError> {
        match &args.url {
            Some(url) => {
                let data_dir = args
                    .data_dir
                    .clone()
                    .ok_or_else(|| BenchError::new("target", "usage", "--url needs --data-dir"))?;
                let token = match &args.token {
                    Some(t) => t.clone(),
                    None => read_token(&data_dir)?,
                };
                Ok(Target {
                    public_url: url.clone(),
                    token,
                    description: format!("running control plane at {url}"),
                    data_dir,
                    pid: args.server_pid,
                    child: None,
                    log_path: None,
                    cleanup: None,
                })
            }
            None => Self::spawn(args, scenario).await,
        }
    }

    async fn spawn(args: &TargetArgs, scenario: &str) -> Result<Target, BenchError> {
        let bin = match &args.kortix_bin {
            Some(b) => b.clone(),
            None => sibling_binary("kortix")?,
        };
        let work = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        let root = work.join(format!(
            "kortix-loadgen-{scenario}-{}-{}",
            std::process::id(),
            kortix_controlplane::clock::now_ms()
        ));
        let data_dir = root.join("data");
        std::fs::create_dir_all(&root)
            .map_err(|e| BenchError::new("target", "io", format!("{}: {e}", root.display())))?;
        let log_path = root.join("server.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| BenchError::new("target", "io", format!("{}: {e}", log_path.display())))?;
        let (public, agent) = (free_port()?, free_port()?);
        let mut cmd = Command::new(&bin);
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .arg("server")
            .args(["--listen", &public.to_string()])
            .args(["--agent-listen", &agent.to_string()])
            .args(["--sandbox", "external"])
            // Agents of the bench connect within seconds, but a 10,000-agent ramp takes
            // minutes: no session may be failed for connecting late.
            .args(["--connect-deadline-secs", "86400"])
            // Simulated agents are never idle; no hibernation in the middle of a run.
            .args(["--idle-timeout-secs", "0"])
            .args(["--stop-grace-secs", "2"])
            .args(["--log-format", "json"])
            .env("RUST_LOG", &args.server_log)
            .stdin(std::process::Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| BenchError::new("target", "io", e.to_string()))?,
            )
            .stderr(log)
            .kill_on_drop(true);
        if let Some(url) = &args.database_url {
            cmd.args(["--database-url", url]);
        }
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::new("target", "spawn", format!("{}: {e}", bin.display())))?;
        let pid = child.id();
        let mut target = Target {
            public_url: format!("http://{public}"),
            token: String::new(),
            description: format!(
                "`{} server --sandbox external` ({}), started by the load generator",
                bin.display(),
                if args.database_url.is_some() {
                    "PostgreSQL"
                } else {
                    "SQLite"
                }
            ),
            data_dir,
            pid,
            child: Some(child),
            log_path: Some(log_path),
            cleanup: (!args.keep_data).then_some(root),
        };
        target.wait_ready().await?;
        Ok(target)
    }

    /// Waits for the admin token and a successful authenticated call.
    async fn wait_ready(&mut self) -> Result<(), BenchError> {
        let start = Instant::now();
        let mut last = String::from("not started");
        while start.elapsed() < READY_TIMEOUT {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(BenchError::new(
                    "target",
                    "exited",
                    format!(
                        "kortix server exited with {status}; log: {}",
                        self.log_tail()
                    ),
                ));
            }
            if let Ok(token) = read_token(&self.data_dir) {
                self.token = token;
                match crate::api::Api::connect(&self.public_url, &self.token).await {
                    Ok(api) => match api.ping().await {
                        Ok(()) => return Ok(()),
                        Err(e) => last = e.to_string(),
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(BenchError::new(
            "target",
            "timeout",
            format!(
                "server not ready after {READY_TIMEOUT:?} ({last}); log: {}",
                self.log_tail()
            ),
        ))
    }

    /// Where the started server logs (none for a running one).
    pub fn log_path(&self) -> Option<&Path> {
        self.log_path.as_deref()
    }

    fn log_tail(&self) -> String {
        let Some(path) = &self.log_path else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    }

    /// Counts `"level":"WARN"` and `"level":"ERROR"` lines of the started server's log, with
    /// the most frequent messages (bounded).
    pub fn log_problems(&self) -> Option<LogProblems> {
        let text = std::fs::read_to_string(self.log_path.as_ref()?).ok()?;
        Some(LogProblems::scan(&text))
    }

    /// SIGTERM, then SIGKILL after a grace; removes the temporary data directory.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        if let Some(root) = self.cleanup.take() {
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(root)).await;
        }
    }
}

/// Warnings and errors a server logged during the run.
#[derive(Debug, Default, Clone)]
pub struct LogProblems {
    pub warn: u64,
    pub error: u64,
    /// `(count, level, message)` of the most frequent messages.
    pub top: Vec<(u64, String, String)>,
}

impl LogProblems {
    pub fn scan(text: &str) -> Self {
        let mut out = LogProblems::default();
        let mut by_msg: std::collections::HashMap<(String, String), u64> = Default::default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let level = v.get("level").and_then(|l| l.as_str()).unwrap_or("");
            match level {
                "WARN" => out.warn += 1,
                "ERROR" => out.error += 1,
                _ => continue,
            }
            let msg = v
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_string();
            let detail = ["status", "error"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
                .map(|d| d.chars().take(120).collect::<String>())
                .unwrap_or_default();
            let key = if detail.is_empty() {
                msg
            } else {
                format!("{msg}: {detail}")
            };
            if by_msg.len() < 1000 || by_msg.contains_key(&(level.to_string(), key.clone())) {
                *by_msg.entry((level.to_string(), key)).or_default() += 1;
            }
        }
        let mut top: Vec<_> = by_msg.into_iter().map(|((l, m), n)| (n, l, m)).collect();
        top.sort_by_key(|t| std::cmp::Reverse(t.0));
        top.truncate(5);
        out.top = top;
        out
    }

    pub fn summary(&self) -> String {
        if self.warn == 0 && self.error == 0 {
            return "none".to_string();
        }
        let top: Vec<String> = self
            .top
            .iter()
            .map(|(n, l, m)| format!("{l} ×{n} \"{m}\""))
            .collect();
        format!(
            "{} WARN, {} ERROR; top: {}",
            self.warn,
            self.error,
            top.join("; ")
        )
    }
}

fn read_token(data_dir: &Path) -> Result<String, BenchError> {
    let path = data_dir.join("admin.token");
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_string())
        .map_err(|e| BenchError::new("target", "token", format!("{}: {e}", path.display())))
}

/// `name` in the directory of this executable (or its parent, for `deps/`).
fn sibling_binary(name: &str) -> Result<PathBuf, BenchError> {
    let exe =
        std::env::current_exe().map_err(|e| BenchError::new("target", "io", e.to_string()))?;
    for dir in [exe.parent(), exe.parent().and_then(Path::parent)]
        .into_iter()
        .flatten()
    {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(BenchError::new(
        "target",
        "usage",
        format!("no `{name}` beside {}; pass --kortix-bin", exe.display()),
    ))
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<SocketAddr, BenchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::new("target", "io", e.to_string()))?;
    l.local_addr()
        .map_err(|e| BenchError::new("target", "io", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_json_logs_for_problems() {
        let log = r#"{"level":"INFO","message":"agent connected"}
{"level":"WARN","message":"closing agent stream","status":"storing records: busy"}
{"level":"WARN","message":"closing agent stream","status":"storing records: busy"}
{"level":"ERROR","message":"boom"}
not json"#;
        let p = LogProblems::scan(log);
        assert_eq!((p.warn, p.error), (2, 1));
        assert_eq!(
            p.top[0],
            (
                2,
                "WARN".into(),
                "closing agent stream: storing records: busy".into()
            )
        );
        assert!(p.summary().starts_with("2 WARN, 1 ERROR"));
        assert_eq!(LogProblems::scan("").summary(), "none");
    }
}
