//! Resolves bearer tokens to principals through the store, and creates the first admin.

use super::token_cache::{self, TokenCache};
use super::{AuthError, Narrowed, Principal, TokenKind, generate_token, hash_token, parse_bearer};
use crate::store::{self, Store};

/// Name of the person (and personal account) created on first start.
pub const ADMIN_ACCOUNT_NAME: &str = "admin";
const ADMIN_TOKEN_NAME: &str = "admin (first start)";
/// Longest a revocation waits to be announced to other replicas.
const ANNOUNCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Turns tokens into [`Principal`]s. Cheap to clone; clones share one [`TokenCache`], so
/// the API and the git endpoint of a replica should use clones of one authenticator.
#[derive(Debug, Clone)]
pub struct Authenticator {
    store: Store,
    cache: TokenCache,
}

impl Authenticator {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            cache: TokenCache::default(),
        }
    }

    /// The people's tokens this replica resolved recently.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// A token was revoked: forgotten here at once, and on the other replicas when they hear
    /// of it (a failure to tell them is logged; their entries end within the cache's TTL).
    pub async fn token_revoked(&self, token_id: &str) {
        self.cache.forget_token(token_id);
        let announced = tokio::time::timeout(
            ANNOUNCE_TIMEOUT,
            token_cache::announce_revocation(&self.store, token_id),
        )
        .await;
        match announced {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(token = token_id, error = %e, "telling other replicas of a revoked token")
            }
            Err(_) => tracing::warn!(
                token = token_id,
                "telling other replicas of a revoked token timed out"
            ),
        }
    }

    /// Resolves an `authorization` value (`Bearer <token>`).
    pub async fn authenticate_header(&self, value: &str) -> Result<Principal, AuthError> {
        let token = parse_bearer(value)?;
        self.authenticate(token).await
    }

    /// Resolves a token: a person's API token to `Account`, a session git token to
    /// `SessionGit`. Bootstrap tokens and renewal secrets are only good for (re-)enrollment and
    /// are refused here.
    /// Unknown, revoked and expired tokens are all [`AuthError::InvalidToken`].
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let hash = hash_token(token);
        let now = crate::clock::now_ms();
        match TokenKind::of(token)? {
            TokenKind::Person => {
                if let Some(principal) = self.cache.get(&hash, now) {
                    return Ok(principal);
                }
                self.lookup_person(hash, now).await
            }
            TokenKind::SessionGit => match self.store.lookup_git_token(&hash, now).await {
                Ok(t) => Ok(Principal::SessionGit {
                    session_id: t.session_id,
                    project_id: t.project_id,
                    branch: t.branch,
                }),
                Err(e) if e.is_not_found() => Err(AuthError::InvalidToken),
                Err(e) => Err(AuthError::Store(e)),
            },
            found @ (TokenKind::Bootstrap | TokenKind::Renewal) => Err(AuthError::WrongKind {
                expected: TokenKind::Person,
                found,
            }),
        }
    }
}

impl Authenticator {
    async fn lookup_person(&self, hash: String, now: i64) -> Result<Principal, AuthError> {
        match self.store.lookup_api_token(&hash, now).await {
            Ok((person, token)) => {
                let principal = Principal::Person {
                    person_id: person.id,
                    server_admin: person.server_admin,
                    narrowed: narrowed(&token),
                    token_id: token.id.clone(),
                };
                self.cache
                    .insert(hash, &token.id, token.expires_ms, principal.clone());
                Ok(principal)
            }
            Err(e) if e.is_not_found() => Err(AuthError::InvalidToken),
            Err(e) => Err(AuthError::Store(e)),
        }
    }
}

/// What a token is narrowed to; `None` for a token of the person's full rights. A role the
/// store holds that no longer parses narrows to viewer rather than widening.
fn narrowed(token: &store::ApiToken) -> Option<Narrowed> {
    if token.project_id.is_none() && token.role.is_none() {
        return None;
    }
    Some(Narrowed {
        project_id: token.project_id.clone(),
        role: token
            .role
            .as_deref()
            .map(|r| r.parse().unwrap_or(crate::permissions::ProjectRole::Viewer)),
    })
}

/// Makes sure an admin exists. Creates the `admin` account and returns its first token
/// (for `admin.token`) when there was none; returns `None` when an admin already has a
/// token. An admin left without any token (a crash between the two writes) gets one.
pub async fn bootstrap_admin(store: &Store) -> Result<Option<String>, AuthError> {
    let admin = match existing_admin(store).await? {
        Some(admin) => admin,
        None => match store.create_person(ADMIN_ACCOUNT_NAME, true).await {
            Ok(admin) => admin,
            Err(e) if e.is_already_exists() => match existing_admin(store).await? {
                // Another replica won the race.
                Some(_) => return Ok(None),
                None => {
                    return Err(AuthError::Store(store::Error::AlreadyExists(format!(
                        "a person named '{ADMIN_ACCOUNT_NAME}' who is not the server admin"
                    ))));
                }
            },
            Err(e) => return Err(AuthError::Store(e)),
        },
    };
    if !store.list_api_tokens(&admin.id).await?.is_empty() {
        return Ok(None);
    }
    let token = generate_token(TokenKind::Person);
    store
        .create_api_token(&admin.id, ADMIN_TOKEN_NAME, &hash_token(&token))
        .await?;
    Ok(Some(token))
}

async fn existing_admin(store: &Store) -> Result<Option<store::Person>, AuthError> {
    Ok(store.server_admin().await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    async fn sqlite_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("k.db"), StoreOptions::default())
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn bootstraps_the_admin_once() {
        let (_dir, store) = sqlite_store().await;
        let token = bootstrap_admin(&store)
            .await
            .unwrap()
            .expect("first start mints a token");
        assert!(token.starts_with("kxp_"));
        assert_eq!(bootstrap_admin(&store).await.unwrap(), None);
        let auth = Authenticator::new(store.clone());
        let p = auth
            .authenticate_header(&format!("Bearer {token}"))
            .await
            .unwrap();
        assert!(p.is_server_admin());
        let admin = store.get_person_by_name(ADMIN_ACCOUNT_NAME).await.unwrap();
        assert_eq!(p.person_id(), Some(admin.id.as_str()));
    }

    #[tokio::test]
    async fn concurrent_bootstraps_mint_one_token() {
        let (_dir, store) = sqlite_store().await;
        let (a, b) = tokio::join!(bootstrap_admin(&store), bootstrap_admin(&store));
        let minted = [a.unwrap(), b.unwrap()].into_iter().flatten().count();
        assert!(minted >= 1);
        let admin = store.get_person_by_name(ADMIN_ACCOUNT_NAME).await.unwrap();
        assert_eq!(
            store.list_api_tokens(&admin.id).await.unwrap().len(),
            minted
        );
    }

    #[tokio::test]
    async fn resolves_people_and_sessions_and_refuses_the_rest() {
        let (_dir, store) = sqlite_store().await;
        let auth = Authenticator::new(store.clone());
        let alice = store.create_person("alice", false).await.unwrap();
        let token = generate_token(TokenKind::Person);
        let info = store
            .create_api_token(&alice.id, "laptop", &hash_token(&token))
            .await
            .unwrap();
        assert_eq!(
            auth.authenticate(&token).await.unwrap(),
            Principal::Person {
                person_id: alice.id.clone(),
                server_admin: false,
                token_id: info.id.clone(),
                narrowed: None,
            }
        );

        let project = store
            .create_project(&alice.id, "web", "main")
            .await
            .unwrap();
        let (session, _) = store
            .create_session(&store::NewSession {
                project_id: project.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let git = generate_token(TokenKind::SessionGit);
        store
            .create_git_token(
                &hash_token(&git),
                &session.id,
                &project.id,
                &session.id,
                crate::clock::now_ms() + 60_000,
            )
            .await
            .unwrap();
        assert_eq!(
            auth.authenticate(&git).await.unwrap(),
            Principal::SessionGit {
                session_id: session.id.clone(),
                project_id: project.id.clone(),
                branch: session.id.clone()
            }
        );
        let expired = generate_token(TokenKind::SessionGit);
        store
            .create_git_token(
                &hash_token(&expired),
                &session.id,
                &project.id,
                &session.id,
                1,
            )
            .await
            .unwrap();
        assert!(matches!(
            auth.authenticate(&expired).await,
            Err(AuthError::InvalidToken)
        ));

        let boot = generate_token(TokenKind::Bootstrap);
        assert!(matches!(
            auth.authenticate(&boot).await,
            Err(AuthError::WrongKind { .. })
        ));
        let unknown = generate_token(TokenKind::Person);
        assert!(matches!(
            auth.authenticate(&unknown).await,
            Err(AuthError::InvalidToken)
        ));
        assert!(matches!(
            auth.authenticate("kxp_short").await,
            Err(AuthError::Malformed(_))
        ));

        store
            .revoke_api_token(&alice.id, &info.id, crate::clock::now_ms())
            .await
            .unwrap();
        // Resolved a moment ago, so remembered until the revocation is announced.
        assert!(auth.authenticate(&token).await.is_ok());
        auth.token_revoked(&info.id).await;
        assert!(matches!(
            auth.authenticate(&token).await,
            Err(AuthError::InvalidToken)
        ));
    }
}
