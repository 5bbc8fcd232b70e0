//! Sessions as people see them: every operation checks the caller's role on the session's
//! project against the permission table (a session of a project the caller may not see is
//! NOT_FOUND, like a missing one) and returns the session with its project's name.

use super::attach::AttachStream;
use super::lifecycle::StartRequest;
use super::{SessionError, Sessions};
use crate::auth::Caller;
use crate::error::check_len;
use crate::store::{Session, SessionSave, SessionStatus};
use kortix_proto::v1::{ControlFrame, Prompt, control_frame};
use tokio_stream::StreamExt as _;

/// Most sessions listed at once.
const LIST_LIMIT: u32 = 500;
/// Largest prompt accepted (initial or chat).
pub const MAX_PROMPT: usize = 256 * 1024;
/// How often an open attach stream re-checks its token.
pub const TOKEN_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);
/// Records buffered between the attach pump and the token check.
const FORWARD_QUEUE: usize = 64;
/// The id of a prompt that resumes a session: the resumed agent's first prompt.
pub const RESUME_PROMPT_ID: &str = "initial";
/// How long `SendPrompt` waits for the agent to ack a prompt before answering "queued".
pub const PROMPT_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Longest session id looked up (ids are UUIDs).
const MAX_SESSION_ID: usize = 64;

/// Who a person's session is launched by: their token when it is narrowed (a CI job's token
/// is its own launcher), otherwise the person.
pub fn launcher(caller: &Caller) -> String {
    if caller.narrowed.is_some() && !caller.token_id.is_empty() {
        format!("token:{}", caller.token_id)
    } else {
        format!("person:{}", caller.person_id)
    }
}

/// A prompt handed to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSent {
    /// The prompt's id, which is also its command id.
    pub id: String,
    /// The agent acked it.
    pub delivered: bool,
    /// Not acked yet: it waits in the session's command queue.
    pub queued: bool,
}

/// A session and the name of its project.
pub struct NamedSession {
    pub session: Session,
    pub project_name: String,
    /// What its last sandbox saved for a resume, when anything was.
    pub saved: Option<SessionSave>,
}

impl Sessions {
    /// The session, if the caller may do their current action on its project.
    pub async fn owned(&self, caller: &Caller, id: &str) -> Result<Session, SessionError> {
        check_len("the session id", id, MAX_SESSION_ID)?;
        let not_found = || SessionError::NotFound(format!("session {id} not found"));
        let session = match self.store.get_session(id).await {
            Err(e) if e.is_not_found() => return Err(not_found()),
            other => other?,
        };
        match crate::permissions::project(&self.store, caller, &session.project_id).await {
            Ok(_) => Ok(session),
            Err(e) if e.is_not_found() => Err(not_found()),
            Err(e) => Err(e),
        }
    }

    async fn named(&self, session: Session) -> Result<NamedSession, SessionError> {
        let project = self.store.find_project(&session.project_id).await?;
        let saved = self.store.session_save(&session.id).await?;
        Ok(NamedSession {
            session,
            project_name: project.name,
            saved,
        })
    }

    pub async fn start_for(
        &self,
        caller: &Caller,
        req: StartRequest,
    ) -> Result<NamedSession, SessionError> {
        if req.prompt.len() > MAX_PROMPT {
            return Err(SessionError::Invalid(format!(
                "prompt longer than {MAX_PROMPT} bytes"
            )));
        }
        let project = crate::permissions::project(&self.store, caller, &req.project).await?;
        let session = self
            .start(StartRequest {
                project: project.id.clone(),
                launched_by: launcher(caller),
                ..req
            })
            .await?;
        crate::audit::record(
            &self.store,
            caller,
            crate::audit::Event::in_project("session.start", &project, &session.id)
                .with_detail(&session.launched_by),
        )
        .await;
        Ok(NamedSession {
            session,
            project_name: project.name,
            saved: None,
        })
    }

    pub async fn get_for(&self, caller: &Caller, id: &str) -> Result<NamedSession, SessionError> {
        let session = self.owned(caller, id).await?;
        self.named(session).await
    }

    /// The caller's newest sessions, of one project or of all of them.
    pub async fn list_for(
        &self,
        caller: &Caller,
        project: &str,
    ) -> Result<Vec<NamedSession>, SessionError> {
        let projects: Vec<_> = if project.is_empty() {
            crate::permissions::check::visible_projects(&self.store, caller)
                .await?
                .into_iter()
                .map(|(p, _)| p)
                .collect()
        } else {
            vec![crate::permissions::project(&self.store, caller, project).await?]
        };
        let ids: Vec<String> = projects.iter().map(|p| p.id.clone()).collect();
        let rows = self.store.list_sessions_of(&ids, LIST_LIMIT).await?;
        let name_of = |id: &str| {
            projects
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.name.clone())
                .unwrap_or_default()
        };
        let ended: Vec<String> = rows
            .iter()
            .filter(|s| s.status.is_terminal())
            .map(|s| s.id.clone())
            .collect();
        let mut saves = self.store.session_saves_of(&ended).await?;
        Ok(rows
            .into_iter()
            .map(|session| NamedSession {
                project_name: name_of(&session.project_id),
                saved: saves
                    .iter()
                    .position(|s| s.session_id == session.id)
                    .map(|i| saves.swap_remove(i)),
                session,
            })
            .collect())
    }

    pub async fn stop_for(&self, caller: &Caller, id: &str) -> Result<NamedSession, SessionError> {
        let session = self.owned(caller, id).await?;
        let stopped = self.stop(&session.id, false, "stopped by user").await?;
        self.named(stopped).await
    }

    pub async fn delete_for(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<NamedSession, SessionError> {
        let session = self.owned(caller, id).await?;
        let project = self.store.find_project(&session.project_id).await?;
        let deleted = self.delete(&session.id).await?;
        crate::audit::record(
            &self.store,
            caller,
            crate::audit::Event::in_project("session.delete", &project, &session.id),
        )
        .await;
        Ok(NamedSession {
            session: deleted,
            project_name: project.name,
            saved: None,
        })
    }

    /// Resumes the caller's stopped or hibernated session in a new sandbox (see
    /// [`Sessions::resume`]).
    pub async fn resume_for(
        &self,
        caller: &Caller,
        id: &str,
        prompt: &str,
    ) -> Result<NamedSession, SessionError> {
        if prompt.len() > MAX_PROMPT {
            return Err(SessionError::Invalid(format!(
                "prompt longer than {MAX_PROMPT} bytes"
            )));
        }
        let session = self.owned(caller, id).await?;
        let project = self.store.find_project(&session.project_id).await?;
        let resumed = self.resume(&session.id, prompt).await?;
        crate::audit::record(
            &self.store,
            caller,
            crate::audit::Event::in_project("session.resume", &project, &session.id),
        )
        .await;
        self.named(resumed).await
    }

    pub async fn attach_for(
        &self,
        caller: &Caller,
        id: &str,
        from_seq: u64,
        follow: bool,
    ) -> Result<AttachStream, SessionError> {
        let session = self.owned(caller, id).await?;
        let inner = self.attach(session.id, from_seq, follow);
        if caller.token_id.is_empty() {
            return Ok(inner);
        }
        Ok(self.end_on_revocation(inner, caller.token_id.clone()))
    }

    /// Forwards `inner` while the token stays good; a revoked or expired token ends the
    /// stream with UNAUTHENTICATED within [`TOKEN_RECHECK`]. A store outage is no revocation:
    /// the stream goes on and the check is retried.
    fn end_on_revocation(&self, mut inner: AttachStream, token_id: String) -> AttachStream {
        let (tx, rx) = tokio::sync::mpsc::channel(FORWARD_QUEUE);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut check = tokio::time::interval(TOKEN_RECHECK);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    item = inner.next() => match item {
                        Some(item) => {
                            if tx.send(item).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                    _ = check.tick() => {
                        match store.api_token_live(&token_id, crate::clock::now_ms()).await {
                            Ok(true) => {}
                            Ok(false) => {
                                let _ = tx
                                    .send(Err(tonic::Status::unauthenticated(
                                        "the token was revoked or has expired",
                                    )))
                                    .await;
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(token = %token_id, error = %e, "cannot re-check an attach stream's token");
                            }
                        }
                    }
                    () = tx.closed() => return,
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    /// Sends a prompt to the session's running agent and waits up to `wait` for its ack.
    pub async fn send_prompt(
        &self,
        caller: &Caller,
        id: &str,
        text: String,
        agent: String,
        wait: std::time::Duration,
    ) -> Result<PromptSent, SessionError> {
        if text.trim().is_empty() {
            return Err(SessionError::Invalid("prompt text is empty".into()));
        }
        if text.len() > MAX_PROMPT {
            return Err(SessionError::Invalid(format!(
                "prompt longer than {MAX_PROMPT} bytes"
            )));
        }
        let s = self.owned(caller, id).await?;
        if s.status == SessionStatus::Hibernated {
            // A chat to a hibernated session brings it back with this prompt (a stopped one
            // is resumed only when asked to: `ResumeSession`).
            self.resume_for(caller, &s.id, &text).await?;
            return Ok(PromptSent {
                id: RESUME_PROMPT_ID.to_string(),
                delivered: false,
                queued: false,
            });
        }
        if s.status == SessionStatus::Stopped {
            return Err(SessionError::Precondition(format!(
                "session {} is stopped; resume it to continue (kortix sessions resume {} --prompt TEXT)",
                s.id, s.id
            )));
        }
        self.deliver_prompt(&s, text, agent, wait).await
    }

    /// Where command `command_id` of one of the caller's sessions is (a prompt's id).
    pub async fn command_status_for(
        &self,
        caller: &Caller,
        id: &str,
        command_id: &str,
    ) -> Result<crate::store::CommandStatus, SessionError> {
        check_len("the command id", command_id, MAX_SESSION_ID)?;
        let s = self.owned(caller, id).await?;
        self.store
            .command_status(&s.id, command_id)
            .await?
            .ok_or_else(|| {
                SessionError::NotFound(format!(
                    "command {command_id} of session {id} not found (unknown, or forgotten: \
                     the newest {} delivered commands of a session are kept)",
                    crate::store::KEPT_DELIVERED_PER_SESSION
                ))
            })
    }

    /// Sends a prompt to a session's running agent, for whoever has already decided the
    /// sender may (the session's owner, a Slack thread the session belongs to), through
    /// whichever replica holds the agent; waits up to `wait` for its ack.
    pub async fn deliver_prompt(
        &self,
        s: &crate::store::Session,
        text: String,
        agent: String,
        wait: std::time::Duration,
    ) -> Result<PromptSent, SessionError> {
        if s.status != SessionStatus::Running {
            return Err(SessionError::Precondition(format!(
                "session {} is {}; prompts go to running sessions",
                s.id, s.status
            )));
        }
        let prompt_id = crate::store::new_id();
        let frame = ControlFrame {
            frame: Some(control_frame::Frame::Prompt(Prompt {
                id: prompt_id.clone(),
                text,
                agent,
                command: None,
            })),
        };
        let sent = self.send_command(&s.id, &prompt_id, frame, wait).await?;
        Ok(PromptSent {
            id: sent.id,
            delivered: sent.delivered,
            queued: !sent.delivered,
        })
    }
}
