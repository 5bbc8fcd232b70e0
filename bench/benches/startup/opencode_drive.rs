//! Driving a bare OpenCode server the way a person would without Kortix: wait for its health
//! endpoint, create a session, send the prompt, and watch the pushed branch.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use http::Method;
use kortix_agent::opencode::health::HealthChecks;
use kortix_agent::opencode::http::Client;
use kortix_tests::git::GitEnv;

use crate::timing::{REF_POLL, RUN_DEADLINE, Run, ref_moves};

/// A fresh clone of the bare repository `origin` at `work/<name>` with the bench's git
/// identity, for a baseline's OpenCode to work in; `extra` adds git settings.
pub fn checkout(
    git: &GitEnv,
    work: &Path,
    origin: &Path,
    name: &str,
    extra: &[(&str, &str)],
) -> PathBuf {
    let dir = work.join(name);
    git.ok(
        work,
        &[
            "clone",
            "-q",
            &origin.to_string_lossy(),
            &dir.to_string_lossy(),
        ],
    );
    for (k, v) in [("user.name", "Bench"), ("user.email", "bench@example.com")]
        .iter()
        .chain(extra)
    {
        git.ok(&dir, &["config", k, v]);
    }
    dir
}

/// OpenCode on `127.0.0.1:port`, started at `started`, asked to create `file`; its commit is
/// awaited on `branch` of the bare repository `origin`.
pub async fn drive(
    port: u16,
    file: &str,
    origin: &Path,
    branch: &str,
    started: Instant,
) -> Result<Run> {
    let client = Client::new(port);
    // As the agent asks: checks side by side, so one sent just before OpenCode serves (never
    // answered) does not hold up the answer to the next.
    let mut checks = HealthChecks::new(&client);
    let mut tick = tokio::time::interval(REF_POLL);
    tokio::time::timeout(RUN_DEADLINE, async {
        loop {
            tokio::select! {
                _ = checks.any_healthy() => return,
                _ = tick.tick() => checks.start(),
            }
        }
    })
    .await
    .map_err(|_| anyhow!("opencode serve was not healthy within {RUN_DEADLINE:?}"))?;
    let healthy = started.elapsed();
    let timeout = Duration::from_secs(30);
    let body = client
        .call(
            Method::POST,
            "/session",
            Some(&serde_json::json!({})),
            timeout,
        )
        .await?;
    let id = serde_json::from_slice::<serde_json::Value>(&body)?["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no session id from opencode"))?
        .to_string();
    let prompt = serde_json::json!({
        "parts": [{ "type": "text", "text": format!("Create {file} and commit it.") }]
    });
    client
        .call(
            Method::POST,
            &format!("/session/{id}/prompt_async"),
            Some(&prompt),
            timeout,
        )
        .await?;
    let ready = started.elapsed();
    let commit = ref_moves(origin, branch, None, started).await?;
    Ok(Run {
        ready,
        healthy: Some(healthy),
        commit,
        rss_kib: None,
    })
}
