//! Who may do what on one project: grants of a project role to a person, inside or outside
//! the project's account, optionally expiring. Account owners and admins need none: they are
//! implicitly managers of every project of their account.

use crate::audit::{self, Event};
use crate::auth::Caller;
use crate::error::{DomainError, DomainResult};
use crate::permissions::{self, ProjectRole};
use crate::store::{Grant, Project, Store};

/// Longest grant accepted: ten years.
pub const MAX_GRANT_SECONDS: i64 = 10 * 365 * 24 * 3600;

/// Cheap to clone.
#[derive(Clone)]
pub struct ProjectAccess {
    store: Store,
    accounts: crate::accounts::Accounts,
}

impl ProjectAccess {
    pub fn new(store: Store, authenticator: crate::auth::Authenticator) -> Self {
        Self {
            accounts: crate::accounts::Accounts::new(store.clone(), authenticator),
            store,
        }
    }

    /// The project's grants.
    pub async fn list(
        &self,
        caller: &Caller,
        project: &str,
    ) -> DomainResult<(Project, Vec<Grant>)> {
        let project = permissions::project(&self.store, caller, project).await?;
        let grants = self.store.list_grants(&project.id).await?;
        Ok((project, grants))
    }

    /// Grants `person` `role` on the project, replacing an earlier grant; `expires_in_seconds`
    /// of 0 means it does not expire.
    pub async fn grant(
        &self,
        caller: &Caller,
        project: &str,
        person: &str,
        role: &str,
        expires_in_seconds: i64,
    ) -> DomainResult<(Project, Grant)> {
        let role: ProjectRole = role
            .parse()
            .map_err(|e: permissions::UnknownRole| DomainError::Invalid(e.to_string()))?;
        if !(0..=MAX_GRANT_SECONDS).contains(&expires_in_seconds) {
            return Err(DomainError::Invalid(format!(
                "a grant expires after 1 second to {MAX_GRANT_SECONDS} seconds (or never: 0)"
            )));
        }
        let project = permissions::project(&self.store, caller, project).await?;
        let person = self.accounts.person(person).await?;
        let expires_ms =
            (expires_in_seconds > 0).then(|| crate::clock::now_ms() + expires_in_seconds * 1000);
        let grant = self
            .store
            .grant(
                &project.id,
                &person.id,
                role.as_str(),
                expires_ms,
                &caller.person_id,
            )
            .await?;
        tracing::info!(project = %project.name, person = %person.name, %role, "access granted");
        let detail = match expires_ms {
            Some(at) => format!("{role} until {}", crate::clock::iso8601_ms(at)),
            None => role.to_string(),
        };
        audit::record(
            &self.store,
            caller,
            Event::in_project("access.grant", &project, &person.name).with_detail(&detail),
        )
        .await;
        Ok((project, grant))
    }

    /// Removes `person`'s grant on the project.
    pub async fn revoke(
        &self,
        caller: &Caller,
        project: &str,
        person: &str,
    ) -> DomainResult<(Project, Grant)> {
        let project = permissions::project(&self.store, caller, project).await?;
        let person = self.accounts.person(person).await?;
        let grant = match self.store.revoke_grant(&project.id, &person.id).await {
            Err(e) if e.is_not_found() => {
                return Err(DomainError::NotFound(format!(
                    "'{}' has no grant on project '{}'",
                    person.name, project.name
                )));
            }
            other => other?,
        };
        tracing::info!(project = %project.name, person = %person.name, "access revoked");
        audit::record(
            &self.store,
            caller,
            Event::in_project("access.revoke", &project, &person.name).with_detail(&grant.role),
        )
        .await;
        Ok((project, grant))
    }
}
