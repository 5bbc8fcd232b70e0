//! Sessions: one sandboxed OpenCode run on its own branch. Status changes are conditional
//! updates, so when two replicas race to move a session exactly one of them wins.

use super::{
    AgentChange, Backend, BeginWrite, DbContext, Error, Result, Store, clamp_limit,
    is_unique_violation, new_id, placeholders, with_pool,
};
use crate::clock::now_ms;
use std::collections::HashSet;

const MAX_LIST: u32 = 1000;

/// Keyset position for the paged listings ordered by `(created_ms, id)`: strictly after
/// `after`, or from the start.
fn cursor(after: Option<&Session>) -> (i64, &str) {
    after.map_or((i64::MIN, ""), |s| (s.created_ms, s.id.as_str()))
}
pub(super) const MAX_PROMPT_BYTES: usize = 256 * 1024;
const MAX_SHORT_FIELD: usize = 256;
const MAX_REASON_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    Provisioning,
    Running,
    Stopping,
    Stopped,
    Hibernated,
    Failed,
    /// A new sandbox boots for a stopped or hibernated session (same id and branch).
    Resuming,
}

impl SessionStatus {
    pub const ALL: [SessionStatus; 7] = [
        SessionStatus::Provisioning,
        SessionStatus::Running,
        SessionStatus::Stopping,
        SessionStatus::Stopped,
        SessionStatus::Hibernated,
        SessionStatus::Failed,
        SessionStatus::Resuming,
    ];
    /// States a session is still live in (has, or is about to have, a sandbox).
    pub const ACTIVE: [SessionStatus; 4] = [
        SessionStatus::Provisioning,
        SessionStatus::Resuming,
        SessionStatus::Running,
        SessionStatus::Stopping,
    ];
    /// States whose sandbox is booting: its agent may enroll, and reports `running` next.
    pub const BOOTING: [SessionStatus; 2] = [SessionStatus::Provisioning, SessionStatus::Resuming];
    /// States a session can be resumed from.
    pub const RESUMABLE: [SessionStatus; 2] = [SessionStatus::Stopped, SessionStatus::Hibernated];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Provisioning => "provisioning",
            SessionStatus::Running => "running",
            SessionStatus::Stopping => "stopping",
            SessionStatus::Stopped => "stopped",
            SessionStatus::Hibernated => "hibernated",
            SessionStatus::Failed => "failed",
            SessionStatus::Resuming => "resuming",
        }
    }

    /// Whether [`SessionStatus::RESUMABLE`] holds it.
    pub fn is_resumable(self) -> bool {
        Self::RESUMABLE.contains(&self)
    }

    /// Stopped, hibernated and failed sessions have no sandbox.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SessionStatus::Stopped | SessionStatus::Hibernated | SessionStatus::Failed
        )
    }
}

impl std::fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown session status {0:?}")]
pub struct UnknownStatus(String);

impl std::str::FromStr for SessionStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownStatus> {
        SessionStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

impl TryFrom<String> for SessionStatus {
    type Error = UnknownStatus;
    fn try_from(s: String) -> std::result::Result<Self, UnknownStatus> {
        s.parse()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    pub id: String,
    pub project_id: String,
    #[sqlx(try_from = "String")]
    pub status: SessionStatus,
    pub template: String,
    pub agent: String,
    pub prompt: String,
    /// What started it: "cli", "trigger:<slug>", ….
    pub origin: String,
    /// Empty when the caller gave none.
    pub idempotency_key: String,
    pub head_sha: String,
    pub failure_reason: String,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub last_heartbeat_ms: Option<i64>,
    pub idle_ms: i64,
    /// Highest seq such that every record 1..=acked_seq is stored.
    pub acked_seq: i64,
    pub prompt_delivered: bool,
    pub exit_status: Option<String>,
    /// Who started it: `person:<id>`, `token:<id>` or `trigger:<slug>`; empty for sessions
    /// from before launchers were recorded.
    pub launched_by: String,
    /// The snapshot its sandbox boots from (`kortix-snap-…`), empty when none was built.
    pub snapshot: String,
    /// When it was last resumed; `None` if never.
    pub resumed_ms: Option<i64>,
    /// How many times it was resumed.
    pub resumes: i64,
}

macro_rules! columns {
    () => {
        "id, project_id, status, template, agent, prompt, origin, idempotency_key, head_sha,
         failure_reason, created_ms, started_ms, ended_ms, last_heartbeat_ms, idle_ms, acked_seq,
         prompt_delivered, exit_status, launched_by, snapshot, resumed_ms, resumes"
    };
}

/// What a caller supplies to start a session; the rest starts empty.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    /// `None` generates one (`store::new_id`).
    pub id: Option<String>,
    pub project_id: String,
    pub template: String,
    pub agent: String,
    pub prompt: String,
    pub origin: String,
    /// Empty for none; otherwise a retry with the same key returns the first session.
    pub idempotency_key: String,
    /// `person:<id>`, `token:<id>` or `trigger:<slug>`.
    pub launched_by: String,
}

fn check_len(what: &'static str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::Invalid {
            what,
            reason: format!("{} bytes, at most {max} allowed", value.len()),
        });
    }
    Ok(())
}

impl Store {
    /// Inserts a `provisioning` session. With a non-empty idempotency key that the project
    /// already used, returns that earlier session and `false` instead.
    pub async fn create_session(&self, new: &NewSession) -> Result<(Session, bool)> {
        check_len("prompt", &new.prompt, MAX_PROMPT_BYTES)?;
        check_len("template", &new.template, MAX_SHORT_FIELD)?;
        check_len("agent", &new.agent, MAX_SHORT_FIELD)?;
        check_len("origin", &new.origin, MAX_SHORT_FIELD)?;
        check_len("idempotency key", &new.idempotency_key, MAX_SHORT_FIELD)?;
        check_len("launcher", &new.launched_by, MAX_SHORT_FIELD)?;
        let id = new.id.clone().unwrap_or_else(new_id);
        check_len("session id", &id, MAX_SHORT_FIELD)?;
        let now = now_ms();
        let inserted = with_pool!(self, |pool| {
            sqlx::query_as::<_, Session>(concat!(
                "INSERT INTO sessions (id, project_id, status, template, agent, prompt, origin,
                                       idempotency_key, created_ms, launched_by)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
                 WHERE EXISTS (SELECT 1 FROM projects WHERE id = $2)
                 ON CONFLICT DO NOTHING RETURNING ",
                columns!()
            ))
            .bind(&id)
            .bind(&new.project_id)
            .bind(SessionStatus::Provisioning.as_str())
            .bind(&new.template)
            .bind(&new.agent)
            .bind(&new.prompt)
            .bind(&new.origin)
            .bind(&new.idempotency_key)
            .bind(now)
            .bind(&new.launched_by)
            .fetch_optional(pool)
            .await
        });
        let inserted = match inserted {
            Ok(row) => row,
            Err(e) if is_unique_violation(&e) => None,
            Err(e) => return Err(e).ctx(|| format!("creating session {id}")),
        };
        if let Some(session) = inserted {
            return Ok((session, true));
        }
        if !new.idempotency_key.is_empty()
            && let Some(existing) = self
                .session_by_idempotency_key(&new.project_id, &new.idempotency_key)
                .await?
        {
            return Ok((existing, false));
        }
        // Nothing inserted and no idempotent match: the project is gone or the id is taken.
        self.find_project(&new.project_id).await?;
        Err(Error::AlreadyExists(format!("session {id}")))
    }

    async fn session_by_idempotency_key(
        &self,
        project_id: &str,
        key: &str,
    ) -> Result<Option<Session>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Session>(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE project_id = $1 AND idempotency_key = $2"
            ))
            .bind(project_id)
            .bind(key)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("looking up idempotency key in project {project_id}"))
    }

    /// Any session by id (agents, sweeps). People's access is checked
    /// on the session's project.
    pub async fn get_session(&self, id: &str) -> Result<Session> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Session>(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading session {id}"))?
        .ok_or_else(|| Error::NotFound(format!("session {id}")))
    }

    /// The project's sessions, newest first.
    pub async fn list_sessions(&self, project_id: &str, limit: u32) -> Result<Vec<Session>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Session>(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE project_id = $1 ORDER BY created_ms DESC, id DESC LIMIT $2"
            ))
            .bind(project_id)
            .bind(clamp_limit(limit, MAX_LIST))
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing sessions of project {project_id}"))
    }

    /// The newest sessions of any of `project_ids`, newest first.
    pub async fn list_sessions_of(
        &self,
        project_ids: &[String],
        limit: u32,
    ) -> Result<Vec<Session>> {
        if project_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE project_id IN ({}) ORDER BY created_ms DESC, id DESC LIMIT {}"
            ),
            super::placeholders(1, project_ids.len()),
            clamp_limit(limit, MAX_LIST)
        );
        with_pool!(self, |pool| {
            let mut q = sqlx::query_as::<_, Session>(sqlx::AssertSqlSafe(sql.as_str()));
            for id in project_ids {
                q = q.bind(id);
            }
            q.fetch_all(pool).await
        })
        .ctx(|| format!("listing sessions of {} projects", project_ids.len()))
    }

    /// Sessions in any of `statuses`, oldest first.
    pub async fn list_sessions_in_status(
        &self,
        statuses: &[SessionStatus],
        after: Option<&Session>,
        limit: u32,
    ) -> Result<Vec<Session>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {} FROM sessions WHERE status IN ({}) AND (created_ms, id) > ($2, $3)
             ORDER BY created_ms, id LIMIT $1",
            columns!(),
            placeholders(4, statuses.len())
        );
        let (after_ms, after_id) = cursor(after);
        with_pool!(self, |pool| {
            let mut q = sqlx::query_as::<_, Session>(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(clamp_limit(limit, MAX_LIST))
                .bind(after_ms)
                .bind(after_id);
            for s in statuses {
                q = q.bind(s.as_str());
            }
            q.fetch_all(pool).await
        })
        .ctx(|| "listing sessions by status".to_string())
    }

    /// How many sessions are in each status (statuses with none are absent).
    pub async fn count_sessions_by_status(&self) -> Result<Vec<(String, i64)>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT status, COUNT(*) FROM sessions GROUP BY status",
            )
            .fetch_all(pool)
            .await
        })
        .ctx(|| "counting sessions by status".to_string())
    }

    /// `provisioning` sessions created (`resuming` ones resumed) before `created_before_ms`
    /// (never came up). A session
    /// waiting for its snapshot's build is not stale, nor is one whose snapshot was built
    /// after `created_before_ms`: its time to come up counts from the build's end.
    pub async fn stale_provisioning_sessions(
        &self,
        created_before_ms: i64,
        after: Option<&Session>,
        limit: u32,
    ) -> Result<Vec<Session>> {
        let (after_ms, after_id) = cursor(after);
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Session>(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE status IN ('provisioning', 'resuming')
                    AND COALESCE(resumed_ms, created_ms) < $1
                    AND (created_ms, id) > ($3, $4)
                    AND NOT EXISTS (SELECT 1 FROM snapshots sn
                                     WHERE sn.project_id = sessions.project_id
                                       AND sn.name = sessions.snapshot
                                       AND (sn.status IN ('pending', 'building')
                                            OR sn.built_ms >= $1))
                  ORDER BY created_ms, id LIMIT $2"
            ))
            .bind(created_before_ms)
            .bind(clamp_limit(limit, MAX_LIST))
            .bind(after_ms)
            .bind(after_id)
            .fetch_all(pool)
            .await
        })
        .ctx(|| "listing stale provisioning sessions".to_string())
    }

    /// `running` sessions whose last sign of life (heartbeat, else start) is older than
    /// `heartbeat_before_ms`.
    pub async fn stale_running_sessions(
        &self,
        heartbeat_before_ms: i64,
        after: Option<&Session>,
        limit: u32,
    ) -> Result<Vec<Session>> {
        let (after_ms, after_id) = cursor(after);
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Session>(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE status = 'running'
                    AND COALESCE(last_heartbeat_ms, started_ms, created_ms) < $1
                    AND (created_ms, id) > ($3, $4)
                  ORDER BY created_ms, id LIMIT $2"
            ))
            .bind(heartbeat_before_ms)
            .bind(clamp_limit(limit, MAX_LIST))
            .bind(after_ms)
            .bind(after_id)
            .fetch_all(pool)
            .await
        })
        .ctx(|| "listing sessions with stale heartbeats".to_string())
    }

    /// `running` sessions whose agent last reported at least `min_idle_ms` of idleness.
    pub async fn idle_running_sessions(
        &self,
        min_idle_ms: i64,
        after: Option<&Session>,
        limit: u32,
    ) -> Result<Vec<Session>> {
        let (after_ms, after_id) = cursor(after);
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Session>(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE status = 'running' AND idle_ms >= $1
                    AND (created_ms, id) > ($3, $4)
                  ORDER BY created_ms, id LIMIT $2"
            ))
            .bind(min_idle_ms)
            .bind(clamp_limit(limit, MAX_LIST))
            .bind(after_ms)
            .bind(after_id)
            .fetch_all(pool)
            .await
        })
        .ctx(|| "listing idle sessions".to_string())
    }

    /// Moves the session to `to` only if it is currently in one of `from`; returns whether
    /// it moved. Entering `running` stamps `started_ms` (once); entering a terminal state
    /// stamps `ended_ms`; a `reason` is stored as the failure reason.
    pub async fn transition_session(
        &self,
        id: &str,
        from: &[SessionStatus],
        to: SessionStatus,
        reason: Option<&str>,
    ) -> Result<bool> {
        if from.is_empty() {
            return Ok(false);
        }
        let reason = reason.map(|r| truncate_utf8(r, MAX_REASON_BYTES));
        let now = now_ms();
        let sql = format!(
            "UPDATE sessions SET status = $1,
                 started_ms = CASE WHEN $1 = 'running' THEN COALESCE(started_ms, $2) ELSE started_ms END,
                 ended_ms = CASE WHEN $3 THEN $2 ELSE ended_ms END,
                 failure_reason = COALESCE($4, failure_reason)
             WHERE id = $5 AND status IN ({})",
            placeholders(6, from.len())
        );
        let moved = with_pool!(self, |pool| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(to.as_str())
                .bind(now)
                .bind(to.is_terminal())
                .bind(reason)
                .bind(id);
            for s in from {
                q = q.bind(s.as_str());
            }
            q.execute(pool).await.map(|r| r.rows_affected())
        })
        .ctx(|| format!("moving session {id} to {to}"));
        if !matches!(moved, Ok(0)) {
            self.agents_changed(AgentChange::Session(id.to_owned()))
                .await;
        }
        Ok(moved? == 1)
    }

    /// Records a heartbeat from a live (`provisioning`, `running` or `stopping`) session; false
    /// if it has ended or is unknown.
    pub async fn record_heartbeat(&self, id: &str, idle_ms: i64, now_ms: i64) -> Result<bool> {
        Ok(self
            .record_heartbeats(&[(id, idle_ms, now_ms)])
            .await?
            .is_empty())
    }

    /// Stores many sessions' newest heartbeats (`(id, idle_ms, at_ms)`) in one transaction;
    /// sessions that have ended (or unknown ones) are skipped and returned: an agent still
    /// beating for an ended session was not told (its session ended on another replica).
    /// Rows are locked in id order, the order the record group commit locks them in, so the
    /// two never deadlock on PostgreSQL.
    pub async fn record_heartbeats(&self, beats: &[(&str, i64, i64)]) -> Result<Vec<String>> {
        let mut sorted: Vec<&(&str, i64, i64)> = beats.iter().collect();
        sorted.sort_by_key(|b| b.0);
        let stored: std::result::Result<HashSet<String>, sqlx::Error> = match self.backend() {
            // One statement: a statement per session held every row it had locked until the
            // last one was done, and record group commits waited on them.
            Backend::Postgres(pool) => {
                let (ids, idle, at): (Vec<&str>, Vec<i64>, Vec<i64>) = sorted
                    .iter()
                    .map(|&&(id, idle_ms, at_ms)| (id, idle_ms.max(0), at_ms))
                    .collect();
                sqlx::query_scalar::<_, String>(
                    "WITH beat AS (
                         SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[])
                             AS b(id, idle_ms, at_ms)
                     ), locked AS (
                         SELECT s.id FROM sessions s JOIN beat b ON b.id = s.id
                         WHERE s.status IN ('provisioning', 'resuming', 'running', 'stopping')
                         ORDER BY s.id FOR UPDATE OF s
                     )
                     UPDATE sessions s SET last_heartbeat_ms = b.at_ms, idle_ms = b.idle_ms
                     FROM beat b
                     WHERE s.id = b.id AND s.id IN (SELECT id FROM locked)
                     RETURNING s.id",
                )
                .bind(&ids)
                .bind(&idle)
                .bind(&at)
                .fetch_all(pool)
                .await
                .map(|ids| ids.into_iter().collect())
            }
            // One writer at a time anyway, and each statement is a function call.
            Backend::Sqlite(pool, _) => {
                async {
                    let mut tx = pool.begin_write().await?;
                    let mut stored = HashSet::new();
                    for &&(id, idle_ms, at_ms) in &sorted {
                        let moved = sqlx::query(
                            "UPDATE sessions SET last_heartbeat_ms = $1, idle_ms = $2
                             WHERE id = $3
                               AND status IN ('provisioning', 'resuming', 'running', 'stopping')",
                        )
                        .bind(at_ms)
                        .bind(idle_ms.max(0))
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if moved > 0 {
                            stored.insert(id.to_string());
                        }
                    }
                    tx.commit().await?;
                    Ok(stored)
                }
                .await
            }
        };
        let stored = stored.ctx(|| format!("recording heartbeats of {} sessions", beats.len()))?;
        Ok(sorted
            .iter()
            .filter(|b| !stored.contains(b.0))
            .map(|b| b.0.to_string())
            .collect())
    }

    /// Remembers the head commit of the session's branch.
    pub async fn set_session_head(&self, id: &str, head_sha: &str) -> Result<()> {
        check_len("head sha", head_sha, 128)?;
        self.update_one(
            id,
            "UPDATE sessions SET head_sha = $1 WHERE id = $2",
            head_sha,
            "setting the head",
        )
        .await
    }

    /// Stores how the agent (or its sandbox) exited.
    pub async fn set_session_exit_status(&self, id: &str, exit_status: &str) -> Result<()> {
        let exit_status = truncate_utf8(exit_status, MAX_REASON_BYTES);
        self.update_one(
            id,
            "UPDATE sessions SET exit_status = $1 WHERE id = $2",
            exit_status,
            "setting the exit status",
        )
        .await
    }

    async fn update_one(
        &self,
        id: &str,
        sql: &'static str,
        value: &str,
        doing: &str,
    ) -> Result<()> {
        let n = with_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(value)
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .ctx(|| format!("{doing} of session {id}"))?;
        if n == 0 {
            return Err(Error::NotFound(format!("session {id}")));
        }
        Ok(())
    }

    /// Marks the initial prompt as delivered. Returns true only for the one caller that
    /// flipped it, so the prompt is sent once even across reconnects and replicas.
    pub async fn mark_prompt_delivered(&self, id: &str) -> Result<bool> {
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE sessions SET prompt_delivered = TRUE
                 WHERE id = $1 AND prompt_delivered = FALSE",
            )
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("marking the prompt of session {id} delivered"))?;
        Ok(n == 1)
    }

    /// Deletes a finished session and its records and credentials (the branch lives in git
    /// and is kept). A live session is refused with [`Error::Invalid`].
    pub async fn delete_session(&self, id: &str) -> Result<Session> {
        let deleted = with_pool!(self, |pool| {
            sqlx::query_as::<_, Session>(concat!(
                "DELETE FROM sessions WHERE id = $1
                   AND status IN ('stopped', 'hibernated', 'failed') RETURNING ",
                columns!()
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("deleting session {id}"));
        if !matches!(deleted, Ok(None)) {
            self.agents_changed(AgentChange::Session(id.to_owned()))
                .await;
            self.agents_changed(AgentChange::SessionCerts(id.to_owned()))
                .await;
        }
        match deleted? {
            Some(s) => Ok(s),
            None => {
                let s = self.get_session(id).await?;
                Err(Error::Invalid {
                    what: "session state",
                    reason: format!("session {id} is {}; stop it before deleting it", s.status),
                })
            }
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
