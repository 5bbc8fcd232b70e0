//! The `TriggerService` gRPC API: list triggers with their next fire time and last firing,
//! fire one now, list firings.
//!
//! Callers are identified by the [`Principal`] the auth interceptor puts in the request's
//! extensions. A project the caller's account does not own is NOT_FOUND, exactly like a
//! missing one.

use chrono::{DateTime, Utc};
use kortix_manifest::{Trigger, TriggerKind};
use kortix_proto::v1 as pb;
use kortix_proto::v1::trigger_service_server::{TriggerService, TriggerServiceServer};
use tonic::{Request, Response, Status};

use super::firing::{self, FireRequest, Source};
use super::{TriggerError, Triggers, webhook_path};
use crate::auth::Principal;
use crate::store::{self, Firing, Project};

/// Largest page of firings returned at once.
const MAX_FIRINGS_PAGE: u32 = 500;
const DEFAULT_FIRINGS_PAGE: u32 = 50;

#[derive(Clone)]
pub struct TriggerServiceImpl {
    triggers: Triggers,
}

impl TriggerServiceImpl {
    pub fn new(triggers: Triggers) -> Self {
        TriggerServiceImpl { triggers }
    }

    /// The tonic service, ready for `Server::add_service` (behind the auth interceptor).
    pub fn into_server(self) -> TriggerServiceServer<Self> {
        TriggerServiceServer::new(self)
    }

    async fn project<T>(&self, request: &Request<T>, project: &str) -> Result<Project, Status> {
        let principal = request
            .extensions()
            .get::<Principal>()
            .ok_or_else(|| Status::unauthenticated("no credentials"))?;
        if project.is_empty() {
            return Err(Status::invalid_argument("project is required"));
        }
        let account_id = principal
            .account_id()
            .ok_or_else(|| Status::permission_denied("session tokens cannot manage triggers"))?;
        let found = self.triggers.store().get_project(account_id, project).await;
        found.map_err(store_status)
    }
}

fn store_status(e: store::Error) -> Status {
    match e {
        store::Error::NotFound(_) => Status::not_found(e.to_string()),
        store::Error::Invalid { .. } => Status::invalid_argument(e.to_string()),
        other => {
            tracing::error!(error = %other, "trigger service");
            Status::internal(other.to_string())
        }
    }
}

fn trigger_status(e: TriggerError) -> Status {
    match e {
        TriggerError::Store(e) => store_status(e),
        other => {
            tracing::error!(error = %other, "trigger service");
            Status::internal(other.to_string())
        }
    }
}

pub fn firing_to_proto(f: &Firing) -> pb::Firing {
    pb::Firing {
        id: f.id.clone(),
        trigger_slug: f.trigger_slug.clone(),
        firing_key: f.firing_key.clone(),
        fired_unix_ms: f.fired_ms,
        scheduled_unix_ms: f.scheduled_ms.unwrap_or(0),
        outcome: f.outcome.as_str().to_owned(),
        session_id: f.session_id.clone().unwrap_or_default(),
        error: f.error.clone().unwrap_or_default(),
        catch_up: f.catch_up,
    }
}

fn trigger_to_proto(
    project: &Project,
    t: &Trigger,
    now: DateTime<Utc>,
    last: Option<&Firing>,
) -> pb::Trigger {
    let next = match t.kind {
        TriggerKind::Cron if t.enabled => t.next_after(now).map(|n| n.timestamp_millis()),
        _ => None,
    };
    pb::Trigger {
        slug: t.slug.clone(),
        name: t.name.clone(),
        r#type: t.kind.as_str().to_owned(),
        enabled: t.enabled,
        agent: t.agent.clone(),
        cron: t.cron.clone().unwrap_or_default(),
        timezone: t.timezone.clone().unwrap_or_default(),
        secret_env: t.secret_env.clone().unwrap_or_default(),
        next_fire_unix_ms: next.unwrap_or(0),
        last_firing: last.map(firing_to_proto),
        webhook_path: match t.kind {
            TriggerKind::Webhook => webhook_path(&project.name, &t.slug),
            TriggerKind::Cron => String::new(),
        },
    }
}

#[tonic::async_trait]
impl TriggerService for TriggerServiceImpl {
    async fn list_triggers(
        &self,
        request: Request<pb::ListTriggersRequest>,
    ) -> Result<Response<pb::ListTriggersResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project).await?;
        let manifest = self
            .triggers
            .manifests()
            .get(&project.id, &project.default_branch)
            .await
            .map_err(trigger_status)?;
        let now = self.triggers.now();
        let mut triggers = Vec::with_capacity(manifest.triggers().len());
        for t in manifest.triggers() {
            let last = self
                .triggers
                .store()
                .last_firing(&project.id, &t.slug)
                .await
                .map_err(store_status)?;
            triggers.push(trigger_to_proto(&project, t, now, last.as_ref()));
        }
        Ok(Response::new(pb::ListTriggersResponse {
            triggers,
            errors: manifest.trigger_errors(),
        }))
    }

    async fn fire_trigger(
        &self,
        request: Request<pb::FireTriggerRequest>,
    ) -> Result<Response<pb::Firing>, Status> {
        let project = self.project(&request, &request.get_ref().project).await?;
        let slug = &request.get_ref().slug;
        let manifest = self
            .triggers
            .manifests()
            .get(&project.id, &project.default_branch)
            .await
            .map_err(trigger_status)?;
        let trigger = manifest.trigger(slug).cloned().ok_or_else(|| {
            Status::not_found(format!("project {} has no trigger {slug:?}", project.name))
        })?;
        if !trigger.enabled {
            return Err(Status::failed_precondition(format!(
                "trigger {slug} is disabled"
            )));
        }
        let outcome = firing::fire(
            &self.triggers,
            FireRequest {
                project_id: project.id.clone(),
                trigger,
                key: firing::manual_key(),
                source: Source::Manual,
            },
        )
        .await
        .map_err(trigger_status)?;
        Ok(Response::new(firing_to_proto(&outcome.firing)))
    }

    async fn list_firings(
        &self,
        request: Request<pb::ListFiringsRequest>,
    ) -> Result<Response<pb::ListFiringsResponse>, Status> {
        let project = self.project(&request, &request.get_ref().project).await?;
        let req = request.get_ref();
        let slug = Some(req.slug.as_str()).filter(|s| !s.is_empty());
        let limit = match req.limit {
            0 => DEFAULT_FIRINGS_PAGE,
            n => n.min(MAX_FIRINGS_PAGE),
        };
        let firings = self
            .triggers
            .store()
            .list_firings(&project.id, slug, limit)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListFiringsResponse {
            firings: firings.iter().map(firing_to_proto).collect(),
        }))
    }
}
