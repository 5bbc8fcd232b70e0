//! Slack channels: bindings (sealed credentials), claimed event ids, owned threads and the
//! outbox of Web API calls that must be delivered. Sealing and Slack's rules live in
//! `crate::channels::slack`; this module knows rows.

use super::{DbContext, Error, Result, Store, clamp_limit, new_id, with_pool};
use crate::clock::now_ms;

/// Longest event id, channel id or thread timestamp stored (Slack's are far shorter).
const MAX_KEY_BYTES: usize = 256;
/// Longest queued Web API payload.
pub const MAX_OUTBOX_PAYLOAD: usize = 64 * 1024;
const MAX_ERROR_BYTES: usize = 1024;

/// A project's Slack app: sealed signing secret and bot token.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SlackBinding {
    pub project_id: String,
    pub signing_nonce: Vec<u8>,
    pub signing_sealed: Vec<u8>,
    pub token_nonce: Vec<u8>,
    pub token_sealed: Vec<u8>,
    pub connected_by: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl std::fmt::Debug for SlackBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackBinding")
            .field("project_id", &self.project_id)
            .field("connected_by", &self.connected_by)
            .field("updated_ms", &self.updated_ms)
            .finish_non_exhaustive()
    }
}

/// A thread the bot owns.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SlackThread {
    pub project_id: String,
    pub channel: String,
    pub thread_ts: String,
    /// Empty while the first session is being started.
    pub session_id: String,
    pub asked_by: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A thread with its session's state, for listings.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LiveSlackThread {
    pub channel: String,
    pub thread_ts: String,
    pub session_id: String,
    pub asked_by: String,
    pub status: String,
    pub created_ms: i64,
}

/// A queued Web API call.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxItem {
    pub id: String,
    pub project_id: String,
    pub method: String,
    pub payload: String,
    pub attempts: i64,
    pub due_ms: i64,
    pub created_ms: i64,
    pub last_error: String,
}

fn check_key(what: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > MAX_KEY_BYTES {
        return Err(Error::Invalid {
            what,
            reason: format!("must be 1 to {MAX_KEY_BYTES} bytes"),
        });
    }
    Ok(())
}

impl Store {
    /// Binds (or rebinds) a project to a Slack app.
    pub async fn put_slack_binding(&self, b: &SlackBinding) -> Result<SlackBinding> {
        let now = now_ms();
        with_pool!(self, |pool| {
            sqlx::query_as::<_, SlackBinding>(
                "INSERT INTO slack_bindings (project_id, signing_nonce, signing_sealed,
                     token_nonce, token_sealed, connected_by, created_ms, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
                 ON CONFLICT (project_id) DO UPDATE SET signing_nonce = excluded.signing_nonce,
                     signing_sealed = excluded.signing_sealed, token_nonce = excluded.token_nonce,
                     token_sealed = excluded.token_sealed, connected_by = excluded.connected_by,
                     updated_ms = excluded.updated_ms
                 RETURNING project_id, signing_nonce, signing_sealed, token_nonce, token_sealed,
                     connected_by, created_ms, updated_ms",
            )
            .bind(&b.project_id)
            .bind(&b.signing_nonce)
            .bind(&b.signing_sealed)
            .bind(&b.token_nonce)
            .bind(&b.token_sealed)
            .bind(&b.connected_by)
            .bind(now)
            .fetch_one(pool)
            .await
        })
        .ctx(|| format!("binding project {} to Slack", b.project_id))
    }

    /// The project's Slack binding, if it has one.
    pub async fn slack_binding(&self, project_id: &str) -> Result<Option<SlackBinding>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, SlackBinding>(
                "SELECT project_id, signing_nonce, signing_sealed, token_nonce, token_sealed,
                     connected_by, created_ms, updated_ms
                 FROM slack_bindings WHERE project_id = $1",
            )
            .bind(project_id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading the Slack binding of project {project_id}"))
    }

    /// Claims Slack event `event_id` for the project: true for the first caller only.
    pub async fn claim_slack_event(&self, project_id: &str, event_id: &str) -> Result<bool> {
        check_key("Slack event id", event_id)?;
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO slack_events (project_id, event_id, received_ms)
                 VALUES ($1, $2, $3) ON CONFLICT (project_id, event_id) DO NOTHING",
            )
            .bind(project_id)
            .bind(event_id)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("claiming Slack event {event_id}"))?;
        Ok(inserted == 1)
    }

    /// Forgets event ids received before `before_ms`; returns how many.
    pub async fn prune_slack_events(&self, before_ms: i64) -> Result<u64> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM slack_events WHERE received_ms < $1")
                .bind(before_ms)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .ctx(|| "pruning old Slack event ids".to_string())
    }

    /// Claims a thread for the bot: `Ok(None)` when this caller created the row (and must
    /// start its session), else the existing thread.
    pub async fn claim_slack_thread(
        &self,
        project_id: &str,
        channel: &str,
        thread_ts: &str,
        asked_by: &str,
    ) -> Result<Option<SlackThread>> {
        check_key("Slack channel", channel)?;
        check_key("Slack thread timestamp", thread_ts)?;
        let now = now_ms();
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO slack_threads (project_id, channel, thread_ts, session_id, asked_by,
                     created_ms, updated_ms)
                 VALUES ($1, $2, $3, '', $4, $5, $5)
                 ON CONFLICT (project_id, channel, thread_ts) DO NOTHING",
            )
            .bind(project_id)
            .bind(channel)
            .bind(thread_ts)
            .bind(asked_by)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("claiming Slack thread {channel}/{thread_ts}"))?;
        if inserted == 1 {
            return Ok(None);
        }
        self.slack_thread(project_id, channel, thread_ts)
            .await?
            .map(Some)
            .ok_or_else(|| Error::NotFound(format!("Slack thread {channel}/{thread_ts}")))
    }

    /// The thread, if the bot owns it.
    pub async fn slack_thread(
        &self,
        project_id: &str,
        channel: &str,
        thread_ts: &str,
    ) -> Result<Option<SlackThread>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, SlackThread>(
                "SELECT project_id, channel, thread_ts, session_id, asked_by, created_ms, updated_ms
                 FROM slack_threads WHERE project_id = $1 AND channel = $2 AND thread_ts = $3",
            )
            .bind(project_id)
            .bind(channel)
            .bind(thread_ts)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading Slack thread {channel}/{thread_ts}"))
    }

    /// The thread whose session is `session_id`, if any.
    pub async fn slack_thread_of_session(&self, session_id: &str) -> Result<Option<SlackThread>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, SlackThread>(
                "SELECT project_id, channel, thread_ts, session_id, asked_by, created_ms, updated_ms
                 FROM slack_threads WHERE session_id = $1",
            )
            .bind(session_id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading the Slack thread of session {session_id}"))
    }

    /// Moves the thread from session `from` (empty: none yet) to `to`; false when another
    /// caller moved it first.
    pub async fn set_slack_thread_session(
        &self,
        project_id: &str,
        channel: &str,
        thread_ts: &str,
        from: &str,
        to: &str,
    ) -> Result<bool> {
        let updated = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE slack_threads SET session_id = $5, updated_ms = $6
                 WHERE project_id = $1 AND channel = $2 AND thread_ts = $3 AND session_id = $4",
            )
            .bind(project_id)
            .bind(channel)
            .bind(thread_ts)
            .bind(from)
            .bind(to)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("moving Slack thread {channel}/{thread_ts} to session {to}"))?;
        Ok(updated == 1)
    }

    /// Gives up a thread whose first session could not start, so a new mention may try again.
    pub async fn release_slack_thread(
        &self,
        project_id: &str,
        channel: &str,
        thread_ts: &str,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "DELETE FROM slack_threads
                 WHERE project_id = $1 AND channel = $2 AND thread_ts = $3 AND session_id = ''",
            )
            .bind(project_id)
            .bind(channel)
            .bind(thread_ts)
            .execute(pool)
            .await
            .map(drop)
        })
        .ctx(|| format!("releasing Slack thread {channel}/{thread_ts}"))?;
        Ok(())
    }

    /// The project's threads whose sessions have not ended, newest first; `channel` narrows
    /// them to one channel.
    pub async fn live_slack_threads(
        &self,
        project_id: &str,
        channel: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LiveSlackThread>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, LiveSlackThread>(
                "SELECT t.channel, t.thread_ts, t.session_id, t.asked_by, s.status, t.created_ms
                 FROM slack_threads t JOIN sessions s ON s.id = t.session_id
                 WHERE t.project_id = $1 AND ($2 IS NULL OR t.channel = $2)
                   AND s.status NOT IN ('stopped', 'failed', 'hibernated')
                 ORDER BY t.created_ms DESC LIMIT $3",
            )
            .bind(project_id)
            .bind(channel)
            .bind(clamp_limit(limit, 500))
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing the live Slack threads of project {project_id}"))
    }

    /// Queues a Web API call for delivery now.
    pub async fn enqueue_slack_call(
        &self,
        project_id: &str,
        method: &str,
        payload: &str,
    ) -> Result<String> {
        if payload.len() > MAX_OUTBOX_PAYLOAD {
            return Err(Error::Invalid {
                what: "Slack call",
                reason: format!("payload over {MAX_OUTBOX_PAYLOAD} bytes"),
            });
        }
        let id = new_id();
        let now = now_ms();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO slack_outbox (id, project_id, method, payload, attempts, due_ms,
                     created_ms)
                 VALUES ($1, $2, $3, $4, 0, $5, $5)",
            )
            .bind(&id)
            .bind(project_id)
            .bind(method)
            .bind(payload)
            .bind(now)
            .execute(pool)
            .await
            .map(drop)
        })
        .ctx(|| format!("queueing Slack {method} for project {project_id}"))?;
        Ok(id)
    }

    /// Claims up to `limit` due calls for `lease_ms`: each is returned to one caller only
    /// (its due time moves past the lease, so another replica skips it meanwhile).
    pub async fn claim_due_slack_calls(
        &self,
        limit: u32,
        lease_ms: i64,
    ) -> Result<Vec<OutboxItem>> {
        let now = now_ms();
        let due = with_pool!(self, |pool| {
            sqlx::query_as::<_, OutboxItem>(
                "SELECT id, project_id, method, payload, attempts, due_ms, created_ms, last_error
                 FROM slack_outbox WHERE due_ms <= $1 ORDER BY due_ms, id LIMIT $2",
            )
            .bind(now)
            .bind(clamp_limit(limit, 100))
            .fetch_all(pool)
            .await
        })
        .ctx(|| "reading due Slack calls".to_string())?;
        let mut claimed = Vec::with_capacity(due.len());
        for item in due {
            let won = with_pool!(self, |pool| {
                sqlx::query(
                    "UPDATE slack_outbox SET due_ms = $3, attempts = attempts + 1
                     WHERE id = $1 AND due_ms = $2",
                )
                .bind(&item.id)
                .bind(item.due_ms)
                .bind(now + lease_ms)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
            })
            .ctx(|| format!("claiming Slack call {}", item.id))?;
            if won == 1 {
                claimed.push(OutboxItem {
                    attempts: item.attempts + 1,
                    due_ms: now + lease_ms,
                    ..item
                });
            }
        }
        Ok(claimed)
    }

    /// The call was delivered (or given up on): forget it.
    pub async fn finish_slack_call(&self, id: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM slack_outbox WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(drop)
        })
        .ctx(|| format!("removing Slack call {id}"))?;
        Ok(())
    }

    /// The call failed: try again at `due_ms`.
    pub async fn retry_slack_call(&self, id: &str, due_ms: i64, error: &str) -> Result<()> {
        let error = super::sessions::truncate_utf8(error, MAX_ERROR_BYTES);
        with_pool!(self, |pool| {
            sqlx::query("UPDATE slack_outbox SET due_ms = $2, last_error = $3 WHERE id = $1")
                .bind(id)
                .bind(due_ms)
                .bind(error)
                .execute(pool)
                .await
                .map(drop)
        })
        .ctx(|| format!("rescheduling Slack call {id}"))?;
        Ok(())
    }
}
