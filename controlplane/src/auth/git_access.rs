//! Who may push which ref through the git endpoint. The default branch moves only by a
//! merged change request, so no token of any kind may push it.

use super::Principal;
use crate::store::Project;

/// Why a push (or fetch) was refused; the text is shown to the git client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

pub const DEFAULT_BRANCH_REFUSAL: &str = "pushes to the default branch are refused: open a change request (kortix cr open) to land work there";

/// Whether `principal` may fetch from `project`. Another account's project reads as
/// missing, so its existence is not confirmed.
pub fn git_read_access(principal: &Principal, project: &Project) -> Result<(), Denied> {
    let allowed = match principal {
        Principal::Account { admin: true, .. } => true,
        Principal::Account { account_id, .. } => *account_id == project.account_id,
        Principal::SessionGit { project_id, .. } => *project_id == project.id,
    };
    if allowed {
        Ok(())
    } else {
        Err(Denied(format!("repository '{}' not found", project.name)))
    }
}

/// Whether `principal` may update `ref_name` (a full ref, `refs/heads/…`) in `project`:
/// people may push any ref but the default branch; a session git token only
/// `refs/heads/<its branch>`.
pub fn git_access(principal: &Principal, project: &Project, ref_name: &str) -> Result<(), Denied> {
    git_read_access(principal, project)?;
    if !ref_name.starts_with("refs/") || ref_name.len() > 1024 {
        return Err(Denied(format!("invalid ref name {ref_name:?}")));
    }
    if ref_name.strip_prefix("refs/heads/") == Some(project.default_branch.as_str()) {
        return Err(Denied(DEFAULT_BRANCH_REFUSAL.to_string()));
    }
    match principal {
        Principal::Account { .. } => Ok(()),
        Principal::SessionGit { branch, .. } => {
            if ref_name.strip_prefix("refs/heads/") == Some(branch.as_str()) {
                Ok(())
            } else {
                Err(Denied(format!(
                    "this session may push only refs/heads/{branch}, not {ref_name}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> Project {
        Project {
            id: "p1".into(),
            account_id: "alice".into(),
            name: "web".into(),
            default_branch: "main".into(),
            created_ms: 0,
            secrets_version: 0,
        }
    }

    fn person(id: &str) -> Principal {
        Principal::Account {
            account_id: id.into(),
            admin: false,
        }
    }

    fn session(project_id: &str, branch: &str) -> Principal {
        Principal::SessionGit {
            session_id: branch.into(),
            project_id: project_id.into(),
            branch: branch.into(),
        }
    }

    #[test]
    fn people_push_any_ref_but_the_default_branch() {
        let p = project();
        for r in [
            "refs/heads/feature",
            "refs/heads/s-123",
            "refs/tags/v1",
            "refs/heads/main-2",
        ] {
            git_access(&person("alice"), &p, r).unwrap();
        }
        let refused = git_access(&person("alice"), &p, "refs/heads/main").unwrap_err();
        assert_eq!(refused.to_string(), DEFAULT_BRANCH_REFUSAL);
    }

    #[test]
    fn nobody_moves_the_default_branch() {
        let p = project();
        let admin = Principal::Account {
            account_id: "root".into(),
            admin: true,
        };
        assert_eq!(
            git_access(&admin, &p, "refs/heads/main").unwrap_err().0,
            DEFAULT_BRANCH_REFUSAL
        );
        // Not even a session whose branch is (somehow) named like it.
        assert_eq!(
            git_access(&session("p1", "main"), &p, "refs/heads/main")
                .unwrap_err()
                .0,
            DEFAULT_BRANCH_REFUSAL
        );
        let mut trunk = project();
        trunk.default_branch = "trunk".into();
        git_access(&person("alice"), &trunk, "refs/heads/main").unwrap();
        assert!(git_access(&person("alice"), &trunk, "refs/heads/trunk").is_err());
    }

    #[test]
    fn session_tokens_push_only_their_branch() {
        let p = project();
        let s = session("p1", "s-42");
        git_access(&s, &p, "refs/heads/s-42").unwrap();
        for r in [
            "refs/heads/s-43",
            "refs/heads/s-42/x",
            "refs/tags/s-42",
            "refs/heads/main",
        ] {
            assert!(git_access(&s, &p, r).is_err(), "{r}");
        }
        // Another project's token is refused outright.
        let other = session("p2", "s-42");
        assert!(
            git_access(&other, &p, "refs/heads/s-42")
                .unwrap_err()
                .0
                .contains("not found")
        );
    }

    #[test]
    fn other_accounts_see_nothing_and_admins_see_everything() {
        let p = project();
        let denied = git_read_access(&person("bob"), &p).unwrap_err();
        assert_eq!(denied.0, "repository 'web' not found");
        assert!(git_access(&person("bob"), &p, "refs/heads/x").is_err());
        git_read_access(
            &Principal::Account {
                account_id: "root".into(),
                admin: true,
            },
            &p,
        )
        .unwrap();
        git_read_access(&session("p1", "s"), &p).unwrap();
        assert!(git_read_access(&session("p2", "s"), &p).is_err());
    }

    #[test]
    fn refs_must_be_full_names() {
        let p = project();
        for r in ["main", "heads/x", "", "HEAD"] {
            assert!(git_access(&person("alice"), &p, r).is_err(), "{r}");
        }
    }
}
