//! `AccessService`: transport for [`crate::project_access::ProjectAccess`].

use super::{authn::caller, convert};
use crate::project_access::ProjectAccess;
use kortix_proto::v1::access_service_server::AccessService;
use kortix_proto::v1::*;
use tonic::{Request, Response, Status};

pub struct Access {
    access: ProjectAccess,
}

impl Access {
    pub fn new(access: ProjectAccess) -> Self {
        Self { access }
    }
}

#[tonic::async_trait]
impl AccessService for Access {
    async fn list_access(
        &self,
        request: Request<ListAccessRequest>,
    ) -> Result<Response<ListAccessResponse>, Status> {
        let who = caller(&request)?;
        let (project, grants) = self
            .access
            .list(&who, &request.into_inner().project)
            .await?;
        Ok(Response::new(ListAccessResponse {
            grants: grants.iter().map(|g| convert::grant(&project, g)).collect(),
        }))
    }

    async fn grant_access(
        &self,
        request: Request<GrantAccessRequest>,
    ) -> Result<Response<AccessGrant>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let (project, grant) = self
            .access
            .grant(
                &who,
                &req.project,
                &req.person,
                &req.role,
                req.expires_in_seconds,
            )
            .await?;
        Ok(Response::new(convert::grant(&project, &grant)))
    }

    async fn revoke_access(
        &self,
        request: Request<RevokeAccessRequest>,
    ) -> Result<Response<AccessGrant>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let (project, grant) = self.access.revoke(&who, &req.project, &req.person).await?;
        Ok(Response::new(convert::grant(&project, &grant)))
    }
}
