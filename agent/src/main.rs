//! `kortix-agent`: the session daemon, `kortix-agent git-credential get|store|erase`, or
//! `kortix-agent mcp` (the connectors' MCP server OpenCode launches). With
//! `KORTIX_AGENT_HOLD=1` the daemon holds instead of running a session (`hold`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use kortix_agent::{Config, ExitReason, assignment, connectors, credentials, diag, process};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("git-credential") => {
            let code = credentials::helper::run(
                &args[2..],
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            );
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Some("mcp") => {
            let code = connectors::mcp::run(
                &args[2..],
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
            );
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Some("--version" | "version") => {
            println!("kortix-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!(
                "usage: kortix-agent [git-credential get|store|erase | mcp [--socket PATH]]   (unknown argument {other:?})"
            );
            return ExitCode::from(2);
        }
        None => {}
    }
    let hold = match kortix_agent::hold::requested(|k| std::env::var(k).ok()) {
        Ok(hold) => hold,
        Err(e) => {
            diag::error(&e.to_string());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            diag::error(&format!("starting the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let reap_orphans = match process::become_reaper() {
        Ok(pid1) => {
            if pid1 {
                diag::info("running as PID 1; reaping orphans");
            }
            true
        }
        Err(e) => {
            diag::warn(&format!(
                "cannot become child subreaper ({e}); orphans go to init"
            ));
            false
        }
    };
    if hold {
        return match runtime.block_on(kortix_agent::hold::run(reap_orphans)) {
            Ok(()) => {
                diag::info("exiting (hold ended by a signal)");
                ExitCode::SUCCESS
            }
            Err(e) => {
                diag::error(&format!("holding: {e}"));
                ExitCode::FAILURE
            }
        };
    }
    let assigned = match std::env::var_os(assignment::ENV).filter(|p| !p.is_empty()) {
        None => BTreeMap::new(),
        Some(path) => {
            diag::info("booted ahead of a session; waiting for the assignment");
            match runtime.block_on(assignment::wait(std::path::Path::new(&path))) {
                Ok(Some(vars)) => vars,
                Ok(None) => {
                    diag::info("stopped before any session was assigned");
                    return ExitCode::SUCCESS;
                }
                Err(e) => {
                    diag::error(&e.to_string());
                    return ExitCode::from(2);
                }
            }
        }
    };
    let mut config =
        match Config::from_lookup(|k| assigned.get(k).cloned().or_else(|| std::env::var(k).ok())) {
            Ok(c) => c,
            Err(e) => {
                diag::error(&e.to_string());
                return ExitCode::from(2);
            }
        };
    config.reap_orphans = reap_orphans;
    let outcome = runtime.block_on(kortix_agent::run(config));
    // Blocking tasks (a clone stuck on the network) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(ExitReason::Failed(reason)) => {
            diag::error(&format!("session failed: {reason}"));
            ExitCode::FAILURE
        }
        Ok(reason) => {
            diag::info(&format!("exiting ({reason:?})"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            diag::error(&e.to_string());
            ExitCode::FAILURE
        }
    }
}
