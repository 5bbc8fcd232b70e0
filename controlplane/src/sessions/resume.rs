//! Resuming a stopped or hibernated session: the same id and branch in a new sandbox, whose
//! agent puts back what the last one saved (the uncommitted work at `refs/kortix/wip/<id>`,
//! the OpenCode conversation) before it delivers the resume prompt.
//!
//! What is saved arrives over `AgentGateway.SaveWork` while an agent winds down
//! ([`Sessions::save_work`]); what is lost when no agent could save (a killed sandbox) is
//! said in the session's end reason ([`Sessions::loss_note`]).

use std::time::Duration;

use kortix_proto::v1::ResumeInfo;

use super::lifecycle::resources_of;
use super::{SessionError, Sessions};
use crate::store::{MAX_CONVERSATION_BYTES, NewSave, Session, SessionSave};

/// The side ref a session's agent saves uncommitted work to.
pub fn wip_ref(session_id: &str) -> String {
    format!("refs/kortix/wip/{session_id}")
}

/// How long a resume waits for the previous sandbox to be gone (and its exit handled).
const OLD_SANDBOX_PATIENCE: Duration = Duration::from_secs(10);

/// What an agent reports when it winds down.
#[derive(Debug, Default)]
pub struct WorkSaved {
    pub wip_commit: String,
    pub wip_note: String,
    pub conversation: Vec<u8>,
    pub conversation_note: String,
    pub opencode_session: String,
}

impl Sessions {
    /// Boots a new sandbox for a stopped or hibernated session, on the same branch. `prompt`
    /// (when not empty) is delivered once the restored OpenCode is ready. Any other state is
    /// FAILED_PRECONDITION and changes nothing.
    pub async fn resume(&self, id: &str, prompt: &str) -> Result<Session, SessionError> {
        if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SessionError::Unavailable(
                "this control plane is shutting down; resume the session again (or at another replica)".into(),
            ));
        }
        let session = self.store.get_session(id).await?;
        if !session.status.is_resumable() {
            return Err(SessionError::Precondition(format!(
                "session {id} is {}; only stopped or hibernated sessions can be resumed",
                session.status
            )));
        }
        let project = self.store.find_project(&session.project_id).await?;
        let manifest = self.manifest(&project).await?;
        let requested = (session.template != super::lifecycle::PLATFORM_TEMPLATE)
            .then_some(session.template.as_str());
        let resolved = manifest.resolve_template(requested).map_err(|e| {
            SessionError::Precondition(format!("session {id} cannot be resumed: its template: {e}"))
        })?;
        let head = self.branch_head(&project.id, id).await?.ok_or_else(|| {
            SessionError::Precondition(format!(
                "session {id} cannot be resumed: its branch {id} no longer exists"
            ))
        })?;
        let recipe = match &self.snapshots {
            Some(snapshots) => Some(snapshots.recipe(&project, resolved).await?),
            None => None,
        };
        self.old_sandbox_gone(id).await;
        if !self.store.begin_resume(id, prompt).await? {
            let now = self.store.get_session(id).await?;
            return Err(SessionError::Precondition(format!(
                "session {id} is {}; only stopped or hibernated sessions can be resumed",
                now.status
            )));
        }
        self.hub.bump(id);
        // What the last sandbox left is not this one's: it starts from the branch and the save.
        if let Err(e) = self.provider.discard(id).await {
            tracing::warn!(session = %id, error = %e, "removing what the previous sandbox left");
        }
        let save = self.store.session_save(id).await?;
        let summary = resume_summary(&head.to_string(), save.as_ref(), prompt);
        let mut resources = resources_of(resolved, &project.id);
        let prepared = async {
            self.append_build_log(id, &[summary]).await?;
            match &recipe {
                Some(recipe) => self.prepare_snapshot(id, recipe, &mut resources).await,
                None => self.note_unhonoured(id, resolved).await,
            }
        }
        .await;
        let session = self.store.get_session(id).await?;
        let booted = match prepared {
            Ok(()) => {
                self.boot_sandbox(
                    &project,
                    &session,
                    resources,
                    manifest.opencode_config_dir(),
                )
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = booted {
            self.fail(id, &format!("resuming: {e}")).await;
            return Err(e);
        }
        tracing::info!(session = %id, "session resuming");
        Ok(self.store.get_session(id).await?)
    }

    /// Waits (bounded) until the provider no longer runs the session's previous sandbox and
    /// its exit was recorded, so that exit cannot be mistaken for the new sandbox's; a
    /// sandbox still there at the end is killed.
    async fn old_sandbox_gone(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + OLD_SANDBOX_PATIENCE;
        let mut killed = false;
        loop {
            let running = self.provider.is_running(id);
            let exit_seen = self
                .store
                .get_session(id)
                .await
                .map_or(true, |s| s.exit_status.is_some());
            if !running && exit_seen {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                if running && !killed {
                    killed = true;
                    if let Err(e) = self.provider.kill(id).await {
                        tracing::warn!(session = %id, error = %e, "killing a resumed session's old sandbox");
                    }
                    continue;
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn branch_head(
        &self,
        project_id: &str,
        branch: &str,
    ) -> Result<Option<gix::ObjectId>, SessionError> {
        let repos = self.repos.clone();
        let (pid, branch) = (project_id.to_string(), branch.to_string());
        tokio::task::spawn_blocking(move || repos.branch_head(&pid, &branch))
            .await
            .map_err(|e| SessionError::Internal(format!("reading a branch: {e}")))?
            .map_err(|e| SessionError::Internal(e.to_string()))
    }

    /// Stores what a winding-down agent saved. The WIP commit is taken only if
    /// `refs/kortix/wip/<id>` really points at it; a conversation over the limit is not
    /// kept, and the note says so.
    pub async fn save_work(&self, id: &str, saved: WorkSaved) -> Result<(), SessionError> {
        let mut wip_note = saved.wip_note;
        let mut wip_commit = saved.wip_commit;
        if !wip_commit.is_empty() {
            let session = self.store.get_session(id).await?;
            let repos = self.repos.clone();
            let (pid, name) = (session.project_id.clone(), wip_ref(id));
            let at = tokio::task::spawn_blocking(move || repos.ref_target(&pid, &name))
                .await
                .map_err(|e| SessionError::Internal(format!("reading the WIP ref: {e}")))?
                .map_err(|e| SessionError::Internal(e.to_string()))?;
            if at.map(|a| a.to_string()).as_deref() != Some(wip_commit.as_str()) {
                wip_note = format!(
                    "the agent reported WIP commit {wip_commit}, but {} does not point at it; nothing uncommitted was kept",
                    wip_ref(id)
                );
                wip_commit.clear();
            }
        }
        let (conversation, conversation_note) = if saved.conversation.len() > MAX_CONVERSATION_BYTES
        {
            (
                None,
                format!(
                    "conversation too large ({} bytes, at most {MAX_CONVERSATION_BYTES}), not saved",
                    saved.conversation.len()
                ),
            )
        } else if saved.conversation.is_empty() {
            (None, saved.conversation_note)
        } else {
            (Some(saved.conversation.as_slice()), saved.conversation_note)
        };
        self.store
            .save_session_work(
                id,
                &NewSave {
                    wip_commit: &wip_commit,
                    wip_note: &wip_note,
                    conversation,
                    conversation_note: &conversation_note,
                    opencode_session: &saved.opencode_session,
                },
            )
            .await?;
        tracing::info!(session = %id, wip = %wip_commit, conversation_bytes = saved.conversation.len(), "session work saved");
        Ok(())
    }

    /// What a resumed session's agent restores (`None` for a session never resumed).
    pub async fn resume_info(&self, session: &Session) -> Result<Option<ResumeInfo>, SessionError> {
        if session.resumed_ms.is_none() {
            return Ok(None);
        }
        let save = self.store.session_save(&session.id).await?;
        Ok(Some(save.map_or_else(ResumeInfo::default, |s| {
            ResumeInfo {
                wip_commit: s.wip_commit,
                conversation_bytes: u64::try_from(s.conversation_bytes).unwrap_or(0),
                opencode_session_id: s.opencode_session,
            }
        })))
    }

    /// What is lost with a sandbox that ended without its agent saving (killed): whether the
    /// uncommitted work and conversation were saved during this sandbox's life, and the last
    /// commit that reached the branch.
    pub async fn loss_note(&self, id: &str) -> String {
        let session = match self.store.get_session(id).await {
            Ok(s) => s,
            Err(_) => return "what the sandbox held is unknown".into(),
        };
        let since = session.resumed_ms.unwrap_or(session.created_ms);
        let save = self
            .store
            .session_save(id)
            .await
            .ok()
            .flatten()
            .filter(|s| s.saved_ms >= since);
        let saved = match save {
            Some(s) => format!("its work was saved before it ended ({})", describe_save(&s)),
            None => "uncommitted changes and the conversation in the sandbox were not saved".into(),
        };
        let pushed = match self.branch_head(&session.project_id, id).await {
            Ok(Some(head)) => format!("the last pushed commit on branch {id} is {head}"),
            Ok(None) => format!("branch {id} no longer exists"),
            Err(e) => format!("the branch could not be read: {e}"),
        };
        format!("{saved}; {pushed}")
    }
}

/// One line on a save, for people.
pub fn describe_save(s: &SessionSave) -> String {
    let wip = if s.wip_commit.is_empty() {
        if s.wip_note.is_empty() {
            "no uncommitted work".to_string()
        } else {
            s.wip_note.clone()
        }
    } else {
        format!(
            "uncommitted work in {} ({})",
            short(&s.wip_commit),
            s.wip_note
        )
    };
    let conversation = if s.conversation_bytes > 0 {
        format!("conversation of {} bytes", s.conversation_bytes)
    } else if s.conversation_note.is_empty() {
        "no conversation".to_string()
    } else {
        s.conversation_note.clone()
    };
    format!("{wip}; {conversation}")
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// The record a resume starts with: where the branch is and what will be restored.
fn resume_summary(head: &str, save: Option<&SessionSave>, prompt: &str) -> String {
    let restored = save.map_or_else(
        || "nothing was saved by the previous sandbox".to_string(),
        |s| format!("restoring {}", describe_save(s)),
    );
    let prompt = if prompt.is_empty() {
        "no new prompt".to_string()
    } else {
        format!("then the prompt ({} bytes)", prompt.len())
    };
    format!(
        "resuming in a new sandbox on the same branch at {}; {restored}; {prompt}",
        short(head)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        assert_eq!(wip_ref("s1"), "refs/kortix/wip/s1");
        let save = SessionSave {
            wip_commit: "0123456789abcdef".into(),
            wip_note: "2 files".into(),
            conversation_bytes: 42,
            ..SessionSave::default()
        };
        assert_eq!(
            describe_save(&save),
            "uncommitted work in 0123456789ab (2 files); conversation of 42 bytes"
        );
        let empty = SessionSave {
            wip_note: "nothing uncommitted".into(),
            conversation_note: "conversation too large (9 bytes, at most 8), not saved".into(),
            ..SessionSave::default()
        };
        assert_eq!(
            describe_save(&empty),
            "nothing uncommitted; conversation too large (9 bytes, at most 8), not saved"
        );
        let line = resume_summary("fedcba9876543210", Some(&save), "go on");
        assert!(
            line.contains("at fedcba987654")
                && line.contains("restoring uncommitted work in 0123456789ab"),
            "{line}"
        );
        assert!(resume_summary("x", None, "").contains("nothing was saved"));
    }
}
