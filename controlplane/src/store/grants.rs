//! Project grants (a person's role on one project, also outside the project's account) and
//! what a person may see: their projects with the roles that reach them.

use super::{DbContext, Error, Heard, Project, ROLES_CHANNEL, Result, Roles, Store, with_pool};
use crate::clock::now_ms;

/// A person's role on one project, granted directly.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Grant {
    pub project_id: String,
    pub person_id: String,
    pub person_name: String,
    /// `manager`, `editor` or `viewer`.
    pub role: String,
    pub expires_ms: Option<i64>,
    pub granted_by: String,
    pub created_ms: i64,
}

/// A project and every role of one person that reaches it: their role in the owning account
/// and their grant, if unexpired. Turning these into one effective role is the permission
/// module's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectAccess {
    pub project: Project,
    pub account_role: Option<String>,
    pub grant_role: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AccessRow {
    id: String,
    account_id: String,
    name: String,
    default_branch: String,
    created_ms: i64,
    secrets_version: i64,
    account_role: Option<String>,
    grant_role: Option<String>,
}

impl From<AccessRow> for ProjectAccess {
    fn from(r: AccessRow) -> Self {
        ProjectAccess {
            project: Project {
                id: r.id,
                account_id: r.account_id,
                name: r.name,
                default_branch: r.default_branch,
                created_ms: r.created_ms,
                secrets_version: r.secrets_version,
            },
            account_role: r.account_role,
            grant_role: r.grant_role,
        }
    }
}

/// Projects joined with person `$1`'s account role and unexpired grant (at time `$2`).
macro_rules! access_select {
    () => {
        "SELECT p.id, p.account_id, p.name, p.default_branch, p.created_ms, p.secrets_version,
                m.role AS account_role, g.role AS grant_role
         FROM projects p
         LEFT JOIN account_members m ON m.account_id = p.account_id AND m.person_id = $1
         LEFT JOIN project_grants g ON g.project_id = p.id AND g.person_id = $1
              AND (g.expires_ms IS NULL OR g.expires_ms > $2) "
    };
}

impl Store {
    /// The project named or identified by `name_or_id`, with `person_id`'s roles on it
    /// (none when they have none). A missing project is [`Error::NotFound`]. The roles come
    /// from this replica's [`RoleCache`](super::RoleCache) when it knows them, so a check
    /// usually costs only the project read.
    pub async fn project_access(&self, person_id: &str, name_or_id: &str) -> Result<ProjectAccess> {
        let project = self.find_project(name_or_id).await?;
        let roles = match self.roles.get(person_id, &project.id) {
            Some(roles) => roles,
            None => {
                let generation = self.roles.generation();
                let roles = self.read_roles(person_id, &project).await?;
                self.roles
                    .insert(generation, person_id, &project.id, roles.clone());
                roles
            }
        };
        Ok(ProjectAccess {
            grant_role: roles.live_grant(now_ms()),
            account_role: roles.account_role,
            project,
        })
    }

    /// `person_id`'s role in the project's account and their grant on it, from the tables.
    async fn read_roles(&self, person_id: &str, project: &Project) -> Result<Roles> {
        let (account_role, grant_role, grant_expires_ms) = with_pool!(self, |pool| {
            sqlx::query_as::<_, (Option<String>, Option<String>, Option<i64>)>(
                "SELECT m.role, g.role, g.expires_ms
                 FROM (SELECT 1 AS one) AS one
                 LEFT JOIN account_members m ON m.account_id = $1 AND m.person_id = $3
                 LEFT JOIN project_grants g ON g.project_id = $2 AND g.person_id = $3",
            )
            .bind(&project.account_id)
            .bind(&project.id)
            .bind(person_id)
            .fetch_one(pool)
            .await
        })
        .ctx(|| {
            format!(
                "reading the roles of {person_id} on project '{}'",
                project.name
            )
        })?;
        Ok(Roles {
            account_role,
            grant_role,
            grant_expires_ms,
        })
    }

    /// Forgets what this replica knows of `person_id`'s roles and tells the other replicas
    /// to. Called after every change to a membership or grant; a notification that cannot
    /// be sent leaves the others at most [`role_cache::TTL`](super::role_cache::TTL) behind.
    pub(super) async fn roles_changed(&self, person_id: &str) {
        self.roles.forget_person(person_id);
        if let Err(e) = self
            .notify_on(ROLES_CHANNEL, &[person_id.to_string()])
            .await
        {
            tracing::warn!(person_id, error = %e, "could not tell other replicas of a role change");
        }
    }

    /// Applies other replicas' role changes to this replica's cache, for as long as the
    /// database can be reached (returns at once on SQLite, which has one process).
    pub async fn follow_role_changes(&self) {
        let roles = self.roles.clone();
        self.follow_channel(ROLES_CHANNEL, |heard| match heard {
            Heard::Wake(person_id) => roles.apply(&person_id),
            // Whatever changed while nobody listened is unknown here.
            Heard::Gap => roles.clear(),
        })
        .await;
    }

    /// Every project where `person_id` is an account owner or admin or holds an unexpired
    /// grant, by name. Plain account members see only what they were granted.
    pub async fn visible_projects(&self, person_id: &str) -> Result<Vec<ProjectAccess>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, AccessRow>(concat!(
                access_select!(),
                "WHERE m.role IN ('owner', 'admin') OR g.role IS NOT NULL ORDER BY p.name"
            ))
            .bind(person_id)
            .bind(now_ms())
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing the projects of person {person_id}"))
        .map(|rows| rows.into_iter().map(ProjectAccess::from).collect())
    }

    /// Grants `person_id` `role` on the project (replacing an earlier grant).
    pub async fn grant(
        &self,
        project_id: &str,
        person_id: &str,
        role: &str,
        expires_ms: Option<i64>,
        granted_by: &str,
    ) -> Result<Grant> {
        let now = now_ms();
        let granted = with_pool!(self, |pool| {
            async {
                sqlx::query(
                    "INSERT INTO project_grants
                         (project_id, person_id, role, expires_ms, granted_by, created_ms)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (project_id, person_id) DO UPDATE SET
                         role = excluded.role, expires_ms = excluded.expires_ms,
                         granted_by = excluded.granted_by, created_ms = excluded.created_ms",
                )
                .bind(project_id)
                .bind(person_id)
                .bind(role)
                .bind(expires_ms)
                .bind(granted_by)
                .bind(now)
                .execute(pool)
                .await?;
                sqlx::query_as::<_, Grant>(
                    "SELECT g.project_id, g.person_id, p.name AS person_name, g.role,
                            g.expires_ms, g.granted_by, g.created_ms
                     FROM project_grants g JOIN people p ON p.id = g.person_id
                     WHERE g.project_id = $1 AND g.person_id = $2",
                )
                .bind(project_id)
                .bind(person_id)
                .fetch_one(pool)
                .await
            }
            .await
        })
        .ctx(|| format!("granting {role} on project {project_id} to {person_id}"));
        // Also after a failure: a commit whose answer was lost may still have happened.
        self.roles_changed(person_id).await;
        granted
    }

    /// Removes a person's grant; none is [`Error::NotFound`].
    pub async fn revoke_grant(&self, project_id: &str, person_id: &str) -> Result<Grant> {
        let revoked = with_pool!(self, |pool| {
            sqlx::query_as::<_, Grant>(
                "DELETE FROM project_grants WHERE project_id = $1 AND person_id = $2
                 RETURNING project_id, person_id,
                     (SELECT name FROM people WHERE id = person_id) AS person_name,
                     role, expires_ms, granted_by, created_ms",
            )
            .bind(project_id)
            .bind(person_id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("revoking the grant of {person_id} on project {project_id}"));
        self.roles_changed(person_id).await;
        revoked?.ok_or_else(|| Error::NotFound(format!("a grant for {person_id}")))
    }

    /// The project's grants (expired ones included, so they can be seen and removed), by name.
    pub async fn list_grants(&self, project_id: &str) -> Result<Vec<Grant>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Grant>(
                "SELECT g.project_id, g.person_id, p.name AS person_name, g.role,
                        g.expires_ms, g.granted_by, g.created_ms
                 FROM project_grants g JOIN people p ON p.id = g.person_id
                 WHERE g.project_id = $1 ORDER BY p.name",
            )
            .bind(project_id)
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing grants of project {project_id}"))
    }
}
