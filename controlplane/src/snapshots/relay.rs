//! A build's output for the sessions waiting on it from other replicas. The replica that runs
//! a build sends each line as a PostgreSQL notification on [`BUILD_CHANNEL`]; every replica
//! listens and hands the lines of a build to the waiters it has for that build. Like every
//! notification between replicas this is best effort: a lost line costs a line of log, never
//! the build's outcome, which waiters read from the snapshot's row. SQLite has one replica,
//! whose waiters follow the build directly, so it has no relay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use crate::store::{Heard, Store};

/// The channel build lines travel on.
pub const BUILD_CHANNEL: &str = "kortix_build";
/// Between a build's key and a line in a payload.
const SEPARATOR: char = '\u{1f}';
/// Lines waiting to be sent; a build that outruns the database loses lines, not speed.
const OUTBOX: usize = 4_096;
/// Lines per notify statement.
const BATCH: usize = 256;
/// Longest a batch of notifications may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines kept for a slow waiter; it skips lines rather than holding anyone up.
const WAITER_CHANNEL: usize = 1_024;

/// Waiters on this replica for builds that run elsewhere, by build key.
#[derive(Clone, Default)]
pub(super) struct RemoteLines {
    waiters: Arc<Mutex<HashMap<String, broadcast::Sender<String>>>>,
}

impl RemoteLines {
    pub(super) fn subscribe(&self, key: &str) -> broadcast::Receiver<String> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters
            .entry(key.to_string())
            .or_insert_with(|| broadcast::channel(WAITER_CHANNEL).0)
            .subscribe()
    }

    /// Forgets a build no one here waits for any more.
    pub(super) fn release(&self, key: &str) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if waiters.get(key).is_some_and(|tx| tx.receiver_count() == 0) {
            waiters.remove(key);
        }
    }

    fn deliver(&self, payload: &str) {
        let Some((key, line)) = payload.split_once(SEPARATOR) else {
            tracing::debug!(payload, "ignoring a malformed build line");
            return;
        };
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = waiters.get(key) {
            let _ = tx.send(line.to_string());
        }
    }

    #[cfg(test)]
    pub(super) fn tracked(&self) -> usize {
        self.waiters.lock().unwrap().len()
    }
}

/// Where the building replica puts its lines for the others.
#[derive(Clone)]
pub(super) struct Outbox {
    tx: mpsc::Sender<String>,
}

impl Outbox {
    pub(super) fn line(&self, key: &str, line: &str) {
        // Full: the line is dropped (see the module's note), the build goes on.
        let _ = self.tx.try_send(format!("{key}{SEPARATOR}{line}"));
    }
}

/// The relay of one replica: its outbox, and the task that sends and receives.
pub(super) fn relay(store: &Store, remote: RemoteLines) -> Option<(Outbox, Relay)> {
    if !store.has_wake_channel() {
        return None;
    }
    let (tx, rx) = mpsc::channel(OUTBOX);
    Some((
        Outbox { tx },
        Relay {
            store: store.clone(),
            remote,
            outbox: rx,
        },
    ))
}

/// Sends this replica's build lines and delivers the others' to waiters here.
pub struct Relay {
    store: Store,
    remote: RemoteLines,
    outbox: mpsc::Receiver<String>,
}

impl Relay {
    /// Runs until `until` resolves.
    pub async fn run(self, until: impl std::future::Future<Output = ()>) {
        let Relay {
            store,
            remote,
            outbox,
        } = self;
        tokio::select! {
            _ = until => {}
            _ = futures::future::join(send(&store, outbox), listen(&store, &remote)) => {}
        }
    }
}

async fn send(store: &Store, mut outbox: mpsc::Receiver<String>) {
    let mut batch = Vec::with_capacity(BATCH);
    while outbox.recv_many(&mut batch, BATCH).await > 0 {
        match tokio::time::timeout(SEND_TIMEOUT, store.notify_on(BUILD_CHANNEL, &batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, lines = batch.len(), "relaying build lines"),
            Err(_) => tracing::debug!(lines = batch.len(), "relaying build lines timed out"),
        }
        batch.clear();
    }
}

async fn listen(store: &Store, remote: &RemoteLines) {
    store
        .follow_channel(BUILD_CHANNEL, |heard| {
            if let Heard::Wake(payload) = heard {
                remote.deliver(&payload);
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{BuildFailure, BuildLog, SandboxError, SnapshotBuilder};
    use crate::snapshots::{Hardware, Rebuild, Recipe, RuntimeLayer, SnapshotConfig, Snapshots};
    use crate::store::SnapshotStatus;
    use futures::future::BoxFuture;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A build that prints a line every 50 ms until released, counting builds.
    #[derive(Default)]
    struct SteppedBuild {
        builds: AtomicUsize,
        release: tokio::sync::Notify,
    }

    impl SnapshotBuilder for SteppedBuild {
        fn build<'a>(
            &'a self,
            _name: &'a str,
            _context: &'a std::path::Path,
            _dockerfile: &'a str,
            _hardware: crate::snapshots::Hardware,
            log: BuildLog,
        ) -> BoxFuture<'a, Result<u64, BuildFailure>> {
            self.builds.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let released = self.release.notified();
                tokio::pin!(released);
                for step in 0.. {
                    log(&format!("step {step}"));
                    tokio::select! {
                        _ = &mut released => return Ok(1),
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
                unreachable!("the loop ends when released")
            })
        }

        fn exists<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<bool, SandboxError>> {
            Box::pin(async { Ok(true) })
        }

        fn remove<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// Replica A builds; a session waiting on replica B sees the build's lines as they come.
    #[tokio::test]
    async fn a_waiter_on_another_replica_follows_the_build_on_postgres() {
        use crate::store::testing::PgTestSchema;
        let Some(schema) = PgTestSchema::create_or_skip().await else {
            return;
        };
        let store_b = schema.other_replica().await;
        let dir = tempfile::tempdir().unwrap();
        let repos = crate::git::Repos::in_data_dir(dir.path()).unwrap();
        let (agent, opencode) = (dir.path().join("agent"), dir.path().join("opencode"));
        std::fs::write(&agent, b"agent").unwrap();
        std::fs::write(&opencode, b"opencode").unwrap();
        let runtime = Arc::new(RuntimeLayer::load(&agent, &opencode).unwrap());
        let builder = Arc::new(SteppedBuild::default());
        let replica = |store: &Store| {
            Snapshots::new(
                store.clone(),
                repos.clone(),
                builder.clone(),
                runtime.clone(),
                SnapshotConfig::default(),
            )
        };
        let (a, b) = (replica(schema.store()), replica(&store_b));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let relays = [
            tokio::spawn(a.take_relay().unwrap().run(until(stopped.clone()))),
            tokio::spawn(b.take_relay().unwrap().run(until(stopped.clone()))),
        ];
        let owner = schema.store().create_person("owner", false).await.unwrap();
        let project = schema
            .store()
            .create_project(&owner.id, "app", "main")
            .await
            .unwrap();
        let recipe = Recipe {
            project_id: project.id.clone(),
            template: "dev".into(),
            hash: "0123456789abcdef".into(),
            name: "kortix-snap-test-0123456789ab".into(),
            source: crate::snapshots::recipe::Source::Image("debian".into()),
            hardware: Hardware::default(),
        };

        let lines_a: Arc<Mutex<Vec<String>>> = Arc::default();
        let build_a = {
            let (a, recipe, lines) = (a.clone(), recipe.clone(), lines_a.clone());
            tokio::spawn(async move {
                let sink: BuildLog = Arc::new(move |l: &str| lines.lock().unwrap().push(l.into()));
                a.ensure(&recipe, Rebuild::Never, Some(sink)).await
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while lines_a.lock().unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "A never built");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let lines_b: Arc<Mutex<Vec<String>>> = Arc::default();
        let wait_b = {
            let (b, recipe, lines) = (b.clone(), recipe.clone(), lines_b.clone());
            tokio::spawn(async move {
                let sink: BuildLog = Arc::new(move |l: &str| lines.lock().unwrap().push(l.into()));
                b.ensure(&recipe, Rebuild::Never, Some(sink)).await
            })
        };
        while lines_b.lock().unwrap().len() < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no build line reached B"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        builder.release.notify_one();
        let (built, waited) = (
            build_a.await.unwrap().unwrap(),
            wait_b.await.unwrap().unwrap(),
        );
        assert_eq!(built.status, SnapshotStatus::Active);
        assert_eq!(waited.status, SnapshotStatus::Active);
        assert_eq!(builder.builds.load(Ordering::SeqCst), 1, "one build");
        let b_saw = lines_b.lock().unwrap().clone();
        assert!(b_saw.iter().all(|l| l.starts_with("step ")), "{b_saw:?}");
        assert!(
            b_saw.iter().all(|l| lines_a.lock().unwrap().contains(l)),
            "B saw A's lines: {b_saw:?}"
        );
        assert_eq!(b.remote.tracked(), 0, "B forgot the finished build");
        stop.send(true).unwrap();
        for relay in relays {
            relay.await.unwrap();
        }
    }

    #[test]
    fn lines_reach_the_waiters_of_their_build_only() {
        let remote = RemoteLines::default();
        let mut a = remote.subscribe("p/h1");
        let mut b = remote.subscribe("p/h2");
        remote.deliver(&format!("p/h1{SEPARATOR}Step 1/3 : FROM x"));
        remote.deliver("no separator");
        remote.deliver(&format!("p/unknown{SEPARATOR}nobody waits"));
        assert_eq!(a.try_recv().unwrap(), "Step 1/3 : FROM x");
        assert!(a.try_recv().is_err());
        assert!(b.try_recv().is_err());
        drop(a);
        remote.release("p/h1");
        remote.release("p/h2");
        assert_eq!(remote.tracked(), 1, "h2 still has a waiter");
    }
}
