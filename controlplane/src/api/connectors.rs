//! `ConnectorService` and `ApprovalService`: transport for [`crate::connectors::Connectors`].
//! Credentials go in and never come back.

use super::authn::caller;
use crate::connectors::Connectors;
use crate::store::{Approval, ConnectorCallRow};
use kortix_proto::v1::approval_service_server::ApprovalService;
use kortix_proto::v1::connector_service_server::ConnectorService;
use kortix_proto::v1::*;
use tonic::{Request, Response, Status};

pub struct ConnectorsApi {
    connectors: Connectors,
}

impl ConnectorsApi {
    pub fn new(connectors: Connectors) -> Self {
        Self { connectors }
    }
}

#[tonic::async_trait]
impl ConnectorService for ConnectorsApi {
    async fn list_connectors(
        &self,
        request: Request<ListConnectorsRequest>,
    ) -> Result<Response<ListConnectorsResponse>, Status> {
        let who = caller(&request)?;
        let connectors = self
            .connectors
            .list(&who, &request.into_inner().project)
            .await?;
        Ok(Response::new(ListConnectorsResponse { connectors }))
    }

    async fn list_connector_tools(
        &self,
        request: Request<ListConnectorToolsRequest>,
    ) -> Result<Response<ListConnectorToolsResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let tools = self
            .connectors
            .tools(&who, &req.project, &req.connector)
            .await?;
        Ok(Response::new(ListConnectorToolsResponse { tools }))
    }

    async fn set_connector_credential(
        &self,
        request: Request<SetConnectorCredentialRequest>,
    ) -> Result<Response<ConnectorInfo>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let info = self
            .connectors
            .set_credential(&who, &req.project, &req.connector, &req.value, req.mine)
            .await?;
        Ok(Response::new(info))
    }

    async fn list_connector_calls(
        &self,
        request: Request<ListConnectorCallsRequest>,
    ) -> Result<Response<ListConnectorCallsResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let calls = self
            .connectors
            .calls(&who, &req.project, &req.session_id, req.limit)
            .await?;
        Ok(Response::new(ListConnectorCallsResponse {
            calls: calls.iter().map(call).collect(),
        }))
    }
}

#[tonic::async_trait]
impl ApprovalService for ConnectorsApi {
    async fn list_approvals(
        &self,
        request: Request<ListApprovalsRequest>,
    ) -> Result<Response<ListApprovalsResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let rows = self
            .connectors
            .list_approvals(&who, &req.project, &req.state)
            .await?;
        Ok(Response::new(ListApprovalsResponse {
            approvals: rows.iter().map(|(a, p)| approval(a, p)).collect(),
        }))
    }

    async fn approve_call(
        &self,
        request: Request<DecideApprovalRequest>,
    ) -> Result<Response<ApprovalInfo>, Status> {
        let who = caller(&request)?;
        let (a, project) = self
            .connectors
            .approve(&who, &request.into_inner().id)
            .await?;
        Ok(Response::new(approval(&a, &project)))
    }

    async fn deny_call(
        &self,
        request: Request<DecideApprovalRequest>,
    ) -> Result<Response<ApprovalInfo>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let (a, project) = self.connectors.deny(&who, &req.id, &req.reason).await?;
        Ok(Response::new(approval(&a, &project)))
    }
}

fn call(c: &ConnectorCallRow) -> ConnectorCall {
    ConnectorCall {
        id: c.id,
        at_unix_ms: c.at_ms,
        session_id: c.session_id.clone(),
        connector: c.connector.clone(),
        tool: c.tool.clone(),
        digest: c.digest.clone(),
        status: c.status.clone(),
        duration_ms: u64::try_from(c.duration_ms).unwrap_or(0),
        upstream_status: u32::try_from(c.upstream_status).unwrap_or(0),
        args_preview: c.args_preview.clone(),
        error: c.error.clone(),
    }
}

fn approval(a: &Approval, project: &str) -> ApprovalInfo {
    ApprovalInfo {
        id: a.id.clone(),
        project: project.to_owned(),
        session_id: a.session_id.clone(),
        connector: a.connector.clone(),
        tool: a.tool.clone(),
        digest: a.digest.clone(),
        state: a.state.clone(),
        reason: a.reason.clone(),
        args_preview: a.args_preview.clone(),
        requested_unix_ms: a.requested_ms,
        decided_unix_ms: a.decided_ms,
        decided_by: a.decided_by.clone(),
        expires_unix_ms: a.expires_ms,
    }
}
