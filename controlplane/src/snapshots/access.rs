//! Snapshots for people: the caller's project, its manifest's template, and the rules of who
//! may prune what.

use std::time::Duration;

use super::{Rebuild, Snapshots};
use crate::auth::Caller;
use crate::error::{DomainError, DomainResult};
use crate::manifests::Manifests;
use crate::sandbox::BuildLog;
use crate::store::{Snapshot, Store};

/// The snapshot service as people reach it; `None` inside when the provider builds none.
#[derive(Clone)]
pub struct SnapshotAccess {
    store: Store,
    manifests: std::sync::Arc<Manifests>,
    snapshots: Option<Snapshots>,
}

impl SnapshotAccess {
    pub fn new(
        store: Store,
        manifests: std::sync::Arc<Manifests>,
        snapshots: Option<Snapshots>,
    ) -> Self {
        Self {
            store,
            manifests,
            snapshots,
        }
    }

    fn service(&self) -> DomainResult<&Snapshots> {
        self.snapshots.as_ref().ok_or_else(|| {
            DomainError::Precondition(
                "this control plane's sandbox provider boots no images, so it has no snapshots (kortix server --sandbox docker does)".into(),
            )
        })
    }

    pub async fn list(&self, caller: &Caller, project: &str) -> DomainResult<Vec<Snapshot>> {
        let snapshots = self.service()?;
        let project = crate::projects::owned(&self.store, caller, project).await?;
        snapshots.list(&project).await
    }

    /// Builds (or finds) the snapshot of `template` (empty: the project's default), building
    /// a failed one again. The build runs to its end even if the caller goes away.
    pub async fn build(
        &self,
        caller: &Caller,
        project: &str,
        template: &str,
        log: BuildLog,
    ) -> DomainResult<Snapshot> {
        let snapshots = self.service()?.clone();
        let project = crate::projects::owned(&self.store, caller, project).await?;
        let manifest = self
            .manifests
            .get(&project.id, &project.default_branch)
            .await?
            .for_session()
            .map_err(|why| DomainError::Precondition(format!("project {}: {why}", project.name)))?;
        let requested = (!template.is_empty()).then_some(template);
        let resolved = manifest
            .resolve_template(requested)
            .map_err(|e| DomainError::Invalid(e.to_string()))?;
        let recipe = snapshots.recipe(&project, resolved).await?;
        tokio::spawn(async move {
            snapshots
                .ensure(&recipe, Rebuild::IfFailed, Some(log))
                .await
        })
        .await
        .map_err(|e| DomainError::Internal(format!("building a snapshot: {e}")))?
    }

    /// Prunes one project's snapshots, or with `project` empty every project's (admins only).
    pub async fn prune(
        &self,
        caller: &Caller,
        project: &str,
        unused_for: Duration,
    ) -> DomainResult<Vec<String>> {
        let snapshots = self.service()?;
        if project.is_empty() {
            if !caller.admin {
                return Err(DomainError::PermissionDenied(
                    "pruning every project's snapshots needs an admin token; name a project".into(),
                ));
            }
            return snapshots.prune(None, unused_for).await;
        }
        let project = crate::projects::owned(&self.store, caller, project).await?;
        snapshots.prune(Some(&project), unused_for).await
    }
}
