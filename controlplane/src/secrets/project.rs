//! Project secrets end to end: validate, seal, store; load and open.

use std::collections::BTreeMap;

use super::{MasterKey, SecretValue, SecretsError};
use crate::store::{SecretMeta, Store};

/// Validates, seals and stores a secret; returns its times and the project's new secrets
/// version.
pub async fn set_project_secret(
    store: &Store,
    key: &MasterKey,
    project_id: &str,
    name: &str,
    value: &str,
) -> Result<(SecretMeta, i64), SecretsError> {
    let sealed = key.seal(project_id, name, value)?;
    Ok(store
        .put_secret(project_id, name, &sealed.nonce, &sealed.ciphertext)
        .await?)
}

/// The project's secrets, decrypted, with the version they were read at.
pub async fn load_project_secrets(
    store: &Store,
    key: &MasterKey,
    project_id: &str,
) -> Result<(i64, BTreeMap<String, SecretValue>), SecretsError> {
    let snapshot = store.load_secrets(project_id).await?;
    let mut values = BTreeMap::new();
    for row in snapshot.secrets {
        let value = key.open(project_id, &row.name, &row.nonce, &row.ciphertext)?;
        values.insert(row.name, value);
    }
    Ok((snapshot.version, values))
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[tokio::test]
    async fn plaintext_never_reaches_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("kortix.db"), StoreOptions::default())
            .await
            .unwrap();
        let key = MasterKey::generate().unwrap();
        let account = store.create_account("alice", false).await.unwrap();
        let project = store
            .create_project(&account.id, "web", "main")
            .await
            .unwrap();
        let plaintext = "sk-live-PLAINTEXT-CANARY-8f3a9c2e7d41";
        let (meta, version) =
            set_project_secret(&store, &key, &project.id, "STRIPE_KEY", plaintext)
                .await
                .unwrap();
        assert_eq!((meta.name.as_str(), version), ("STRIPE_KEY", 1));

        let (version, values) = load_project_secrets(&store, &key, &project.id)
            .await
            .unwrap();
        assert_eq!(version, 1);
        assert_eq!(values["STRIPE_KEY"].expose(), plaintext);

        let bytes = database_bytes(dir.path());
        // The scan does see the rows (the name is stored in clear) ...
        assert!(contains(&bytes, b"STRIPE_KEY"));
        // ... but never the value.
        assert!(!contains(&bytes, plaintext.as_bytes()));
        store.close().await;
        let bytes = database_bytes(dir.path());
        assert!(contains(&bytes, b"STRIPE_KEY"));
        assert!(!contains(&bytes, plaintext.as_bytes()));
    }

    #[tokio::test]
    async fn invalid_names_never_reach_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("kortix.db"), StoreOptions::default())
            .await
            .unwrap();
        let key = MasterKey::generate().unwrap();
        let account = store.create_account("alice", false).await.unwrap();
        let project = store
            .create_project(&account.id, "web", "main")
            .await
            .unwrap();
        let err = set_project_secret(&store, &key, &project.id, "KORTIX_SESSION", "v")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("KORTIX_ is reserved"), "{err}");
        assert!(store.list_secrets(&project.id).await.unwrap().is_empty());
        assert_eq!(store.secrets_version(&project.id).await.unwrap(), 0);
        // A key that doesn't match makes loading fail loudly instead of returning garbage.
        set_project_secret(&store, &key, &project.id, "A", "v")
            .await
            .unwrap();
        let other = MasterKey::generate().unwrap();
        assert!(matches!(
            load_project_secrets(&store, &other, &project.id).await,
            Err(SecretsError::Open { .. })
        ));
    }
}
