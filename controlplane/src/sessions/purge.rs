//! Expired credentials — bootstrap tokens, git tokens, certificates past their expiry — can
//! no longer be used but would stay in the store forever. The sweeper deletes them every
//! [`PURGE_EVERY`] (each replica on its own; the deletes are idempotent).

use super::Sessions;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How often each replica purges.
pub const PURGE_EVERY: Duration = Duration::from_secs(10 * 60);

/// When this replica last purged.
#[derive(Debug, Default)]
pub struct PurgeClock(Mutex<Option<Instant>>);

impl PurgeClock {
    /// Whether a purge is due, marking it done if so (a failed purge waits for the next
    /// period like a successful one, so a database outage is not hammered every second).
    fn take_due(&self) -> bool {
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= PURGE_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

impl Sessions {
    /// Deletes expired credentials if the last purge is older than [`PURGE_EVERY`].
    pub(crate) async fn purge_expired_credentials_if_due(&self) {
        if !self.purged.take_due() {
            return;
        }
        match self
            .store
            .purge_expired_credentials(crate::clock::now_ms())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "purged expired credentials"),
            Err(e) => tracing::warn!(error = %e, "purging expired credentials"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::Repos;
    use crate::manifests::Manifests;
    use crate::sandbox::external::ExternalProvider;
    use crate::sessions::{SessionConfig, live::Hub};
    use crate::store::{NewSession, Store, StoreOptions};
    use std::sync::Arc;

    #[tokio::test]
    async fn the_sweeper_purges_expired_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("kortix.db"), StoreOptions::default())
            .await
            .unwrap();
        let repos = Repos::open(dir.path().join("repos")).unwrap();
        let (exits, _exits_rx) = tokio::sync::mpsc::channel(4);
        let provider = ExternalProvider::new(dir.path().join("bootstrap"), exits).unwrap();
        let sessions = Sessions::new(
            store.clone(),
            repos.clone(),
            Arc::new(provider),
            Hub::new(),
            Arc::new(Manifests::new(repos)),
            SessionConfig::new(
                "https://127.0.0.1:1".into(),
                "http://127.0.0.1:1".into(),
                String::new(),
            ),
        );
        let account = store.create_person("alice", false).await.unwrap();
        let project = store
            .create_project(&account.id, "web", "main")
            .await
            .unwrap();
        let (session, _) = store
            .create_session(&NewSession {
                id: None,
                project_id: project.id.clone(),
                template: "default".into(),
                agent: "kortix".into(),
                prompt: String::new(),
                origin: "cli".into(),
                idempotency_key: String::new(),
                launched_by: String::new(),
            })
            .await
            .unwrap();
        let now = crate::clock::now_ms();
        store
            .create_git_token(
                "expired-git",
                &session.id,
                &project.id,
                &session.id,
                now - 1,
            )
            .await
            .unwrap();
        store
            .create_git_token(
                "live-git",
                &session.id,
                &project.id,
                &session.id,
                now + 60_000,
            )
            .await
            .unwrap();
        store
            .create_bootstrap_token("expired-boot", &session.id, now - 1)
            .await
            .unwrap();
        store
            .record_issued_cert("0a", &session.id, now - 1)
            .await
            .unwrap();

        sessions.sweep_once().await;

        // Looked up as of time 0, a row that still exists would be found.
        assert!(
            store
                .lookup_git_token("expired-git", 0)
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert!(store.lookup_git_token("live-git", 0).await.is_ok());
        assert!(
            store
                .get_issued_cert("0a")
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert_eq!(
            store.purge_expired_credentials(now).await.unwrap(),
            0,
            "the expired bootstrap token is gone too"
        );

        // Not again until the period has passed.
        store
            .create_git_token(
                "expired-later",
                &session.id,
                &project.id,
                &session.id,
                now - 1,
            )
            .await
            .unwrap();
        sessions.sweep_once().await;
        assert!(store.lookup_git_token("expired-later", 0).await.is_ok());
    }
}
