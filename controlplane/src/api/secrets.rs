//! `SecretService`: write-only project secrets. Values are sealed before they reach the store
//! and never logged; only names and timestamps come back.

use super::{authn::caller, convert, store_status};
use crate::gateway::secrets_topic;
use crate::secrets::MasterKey;
use crate::sessions::live::Hub;
use crate::store::Store;
use kortix_proto::v1::secret_service_server::SecretService;
use kortix_proto::v1::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct Secrets {
    store: Store,
    key: Arc<MasterKey>,
    hub: Hub,
}

impl Secrets {
    pub fn new(store: Store, key: Arc<MasterKey>, hub: Hub) -> Self {
        Self { store, key, hub }
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
        crate::secrets::validate_secret_name(&req.name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let project = self
            .store
            .get_project(&who.account_id, &req.project)
            .await
            .map_err(store_status)?;
        let sealed = self
            .key
            .seal(&project.id, &req.name, &req.value)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (meta, version) = self
            .store
            .put_secret(&project.id, &req.name, &sealed.nonce, &sealed.ciphertext)
            .await
            .map_err(store_status)?;
        self.hub
            .advance(&secrets_topic(&project.id), version.max(0) as u64);
        tracing::info!(project = %project.name, secret = %req.name, "secret set");
        Ok(Response::new(convert::secret(&meta)))
    }

    async fn list_secrets(
        &self,
        request: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        let who = caller(&request)?;
        let project = self
            .store
            .get_project(&who.account_id, &request.into_inner().project)
            .await
            .map_err(store_status)?;
        let secrets = self
            .store
            .list_secrets(&project.id)
            .await
            .map_err(store_status)?;
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
        let project = self
            .store
            .get_project(&who.account_id, &req.project)
            .await
            .map_err(store_status)?;
        let (meta, version) = self
            .store
            .delete_secret(&project.id, &req.name)
            .await
            .map_err(store_status)?;
        self.hub
            .advance(&secrets_topic(&project.id), version.max(0) as u64);
        Ok(Response::new(convert::secret(&meta)))
    }
}
