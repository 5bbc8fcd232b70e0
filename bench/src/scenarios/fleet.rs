//! `fleet`: N connected agents heartbeating every T seconds. Reports the heartbeat round trip
//! in steady state and the control plane's memory with the fleet connected, against two
//! baselines from the same run: the unloaded round trip (one agent, serial heartbeats, before
//! the ramp) and the idle control plane's memory (before any session existed).

use super::{cores, machine_note, run_against, scratch_dir, wind_down};
use crate::api::Api;
use crate::cli::FleetArgs;
use crate::clock::Window;
use crate::errors::BenchError;
use crate::heartbeater::{self, Fleet, FleetCounters, SAMPLE_QUEUE, Sample};
use crate::monitor::Monitor;
use crate::procfs::{self, CpuMeter};
use crate::provision::{Cluster, ramp};
use crate::report::{Report, verdict};
use crate::stats::{Latency, fmt_mib, fmt_rate, ratio, thousands};
use crate::store_baseline::{self, HeartbeatBaseline, HeartbeatVariant};
use crate::target::Target;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const GOAL_RSS: u64 = 1024 * 1024 * 1024;
const GOAL_P99_US: u64 = 50_000;

pub async fn run(args: FleetArgs) -> Result<Report, BenchError> {
    run_against(&args.target, "fleet", async |target| {
        measure(&args, target).await
    })
    .await
}

async fn measure(args: &FleetArgs, target: &Target) -> Result<Report, BenchError> {
    let pid = target.pid;
    let idle_mem = pid.and_then(|p| procfs::memory(Some(p)));
    let own_idle = procfs::memory(None);
    let store_baselines = if args.store_baseline_secs > 0 {
        store_heartbeat_baselines(args).await
    } else {
        Vec::new()
    };
    let api = Api::connect(&target.public_url, &target.token).await?;
    let cluster = Cluster::new(api, &target.data_dir, "bench-fleet").await?;

    let period = Duration::from_secs(args.heartbeat_secs);
    let window = Arc::new(Window::new());
    let (samples_tx, mut samples_rx) = mpsc::channel::<Sample>(SAMPLE_QUEUE);
    let fleet = Arc::new(Fleet {
        counters: FleetCounters::default(),
        window: window.clone(),
        samples: samples_tx,
        errors: cluster.errors.clone(),
        period,
    });
    // Round trips during the ramp and in the window, by the heartbeat's send time.
    let (done_tx, mut done_rx) = watch::channel(false);
    let collector = {
        let window = window.clone();
        tokio::spawn(async move {
            let (mut ramp_h, mut steady) = (Latency::new(), Latency::new());
            let mut add = |s: Sample| {
                if window.contains(s.sent_us) {
                    steady.record(s.rtt);
                } else if window.before(s.sent_us) {
                    ramp_h.record(s.rtt);
                }
            };
            loop {
                tokio::select! {
                    s = samples_rx.recv() => match s {
                        Some(s) => add(s),
                        None => break,
                    },
                    _ = done_rx.changed() => {
                        while let Ok(s) = samples_rx.try_recv() {
                            add(s);
                        }
                        break;
                    }
                }
            }
            (ramp_h, steady)
        })
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let agents = Arc::new(std::sync::Mutex::new(Vec::new()));

    // Baseline: one agent, serial heartbeats, nothing else going on.
    eprintln!(
        "baseline: {} serial heartbeats of one agent",
        args.baseline_heartbeats
    );
    let mut first = cluster.provision_agent("agent 0 (baseline)").await?;
    let unloaded = heartbeater::unloaded_round_trips(&mut first, args.baseline_heartbeats).await?;
    let fleet0 = fleet.clone();
    let stop0 = stop_rx.clone();
    agents
        .lock()
        .map_err(|_| BenchError::new("fleet", "lock", "poisoned"))?
        .push(tokio::spawn(heartbeater::run(0, first, fleet0, stop0)));

    let monitor = {
        let fleet = fleet.clone();
        Monitor::start(pid, window.clone(), move || {
            let c = &fleet.counters;
            format!(
                "fleet: {} connected, {} lost, {} unanswered",
                c.connected.load(Ordering::Relaxed),
                c.lost.load(Ordering::Relaxed),
                c.unanswered_total.load(Ordering::Relaxed)
            )
        })
    };

    eprintln!(
        "ramp: {} agents, {} provisioning at once",
        args.agents, args.ramp_concurrency
    );
    let ramp_result = {
        let (fleet, agents, stop_rx) = (fleet.clone(), agents.clone(), stop_rx.clone());
        ramp(
            &cluster,
            args.agents.saturating_sub(1),
            args.ramp_concurrency,
            args.max_failures,
            Duration::from_secs(args.ramp_timeout_secs),
            move |i, agent| {
                let handle = tokio::spawn(heartbeater::run(
                    i + 1,
                    agent,
                    fleet.clone(),
                    stop_rx.clone(),
                ));
                if let Ok(mut v) = agents.lock() {
                    v.push(handle);
                }
            },
        )
        .await
    };
    let after_ramp_mem = pid.and_then(|p| procfs::memory(Some(p)));
    eprintln!(
        "ramp done: {} up, {} failed in {:.0} s; warm-up {} s",
        ramp_result.ok + 1,
        ramp_result.failed,
        ramp_result.elapsed.as_secs_f64(),
        args.heartbeat_secs
    );
    // One full interval so every agent is in its steady rhythm before measuring.
    tokio::time::sleep(period).await;

    let connected_at_start = fleet.counters.connected.load(Ordering::Relaxed);
    let (server_cpu, own_cpu) = (CpuMeter::start(pid), CpuMeter::start(None));
    window.open();
    eprintln!("measuring for {} s", args.duration_secs);
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    window.close();
    let connected_at_end = fleet.counters.connected.load(Ordering::Relaxed);
    let end_mem = pid.and_then(|p| procfs::memory(Some(p)));
    let (server_cores, own_cores) = (server_cpu.cores(), own_cpu.cores());
    let own_mem = procfs::memory(None);
    let max_rss = monitor.max_rss_in_window();
    monitor.stop();
    // Acks of heartbeats sent just before the end still count: give them a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let _ = stop_tx.send(true);
    let handles = std::mem::take(
        &mut *agents
            .lock()
            .map_err(|_| BenchError::new("fleet", "lock", "poisoned"))?,
    );
    wind_down("agent shutdown", handles, &cluster.errors).await;
    let _ = done_tx.send(true);
    let (ramp_rtt, steady) = match tokio::time::timeout(Duration::from_secs(10), collector).await {
        Ok(Ok(h)) => h,
        _ => (Latency::new(), Latency::new()),
    };
    let c = &fleet.counters;
    let (sent, unanswered, dropped, lost) = (
        c.sent_in_window.load(Ordering::Relaxed),
        c.unanswered_in_window.load(Ordering::Relaxed),
        c.dropped_samples.load(Ordering::Relaxed),
        c.lost.load(Ordering::Relaxed),
    );

    let s = steady.summary();
    let u = unloaded.summary();
    let fleet_rss = end_mem.map(|m| m.rss).unwrap_or(0).max(max_rss);
    let mut r = Report::new(format!(
        "Fleet: {} agents, heartbeat every {} s",
        thousands(args.agents),
        args.heartbeat_secs
    ));
    r.row("control plane", target.description.clone());
    r.row(
        "agents connected (window start / end)",
        format!(
            "{} / {} of {} requested",
            thousands(connected_at_start),
            thousands(connected_at_end),
            thousands(args.agents)
        ),
    );
    r.row(
        "ramp (StartSession → Enroll → Connect → running)",
        format!(
            "{} up, {} failed, {} not started in {:.0} s ({:.0} agents/s, {} at once)",
            thousands(ramp_result.ok + 1),
            ramp_result.failed,
            thousands(ramp_result.skipped),
            ramp_result.elapsed.as_secs_f64(),
            ratio(ramp_result.ok as f64, ramp_result.elapsed.as_secs_f64()),
            args.ramp_concurrency
        ),
    );
    r.row("measurement window", format!("{:.0} s", window.secs()));
    r.row(
        "heartbeats in window: sent / acked / unanswered within interval",
        format!(
            "{} / {} / {}",
            thousands(sent),
            thousands(s.count),
            thousands(unanswered)
        ),
    );
    r.row(
        "**heartbeat RTT p50 / p90 / p99 / max**",
        format!(
            "**{}** (goal p99 ≤ 50 ms: {})",
            s.percentiles_ms(),
            verdict(s.count > 0 && s.p99_us <= GOAL_P99_US)
        ),
    );
    r.row(
        "baseline: unloaded RTT (1 agent, serial) p50 / p90 / p99 / max",
        u.percentiles_ms(),
    );
    r.row(
        "RTT p99 loaded ÷ unloaded",
        format!("{:.1}×", ratio(s.p99_us as f64, u.p99_us as f64)),
    );
    r.row(
        "RTT during the ramp p50 / p90 / p99 / max",
        ramp_rtt.summary().percentiles_ms(),
    );
    for b in &store_baselines {
        match b {
            Ok(b) => r.row(
                format!(
                    "baseline: store heartbeat write in process, {} — p50 / p90 / p99 / max",
                    b.variant.describe()
                ),
                format!(
                    "{} at {} offered, {} achieved (errors {}, shed {})",
                    b.latency.summary().percentiles_ms(),
                    fmt_rate(args.agents as f64 / args.heartbeat_secs as f64),
                    fmt_rate(b.achieved_per_sec),
                    b.errors,
                    b.shed
                ),
            ),
            Err(e) => r.row("baseline: store heartbeat write", format!("failed: {e}")),
        };
    }
    if pid.is_some() {
        let idle = idle_mem.map(|m| m.rss).unwrap_or(0);
        r.row(
            "baseline: idle control-plane RSS (no sessions)",
            fmt_mib(idle),
        );
        r.row(
            "**control-plane RSS with the fleet connected (max VmRSS in window)**",
            format!(
                "**{}** (goal ≤ 1 GiB: {})",
                fmt_mib(fleet_rss),
                verdict(fleet_rss > 0 && fleet_rss <= GOAL_RSS)
            ),
        );
        r.row(
            "control-plane VmHWM (peak incl. ramp)",
            fmt_mib(end_mem.map(|m| m.hwm).unwrap_or(0)),
        );
        r.row(
            "RSS after ramp",
            fmt_mib(after_ramp_mem.map(|m| m.rss).unwrap_or(0)),
        );
        r.row(
            "RSS per connected agent ((fleet − idle) ÷ agents)",
            format!(
                "{:.1} KiB",
                ratio(
                    fleet_rss.saturating_sub(idle) as f64 / 1024.0,
                    connected_at_end.max(1) as f64
                )
            ),
        );
        r.row("control-plane CPU in window", cores(server_cores));
    } else {
        r.row("control-plane RSS", "n/a (pass --server-pid)");
    }
    r.row(
        "load generator RSS (idle → fleet) / CPU in window",
        format!(
            "{} → {} / {}",
            fmt_mib(own_idle.map(|m| m.rss).unwrap_or(0)),
            fmt_mib(own_mem.map(|m| m.rss).unwrap_or(0)),
            cores(own_cores)
        ),
    );
    r.row(
        "load-generator errors",
        format!(
            "{} (agents lost: {}; samples dropped: {}): {}",
            cluster.errors.total(),
            lost,
            dropped,
            cluster.errors.summary()
        ),
    );
    r.note(format!(
        "RTT = `Heartbeat{{nonce}}` queued on the agent's Connect stream → `HeartbeatAck{{nonce}}` received; \
         the control plane answers at once and stores the newest heartbeat of every session once a second, in \
         one transaction. Samples are heartbeats \
         sent inside the window; the unloaded baseline is {} serial heartbeats of one agent before the ramp (p99 of \
         {} samples ≈ the max).",
        args.baseline_heartbeats, args.baseline_heartbeats
    ));
    r.note(machine_note());
    Ok(r)
}

/// The fleet's heartbeat rate written straight into a fresh store in this process, as the
/// server does and in what-if variants, before the control plane has any session.
async fn store_heartbeat_baselines(args: &FleetArgs) -> Vec<Result<HeartbeatBaseline, BenchError>> {
    let url = args.target.database_url.as_deref();
    let mut variants = vec![HeartbeatVariant::AsServer, HeartbeatVariant::Serialized];
    if url.is_none() {
        variants.push(HeartbeatVariant::SyncNormal);
    }
    let rate = args.agents as f64 / args.heartbeat_secs as f64;
    let mut out = Vec::new();
    for v in variants {
        eprintln!("baseline: store heartbeats in process, {}", v.describe());
        let scratch = scratch_dir(&args.target, &format!("hb-{v:?}"));
        let r = store_baseline::heartbeats(
            url,
            &scratch,
            v,
            args.agents.min(1000),
            rate,
            args.store_baseline_secs,
        )
        .await;
        let _ = std::fs::remove_dir_all(&scratch);
        out.push(r);
    }
    out
}
