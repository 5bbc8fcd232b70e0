//! A real `kortix server` process (not in-process), for tests that kill, stop and restart the
//! control plane with signals, and the `kortix` CLI pointed at it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use super::built_binary;

/// A repository to import (`projects create app --import`): a manifest and an OpenCode
/// config that uses `model`.
pub fn model_repo(dir: &Path, model: &kortix_tests::ScriptedModel) -> PathBuf {
    let repo = dir.join("src");
    std::fs::create_dir_all(&repo).unwrap();
    super::git_ok(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("kortix.toml"), "[project]\nname = \"app\"\n").unwrap();
    kortix_tests::opencode_config(&repo.join(".kortix/opencode"), model.port()).unwrap();
    super::git_ok(&repo, &["add", "-A"]);
    super::git_ok(&repo, &["commit", "-qm", "Initial commit"]);
    repo
}

pub struct ServerProcess {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub public: SocketAddr,
    pub agent: SocketAddr,
    extra_args: Vec<String>,
    /// Everything the server printed, across restarts.
    pub log: PathBuf,
    home: PathBuf,
    /// Whether its sandboxes run OpenCode here (the local provider): then the pinned OpenCode
    /// is installed and handed to it.
    local_opencode: bool,
}

/// A loopback address free right now.
pub fn free_addr() -> SocketAddr {
    free_port()
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address")
}

impl ServerProcess {
    /// Starts `kortix server` on fresh loopback ports with `data_dir`, local sandboxes without
    /// namespaces running the built `kortix-agent` and the pinned OpenCode.
    pub fn start(root: &Path, extra_args: &[&str]) -> Self {
        let data_dir = root.join("kortix");
        let home = root.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut server = ServerProcess {
            child: None,
            data_dir,
            public: free_port(),
            agent: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            log: root.join("server.log"),
            home,
            local_opencode: true,
        };
        server.spawn();
        server
    }

    /// Another replica beside this one: the same data directory (its CA, master key and
    /// repositories), its own ports, home and log under `root`, and `extra_args` (give both
    /// the same `--database-url`).
    pub fn another_replica(&self, root: &Path, extra_args: &[&str]) -> Self {
        let home = root.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut server = ServerProcess {
            child: None,
            data_dir: self.data_dir.clone(),
            public: free_port(),
            agent: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            log: root.join("server.log"),
            home,
            local_opencode: true,
        };
        server.spawn();
        server
    }

    /// One replica of several sharing `data_dir` (and a database named in `extra_args`), on
    /// `public` and `agent`, with its log and HOME under `root/<name>`. Runs no OpenCode of
    /// its own (for `--sandbox external`).
    pub fn start_replica(
        root: &Path,
        name: &str,
        data_dir: &Path,
        public: SocketAddr,
        agent: SocketAddr,
        extra_args: &[&str],
    ) -> Self {
        let home = root.join(name).join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut server = ServerProcess {
            child: None,
            data_dir: data_dir.to_owned(),
            public,
            agent,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            log: root.join(name).join("server.log"),
            home,
            local_opencode: false,
        };
        server.spawn();
        server
    }

    /// Whether the server process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let mut command = Command::new(built_binary("kortix"));
        if self.local_opencode {
            let opencode = kortix_tests::opencode_bin().expect("pinned OpenCode installs");
            command.env("KORTIX_OPENCODE_BIN", opencode);
        }
        let child = command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["server", "--isolation", "none", "--log-format", "json"])
            .args(["--listen", &self.public.to_string()])
            .args(["--agent-listen", &self.agent.to_string()])
            .args([
                "--agent-bin",
                built_binary("kortix-agent").to_str().unwrap(),
            ])
            .args(&self.extra_args)
            .env("HOME", &self.home)
            .env_remove("KORTIX_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("run kortix server");
        self.child = Some(child);
    }

    /// The public listener's URL for the CLI: on loopback when it listens everywhere (the
    /// CLI uses the data directory's admin token only for a local server).
    pub fn url(&self) -> String {
        let mut addr = self.public;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Waits until the public listener answers.
    pub async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("kortix server exited with {status}: {}", self.log_tail());
            }
            if tokio::net::TcpStream::connect(self.public).await.is_ok()
                && tokio::net::TcpStream::connect(self.agent).await.is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "kortix server did not listen within 60 s: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal)
            .expect("signal the server");
    }

    /// Waits for the server process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                self.child = None;
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "kortix server did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the server again on the same data directory and addresses.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        self.spawn();
        self.wait_ready().await;
    }

    /// `kortix --json ARGS…` as the local admin: stdout parsed, failing on a non-zero exit.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(&[&["--json"], args].concat());
        assert!(
            out.status.success(),
            "kortix {args:?} exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "kortix {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Imports `repo` as project `app`.
    pub fn import_app(&self, repo: &Path) {
        self.json(&[
            "projects",
            "create",
            "app",
            "--import",
            repo.to_str().unwrap(),
        ]);
    }

    /// Imports `repo` as project `app` and starts a session with the prompt "go", waiting
    /// until it runs; its id.
    pub fn start_app_session(&self, repo: &Path) -> String {
        self.import_app(repo);
        let session = self.json(&[
            "sessions",
            "new",
            "--project",
            "app",
            "--prompt",
            "go",
            "--wait",
        ]);
        assert_eq!(session["status"], "running", "{session}");
        session["id"].as_str().unwrap().to_string()
    }

    /// `kortix ARGS…` as the local admin (the token in the data directory).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_input(args, None)
    }

    /// [`Self::cli`] with `input` on its stdin (none: stdin is empty).
    pub fn cli_with_input(&self, args: &[&str], input: Option<&str>) -> Output {
        let run = || {
            let mut child = Command::new(built_binary("kortix"))
                .args(args)
                .env("KORTIX_URL", self.url())
                .env("KORTIX_DATA_DIR", &self.data_dir)
                .env_remove("KORTIX_TOKEN")
                .env("HOME", &self.home)
                .env("NO_COLOR", "1")
                .stdin(if input.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run kortix");
            if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
                stdin
                    .write_all(text.as_bytes())
                    .expect("write kortix's stdin");
            }
            child.wait_with_output().expect("wait for kortix")
        };
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(run),
            Err(_) => run(),
        }
    }

    /// Every record of a session, as `kortix sessions attach --json --no-follow` prints them.
    pub fn records(&self, session: &str) -> Vec<serde_json::Value> {
        self.try_records(session)
            .unwrap_or_else(|stderr| panic!("attach failed: {stderr}"))
    }

    /// [`Self::records`], or what `kortix` said when it could not read them.
    pub fn try_records(&self, session: &str) -> Result<Vec<serde_json::Value>, String> {
        let out = self.cli(&["--json", "sessions", "attach", session, "--no-follow"]);
        if !out.status.success() {
            return Err(format!(
                "exited {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("one JSON record per line"))
            .collect())
    }

    /// Whether the server's whole log so far contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|text| text.contains(needle))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Process ids of the agents the server's sandbox records name.
    pub fn sandbox_pids(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir(self.data_dir.join("sandboxes")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("sandbox.json")).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter(|r| r["ended_ms"].is_null())
            .filter_map(|r| r["pid"].as_i64().map(|p| p as i32))
            .collect()
    }
}

impl Drop for ServerProcess {
    /// A failed test must not leave a control plane or agents behind.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.sandbox_pids() {
            // Only an agent: the recorded pid may have been reused since it exited.
            let is_agent = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("kortix-agent"));
            if !is_agent {
                continue;
            }
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
