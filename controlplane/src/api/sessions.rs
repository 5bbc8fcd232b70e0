//! `SessionService`: transport for [`crate::sessions::Sessions`] as people see it
//! (`sessions::access`).

use super::{authn::caller, convert};
use crate::sessions::access::NamedSession;
use crate::sessions::{Sessions as Domain, attach::AttachStream, lifecycle::StartRequest};
use kortix_proto::v1::session_service_server::SessionService;
use kortix_proto::v1::*;
use std::pin::Pin;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

pub struct Sessions {
    sessions: Domain,
}

impl Sessions {
    pub fn new(sessions: Domain) -> Self {
        Self { sessions }
    }
}

fn to_pb(s: &NamedSession) -> Session {
    convert::session(&s.session, &s.project_name, s.saved.as_ref())
}

#[tonic::async_trait]
impl SessionService for Sessions {
    async fn start_session(
        &self,
        request: Request<StartSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let session = self
            .sessions
            .start_for(
                &who,
                StartRequest {
                    project: req.project,
                    prompt: req.prompt,
                    template: req.template,
                    agent: req.agent,
                    idempotency_key: req.idempotency_key,
                    resume_branch: req.resume_branch,
                    origin: "cli".into(),
                    launched_by: String::new(),
                },
            )
            .await?;
        Ok(Response::new(to_pb(&session)))
    }

    async fn get_session(
        &self,
        request: Request<GetSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let who = caller(&request)?;
        let s = self
            .sessions
            .get_for(&who, &request.into_inner().id)
            .await?;
        Ok(Response::new(to_pb(&s)))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let who = caller(&request)?;
        let rows = self
            .sessions
            .list_for(&who, &request.into_inner().project)
            .await?;
        Ok(Response::new(ListSessionsResponse {
            sessions: rows.iter().map(to_pb).collect(),
        }))
    }

    async fn stop_session(
        &self,
        request: Request<StopSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let who = caller(&request)?;
        let s = self
            .sessions
            .stop_for(&who, &request.into_inner().id)
            .await?;
        Ok(Response::new(to_pb(&s)))
    }

    async fn delete_session(
        &self,
        request: Request<DeleteSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let who = caller(&request)?;
        let s = self
            .sessions
            .delete_for(&who, &request.into_inner().id)
            .await?;
        Ok(Response::new(to_pb(&s)))
    }

    type AttachStream = AttachStream;

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let stream = self
            .sessions
            .attach_for(&who, &req.session_id, req.from_seq, req.follow)
            .await?;
        Ok(Response::new(stream))
    }

    type WatchSessionStream =
        Pin<Box<dyn Stream<Item = Result<kortix_proto::v1::Session, Status>> + Send>>;

    async fn watch_session(
        &self,
        request: Request<WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        let who = caller(&request)?;
        let named = self
            .sessions
            .get_for(&who, &request.into_inner().id)
            .await?;
        let project = named.project_name;
        let updates =
            tokio_stream::wrappers::ReceiverStream::new(self.sessions.watch(named.session.id));
        Ok(Response::new(Box::pin(updates.map(move |update| {
            update.map(|s| convert::session(&s, &project, None))
        }))))
    }

    async fn resume_session(
        &self,
        request: Request<ResumeSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let s = self.sessions.resume_for(&who, &req.id, &req.prompt).await?;
        Ok(Response::new(to_pb(&s)))
    }

    async fn send_prompt(
        &self,
        request: Request<SendPromptRequest>,
    ) -> Result<Response<SendPromptResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let sent = self
            .sessions
            .send_prompt(
                &who,
                &req.session_id,
                req.text,
                req.agent,
                crate::sessions::access::PROMPT_ACK_WAIT,
            )
            .await?;
        Ok(Response::new(SendPromptResponse {
            prompt_id: sent.id,
            delivered: sent.delivered,
            queued: sent.queued,
        }))
    }

    async fn get_command(
        &self,
        request: Request<GetCommandRequest>,
    ) -> Result<Response<CommandStatus>, Status> {
        use crate::store::CommandState as S;
        let who = caller(&request)?;
        let req = request.into_inner();
        let c = self
            .sessions
            .command_status_for(&who, &req.session_id, &req.command_id)
            .await?;
        let state = match c.state {
            S::Queued => CommandState::Queued,
            S::Sent => CommandState::Sent,
            S::Delivered => CommandState::Delivered,
        };
        Ok(Response::new(CommandStatus {
            command_id: c.id,
            state: state as i32,
            sends: c.sends.clamp(0, i64::from(u32::MAX)) as u32,
            queued_unix_ms: c.created_ms,
            delivered_unix_ms: c.acked_ms.unwrap_or(0),
        }))
    }
}
