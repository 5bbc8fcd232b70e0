//! `AppService`: transport for [`crate::apps::Apps`]' people-facing calls (`apps::access`).

use super::authn::caller;
use crate::apps::Apps;
use crate::apps::access::{AppView, DeploymentView};
use crate::store::Deployment;
use kortix_proto::v1::app_service_server::AppService;
use kortix_proto::v1::*;
use tonic::{Request, Response, Status};

pub struct AppsApi {
    apps: Apps,
}

impl AppsApi {
    pub fn new(apps: Apps) -> Self {
        Self { apps }
    }
}

pub fn deployment(d: &Deployment, active: bool) -> DeploymentInfo {
    DeploymentInfo {
        id: d.id.clone(),
        slug: d.slug.clone(),
        hash: d.hash.clone(),
        status: d.status.as_str().to_string(),
        reason: d.reason.clone(),
        source_revision: d.source_revision.clone(),
        failure_reason: d.failure_reason.clone(),
        created_unix_ms: d.created_ms,
        finished_unix_ms: d.finished_ms.unwrap_or(0),
        active,
    }
}

fn view(v: &DeploymentView) -> DeploymentInfo {
    deployment(&v.deployment, v.active)
}

fn app(a: &AppView) -> AppInfo {
    let active_id = a.active.as_ref().map(|d| d.id.as_str());
    AppInfo {
        slug: a.slug.clone(),
        name: a.name.clone(),
        enabled: a.enabled,
        domains: a.domains.clone(),
        source_type: a.source_type.clone(),
        hash: a.hash.clone(),
        url: a.url.clone(),
        active: a.active.as_ref().map(|d| deployment(d, true)),
        latest: a
            .latest
            .as_ref()
            .map(|d| deployment(d, Some(d.id.as_str()) == active_id)),
        in_manifest: a.in_manifest,
    }
}

#[tonic::async_trait]
impl AppService for AppsApi {
    async fn list_apps(
        &self,
        request: Request<ListAppsRequest>,
    ) -> Result<Response<ListAppsResponse>, Status> {
        let who = caller(&request)?;
        let apps = self
            .apps
            .list_for(&who, &request.into_inner().project)
            .await?;
        Ok(Response::new(ListAppsResponse {
            apps: apps.iter().map(app).collect(),
        }))
    }

    async fn deploy_app(
        &self,
        request: Request<DeployAppRequest>,
    ) -> Result<Response<DeploymentInfo>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let v = self
            .apps
            .deploy_for(&who, &req.project, &req.slug, req.wait)
            .await?;
        Ok(Response::new(view(&v)))
    }

    async fn get_app_logs(
        &self,
        request: Request<GetAppLogsRequest>,
    ) -> Result<Response<GetAppLogsResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let v = self
            .apps
            .logs_for(&who, &req.project, &req.slug, &req.deployment_id)
            .await?;
        Ok(Response::new(GetAppLogsResponse {
            lines: v.deployment.logs.lines().map(str::to_string).collect(),
            deployment: Some(view(&v)),
        }))
    }

    async fn rollback_app(
        &self,
        request: Request<RollbackAppRequest>,
    ) -> Result<Response<DeploymentInfo>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let v = self
            .apps
            .rollback_for(&who, &req.project, &req.slug)
            .await?;
        Ok(Response::new(view(&v)))
    }
}
