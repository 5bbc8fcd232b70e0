//! [`ProjectSecrets`]: the one owner of project secrets end to end — validate, seal, store,
//! wake the project's watchers; load and open. The API (people), the agent gateway
//! (`WatchSecrets`) and webhooks (the signing secret) all go through it, so a secret is
//! decrypted in exactly one place.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::{MasterKey, SecretValue, SecretsError};
use crate::auth::Caller;
use crate::error::{DomainError, DomainResult, check_len};

/// Longest secret name looked up (valid ones are at most 64 bytes).
const MAX_NAME_LOOKUP: usize = 256;
use crate::sessions::live::Hub;
use crate::store::{Project, SecretMeta, Store};

/// A project's decrypted secrets and the version they were read at.
pub struct SecretSet {
    pub version: i64,
    pub values: BTreeMap<String, SecretValue>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct ProjectSecrets {
    store: Store,
    key: Arc<MasterKey>,
    hub: Hub,
}

impl ProjectSecrets {
    pub fn new(store: Store, key: Arc<MasterKey>, hub: Hub) -> Self {
        Self { store, key, hub }
    }

    /// Validates, seals and stores a secret of one of the caller's projects, then wakes
    /// the project's watchers. The value is never logged.
    pub async fn set(
        &self,
        caller: &Caller,
        project: &str,
        name: &str,
        value: &str,
    ) -> DomainResult<SecretMeta> {
        super::validate_secret_name(name).map_err(invalid)?;
        let project = crate::permissions::project(&self.store, caller, project).await?;
        let meta = self.put(&project, name, value).await?;
        tracing::info!(project = %project.name, secret = %name, "secret set");
        crate::audit::record(
            &self.store,
            caller,
            crate::audit::Event::in_project("secret.set", &project, name),
        )
        .await;
        Ok(meta)
    }

    /// [`ProjectSecrets::set`] for the platform itself (no caller to check).
    pub async fn put(
        &self,
        project: &Project,
        name: &str,
        value: &str,
    ) -> DomainResult<SecretMeta> {
        let sealed = self.key.seal(&project.id, name, value).map_err(invalid)?;
        let (meta, version) = self
            .store
            .put_secret(&project.id, name, &sealed.nonce, &sealed.ciphertext)
            .await?;
        self.changed(&project.id, version);
        Ok(meta)
    }

    pub async fn delete(
        &self,
        caller: &Caller,
        project: &str,
        name: &str,
    ) -> DomainResult<SecretMeta> {
        check_len("the secret name", name, MAX_NAME_LOOKUP)?;
        let project = crate::permissions::project(&self.store, caller, project).await?;
        let (meta, version) = self.store.delete_secret(&project.id, name).await?;
        self.changed(&project.id, version);
        tracing::info!(project = %project.name, secret = %name, "secret deleted");
        crate::audit::record(
            &self.store,
            caller,
            crate::audit::Event::in_project("secret.delete", &project, name),
        )
        .await;
        Ok(meta)
    }

    /// Names and times, never values.
    pub async fn list(&self, caller: &Caller, project: &str) -> DomainResult<Vec<SecretMeta>> {
        let project = crate::permissions::project(&self.store, caller, project).await?;
        Ok(self.store.list_secrets(&project.id).await?)
    }

    /// The project's secrets, decrypted — unless they are still at version `known`.
    pub async fn load_if_changed(
        &self,
        project_id: &str,
        known: Option<i64>,
    ) -> DomainResult<Option<SecretSet>> {
        if let Some(known) = known
            && self.store.secrets_version(project_id).await? == known
        {
            return Ok(None);
        }
        let snapshot = self.store.load_secrets(project_id).await?;
        let mut values = BTreeMap::new();
        for row in snapshot.secrets {
            let value = self
                .key
                .open(project_id, &row.name, &row.nonce, &row.ciphertext)
                .map_err(undecryptable)?;
            values.insert(row.name, value);
        }
        Ok(Some(SecretSet {
            version: snapshot.version,
            values,
        }))
    }

    /// One secret's value, or `None` when the project has no secret of that name. Read
    /// through the store's agent cache: connector calls and webhooks ask on every request,
    /// and every secret write forgets the cached row on all replicas.
    pub async fn value(&self, project_id: &str, name: &str) -> DomainResult<Option<SecretValue>> {
        let Some(row) = self.store.agent_secret(project_id, name).await? else {
            return Ok(None);
        };
        self.key
            .open(project_id, name, &row.nonce, &row.ciphertext)
            .map(Some)
            .map_err(undecryptable)
    }

    /// Wakes whenever a secret of the project changes, on this replica or (through the hub's
    /// wake-ups between replicas) on another one.
    pub fn watch(&self, project_id: &str) -> watch::Receiver<u64> {
        self.hub.subscribe(&topic(project_id))
    }

    fn changed(&self, project_id: &str, version: i64) {
        self.hub.advance(&topic(project_id), version.max(0) as u64);
    }
}

/// The hub topic that wakes secret watchers of a project.
fn topic(project_id: &str) -> String {
    format!("project-secrets:{project_id}")
}

fn invalid(e: SecretsError) -> DomainError {
    DomainError::Invalid(e.to_string())
}

/// Wrong master key or damaged ciphertext: never garbage, never silently skipped.
fn undecryptable(e: SecretsError) -> DomainError {
    DomainError::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Action;
    use crate::store::StoreOptions;

    /// Everything SQLite keeps for the database: the file and its WAL and shared memory.
    fn database_bytes(dir: &std::path::Path) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("kortix.db")
            {
                all.extend(std::fs::read(&path).unwrap());
            }
        }
        all
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    struct Fixture {
        dir: tempfile::TempDir,
        store: Store,
        secrets: ProjectSecrets,
        alice: Caller,
        project: Project,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("kortix.db"), StoreOptions::default())
            .await
            .unwrap();
        let account = store.create_person("alice", false).await.unwrap();
        let project = store
            .create_project(&account.id, "web", "main")
            .await
            .unwrap();
        let secrets = ProjectSecrets::new(
            store.clone(),
            Arc::new(MasterKey::generate().unwrap()),
            Hub::new(),
        );
        Fixture {
            dir,
            store,
            secrets,
            alice: Caller::person(&account.id, Action::ChangeSecrets),
            project,
        }
    }

    #[tokio::test]
    async fn plaintext_never_reaches_the_database_file() {
        let fx = fixture().await;
        let plaintext = "sk-live-PLAINTEXT-CANARY-8f3a9c2e7d41";
        let mut wake = fx.secrets.watch(&fx.project.id);
        let meta = fx
            .secrets
            .set(&fx.alice, "web", "STRIPE_KEY", plaintext)
            .await
            .unwrap();
        assert_eq!(meta.name, "STRIPE_KEY");
        assert!(wake.has_changed().unwrap(), "watchers are woken");
        assert_eq!(*wake.borrow_and_update(), 1);

        let set = fx
            .secrets
            .load_if_changed(&fx.project.id, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(set.version, 1);
        assert_eq!(set.values["STRIPE_KEY"].expose(), plaintext);
        assert!(
            fx.secrets
                .load_if_changed(&fx.project.id, Some(1))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            fx.secrets
                .value(&fx.project.id, "STRIPE_KEY")
                .await
                .unwrap()
                .unwrap()
                .expose(),
            plaintext
        );
        assert!(
            fx.secrets
                .value(&fx.project.id, "OTHER")
                .await
                .unwrap()
                .is_none()
        );

        let bytes = database_bytes(fx.dir.path());
        // The scan does see the rows (the name is stored in clear) ...
        assert!(contains(&bytes, b"STRIPE_KEY"));
        // ... but never the value.
        assert!(!contains(&bytes, plaintext.as_bytes()));
        fx.store.close().await;
        let bytes = database_bytes(fx.dir.path());
        assert!(contains(&bytes, b"STRIPE_KEY"));
        assert!(!contains(&bytes, plaintext.as_bytes()));
    }

    #[tokio::test]
    async fn invalid_names_and_other_accounts_never_reach_the_store() {
        let fx = fixture().await;
        let err = fx
            .secrets
            .set(&fx.alice, "web", "KORTIX_SESSION", "v")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DomainError::Invalid(m) if m.contains("KORTIX_ is reserved")),
            "{err:?}"
        );
        let mallory = fx.store.create_person("mallory", false).await.unwrap();
        let mallory = Caller::person(&mallory.id, Action::ChangeSecrets);
        let err = fx.secrets.set(&mallory, "web", "A", "v").await.unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert!(fx.secrets.list(&mallory, "web").await.is_err());
        assert!(
            fx.store
                .list_secrets(&fx.project.id)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(fx.store.secrets_version(&fx.project.id).await.unwrap(), 0);

        // A key that doesn't match makes loading fail loudly instead of returning garbage.
        fx.secrets.set(&fx.alice, "web", "A", "v").await.unwrap();
        let other = ProjectSecrets::new(
            fx.store.clone(),
            Arc::new(MasterKey::generate().unwrap()),
            Hub::new(),
        );
        assert!(matches!(
            other.load_if_changed(&fx.project.id, None).await,
            Err(DomainError::Internal(_))
        ));
        assert!(matches!(
            other.value(&fx.project.id, "A").await,
            Err(DomainError::Internal(_))
        ));
    }
}
