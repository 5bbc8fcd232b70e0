//! A PostgreSQL database of the benchmark's own on the machine's server
//! (`KORTIX_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`), created
//! at the start and dropped at the end.

use anyhow::Context;
use sqlx::Connection;

pub struct ScratchDb {
    admin: sqlx::PgConnection,
    name: String,
    pub url: String,
}

impl ScratchDb {
    /// `Ok(None)` when PostgreSQL cannot be reached (the caller says it skipped).
    pub async fn create(purpose: &str) -> anyhow::Result<Option<ScratchDb>> {
        let admin_url = std::env::var("KORTIX_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await else {
            eprintln!("PostgreSQL at {admin_url} unreachable");
            return Ok(None);
        };
        let name = format!("kx_bench_{purpose}_{}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {name} at {admin_url}"))?;
        let base = admin_url.split('?').next().unwrap_or(&admin_url);
        let url = format!(
            "{}/{name}",
            base.rsplit_once('/').map_or(base, |(head, _)| head)
        );
        Ok(Some(ScratchDb { admin, name, url }))
    }

    pub async fn drop_now(mut self) -> anyhow::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut self.admin)
        .await
        .with_context(|| format!("dropping database {}", self.name))?;
        Ok(())
    }
}
