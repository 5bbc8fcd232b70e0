//! A PostgreSQL database of its own per test or benchmark, on the machine's test server
//! (`KORTIX_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`).

use sqlx::Connection;
use std::time::Duration;

/// A database of its own on the test PostgreSQL, dropped by [`Database::drop_now`].
pub struct Database {
    admin_url: String,
    name: String,
    pub url: String,
}

impl Database {
    /// A fresh database; `None` (after saying so) when PostgreSQL is unavailable outside CI.
    pub async fn create() -> Option<Database> {
        let admin_url = std::env::var("KORTIX_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let mut admin = match tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::PgConnection::connect(&admin_url),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                crate::require::unavailable("PostgreSQL", &format!("{admin_url}: {e}"));
                return None;
            }
            Err(_) => {
                crate::require::unavailable("PostgreSQL", &format!("{admin_url}: no answer"));
                return None;
            }
        };
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "kx_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
                % 1_000_000_000
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        let base = admin_url.split('?').next().unwrap();
        let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
        Some(Database {
            admin_url,
            name,
            url,
        })
    }

    pub async fn drop_now(self) {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        let _ = admin.close().await;
    }
}
