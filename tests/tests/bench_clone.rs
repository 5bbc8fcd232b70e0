//! Benchmark (ignored by default): the agent's clone (gix, `kortix_agent::clone`) against
//! `git clone` of the same 10,000-commit repository through the same control-plane git
//! endpoint, in the same run. Both check out the session branch into a fresh workspace.
//!
//! `cargo test --release -p kortix-tests --test bench_clone -- --ignored --nocapture`

mod support;

use kortix_agent::clone::{CloneSpec, clone_or_fetch};
use kortix_proto::v1::CreateProjectRequest;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{TestServer, git_ok};

const COMMITS: u32 = 10_000;
const ROUNDS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
async fn agent_clone_gix_vs_git_through_the_endpoint() {
    let ts = TestServer::start().await;
    let token = ts.account("bench").await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source.git");
    git_ok(
        work.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            source.to_str().unwrap(),
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
        .unwrap();
    }
    let mut child = std::process::Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&source)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&stream).unwrap();
    assert!(child.wait().unwrap().success());
    git_ok(&source, &["gc", "-q"]);
    ts.projects(&token)
        .create_project(CreateProjectRequest {
            name: "big".into(),
            import_source: source.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let url = format!("{}/git/big.git", ts.url());
    let url_with_token = ts.git_url("big", &token);

    let mut git_times = Vec::new();
    let mut gix_times = Vec::new();
    // Interleaved so drift on a shared machine hits both alike.
    for round in 0..ROUNDS {
        let dest = work.path().join(format!("git-{round}"));
        let started = Instant::now();
        git_ok(
            work.path(),
            &[
                "clone",
                "-q",
                "-b",
                "main",
                &url_with_token,
                dest.to_str().unwrap(),
            ],
        );
        git_times.push(started.elapsed());

        let dest = work.path().join(format!("gix-{round}"));
        let token = token.clone();
        let url = url.clone();
        let elapsed = tokio::task::spawn_blocking(move || {
            let spec = CloneSpec {
                repo_url: &url,
                branch: "main",
                default_branch: "main",
                workspace: &dest,
                ca_pem: None,
                credentials: Arc::new(move |_, _, _| Ok(("x".to_string(), token.clone()))),
            };
            let started = Instant::now();
            clone_or_fetch(&spec).expect("gix clone");
            let elapsed = started.elapsed();
            assert!(dest.join("dir0/file0.txt").is_file());
            elapsed
        })
        .await
        .unwrap();
        gix_times.push(elapsed);
    }
    let (git, gix) = (median(git_times.clone()), median(gix_times.clone()));
    println!("{COMMITS} commits, {ROUNDS} rounds each, interleaved");
    println!(
        "git clone (baseline): {git_times:?} median {:.1} ms",
        git.as_secs_f64() * 1e3
    );
    println!(
        "agent clone (gix):    {gix_times:?} median {:.1} ms",
        gix.as_secs_f64() * 1e3
    );
    println!(
        "ratio gix / git: {:.2}x",
        gix.as_secs_f64() / git.as_secs_f64()
    );
    ts.stop().await;
}
