//! Slack users linked to Kortix people, the one-time codes that link them, and the
//! approvals already offered in a thread. Which code is valid and who may redeem it live in
//! `crate::channels::slack::links`; this module knows rows.

use super::{DbContext, Result, Store, with_pool};
use crate::clock::now_ms;

/// A code waiting to be redeemed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SlackLinkCode {
    pub project_id: String,
    pub slack_user: String,
    pub expires_ms: i64,
}

impl Store {
    /// Keeps a new link code for a Slack user, replacing the codes it was given before.
    pub async fn put_slack_link_code(
        &self,
        code_hash: &str,
        project_id: &str,
        slack_user: &str,
        expires_ms: i64,
    ) -> Result<()> {
        with_pool!(self, |pool| async {
            sqlx::query("DELETE FROM slack_link_codes WHERE project_id = $1 AND slack_user = $2")
                .bind(project_id)
                .bind(slack_user)
                .execute(pool)
                .await?;
            // Codes nobody redeemed go when anyone asks for a new one.
            sqlx::query("DELETE FROM slack_link_codes WHERE expires_ms < $1")
                .bind(now_ms())
                .execute(pool)
                .await?;
            sqlx::query(
                "INSERT INTO slack_link_codes (code_hash, project_id, slack_user, expires_ms)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(code_hash)
            .bind(project_id)
            .bind(slack_user)
            .bind(expires_ms)
            .execute(pool)
            .await
            .map(drop)
        }
        .await)
        .ctx(|| format!("keeping a Slack link code for {slack_user} in project {project_id}"))
    }

    /// Takes the code with this hash (whoever takes it first; expired or not, the caller
    /// decides); `None` when there is no such code.
    pub async fn take_slack_link_code(&self, code_hash: &str) -> Result<Option<SlackLinkCode>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, SlackLinkCode>(
                "DELETE FROM slack_link_codes WHERE code_hash = $1
                 RETURNING project_id, slack_user, expires_ms",
            )
            .bind(code_hash)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| "taking a Slack link code".to_string())
    }

    /// Links a Slack user of the project's workspace to a person (replacing an earlier link).
    pub async fn put_slack_link(
        &self,
        project_id: &str,
        slack_user: &str,
        person_id: &str,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO slack_links (project_id, slack_user, person_id, linked_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (project_id, slack_user) DO UPDATE
                     SET person_id = excluded.person_id, linked_ms = excluded.linked_ms",
            )
            .bind(project_id)
            .bind(slack_user)
            .bind(person_id)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(drop)
        })
        .ctx(|| format!("linking Slack user {slack_user} in project {project_id}"))
    }

    /// The person a Slack user is linked to in the project, if any.
    pub async fn slack_linked_person(
        &self,
        project_id: &str,
        slack_user: &str,
    ) -> Result<Option<String>> {
        with_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>(
                "SELECT person_id FROM slack_links WHERE project_id = $1 AND slack_user = $2",
            )
            .bind(project_id)
            .bind(slack_user)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading the link of Slack user {slack_user}"))
    }

    /// Claims offering approval `approval_id` in its thread: true for the first caller only.
    pub async fn claim_slack_approval_prompt(
        &self,
        project_id: &str,
        approval_id: &str,
    ) -> Result<bool> {
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO slack_approval_prompts (approval_id, project_id, created_ms)
                 VALUES ($1, $2, $3) ON CONFLICT (approval_id) DO NOTHING",
            )
            .bind(approval_id)
            .bind(project_id)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("claiming the Slack prompt of approval {approval_id}"))?;
        Ok(inserted == 1)
    }
}
