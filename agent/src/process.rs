//! Child processes: spawning, exit statuses, orphan reaping and process-group signals.
//!
//! Every process the agent starts goes through [`Reaper`], which alone calls `waitpid`. As PID 1
//! or a child subreaper the agent must also reap orphans (`waitpid(-1)`), which would steal the
//! exit status of any child some other code waits for; owning all waiting in one place avoids
//! that race. Registration happens under the same lock the reaper takes before dispatching a
//! status, so a child that exits before it is registered is still delivered.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReapMode {
    /// Wait only for children spawned through the reaper (library use, tests).
    OwnChildren,
    /// Reap every child, including re-parented orphans (PID 1 / subreaper).
    AllChildren,
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => match Signal::try_from(s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
            (None, None) => write!(f, "unknown exit"),
        }
    }
}

#[derive(Clone)]
pub struct Reaper {
    inner: Arc<Inner>,
}

struct Inner {
    mode: ReapMode,
    state: Mutex<State>,
    /// While non-zero, `AllChildren` waits only for registered children: library code that
    /// waits for its own children (gix spawning `git-upload-pack` for a local clone) runs.
    holds: std::sync::atomic::AtomicUsize,
}

/// Suspends orphan reaping while alive (see [`Reaper::own_children_only`]).
pub struct ReapHold {
    inner: Arc<Inner>,
}

impl Drop for ReapHold {
    fn drop(&mut self) {
        self.inner
            .holds
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(Default)]
struct State {
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
    orphans_reaped: u64,
}

/// A spawned child; its pipes are taken by the caller.
pub struct Child {
    pub pid: u32,
    pub stdin: Option<std::process::ChildStdin>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    exit: Option<oneshot::Receiver<Exit>>,
    exited: Option<Exit>,
}

impl Child {
    /// Waits for the exit status (cancel-safe: may be called again after a timeout).
    pub async fn wait(&mut self) -> Exit {
        if let Some(e) = self.exited {
            return e;
        }
        let e = match self.exit.as_mut() {
            Some(rx) => rx.await.unwrap_or(Exit {
                code: None,
                signal: None,
            }),
            None => Exit {
                code: None,
                signal: None,
            },
        };
        self.exit = None;
        self.exited = Some(e);
        e
    }

    pub fn try_exit(&mut self) -> Option<Exit> {
        if self.exited.is_none()
            && let Some(rx) = self.exit.as_mut()
            && let Ok(e) = rx.try_recv()
        {
            self.exited = Some(e);
            self.exit = None;
        }
        self.exited
    }
}

impl Reaper {
    /// Starts the reaping task on the current tokio runtime.
    pub fn start(mode: ReapMode) -> io::Result<Reaper> {
        let reaper = Reaper {
            inner: Arc::new(Inner {
                mode,
                state: Mutex::new(State::default()),
                holds: std::sync::atomic::AtomicUsize::new(0),
            }),
        };
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let weak = Arc::downgrade(&reaper.inner);
        tokio::spawn(async move {
            // SIGCHLD coalesces; the tick catches anything a lost wake-up left behind.
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = sigchld.recv() => {}
                    _ = tick.tick() => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                inner.reap();
            }
        });
        Ok(reaper)
    }

    pub fn mode(&self) -> ReapMode {
        self.inner.mode
    }

    /// Until the guard drops, reap only children spawned through this reaper, so that code
    /// which waits for its own children (gix) is not robbed of their exit status.
    pub fn own_children_only(&self) -> ReapHold {
        self.inner
            .holds
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ReapHold {
            inner: self.inner.clone(),
        }
    }

    pub fn orphans_reaped(&self) -> u64 {
        self.inner.lock().orphans_reaped
    }

    /// Spawns `cmd` and registers it; stdout/stderr given as `Stdio::piped()` come back as
    /// async pipes.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Child> {
        let mut state = self.inner.lock();
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let (tx, rx) = oneshot::channel();
        state.waiting.insert(pid as i32, tx);
        drop(state);
        let stdout = child
            .stdout
            .take()
            .map(|s| pipe::Receiver::from_owned_fd(OwnedFd::from(s)))
            .transpose()?;
        let stderr = child
            .stderr
            .take()
            .map(|s| pipe::Receiver::from_owned_fd(OwnedFd::from(s)))
            .transpose()?;
        // The std handle is dropped without waiting: the reaper owns waiting.
        Ok(Child {
            pid,
            stdin: child.stdin.take(),
            stdout,
            stderr,
            exit: Some(rx),
            exited: None,
        })
    }

    /// Runs a command to completion with a deadline, capturing (bounded) output. On timeout
    /// the child's process group is killed.
    pub async fn output(&self, cmd: &mut Command, timeout: Duration) -> io::Result<Output> {
        use std::os::unix::process::CommandExt;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = self.spawn(cmd)?;
        let out = read_capped(child.stdout.take());
        let err = read_capped(child.stderr.take());
        let run = async {
            let (stdout, stderr, exit) = tokio::join!(out, err, child.wait());
            (stdout, stderr, exit)
        };
        match tokio::time::timeout(timeout, run).await {
            Ok((stdout, stderr, exit)) => Ok(Output {
                exit,
                stdout,
                stderr,
            }),
            Err(_) => {
                signal_group(child.pid, Signal::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{cmd:?} did not finish within {timeout:?}"),
                ))
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reap(&self) {
        let mode = if self.holds.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            ReapMode::OwnChildren
        } else {
            self.mode
        };
        match mode {
            ReapMode::AllChildren => loop {
                match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                    Ok(status) => self.dispatch(status),
                    Err(Errno::EINTR) => continue,
                    Err(_) => break,
                }
            },
            ReapMode::OwnChildren => {
                let pids: Vec<i32> = self.lock().waiting.keys().copied().collect();
                for pid in pids {
                    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::StillAlive) => {}
                        Ok(status) => self.dispatch(status),
                        // Someone else reaped it: report it as gone rather than wait forever.
                        Err(Errno::ECHILD) => {
                            if let Some(tx) = self.lock().waiting.remove(&pid) {
                                let _ = tx.send(Exit {
                                    code: None,
                                    signal: None,
                                });
                            }
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }

    fn dispatch(&self, status: WaitStatus) {
        let (pid, exit) = match status {
            WaitStatus::Exited(pid, code) => (
                pid,
                Exit {
                    code: Some(code),
                    signal: None,
                },
            ),
            WaitStatus::Signaled(pid, sig, _) => (
                pid,
                Exit {
                    code: None,
                    signal: Some(sig as i32),
                },
            ),
            // Stops and continues are not exits.
            _ => return,
        };
        let mut state = self.lock();
        match state.waiting.remove(&pid.as_raw()) {
            Some(tx) => {
                let _ = tx.send(exit);
            }
            None => state.orphans_reaped += 1,
        }
    }
}

#[derive(Debug)]
pub struct Output {
    pub exit: Exit,
    pub stdout: String,
    pub stderr: String,
}

const MAX_CAPTURE: usize = 256 * 1024;

async fn read_capped(pipe: Option<pipe::Receiver>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Keep reading past the cap so the child never blocks on a full pipe.
                if buf.len() < MAX_CAPTURE {
                    buf.extend_from_slice(&chunk[..n.min(MAX_CAPTURE - buf.len())]);
                }
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Sends `sig` to the process group led by `pgid`; a group that is already gone is fine.
pub fn signal_group(pgid: u32, sig: Signal) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    if raw <= 1 {
        return false;
    }
    killpg(Pid::from_raw(raw), sig).is_ok()
}

/// Makes this process the reaper of orphaned descendants unless it is PID 1 already.
/// Returns whether it is PID 1.
pub fn become_reaper() -> io::Result<bool> {
    if std::process::id() == 1 {
        return Ok(true);
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[tokio::test]
    async fn delivers_exit_statuses_and_output() {
        let reaper = Reaper::start(ReapMode::OwnChildren).unwrap();
        let out = reaper
            .output(
                Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(out.exit.code, Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");

        let mut child = reaper
            .spawn(Command::new("sleep").arg("30").process_group(0))
            .unwrap();
        assert!(child.try_exit().is_none());
        assert!(signal_group(child.pid, Signal::SIGKILL));
        let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap();
        assert_eq!(exit.signal, Some(Signal::SIGKILL as i32));
        assert_eq!(exit.to_string(), "killed by SIGKILL");
    }

    #[tokio::test]
    async fn output_times_out_and_kills_the_group() {
        let reaper = Reaper::start(ReapMode::OwnChildren).unwrap();
        let started = std::time::Instant::now();
        let err = reaper
            .output(Command::new("sleep").arg("30"), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
