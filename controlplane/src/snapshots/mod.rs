//! Content-addressed snapshots: the image a session's sandbox boots from, built once per
//! (project, snapshot hash) and reused while nothing that goes into it changes.
//!
//! - [`recipe`]: the template's Dockerfile and build context (or image) plus the runtime
//!   layer, and the hash and name that identify the result.
//! - [`runtime`]: the Kortix runtime layer and its fingerprint.
//!
//! **Single flight.** The snapshot's row is the lock: whoever moves it from `pending` to
//! `building` (a conditional update, see `Store::claim_snapshot_build`) builds it, on any
//! replica; everyone else waits for the row to settle. The builder renews its claim while it
//! works, so a replica that dies mid-build leaves a claim that ages out and is taken over. A
//! failed build is final for its hash: waiters fail with the build log's tail, and nothing
//! retries until someone asks (`build` with a retry) or the hash changes.

pub mod access;
pub mod recipe;
mod relay;
pub mod runtime;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kortix_manifest::ResolvedTemplate;
use tokio::sync::broadcast;

use crate::clock::now_ms;
use crate::error::{DomainError, DomainResult};
use crate::git::Repos;
use crate::metrics::{OutcomeLabel, metrics};
use crate::sandbox::{BuildLog, SnapshotBuilder};
use crate::store::{NewSnapshot, Project, Snapshot, SnapshotStatus, Store};
pub use recipe::{Hardware, Recipe};
pub use relay::Relay;
pub use runtime::{RuntimeFrom, RuntimeLayer};

/// A claim not renewed for this long is taken to be abandoned.
const CLAIM_TTL: Duration = Duration::from_secs(60);
/// How often the builder renews its claim.
const CLAIM_RENEW: Duration = Duration::from_secs(15);
/// How often a waiter re-reads the row (a build on another replica wakes nobody here).
const WAIT_POLL: Duration = Duration::from_millis(500);
/// Build lines kept for late subscribers' channel; a slow one skips lines, never blocks.
const LOG_CHANNEL: usize = 1024;
/// Lines of the build log a failure reason keeps.
const FAILURE_TAIL_LINES: usize = 30;
/// Longest line kept from a build's output.
const MAX_LINE: usize = 4096;

/// How snapshots are built here.
#[derive(Clone)]
pub struct SnapshotConfig {
    /// The image of the platform default template (no `[[sandbox.templates]]` chosen).
    pub base_image: String,
    /// How long a build may run before it is failed.
    pub build_timeout: Duration,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            base_image: "debian:bookworm-slim".into(),
            build_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// The snapshot service. Cheap to clone.
#[derive(Clone)]
pub struct Snapshots {
    store: Store,
    repos: Repos,
    builder: Arc<dyn SnapshotBuilder>,
    runtime: Arc<RuntimeLayer>,
    config: Arc<SnapshotConfig>,
    /// This replica's identity as a builder.
    replica: Arc<str>,
    /// Builds running on this replica: their output, for waiters here.
    flights: Arc<Mutex<HashMap<String, broadcast::Sender<String>>>>,
    /// Waiters here for builds other replicas run (PostgreSQL only).
    remote: relay::RemoteLines,
    /// Where builds run here send their lines for other replicas (PostgreSQL only).
    outbox: Option<relay::Outbox>,
    /// The relay's task, until the server takes it to run.
    relay: Arc<Mutex<Option<Relay>>>,
    /// Held while this replica makes sure the runtime image exists, so concurrent snapshot
    /// builds wait for one runtime build instead of each starting their own.
    runtime_image: Arc<tokio::sync::Mutex<()>>,
}

/// What [`Snapshots::ensure`] was asked for: the template of a project, and whether a failed
/// (or, forced, an active) snapshot is built again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Rebuild {
    /// Use what exists; a failed snapshot stays failed.
    #[default]
    Never,
    /// Build a failed snapshot again.
    IfFailed,
    /// Build it again even if it is active.
    Always,
}

impl Snapshots {
    pub fn new(
        store: Store,
        repos: Repos,
        builder: Arc<dyn SnapshotBuilder>,
        runtime: Arc<RuntimeLayer>,
        config: SnapshotConfig,
    ) -> Self {
        let remote = relay::RemoteLines::default();
        let (outbox, relay) = relay::relay(&store, remote.clone()).unzip();
        Self {
            store,
            repos,
            builder,
            runtime,
            config: Arc::new(config),
            replica: crate::store::new_id().into(),
            flights: Arc::default(),
            remote,
            outbox,
            relay: Arc::new(Mutex::new(relay)),
            runtime_image: Arc::default(),
        }
    }

    /// The task that relays build lines between replicas, to be run once by the server;
    /// `None` on SQLite or when already taken.
    pub fn take_relay(&self) -> Option<Relay> {
        self.relay.lock().expect("relay lock").take()
    }

    /// The recipe of `template` on the project's default branch.
    pub async fn recipe(
        &self,
        project: &Project,
        template: ResolvedTemplate<'_>,
    ) -> DomainResult<Recipe> {
        let owned = match template {
            ResolvedTemplate::PlatformDefault => None,
            ResolvedTemplate::Template(t) => Some(t.clone()),
        };
        let (repos, runtime, base) = (
            self.repos.clone(),
            self.runtime.clone(),
            self.config.base_image.clone(),
        );
        let (pid, branch) = (project.id.clone(), project.default_branch.clone());
        tokio::task::spawn_blocking(move || {
            let template = owned.as_ref().map_or(
                ResolvedTemplate::PlatformDefault,
                ResolvedTemplate::Template,
            );
            Recipe::compose(&repos, &pid, &branch, template, &runtime, &base)
        })
        .await
        .map_err(|e| DomainError::Internal(format!("composing a snapshot recipe: {e}")))?
        .map_err(|e| DomainError::Precondition(format!("project {}: {e}", project.name)))
    }

    /// The snapshot of `recipe`, built if needed (once, however many callers ask at the
    /// same time, on however many replicas). Build output goes to `log` while this caller
    /// waits on a build run by this replica. A failed snapshot is `Precondition` with the
    /// build's reason, unless `rebuild` asks for another attempt.
    pub async fn ensure(
        &self,
        recipe: &Recipe,
        rebuild: Rebuild,
        log: Option<BuildLog>,
    ) -> DomainResult<Snapshot> {
        let mut row = self
            .store
            .ensure_snapshot(
                &NewSnapshot {
                    project_id: &recipe.project_id,
                    hash: &recipe.hash,
                    name: &recipe.name,
                    template: &recipe.template,
                },
                now_ms(),
            )
            .await?;
        let reset = match (rebuild, row.status) {
            (Rebuild::IfFailed | Rebuild::Always, SnapshotStatus::Failed) => true,
            (Rebuild::Always, SnapshotStatus::Active) => true,
            // An active row whose image is gone (removed by hand, another engine) is built
            // again rather than booted.
            (_, SnapshotStatus::Active) => !self
                .builder
                .exists(&recipe.name)
                .await
                .map_err(|e| DomainError::Unavailable(e.to_string()))?,
            _ => false,
        };
        if reset {
            self.store
                .reset_snapshot(&recipe.project_id, &recipe.hash, true)
                .await?;
        }
        let deadline = tokio::time::Instant::now() + self.config.build_timeout + CLAIM_TTL;
        let key = flight_key(recipe);
        // Dropped after `lines`: forgets this build's remote waiters once none is left.
        let _release = ReleaseRemote(&self.remote, &key);
        let mut lines: Option<broadcast::Receiver<String>> = None;
        loop {
            row = self
                .store
                .get_snapshot(&recipe.project_id, &recipe.hash)
                .await?
                .ok_or_else(|| {
                    DomainError::NotFound(format!(
                        "snapshot {} (its project was deleted)",
                        recipe.name
                    ))
                })?;
            match row.status {
                SnapshotStatus::Active => {
                    self.store
                        .touch_snapshot(&recipe.project_id, &recipe.hash, now_ms())
                        .await?;
                    return Ok(row);
                }
                SnapshotStatus::Failed => {
                    return Err(DomainError::Precondition(format!(
                        "snapshot {} of template {:?} failed to build: {}",
                        recipe.name, recipe.template, row.failure_reason
                    )));
                }
                SnapshotStatus::Pending | SnapshotStatus::Building => {}
            }
            let now = now_ms();
            let stale_before = now - CLAIM_TTL.as_millis() as i64;
            if self
                .store
                .claim_snapshot_build(
                    &recipe.project_id,
                    &recipe.hash,
                    &self.replica,
                    now,
                    stale_before,
                )
                .await?
            {
                self.run_build(recipe, log.clone()).await?;
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DomainError::Unavailable(format!(
                    "snapshot {} is still being built after {} s",
                    recipe.name,
                    (self.config.build_timeout + CLAIM_TTL).as_secs()
                )));
            }
            // Follow the build's output: here, or relayed from the replica that runs it; and
            // poll the row.
            if lines.is_none() {
                lines = self.subscribe(&key);
            }
            if lines.is_none() && self.outbox.is_some() {
                lines = Some(self.remote.subscribe(&key));
            }
            match lines.as_mut() {
                Some(rx) => {
                    let until = tokio::time::sleep(WAIT_POLL);
                    tokio::pin!(until);
                    loop {
                        tokio::select! {
                            line = rx.recv() => match line {
                                Ok(line) => { if let Some(log) = &log { log(&line) } }
                                Err(broadcast::error::RecvError::Lagged(_)) => {}
                                Err(broadcast::error::RecvError::Closed) => { lines = None; break; }
                            },
                            _ = &mut until => break,
                        }
                    }
                }
                None => tokio::time::sleep(WAIT_POLL).await,
            }
        }
    }

    fn subscribe(&self, key: &str) -> Option<broadcast::Receiver<String>> {
        self.flights
            .lock()
            .expect("flights lock")
            .get(key)
            .map(broadcast::Sender::subscribe)
    }

    /// Runs a build this replica has claimed and settles the row.
    async fn run_build(&self, recipe: &Recipe, log: Option<BuildLog>) -> DomainResult<()> {
        let (tx, _) = broadcast::channel(LOG_CHANNEL);
        self.flights
            .lock()
            .expect("flights lock")
            .insert(flight_key(recipe), tx.clone());
        let outcome = self.build_claimed(recipe, log, tx).await;
        self.flights
            .lock()
            .expect("flights lock")
            .remove(&flight_key(recipe));
        let label = match &outcome {
            Ok(_) => "active",
            Err(_) => "failed",
        };
        metrics()
            .snapshot_builds
            .get_or_create(&OutcomeLabel {
                outcome: label.into(),
            })
            .inc();
        let reason = outcome.as_ref().err().cloned();
        let result = match &outcome {
            Ok(size) => Ok(i64::try_from(*size).unwrap_or(i64::MAX)),
            Err(why) => Err(why.as_str()),
        };
        let settled = self
            .store
            .finish_snapshot_build(
                &recipe.project_id,
                &recipe.hash,
                &self.replica,
                result,
                now_ms(),
            )
            .await?;
        if !settled {
            tracing::warn!(snapshot = %recipe.name, "the build's claim was taken over before it finished");
        }
        match reason {
            None => {
                tracing::info!(snapshot = %recipe.name, template = %recipe.template, "snapshot built")
            }
            Some(reason) => {
                tracing::warn!(snapshot = %recipe.name, %reason, "snapshot build failed")
            }
        }
        Ok(())
    }

    async fn build_claimed(
        &self,
        recipe: &Recipe,
        log: Option<BuildLog>,
        tx: broadcast::Sender<String>,
    ) -> Result<u64, String> {
        let tail = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let sink: BuildLog = {
            let (tail, outbox, key) = (tail.clone(), self.outbox.clone(), flight_key(recipe));
            Arc::new(move |line: &str| {
                let line = bounded(line);
                {
                    let mut tail = tail.lock().expect("tail lock");
                    if tail.len() == FAILURE_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line.to_owned());
                }
                if let Some(log) = &log {
                    log(line);
                }
                if let Some(outbox) = &outbox {
                    outbox.line(&key, line);
                }
                let _ = tx.send(line.to_owned());
            })
        };
        let renew = AbortOnDrop({
            let (store, pid, hash, replica) = (
                self.store.clone(),
                recipe.project_id.clone(),
                recipe.hash.clone(),
                self.replica.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(CLAIM_RENEW).await;
                    if let Err(e) = store
                        .renew_snapshot_claim(&pid, &hash, &replica, now_ms())
                        .await
                    {
                        tracing::warn!(snapshot = %hash, error = %e, "renewing a build claim");
                    }
                }
            })
        });
        let build = async {
            let from = self.runtime_from(&sink).await?;
            let (runtime, r) = (self.runtime.clone(), recipe.clone());
            let context = write_context(move |out| r.write_context(&runtime, &from, out)).await?;
            self.builder
                .build(
                    &recipe.name,
                    context.path(),
                    recipe::DOCKERFILE,
                    recipe.hardware,
                    sink,
                )
                .await
                .map_err(|failure| failure.0)
        };
        let outcome = match tokio::time::timeout(self.config.build_timeout, build).await {
            Ok(Ok(size)) => Ok(size),
            Ok(Err(failure)) => Err(failure),
            Err(_) => Err(format!(
                "the build did not finish within {} s",
                self.config.build_timeout.as_secs()
            )),
        };
        drop(renew);
        outcome.map_err(|why| {
            let tail = tail.lock().expect("tail lock");
            let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
            if lines.is_empty() {
                why
            } else {
                format!("{why}\n{}", lines.join("\n"))
            }
        })
    }

    /// Where this build takes the runtime's files from: the runtime image of the current
    /// fingerprint on a builder that keeps images (built here first if it is missing, its
    /// lines in `log`), else the build context.
    async fn runtime_from(&self, log: &BuildLog) -> Result<RuntimeFrom, String> {
        if !self.builder.keeps_images() {
            return Ok(RuntimeFrom::Context);
        }
        let name = self.runtime.image_name();
        let _one_at_a_time = self.runtime_image.lock().await;
        let exists = self
            .builder
            .exists(&name)
            .await
            .map_err(|e| format!("looking for the runtime image {name}: {e}"))?;
        if !exists {
            log(&format!(
                "building the runtime image {name} (once per agent and OpenCode version)"
            ));
            let runtime = self.runtime.clone();
            let context = write_context(move |out| runtime.write_image_context(out)).await?;
            self.builder
                .build(
                    &name,
                    context.path(),
                    runtime::IMAGE_DOCKERFILE_PATH,
                    Hardware::default(),
                    log.clone(),
                )
                .await
                .map_err(|failure| format!("building the runtime image {name}: {}", failure.0))?;
        }
        Ok(RuntimeFrom::Image(name))
    }

    /// The project's snapshots, newest first.
    pub async fn list(&self, project: &Project) -> DomainResult<Vec<Snapshot>> {
        Ok(self.store.list_snapshots(&project.id).await?)
    }

    /// Removes snapshots (rows and images) that no live session uses and nobody used within
    /// `unused_for`, of one project or of all. Returns their names.
    pub async fn prune(
        &self,
        project: Option<&Project>,
        unused_for: Duration,
    ) -> DomainResult<Vec<String>> {
        let since = now_ms() - i64::try_from(unused_for.as_millis()).unwrap_or(i64::MAX);
        let candidates = self
            .store
            .prunable_snapshots(project.map(|p| p.id.as_str()), since)
            .await?;
        let mut removed = Vec::new();
        for s in candidates {
            // The row goes first (re-checking that no session took it meanwhile): a session
            // that starts now finds no row and builds again rather than booting a removed
            // image.
            if !self
                .store
                .delete_unused_snapshot(&s.project_id, &s.hash, since)
                .await?
            {
                continue;
            }
            if s.status == SnapshotStatus::Active
                && let Err(e) = self.builder.remove(&s.name).await
            {
                tracing::warn!(snapshot = %s.name, error = %e, "removing a pruned snapshot's image");
            }
            removed.push(s.name);
        }
        Ok(removed)
    }
}

/// Ends the claim's renewal however the build ends, also when the caller gives up on it (a
/// dropped future): a claim nobody renews ages out and is taken over.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Forgets a build's remote waiters when the last waiter of this replica leaves.
struct ReleaseRemote<'a>(&'a relay::RemoteLines, &'a str);

impl Drop for ReleaseRemote<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// A build context archive in a temporary file, written by `write` on a blocking thread.
async fn write_context(
    write: impl FnOnce(std::io::BufWriter<std::fs::File>) -> std::io::Result<()> + Send + 'static,
) -> Result<tempfile::NamedTempFile, String> {
    let context = tempfile::NamedTempFile::new()
        .map_err(|e| format!("creating the build context file: {e}"))?;
    let file = context
        .reopen()
        .map_err(|e| format!("opening the build context: {e}"))?;
    tokio::task::spawn_blocking(move || write(std::io::BufWriter::new(file)))
        .await
        .map_err(|e| format!("writing the build context: {e}"))?
        .map_err(|e| format!("writing the build context: {e}"))?;
    Ok(context)
}

fn flight_key(recipe: &Recipe) -> String {
    format!("{}/{}", recipe.project_id, recipe.hash)
}

fn bounded(line: &str) -> &str {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.len() <= MAX_LINE {
        return line;
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}
