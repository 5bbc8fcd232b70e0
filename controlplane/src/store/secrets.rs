//! Sealed project secrets. The store only ever sees nonce and ciphertext; sealing and
//! opening live in `crate::secrets`.

use super::{BeginWrite, DbContext, Error, Result, Store, with_pool};
use crate::clock::now_ms;

/// A secret's name and times, never its value.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SecretMeta {
    pub name: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A sealed secret as stored.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SecretRow {
    pub name: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl std::fmt::Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow")
            .field("name", &self.name)
            .field("ciphertext_len", &self.ciphertext.len())
            .field("updated_ms", &self.updated_ms)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct VersionedSecret {
    secrets_version: i64,
    name: Option<String>,
    nonce: Option<Vec<u8>>,
    ciphertext: Option<Vec<u8>>,
    created_ms: Option<i64>,
    updated_ms: Option<i64>,
}

/// All of a project's sealed secrets together with the version they were read at.
#[derive(Debug, Clone)]
pub struct SecretsSnapshot {
    pub version: i64,
    pub secrets: Vec<SecretRow>,
}

impl Store {
    /// Inserts or replaces a sealed secret and bumps the project's secrets version, in one
    /// transaction. Returns the secret's times and the new version.
    pub async fn put_secret(
        &self,
        project_id: &str,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<(SecretMeta, i64)> {
        let now = now_ms();
        let stored = with_pool!(self, |pool| {
            async {
                let mut tx = pool.begin_write().await?;
                // Bumping first takes the project's row lock, ordering concurrent writers.
                let Some(version) = sqlx::query_scalar::<_, i64>(
                    "UPDATE projects SET secrets_version = secrets_version + 1
                     WHERE id = $1 RETURNING secrets_version",
                )
                .bind(project_id)
                .fetch_optional(&mut *tx)
                .await?
                else {
                    return Ok(None);
                };
                let meta = sqlx::query_as::<_, SecretMeta>(
                    "INSERT INTO secrets (project_id, name, nonce, ciphertext, created_ms, updated_ms)
                     VALUES ($1, $2, $3, $4, $5, $5)
                     ON CONFLICT (project_id, name) DO UPDATE
                       SET nonce = excluded.nonce, ciphertext = excluded.ciphertext,
                           updated_ms = excluded.updated_ms
                     RETURNING name, created_ms, updated_ms",
                )
                .bind(project_id)
                .bind(name)
                .bind(nonce)
                .bind(ciphertext)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some((meta, version)))
            }
            .await
        })
        .ctx(|| format!("storing secret {name} of project {project_id}"));
        // The project row's secrets_version moved.
        self.agents_changed(super::AgentChange::Project(project_id.to_owned()))
            .await;
        stored?.ok_or_else(|| Error::NotFound(format!("project {project_id}")))
    }

    /// Deletes a secret and bumps the version. A missing secret is [`Error::NotFound`] and
    /// leaves the version alone.
    pub async fn delete_secret(&self, project_id: &str, name: &str) -> Result<(SecretMeta, i64)> {
        let deleted = with_pool!(self, |pool| {
            async {
                let mut tx = pool.begin_write().await?;
                let Some(meta) = sqlx::query_as::<_, SecretMeta>(
                    "DELETE FROM secrets WHERE project_id = $1 AND name = $2
                     RETURNING name, created_ms, updated_ms",
                )
                .bind(project_id)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                else {
                    return Ok(None);
                };
                let version = sqlx::query_scalar::<_, i64>(
                    "UPDATE projects SET secrets_version = secrets_version + 1
                     WHERE id = $1 RETURNING secrets_version",
                )
                .bind(project_id)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some((meta, version)))
            }
            .await
        })
        .ctx(|| format!("deleting secret {name} of project {project_id}"));
        self.agents_changed(super::AgentChange::Project(project_id.to_owned()))
            .await;
        deleted?.ok_or_else(|| Error::NotFound(format!("secret {name}")))
    }

    /// Names and times of the project's secrets, by name.
    pub async fn list_secrets(&self, project_id: &str) -> Result<Vec<SecretMeta>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, SecretMeta>(
                "SELECT name, created_ms, updated_ms FROM secrets
                 WHERE project_id = $1 ORDER BY name",
            )
            .bind(project_id)
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing secrets of project {project_id}"))
    }

    /// The project's current secrets version (0 before any change).
    pub async fn secrets_version(&self, project_id: &str) -> Result<i64> {
        with_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT secrets_version FROM projects WHERE id = $1")
                .bind(project_id)
                .fetch_optional(pool)
                .await
        })
        .ctx(|| format!("reading the secrets version of project {project_id}"))?
        .ok_or_else(|| Error::NotFound(format!("project {project_id}")))
    }

    /// Every sealed secret of the project and the version they belong to, read by one
    /// statement so the two agree on both backends.
    pub async fn load_secrets(&self, project_id: &str) -> Result<SecretsSnapshot> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, VersionedSecret>(
                "SELECT p.secrets_version, s.name, s.nonce, s.ciphertext, s.created_ms, s.updated_ms
                 FROM projects p LEFT JOIN secrets s ON s.project_id = p.id
                 WHERE p.id = $1 ORDER BY s.name",
            )
            .bind(project_id)
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("loading secrets of project {project_id}"))?;
        let Some(version) = rows.first().map(|r| r.secrets_version) else {
            return Err(Error::NotFound(format!("project {project_id}")));
        };
        let secrets = rows
            .into_iter()
            .filter_map(|r| {
                Some(SecretRow {
                    name: r.name?,
                    nonce: r.nonce?,
                    ciphertext: r.ciphertext?,
                    created_ms: r.created_ms?,
                    updated_ms: r.updated_ms?,
                })
            })
            .collect();
        Ok(SecretsSnapshot { version, secrets })
    }
}
