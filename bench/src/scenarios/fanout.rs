//! `fanout`: one session streaming, V viewers attached with follow. Reports records/s
//! delivered to viewers and their lag, with the same run's no-viewer phase as the baseline
//! for ingest.

use super::{cores, finish, run_against, wind_down};
use crate::api::Api;
use crate::cli::FanoutArgs;
use crate::clock::Window;
use crate::errors::BenchError;
use crate::monitor::Monitor;
use crate::procfs::{self, CpuMeter};
use crate::provision::Cluster;
use crate::report::Report;
use crate::stats::{Latency, fmt_mib, fmt_rate, ratio, thousands};
use crate::streamer::{self, StreamConfig, StreamTotals};
use crate::target::Target;
use crate::viewer::{self, ViewerStats};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

pub async fn run(args: FanoutArgs) -> Result<Report, BenchError> {
    run_against(&args.target, "fanout", async |target| {
        measure(&args, target).await
    })
    .await
}

/// Ingest rate over a window: acked records advanced while it was open.
async fn ingest_phase(totals: &StreamTotals, window: &Window, secs: u64) -> f64 {
    let start = totals.acked.load(Ordering::Relaxed);
    window.open();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    window.close();
    ratio(
        (totals.acked.load(Ordering::Relaxed) - start) as f64,
        window.secs(),
    )
}

async fn measure(args: &FanoutArgs, target: &Target) -> Result<Report, BenchError> {
    let st = &args.stream;
    let pid = target.pid;
    let api = Api::connect(&target.public_url, &target.token).await?;
    let cluster = Cluster::new(api, &target.data_dir, "bench-fanout").await?;
    let agent = cluster.provision_agent("streamer").await?;
    let session_id = agent.session_id.clone();

    let totals = Arc::new(StreamTotals::default());
    let (w_base, w_main) = (Arc::new(Window::new()), Arc::new(Window::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let cfg = StreamConfig {
        batch: st.batch,
        record_bytes: st.record_bytes,
        window: st.window,
        rate: st.rate as f64,
        phase: 0.0,
    };
    let streamer = tokio::spawn(streamer::run(
        agent,
        cfg,
        totals.clone(),
        vec![w_base.clone(), w_main.clone()],
        cluster.errors.clone(),
        stop_rx.clone(),
    ));
    let monitor = {
        let totals = totals.clone();
        Monitor::start(pid, w_main.clone(), move || {
            format!(
                "fanout: {} acked",
                thousands(totals.acked.load(Ordering::Relaxed))
            )
        })
    };

    eprintln!(
        "streaming: warm-up {} s, {} s without viewers",
        st.warmup_secs, args.baseline_secs
    );
    tokio::time::sleep(Duration::from_secs(st.warmup_secs)).await;
    let base_cpu = CpuMeter::start(pid);
    let ingest_alone = if args.baseline_secs > 0 {
        ingest_phase(&totals, &w_base, args.baseline_secs).await
    } else {
        0.0
    };
    let base_cores = base_cpu.cores();

    eprintln!("attaching {} viewers", args.viewers);
    let from_seq = totals.acked.load(Ordering::Relaxed) + 1;
    let viewers: Vec<_> = (0..args.viewers)
        .map(|_| {
            tokio::spawn(viewer::run(
                target.public_url.clone(),
                target.token.clone(),
                session_id.clone(),
                from_seq,
                w_main.clone(),
                cluster.errors.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(st.warmup_secs)).await;
    let (server_cpu, own_cpu) = (CpuMeter::start(pid), CpuMeter::start(None));
    eprintln!("measuring for {} s", st.duration_secs);
    let ingest_viewed = ingest_phase(&totals, &w_main, st.duration_secs).await;
    let (server_cores, own_cores) = (server_cpu.cores(), own_cpu.cores());
    let mem = pid.and_then(|p| procfs::memory(Some(p)));
    let max_rss = monitor.max_rss_in_window();
    monitor.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);

    let (mut lag, mut agg) = (Latency::new(), ViewerStats::default());
    let mut early = 0u64;
    for v in wind_down("viewer shutdown", viewers, &cluster.errors).await {
        lag.merge(&v.lag);
        agg.delivered_in_window += v.delivered_in_window;
        agg.delivered_total += v.delivered_total;
        agg.gaps += v.gaps;
        agg.duplicates += v.duplicates;
        early += u64::from(v.ended_early);
    }
    let (ack_alone, ack_viewed) = match tokio::time::timeout(super::WIND_DOWN, streamer).await {
        Ok(Ok(h)) if h.len() == 2 => (h[0].summary(), h[1].summary()),
        _ => Default::default(),
    };

    let secs = w_main.secs();
    let delivered = ratio(agg.delivered_in_window as f64, secs);
    let l = lag.summary();
    let mut r = Report::new(format!(
        "Fan-out: 1 session → {} viewers, {} records/batch, {}",
        args.viewers,
        st.batch,
        if st.rate == 0 {
            "unpaced agent".to_string()
        } else {
            format!("agent offering {}", fmt_rate(st.rate as f64))
        }
    ));
    r.row("control plane", target.description.clone());
    r.row(
        "baseline: ingest with no viewer (acked records/s; ack p50 / p90 / p99 / max)",
        format!("{}; {}", fmt_rate(ingest_alone), ack_alone.percentiles_ms()),
    );
    r.row(
        "ingest with viewers attached (acked records/s; ack p50 / p90 / p99 / max)",
        format!(
            "{}; {}",
            fmt_rate(ingest_viewed),
            ack_viewed.percentiles_ms()
        ),
    );
    r.row(
        "ingest with viewers ÷ without",
        format!("{:.2}", ratio(ingest_viewed, ingest_alone)),
    );
    r.row(
        "**records delivered to viewers per second (all viewers)**",
        format!(
            "**{}** = {} per viewer; {:.0} % of ingest × viewers",
            fmt_rate(delivered),
            fmt_rate(delivered / args.viewers as f64),
            100.0 * ratio(delivered, ingest_viewed * args.viewers as f64)
        ),
    );
    r.row(
        "**viewer lag p50 / p90 / p99 / max** (agent send → viewer receive)",
        format!(
            "**{}** over {} records",
            l.percentiles_ms(),
            thousands(l.count)
        ),
    );
    r.row(
        "gaps / duplicates seen by viewers",
        format!("{} / {}", agg.gaps, agg.duplicates),
    );
    r.row(
        "viewers ended early",
        format!("{early} of {}", args.viewers),
    );
    if pid.is_some() {
        r.row(
            "control-plane CPU (alone → with viewers) / max RSS",
            format!(
                "{} → {} / {}",
                base_cores
                    .map(|c| format!("{c:.2}"))
                    .unwrap_or_else(|| "n/a".into()),
                cores(server_cores),
                fmt_mib(max_rss.max(mem.map(|m| m.rss).unwrap_or(0)))
            ),
        );
    }
    r.note(
        "Lag is measured on one clock: the agent writes its send time into each record's log line; the viewer \
         (same process) subtracts it from the receive time. It includes durable storage, the viewer's wake-up \
         and its read back from the store.",
    );
    finish(&mut r, own_cores, &cluster.errors);
    Ok(r)
}
