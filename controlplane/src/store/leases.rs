//! Named leases with expiry, so that a background job runs on one replica at a time and moves
//! to another when its holder stops renewing. Rows only; who holds which job and when to renew
//! lives in `crate::leases`.

use super::{DbContext, Result, Store, with_pool};

impl Store {
    /// Takes the lease `name` for `holder` until `now_ms + ttl_ms`, or renews it when `holder`
    /// has it already. False while another holder's lease has not expired. Expiry is judged on
    /// the caller's clock: replicas must keep their clocks in step far closer than the TTL.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        let taken = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                                                  expires_ms = excluded.expires_ms
                  WHERE leases.holder = excluded.holder OR leases.expires_ms <= $4",
            )
            .bind(name)
            .bind(holder)
            .bind(now_ms.saturating_add(ttl_ms))
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("taking the lease {name}"))?;
        Ok(taken == 1)
    }

    /// Gives up `holder`'s lease on `name` so another replica can take it at once.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .ctx(|| format!("releasing the lease {name}"))
    }

    /// Who holds `name` and until when, expired or not.
    #[cfg(test)]
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT holder, expires_ms FROM leases WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading the lease {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{TestDb, both_backends};

    both_backends!(one_holder_at_a_time_until_expiry_or_release);

    async fn one_holder_at_a_time_until_expiry_or_release(db: TestDb) {
        let store = &db.store;
        assert!(store.try_lease("sweep", "a", 1_000, 100).await.unwrap());
        // Another holder waits for expiry; the holder renews.
        assert!(!store.try_lease("sweep", "b", 1_050, 100).await.unwrap());
        assert!(store.try_lease("sweep", "a", 1_050, 100).await.unwrap());
        assert_eq!(
            store.lease_holder("sweep").await.unwrap(),
            Some(("a".into(), 1_150))
        );
        assert!(!store.try_lease("sweep", "b", 1_149, 100).await.unwrap());
        // Leases are independent of each other.
        assert!(store.try_lease("triggers", "b", 1_149, 100).await.unwrap());
        // Expired: the next one to ask takes it, and the old holder is refused.
        assert!(store.try_lease("sweep", "b", 1_150, 100).await.unwrap());
        assert!(!store.try_lease("sweep", "a", 1_160, 100).await.unwrap());
        // Released: taken at once; a release by a non-holder changes nothing.
        store.release_lease("sweep", "a").await.unwrap();
        assert!(!store.try_lease("sweep", "a", 1_170, 100).await.unwrap());
        store.release_lease("sweep", "b").await.unwrap();
        assert!(store.try_lease("sweep", "a", 1_170, 100).await.unwrap());
        assert_eq!(store.lease_holder("nothing").await.unwrap(), None);
    }
}
