//! The renewal secret file: what a restarted agent re-enrolls with.
//!
//! `Enroll` (and every `Reenroll`) returns a single-use renewal secret. The agent writes it to
//! `renewal-secret` in its session's spool directory — outside the workspace, in a directory
//! of mode 0700, the file itself 0600, written to a temporary file and renamed so a crash
//! never leaves half a secret — and never logs it or hands it to OpenCode's environment.
//! After a restart, when the control plane refuses the (used) bootstrap token, the agent
//! presents the secret with `Reenroll`; the control plane then rotates it, and the agent
//! writes the next one before doing anything else.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File name inside the session's spool directory.
pub const FILE_NAME: &str = "renewal-secret";
/// A secret is a short token; anything longer is not one.
const MAX_SECRET_BYTES: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum RenewalFileError {
    #[error("renewal secret file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("renewal secret file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Reads the secret at `path`; `Ok(None)` when there is no file. A file that others may
/// read is tightened to 0600 first.
pub fn read(path: &Path) -> Result<Option<String>, RenewalFileError> {
    let io_err = |source| RenewalFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(RenewalFileError::Invalid {
            path: path.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    }
    let mut text = String::new();
    Read::by_ref(&mut file)
        .take(MAX_SECRET_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io_err)?;
    let secret = text.trim();
    if text.len() as u64 > MAX_SECRET_BYTES || secret.is_empty() {
        return Err(RenewalFileError::Invalid {
            path: path.to_owned(),
            reason: "does not hold a renewal secret".into(),
        });
    }
    Ok(Some(secret.to_owned()))
}

/// Writes `secret` to `path` (mode 0600) atomically: a temporary file beside it, fsynced,
/// renamed over it, and the directory fsynced.
pub fn write(path: &Path, secret: &str) -> Result<(), RenewalFileError> {
    let io_err = |source| RenewalFileError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err)?;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err)?;
    file.write_all(secret.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_private_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s").join(FILE_NAME);
        assert_eq!(read(&path).unwrap(), None);
        write(&path, "kxr_first").unwrap();
        write(&path, "kxr_second").unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("kxr_second"));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!path.with_extension("tmp").exists());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        read(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "tightened");

        fs::write(&path, "x".repeat(1000)).unwrap();
        assert!(matches!(read(&path), Err(RenewalFileError::Invalid { .. })));
        fs::write(&path, "\n").unwrap();
        assert!(matches!(read(&path), Err(RenewalFileError::Invalid { .. })));
    }
}
