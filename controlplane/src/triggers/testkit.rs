//! Fixtures for the trigger tests: a real store (SQLite file or a PostgreSQL schema), real
//! bare repositories, and a session starter that records what it is asked to start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use kortix_tests::git::GitEnv;

use super::{ManualClock, SessionStarter, TriggerStart, Triggers};
use crate::git::{Author, Repos};
use crate::manifests::Manifests;
use crate::secrets::{MasterKey, ProjectSecrets};
use crate::sessions::live::Hub;
use crate::store::testing::PgTestSchema;
use crate::store::{Project, Store, StoreOptions};

/// Records every start request; like the real session service it answers the same session
/// for the same idempotency key.
#[derive(Default)]
pub struct RecordingStarter {
    calls: Mutex<Vec<TriggerStart>>,
    sessions: Mutex<HashMap<String, String>>,
    refuse_with: Mutex<Option<String>>,
    /// Held by a test to keep starts from finishing.
    gate: Arc<tokio::sync::RwLock<()>>,
}

impl RecordingStarter {
    pub fn calls(&self) -> Vec<TriggerStart> {
        self.calls.lock().unwrap().clone()
    }

    /// Starts block (after being recorded) until the returned guard is dropped.
    pub fn hold(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.gate.clone().try_write_owned().expect("already held")
    }

    pub fn refuse(&self, reason: Option<&str>) {
        *self.refuse_with.lock().unwrap() = reason.map(str::to_owned);
    }
}

impl SessionStarter for RecordingStarter {
    fn start(&self, req: TriggerStart) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(req.clone());
            let _open = self.gate.read().await;
            if let Some(reason) = self.refuse_with.lock().unwrap().clone() {
                return Err(reason);
            }
            let mut sessions = self.sessions.lock().unwrap();
            let next = format!("session-{}", sessions.len() + 1);
            Ok(sessions.entry(req.idempotency_key).or_insert(next).clone())
        })
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub repos: Repos,
    pub key: Arc<MasterKey>,
    pub starter: Arc<RecordingStarter>,
    pub clock: ManualClock,
    pub triggers: Triggers,
    pub project: Project,
    pub pg: Option<PgTestSchema>,
}

pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    use chrono::TimeZone;
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

impl Fixture {
    /// A project `web` (branch `main`) whose manifest is `manifest`, on SQLite.
    pub async fn sqlite(manifest: &str, start: DateTime<Utc>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("kortix.db"), StoreOptions::default())
            .await
            .unwrap();
        Self::build(dir, store, None, manifest, start).await
    }

    /// The same on a fresh PostgreSQL schema; `None` (after saying so) when no PostgreSQL
    /// answers — which fails the test under CI=true.
    pub async fn postgres(manifest: &str, start: DateTime<Utc>) -> Option<Fixture> {
        let schema = PgTestSchema::create_or_skip().await?;
        let store = schema.store().clone();
        let dir = tempfile::tempdir().unwrap();
        Some(Self::build(dir, store, Some(schema), manifest, start).await)
    }

    async fn build(
        dir: tempfile::TempDir,
        store: Store,
        pg: Option<PgTestSchema>,
        manifest: &str,
        start: DateTime<Utc>,
    ) -> Fixture {
        let repos = Repos::open(dir.path().join("repos")).unwrap();
        let account = store.create_person("acme", false).await.unwrap();
        let project = store
            .create_project(&account.id, "web", "main")
            .await
            .unwrap();
        let author = Author {
            name: "Test".into(),
            email: "test@example.com".into(),
        };
        repos
            .create_empty(&project.id, "main", manifest, &author)
            .unwrap();
        let key = Arc::new(MasterKey::generate().unwrap());
        let starter = Arc::new(RecordingStarter::default());
        let clock = ManualClock::new(start);
        let triggers = Triggers::with_clock(
            store.clone(),
            Arc::new(Manifests::new(repos.clone())),
            ProjectSecrets::new(store.clone(), key.clone(), Hub::new()),
            starter.clone(),
            Arc::new(clock.clone()),
        );
        Fixture {
            dir,
            store,
            repos,
            key,
            starter,
            clock,
            triggers,
            project,
            pg,
        }
    }

    /// Another replica: its own store handle (own pool) on the same database, its own
    /// manifest cache, the same repositories, clock and session service.
    pub async fn replica(&self) -> Triggers {
        let store = match &self.pg {
            Some(schema) => Store::open_postgres(
                schema.connect_options().unwrap(),
                StoreOptions {
                    max_connections: 4,
                    ..StoreOptions::default()
                },
            )
            .await
            .unwrap(),
            None => Store::open_sqlite(&self.dir.path().join("kortix.db"), StoreOptions::default())
                .await
                .unwrap(),
        };
        Triggers::with_clock(
            store.clone(),
            Arc::new(Manifests::new(self.repos.clone())),
            ProjectSecrets::new(store, self.key.clone(), Hub::new()),
            self.starter.clone(),
            Arc::new(self.clock.clone()),
        )
    }

    pub async fn set_secret(&self, name: &str, value: &str) {
        self.triggers
            .secrets()
            .put(&self.project, name, value)
            .await
            .unwrap();
    }

    /// Commits `manifest` as `kortix.toml` on `main` with the real `git` program.
    pub fn commit_manifest(&self, manifest: &str) -> String {
        let repo = self.repos.path(&self.project.id).unwrap();
        let git = GitEnv::new();
        let parent = git.ok(&repo, &["rev-parse", "refs/heads/main"]);
        let blob = git.ok_with_stdin(
            &repo,
            &["hash-object", "-w", "--stdin"],
            manifest.as_bytes(),
        );
        let tree = git.ok_with_stdin(
            &repo,
            &["mktree"],
            format!("100644 blob {blob}\tkortix.toml\n").as_bytes(),
        );
        let commit = git.ok(
            &repo,
            &["commit-tree", &tree, "-p", &parent, "-m", "Change triggers"],
        );
        git.ok(&repo, &["update-ref", "refs/heads/main", &commit, &parent]);
        commit
    }

    pub async fn cleanup(self) {
        if let Some(schema) = self.pg {
            schema.drop_schema().await.unwrap();
        }
    }
}
