//! Record latency agent → viewer across two control-plane replicas on one PostgreSQL, against
//! the same-replica path in the same run: an agent streams to replica A, one viewer follows
//! on A (the baseline) and one on B (woken through `LISTEN/NOTIFY`). Both viewers see the
//! same records, so the two distributions differ only by the path.
//!
//! `cargo bench --workspace --bench cross_replica` (PostgreSQL at
//! `KORTIX_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`; the
//! benchmark creates and drops a database of its own). `RECORDS` (default 2000) records at
//! one per `PACE_MS` (default 5).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::StreamExt;
use kortix_bench::api::Api;
use kortix_bench::sim_agent::{self, log_record};
use kortix_controlplane::config::{SandboxKind, ServerConfig};
use kortix_controlplane::sandbox::external::BootstrapFile;
use kortix_controlplane::server::RunningServer;
use kortix_proto::v1::SessionStatus;
use kortix_proto::v1::agent_frame::Frame as In;
use kortix_tests::pg::Database;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn replica(
    work: &std::path::Path,
    name: &str,
    db_url: &str,
) -> anyhow::Result<RunningServer> {
    let mut config = ServerConfig::new(work.join(name));
    config.listen = "127.0.0.1:0".parse()?;
    config.agent_listen = "127.0.0.1:0".parse()?;
    config.sandbox = SandboxKind::External;
    config.database_url = Some(db_url.to_string());
    Ok(kortix_controlplane::server::start(config).await?)
}

fn token(server: &RunningServer) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(server.admin_token_path())?
        .trim()
        .to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

type Sent = Arc<Mutex<HashMap<u64, Instant>>>;

/// Follows the session until `last`; the lag of every record from its send time.
async fn follow(api: Api, session: String, last: u64, sent: Sent) -> anyhow::Result<Vec<Duration>> {
    let mut stream = api.attach(&session, 1).await?;
    let mut lags = Vec::with_capacity(last as usize);
    let mut expect = 1;
    while let Some(record) = stream.next().await {
        let record = record?;
        let now = Instant::now();
        if record.seq != expect {
            bail!("viewer expected seq {expect}, got {}", record.seq);
        }
        expect += 1;
        if let Some(at) = sent.lock().expect("sent lock").get(&record.seq) {
            lags.push(now - *at);
        }
        if record.seq == last {
            return Ok(lags);
        }
    }
    bail!("the stream ended at seq {}", expect - 1)
}

async fn run() -> anyhow::Result<()> {
    let records = env_u64("RECORDS", 2000);
    let pace = Duration::from_millis(env_u64("PACE_MS", 5));
    let Some(db) = Database::create().await else {
        anyhow::bail!("this benchmark needs PostgreSQL");
    };
    let work = tempfile::tempdir()?;
    let result = measure(work.path(), &db.url, records, pace).await;
    db.drop_now().await;
    result
}

async fn measure(
    work: &std::path::Path,
    db_url: &str,
    records: u64,
    pace: Duration,
) -> anyhow::Result<()> {
    eprintln!("starting two replicas on {db_url}");
    let a = replica(work, "a", db_url).await?;
    let b = replica(work, "b", db_url).await?;
    let api_a = Api::connect(&a.public_url, &token(&a)?).await?;
    let api_b = Api::connect(&b.public_url, &token(&b)?).await?;
    let project = api_a.create_project("bench").await?;
    let session = api_a.start_session(&project, "cross-replica").await?;
    let bootstrap: BootstrapFile = serde_json::from_slice(&std::fs::read(
        a.data_dir.join("bootstrap").join(format!("{session}.json")),
    )?)?;
    let agent = sim_agent::enroll(
        &bootstrap.env["KORTIX_CONTROL_PLANE"],
        &bootstrap.env["KORTIX_CA_CERT"],
        &bootstrap.env["KORTIX_BOOTSTRAP_TOKEN"],
    )
    .await?;
    let mut conn = agent.connect(0).await?;
    conn.send(In::State(kortix_proto::v1::StateReport {
        status: SessionStatus::Running as i32,
        ..Default::default()
    }))
    .await?;

    eprintln!("agent connected to A; streaming {records} records");
    let sent: Sent = Arc::default();
    let same = tokio::spawn(follow(api_a, session.clone(), records, sent.clone()));
    let cross = tokio::spawn(follow(api_b, session.clone(), records, sent.clone()));
    // Let both viewers reach the live tail before the first record.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut tick = tokio::time::interval(pace);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 1..=records {
        tick.tick().await;
        sent.lock().expect("sent lock").insert(seq, Instant::now());
        conn.send_records(vec![log_record(seq, format!("record {seq}"))])
            .await?;
        // Each ack read before the next send: the control plane's frames to the agent are a
        // bounded queue, and an agent that never reads them stalls its own stream.
        conn.wait_ack(seq).await?;
    }
    eprintln!("all acked; waiting for the viewers");
    let mut same = same.await??;
    let mut cross = cross.await??;
    same.sort();
    cross.sort();

    println!(
        "Records agent -> viewer, {records} records at one per {} ms, agent on replica A, \
         PostgreSQL; one viewer on A, one on B",
        pace.as_millis()
    );
    println!("| viewer | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (label, lags) in [("same replica (A)", &same), ("other replica (B)", &cross)] {
        println!(
            "| {label} | {} | {} | {} | {} |",
            ms(percentile(lags, 0.5)),
            ms(percentile(lags, 0.9)),
            ms(percentile(lags, 0.99)),
            ms(*lags.last().unwrap_or(&Duration::ZERO)),
        );
    }
    let ratio =
        |p: f64| percentile(&cross, p).as_secs_f64() / percentile(&same, p).as_secs_f64().max(1e-9);
    println!(
        "other ÷ same replica: p50 {:.2}x, p99 {:.2}x",
        ratio(0.5),
        ratio(0.99)
    );

    drop(conn);
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
