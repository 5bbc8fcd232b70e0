//! The web console's live view under load: a record's latency from the agent to each of 20
//! open console pages' event streams, and what those pages cost the agent (its ack latency
//! with the pages open against without them, in the same run).
//!
//! `cargo bench --workspace --bench console`. One control plane (SQLite, external sandboxes),
//! one simulated agent over the real mTLS protocol streaming `RECORDS` (default 2000) log
//! records at one per `PACE_MS` (default 5) in each of three phases: no pages, `PAGES`
//! (default 20) pages following the session's `/events` stream, no pages again (the baseline
//! is both phases without pages, so drift over the run falls on both sides). A page here is
//! an HTTP client reading the Server-Sent Events the browser's script appends to the DOM; the
//! browser's own insertion is not timed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kortix_bench::api::Api;
use kortix_bench::provision::{Cluster, LiveAgent};
use kortix_bench::sim_agent::log_record;
use kortix_bench::stats::Latency;
use kortix_proto::v1::control_frame::Frame as Out;

// The control plane on loopback with external sandboxes, as the git benchmarks start it.
#[allow(dead_code)]
mod support;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Sent = Arc<Mutex<HashMap<u64, Instant>>>;

/// Streams `count` records from `first` at one per `pace`; the agent's ack latency of each.
async fn stream(
    agent: &mut LiveAgent,
    first: u64,
    count: u64,
    pace: Duration,
    sent: &Sent,
) -> anyhow::Result<Latency> {
    let mut acks = Latency::new();
    let mut tick = tokio::time::interval(pace);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in first..first + count {
        tick.tick().await;
        let at = Instant::now();
        sent.lock().expect("sent lock").insert(seq, at);
        agent
            .tx
            .send_records(vec![log_record(seq, format!("record {seq}"))])
            .await?;
        // Each ack read before the next send: the control plane's frames to the agent are a
        // bounded queue, and an agent that never reads them stalls its own stream.
        loop {
            match agent.rx.next().await? {
                Some(Out::Ack(a)) if a.seq >= seq => break,
                Some(_) => {}
                None => bail!("the agent's stream ended while waiting for ack {seq}"),
            }
        }
        acks.record(at.elapsed());
    }
    Ok(acks)
}

/// One console page's event stream from `after`, until the event of seq `last`: the lag of
/// every record from its send time.
async fn page(
    url: String,
    token: String,
    after: u64,
    last: u64,
    sent: Sent,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<Latency> {
    let client = reqwest::Client::new();
    let mut res = client
        .get(format!("{url}?after={after}"))
        .header("cookie", format!("kortix_console={token}"))
        .send()
        .await?
        .error_for_status()?;
    let _ = ready.send(()).await;
    let mut lags = Latency::new();
    let mut buf = String::new();
    let mut expect = after + 1;
    while let Some(chunk) = res.chunk().await? {
        let now = Instant::now();
        buf.push_str(std::str::from_utf8(&chunk).context("the event stream is UTF-8")?);
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(id) = event.lines().find_map(|l| l.strip_prefix("id: ")) else {
                continue;
            };
            let seq: u64 = id.trim().parse()?;
            if seq != expect {
                bail!("page expected seq {expect}, got {seq}");
            }
            expect += 1;
            if let Some(at) = sent.lock().expect("sent lock").get(&seq) {
                lags.record(now - *at);
            }
            if seq == last {
                return Ok(lags);
            }
        }
    }
    bail!("the event stream ended at seq {}", expect - 1)
}

async fn run() -> anyhow::Result<()> {
    let records = env_u64("RECORDS", 2000);
    let pages = env_u64("PAGES", 20);
    let pace = Duration::from_millis(env_u64("PACE_MS", 5));
    let work = tempfile::tempdir()?;
    let (server, token) = support::start_server(work.path()).await?;
    let api = Api::connect(&server.public_url, &token).await?;
    let cluster = Cluster::new(api, &server.data_dir, "console").await?;
    let mut agent = cluster.provision_agent("console").await?;
    let (project, session) = (cluster.project.clone(), agent.session_id.clone());
    let sent: Sent = Arc::default();

    eprintln!("phase 1: {records} records, no pages");
    let mut baseline = stream(&mut agent, 1, records, pace, &sent).await?;

    eprintln!("phase 2: {records} records, {pages} pages");
    let events = format!(
        "{}/projects/{project}/sessions/{session}/events",
        server.public_url
    );
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(pages as usize);
    let last = 2 * records;
    let viewers: Vec<_> = (0..pages)
        .map(|_| {
            tokio::spawn(page(
                events.clone(),
                token.clone(),
                records,
                last,
                sent.clone(),
                ready_tx.clone(),
            ))
        })
        .collect();
    for _ in 0..pages {
        ready_rx.recv().await.context("a page failed to connect")?;
    }
    let with_pages = stream(&mut agent, records + 1, records, pace, &sent).await?;
    let mut to_pages = Latency::new();
    for v in viewers {
        to_pages.merge(&v.await??);
    }

    eprintln!("phase 3: {records} records, no pages");
    baseline.merge(&stream(&mut agent, last + 1, records, pace, &sent).await?);

    let (b, w, p) = (baseline.summary(), with_pages.summary(), to_pages.summary());
    println!(
        "Console live view: {records} log records per phase at one per {} ms, SQLite, one \
         simulated agent; {pages} pages on one session",
        pace.as_millis()
    );
    println!("| measured | samples | p50 / p90 / p99 / max |");
    println!("|---|---|---|");
    println!(
        "| agent → page event ({pages} pages) | {} | {} |",
        p.count,
        p.percentiles_ms()
    );
    println!(
        "| agent ack, no pages (baseline) | {} | {} |",
        b.count,
        b.percentiles_ms()
    );
    println!(
        "| agent ack, {pages} pages open | {} | {} |",
        w.count,
        w.percentiles_ms()
    );
    let ratio = |with: u64, without: u64| with as f64 / without.max(1) as f64;
    println!(
        "ack latency with ÷ without pages: p50 {:.2}x, p99 {:.2}x",
        ratio(w.p50_us, b.p50_us),
        ratio(w.p99_us, b.p99_us)
    );
    drop(agent);
    server.shutdown().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
