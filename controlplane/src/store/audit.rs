//! The audit log: appended once per privileged action, read newest first per account. The
//! store offers no update or delete of an event.

use super::sessions::truncate_utf8;
use super::{DbContext, Result, Store, clamp_limit, with_pool};

/// Events returned per page at most.
const MAX_LIST: u32 = 1000;
/// Longest stored detail; longer ones are cut on a character boundary.
const MAX_DETAIL: usize = 2048;
/// Longest stored target, actor, token id, address and action.
const MAX_FIELD: usize = 512;

/// One event as it is written.
#[derive(Debug, Clone, Default)]
pub struct NewAuditEvent<'a> {
    pub at_ms: i64,
    pub account_id: &'a str,
    pub project_id: &'a str,
    pub project_name: &'a str,
    /// `person:<id>` or `trigger:<slug>`.
    pub actor: &'a str,
    /// The actor's name; for a person the store looks it up when this is empty.
    pub actor_name: &'a str,
    pub token_id: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub detail: &'a str,
    pub from_addr: &'a str,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEvent {
    pub id: i64,
    pub at_ms: i64,
    pub account_id: String,
    pub project_id: String,
    pub project_name: String,
    pub actor: String,
    pub actor_name: String,
    pub token_id: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub from_addr: String,
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery<'a> {
    pub account_id: &'a str,
    /// Only this project's events.
    pub project_id: Option<&'a str>,
    /// Only events older than this id (the previous page's last).
    pub before_id: Option<i64>,
    pub limit: u32,
}

impl Store {
    /// Appends one event. A person's name is copied in (the log outlives renames and
    /// deletions); an unknown person keeps their id as the name.
    pub async fn append_audit(&self, e: &NewAuditEvent<'_>) -> Result<i64> {
        let field = |s| truncate_utf8(s, MAX_FIELD);
        let person = e.actor.strip_prefix("person:").unwrap_or("");
        let id: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "INSERT INTO audit_events (at_ms, account_id, project_id, project_name, actor,
                                           actor_name, token_id, action, target, detail,
                                           from_addr)
                 VALUES ($1, $2, $3, $4, $5,
                         CASE WHEN $6 <> '' THEN $6
                              ELSE COALESCE((SELECT name FROM people WHERE id = $7), $5) END,
                         $8, $9, $10, $11, $12)
                 RETURNING id",
            )
            .bind(e.at_ms)
            .bind(field(e.account_id))
            .bind(field(e.project_id))
            .bind(field(e.project_name))
            .bind(field(e.actor))
            .bind(field(e.actor_name))
            .bind(person)
            .bind(field(e.token_id))
            .bind(field(e.action))
            .bind(field(e.target))
            .bind(truncate_utf8(e.detail, MAX_DETAIL))
            .bind(field(e.from_addr))
            .fetch_one(pool)
            .await
        })
        .ctx(|| format!("appending audit event {}", e.action))?;
        Ok(id)
    }

    /// An account's events, newest first.
    pub async fn list_audit(&self, q: &AuditQuery<'_>) -> Result<Vec<AuditEvent>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, AuditEvent>(
                "SELECT id, at_ms, account_id, project_id, project_name, actor, actor_name,
                        token_id, action, target, detail, from_addr
                 FROM audit_events
                 WHERE account_id = $1
                   AND ($2 = '' OR project_id = $2)
                   AND id < $3
                 ORDER BY id DESC LIMIT $4",
            )
            .bind(q.account_id)
            .bind(q.project_id.unwrap_or(""))
            .bind(q.before_id.unwrap_or(i64::MAX))
            .bind(clamp_limit(q.limit, MAX_LIST))
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing the audit log of account {}", q.account_id))
    }
}
