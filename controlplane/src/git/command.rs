//! Running the `git` program: isolated from the machine's git configuration, bounded in time
//! and output, and killed with all of its helpers when it overruns.

use std::{
    ffi::OsStr,
    path::Path,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The most stdout we keep from one command; our commands print little (ref names, ids).
const MAX_STDOUT: usize = 16 << 20;
/// The most stderr we keep (the tail) for error messages.
pub(crate) const MAX_STDERR: usize = 16 << 10;

/// Why running git failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("could not start `git {what}`: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`git {what}` timed out after {}s{}", after.as_secs(), suffix(stderr))]
    TimedOut {
        what: String,
        after: Duration,
        stderr: String,
    },
    #[error("`git {what}` failed ({status}){}", suffix(stderr))]
    Failed {
        what: String,
        status: String,
        stderr: String,
    },
    #[error("`git {what}` printed more than {MAX_STDOUT} bytes")]
    OutputTooLarge { what: String },
    #[error("reading the output of `git {what}`: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn suffix(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// What a successful command printed.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// A `git` command whose environment holds nothing of the caller's git settings: no system or
/// global config (whose hooks, helpers or URL rewrites would otherwise apply), no inherited
/// `GIT_*` variables, no prompts.
pub(crate) fn git_command() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("git");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("SSH_ASKPASS")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        // Own process group, so a timeout can kill the helpers git starts (remote-http,
        // index-pack, upload-pack) along with it.
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Runs `git <args>` in `cwd` and waits at most `timeout` for it. `what` names the command in
/// errors; it must not contain secrets.
pub async fn run_git<S: AsRef<OsStr>>(
    args: impl IntoIterator<Item = S>,
    cwd: Option<&Path>,
    timeout: Duration,
    what: &str,
) -> Result<Output, CommandError> {
    let mut cmd = git_command();
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().map_err(|source| CommandError::Spawn {
        what: what.to_owned(),
        source,
    })?;
    let pid = child.id();
    // If this future is dropped mid-run (its caller gave up), the helpers git started go too.
    let mut group = GroupGuard { pid };
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();

    let run = async {
        let (out, err) = tokio::join!(
            read_capped(stdout.as_mut(), MAX_STDOUT, false),
            read_capped(stderr.as_mut(), MAX_STDERR, true)
        );
        let status = child.wait().await;
        (out, err, status)
    };
    let outcome = tokio::time::timeout(timeout, run).await;
    let (out, err, status) = match outcome {
        Ok(done) => {
            // Reaped: the pid may be reused from here on, so it must never be signalled again.
            group.pid = None;
            done
        }
        Err(_) => {
            kill_group(pid);
            // The group is dead; what it wrote to stderr so far explains where it hung.
            let mut tail = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    read_into(stderr, &mut tail, MAX_STDERR, true),
                )
                .await;
            }
            let _ = child.wait().await;
            group.pid = None;
            return Err(CommandError::TimedOut {
                what: what.to_owned(),
                after: timeout,
                stderr: String::from_utf8_lossy(&tail).into_owned(),
            });
        }
    };
    let io_err = |source| CommandError::Io {
        what: what.to_owned(),
        source,
    };
    let (stdout, stdout_truncated) = out.map_err(io_err)?;
    let (stderr, _) = err.map_err(io_err)?;
    let status: ExitStatus = status.map_err(io_err)?;
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    if !status.success() {
        return Err(CommandError::Failed {
            what: what.to_owned(),
            status: status.to_string(),
            stderr,
        });
    }
    if stdout_truncated {
        return Err(CommandError::OutputTooLarge {
            what: what.to_owned(),
        });
    }
    Ok(Output { stdout, stderr })
}

/// Kills the process group of a running command unless it was reaped first.
struct GroupGuard {
    pid: Option<u32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.pid.take());
    }
}

/// SIGKILLs the process group led by `pid`.
pub(crate) fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // The group may already be gone; nothing to do then.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Reads a stream to its end keeping at most `cap` bytes: the head, or the tail when
/// `keep_tail`. Reading continues past the cap so the writer never blocks on a full pipe.
async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<&mut R>,
    cap: usize,
    keep_tail: bool,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::new();
    let truncated = match reader {
        Some(reader) => read_into(reader, &mut buf, cap, keep_tail).await?,
        None => false,
    };
    Ok((buf, truncated))
}

async fn read_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
    keep_tail: bool,
) -> std::io::Result<bool> {
    let mut chunk = [0u8; 8192];
    let mut truncated = false;
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(truncated);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > cap {
            truncated = true;
            if keep_tail {
                let excess = buf.len() - cap;
                buf.drain(..excess);
            } else {
                buf.truncate(cap);
            }
        }
    }
}

/// Removes `user:password@` from URLs in `text`, so clone URLs with credentials never reach
/// logs or error messages.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***@");
                out.push_str(&authority[at + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_git_and_reports_failures_with_stderr() {
        let out = run_git(["--version"], None, Duration::from_secs(30), "--version")
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("git version"));

        let dir = tempfile::tempdir().unwrap();
        let err = run_git(
            ["rev-parse", "--verify", "nope"],
            Some(dir.path()),
            Duration::from_secs(30),
            "rev-parse",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, CommandError::Failed { stderr, .. } if stderr.contains("not a git repository")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn times_out_and_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        // `git -c alias...` runs a shell that sleeps: a stand-in for a hung transfer.
        let started = std::time::Instant::now();
        let err = run_git(
            ["-c", "alias.hang=!sleep 30", "hang"],
            Some(dir.path()),
            Duration::from_millis(300),
            "hang",
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CommandError::TimedOut { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_dropped_run_kills_the_helpers_too() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let alias = format!("alias.hang=!echo $$ > {}; sleep 30", pid_file.display());
        let mut run = Box::pin(run_git(
            ["-c", alias.as_str(), "hang"],
            Some(dir.path()),
            Duration::from_secs(60),
            "hang",
        ));
        // Drive the command until its shell has started, then drop it like a cancelled caller.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let pid = loop {
            tokio::select! {
                result = &mut run => panic!("hang returned early: {result:?}"),
                () = tokio::task::yield_now() => {}
            }
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                break pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the shell never started"
            );
        };
        drop(run);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            // Gone, or a zombie waiting for its new parent to reap it: either way not running.
            let alive = state.is_some_and(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().next())
                    != Some("Z")
            });
            if !alive {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the helper {pid} survived"
            );
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn redacts_credentials_in_urls() {
        assert_eq!(
            redact_urls("fatal: unable to access 'https://u:tok@host/x.git/': 403"),
            "fatal: unable to access 'https://***@host/x.git/': 403"
        );
        assert_eq!(redact_urls("file:///tmp/a b"), "file:///tmp/a b");
        assert_eq!(redact_urls("http://host:80/a"), "http://host:80/a");
    }
}
