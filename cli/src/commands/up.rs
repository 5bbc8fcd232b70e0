//! `kortix up`: the quickstart. Installs the pinned OpenCode under the data directory when it
//! is missing, then runs `kortix server` on the embedded defaults and says what to do next.

use super::server::{ServerArgs, runtime, serve};
use crate::Global;
use crate::logging;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// The OpenCode release sessions run; tests pin the same one.
pub const OPENCODE_VERSION: &str = "1.18.33";

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Use this opencode binary instead of installing the pinned one.
    #[arg(long, env = "KORTIX_OPENCODE_BIN")]
    pub opencode_bin: Option<PathBuf>,
}

pub fn run(global: &Global, args: UpArgs) -> Result<ExitCode> {
    logging::init(args.server.log_format);
    let mut config = args.server.config(global);
    let opencode = match args.opencode_bin {
        Some(bin) => bin,
        None => ensure_opencode(&config.data_dir)?,
    };
    let agent_bin = config
        .agent_bin
        .clone()
        .unwrap_or_else(kortix_controlplane::config::locate_agent_bin);
    if agent_bin.components().count() == 1 && which(&agent_bin).is_none() {
        bail!(
            "kortix-agent not found beside kortix or on PATH: build it with `cargo build --release --bins` \
             (or pass --agent-bin)"
        );
    }
    config.agent_bin = Some(agent_bin);
    if config.images.opencode_bin.is_none() {
        config.images.opencode_bin = Some(opencode.clone());
    }
    config
        .agent_env
        .push(("KORTIX_OPENCODE_BIN".into(), opencode.display().to_string()));
    let data_dir = config.data_dir.clone();
    runtime()?.block_on(serve(config, |server| {
        print_next_steps(server, &data_dir, &opencode)
    }))
}

/// `<data-dir>/opencode/node_modules/.bin/opencode`, installed with npm when missing.
pub fn ensure_opencode(data_dir: &Path) -> Result<PathBuf> {
    let prefix = data_dir.join("opencode");
    let bin = prefix.join("node_modules/.bin/opencode");
    let stamp = prefix.join(format!(".installed-{OPENCODE_VERSION}"));
    if bin.exists() && stamp.exists() {
        return Ok(bin);
    }
    if which(Path::new("npm")).is_none() {
        bail!("npm not found on PATH: install Node.js (20 or later) and run kortix up again");
    }
    std::fs::create_dir_all(&prefix).with_context(|| format!("creating {}", prefix.display()))?;
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!(
        "installing opencode-ai@{OPENCODE_VERSION} into {}",
        prefix.display()
    ));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let output = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&prefix)
        .arg(format!("opencode-ai@{OPENCODE_VERSION}"))
        .stdin(Stdio::null())
        .output()
        .context("running npm install")?;
    spinner.finish_and_clear();
    if !output.status.success() {
        bail!(
            "npm install opencode-ai@{OPENCODE_VERSION} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    if !bin.exists() {
        bail!("npm installed opencode-ai but {} is missing", bin.display());
    }
    std::fs::write(&stamp, b"").with_context(|| format!("writing {}", stamp.display()))?;
    eprintln!("installed opencode {OPENCODE_VERSION} at {}", bin.display());
    Ok(bin)
}

fn which(name: &Path) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn print_next_steps(
    server: &kortix_controlplane::server::RunningServer,
    data_dir: &Path,
    opencode: &Path,
) {
    let url = &server.public_url;
    let default_url = url == "http://127.0.0.1:8008";
    let url_flag = if default_url {
        String::new()
    } else {
        format!(" --url {url}")
    };
    let data_flag = if data_dir == kortix_controlplane::config::default_data_dir() {
        String::new()
    } else {
        format!(" --data-dir {}", data_dir.display())
    };
    println!(
        "\nKortix control plane is up at {url} (agents: {}).\n\
         Data dir: {}   OpenCode: {}\n\n\
         Next, in another terminal:\n\
         \x20 kortix{url_flag}{data_flag} projects create my-app --import /path/to/your/repo\n\
         \x20 kortix{url_flag}{data_flag} secrets set ANTHROPIC_API_KEY --project my-app\n\
         \x20 kortix{url_flag}{data_flag} sessions new --project my-app --prompt \"Add a README\" --wait\n\
         \x20 kortix{url_flag}{data_flag} sessions attach <session-id>\n\
         \x20 kortix{url_flag}{data_flag} cr open --project my-app --session <session-id>\n\
         \x20 kortix{url_flag}{data_flag} cr merge 1 --project my-app\n\n\
         Ctrl-C stops the control plane (sessions are stopped; branches stay).",
        server.agent_addr,
        data_dir.display(),
        opencode.display(),
    );
}
