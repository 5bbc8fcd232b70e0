//! Connectors as people see them: the project's connectors with their state, a connector's
//! tools with their effective policy, and setting credentials (the shared one needs a
//! manager, one's own `per_user` credential an editor).

use kortix_manifest::{AuthType, Connector, Credential};
use kortix_proto::v1::{ConnectorInfo, ConnectorTool};

use super::broker::tool_views;
use super::credentials::{self, Owner};
use super::upstream::AppliedAuth;
use super::{Connectors, find};
use crate::auth::Caller;
use crate::error::{DomainError, DomainResult, check_len};
use crate::permissions::ProjectRole;
use crate::store::Project;

const MAX_SLUG: usize = 128;

/// A connector and what the control plane made of it.
pub type ConnectorView = ConnectorInfo;

impl Connectors {
    pub async fn list(&self, caller: &Caller, project: &str) -> DomainResult<Vec<ConnectorView>> {
        let project = crate::permissions::project(&self.inner.store, caller, project).await?;
        let (manifest, head) = self.manifest(&project).await?;
        let set = self
            .inner
            .store
            .connector_credentials_set(&project.id)
            .await?;
        let mut out = Vec::new();
        for c in &manifest.connectors {
            out.push(self.view(caller, &project, &head, c, &set).await?);
        }
        Ok(out)
    }

    pub async fn tools(
        &self,
        caller: &Caller,
        project: &str,
        slug: &str,
    ) -> DomainResult<Vec<ConnectorTool>> {
        check_len("the connector", slug, MAX_SLUG)?;
        let project = crate::permissions::project(&self.inner.store, caller, project).await?;
        let (manifest, head) = self.manifest(&project).await?;
        let c = find(&manifest, &project, slug)?;
        let auth = self.person_auth(caller, &project, c).await;
        let catalog = self.inner.catalogs.get(&project, &head, c, &auth).await;
        if let Some(why) = &catalog.unavailable {
            return Err(DomainError::Precondition(format!(
                "connector {slug} of project {} is unavailable: {why}",
                project.name
            )));
        }
        Ok(tool_views(c, &catalog))
    }

    /// Stores the connector's shared credential, or with `mine` the caller's own.
    pub async fn set_credential(
        &self,
        caller: &Caller,
        project: &str,
        slug: &str,
        value: &str,
        mine: bool,
    ) -> DomainResult<ConnectorView> {
        check_len("the connector", slug, MAX_SLUG)?;
        let (project, role) =
            crate::permissions::project_role(&self.inner.store, caller, project).await?;
        let needed = if mine {
            ProjectRole::Editor
        } else {
            ProjectRole::Manager
        };
        if role < needed {
            return Err(DomainError::PermissionDenied(format!(
                "setting {} credential of a connector needs the project role {needed} on project '{}'; you are {role}",
                if mine { "your own" } else { "the shared" },
                project.name
            )));
        }
        let (manifest, head) = self.manifest(&project).await?;
        let c = find(&manifest, &project, slug)?;
        let auth = c
            .auth
            .as_ref()
            .filter(|a| a.kind != AuthType::None)
            .ok_or_else(|| {
                DomainError::Invalid(format!(
                    "connector {slug} needs no credential ([connectors.auth] type is none)"
                ))
            })?;
        if let Some(secret) = &auth.secret {
            return Err(DomainError::Invalid(format!(
                "connector {slug} takes its credential from the project secret {secret}: set that with `kortix secrets set`"
            )));
        }
        let owner = match (c.credential, mine) {
            (Credential::PerUser, true) => Owner::Person(caller.person_id.clone()),
            (Credential::Shared, false) => Owner::Shared,
            (Credential::PerUser, false) => {
                return Err(DomainError::Invalid(format!(
                    "connector {slug} uses each person's own credential (credential = \"per_user\"): set yours with --mine"
                )));
            }
            (Credential::Shared, true) => {
                return Err(DomainError::Invalid(format!(
                    "connector {slug} uses the project's shared credential (credential = \"shared\"): set it without --mine"
                )));
            }
        };
        self.inner
            .credentials
            .put(&project.id, slug, &owner, value)
            .await?;
        tracing::info!(project = %project.name, connector = %slug, mine, "connector credential set");
        crate::audit::record(
            &self.inner.store,
            caller,
            crate::audit::Event::in_project("connector.credential.set", &project, slug),
        )
        .await;
        let set = self
            .inner
            .store
            .connector_credentials_set(&project.id)
            .await?;
        self.view(caller, &project, &head, c, &set).await
    }

    async fn view(
        &self,
        caller: &Caller,
        project: &Project,
        head: &str,
        c: &Connector,
        set: &[(String, String)],
    ) -> DomainResult<ConnectorView> {
        let auth = self.person_auth(caller, project, c).await;
        let catalog = self.inner.catalogs.get(project, head, c, &auth).await;
        Ok(ConnectorInfo {
            slug: c.slug.clone(),
            name: c.name.clone(),
            provider: c.provider.as_str().into(),
            enabled: c.enabled,
            credential: c.credential.as_str().into(),
            credential_state: self
                .inner
                .credentials
                .state(&project.id, c, &caller.person_id, set)
                .await?
                .into(),
            tool_count: catalog.tools.len() as u32,
            unavailable: catalog.unavailable.clone().unwrap_or_default(),
        })
    }

    /// The credential a person's view of the catalog is fetched with (a spec or tool list
    /// behind the upstream's auth): theirs or the shared one; none when there is none.
    async fn person_auth(&self, caller: &Caller, project: &Project, c: &Connector) -> AppliedAuth {
        if !credentials::needs_credential(c) {
            return AppliedAuth::default();
        }
        let owner = match c.credential {
            Credential::Shared => Owner::Shared,
            Credential::PerUser => Owner::Person(caller.person_id.clone()),
        };
        match self
            .inner
            .credentials
            .value_for(&project.id, c, Some(&owner))
            .await
        {
            Ok(v) => credentials::apply(c, v.as_ref()),
            Err(_) => AppliedAuth::default(),
        }
    }
}
