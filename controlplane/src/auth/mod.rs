//! Authentication: token formats and hashing, resolving bearer tokens to a [`Principal`],
//! creating the first server admin, and what people may do over git.

mod authenticator;
mod git_access;
mod git_auth;
mod principal;
pub mod token_cache;
mod tokens;

pub use authenticator::{ADMIN_ACCOUNT_NAME, Authenticator, bootstrap_admin};
pub use git_access::person_git_scope;
pub use git_auth::GitAuth;
pub use principal::{Caller, Narrowed, Principal};
pub use tokens::{
    MAX_AUTHORIZATION_LEN, TokenKind, check_token_format, generate_token, hash_token, parse_bearer,
    parse_git_authorization,
};

/// Why a caller could not be authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing authorization")]
    Missing,
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    #[error("expected a {expected}, got a {found}")]
    WrongKind {
        expected: TokenKind,
        found: TokenKind,
    },
    /// Unknown, revoked or expired: deliberately indistinguishable.
    #[error("invalid, revoked or expired token")]
    InvalidToken,
    #[error("checking credentials: {0}")]
    Store(#[from] crate::store::Error),
}

impl AuthError {
    /// The gRPC status for a caller refused with this error: a store that could not answer
    /// is the server's trouble (UNAVAILABLE while its database is away), not the caller's
    /// credentials.
    pub fn into_status(self) -> tonic::Status {
        match self {
            AuthError::Store(e) => crate::error::DomainError::from(e).into(),
            e => tonic::Status::unauthenticated(e.to_string()),
        }
    }
}
