//! Who may read or push a repository over HTTP: the contract between git hosting and
//! whatever resolves tokens (the control plane's auth layer implements [`GitAuthorizer`]).

use futures::future::BoxFuture;

/// Decides, per request, whether the credentials may use the repository named in the URL.
pub trait GitAuthorizer: Send + Sync {
    /// `repo_name` is the `<project-name>` of `/git/<project-name>.git/...`; `basic` holds the
    /// HTTP Basic credentials `(user, password)`, where the password is a token.
    fn authorize(
        &self,
        repo_name: &str,
        basic: Option<(String, String)>,
    ) -> BoxFuture<'_, Result<GitAccess, GitDenied>>;

    /// Whether `access` still holds, asked every second while its request runs: a revoked or
    /// expired credential ends a clone or push in flight. Errors (a store outage) are not a
    /// revocation. Credentials that cannot be revoked mid-request always hold.
    fn still_allowed(&self, access: &GitAccess) -> BoxFuture<'_, Result<bool, GitDenied>> {
        let _ = access;
        Box::pin(async { Ok(true) })
    }
}

/// What an authorized request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitAccess {
    /// The project whose repository is served (`<repos-root>/<project_id>.git`).
    pub project_id: String,
    /// Nobody may push to this branch: work reaches it only through a merged change request.
    pub default_branch: String,
    pub push: PushScope,
    /// The revocable credential behind the request (a person's token id), which
    /// [`GitAuthorizer::still_allowed`] re-checks; `None` when there is nothing to re-check.
    pub credential: Option<String>,
}

/// Which refs a push may create, update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushScope {
    /// Any ref except the default branch and `refs/kortix/` (people's tokens).
    NonDefaultRefs,
    /// Only `refs/heads/<branch>` and `refs/kortix/wip/<branch>` (a session's token: its
    /// branch, and the side ref its agent saves uncommitted work to).
    OnlyBranch(String),
    /// Read only.
    None,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitDenied {
    /// No or wrong credentials: `401` with `WWW-Authenticate: Basic realm="kortix"`.
    #[error("authentication required")]
    Unauthenticated,
    /// No such repository, or one the credentials may not see: `404` either way, so names of
    /// other accounts' projects do not leak.
    #[error("repository not found")]
    NotFound,
    /// The authorizer could not decide (its store is down): `503`, and the client may retry.
    #[error("authorization unavailable: {0}")]
    Unavailable(String),
}
