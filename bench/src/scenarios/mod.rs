//! The three benchmarks. Each starts (or finds) the control plane, measures, and returns a
//! Markdown report; errors of individual agents are counted in it, never fatal.

pub mod fanout;
pub mod fleet;
pub mod records;

use crate::errors::{BenchError, ErrorLog};
use crate::report::Report;
use crate::target::{LogProblems, Target, TargetArgs};
use std::path::PathBuf;
use std::time::Duration;

/// How long the agents and viewers of a scenario get to wind down after it.
pub const WIND_DOWN: Duration = Duration::from_secs(60);

/// The frame of every scenario: open (or start) the control plane, measure, stop it, and
/// add the started server's WARN/ERROR log lines to the report.
pub async fn run_against(
    target: &TargetArgs,
    scenario: &str,
    measure: impl AsyncFnOnce(&Target) -> Result<Report, BenchError>,
) -> Result<Report, BenchError> {
    let target = Target::open(target, scenario).await?;
    let result = measure(&target).await;
    if let Some(log) = target.log_path() {
        eprintln!("server log: {}", log.display());
    }
    let problems = target.log_problems();
    target.stop().await;
    let mut report = result?;
    problems_row(&mut report, problems);
    Ok(report)
}

/// A fresh scratch directory name for an in-process baseline.
pub fn scratch_dir(target: &TargetArgs, what: &str) -> PathBuf {
    target
        .work_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!(
            "kortix-loadgen-{what}-{}-{}",
            std::process::id(),
            kortix_controlplane::clock::now_ms()
        ))
}

/// Waits for the scenario's tasks, at most [`WIND_DOWN`]; a timeout is counted as an error.
pub async fn wind_down<T>(
    what: &'static str,
    tasks: Vec<tokio::task::JoinHandle<T>>,
    errors: &ErrorLog,
) -> Vec<T> {
    match tokio::time::timeout(WIND_DOWN, futures::future::join_all(tasks)).await {
        Ok(results) => results.into_iter().flatten().collect(),
        Err(_) => {
            errors.record(&BenchError::timeout(what, WIND_DOWN));
            Vec::new()
        }
    }
}

/// CPU use for a report row: `1.23 cores`, or `n/a` where it could not be read.
pub fn cores(c: Option<f64>) -> String {
    c.map(|c| format!("{c:.2} cores"))
        .unwrap_or_else(|| "n/a".into())
}

/// The rows and note every report ends with: the load generator's own CPU, its errors, the
/// machine.
pub fn finish(r: &mut Report, own_cores: Option<f64>, errors: &ErrorLog) {
    r.row("load generator CPU in window", cores(own_cores));
    r.row(
        "load-generator errors",
        format!("{}: {}", errors.total(), errors.summary()),
    );
    r.note(machine_note());
}

/// `nproc`, memory and kernel of this machine, for the notes under a table.
pub fn machine_note() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into());
    format!(
        "machine: {cpus} CPUs, {mem}, Linux {kernel}; load generator and control plane share it; \
         load average at the end (1/5/15 min): {load}"
    )
}

/// The started server's WARN/ERROR log lines, if it was started by us.
pub fn problems_row(report: &mut Report, problems: Option<LogProblems>) {
    if let Some(p) = problems {
        report.row("control-plane log WARN/ERROR", p.summary());
    }
}
