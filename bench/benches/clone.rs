//! Cloning a 10,000-commit repository from the control plane, all in one run, interleaved
//! round by round so drift on a shared machine hits every variant alike:
//!
//! - `git clone --bare --no-local` of the project's repository through the control plane's
//!   smart HTTP endpoint (token, `git http-backend`), against the baseline of the same clone
//!   from `file://` on disk;
//! - the agent's clone (gix, `kortix_agent::clone::clone_or_fetch`, with just-in-time
//!   credentials) of the default branch into a fresh workspace, against the baseline of
//!   `git clone -b main` through the same endpoint.
//!
//! `cargo bench -p kortix-bench --bench clone`

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kortix_agent::clone::{CloneSpec, clone_or_fetch};
use kortix_bench::api::Api;
use kortix_tests::git::GitEnv;
use support::{median, ms, timed_git};

mod support;

const COMMITS: u32 = 10_000;
const ROUNDS: usize = 5;

/// A bare repository with `COMMITS` commits on `main`, spread over 20 directories.
fn source_repo(git: &GitEnv, dir: &Path) -> std::path::PathBuf {
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
    for i in 0..COMMITS {
        let message = format!("commit {i}\n");
        let content = format!("line {i}\n{}\n", "x".repeat(64 + (i as usize % 50)));
        write!(
            stream,
            "commit refs/heads/main\ncommitter A <a@example.com> {} +0000\ndata {}\n{message}\
             M 644 inline dir{}/file{}.txt\ndata {}\n{content}\n",
            1_700_000_000 + i,
            message.len(),
            i % 20,
            i % 500,
            content.len()
        )
        .expect("writing to a Vec");
    }
    git.ok_with_stdin(&source, &["fast-import", "--quiet"], &stream);
    git.ok(&source, &["gc", "-q"]);
    source
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let (server, token) = support::start_server(work.path()).await?;
    let git = GitEnv::new();
    let source = source_repo(&git, work.path());
    let api = Api::connect(&server.public_url, &token).await?;
    let project = api
        .import_project("big", &source.to_string_lossy())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let on_disk =
        kortix_controlplane::git::Repos::in_data_dir(&server.data_dir)?.path(&project.id)?;
    let file_url = format!("file://{}", on_disk.display());
    let authority = server.public_url.trim_start_matches("http://");
    let endpoint_url = format!("http://x:{token}@{authority}/git/big.git");

    let (mut file, mut http, mut git_checkout, mut gix_checkout) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let dest = |what: &str| work.path().join(format!("{what}-{round}"));
        // git runs blocking next to the server on this runtime: off its worker threads.
        tokio::task::block_in_place(|| {
            let bare = ["clone", "-q", "--bare", "--no-local"];
            let checkout = ["clone", "-q", "-b", "main"];
            for (times, how, url, name) in [
                (&mut file, &bare, &file_url, "file"),
                (&mut http, &bare, &endpoint_url, "http"),
                (&mut git_checkout, &checkout, &endpoint_url, "git"),
            ] {
                let target = dest(name).to_string_lossy().into_owned();
                let args: Vec<&str> = how.iter().copied().chain([url.as_str(), &target]).collect();
                times.push(timed_git(&git, work.path(), &args));
            }
        });
        let workspace = dest("gix");
        let url = format!("{}/git/big.git", server.public_url);
        let token = token.clone();
        gix_checkout.push(
            tokio::task::spawn_blocking(move || {
                let spec = CloneSpec {
                    repo_url: &url,
                    branch: "main",
                    default_branch: "main",
                    workspace: &workspace,
                    ca_pem: None,
                    credentials: Arc::new(move |_, _, _| Ok(("x".to_string(), token.clone()))),
                };
                let started = Instant::now();
                clone_or_fetch(&spec).map_err(|e| anyhow::anyhow!("gix clone: {e}"))?;
                let elapsed = started.elapsed();
                anyhow::ensure!(
                    workspace.join("dir0/file0.txt").is_file(),
                    "nothing checked out"
                );
                Ok(elapsed)
            })
            .await??,
        );
    }
    let (file_m, http_m) = (median(file.clone()), median(http.clone()));
    let (git_m, gix_m) = (median(git_checkout.clone()), median(gix_checkout.clone()));
    println!("{COMMITS} commits, {ROUNDS} rounds, interleaved; medians");
    println!(
        "bare clone, baseline file://:          {} {file:?}",
        ms(file_m)
    );
    println!(
        "bare clone through the endpoint:       {} {http:?}",
        ms(http_m)
    );
    println!(
        "  endpoint ÷ file:// = {:.2}",
        http_m.as_secs_f64() / file_m.as_secs_f64()
    );
    println!(
        "checkout, baseline git clone -b main:  {} {git_checkout:?}",
        ms(git_m)
    );
    println!(
        "checkout, agent clone (gix):           {} {gix_checkout:?}",
        ms(gix_m)
    );
    println!(
        "  gix ÷ git = {:.2}",
        gix_m.as_secs_f64() / git_m.as_secs_f64()
    );
    server.shutdown().await;
    Ok(())
}
