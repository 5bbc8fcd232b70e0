//! Trigger firings. Whoever inserts the (project, slug, firing key) row first owns the
//! firing: replicas race on the insert, never on a read-then-write.

use super::{DbContext, Error, Result, Store, clamp_limit, new_id, with_pool};

const MAX_LIST: u32 = 500;
const MAX_ERROR_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FiringOutcome {
    /// Claimed; the session is being started.
    Pending,
    Started,
    Failed,
}

impl FiringOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            FiringOutcome::Pending => "pending",
            FiringOutcome::Started => "started",
            FiringOutcome::Failed => "failed",
        }
    }
}

impl std::fmt::Display for FiringOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown firing outcome {0:?}")]
pub struct UnknownOutcome(String);

impl TryFrom<String> for FiringOutcome {
    type Error = UnknownOutcome;
    fn try_from(s: String) -> std::result::Result<Self, UnknownOutcome> {
        match s.as_str() {
            "pending" => Ok(FiringOutcome::Pending),
            "started" => Ok(FiringOutcome::Started),
            "failed" => Ok(FiringOutcome::Failed),
            _ => Err(UnknownOutcome(s)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Firing {
    pub id: String,
    pub project_id: String,
    pub trigger_slug: String,
    /// "cron:<scheduled-unix-s>", "delivery:<id>", "manual:<uuid>".
    pub firing_key: String,
    pub fired_ms: i64,
    pub scheduled_ms: Option<i64>,
    #[sqlx(try_from = "String")]
    pub outcome: FiringOutcome,
    pub session_id: Option<String>,
    pub error: Option<String>,
    pub catch_up: bool,
}

macro_rules! columns {
    () => {
        "id, project_id, trigger_slug, firing_key, fired_ms, scheduled_ms, outcome, session_id,
         error, catch_up"
    };
}

#[derive(Debug, Clone, Default)]
pub struct NewFiring {
    pub project_id: String,
    pub trigger_slug: String,
    pub firing_key: String,
    pub fired_ms: i64,
    pub scheduled_ms: Option<i64>,
    pub catch_up: bool,
}

/// Result of [`Store::claim_firing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller owns the firing (id of the new `pending` row) and must complete it.
    Claimed(String),
    /// Someone already claimed this key; here is their row.
    AlreadyClaimed(Firing),
}

impl Store {
    /// Claims a firing exactly once across all replicas: the first insert of the
    /// (project, slug, key) triple wins, everyone else gets the existing row.
    pub async fn claim_firing(&self, new: &NewFiring) -> Result<Claim> {
        if new.firing_key.is_empty() || new.firing_key.len() > 512 || new.trigger_slug.is_empty() {
            return Err(Error::Invalid {
                what: "firing",
                reason: "slug and key are required; keys are at most 512 bytes".to_string(),
            });
        }
        let id = new_id();
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO trigger_firings (id, project_id, trigger_slug, firing_key, fired_ms,
                     scheduled_ms, outcome, catch_up)
                 SELECT $1, $2, $3, $4, $5, $6, 'pending', $7
                 WHERE EXISTS (SELECT 1 FROM projects WHERE id = $2)
                 ON CONFLICT (project_id, trigger_slug, firing_key) DO NOTHING",
            )
            .bind(&id)
            .bind(&new.project_id)
            .bind(&new.trigger_slug)
            .bind(&new.firing_key)
            .bind(new.fired_ms)
            .bind(new.scheduled_ms)
            .bind(new.catch_up)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| {
            format!(
                "claiming firing {} of trigger {}",
                new.firing_key, new.trigger_slug
            )
        })?;
        if inserted == 1 {
            return Ok(Claim::Claimed(id));
        }
        let existing = with_pool!(self, |pool| {
            sqlx::query_as::<_, Firing>(concat!(
                "SELECT ",
                columns!(),
                " FROM trigger_firings
                  WHERE project_id = $1 AND trigger_slug = $2 AND firing_key = $3"
            ))
            .bind(&new.project_id)
            .bind(&new.trigger_slug)
            .bind(&new.firing_key)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading firing {}", new.firing_key))?;
        match existing {
            Some(f) => Ok(Claim::AlreadyClaimed(f)),
            None => Err(Error::NotFound(format!("project {}", new.project_id))),
        }
    }

    /// Renames the key of firing `id` from `key` to `retired_key`, if it still has `key`,
    /// so that `key` can be claimed again (a replay window has passed). Returns whether this
    /// call renamed it: of replicas racing to reuse a key, exactly one does, and all of them
    /// then race on the claim as usual.
    pub async fn retire_firing_key(&self, id: &str, key: &str, retired_key: &str) -> Result<bool> {
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE trigger_firings SET firing_key = $1 WHERE id = $2 AND firing_key = $3",
            )
            .bind(retired_key)
            .bind(id)
            .bind(key)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("retiring firing key {key}"))?;
        Ok(n == 1)
    }

    /// Records how a claimed firing ended. Only a `pending` firing changes; returns whether
    /// this call completed it.
    pub async fn complete_firing(
        &self,
        id: &str,
        outcome: FiringOutcome,
        session_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<bool> {
        let error = error.map(|e| super::sessions::truncate_utf8(e, MAX_ERROR_BYTES));
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE trigger_firings SET outcome = $1, session_id = $2, error = $3
                 WHERE id = $4 AND outcome = 'pending'",
            )
            .bind(outcome.as_str())
            .bind(session_id)
            .bind(error)
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("completing firing {id}"))?;
        Ok(n == 1)
    }

    pub async fn get_firing(&self, id: &str) -> Result<Firing> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Firing>(concat!(
                "SELECT ",
                columns!(),
                " FROM trigger_firings WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading firing {id}"))?
        .ok_or_else(|| Error::NotFound(format!("firing {id}")))
    }

    /// The most recent firing of the trigger, by fire time.
    pub async fn last_firing(
        &self,
        project_id: &str,
        trigger_slug: &str,
    ) -> Result<Option<Firing>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Firing>(concat!(
                "SELECT ",
                columns!(),
                " FROM trigger_firings WHERE project_id = $1 AND trigger_slug = $2
                  ORDER BY fired_ms DESC, id DESC LIMIT 1"
            ))
            .bind(project_id)
            .bind(trigger_slug)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading the last firing of trigger {trigger_slug}"))
    }

    /// Recent firings of the project (of one trigger when `trigger_slug` is given), newest
    /// first.
    pub async fn list_firings(
        &self,
        project_id: &str,
        trigger_slug: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Firing>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Firing>(concat!(
                "SELECT ",
                columns!(),
                " FROM trigger_firings WHERE project_id = $1 AND ($2 IS NULL OR trigger_slug = $2)
                  ORDER BY fired_ms DESC, id DESC LIMIT $3"
            ))
            .bind(project_id)
            .bind(trigger_slug)
            .bind(clamp_limit(limit, MAX_LIST))
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing firings of project {project_id}"))
    }

    /// Firings still `pending` that were fired before `fired_before_ms`: their claimer died
    /// before completing them.
    pub async fn stale_pending_firings(
        &self,
        fired_before_ms: i64,
        limit: u32,
    ) -> Result<Vec<Firing>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Firing>(concat!(
                "SELECT ",
                columns!(),
                " FROM trigger_firings WHERE outcome = 'pending' AND fired_ms < $1
                  ORDER BY fired_ms, id LIMIT $2"
            ))
            .bind(fired_before_ms)
            .bind(clamp_limit(limit, MAX_LIST))
            .fetch_all(pool)
            .await
        })
        .ctx(|| "listing stale pending firings".to_string())
    }
}
