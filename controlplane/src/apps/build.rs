//! The build runner: an app's `build.command` run by `/bin/sh -c` in a sandbox (see
//! [`crate::sandbox::command`]) with the source's `root_path` as its working directory and
//! exactly `[apps.env]` in its environment, within the build timeout; and the deployment's
//! log, of which the last [`MAX_DEPLOYMENT_LOG`] bytes are kept.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::sandbox::command::{self, CommandEnd, CommandSpec};
use crate::sandbox::local::Confinement;
use crate::store::MAX_DEPLOYMENT_LOG;

/// A deployment's log: appended line by line, bounded to its tail. Cheap to clone.
#[derive(Clone, Default)]
pub struct LogTail {
    text: Arc<Mutex<String>>,
}

impl LogTail {
    pub fn line(&self, line: &str) {
        let mut text = self.text.lock().unwrap_or_else(PoisonError::into_inner);
        text.push_str(line);
        text.push('\n');
        // Trim in batches: at twice the bound, back down to the bound.
        if text.len() > 2 * MAX_DEPLOYMENT_LOG {
            let kept = crate::store::keep_tail(&text, MAX_DEPLOYMENT_LOG).to_string();
            *text = kept;
        }
    }

    /// The log so far (its last [`MAX_DEPLOYMENT_LOG`] bytes).
    pub fn text(&self) -> String {
        let text = self.text.lock().unwrap_or_else(PoisonError::into_inner);
        crate::store::keep_tail(&text, MAX_DEPLOYMENT_LOG).to_string()
    }
}

/// One build command.
pub struct BuildJob<'a> {
    /// Names the sandbox.
    pub name: &'a str,
    pub command: &'a str,
    /// The source's root path: the working directory.
    pub base: &'a Path,
    /// An empty directory of this build for the sandbox's HOME and bookkeeping.
    pub scratch: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub timeout: Duration,
}

/// Runs the job; its output and how it ended go to `log`.
pub async fn run(
    confinement: &Confinement,
    job: BuildJob<'_>,
    log: &LogTail,
) -> Result<CommandEnd, String> {
    let BuildJob {
        name,
        command,
        base,
        scratch,
        env,
        timeout,
    } = job;
    let home = scratch.join("home");
    let sandbox = scratch.join("sandbox");
    for d in [&home, &sandbox] {
        tokio::fs::create_dir_all(d)
            .await
            .map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let isolated = matches!(confinement, Confinement::Namespaces(_));
    log.line(&format!(
        "==> running `{command}` ({}, timeout {}s)",
        if isolated {
            "isolated in its own namespaces"
        } else {
            "as a plain child process"
        },
        timeout.as_secs()
    ));
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let spec = CommandSpec {
        name: name.to_string(),
        argv: vec!["/bin/sh".into(), "-c".into(), command.to_string()],
        workspace: base.to_path_buf(),
        home,
        scratch: sandbox,
        env: env.clone(),
        timeout,
    };
    let sink = log.clone();
    let copier = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            sink.line(&line);
        }
    });
    let end = command::run(confinement, spec, tx)
        .await
        .map_err(|e| e.to_string());
    let _ = copier.await;
    let end = end?;
    log.line(&format!("==> the build {}", end.describe()));
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_its_tail() {
        let log = LogTail::default();
        let line = "x".repeat(1023);
        for _ in 0..(3 * MAX_DEPLOYMENT_LOG / 1024) {
            log.line(&line);
        }
        log.line("the end");
        let text = log.text();
        assert!(text.len() <= MAX_DEPLOYMENT_LOG);
        assert!(text.ends_with("the end\n"));
    }

    #[tokio::test]
    async fn builds_see_exactly_their_env() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("src");
        std::fs::create_dir_all(&base).unwrap();
        let log = LogTail::default();
        let env = BTreeMap::from([("SITE_TITLE".to_string(), "Hello".to_string())]);
        let end = run(
            &Confinement::Plain,
            BuildJob {
                name: "t1",
                command: "mkdir -p dist && echo \"<h1>$SITE_TITLE</h1>\" > dist/index.html && env | sort",
                base: &base,
                scratch: &tmp.path().join("scratch"),
                env: &env,
                timeout: Duration::from_secs(30),
            },
            &log,
        )
        .await
        .unwrap();
        assert!(end.success());
        assert_eq!(
            std::fs::read_to_string(base.join("dist/index.html")).unwrap(),
            "<h1>Hello</h1>\n"
        );
        let text = log.text();
        assert!(text.contains("SITE_TITLE=Hello"), "{text}");
        // The control plane's own variables (cargo's, in a test) stay out.
        assert!(
            !text.contains("CARGO"),
            "the control plane's environment leaked: {text}"
        );
        assert!(
            text.contains("==> the build exited with status 0"),
            "{text}"
        );
    }
}
