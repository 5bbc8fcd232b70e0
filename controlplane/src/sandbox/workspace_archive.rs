//! What the snapshot-backed build runners share (`docker::command`, `daytona::command`): the
//! source in as a tar archive of `workspace/…`, the workspace out the same way, bounded and
//! unpacked safely, a command's exit status read as a shell reports it, and output cut into
//! bounded lines.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::sandbox::SandboxError;
use crate::sandbox::namespaces::Ended;

/// How a command in a snapshot went, and where its workspace came back to.
#[derive(Debug)]
pub struct WorkspaceRun {
    pub end: crate::sandbox::command::CommandEnd,
    /// The workspace after the command (`None` when it did not end by itself: nothing is
    /// copied back from a command that overran).
    pub workspace: Option<PathBuf>,
}

/// Where the source is inside the build's container or sandbox.
pub const WORKSPACE: &str = "/workspace";
/// Longest output line kept whole; the rest of a longer line is cut.
pub const MAX_LINE: usize = 8 * 1024;

/// The working directory of a build: [`WORKSPACE`] or `workdir` (relative) inside it.
pub fn workdir_in_workspace(workdir: &str) -> String {
    let rel = workdir.trim_matches('/');
    if rel.is_empty() {
        WORKSPACE.to_string()
    } else {
        format!("{WORKSPACE}/{rel}")
    }
}

/// Writes `source` as `workspace/…` into the tar file `archive` (links stay links: the build
/// sees the tree as the repository has it).
pub async fn pack_source(source: &Path, archive: &Path) -> Result<(), SandboxError> {
    let (from, to) = (source.to_path_buf(), archive.to_path_buf());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(&to)?));
        tar.follow_symlinks(false);
        tar.append_dir_all(WORKSPACE.trim_start_matches('/'), &from)?;
        tar.into_inner()?.into_inner()?.sync_all()
    })
    .await
    .map_err(|e| SandboxError::Engine(format!("archiving the build's source: {e}")))?
    .map_err(|e| {
        SandboxError::Engine(format!(
            "archiving the build's source {}: {e}",
            source.display()
        ))
    })
}

/// Writes `chunks` to the file `archive`, refusing more than `max_bytes` (the file is removed
/// then). `what` names the transfer in errors.
pub async fn write_capped<E: std::fmt::Display>(
    chunks: impl Stream<Item = Result<Bytes, E>>,
    archive: &Path,
    max_bytes: u64,
    what: &str,
) -> Result<u64, SandboxError> {
    let mut chunks = std::pin::pin!(chunks);
    let io = |e: std::io::Error| SandboxError::Engine(format!("{}: {e}", archive.display()));
    let mut file = tokio::fs::File::create(archive).await.map_err(io)?;
    let mut bytes = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_file(archive).await;
                return Err(SandboxError::Engine(format!("{what}: {e}")));
            }
        };
        bytes += chunk.len() as u64;
        if bytes > max_bytes {
            drop(file);
            let _ = tokio::fs::remove_file(archive).await;
            return Err(SandboxError::Engine(format!(
                "the build's workspace is over {max_bytes} bytes"
            )));
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    Ok(bytes)
}

/// Unpacks the workspace archive `archive` (entries `workspace/…`) under `scratch/out`,
/// removes the archive, and returns the directory the workspace came back to.
pub async fn unpack_workspace(archive: &Path, scratch: &Path) -> Result<PathBuf, SandboxError> {
    let into = scratch.join("out");
    let (from, to) = (archive.to_path_buf(), into.clone());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&to)?;
        let mut tar = tar::Archive::new(std::io::BufReader::new(std::fs::File::open(&from)?));
        // Entries that would land outside `to` (absolute, `..`) are refused by `unpack`;
        // ownership and special bits stay this process's.
        tar.set_preserve_permissions(false);
        tar.set_unpack_xattrs(false);
        tar.unpack(&to)
    })
    .await
    .map_err(|e| SandboxError::Engine(format!("unpacking the build's workspace: {e}")))?
    .map_err(|e| SandboxError::Engine(format!("unpacking the build's workspace: {e}")))?;
    let _ = tokio::fs::remove_file(archive).await;
    Ok(into.join(WORKSPACE.trim_start_matches('/')))
}

/// An exit status as a shell reports it: 128 + N is "killed by signal N".
pub fn ended(status: i64) -> Ended {
    match i32::try_from(status) {
        Ok(code) if code > 128 && code < 128 + 65 => Ended {
            code: None,
            signal: Some(code - 128),
        },
        Ok(code) => Ended {
            code: Some(code),
            signal: None,
        },
        Err(_) => Ended::default(),
    }
}

/// Bytes to lines, each at most [`MAX_LINE`] bytes.
#[derive(Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                done.push(self.take());
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
        done
    }

    fn take(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.partial)
            .trim_end_matches('\r')
            .to_string();
        self.partial.clear();
        line
    }

    pub fn finish(mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_splits_into_bounded_lines() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"one\r\ntw"), vec!["one".to_string()]);
        assert_eq!(l.push(b"o\nthree"), vec!["two".to_string()]);
        assert_eq!(l.finish(), Some("three".to_string()));
        let mut long = Lines::default();
        let mut bytes = vec![b'x'; MAX_LINE + 100];
        bytes.push(b'\n');
        assert_eq!(long.push(&bytes)[0].len(), MAX_LINE);
        assert_eq!(long.finish(), None);
    }

    #[test]
    fn signals_read_as_a_shell_reports_them() {
        assert_eq!(ended(0).code, Some(0));
        assert_eq!(ended(3).code, Some(3));
        assert_eq!(ended(137).signal, Some(9));
        assert_eq!(ended(128).code, Some(128));
        assert_eq!(ended(i64::MAX), Ended::default());
        assert_eq!(ended(-1).code, Some(-1));
    }

    #[test]
    fn workdirs_are_inside_the_workspace() {
        assert_eq!(workdir_in_workspace(""), "/workspace");
        assert_eq!(workdir_in_workspace("site/"), "/workspace/site");
    }

    #[tokio::test]
    async fn the_workspace_round_trips_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        std::fs::create_dir_all(source.join("site")).unwrap();
        std::fs::write(source.join("site/build.sh"), "echo hi\n").unwrap();
        let archive = dir.path().join("source.tar");
        pack_source(&source, &archive).await.unwrap();
        let data = Bytes::from(std::fs::read(&archive).unwrap());
        let copy = dir.path().join("copy.tar");
        let chunks = futures::stream::iter(
            data.chunks(1000)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let n = write_capped(chunks, &copy, data.len() as u64, "test")
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        let back = unpack_workspace(&copy, dir.path()).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(back.join("site/build.sh")).unwrap(),
            "echo hi\n"
        );
        assert!(!copy.exists());
        let over = futures::stream::iter(vec![Ok::<_, std::io::Error>(data.clone())]);
        let err = write_capped(over, &copy, 10, "test").await.unwrap_err();
        assert!(err.to_string().contains("over 10 bytes"), "{err}");
        assert!(!copy.exists(), "a refused archive is not left behind");
    }
}
