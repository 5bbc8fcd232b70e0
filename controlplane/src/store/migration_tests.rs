//! Migrations keep existing data. 0004: a store migrated only up to 0002 and filled the old
//! way (an account was a person) reads, after the remaining migrations, as people with
//! personal accounts they own, their tokens, projects and sessions unchanged. 0015
//! (PostgreSQL): records stored a row per record read the same as runs of records.

use std::borrow::Cow;
use std::str::FromStr;

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::testing::test_database_url;
use super::{POSTGRES_MIGRATOR, RecordRow, SQLITE_MIGRATOR, Store, StoreOptions};

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

/// The migrator's migrations before `version`.
fn before(all: &Migrator, version: i64) -> Migrator {
    let mut m = Migrator::DEFAULT;
    m.migrations = Cow::Owned(
        all.migrations
            .iter()
            .filter(|m| m.version < version)
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
    before(&SQLITE_MIGRATOR, 4).run(&pool).await.unwrap();
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

/// Runs `test` with connect options on a fresh schema of the test database, dropped after.
async fn in_fresh_pg_schema<F, Fut>(test: F)
where
    F: FnOnce(PgConnectOptions) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
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
    let outcome =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(test(options))).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Migrates a fresh schema up to (not including) `version` and runs `rows` in it.
async fn filled_before(options: &PgConnectOptions, version: i64, rows: &[&str]) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .unwrap();
    before(&POSTGRES_MIGRATOR, version)
        .run(&pool)
        .await
        .unwrap();
    for sql in rows {
        sqlx::query(sqlx::AssertSqlSafe(*sql))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

#[tokio::test]
async fn postgres_0004_keeps_existing_data() {
    in_fresh_pg_schema(|options| async move {
        filled_before(&options, 4, &OLD_ROWS).await;
        let store = Store::open_postgres(options, StoreOptions::default())
            .await
            .unwrap();
        check_migrated(&store).await;
        store.close().await;
    })
    .await;
}

fn old_record(seq: i64) -> RecordRow {
    RecordRow {
        seq,
        ts_ms: 1_700_000_000_000 + seq,
        kind: if seq % 3 == 0 { "événement" } else { "log" }.to_string(),
        body: if seq % 7 == 0 {
            Vec::new()
        } else {
            format!("line {seq}\0\u{ff}").into_bytes()
        },
    }
}

/// Records stored a row per record before 0015 — with gaps, past `acked_seq`, a run longer
/// than a migrated row holds, an empty body, a non-ASCII kind — read back the same after it,
/// and the writer carries on from them: a resend stores nothing twice, filling the gaps
/// advances `acked_seq` through the migrated rows, and deleting the session deletes them.
#[tokio::test]
async fn postgres_0015_moves_records_into_runs() {
    in_fresh_pg_schema(|options| async move {
        let stored: Vec<i64> = (1..=250).filter(|s| ![5, 6, 120].contains(s)).collect();
        let mut rows = vec![
            "INSERT INTO accounts (id, name, created_ms) VALUES ('acc', 'acc', 1)".to_string(),
            "INSERT INTO projects (id, account_id, name, default_branch, created_ms)
             VALUES ('prj', 'acc', 'web', 'main', 2)"
                .to_string(),
            "INSERT INTO sessions (id, project_id, status, created_ms, acked_seq)
             VALUES ('s1', 'prj', 'stopped', 3, 4), ('s2', 'prj', 'stopped', 3, 0)"
                .to_string(),
        ];
        for seq in &stored {
            let r = old_record(*seq);
            rows.push(format!(
                "INSERT INTO records (session_id, seq, ts_ms, kind, body)
                 VALUES ('s1', {seq}, {}, '{}', '\\x{}')",
                r.ts_ms,
                r.kind,
                hex::encode(&r.body)
            ));
        }
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        filled_before(&options, 15, &rows).await;
        let store = Store::open_postgres(options, StoreOptions::default())
            .await
            .unwrap();
        let all = store.read_records("s1", 0, 1000).await.unwrap();
        assert_eq!(
            all,
            stored.iter().copied().map(old_record).collect::<Vec<_>>()
        );
        let middle = store.read_records("s1", 150, 3).await.unwrap();
        assert_eq!(middle, [old_record(150), old_record(151), old_record(152)]);
        assert_eq!(
            store.read_records("s1", 5, 1).await.unwrap(),
            [old_record(7)]
        );
        assert_eq!(store.max_seq("s1").await.unwrap(), 250);
        assert_eq!(store.acked_seq("s1").await.unwrap(), 4);
        assert!(store.read_records("s2", 0, 10).await.unwrap().is_empty());

        let mut resend: Vec<RecordRow> = (100..=260).map(old_record).collect();
        resend[0].body = b"changed".to_vec();
        assert_eq!(store.insert_records("s1", &resend).await.unwrap(), 4);
        let filled: Vec<RecordRow> = (1..=10).map(old_record).collect();
        assert_eq!(store.insert_records("s1", &filled).await.unwrap(), 260);
        assert_eq!(
            store.read_records("s1", 0, 1000).await.unwrap(),
            (1..=260).map(old_record).collect::<Vec<_>>()
        );

        store.delete_session("s1").await.unwrap();
        assert!(store.read_records("s1", 0, 10).await.unwrap().is_empty());
        store.close().await;
    })
    .await;
}
