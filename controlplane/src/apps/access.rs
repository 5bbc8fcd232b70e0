//! Apps as people reach them: list (project viewers), deploy and roll back (the role that
//! changes the project's settings, manager), build logs (viewers). Every call resolves the
//! caller's project first — a project they may not see is "not found" whether or not apps
//! are on — then refuses while the flag is off. Deploys and rollbacks are audited.

use kortix_manifest::App;

use super::deploy::Reason;
use super::{Apps, hash};
use crate::audit::{self, Event};
use crate::auth::Caller;
use crate::error::{DomainError, DomainResult, check_len};
use crate::permissions;
use crate::store::{AppRow, Deployment, Project};

const MAX_SLUG: usize = 128;

/// One app as `kortix apps ls` shows it.
#[derive(Debug, Clone)]
pub struct AppView {
    pub slug: String,
    pub name: String,
    pub enabled: bool,
    pub domains: Vec<String>,
    /// `git` or `tar`; empty when the app left the manifest.
    pub source_type: String,
    /// The hash of the manifest's entry now; empty when it left the manifest.
    pub hash: String,
    pub url: String,
    pub in_manifest: bool,
    pub active: Option<Deployment>,
    pub latest: Option<Deployment>,
}

/// A deployment and whether it is the one served.
#[derive(Debug, Clone)]
pub struct DeploymentView {
    pub deployment: Deployment,
    pub active: bool,
}

impl Apps {
    async fn project_for(&self, caller: &Caller, project: &str) -> DomainResult<Project> {
        let project = permissions::project(self.store(), caller, project).await?;
        self.require_enabled()?;
        Ok(project)
    }

    async fn manifest_app(&self, project: &Project, slug: &str) -> DomainResult<App> {
        check_len("the app slug", slug, MAX_SLUG)?;
        if slug.is_empty() {
            return Err(DomainError::Invalid("an app slug is required".into()));
        }
        let manifest = self
            .manifests()
            .get(&project.id, &project.default_branch)
            .await?;
        let manifest = manifest
            .for_session()
            .map_err(|why| DomainError::Precondition(format!("project {}: {why}", project.name)))?;
        if let Some(app) = manifest.app(slug) {
            return Ok(app.clone());
        }
        if let Some(problem) = manifest
            .errors
            .iter()
            .find(|d| d.section == "apps" && d.slug.as_deref() == Some(slug))
        {
            return Err(DomainError::Precondition(format!(
                "app '{slug}' in kortix.toml is invalid: {}",
                problem.message
            )));
        }
        Err(DomainError::NotFound(format!(
            "app '{slug}' not found in the manifest of project '{}'",
            project.name
        )))
    }

    async fn view_of(
        &self,
        project: &Project,
        app: Option<&App>,
        row: Option<&AppRow>,
        slug: &str,
    ) -> DomainResult<AppView> {
        let deployments = self.store().list_deployments(&project.id, slug, 1).await?;
        let active = match row.and_then(|r| r.active_deployment.as_deref()) {
            Some(id) => self.store().get_deployment(id).await?,
            None => None,
        };
        Ok(AppView {
            slug: slug.to_string(),
            name: app
                .map(|a| a.name.clone())
                .or_else(|| row.map(|r| r.name.clone()))
                .unwrap_or_else(|| slug.to_string()),
            enabled: app.is_some_and(|a| a.enabled),
            domains: app.map(|a| a.domains.clone()).unwrap_or_default(),
            source_type: app
                .map(|a| a.source.kind.as_str().to_string())
                .unwrap_or_default(),
            hash: app.map(hash::of).unwrap_or_default(),
            url: self.url(&project.name, slug),
            in_manifest: app.is_some(),
            active,
            latest: deployments.into_iter().next(),
        })
    }

    /// The project's apps: the manifest's, then the recorded ones that left it.
    pub async fn list_for(&self, caller: &Caller, project: &str) -> DomainResult<Vec<AppView>> {
        let project = self.project_for(caller, project).await?;
        let manifest = self
            .manifests()
            .get(&project.id, &project.default_branch)
            .await?;
        let apps: Vec<App> = manifest
            .manifest()
            .map(|m| m.apps.clone())
            .unwrap_or_default();
        let rows = self.store().list_apps(&project.id).await?;
        let mut out = Vec::new();
        for app in &apps {
            let row = rows.iter().find(|r| r.slug == app.slug);
            out.push(self.view_of(&project, Some(app), row, &app.slug).await?);
        }
        for row in rows
            .iter()
            .filter(|r| !apps.iter().any(|a| a.slug == r.slug))
        {
            out.push(self.view_of(&project, None, Some(row), &row.slug).await?);
        }
        Ok(out)
    }

    async fn view(
        &self,
        project: &Project,
        deployment: Deployment,
    ) -> DomainResult<DeploymentView> {
        let active = self
            .store()
            .get_app(&project.id, &deployment.slug)
            .await?
            .and_then(|r| r.active_deployment)
            .is_some_and(|id| id == deployment.id);
        Ok(DeploymentView { deployment, active })
    }

    /// Deploys the app now from the manifest on the default branch, whatever its hash; with
    /// `wait`, returns once the build has ended.
    pub async fn deploy_for(
        &self,
        caller: &Caller,
        project: &str,
        slug: &str,
        wait: bool,
    ) -> DomainResult<DeploymentView> {
        let project = self.project_for(caller, project).await?;
        let app = self.manifest_app(&project, slug).await?;
        if !app.enabled {
            return Err(DomainError::Precondition(format!(
                "app '{slug}' is disabled in kortix.toml (enabled = false)"
            )));
        }
        // The sweep then has nothing left to do for this hash.
        self.store()
            .set_app_hash(
                &project.id,
                slug,
                &hash::of(&app),
                &app.name,
                crate::clock::now_ms(),
            )
            .await?;
        let requested_by = format!("person:{}", caller.person_id);
        let (deployment, handle) = self
            .start_deployment(&project, &app, Reason::Manual, &requested_by)
            .await?;
        audit::record(
            self.store(),
            caller,
            Event::in_project("app.deploy", &project, slug).with_detail(&deployment.id),
        )
        .await;
        let deployment = if wait {
            handle
                .await
                .map_err(|e| DomainError::Internal(format!("the deployment's task: {e}")))?
        } else {
            deployment
        };
        self.view(&project, deployment).await
    }

    /// A deployment of the app (the latest unless `deployment_id` names one), with its log.
    pub async fn logs_for(
        &self,
        caller: &Caller,
        project: &str,
        slug: &str,
        deployment_id: &str,
    ) -> DomainResult<DeploymentView> {
        let project = self.project_for(caller, project).await?;
        check_len("the app slug", slug, MAX_SLUG)?;
        check_len("the deployment id", deployment_id, 64)?;
        let deployment = if deployment_id.is_empty() {
            self.store()
                .list_deployments(&project.id, slug, 1)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    DomainError::NotFound(format!("app '{slug}' has no deployments yet"))
                })?
        } else {
            self.store()
                .get_deployment(deployment_id)
                .await?
                .filter(|d| d.project_id == project.id && d.slug == slug)
                .ok_or_else(|| {
                    DomainError::NotFound(format!(
                        "deployment {deployment_id} of app '{slug}' not found"
                    ))
                })?
        };
        self.view(&project, deployment).await
    }

    /// Serves the app's previous successful deployment again.
    pub async fn rollback_for(
        &self,
        caller: &Caller,
        project: &str,
        slug: &str,
    ) -> DomainResult<DeploymentView> {
        let project = self.project_for(caller, project).await?;
        check_len("the app slug", slug, MAX_SLUG)?;
        let deployment = self.rollback(&project, slug).await?;
        audit::record(
            self.store(),
            caller,
            Event::in_project("app.rollback", &project, slug).with_detail(&deployment.id),
        )
        .await;
        self.view(&project, deployment).await
    }
}
