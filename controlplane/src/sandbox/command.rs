//! One command in a sandbox, to its end: what an app's build runs in.
//!
//! A build has no agent to talk to, so it does not go through a [`super::SandboxProvider`]:
//! it is the `local` provider's confinement applied to a single command. With namespace
//! isolation the command is cloned into new user, mount, PID, IPC and UTS namespaces over
//! the same root a session's sandbox gets (see [`super::namespaces`]), with its working
//! directory at `/workspace`; without it, it is a plain child process in its own process
//! group. Either way it is killed whole when it overruns its time.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

use super::local::Confinement;
use super::namespaces::{self, CommandLayout, Ended};

/// Variables handed through from the control plane's environment to a plain child.
const PASSTHROUGH_ENV: &[&str] = &["PATH", "LANG", "TZ"];
/// Longest output line kept whole; the rest of a longer line is cut.
const MAX_LINE: usize = 8 * 1024;

/// What to run, where.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// Names the sandbox (host name, thread names, logs).
    pub name: String,
    /// e.g. `["/bin/sh", "-c", "npm run build"]`; the first is an absolute path.
    pub argv: Vec<String>,
    /// The working directory (`/workspace` inside an isolated sandbox).
    pub workspace: PathBuf,
    /// A private, empty `HOME`.
    pub home: PathBuf,
    /// An empty directory for the sandbox's own bookkeeping (its root's mount point).
    pub scratch: PathBuf,
    /// Exactly the variables the command gets besides `PATH`, `HOME` and `TMPDIR`.
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandEnd {
    Exited(Ended),
    TimedOut(Duration),
}

impl CommandEnd {
    pub fn success(self) -> bool {
        matches!(self, CommandEnd::Exited(Ended { code: Some(0), .. }))
    }

    pub fn describe(self) -> String {
        match self {
            CommandEnd::Exited(Ended {
                code: Some(code), ..
            }) => format!("exited with status {code}"),
            CommandEnd::Exited(Ended {
                signal: Some(sig), ..
            }) => format!("killed by signal {sig}"),
            CommandEnd::Exited(_) => "ended (status unknown)".into(),
            CommandEnd::TimedOut(after) => format!("timed out after {}s", after.as_secs()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the sandbox cannot run: {0}")]
    Unavailable(String),
    #[error("starting the sandbox: {0}")]
    Start(String),
}

/// Runs `spec` confined as `confinement` says; every output line (stdout and stderr, in the
/// order they arrive) goes to `lines`. Returns once the command and everything it started
/// in its sandbox (or process group) have ended.
pub async fn run(
    confinement: &Confinement,
    spec: CommandSpec,
    lines: mpsc::UnboundedSender<String>,
) -> Result<CommandEnd, CommandError> {
    let started = match confinement {
        Confinement::Plain => start_plain(&spec)?,
        Confinement::Namespaces(source) => start_isolated(&spec, source.clone()).await?,
        Confinement::Unavailable(reason) => {
            return Err(CommandError::Unavailable(format!(
                "namespace isolation is required but unavailable: {reason}"
            )));
        }
    };
    let Started {
        pid,
        stdout,
        stderr,
        exit,
    } = started;
    let copiers = [
        tokio::spawn(copy_lines(stdout, lines.clone())),
        tokio::spawn(copy_lines(stderr, lines)),
    ];
    let mut exit = exit;
    let end = match tokio::time::timeout(spec.timeout, &mut exit).await {
        Ok(ended) => CommandEnd::Exited(ended.unwrap_or_default()),
        Err(_) => {
            // Not reaped yet (the waiter still holds it), so the pid is still ours. For an
            // isolated command it is its PID namespace's init: the kernel ends the rest.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = exit.await;
            CommandEnd::TimedOut(spec.timeout)
        }
    };
    if matches!(confinement, Confinement::Plain) {
        // Whatever the command left running in its group goes with it.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // The last lines reach the log before the end is reported (bounded, in case something
    // that escaped still holds the pipes).
    let _ = tokio::time::timeout(Duration::from_secs(2), futures::future::join_all(copiers)).await;
    Ok(end)
}

struct Started {
    pid: i32,
    stdout: Box<dyn AsyncRead + Send + Unpin>,
    stderr: Box<dyn AsyncRead + Send + Unpin>,
    exit: oneshot::Receiver<Ended>,
}

fn start_plain(spec: &CommandSpec) -> Result<Started, CommandError> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(CommandError::Start("no command".into()));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env_clear();
    for key in PASSTHROUGH_ENV {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.envs(&spec.env)
        .env("HOME", &spec.home)
        .env("TMPDIR", std::env::temp_dir())
        .current_dir(&spec.workspace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| CommandError::Start(format!("cannot run {program}: {e}")))?;
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
        use std::os::unix::process::ExitStatusExt;
        let ended = child
            .wait()
            .await
            .map(|status| Ended {
                code: status.code(),
                signal: status.signal(),
            })
            .unwrap_or_default();
        let _ = tx.send(ended);
    });
    Ok(Started {
        pid,
        stdout,
        stderr,
        exit,
    })
}

async fn start_isolated(
    spec: &CommandSpec,
    source: namespaces::RootSource,
) -> Result<Started, CommandError> {
    let start = |what: &str, e: &dyn std::fmt::Display| CommandError::Start(format!("{what}: {e}"));
    let staging = spec.scratch.join("rootfs");
    let spool = spec.scratch.join("run");
    for d in [&staging, &spool] {
        tokio::fs::create_dir_all(d)
            .await
            .map_err(|e| start(&format!("creating {}", d.display()), &e))?;
    }
    let launch = namespaces::prepare_command(
        &CommandLayout {
            name: &spec.name,
            staging: &staging,
            workspace: &spec.workspace,
            home: &spec.home,
            scratch: &spool,
            source: &source,
        },
        &spec.argv,
        spec.env.clone(),
    )
    .map_err(|e| start("preparing the isolated sandbox", &e))?;
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from);
    let (out_r, out_w) = pipe().map_err(|e| start("creating the output pipe", &e))?;
    let (err_r, err_w) = pipe().map_err(|e| start("creating the output pipe", &e))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| start("opening /dev/null", &e))?;
    // Setting up the mounts takes a few milliseconds of blocking system calls.
    let pid = tokio::task::spawn_blocking(move || {
        namespaces::spawn(&launch, OwnedFd::from(null), out_w, err_w)
    })
    .await
    .map_err(|e| start("starting the isolated sandbox", &e))?
    .map_err(|e| CommandError::Start(namespaces::explain(&e)))?;
    let (tx, exit) = oneshot::channel();
    let waiter = std::thread::Builder::new()
        .name(format!("build-{}", spec.name))
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = tx.send(namespaces::wait(pid).unwrap_or_default());
        });
    if let Err(e) = waiter {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = namespaces::wait(pid);
        return Err(start("starting the sandbox's waiter", &e));
    }
    let reader = |fd: OwnedFd| -> Result<Box<dyn AsyncRead + Send + Unpin>, CommandError> {
        let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
            .map_err(|e| start("reading the command's output", &e))?;
        Ok(Box::new(rx))
    };
    Ok(Started {
        pid,
        stdout: reader(out_r)?,
        stderr: reader(err_r)?,
        exit,
    })
}

/// Sends each line of `reader` (without its newline, lossily decoded, cut at [`MAX_LINE`]).
async fn copy_lines(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    tx: mpsc::UnboundedSender<String>,
) {
    let mut buf = [0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                line.clear();
                cut = false;
            } else if line.len() < MAX_LINE {
                line.push(b);
            } else if !cut {
                cut = true;
                line.extend_from_slice(" …(cut)".as_bytes());
            }
        }
    }
    if !line.is_empty() {
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, script: &str, timeout: Duration) -> CommandSpec {
        for d in ["ws", "home", "scratch"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        CommandSpec {
            name: "test-build".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            workspace: dir.join("ws"),
            home: dir.join("home"),
            scratch: dir.join("scratch"),
            env: BTreeMap::from([("GREETING".into(), "hello".into())]),
            timeout,
        }
    }

    async fn collect(mut rx: mpsc::UnboundedReceiver<String>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = rx.recv().await {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn a_plain_command_sees_its_env_and_writes_its_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let end = run(
            &Confinement::Plain,
            spec(
                dir.path(),
                "echo $GREETING; echo oops >&2; echo x > out.txt",
                Duration::from_secs(30),
            ),
            tx,
        )
        .await
        .unwrap();
        assert!(end.success(), "{end:?}");
        let mut lines = collect(rx).await;
        lines.sort();
        assert_eq!(lines, ["hello", "oops"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ws/out.txt")).unwrap(),
            "x\n"
        );
    }

    #[tokio::test]
    async fn failures_and_timeouts_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let end = run(
            &Confinement::Plain,
            spec(dir.path(), "exit 3", Duration::from_secs(30)),
            tx,
        )
        .await
        .unwrap();
        assert_eq!(end.describe(), "exited with status 3");
        let (tx, _rx) = mpsc::unbounded_channel();
        let started = std::time::Instant::now();
        let end = run(
            &Confinement::Plain,
            spec(
                dir.path(),
                "sleep 30 & sleep 30",
                Duration::from_millis(300),
            ),
            tx,
        )
        .await
        .unwrap();
        assert_eq!(end, CommandEnd::TimedOut(Duration::from_millis(300)));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!end.success());
    }

    #[tokio::test]
    async fn an_isolated_command_sees_only_its_workspace() {
        let dir = tempfile::tempdir().unwrap();
        if let Err(why) = super::super::local::namespaces_supported(dir.path()) {
            kortix_tests::require::unavailable("user namespaces", &why);
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let secret = dir.path().join("outside.txt");
        std::fs::write(&secret, "no").unwrap();
        let script = format!(
            "pwd; echo $GREETING; test -e {} && echo leaked; echo built > index.html",
            secret.display()
        );
        let end = run(
            &Confinement::Namespaces(namespaces::RootSource::Host),
            spec(dir.path(), &script, Duration::from_secs(30)),
            tx,
        )
        .await
        .unwrap();
        assert!(end.success(), "{end:?}");
        let lines = collect(rx).await;
        assert_eq!(lines, ["/workspace", "hello"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ws/index.html")).unwrap(),
            "built\n"
        );
    }
}
