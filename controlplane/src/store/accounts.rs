//! Accounts: the people (and the admin) that own projects and tokens.

use super::{
    DbContext, Error, Result, Store, is_unique_violation, new_id, validate_name, with_pool,
};
use crate::clock::now_ms;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub admin: bool,
    pub created_ms: i64,
}

macro_rules! columns {
    () => {
        "id, name, admin, created_ms"
    };
}

impl Store {
    /// Creates an account. A taken name is [`Error::AlreadyExists`].
    pub async fn create_account(&self, name: &str, admin: bool) -> Result<Account> {
        validate_name("account name", name)?;
        let account = Account {
            id: new_id(),
            name: name.to_string(),
            admin,
            created_ms: now_ms(),
        };
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO accounts (id, name, admin, created_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(&account.id)
            .bind(&account.name)
            .bind(account.admin)
            .bind(account.created_ms)
            .execute(pool)
            .await
            .map(|_| ())
        });
        match inserted {
            Ok(()) => Ok(account),
            Err(e) if is_unique_violation(&e) => {
                Err(Error::AlreadyExists(format!("account '{name}'")))
            }
            Err(e) => Err(e).ctx(|| format!("creating account '{name}'")),
        }
    }

    pub async fn get_account(&self, id: &str) -> Result<Account> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Account>(concat!(
                "SELECT ",
                columns!(),
                " FROM accounts WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading account {id}"))?
        .ok_or_else(|| Error::NotFound(format!("account {id}")))
    }

    pub async fn get_account_by_name(&self, name: &str) -> Result<Account> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Account>(concat!(
                "SELECT ",
                columns!(),
                " FROM accounts WHERE name = $1"
            ))
            .bind(name)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading account '{name}'"))?
        .ok_or_else(|| Error::NotFound(format!("account '{name}'")))
    }

    /// All accounts, oldest first.
    pub async fn list_accounts(&self) -> Result<Vec<Account>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Account>(concat!(
                "SELECT ",
                columns!(),
                " FROM accounts ORDER BY created_ms, id"
            ))
            .fetch_all(pool)
            .await
        })
        .ctx(|| "listing accounts".to_string())
    }

    /// The admin account (the oldest, should there be several), if any.
    pub async fn admin_account(&self) -> Result<Option<Account>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Account>(concat!(
                "SELECT ",
                columns!(),
                " FROM accounts WHERE admin = TRUE ORDER BY created_ms, id LIMIT 1"
            ))
            .fetch_optional(pool)
            .await
        })
        .ctx(|| "reading the admin account".to_string())
    }

    /// Whether any admin account exists.
    pub async fn has_admin(&self) -> Result<bool> {
        with_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM accounts WHERE admin = TRUE")
                .fetch_one(pool)
                .await
        })
        .map(|n| n > 0)
        .ctx(|| "checking for an admin account".to_string())
    }
}
