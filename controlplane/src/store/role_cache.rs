//! A replica's memory of the roles people hold on projects, so a permission check costs no
//! store read beyond the project itself. Roles change only through this store's member and
//! grant methods, which forget the person here at once and tell other replicas sharing a
//! PostgreSQL database on [`ROLES_CHANNEL`]; an entry is trusted for [`TTL`] at most, should
//! a notification be lost without the listener noticing, and a listener that loses its
//! connection forgets everything. A grant's expiry is judged when the entry is read, so an
//! expiring grant ends on time whatever the cache holds.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::ttl_entries::TtlEntries;

/// The channel role changes travel on between replicas.
pub const ROLES_CHANNEL: &str = "kortix_roles";
/// Longest an entry is trusted without asking the store again.
pub const TTL: Duration = Duration::from_secs(10);
/// Entries kept; when full, stale ones go first, then everything (a refill is one read).
pub const CAPACITY: usize = 16_384;

/// What reaches one person on one project, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Roles {
    /// Their role in the project's account.
    pub account_role: Option<String>,
    /// Their grant on the project, expired or not.
    pub grant_role: Option<String>,
    pub grant_expires_ms: Option<i64>,
}

impl Roles {
    /// The grant, unless it has expired at `now_ms`.
    pub fn live_grant(&self, now_ms: i64) -> Option<String> {
        match self.grant_expires_ms {
            Some(expires) if expires <= now_ms => None,
            _ => self.grant_role.clone(),
        }
    }
}

struct Inner {
    /// (person, project) → their roles there.
    entries: TtlEntries<(String, String), Roles>,
    /// Bumped by every forget, so a read that began before a change cannot put back what
    /// the change made stale.
    generation: u64,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            entries: TtlEntries::new(TTL, CAPACITY),
            generation: 0,
        }
    }
}

/// Cheap to clone; clones share the entries.
#[derive(Clone, Default)]
pub struct RoleCache {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for RoleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("RoleCache")
            .field("entries", &inner.entries.len())
            .field("generation", &inner.generation)
            .finish()
    }
}

impl RoleCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `person_id`'s roles on `project_id`, if read within [`TTL`].
    pub fn get(&self, person_id: &str, project_id: &str) -> Option<Roles> {
        self.lock()
            .entries
            .get(&(person_id.to_string(), project_id.to_string()))
    }

    /// Taken before reading roles from the store; [`RoleCache::insert`] keeps the read only
    /// if nothing was forgotten since.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub fn insert(&self, generation: u64, person_id: &str, project_id: &str, roles: Roles) {
        let mut inner = self.lock();
        if inner.generation == generation {
            inner
                .entries
                .insert((person_id.to_string(), project_id.to_string()), roles);
        }
    }

    /// Forgets everything known about `person_id`.
    pub fn forget_person(&self, person_id: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.retain(|(person, _), _| person != person_id);
    }

    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What a notification on [`ROLES_CHANNEL`] says: whose roles changed.
    pub fn apply(&self, payload: &str) {
        if payload.is_empty() {
            tracing::debug!("ignoring an empty role notification");
            return;
        }
        self.forget_person(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn viewer_until(expires_ms: Option<i64>) -> Roles {
        Roles {
            account_role: Some("member".into()),
            grant_role: Some("viewer".into()),
            grant_expires_ms: expires_ms,
        }
    }

    #[test]
    fn entries_answer_until_their_person_is_forgotten() {
        let cache = RoleCache::default();
        let g = cache.generation();
        cache.insert(g, "alice", "web", viewer_until(None));
        cache.insert(g, "bob", "web", Roles::default());
        assert_eq!(cache.get("alice", "web"), Some(viewer_until(None)));
        cache.apply("alice");
        assert_eq!(cache.get("alice", "web"), None);
        assert_eq!(cache.get("bob", "web"), Some(Roles::default()));
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let cache = RoleCache::default();
        let before = cache.generation();
        cache.forget_person("alice");
        cache.insert(before, "alice", "web", viewer_until(None));
        assert_eq!(cache.get("alice", "web"), None);
        cache.insert(cache.generation(), "alice", "web", viewer_until(None));
        assert!(cache.get("alice", "web").is_some());
    }

    #[test]
    fn an_expired_grant_does_not_count() {
        let roles = viewer_until(Some(1_000));
        assert_eq!(roles.live_grant(999).as_deref(), Some("viewer"));
        assert_eq!(roles.live_grant(1_000), None);
        assert_eq!(
            viewer_until(None).live_grant(i64::MAX).as_deref(),
            Some("viewer")
        );
    }

    #[test]
    fn a_full_cache_makes_room() {
        let cache = RoleCache::default();
        let g = cache.generation();
        for i in 0..CAPACITY + 1 {
            cache.insert(g, &format!("p{i}"), "web", Roles::default());
        }
        assert!(cache.len() <= CAPACITY);
        assert!(cache.get(&format!("p{CAPACITY}"), "web").is_some());
    }

    /// Replica B remembers a grant; replica A revokes it; B refuses well before the TTL.
    #[tokio::test]
    async fn a_revoked_grant_reaches_another_replica_on_postgres() {
        use crate::store::testing::{Listener, PgTestSchema, until_heard};
        let Some(schema) = PgTestSchema::create_or_skip().await else {
            return;
        };
        let (a, b) = (schema.store().clone(), schema.other_replica().await);
        let follower = Listener::spawn({
            let b = b.clone();
            async move { b.follow_role_changes().await }
        });
        until_heard(
            || {
                b.roles
                    .insert(b.roles.generation(), "probe", "web", Roles::default())
            },
            || a.roles_changed("probe"),
            || b.roles.get("probe", "web").is_none(),
        )
        .await;

        let owner = a.create_person("owner", false).await.unwrap();
        let carol = a.create_person("carol", false).await.unwrap();
        let web = a.create_project(&owner.id, "web", "main").await.unwrap();
        a.grant(&web.id, &carol.id, "viewer", None, &owner.id)
            .await
            .unwrap();
        let seen = b.project_access(&carol.id, "web").await.unwrap();
        assert_eq!(seen.grant_role.as_deref(), Some("viewer"));
        assert!(b.roles.get(&carol.id, &web.id).is_some(), "B remembers");
        a.revoke_grant(&web.id, &carol.id).await.unwrap();
        let revoked = Instant::now();
        while b
            .project_access(&carol.id, "web")
            .await
            .unwrap()
            .grant_role
            .is_some()
        {
            assert!(revoked.elapsed() < TTL / 2, "B still sees the grant");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        follower.stop().await;
    }
}
