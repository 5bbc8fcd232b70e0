//! Credentials handed to a session's agent: the one-time bootstrap token it enrolls with,
//! the client certificates it was issued, and the short-lived git tokens it pushes with.
//! Tokens are stored as hashes only.

use super::{AgentChange, DbContext, Error, Result, Store, with_pool};
use crate::clock::now_ms;

/// Why a bootstrap token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapRejection {
    #[error("unknown token")]
    Unknown,
    #[error("token already used")]
    Used,
    #[error("token expired")]
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IssuedCert {
    pub serial: String,
    pub session_id: String,
    pub created_ms: i64,
    pub not_after_ms: i64,
    pub revoked_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GitToken {
    pub session_id: String,
    pub project_id: String,
    pub branch: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

#[derive(sqlx::FromRow)]
struct BootstrapState {
    used_ms: Option<i64>,
    expires_ms: i64,
}

impl Store {
    /// Stores a bootstrap token (by hash) for the session, valid until `expires_ms`.
    pub async fn create_bootstrap_token(
        &self,
        token_hash: &str,
        session_id: &str,
        expires_ms: i64,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO bootstrap_tokens (token_hash, session_id, created_ms, expires_ms)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(token_hash)
            .bind(session_id)
            .bind(now_ms())
            .bind(expires_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("storing a bootstrap token for session {session_id}"))?;
        Ok(())
    }

    /// Uses up a bootstrap token and returns its session. Exactly one caller can succeed;
    /// the others get [`Error::BootstrapToken`] saying whether it was unknown, used or
    /// expired.
    pub async fn consume_bootstrap_token(&self, token_hash: &str, now_ms: i64) -> Result<String> {
        let consumed = with_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>(
                "UPDATE bootstrap_tokens SET used_ms = $2
                 WHERE token_hash = $1 AND used_ms IS NULL AND expires_ms > $2
                 RETURNING session_id",
            )
            .bind(token_hash)
            .bind(now_ms)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| "consuming a bootstrap token".to_string())?;
        if let Some(session_id) = consumed {
            return Ok(session_id);
        }
        let state = with_pool!(self, |pool| {
            sqlx::query_as::<_, BootstrapState>(
                "SELECT used_ms, expires_ms FROM bootstrap_tokens WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| "reading a bootstrap token".to_string())?;
        Err(Error::BootstrapToken(match state {
            None => BootstrapRejection::Unknown,
            Some(s) if s.used_ms.is_some() => BootstrapRejection::Used,
            Some(s) if s.expires_ms <= now_ms => BootstrapRejection::Expired,
            // Consumed by someone else between our two statements.
            Some(_) => BootstrapRejection::Used,
        }))
    }

    /// Sets the session's agent renewal secret (by hash), replacing any earlier one: the
    /// secret an Enroll hands out.
    pub async fn set_renewal_secret(&self, session_id: &str, secret_hash: &str) -> Result<()> {
        let now = now_ms();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO agent_renewal_secrets (session_id, secret_hash, created_ms, rotated_ms)
                 VALUES ($1, $2, $3, $3)
                 ON CONFLICT (session_id) DO UPDATE
                 SET secret_hash = excluded.secret_hash, rotated_ms = excluded.rotated_ms,
                     previous_hash = NULL",
            )
            .bind(session_id)
            .bind(secret_hash)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("storing the renewal secret of session {session_id}"))?;
        Ok(())
    }

    /// Whether `secret_hash` is the session's current renewal secret, or the one the last
    /// Reenroll replaced if that was after `previous_since_ms` and the agent has not shown
    /// since that it has the new one ([`Store::confirm_renewal_secret`]).
    pub async fn renewal_secret_matches(
        &self,
        session_id: &str,
        secret_hash: &str,
        previous_since_ms: i64,
    ) -> Result<bool> {
        let found = with_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>(
                "SELECT session_id FROM agent_renewal_secrets
                 WHERE session_id = $1
                   AND (secret_hash = $2 OR (previous_hash = $2 AND rotated_ms > $3))",
            )
            .bind(session_id)
            .bind(secret_hash)
            .bind(previous_since_ms)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("checking the renewal secret of session {session_id}"))?;
        Ok(found.is_some())
    }

    /// Replaces the session's renewal secret with `new_hash`, atomically: exactly one of two
    /// callers presenting the same secret wins. `old_hash` is the current secret, which is
    /// kept as the previous one (the agent may never get the answer that carries the new
    /// one), or the previous one, within `previous_since_ms` as in
    /// [`Store::renewal_secret_matches`] (that answer was lost: the previous one stays). False
    /// (and nothing changed) when `old_hash` is neither.
    pub async fn rotate_renewal_secret(
        &self,
        session_id: &str,
        old_hash: &str,
        new_hash: &str,
        now_ms: i64,
        previous_since_ms: i64,
    ) -> Result<bool> {
        let rotated = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE agent_renewal_secrets
                 SET previous_hash = CASE WHEN secret_hash = $2 THEN secret_hash
                                          ELSE previous_hash END,
                     secret_hash = $3, rotated_ms = $4, reenrolls = reenrolls + 1
                 WHERE session_id = $1
                   AND (secret_hash = $2 OR (previous_hash = $2 AND rotated_ms > $5))",
            )
            .bind(session_id)
            .bind(old_hash)
            .bind(new_hash)
            .bind(now_ms)
            .bind(previous_since_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("rotating the renewal secret of session {session_id}"))?;
        Ok(rotated == 1)
    }

    /// The session's agent has shown it holds what its newest Enroll/Reenroll answered (it
    /// connected with that certificate): the renewal secret replaced before is refused from
    /// now on.
    pub async fn confirm_renewal_secret(&self, session_id: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE agent_renewal_secrets SET previous_hash = NULL
                 WHERE session_id = $1 AND previous_hash IS NOT NULL",
            )
            .bind(session_id)
            .execute(pool)
            .await
            .map(|_| ())
        })
        .ctx(|| format!("retiring the previous renewal secret of session {session_id}"))
    }

    /// Forgets the session's renewal secret (its session ended); returns whether it had one.
    pub async fn delete_renewal_secret(&self, session_id: &str) -> Result<bool> {
        let removed = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM agent_renewal_secrets WHERE session_id = $1")
                .bind(session_id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .ctx(|| format!("deleting the renewal secret of session {session_id}"))?;
        Ok(removed > 0)
    }

    /// Records a client certificate issued to the session's agent.
    pub async fn record_issued_cert(
        &self,
        serial: &str,
        session_id: &str,
        not_after_ms: i64,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO issued_certs (serial, session_id, created_ms, not_after_ms)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(serial)
            .bind(session_id)
            .bind(now_ms())
            .bind(not_after_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("recording certificate {serial} of session {session_id}"))?;
        Ok(())
    }

    pub async fn get_issued_cert(&self, serial: &str) -> Result<IssuedCert> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, IssuedCert>(
                "SELECT serial, session_id, created_ms, not_after_ms, revoked_ms
                 FROM issued_certs WHERE serial = $1",
            )
            .bind(serial)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading certificate {serial}"))?
        .ok_or_else(|| Error::NotFound(format!("certificate {serial}")))
    }

    /// Revokes one certificate; returns whether it was newly revoked.
    pub async fn revoke_cert(&self, serial: &str, now_ms: i64) -> Result<bool> {
        let revoked = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE issued_certs SET revoked_ms = $1 WHERE serial = $2 AND revoked_ms IS NULL",
            )
            .bind(now_ms)
            .bind(serial)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("revoking certificate {serial}"));
        self.agents_changed(AgentChange::Cert(serial.to_owned()))
            .await;
        Ok(revoked? == 1)
    }

    /// Revokes every certificate of the session; returns how many were newly revoked.
    pub async fn revoke_session_certs(&self, session_id: &str, now_ms: i64) -> Result<u64> {
        let revoked = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE issued_certs SET revoked_ms = $1
                 WHERE session_id = $2 AND revoked_ms IS NULL",
            )
            .bind(now_ms)
            .bind(session_id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("revoking certificates of session {session_id}"));
        self.agents_changed(AgentChange::SessionCerts(session_id.to_owned()))
            .await;
        revoked
    }

    /// Whether the certificate must be refused. A serial the store does not know (never
    /// issued here, or its session was deleted) counts as revoked. A live one is answered
    /// from this replica's [`AgentCache`](super::AgentCache) once read.
    pub async fn is_cert_revoked(&self, serial: &str) -> Result<bool> {
        if self.agents.cert_live(serial) {
            return Ok(false);
        }
        let generation = self.agents.generation();
        let row = with_pool!(self, |pool| {
            sqlx::query_as::<_, (Option<i64>, String)>(
                "SELECT revoked_ms, session_id FROM issued_certs WHERE serial = $1",
            )
            .bind(serial)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("checking revocation of certificate {serial}"))?;
        match row {
            Some((None, session_id)) => {
                self.agents
                    .insert_live_cert(generation, serial, &session_id);
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    /// Stores a git token (by hash) that lets the session push its own branch.
    pub async fn create_git_token(
        &self,
        token_hash: &str,
        session_id: &str,
        project_id: &str,
        branch: &str,
        expires_ms: i64,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO git_tokens (token_hash, session_id, project_id, branch, created_ms,
                                         expires_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(token_hash)
            .bind(session_id)
            .bind(project_id)
            .bind(branch)
            .bind(now_ms())
            .bind(expires_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("storing a git token for session {session_id}"))?;
        Ok(())
    }

    /// The git token with this hash; unknown and expired ones are [`Error::NotFound`].
    pub async fn lookup_git_token(&self, token_hash: &str, now_ms: i64) -> Result<GitToken> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, GitToken>(
                "SELECT session_id, project_id, branch, created_ms, expires_ms
                 FROM git_tokens WHERE token_hash = $1 AND expires_ms > $2",
            )
            .bind(token_hash)
            .bind(now_ms)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| "looking up a git token".to_string())?
        .ok_or_else(|| Error::NotFound("git token".to_string()))
    }

    /// Deletes every git token of the session; returns how many there were.
    pub async fn revoke_session_git_tokens(&self, session_id: &str) -> Result<u64> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM git_tokens WHERE session_id = $1")
                .bind(session_id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .ctx(|| format!("revoking git tokens of session {session_id}"))
    }

    /// Deletes credentials that can no longer be used: expired git and bootstrap tokens and
    /// certificates past their expiry. Returns the number of rows removed.
    pub async fn purge_expired_credentials(&self, now_ms: i64) -> Result<u64> {
        let removed = with_pool!(self, |pool| {
            async {
                let mut removed = 0;
                for sql in [
                    "DELETE FROM git_tokens WHERE expires_ms <= $1",
                    "DELETE FROM bootstrap_tokens WHERE expires_ms <= $1",
                    "DELETE FROM issued_certs WHERE not_after_ms <= $1",
                ] {
                    removed += sqlx::query(sql)
                        .bind(now_ms)
                        .execute(pool)
                        .await?
                        .rows_affected();
                }
                Ok::<_, sqlx::Error>(removed)
            }
            .await
        })
        .ctx(|| "purging expired credentials".to_string());
        if !matches!(removed, Ok(0)) {
            // Which certificates went is not known here; expired ones fail TLS anyway.
            self.agents_changed(AgentChange::All).await;
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{TestDb, account_and_project, both_backends, session_in};
    use crate::clock::now_ms;

    both_backends!(a_replaced_renewal_secret_works_until_the_agent_shows_the_new_one);

    /// A Reenroll answer can be lost: the secret it replaced still rotates (within the
    /// window) until the agent connects or re-enrolls with what it was answered; then only
    /// the current one does.
    async fn a_replaced_renewal_secret_works_until_the_agent_shows_the_new_one(db: TestDb) {
        let store = &db.store;
        let (_, project) = account_and_project(store, "web").await;
        let session = session_in(store, &project).await;
        let id = session.id.as_str();
        let since = now_ms() - 60_000;
        store.set_renewal_secret(id, "h1").await.unwrap();
        assert!(store.renewal_secret_matches(id, "h1", since).await.unwrap());
        assert!(!store.renewal_secret_matches(id, "h0", since).await.unwrap());

        // h1 -> h2; the answer with h2 is lost, the agent comes back with h1: h1 -> h3.
        assert!(
            store
                .rotate_renewal_secret(id, "h1", "h2", now_ms(), since)
                .await
                .unwrap()
        );
        assert!(store.renewal_secret_matches(id, "h1", since).await.unwrap());
        assert!(
            !store
                .renewal_secret_matches(id, "h1", now_ms() + 1)
                .await
                .unwrap(),
            "only within the window"
        );
        assert!(
            store
                .rotate_renewal_secret(id, "h1", "h3", now_ms(), since)
                .await
                .unwrap()
        );
        assert!(
            !store.renewal_secret_matches(id, "h2", since).await.unwrap(),
            "an answer never received is worth nothing"
        );
        // The agent connects with what it got: h1 is used up.
        store.confirm_renewal_secret(id).await.unwrap();
        assert!(!store.renewal_secret_matches(id, "h1", since).await.unwrap());
        assert!(
            !store
                .rotate_renewal_secret(id, "h1", "h9", now_ms(), since)
                .await
                .unwrap()
        );
        // Re-enrolling with the current one retires the one before it too.
        assert!(
            store
                .rotate_renewal_secret(id, "h3", "h4", now_ms(), since)
                .await
                .unwrap()
        );
        assert!(
            store
                .rotate_renewal_secret(id, "h4", "h5", now_ms(), since)
                .await
                .unwrap()
        );
        assert!(!store.renewal_secret_matches(id, "h3", since).await.unwrap());
        assert!(store.renewal_secret_matches(id, "h4", since).await.unwrap());
        // A new Enroll starts over.
        store.set_renewal_secret(id, "h6").await.unwrap();
        assert!(!store.renewal_secret_matches(id, "h4", since).await.unwrap());
    }
}
