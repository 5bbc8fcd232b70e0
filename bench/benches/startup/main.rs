//! A session's start against OpenCode's own, with the scripted model, interleaved run by run,
//! on the local provider and (where Podman runs) the docker provider:
//!
//! - Kortix: `StartSession` (with the prompt) → the session is `running` (WatchSession), and
//!   → the agent's first commit is on the session branch in the control plane's repository.
//!   The real agent and the pinned OpenCode; each session is stopped (and its end awaited)
//!   before the next run. Local: the local provider with its default isolation. Docker: one
//!   container per session from the project's warm snapshot, taken from the warm pool.
//! - Host baseline: `opencode serve` spawned in a fresh checkout of the same repository → its
//!   health endpoint answers → session created and the same prompt sent → the same commit
//!   pushed to a bare repository. A warm HOME shared by the baseline's runs (OpenCode's
//!   packages already installed there), the same config given as `OPENCODE_CONFIG`.
//! - Container baseline (docker): `podman run` of the session's own snapshot image with
//!   `opencode serve` as its entrypoint, the checkout, the bare repository and the warm HOME
//!   mounted, the template's CPU and memory → health → the same prompt → the same push.
//! - Docker only, before the runs: cold snapshot builds (`BuildSnapshot` after a change of
//!   the template's context) against `podman build` of the same composed recipe, the order
//!   alternating round by round and every image kept until the last round; after the
//!   runs: `KORTIX_BENCH_CONCURRENT` (default 20) sessions started at once on the warm
//!   snapshot.
//!
//! Every side sees the push the same way: the branch's ref file read every 5 ms. The model
//! answers with one bash call (write a file, commit, push) and a closing text. The model
//! listens on the container bridge's gateway when docker runs (containers reach it there, as
//! they would a model API on the internet; host processes reach it too).
//!
//! `cargo build --release --workspace --bins && cargo bench --workspace --bench startup`
//! (`KORTIX_BENCH_RUNS`, default 20 runs of each after one warm-up run of each;
//! `KORTIX_BENCH_RUNS=0` for the cold builds alone;
//! `KORTIX_BENCH_BUILDS`, default 12 cold builds of each after one warm-up build of each
//! that also builds the runtime image; `KORTIX_BENCH_DOCKER=0` for the
//! local provider only; `KORTIX_BENCH_WARM_POOL`, default 1: the docker control plane's
//! `--warm-pool`, each docker run starting once the pool's container is up, 0 for a
//! container created per session).

mod docker;
mod host;
mod kortix;
mod opencode_drive;
mod report;
mod timing;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use kortix_controlplane::config::{
    DockerSettings, ImageSettings, SandboxKind, ServerConfig, locate_agent_bin,
};
use kortix_controlplane::sandbox::docker::DockerEngine;
use kortix_controlplane::server::RunningServer;
use kortix_tests::git::GitEnv;
use kortix_tests::podman::{Podman, TEST_BASE_IMAGE, podman};
use kortix_tests::{OpencodeHome, ScriptedModel, opencode_bin, opencode_config};

use docker::{ContainerBaseline, DockerSide};
use host::HostBaseline;
use kortix::Target;
use report::Report;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench())
}

/// Podman, unless turned off or missing (then only the local provider is measured).
fn container_engine() -> Option<&'static Podman> {
    if std::env::var("KORTIX_BENCH_DOCKER").is_ok_and(|v| v == "0") {
        return None;
    }
    match podman() {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("docker provider not measured: {e}");
            None
        }
    }
}

/// An idle, unlabelled container on the default bridge for as long as the bench runs.
struct BridgeKeeper(&'static Podman);

const BRIDGE_KEEPER: &str = "kortix-bench-bridge";

impl BridgeKeeper {
    fn start(engine: &'static Podman) -> Result<Self> {
        let _ = engine.cli(&["rm", "-f", BRIDGE_KEEPER]);
        engine
            .cli(&[
                "run",
                "-d",
                "--name",
                BRIDGE_KEEPER,
                "--entrypoint",
                "sleep",
                TEST_BASE_IMAGE,
                "infinity",
            ])
            .map_err(|e| anyhow!("{e}"))?;
        Ok(BridgeKeeper(engine))
    }
}

impl Drop for BridgeKeeper {
    fn drop(&mut self) {
        let _ = self.0.cli(&["rm", "-f", "-t", "0", BRIDGE_KEEPER]);
    }
}

struct Server {
    server: RunningServer,
    target: Target,
    project_id: String,
}

async fn start_server(
    data: &Path,
    source: &Path,
    adjust: impl FnOnce(&mut ServerConfig),
) -> Result<Server> {
    let mut config = ServerConfig::new(data.to_path_buf());
    config.listen = "127.0.0.1:0".parse()?;
    config.agent_listen = "127.0.0.1:0".parse()?;
    adjust(&mut config);
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
    let target = Target::connect(&server.public_url, &token, repo).await?;
    Ok(Server {
        server,
        target,
        project_id: project.id,
    })
}

async fn bench() -> Result<()> {
    let runs = env_usize("KORTIX_BENCH_RUNS", 20);
    let builds = env_usize("KORTIX_BENCH_BUILDS", 12);
    let concurrent = env_usize("KORTIX_BENCH_CONCURRENT", 20);
    let warm_pool = env_usize("KORTIX_BENCH_WARM_POOL", 1);
    let work = tempfile::tempdir()?;
    let opencode = opencode_bin().map_err(|e| anyhow!("{e}"))?;
    let engine = container_engine();
    let model_ip = match engine {
        Some(e) => {
            DockerEngine::connect(Some(&e.docker_host))
                .await?
                .gateway(None)
                .await?
        }
        None => Ipv4Addr::LOCALHOST,
    };
    // The engine removes its bridge (and the gateway address the model listens on) when no
    // container is left; one idle container keeps it up between the sessions' containers.
    let _bridge = match engine {
        Some(e) => Some(BridgeKeeper::start(e)?),
        None => None,
    };
    let model = ScriptedModel::start_on(model_ip, Vec::new()).map_err(|e| anyhow!("{e}"))?;
    let git = GitEnv::new();
    let source = source_repo(&git, work.path(), &model)?;

    let local = start_server(&work.path().join("local"), &source, |c| {
        c.agent_env
            .push(("KORTIX_OPENCODE_BIN".into(), opencode.display().to_string()));
    })
    .await?;
    let packages_root = kortix_tests::opencode_packages_dir();
    let docker = match engine {
        Some(e) => {
            let (host, bin, packages) = (
                e.docker_host.clone(),
                opencode.clone(),
                packages_root.clone(),
            );
            Some(
                start_server(&work.path().join("docker"), &source, move |c| {
                    c.sandbox = SandboxKind::Docker;
                    c.opencode_packages = Some(packages);
                    c.docker = DockerSettings {
                        host: Some(host),
                        network: None,
                        warm_pool,
                    };
                    c.images = ImageSettings {
                        base_image: Some(TEST_BASE_IMAGE.into()),
                        opencode_bin: Some(bin),
                    };
                })
                .await?,
            )
        }
        None => None,
    };

    let mut report = Report::default();
    let agent_bin = locate_agent_bin();
    if let (Some(engine), Some(d)) = (engine, &docker) {
        let side = DockerSide {
            engine,
            git: &git,
            source: &source,
            repo: &d.target.repo,
            data_dir: &d.server.data_dir,
            project_id: &d.project_id,
            agent_bin: &agent_bin,
            opencode: &opencode,
            packages_root: &packages_root,
            work: work.path(),
        };
        report.builds = side.cold_builds(&d.target, builds).await?;
    }

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
    let home_dir = work.path().join("baseline");
    let home = OpencodeHome::new(&home_dir).map_err(|e| anyhow!("{e}"))?;
    let host = HostBaseline {
        git: &git,
        opencode: &opencode,
        origin: &origin,
        home: &home,
        work: work.path(),
    };
    let container_home = home_dir.join("home");
    let mut container: Option<ContainerBaseline> = None;

    for round in 0..=runs {
        let warm_up = round == 0;
        let k = local.target.run(&model, "local", round).await?;
        let b = host.run(&model, round).await?;
        let mut line = format!(
            "round {round}{}: local running {} commit {}; opencode ready {} commit {}",
            if warm_up { " (warm-up)" } else { "" },
            timing::ms(k.ready),
            timing::ms(k.commit),
            timing::ms(b.ready),
            timing::ms(b.commit)
        );
        if !warm_up {
            report.local.push(k);
            report.host.push(b);
        }
        if let (Some(engine), Some(d)) = (engine, &docker) {
            // Warm means the pool's container is up, as between a team's sessions. The pool
            // fills once a session asked for the snapshot: the warm-up run is that session.
            if warm_pool > 0 && !warm_up {
                docker::wait_for_warm_container(engine).await?;
            }
            let kd = d.target.run(&model, "docker", round).await?;
            if container.is_none() {
                container = Some(ContainerBaseline {
                    engine,
                    git: &git,
                    origin: &origin,
                    home: &container_home,
                    work: work.path(),
                    image: docker::current_image(&d.target).await?,
                });
            }
            // The pool's replacement for the container the session took starts a few
            // seconds after the take; the baseline waits for it rather than share the CPU.
            if warm_pool > 0 && !warm_up {
                docker::wait_for_warm_container(engine).await?;
            }
            let c = container
                .as_ref()
                .expect("set above")
                .run(&model, round)
                .await?;
            line.push_str(&format!(
                "; docker running {} commit {}; podman run healthy {} commit {}",
                timing::ms(kd.ready),
                timing::ms(kd.commit),
                timing::ms(c.healthy.unwrap_or_default()),
                timing::ms(c.commit)
            ));
            if !warm_up {
                report.docker.push(kd);
                report.container.push(c);
            }
        }
        eprintln!("{line}");
    }
    if let Some(d) = &docker {
        report.concurrent = docker::concurrent_starts(&d.target, concurrent).await?;
    }
    report.print(runs);
    local.server.shutdown().await;
    if let Some(d) = docker {
        d.server.shutdown().await;
    }
    Ok(())
}

/// A repository with a manifest (the docker template), its Dockerfile, and an OpenCode config
/// pointing at the scripted model.
fn source_repo(git: &GitEnv, dir: &Path, model: &ScriptedModel) -> Result<PathBuf> {
    let source = dir.join("source");
    std::fs::create_dir_all(source.join(".kortix"))?;
    git.ok(&source, &["init", "-q", "-b", "main"]);
    std::fs::write(source.join("kortix.toml"), docker::manifest())?;
    std::fs::write(source.join(".kortix/Dockerfile"), docker::dockerfile())?;
    std::fs::write(source.join(".kortix/marker.txt"), "initial\n")?;
    let config = opencode_config(&source.join(".kortix/opencode"), model.port())
        .map_err(|e| anyhow!("{e}"))?;
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config)?)?;
    json["provider"]["scripted"]["options"]["baseURL"] = model.base_url().into();
    std::fs::write(&config, serde_json::to_string_pretty(&json)?)?;
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
