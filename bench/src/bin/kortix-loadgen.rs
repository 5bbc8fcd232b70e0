//! `kortix-loadgen`: simulated agents and viewers against a real control plane; prints the
//! results as Markdown. Exit status: 0 when the run completed (goals met or not), 1 when it
//! could not run, 2 for bad arguments.

use clap::Parser;
use kortix_bench::cli::{Cli, Scenario};
use kortix_bench::scenarios;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let valid = match &cli.scenario {
        Scenario::Fleet(a) => a.validate(),
        Scenario::Records(a) => a.validate(),
        Scenario::Fanout(a) => a.validate(),
    };
    if let Err(e) = valid {
        eprintln!("kortix-loadgen: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kortix-loadgen: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let result = runtime.block_on(async move {
        match cli.scenario {
            Scenario::Fleet(a) => scenarios::fleet::run(a).await,
            Scenario::Records(a) => scenarios::records::run(a).await,
            Scenario::Fanout(a) => scenarios::fanout::run(a).await,
        }
    });
    // Agent tasks may still hold connections; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(report) => {
            println!("{}", report.to_markdown());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kortix-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
