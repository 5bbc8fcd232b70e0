//! Ending a session cleanly: stop OpenCode, push committed-but-unpushed work on the session
//! branch, flush the records until acked, report the final state, close the stream.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kortix_proto::v1::SessionStatus;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::commits::WatcherHandle;
use crate::connection::{ConnectionHandle, report};
use crate::opencode::Supervisor;
use crate::process::Reaper;
use crate::records::RecordSink;

/// Longest wait for OpenCode to exit after SIGTERM.
pub const MAX_OPENCODE_GRACE: Duration = Duration::from_secs(5);
const MAX_PUSH_TIME: Duration = Duration::from_secs(60);

pub struct Shutdown<'a> {
    pub sink: &'a RecordSink,
    pub state: &'a watch::Sender<kortix_proto::v1::StateReport>,
    pub reaper: &'a Reaper,
    pub workspace: &'a Path,
    pub branch: &'a str,
    pub watcher: Option<WatcherHandle>,
    pub supervisor: Option<Supervisor>,
    /// CA bundle for an https remote (`GIT_SSL_CAINFO` would otherwise override the config).
    pub ca_file: Option<&'a Path>,
    pub connection: ConnectionHandle,
    pub deadline: Instant,
}

/// How the session ends.
#[derive(Clone, Debug)]
pub struct Final {
    pub status: SessionStatus,
    pub phase: &'static str,
    pub reason: String,
}

pub async fn shutdown(s: Shutdown<'_>, mut end: Final) {
    let started = Instant::now();
    // The reason also travels in state reports, which do not pass the record redaction.
    s.sink.redactor().redact(&mut end.reason);
    let left = |d: Instant| d.saturating_duration_since(Instant::now());
    let head = |w: &Option<WatcherHandle>| w.as_ref().and_then(|w| w.head());
    s.sink
        .state(SessionStatus::Stopping, "stopping", end.reason.clone());
    s.state.send_replace(report(
        SessionStatus::Stopping,
        end.reason.clone(),
        false,
        head(&s.watcher),
    ));

    if let Some(sup) = s.supervisor {
        let grace = MAX_OPENCODE_GRACE.min(left(s.deadline) / 4);
        match sup.stop(grace).await {
            Some(exit) => match crate::opencode::supervisor::stop_note(exit) {
                note if note.is_empty() => s.sink.agent("opencode stopped"),
                note => s.sink.agent(format!("opencode {note}")),
            },
            None => s.sink.agent("opencode was not running"),
        }
    }

    if let Some(w) = &s.watcher {
        // Catch commits made in OpenCode's last moments before deciding what to push.
        if let Err(e) = w.poll_now().await {
            s.sink.agent(e.to_string());
        }
        if w.has_unpushed() {
            let budget = MAX_PUSH_TIME.min(left(s.deadline) / 2);
            let pushed = push(s.reaper, s.sink, s.workspace, s.branch, s.ca_file, budget).await;
            if let Err(e) = w.poll_now().await {
                s.sink.agent(e.to_string());
            }
            // The reason is what people read first: committed work that never reached the
            // control plane is lost with the sandbox, and they must know.
            if let Err(e) = pushed {
                end.reason = format!(
                    "{}{}final push of {} failed, so commits made in the sandbox were lost: {e}",
                    end.reason,
                    if end.reason.is_empty() { "" } else { "; " },
                    s.branch
                );
            }
        }
    }

    s.sink.state(end.status, end.phase, end.reason.clone());
    let flush_until = s
        .deadline
        .checked_sub(Duration::from_millis(500))
        .unwrap_or(s.deadline);
    if s.connection.is_finished() {
        s.sink.agent(format!(
            "no connection to the control plane: records after {} stay in the spool",
            s.sink.acked()
        ));
    } else if !s.sink.wait_all_acked(left(flush_until)).await {
        s.sink.agent(format!(
            "records up to {} not all acknowledged before the deadline",
            s.sink.last_assigned()
        ));
    }
    s.sink.sync();
    s.state.send_replace(report(
        end.status,
        end.reason.clone(),
        true,
        head(&s.watcher),
    ));
    let closed = s.connection.close(s.deadline).await;
    crate::diag::info(&format!(
        "session ended ({:?}: {}) in {} ms; final report {}",
        end.status,
        end.reason,
        started.elapsed().as_millis(),
        if closed { "delivered" } else { "not confirmed" }
    ));
}

/// `git push origin <branch>` with the workspace's credential helper and a deadline; the
/// error says why it failed.
pub async fn push(
    reaper: &Reaper,
    sink: &RecordSink,
    workspace: &Path,
    branch: &str,
    ca_file: Option<&Path>,
    budget: Duration,
) -> Result<(), String> {
    let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
    let mut cmd = Command::new("git");
    cmd.args(["push", "origin", &refspec])
        .current_dir(workspace)
        .env("GIT_TERMINAL_PROMPT", "0");
    if let Some(ca) = ca_file {
        cmd.env("GIT_SSL_CAINFO", ca);
    }
    match reaper.output(&mut cmd, budget).await {
        Ok(out) if out.exit.success() => {
            sink.agent(format!("pushed unpushed commits on {branch}"));
            Ok(())
        }
        Ok(out) => {
            let why = format!("git push exited {}: {}", out.exit, out.stderr.trim());
            sink.agent(format!("push of {branch} failed ({why})"));
            Err(why)
        }
        Err(e) => {
            sink.agent(format!("git push of {branch} failed: {e}"));
            Err(e.to_string())
        }
    }
}
