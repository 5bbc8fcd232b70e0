//! What the git benchmarks share: a control plane on loopback (external sandboxes, so nothing
//! but git and the API runs) and timing of a `git` command.

use std::path::Path;
use std::time::{Duration, Instant};

use kortix_controlplane::config::{SandboxKind, ServerConfig};
use kortix_controlplane::server::RunningServer;
use kortix_tests::git::GitEnv;

/// A control plane with its data under `work`, and its admin token.
pub async fn start_server(work: &Path) -> anyhow::Result<(RunningServer, String)> {
    let mut config = ServerConfig::new(work.join("data"));
    config.listen = "127.0.0.1:0".parse()?;
    config.agent_listen = "127.0.0.1:0".parse()?;
    config.sandbox = SandboxKind::External;
    let server = kortix_controlplane::server::start(config).await?;
    let token = std::fs::read_to_string(server.admin_token_path())?
        .trim()
        .to_string();
    Ok((server, token))
}

/// Wall time of `git` with `args` in `dir` (which must succeed).
pub fn timed_git(git: &GitEnv, dir: &Path, args: &[&str]) -> Duration {
    let started = Instant::now();
    git.ok(dir, args);
    started.elapsed()
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
