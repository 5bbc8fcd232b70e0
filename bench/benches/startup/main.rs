//! A session's start against OpenCode's own, with the scripted model, interleaved run by run:
//!
//! - Kortix: `StartSession` (with the prompt) → the session is `running` (WatchSession), and
//!   → the agent's first commit is on the session branch in the control plane's repository.
//!   The local provider with its default isolation, the real agent and the pinned OpenCode;
//!   each session is stopped (and its end awaited) before the next run.
//! - Baseline: `opencode serve` spawned in a fresh checkout of the same repository → its
//!   health endpoint answers → session created and the same prompt sent → the same commit
//!   pushed to a bare repository. A warm HOME shared by the baseline's runs (OpenCode's
//!   packages already installed there), the same config given as `OPENCODE_CONFIG`.
//!
//! Both sides see the push the same way: the branch's ref file read every 5 ms. The model
//! answers with one bash call (write a file, commit, push) and a closing text.
//!
//! `cargo build --release --workspace --bins && cargo bench --workspace --bench startup`
//! (`KORTIX_BENCH_RUNS`, default 20, runs of each after one warm-up run of each).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use http::Method;
use kortix_agent::opencode::http::Client;
use kortix_controlplane::config::ServerConfig;
use kortix_proto::v1::session_service_client::SessionServiceClient;
use kortix_proto::v1::{
    SessionStatus, StartSessionRequest, StopSessionRequest, WatchSessionRequest,
};
use kortix_tests::git::GitEnv;
use kortix_tests::{OpencodeHome, ScriptedModel, Turn, opencode_bin, opencode_config};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const DEFAULT_RUNS: usize = 20;
const REF_POLL: Duration = Duration::from_millis(5);
const RUN_DEADLINE: Duration = Duration::from_secs(180);

type Sessions = SessionServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// What one run measured, from its start.
struct Run {
    /// Kortix: `running`. Baseline: healthy, session created, prompt accepted.
    ready: Duration,
    /// The commit is on the remote branch.
    commit: Duration,
    /// Baseline: OpenCode's resident memory once the commit is in (what an idle, booted
    /// sandbox of a warm pool would hold at least), in KiB.
    rss_kib: Option<u64>,
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench())
}

async fn bench() -> Result<()> {
    let runs = std::env::var("KORTIX_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RUNS);
    let work = tempfile::tempdir()?;
    let model = ScriptedModel::start(Vec::new()).map_err(|e| anyhow!("{e}"))?;
    let opencode = opencode_bin().map_err(|e| anyhow!("{e}"))?;
    let git = GitEnv::new();
    let source = source_repo(&git, work.path(), model.port())?;

    let mut config = ServerConfig::new(work.path().join("data"));
    config.listen = "127.0.0.1:0".parse()?;
    config.agent_listen = "127.0.0.1:0".parse()?;
    config
        .agent_env
        .push(("KORTIX_OPENCODE_BIN".into(), opencode.display().to_string()));
    let server = kortix_controlplane::server::start(config).await?;
    let token = std::fs::read_to_string(server.admin_token_path())?
        .trim()
        .to_string();
    let api = kortix_bench::api::Api::connect(&server.public_url, &token)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let project = api
        .import_project("app", &source.to_string_lossy())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let repo = kortix_controlplane::git::Repos::in_data_dir(&server.data_dir)?.path(&project.id)?;
    let sessions = sessions_client(&server.public_url, &token).await?;

    let origin = work.path().join("origin.git");
    git.ok(
        work.path(),
        &[
            "clone",
            "-q",
            "--bare",
            &source.to_string_lossy(),
            &origin.to_string_lossy(),
        ],
    );
    let baseline_home =
        OpencodeHome::new(&work.path().join("baseline")).map_err(|e| anyhow!("{e}"))?;
    let baseline = Baseline {
        git: &git,
        opencode: &opencode,
        origin: &origin,
        home: &baseline_home,
        work: work.path(),
    };

    let mut kortix = Vec::new();
    let mut bare = Vec::new();
    for round in 0..=runs {
        let k = kortix_run(&sessions, &model, &repo, round).await?;
        let b = baseline.run(&model, round).await?;
        eprintln!(
            "round {round}{}: kortix running {} commit {}; opencode ready {} commit {}",
            if round == 0 { " (warm-up)" } else { "" },
            ms(k.ready),
            ms(k.commit),
            ms(b.ready),
            ms(b.commit)
        );
        if round > 0 {
            kortix.push(k);
            bare.push(b);
        }
    }
    report(&kortix, &bare, runs);
    server.shutdown().await;
    Ok(())
}

/// A repository with a manifest and an OpenCode config pointing at the scripted model.
fn source_repo(git: &GitEnv, dir: &Path, model_port: u16) -> Result<PathBuf> {
    let source = dir.join("source");
    std::fs::create_dir_all(&source)?;
    git.ok(&source, &["init", "-q", "-b", "main"]);
    std::fs::write(
        source.join("kortix.toml"),
        kortix_controlplane::projects::initial_manifest("app"),
    )?;
    opencode_config(&source.join(".kortix/opencode"), model_port).map_err(|e| anyhow!("{e}"))?;
    git.ok(&source, &["add", "."]);
    git.ok(
        &source,
        &[
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.com",
            "commit",
            "-qm",
            "Configure OpenCode",
        ],
    );
    Ok(source)
}

async fn sessions_client(url: &str, token: &str) -> Result<Sessions> {
    let channel = Channel::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect()
        .await?;
    let bearer = Bearer(format!("Bearer {token}").parse()?);
    Ok(SessionServiceClient::with_interceptor(channel, bearer))
}

/// The model's answer to every run's prompt: commit and push one file, then a closing text.
fn script(model: &ScriptedModel, file: &str, push: &str) -> u64 {
    let calls = model.calls();
    model.push([
        Turn::bash(format!(
            "echo {file} > {file} && git add {file} && git commit -q -m 'Add {file}' && git push -q origin {push}"
        )),
        Turn::text("Done."),
    ]);
    calls + 2
}

async fn kortix_run(
    sessions: &Sessions,
    model: &ScriptedModel,
    repo: &Path,
    round: usize,
) -> Result<Run> {
    let file = format!("kortix-{round}.txt");
    let calls = script(model, &file, "HEAD");
    let main = read_ref(repo, "main").context("the project's main branch")?;
    let mut client = sessions.clone();
    let started = Instant::now();
    let session = client
        .start_session(StartSessionRequest {
            project: "app".into(),
            prompt: format!("Create {file} and commit it."),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut watch = client
        .watch_session(WatchSessionRequest {
            id: session.id.clone(),
        })
        .await?
        .into_inner();
    let ready = tokio::time::timeout(RUN_DEADLINE, async {
        while let Some(s) = watch.next().await {
            let s = s?;
            if s.status == SessionStatus::Running as i32 {
                return Ok(started.elapsed());
            }
            if s.status == SessionStatus::Failed as i32 {
                bail!("session {} failed: {}", s.id, s.failure_reason);
            }
        }
        bail!("the session's watch ended before it was running")
    })
    .await
    .context("waiting for running")??;
    let commit = ref_moves(repo, &session.id, Some(&main), started).await?;
    wait_calls(model, calls).await?;
    client
        .stop_session(StopSessionRequest {
            id: session.id.clone(),
        })
        .await?;
    tokio::time::timeout(RUN_DEADLINE, async {
        while let Some(s) = watch.next().await {
            let status = s?.status;
            if [
                SessionStatus::Stopped,
                SessionStatus::Failed,
                SessionStatus::Hibernated,
            ]
            .iter()
            .any(|e| *e as i32 == status)
            {
                return Ok(());
            }
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .context("waiting for the session's end")??;
    Ok(Run {
        ready,
        commit,
        rss_kib: None,
    })
}

struct Baseline<'a> {
    git: &'a GitEnv,
    opencode: &'a Path,
    origin: &'a Path,
    home: &'a OpencodeHome,
    work: &'a Path,
}

impl Baseline<'_> {
    async fn run(&self, model: &ScriptedModel, round: usize) -> Result<Run> {
        let checkout = self.work.join(format!("checkout-{round}"));
        self.git.ok(
            self.work,
            &[
                "clone",
                "-q",
                &self.origin.to_string_lossy(),
                &checkout.to_string_lossy(),
            ],
        );
        for (k, v) in [("user.name", "Bench"), ("user.email", "bench@example.com")] {
            self.git.ok(&checkout, &["config", k, v]);
        }
        let file = format!("opencode-{round}.txt");
        let branch = format!("bare-{round}");
        let calls = script(model, &file, &format!("HEAD:refs/heads/{branch}"));
        let port = free_port()?;
        let config = checkout.join(".kortix/opencode/opencode.json");
        let started = Instant::now();
        let mut child = Command::new(self.opencode)
            .args([
                "serve",
                "--hostname",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .current_dir(&checkout)
            .env_clear()
            .envs(self.home.env())
            .env("OPENCODE_CONFIG", &config)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawning {}", self.opencode.display()))?;
        let result = self.drive(port, &file, &branch, started).await;
        let waited = wait_calls(model, calls).await;
        let rss_kib = rss_kib(child.id());
        stop(&mut child);
        let mut run = result?;
        run.rss_kib = rss_kib;
        waited?;
        let _ = std::fs::remove_dir_all(&checkout);
        Ok(run)
    }

    async fn drive(&self, port: u16, file: &str, branch: &str, started: Instant) -> Result<Run> {
        let client = Client::new(port);
        let deadline = Instant::now() + RUN_DEADLINE;
        loop {
            let healthy = client
                .call(
                    Method::GET,
                    "/global/health",
                    None,
                    Duration::from_millis(500),
                )
                .await
                .is_ok_and(|b| String::from_utf8_lossy(&b).contains("\"healthy\":true"));
            if healthy {
                break;
            }
            if Instant::now() > deadline {
                bail!("opencode serve was not healthy within {RUN_DEADLINE:?}");
            }
            tokio::time::sleep(REF_POLL).await;
        }
        let timeout = Duration::from_secs(30);
        let body = client
            .call(
                Method::POST,
                "/session",
                Some(&serde_json::json!({})),
                timeout,
            )
            .await?;
        let id = serde_json::from_slice::<serde_json::Value>(&body)?["id"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id from opencode"))?
            .to_string();
        let prompt = serde_json::json!({
            "parts": [{ "type": "text", "text": format!("Create {file} and commit it.") }]
        });
        client
            .call(
                Method::POST,
                &format!("/session/{id}/prompt_async"),
                Some(&prompt),
                timeout,
            )
            .await?;
        let ready = started.elapsed();
        let commit = ref_moves(self.origin, branch, None, started).await?;
        Ok(Run {
            ready,
            commit,
            rss_kib: None,
        })
    }
}

use std::os::unix::process::CommandExt as _;

/// SIGTERM to the process group, then SIGKILL after 5 s.
fn stop(child: &mut Child) {
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Until the model answered `calls` conversation requests (the run's closing text), so no
/// turn of this run is left for the next.
async fn wait_calls(model: &ScriptedModel, calls: u64) -> Result<()> {
    let deadline = Instant::now() + RUN_DEADLINE;
    while model.calls() < calls {
        if Instant::now() > deadline {
            bail!(
                "the model was asked {} times, expected {calls}",
                model.calls()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// When `branch` of the bare repository `repo` exists and differs from `from`, measured from
/// `started`.
async fn ref_moves(
    repo: &Path,
    branch: &str,
    from: Option<&str>,
    started: Instant,
) -> Result<Duration> {
    let deadline = Instant::now() + RUN_DEADLINE;
    loop {
        if let Some(sha) = read_ref(repo, branch)
            && Some(sha.as_str()) != from
        {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!("{branch} never moved in {}", repo.display());
        }
        tokio::time::sleep(REF_POLL).await;
    }
}

/// A branch's commit from the loose ref, else `packed-refs`.
fn read_ref(repo: &Path, branch: &str) -> Option<String> {
    let name = format!("refs/heads/{branch}");
    if let Ok(sha) = std::fs::read_to_string(repo.join(&name)) {
        let sha = sha.trim();
        if sha.len() >= 40 {
            return Some(sha.to_string());
        }
    }
    std::fs::read_to_string(repo.join("packed-refs"))
        .ok()?
        .lines()
        .find_map(|line| {
            let (sha, r) = line.split_once(' ')?;
            (r == name).then(|| sha.to_string())
        })
}

fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    // Nearest rank.
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn report(kortix: &[Run], bare: &[Run], runs: usize) {
    let pick = |runs: &[Run], f: fn(&Run) -> Duration| runs.iter().map(f).collect::<Vec<_>>();
    let rows = [
        (
            "start → ready (Kortix: `running`; OpenCode: healthy, session, prompt accepted)",
            pick(kortix, |r| r.ready),
            pick(bare, |r| r.ready),
        ),
        (
            "start → first commit pushed",
            pick(kortix, |r| r.commit),
            pick(bare, |r| r.commit),
        ),
    ];
    println!("\n{runs} runs each, interleaved\n");
    println!(
        "| | Kortix p50 | Kortix p99 | `opencode serve` p50 | `opencode serve` p99 | ratio at p50 | overhead at p50 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (what, k, b) in rows {
        let (k50, k99, b50, b99) = (
            percentile(&k, 0.5),
            percentile(&k, 0.99),
            percentile(&b, 0.5),
            percentile(&b, 0.99),
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
    let mut rss: Vec<u64> = bare.iter().filter_map(|r| r.rss_kib).collect();
    rss.sort_unstable();
    if let Some(mid) = rss.get(rss.len() / 2) {
        println!(
            "\n`opencode serve` resident memory after the commit: {} MiB (median)",
            mid / 1024
        );
    }
}
