//! `[[apps]]` rows: one per app the deploy sweep has seen (`apps`), one per deployment
//! (`app_deployments`), and the custom domains of served deployments (`app_domains`).
//!
//! Two conditional updates carry the cross-replica rules: [`Store::claim_app_hash`] moves an
//! app's swept hash (exactly one replica wins a new hash, so it is built once), and
//! [`Store::activate_deployment`] moves the served pointer only forward in time (a slower,
//! older build never replaces a newer one) or, for a rollback, only from the deployment the
//! caller saw.

use super::{BeginWrite as _, DbContext, Error, Result, Store, placeholders, with_pool};

/// The most of a deployment's log kept in the store: its last 256 KiB.
pub const MAX_DEPLOYMENT_LOG: usize = 256 * 1024;
const MAX_REASON_BYTES: usize = 8192;
const MAX_LIST: i64 = 200;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AppRow {
    pub project_id: String,
    pub slug: String,
    pub name: String,
    pub enabled: bool,
    pub swept_hash: String,
    pub active_deployment: Option<String>,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentStatus {
    Building,
    Succeeded,
    Failed,
}

impl DeploymentStatus {
    pub const ALL: [DeploymentStatus; 3] = [
        DeploymentStatus::Building,
        DeploymentStatus::Succeeded,
        DeploymentStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Building => "building",
            DeploymentStatus::Succeeded => "succeeded",
            DeploymentStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown deployment status {0:?}")]
pub struct UnknownDeploymentStatus(String);

impl TryFrom<String> for DeploymentStatus {
    type Error = UnknownDeploymentStatus;
    fn try_from(s: String) -> std::result::Result<Self, UnknownDeploymentStatus> {
        DeploymentStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(UnknownDeploymentStatus(s))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Deployment {
    /// UUIDv7: ids sort by creation time.
    pub id: String,
    pub project_id: String,
    pub slug: String,
    pub hash: String,
    /// The normalized `[[apps]]` entry as JSON.
    pub config: String,
    /// `sweep` or `manual`.
    pub reason: String,
    #[sqlx(try_from = "String")]
    pub status: DeploymentStatus,
    pub source_revision: String,
    pub logs: String,
    pub failure_reason: String,
    pub builder: String,
    pub claimed_ms: Option<i64>,
    pub requested_by: String,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
}

macro_rules! app_columns {
    () => {
        "project_id, slug, name, enabled, swept_hash, active_deployment, updated_ms"
    };
}

macro_rules! deployment_columns {
    () => {
        "id, project_id, slug, hash, config, reason, status, source_revision, logs,
         failure_reason, builder, claimed_ms, requested_by, created_ms, finished_ms"
    };
}

/// A deployment about to be built.
#[derive(Debug, Clone)]
pub struct NewDeployment<'a> {
    pub project_id: &'a str,
    pub slug: &'a str,
    pub hash: &'a str,
    pub config: &'a str,
    pub reason: &'a str,
    pub builder: &'a str,
    pub requested_by: &'a str,
}

/// How [`Store::activate_deployment`] may move an app's served deployment.
#[derive(Debug, Clone, Copy)]
pub enum Activation<'a> {
    /// A freshly built deployment: only over an older one (or none).
    Newer,
    /// A rollback: only if the app still serves this deployment.
    Replacing(&'a str),
}

/// The end of `text` in at most `max` bytes, cut on a character boundary: a build's last
/// lines say why it failed.
pub fn keep_tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

impl Store {
    /// Makes sure the app has a row (nothing swept yet); a missing project is not an error
    /// here (the sweep may race a deletion), it just inserts nothing.
    pub async fn ensure_app(
        &self,
        project_id: &str,
        slug: &str,
        name: &str,
        now: i64,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO apps (project_id, slug, name, updated_ms)
                 SELECT $1, $2, $3, $4
                 WHERE EXISTS (SELECT 1 FROM projects WHERE id = $1)
                 ON CONFLICT (project_id, slug) DO NOTHING",
            )
            .bind(project_id)
            .bind(slug)
            .bind(name)
            .bind(now)
            .execute(pool)
            .await
            .map(drop)
        })
        .ctx(|| format!("recording app {slug}"))
    }

    /// Claims `hash` of an app for the deploy sweep: moves its swept hash to `hash` unless it
    /// is already there. Exactly one of any number of concurrent callers gets `true`.
    pub async fn claim_app_hash(
        &self,
        project_id: &str,
        slug: &str,
        hash: &str,
        enabled: bool,
        name: &str,
        now: i64,
    ) -> Result<bool> {
        let moved = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE apps SET swept_hash = $3, enabled = $4, name = $5, updated_ms = $6
                  WHERE project_id = $1 AND slug = $2 AND swept_hash <> $3",
            )
            .bind(project_id)
            .bind(slug)
            .bind(hash)
            .bind(enabled)
            .bind(name)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("claiming the deploy of app {slug}"))?;
        Ok(moved == 1)
    }

    /// Records a forced deploy of `hash`: the sweep then has nothing more to do for it.
    pub async fn set_app_hash(
        &self,
        project_id: &str,
        slug: &str,
        hash: &str,
        name: &str,
        now: i64,
    ) -> Result<()> {
        self.ensure_app(project_id, slug, name, now).await?;
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE apps SET swept_hash = $3, enabled = TRUE, name = $4, updated_ms = $5
                  WHERE project_id = $1 AND slug = $2",
            )
            .bind(project_id)
            .bind(slug)
            .bind(hash)
            .bind(name)
            .bind(now)
            .execute(pool)
            .await
            .map(drop)
        })
        .ctx(|| format!("recording the deploy of app {slug}"))
    }

    /// Stops serving the project's apps that are not in `present` (removed from the
    /// manifest) and forgets their swept hash, so adding them back deploys them again.
    pub async fn retire_missing_apps(
        &self,
        project_id: &str,
        present: &[&str],
        now: i64,
    ) -> Result<u64> {
        let sql = if present.is_empty() {
            "UPDATE apps SET enabled = FALSE, swept_hash = '', updated_ms = $2
              WHERE project_id = $1 AND (enabled OR swept_hash <> '')"
                .to_string()
        } else {
            format!(
                "UPDATE apps SET enabled = FALSE, swept_hash = '', updated_ms = $2
                  WHERE project_id = $1 AND (enabled OR swept_hash <> '')
                    AND slug NOT IN ({})",
                placeholders(3, present.len())
            )
        };
        with_pool!(self, |pool| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(project_id)
                .bind(now);
            for slug in present {
                q = q.bind(*slug);
            }
            q.execute(pool).await.map(|r| r.rows_affected())
        })
        .ctx(|| format!("retiring removed apps of project {project_id}"))
    }

    pub async fn get_app(&self, project_id: &str, slug: &str) -> Result<Option<AppRow>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, AppRow>(concat!(
                "SELECT ",
                app_columns!(),
                " FROM apps WHERE project_id = $1 AND slug = $2"
            ))
            .bind(project_id)
            .bind(slug)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading app {slug}"))
    }

    pub async fn list_apps(&self, project_id: &str) -> Result<Vec<AppRow>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, AppRow>(concat!(
                "SELECT ",
                app_columns!(),
                " FROM apps WHERE project_id = $1 ORDER BY slug LIMIT $2"
            ))
            .bind(project_id)
            .bind(MAX_LIST)
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing apps of project {project_id}"))
    }

    /// Inserts a deployment as `building`, claimed by `builder`.
    pub async fn insert_deployment(&self, new: &NewDeployment<'_>, now: i64) -> Result<Deployment> {
        let id = super::new_id();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO app_deployments (id, project_id, slug, hash, config, reason, status,
                                              builder, claimed_ms, requested_by, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, 'building', $7, $8, $9, $8)",
            )
            .bind(&id)
            .bind(new.project_id)
            .bind(new.slug)
            .bind(new.hash)
            .bind(new.config)
            .bind(new.reason)
            .bind(new.builder)
            .bind(now)
            .bind(new.requested_by)
            .execute(pool)
            .await
            .map(drop)
        })
        .ctx(|| format!("recording a deployment of app {}", new.slug))?;
        self.get_deployment(&id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("deployment {id}")))
    }

    pub async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Deployment>(concat!(
                "SELECT ",
                deployment_columns!(),
                " FROM app_deployments WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("reading deployment {id}"))
    }

    /// An app's deployments, newest first.
    pub async fn list_deployments(
        &self,
        project_id: &str,
        slug: &str,
        limit: u32,
    ) -> Result<Vec<Deployment>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, Deployment>(concat!(
                "SELECT ",
                deployment_columns!(),
                " FROM app_deployments WHERE project_id = $1 AND slug = $2
                  ORDER BY id DESC LIMIT $3"
            ))
            .bind(project_id)
            .bind(slug)
            .bind(super::clamp_limit(limit, MAX_LIST as u32))
            .fetch_all(pool)
            .await
        })
        .ctx(|| format!("listing deployments of app {slug}"))
    }

    /// Keeps a build's claim fresh and stores its log so far (its last 256 KiB); `false`
    /// when the deployment is no longer this builder's.
    pub async fn renew_deployment(
        &self,
        id: &str,
        builder: &str,
        logs: &str,
        now: i64,
    ) -> Result<bool> {
        let moved = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE app_deployments SET claimed_ms = $3, logs = $4
                  WHERE id = $1 AND builder = $2 AND status = 'building'",
            )
            .bind(id)
            .bind(builder)
            .bind(now)
            .bind(keep_tail(logs, MAX_DEPLOYMENT_LOG))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("renewing deployment {id}"))?;
        Ok(moved == 1)
    }

    /// Ends a build this builder holds: `succeeded`, or `failed` with the reason. `false`
    /// when the claim was lost meanwhile (it was declared abandoned).
    pub async fn finish_deployment(
        &self,
        id: &str,
        builder: &str,
        outcome: std::result::Result<(), &str>,
        source_revision: &str,
        logs: &str,
        now: i64,
    ) -> Result<bool> {
        let (status, reason) = match outcome {
            Ok(()) => (DeploymentStatus::Succeeded, ""),
            Err(reason) => (
                DeploymentStatus::Failed,
                keep_tail(reason, MAX_REASON_BYTES),
            ),
        };
        let moved = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE app_deployments
                    SET status = $3, failure_reason = $4, source_revision = $5, logs = $6,
                        finished_ms = $7, builder = '', claimed_ms = NULL
                  WHERE id = $1 AND builder = $2 AND status = 'building'",
            )
            .bind(id)
            .bind(builder)
            .bind(status.as_str())
            .bind(reason)
            .bind(source_revision)
            .bind(keep_tail(logs, MAX_DEPLOYMENT_LOG))
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| format!("finishing deployment {id}"))?;
        Ok(moved == 1)
    }

    /// Fails builds whose builder stopped renewing before `stale_before` (its replica went
    /// away mid-build). Returns how many.
    pub async fn fail_abandoned_deployments(&self, stale_before: i64, now: i64) -> Result<u64> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE app_deployments
                    SET status = 'failed', builder = '', claimed_ms = NULL, finished_ms = $2,
                        failure_reason = 'abandoned: the replica building it stopped'
                  WHERE status = 'building' AND (claimed_ms IS NULL OR claimed_ms < $1)",
            )
            .bind(stale_before)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .ctx(|| "failing abandoned deployments".to_string())
    }

    /// Makes `deployment` the one served for its app, with `domains` routed to it by Host
    /// header (a domain another app holds stays theirs). Returns whether it moved; see
    /// [`Activation`] for when it may.
    pub async fn activate_deployment(
        &self,
        deployment: &Deployment,
        domains: &[String],
        how: Activation<'_>,
        now: i64,
    ) -> Result<bool> {
        let (project_id, slug, id) = (
            deployment.project_id.as_str(),
            deployment.slug.as_str(),
            deployment.id.as_str(),
        );
        let (newer, expected) = match how {
            Activation::Newer => (true, ""),
            Activation::Replacing(old) => (false, old),
        };
        with_pool!(self, |pool| {
            async {
                let mut tx = pool.begin_write().await?;
                let moved = sqlx::query(
                    "UPDATE apps SET active_deployment = $3, updated_ms = $4
                      WHERE project_id = $1 AND slug = $2
                        AND (($5 AND (active_deployment IS NULL OR active_deployment < $3))
                             OR (NOT $5 AND active_deployment = $6))",
                )
                .bind(project_id)
                .bind(slug)
                .bind(id)
                .bind(now)
                .bind(newer)
                .bind(expected)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                sqlx::query("DELETE FROM app_domains WHERE project_id = $1 AND slug = $2")
                    .bind(project_id)
                    .bind(slug)
                    .execute(&mut *tx)
                    .await?;
                for domain in domains {
                    sqlx::query(
                        "INSERT INTO app_domains (domain, project_id, slug) VALUES ($1, $2, $3)
                         ON CONFLICT (domain) DO NOTHING",
                    )
                    .bind(domain)
                    .bind(project_id)
                    .bind(slug)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }
            .await
        })
        .ctx(|| format!("activating deployment {id} of app {slug}"))
    }

    /// The app a custom domain is routed to: `(project id, slug)`.
    pub async fn app_by_domain(&self, domain: &str) -> Result<Option<(String, String)>> {
        with_pool!(self, |pool| {
            sqlx::query_as::<_, (String, String)>(
                "SELECT project_id, slug FROM app_domains WHERE domain = $1",
            )
            .bind(domain)
            .fetch_optional(pool)
            .await
        })
        .ctx(|| format!("looking up the app of domain {domain}"))
    }
}

#[cfg(test)]
mod tests {
    use super::keep_tail;

    #[test]
    fn tails_keep_their_end_on_a_char_boundary() {
        // "é" is two bytes: a cut inside it moves forward past it.
        assert_eq!(keep_tail("aéend", 4), "end");
        assert_eq!(keep_tail("aéend", 5), "éend");
        assert_eq!(keep_tail("short", 100), "short");
    }

    use super::super::tests::{TestDb, account_and_project, both_backends};
    use super::*;

    both_backends!(
        app_hash_claimed_once_across_replicas,
        activation_moves_forward_and_rollbacks_compare,
    );

    async fn app_hash_claimed_once_across_replicas(db: TestDb) {
        let store = &db.store;
        let other = db.reopen().await;
        let (_, project) = account_and_project(store, "apps-claim").await;
        store
            .ensure_app(&project.id, "site", "Site", 1)
            .await
            .unwrap();
        other
            .ensure_app(&project.id, "site", "Site", 1)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = if i % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            let pid = project.id.clone();
            tasks.push(tokio::spawn(async move {
                s.claim_app_hash(&pid, "site", "h1", true, "Site", 2)
                    .await
                    .unwrap()
            }));
        }
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1, "one replica builds a hash");
        assert!(
            !store
                .claim_app_hash(&project.id, "site", "h1", true, "Site", 3)
                .await
                .unwrap()
        );
        assert!(
            store
                .claim_app_hash(&project.id, "site", "h2", false, "Site", 3)
                .await
                .unwrap()
        );
        let row = store.get_app(&project.id, "site").await.unwrap().unwrap();
        assert_eq!((row.swept_hash.as_str(), row.enabled), ("h2", false));
        // Removed from the manifest: not served, and the hash is forgotten.
        store
            .ensure_app(&project.id, "gone", "Gone", 4)
            .await
            .unwrap();
        store
            .set_app_hash(&project.id, "gone", "g1", "Gone", 4)
            .await
            .unwrap();
        assert_eq!(
            store
                .retire_missing_apps(&project.id, &["site"], 5)
                .await
                .unwrap(),
            1
        );
        let gone = store.get_app(&project.id, "gone").await.unwrap().unwrap();
        assert_eq!((gone.swept_hash.as_str(), gone.enabled), ("", false));
        assert_eq!(store.list_apps(&project.id).await.unwrap().len(), 2);
        other.close().await;
    }

    async fn activation_moves_forward_and_rollbacks_compare(db: TestDb) {
        let store = &db.store;
        let (_, project) = account_and_project(store, "apps-activate").await;
        store
            .ensure_app(&project.id, "site", "Site", 1)
            .await
            .unwrap();
        let new = |hash: &'static str| NewDeployment {
            project_id: &project.id,
            slug: "site",
            hash,
            config: "{}",
            reason: "sweep",
            builder: "b1",
            requested_by: "deploy-sweep",
        };
        let older = store.insert_deployment(&new("h1"), 10).await.unwrap();
        let newer = store.insert_deployment(&new("h2"), 11).await.unwrap();
        assert!(older.id < newer.id, "ids sort by creation");
        assert_eq!(older.status, DeploymentStatus::Building);
        assert!(
            store
                .renew_deployment(&older.id, "b1", "line\n", 12)
                .await
                .unwrap()
        );
        assert!(
            !store
                .renew_deployment(&older.id, "b2", "", 12)
                .await
                .unwrap()
        );

        let domains = vec!["site.example.com".to_string()];
        assert!(
            store
                .activate_deployment(&newer, &domains, Activation::Newer, 13)
                .await
                .unwrap()
        );
        // A slower, older build never replaces the newer one.
        assert!(
            !store
                .activate_deployment(&older, &[], Activation::Newer, 14)
                .await
                .unwrap()
        );
        assert_eq!(
            store.app_by_domain("site.example.com").await.unwrap(),
            Some((project.id.clone(), "site".to_string()))
        );
        // A rollback moves only from the deployment the caller saw.
        assert!(
            !store
                .activate_deployment(&older, &[], Activation::Replacing(&older.id), 15)
                .await
                .unwrap()
        );
        assert!(
            store
                .activate_deployment(&older, &[], Activation::Replacing(&newer.id), 15)
                .await
                .unwrap()
        );
        assert_eq!(store.app_by_domain("site.example.com").await.unwrap(), None);
        let row = store.get_app(&project.id, "site").await.unwrap().unwrap();
        assert_eq!(row.active_deployment.as_deref(), Some(older.id.as_str()));

        assert!(
            store
                .finish_deployment(
                    &newer.id,
                    "b1",
                    Err("the build exited with status 7"),
                    "",
                    "log",
                    16
                )
                .await
                .unwrap()
        );
        let failed = store.get_deployment(&newer.id).await.unwrap().unwrap();
        assert_eq!(failed.status, DeploymentStatus::Failed);
        assert_eq!(failed.failure_reason, "the build exited with status 7");
        // The other one was abandoned by its replica.
        assert_eq!(store.fail_abandoned_deployments(13, 20).await.unwrap(), 1);
        assert!(
            !store
                .finish_deployment(&older.id, "b1", Ok(()), "abc", "", 21)
                .await
                .unwrap()
        );
        let listed = store
            .list_deployments(&project.id, "site", 10)
            .await
            .unwrap();
        assert_eq!(
            listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            [newer.id.as_str(), older.id.as_str()]
        );
    }
}
