//! Waiting for what a run produces and summarising the times: the pushed branch, the model's
//! closing turn, percentiles.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kortix_tests::ScriptedModel;

/// How often a branch's ref file is read.
pub const REF_POLL: Duration = Duration::from_millis(5);
/// The longest any one step of a run may take.
pub const RUN_DEADLINE: Duration = Duration::from_secs(180);

/// What one run measured, from its start.
pub struct Run {
    /// Kortix: `running`. Baselines: healthy, session created, prompt accepted.
    pub ready: Duration,
    /// Baselines: OpenCode's health endpoint answered.
    pub healthy: Option<Duration>,
    /// The commit is on the remote branch.
    pub commit: Duration,
    /// Host baseline: OpenCode's resident memory once the commit is in (what an idle, booted
    /// sandbox of a warm pool would hold at least), in KiB.
    pub rss_kib: Option<u64>,
}

/// The model's answer to every run's prompt: commit and push one file, then a closing text.
/// Returns the model's call count once the run is over.
pub fn script(model: &ScriptedModel, file: &str, push: &str) -> u64 {
    let calls = model.calls();
    model.push([
        kortix_tests::Turn::bash(format!(
            "echo {file} > {file} && git add {file} && git commit -q -m 'Add {file}' && git push -q origin {push}"
        )),
        kortix_tests::Turn::text("Done."),
    ]);
    calls + 2
}

/// Until the model answered `calls` conversation requests (the run's closing text), so no
/// turn of this run is left for the next.
pub async fn wait_calls(model: &ScriptedModel, calls: u64) -> Result<()> {
    let deadline = Instant::now() + RUN_DEADLINE;
    while model.calls() < calls {
        if Instant::now() > deadline {
            bail!(
                "the model was asked {} times, expected {calls}",
                model.calls()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// When `branch` of the bare repository `repo` exists and differs from `from`, measured from
/// `started`.
pub async fn ref_moves(
    repo: &Path,
    branch: &str,
    from: Option<&str>,
    started: Instant,
) -> Result<Duration> {
    let deadline = Instant::now() + RUN_DEADLINE;
    loop {
        if let Some(sha) = read_ref(repo, branch)
            && Some(sha.as_str()) != from
        {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!("{branch} never moved in {}", repo.display());
        }
        tokio::time::sleep(REF_POLL).await;
    }
}

/// A branch's commit from the loose ref, else `packed-refs`.
pub fn read_ref(repo: &Path, branch: &str) -> Option<String> {
    let name = format!("refs/heads/{branch}");
    if let Ok(sha) = std::fs::read_to_string(repo.join(&name)) {
        let sha = sha.trim();
        if sha.len() >= 40 {
            return Some(sha.to_string());
        }
    }
    std::fs::read_to_string(repo.join("packed-refs"))
        .ok()?
        .lines()
        .find_map(|line| {
            let (sha, r) = line.split_once(' ')?;
            (r == name).then(|| sha.to_string())
        })
}

/// SIGTERM to the process group, then SIGKILL after 5 s.
pub fn stop(child: &mut Child) {
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Nearest rank.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}
