//! The three benchmarks. Each starts (or finds) the control plane, measures, and returns a
//! Markdown report; errors of individual agents are counted in it, never fatal.

pub mod fanout;
pub mod fleet;
pub mod records;

use crate::report::Report;
use crate::target::LogProblems;

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
