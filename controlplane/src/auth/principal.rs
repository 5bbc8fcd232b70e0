//! Who is calling, once a token has been resolved.

use crate::permissions::{Action, ProjectRole};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A person, through one of their API tokens.
    Person {
        person_id: String,
        /// Holds the server's admin token (may create people). Not an account role.
        server_admin: bool,
        token_id: String,
        /// What the token is narrowed to, if it is.
        narrowed: Option<Narrowed>,
    },
    /// A session's git token: its own project, pushing only its own branch.
    SessionGit {
        session_id: String,
        project_id: String,
        branch: String,
    },
}

/// How far a narrowed token reaches: one project, at most one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narrowed {
    pub project_id: Option<String>,
    pub role: Option<ProjectRole>,
}

impl Principal {
    /// The person behind the token; `None` for session tokens.
    pub fn person_id(&self) -> Option<&str> {
        match self {
            Principal::Person { person_id, .. } => Some(person_id),
            Principal::SessionGit { .. } => None,
        }
    }

    pub fn is_server_admin(&self) -> bool {
        matches!(
            self,
            Principal::Person {
                server_admin: true,
                ..
            }
        )
    }

    /// The person behind the token doing `action`; `None` for session tokens, which never
    /// act as people.
    pub fn caller(&self, action: Action) -> Option<Caller> {
        match self {
            Principal::Person {
                person_id,
                server_admin,
                token_id,
                narrowed,
            } => Some(Caller {
                person_id: person_id.clone(),
                server_admin: *server_admin,
                token_id: token_id.clone(),
                narrowed: narrowed.clone(),
                action,
                from: String::new(),
            }),
            Principal::SessionGit { .. } => None,
        }
    }
}

/// A person calling a domain service: who, through which token, doing which action of the
/// permission table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub person_id: String,
    pub server_admin: bool,
    /// The token used (empty for callers made inside the control plane).
    pub token_id: String,
    pub narrowed: Option<Narrowed>,
    pub action: Action,
    /// Where the call came from (the peer address the public listener saw), for the audit
    /// log; empty for callers made inside the control plane.
    pub from: String,
}

impl Caller {
    /// A person with a token of their full rights.
    pub fn person(person_id: &str, action: Action) -> Caller {
        Caller {
            person_id: person_id.to_string(),
            server_admin: false,
            token_id: String::new(),
            narrowed: None,
            action,
            from: String::new(),
        }
    }

    /// The same caller doing another action of the table (a domain service that checks a
    /// second permission on the way, such as the creator's role when narrowing a token).
    pub fn doing(&self, action: Action) -> Caller {
        Caller {
            action,
            ..self.clone()
        }
    }

    /// A person's personal account shares their id.
    pub fn personal_account_id(&self) -> &str {
        &self.person_id
    }
}
