//! Follows a session's records into its Slack thread, the way `kortix sessions attach`
//! follows them (stored, then live): each turn's progress message is updated from the
//! agent's text and tool steps at most once a second, and when the agent has answered (it
//! went idle after the turn's prompt) the final answer is posted with the branch and, when
//! one exists, the change request, and the turn's reactions move from ⏳ to ✅ (❌ when the
//! session failed or ended first). Final messages and reactions go through the outbox, so a
//! rate limit delays them but never loses them.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use kortix_proto::v1::Record;
use kortix_timeline::{Item, Options, Timeline};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Slack;
use super::progress::Turn;
use super::web::{WebError, body};
use crate::error::{DomainError, DomainResult};
use crate::store::{Project, SessionStatus};

/// A progress message changes at most this often.
pub const UPDATE_EVERY: Duration = Duration::from_secs(1);
/// Turns announced but not yet followed, per session.
const TURN_QUEUE: usize = 16;
/// How often pending progress is looked at.
const TICK: Duration = Duration::from_millis(250);

const RUNNING: &str = "hourglass_flowing_sand";
const DONE: &str = "white_check_mark";
const FAILED: &str = "x";

/// A person's message that became a prompt of the followed session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTurn {
    /// The person's message (its reactions show the turn's state).
    pub user_ts: String,
    /// The bot's progress message in the thread, when it could be posted.
    pub progress_ts: Option<String>,
}

/// The reactions on a person's message.
pub struct Reactions {
    channel: String,
    ts: String,
}

impl Reactions {
    pub fn new(channel: &str, ts: &str) -> Self {
        Reactions {
            channel: channel.to_string(),
            ts: ts.to_string(),
        }
    }

    pub fn running(&self) -> Value {
        body::reaction(&self.channel, &self.ts, RUNNING)
    }

    /// ⏳ off, ✅ or ❌ on.
    fn finished(&self, ok: bool) -> [(&'static str, Value); 2] {
        [
            ("reactions.remove", self.running()),
            (
                "reactions.add",
                body::reaction(&self.channel, &self.ts, if ok { DONE } else { FAILED }),
            ),
        ]
    }
}

struct Active {
    turn: NewTurn,
    summary: Turn,
    /// The turn's prompt reached OpenCode: the next idle ends the turn.
    prompt_seen: bool,
    dirty: bool,
}

/// Where a followed session's thread is.
struct Thread {
    project: Project,
    session_id: String,
    channel: String,
    thread_ts: String,
}

/// A record as the timeline reads it; only the kinds a thread shows (OpenCode's events,
/// commits): connector calls and approvals are not shown in threads (Slack approvals are not
/// built yet), nor logs and states.
fn timeline_record(r: &Record) -> Option<kortix_timeline::Record> {
    crate::sessions::records::timeline_record(r)
        .filter(|t| matches!(t.kind.as_str(), "event" | "commit"))
}

impl Slack {
    /// Hands a new turn to the session's follower on this replica; false when there is none.
    pub(super) async fn announce_turn(&self, session_id: &str, turn: NewTurn) -> bool {
        let tx = self
            .inner
            .followers
            .lock()
            .expect("followers lock")
            .get(session_id)
            .cloned();
        match tx {
            Some(tx) => tx.send(turn).await.is_ok(),
            None => false,
        }
    }

    /// Follows session `session_id` from record `from_seq` into its thread, starting with
    /// turn `first`.
    pub(super) fn follow(
        &self,
        project: &Project,
        session_id: &str,
        channel: &str,
        thread_ts: &str,
        from_seq: u64,
        first: NewTurn,
    ) {
        let (tx, rx) = mpsc::channel(TURN_QUEUE);
        {
            let mut followers = self.inner.followers.lock().expect("followers lock");
            if let Some(existing) = followers.get(session_id)
                && existing.try_send(first.clone()).is_ok()
            {
                return;
            }
            followers.insert(session_id.to_string(), tx);
        }
        let thread = Thread {
            project: project.clone(),
            session_id: session_id.to_string(),
            channel: channel.to_string(),
            thread_ts: thread_ts.to_string(),
        };
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.run_follower(&thread, from_seq, first, rx).await {
                tracing::warn!(session = %thread.session_id, error = %e,
                    "following a session into Slack failed");
            }
            this.inner
                .followers
                .lock()
                .expect("followers lock")
                .remove(&thread.session_id);
        });
    }

    async fn run_follower(
        &self,
        thread: &Thread,
        from_seq: u64,
        first: NewTurn,
        mut rx: mpsc::Receiver<NewTurn>,
    ) -> DomainResult<()> {
        let mut records = self
            .sessions()
            .attach(thread.session_id.clone(), from_seq, true);
        let mut timeline = Timeline::new(Options::default());
        let mut turns = VecDeque::from([Active::new(first)]);
        let mut tick = tokio::time::interval(TICK);
        // The placeholder was just posted: progress replaces it a second later at the soonest.
        let mut next_update = Instant::now() + UPDATE_EVERY;
        loop {
            tokio::select! {
                record = records.next() => match record {
                    Some(Ok(r)) => {
                        let Some(r) = timeline_record(&r) else { continue };
                        for entry in timeline.push(&r) {
                            self.on_item(thread, &mut turns, entry.item).await?;
                        }
                    }
                    Some(Err(status)) => {
                        return Err(DomainError::Unavailable(format!(
                            "following session {}: {}", thread.session_id, status.message()
                        )));
                    }
                    None => break,
                },
                Some(turn) = rx.recv() => turns.push_back(Active::new(turn)),
                _ = tick.tick() => {
                    if Instant::now() >= next_update
                        && let Some(wait) = self.update_progress(thread, &mut turns).await
                    {
                        next_update = Instant::now() + wait;
                    }
                }
            }
        }
        for entry in timeline.finish() {
            self.on_item(thread, &mut turns, entry.item).await?;
        }
        // Turns announced while the records ended belong to this session too.
        while let Ok(turn) = rx.try_recv() {
            turns.push_back(Active::new(turn));
        }
        let session = self.store().get_session(&thread.session_id).await?;
        let why = match session.status {
            SessionStatus::Failed => format!(
                "❌ Session `{}` failed: {}",
                session.id, session.failure_reason
            ),
            status => format!(
                "❌ Session `{}` ended ({status}) before answering.",
                session.id
            ),
        };
        while let Some(active) = turns.pop_front() {
            self.finish_active(thread, active, &why, false).await?;
        }
        Ok(())
    }

    async fn on_item(
        &self,
        thread: &Thread,
        turns: &mut VecDeque<Active>,
        item: Item,
    ) -> DomainResult<()> {
        match item {
            Item::Prompt { .. } => {
                // A second prompt without an idle between: the earlier turn is over.
                if turns.front().is_some_and(|t| t.prompt_seen) {
                    let done = turns.pop_front().expect("front checked");
                    self.finish_answered(thread, done).await?;
                }
                if let Some(front) = turns.front_mut() {
                    front.prompt_seen = true;
                }
            }
            Item::Idle => {
                if turns.front().is_some_and(|t| t.prompt_seen) {
                    let done = turns.pop_front().expect("front checked");
                    self.finish_answered(thread, done).await?;
                }
            }
            item => {
                if let Some(front) = turns.front_mut() {
                    front.dirty |= front.summary.push(&item);
                }
            }
        }
        Ok(())
    }

    /// Updates the current turn's progress message if it changed; the wait before the next
    /// update (longer when Slack asked for it).
    async fn update_progress(
        &self,
        thread: &Thread,
        turns: &mut VecDeque<Active>,
    ) -> Option<Duration> {
        let active = turns.front_mut().filter(|a| a.dirty)?;
        let ts = active.turn.progress_ts.clone()?;
        active.dirty = false;
        let text = active.summary.progress_text(&thread.session_id);
        let token = self.bot_token(&thread.project.id).await.ok().flatten()?;
        match self
            .web()
            .call(
                &token,
                "chat.update",
                &body::update(&thread.channel, &ts, &text),
            )
            .await
        {
            Ok(_) => Some(UPDATE_EVERY),
            Err(WebError::RateLimited { retry_after, .. }) => {
                // Shown again once Slack allows; the final message does not depend on it.
                active.dirty = true;
                Some(retry_after.max(UPDATE_EVERY))
            }
            Err(e) => {
                tracing::debug!(session = %thread.session_id, error = %e, "progress update");
                Some(UPDATE_EVERY)
            }
        }
    }

    async fn finish_answered(&self, thread: &Thread, active: Active) -> DomainResult<()> {
        let answer = match active.summary.answer() {
            "" => "(The agent finished without a written answer.)".to_string(),
            text => text.to_string(),
        };
        let footer = self.footer(thread).await;
        let ok = active.summary.errors().is_empty();
        let text = format!("{answer}\n\n{footer}");
        self.finish_active(thread, active, &text, ok).await
    }

    async fn finish_active(
        &self,
        thread: &Thread,
        active: Active,
        text: &str,
        ok: bool,
    ) -> DomainResult<()> {
        let reactions = Reactions::new(&thread.channel, &active.turn.user_ts);
        let status = if ok {
            format!(
                "✅ Finished (session `{}`) · {} tool call(s)",
                thread.session_id,
                active.summary.tool_calls()
            )
        } else {
            format!("❌ Did not finish (session `{}`)", thread.session_id)
        };
        if let Some(ts) = &active.turn.progress_ts {
            self.enqueue(
                &thread.project.id,
                "chat.update",
                &body::update(&thread.channel, ts, &status),
            )
            .await?;
        }
        self.finish_turn(
            &thread.project.id,
            &thread.channel,
            &thread.thread_ts,
            None,
            &reactions,
            text,
            ok,
        )
        .await
    }

    /// Queues a turn's last messages: the final answer in the thread (and, when given, the
    /// progress message's last state) and the reactions.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn finish_turn(
        &self,
        project_id: &str,
        channel: &str,
        thread_ts: &str,
        progress_ts: Option<&str>,
        reactions: &Reactions,
        text: &str,
        ok: bool,
    ) -> DomainResult<()> {
        if let Some(ts) = progress_ts {
            self.enqueue(project_id, "chat.update", &body::update(channel, ts, text))
                .await?;
        } else {
            self.enqueue(
                project_id,
                "chat.postMessage",
                &body::post_message(channel, Some(thread_ts), text),
            )
            .await?;
        }
        for (method, payload) in reactions.finished(ok) {
            self.enqueue(project_id, method, &payload).await?;
        }
        Ok(())
    }

    /// The branch, what it changed, and its change request.
    async fn footer(&self, thread: &Thread) -> String {
        let branch = &thread.session_id;
        let mut footer = format!("Branch `{branch}`");
        let repos = self.sessions().repos.clone();
        let (project_id, base, head) = (
            thread.project.id.clone(),
            thread.project.default_branch.clone(),
            branch.clone(),
        );
        let totals = tokio::task::spawn_blocking(move || -> Option<crate::changes::DiffTotals> {
            let repo = repos.open_repo(&project_id).ok()?;
            let base = crate::changes::branch_commit(&repo, &base).ok()?;
            let head = crate::changes::branch_commit(&repo, &head).ok()?;
            let files = crate::changes::three_dot_files(&repo, base, head).ok()?;
            Some(crate::changes::DiffTotals::of(&files))
        })
        .await
        .ok()
        .flatten();
        match totals {
            Some(t) if t.files > 0 => footer.push_str(&format!(
                " · {} file(s) changed, +{} −{}",
                t.files, t.insertions, t.deletions
            )),
            _ => footer.push_str(" · no changes"),
        }
        if let Ok(Some(cr)) = self
            .store()
            .find_open_change_request(&thread.project.id, branch)
            .await
        {
            footer.push_str(&format!(" · change request #{}: {}", cr.number, cr.title));
        }
        footer
    }
}

impl Active {
    fn new(turn: NewTurn) -> Self {
        Active {
            turn,
            summary: Turn::default(),
            prompt_seen: false,
            dirty: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kortix_proto::v1::record::Body;
    use kortix_proto::v1::{CommitRecord, LogLine, OpencodeEvent};

    #[test]
    fn records_become_timeline_records() {
        let event = Record {
            seq: 4,
            ts_unix_ms: 0,
            body: Some(Body::Event(OpencodeEvent {
                r#type: "session.idle".into(),
                json: r#"{"type":"session.idle","properties":{}}"#.into(),
            })),
        };
        let r = timeline_record(&event).unwrap();
        assert_eq!((r.seq, r.kind.as_str()), (4, "event"));
        let mut timeline = Timeline::new(Options::default());
        assert!(
            timeline
                .push(&r)
                .iter()
                .any(|e| matches!(e.item, Item::Idle))
        );
        let commit = Record {
            seq: 5,
            ts_unix_ms: 0,
            body: Some(Body::Commit(CommitRecord {
                sha: "abc".into(),
                message: "Add hello\n\nbody".into(),
                files_changed: 1,
                insertions: 2,
                ..Default::default()
            })),
        };
        let entries = timeline.push(&timeline_record(&commit).unwrap());
        assert!(matches!(&entries[0].item, Item::Commit { subject, .. } if subject == "Add hello"));
        let log = Record {
            seq: 6,
            ts_unix_ms: 0,
            body: Some(Body::Log(LogLine::default())),
        };
        assert!(timeline_record(&log).is_none());
    }

    #[test]
    fn reactions_move_from_running_to_done_or_failed() {
        let r = Reactions::new("C1", "1.5");
        assert_eq!(r.running()["name"], RUNNING);
        let [(m1, off), (m2, on)] = r.finished(true);
        assert_eq!((m1, m2), ("reactions.remove", "reactions.add"));
        assert_eq!(off["name"], RUNNING);
        assert_eq!(on["name"], DONE);
        assert_eq!(r.finished(false)[1].1["name"], FAILED);
    }
}
