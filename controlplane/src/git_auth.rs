//! Tokens → git access: the bridge between bearer-token auth and the git endpoint.

use crate::auth::{Authenticator, Principal, git_read_access};
use crate::git::access::{GitAccess, GitAuthorizer, GitDenied, PushScope};
use crate::store::Store;
use futures::future::BoxFuture;

pub struct StoreGitAuthorizer {
    store: Store,
    authenticator: Authenticator,
}

impl StoreGitAuthorizer {
    pub fn new(store: Store) -> Self {
        Self {
            authenticator: Authenticator::new(store.clone()),
            store,
        }
    }

    async fn decide(&self, repo_name: &str, basic: Option<(String, String)>) -> Result<GitAccess, GitDenied> {
        let (_user, token) = basic.ok_or(GitDenied::Unauthenticated)?;
        let principal = match self.authenticator.authenticate(token.trim()).await {
            Ok(p) => p,
            Err(crate::auth::AuthError::Store(e)) => return Err(GitDenied::Unavailable(e.to_string())),
            Err(_) => return Err(GitDenied::Unauthenticated),
        };
        let name = repo_name.strip_suffix(".git").unwrap_or(repo_name);
        let project = match self.store.find_project(name).await {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Err(GitDenied::NotFound),
            Err(e) => return Err(GitDenied::Unavailable(e.to_string())),
        };
        git_read_access(&principal, &project).map_err(|_| GitDenied::NotFound)?;
        let push = match principal {
            Principal::SessionGit { branch, .. } => PushScope::OnlyBranch(branch),
            _ => PushScope::NonDefaultRefs,
        };
        Ok(GitAccess {
            project_id: project.id,
            default_branch: project.default_branch,
            push,
        })
    }
}

impl GitAuthorizer for StoreGitAuthorizer {
    fn authorize(&self, repo_name: &str, basic: Option<(String, String)>) -> BoxFuture<'_, Result<GitAccess, GitDenied>> {
        let repo_name = repo_name.to_string();
        Box::pin(async move { self.decide(&repo_name, basic).await })
    }
}
