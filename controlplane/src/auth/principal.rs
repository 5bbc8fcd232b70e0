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

    /// The person behind the token; `None` for session tokens, which never act as people.
    pub fn caller(&self) -> Option<Caller> {
        match self {
            Principal::Account { account_id, admin } => Some(Caller {
                account_id: account_id.clone(),
                admin: *admin,
            }),
            Principal::SessionGit { .. } => None,
        }
    }
}

/// A person calling a domain service: their account and whether it is the admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account_id: String,
    pub admin: bool,
}
