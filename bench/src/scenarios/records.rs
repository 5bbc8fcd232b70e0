//! `records`: S sessions streaming record batches at once. Reports records/s acknowledged as
//! durable and the batch ack latency, against the in-run baseline of the store's own insert
//! throughput (same batches, in process, no gRPC).

use super::{cores, finish, run_against, scratch_dir, wind_down};
use crate::api::Api;
use crate::cli::RecordsArgs;
use crate::clock::Window;
use crate::errors::BenchError;
use crate::monitor::Monitor;
use crate::procfs::{self, CpuMeter};
use crate::provision::{Cluster, LiveAgent, ramp};
use crate::report::{Report, verdict};
use crate::stats::{Latency, fmt_mib, fmt_rate, ratio, thousands};
use crate::store_baseline;
use crate::streamer::{self, StreamConfig, StreamTotals};
use crate::target::Target;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const GOAL_RATE: f64 = 100_000.0;
const GOAL_P99_US: u64 = 100_000;

pub async fn run(args: RecordsArgs) -> Result<Report, BenchError> {
    run_against(&args.target, "records", async |target| {
        measure(&args, target).await
    })
    .await
}

async fn measure(args: &RecordsArgs, target: &Target) -> Result<Report, BenchError> {
    let st = &args.stream;
    let pid = target.pid;

    // As the server inserts (concurrently), then the what-if of one insert at a time.
    let mut baselines = Vec::new();
    for serialize in [false, true] {
        if args.baseline_secs == 0 {
            break;
        }
        eprintln!(
            "baseline: store inserts in process for {} s{}",
            args.baseline_secs,
            if serialize { ", serialized" } else { "" }
        );
        let scratch = scratch_dir(&args.target, "baseline");
        let url = args
            .baseline_database_url
            .clone()
            .or_else(|| args.target.database_url.clone());
        let b = store_baseline::run(
            url.as_deref(),
            &scratch,
            args.sessions,
            st.batch,
            st.record_bytes,
            args.baseline_secs,
            serialize,
        )
        .await;
        let _ = std::fs::remove_dir_all(&scratch);
        baselines.push(b?);
    }

    let api = Api::connect(&target.public_url, &target.token).await?;
    let cluster = Cluster::new(api, &target.data_dir, "bench-records").await?;
    eprintln!("provisioning {} sessions", args.sessions);
    let ready: Arc<Mutex<Vec<LiveAgent>>> = Arc::default();
    let ramp_result = {
        let ready = ready.clone();
        ramp(
            &cluster,
            args.sessions,
            16,
            args.sessions.max(1),
            Duration::from_secs(600),
            move |_, agent| {
                if let Ok(mut v) = ready.lock() {
                    v.push(agent);
                }
            },
        )
        .await
    };
    let agents = std::mem::take(
        &mut *ready
            .lock()
            .map_err(|_| BenchError::new("records", "lock", "poisoned"))?,
    );
    if agents.is_empty() {
        return Err(BenchError::new(
            "records",
            "no agents",
            format!("no session came up: {}", cluster.errors.summary()),
        ));
    }

    let n = agents.len() as u64;
    let cfg = StreamConfig {
        batch: st.batch,
        record_bytes: st.record_bytes,
        window: st.window,
        rate: st.rate as f64 / n as f64,
        phase: 0.0,
    };
    let totals = Arc::new(StreamTotals::default());
    let window = Arc::new(Window::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let monitor = {
        let totals = totals.clone();
        Monitor::start(pid, window.clone(), move || {
            format!(
                "records: {} streaming, {} acked",
                totals.live.load(Ordering::Relaxed),
                thousands(totals.acked.load(Ordering::Relaxed))
            )
        })
    };
    let handles: Vec<_> = agents
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            tokio::spawn(streamer::run(
                a,
                StreamConfig {
                    phase: i as f64 / n as f64,
                    ..cfg.clone()
                },
                totals.clone(),
                vec![window.clone()],
                cluster.errors.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    eprintln!(
        "streaming: warm-up {} s, then {} s measured",
        st.warmup_secs, st.duration_secs
    );
    tokio::time::sleep(Duration::from_secs(st.warmup_secs)).await;
    let (server_cpu, own_cpu) = (CpuMeter::start(pid), CpuMeter::start(None));
    let acked_start = totals.acked.load(Ordering::Relaxed);
    window.open();
    tokio::time::sleep(Duration::from_secs(st.duration_secs)).await;
    window.close();
    let acked_end = totals.acked.load(Ordering::Relaxed);
    let (server_cores, own_cores) = (server_cpu.cores(), own_cpu.cores());
    let mem = pid.and_then(|p| procfs::memory(Some(p)));
    let max_rss = monitor.max_rss_in_window();
    monitor.stop();
    let live_at_end = totals.live.load(Ordering::Relaxed);
    // Acks for batches sent just before the end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let mut latency = Latency::new();
    for h in wind_down("agent shutdown", handles, &cluster.errors).await {
        if let Some(h) = h.first() {
            latency.merge(h);
        }
    }

    let secs = window.secs();
    let rate = ratio((acked_end - acked_start) as f64, secs);
    let l = latency.summary();
    let mut r = Report::new(format!(
        "Records: {} sessions streaming, {} records/batch, {} batches in flight, {}",
        n,
        st.batch,
        st.window,
        if st.rate == 0 {
            "unpaced".to_string()
        } else {
            format!("offered {}", fmt_rate(st.rate as f64))
        }
    ));
    r.row("control plane", target.description.clone());
    r.row(
        "sessions streaming (start / end of window)",
        format!(
            "{} / {} (provisioning failures: {})",
            n, live_at_end, ramp_result.failed
        ),
    );
    r.row(
        "record size (encoded)",
        format!("≈{} bytes", st.record_bytes),
    );
    r.row(
        "measurement window",
        format!("{secs:.0} s after {} s warm-up", st.warmup_secs),
    );
    r.row(
        "**records acked (durable) per second**",
        format!(
            "**{}** (goal ≥ 100,000/s: {})",
            fmt_rate(rate),
            verdict(rate >= GOAL_RATE)
        ),
    );
    r.row(
        "**ack latency p50 / p90 / p99 / max** (batch sent → Ack covering it)",
        format!(
            "**{}** over {} batches (goal p99 ≤ 100 ms: {})",
            l.percentiles_ms(),
            thousands(l.count),
            verdict(l.count > 0 && l.p99_us <= GOAL_P99_US)
        ),
    );
    for b in &baselines {
        let bl = b.insert_latency.summary();
        r.row(
            format!(
                "baseline: store insert_records in process ({}, same batches, {} sessions{})",
                b.backend,
                n,
                if b.serialized {
                    ", what-if: one insert at a time"
                } else {
                    ", concurrent as in the server"
                }
            ),
            format!(
                "{} (one transaction p50 / p90 / p99 / max: {}; errors {})",
                fmt_rate(b.records_per_sec),
                bl.percentiles_ms(),
                b.errors
            ),
        );
    }
    if let Some(b) = baselines.first() {
        r.row(
            "gateway ÷ store baseline (concurrent)",
            format!("{:.2}", ratio(rate, b.records_per_sec)),
        );
    }
    if pid.is_some() {
        r.row(
            "control-plane CPU / max RSS in window",
            format!(
                "{} / {}",
                cores(server_cores),
                fmt_mib(max_rss.max(mem.map(|m| m.rss).unwrap_or(0)))
            ),
        );
    }
    r.note(
        "Throughput counts the advance of each session's Ack (highest contiguous durable seq) inside the window; \
         latency is per batch, from queueing it on the Connect stream to receiving an Ack ≥ its last seq, for \
         batches sent inside the window.",
    );
    finish(&mut r, own_cores, &cluster.errors);
    Ok(r)
}
