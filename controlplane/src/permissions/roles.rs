//! Account roles and project roles, ordered from least to most.

use std::fmt;
use std::str::FromStr;

/// A person's role in an account. `Member` gives no project access by itself; `Admin` and
/// `Owner` are implicitly `Manager` of every project of the account. Not to be confused with
/// the server admin (the holder of `admin.token`), which is no account role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountRole {
    Member,
    Admin,
    Owner,
}

/// A person's role on one project, granted directly or implied by an account role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProjectRole {
    Viewer,
    Editor,
    Manager,
}

/// A role name that is not one of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} role '{found}' (expected {expected})")]
pub struct UnknownRole {
    pub what: &'static str,
    pub found: String,
    pub expected: &'static str,
}

impl AccountRole {
    pub const ALL: [AccountRole; 3] = [AccountRole::Member, AccountRole::Admin, AccountRole::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountRole::Member => "member",
            AccountRole::Admin => "admin",
            AccountRole::Owner => "owner",
        }
    }

    /// The project role this account role implies on the account's projects.
    pub fn implied_project_role(self) -> Option<ProjectRole> {
        match self {
            AccountRole::Member => None,
            AccountRole::Admin | AccountRole::Owner => Some(ProjectRole::Manager),
        }
    }
}

impl ProjectRole {
    pub const ALL: [ProjectRole; 3] = [
        ProjectRole::Viewer,
        ProjectRole::Editor,
        ProjectRole::Manager,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProjectRole::Viewer => "viewer",
            ProjectRole::Editor => "editor",
            ProjectRole::Manager => "manager",
        }
    }
}

impl FromStr for AccountRole {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AccountRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole {
                what: "account",
                found: s.chars().take(64).collect(),
                expected: "owner, admin or member",
            })
    }
}

impl FromStr for ProjectRole {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProjectRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole {
                what: "project",
                found: s.chars().take(64).collect(),
                expected: "manager, editor or viewer",
            })
    }
}

impl fmt::Display for AccountRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ProjectRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_order() {
        for r in AccountRole::ALL {
            assert_eq!(r.as_str().parse::<AccountRole>().unwrap(), r);
        }
        for r in ProjectRole::ALL {
            assert_eq!(r.as_str().parse::<ProjectRole>().unwrap(), r);
        }
        assert!(ProjectRole::Viewer < ProjectRole::Editor);
        assert!(ProjectRole::Editor < ProjectRole::Manager);
        assert!(AccountRole::Member < AccountRole::Admin);
        assert!(AccountRole::Admin < AccountRole::Owner);
        let e = "root".parse::<AccountRole>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown account role 'root' (expected owner, admin or member)"
        );
        assert!("Viewer".parse::<ProjectRole>().is_err());
        assert_eq!(AccountRole::Member.implied_project_role(), None);
        assert_eq!(
            AccountRole::Admin.implied_project_role(),
            Some(ProjectRole::Manager)
        );
    }
}
