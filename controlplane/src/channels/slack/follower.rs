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
use kortix_proto::v1::{Record, record::Body};
use kortix_timeline::{Item, Options, Timeline};
use serde_json::Value;
use tokio::time::Instant;

use super::Slack;
use super::progress::Turn;
use super::web::{WebError, body};
use crate::error::{DomainError, DomainResult};
use crate::store::{Project, SessionStatus};

/// A progress message changes at most this often.
pub const UPDATE_EVERY: Duration = Duration::from_secs(1);
/// Open turns one follower keeps at once; more wait in the store.
const MAX_TURNS: usize = 64;
/// How long a replica's claim on following a thread lasts unless renewed (a third of it
/// before it runs out); a thread whose claim ran out is taken over.
pub const FOLLOW_LEASE: Duration = Duration::from_secs(30);
/// How often threads nobody follows are looked for, and how many at a time.
const ADOPT_EVERY: Duration = Duration::from_secs(10);
const ADOPT_BATCH: u32 = 100;
/// How often pending progress is looked at.
const TICK: Duration = Duration::from_millis(250);

const RUNNING: &str = "hourglass_flowing_sand";
const DONE: &str = "white_check_mark";
const FAILED: &str = "x";

/// A person's message that became a prompt of the followed session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTurn {
    /// The person's message (its reactions show the turn's state); `None` for a turn the
    /// agent began on a prompt from elsewhere (an approval decided, `kortix sessions chat`).
    pub user_ts: Option<String>,
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
/// commits): connector calls are not shown in threads, approvals get their own message with
/// buttons (`run_follower`), and logs and states are not shown either.
fn timeline_record(r: &Record) -> Option<kortix_timeline::Record> {
    crate::sessions::records::timeline_record(r)
        .filter(|t| matches!(t.kind.as_str(), "event" | "commit"))
}

impl Slack {
    /// Follows session `session_id` into its thread on this replica, unless it is followed
    /// here already or another replica holds the thread's lease. The turns come from the
    /// store: a turn opened anywhere is picked up when its prompt shows in the records.
    pub(super) fn follow(
        &self,
        project: &Project,
        session_id: &str,
        channel: &str,
        thread_ts: &str,
    ) {
        if !self
            .inner
            .followed
            .lock()
            .expect("followed lock")
            .insert(session_id.to_string())
        {
            return;
        }
        let thread = Thread {
            project: project.clone(),
            session_id: session_id.to_string(),
            channel: channel.to_string(),
            thread_ts: thread_ts.to_string(),
        };
        let this = self.clone();
        tokio::spawn(async move {
            match this.lease(&thread).await {
                Ok(true) => {
                    if let Err(e) = this.run_follower(&thread).await {
                        tracing::warn!(session = %thread.session_id, error = %e,
                            "following a session into Slack failed");
                    }
                    // Released either way: when the session lives on (a failure here), the
                    // thread is taken over again.
                    let released = this
                        .store()
                        .release_slack_follows(this.owner(), Some(&thread.session_id))
                        .await;
                    if let Err(e) = released {
                        tracing::warn!(session = %thread.session_id, error = %e, "releasing a Slack thread");
                    }
                }
                Ok(false) => tracing::debug!(session = %thread.session_id,
                    "another replica follows this Slack thread"),
                Err(e) => tracing::warn!(session = %thread.session_id, error = %e,
                    "leasing a Slack thread"),
            }
            this.inner
                .followed
                .lock()
                .expect("followed lock")
                .remove(&thread.session_id);
        });
    }

    /// Takes or renews this replica's lease on following the thread.
    async fn lease(&self, thread: &Thread) -> DomainResult<bool> {
        let until = crate::clock::now_ms() + FOLLOW_LEASE.as_millis() as i64;
        let key = (
            thread.project.id.as_str(),
            thread.channel.as_str(),
            thread.thread_ts.as_str(),
        );
        Ok(self
            .store()
            .lease_slack_follow(key, self.owner(), until)
            .await?)
    }

    /// Adds the session's open turns not followed yet, oldest first.
    async fn refresh_turns(
        &self,
        thread: &Thread,
        turns: &mut VecDeque<Active>,
    ) -> DomainResult<()> {
        let stored = self.store().slack_turns(&thread.session_id).await?;
        for t in stored {
            if turns.len() >= MAX_TURNS {
                tracing::warn!(session = %thread.session_id, "too many open Slack turns; later ones wait");
                break;
            }
            let known = turns
                .iter()
                .any(|a| a.turn.user_ts.as_deref() == Some(t.user_ts.as_str()));
            if !known {
                turns.push_back(Active::new(NewTurn {
                    user_ts: Some(t.user_ts),
                    progress_ts: Some(t.progress_ts).filter(|ts| !ts.is_empty()),
                }));
            }
        }
        Ok(())
    }

    async fn run_follower(&self, thread: &Thread) -> DomainResult<()> {
        let open = self.store().slack_turns(&thread.session_id).await?;
        let from_seq = match open.iter().map(|t| t.from_seq).min() {
            Some(seq) => seq,
            None => {
                self.store()
                    .get_session(&thread.session_id)
                    .await?
                    .acked_seq
                    + 1
            }
        };
        let mut records = self.sessions().attach(
            thread.session_id.clone(),
            u64::try_from(from_seq).unwrap_or(1).max(1),
            true,
        );
        let mut timeline = Timeline::new(Options::default());
        let mut turns = VecDeque::new();
        self.refresh_turns(thread, &mut turns).await?;
        let mut tick = tokio::time::interval(TICK);
        // The placeholder was just posted: progress replaces it a second later at the soonest.
        let mut next_update = Instant::now() + UPDATE_EVERY;
        let mut next_renewal = Instant::now() + FOLLOW_LEASE / 3;
        loop {
            tokio::select! {
                record = records.next() => match record {
                    Some(Ok(r)) => {
                        if let Some(Body::Approval(a)) = &r.body {
                            self.offer_approval(&thread.project, &thread.channel, &thread.thread_ts, a)
                                .await?;
                        }
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
                _ = tick.tick() => {
                    if Instant::now() >= next_renewal {
                        if !self.lease(thread).await? {
                            tracing::info!(session = %thread.session_id,
                                "another replica took this Slack thread over");
                            return Ok(());
                        }
                        next_renewal = Instant::now() + FOLLOW_LEASE / 3;
                    }
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
        // Turns opened while the records ended belong to this session too.
        self.refresh_turns(thread, &mut turns).await?;
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

    /// Follows, on this replica, the live threads nobody follows (on start: the threads of a
    /// replica that stopped or died, this one's earlier run included), every
    /// [`ADOPT_EVERY`] until `shutdown`; then gives this replica's threads up so another
    /// (or the next run) takes them over at once.
    pub async fn run_followers(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(ADOPT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.adopt_threads().await,
                () = &mut shutdown => break,
            }
        }
        if let Err(e) = self.store().release_slack_follows(self.owner(), None).await {
            tracing::warn!(error = %e, "releasing this replica's Slack threads");
        }
    }

    async fn adopt_threads(&self) {
        let threads = match self.store().unfollowed_slack_threads(ADOPT_BATCH).await {
            Ok(threads) => threads,
            Err(e) => {
                tracing::warn!(error = %e, "listing unfollowed Slack threads");
                return;
            }
        };
        for t in threads {
            match self.store().find_project(&t.project_id).await {
                Ok(project) => {
                    tracing::info!(session = %t.session_id, channel = %t.channel,
                        thread = %t.thread_ts, "following a Slack thread nobody followed");
                    self.follow(&project, &t.session_id, &t.channel, &t.thread_ts);
                }
                Err(e) => {
                    tracing::warn!(project = %t.project_id, error = %e, "Slack thread's project")
                }
            }
        }
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
                // Slack's turns are stored before their prompts are sent, so a prompt no
                // turn waits for came from elsewhere (an approval decided, the CLI): the
                // agent works on, and its answer belongs in the thread too.
                self.refresh_turns(thread, turns).await?;
                if turns.is_empty() {
                    turns.push_back(Active::new(NewTurn {
                        user_ts: None,
                        progress_ts: None,
                    }));
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
        let reactions = active
            .turn
            .user_ts
            .as_deref()
            .map(|ts| Reactions::new(&thread.channel, ts));
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
            reactions.as_ref(),
            text,
            ok,
        )
        .await?;
        // Closed once its last messages are queued: a restart in between answers it twice
        // rather than never.
        if let Some(user_ts) = &active.turn.user_ts {
            self.store()
                .close_slack_turn(&thread.session_id, user_ts)
                .await?;
        }
        Ok(())
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
        reactions: Option<&Reactions>,
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
        for (method, payload) in reactions.into_iter().flat_map(|r| r.finished(ok)) {
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
