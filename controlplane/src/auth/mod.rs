//! Authentication: token formats and hashing, resolving bearer tokens to a [`Principal`],
//! creating the first admin, and the git endpoint's push rules.

mod authenticator;
mod git_access;
mod git_auth;
mod principal;
mod tokens;

pub use authenticator::{ADMIN_ACCOUNT_NAME, Authenticator, bootstrap_admin};
pub use git_access::{DEFAULT_BRANCH_REFUSAL, Denied, git_access, git_read_access};
pub use git_auth::GitAuth;
pub use principal::{Caller, Principal};
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
