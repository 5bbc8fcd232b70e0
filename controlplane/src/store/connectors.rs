//! Connector credentials (sealed; the store sees nonce and ciphertext only), approvals and
//! the log of connector calls.

use super::sessions::truncate_utf8;
use super::{BeginWrite, DbContext, Error, Result, Store, clamp_limit, with_pool};

/// Calls returned per list at most.
const MAX_CALLS: u32 = 1000;
/// Approvals returned per list at most.
const MAX_APPROVALS: u32 = 1000;
/// Longest stored argument preview and error text.
const MAX_TEXT: usize = 2048;

/// A sealed connector credential.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CredentialRow {
    pub connector: String,
    pub person_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub updated_ms: i64,
}

impl std::fmt::Debug for CredentialRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRow")
            .field("connector", &self.connector)
            .field("person_id", &self.person_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// An approval a connector call waits for.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Approval {
    pub id: String,
    pub project_id: String,
    pub session_id: String,
    pub connector: String,
    pub tool: String,
    pub digest: String,
    pub state: String,
    pub reason: String,
    pub args_preview: String,
    pub requested_ms: i64,
    pub decided_ms: i64,
    pub decided_by: String,
    pub expires_ms: i64,
}

/// One logged connector call. As JSON it is a line of the call log's journal, without the
/// `id` the store assigns.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize,
)]
pub struct ConnectorCallRow {
    #[serde(skip)]
    pub id: i64,
    /// Unique per call (empty: none); a row stored twice under one id is stored once.
    #[sqlx(default)]
    pub call_id: String,
    pub at_ms: i64,
    pub project_id: String,
    pub session_id: String,
    pub connector: String,
    pub tool: String,
    pub digest: String,
    pub status: String,
    pub duration_ms: i64,
    pub upstream_status: i64,
    pub args_preview: String,
    pub error: String,
}

macro_rules! approval_columns {
    () => {
        "id, project_id, session_id, connector, tool, digest, state, reason, args_preview, \
         requested_ms, decided_ms, decided_by, expires_ms"
    };
}

impl Store {
    /// Stores (or replaces) a sealed credential; `person_id` empty is the shared one.
    pub async fn put_connector_credential(
        &self,
        project_id: &str,
        connector: &str,
        person_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
        at_ms: i64,
    ) -> Result<()> {
        let stored = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO connector_credentials
                     (project_id, connector, person_id, nonce, ciphertext, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (project_id, connector, person_id)
                 DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext,
                               updated_ms = excluded.updated_ms",
            )
            .bind(project_id)
            .bind(connector)
            .bind(person_id)
            .bind(nonce)
            .bind(ciphertext)
            .bind(at_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("storing the credential of connector {connector}"));
        self.agents_changed(super::AgentChange::Credentials(project_id.to_owned()))
            .await;
        stored.map(|_| ())
    }

    /// The sealed credential, if one is set: from this replica's
    /// [`AgentCache`](super::AgentCache) once read (set or not).
    pub async fn connector_credential(
        &self,
        project_id: &str,
        connector: &str,
        person_id: &str,
    ) -> Result<Option<CredentialRow>> {
        if let Some(known) = self.agents.credential(project_id, connector, person_id) {
            return Ok(known);
        }
        let generation = self.agents.generation();
        let row = with_pool!(self, |pool| {
            sqlx::query_as::<_, CredentialRow>(
                "SELECT connector, person_id, nonce, ciphertext, updated_ms
                 FROM connector_credentials
                 WHERE project_id = $1 AND connector = $2 AND person_id = $3",
            )
            .bind(project_id)
            .bind(connector)
            .bind(person_id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading the credential of connector {connector}"))?;
        self.agents
            .insert_credential(generation, project_id, connector, person_id, row.clone());
        Ok(row)
    }

    /// Which (connector, person) pairs of the project have a credential; values stay out.
    pub async fn connector_credentials_set(
        &self,
        project_id: &str,
    ) -> Result<Vec<(String, String)>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, (String, String)>(
                "SELECT connector, person_id FROM connector_credentials WHERE project_id = $1",
            )
            .bind(project_id)
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing the connector credentials of project {project_id}"))
    }

    pub async fn insert_approval(&self, a: &Approval) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO connector_approvals
                     (id, project_id, session_id, connector, tool, digest, state, reason,
                      args_preview, requested_ms, decided_ms, decided_by, expires_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(&a.id)
            .bind(&a.project_id)
            .bind(&a.session_id)
            .bind(&a.connector)
            .bind(&a.tool)
            .bind(&a.digest)
            .bind(&a.state)
            .bind(truncate_utf8(&a.reason, MAX_TEXT))
            .bind(truncate_utf8(&a.args_preview, MAX_TEXT))
            .bind(a.requested_ms)
            .bind(a.decided_ms)
            .bind(&a.decided_by)
            .bind(a.expires_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("storing approval {}", a.id))?;
        Ok(())
    }

    pub async fn get_approval(&self, id: &str) -> Result<Approval> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as::<_, Approval>(concat!(
                "SELECT ",
                approval_columns!(),
                " FROM connector_approvals WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading approval {id}"))?;
        row.ok_or_else(|| Error::NotFound(format!("approval {id}")))
    }

    /// The newest approval of a session for exactly this call (digest), if any.
    pub async fn latest_approval(
        &self,
        session_id: &str,
        digest: &str,
    ) -> Result<Option<Approval>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Approval>(concat!(
                "SELECT ",
                approval_columns!(),
                " FROM connector_approvals WHERE session_id = $1 AND digest = $2
                  ORDER BY requested_ms DESC, id DESC LIMIT 1"
            ))
            .bind(session_id)
            .bind(digest)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading the approvals of session {session_id}"))
    }

    /// A project's approvals, newest first, optionally in one state.
    pub async fn list_approvals(&self, project_id: &str, state: &str) -> Result<Vec<Approval>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Approval>(concat!(
                "SELECT ",
                approval_columns!(),
                " FROM connector_approvals WHERE project_id = $1 AND ($2 = '' OR state = $2)
                  ORDER BY requested_ms DESC, id DESC LIMIT $3"
            ))
            .bind(project_id)
            .bind(state)
            .bind(clamp_limit(0, MAX_APPROVALS))
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing the approvals of project {project_id}"))
    }

    /// Moves an approval from `from` to `to` only if it is still in `from`: of two people
    /// deciding at once, or two identical calls consuming one approval, exactly one wins.
    pub async fn transition_approval(
        &self,
        id: &str,
        from: &str,
        to: &str,
        reason: &str,
        decided_by: &str,
        at_ms: i64,
    ) -> Result<bool> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE connector_approvals
                 SET state = $3,
                     reason = CASE WHEN $4 <> '' THEN $4 ELSE reason END,
                     decided_by = CASE WHEN $5 <> '' THEN $5 ELSE decided_by END,
                     decided_ms = CASE WHEN $5 <> '' THEN $6 ELSE decided_ms END
                 WHERE id = $1 AND state = $2",
            )
            .bind(id)
            .bind(from)
            .bind(to)
            .bind(truncate_utf8(reason, MAX_TEXT))
            .bind(decided_by)
            .bind(at_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("moving approval {id} from {from} to {to}"))?;
        Ok(done == 1)
    }

    /// Denies pending approvals whose time ran out; returns them as they are now.
    pub async fn expire_approvals(&self, now_ms: i64) -> Result<Vec<Approval>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Approval>(concat!(
                "UPDATE connector_approvals
                 SET state = 'denied', reason = 'expired: nobody decided in time',
                     decided_by = 'expiry', decided_ms = $1
                 WHERE state = 'pending' AND expires_ms > 0 AND expires_ms <= $1
                 RETURNING ",
                approval_columns!()
            ))
            .bind(now_ms)
            .fetch_all(pool)
            .await
        })
        .ctx(|| "expiring connector approvals".to_string())
    }

    /// Logs calls in one transaction: the call log's writer commits a batch at once.
    pub async fn append_connector_calls(&self, rows: &[ConnectorCallRow]) -> Result<()> {
        with_pool!(self, |pool| {
            async {
                let mut tx = pool.begin_write().await?;
                for c in rows {
                    sqlx::query(
                        "INSERT INTO connector_calls
                             (at_ms, project_id, session_id, connector, tool, digest, status,
                              duration_ms, upstream_status, args_preview, error, call_id)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULLIF($12, ''))
                         ON CONFLICT (call_id) DO NOTHING",
                    )
                    .bind(c.at_ms)
                    .bind(&c.project_id)
                    .bind(&c.session_id)
                    .bind(&c.connector)
                    .bind(&c.tool)
                    .bind(&c.digest)
                    .bind(&c.status)
                    .bind(c.duration_ms)
                    .bind(c.upstream_status)
                    .bind(truncate_utf8(&c.args_preview, MAX_TEXT))
                    .bind(truncate_utf8(&c.error, MAX_TEXT))
                    .bind(&c.call_id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await
            }
            .await
        })
        .ctx(|| format!("logging {} connector calls", rows.len()))
    }

    /// A project's calls, newest first, optionally of one session.
    pub async fn list_connector_calls(
        &self,
        project_id: &str,
        session_id: &str,
        limit: u32,
    ) -> Result<Vec<ConnectorCallRow>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, ConnectorCallRow>(
                "SELECT id, at_ms, project_id, session_id, connector, tool, digest, status,
                        duration_ms, upstream_status, args_preview, error
                 FROM connector_calls
                 WHERE project_id = $1 AND ($2 = '' OR session_id = $2)
                 ORDER BY id DESC LIMIT $3",
            )
            .bind(project_id)
            .bind(session_id)
            .bind(clamp_limit(limit, MAX_CALLS))
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing the connector calls of project {project_id}"))
    }

    /// The person a token belongs to (for sessions launched by a narrowed token).
    pub async fn token_person(&self, token_id: &str) -> Result<Option<String>> {
        with_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>("SELECT person_id FROM api_tokens WHERE id = $1")
                .bind(token_id)
                .fetch_optional(pool)
                .await
        })
        .ctx(|| format!("reading token {token_id}"))
    }
}
