//! The host baseline: `opencode serve` spawned in a fresh checkout of the project's
//! repository, with a warm HOME shared by all runs (OpenCode's packages already installed
//! there) and the same config as `OPENCODE_CONFIG`, pushing to a bare repository.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use kortix_tests::git::GitEnv;
use kortix_tests::{OpencodeHome, ScriptedModel};

use crate::opencode_drive::{checkout, drive};
use crate::timing::{Run, free_port, rss_kib, script, stop, wait_calls};

pub struct HostBaseline<'a> {
    pub git: &'a GitEnv,
    pub opencode: &'a Path,
    pub origin: &'a Path,
    pub home: &'a OpencodeHome,
    pub work: &'a Path,
}

impl HostBaseline<'_> {
    pub async fn run(&self, model: &ScriptedModel, round: usize) -> Result<Run> {
        let checkout = checkout(
            self.git,
            self.work,
            self.origin,
            &format!("checkout-{round}"),
            &[],
        );
        let file = format!("opencode-{round}.txt");
        let branch = format!("bare-{round}");
        let calls = script(model, &file, &format!("HEAD:refs/heads/{branch}"));
        let port = free_port()?;
        let config = checkout.join(".kortix/opencode/opencode.json");
        let started = Instant::now();
        let mut child = Command::new(self.opencode)
            .args([
                "serve",
                "--hostname",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .current_dir(&checkout)
            .env_clear()
            .envs(self.home.env())
            .env("OPENCODE_CONFIG", &config)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawning {}", self.opencode.display()))?;
        let result = drive(port, &file, self.origin, &branch, started).await;
        let waited = wait_calls(model, calls).await;
        let rss_kib = rss_kib(child.id());
        stop(&mut child);
        let mut run = result?;
        run.rss_kib = rss_kib;
        waited?;
        let _ = std::fs::remove_dir_all(&checkout);
        Ok(run)
    }
}
