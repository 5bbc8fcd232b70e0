//! The store's suite. Every test is written once against a [`TestDb`] and runs on both
//! backends: SQLite in a temp dir and PostgreSQL in a fresh schema.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;

use futures::FutureExt;

use super::testing::PgTestSchema;
use super::*;
use crate::clock::now_ms;

/// A store under test, plus what is needed to open a second handle on the same database.
pub(crate) struct TestDb {
    pub store: Store,
    target: Target,
}

enum Target {
    Sqlite(PathBuf),
    Postgres(Box<PgConnectOptions>),
}

impl TestDb {
    /// Opens another store on the same database (runs migrations again).
    pub async fn reopen(&self) -> Store {
        match &self.target {
            Target::Sqlite(path) => Store::open_sqlite(path, StoreOptions::default())
                .await
                .unwrap(),
            Target::Postgres(opts) => {
                Store::open_postgres((**opts).clone(), StoreOptions::default())
                    .await
                    .unwrap()
            }
        }
    }
}

pub(crate) async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kortix.db");
    let store = Store::open_sqlite(&path, StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(store.kind(), BackendKind::Sqlite);
    test(TestDb {
        store: store.clone(),
        target: Target::Sqlite(path),
    })
    .await;
    store.close().await;
}

pub(crate) async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(schema) = PgTestSchema::create_or_skip().await else {
        return;
    };
    assert_eq!(schema.store().kind(), BackendKind::Postgres);
    let db = TestDb {
        store: schema.store().clone(),
        target: Target::Postgres(Box::new(schema.connect_options().unwrap())),
    };
    let outcome = std::panic::AssertUnwindSafe(test(db)).catch_unwind().await;
    let dropped = schema.drop_schema().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    dropped.unwrap();
}

/// Declares each listed `async fn(TestDb)` as a SQLite test and a PostgreSQL test.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::store::tests::run_sqlite(super::$name).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::store::tests::run_postgres(super::$name).await
                }
            )*
        }
    };
}
pub(crate) use both_backends;

both_backends!(
    migrations_are_idempotent_on_reopen,
    accounts_and_tokens,
    members_keep_an_owner,
    grants_and_visibility,
    narrowed_and_expiring_tokens,
    snapshot_build_claimed_once,
    snapshot_outcomes_and_retry,
    snapshot_prune_spares_live_and_recent,
    projects_names_and_visibility,
    secrets_upsert_list_delete_and_version,
    sessions_idempotency_key,
    sessions_conditional_transitions,
    sessions_sweeps_heartbeats_and_delete,
    sessions_heartbeats_flushed_together,
    records_dedup,
    records_gaps,
    records_group_commit,
    records_large_batches_and_reads,
    records_resend_overlapping_stored_batches,
    records_read_from_inside_a_batch,
    records_concurrent_resends_store_once,
    records_go_with_their_session_and_project,
    change_request_numbers_under_concurrency,
    change_request_states_and_paging,
    firing_claimed_exactly_once,
    firing_key_retired_and_claimed_again,
    firing_completion_and_listing,
    bootstrap_tokens_single_use_and_expiry,
    certs_and_git_tokens,
    audit_is_appended_and_paged_per_account,
    connector_credentials_approvals_and_calls,
);

/// The record writer rewinds the WAL when the checkpointer asks: it completes the checkpoint
/// before its next transaction, which then writes from the WAL's start (the file stops
/// growing). Without the request the WAL only grows. Runs on a copy of a store's database
/// with a writer of its own, so no background checkpointer touches it.
#[tokio::test]
async fn sqlite_record_writer_rewinds_the_wal_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    let path = dir.path().join("kortix.db");
    let wal = dir.path().join("kortix.db-wal");
    let store = Store::open_sqlite(&source, StoreOptions::default())
        .await
        .unwrap();
    let (_, project) = account_and_project(&store, "web").await;
    let s = session_in(&store, &project).await;
    let copy = rusqlite::Connection::open(&source).unwrap();
    copy.execute("VACUUM INTO ?1", [path.to_str().unwrap()])
        .unwrap();
    drop(copy);
    store.close().await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "journal_mode", "WAL")
        .unwrap();

    let writer =
        sqlite_records::RecordWriter::open(&path, true, std::time::Duration::from_secs(5)).unwrap();
    let wal_len = || std::fs::metadata(&wal).unwrap().len();
    let store_rows = |seqs: std::ops::RangeInclusive<i64>| {
        let batch: Vec<_> = seqs.map(rec).collect();
        writer.insert(&[(s.id.as_str(), &batch[..])]).unwrap()
    };
    assert_eq!(store_rows(1..=300), [Some(300)]);
    let first = wal_len();
    assert_eq!(store_rows(301..=600), [Some(600)]);
    let grown = wal_len();
    assert!(
        grown > first,
        "without a request the WAL grows: {first} → {grown}"
    );

    writer.rewind_flag().raise();
    assert_eq!(store_rows(601..=700), [Some(700)]);
    assert_eq!(
        wal_len(),
        grown,
        "the write after the request reuses the WAL from its start"
    );
    assert!(!writer.rewind_flag().take(), "the request is taken once");

    let store = Store::open_sqlite(&path, StoreOptions::default())
        .await
        .unwrap();
    let stored = store.read_records(&s.id, 0, 1000).await.unwrap();
    assert_eq!(stored.len(), 700);
    assert!(stored.iter().zip(1..).all(|(r, seq)| *r == rec(seq)));
    assert_eq!(store.acked_seq(&s.id).await.unwrap(), 700);
    store.close().await;
}

pub(crate) async fn account_and_project(store: &Store, name: &str) -> (Person, Project) {
    let account = store
        .create_person(&format!("{name}-owner"), false)
        .await
        .unwrap();
    let project = store
        .create_project(&account.id, name, "main")
        .await
        .unwrap();
    (account, project)
}

pub(crate) async fn session_in(store: &Store, project: &Project) -> Session {
    store
        .create_session(&NewSession {
            project_id: project.id.clone(),
            prompt: "do it".into(),
            origin: "cli".into(),
            ..NewSession::default()
        })
        .await
        .unwrap()
        .0
}

fn rec(seq: i64) -> RecordRow {
    RecordRow {
        seq,
        ts_ms: 1_700_000_000_000 + seq,
        kind: "log".into(),
        body: format!("line {seq}").into_bytes(),
    }
}

async fn migrations_are_idempotent_on_reopen(db: TestDb) {
    let person = db.store.create_person("alice", false).await.unwrap();
    let again = db.reopen().await;
    let again2 = db.reopen().await;
    assert_eq!(again.get_person(&person.id).await.unwrap(), person);
    assert_eq!(again.get_account(&person.id).await.unwrap().name, "alice");
    assert_eq!(again2.list_accounts().await.unwrap().len(), 1);
    again.close().await;
    again2.close().await;
}

async fn accounts_and_tokens(db: TestDb) {
    let store = &db.store;
    assert_eq!(store.server_admin().await.unwrap(), None);
    let admin = store.create_person("root", true).await.unwrap();
    assert_eq!(store.server_admin().await.unwrap(), Some(admin.clone()));
    let alice = store.create_person("alice", false).await.unwrap();
    assert!(
        store
            .create_person("alice", false)
            .await
            .unwrap_err()
            .is_already_exists()
    );
    assert!(matches!(
        store.create_person("bad name", false).await,
        Err(Error::Invalid { .. })
    ));
    assert_eq!(store.get_person_by_name("root").await.unwrap(), admin);
    assert_eq!(
        store.get_account_by_name("root").await.unwrap().id,
        admin.id
    );
    assert!(store.get_account("nope").await.unwrap_err().is_not_found());

    let token = store
        .create_api_token(&alice.id, "laptop", "hash-a")
        .await
        .unwrap();
    store
        .create_api_token(&alice.id, "ci", "hash-b")
        .await
        .unwrap();
    assert!(
        store
            .create_api_token(&alice.id, "dup", "hash-a")
            .await
            .unwrap_err()
            .is_already_exists()
    );
    assert!(
        store
            .create_api_token("ghost", "x", "hash-c")
            .await
            .unwrap_err()
            .is_not_found()
    );

    let (acc, tok) = store.lookup_api_token("hash-a", 1_000_000).await.unwrap();
    assert_eq!(acc, alice);
    assert_eq!(tok.id, token.id);
    assert_eq!(tok.last_used_ms, Some(1_000_000));
    assert!(
        store
            .lookup_api_token("hash-zzz", 1)
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Another account can't revoke it.
    assert!(
        store
            .revoke_api_token(&admin.id, &token.id, 5)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let revoked = store
        .revoke_api_token(&alice.id, &token.id, 5)
        .await
        .unwrap();
    assert_eq!(revoked.revoked_ms, Some(5));
    let twice = store
        .revoke_api_token(&alice.id, &token.id, 9)
        .await
        .unwrap();
    assert_eq!(twice.revoked_ms, Some(5));
    assert!(
        store
            .lookup_api_token("hash-a", 10)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(store.lookup_api_token("hash-b", 10).await.is_ok());

    let listed = store.list_api_tokens(&alice.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed.iter().filter(|t| t.revoked_ms.is_some()).count(), 1);
    assert!(store.list_api_tokens(&admin.id).await.unwrap().is_empty());
}

async fn projects_names_and_visibility(db: TestDb) {
    let store = &db.store;
    let alice = store.create_person("alice", false).await.unwrap();
    let bob = store.create_person("bob", false).await.unwrap();
    let web = store
        .create_project(&alice.id, "web", "main")
        .await
        .unwrap();
    let api = store
        .create_project(&alice.id, "api", "trunk")
        .await
        .unwrap();
    assert!(
        store
            .create_project(&bob.id, "web", "main")
            .await
            .unwrap_err()
            .is_already_exists()
    );
    assert!(
        store
            .create_project("ghost", "orphan", "main")
            .await
            .unwrap_err()
            .is_not_found()
    );

    assert_eq!(store.get_project(&alice.id, "web").await.unwrap(), web);
    assert_eq!(store.get_project(&alice.id, &web.id).await.unwrap(), web);
    // Bob sees neither by name nor by id, and the error is the plain not-found one.
    let by_name = store.get_project(&bob.id, "web").await.unwrap_err();
    let by_id = store.get_project(&bob.id, &web.id).await.unwrap_err();
    let missing = store.get_project(&bob.id, "nothing").await.unwrap_err();
    assert!(by_name.is_not_found() && by_id.is_not_found() && missing.is_not_found());
    assert_eq!(by_name.to_string(), "project 'web' not found");

    let names: Vec<_> = store
        .list_projects(&alice.id)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["api", "web"]);
    assert!(store.list_projects(&bob.id).await.unwrap().is_empty());
    assert_eq!(store.find_project(&api.id).await.unwrap(), api);
    assert_eq!(store.list_all_projects().await.unwrap().len(), 2);

    store.delete_project(&api.id).await.unwrap();
    assert!(store.find_project("api").await.unwrap_err().is_not_found());
    assert!(
        store
            .delete_project(&api.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

async fn secrets_upsert_list_delete_and_version(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    assert_eq!(store.secrets_version(&project.id).await.unwrap(), 0);

    let (meta, v1) = store
        .put_secret(&project.id, "API_KEY", b"n1", b"c1")
        .await
        .unwrap();
    assert_eq!(v1, 1);
    assert_eq!(meta.name, "API_KEY");
    let (_, v2) = store
        .put_secret(&project.id, "DB_URL", b"n2", b"c2")
        .await
        .unwrap();
    let (updated, v3) = store
        .put_secret(&project.id, "API_KEY", b"n3", b"c3")
        .await
        .unwrap();
    assert_eq!((v2, v3), (2, 3));
    assert_eq!(updated.created_ms, meta.created_ms);
    assert!(updated.updated_ms >= meta.updated_ms);

    let names: Vec<_> = store
        .list_secrets(&project.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["API_KEY", "DB_URL"]);
    let snap = store.load_secrets(&project.id).await.unwrap();
    assert_eq!(snap.version, 3);
    assert_eq!(snap.secrets.len(), 2);
    assert_eq!(snap.secrets[0].nonce, b"n3");
    assert_eq!(snap.secrets[0].ciphertext, b"c3");

    let (gone, v4) = store.delete_secret(&project.id, "DB_URL").await.unwrap();
    assert_eq!((gone.name.as_str(), v4), ("DB_URL", 4));
    assert!(
        store
            .delete_secret(&project.id, "DB_URL")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(store.secrets_version(&project.id).await.unwrap(), 4);
    store.delete_secret(&project.id, "API_KEY").await.unwrap();
    let empty = store.load_secrets(&project.id).await.unwrap();
    assert_eq!((empty.version, empty.secrets.len()), (5, 0));

    assert!(
        store
            .put_secret("ghost", "X", b"n", b"c")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        store
            .load_secrets("ghost")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

async fn sessions_idempotency_key(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let (_, other) = account_and_project(store, "api").await;
    let new = NewSession {
        project_id: project.id.clone(),
        prompt: "fix it".into(),
        idempotency_key: "key-1".into(),
        origin: "cli".into(),
        ..NewSession::default()
    };
    let (first, created) = store.create_session(&new).await.unwrap();
    assert!(created);
    assert_eq!(first.status, SessionStatus::Provisioning);
    assert_eq!(first.acked_seq, 0);
    assert!(!first.prompt_delivered);
    let (again, created) = store.create_session(&new).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    // The same key in another project is a different session.
    let (elsewhere, created) = store
        .create_session(&NewSession {
            project_id: other.id.clone(),
            ..new.clone()
        })
        .await
        .unwrap();
    assert!(created);
    assert_ne!(elsewhere.id, first.id);
    // Empty keys never collide.
    let plain = NewSession {
        idempotency_key: String::new(),
        ..new.clone()
    };
    let (a, _) = store.create_session(&plain).await.unwrap();
    let (b, _) = store.create_session(&plain).await.unwrap();
    assert_ne!(a.id, b.id);
    // An explicit id that is taken is refused, an unknown project is not found.
    let taken = NewSession {
        id: Some(a.id.clone()),
        ..plain.clone()
    };
    assert!(
        store
            .create_session(&taken)
            .await
            .unwrap_err()
            .is_already_exists()
    );
    let orphan = NewSession {
        project_id: "ghost".into(),
        ..plain
    };
    assert!(
        store
            .create_session(&orphan)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(store.list_sessions(&project.id, 0).await.unwrap().len(), 3);
}

async fn sessions_conditional_transitions(db: TestDb) {
    use SessionStatus::*;
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let s = session_in(store, &project).await;

    // Two replicas race provisioning -> running: exactly one moves it.
    let (a, b) = tokio::join!(
        store.transition_session(&s.id, &[Provisioning], Running, None),
        store.transition_session(&s.id, &[Provisioning], Running, None),
    );
    assert!(a.unwrap() ^ b.unwrap());
    let running = store.get_session(&s.id).await.unwrap();
    assert_eq!(running.status, Running);
    let started = running.started_ms.unwrap();
    assert!(running.ended_ms.is_none());

    assert!(
        !store
            .transition_session(&s.id, &[Provisioning], Failed, Some("x"))
            .await
            .unwrap()
    );
    assert!(
        store
            .transition_session(&s.id, &[Running], Stopping, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .transition_session(
                &s.id,
                &[Running, Stopping],
                Failed,
                Some("opencode crashed 5 times")
            )
            .await
            .unwrap()
    );
    let failed = store.get_session(&s.id).await.unwrap();
    assert_eq!(failed.status, Failed);
    assert_eq!(failed.failure_reason, "opencode crashed 5 times");
    assert_eq!(failed.started_ms, Some(started));
    assert!(failed.ended_ms.is_some());
    assert!(
        !store
            .transition_session(&s.id, &ACTIVE_OR_NOTHING, Running, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition_session("ghost", &[Provisioning], Running, None)
            .await
            .unwrap()
    );

    assert!(store.mark_prompt_delivered(&s.id).await.unwrap());
    assert!(!store.mark_prompt_delivered(&s.id).await.unwrap());
    store.set_session_head(&s.id, "abc123").await.unwrap();
    store
        .set_session_exit_status(&s.id, "exit 0")
        .await
        .unwrap();
    let s2 = store.get_session(&s.id).await.unwrap();
    assert_eq!(
        (s2.head_sha.as_str(), s2.exit_status.as_deref()),
        ("abc123", Some("exit 0"))
    );
    assert!(
        store
            .set_session_head("ghost", "x")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

const ACTIVE_OR_NOTHING: [SessionStatus; 4] = SessionStatus::ACTIVE;

async fn sessions_sweeps_heartbeats_and_delete(db: TestDb) {
    use SessionStatus::*;
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let (_, api) = account_and_project(store, "api").await;
    let provisioning = session_in(store, &project).await;
    let live = session_in(store, &project).await;
    let quiet = session_in(store, &project).await;
    for s in [&live, &quiet] {
        assert!(
            store
                .transition_session(&s.id, &[Provisioning], Running, None)
                .await
                .unwrap()
        );
    }
    let now = now_ms();
    assert!(
        store
            .record_heartbeat(&live.id, 5, now + 10_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .record_heartbeat(&quiet.id, 600_000, now - 120_000)
            .await
            .unwrap()
    );
    // A provisioning session's agent (cloning, on whichever replica) is heard too; an ended
    // session's is not.
    assert!(
        store
            .record_heartbeat(&provisioning.id, 0, now)
            .await
            .unwrap()
    );
    let ended = session_in(store, &project).await;
    assert!(
        store
            .transition_session(&ended.id, &[Provisioning], Stopped, None)
            .await
            .unwrap()
    );
    assert!(!store.record_heartbeat(&ended.id, 0, now).await.unwrap());
    let stale_prov = store
        .stale_provisioning_sessions(now + 1, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&stale_prov), std::slice::from_ref(&provisioning.id));
    assert!(
        store
            .stale_provisioning_sessions(0, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let stale_run = store
        .stale_running_sessions(now - 60_000, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&stale_run), std::slice::from_ref(&quiet.id));
    let idle = store
        .idle_running_sessions(300_000, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&idle), std::slice::from_ref(&quiet.id));
    let running = store
        .list_sessions_in_status(&[Running], None, 10)
        .await
        .unwrap();
    assert_eq!(running.len(), 2);
    assert_eq!(
        store
            .list_sessions_in_status(&[Running, Provisioning], None, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    // Keyset paging visits every session once, in (created_ms, id) order.
    let first = store
        .list_sessions_in_status(&[Running], None, 1)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let second = store
        .list_sessions_in_status(&[Running], first.last(), 1)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(first[0].id, second[0].id);
    assert_eq!(ids(&[first[0].clone(), second[0].clone()]), ids(&running));
    assert!(
        store
            .list_sessions_in_status(&[Running], second.last(), 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .stale_running_sessions(now - 60_000, stale_run.last(), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Reads over several projects.
    let both = [project.id.clone(), api.id.clone()];
    assert_eq!(store.list_sessions_of(&both, 0).await.unwrap().len(), 4);
    assert!(
        store
            .list_sessions_of(std::slice::from_ref(&api.id), 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.list_sessions_of(&[], 0).await.unwrap().is_empty());

    // A live session can't be deleted; a stopped one goes with its records.
    assert!(matches!(
        store.delete_session(&live.id).await,
        Err(Error::Invalid { .. })
    ));
    store
        .insert_records(&live.id, &[rec(1), rec(2)])
        .await
        .unwrap();
    assert!(
        store
            .transition_session(&live.id, &[Running], Stopped, None)
            .await
            .unwrap()
    );
    assert_eq!(store.delete_session(&live.id).await.unwrap().id, live.id);
    assert!(
        store
            .get_session(&live.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        store
            .read_records(&live.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .delete_session(&live.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

fn ids(sessions: &[Session]) -> Vec<String> {
    sessions.iter().map(|s| s.id.clone()).collect()
}

/// Many heartbeats in one flush, in any order: the ended and the unknown sessions come back,
/// the rest are stored (a negative idle time as 0).
async fn sessions_heartbeats_flushed_together(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let live = session_in(store, &project).await;
    let provisioning = session_in(store, &project).await;
    let ended = session_in(store, &project).await;
    assert!(
        store
            .transition_session(
                &live.id,
                &[SessionStatus::Provisioning],
                SessionStatus::Running,
                None
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .transition_session(
                &ended.id,
                &[SessionStatus::Provisioning],
                SessionStatus::Stopped,
                None
            )
            .await
            .unwrap()
    );
    let now = now_ms();
    let skipped = store
        .record_heartbeats(&[
            (ended.id.as_str(), 0, now),
            (live.id.as_str(), -7, now + 20_000),
            ("ghost", 0, now),
            (provisioning.id.as_str(), 3, now + 1),
        ])
        .await
        .unwrap();
    let mut expected = vec![ended.id.clone(), "ghost".to_string()];
    expected.sort();
    assert_eq!(skipped, expected);
    let beaten = store.get_session(&live.id).await.unwrap();
    assert_eq!(
        (beaten.last_heartbeat_ms, beaten.idle_ms),
        (Some(now + 20_000), 0)
    );
    let beaten = store.get_session(&provisioning.id).await.unwrap();
    assert_eq!(
        (beaten.last_heartbeat_ms, beaten.idle_ms),
        (Some(now + 1), 3)
    );
    assert_eq!(
        store
            .get_session(&ended.id)
            .await
            .unwrap()
            .last_heartbeat_ms,
        None
    );
}

async fn records_dedup(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let s = session_in(store, &project).await;
    let first: Vec<_> = (1..=10).map(rec).collect();
    assert_eq!(store.insert_records(&s.id, &first).await.unwrap(), 10);
    let mut second: Vec<_> = (5..=15).map(rec).collect();
    // A replayed record with different content does not overwrite the stored one.
    second[0].body = b"changed".to_vec();
    assert_eq!(store.insert_records(&s.id, &second).await.unwrap(), 15);
    let all = store.read_records(&s.id, 0, 100).await.unwrap();
    assert_eq!(all.len(), 15);
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=15).collect::<Vec<_>>()
    );
    assert_eq!(all[4], rec(5));
    assert_eq!(store.max_seq(&s.id).await.unwrap(), 15);
    assert_eq!(store.acked_seq(&s.id).await.unwrap(), 15);
    // Duplicates inside one batch are fine too.
    assert_eq!(
        store
            .insert_records(&s.id, &[rec(16), rec(16)])
            .await
            .unwrap(),
        16
    );
    // Replaying everything changes nothing.
    assert_eq!(store.insert_records(&s.id, &first).await.unwrap(), 16);
    assert_eq!(store.insert_records(&s.id, &[]).await.unwrap(), 16);
}

async fn records_gaps(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let s = session_in(store, &project).await;
    assert_eq!(store.max_seq(&s.id).await.unwrap(), 0);
    let batch = [rec(1), rec(2), rec(3), rec(5), rec(6)];
    assert_eq!(store.insert_records(&s.id, &batch).await.unwrap(), 3);
    assert_eq!(store.max_seq(&s.id).await.unwrap(), 6);
    assert_eq!(store.insert_records(&s.id, &[rec(4)]).await.unwrap(), 6);
    assert_eq!(store.get_session(&s.id).await.unwrap().acked_seq, 6);

    // Nothing contiguous from the start.
    let t = session_in(store, &project).await;
    assert_eq!(
        store
            .insert_records(&t.id, &[rec(2), rec(3)])
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.insert_records(&t.id, &[rec(1)]).await.unwrap(), 3);
    // A resend after a reconnect: rows past a gap, stored already, beside new ones.
    let u = session_in(store, &project).await;
    assert_eq!(store.insert_records(&u.id, &[rec(3)]).await.unwrap(), 0);
    assert_eq!(
        store
            .insert_records(&u.id, &[rec(1), rec(2), rec(3), rec(4)])
            .await
            .unwrap(),
        4
    );
    assert_eq!(store.read_records(&u.id, 0, 10).await.unwrap().len(), 4);

    assert!(matches!(
        store.insert_records(&t.id, &[rec(0)]).await,
        Err(Error::Invalid { .. })
    ));
    assert!(
        store
            .insert_records("ghost", &[rec(1)])
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(store.acked_seq("ghost").await.unwrap_err().is_not_found());
}

/// One group commit answers each batch on its own: several sessions, one session twice (its
/// second batch filling the first's gap), an unknown session and an invalid batch.
async fn records_group_commit(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let a = session_in(store, &project).await;
    let b = session_in(store, &project).await;
    store.insert_records(&b.id, &[rec(1)]).await.unwrap();
    let a1 = [rec(1), rec(2), rec(4)];
    let b1 = [rec(2), rec(3)];
    let a2 = [rec(3), rec(5)];
    let bad = [rec(0)];
    let outcomes = store
        .insert_record_batches(&[
            (b.id.as_str(), &b1[..]),
            (a.id.as_str(), &a1[..]),
            ("ghost", &[rec(1)][..]),
            (a.id.as_str(), &a2[..]),
            (b.id.as_str(), &bad[..]),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes[0].as_ref().unwrap(), &3);
    // a's first batch reaches 2 on its own; a backend may answer it with the run both made.
    assert!(matches!(outcomes[1], Ok(2 | 5)), "{:?}", outcomes[1]);
    assert!(outcomes[2].as_ref().unwrap_err().is_not_found());
    assert_eq!(outcomes[3].as_ref().unwrap(), &5);
    assert!(matches!(outcomes[4], Err(Error::Invalid { .. })));
    assert_eq!(store.acked_seq(&a.id).await.unwrap(), 5);
    assert_eq!(store.acked_seq(&b.id).await.unwrap(), 3);
    let seqs = |rows: Vec<RecordRow>| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.read_records(&a.id, 0, 10).await.unwrap()),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        seqs(store.read_records(&b.id, 0, 10).await.unwrap()),
        [1, 2, 3]
    );
}

/// Records have no foreign key (it cost a parent lookup per record); a trigger deletes them
/// with their session, also when the session goes with its project.
async fn records_go_with_their_session_and_project(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let ended = session_in(store, &project).await;
    let kept = session_in(store, &project).await;
    for s in [&ended, &kept] {
        assert_eq!(
            store
                .insert_records(&s.id, &[rec(1), rec(2)])
                .await
                .unwrap(),
            2
        );
    }
    store
        .transition_session(
            &ended.id,
            &[SessionStatus::Provisioning],
            SessionStatus::Failed,
            None,
        )
        .await
        .unwrap();
    store.delete_session(&ended.id).await.unwrap();
    assert!(
        store
            .read_records(&ended.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.read_records(&kept.id, 0, 10).await.unwrap().len(), 2);
    // Records for a session that does not exist are refused, not stored as orphans.
    assert!(
        store
            .insert_records(&ended.id, &[rec(3)])
            .await
            .unwrap_err()
            .is_not_found()
    );
    store.delete_project(&project.id).await.unwrap();
    assert!(
        store
            .read_records(&kept.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn records_large_batches_and_reads(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let s = session_in(store, &project).await;
    // Out of order within and across batches, sizes that split into many chunks.
    let mut seqs: Vec<i64> = (1..=1234).collect();
    seqs.reverse();
    let (late, early) = seqs.split_at(300);
    let early: Vec<_> = early.iter().copied().map(rec).collect();
    let late: Vec<_> = late.iter().copied().map(rec).collect();
    assert_eq!(store.insert_records(&s.id, &early).await.unwrap(), 934);
    assert_eq!(store.insert_records(&s.id, &late).await.unwrap(), 1234);

    let page = store.read_records(&s.id, 1000, 50).await.unwrap();
    assert_eq!(page.len(), 50);
    assert_eq!(page[0], rec(1000));
    assert_eq!(page[49].seq, 1049);
    let tail = store.read_records(&s.id, 1200, 1000).await.unwrap();
    assert_eq!(tail.len(), 35);
    assert!(
        store
            .read_records(&s.id, 5000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// An agent's resend after a reconnect overlaps what is stored: wholly, partly, and partly
/// inside a batch stored past a gap. Nothing is stored twice, nothing lost, the stored
/// content wins.
async fn records_resend_overlapping_stored_batches(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let s = session_in(store, &project).await;
    let batch = |seqs: std::ops::RangeInclusive<i64>| seqs.map(rec).collect::<Vec<_>>();
    assert_eq!(
        store.insert_records(&s.id, &batch(1..=100)).await.unwrap(),
        100
    );
    let mut resend = batch(51..=150);
    resend[10].body = b"changed".to_vec();
    assert_eq!(store.insert_records(&s.id, &resend).await.unwrap(), 150);
    assert_eq!(
        store.insert_records(&s.id, &batch(1..=150)).await.unwrap(),
        150
    );
    // Past a gap (151..=160 missing), then a resend starting inside the stored batch and
    // reaching past it, then the gap filled by a batch that also overlaps both sides.
    assert_eq!(
        store
            .insert_records(&s.id, &batch(161..=200))
            .await
            .unwrap(),
        150
    );
    let mut inside = batch(180..=220);
    inside[0].body = b"changed".to_vec();
    assert_eq!(store.insert_records(&s.id, &inside).await.unwrap(), 150);
    assert_eq!(store.max_seq(&s.id).await.unwrap(), 220);
    assert_eq!(
        store
            .insert_records(&s.id, &batch(140..=170))
            .await
            .unwrap(),
        220
    );
    let all = store.read_records(&s.id, 0, 1000).await.unwrap();
    assert_eq!(all, batch(1..=220));
    assert_eq!(store.acked_seq(&s.id).await.unwrap(), 220);
}

/// Reads start at any seq: inside a stored batch, at its ends, inside a gap, past the end;
/// and stop at the limit inside a batch.
async fn records_read_from_inside_a_batch(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let s = session_in(store, &project).await;
    let batch = |seqs: std::ops::RangeInclusive<i64>| seqs.map(rec).collect::<Vec<_>>();
    for seqs in [1..=100, 101..=200, 251..=300] {
        store.insert_records(&s.id, &batch(seqs)).await.unwrap();
    }
    let read = |from, limit| store.read_records(&s.id, from, limit);
    assert_eq!(read(37, 10).await.unwrap(), batch(37..=46));
    assert_eq!(read(95, 10).await.unwrap(), batch(95..=104));
    assert_eq!(read(100, 2).await.unwrap(), batch(100..=101));
    assert_eq!(read(101, 1).await.unwrap(), batch(101..=101));
    assert_eq!(
        read(190, 20).await.unwrap(),
        [batch(190..=200), batch(251..=259)].concat()
    );
    assert_eq!(read(220, 3).await.unwrap(), batch(251..=253));
    assert_eq!(read(300, 10).await.unwrap(), batch(300..=300));
    assert!(read(301, 10).await.unwrap().is_empty());
    assert_eq!(read(0, 1000).await.unwrap().len(), 250);
    // Many small batches: a read crosses many of them.
    let t = session_in(store, &project).await;
    for seq in 1..=120 {
        store.insert_records(&t.id, &[rec(seq)]).await.unwrap();
    }
    assert_eq!(
        store.read_records(&t.id, 7, 100).await.unwrap(),
        batch(7..=106)
    );
}

/// Writers storing overlapping batches of one session at the same time (two replicas, or a
/// batch queued twice) store each record once.
async fn records_concurrent_resends_store_once(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let s = session_in(store, &project).await;
    let other = db.reopen().await;
    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let store = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let id = s.id.clone();
        tasks.push(tokio::spawn(async move {
            let batch: Vec<_> = (i * 25 + 1..=i * 25 + 100).map(rec).collect();
            store.insert_records(&id, &batch).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = store.read_records(&s.id, 0, 1000).await.unwrap();
    assert_eq!(all, (1..=275).map(rec).collect::<Vec<_>>());
    assert_eq!(store.acked_seq(&s.id).await.unwrap(), 275);
    other.close().await;
}

async fn change_request_numbers_under_concurrency(db: TestDb) {
    let store = &db.store;
    let (account, project) = account_and_project(store, "web").await;
    let (_, other) = account_and_project(store, "api").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let new = NewChangeRequest {
            project_id: project.id.clone(),
            title: format!("change {i}"),
            head_branch: format!("branch-{i}"),
            base_branch: "main".into(),
            author_account_id: account.id.clone(),
            ..NewChangeRequest::default()
        };
        tasks.push(tokio::spawn(async move {
            store.open_change_request(&new).await
        }));
    }
    let mut numbers = BTreeSet::new();
    for t in tasks {
        let cr = t.await.unwrap().unwrap();
        assert_eq!(cr.state, CrState::Open);
        assert!(numbers.insert(cr.number), "duplicate number {}", cr.number);
    }
    assert_eq!(numbers, (1..=20).collect::<BTreeSet<i64>>());
    // Numbering is per project.
    let first_elsewhere = store
        .open_change_request(&NewChangeRequest {
            project_id: other.id.clone(),
            title: "t".into(),
            head_branch: "x".into(),
            base_branch: "main".into(),
            ..NewChangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(first_elsewhere.number, 1);
}

async fn change_request_states_and_paging(db: TestDb) {
    let store = &db.store;
    let (account, project) = account_and_project(store, "web").await;
    let session = session_in(store, &project).await;
    let new = |i: i64| NewChangeRequest {
        project_id: project.id.clone(),
        title: format!("change {i}"),
        body: "why".into(),
        head_branch: format!("b{i}"),
        base_branch: "main".into(),
        head_sha: "h".into(),
        base_sha: "b".into(),
        merge_base: "m".into(),
        session_id: (i == 1).then(|| session.id.clone()),
        author_account_id: account.id.clone(),
    };
    for i in 1..=5 {
        assert_eq!(store.open_change_request(&new(i)).await.unwrap().number, i);
    }
    // One open CR per head branch.
    let mut dup = new(9);
    dup.head_branch = "b1".into();
    assert!(
        store
            .open_change_request(&dup)
            .await
            .unwrap_err()
            .is_already_exists()
    );
    assert!(
        store
            .open_change_request(&NewChangeRequest {
                project_id: "ghost".into(),
                ..new(7)
            })
            .await
            .unwrap_err()
            .is_not_found()
    );

    let cr1 = store.get_change_request(&project.id, 1).await.unwrap();
    assert_eq!(cr1.session_id.as_deref(), Some(session.id.as_str()));
    assert!(
        store
            .get_change_request(&project.id, 99)
            .await
            .unwrap_err()
            .is_not_found()
    );

    assert!(store.close_change_request(&project.id, 2).await.unwrap());
    assert!(!store.close_change_request(&project.id, 2).await.unwrap());
    // While #2 is closed, another CR for its branch may open; then reopening #2 conflicts.
    let mut b2 = new(2);
    b2.title = "again".into();
    let six = store.open_change_request(&b2).await.unwrap();
    assert_eq!(six.number, 6);
    assert!(
        store
            .reopen_change_request(&project.id, 2)
            .await
            .unwrap_err()
            .is_already_exists()
    );
    assert!(store.close_change_request(&project.id, 6).await.unwrap());
    assert!(store.reopen_change_request(&project.id, 2).await.unwrap());
    assert!(!store.reopen_change_request(&project.id, 2).await.unwrap());

    assert!(
        store
            .update_change_request_shas(&project.id, 3, "h2", "b2", "m2")
            .await
            .unwrap()
    );
    let merged = MergedChangeRequest {
        head_sha: "h3".into(),
        base_sha: "b3".into(),
        merge_base: "m3".into(),
        merge_commit: "c3".into(),
        merged_diff: "diff --git a/x b/x".into(),
    };
    let (m1, m2) = tokio::join!(
        store.mark_change_request_merged(&project.id, 3, &merged),
        store.mark_change_request_merged(&project.id, 3, &merged),
    );
    assert!(m1.unwrap() ^ m2.unwrap());
    let cr3 = store.get_change_request(&project.id, 3).await.unwrap();
    assert_eq!(
        (cr3.state, cr3.merge_commit.as_str()),
        (CrState::Merged, "c3")
    );
    assert!(cr3.merged_ms.is_some());
    assert_eq!(
        store.merged_diff(&project.id, 3).await.unwrap().as_deref(),
        Some("diff --git a/x b/x")
    );
    assert_eq!(store.merged_diff(&project.id, 1).await.unwrap(), None);
    assert!(!store.close_change_request(&project.id, 3).await.unwrap());
    assert!(!store.reopen_change_request(&project.id, 3).await.unwrap());
    assert!(
        !store
            .update_change_request_shas(&project.id, 3, "x", "y", "z")
            .await
            .unwrap()
    );
    assert!(
        store
            .find_open_change_request(&project.id, "b3")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .find_open_change_request(&project.id, "b4")
            .await
            .unwrap()
            .unwrap()
            .number,
        4
    );

    let numbers = |crs: Vec<ChangeRequest>| crs.into_iter().map(|c| c.number).collect::<Vec<_>>();
    let all = CrListQuery::default();
    assert_eq!(
        numbers(store.list_change_requests(&project.id, &all).await.unwrap()),
        [1, 2, 3, 4, 5, 6]
    );
    let open = CrListQuery {
        state: Some(CrState::Open),
        limit: 2,
        ..CrListQuery::default()
    };
    assert_eq!(
        numbers(
            store
                .list_change_requests(&project.id, &open)
                .await
                .unwrap()
        ),
        [1, 2]
    );
    let next = CrListQuery {
        after_number: Some(2),
        ..open.clone()
    };
    assert_eq!(
        numbers(
            store
                .list_change_requests(&project.id, &next)
                .await
                .unwrap()
        ),
        [4, 5]
    );
    let last = CrListQuery {
        after_number: Some(5),
        ..open.clone()
    };
    assert!(
        store
            .list_change_requests(&project.id, &last)
            .await
            .unwrap()
            .is_empty()
    );
    let newest = CrListQuery {
        newest_first: true,
        limit: 2,
        ..CrListQuery::default()
    };
    assert_eq!(
        numbers(
            store
                .list_change_requests(&project.id, &newest)
                .await
                .unwrap()
        ),
        [6, 5]
    );
    let older = CrListQuery {
        after_number: Some(5),
        ..newest
    };
    assert_eq!(
        numbers(
            store
                .list_change_requests(&project.id, &older)
                .await
                .unwrap()
        ),
        [4, 3]
    );
    let merged_only = CrListQuery {
        state: Some(CrState::Merged),
        ..CrListQuery::default()
    };
    assert_eq!(
        numbers(
            store
                .list_change_requests(&project.id, &merged_only)
                .await
                .unwrap()
        ),
        [3]
    );

    // Deleting the session keeps its CR.
    assert!(
        store
            .transition_session(
                &session.id,
                &[SessionStatus::Provisioning],
                SessionStatus::Stopped,
                None
            )
            .await
            .unwrap()
    );
    store.delete_session(&session.id).await.unwrap();
    assert_eq!(
        store
            .get_change_request(&project.id, 1)
            .await
            .unwrap()
            .session_id,
        None
    );
}

async fn firing_key_retired_and_claimed_again(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let new = NewFiring {
        project_id: project.id.clone(),
        trigger_slug: "hook".into(),
        firing_key: "signed:abc".into(),
        fired_ms: 1_000,
        scheduled_ms: Some(1_000),
        catch_up: false,
    };
    let Claim::Claimed(first) = store.claim_firing(&new).await.unwrap() else {
        panic!("the first claim wins");
    };
    assert!(
        store
            .retire_firing_key(&first, "signed:abc", "signed:abc@1000")
            .await
            .unwrap()
    );
    assert!(
        !store
            .retire_firing_key(&first, "signed:abc", "signed:abc@1000")
            .await
            .unwrap(),
        "only once"
    );
    assert_eq!(
        store.get_firing(&first).await.unwrap().firing_key,
        "signed:abc@1000"
    );
    let again = NewFiring {
        fired_ms: 2_000,
        ..new
    };
    let Claim::Claimed(second) = store.claim_firing(&again).await.unwrap() else {
        panic!("a retired key is free again");
    };
    assert_ne!(first, second);
    assert!(matches!(
        store.claim_firing(&again).await.unwrap(),
        Claim::AlreadyClaimed(f) if f.id == second
    ));
}

async fn firing_claimed_exactly_once(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let new = NewFiring {
        project_id: project.id.clone(),
        trigger_slug: "nightly".into(),
        firing_key: "cron:1700000000".into(),
        fired_ms: 1_700_000_000_500,
        scheduled_ms: Some(1_700_000_000_000),
        catch_up: false,
    };
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let store = store.clone();
        let new = new.clone();
        tasks.push(tokio::spawn(async move { store.claim_firing(&new).await }));
    }
    let mut claimed = Vec::new();
    let mut already = Vec::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Claim::Claimed(id) => claimed.push(id),
            Claim::AlreadyClaimed(f) => already.push(f),
        }
    }
    assert_eq!(claimed.len(), 1, "exactly one claimer");
    assert_eq!(already.len(), 11);
    assert!(
        already
            .iter()
            .all(|f| f.id == claimed[0] && f.outcome == FiringOutcome::Pending)
    );
    assert_eq!(already[0].scheduled_ms, Some(1_700_000_000_000));

    // A different key of the same trigger, or the same key of another trigger, is new.
    let other_key = NewFiring {
        firing_key: "cron:1700000060".into(),
        ..new.clone()
    };
    assert!(matches!(
        store.claim_firing(&other_key).await.unwrap(),
        Claim::Claimed(_)
    ));
    let other_slug = NewFiring {
        trigger_slug: "hourly".into(),
        ..new.clone()
    };
    assert!(matches!(
        store.claim_firing(&other_slug).await.unwrap(),
        Claim::Claimed(_)
    ));
    let orphan = NewFiring {
        project_id: "ghost".into(),
        ..new.clone()
    };
    assert!(
        store
            .claim_firing(&orphan)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let empty = NewFiring {
        firing_key: String::new(),
        ..new
    };
    assert!(matches!(
        store.claim_firing(&empty).await,
        Err(Error::Invalid { .. })
    ));
}

async fn firing_completion_and_listing(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let session = session_in(store, &project).await;
    let fire = |slug: &str, key: &str, fired_ms: i64| NewFiring {
        project_id: project.id.clone(),
        trigger_slug: slug.into(),
        firing_key: key.into(),
        fired_ms,
        scheduled_ms: None,
        catch_up: true,
    };
    let Claim::Claimed(a) = store
        .claim_firing(&fire("nightly", "k1", 100))
        .await
        .unwrap()
    else {
        panic!("fresh key not claimed")
    };
    let Claim::Claimed(b) = store
        .claim_firing(&fire("nightly", "k2", 200))
        .await
        .unwrap()
    else {
        panic!("fresh key not claimed")
    };
    let Claim::Claimed(_c) = store
        .claim_firing(&fire("hook", "delivery:1", 150))
        .await
        .unwrap()
    else {
        panic!("fresh key not claimed")
    };
    assert!(
        store
            .complete_firing(&a, FiringOutcome::Started, Some(&session.id), None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_firing(&a, FiringOutcome::Failed, None, Some("late"))
            .await
            .unwrap()
    );
    assert!(
        store
            .complete_firing(&b, FiringOutcome::Failed, None, Some("no template"))
            .await
            .unwrap()
    );

    let fa = store.get_firing(&a).await.unwrap();
    assert_eq!(
        (fa.outcome, fa.session_id.as_deref()),
        (FiringOutcome::Started, Some(session.id.as_str()))
    );
    assert!(fa.catch_up);
    let last = store
        .last_firing(&project.id, "nightly")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (last.id.as_str(), last.error.as_deref()),
        (b.as_str(), Some("no template"))
    );
    assert!(
        store
            .last_firing(&project.id, "never")
            .await
            .unwrap()
            .is_none()
    );

    let all = store.list_firings(&project.id, None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|f| f.fired_ms).collect::<Vec<_>>(),
        [200, 150, 100]
    );
    let nightly = store
        .list_firings(&project.id, Some("nightly"), 1)
        .await
        .unwrap();
    assert_eq!(nightly.len(), 1);
    assert_eq!(nightly[0].id, b);
    let stale = store.stale_pending_firings(1_000, 10).await.unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].trigger_slug, "hook");
    assert!(
        store
            .stale_pending_firings(100, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn bootstrap_tokens_single_use_and_expiry(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let s = session_in(store, &project).await;
    store
        .create_bootstrap_token("boot-1", &s.id, 10_000)
        .await
        .unwrap();
    store
        .create_bootstrap_token("boot-2", &s.id, 10_000)
        .await
        .unwrap();

    // Racing consumers: exactly one wins, the rest are told it was used.
    let results =
        futures::future::join_all((0..8).map(|_| store.consume_bootstrap_token("boot-1", 5_000)))
            .await;
    let wins: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(wins, [&s.id]);
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, Error::BootstrapToken(BootstrapRejection::Used)),
                "{e}"
            );
        }
    }
    assert!(matches!(
        store.consume_bootstrap_token("boot-2", 10_000).await,
        Err(Error::BootstrapToken(BootstrapRejection::Expired))
    ));
    assert!(matches!(
        store.consume_bootstrap_token("nope", 1).await,
        Err(Error::BootstrapToken(BootstrapRejection::Unknown))
    ));
    // Before its expiry the second token still works.
    assert_eq!(
        store
            .consume_bootstrap_token("boot-2", 9_999)
            .await
            .unwrap(),
        s.id
    );
}

async fn certs_and_git_tokens(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "web").await;
    let s = session_in(store, &project).await;
    let t = session_in(store, &project).await;
    store
        .record_issued_cert("01ab", &s.id, 50_000)
        .await
        .unwrap();
    store
        .record_issued_cert("02cd", &s.id, 60_000)
        .await
        .unwrap();
    store
        .record_issued_cert("03ef", &t.id, 60_000)
        .await
        .unwrap();
    assert!(!store.is_cert_revoked("01ab").await.unwrap());
    assert!(store.is_cert_revoked("unknown").await.unwrap());
    assert_eq!(store.revoke_session_certs(&s.id, 1_000).await.unwrap(), 2);
    assert_eq!(store.revoke_session_certs(&s.id, 2_000).await.unwrap(), 0);
    assert!(store.is_cert_revoked("01ab").await.unwrap());
    assert!(store.is_cert_revoked("02cd").await.unwrap());
    assert!(!store.is_cert_revoked("03ef").await.unwrap());
    assert_eq!(
        store.get_issued_cert("01ab").await.unwrap().revoked_ms,
        Some(1_000)
    );

    store
        .create_git_token("git-1", &s.id, &project.id, &s.id, 10_000)
        .await
        .unwrap();
    store
        .create_git_token("git-2", &t.id, &project.id, &t.id, 10_000)
        .await
        .unwrap();
    let tok = store.lookup_git_token("git-1", 9_999).await.unwrap();
    assert_eq!(
        (
            tok.session_id.as_str(),
            tok.project_id.as_str(),
            tok.branch.as_str()
        ),
        (s.id.as_str(), project.id.as_str(), s.id.as_str())
    );
    assert!(
        store
            .lookup_git_token("git-1", 10_000)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        store
            .lookup_git_token("nope", 0)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(store.revoke_session_git_tokens(&s.id).await.unwrap(), 1);
    assert!(
        store
            .lookup_git_token("git-1", 0)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(store.lookup_git_token("git-2", 0).await.is_ok());

    store
        .create_bootstrap_token("boot", &t.id, 5_000)
        .await
        .unwrap();
    // git-2 (10s), boot (5s), and certs 01ab (50s) expire before 55s.
    assert_eq!(store.purge_expired_credentials(55_000).await.unwrap(), 3);
    assert!(
        store
            .lookup_git_token("git-2", 0)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(!store.is_cert_revoked("03ef").await.unwrap());
}

async fn members_keep_an_owner(db: TestDb) {
    let store = &db.store;
    let alice = store.create_person("alice", false).await.unwrap();
    let bob = store.create_person("bob", false).await.unwrap();
    let team = &alice.id;
    let members = store.list_members(team).await.unwrap();
    assert_eq!(
        members
            .iter()
            .map(|m| (m.person_name.as_str(), m.role.as_str()))
            .collect::<Vec<_>>(),
        [("alice", "owner")]
    );
    // The last owner can neither leave nor be demoted.
    assert!(matches!(
        store.remove_member(team, &alice.id).await,
        Err(Error::LastOwner(_))
    ));
    assert!(matches!(
        store.set_member(team, &alice.id, "admin").await,
        Err(Error::LastOwner(_))
    ));
    let added = store.set_member(team, &bob.id, "member").await.unwrap();
    assert_eq!(
        (added.person_name.as_str(), added.role.as_str()),
        ("bob", "member")
    );
    assert_eq!(
        store.member_role(team, &bob.id).await.unwrap().as_deref(),
        Some("member")
    );
    store.set_member(team, &bob.id, "owner").await.unwrap();
    // With two owners one may go; then the other is the last again.
    store.set_member(team, &alice.id, "admin").await.unwrap();
    assert!(matches!(
        store.remove_member(team, &bob.id).await,
        Err(Error::LastOwner(_))
    ));
    let removed = store.remove_member(team, &alice.id).await.unwrap();
    assert_eq!(removed.role, "admin");
    assert!(
        store
            .remove_member(team, &alice.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        store
            .set_member("no-such-account", &bob.id, "member")
            .await
            .unwrap_err()
            .is_not_found()
    );
    // Two owners removing each other at once: exactly one succeeds.
    store.set_member(team, &alice.id, "owner").await.unwrap();
    let (a, b) = tokio::join!(
        store.remove_member(team, &alice.id),
        store.remove_member(team, &bob.id)
    );
    assert_eq!(
        [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{a:?} {b:?}"
    );
    let owners = store.list_members(team).await.unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].role, "owner");
}

async fn grants_and_visibility(db: TestDb) {
    let store = &db.store;
    let (alice, web) = account_and_project(store, "web").await;
    let carol = store.create_person("carol", false).await.unwrap();
    let dave = store.create_person("dave", false).await.unwrap();
    let names = |v: Vec<ProjectAccess>| {
        v.into_iter()
            .map(|a| a.project.name)
            .collect::<Vec<String>>()
    };
    assert_eq!(
        names(store.visible_projects(&alice.id).await.unwrap()),
        ["web"]
    );
    assert!(store.visible_projects(&carol.id).await.unwrap().is_empty());

    // A plain member of the account sees nothing by membership alone.
    store
        .set_member(&alice.id, &dave.id, "member")
        .await
        .unwrap();
    assert!(store.visible_projects(&dave.id).await.unwrap().is_empty());
    let access = store.project_access(&dave.id, "web").await.unwrap();
    assert_eq!(access.account_role.as_deref(), Some("member"));
    assert_eq!(access.grant_role, None);

    // An outside collaborator with a grant.
    let g = store
        .grant(&web.id, &carol.id, "viewer", None, &alice.id)
        .await
        .unwrap();
    assert_eq!(
        (g.person_name.as_str(), g.role.as_str()),
        ("carol", "viewer")
    );
    assert_eq!(
        names(store.visible_projects(&carol.id).await.unwrap()),
        ["web"]
    );
    let by_id = store.project_access(&carol.id, &web.id).await.unwrap();
    assert_eq!(by_id.grant_role.as_deref(), Some("viewer"));
    // Granting again replaces the grant.
    store
        .grant(&web.id, &carol.id, "editor", None, &alice.id)
        .await
        .unwrap();
    assert_eq!(store.list_grants(&web.id).await.unwrap().len(), 1);
    assert_eq!(store.list_grants(&web.id).await.unwrap()[0].role, "editor");
    // The replica's cached roles follow every change at once.
    let access = |person: String| async move {
        let a = store.project_access(&person, "web").await.unwrap();
        (a.account_role, a.grant_role)
    };
    assert_eq!(
        access(carol.id.clone()).await,
        (None, Some("editor".into()))
    );
    store
        .set_member(&alice.id, &carol.id, "admin")
        .await
        .unwrap();
    assert_eq!(
        access(carol.id.clone()).await,
        (Some("admin".into()), Some("editor".into()))
    );
    store.remove_member(&alice.id, &carol.id).await.unwrap();
    assert_eq!(
        access(carol.id.clone()).await,
        (None, Some("editor".into()))
    );

    // An expired grant reaches nothing but is still listed.
    store
        .grant(&web.id, &dave.id, "manager", Some(now_ms() - 1), &alice.id)
        .await
        .unwrap();
    assert_eq!(
        store
            .project_access(&dave.id, "web")
            .await
            .unwrap()
            .grant_role,
        None
    );
    assert!(store.visible_projects(&dave.id).await.unwrap().is_empty());
    assert_eq!(store.list_grants(&web.id).await.unwrap().len(), 2);

    let revoked = store.revoke_grant(&web.id, &carol.id).await.unwrap();
    assert_eq!(revoked.person_name, "carol");
    assert_eq!(access(carol.id.clone()).await, (None, None));
    assert!(
        store
            .revoke_grant(&web.id, &carol.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(store.visible_projects(&carol.id).await.unwrap().is_empty());
    assert!(
        store
            .project_access(&carol.id, "nope")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

async fn narrowed_and_expiring_tokens(db: TestDb) {
    let store = &db.store;
    let (alice, web) = account_and_project(store, "web").await;
    let narrowed = store
        .create_limited_api_token(
            &alice.id,
            "ci",
            "hash-ci",
            TokenLimits {
                project_id: Some(web.id.clone()),
                role: Some("editor".into()),
                expires_ms: Some(2_000),
            },
        )
        .await
        .unwrap();
    let (_, found) = store.lookup_api_token("hash-ci", 1_000).await.unwrap();
    assert_eq!(found.project_id.as_deref(), Some(web.id.as_str()));
    assert_eq!(found.role.as_deref(), Some("editor"));
    assert_eq!(found.expires_ms, Some(2_000));
    assert!(store.api_token_live(&narrowed.id, 1_000).await.unwrap());
    // Expired: indistinguishable from unknown.
    assert!(
        store
            .lookup_api_token("hash-ci", 2_000)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(!store.api_token_live(&narrowed.id, 2_000).await.unwrap());
    let full = store
        .create_api_token(&alice.id, "laptop", "hash-full")
        .await
        .unwrap();
    assert!(store.api_token_live(&full.id, i64::MAX - 1).await.unwrap());
    store
        .revoke_api_token(&alice.id, &full.id, 5)
        .await
        .unwrap();
    assert!(!store.api_token_live(&full.id, 6).await.unwrap());
}

async fn snapshot_build_claimed_once(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "snap").await;
    let new = NewSnapshot {
        project_id: &project.id,
        hash: "h1",
        name: "kortix-snap-p-h1",
        template: "dev",
    };
    let row = store.ensure_snapshot(&new, 1_000).await.unwrap();
    assert_eq!(row.status, SnapshotStatus::Pending);
    assert_eq!(
        (row.created_ms, row.last_used_ms, row.builds),
        (1_000, 1_000, 0)
    );
    // A second ensure finds the row, never a second one.
    assert_eq!(store.ensure_snapshot(&new, 2_000).await.unwrap(), row);

    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        let pid = project.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .claim_snapshot_build(&pid, "h1", &format!("b{i}"), 5_000, 0)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one builder");
    let building = store
        .get_snapshot(&project.id, "h1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(building.status, SnapshotStatus::Building);
    assert_eq!(building.builds, 1);
    let owner = building.builder.clone();

    // The claim is renewed by its owner only; a stale claim is taken over.
    assert!(
        !store
            .renew_snapshot_claim(&project.id, "h1", "other", 6_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .renew_snapshot_claim(&project.id, "h1", &owner, 6_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_snapshot_build(&project.id, "h1", "late", 7_000, 6_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_snapshot_build(&project.id, "h1", "late", 9_000, 6_001)
            .await
            .unwrap()
    );
    // The old owner lost it: its result is refused.
    assert!(
        !store
            .finish_snapshot_build(&project.id, "h1", &owner, Ok(10), 9_500)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_snapshot_build(&project.id, "h1", "late", Ok(4096), 9_500)
            .await
            .unwrap()
    );
    let active = store
        .get_snapshot(&project.id, "h1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active.status, SnapshotStatus::Active);
    assert_eq!(
        (active.size_bytes, active.built_ms, active.builds),
        (Some(4096), Some(9_500), 2)
    );
    assert_eq!(active.builder, "");
    // Settled: nobody claims it again.
    assert!(
        !store
            .claim_snapshot_build(&project.id, "h1", "x", 20_000, 20_000)
            .await
            .unwrap()
    );
    // Gone with its project.
    store.delete_project(&project.id).await.unwrap();
    assert_eq!(store.get_snapshot(&project.id, "h1").await.unwrap(), None);
    assert!(
        store
            .ensure_snapshot(&new, 1)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

async fn snapshot_outcomes_and_retry(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "snapfail").await;
    let new = NewSnapshot {
        project_id: &project.id,
        hash: "h2",
        name: "kortix-snap-p-h2",
        template: "dev",
    };
    store.ensure_snapshot(&new, 1).await.unwrap();
    assert!(
        store
            .claim_snapshot_build(&project.id, "h2", "b", 2, 0)
            .await
            .unwrap()
    );
    let reason = format!("{}step 3: exit code 1", "x".repeat(10_000));
    assert!(
        store
            .finish_snapshot_build(&project.id, "h2", "b", Err(&reason), 3)
            .await
            .unwrap()
    );
    let failed = store
        .get_snapshot(&project.id, "h2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, SnapshotStatus::Failed);
    assert!(failed.failure_reason.ends_with("step 3: exit code 1"));
    assert!(failed.failure_reason.len() <= 8192);
    // No retry by itself: a claim on a failed row does nothing.
    assert!(
        !store
            .claim_snapshot_build(&project.id, "h2", "b", 4, 4)
            .await
            .unwrap()
    );
    // Asked again: pending, then claimable, and the reason is cleared.
    assert!(
        !store
            .reset_snapshot(&project.id, "missing", false)
            .await
            .unwrap()
    );
    assert!(
        store
            .reset_snapshot(&project.id, "h2", false)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_snapshot_build(&project.id, "h2", "b2", 5, 0)
            .await
            .unwrap()
    );
    let again = store
        .get_snapshot(&project.id, "h2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.status, again.builds, again.failure_reason.as_str()),
        (SnapshotStatus::Building, 2, "")
    );
    assert!(
        store
            .finish_snapshot_build(&project.id, "h2", "b2", Ok(1), 6)
            .await
            .unwrap()
    );
    // An active snapshot is reset only when a rebuild is forced.
    assert!(
        !store
            .reset_snapshot(&project.id, "h2", false)
            .await
            .unwrap()
    );
    assert!(store.reset_snapshot(&project.id, "h2", true).await.unwrap());
    let listed = store.list_snapshots(&project.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, SnapshotStatus::Pending);
    store.touch_snapshot(&project.id, "h2", 100).await.unwrap();
    store.touch_snapshot(&project.id, "h2", 50).await.unwrap();
    let touched = store
        .get_snapshot(&project.id, "h2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(touched.last_used_ms, 100, "last use never moves back");
}

async fn snapshot_prune_spares_live_and_recent(db: TestDb) {
    let store = &db.store;
    let (_, project) = account_and_project(store, "snapprune").await;
    for (hash, used) in [
        ("old", 10),
        ("inuse", 10),
        ("recent", 1_000),
        ("building", 10),
    ] {
        let name = format!("kortix-snap-p-{hash}");
        store
            .ensure_snapshot(
                &NewSnapshot {
                    project_id: &project.id,
                    hash,
                    name: &name,
                    template: "dev",
                },
                used,
            )
            .await
            .unwrap();
        assert!(
            store
                .claim_snapshot_build(&project.id, hash, "b", used, 0)
                .await
                .unwrap()
        );
        if hash != "building" {
            assert!(
                store
                    .finish_snapshot_build(&project.id, hash, "b", Ok(1), used)
                    .await
                    .unwrap()
            );
        }
    }
    let live = session_in(store, &project).await.id;
    store
        .set_session_snapshot(&live, "kortix-snap-p-inuse")
        .await
        .unwrap();
    assert_eq!(
        store.get_session(&live).await.unwrap().snapshot,
        "kortix-snap-p-inuse"
    );

    let names = |rows: Vec<Snapshot>| rows.into_iter().map(|s| s.hash).collect::<Vec<_>>();
    let prunable = store
        .prunable_snapshots(Some(&project.id), 500)
        .await
        .unwrap();
    assert_eq!(names(prunable), ["old"]);
    assert_eq!(
        names(store.prunable_snapshots(None, 500).await.unwrap()),
        ["old"]
    );
    assert!(
        store
            .prunable_snapshots(Some("other"), 500)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !store
            .delete_unused_snapshot(&project.id, "inuse", 500)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_unused_snapshot(&project.id, "recent", 500)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_unused_snapshot(&project.id, "building", 500)
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_unused_snapshot(&project.id, "old", 500)
            .await
            .unwrap()
    );

    // Once the session has ended its snapshot may go.
    store
        .transition_session(&live, &SessionStatus::ACTIVE, SessionStatus::Stopped, None)
        .await
        .unwrap();
    assert_eq!(
        names(
            store
                .prunable_snapshots(Some(&project.id), 500)
                .await
                .unwrap()
        ),
        ["inuse"]
    );
}

async fn audit_is_appended_and_paged_per_account(db: TestDb) {
    let store = &db.store;
    let (alice, web) = account_and_project(store, "auditweb").await;
    let (bob, _) = account_and_project(store, "auditother").await;
    let actor = format!("person:{}", alice.id);
    let mut ids = Vec::new();
    for (i, project) in [Some(&web), None, Some(&web)].into_iter().enumerate() {
        let target = format!("t{i}");
        let id = store
            .append_audit(&NewAuditEvent {
                at_ms: 1_000 + i as i64,
                account_id: &alice.id,
                project_id: project.map_or("", |p| p.id.as_str()),
                project_name: project.map_or("", |p| p.name.as_str()),
                actor: &actor,
                token_id: "tok",
                action: "secret.set",
                target: &target,
                detail: &"d".repeat(10_000),
                from_addr: "127.0.0.1:5000",
                ..Default::default()
            })
            .await
            .unwrap();
        ids.push(id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // Another account's event stays in that account.
    store
        .append_audit(&NewAuditEvent {
            at_ms: 5,
            account_id: &bob.id,
            actor: "trigger:nightly",
            actor_name: "nightly",
            action: "session.start",
            ..Default::default()
        })
        .await
        .unwrap();

    let all = store
        .list_audit(&AuditQuery {
            account_id: &alice.id,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["t2", "t1", "t0"],
        "newest first"
    );
    // The person's name is copied in; the detail is bounded.
    assert_eq!(all[0].actor_name, alice.name);
    assert_eq!(all[0].actor, actor);
    assert_eq!(all[0].from_addr, "127.0.0.1:5000");
    assert_eq!(all[0].detail.len(), 2048);
    let page = store
        .list_audit(&AuditQuery {
            account_id: &alice.id,
            before_id: Some(all[0].id),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].target, "t1");
    let in_web = store
        .list_audit(&AuditQuery {
            account_id: &alice.id,
            project_id: Some(&web.id),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        in_web.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["t2", "t0"]
    );
    let bobs = store
        .list_audit(&AuditQuery {
            account_id: &bob.id,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(
        (bobs[0].actor.as_str(), bobs[0].actor_name.as_str()),
        ("trigger:nightly", "nightly")
    );
    // The log outlives the project.
    store.delete_project(&web.id).await.unwrap();
    assert_eq!(
        store
            .list_audit(&AuditQuery {
                account_id: &alice.id,
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn connector_credentials_approvals_and_calls(db: TestDb) {
    let store = &db.store;
    let (_, web) = account_and_project(store, "connweb").await;

    // Credentials: shared and per person, replaced in place, values opaque.
    assert!(
        store
            .connector_credential(&web.id, "pets", "")
            .await
            .unwrap()
            .is_none()
    );
    store
        .put_connector_credential(&web.id, "pets", "", b"n1", b"c1", 1)
        .await
        .unwrap();
    store
        .put_connector_credential(&web.id, "pets", "", b"n2", b"c2", 2)
        .await
        .unwrap();
    store
        .put_connector_credential(&web.id, "pets", "p1", b"n3", b"c3", 3)
        .await
        .unwrap();
    let shared = store
        .connector_credential(&web.id, "pets", "")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (shared.nonce.as_slice(), shared.ciphertext.as_slice()),
        (&b"n2"[..], &b"c2"[..])
    );
    assert!(!format!("{shared:?}").contains("c2"));
    let mut set = store.connector_credentials_set(&web.id).await.unwrap();
    set.sort();
    assert_eq!(
        set,
        [
            ("pets".to_string(), String::new()),
            ("pets".to_string(), "p1".to_string())
        ]
    );

    // Approvals: the newest for a digest wins; transitions are conditional.
    let approval = |id: &str, at: i64, expires: i64| Approval {
        id: id.into(),
        project_id: web.id.clone(),
        session_id: "s1".into(),
        connector: "pets".into(),
        tool: "addPet".into(),
        digest: "d1".into(),
        state: "pending".into(),
        args_preview: "{}".into(),
        requested_ms: at,
        expires_ms: expires,
        ..Default::default()
    };
    store.insert_approval(&approval("a1", 10, 0)).await.unwrap();
    store
        .insert_approval(&approval("a2", 20, 100))
        .await
        .unwrap();
    assert_eq!(
        store.latest_approval("s1", "d1").await.unwrap().unwrap().id,
        "a2"
    );
    assert!(
        store
            .latest_approval("s1", "other")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .transition_approval("a1", "pending", "approved", "", "person:p1", 30)
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition_approval("a1", "pending", "denied", "late", "person:p2", 31)
            .await
            .unwrap()
    );
    let a1 = store.get_approval("a1").await.unwrap();
    assert_eq!(
        (a1.state.as_str(), a1.decided_by.as_str(), a1.decided_ms),
        ("approved", "person:p1", 30)
    );
    assert!(
        store
            .transition_approval("a1", "approved", "used", "", "", 40)
            .await
            .unwrap()
    );
    assert_eq!(store.get_approval("a1").await.unwrap().decided_ms, 30);
    assert!(store.get_approval("nope").await.unwrap_err().is_not_found());
    // Expiry denies only what is due.
    assert!(store.expire_approvals(99).await.unwrap().is_empty());
    let expired = store.expire_approvals(100).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0].id.as_str(), expired[0].state.as_str()),
        ("a2", "denied")
    );
    let pending = store.list_approvals(&web.id, "pending").await.unwrap();
    assert!(pending.is_empty());
    let all: Vec<_> = store
        .list_approvals(&web.id, "")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(all, ["a2", "a1"]);

    // Calls: appended, listed newest first, per session.
    for (session, status) in [("s1", "ok"), ("s2", "denied"), ("s1", "pending_approval")] {
        store
            .append_connector_calls(&[ConnectorCallRow {
                at_ms: 5,
                project_id: web.id.clone(),
                session_id: session.into(),
                connector: "pets".into(),
                tool: "getPet".into(),
                digest: "d".into(),
                status: status.into(),
                duration_ms: 3,
                upstream_status: 200,
                args_preview: "x".repeat(5000),
                ..Default::default()
            }])
            .await
            .unwrap();
    }
    let s1: Vec<_> = store
        .list_connector_calls(&web.id, "s1", 0)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(s1, ["pending_approval", "ok"]);
    // A row replayed from a journal under a call id already stored is stored once.
    let replayed = ConnectorCallRow {
        call_id: "call-1".into(),
        at_ms: 6,
        project_id: web.id.clone(),
        session_id: "s3".into(),
        status: "ok".into(),
        ..Default::default()
    };
    store
        .append_connector_calls(std::slice::from_ref(&replayed))
        .await
        .unwrap();
    store
        .append_connector_calls(&[replayed.clone(), replayed])
        .await
        .unwrap();
    let s3 = store.list_connector_calls(&web.id, "s3", 0).await.unwrap();
    assert_eq!(s3.len(), 1, "{s3:?}");
    let all = store.list_connector_calls(&web.id, "", 2).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[0].args_preview.len() <= 2048);
    assert!(
        store
            .list_connector_calls("other", "", 0)
            .await
            .unwrap()
            .is_empty()
    );
}
