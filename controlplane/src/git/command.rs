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
    let (out, err, status) = match tokio::time::timeout(timeout, run).await {
        Ok(done) => done,
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
