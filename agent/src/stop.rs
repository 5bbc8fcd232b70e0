//! Ending a session cleanly: export the conversation, stop OpenCode, push committed-but-
//! unpushed work on the session branch, save the uncommitted work to `refs/kortix/wip/<id>`
//! and hand both to the control plane (`SaveWork`), flush the records until acked, report the
//! final state, close the stream. All of it within the stop's grace period.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kortix_proto::v1::SessionStatus;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::commits::WatcherHandle;
use crate::connection::{ConnectionHandle, report};
use crate::enroll::Gateway;
use crate::opencode::{Export, Supervisor};
use crate::process::Reaper;
use crate::records::RecordSink;
use crate::wip;

/// Longest wait for OpenCode to exit after SIGTERM.
pub const MAX_OPENCODE_GRACE: Duration = Duration::from_secs(5);
const MAX_PUSH_TIME: Duration = Duration::from_secs(60);
/// Longest wait for OpenCode's export of the conversation.
const MAX_EXPORT_TIME: Duration = Duration::from_secs(10);
/// Longest a save of the uncommitted work may take (it includes a push).
const MAX_WIP_TIME: Duration = Duration::from_secs(60);
/// Longest wait for the control plane to take the save.
const MAX_SAVE_CALL: Duration = Duration::from_secs(15);
/// Largest conversation the control plane keeps; a larger one is not sent.
pub const MAX_CONVERSATION_BYTES: usize = 8 * 1024 * 1024;

/// What a winding-down agent saves for a resume, and where.
pub struct Save<'a> {
    pub session_id: &'a str,
    pub gateway: &'a Gateway,
    /// Holds the temporary index the WIP commit is built in.
    pub run_dir: &'a Path,
    /// The WIP commit this sandbox restored at its start, if any.
    pub restored_wip: Option<&'a str>,
}

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
    /// `None` when nothing can be saved (no workspace, or the control plane refuses us).
    pub save: Option<Save<'a>>,
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

    let conversation = match (&s.supervisor, &s.save) {
        (Some(sup), Some(_)) => sup.export(MAX_EXPORT_TIME.min(left(s.deadline) / 3)).await,
        (None, Some(_)) => Err("opencode was not running".to_string()),
        _ => Err(String::new()),
    };

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

    if let Some(save) = &s.save {
        let git = wip::Git {
            reaper: s.reaper,
            workspace: s.workspace,
            ca_file: s.ca_file,
            deadline: wip::budget(s.deadline, MAX_WIP_TIME.min(left(s.deadline) / 2)),
        };
        let saved = git
            .save(
                save.session_id,
                &wip::index_path(save.run_dir),
                save.restored_wip,
            )
            .await;
        let call = MAX_SAVE_CALL.min(left(s.deadline) / 2);
        let summary = match hand_over(save.gateway, &saved, conversation, call).await {
            Ok(summary) => summary,
            Err(why) => format!(
                "{}; but the control plane did not take the save: {why}",
                saved.note
            ),
        };
        s.sink.state(SessionStatus::Stopping, "saved", summary);
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

/// Sends the save to the control plane; returns what was saved, for the records.
async fn hand_over(
    gateway: &Gateway,
    saved: &wip::Saved,
    conversation: Result<Export, String>,
    timeout: Duration,
) -> Result<String, String> {
    let (json, session_id, note) = match conversation {
        Ok(e) if e.json.len() <= MAX_CONVERSATION_BYTES => (e.json, e.session_id, String::new()),
        Ok(e) => (
            Vec::new(),
            e.session_id,
            format!(
                "conversation too large ({} bytes, at most {MAX_CONVERSATION_BYTES}), not saved",
                e.json.len()
            ),
        ),
        Err(why) => (
            Vec::new(),
            String::new(),
            format!("conversation not saved: {why}"),
        ),
    };
    let bytes = json.len();
    let request = kortix_proto::v1::SaveWorkRequest {
        wip_commit: saved.commit.clone().unwrap_or_default(),
        wip_note: saved.note.clone(),
        conversation: json,
        conversation_note: note.clone(),
        opencode_session_id: session_id,
    };
    match tokio::time::timeout(timeout, gateway.client().save_work(request)).await {
        Ok(Ok(_)) => {}
        Ok(Err(status)) => return Err(format!("SaveWork: {}", status.message())),
        Err(_) => return Err(format!("SaveWork did not answer within {timeout:?}")),
    }
    let conversation = if bytes > 0 {
        format!("conversation saved ({bytes} bytes)")
    } else {
        note
    };
    Ok(format!("{}; {conversation}", saved.note))
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
