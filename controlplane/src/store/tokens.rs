//! People's bearer tokens. Only the SHA-256 of a token is stored; the token itself is shown
//! once, when created.

use super::{DbContext, Error, Person, Result, Store, is_unique_violation, new_id, with_pool};
use crate::clock::now_ms;

/// `last_used_ms` is refreshed at most this often, so authentication isn't a write per call.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;
const MAX_TOKEN_NAME_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiToken {
    pub id: String,
    pub person_id: String,
    pub name: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    /// The one project a narrowed token may touch.
    pub project_id: Option<String>,
    /// The most a narrowed token may do there (`viewer`, `editor`, `manager`).
    pub role: Option<String>,
    pub expires_ms: Option<i64>,
}

/// How a new token is narrowed; the default is not at all (the person's full rights).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenLimits {
    pub project_id: Option<String>,
    pub role: Option<String>,
    pub expires_ms: Option<i64>,
}

macro_rules! columns {
    () => {
        "id, person_id, name, created_ms, last_used_ms, revoked_ms, project_id, role, expires_ms"
    };
}

#[derive(sqlx::FromRow)]
struct TokenWithPerson {
    id: String,
    person_id: String,
    name: String,
    created_ms: i64,
    last_used_ms: Option<i64>,
    revoked_ms: Option<i64>,
    project_id: Option<String>,
    role: Option<String>,
    expires_ms: Option<i64>,
    person_name: String,
    person_server_admin: bool,
    person_created_ms: i64,
}

impl Store {
    /// Stores a new token with the person's full rights under its hash (`auth::hash_token`).
    pub async fn create_api_token(
        &self,
        person_id: &str,
        name: &str,
        token_hash: &str,
    ) -> Result<ApiToken> {
        self.create_limited_api_token(person_id, name, token_hash, TokenLimits::default())
            .await
    }

    /// Stores a new token for `person_id`, narrowed by `limits`.
    pub async fn create_limited_api_token(
        &self,
        person_id: &str,
        name: &str,
        token_hash: &str,
        limits: TokenLimits,
    ) -> Result<ApiToken> {
        if name.len() > MAX_TOKEN_NAME_LEN || name.chars().any(char::is_control) {
            return Err(Error::Invalid {
                what: "token name",
                reason: format!("at most {MAX_TOKEN_NAME_LEN} bytes, no control characters"),
            });
        }
        let token = ApiToken {
            id: new_id(),
            person_id: person_id.to_string(),
            name: name.to_string(),
            created_ms: now_ms(),
            last_used_ms: None,
            revoked_ms: None,
            project_id: limits.project_id,
            role: limits.role,
            expires_ms: limits.expires_ms,
        };
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO api_tokens
                     (id, person_id, name, token_hash, created_ms, project_id, role, expires_ms)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8
                 WHERE EXISTS (SELECT 1 FROM people WHERE id = $2)",
            )
            .bind(&token.id)
            .bind(&token.person_id)
            .bind(&token.name)
            .bind(token_hash)
            .bind(token.created_ms)
            .bind(token.project_id.as_deref())
            .bind(token.role.as_deref())
            .bind(token.expires_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        });
        match inserted {
            Ok(1) => Ok(token),
            Ok(_) => Err(Error::NotFound(format!("person {person_id}"))),
            Err(e) if is_unique_violation(&e) => {
                Err(Error::AlreadyExists("a token with this hash".to_string()))
            }
            Err(e) => Err(e).ctx(|| format!("creating a token for person {person_id}")),
        }
    }

    /// Resolves a token hash to its person and token. Unknown, revoked and expired tokens are
    /// all [`Error::NotFound`], so a caller can't tell them apart. Refreshes `last_used_ms`.
    pub async fn lookup_api_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<(Person, ApiToken)> {
        let found = with_pool!(self, |pool| {
            sqlx::query_as::<_, TokenWithPerson>(
                "SELECT t.id, t.person_id, t.name, t.created_ms, t.last_used_ms, t.revoked_ms,
                        t.project_id, t.role, t.expires_ms,
                        p.name AS person_name, p.server_admin AS person_server_admin,
                        p.created_ms AS person_created_ms
                 FROM api_tokens t JOIN people p ON p.id = t.person_id
                 WHERE t.token_hash = $1 AND t.revoked_ms IS NULL
                   AND (t.expires_ms IS NULL OR t.expires_ms > $2)",
            )
            .bind(token_hash)
            .bind(now_ms)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| "looking up a bearer token".to_string())?
        .ok_or_else(|| Error::NotFound("token".to_string()))?;

        let stale = found
            .last_used_ms
            .is_none_or(|t| t < now_ms - LAST_USED_RESOLUTION_MS);
        let mut last_used_ms = found.last_used_ms;
        if stale {
            with_pool!(self, |pool| {
                sqlx::query(
                    "UPDATE api_tokens SET last_used_ms = $1
                     WHERE id = $2 AND (last_used_ms IS NULL OR last_used_ms < $1)",
                )
                .bind(now_ms)
                .bind(&found.id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
            })
            .ctx(|| format!("recording use of token {}", found.id))?;
            last_used_ms = Some(now_ms);
        }
        Ok((
            Person {
                id: found.person_id.clone(),
                name: found.person_name,
                server_admin: found.person_server_admin,
                created_ms: found.person_created_ms,
            },
            ApiToken {
                id: found.id,
                person_id: found.person_id,
                name: found.name,
                created_ms: found.created_ms,
                last_used_ms,
                revoked_ms: found.revoked_ms,
                project_id: found.project_id,
                role: found.role,
                expires_ms: found.expires_ms,
            },
        ))
    }

    /// Whether the token is still good: not revoked and not expired. Long-lived streams ask
    /// this to end when their token is revoked.
    pub async fn api_token_live(&self, token_id: &str, now_ms: i64) -> Result<bool> {
        with_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM api_tokens WHERE id = $1 AND revoked_ms IS NULL
                   AND (expires_ms IS NULL OR expires_ms > $2)",
            )
            .bind(token_id)
            .bind(now_ms)
            .fetch_one(pool)
            .await
        })
        .map(|n| n > 0)
        .ctx(|| format!("checking token {token_id}"))
    }

    /// The person's tokens (revoked ones included), oldest first.
    pub async fn list_api_tokens(&self, person_id: &str) -> Result<Vec<ApiToken>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, ApiToken>(concat!(
                "SELECT ",
                columns!(),
                " FROM api_tokens WHERE person_id = $1 ORDER BY created_ms, id"
            ))
            .bind(person_id)
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing tokens of person {person_id}"))
    }

    /// Revokes one of the person's tokens. Another person's token is [`Error::NotFound`].
    /// Revoking twice keeps the first revocation time.
    pub async fn revoke_api_token(
        &self,
        person_id: &str,
        token_id: &str,
        now_ms: i64,
    ) -> Result<ApiToken> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, ApiToken>(concat!(
                "UPDATE api_tokens SET revoked_ms = COALESCE(revoked_ms, $3)
                 WHERE id = $1 AND person_id = $2 RETURNING ",
                columns!()
            ))
            .bind(token_id)
            .bind(person_id)
            .bind(now_ms)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("revoking token {token_id}"))?
        .ok_or_else(|| Error::NotFound(format!("token {token_id}")))
    }
}
