//! The in-run baseline of the records benchmark: the same batches written straight into the
//! control plane's `Store::insert_records` in this process — no TLS, HTTP/2, gRPC, tasks or
//! acks. The ratio (gateway throughput ÷ store throughput) says how much of the store's
//! capacity the agent path delivers, independent of how fast this shared machine is today.

use crate::errors::BenchError;
use crate::stats::Latency;
use crate::streamer::line;
use kortix_controlplane::sessions::records::to_rows;
use kortix_controlplane::store::{NewSession, SessionStatus, Store, StoreOptions};
use kortix_proto::v1::{LogLine, LogStream, Record, record::Body};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn store_err(stage: &'static str) -> impl Fn(kortix_controlplane::store::Error) -> BenchError {
    move |e| BenchError::new(stage, "store", e.to_string())
}

/// A fresh account and project with `n` sessions (moved to `running` when asked); their ids.
async fn sessions_in(store: &Store, n: u64, running: bool) -> Result<Vec<String>, BenchError> {
    let tag = format!(
        "baseline-{}-{}",
        kortix_controlplane::clock::now_ms(),
        crate::clock::now_us()
    );
    let account = store
        .create_person(&tag, false)
        .await
        .map_err(store_err("baseline account"))?;
    let project = store
        .create_project(&account.id, &tag, "main")
        .await
        .map_err(store_err("baseline project"))?;
    let mut ids = Vec::new();
    for _ in 0..n {
        let (s, _) = store
            .create_session(&NewSession {
                project_id: project.id.clone(),
                template: "default".into(),
                agent: "default".into(),
                origin: "bench".into(),
                ..Default::default()
            })
            .await
            .map_err(store_err("baseline session"))?;
        if running {
            store
                .transition_session(
                    &s.id,
                    &[SessionStatus::Provisioning],
                    SessionStatus::Running,
                    None,
                )
                .await
                .map_err(store_err("baseline session"))?;
        }
        ids.push(s.id);
    }
    Ok(ids)
}

/// Deadline of one baseline insert.
const INSERT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the baseline measured.
#[derive(Debug, Clone)]
pub struct StoreBaseline {
    /// Whether inserts went one at a time through an in-process mutex (what-if).
    pub serialized: bool,
    pub records_per_sec: f64,
    /// One `insert_records` call (one transaction) per batch.
    pub insert_latency: Latency,
    pub errors: u64,
    pub backend: String,
}

/// Inserts `batch`-record batches for `sessions` sessions concurrently for `secs` seconds.
pub async fn run(
    database_url: Option<&str>,
    scratch_dir: &Path,
    sessions: u64,
    batch: usize,
    record_bytes: usize,
    secs: u64,
    serialize: bool,
) -> Result<StoreBaseline, BenchError> {
    let serial = Arc::new(tokio::sync::Mutex::new(()));
    let store = Store::open(scratch_dir, database_url)
        .await
        .map_err(store_err("baseline open"))?;
    let ids = sessions_in(&store, sessions, false).await?;
    let inserted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let filler = Arc::new(crate::streamer::filler(record_bytes));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for id in ids {
        let (store, inserted, errors, filler, serial) = (
            store.clone(),
            inserted.clone(),
            errors.clone(),
            filler.clone(),
            serial.clone(),
        );
        tasks.spawn(async move {
            let mut hist = Latency::new();
            let mut seq = 1u64;
            while Instant::now() < deadline {
                let t = crate::clock::now_us();
                let records: Vec<Record> = (0..batch as u64)
                    .map(|i| Record {
                        seq: seq + i,
                        ts_unix_ms: kortix_controlplane::clock::now_ms(),
                        body: Some(Body::Log(LogLine {
                            stream: LogStream::Stdout as i32,
                            line: line(t, &filler),
                        })),
                    })
                    .collect();
                let at = Instant::now();
                // The same validation and encoding the gateway does per batch.
                let _guard = if serialize {
                    Some(serial.lock().await)
                } else {
                    None
                };
                let result = match to_rows(&records) {
                    Ok(rows) => {
                        match tokio::time::timeout(INSERT_TIMEOUT, store.insert_records(&id, &rows))
                            .await
                        {
                            Ok(r) => r.map_err(|e| e.to_string()),
                            Err(_) => Err("timeout".to_string()),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(_) => {
                        hist.record(at.elapsed());
                        inserted.fetch_add(batch as u64, Ordering::Relaxed);
                        seq += batch as u64;
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            hist
        });
    }
    let mut latency = Latency::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(h) = joined {
            latency.merge(&h);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    store.close().await;
    Ok(StoreBaseline {
        serialized: serialize,
        records_per_sec: inserted.load(Ordering::Relaxed) as f64 / elapsed,
        insert_latency: latency,
        errors: errors.load(Ordering::Relaxed),
        backend: format!("{:?}", store.kind()),
    })
}

/// How the heartbeat baseline opens and drives the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatVariant {
    /// As the server runs it: its default store options, heartbeats written concurrently.
    AsServer,
    /// What-if: the same, but writes go one at a time through an in-process mutex (no SQLite
    /// busy-handler sleeps).
    Serialized,
    /// What-if (SQLite): `synchronous=NORMAL` instead of FULL (no fsync per commit in WAL mode).
    SyncNormal,
}

impl HeartbeatVariant {
    pub fn describe(self) -> &'static str {
        match self {
            HeartbeatVariant::AsServer => {
                "as the server writes them (concurrent, server's store options)"
            }
            HeartbeatVariant::Serialized => "what-if: writes serialized in process",
            HeartbeatVariant::SyncNormal => "what-if: SQLite synchronous=NORMAL",
        }
    }
}

/// Most heartbeat writes in flight in the baseline; beyond it a heartbeat is shed (counted).
const MAX_IN_FLIGHT: usize = 20_000;

/// What the heartbeat baseline measured.
#[derive(Debug, Clone)]
pub struct HeartbeatBaseline {
    pub variant: HeartbeatVariant,
    /// Heartbeats written per second during the run (offered: `rate`).
    pub achieved_per_sec: f64,
    pub latency: Latency,
    pub errors: u64,
    pub shed: u64,
}

/// `Store::record_heartbeat` at `rate` per second (open loop, spread over `sessions` running
/// sessions) for `secs` seconds; latency of each write.
pub async fn heartbeats(
    database_url: Option<&str>,
    scratch_dir: &Path,
    variant: HeartbeatVariant,
    sessions: u64,
    rate: f64,
    secs: u64,
) -> Result<HeartbeatBaseline, BenchError> {
    let store = match (database_url, variant) {
        (None, HeartbeatVariant::SyncNormal) => {
            std::fs::create_dir_all(scratch_dir)
                .map_err(|e| BenchError::new("baseline open", "io", e.to_string()))?;
            let options = StoreOptions {
                sqlite_sync_full: false,
                ..StoreOptions::default()
            };
            Store::open_sqlite(&scratch_dir.join("kortix.db"), options).await
        }
        _ => Store::open(scratch_dir, database_url).await,
    }
    .map_err(store_err("baseline open"))?;
    let ids = Arc::new(sessions_in(&store, sessions.max(1), true).await?);
    let serial = Arc::new(tokio::sync::Mutex::new(()));
    let sem = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Result<Duration, ()>>(MAX_IN_FLIGHT);
    let mut latency = Latency::new();
    let (mut ok, mut errors, mut shed) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut issued = 0u64;
    while Instant::now() < deadline {
        tokio::select! {
            _ = tick.tick() => {
                // Heartbeats due by now at `rate`, minus those already issued.
                let mut owed = rate * start.elapsed().as_secs_f64() - issued as f64;
                while owed >= 1.0 {
                    owed -= 1.0;
                    issued += 1;
                    let Ok(permit) = sem.clone().try_acquire_owned() else {
                        shed += 1;
                        continue;
                    };
                    let (store, ids, serial, done) = (store.clone(), ids.clone(), serial.clone(), done_tx.clone());
                    let id = issued as usize % ids.len();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let at = Instant::now();
                        let write = async {
                            let _guard = match variant {
                                HeartbeatVariant::Serialized => Some(serial.lock().await),
                                _ => None,
                            };
                            store.record_heartbeat(&ids[id], 0, kortix_controlplane::clock::now_ms()).await
                        };
                        let r = match tokio::time::timeout(INSERT_TIMEOUT, write).await {
                            Ok(Ok(_)) => Ok(at.elapsed()),
                            _ => Err(()),
                        };
                        let _ = done.send(r).await;
                    });
                }
            }
            Some(r) = done_rx.recv() => match r {
                Ok(d) => { ok += 1; latency.record(d); }
                Err(()) => errors += 1,
            },
        }
    }
    drop(done_tx);
    let elapsed = start.elapsed().as_secs_f64();
    let ok_in_time = ok;
    // Writes still in flight finish (each within INSERT_TIMEOUT) and count for latency.
    while let Ok(Some(r)) = tokio::time::timeout(INSERT_TIMEOUT, done_rx.recv()).await {
        match r {
            Ok(d) => latency.record(d),
            Err(()) => errors += 1,
        }
    }
    store.close().await;
    Ok(HeartbeatBaseline {
        variant,
        achieved_per_sec: ok_in_time as f64 / elapsed.max(1e-9),
        latency,
        errors,
        shed,
    })
}
