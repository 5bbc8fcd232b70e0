//! The people-facing API the bench needs: projects, sessions, attach (bearer token, h2c).

use crate::errors::{BenchError, timed};
use kortix_proto::v1::{
    AttachRequest, CreateProjectRequest, GetProjectRequest, ListProjectsRequest, Project,
    ProjectInfo, Record, StartSessionRequest, project_service_client::ProjectServiceClient,
    session_service_client::SessionServiceClient,
};
use std::time::Duration;
use tonic::Streaming;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Deadline of one unary API call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

/// One connection to the public listener.
#[derive(Clone)]
pub struct Api {
    channel: Channel,
    bearer: Bearer,
}

impl Api {
    /// Opens a new HTTP/2 connection (each viewer gets its own, as separate people would).
    pub async fn connect(url: &str, token: &str) -> Result<Api, BenchError> {
        let bearer = format!("Bearer {token}")
            .parse::<MetadataValue<Ascii>>()
            .map_err(|e| BenchError::new("api", "token", e.to_string()))?;
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| BenchError::new("api", "url", e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channel = timed(
            "api connect",
            Duration::from_secs(15),
            endpoint.connect(),
            |s, e| BenchError::new(s, "transport", format!("{e:?}")),
        )
        .await?;
        Ok(Api {
            channel,
            bearer: Bearer(bearer),
        })
    }

    fn projects(&self) -> ProjectServiceClient<Authed> {
        ProjectServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    fn sessions(&self) -> SessionServiceClient<Authed> {
        SessionServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// An authenticated call that changes nothing.
    pub async fn ping(&self) -> Result<(), BenchError> {
        timed(
            "ping",
            CALL_TIMEOUT,
            self.projects().list_projects(ListProjectsRequest {}),
            BenchError::from_status,
        )
        .await
        .map(|_| ())
    }

    /// A fresh project (one commit with a minimal kortix.toml); returns its name.
    pub async fn create_project(&self, name: &str) -> Result<String, BenchError> {
        Ok(self.import_project(name, "").await?.name)
    }

    /// A project whose repository is a copy of `source` (a path or clone URL; empty for a
    /// fresh one).
    pub async fn import_project(&self, name: &str, source: &str) -> Result<Project, BenchError> {
        let req = CreateProjectRequest {
            name: name.to_string(),
            import_source: source.to_string(),
            default_branch: String::new(),
            account: String::new(),
        };
        Ok(timed(
            "create project",
            CALL_TIMEOUT,
            self.projects().create_project(req),
            BenchError::from_status,
        )
        .await?
        .into_inner())
    }

    /// One project as the caller sees it (an authenticated, permission-checked read).
    pub async fn get_project(&self, project: &str) -> Result<ProjectInfo, BenchError> {
        Ok(timed(
            "get project",
            CALL_TIMEOUT,
            self.projects().get_project(GetProjectRequest {
                project: project.to_string(),
            }),
            BenchError::from_status,
        )
        .await?
        .into_inner())
    }

    /// Starts a session; returns its id.
    pub async fn start_session(&self, project: &str, label: &str) -> Result<String, BenchError> {
        let req = StartSessionRequest {
            project: project.to_string(),
            prompt: format!("load generator {label}"),
            ..Default::default()
        };
        let s = timed(
            "start session",
            CALL_TIMEOUT,
            self.sessions().start_session(req),
            BenchError::from_status,
        )
        .await?
        .into_inner();
        Ok(s.id)
    }

    /// Follows a session's records from `from_seq`.
    pub async fn attach(
        &self,
        session_id: &str,
        from_seq: u64,
    ) -> Result<Streaming<Record>, BenchError> {
        let req = AttachRequest {
            session_id: session_id.to_string(),
            from_seq,
            follow: true,
        };
        Ok(timed(
            "attach",
            CALL_TIMEOUT,
            self.sessions().attach(req),
            BenchError::from_status,
        )
        .await?
        .into_inner())
    }
}
