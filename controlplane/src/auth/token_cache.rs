//! A replica's memory of the people's tokens it recently resolved, so a call pays no store
//! round trip to authenticate. Revocation is the only change a resolved token can undergo
//! (a token's person, narrowing and expiry are fixed when it is minted), so an entry is
//! forgotten when its token is revoked — here at once, on other replicas sharing a PostgreSQL
//! database through a notification on [`AUTH_CHANNEL`], and everywhere after [`TTL`] should a
//! notification be lost without the listener noticing. A listener that loses its connection
//! forgets everything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Principal;
use crate::store::{Heard, Store};

/// The channel revocations travel on between replicas.
pub const AUTH_CHANNEL: &str = "kortix_auth";
/// Longest an entry is trusted without asking the store again.
pub const TTL: Duration = Duration::from_secs(10);
/// Entries kept; when full, expired ones go first, then everything (a refill is cheap).
pub const CAPACITY: usize = 8_192;
const REVOKED_PREFIX: &str = "token-revoked:";

#[derive(Debug, Clone)]
struct Entry {
    principal: Principal,
    token_id: String,
    /// The token's own expiry (ms since the epoch), if it has one.
    expires_ms: Option<i64>,
    cached: Instant,
}

/// Cheap to clone; clones share the entries.
#[derive(Debug, Clone, Default)]
pub struct TokenCache {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl TokenCache {
    /// The principal of the token with `hash`, if resolved within [`TTL`] and unexpired at
    /// `now_ms`.
    pub fn get(&self, hash: &str, now_ms: i64) -> Option<Principal> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(hash)?;
        if entry.cached.elapsed() >= TTL || entry.expires_ms.is_some_and(|e| e <= now_ms) {
            entries.remove(hash);
            return None;
        }
        Some(entry.principal.clone())
    }

    pub fn insert(
        &self,
        hash: String,
        token_id: &str,
        expires_ms: Option<i64>,
        principal: Principal,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(&hash) {
            entries.retain(|_, e| e.cached.elapsed() < TTL);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            hash,
            Entry {
                principal,
                token_id: token_id.to_string(),
                expires_ms,
                cached: Instant::now(),
            },
        );
    }

    /// Forgets the token with id `token_id`.
    pub fn forget_token(&self, token_id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, e| e.token_id != token_id);
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What [`listen`] applies: a revocation names the token it ends.
    fn apply(&self, payload: &str) {
        match payload.strip_prefix(REVOKED_PREFIX) {
            Some(id) if !id.is_empty() => self.forget_token(id),
            _ => tracing::debug!(payload, "ignoring a malformed token notification"),
        }
    }
}

/// Tells the other replicas that `token_id` is revoked (nothing to tell on SQLite, which has
/// one process per data file).
pub async fn announce_revocation(store: &Store, token_id: &str) -> crate::store::Result<()> {
    store
        .notify_on(AUTH_CHANNEL, &[format!("{REVOKED_PREFIX}{token_id}")])
        .await
}

/// Applies other replicas' revocations to `cache` until `until` resolves. Does nothing on
/// SQLite.
pub async fn listen(store: Store, cache: TokenCache, until: impl std::future::Future<Output = ()>) {
    tokio::select! {
        _ = until => {}
        _ = apply_revocations(store, cache) => {}
    }
}

async fn apply_revocations(store: Store, cache: TokenCache) {
    store
        .follow_channel(AUTH_CHANNEL, |heard| match heard {
            Heard::Wake(payload) => cache.apply(&payload),
            // Whatever was revoked while nobody listened is unknown here.
            Heard::Gap => cache.clear(),
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal::Person {
            person_id: "p1".into(),
            server_admin: false,
            narrowed: None,
            token_id: "t1".into(),
        }
    }

    #[test]
    fn entries_answer_until_revoked_expired_or_stale() {
        let cache = TokenCache::default();
        cache.insert("h1".into(), "t1", None, alice());
        cache.insert("h2".into(), "t2", Some(1_000), alice());
        assert_eq!(cache.get("h1", 0), Some(alice()));
        assert_eq!(cache.get("h2", 999), Some(alice()));
        // The token's own expiry ends the entry.
        assert_eq!(cache.get("h2", 1_000), None);
        assert_eq!(cache.len(), 1);
        // A revocation heard from another replica ends it; malformed ones change nothing.
        cache.apply("something else");
        cache.apply(REVOKED_PREFIX);
        assert_eq!(cache.get("h1", 0), Some(alice()));
        cache.apply(&format!("{REVOKED_PREFIX}t1"));
        assert_eq!(cache.get("h1", 0), None);
        // Stale entries are not trusted.
        cache.insert("h3".into(), "t3", None, alice());
        {
            let mut entries = cache.entries.lock().unwrap();
            let entry = entries.get_mut("h3").unwrap();
            entry.cached = entry.cached.checked_sub(TTL).unwrap();
        }
        assert_eq!(cache.get("h3", 0), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_stays_bounded() {
        let cache = TokenCache::default();
        for i in 0..CAPACITY + 10 {
            cache.insert(format!("h{i}"), &format!("t{i}"), None, alice());
        }
        assert!(cache.len() <= CAPACITY, "{}", cache.len());
        assert!(cache.get(&format!("h{}", CAPACITY + 9), 0).is_some());
    }

    /// Replica B remembers a token; replica A revokes it; B refuses it well before the TTL.
    #[tokio::test]
    async fn a_revocation_reaches_another_replica_on_postgres() {
        use crate::auth::{AuthError, Authenticator, TokenKind, generate_token, hash_token};
        use crate::store::testing::{Listener, PgTestSchema, until_heard};
        let Some(schema) = PgTestSchema::create_or_skip().await else {
            return;
        };
        let store_b = schema.other_replica().await;
        let a = Authenticator::new(schema.store().clone());
        let b = Authenticator::new(store_b.clone());
        let listener = Listener::spawn(listen(
            store_b.clone(),
            b.cache().clone(),
            std::future::pending(),
        ));
        let probe = format!("probe-{}", crate::store::new_id());
        until_heard(
            || b.cache().insert("probe".into(), &probe, None, alice()),
            || async { announce_revocation(schema.store(), &probe).await.unwrap() },
            || b.cache().get("probe", 0).is_none(),
        )
        .await;

        let person = schema.store().create_person("alice", false).await.unwrap();
        let token = generate_token(TokenKind::Person);
        let info = schema
            .store()
            .create_api_token(&person.id, "laptop", &hash_token(&token))
            .await
            .unwrap();
        assert!(b.authenticate(&token).await.is_ok());
        assert_eq!(b.cache().len(), 1, "B remembers the token");
        schema
            .store()
            .revoke_api_token(&person.id, &info.id, crate::clock::now_ms())
            .await
            .unwrap();
        let revoked = Instant::now();
        a.token_revoked(&info.id).await;
        loop {
            match b.authenticate(&token).await {
                Err(AuthError::InvalidToken) => break,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
            assert!(
                revoked.elapsed() < TTL / 2,
                "B still accepts the revoked token"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        listener.stop().await;
    }
}
