//! Who is calling, once a token has been resolved.

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A person, scoped to their account's projects. The admin is the account with
    /// `admin == true` (it may also create accounts).
    Account { account_id: String, admin: bool },
    /// A session's git token: its own project, pushing only its own branch.
    SessionGit {
        session_id: String,
        project_id: String,
        branch: String,
    },
}

impl Principal {
    /// The account a person acts as; `None` for session tokens.
    pub fn account_id(&self) -> Option<&str> {
        match self {
            Principal::Account { account_id, .. } => Some(account_id),
            Principal::SessionGit { .. } => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Account { admin: true, .. })
    }
}
