//! Snapshot builds through `POST /build`: the context archive streamed from its file, the
//! output's lines passed on as they come, the image's size read back when it is done.

use futures::StreamExt;
use futures::future::BoxFuture;
use std::path::Path;

use super::engine::{DockerEngine, is_not_found, summary_name};
use super::pool::{LABEL_POOL, MEMBER_PREFIX};
use super::provider::LABEL_SNAPSHOT;
use crate::sandbox::{BuildFailure, BuildLog, SandboxError, SnapshotBuilder};

impl SnapshotBuilder for DockerEngine {
    fn build<'a>(
        &'a self,
        name: &'a str,
        context: &'a Path,
        dockerfile: &'a str,
        _hardware: crate::snapshots::Hardware,
        log: BuildLog,
    ) -> BoxFuture<'a, Result<u64, BuildFailure>> {
        Box::pin(async move {
            let file = tokio::fs::File::open(context)
                .await
                .map_err(|e| BuildFailure(format!("opening the build context: {e}")))?;
            let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
            let labels = std::collections::HashMap::from([("kortix.snapshot", name)]);
            let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
                .dockerfile(dockerfile)
                .t(name)
                .rm(true)
                .forcerm(true)
                .labels(&labels)
                .build();
            let mut stream = self.docker.build_image(options, None, Some(body));
            let mut partial = String::new();
            while let Some(item) = stream.next().await {
                let info = match item {
                    Ok(info) => info,
                    Err(e) => {
                        flush(&mut partial, &log, true);
                        return Err(BuildFailure(build_error(e)));
                    }
                };
                if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                    partial.push_str(text);
                    flush(&mut partial, &log, false);
                }
                if let Some(detail) = info.error_detail {
                    flush(&mut partial, &log, true);
                    return Err(BuildFailure(
                        detail.message.unwrap_or_else(|| "the build failed".into()),
                    ));
                }
            }
            flush(&mut partial, &log, true);
            let image = self.docker.inspect_image(name).await.map_err(|e| {
                BuildFailure(format!(
                    "the build ended but image {name} is not there: {e}"
                ))
            })?;
            Ok(image.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
        })
    }

    fn keeps_images(&self) -> bool {
        true
    }

    fn exists<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, SandboxError>> {
        Box::pin(async move {
            match self.docker.inspect_image(name).await {
                Ok(_) => Ok(true),
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => Err(self.error(&format!("inspecting image {name}"), e)),
            }
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            // A warm pool's members hold the image (the engine refuses to remove an image a
            // container uses); no session has them yet, so they go with it, on any replica.
            // A replica whose pool still lists one finds it gone when it hands it out and
            // starts a new container instead.
            for member in self.pool_members_of(name).await? {
                super::provider::remove(self, &member).await?;
            }
            let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
                .force(false)
                .build();
            match self.docker.remove_image(name, Some(options), None).await {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(self.error(&format!("removing image {name}"), e)),
            }
        })
    }
}

impl DockerEngine {
    /// The warm pool's unassigned members made from image `name` (an assigned one is renamed
    /// to its session's container and no longer counts).
    async fn pool_members_of(&self, name: &str) -> Result<Vec<String>, SandboxError> {
        let listed = self
            .containers_labelled(
                &format!("{LABEL_SNAPSHOT}={name}"),
                &format!("the warm containers of {name}"),
            )
            .await?;
        Ok(listed
            .iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(LABEL_POOL))
            })
            .filter_map(summary_name)
            .filter(|n| n.starts_with(MEMBER_PREFIX))
            .collect())
    }
}

const MAX_PARTIAL: usize = 64 * 1024;

/// Passes on the complete lines of `partial` (all of it when `all`), keeping the rest.
fn flush(partial: &mut String, log: &BuildLog, all: bool) {
    while let Some(end) = partial.find('\n') {
        let line: String = partial.drain(..=end).collect();
        let line = line.trim_end();
        if !line.is_empty() {
            log(line);
        }
    }
    // A line that never ends is passed on in pieces rather than held without bound.
    if (all || partial.len() > MAX_PARTIAL) && !partial.trim().is_empty() {
        log(partial.trim_end());
        partial.clear();
    }
}

fn build_error(e: bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerStreamError { error } => error,
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    }
}
