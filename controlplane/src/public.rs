//! The public listener's composition: every service it serves, named, and the one router
//! over them — gRPC `kortix.v1` behind bearer-token authentication (plus health and
//! reflection), git smart HTTP, webhooks, `/metrics`, `[[apps]]` (`/apps/…` and apps' custom
//! domains) and the web console at `/`.

use std::sync::Arc;

use kortix_proto::v1 as pb;

use crate::accounts::Accounts;
use crate::api;
use crate::auth::Authenticator;
use crate::change_requests::ChangeRequests;
use crate::git::GitHttpState;
use crate::project_access::ProjectAccess;
use crate::projects::Projects;
use crate::secrets::ProjectSecrets;
use crate::sessions::{Sessions, live::Hub};
use crate::store::Store;
use crate::triggers::Triggers;

/// Largest gRPC request a person's client may send.
const MAX_API_MESSAGE: usize = 4 * 1024 * 1024;

/// What the public listener serves. Built once at start from the opened store, repositories
/// and keys; each field is one domain service (or the state of one HTTP surface).
pub struct PublicServices {
    pub accounts: Accounts,
    pub project_access: ProjectAccess,
    pub projects: Projects,
    pub change_requests: ChangeRequests,
    pub secrets: ProjectSecrets,
    pub sessions: Sessions,
    pub connectors: crate::connectors::Connectors,
    pub triggers: Triggers,
    /// `[[apps]]`: `AppService`, `/apps/…` and custom domains.
    pub apps: crate::apps::Apps,
    /// Slack's Events API and interactivity endpoints, and `ChannelService`.
    pub slack: crate::channels::slack::Slack,
    /// Resolves bearer tokens for every `kortix.v1` call.
    pub authenticator: Arc<Authenticator>,
    /// `/git/<project>.git` over smart HTTP.
    pub git: GitHttpState,
    /// `/metrics` reads aggregate numbers from the store and the hub.
    pub store: Store,
    pub hub: Hub,
    /// Where people reach this listener (the console's cookies are `Secure` over https).
    pub public_url: String,
}

impl PublicServices {
    /// The router over every service.
    pub fn router(self) -> Result<axum::Router, tonic_reflection::server::Error> {
        let console = crate::console::Console::new(crate::console::ConsoleServices {
            store: self.store.clone(),
            authenticator: self.authenticator.clone(),
            projects: self.projects.clone(),
            sessions: self.sessions.clone(),
            change_requests: self.change_requests.clone(),
            triggers: self.triggers.clone(),
            secrets: self.secrets.clone(),
            connectors: self.connectors.clone(),
            public_url: self.public_url.clone(),
        });
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let mut routes = tonic::service::Routes::builder();
        routes
            .add_service(health_service)
            .add_service(reflection)
            .add_service(
                pb::account_service_server::AccountServiceServer::new(
                    api::accounts::Accounts::new(self.accounts.clone()),
                )
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                pb::audit_service_server::AuditServiceServer::new(api::audit::Audit::new(
                    crate::audit::AuditLog::new(self.store.clone()),
                ))
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                pb::member_service_server::MemberServiceServer::new(api::members::Members::new(
                    self.accounts,
                ))
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                pb::access_service_server::AccessServiceServer::new(api::access::Access::new(
                    self.project_access,
                ))
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                pb::project_service_server::ProjectServiceServer::new(
                    api::projects::Projects::new(self.projects),
                )
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                pb::secret_service_server::SecretServiceServer::new(api::secrets::Secrets::new(
                    self.secrets,
                ))
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                pb::snapshot_service_server::SnapshotServiceServer::new(
                    api::snapshots::Snapshots::new(crate::snapshots::access::SnapshotAccess::new(
                        self.store.clone(),
                        self.sessions.manifests.clone(),
                        self.sessions.snapshots().cloned(),
                    )),
                )
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                pb::connector_service_server::ConnectorServiceServer::new(
                    api::connectors::ConnectorsApi::new(self.connectors.clone()),
                )
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                pb::approval_service_server::ApprovalServiceServer::new(
                    api::connectors::ConnectorsApi::new(self.connectors),
                )
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                pb::session_service_server::SessionServiceServer::new(
                    api::sessions::Sessions::new(self.sessions),
                )
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                pb::change_request_service_server::ChangeRequestServiceServer::new(
                    api::change_requests::ChangeRequests::new(self.change_requests),
                )
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                pb::channel_service_server::ChannelServiceServer::new(
                    api::channels::Channels::new(self.slack.clone()),
                )
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                pb::app_service_server::AppServiceServer::new(api::apps::AppsApi::new(
                    self.apps.clone(),
                ))
                .max_decoding_message_size(MAX_API_MESSAGE),
            )
            .add_service(
                api::triggers::TriggerServiceImpl::new(self.triggers.clone())
                    .into_server()
                    .max_decoding_message_size(MAX_API_MESSAGE),
            );
        tokio::spawn(async move {
            health_reporter
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
        });
        let grpc = routes
            .routes()
            .into_axum_router()
            .layer(axum::middleware::from_fn_with_state(
                self.authenticator,
                api::authn::middleware,
            ));
        Ok(grpc
            .merge(crate::git::router(self.git))
            .merge(crate::triggers::webhook::router(self.triggers))
            .merge(crate::channels::slack::routes::router(self.slack))
            .merge(crate::metrics::router(self.store, self.hub))
            .merge(crate::apps::routes::router(self.apps.clone()))
            .merge(crate::console::router(console))
            // Outermost: a request for an app's custom domain never reaches the rest.
            .layer(axum::middleware::from_fn_with_state(
                crate::apps::routes::HostState::new(self.apps),
                crate::apps::routes::by_host,
            )))
    }
}
