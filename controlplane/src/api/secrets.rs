//! `SecretService`: transport for [`crate::secrets::ProjectSecrets`]. Values go in, only
//! names and timestamps come back.

use super::{authn::caller, convert};
use crate::secrets::ProjectSecrets;
use kortix_proto::v1::secret_service_server::SecretService;
use kortix_proto::v1::*;
use tonic::{Request, Response, Status};

pub struct Secrets {
    secrets: ProjectSecrets,
}

impl Secrets {
    pub fn new(secrets: ProjectSecrets) -> Self {
        Self { secrets }
    }
}

#[tonic::async_trait]
impl SecretService for Secrets {
    async fn set_secret(
        &self,
        request: Request<SetSecretRequest>,
    ) -> Result<Response<SecretInfo>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let meta = self
            .secrets
            .set(&who, &req.project, &req.name, &req.value)
            .await?;
        Ok(Response::new(convert::secret(&meta)))
    }

    async fn list_secrets(
        &self,
        request: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        let who = caller(&request)?;
        let secrets = self
            .secrets
            .list(&who, &request.into_inner().project)
            .await?;
        Ok(Response::new(ListSecretsResponse {
            secrets: secrets.iter().map(convert::secret).collect(),
        }))
    }

    async fn delete_secret(
        &self,
        request: Request<DeleteSecretRequest>,
    ) -> Result<Response<SecretInfo>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let meta = self.secrets.delete(&who, &req.project, &req.name).await?;
        Ok(Response::new(convert::secret(&meta)))
    }
}
