//! Snapshots for people: the caller's project, its manifest's template, and the rules of who
//! may prune what.

use std::time::Duration;

use super::{Rebuild, Snapshots};
use crate::auth::Caller;
use crate::error::{DomainError, DomainResult};
use crate::manifests::Manifests;
use crate::permissions;
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
                "this control plane's sandbox provider boots no images, so it has no snapshots (kortix server --sandbox docker or --sandbox daytona does)".into(),
            )
        })
    }

    pub async fn list(&self, caller: &Caller, project: &str) -> DomainResult<Vec<Snapshot>> {
        let project = permissions::project(&self.store, caller, project).await?;
        self.service()?.list(&project).await
    }

    /// Checks the caller may build `template` (empty: the project's default) and resolves
    /// its recipe; [`PreparedBuild::run`] then builds (or finds) the snapshot.
    pub async fn prepare_build(
        &self,
        caller: &Caller,
        project: &str,
        template: &str,
    ) -> DomainResult<PreparedBuild> {
        let project = permissions::project(&self.store, caller, project).await?;
        let snapshots = self.service()?.clone();
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
        Ok(PreparedBuild { snapshots, recipe })
    }

    /// Prunes one project's snapshots, or with `project` empty every project's (the server
    /// admin only).
    pub async fn prune(
        &self,
        caller: &Caller,
        project: &str,
        unused_for: Duration,
    ) -> DomainResult<Vec<String>> {
        if project.is_empty() {
            if !caller.server_admin {
                return Err(DomainError::PermissionDenied(
                    "pruning every project's snapshots needs the server admin token; name a project".into(),
                ));
            }
            return self.service()?.prune(None, unused_for).await;
        }
        let project = permissions::project(&self.store, caller, project).await?;
        self.service()?.prune(Some(&project), unused_for).await
    }
}

/// A snapshot build the caller may run.
pub struct PreparedBuild {
    snapshots: Snapshots,
    recipe: super::Recipe,
}

impl PreparedBuild {
    /// Builds (or finds) the snapshot, building a failed one again. The build runs to its
    /// end even if the caller goes away.
    pub async fn run(self, log: BuildLog) -> DomainResult<Snapshot> {
        let Self { snapshots, recipe } = self;
        tokio::spawn(async move {
            snapshots
                .ensure(&recipe, Rebuild::IfFailed, Some(log))
                .await
        })
        .await
        .map_err(|e| DomainError::Internal(format!("building a snapshot: {e}")))?
    }
}
