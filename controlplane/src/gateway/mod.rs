//! `AgentGateway`: the mTLS service session agents talk to.
//!
//! - [`identity`]: who is calling, from the verified client certificate only.
//! - [`enroll`]: bootstrap token + CSR → short-lived client certificate and a single-use
//!   renewal secret; renewal; re-enrollment of a restarted agent with that secret.
//! - [`connect`]: the bidirectional stream (bootstrap, records and acks, heartbeats, prompts,
//!   stop).
//! - [`credentials`]: just-in-time git tokens scoped to the session's branch.
//! - [`secrets_watch`]: the project's secrets, now and on every change.
//! - [`connectors`]: the session's connectors and calls through the broker.
//! - [`save`]: what a winding-down agent saved for a resume, and the conversation a resumed
//!   agent imports.
//!
//! Store failures reach agents through the domain error's one mapping
//! ([`crate::error::DomainError`]): a session that does not exist is NOT_FOUND, a database
//! that does not answer is UNAVAILABLE (the agent retries), never the other way round.

mod connect;
mod connectors;
mod credentials;
mod enroll;
mod identity;
mod save;
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
    pub(crate) connectors: crate::connectors::Connectors,
}

impl Gateway {
    pub fn new(
        sessions: Sessions,
        ca: Arc<Ca>,
        secrets: ProjectSecrets,
        connectors: crate::connectors::Connectors,
    ) -> Self {
        Self {
            sessions,
            ca,
            secrets,
            connectors,
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

    async fn reenroll(
        &self,
        request: Request<ReenrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let from = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        self.do_reenroll(request.into_inner(), &from)
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

    async fn list_session_connectors(
        &self,
        request: Request<ListSessionConnectorsRequest>,
    ) -> Result<Response<ListSessionConnectorsResponse>, Status> {
        let who = self.identify(&request).await?;
        self.do_list_connectors(&who).await.map(Response::new)
    }

    async fn call_connector(
        &self,
        request: Request<CallConnectorRequest>,
    ) -> Result<Response<CallConnectorResponse>, Status> {
        let who = self.identify(&request).await?;
        self.do_call_connector(&who, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn save_work(
        &self,
        request: Request<SaveWorkRequest>,
    ) -> Result<Response<SaveWorkResponse>, Status> {
        let who = self.identify(&request).await?;
        self.do_save_work(&who, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn load_conversation(
        &self,
        request: Request<LoadConversationRequest>,
    ) -> Result<Response<LoadConversationResponse>, Status> {
        let who = self.identify(&request).await?;
        self.do_load_conversation(&who).await.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::SessionIdentity;
    use crate::git::Repos;
    use crate::manifests::Manifests;
    use crate::sandbox::external::ExternalProvider;
    use crate::sessions::{SessionConfig, live::Hub};
    use crate::store::{Store, StoreOptions};
    use tonic::Code;

    /// A gateway over a store, and the store.
    async fn gateway(dir: &std::path::Path) -> (Gateway, Store) {
        let store = Store::open_sqlite(&dir.join("kortix.db"), StoreOptions::default())
            .await
            .unwrap();
        let repos = Repos::open(dir.join("repos")).unwrap();
        let manifests = Arc::new(Manifests::new(repos.clone()));
        let (exits, _) = tokio::sync::mpsc::channel(1);
        let hub = Hub::new();
        let sessions = Sessions::new(
            store.clone(),
            repos.clone(),
            Arc::new(ExternalProvider::new(dir.join("bootstrap"), exits).unwrap()),
            hub.clone(),
            manifests.clone(),
            SessionConfig::new(String::new(), String::new(), String::new()),
        );
        let key = Arc::new(crate::secrets::MasterKey::generate().unwrap());
        let secrets = ProjectSecrets::new(store.clone(), key.clone(), hub);
        let connectors = crate::connectors::Connectors::new(
            sessions.clone(),
            manifests,
            repos,
            key,
            secrets.clone(),
            Default::default(),
        )
        .unwrap();
        let gateway = Gateway::new(
            sessions,
            Arc::new(Ca::load_or_create(&dir.join("ca")).unwrap()),
            secrets,
            connectors,
        );
        (gateway, store)
    }

    fn agent(session_id: &str) -> SessionIdentity {
        SessionIdentity {
            session_id: session_id.into(),
            serial_hex: "0a".into(),
            not_after_unix_s: i64::MAX,
        }
    }

    fn csr() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .der()
            .to_vec()
    }

    fn reenroll_request(session_id: &str, secret: &str) -> ReenrollRequest {
        ReenrollRequest {
            session_id: session_id.into(),
            renewal_secret: secret.into(),
            csr_der: csr(),
            protocol_version: kortix_proto::PROTOCOL_VERSION,
            agent_version: "test".into(),
        }
    }

    /// The bootstrap token enrolls once; the renewal secret it came with re-enrolls, rotating,
    /// until the agent has connected with what a re-enrollment answered (an answer may be
    /// lost); a used, wrong or malformed secret is PERMISSION_DENIED and changes nothing;
    /// nothing re-enrolls an ended session.
    #[tokio::test]
    async fn a_renewal_secret_re_enrolls_once() {
        use crate::auth::{TokenKind, generate_token, hash_token};
        let dir = tempfile::tempdir().unwrap();
        let (gateway, store) = gateway(dir.path()).await;
        let (_, project) = crate::store::tests::account_and_project(&store, "web").await;
        let session = crate::store::tests::session_in(&store, &project).await;
        let token = generate_token(TokenKind::Bootstrap);
        store
            .create_bootstrap_token(&hash_token(&token), &session.id, i64::MAX)
            .await
            .unwrap();
        let enroll = |token: String| EnrollRequest {
            bootstrap_token: token,
            csr_der: csr(),
            protocol_version: kortix_proto::PROTOCOL_VERSION,
            agent_version: "test".into(),
        };
        let first = gateway.do_enroll(enroll(token.clone())).await.unwrap();
        assert!(first.renewal_secret.starts_with("kxr_"), "{first:?}");
        let used = gateway.do_enroll(enroll(token)).await.unwrap_err();
        assert_eq!(used.code(), Code::Unauthenticated, "{used:?}");

        // The session runs; its agent restarts.
        assert!(
            store
                .transition_session(
                    &session.id,
                    &[crate::store::SessionStatus::Provisioning],
                    crate::store::SessionStatus::Running,
                    None,
                )
                .await
                .unwrap()
        );
        let lost = gateway
            .do_reenroll(reenroll_request(&session.id, &first.renewal_secret), "test")
            .await
            .unwrap();
        assert_eq!(lost.session_id, session.id);
        assert!(lost.certificate_chain_pem.contains("BEGIN CERTIFICATE"));
        assert!(lost.renewal_secret.starts_with("kxr_"));
        assert_ne!(lost.renewal_secret, first.renewal_secret);
        // That answer never reached the agent: it tries again with the only secret it has.
        let second = gateway
            .do_reenroll(reenroll_request(&session.id, &first.renewal_secret), "test")
            .await
            .unwrap();
        assert_ne!(second.renewal_secret, lost.renewal_secret);
        let superseded = gateway
            .do_reenroll(reenroll_request(&session.id, &lost.renewal_secret), "test")
            .await
            .unwrap_err();
        assert_eq!(superseded.code(), Code::PermissionDenied, "{superseded:?}");
        // The agent connects with the certificate it got: the first secret is used up now.
        store.confirm_renewal_secret(&session.id).await.unwrap();

        let wrong = generate_token(TokenKind::Renewal);
        for (secret, why) in [
            (first.renewal_secret.as_str(), "used"),
            (wrong.as_str(), "wrong"),
            ("not-a-secret", "malformed"),
        ] {
            let refused = gateway
                .do_reenroll(reenroll_request(&session.id, secret), "test")
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::PermissionDenied, "{why}: {refused:?}");
        }
        // Another session's secret does not fit this one.
        let other = gateway
            .do_reenroll(
                reenroll_request("other-session", &second.renewal_secret),
                "test",
            )
            .await
            .unwrap_err();
        assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");
        // The refusals changed nothing: the current secret still works (once).
        let third = gateway
            .do_reenroll(
                reenroll_request(&session.id, &second.renewal_secret),
                "test",
            )
            .await
            .unwrap();

        gateway
            .sessions
            .end(
                &session.id,
                &[crate::store::SessionStatus::Running],
                crate::store::SessionStatus::Stopped,
                Some("test"),
            )
            .await;
        let ended = gateway
            .do_reenroll(reenroll_request(&session.id, &third.renewal_secret), "test")
            .await
            .unwrap_err();
        assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    }

    /// An agent must be able to tell "your session does not exist" (give up) from "the
    /// database is down" (retry): the gateway used to answer NOT_FOUND to both.
    #[tokio::test]
    async fn a_store_outage_is_unavailable_never_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, store) = gateway(dir.path()).await;
        let request = || GitCredentialRequest {
            protocol: "http".into(),
            host: "127.0.0.1".into(),
            path: "git/web.git".into(),
        };
        let missing = gateway
            .do_git_credential(&agent("no-such-session"), request())
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
        assert_eq!(missing.message(), "session no-such-session not found");
        let missing = gateway
            .do_watch_secrets(agent("no-such-session"))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

        store.close().await;
        let down = gateway
            .do_git_credential(&agent("no-such-session"), request())
            .await
            .unwrap_err();
        assert_eq!(down.code(), Code::Unavailable, "{down:?}");
        let down = gateway
            .do_watch_secrets(agent("no-such-session"))
            .await
            .unwrap_err();
        assert_eq!(down.code(), Code::Unavailable, "{down:?}");
        let down = gateway
            .do_renew(&agent("no-such-session"), RenewRequest::default())
            .await
            .unwrap_err();
        assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    }
}
