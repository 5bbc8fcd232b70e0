//! What a Slack thread's follower needs to go on anywhere: the turns still waiting for their
//! answer, and a lease naming the replica that follows the thread. Rules (lease length,
//! take-over) live in `crate::channels::slack::follower`; this module knows rows.

use super::{DbContext, Result, SlackThread, Store, clamp_limit, with_pool};
use crate::clock::now_ms;

/// A turn waiting for its answer.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SlackTurn {
    pub session_id: String,
    pub user_ts: String,
    /// Empty when the progress message could not be posted.
    pub progress_ts: String,
    pub from_seq: i64,
    pub created_ms: i64,
}

impl Store {
    /// Records a turn of the session (once: a second call for the same message does nothing).
    pub async fn open_slack_turn(
        &self,
        session_id: &str,
        user_ts: &str,
        progress_ts: &str,
        from_seq: i64,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO slack_turns (session_id, user_ts, progress_ts, from_seq, created_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_id, user_ts) DO NOTHING",
            )
            .bind(session_id)
            .bind(user_ts)
            .bind(progress_ts)
            .bind(from_seq)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(drop)
        })
        .ctx(|| format!("recording a Slack turn of session {session_id}"))
    }

    /// The session's open turns, oldest first.
    pub async fn slack_turns(&self, session_id: &str) -> Result<Vec<SlackTurn>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, SlackTurn>(
                "SELECT session_id, user_ts, progress_ts, from_seq, created_ms FROM slack_turns
                 WHERE session_id = $1 ORDER BY created_ms, user_ts",
            )
            .bind(session_id)
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("reading the Slack turns of session {session_id}"))
    }

    /// Forgets an answered turn.
    pub async fn close_slack_turn(&self, session_id: &str, user_ts: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM slack_turns WHERE session_id = $1 AND user_ts = $2")
                .bind(session_id)
                .bind(user_ts)
                .execute(pool)
                .await
                .map(drop)
        })
        .ctx(|| format!("closing a Slack turn of session {session_id}"))
    }

    /// Takes or renews the lease on following a thread for `owner` until `until_ms`: true when
    /// `owner` holds it (it did already, or the last lease ran out).
    pub async fn lease_slack_follow(
        &self,
        (project_id, channel, thread_ts): (&str, &str, &str),
        owner: &str,
        until_ms: i64,
    ) -> Result<bool> {
        let updated = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE slack_threads SET follower = $4, follow_until_ms = $5
                 WHERE project_id = $1 AND channel = $2 AND thread_ts = $3
                   AND (follower = $4 OR follow_until_ms < $6)",
            )
            .bind(project_id)
            .bind(channel)
            .bind(thread_ts)
            .bind(owner)
            .bind(until_ms)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("leasing Slack thread {channel}/{thread_ts}"))?;
        Ok(updated == 1)
    }

    /// Gives up `owner`'s leases: all of them, or the one on the thread of `session_id`
    /// (not a later session's in the same thread).
    pub async fn release_slack_follows(&self, owner: &str, session_id: Option<&str>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE slack_threads SET follow_until_ms = 0
                 WHERE follower = $1 AND ($2 IS NULL OR session_id = $2)",
            )
            .bind(owner)
            .bind(session_id)
            .execute(pool)
            .await
            .map(drop)
        })
        .ctx(|| format!("releasing the Slack follows of {owner}"))
    }

    /// Threads of live sessions nobody follows (their lease ran out), oldest first.
    pub async fn unfollowed_slack_threads(&self, limit: u32) -> Result<Vec<SlackThread>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, SlackThread>(
                "SELECT t.project_id, t.channel, t.thread_ts, t.session_id, t.asked_by,
                     t.created_ms, t.updated_ms
                 FROM slack_threads t JOIN sessions s ON s.id = t.session_id
                 WHERE t.follow_until_ms < $1
                   AND s.status NOT IN ('stopped', 'hibernated', 'failed')
                 ORDER BY t.updated_ms LIMIT $2",
            )
            .bind(now_ms())
            .bind(clamp_limit(limit, 500))
            .fetch_all(pool)
            .await
        })
        .ctx(|| "listing unfollowed Slack threads".to_string())
    }
}
