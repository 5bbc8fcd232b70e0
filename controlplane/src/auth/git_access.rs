//! What a person may do over git, by their role on the project (the permission table's
//! `GitClone` and `GitPushBranch`). The default branch moves only by a merged change request,
//! so no role may push it; the pre-receive hook enforces that for every push.

use super::Caller;
use crate::git::access::PushScope;
use crate::permissions::{Action, Need, ProjectRole, effective_role};
use crate::store::ProjectAccess;

/// `None`: the person may not see the repository at all. Otherwise what they may push.
pub fn person_git_scope(caller: &Caller, access: &ProjectAccess) -> Option<PushScope> {
    let role = effective_role(caller, access)?;
    if role < least(Action::GitClone) {
        return None;
    }
    Some(if role >= least(Action::GitPushBranch) {
        PushScope::NonDefaultRefs
    } else {
        PushScope::None
    })
}

fn least(action: Action) -> ProjectRole {
    match action.need() {
        Need::Project(role) => role,
        // The table gives both git actions a project role; anything else would be a bug
        // there, and the strictest reading is the safe one.
        _ => ProjectRole::Manager,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Project;

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
    fn clone_needs_viewer_and_push_needs_editor() {
        let c = Caller::person("alice", Action::GitClone);
        assert_eq!(person_git_scope(&c, &access(None, None)), None);
        assert_eq!(person_git_scope(&c, &access(Some("member"), None)), None);
        assert_eq!(
            person_git_scope(&c, &access(None, Some("viewer"))),
            Some(PushScope::None)
        );
        assert_eq!(
            person_git_scope(&c, &access(None, Some("editor"))),
            Some(PushScope::NonDefaultRefs)
        );
        assert_eq!(
            person_git_scope(&c, &access(Some("owner"), None)),
            Some(PushScope::NonDefaultRefs)
        );
    }
}
