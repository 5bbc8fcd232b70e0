//! The bench's tables (Markdown, for BENCHMARKS.md).

use std::time::Duration;

use crate::docker::BuildPair;
use crate::timing::{Run, ms, percentile};

#[derive(Default)]
pub struct Report {
    pub local: Vec<Run>,
    pub host: Vec<Run>,
    pub docker: Vec<Run>,
    pub container: Vec<Run>,
    pub builds: Vec<BuildPair>,
    pub concurrent: Vec<Duration>,
}

fn pick(runs: &[Run], f: fn(&Run) -> Duration) -> Vec<Duration> {
    runs.iter().map(f).collect()
}

fn row(what: &str, ours: &[Duration], theirs: &[Duration]) {
    let (k50, k99, b50, b99) = (
        percentile(ours, 0.5),
        percentile(ours, 0.99),
        percentile(theirs, 0.5),
        percentile(theirs, 0.99),
    );
    println!(
        "| {what} | {} | {} | {} | {} | {:.2}× | {} |",
        ms(k50),
        ms(k99),
        ms(b50),
        ms(b99),
        k50.as_secs_f64() / b50.as_secs_f64(),
        ms(k50.saturating_sub(b50)),
    );
}

fn header(ours: &str, theirs: &str) {
    println!(
        "| | {ours} p50 | {ours} p99 | {theirs} p50 | {theirs} p99 | ratio at p50 | overhead at p50 |"
    );
    println!("|---|---|---|---|---|---|---|");
}

impl Report {
    pub fn print(&self, runs: usize) {
        if !self.local.is_empty() {
            self.print_runs(runs);
        }
        if !self.builds.is_empty() {
            self.print_builds();
        }
        if !self.concurrent.is_empty() {
            println!(
                "\n{} docker sessions started at once on the warm snapshot, all running: StartSession → `running` p50 {}, p99 {}, max {}",
                self.concurrent.len(),
                ms(percentile(&self.concurrent, 0.5)),
                ms(percentile(&self.concurrent, 0.99)),
                ms(percentile(&self.concurrent, 1.0)),
            );
        }
    }

    fn print_runs(&self, runs: usize) {
        println!("\n{runs} runs each, interleaved\n");
        header("Kortix", "`opencode serve` (host)");
        let ready =
            "start → ready (Kortix: `running`; OpenCode: healthy, session, prompt accepted)";
        let commit = "start → first commit pushed";
        row(
            &format!("local provider: {ready}"),
            &pick(&self.local, |r| r.ready),
            &pick(&self.host, |r| r.ready),
        );
        row(
            &format!("local provider: {commit}"),
            &pick(&self.local, |r| r.commit),
            &pick(&self.host, |r| r.commit),
        );
        if !self.docker.is_empty() {
            row(
                &format!("docker provider: {ready}"),
                &pick(&self.docker, |r| r.ready),
                &pick(&self.host, |r| r.ready),
            );
            row(
                &format!("docker provider: {commit}"),
                &pick(&self.docker, |r| r.commit),
                &pick(&self.host, |r| r.commit),
            );
            println!();
            header("Kortix docker", "`podman run` of the snapshot");
            row(
                "start → `running` vs OpenCode's health answer",
                &pick(&self.docker, |r| r.ready),
                &pick(&self.container, |r| r.healthy.unwrap_or_default()),
            );
            row(
                "start → ready (OpenCode: healthy, session, prompt accepted)",
                &pick(&self.docker, |r| r.ready),
                &pick(&self.container, |r| r.ready),
            );
            row(
                commit,
                &pick(&self.docker, |r| r.commit),
                &pick(&self.container, |r| r.commit),
            );
        }
        let mut rss: Vec<u64> = self.host.iter().filter_map(|r| r.rss_kib).collect();
        rss.sort_unstable();
        if let Some(mid) = rss.get(rss.len() / 2) {
            println!(
                "\n`opencode serve` resident memory after the commit: {} MiB (median)",
                mid / 1024
            );
        }
    }

    fn print_builds(&self) {
        let builds = &self.builds;
        println!(
            "\n{} cold snapshot builds each, interleaved (the order alternating)\n",
            builds.len()
        );
        header("`kortix snapshots build`", "`podman build`");
        row(
            "cold build of the composed recipe",
            &builds.iter().map(|b| b.kortix).collect::<Vec<_>>(),
            &builds.iter().map(|b| b.podman).collect::<Vec<_>>(),
        );
        // Each round's two builds ran back to back, so their ratio shares the machine's
        // state of the moment; its median is steadier than the ratio of the two medians.
        let mut ratios: Vec<f64> = builds
            .iter()
            .map(|b| b.kortix.as_secs_f64() / b.podman.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        let mid = ratios[ratios.len() / 2];
        let mid = if ratios.len().is_multiple_of(2) {
            (ratios[ratios.len() / 2 - 1] + mid) / 2.0
        } else {
            mid
        };
        println!(
            "\nmedian of the rounds' ratios: {mid:.2}× (rounds {:.2}×–{:.2}×); Kortix's own time around the engine's build, p50: {} from the request to the first step, {} from the last output line to the active snapshot",
            ratios[0],
            ratios[ratios.len() - 1],
            ms(percentile(
                &builds.iter().map(|b| b.kortix_before).collect::<Vec<_>>(),
                0.5
            )),
            ms(percentile(
                &builds.iter().map(|b| b.kortix_after).collect::<Vec<_>>(),
                0.5
            )),
        );
    }
}
