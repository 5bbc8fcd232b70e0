//! Snapshots built by Daytona: the composed Dockerfile goes as
//! `buildInfo.dockerfileContent`, the rest of the build context (the Dockerfile's directory
//! and the runtime layer's files) as one archive through Daytona's object storage, named in
//! `buildInfo.contextHashes`; the template's hardware goes on the snapshot (`cpu`,
//! `memory`, `disk`), which the sandboxes booted from it take. Then `GET /snapshots/{id}` is
//! polled until `active`, or `build_failed` / `error` fails the build with Daytona's
//! `errorReason`, while `GET /snapshots/{id}/build-logs?follow=true` feeds the build log.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use futures::future::BoxFuture;

use super::api::{CreateBuildInfo, CreateSnapshot, Snapshot, SnapshotPhase, StorageAccess};
use super::client::{ApiError, DaytonaClient};
use super::storage::Upload;
use crate::sandbox::{BuildFailure, BuildLog, SandboxError, SnapshotBuilder};
use crate::snapshots::Hardware;

/// The entrypoint every snapshot runs (the runtime layer's), named on the snapshot too.
pub const ENTRYPOINT: &str = "/usr/local/bin/kortix-agent";
/// Where Daytona's runner writes `dockerfileContent` in the build context.
const RUNNER_DOCKERFILE: &str = "Dockerfile";
/// How often a build's state is read.
const POLL: Duration = Duration::from_secs(2);
/// How long a removed snapshot may take to go before its name is free again.
const REMOVAL_WAIT: Duration = Duration::from_secs(120);
/// Build log read from Daytona at the most.
const MAX_BUILD_LOG: usize = 16 << 20;

/// Daytona as a [`SnapshotBuilder`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DaytonaSnapshots {
    client: Arc<DaytonaClient>,
}

/// The build context as Daytona takes it.
struct Context {
    dockerfile: String,
    archive: tempfile::NamedTempFile,
    sha256: String,
    size: u64,
}

impl DaytonaSnapshots {
    pub fn new(client: Arc<DaytonaClient>) -> Self {
        Self { client }
    }

    async fn find(&self, name: &str) -> Result<Option<Snapshot>, ApiError> {
        match self.client.get(&format!("/snapshots/{name}"), &[]).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a snapshot and waits until its name is free.
    async fn remove_and_wait(&self, snapshot: &Snapshot) -> Result<(), ApiError> {
        match self
            .client
            .delete(&format!("/snapshots/{}", snapshot.id))
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        }
        let deadline = tokio::time::Instant::now() + REMOVAL_WAIT;
        while self.find(&snapshot.name).await?.is_some() {
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::Transport {
                    call: format!("DELETE /snapshots/{}", snapshot.id),
                    reason: format!(
                        "snapshot {} still exists {} s after it was removed",
                        snapshot.name,
                        REMOVAL_WAIT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// Stores the context archive unless it is already stored; returns its hash.
    async fn upload(&self, context: &Context, log: &BuildLog) -> Result<String, ApiError> {
        let access: StorageAccess = self.client.get("/object-storage/push-access", &[]).await?;
        let upload = Upload {
            access: &access,
            hash: &context.sha256,
        };
        if upload.exists(&self.client).await? {
            log(&format!(
                "build context {} is already in Daytona's object storage",
                short(&context.sha256)
            ));
        } else {
            log(&format!(
                "uploading the build context {} ({} MiB) to Daytona's object storage",
                short(&context.sha256),
                context.size.div_ceil(1 << 20)
            ));
            upload
                .put(&self.client, context.archive.path(), &context.sha256)
                .await?;
        }
        Ok(context.sha256.clone())
    }

    async fn run_build(
        &self,
        name: &str,
        context: &Path,
        dockerfile: &str,
        hardware: Hardware,
        log: BuildLog,
    ) -> Result<u64, String> {
        let (path, inner) = (context.to_path_buf(), dockerfile.to_owned());
        let context = tokio::task::spawn_blocking(move || split_context(&path, &inner))
            .await
            .map_err(|e| format!("preparing the build context: {e}"))?
            .map_err(|e| format!("preparing the build context: {e}"))?;
        // A snapshot of this name from an earlier attempt: an active one has the same
        // content (the name is the content's hash), anything else is removed first.
        if let Some(existing) = self.find(name).await.map_err(|e| e.to_string())? {
            if existing.phase() == SnapshotPhase::Active {
                log(&format!("Daytona already has snapshot {name}, active"));
                return Ok(existing.size_bytes());
            }
            log(&format!(
                "removing Daytona snapshot {name} ({}) left by an earlier attempt",
                existing.state
            ));
            self.remove_and_wait(&existing)
                .await
                .map_err(|e| e.to_string())?;
        }
        let hash = self
            .upload(&context, &log)
            .await
            .map_err(|e| e.to_string())?;
        let request = create_request(name, context.dockerfile, hash, hardware);
        let created: Snapshot = match self.client.post("/snapshots", &request).await {
            Ok(s) => s,
            // Created meanwhile (a retried request that had gone through): follow it.
            Err(e) if e.is_conflict() => self
                .find(name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        };
        log(&format!(
            "Daytona snapshot {name} ({}) is {}",
            created.id, created.state
        ));
        let logs = {
            let (client, id, log) = (self.client.clone(), created.id.clone(), log.clone());
            AbortOnDrop(tokio::spawn(async move {
                let path = format!("/snapshots/{id}/build-logs");
                if let Err(e) = client
                    .follow_lines(&path, &[("follow", "true")], MAX_BUILD_LOG, |l| log(l))
                    .await
                {
                    tracing::debug!(error = %e, "following a Daytona build log");
                }
            }))
        };
        let mut state = created.state.clone();
        let outcome = loop {
            let now: Snapshot = self
                .client
                .get(&format!("/snapshots/{}", created.id), &[])
                .await
                .map_err(|e| e.to_string())?;
            if now.state != state {
                state.clone_from(&now.state);
                log(&format!("Daytona snapshot {name} is {state}"));
            }
            match now.phase() {
                SnapshotPhase::Active => break Ok(now.size_bytes()),
                SnapshotPhase::Failed(why) => break Err(why),
                SnapshotPhase::Waiting => tokio::time::sleep(POLL).await,
            }
        };
        // The log's last lines arrive just after the state changes.
        let _ = tokio::time::timeout(Duration::from_secs(3), logs.wait()).await;
        outcome
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// The `POST /snapshots` body of a build.
pub(crate) fn create_request(
    name: &str,
    dockerfile: String,
    context_hash: String,
    hardware: Hardware,
) -> CreateSnapshot {
    CreateSnapshot {
        name: name.to_owned(),
        entrypoint: Some(vec![ENTRYPOINT.to_owned()]),
        cpu: hardware.cpu,
        memory: hardware.memory_gib,
        disk: hardware.disk_gib,
        build_info: CreateBuildInfo {
            dockerfile_content: dockerfile,
            context_hashes: vec![context_hash],
        },
    }
}

/// Splits the composed context archive into the Dockerfile's text and the archive Daytona
/// unpacks beside it: everything but that Dockerfile, and but a `Dockerfile` at the root,
/// where the runner writes the composed one (a user's Dockerfile sits there when the
/// template's Dockerfile is at the top of its context; the runner would build that one
/// otherwise). Hashes the archive as it is written (blocking I/O).
fn split_context(context: &Path, dockerfile: &str) -> std::io::Result<Context> {
    let mut input = tar::Archive::new(std::io::BufReader::new(std::fs::File::open(context)?));
    let archive = tempfile::NamedTempFile::new()?;
    let hashing = Hashing {
        inner: std::io::BufWriter::new(archive.reopen()?),
        digest: digest::Context::new(&digest::SHA256),
        size: 0,
    };
    let mut out = tar::Builder::new(hashing);
    out.mode(tar::HeaderMode::Deterministic);
    let mut text = None;
    for entry in input.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if path == dockerfile {
            let mut s = String::new();
            entry.read_to_string(&mut s)?;
            text = Some(s);
            continue;
        }
        if path == RUNNER_DOCKERFILE {
            continue;
        }
        let mut header = entry.header().clone();
        match entry.link_name()? {
            Some(target) if header.entry_type().is_symlink() => {
                let target = target.into_owned();
                out.append_link(&mut header, &path, target)?;
            }
            _ => out.append_data(&mut header, &path, &mut entry)?,
        }
    }
    let mut hashing = out.into_inner()?;
    hashing.inner.flush()?;
    let dockerfile = text.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("the build context has no {dockerfile}"),
        )
    })?;
    Ok(Context {
        dockerfile,
        archive,
        sha256: hex::encode(hashing.digest.finish().as_ref()),
        size: hashing.size,
    })
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    digest: digest::Context,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Ends the log follower however the build ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    async fn wait(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SnapshotBuilder for DaytonaSnapshots {
    fn build<'a>(
        &'a self,
        name: &'a str,
        context: &'a Path,
        dockerfile: &'a str,
        hardware: Hardware,
        log: BuildLog,
    ) -> BoxFuture<'a, Result<u64, BuildFailure>> {
        Box::pin(async move {
            self.run_build(name, context, dockerfile, hardware, log)
                .await
                .map_err(BuildFailure)
        })
    }

    fn exists<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, SandboxError>> {
        Box::pin(async move {
            self.find(name)
                .await
                .map(|s| s.is_some_and(|s| s.phase() == SnapshotPhase::Active))
                .map_err(|e| SandboxError::Engine(e.to_string()))
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let Some(snapshot) = self
                .find(name)
                .await
                .map_err(|e| SandboxError::Engine(e.to_string()))?
            else {
                return Ok(());
            };
            match self
                .client
                .delete(&format!("/snapshots/{}", snapshot.id))
                .await
            {
                Ok(()) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(SandboxError::Engine(e.to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_travels_without_the_dockerfiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("context.tar");
        {
            let mut tar = tar::Builder::new(std::fs::File::create(&path).unwrap());
            for (name, data, mode) in [
                ("Dockerfile", &b"FROM user\n"[..], 0o644),
                ("marker.txt", b"marker\n", 0o644),
                (
                    ".kortix-runtime/Dockerfile",
                    b"FROM user\nRUN layer\n",
                    0o644,
                ),
                (".kortix-runtime/kortix-agent", b"\x7fELF", 0o755),
            ] {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(mode);
                tar.append_data(&mut h, name, data).unwrap();
            }
            tar.finish().unwrap();
        }
        let context = split_context(&path, ".kortix-runtime/Dockerfile").unwrap();
        assert_eq!(context.dockerfile, "FROM user\nRUN layer\n");
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(std::fs::File::open(context.archive.path()).unwrap());
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            names.push((
                entry.path().unwrap().to_string_lossy().into_owned(),
                entry.header().mode().unwrap(),
            ));
        }
        assert_eq!(
            names,
            [
                ("marker.txt".to_owned(), 0o644),
                (".kortix-runtime/kortix-agent".to_owned(), 0o755)
            ]
        );
        let bytes = std::fs::read(context.archive.path()).unwrap();
        assert_eq!(context.size, bytes.len() as u64);
        assert_eq!(
            context.sha256,
            hex::encode(digest::digest(&digest::SHA256, &bytes).as_ref())
        );
        // The same input, the same hash: an unchanged context is not uploaded twice.
        let again = split_context(&path, ".kortix-runtime/Dockerfile").unwrap();
        assert_eq!(again.sha256, context.sha256);
        assert!(split_context(&path, "nope").is_err());
    }

    #[test]
    fn the_snapshot_carries_the_templates_hardware() {
        let body = create_request(
            "kortix-snap-a-b",
            "FROM x\n".into(),
            "h".into(),
            Hardware {
                cpu: Some(2),
                memory_gib: Some(4),
                disk_gib: None,
            },
        );
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "name": "kortix-snap-a-b",
                "entrypoint": [ENTRYPOINT],
                "cpu": 2,
                "memory": 4,
                "buildInfo": {"dockerfileContent": "FROM x\n", "contextHashes": ["h"]}
            })
        );
    }
}
