//! Projects: a named git repository owned by one account.

use super::{
    DbContext, Error, Result, Store, is_unique_violation, new_id, validate_name, with_pool,
};
use crate::clock::now_ms;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Project {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub default_branch: String,
    pub created_ms: i64,
    /// Bumped on every secret set/delete.
    pub secrets_version: i64,
}

macro_rules! columns {
    () => {
        "id, account_id, name, default_branch, created_ms, secrets_version"
    };
}

impl Store {
    /// Creates a project. Names are unique across the whole control plane (they are the git
    /// URL); a taken name is [`Error::AlreadyExists`].
    pub async fn create_project(
        &self,
        account_id: &str,
        name: &str,
        default_branch: &str,
    ) -> Result<Project> {
        validate_name("project name", name)?;
        check_branch(default_branch)?;
        let project = Project {
            id: new_id(),
            account_id: account_id.to_string(),
            name: name.to_string(),
            default_branch: default_branch.to_string(),
            created_ms: now_ms(),
            secrets_version: 0,
        };
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO projects (id, account_id, name, default_branch, created_ms)
                 SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM accounts WHERE id = $2)",
            )
            .bind(&project.id)
            .bind(&project.account_id)
            .bind(&project.name)
            .bind(&project.default_branch)
            .bind(project.created_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        });
        match inserted {
            Ok(1) => Ok(project),
            Ok(_) => Err(Error::NotFound(format!("account {account_id}"))),
            Err(e) if is_unique_violation(&e) => {
                Err(Error::AlreadyExists(format!("project '{name}'")))
            }
            Err(e) => Err(e).ctx(|| format!("creating project '{name}'")),
        }
    }

    /// The account's project named or identified by `name_or_id`. Another account's project
    /// is [`Error::NotFound`], exactly like a missing one.
    pub async fn get_project(&self, account_id: &str, name_or_id: &str) -> Result<Project> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Project>(concat!(
                "SELECT ",
                columns!(),
                " FROM projects WHERE account_id = $1 AND (id = $2 OR name = $2)
                  ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1"
            ))
            .bind(account_id)
            .bind(name_or_id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading project '{name_or_id}'"))?
        .ok_or_else(|| Error::NotFound(format!("project '{name_or_id}'")))
    }

    /// Any account's project by name or id, for callers that authorize by other means
    /// (agents, the git endpoint, triggers, admins).
    pub async fn find_project(&self, name_or_id: &str) -> Result<Project> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Project>(concat!(
                "SELECT ",
                columns!(),
                " FROM projects WHERE id = $1 OR name = $1
                  ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
            ))
            .bind(name_or_id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading project '{name_or_id}'"))?
        .ok_or_else(|| Error::NotFound(format!("project '{name_or_id}'")))
    }

    /// The account's projects, by name.
    pub async fn list_projects(&self, account_id: &str) -> Result<Vec<Project>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Project>(concat!(
                "SELECT ",
                columns!(),
                " FROM projects WHERE account_id = $1 ORDER BY name"
            ))
            .bind(account_id)
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing projects of account {account_id}"))
    }

    /// Every project, by name (trigger sweeps, admins).
    pub async fn list_all_projects(&self) -> Result<Vec<Project>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Project>(concat!(
                "SELECT ",
                columns!(),
                " FROM projects ORDER BY name"
            ))
            .fetch_all(pool)
            .await
        })
        .ctx(|| "listing projects".to_string())
    }

    /// Changes the project's default branch (e.g. to an imported repository's HEAD branch).
    pub async fn set_project_default_branch(
        &self,
        project_id: &str,
        default_branch: &str,
    ) -> Result<Project> {
        check_branch(default_branch)?;
        let changed = with_pool!(self, |pool| {
            sqlx::query_as::<_, Project>(concat!(
                "UPDATE projects SET default_branch = $1 WHERE id = $2 RETURNING ",
                columns!()
            ))
            .bind(default_branch)
            .bind(project_id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("setting the default branch of project {project_id}"));
        self.agents_changed(super::AgentChange::Project(project_id.to_owned()))
            .await;
        changed?.ok_or_else(|| Error::NotFound(format!("project {project_id}")))
    }

    /// Deletes a project and everything under it (sessions, records, secrets, CRs, firings).
    /// Used to roll back a creation whose repository could not be made.
    pub async fn delete_project(&self, project_id: &str) -> Result<()> {
        let done = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM projects WHERE id = $1")
                .bind(project_id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .ctx(|| format!("deleting project {project_id}"));
        // Its sessions, their certificates and its credentials went with it.
        self.agents_changed(super::AgentChange::All).await;
        if done? == 0 {
            return Err(Error::NotFound(format!("project {project_id}")));
        }
        Ok(())
    }
}

fn check_branch(branch: &str) -> Result<()> {
    if branch.is_empty() || branch.len() > 255 || branch.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(Error::Invalid {
            what: "default branch",
            reason: format!("{branch:?}: 1 to 255 bytes, no spaces or control characters"),
        });
    }
    Ok(())
}
