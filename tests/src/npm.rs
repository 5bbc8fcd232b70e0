//! npm packages the tests install themselves: pinned exact versions, each in its own prefix
//! under one cache directory, installed once per cache under a file lock so parallel test
//! processes install it once.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{HarnessError, io_context};

/// The cache is `$KORTIX_TEST_CACHE`, else `<cargo target dir>/opencode-cache`.
pub(crate) fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KORTIX_TEST_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // Test binaries live in <target>/<profile>/deps; cargo marks <target> with CACHEDIR.TAG.
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if dir.join("CACHEDIR.TAG").is_file() {
                return dir.join("opencode-cache");
            }
        }
    }
    std::env::temp_dir().join("kortix-test-cache")
}

/// `<cache>/<name>`, holding `package@version` installed with npm, once: under the lock
/// `<cache>/<name>.lock`, `installed` is asked first and npm runs only when it says no; after
/// npm, `installed` must say yes.
pub(crate) fn install_locked<T>(
    name: &str,
    package: &str,
    version: &str,
    installed: impl Fn(&Path) -> Option<T>,
) -> Result<T, HarnessError> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(io_context(format!("creating {}", cache.display())))?;
    let prefix = cache.join(name);
    let lock_path = cache.join(format!("{name}.lock"));
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_context(format!("opening {}", lock_path.display())))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| HarnessError::Install(format!("locking {}: {e}", lock_path.display())))?;
    if let Some(found) = installed(&prefix) {
        return Ok(found);
    }
    std::fs::create_dir_all(&prefix)
        .map_err(io_context(format!("creating {}", prefix.display())))?;
    let output = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--prefix",
        ])
        .arg(&prefix)
        .arg(format!("{package}@{version}"))
        .output()
        .map_err(io_context("running npm (is Node.js installed?)"))?;
    if !output.status.success() {
        return Err(HarnessError::Install(format!(
            "npm install {package}@{version} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    installed(&prefix).ok_or_else(|| {
        HarnessError::Install(format!(
            "{package}@{version} installed in {} but not usable",
            prefix.display()
        ))
    })
}
