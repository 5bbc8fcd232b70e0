//! The domain layer's one error type, and its one mapping to gRPC statuses.
//!
//! Domain services (projects, change requests, secrets, sessions, triggers, accounts) return
//! [`DomainError`]; the API and the agent gateway turn it into a [`tonic::Status`] through the
//! single `From` below. The kinds are what a client acts on: NOT_FOUND (wrong name, or not
//! yours), FAILED_PRECONDITION (right name, wrong state), ABORTED (lost a race, retry now),
//! UNAVAILABLE (a dependency such as the database is out of reach, retry later) and INTERNAL (a
//! bug or damaged data). A store outage is therefore never NOT_FOUND.
//!
//! Messages are complete sentences about one thing ("project 'web' not found") and are passed
//! on unchanged, cut to [`MAX_STATUS_MESSAGE`] bytes: a status message travels in an HTTP/2
//! trailer, and one that echoed a 100,000-byte name back would break the client's connection
//! instead of telling it what was wrong.

use tonic::Status;

/// Longest status message sent; longer ones are cut at a character boundary and marked.
pub const MAX_STATUS_MESSAGE: usize = 1024;

/// Why a domain operation did not happen. Cloneable: one failed group commit answers many
/// callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// It does not exist, or the caller may not learn that it does.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request itself is wrong; repeating it will not help.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is fine but the state of things refuses it (a merged change request, an
    /// ended session, a rejected manifest).
    #[error("{0}")]
    Precondition(String),
    /// Lost a race with a concurrent change; retrying at once may succeed.
    #[error("{0}")]
    Aborted(String),
    /// A dependency (the database, the repository storage) cannot be reached right now.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or damaged data.
    #[error("{0}")]
    Internal(String),
}

pub type DomainResult<T> = Result<T, DomainError>;

impl DomainError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, DomainError::NotFound(_))
    }
}

impl From<crate::store::Error> for DomainError {
    fn from(e: crate::store::Error) -> Self {
        use crate::store::Error as E;
        let message = e.to_string();
        match e {
            E::NotFound(_) => DomainError::NotFound(message),
            E::AlreadyExists(_) => DomainError::AlreadyExists(message),
            E::Invalid { .. } => DomainError::Invalid(message),
            E::BootstrapToken(_) => DomainError::Unauthenticated(message),
            E::LastOwner(_) => DomainError::Precondition(message),
            // Said in so many words: the caller reached this server, whose database it is
            // that does not answer (the CLI tells the two apart by this prefix).
            e if e.is_unavailable() => {
                DomainError::Unavailable(format!("{DATABASE_UNAVAILABLE} ({message})"))
            }
            _ => DomainError::Internal(message),
        }
    }
}

/// How a store outage starts its UNAVAILABLE message.
pub const DATABASE_UNAVAILABLE: &str = "the database is unavailable";

impl From<DomainError> for Status {
    fn from(e: DomainError) -> Self {
        let (code, message) = match e {
            DomainError::NotFound(m) => (tonic::Code::NotFound, m),
            DomainError::AlreadyExists(m) => (tonic::Code::AlreadyExists, m),
            DomainError::Invalid(m) => (tonic::Code::InvalidArgument, m),
            DomainError::Unauthenticated(m) => (tonic::Code::Unauthenticated, m),
            DomainError::PermissionDenied(m) => (tonic::Code::PermissionDenied, m),
            DomainError::Precondition(m) => (tonic::Code::FailedPrecondition, m),
            DomainError::Aborted(m) => (tonic::Code::Aborted, m),
            DomainError::Unavailable(m) => {
                tracing::warn!(error = %m, "dependency unavailable");
                (tonic::Code::Unavailable, m)
            }
            DomainError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                (tonic::Code::Internal, m)
            }
        };
        Status::new(code, bounded(message))
    }
}

/// `message`, cut to [`MAX_STATUS_MESSAGE`] bytes.
fn bounded(mut message: String) -> String {
    if message.len() <= MAX_STATUS_MESSAGE {
        return message;
    }
    const MARK: &str = "… (cut)";
    let mut end = MAX_STATUS_MESSAGE - MARK.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(MARK);
    message
}

/// Refuses a request string longer than `max` bytes before anything looks it up or echoes
/// it back.
pub fn check_len(field: &str, value: &str, max: usize) -> DomainResult<()> {
    if value.len() > max {
        return Err(DomainError::Invalid(format!(
            "{field} is {} bytes, at most {max} allowed",
            value.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn store_errors_keep_their_meaning() {
        use crate::store::Error as E;
        let not_found: Status = DomainError::from(E::NotFound("project 'nope'".into())).into();
        assert_eq!(not_found.code(), Code::NotFound);
        assert_eq!(not_found.message(), "project 'nope' not found");
        let taken: Status = DomainError::from(E::AlreadyExists("project 'web'".into())).into();
        assert_eq!(taken.code(), Code::AlreadyExists);
        assert_eq!(taken.message(), "project 'web' already exists");
        let outage: Status = DomainError::from(E::Database {
            context: "reading session s1".into(),
            source: sqlx::Error::PoolTimedOut,
        })
        .into();
        assert_eq!(outage.code(), Code::Unavailable, "{outage:?}");
        assert!(
            outage.message().starts_with(DATABASE_UNAVAILABLE),
            "{outage:?}"
        );
        let corrupt: Status = DomainError::from(E::Corrupt {
            what: "session status",
            reason: "\"zombie\"".into(),
        })
        .into();
        assert_eq!(corrupt.code(), Code::Internal);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let status: Status = DomainError::Invalid(format!("name {}", "é".repeat(100_000))).into();
        assert!(status.message().len() <= MAX_STATUS_MESSAGE);
        assert!(
            status.message().ends_with("… (cut)"),
            "{}",
            status.message()
        );
        let short: Status = DomainError::Invalid("short".into()).into();
        assert_eq!(short.message(), "short");
    }

    #[test]
    fn request_strings_are_bounded() {
        check_len("project", "web", 3).unwrap();
        let err = check_len("project", &"x".repeat(100_000), 255).unwrap_err();
        assert_eq!(
            err,
            DomainError::Invalid("project is 100000 bytes, at most 255 allowed".into())
        );
    }
}
