//! The on-disk record of a local sandbox (`<sandbox-dir>/sandbox.json`): enough for a control
//! plane that restarted on the same data directory to find the agent again, and to tell it from
//! an unrelated process that reused its pid.
//!
//! A process is the recorded one when the machine has not rebooted since (`boot_id`) and the
//! process with that pid started at the recorded time (field 22 of `/proc/<pid>/stat`, in clock
//! ticks since boot). A pidfd opened *before* that check pins the process, so the answer cannot
//! go stale between the check and its use.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub const RECORD_FILE: &str = "sandbox.json";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxRecord {
    /// The agent's pid on the host (and its process group).
    pub pid: i32,
    pub start_ticks: u64,
    pub boot_id: String,
    /// When the sandbox was seen to end (ms since the epoch); its directory is kept until the
    /// retention period has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// `/etc/machine-id` of the machine it runs on: a data directory shared between
    /// machines holds other machines' sandboxes, which are theirs to watch (empty: unknown,
    /// records from before it was kept, taken as this machine's).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub machine_id: String,
    /// The control-plane process that watches it. Another replica on the machine takes the
    /// sandbox over once this process is gone (`None`: records from before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// A control-plane process, told from a later process with the same pid by its start time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    pub pid: i32,
    pub start_ticks: u64,
}

impl Owner {
    pub fn this_process() -> io::Result<Owner> {
        let pid = std::process::id() as i32;
        Ok(Owner {
            pid,
            start_ticks: start_ticks(pid)?,
        })
    }

    /// Whether this owner is another process that is still running (on this machine, since
    /// this boot: callers check the record's machine and boot first).
    pub fn is_another_live_process(&self) -> bool {
        self.pid != std::process::id() as i32
            && start_ticks(self.pid).is_ok_and(|t| t == self.start_ticks)
            && !is_zombie(self.pid)
    }
}

impl SandboxRecord {
    /// The record of a process that is running now.
    /// The record of a process that is running now, watched by this process.
    pub fn of(pid: i32) -> io::Result<Self> {
        Ok(Self {
            pid,
            start_ticks: start_ticks(pid)?,
            boot_id: boot_id()?,
            ended_ms: None,
            machine_id: machine_id(),
            owner: Some(Owner::this_process()?),
        })
    }

    /// Whether it runs on another machine (that shares the data directory).
    pub fn is_on_another_machine(&self) -> bool {
        let here = machine_id();
        !self.machine_id.is_empty() && !here.is_empty() && self.machine_id != here
    }

    /// Whether another control-plane process on this machine, still running, watches it.
    pub fn is_watched_by_another_process(&self) -> bool {
        boot_id().is_ok_and(|b| b == self.boot_id)
            && self
                .owner
                .as_ref()
                .is_some_and(Owner::is_another_live_process)
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(RECORD_FILE)
    }

    /// Writes the record atomically (a crash leaves the old one or the new one, never half).
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let json = serde_json::to_vec(self).map_err(io::Error::other)?;
        crate::secrets::write_private_file(&Self::path(dir), &json, true)
    }

    /// The record in `dir`; `None` when there is none. A record that does not parse is an
    /// error naming the file.
    pub fn read(dir: &Path) -> io::Result<Option<Self>> {
        let path = Self::path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }

    /// A pidfd for the recorded process if it is still the one that was recorded.
    pub fn open_if_alive(&self) -> Option<OwnedFd> {
        if self.ended_ms.is_some() || boot_id().ok()? != self.boot_id {
            return None;
        }
        let pid = rustix::process::Pid::from_raw(self.pid)?;
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
        let alive = start_ticks(self.pid).ok()? == self.start_ticks && !is_zombie(self.pid);
        alive.then_some(fd)
    }
}

fn stat_fields(pid: i32) -> io::Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces and ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc stat"))?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

/// Field 22 (`starttime`); after the command name it is the 20th field.
fn start_ticks(pid: i32) -> io::Result<u64> {
    stat_fields(pid)?
        .get(19)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no start time in /proc stat"))
}

/// Field 3 (`state`): `Z` for a process that has exited and waits to be reaped.
fn is_zombie(pid: i32) -> bool {
    stat_fields(pid).is_ok_and(|f| f.first().is_some_and(|s| s == "Z" || s == "X"))
}

/// This machine's id (`/etc/machine-id`, stable across reboots), or empty when it has none.
fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

fn boot_id() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_recognised_and_a_reused_pid_is_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let record = SandboxRecord::of(child.id() as i32).unwrap();
        record.write(dir.path()).unwrap();
        let read = SandboxRecord::read(dir.path()).unwrap().unwrap();
        assert_eq!(read, record);
        assert!(read.open_if_alive().is_some());

        let reused = SandboxRecord {
            start_ticks: record.start_ticks + 1,
            ..record.clone()
        };
        assert!(reused.open_if_alive().is_none(), "another start time");
        let rebooted = SandboxRecord {
            boot_id: "another-boot".into(),
            ..record.clone()
        };
        assert!(rebooted.open_if_alive().is_none(), "another boot");
        let ended = SandboxRecord {
            ended_ms: Some(1),
            ..record.clone()
        };
        assert!(ended.open_if_alive().is_none(), "recorded as ended");

        child.kill().unwrap();
        // Exited but not yet reaped: not alive.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while record.open_if_alive().is_some() {
            assert!(std::time::Instant::now() < deadline, "still alive");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().unwrap();
        assert!(record.open_if_alive().is_none());
    }

    #[test]
    fn missing_and_malformed_records() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SandboxRecord::read(dir.path()).unwrap(), None);
        std::fs::write(SandboxRecord::path(dir.path()), b"{not json").unwrap();
        let err = SandboxRecord::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains(RECORD_FILE), "{err}");
    }
}
