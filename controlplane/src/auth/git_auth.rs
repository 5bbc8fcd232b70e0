//! The git endpoint's authorizer: HTTP Basic credentials (the password is a token) to a
//! project and a push scope, through the same [`Authenticator`] the API uses.

use futures::future::BoxFuture;

use super::{AuthError, Authenticator, Principal, person_git_scope};
use crate::git::access::{GitAccess, GitAuthorizer, GitDenied, PushScope};
use crate::permissions::Action;
use crate::store::Store;

pub struct GitAuth {
    store: Store,
    authenticator: Authenticator,
}

impl GitAuth {
    /// Resolves tokens with `authenticator` (a clone of the API's, so both share the
    /// replica's token cache).
    pub fn new(store: Store, authenticator: Authenticator) -> Self {
        Self {
            authenticator,
            store,
        }
    }

    async fn decide(
        &self,
        repo_name: &str,
        basic: Option<(String, String)>,
    ) -> Result<GitAccess, GitDenied> {
        let (_user, token) = basic.ok_or(GitDenied::Unauthenticated)?;
        let principal = match self.authenticator.authenticate(&token).await {
            Ok(p) => p,
            Err(AuthError::Store(e)) => return Err(GitDenied::Unavailable(e.to_string())),
            Err(_) => return Err(GitDenied::Unauthenticated),
        };
        let unavailable = |e: crate::store::Error| {
            if e.is_not_found() {
                GitDenied::NotFound
            } else {
                GitDenied::Unavailable(e.to_string())
            }
        };
        let credential = match &principal {
            Principal::Person { token_id, .. } if !token_id.is_empty() => Some(token_id.clone()),
            _ => None,
        };
        let (project, push) = match &principal {
            Principal::Person { .. } => {
                let caller = principal
                    .caller(Action::GitClone)
                    .ok_or(GitDenied::Unauthenticated)?;
                let access = self
                    .store
                    .project_access(&caller.person_id, repo_name)
                    .await
                    .map_err(unavailable)?;
                let push = person_git_scope(&caller, &access).ok_or(GitDenied::NotFound)?;
                (access.project, push)
            }
            Principal::SessionGit {
                project_id, branch, ..
            } => {
                let project = self
                    .store
                    .find_project(repo_name)
                    .await
                    .map_err(unavailable)?;
                if project.id != *project_id {
                    return Err(GitDenied::NotFound);
                }
                (project, PushScope::OnlyBranch(branch.clone()))
            }
        };
        Ok(GitAccess {
            project_id: project.id,
            default_branch: project.default_branch,
            push,
            credential,
        })
    }
}

impl GitAuthorizer for GitAuth {
    fn authorize(
        &self,
        repo_name: &str,
        basic: Option<(String, String)>,
    ) -> BoxFuture<'_, Result<GitAccess, GitDenied>> {
        let repo_name = repo_name.to_string();
        Box::pin(async move { self.decide(&repo_name, basic).await })
    }

    fn still_allowed(&self, access: &GitAccess) -> BoxFuture<'_, Result<bool, GitDenied>> {
        let token_id = access.credential.clone();
        Box::pin(async move {
            let Some(token_id) = token_id else {
                return Ok(true);
            };
            self.store
                .api_token_live(&token_id, crate::clock::now_ms())
                .await
                .map_err(|e| GitDenied::Unavailable(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{TokenKind, generate_token, hash_token};
    use crate::clock::now_ms;
    use crate::store::{NewSession, StoreOptions};

    #[tokio::test]
    async fn maps_tokens_to_projects_and_push_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("k.db"), StoreOptions::default())
            .await
            .unwrap();
        let alice = store.create_person("alice", false).await.unwrap();
        let bob = store.create_person("bob", false).await.unwrap();
        let root = store.create_person("root", true).await.unwrap();
        let viewer = store.create_person("vera", false).await.unwrap();
        let web = store
            .create_project(&alice.id, "web", "main")
            .await
            .unwrap();
        let person = |account_id: String| {
            let store = store.clone();
            async move {
                let t = generate_token(TokenKind::Person);
                store
                    .create_api_token(&account_id, "t", &hash_token(&t))
                    .await
                    .unwrap();
                Some(("x".to_string(), t))
            }
        };
        let alice_basic = person(alice.id.clone()).await;
        let bob_basic = person(bob.id.clone()).await;
        let root_basic = person(root.id.clone()).await;
        let viewer_basic = person(viewer.id.clone()).await;
        let (session, _) = store
            .create_session(&NewSession {
                project_id: web.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let git = generate_token(TokenKind::SessionGit);
        store
            .create_git_token(
                &hash_token(&git),
                &session.id,
                &web.id,
                &session.id,
                now_ms() + 60_000,
            )
            .await
            .unwrap();

        let auth = GitAuth::new(store.clone(), Authenticator::new(store.clone()));
        let access = auth.authorize("web", alice_basic.clone()).await.unwrap();
        assert_eq!(
            access,
            GitAccess {
                project_id: web.id.clone(),
                default_branch: "main".into(),
                push: PushScope::NonDefaultRefs,
                credential: access.credential.clone(),
            }
        );
        // The server admin has no project role by being the server admin.
        assert_eq!(
            auth.authorize("web", root_basic).await.unwrap_err(),
            GitDenied::NotFound
        );
        assert_eq!(
            auth.authorize("web", viewer_basic.clone())
                .await
                .unwrap_err(),
            GitDenied::NotFound
        );
        store
            .grant(&web.id, &viewer.id, "viewer", None, &alice.id)
            .await
            .unwrap();
        assert_eq!(
            auth.authorize("web", viewer_basic.clone())
                .await
                .unwrap()
                .push,
            PushScope::None
        );
        store
            .grant(&web.id, &viewer.id, "editor", None, &alice.id)
            .await
            .unwrap();
        assert_eq!(
            auth.authorize("web", viewer_basic.clone())
                .await
                .unwrap()
                .push,
            PushScope::NonDefaultRefs
        );
        store
            .grant(&web.id, &viewer.id, "editor", Some(now_ms() - 1), &alice.id)
            .await
            .unwrap();
        assert_eq!(
            auth.authorize("web", viewer_basic).await.unwrap_err(),
            GitDenied::NotFound,
            "an expired grant gives nothing"
        );
        assert_eq!(
            auth.authorize("web", Some(("x".into(), git.clone())))
                .await
                .unwrap()
                .push,
            PushScope::OnlyBranch(session.id.clone())
        );
        assert_eq!(
            auth.authorize("web", bob_basic).await.unwrap_err(),
            GitDenied::NotFound
        );
        assert_eq!(
            auth.authorize("nope", alice_basic).await.unwrap_err(),
            GitDenied::NotFound
        );
        assert_eq!(
            auth.authorize("web", None).await.unwrap_err(),
            GitDenied::Unauthenticated
        );
        assert_eq!(
            auth.authorize("web", Some(("x".into(), "hunter2".into())))
                .await
                .unwrap_err(),
            GitDenied::Unauthenticated
        );
        let boot = generate_token(TokenKind::Bootstrap);
        assert_eq!(
            auth.authorize("web", Some(("x".into(), boot)))
                .await
                .unwrap_err(),
            GitDenied::Unauthenticated
        );
        store.revoke_session_git_tokens(&session.id).await.unwrap();
        assert_eq!(
            auth.authorize("web", Some(("x".into(), git)))
                .await
                .unwrap_err(),
            GitDenied::Unauthenticated
        );
    }
}
