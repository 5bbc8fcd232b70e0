//! A PostgreSQL server of a test's own, made with `initdb` from the machine's PostgreSQL
//! binaries (`/usr/lib/postgresql/<version>/bin`, the newest), so that a test can stop and
//! start it under a running control plane without touching the shared server on 5432.
//!
//! PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user and
//! its programs run as that user through `runuser`.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A private cluster; stopped (immediately) and deleted on drop.
pub struct PrivateCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PrivateCluster {
    /// Creates and starts a cluster on a free loopback port; `None` (after saying so) when
    /// the binaries are missing outside CI.
    pub fn create() -> Option<PrivateCluster> {
        let Some(bin) = newest_bin_dir() else {
            crate::require::unavailable(
                "PostgreSQL server binaries",
                "no /usr/lib/postgresql/<version>/bin/initdb",
            );
            return None;
        };
        let as_postgres = nix::unistd::Uid::effective().is_root();
        let dir = tempfile::Builder::new()
            .prefix("kortix-pg-")
            .tempdir()
            .expect("a directory for the private cluster");
        if as_postgres {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .output()
                .expect("run chown");
            assert!(out.status.success(), "chown: {}", stderr(&out));
        }
        let port = free_port();
        let cluster = PrivateCluster {
            bin,
            dir,
            port,
            as_postgres,
        };
        let data = cluster.data_dir();
        let out = cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(out.status.success(), "initdb: {}", stderr(&out));
        cluster.start();
        Some(cluster)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            stderr(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the private cluster never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server: `fast` ends sessions and shuts down cleanly, `immediate` is a crash
    /// (recovery on the next start).
    pub fn stop(&self, mode: &str) {
        let data = self.data_dir();
        let out = self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", mode, "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", stderr(&out));
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()))
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

fn newest_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn stderr(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
