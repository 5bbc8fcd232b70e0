//! A session's clone in a project that has many other branches: `main` with 2,000 commits,
//! 1,000 session branches with a commit each, and one unrelated 200 MB branch. All through
//! the control plane's smart HTTP endpoint, interleaved round by round:
//!
//! - the agent's clone (gix, `kortix_agent::clone::clone_or_fetch`: the session branch and the
//!   default branch only);
//! - baseline: `git clone --single-branch -b <session>`;
//! - reference: `git clone -b <session>` (every branch, as the agent did before).
//!
//! Prints medians and the size of each `.git`.
//!
//! `cargo bench -p kortix-bench --bench session_branches`

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kortix_agent::clone::{CloneSpec, clone_or_fetch};
use kortix_bench::api::Api;
use kortix_tests::git::GitEnv;
use support::{median, ms, timed_git};

mod support;

const MAIN_COMMITS: u32 = 2_000;
const SESSION_BRANCHES: u32 = 1_000;
const BIG_BRANCH_BYTES: usize = 200 << 20;
const ROUNDS: usize = 3;

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Pseudo-random, incompressible bytes (xorshift), so the big branch stays big in a pack.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The project's history, written with one `git fast-import`.
fn source_repo(git: &GitEnv, dir: &Path) -> PathBuf {
    let source = dir.join("source.git");
    git.ok(
        dir,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            &source.to_string_lossy(),
        ],
    );
    let mut stream = Vec::new();
    let mut mark = 0u32;
    for i in 0..MAIN_COMMITS {
        mark += 1;
        let content = format!("line {i}\n{}\n", "x".repeat(64 + (i as usize % 50)));
        write!(
            stream,
            "commit refs/heads/main\nmark :{mark}\ncommitter A <a@example.com> {} +0000\n\
             data 9\nmain {:03}\nM 644 inline dir{}/file{}.txt\ndata {}\n{content}\n",
            1_700_000_000 + i,
            i % 1000,
            i % 20,
            i % 300,
            content.len()
        )
        .expect("writing to a Vec");
    }
    let tip = mark;
    for s in 0..SESSION_BRANCHES {
        let content = format!("work of session {s}\n");
        write!(
            stream,
            "commit refs/heads/sess-{s:04}\ncommitter A <a@example.com> {} +0000\n\
             data 8\nsession\nfrom :{tip}\nM 644 inline sessions/{s}.txt\ndata {}\n{content}\n",
            1_800_000_000 + s,
            content.len()
        )
        .expect("writing to a Vec");
    }
    let big = noise(BIG_BRANCH_BYTES);
    write!(
        stream,
        "commit refs/heads/assets\ncommitter A <a@example.com> 1900000000 +0000\n\
         data 7\nassets\nM 644 inline blob.bin\ndata {}\n",
        big.len()
    )
    .expect("writing to a Vec");
    stream.extend_from_slice(&big);
    stream.push(b'\n');
    git.ok_with_stdin(&source, &["fast-import", "--quiet"], &stream);
    git.ok(&source, &["gc", "-q"]);
    source
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let (server, token) = support::start_server(work.path()).await?;
    let git = GitEnv::new();
    let source = tokio::task::block_in_place(|| source_repo(&git, work.path()));
    let api = Api::connect(&server.public_url, &token).await?;
    api.import_project("many", &source.to_string_lossy())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let authority = server.public_url.trim_start_matches("http://");
    let endpoint_url = format!("http://x:{token}@{authority}/git/many.git");

    let (mut single, mut all, mut agent) = (Vec::new(), Vec::new(), Vec::new());
    let mut sizes = [0u64; 3];
    for round in 0..ROUNDS {
        let branch = format!("sess-{:04}", 137 + round * 311);
        let dest = |what: &str| work.path().join(format!("{what}-{round}"));
        tokio::task::block_in_place(|| {
            for (times, extra, name, slot) in [
                (&mut single, Some("--single-branch"), "single", 0),
                (&mut all, None, "all", 1),
            ] {
                let target = dest(name).to_string_lossy().into_owned();
                let mut args = vec!["clone", "-q", "-b", branch.as_str()];
                args.extend(extra);
                args.extend([endpoint_url.as_str(), target.as_str()]);
                times.push(timed_git(&git, work.path(), &args));
                sizes[slot] = dir_size(&dest(name).join(".git"));
                let _ = std::fs::remove_dir_all(dest(name));
            }
        });
        let workspace = dest("agent");
        let url = format!("{}/git/many.git", server.public_url);
        let token = token.clone();
        let (elapsed, size) = tokio::task::spawn_blocking(move || {
            let spec = CloneSpec {
                repo_url: &url,
                branch: &branch,
                default_branch: "main",
                workspace: &workspace,
                ca_pem: None,
                credentials: Arc::new(move |_, _, _| Ok(("x".to_string(), token.clone()))),
            };
            let started = Instant::now();
            clone_or_fetch(&spec).map_err(|e| anyhow::anyhow!("agent clone: {e}"))?;
            let elapsed = started.elapsed();
            let size = dir_size(&workspace.join(".git"));
            let _ = std::fs::remove_dir_all(&workspace);
            anyhow::Ok((elapsed, size))
        })
        .await??;
        agent.push(elapsed);
        sizes[2] = size;
    }
    let (single_m, all_m, agent_m) = (median(single), median(all), median(agent));
    println!(
        "main: {MAIN_COMMITS} commits; {SESSION_BRANCHES} session branches; one {} branch; \
         {ROUNDS} rounds, interleaved; medians",
        mib(BIG_BRANCH_BYTES as u64)
    );
    println!(
        "baseline git clone --single-branch:  {:>8}  .git {}",
        ms(single_m),
        mib(sizes[0])
    );
    println!(
        "git clone (every branch):           {:>8}  .git {}",
        ms(all_m),
        mib(sizes[1])
    );
    println!(
        "agent clone (gix, session + main):  {:>8}  .git {}",
        ms(agent_m),
        mib(sizes[2])
    );
    println!(
        "  agent ÷ single-branch git = {:.2}; every-branch ÷ agent = {:.1}",
        agent_m.as_secs_f64() / single_m.as_secs_f64(),
        all_m.as_secs_f64() / agent_m.as_secs_f64()
    );
    server.shutdown().await;
    Ok(())
}
