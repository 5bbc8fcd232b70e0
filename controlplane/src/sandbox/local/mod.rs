//! The `local` provider: `kortix-agent` as a child process of the control plane, in its own
//! process group, with its own workspace and `HOME` under the data directory.
//!
//! With namespace isolation (the default where the kernel allows it) the child is cloned into
//! new user, mount, PID, IPC and UTS namespaces: it is PID 1 there, sees its workspace at
//! `/workspace` and nothing of the data directory or of other sessions (see
//! [`super::namespaces`]). Without it the agent is a plain child process.

mod dirs;
mod output;
mod record;

use super::namespaces::{self, RootSource, SandboxLayout};
use super::opencode_packages::OpencodePackages;
use super::{Inventory, SandboxError, SandboxExit, SandboxProvider, SandboxSpec};
use futures::future::BoxFuture;
use output::{CappedLog, copy_lines};
use record::SandboxRecord;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, oneshot};
/// Variables handed through from the control plane's environment.
const PASSTHROUGH_ENV: &[&str] = &["PATH", "KORTIX_OPENCODE_BIN", "LANG", "TZ", "RUST_LOG"];

/// How the `local` provider confines each agent (`kortix server --isolation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IsolationMode {
    /// Namespaces where the kernel allows them; otherwise plain child processes, with a
    /// warning that names the reason.
    #[default]
    Auto,
    /// Namespaces or nothing: sandboxes fail to boot (with the reason) where they are
    /// unavailable.
    Namespaces,
    /// Plain child processes that see the host as the control plane does.
    None,
}

impl IsolationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationMode::Auto => "auto",
            IsolationMode::Namespaces => "namespaces",
            IsolationMode::None => "none",
        }
    }
}

/// Isolation settings of the `local` provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    pub mode: IsolationMode,
    /// Root filesystem of isolated sandboxes: a directory holding the runtime layer that
    /// `image/assemble-rootfs.sh` builds (the agent at `/usr/local/bin/kortix-agent`, git,
    /// OpenCode). `None` derives a minimal root from the host (`--sandbox-root`).
    pub root: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Per-session directories live under here (`<root>/<session-id>/{workspace,home}`).
    pub root: PathBuf,
    pub agent_bin: PathBuf,
    /// Extra variables for every agent (tests use this for the OpenCode binary, timeouts, ...).
    pub extra_env: Vec<(String, String)>,
    pub isolation: Isolation,
    /// How long an ended sandbox's directory (workspace, HOME with OpenCode's database, agent
    /// log) is kept for debugging; zero removes it as soon as the agent has exited.
    pub retention: Duration,
}

/// What the provider does with each sandbox, decided once at construction (and what an
/// app's build gets, see `sandbox::command`).
#[derive(Debug, Clone)]
pub enum Confinement {
    Plain,
    Namespaces(RootSource),
    /// Isolation was required (or a sandbox root given) but cannot be had here.
    Unavailable(String),
}

pub struct LocalProvider {
    config: LocalConfig,
    confinement: Confinement,
    /// OpenCode's packages, shared read-only into sandboxes that run the host's OpenCode.
    opencode_packages: Option<Arc<OpencodePackages>>,
    children: Arc<Mutex<HashMap<String, i32>>>,
    exits: mpsc::Sender<SandboxExit>,
}

/// Whether namespace isolation works in this process, tried once (see
/// [`namespaces::probe`]); `scratch` is a directory the probe may create a directory in.
pub fn namespaces_supported(scratch: &Path) -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            std::fs::create_dir_all(scratch)
                .map_err(|e| format!("creating {}: {e}", scratch.display()))?;
            namespaces::probe(scratch)
        })
        .clone()
}

impl LocalProvider {
    pub fn new(config: LocalConfig, exits: mpsc::Sender<SandboxExit>) -> Self {
        let confinement = confinement(&config);
        match &confinement {
            Confinement::Plain => {
                tracing::info!(
                    isolation = config.isolation.mode.as_str(),
                    "local sandboxes run as plain child processes"
                )
            }
            Confinement::Namespaces(source) => tracing::info!(
                root = %match source {
                    RootSource::Host => "derived from the host".to_string(),
                    RootSource::Image(dir) => dir.display().to_string(),
                },
                "local sandboxes run in their own user, mount, PID, IPC and UTS namespaces"
            ),
            Confinement::Unavailable(reason) => tracing::error!(
                "local sandboxes cannot boot: namespace isolation is required but unavailable: {reason}"
            ),
        }
        let provider = Self {
            config,
            confinement,
            opencode_packages: None,
            children: Arc::default(),
            exits,
        };
        provider.adopt_orphans(true);
        provider
    }

    /// Shares `packages` into every sandbox that runs the host's OpenCode (plain children and
    /// host-derived roots; an image root brings its own OpenCode and packages). The install
    /// starts now, in the background; a sandbox that boots before it finished waits for it.
    pub fn with_opencode_packages(mut self, packages: Arc<OpencodePackages>) -> Self {
        let sharing = matches!(
            self.confinement,
            Confinement::Plain | Confinement::Namespaces(RootSource::Host)
        );
        if sharing {
            let warm = packages.clone();
            tokio::spawn(async move {
                warm.get().await;
            });
            self.opencode_packages = Some(packages);
        }
        self
    }

    /// Whether sandboxes run in their own namespaces.
    pub fn isolated(&self) -> bool {
        matches!(self.confinement, Confinement::Namespaces(_))
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
        let packages = match &self.opencode_packages {
            Some(packages) => packages.get_with(&spec.opencode_npm).await,
            None => None,
        };
        let started = match &self.confinement {
            Confinement::Plain => {
                self.spawn_plain(&spec, &dir, &workspace, &home, packages.as_deref())?
            }
            Confinement::Namespaces(source) => {
                self.spawn_isolated(
                    &spec,
                    source.clone(),
                    &dir,
                    &workspace,
                    &home,
                    packages.as_deref(),
                )
                .await?
            }
            Confinement::Unavailable(reason) => {
                return Err(SandboxError::Boot {
                    session_id: id.clone(),
                    message: format!("namespace isolation is required but unavailable: {reason}"),
                });
            }
        };
        let Started {
            pid,
            stdout,
            stderr,
            exit,
        } = started;
        if let Err(e) = SandboxRecord::of(pid).and_then(|r| r.write(&dir)) {
            // Only adoption after a restart needs the record; the sandbox runs regardless.
            tracing::warn!(session = %id, error = %e, "recording the sandbox's pid");
        }
        self.children
            .lock()
            .expect("children lock")
            .insert(id.clone(), pid);
        let log_path = dir.join("agent.log");
        let log = Arc::new(tokio::sync::Mutex::new(
            CappedLog::open(&log_path).await.map_err(io)?,
        ));
        let copiers = vec![
            tokio::spawn(copy_lines(stdout, log.clone(), id.clone())),
            tokio::spawn(copy_lines(stderr, log, id.clone())),
        ];
        let ending = self.ending(&id, Some(pid));
        tokio::spawn(async move {
            let ended = match exit.await {
                Ok(Ok(ended)) => ended,
                Ok(Err(e)) => {
                    tracing::error!(session = %ending.id, error = %e, "waiting for agent failed");
                    namespaces::Ended::default()
                }
                Err(_) => {
                    tracing::error!(session = %ending.id, "waiting for agent failed: the waiter is gone");
                    namespaces::Ended::default()
                }
            };
            ending
                .finish(describe(ended), ended.code == Some(0), copiers)
                .await;
        });
        tracing::info!(session = %spec.session_id, pid, dir = %dir.display(), isolated = self.isolated(), "local sandbox started");
        Ok(())
    }

    fn ending(&self, id: &str, pid: Option<i32>) -> Ending {
        Ending {
            id: id.to_string(),
            pid,
            dir: self.sandbox_dir(id),
            retention: self.config.retention,
            children: self.children.clone(),
            exits: self.exits.clone(),
        }
    }

    /// Takes over the sandboxes in this data directory that no running control plane
    /// watches: left by an earlier run of this one, or by another replica on this machine that
    /// died (their agents outlive it and reconnect). Reports the ones that ended meanwhile so
    /// their sessions end too. Sandboxes of another machine sharing the directory, and those
    /// a live replica watches, are left alone. Runs at start and at every housekeeping pass;
    /// replicas take turns through a lock file, so one sandbox gets one new owner. Later
    /// passes (`at_start` false) leave alone what this process may be booting right now: a
    /// directory without a record yet, or a record naming this process as its owner.
    fn adopt_orphans(&self, at_start: bool) {
        let entries = match std::fs::read_dir(&self.config.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(dir = %self.config.root.display(), error = %e, "looking for sandboxes nobody watches");
                return;
            }
        };
        let _turn = match adoption_lock(&self.config.root) {
            Ok(Some(lock)) => lock,
            // Another replica is looking right now; the next pass looks again.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(dir = %self.config.root.display(), error = %e, "locking the sandbox directory for adoption");
                return;
            }
        };
        let me = record::Owner::this_process().ok();
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_safe_component(&id) || !entry.path().is_dir() || self.is_running(&id) {
                continue;
            }
            let record = match SandboxRecord::read(&entry.path()) {
                Ok(record) => record,
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "unreadable sandbox record");
                    None
                }
            };
            // Kept for debugging after it ended: housekeeping removes it in time.
            if record.as_ref().is_some_and(|r| r.ended_ms.is_some()) {
                continue;
            }
            if !at_start
                && record
                    .as_ref()
                    .is_none_or(|r| r.owner.is_some() && r.owner == me)
            {
                continue;
            }
            if record
                .as_ref()
                .is_some_and(|r| r.is_on_another_machine() || r.is_watched_by_another_process())
            {
                continue;
            }
            let alive = record.as_ref().and_then(|r| Some((r, r.open_if_alive()?)));
            match alive {
                Some((record, pidfd)) => {
                    let pid = record.pid;
                    let adopted = SandboxRecord {
                        owner: me.clone(),
                        ..record.clone()
                    };
                    if let Err(e) = adopted.write(&entry.path()) {
                        tracing::warn!(session = %id, error = %e, "recording the sandbox's new owner");
                    }
                    tracing::info!(session = %id, pid, "adopted a sandbox no running control plane watched");
                    self.children
                        .lock()
                        .expect("children lock")
                        .insert(id.clone(), pid);
                    let ending = self.ending(&id, Some(pid));
                    tokio::spawn(async move {
                        if let Err(e) = exited(pidfd).await {
                            tracing::warn!(session = %ending.id, error = %e, "watching an adopted sandbox; treating it as ended");
                        }
                        let status = "ended (adopted from a control plane that stopped; exit status unknown)";
                        ending.finish(status.into(), false, Vec::new()).await;
                    });
                }
                None => {
                    // Its pid may belong to someone else by now: nothing to signal.
                    let ending = self.ending(&id, None);
                    tokio::spawn(async move {
                        let status = "ended while no control plane watched it";
                        ending.finish(status.into(), false, Vec::new()).await;
                    });
                }
            }
        }
    }

    fn spawn_plain(
        &self,
        spec: &SandboxSpec,
        dir: &Path,
        workspace: &Path,
        home: &Path,
        opencode_packages: Option<&Path>,
    ) -> Result<Started, SandboxError> {
        let mut cmd = tokio::process::Command::new(&self.config.agent_bin);
        cmd.env_clear();
        for key in PASSTHROUGH_ENV {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd.env("HOME", home)
            .env("KORTIX_WORKSPACE", workspace)
            .env("KORTIX_SPOOL_DIR", dir.join("spool"))
            .env("TMPDIR", std::env::temp_dir());
        if let Some(dir) = opencode_packages {
            cmd.env("KORTIX_OPENCODE_PACKAGES", dir);
        }
        for (k, v) in &self.config.extra_env {
            cmd.env(k, v);
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        cmd.current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| SandboxError::Boot {
            session_id: spec.session_id.clone(),
            message: format!("cannot run {}: {e}", self.config.agent_bin.display()),
        })?;
        let pid = child.id().unwrap_or_default() as i32;
        let stdout: Box<dyn AsyncRead + Send + Unpin> = match child.stdout.take() {
            Some(out) => Box::new(out),
            None => Box::new(tokio::io::empty()),
        };
        let stderr: Box<dyn AsyncRead + Send + Unpin> = match child.stderr.take() {
            Some(err) => Box::new(err),
            None => Box::new(tokio::io::empty()),
        };
        let (tx, exit) = oneshot::channel();
        tokio::spawn(async move {
            let ended = child.wait().await.map(|status| {
                use std::os::unix::process::ExitStatusExt;
                namespaces::Ended {
                    code: status.code(),
                    signal: status.signal(),
                }
            });
            let _ = tx.send(ended);
        });
        Ok(Started {
            pid,
            stdout,
            stderr,
            exit,
        })
    }

    async fn spawn_isolated(
        &self,
        spec: &SandboxSpec,
        source: RootSource,
        dir: &Path,
        workspace: &Path,
        home: &Path,
        opencode_packages: Option<&Path>,
    ) -> Result<Started, SandboxError> {
        let id = spec.session_id.clone();
        let boot = |message: String| SandboxError::Boot {
            session_id: id.clone(),
            message,
        };
        let spool = dir.join("spool");
        let staging = dir.join("rootfs");
        for d in [&spool, &staging] {
            tokio::fs::create_dir_all(d)
                .await
                .map_err(|source| SandboxError::Io {
                    session_id: id.clone(),
                    source,
                })?;
        }
        // The same variables a plain agent gets; the sandbox sets its own paths over them.
        let mut env = BTreeMap::new();
        for key in PASSTHROUGH_ENV.iter().filter(|k| **k != "PATH") {
            if let Ok(v) = std::env::var(key) {
                env.insert(key.to_string(), v);
            }
        }
        env.extend(self.config.extra_env.iter().cloned());
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let launch = namespaces::prepare(
            &SandboxLayout {
                session_id: &id,
                staging: &staging,
                workspace,
                home,
                spool: &spool,
                source: &source,
                agent_bin: &self.config.agent_bin,
                opencode_packages,
            },
            env,
        )
        .map_err(|e| boot(format!("preparing the isolated sandbox: {e}")))?;
        let (out_r, out_w) = pipe().map_err(|e| boot(format!("creating the output pipe: {e}")))?;
        let (err_r, err_w) = pipe().map_err(|e| boot(format!("creating the output pipe: {e}")))?;
        let null = std::fs::File::open("/dev/null")
            .map_err(|e| boot(format!("opening /dev/null: {e}")))?;
        // Setting up the mounts takes a few milliseconds of blocking system calls.
        let pid = tokio::task::spawn_blocking(move || {
            namespaces::spawn(&launch, OwnedFd::from(null), out_w, err_w)
        })
        .await
        .map_err(|e| boot(format!("starting the isolated sandbox: {e}")))?
        .map_err(|e| {
            boot(format!(
                "cannot run kortix-agent isolated: {}",
                namespaces::explain(&e)
            ))
        })?;
        let (tx, exit) = oneshot::channel();
        let waiter = std::thread::Builder::new()
            .name(format!("sandbox-{id}"))
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = tx.send(namespaces::wait(pid));
            });
        if let Err(e) = waiter {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = namespaces::wait(pid);
            return Err(boot(format!("starting the sandbox's waiter: {e}")));
        }
        let reader = |fd: OwnedFd| -> Result<Box<dyn AsyncRead + Send + Unpin>, SandboxError> {
            let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| boot(format!("reading the agent's output: {e}")))?;
            Ok(Box::new(rx))
        };
        Ok(Started {
            pid,
            stdout: reader(out_r)?,
            stderr: reader(err_r)?,
            exit,
        })
    }
}

/// What is left to do when one sandbox ends.
struct Ending {
    id: String,
    /// The agent's process group, when it is known to be this sandbox's.
    pid: Option<i32>,
    dir: PathBuf,
    retention: Duration,
    children: Arc<Mutex<HashMap<String, i32>>>,
    exits: mpsc::Sender<SandboxExit>,
}

impl Ending {
    /// Ends what is left of the sandbox, keeps or removes its directory, and reports the exit.
    async fn finish(
        self,
        status: String,
        success: bool,
        copiers: Vec<tokio::task::JoinHandle<()>>,
    ) {
        if let Some(pid) = self.pid {
            // The agent may have left descendants in its group; they go with it. (An isolated
            // agent is its PID namespace's init: the kernel already ended everything in it.)
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // The agent's last words reach agent.log before its exit is reported (bounded, in
        // case something that escaped the group still holds the pipes).
        let _ =
            tokio::time::timeout(Duration::from_secs(2), futures::future::join_all(copiers)).await;
        self.children
            .lock()
            .expect("children lock")
            .remove(&self.id);
        let (dir, retention, id) = (self.dir.clone(), self.retention, self.id.clone());
        let tidied = tokio::task::spawn_blocking(move || dirs::ended(&dir, retention)).await;
        match tidied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(session = %id, error = %e, "removing the sandbox directory")
            }
            Err(e) => tracing::warn!(session = %id, error = %e, "removing the sandbox directory"),
        }
        let exit = SandboxExit {
            session_id: self.id.clone(),
            status,
            success,
        };
        tracing::info!(session = %self.id, status = %exit.status, "local sandbox exited");
        let _ = self.exits.send(exit).await;
    }
}

/// Resolves when the process behind `pidfd` has exited (its pidfd becomes readable).
#[allow(unsafe_code)]
async fn exited(pidfd: OwnedFd) -> std::io::Result<()> {
    // SAFETY: the AsyncFd owns the pidfd, which nothing else closes or replaces while it is
    // registered (it is dropped, deregistered first, when this function returns).
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)?
    };
    let _ = fd.readable().await?;
    Ok(())
}

/// A started agent: its pid (process group), output streams and eventual exit.
struct Started {
    pid: i32,
    stdout: Box<dyn AsyncRead + Send + Unpin>,
    stderr: Box<dyn AsyncRead + Send + Unpin>,
    exit: oneshot::Receiver<std::io::Result<namespaces::Ended>>,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

fn confinement(config: &LocalConfig) -> Confinement {
    confine(&config.isolation, &config.root)
}

/// How `isolation` confines a process here; `scratch` is a directory the support probe may
/// create a directory in.
pub fn confine(isolation: &Isolation, scratch: &Path) -> Confinement {
    let config = Confined {
        isolation,
        root: scratch,
    };
    let source = match &config.isolation.root {
        Some(dir) => RootSource::Image(dir.clone()),
        None => RootSource::Host,
    };
    match config.isolation.mode {
        IsolationMode::None => {
            if let Some(dir) = &config.isolation.root {
                tracing::warn!(root = %dir.display(), "--sandbox-root is ignored with --isolation none");
            }
            Confinement::Plain
        }
        IsolationMode::Namespaces => match namespaces_supported(config.root) {
            Ok(()) => Confinement::Namespaces(source),
            Err(reason) => Confinement::Unavailable(reason),
        },
        IsolationMode::Auto => match namespaces_supported(config.root) {
            Ok(()) => Confinement::Namespaces(source),
            Err(reason) if config.isolation.root.is_some() => Confinement::Unavailable(reason),
            Err(reason) => {
                tracing::warn!(
                    "namespace isolation is unavailable, so local sandboxes run as plain child \
                     processes that can see everything the control plane can: {reason} \
                     (pass --isolation none to acknowledge, or --isolation namespaces to refuse to run without it)"
                );
                Confinement::Plain
            }
        },
    }
}

struct Confined<'a> {
    isolation: &'a Isolation,
    root: &'a Path,
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
                // The agent's process group; for an isolated agent, killing it (its PID
                // namespace's init) also ends every process in the namespace.
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

    /// This process's children and adopted sandboxes; other replicas' are not visible here.
    fn inventory(&self) -> BoxFuture<'_, Result<Inventory, SandboxError>> {
        Box::pin(async move {
            Ok(Inventory {
                sandboxes: self
                    .children
                    .lock()
                    .expect("children lock")
                    .keys()
                    .cloned()
                    .collect(),
                complete: false,
            })
        })
    }

    fn ends_with_control_plane(&self) -> bool {
        true
    }

    fn discard<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            if !is_safe_component(session_id) || self.is_running(session_id) {
                return Ok(());
            }
            let dir = self.sandbox_dir(session_id);
            tokio::task::spawn_blocking(move || dirs::remove(&dir))
                .await
                .map_err(|e| SandboxError::Boot {
                    session_id: session_id.to_string(),
                    message: format!("removing the sandbox directory: {e}"),
                })?
                .map_err(|source| SandboxError::Io {
                    session_id: session_id.to_string(),
                    source,
                })
        })
    }

    fn housekeep(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.adopt_orphans(false);
            let (root, retention) = (self.config.root.clone(), self.config.retention);
            let running: std::collections::HashSet<String> = self
                .children
                .lock()
                .expect("children lock")
                .keys()
                .cloned()
                .collect();
            let swept = tokio::task::spawn_blocking(move || {
                dirs::remove_expired(&root, retention, |id| {
                    is_safe_component(id) && !running.contains(id)
                })
            })
            .await;
            if let Ok(Err(e)) = swept {
                tracing::warn!(error = %e, "removing expired sandbox directories");
            }
        })
    }
}

/// An exclusive lock on `<root>/.adoption.lock`, or `None` while another process holds it.
fn adoption_lock(root: &Path) -> std::io::Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(".adoption.lock"))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

fn describe(status: namespaces::Ended) -> String {
    match (status.code, status.signal) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The tests read `agent.log` after the sandbox ended.
    const KEEP: Duration = Duration::from_secs(3600);

    fn plain() -> Isolation {
        Isolation {
            mode: IsolationMode::None,
            root: None,
        }
    }

    fn spec(id: &str) -> SandboxSpec {
        SandboxSpec {
            session_id: id.to_string(),
            env: BTreeMap::from([("KORTIX_SESSION_ID".to_string(), id.to_string())]),
            resources: Default::default(),
            opencode_npm: Vec::new(),
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
                isolation: plain(),
                retention: KEEP,
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
                isolation: plain(),
                retention: KEEP,
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

    fn plain_provider(
        root: &Path,
        agent_bin: PathBuf,
        retention: Duration,
    ) -> (LocalProvider, mpsc::Receiver<SandboxExit>) {
        let (tx, rx) = mpsc::channel(4);
        let provider = LocalProvider::new(
            LocalConfig {
                root: root.to_path_buf(),
                agent_bin,
                extra_env: vec![],
                isolation: plain(),
                retention,
            },
            tx,
        );
        (provider, rx)
    }

    #[tokio::test]
    async fn an_ended_sandbox_directory_is_removed_without_retention() {
        let dir = tempfile::tempdir().unwrap();
        let agent = script(
            dir.path(),
            "mkdir -p \"$HOME/.cache/x\" && chmod 555 \"$HOME/.cache/x\"\n",
        );
        let root = dir.path().join("sandboxes");
        let (provider, mut rx) = plain_provider(&root, agent, Duration::ZERO);
        provider.boot(spec("s1")).await.unwrap();
        let exit = rx.recv().await.unwrap();
        assert_eq!(exit.status, "exit status 0");
        assert!(
            !root.join("s1").exists(),
            "removed before the exit was reported"
        );
    }

    #[tokio::test]
    async fn a_restarted_provider_adopts_live_sandboxes_and_reports_dead_ones() {
        let dir = tempfile::tempdir().unwrap();
        let agent = script(dir.path(), "echo started\nexec sleep 300\n");
        let root = dir.path().join("sandboxes");
        let (first, _first_exits) = plain_provider(&root, agent.clone(), Duration::ZERO);
        first.boot(spec("live")).await.unwrap();
        // A sandbox whose agent died while no control plane ran: a record of a pid that
        // is gone (a process that has exited and been reaped).
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id() as i32;
        let record = SandboxRecord::of(gone_pid).unwrap();
        gone.wait().unwrap();
        std::fs::create_dir_all(root.join("dead/workspace")).unwrap();
        record.write(&root.join("dead")).unwrap();

        // A second provider on the same directory stands for the restarted control plane.
        let (second, mut exits) = plain_provider(&root, agent, Duration::ZERO);
        let exit = tokio::time::timeout(Duration::from_secs(20), exits.recv())
            .await
            .expect("the dead sandbox is reported")
            .unwrap();
        assert_eq!(exit.session_id, "dead");
        assert_eq!(exit.status, "ended while no control plane watched it");
        assert!(!root.join("dead").exists());
        assert!(second.is_running("live"));
        let inventory = second.inventory().await.unwrap();
        assert_eq!(inventory.sandboxes, vec!["live".to_string()]);
        assert!(!inventory.complete);

        second.kill("live").await.unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(20), exits.recv())
            .await
            .expect("the adopted sandbox's end is seen")
            .unwrap();
        assert_eq!(exit.session_id, "live");
        assert!(exit.status.contains("adopted"), "{}", exit.status);
        assert!(!second.is_running("live"));
        assert!(!root.join("live").exists());
    }

    /// Replicas on one machine share the sandbox directory: a sandbox a live replica watches
    /// is left to it, one of another machine is never touched, and when the watching
    /// replica dies the next housekeeping pass of a survivor adopts its sandbox.
    #[tokio::test]
    async fn a_live_replicas_sandboxes_are_left_to_it_and_adopted_when_it_dies() {
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandboxes");
        // The agent, and a process standing for the replica that started it.
        let mut agent = std::process::Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap();
        let mut replica = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let watched = SandboxRecord {
            owner: Some(record::Owner {
                pid: replica.id() as i32,
                start_ticks: SandboxRecord::of(replica.id() as i32).unwrap().start_ticks,
            }),
            ..SandboxRecord::of(agent.id() as i32).unwrap()
        };
        std::fs::create_dir_all(root.join("theirs/workspace")).unwrap();
        watched.write(&root.join("theirs")).unwrap();
        let elsewhere = SandboxRecord {
            machine_id: "another-machine".into(),
            boot_id: "another-boot".into(),
            ..watched.clone()
        };
        std::fs::create_dir_all(root.join("remote/workspace")).unwrap();
        elsewhere.write(&root.join("remote")).unwrap();

        let agent_bin = script(dir.path(), "exec sleep 300\n");
        let (survivor, mut exits) = plain_provider(&root, agent_bin, Duration::ZERO);
        // What this process may be booting right now: a directory whose record is not
        // written yet, and one whose record names this process.
        std::fs::create_dir_all(root.join("booting/workspace")).unwrap();
        let ours = SandboxRecord::of(agent.id() as i32).unwrap();
        std::fs::create_dir_all(root.join("ours/workspace")).unwrap();
        ours.write(&root.join("ours")).unwrap();
        survivor.housekeep().await;
        assert!(
            !survivor.is_running("ours"),
            "a sandbox being booted here is left alone"
        );
        assert!(root.join("booting").exists() && root.join("ours").exists());
        assert!(
            !survivor.is_running("theirs"),
            "a live replica's sandbox is left to it"
        );
        assert!(!survivor.is_running("remote"));
        assert!(exits.try_recv().is_err(), "nothing was reported as ended");

        // The replica dies: the survivor's next pass adopts its sandbox, and records that it
        // now watches it; the other machine's sandbox is still left alone.
        replica.kill().unwrap();
        replica.wait().unwrap();
        survivor.housekeep().await;
        assert!(survivor.is_running("theirs"));
        let owner = SandboxRecord::read(&root.join("theirs"))
            .unwrap()
            .unwrap()
            .owner;
        assert_eq!(owner, Some(record::Owner::this_process().unwrap()));
        assert!(!survivor.is_running("remote"));
        assert!(root.join("remote").exists());

        survivor.kill("theirs").await.unwrap();
        let _ = agent.wait();
        let exit = tokio::time::timeout(Duration::from_secs(20), exits.recv())
            .await
            .expect("the adopted sandbox's end is seen")
            .unwrap();
        assert_eq!(exit.session_id, "theirs");
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
                isolation: plain(),
                retention: KEEP,
            },
            tx,
        );
        assert!(provider.boot(spec("../x")).await.is_err());
        let err = provider.boot(spec("ok")).await.unwrap_err().to_string();
        assert!(err.contains("cannot run"), "{err}");
    }

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("agent.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    }

    /// An isolated provider, or `None` (with a note; a failure under CI=true) where this
    /// kernel cannot isolate.
    fn isolated(
        dir: &Path,
        agent_bin: PathBuf,
    ) -> Option<(LocalProvider, mpsc::Receiver<SandboxExit>)> {
        let root = dir.join("sandboxes");
        if let Err(reason) = namespaces_supported(&root) {
            kortix_tests::require::unavailable("namespace isolation", &reason);
            return None;
        }
        let (tx, rx) = mpsc::channel(4);
        let provider = LocalProvider::new(
            LocalConfig {
                root,
                agent_bin,
                extra_env: vec![("KORTIX_TEST_VAR".into(), "passed".into())],
                isolation: Isolation {
                    mode: IsolationMode::Namespaces,
                    root: None,
                },
                retention: KEEP,
            },
            tx,
        );
        assert!(provider.isolated());
        Some((provider, rx))
    }

    #[tokio::test]
    async fn an_isolated_agent_is_pid_1_and_sees_only_its_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let agent = script(
            dir.path(),
            "echo \"pid=$$ home=$HOME ws=$KORTIX_WORKSPACE pwd=$(pwd) var=$KORTIX_TEST_VAR\"\n\
             echo \"host=$(cat /proc/sys/kernel/hostname)\"\n\
             echo \"root=$(ls / | tr '\\n' ' ')\"\n\
             test -e /workspace/seen && echo workspace-ok\n\
             test -e \"$DATA\" && echo data-visible\n\
             touch /usr/.kortix-probe 2>/dev/null || echo usr-read-only\n\
             grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status\n\
             (echo sandbox > /proc/sys/kernel/hostname) 2>/dev/null || echo sysctl-read-only\n\
             test -s /proc/kcore || echo kcore-masked\n\
             exit 4\n",
        );
        let Some((provider, mut rx)) = isolated(dir.path(), agent) else {
            return;
        };
        // After the provider started: a directory it finds at start without a record is a
        // sandbox that died with an earlier control plane.
        std::fs::create_dir_all(dir.path().join("sandboxes/s1/workspace")).unwrap();
        std::fs::write(dir.path().join("sandboxes/s1/workspace/seen"), "").unwrap();
        let mut spec = spec("s1");
        spec.env
            .insert("DATA".into(), dir.path().display().to_string());
        provider.boot(spec).await.unwrap();
        let exit = rx.recv().await.unwrap();
        assert_eq!(exit.status, "exit status 4");
        let log = std::fs::read_to_string(dir.path().join("sandboxes/s1/agent.log")).unwrap();
        assert!(
            log.contains("pid=1 home=/root ws=/workspace pwd=/workspace var=passed"),
            "{log}"
        );
        assert!(log.contains("host=kortix-s1"), "{log}");
        assert!(log.contains("workspace-ok"), "{log}");
        assert!(!log.contains("data-visible"), "{log}");
        assert!(!log.contains("sandboxes"), "{log}");
        assert!(log.contains("usr-read-only"), "{log}");
        assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
        assert!(log.contains("CapBnd:\t0000000000000000"), "{log}");
        assert!(log.contains("NoNewPrivs:\t1"), "{log}");
        assert!(log.contains("sysctl-read-only"), "{log}");
        assert!(log.contains("kcore-masked"), "{log}");
    }

    #[tokio::test]
    async fn killing_an_isolated_sandbox_ends_its_whole_namespace() {
        let dir = tempfile::tempdir().unwrap();
        // A child in its own process group, so only the namespace's end takes it.
        let marker = format!("{}", 400 + std::process::id() % 500);
        let agent = script(
            dir.path(),
            &format!("setsid sleep {marker} &\necho started\nwait\n"),
        );
        let Some((provider, mut rx)) = isolated(dir.path(), agent) else {
            return;
        };
        provider.boot(spec("s2")).await.unwrap();
        let log = dir.path().join("sandboxes/s2/agent.log");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("started")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the agent never started"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let sleeping = || {
            std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| c == format!("sleep\0{marker}\0").as_bytes())
            })
        };
        while !sleeping() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never started"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        provider.kill("s2").await.unwrap();
        let exit = rx.recv().await.unwrap();
        assert_eq!(exit.status, "killed by signal 9");
        assert!(!provider.is_running("s2"));
        while sleeping() {
            assert!(
                std::time::Instant::now() < deadline,
                "a process outlived its sandbox"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn an_image_root_without_an_agent_is_a_boot_error() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        std::fs::create_dir_all(image.join("usr")).unwrap();
        if let Err(reason) = namespaces_supported(&dir.path().join("sandboxes")) {
            kortix_tests::require::unavailable("namespace isolation", &reason);
            return;
        }
        let (tx, _rx) = mpsc::channel(4);
        let provider = LocalProvider::new(
            LocalConfig {
                root: dir.path().join("sandboxes"),
                agent_bin: dir.path().join("unused"),
                extra_env: vec![],
                isolation: Isolation {
                    mode: IsolationMode::Auto,
                    root: Some(image),
                },
                retention: KEEP,
            },
            tx,
        );
        let err = provider.boot(spec("s3")).await.unwrap_err().to_string();
        assert!(err.contains("/usr/local/bin/kortix-agent"), "{err}");
    }

    #[tokio::test]
    async fn required_isolation_that_is_unavailable_fails_boots_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let provider = LocalProvider {
            config: LocalConfig {
                root: dir.path().to_path_buf(),
                agent_bin: dir.path().join("unused"),
                extra_env: vec![],
                isolation: Isolation {
                    mode: IsolationMode::Namespaces,
                    root: None,
                },
                retention: KEEP,
            },
            confinement: Confinement::Unavailable("user namespaces are disabled".into()),
            opencode_packages: None,
            children: Arc::default(),
            exits: tx,
        };
        let err = provider.boot(spec("s4")).await.unwrap_err().to_string();
        assert!(
            err.contains(
                "namespace isolation is required but unavailable: user namespaces are disabled"
            ),
            "{err}"
        );
        assert!(!provider.is_running("s4"));
    }
}
