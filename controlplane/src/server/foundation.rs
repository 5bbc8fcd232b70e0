//! What lives in the data directory and outlives a process: the store, the master key, the CA,
//! the repositories and the admin token. Opened (created on first start) before anything
//! listens.

use super::{ADMIN_TOKEN_FILE, ServerError};
use crate::ca::Ca;
use crate::git::Repos;
use crate::secrets::MasterKey;
use crate::store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The durable state of one control plane (shared by its replicas).
pub(super) struct Foundation {
    pub data_dir: PathBuf,
    pub store: Store,
    pub master_key: Arc<MasterKey>,
    pub ca: Arc<Ca>,
    pub repos: Repos,
}

impl Foundation {
    pub async fn open(data_dir: &Path, database_url: Option<&str>) -> Result<Self, ServerError> {
        create_private_dir(data_dir)?;
        let store = Store::open(data_dir, database_url).await?;
        let master_key = Arc::new(MasterKey::load_or_create(&data_dir.join("master.key"))?);
        ensure_admin_token(&store, data_dir).await?;
        let ca = Arc::new(Ca::load_or_create(&data_dir.join("ca"))?);
        let repos = Repos::in_data_dir(data_dir)?;
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            store,
            master_key,
            ca,
            repos,
        })
    }
}

fn create_private_dir(path: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| ServerError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(err)?;
    }
    Ok(())
}

/// First start: the admin account and its token in `admin.token` (0600; only its hash is
/// stored). A missing `admin.token` later gets a fresh admin token (older ones stay valid until
/// revoked), so an operator who lost the file can recover by deleting it.
async fn ensure_admin_token(store: &Store, data_dir: &Path) -> Result<(), ServerError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        return Ok(());
    }
    let token = match crate::auth::bootstrap_admin(store)
        .await
        .map_err(auth_err)?
    {
        Some(token) => token,
        None => {
            let admin = store
                .get_account_by_name(crate::auth::ADMIN_ACCOUNT_NAME)
                .await?;
            let token = crate::auth::generate_token(crate::auth::TokenKind::Person);
            store
                .create_api_token(
                    &admin.id,
                    ADMIN_TOKEN_FILE,
                    &crate::auth::hash_token(&token),
                )
                .await?;
            token
        }
    };
    crate::secrets::write_private_file(&path, format!("{token}\n").as_bytes(), true).map_err(
        |source| ServerError::DataDir {
            path: path.clone(),
            source,
        },
    )?;
    tracing::info!(path = %path.display(), "wrote the admin token");
    Ok(())
}

fn auth_err(e: crate::auth::AuthError) -> ServerError {
    match e {
        crate::auth::AuthError::Store(e) => ServerError::Store(e),
        other => ServerError::Setup(other.to_string()),
    }
}
