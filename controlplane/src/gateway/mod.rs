//! `AgentGateway`: the mTLS service session agents talk to.
//!
//! - [`identity`]: who is calling, from the verified client certificate only.
//! - [`enroll`]: bootstrap token + CSR → short-lived client certificate; renewal.
//! - [`connect`]: the bidirectional stream (bootstrap, records and acks, heartbeats, prompts,
//!   stop).
//! - [`credentials`]: just-in-time git tokens scoped to the session's branch.
//! - [`secrets_watch`]: the project's secrets, now and on every change.
//!
//! Store failures reach agents through the domain error's one mapping
//! ([`crate::error::DomainError`]): a session that does not exist is NOT_FOUND, a database
//! that does not answer is UNAVAILABLE (the agent retries), never the other way round.

mod connect;
mod credentials;
mod enroll;
mod identity;
mod secrets_watch;

use crate::ca::Ca;
use crate::secrets::ProjectSecrets;
use crate::sessions::Sessions;
use kortix_proto::v1::agent_gateway_server::AgentGateway;
use kortix_proto::v1::*;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

pub use identity::peer_identity;

#[derive(Clone)]
pub struct Gateway {
    pub(crate) sessions: Sessions,
    pub(crate) ca: Arc<Ca>,
    pub(crate) secrets: ProjectSecrets,
}

impl Gateway {
    pub fn new(sessions: Sessions, ca: Arc<Ca>, secrets: ProjectSecrets) -> Self {
        Self {
            sessions,
            ca,
            secrets,
        }
    }
}

type BoxStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AgentGateway for Gateway {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        self.do_enroll(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let who = self.identify(&request).await?;
        self.do_renew(&who, request.into_inner())
            .await
            .map(Response::new)
    }

    type ConnectStream = BoxStream<ControlFrame>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentFrame>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let who = self.identify(&request).await?;
        let stream = self.do_connect(who, request.into_inner()).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn git_credential(
        &self,
        request: Request<GitCredentialRequest>,
    ) -> Result<Response<GitCredentialResponse>, Status> {
        let who = self.identify(&request).await?;
        self.do_git_credential(&who, request.into_inner())
            .await
            .map(Response::new)
    }

    type WatchSecretsStream = BoxStream<SecretsUpdate>;

    async fn watch_secrets(
        &self,
        request: Request<WatchSecretsRequest>,
    ) -> Result<Response<Self::WatchSecretsStream>, Status> {
        let who = self.identify(&request).await?;
        let stream = self.do_watch_secrets(who).await?;
        Ok(Response::new(Box::pin(stream)))
    }
}
