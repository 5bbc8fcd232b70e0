//! The docker provider's side, on Podman's Docker-compatible service (what the tests use):
//!
//! - cold snapshot builds: `kortix snapshots build` (BuildSnapshot) after a change to the
//!   template's build context, against `podman build` of the same composed recipe (the
//!   Dockerfile and context the control plane would send) after a change of its own, so both
//!   are cold from the user's layer on;
//! - the container baseline: `podman run` of the session's own snapshot image with OpenCode as
//!   the entrypoint (the workspace, the bare remote and the warm HOME mounted; the template's
//!   CPU and memory), driven like the host baseline;
//! - many sessions started at once on the warm snapshot.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::future::join_all;
use kortix_controlplane::git::Repos;
use kortix_controlplane::sandbox::opencode_packages::OpencodePackages;
use kortix_controlplane::snapshots::recipe::DOCKERFILE;
use kortix_controlplane::snapshots::{Recipe, RuntimeFrom, RuntimeLayer};
use kortix_manifest::ResolvedTemplate;
use kortix_proto::v1::{BuildSnapshotRequest, ListSnapshotsRequest, build_snapshot_event};
use kortix_tests::ScriptedModel;
use kortix_tests::git::GitEnv;
use kortix_tests::podman::{Podman, TEST_BASE_IMAGE};

use crate::kortix::Target;
use crate::opencode_drive::{checkout, drive};
use crate::timing::{Run, free_port, script, wait_calls};

/// The template every docker session uses: the tests' base image plus a context file, with
/// explicit limits the container baseline repeats.
pub const TEMPLATE_CPUS: u32 = 2;
pub const TEMPLATE_MEMORY_GIB: u32 = 4;

pub fn manifest() -> String {
    kortix_tests::podman::dockerfile_manifest(TEMPLATE_CPUS, TEMPLATE_MEMORY_GIB, "")
}

pub fn dockerfile() -> String {
    kortix_tests::podman::marker_dockerfile()
}

/// What the docker comparisons need beside the control plane.
pub struct DockerSide<'a> {
    pub engine: &'static Podman,
    pub git: &'a GitEnv,
    /// The work repository whose `main` is landed on the control plane's project.
    pub source: &'a Path,
    /// The control plane's bare repository of the project.
    pub repo: &'a Path,
    pub data_dir: &'a Path,
    pub project_id: &'a str,
    pub agent_bin: &'a Path,
    pub opencode: &'a Path,
    pub packages_root: &'a Path,
    pub work: &'a Path,
}

/// One cold build of each, in the same round.
pub struct BuildPair {
    pub kortix: Duration,
    pub podman: Duration,
    /// Of `kortix`: from the request to the engine's first build step, and from the
    /// engine's last output line to the active snapshot (Kortix's own time around the
    /// engine's build).
    pub kortix_before: Duration,
    pub kortix_after: Duration,
}

/// A timed `BuildSnapshot`.
struct KortixBuild {
    total: Duration,
    before: Duration,
    after: Duration,
}

impl DockerSide<'_> {
    /// Changes the template's context file on the project's default branch.
    fn land_marker(&self, text: &str) {
        // Unique per bench run: an image layer cached by an earlier run (same marker, same
        // context) would make the build warm.
        static RUN: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
        let run = RUN.get_or_init(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        });
        std::fs::write(
            self.source.join(".kortix/marker.txt"),
            format!("{text} (bench run {run})\n"),
        )
        .expect("writing the marker");
        self.git.ok(self.source, &["add", "."]);
        self.git.ok(
            self.source,
            &[
                "-c",
                "user.name=Bench",
                "-c",
                "user.email=bench@example.com",
                "commit",
                "-qm",
                text,
            ],
        );
        self.git.ok(
            self.repo,
            &["fetch", "-q", &self.source.to_string_lossy(), "main:main"],
        );
    }

    pub async fn cold_builds(&self, target: &Target, rounds: usize) -> Result<Vec<BuildPair>> {
        let runtime = self.runtime_layer().await?;
        let repos = Repos::in_data_dir(self.data_dir)?;
        let template = kortix_manifest::parse(&manifest())
            .map_err(|e| anyhow!("the bench manifest: {e:?}"))?
            .sandbox
            .template("dev")
            .cloned()
            .ok_or_else(|| anyhow!("no template dev"))?;
        let podman_round = |round: usize| -> Result<Duration> {
            self.land_marker(&format!("podman build {round}"));
            let recipe = Recipe::compose(
                &repos,
                self.project_id,
                "main",
                ResolvedTemplate::Template(&template),
                &runtime,
                TEST_BASE_IMAGE,
            )?;
            self.podman_build(&recipe, &runtime, round)
        };
        let kortix_round = |round: usize| async move {
            self.land_marker(&format!("kortix build {round}"));
            self.kortix_build(target).await
        };
        // Round 0 is a warm-up of each, not reported: the control plane's first build also
        // builds the runtime image, once per agent and OpenCode version, not per snapshot.
        // The order alternates and every image is kept until all rounds are done, so
        // neither side's timing carries the other's clean-up or the engine's warming up.
        let measured = async {
            let mut pairs = Vec::new();
            for round in 0..=rounds {
                let (kortix, podman) = if round.is_multiple_of(2) {
                    let kortix = kortix_round(round).await?;
                    (kortix, podman_round(round)?)
                } else {
                    let podman = podman_round(round)?;
                    (kortix_round(round).await?, podman)
                };
                eprintln!(
                    "cold build {round}{}: kortix {} ms ({} ms to the first step, {} ms after the last line), podman build {} ms",
                    if round == 0 {
                        " (warm-up, not reported)"
                    } else {
                        ""
                    },
                    kortix.total.as_millis(),
                    kortix.before.as_millis(),
                    kortix.after.as_millis(),
                    podman.as_millis()
                );
                if round > 0 {
                    pairs.push(BuildPair {
                        kortix: kortix.total,
                        podman,
                        kortix_before: kortix.before,
                        kortix_after: kortix.after,
                    });
                }
            }
            Ok(pairs)
        }
        .await;
        for round in 0..=rounds {
            let _ = self.engine.cli(&["rmi", "-f", &podman_tag(round)]);
        }
        measured
    }

    /// The runtime layer exactly as the control plane composes it.
    async fn runtime_layer(&self) -> Result<RuntimeLayer> {
        let packages = OpencodePackages::new(
            self.packages_root.to_path_buf(),
            self.opencode.to_path_buf(),
        )
        .get()
        .await
        .ok_or_else(|| anyhow!("OpenCode's package set is not installed"))?;
        Ok(RuntimeLayer::load(self.agent_bin, self.opencode)?.with_packages(&packages)?)
    }

    async fn kortix_build(&self, target: &Target) -> Result<KortixBuild> {
        let mut api = target.snapshots.clone();
        let started = Instant::now();
        let mut events = api
            .build_snapshot(BuildSnapshotRequest {
                project: "app".into(),
                template: String::new(),
            })
            .await?
            .into_inner();
        let mut first_step = None;
        let mut last_line = None;
        while let Some(event) = events.message().await? {
            match event.event {
                Some(build_snapshot_event::Event::LogLine(line)) => {
                    let now = started.elapsed();
                    if first_step.is_none() && line.starts_with("STEP ") {
                        first_step = Some(now);
                    }
                    last_line = Some(now);
                }
                Some(build_snapshot_event::Event::Snapshot(s)) => {
                    if s.status != "active" {
                        bail!("snapshot {} is {}: {}", s.name, s.status, s.failure_reason);
                    }
                    let total = started.elapsed();
                    return Ok(KortixBuild {
                        total,
                        before: first_step.unwrap_or_default(),
                        after: total.saturating_sub(last_line.unwrap_or(total)),
                    });
                }
                None => {}
            }
        }
        bail!("BuildSnapshot ended without a snapshot")
    }

    /// `podman build` of the recipe's context, unpacked (not timed), with its Dockerfile.
    fn podman_build(
        &self,
        recipe: &Recipe,
        runtime: &RuntimeLayer,
        round: usize,
    ) -> Result<Duration> {
        let dir = self.work.join(format!("podman-context-{round}"));
        std::fs::create_dir_all(&dir)?;
        let mut archive = Vec::new();
        // The same recipe the control plane builds on this engine: the runtime's files from
        // the runtime image its first build made.
        let from = RuntimeFrom::Image(runtime.image_name());
        recipe.write_context(runtime, &from, &mut archive)?;
        tar::Archive::new(archive.as_slice()).unpack(&dir)?;
        let started = Instant::now();
        self.engine
            .cli(&[
                "build",
                "-q",
                "-f",
                &dir.join(DOCKERFILE).to_string_lossy(),
                "-t",
                &podman_tag(round),
                &dir.to_string_lossy(),
            ])
            .map_err(|e| anyhow!("{e}"))?;
        let took = started.elapsed();
        let _ = std::fs::remove_dir_all(&dir);
        Ok(took)
    }
}

/// The image the baseline's build of `round` makes.
fn podman_tag(round: usize) -> String {
    format!("localhost/kortix-bench-podman-{round}")
}

/// Waits until the control plane's warm pool has a running container.
pub async fn wait_for_warm_container(engine: &Podman) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if engine
            .warm_container()
            .map_err(|e| anyhow!("listing warm containers: {e}"))?
            .is_some()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the warm pool had no container within 180 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The snapshot image sessions of `app` boot now (the most recently used active one).
pub async fn current_image(target: &Target) -> Result<String> {
    let listed = target
        .snapshots
        .clone()
        .list_snapshots(ListSnapshotsRequest {
            project: "app".into(),
        })
        .await?
        .into_inner()
        .snapshots;
    listed
        .into_iter()
        .filter(|s| s.status == "active")
        .max_by_key(|s| s.last_used_unix_ms)
        .map(|s| s.name)
        .ok_or_else(|| anyhow!("no active snapshot of app"))
}

/// `podman run` of a snapshot image with OpenCode instead of the agent as its entrypoint.
pub struct ContainerBaseline<'a> {
    pub engine: &'static Podman,
    pub git: &'a GitEnv,
    pub origin: &'a Path,
    /// A warm HOME (OpenCode's packages installed), mounted as `/root`.
    pub home: &'a Path,
    pub work: &'a Path,
    pub image: String,
}

impl ContainerBaseline<'_> {
    pub async fn run(&self, model: &ScriptedModel, round: usize) -> Result<Run> {
        // Inside the container the bare repository is mounted at /origin.git.
        let checkout = checkout(
            self.git,
            self.work,
            self.origin,
            &format!("container-checkout-{round}"),
            &[("remote.origin.url", "/origin.git")],
        );
        let file = format!("container-{round}.txt");
        let branch = format!("container-{round}");
        let calls = script(model, &file, &format!("HEAD:refs/heads/{branch}"));
        let port = free_port()?;
        let name = format!("kortix-bench-baseline-{round}");
        let mounts = [
            format!("{}:/workspace", checkout.display()),
            format!("{}:/origin.git", self.origin.display()),
            format!("{}:/root", self.home.display()),
        ];
        let publish = format!("127.0.0.1:{port}:4096");
        let cpus = TEMPLATE_CPUS.to_string();
        let memory = format!("{TEMPLATE_MEMORY_GIB}g");
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--cpus",
            &cpus,
            "--memory",
            &memory,
            "-p",
            &publish,
            "-e",
            "OPENCODE_CONFIG=/workspace/.kortix/opencode/opencode.json",
            "-e",
            "HOME=/root",
            "-e",
            "GIT_TERMINAL_PROMPT=0",
            "-w",
            "/workspace",
            "--entrypoint",
            "/usr/local/bin/opencode",
        ];
        for m in &mounts {
            args.extend(["-v", m.as_str()]);
        }
        args.extend([
            self.image.as_str(),
            "serve",
            "--hostname",
            "0.0.0.0",
            "--port",
            "4096",
        ]);
        let started = Instant::now();
        self.engine
            .cli(&args)
            .map_err(|e| anyhow!("{e}"))
            .context("starting the container baseline")?;
        let result = drive(port, &file, self.origin, &branch, started).await;
        let waited = wait_calls(model, calls).await;
        let _ = self.engine.cli(&["rm", "-f", "-t", "2", &name]);
        let run = result?;
        waited?;
        let _ = std::fs::remove_dir_all(&checkout);
        Ok(run)
    }
}

/// `n` sessions started at once on the warm snapshot: each one's time to `running`.
pub async fn concurrent_starts(target: &Target, n: usize) -> Result<Vec<Duration>> {
    let started = Instant::now();
    let runs = join_all((0..n).map(|_| target.start_until_running("", started))).await;
    let mut ids = Vec::new();
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for r in runs {
        match r {
            Ok((id, t)) => {
                ids.push(id);
                times.push(t);
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    join_all(ids.iter().map(|id| target.stop_and_wait(id))).await;
    if !failures.is_empty() {
        bail!(
            "{} of {n} sessions did not run: {}",
            failures.len(),
            failures.join("; ")
        );
    }
    Ok(times)
}
