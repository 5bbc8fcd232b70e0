//! Migration 0004 keeps existing data: a store migrated only up to 0002 and filled the old
//! way (an account was a person) reads, after the remaining migrations, as people with
//! personal accounts they own, their tokens, projects and sessions unchanged.

use std::borrow::Cow;
use std::str::FromStr;

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::testing::test_database_url;
use super::{POSTGRES_MIGRATOR, SQLITE_MIGRATOR, Store, StoreOptions};

/// Rows as the schema before 0004 held them.
const OLD_ROWS: [&str; 5] = [
    "INSERT INTO accounts (id, name, admin, created_ms)
     VALUES ('acc-root', 'root', TRUE, 1), ('acc-alice', 'alice', FALSE, 2)",
    "INSERT INTO api_tokens (id, account_id, name, token_hash, created_ms, last_used_ms)
     VALUES ('tok-a', 'acc-alice', 'laptop', 'hash-a', 3, 3)",
    "INSERT INTO api_tokens (id, account_id, name, token_hash, created_ms)
     VALUES ('tok-r', 'acc-root', 'admin', 'hash-r', 3)",
    "INSERT INTO projects (id, account_id, name, default_branch, created_ms)
     VALUES ('prj-web', 'acc-alice', 'web', 'main', 4)",
    "INSERT INTO sessions (id, project_id, status, created_ms)
     VALUES ('s1', 'prj-web', 'stopped', 5)",
];

/// The migrator's migrations before 0004.
fn before_0004(all: &Migrator) -> Migrator {
    let mut m = Migrator::DEFAULT;
    m.migrations = Cow::Owned(
        all.migrations
            .iter()
            .filter(|m| m.version < 4)
            .cloned()
            .collect(),
    );
    m
}

async fn check_migrated(store: &Store) {
    let alice = store.get_person("acc-alice").await.unwrap();
    assert_eq!(alice.name, "alice");
    assert!(!alice.server_admin);
    assert!(store.get_person("acc-root").await.unwrap().server_admin);
    assert_eq!(store.get_account("acc-alice").await.unwrap().name, "alice");
    assert_eq!(
        store
            .member_role("acc-alice", "acc-alice")
            .await
            .unwrap()
            .as_deref(),
        Some("owner")
    );
    assert_eq!(
        store.member_role("acc-alice", "acc-root").await.unwrap(),
        None
    );
    let (person, token) = store.lookup_api_token("hash-a", 10).await.unwrap();
    assert_eq!(person, alice);
    assert_eq!((token.id.as_str(), token.project_id), ("tok-a", None));
    let access = store.project_access("acc-alice", "web").await.unwrap();
    assert_eq!(access.project.account_id, "acc-alice");
    assert_eq!(access.account_role.as_deref(), Some("owner"));
    let root_view = store.project_access("acc-root", "web").await.unwrap();
    assert_eq!((root_view.account_role, root_view.grant_role), (None, None));
    assert_eq!(store.get_session("s1").await.unwrap().launched_by, "");
    // New people still get personal accounts next to the migrated ones.
    let bob = store.create_person("bob", false).await.unwrap();
    assert_eq!(store.list_members(&bob.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn sqlite_0004_keeps_existing_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kortix.db");
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .foreign_keys(true),
        )
        .await
        .unwrap();
    before_0004(&SQLITE_MIGRATOR).run(&pool).await.unwrap();
    for sql in OLD_ROWS {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let store = Store::open_sqlite(&path, StoreOptions::default())
        .await
        .unwrap();
    check_migrated(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_0004_keeps_existing_data() {
    let url = test_database_url();
    let base = PgConnectOptions::from_str(&url).unwrap();
    let mut admin = match PgConnection::connect_with(&base).await {
        Ok(c) => c,
        Err(e) => {
            kortix_tests::require::unavailable("PostgreSQL", &format!("{url}: {e}"));
            return;
        }
    };
    let schema = format!("kx_mig_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let options = base.options([("search_path", schema.as_str())]);
    let outcome = async {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .unwrap();
        before_0004(&POSTGRES_MIGRATOR).run(&pool).await.unwrap();
        for sql in OLD_ROWS {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;
        let store = Store::open_postgres(options, StoreOptions::default())
            .await
            .unwrap();
        check_migrated(&store).await;
        store.close().await;
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outcome)).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
