//! Throwaway PostgreSQL stores for this crate's tests: each one lives in a fresh schema of
//! the test database that every pooled connection uses, and is dropped afterwards.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::{Store, StoreOptions};

/// Where tests find PostgreSQL unless `KORTIX_TEST_DATABASE_URL` says otherwise.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a PostgreSQL test store could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PgTestError {
    /// Nothing answered at the URL: the caller may skip (loudly).
    #[error("no PostgreSQL answers at {url}: {reason}")]
    Unavailable { url: String, reason: String },
    /// PostgreSQL answered but something went wrong: a real failure.
    #[error("preparing a PostgreSQL test schema at {url}: {reason}")]
    Failed { url: String, reason: String },
}

pub fn test_database_url() -> String {
    std::env::var("KORTIX_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_DATABASE_URL.to_string())
}

/// A migrated [`Store`] in its own schema. Call [`PgTestSchema::drop_schema`] when done.
pub struct PgTestSchema {
    url: String,
    schema: String,
    store: Store,
}

impl PgTestSchema {
    pub async fn create() -> Result<PgTestSchema, PgTestError> {
        let url = test_database_url();
        let failed = |reason: String| PgTestError::Failed {
            url: super::redact_url(&url),
            reason,
        };
        let base = PgConnectOptions::from_str(&url).map_err(|e| failed(e.to_string()))?;
        let mut admin =
            match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&base)).await {
                Err(_) => {
                    return Err(PgTestError::Unavailable {
                        url: super::redact_url(&url),
                        reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
                    });
                }
                Ok(Err(sqlx::Error::Io(e))) => {
                    return Err(PgTestError::Unavailable {
                        url: super::redact_url(&url),
                        reason: e.to_string(),
                    });
                }
                Ok(Err(e)) => return Err(failed(e.to_string())),
                Ok(Ok(conn)) => conn,
            };
        let mut random = [0u8; 8];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| failed("no randomness".to_string()))?;
        let schema = format!("kx_{}", hex::encode(random));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .map_err(|e| failed(format!("creating schema {schema}: {e}")))?;
        let _ = admin.close().await;
        let options = base.options([("search_path", schema.as_str())]);
        let store = Store::open_postgres(
            options,
            StoreOptions {
                max_connections: 5,
                ..StoreOptions::default()
            },
        )
        .await
        .map_err(|e| failed(e.to_string()))?;
        Ok(PgTestSchema { url, schema, store })
    }

    /// [`PgTestSchema::create`], or `None` after saying PostgreSQL is unavailable — which
    /// fails the test under `CI=true` instead of letting it pass without checking anything.
    pub async fn create_or_skip() -> Option<PgTestSchema> {
        match PgTestSchema::create().await {
            Ok(s) => Some(s),
            Err(PgTestError::Unavailable { url, reason }) => {
                kortix_tests::require::unavailable("PostgreSQL", &format!("{url}: {reason}"));
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Connect options that use this schema, e.g. to open a second store on it.
    pub fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        Ok(PgConnectOptions::from_str(&self.url)?.options([("search_path", self.schema.as_str())]))
    }

    /// A second store on this schema with a small pool: another replica sharing the database.
    pub async fn other_replica(&self) -> Store {
        Store::open_postgres(
            self.connect_options()
                .expect("the schema's connect options"),
            super::StoreOptions {
                max_connections: 3,
                ..super::StoreOptions::default()
            },
        )
        .await
        .expect("a second store on the test schema")
    }

    /// Closes the store and drops the schema with everything in it.
    pub async fn drop_schema(self) -> Result<(), sqlx::Error> {
        self.store.close().await;
        let mut admin = PgConnection::connect(&self.url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.schema
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await
    }
}

/// A replica's change listener run by a test, until [`Listener::stop`] (or drop).
pub struct Listener(tokio::task::JoinHandle<()>);

impl Listener {
    pub fn spawn(listen: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(listen))
    }

    /// Stops the listener and waits until it has ended.
    pub async fn stop(mut self) {
        self.0.abort();
        let ended = (&mut self.0).await;
        assert!(
            ended.as_ref().map_or_else(|e| e.is_cancelled(), |()| true),
            "the listener failed: {ended:?}"
        );
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits until another replica's listener hears this one: `plant` puts a probe into the
/// other's cache, `announce` announces the probe's change from here, and `dropped` says
/// whether the other let go of it. Planted again each round, since a change announced
/// before the listener was up is never heard.
pub async fn until_heard<F: std::future::Future<Output = ()>>(
    mut plant: impl FnMut(),
    mut announce: impl FnMut() -> F,
    mut dropped: impl FnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        plant();
        announce().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if dropped() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other replica never heard from this one"
        );
    }
}
