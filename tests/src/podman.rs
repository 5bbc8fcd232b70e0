//! A container engine for tests: Podman's Docker-compatible service, one for all tests,
//! and a base image built locally (no registry is reachable from test machines).
//!
//! `KORTIX_TEST_DOCKER_HOST` names a running service to use instead. Otherwise the first test
//! process starts `podman system service` on `<target>/podman-cache/podman.sock` and the
//! others use it; it exits by itself two minutes after its last request, so nothing outlives
//! the test run for long.
//!
//! Podman runs with `runc` and without default ulimits (see [`containers_conf`]): on hosts
//! with cgroup v1 in hybrid mode, `crun` fails and setting rlimits is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The tests' base image: Debian with git and CA certificates, imported from a root that
/// `image/assemble-rootfs.sh --base-only` assembles from this host's packages.
pub const TEST_BASE_IMAGE: &str = "localhost/kortix-test-base:bookworm";

/// `kortix.toml` of a project whose default template `dev` builds `.kortix/Dockerfile` (see
/// [`marker_dockerfile`]) with these limits; `more` follows (other templates).
pub fn dockerfile_manifest(cpu: u32, memory_gib: u32, more: &str) -> String {
    format!(
        r#"kortix_version = 1
[project]
name = "app"

[sandbox]
default = "dev"

[[sandbox.templates]]
slug = "dev"
dockerfile = ".kortix/Dockerfile"
cpu = {cpu}
memory = {memory_gib}
{more}"#
    )
}

/// The `.kortix/Dockerfile` of [`dockerfile_manifest`]: the tests' base image plus the
/// context's `marker.txt` at `/etc/kortix-marker`.
pub fn marker_dockerfile() -> String {
    format!("FROM {TEST_BASE_IMAGE}\nCOPY marker.txt /etc/kortix-marker\n")
}

/// How long the service lives after its last request.
const IDLE_EXIT_SECS: u32 = 120;

pub struct Podman {
    /// `unix:///…`: for `DOCKER_HOST` or `--docker-host`.
    pub docker_host: String,
    conf: PathBuf,
}

/// The test binary's engine, started (and the base image imported) on first use.
pub fn podman() -> Result<&'static Podman, String> {
    static ENGINE: OnceLock<Result<Podman, String>> = OnceLock::new();
    ENGINE.get_or_init(start).as_ref().map_err(Clone::clone)
}

fn work_dir() -> PathBuf {
    // Beside the OpenCode cache: <target>/podman-cache.
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if dir.join("CACHEDIR.TAG").is_file() {
                return dir.join("podman-cache");
            }
        }
    }
    std::env::temp_dir().join("kortix-podman-cache")
}

/// The `containers.conf` every podman command here runs with.
pub fn containers_conf(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let conf = dir.join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\n",
    )
    .map_err(|e| format!("writing {}: {e}", conf.display()))?;
    Ok(conf)
}

fn start() -> Result<Podman, String> {
    let dir = work_dir();
    let conf = containers_conf(&dir)?;
    let which = Command::new("podman").arg("--version").output();
    if !which.is_ok_and(|o| o.status.success()) {
        return Err("podman is not installed (apt-get install podman runc)".into());
    }
    let docker_host = match std::env::var("KORTIX_TEST_DOCKER_HOST") {
        Ok(host) if !host.is_empty() => host,
        _ => {
            // One service for every test process of this target directory (nextest runs
            // each test in a process of its own): whoever finds none starts it.
            let socket = dir.join("podman.sock");
            let lock = std::fs::File::create(dir.join("service.lock"))
                .map_err(|e| format!("creating the service lock: {e}"))?;
            lock.lock()
                .map_err(|e| format!("locking the service lock: {e}"))?;
            if std::os::unix::net::UnixStream::connect(&socket).is_err() {
                let _ = std::fs::remove_file(&socket);
                Command::new("podman")
                    .env("CONTAINERS_CONF", &conf)
                    .args(["system", "service", &format!("--time={IDLE_EXIT_SECS}")])
                    .arg(format!("unix://{}", socket.display()))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("starting podman system service: {e}"))?;
                let deadline = Instant::now() + Duration::from_secs(30);
                while std::os::unix::net::UnixStream::connect(&socket).is_err() {
                    if Instant::now() > deadline {
                        return Err(format!(
                            "podman system service did not listen on {} within 30 s",
                            socket.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            format!("unix://{}", socket.display())
        }
    };
    let engine = Podman { docker_host, conf };
    engine.ensure_base_image(&dir)?;
    Ok(engine)
}

impl Podman {
    /// A running warm-pool container of the control plane (`--warm-pool`), if there is one.
    pub fn warm_container(&self) -> Result<Option<String>, String> {
        let names = self.cli(&[
            "ps",
            "--filter",
            "label=kortix.pool",
            "--filter",
            "status=running",
            "--format",
            "{{.Names}}",
        ])?;
        Ok(names
            .lines()
            .find(|n| n.starts_with("kortix-pool-"))
            .map(str::to_owned))
    }

    /// Runs the podman CLI with this engine's configuration; returns stdout, or why it failed.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command()
            .args(args)
            .output()
            .map_err(|e| format!("podman {}: {e}", args.join(" ")))?;
        if !out.status.success() {
            return Err(format!(
                "podman {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A `podman` command with this engine's configuration, to add arguments to.
    pub fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command.env("CONTAINERS_CONF", &self.conf);
        command
    }

    /// The IPv4 gateway of Podman's default bridge network: the host's address there.
    pub fn bridge_gateway(&self) -> Result<std::net::Ipv4Addr, String> {
        let out = self.cli(&[
            "network",
            "inspect",
            "podman",
            "--format",
            "{{range .Subnets}}{{.Gateway}} {{end}}",
        ])?;
        out.split_whitespace()
            .find_map(|g| g.parse().ok())
            .ok_or_else(|| format!("podman's bridge network has no IPv4 gateway: {out:?}"))
    }

    /// Whether an image exists in the engine's storage.
    pub fn image_exists(&self, name: &str) -> bool {
        self.cli(&["image", "exists", name]).is_ok()
    }

    fn ensure_base_image(&self, dir: &Path) -> Result<(), String> {
        if self.image_exists(TEST_BASE_IMAGE) {
            return Ok(());
        }
        // One importer per machine: test binaries start in parallel.
        let lock = std::fs::File::create(dir.join("base-image.lock"))
            .map_err(|e| format!("creating the base image lock: {e}"))?;
        lock.lock()
            .map_err(|e| format!("locking the base image lock: {e}"))?;
        if self.image_exists(TEST_BASE_IMAGE) {
            return Ok(());
        }
        let root = dir.join(format!("base-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/assemble-rootfs.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("--base-only")
            .arg(&root)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} --base-only failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let import = Command::new("sh")
            .env("CONTAINERS_CONF", &self.conf)
            .arg("-c")
            .arg(r#"tar -C "$1" -c . | podman import - "$2""#)
            .arg("sh")
            .arg(&root)
            .arg(TEST_BASE_IMAGE)
            .output()
            .map_err(|e| format!("importing the base image: {e}"))?;
        let _ = std::fs::remove_dir_all(&root);
        if !import.status.success() {
            return Err(format!(
                "podman import of the base image failed: {}",
                String::from_utf8_lossy(&import.stderr).trim()
            ));
        }
        Ok(())
    }
}
