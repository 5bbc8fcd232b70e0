//! `SnapshotService`: transport for [`crate::snapshots::access::SnapshotAccess`].

use super::authn::caller;
use crate::snapshots::access::SnapshotAccess;
use crate::store::Snapshot;
use kortix_proto::v1::snapshot_service_server::SnapshotService;
use kortix_proto::v1::*;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Build lines queued for a slow reader; beyond that, lines are skipped (the build goes on).
const BUILD_STREAM: usize = 1024;

pub struct Snapshots {
    access: SnapshotAccess,
}

impl Snapshots {
    pub fn new(access: SnapshotAccess) -> Self {
        Self { access }
    }
}

pub fn snapshot(s: &Snapshot) -> SnapshotInfo {
    SnapshotInfo {
        name: s.name.clone(),
        hash: s.hash.clone(),
        template: s.template.clone(),
        status: s.status.as_str().to_string(),
        size_bytes: s.size_bytes.unwrap_or(0),
        created_unix_ms: s.created_ms,
        last_used_unix_ms: s.last_used_ms,
        failure_reason: s.failure_reason.clone(),
    }
}

type BuildStream = Pin<Box<dyn Stream<Item = Result<BuildSnapshotEvent, Status>> + Send>>;

#[tonic::async_trait]
impl SnapshotService for Snapshots {
    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let who = caller(&request)?;
        let list = self
            .access
            .list(&who, &request.into_inner().project)
            .await?;
        Ok(Response::new(ListSnapshotsResponse {
            snapshots: list.iter().map(snapshot).collect(),
        }))
    }

    type BuildSnapshotStream = BuildStream;

    async fn build_snapshot(
        &self,
        request: Request<BuildSnapshotRequest>,
    ) -> Result<Response<BuildStream>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        // Refusals and bad templates answer the call itself, before any stream.
        let build = self
            .access
            .prepare_build(&who, &req.project, &req.template)
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(BUILD_STREAM);
        let lines = tx.clone();
        let log: crate::sandbox::BuildLog = Arc::new(move |line: &str| {
            let _ = lines.try_send(Ok(BuildSnapshotEvent {
                event: Some(build_snapshot_event::Event::LogLine(line.to_string())),
            }));
        });
        tokio::spawn(async move {
            let end = match build.run(log).await {
                Ok(s) => Ok(BuildSnapshotEvent {
                    event: Some(build_snapshot_event::Event::Snapshot(snapshot(&s))),
                }),
                Err(e) => Err(Status::from(e)),
            };
            let _ = tx.send(end).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn prune_snapshots(
        &self,
        request: Request<PruneSnapshotsRequest>,
    ) -> Result<Response<PruneSnapshotsResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let removed = self
            .access
            .prune(
                &who,
                &req.project,
                std::time::Duration::from_secs(req.unused_for_secs),
            )
            .await?;
        Ok(Response::new(PruneSnapshotsResponse { removed }))
    }
}
