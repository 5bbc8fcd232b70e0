//! Records made durable by the store itself: 200 batches of 500 small records into one
//! session, the shape of an agent streaming, through `Store::insert_records` in process.
//! SQLite with `synchronous=FULL` (as the server runs), the what-if of `synchronous=NORMAL`
//! (what the per-commit fsync costs), and PostgreSQL when one answers.
//!
//! `cargo bench -p kortix-bench --bench store_records`
//!
//! PostgreSQL: `$KORTIX_BENCH_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`
//! (rows go into a fresh account and project of that database).

use std::time::{Duration, Instant};

use kortix_controlplane::store::{NewSession, RecordRow, Store, StoreOptions};

const BATCH: i64 = 500;
const BATCHES: i64 = 200;
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn batches() -> Vec<Vec<RecordRow>> {
    (0..BATCHES)
        .map(|b| {
            (1..=BATCH)
                .map(|i| {
                    let seq = b * BATCH + i;
                    RecordRow {
                        seq,
                        ts_ms: 1_700_000_000_000 + seq,
                        kind: "log".into(),
                        body: format!("{{\"stream\":1,\"line\":\"output line number {seq}\"}}")
                            .into_bytes(),
                    }
                })
                .collect()
        })
        .collect()
}

/// Records per second into a fresh session of `store`.
async fn measure(store: &Store) -> anyhow::Result<f64> {
    let tag = format!("bench-{}", kortix_controlplane::clock::now_ms());
    let account = store.create_person(&tag, false).await?;
    let project = store.create_project(&account.id, &tag, "main").await?;
    let (session, _) = store
        .create_session(&NewSession {
            project_id: project.id,
            template: "default".into(),
            agent: "default".into(),
            origin: "bench".into(),
            ..Default::default()
        })
        .await?;
    let batches = batches();
    let started = Instant::now();
    for batch in &batches {
        store.insert_records(&session.id, batch).await?;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(
        store.acked_seq(&session.id).await? == BATCH * BATCHES,
        "not every record was stored"
    );
    Ok((BATCH * BATCHES) as f64 / elapsed.as_secs_f64())
}

async fn sqlite(sync_full: bool) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = Store::open_sqlite(
        &dir.path().join("kortix.db"),
        StoreOptions {
            sqlite_sync_full: sync_full,
            ..StoreOptions::default()
        },
    )
    .await?;
    let rate = measure(&store).await;
    store.close().await;
    rate
}

async fn postgres(url: &str) -> anyhow::Result<f64> {
    let store = tokio::time::timeout(Duration::from_secs(10), Store::connect(url))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 10 s"))??;
    let rate = measure(&store).await;
    store.close().await;
    rate
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    println!("{BATCHES} batches of {BATCH} records into one session");
    let full = sqlite(true).await?;
    println!("SQLite, synchronous=FULL (as the server runs):  {full:>9.0} records/s");
    let normal = sqlite(false).await?;
    println!("SQLite, synchronous=NORMAL (what-if):           {normal:>9.0} records/s");
    println!(
        "fsync per commit costs: FULL ÷ NORMAL = {:.2}",
        full / normal
    );
    let url = std::env::var("KORTIX_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string());
    match postgres(&url).await {
        Ok(pg) => println!(
            "PostgreSQL ({}): {pg:>9.0} records/s; ÷ SQLite FULL = {:.2}",
            kortix_controlplane::store::redact_url(&url),
            pg / full
        ),
        Err(e) => println!(
            "PostgreSQL ({}): not measured: {e}",
            kortix_controlplane::store::redact_url(&url)
        ),
    }
    Ok(())
}
