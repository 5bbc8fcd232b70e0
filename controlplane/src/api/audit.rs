//! `AuditService`: transport for [`crate::audit::AuditLog`].

use super::authn::caller;
use crate::audit::AuditLog;
use kortix_proto::v1::audit_service_server::AuditService;
use kortix_proto::v1::*;
use tonic::{Request, Response, Status};

pub struct Audit {
    log: AuditLog,
}

impl Audit {
    pub fn new(log: AuditLog) -> Self {
        Self { log }
    }
}

fn event(e: &crate::store::AuditEvent) -> AuditEvent {
    AuditEvent {
        id: e.id,
        at_unix_ms: e.at_ms,
        account_id: e.account_id.clone(),
        project_id: e.project_id.clone(),
        project: e.project_name.clone(),
        actor: e.actor.clone(),
        actor_name: e.actor_name.clone(),
        token_id: e.token_id.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        detail: e.detail.clone(),
        from: e.from_addr.clone(),
    }
}

#[tonic::async_trait]
impl AuditService for Audit {
    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let (account, events) = self
            .log
            .list(&who, &req.account, &req.project, req.before_id, req.limit)
            .await?;
        Ok(Response::new(ListAuditResponse {
            account: account.name,
            events: events.iter().map(event).collect(),
        }))
    }
}
