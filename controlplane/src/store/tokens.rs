//! People's bearer tokens. Only the SHA-256 of a token is stored; the token itself is shown
//! once, when created.

use super::{Account, DbContext, Error, Result, Store, is_unique_violation, new_id, with_pool};
use crate::clock::now_ms;

/// `last_used_ms` is refreshed at most this often, so authentication isn't a write per call.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;
const MAX_TOKEN_NAME_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiToken {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

macro_rules! columns {
    () => {
        "id, account_id, name, created_ms, last_used_ms, revoked_ms"
    };
}

#[derive(sqlx::FromRow)]
struct TokenWithAccount {
    id: String,
    account_id: String,
    name: String,
    created_ms: i64,
    last_used_ms: Option<i64>,
    revoked_ms: Option<i64>,
    account_name: String,
    account_admin: bool,
    account_created_ms: i64,
}

impl Store {
    /// Stores a new token for `account_id` under its hash (`auth::hash_token`).
    pub async fn create_api_token(
        &self,
        account_id: &str,
        name: &str,
        token_hash: &str,
    ) -> Result<ApiToken> {
        if name.len() > MAX_TOKEN_NAME_LEN || name.chars().any(char::is_control) {
            return Err(Error::Invalid {
                what: "token name",
                reason: format!("at most {MAX_TOKEN_NAME_LEN} bytes, no control characters"),
            });
        }
        let token = ApiToken {
            id: new_id(),
            account_id: account_id.to_string(),
            name: name.to_string(),
            created_ms: now_ms(),
            last_used_ms: None,
            revoked_ms: None,
        };
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO api_tokens (id, account_id, name, token_hash, created_ms)
                 SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM accounts WHERE id = $2)",
            )
            .bind(&token.id)
            .bind(&token.account_id)
            .bind(&token.name)
            .bind(token_hash)
            .bind(token.created_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        });
        match inserted {
            Ok(1) => Ok(token),
            Ok(_) => Err(Error::NotFound(format!("account {account_id}"))),
            Err(e) if is_unique_violation(&e) => {
                Err(Error::AlreadyExists("a token with this hash".to_string()))
            }
            Err(e) => Err(e).ctx(|| format!("creating a token for account {account_id}")),
        }
    }

    /// Resolves a token hash to its account and token. Unknown and revoked tokens are both
    /// [`Error::NotFound`], so a caller can't tell them apart. Refreshes `last_used_ms`.
    pub async fn lookup_api_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<(Account, ApiToken)> {
        let found = with_pool!(self, |pool| {
            sqlx::query_as::<_, TokenWithAccount>(
                "SELECT t.id, t.account_id, t.name, t.created_ms, t.last_used_ms, t.revoked_ms,
                        a.name AS account_name, a.admin AS account_admin,
                        a.created_ms AS account_created_ms
                 FROM api_tokens t JOIN accounts a ON a.id = t.account_id
                 WHERE t.token_hash = $1 AND t.revoked_ms IS NULL",
            )
            .bind(token_hash)
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
            Account {
                id: found.account_id.clone(),
                name: found.account_name,
                admin: found.account_admin,
                created_ms: found.account_created_ms,
            },
            ApiToken {
                id: found.id,
                account_id: found.account_id,
                name: found.name,
                created_ms: found.created_ms,
                last_used_ms,
                revoked_ms: found.revoked_ms,
            },
        ))
    }

    /// The account's tokens (revoked ones included), oldest first.
    pub async fn list_api_tokens(&self, account_id: &str) -> Result<Vec<ApiToken>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, ApiToken>(concat!(
                "SELECT ",
                columns!(),
                " FROM api_tokens WHERE account_id = $1 ORDER BY created_ms, id"
            ))
            .bind(account_id)
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing tokens of account {account_id}"))
    }

    /// Revokes one of the account's tokens. Another account's token is [`Error::NotFound`].
    /// Revoking twice keeps the first revocation time.
    pub async fn revoke_api_token(
        &self,
        account_id: &str,
        token_id: &str,
        now_ms: i64,
    ) -> Result<ApiToken> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, ApiToken>(concat!(
                "UPDATE api_tokens SET revoked_ms = COALESCE(revoked_ms, $3)
                 WHERE id = $1 AND account_id = $2 RETURNING ",
                columns!()
            ))
            .bind(token_id)
            .bind(account_id)
            .bind(now_ms)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("revoking token {token_id}"))?
        .ok_or_else(|| Error::NotFound(format!("token {token_id}")))
    }
}
