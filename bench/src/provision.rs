//! Bringing simulated agents up the way real ones come up: StartSession (public API) → the
//! bootstrap file the `external` sandbox provider writes → Enroll (bootstrap token + CSR) →
//! mTLS Connect (Hello → Bootstrap) → StateReport running.

use crate::api::Api;
use crate::errors::{BenchError, ErrorLog, timed};
use crate::sim_agent::{self, EnrolledAgent, FrameReceiver, FrameSender};
use kortix_controlplane::sandbox::external::BootstrapFile;
use kortix_proto::v1::Bootstrap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, Semaphore};

/// Deadline of each provisioning step (enroll, connect, ...).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of bringing one agent up, all steps together.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the bootstrap file may take to appear after StartSession returned.
const BOOTSTRAP_FILE_TIMEOUT: Duration = Duration::from_secs(30);

/// What every agent of a run shares: the API connection, the project, the enrollment channel.
pub struct Cluster {
    pub api: Api,
    pub project: String,
    pub data_dir: PathBuf,
    pub errors: ErrorLog,
    enroll_channel: OnceCell<tonic::transport::Channel>,
}

/// A connected simulated agent.
pub struct LiveAgent {
    pub session_id: String,
    pub bootstrap: Bootstrap,
    pub tx: FrameSender,
    pub rx: FrameReceiver,
    /// Keeps the agent's own mTLS connection (and its identity) alive.
    pub enrolled: EnrolledAgent,
}

impl Cluster {
    pub async fn new(
        api: Api,
        data_dir: &Path,
        project_prefix: &str,
    ) -> Result<Arc<Cluster>, BenchError> {
        let name = format!("{project_prefix}-{}", kortix_controlplane::clock::now_ms());
        let project = api.create_project(&name).await?;
        Ok(Arc::new(Cluster {
            api,
            project,
            data_dir: data_dir.to_path_buf(),
            errors: ErrorLog::new(),
            enroll_channel: OnceCell::new(),
        }))
    }

    /// A cluster over an existing project (e.g. one imported with its own `kortix.toml`).
    pub fn for_project(api: Api, data_dir: &Path, project: String) -> Arc<Cluster> {
        Arc::new(Cluster {
            api,
            project,
            data_dir: data_dir.to_path_buf(),
            errors: ErrorLog::new(),
            enroll_channel: OnceCell::new(),
        })
    }

    /// Starts a session and brings its simulated agent up to `running`.
    pub async fn provision_agent(&self, label: &str) -> Result<LiveAgent, BenchError> {
        let session_id = self.api.start_session(&self.project, label).await?;
        let file = read_bootstrap(
            &self
                .data_dir
                .join("bootstrap")
                .join(format!("{session_id}.json")),
        )
        .await?;
        let env = |k: &str| {
            file.env
                .get(k)
                .cloned()
                .ok_or_else(|| BenchError::new("bootstrap file", "missing", k.to_string()))
        };
        let (url, ca, token) = (
            env("KORTIX_CONTROL_PLANE")?,
            env("KORTIX_CA_CERT")?,
            env("KORTIX_BOOTSTRAP_TOKEN")?,
        );
        let plain = self
            .enroll_channel
            .get_or_try_init(|| async {
                timed(
                    "enroll channel",
                    STEP_TIMEOUT,
                    sim_agent::enrollment_channel(&url, &ca),
                    BenchError::from_sim,
                )
                .await
            })
            .await?
            .clone();
        let enrolled = timed(
            "enroll",
            STEP_TIMEOUT,
            sim_agent::enroll_over(plain, &url, &ca, &token),
            BenchError::from_sim,
        )
        .await?;
        if enrolled.session_id != session_id {
            return Err(BenchError::new(
                "enroll",
                "identity",
                format!(
                    "enrolled as {} for session {session_id}",
                    enrolled.session_id
                ),
            ));
        }
        let conn = timed(
            "connect",
            STEP_TIMEOUT,
            enrolled.connect(0),
            BenchError::from_sim,
        )
        .await?;
        let (bootstrap, tx, rx) = conn.split();
        timed(
            "report running",
            STEP_TIMEOUT,
            tx.report_running(),
            BenchError::from_sim,
        )
        .await?;
        Ok(LiveAgent {
            session_id,
            bootstrap,
            tx,
            rx,
            enrolled,
        })
    }
}

async fn read_bootstrap(path: &Path) -> Result<BootstrapFile, BenchError> {
    let start = Instant::now();
    loop {
        match tokio::fs::read(path).await {
            Ok(bytes) => {
                return serde_json::from_slice(&bytes).map_err(|e| {
                    BenchError::new("bootstrap file", "json", format!("{}: {e}", path.display()))
                });
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && start.elapsed() < BOOTSTRAP_FILE_TIMEOUT =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(BenchError::new(
                    "bootstrap file",
                    "io",
                    format!("{}: {e}", path.display()),
                ));
            }
        }
    }
}

/// Outcome of a ramp.
#[derive(Debug, Clone, Copy)]
pub struct RampResult {
    pub ok: u64,
    pub failed: u64,
    /// Agents never attempted (ramp deadline or failure limit reached).
    pub skipped: u64,
    pub elapsed: Duration,
}

/// Provisions `n` agents with at most `concurrency` in flight, handing each to `on_ready` as
/// soon as it is up (so early agents already run while later ones enroll). Prints progress to
/// stderr every few seconds. Stops starting agents (counting the rest as skipped) after
/// `max_failures` failures or once `limit` has passed; agents already being provisioned
/// finish (each within [`AGENT_TIMEOUT`]).
pub async fn ramp<F>(
    cluster: &Arc<Cluster>,
    n: u64,
    concurrency: usize,
    max_failures: u64,
    limit: Duration,
    on_ready: F,
) -> RampResult
where
    F: Fn(u64, LiveAgent) + Send + Sync + 'static,
{
    let start = Instant::now();
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let on_ready = Arc::new(on_ready);
    let progress = {
        let (ok, failed) = (ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let (o, f) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
                let secs = start.elapsed().as_secs_f64();
                eprintln!(
                    "  ramp: {o}/{n} agents up, {f} failed, {:.0} s, {:.0} agents/s",
                    secs,
                    o as f64 / secs
                );
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut started = 0u64;
    for i in 0..n {
        if failed.load(Ordering::Relaxed) >= max_failures || start.elapsed() >= limit {
            break;
        }
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let (cluster, ok, failed, on_ready) = (
            cluster.clone(),
            ok.clone(),
            failed.clone(),
            on_ready.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            let up = tokio::time::timeout(
                AGENT_TIMEOUT,
                cluster.provision_agent(&format!("agent {i}")),
            )
            .await
            .unwrap_or_else(|_| Err(BenchError::timeout("provision agent", AGENT_TIMEOUT)));
            match up {
                Ok(agent) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    on_ready(i, agent);
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    cluster.errors.record(&e);
                }
            }
        });
        started += 1;
        // Reap finished provisioning tasks so the set stays bounded by `concurrency`.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    progress.abort();
    RampResult {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        skipped: n - started,
        elapsed: start.elapsed(),
    }
}
