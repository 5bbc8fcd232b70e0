//! Enforcing the permission table: a caller's effective role on a project or in an account,
//! compared with what their action needs. Refusals name the missing role; a project the
//! caller has no role on is NOT_FOUND, exactly like a missing one.

use super::roles::{AccountRole, ProjectRole};
use super::table::{Action, Need};
use crate::auth::Caller;
use crate::error::{DomainError, DomainResult, check_len};
use crate::store::{Account, Project, ProjectAccess, Store};

/// Longest project reference (a name is at most 64 bytes, an id 36) looked up for a caller.
pub const MAX_PROJECT_REF: usize = 128;
/// Longest account reference looked up.
const MAX_ACCOUNT_REF: usize = 128;

/// The caller's role on a project: the higher of their account role's implied role and
/// their unexpired grant, capped by their token's narrowing. `None`: they may not see it.
pub fn effective_role(caller: &Caller, access: &ProjectAccess) -> Option<ProjectRole> {
    let from_account = access
        .account_role
        .as_deref()
        .and_then(|r| r.parse::<AccountRole>().ok())
        .and_then(AccountRole::implied_project_role);
    let from_grant = access
        .grant_role
        .as_deref()
        .and_then(|r| r.parse::<ProjectRole>().ok());
    let held = from_account.max(from_grant)?;
    match &caller.narrowed {
        None => Some(held),
        Some(n) => {
            if n.project_id
                .as_deref()
                .is_some_and(|p| p != access.project.id)
            {
                return None;
            }
            Some(n.role.map_or(held, |cap| held.min(cap)))
        }
    }
}

/// Every project the caller may see, with their role on it, by name.
pub async fn visible_projects(
    store: &Store,
    caller: &Caller,
) -> DomainResult<Vec<(Project, ProjectRole)>> {
    Ok(store
        .visible_projects(&caller.person_id)
        .await?
        .into_iter()
        .filter_map(|access| {
            let role = effective_role(caller, &access)?;
            Some((access.project, role))
        })
        .collect())
}

/// The project `reference` names, if the caller may do their current action on it.
pub async fn project(store: &Store, caller: &Caller, reference: &str) -> DomainResult<Project> {
    let need = match caller.action.need() {
        Need::Project(role) => role,
        // Actions that are not about one project still only show projects one can view.
        _ => ProjectRole::Viewer,
    };
    project_for(store, caller, reference, caller.action, need)
        .await
        .map(|(p, _)| p)
}

/// The project and the caller's role on it, which must be at least `Viewer`.
pub async fn project_role(
    store: &Store,
    caller: &Caller,
    reference: &str,
) -> DomainResult<(Project, ProjectRole)> {
    project_for(
        store,
        caller,
        reference,
        Action::ViewProject,
        ProjectRole::Viewer,
    )
    .await
}

async fn project_for(
    store: &Store,
    caller: &Caller,
    reference: &str,
    action: Action,
    need: ProjectRole,
) -> DomainResult<(Project, ProjectRole)> {
    if reference.is_empty() {
        return Err(DomainError::Invalid("a project is required".into()));
    }
    check_len("the project name or id", reference, MAX_PROJECT_REF)?;
    let not_found = || DomainError::NotFound(format!("project '{reference}' not found"));
    let access = match store.project_access(&caller.person_id, reference).await {
        Err(e) if e.is_not_found() => return Err(not_found()),
        other => other?,
    };
    let Some(role) = effective_role(caller, &access) else {
        return Err(not_found());
    };
    if role < need {
        return Err(DomainError::PermissionDenied(format!(
            "{} needs the project role {need} on project '{}'; you are {role}",
            action.describe(),
            access.project.name
        )));
    }
    Ok((access.project, role))
}

/// The account `reference` names (empty: the caller's personal account), if the caller's
/// role in it is enough for their current action. Not being a member reads as not found.
pub async fn account(
    store: &Store,
    caller: &Caller,
    reference: &str,
) -> DomainResult<(Account, AccountRole)> {
    refuse_narrowed(caller)?;
    check_len("the account name or id", reference, MAX_ACCOUNT_REF)?;
    let account = if reference.is_empty() {
        store.get_account(caller.personal_account_id()).await?
    } else {
        match store.get_account_by_name(reference).await {
            Err(e) if e.is_not_found() => store.get_account(reference).await,
            other => other,
        }
        .map_err(|e| match e {
            e if e.is_not_found() => {
                DomainError::NotFound(format!("account '{reference}' not found"))
            }
            e => e.into(),
        })?
    };
    let held = store
        .member_role(&account.id, &caller.person_id)
        .await?
        .and_then(|r| r.parse::<AccountRole>().ok())
        .ok_or_else(|| DomainError::NotFound(format!("account '{}' not found", account.name)))?;
    require_account_role(caller, &account, held)?;
    Ok((account, held))
}

/// Whether `held` in `account` is enough for the caller's current action.
pub fn require_account_role(
    caller: &Caller,
    account: &Account,
    held: AccountRole,
) -> DomainResult<()> {
    let need = match caller.action.need() {
        Need::Account(role) => role,
        _ => AccountRole::Member,
    };
    if held < need {
        return Err(DomainError::PermissionDenied(format!(
            "{} needs the account role {need} in account '{}'; you are {held}",
            caller.action.describe(),
            account.name
        )));
    }
    Ok(())
}

/// Whether a caller holding `role` on a project may do `action` there: the table's rule, for
/// deciding which controls to show (the domain services still check every request).
pub fn role_allows(role: ProjectRole, action: Action) -> bool {
    match action.need() {
        Need::Project(need) => role >= need,
        Need::Person | Need::ServerAdmin | Need::Account(_) => false,
    }
}

/// The part of the table that needs no store read, checked for every RPC before its handler
/// runs: the server admin's actions, and what a narrowed token may never do.
pub fn upfront(caller: &Caller) -> DomainResult<()> {
    match caller.action.need() {
        Need::ServerAdmin => {
            refuse_narrowed(caller)?;
            if !caller.server_admin {
                return Err(DomainError::PermissionDenied(format!(
                    "{} needs the server admin token",
                    caller.action.describe()
                )));
            }
            Ok(())
        }
        Need::Account(_) => refuse_narrowed(caller),
        Need::Person if caller.action == Action::ManageOwnTokens => refuse_narrowed(caller),
        Need::Person | Need::Project(_) => Ok(()),
    }
}

/// Refuses callers whose token is narrowed to a project: what is not about one project
/// (accounts, tokens, audit) needs a token with the person's full rights.
pub fn refuse_narrowed(caller: &Caller) -> DomainResult<()> {
    if caller.narrowed.is_some() {
        return Err(DomainError::PermissionDenied(format!(
            "{} needs a token that is not narrowed to a project",
            caller.action.describe()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Narrowed;

    fn access(account_role: Option<&str>, grant_role: Option<&str>) -> ProjectAccess {
        ProjectAccess {
            project: Project {
                id: "p1".into(),
                account_id: "a".into(),
                name: "web".into(),
                default_branch: "main".into(),
                created_ms: 0,
                secrets_version: 0,
            },
            account_role: account_role.map(str::to_string),
            grant_role: grant_role.map(str::to_string),
        }
    }

    #[test]
    fn role_allows_follows_the_table() {
        assert!(role_allows(ProjectRole::Viewer, Action::ViewChangeRequests));
        assert!(!role_allows(
            ProjectRole::Viewer,
            Action::MergeChangeRequest
        ));
        assert!(!role_allows(
            ProjectRole::Editor,
            Action::MergeChangeRequest
        ));
        assert!(role_allows(
            ProjectRole::Manager,
            Action::MergeChangeRequest
        ));
        assert!(role_allows(ProjectRole::Editor, Action::ChatInSession));
        assert!(!role_allows(ProjectRole::Manager, Action::CreatePerson));
    }

    #[test]
    fn effective_role_takes_the_higher_and_caps_by_the_token() {
        let mut c = Caller::person("alice", Action::ViewProject);
        assert_eq!(effective_role(&c, &access(None, None)), None);
        assert_eq!(effective_role(&c, &access(Some("member"), None)), None);
        assert_eq!(
            effective_role(&c, &access(Some("member"), Some("viewer"))),
            Some(ProjectRole::Viewer)
        );
        assert_eq!(
            effective_role(&c, &access(Some("admin"), Some("viewer"))),
            Some(ProjectRole::Manager)
        );
        assert_eq!(
            effective_role(&c, &access(Some("owner"), None)),
            Some(ProjectRole::Manager)
        );
        c.narrowed = Some(Narrowed {
            project_id: Some("p1".into()),
            role: Some(ProjectRole::Editor),
        });
        assert_eq!(
            effective_role(&c, &access(Some("owner"), None)),
            Some(ProjectRole::Editor)
        );
        assert_eq!(
            effective_role(&c, &access(None, Some("viewer"))),
            Some(ProjectRole::Viewer)
        );
        c.narrowed = Some(Narrowed {
            project_id: Some("p2".into()),
            role: None,
        });
        assert_eq!(effective_role(&c, &access(Some("owner"), None)), None);
    }
}
