//! Threads are sessions. A mention or a DM starts a session with the message as its prompt
//! (the thread key is `thread_ts`, else `ts`); a reply in a thread the bot owns goes to that
//! thread's session as a prompt, waiting for the agent when it is still starting; a reply to
//! a thread whose session hibernated resumes it (same branch, its uncommitted work and
//! conversation restored) with the reply as the prompt; a reply to a thread whose session was
//! stopped or failed starts a new session on a fresh branch, told that it has no memory of the
//! earlier one.

use std::time::Duration;

use super::Slack;
use super::event::Message;
use super::follower::Reactions;
use super::web::body;
use crate::error::{DomainError, DomainResult};
use crate::sessions::lifecycle::StartRequest;
use crate::store::{Project, Session, SessionStatus, SlackThread};

/// A reply to a session still starting waits this long for its agent at most.
const PROMPT_WAIT: Duration = Duration::from_secs(300);
const PROMPT_POLL: Duration = Duration::from_millis(500);

/// What a session replacing an ended one is told before the person's message.
fn fresh_start_prompt(ended_session: &str, text: &str) -> String {
    format!(
        "This Slack thread was handled earlier by session {ended_session}, which has ended. You \
         start on a fresh branch and have no memory of that earlier conversation; ask if you \
         need its context.\n\n{text}"
    )
}

impl Slack {
    /// Acts on one claimed message event.
    pub(crate) async fn on_message(
        &self,
        project: &Project,
        event_id: &str,
        msg: Message,
    ) -> DomainResult<()> {
        if !msg.addressed {
            // A reply counts only in a thread the bot owns.
            return match self
                .store()
                .slack_thread(&project.id, &msg.channel, &msg.thread_ts)
                .await?
            {
                Some(thread) => self.steer(project, event_id, thread, msg).await,
                None => Ok(()),
            };
        }
        if msg.text.is_empty() {
            self.call_now(
                &project.id,
                "chat.postEphemeral",
                body::ephemeral(
                    &msg.channel,
                    &msg.user,
                    msg.in_thread.then_some(msg.thread_ts.as_str()),
                    "Tell me what to do: mention me with your request, e.g. `@kortix add a README`.",
                ),
            )
            .await;
            return Ok(());
        }
        match self
            .store()
            .claim_slack_thread(&project.id, &msg.channel, &msg.thread_ts, &msg.user)
            .await?
        {
            None => self.start(project, event_id, &msg, None).await,
            Some(thread) => self.steer(project, event_id, thread, msg).await,
        }
    }

    /// Starts the thread's session (its first, or one replacing `ended`), with a placeholder
    /// reply at once and a follower for its records.
    async fn start(
        &self,
        project: &Project,
        event_id: &str,
        msg: &Message,
        ended: Option<&str>,
    ) -> DomainResult<()> {
        let (reactions, placeholder) = self
            .open_turn(project, msg, "⏳ Working… starting a session")
            .await;
        let prompt = match ended {
            Some(old) => fresh_start_prompt(old, &msg.text),
            None => msg.text.clone(),
        };
        let origin = format!("slack:{}/{}", msg.channel, msg.thread_ts);
        let started = self
            .sessions()
            .start(StartRequest {
                project: project.id.clone(),
                launched_by: format!("slack:{}", msg.user),
                prompt,
                idempotency_key: format!("slack:{event_id}"),
                origin: origin.clone(),
                ..Default::default()
            })
            .await;
        let session = match started {
            Ok(session) => session,
            Err(e) => {
                if ended.is_none() {
                    self.store()
                        .release_slack_thread(&project.id, &msg.channel, &msg.thread_ts)
                        .await?;
                }
                let text = format!("❌ Could not start a session: {e}");
                return self
                    .fail_turn(project, msg, placeholder.as_deref(), &reactions, &text)
                    .await;
            }
        };
        crate::audit::record_trigger(
            self.store(),
            &format!("slack:{}", msg.user),
            crate::audit::Event::in_project("session.start", project, &session.id)
                .with_detail(&origin),
        )
        .await;
        let moved = self
            .store()
            .set_slack_thread_session(
                &project.id,
                &msg.channel,
                &msg.thread_ts,
                ended.unwrap_or(""),
                &session.id,
            )
            .await?;
        if !moved {
            tracing::warn!(session = %session.id, channel = %msg.channel, thread = %msg.thread_ts,
                "another event moved the Slack thread first; following the session anyway");
        }
        if let Some(ts) = &placeholder {
            self.call_now(
                &project.id,
                "chat.update",
                body::update(
                    &msg.channel,
                    ts,
                    &format!("⏳ Working… (session `{}`)", session.id),
                ),
            )
            .await;
        }
        self.store()
            .open_slack_turn(
                &session.id,
                &msg.ts,
                placeholder.as_deref().unwrap_or(""),
                1,
            )
            .await?;
        self.follow(project, &session.id, &msg.channel, &msg.thread_ts);
        Ok(())
    }

    /// A message in a thread the bot owns: a prompt for its session.
    async fn steer(
        &self,
        project: &Project,
        event_id: &str,
        thread: SlackThread,
        msg: Message,
    ) -> DomainResult<()> {
        if thread.session_id.is_empty() {
            self.call_now(
                &project.id,
                "chat.postEphemeral",
                body::ephemeral(
                    &msg.channel,
                    &msg.user,
                    Some(&msg.thread_ts),
                    "This thread's session is still being started; send your message again in a moment.",
                ),
            )
            .await;
            return Ok(());
        }
        let mut session = self.store().get_session(&thread.session_id).await?;
        if session.status == SessionStatus::Hibernated {
            // A hibernated session comes back, with its work and conversation, and takes the
            // reply as its prompt. (One stopped on purpose is replaced by a fresh session.)
            match self.resume(project, &session, &msg).await {
                Ok(()) => return Ok(()),
                // Another event resumed it first: the reply is a prompt like any other.
                Err(DomainError::Precondition(_)) => {
                    session = self.store().get_session(&thread.session_id).await?;
                }
                Err(e) => return Err(e),
            }
        }
        if session.status.is_terminal() {
            return self.start(project, event_id, &msg, Some(&session.id)).await;
        }
        let (reactions, placeholder) = self
            .open_turn(
                project,
                &msg,
                &format!("⏳ Queued for session `{}`", session.id),
            )
            .await;
        // Stored before the prompt is sent, so whichever replica follows the session knows
        // the turn when its prompt shows in the records; followed from what is stored now.
        let from = session.acked_seq + 1;
        self.store()
            .open_slack_turn(
                &session.id,
                &msg.ts,
                placeholder.as_deref().unwrap_or(""),
                from,
            )
            .await?;
        self.follow(project, &session.id, &msg.channel, &msg.thread_ts);
        if let Err(e) = self
            .deliver_when_running(&session.id, msg.text.clone())
            .await
        {
            let text = format!(
                "❌ Your message did not reach session `{}`: {e}",
                session.id
            );
            self.fail_turn(project, &msg, placeholder.as_deref(), &reactions, &text)
                .await?;
            self.store().close_slack_turn(&session.id, &msg.ts).await?;
        }
        Ok(())
    }

    /// Resumes the thread's hibernated session with the reply as its prompt. A session that
    /// is no longer resumable is FAILED_PRECONDITION, before anything is posted.
    async fn resume(
        &self,
        project: &Project,
        session: &Session,
        msg: &Message,
    ) -> DomainResult<()> {
        let from = session.acked_seq + 1;
        let resumed = self.sessions().resume(&session.id, &msg.text).await;
        if let Err(DomainError::Precondition(why)) = resumed {
            return Err(DomainError::Precondition(why));
        }
        let (reactions, placeholder) = self
            .open_turn(
                project,
                msg,
                &format!("⏳ Resuming session `{}`", session.id),
            )
            .await;
        if let Err(e) = resumed {
            let text = format!("❌ Could not resume session `{}`: {e}", session.id);
            return self
                .fail_turn(project, msg, placeholder.as_deref(), &reactions, &text)
                .await;
        }
        self.store()
            .open_slack_turn(
                &session.id,
                &msg.ts,
                placeholder.as_deref().unwrap_or(""),
                from,
            )
            .await?;
        self.follow(project, &session.id, &msg.channel, &msg.thread_ts);
        Ok(())
    }

    /// A turn that cannot go on: `text` in place of its placeholder (or as a reply), ❌.
    async fn fail_turn(
        &self,
        project: &Project,
        msg: &Message,
        placeholder: Option<&str>,
        reactions: &Reactions,
        text: &str,
    ) -> DomainResult<()> {
        self.finish_turn(
            &project.id,
            &msg.channel,
            &msg.thread_ts,
            placeholder,
            Some(reactions),
            text,
            false,
        )
        .await
    }

    /// A turn begins: ⏳ on the person's message and a placeholder reply in the thread (its
    /// ts, when Slack took it).
    async fn open_turn(
        &self,
        project: &Project,
        msg: &Message,
        placeholder: &str,
    ) -> (Reactions, Option<String>) {
        let reactions = Reactions::new(&msg.channel, &msg.ts);
        self.call_now(&project.id, "reactions.add", reactions.running())
            .await;
        let ts = self
            .call_now(
                &project.id,
                "chat.postMessage",
                body::post_message(&msg.channel, Some(&msg.thread_ts), placeholder),
            )
            .await
            .and_then(|answer| answer["ts"].as_str().map(str::to_string));
        (reactions, ts)
    }

    /// Sends a prompt once the session runs (its agent queues prompts while busy).
    async fn deliver_when_running(&self, session_id: &str, text: String) -> DomainResult<()> {
        let deadline = tokio::time::Instant::now() + PROMPT_WAIT;
        loop {
            let session = self.store().get_session(session_id).await?;
            match session.status {
                SessionStatus::Running => {
                    return self
                        .sessions()
                        .deliver_prompt(&session, text, String::new(), Duration::ZERO)
                        .await
                        .map(drop);
                }
                SessionStatus::Provisioning | SessionStatus::Resuming => {}
                status => {
                    return Err(DomainError::Precondition(format!(
                        "session {session_id} is {status}"
                    )));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DomainError::Unavailable(format!(
                    "session {session_id} did not start running within {}s",
                    PROMPT_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(PROMPT_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_session_is_told_it_has_no_memory() {
        let p = fresh_start_prompt("s-old", "and the LICENSE too");
        assert!(p.contains("session s-old"));
        assert!(p.contains("no memory"));
        assert!(p.ends_with("\n\nand the LICENSE too"));
    }
}
