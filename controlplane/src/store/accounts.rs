//! People, the accounts that own projects, and who belongs to which account.
//!
//! A person's personal account shares the person's id and name: creating a person creates
//! both, with the person as its owner. Any account with several members is a team account.

use super::{
    BeginWrite as _, DbContext, Error, Result, Store, is_unique_violation, validate_name, with_pool,
};
use crate::clock::now_ms;

/// Someone who signs in with tokens.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Person {
    pub id: String,
    pub name: String,
    /// Holds the server's admin token (may create people). Not an account role.
    pub server_admin: bool,
    pub created_ms: i64,
}

/// What owns projects.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub created_ms: i64,
}

/// A person's membership of an account; `role` is `owner`, `admin` or `member`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Member {
    pub account_id: String,
    pub person_id: String,
    pub person_name: String,
    pub role: String,
    pub created_ms: i64,
}

macro_rules! person_columns {
    () => {
        "id, name, server_admin, created_ms"
    };
}

const OWNER: &str = "owner";

/// Takes the account's row lock inside transaction `$tx`, so that concurrent membership
/// changes of one account queue up (two owners removing each other must not both succeed).
/// Evaluates to false when there is no such account.
macro_rules! lock_account {
    ($tx:expr, $account_id:expr) => {
        sqlx::query("UPDATE accounts SET name = name WHERE id = $1")
            .bind($account_id)
            .execute(&mut *$tx)
            .await?
            .rows_affected()
            == 1
    };
}

/// Whether `$person_id` is the account's only owner, inside transaction `$tx`.
macro_rules! is_last_owner {
    ($tx:expr, $account_id:expr, $person_id:expr) => {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM account_members
             WHERE account_id = $1 AND role = 'owner'
               AND EXISTS (SELECT 1 FROM account_members
                           WHERE account_id = $1 AND person_id = $2 AND role = 'owner')",
        )
        .bind($account_id)
        .bind($person_id)
        .fetch_one(&mut *$tx)
        .await?
            == 1
    };
}

impl Store {
    /// Creates a person and their personal account (same id and name), owned by them. A taken
    /// name (of a person or an account) is [`Error::AlreadyExists`].
    pub async fn create_person(&self, name: &str, server_admin: bool) -> Result<Person> {
        validate_name("name", name)?;
        let person = Person {
            id: super::new_id(),
            name: name.to_string(),
            server_admin,
            created_ms: now_ms(),
        };
        let inserted = with_pool!(self, |pool| {
            async {
                let mut tx = pool.begin_write().await?;
                sqlx::query(
                    "INSERT INTO people (id, name, server_admin, created_ms)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&person.id)
                .bind(&person.name)
                .bind(person.server_admin)
                .bind(person.created_ms)
                .execute(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO accounts (id, name, created_ms) VALUES ($1, $2, $3)")
                    .bind(&person.id)
                    .bind(&person.name)
                    .bind(person.created_ms)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO account_members (account_id, person_id, role, created_ms)
                     VALUES ($1, $1, 'owner', $2)",
                )
                .bind(&person.id)
                .bind(person.created_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            }
            .await
        });
        match inserted {
            Ok(()) => Ok(person),
            Err(e) if is_unique_violation(&e) => Err(Error::AlreadyExists(format!("'{name}'"))),
            Err(e) => Err(e).ctx(|| format!("creating person '{name}'")),
        }
    }

    pub async fn get_person(&self, id: &str) -> Result<Person> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Person>(concat!(
                "SELECT ",
                person_columns!(),
                " FROM people WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading person {id}"))?
        .ok_or_else(|| Error::NotFound(format!("person {id}")))
    }

    pub async fn get_person_by_name(&self, name: &str) -> Result<Person> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Person>(concat!(
                "SELECT ",
                person_columns!(),
                " FROM people WHERE name = $1"
            ))
            .bind(name)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading person '{name}'"))?
        .ok_or_else(|| Error::NotFound(format!("person '{name}'")))
    }

    /// The server admin (the oldest, should there be several), if any.
    pub async fn server_admin(&self) -> Result<Option<Person>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Person>(concat!(
                "SELECT ",
                person_columns!(),
                " FROM people WHERE server_admin = TRUE ORDER BY created_ms, id LIMIT 1"
            ))
            .fetch_optional(pool)
            .await
        })
        .ctx(|| "reading the server admin".to_string())
    }

    pub async fn get_account(&self, id: &str) -> Result<Account> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Account>("SELECT id, name, created_ms FROM accounts WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .ctx(|| format!("reading account {id}"))?
        .ok_or_else(|| Error::NotFound(format!("account {id}")))
    }

    pub async fn get_account_by_name(&self, name: &str) -> Result<Account> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Account>(
                "SELECT id, name, created_ms FROM accounts WHERE name = $1",
            )
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
            sqlx::query_as::<_, Account>(
                "SELECT id, name, created_ms FROM accounts ORDER BY created_ms, id",
            )
            .fetch_all(pool)
            .await
        })
        .ctx(|| "listing accounts".to_string())
    }

    /// The person's role in the account, if they are a member.
    pub async fn member_role(&self, account_id: &str, person_id: &str) -> Result<Option<String>> {
        with_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>(
                "SELECT role FROM account_members WHERE account_id = $1 AND person_id = $2",
            )
            .bind(account_id)
            .bind(person_id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading the role of {person_id} in account {account_id}"))
    }

    /// The account's members, owners first, then by name.
    pub async fn list_members(&self, account_id: &str) -> Result<Vec<Member>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Member>(
                "SELECT m.account_id, m.person_id, p.name AS person_name, m.role, m.created_ms
                 FROM account_members m JOIN people p ON p.id = m.person_id
                 WHERE m.account_id = $1
                 ORDER BY CASE m.role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END, p.name",
            )
            .bind(account_id)
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing members of account {account_id}"))
    }

    /// Adds a person to an account or changes their role. Taking the owner role away from
    /// the last owner is [`Error::LastOwner`].
    pub async fn set_member(
        &self,
        account_id: &str,
        person_id: &str,
        role: &str,
    ) -> Result<Member> {
        let now = now_ms();
        let outcome = with_pool!(self, |pool| {
            async {
                let mut tx = pool.begin_write().await?;
                if !lock_account!(tx, account_id) {
                    return Ok(Err(Error::NotFound(format!("account {account_id}"))));
                }
                if role != OWNER && is_last_owner!(tx, account_id, person_id) {
                    return Ok(Err(Error::LastOwner(account_id.to_string())));
                }
                sqlx::query(
                    "INSERT INTO account_members (account_id, person_id, role, created_ms)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (account_id, person_id) DO UPDATE SET role = excluded.role",
                )
                .bind(account_id)
                .bind(person_id)
                .bind(role)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let member = sqlx::query_as::<_, Member>(
                    "SELECT m.account_id, m.person_id, p.name AS person_name, m.role, m.created_ms
                     FROM account_members m JOIN people p ON p.id = m.person_id
                     WHERE m.account_id = $1 AND m.person_id = $2",
                )
                .bind(account_id)
                .bind(person_id)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Ok(member))
            }
            .await
        });
        let outcome =
            outcome.ctx(|| format!("setting the role of {person_id} in account {account_id}"));
        self.roles_changed(person_id).await;
        outcome?
    }

    /// Removes a person from an account. The last owner cannot be removed
    /// ([`Error::LastOwner`]); a non-member is [`Error::NotFound`].
    pub async fn remove_member(&self, account_id: &str, person_id: &str) -> Result<Member> {
        let outcome = with_pool!(self, |pool| {
            async {
                let mut tx = pool.begin_write().await?;
                if !lock_account!(tx, account_id) {
                    return Ok(Err(Error::NotFound(format!("account {account_id}"))));
                }
                if is_last_owner!(tx, account_id, person_id) {
                    return Ok(Err(Error::LastOwner(account_id.to_string())));
                }
                let member = sqlx::query_as::<_, Member>(
                    "SELECT m.account_id, m.person_id, p.name AS person_name, m.role, m.created_ms
                     FROM account_members m JOIN people p ON p.id = m.person_id
                     WHERE m.account_id = $1 AND m.person_id = $2",
                )
                .bind(account_id)
                .bind(person_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(member) = member else {
                    return Ok(Err(Error::NotFound(format!(
                        "member {person_id} of account {account_id}"
                    ))));
                };
                sqlx::query("DELETE FROM account_members WHERE account_id = $1 AND person_id = $2")
                    .bind(account_id)
                    .bind(person_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Ok(member))
            }
            .await
        });
        let outcome = outcome.ctx(|| format!("removing {person_id} from account {account_id}"));
        self.roles_changed(person_id).await;
        outcome?
    }
}
