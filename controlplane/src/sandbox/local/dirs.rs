//! Sandbox directories after their agent has exited. They hold the workspace, a private HOME
//! (with OpenCode's own database, in which tool output may show secret values) and the agent's
//! log: removed as soon as the sandbox ends unless a retention period keeps them for debugging,
//! so disk use is bounded by the live sandboxes plus what the retention keeps.

use super::record::SandboxRecord;
use std::io;
use std::path::Path;
use std::time::Duration;

/// Called once the sandbox in `dir` has exited: removes it now, or marks it ended so that
/// [`remove_expired`] removes it once `retention` has passed.
pub fn ended(dir: &Path, retention: Duration) -> io::Result<()> {
    if retention.is_zero() {
        return remove(dir);
    }
    if !dir.exists() {
        return Ok(());
    }
    let mut record = SandboxRecord::read(dir)
        .ok()
        .flatten()
        .unwrap_or(SandboxRecord {
            pid: 0,
            start_ticks: 0,
            boot_id: String::new(),
            ended_ms: None,
            machine_id: String::new(),
            owner: None,
        });
    record.ended_ms = Some(crate::sessions::now_ms());
    record.write(dir)
}

/// Removes the ended sandboxes under `root` whose retention has passed. A directory counts as
/// ended when its record says so; `removable` vetoes directories that are still in use.
pub fn remove_expired(
    root: &Path,
    retention: Duration,
    removable: impl Fn(&str) -> bool,
) -> io::Result<()> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let cutoff = crate::sessions::now_ms() - retention.as_millis() as i64;
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !removable(&name) {
            continue;
        }
        let dir = entry.path();
        let expired = SandboxRecord::read(&dir)
            .ok()
            .flatten()
            .and_then(|r| r.ended_ms)
            .is_some_and(|ended| ended <= cutoff);
        if expired {
            remove(&dir)?;
        }
    }
    Ok(())
}

/// Removes a sandbox directory and everything in it. Tools inside a sandbox leave read-only
/// directories behind (package caches do); those are made writable and the removal retried.
pub fn remove(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_writable(dir);
            std::fs::remove_dir_all(dir).map_err(|e2| {
                io::Error::new(
                    e2.kind(),
                    format!("{}: {e2} (first try: {e})", dir.display()),
                )
            })
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn removes_read_only_trees() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("s1");
        let locked = dir.join("home/.cache/pkg");
        std::fs::create_dir_all(&locked).unwrap();
        std::fs::write(locked.join("file"), "x").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        remove(&dir).unwrap();
        assert!(!dir.exists());
        remove(&dir).unwrap();
    }

    #[test]
    fn retention_keeps_an_ended_sandbox_until_it_expires() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("s1");
        std::fs::create_dir_all(dir.join("workspace")).unwrap();
        ended(&dir, Duration::from_secs(3600)).unwrap();
        assert!(dir.exists(), "kept for the retention period");
        remove_expired(root.path(), Duration::from_secs(3600), |_| true).unwrap();
        assert!(dir.exists(), "not expired yet");
        remove_expired(root.path(), Duration::ZERO, |_| false).unwrap();
        assert!(dir.exists(), "vetoed");
        remove_expired(root.path(), Duration::ZERO, |_| true).unwrap();
        assert!(!dir.exists(), "expired");

        let now = root.path().join("s2");
        std::fs::create_dir_all(&now).unwrap();
        ended(&now, Duration::ZERO).unwrap();
        assert!(!now.exists(), "no retention: removed at once");
    }
}
