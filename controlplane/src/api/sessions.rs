//! `SessionService`: start, inspect, stop and watch sessions.

use super::{authn::caller, convert, store_status};
use crate::sessions::{Sessions as Machinery, attach::AttachStream, lifecycle::StartRequest};
use crate::store::{Session, SessionStatus};
use kortix_proto::v1::session_service_server::SessionService;
use kortix_proto::v1::*;
use std::pin::Pin;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

const LIST_LIMIT: u32 = 500;
const MAX_PROMPT: usize = 256 * 1024;

pub struct Sessions {
    sessions: Machinery,
}

impl Sessions {
    pub fn new(sessions: Machinery) -> Self {
        Self { sessions }
    }

    /// The session, if the caller's account owns its project.
    async fn owned(&self, account_id: &str, id: &str) -> Result<Session, Status> {
        self.sessions
            .store()
            .get_session_for_account(account_id, id)
            .await
            .map_err(store_status)
    }

    async fn to_pb(&self, s: &Session) -> Result<kortix_proto::v1::Session, Status> {
        let project = self
            .sessions
            .store()
            .find_project(&s.project_id)
            .await
            .map_err(store_status)?;
        Ok(convert::session(s, &project.name))
    }
}

#[tonic::async_trait]
impl SessionService for Sessions {
    async fn start_session(
        &self,
        request: Request<StartSessionRequest>,
    ) -> Result<Response<kortix_proto::v1::Session>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        if req.prompt.len() > MAX_PROMPT {
            return Err(Status::invalid_argument(format!(
                "prompt longer than {MAX_PROMPT} bytes"
            )));
        }
        let session = self
            .sessions
            .start(StartRequest {
                account_id: Some(who.account_id),
                project: req.project,
                prompt: req.prompt,
                template: req.template,
                agent: req.agent,
                idempotency_key: req.idempotency_key,
                resume_branch: req.resume_branch,
                origin: "cli".into(),
            })
            .await?;
        Ok(Response::new(self.to_pb(&session).await?))
    }

    async fn get_session(
        &self,
        request: Request<GetSessionRequest>,
    ) -> Result<Response<kortix_proto::v1::Session>, Status> {
        let who = caller(&request)?;
        let s = self
            .owned(&who.account_id, &request.into_inner().id)
            .await?;
        Ok(Response::new(self.to_pb(&s).await?))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let store = self.sessions.store();
        let rows = if req.project.is_empty() {
            store
                .list_sessions_for_account(&who.account_id, LIST_LIMIT)
                .await
        } else {
            let project = store
                .get_project(&who.account_id, &req.project)
                .await
                .map_err(store_status)?;
            store.list_sessions(&project.id, LIST_LIMIT).await
        }
        .map_err(store_status)?;
        let projects = store
            .list_projects(&who.account_id)
            .await
            .map_err(store_status)?;
        let name_of = |id: &str| {
            projects
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.name.clone())
                .unwrap_or_default()
        };
        Ok(Response::new(ListSessionsResponse {
            sessions: rows
                .iter()
                .map(|s| convert::session(s, &name_of(&s.project_id)))
                .collect(),
        }))
    }

    async fn stop_session(
        &self,
        request: Request<StopSessionRequest>,
    ) -> Result<Response<kortix_proto::v1::Session>, Status> {
        let who = caller(&request)?;
        let s = self
            .owned(&who.account_id, &request.into_inner().id)
            .await?;
        let stopped = self.sessions.stop(&s.id, false, "stopped by user").await?;
        Ok(Response::new(self.to_pb(&stopped).await?))
    }

    async fn delete_session(
        &self,
        request: Request<DeleteSessionRequest>,
    ) -> Result<Response<kortix_proto::v1::Session>, Status> {
        let who = caller(&request)?;
        let s = self
            .owned(&who.account_id, &request.into_inner().id)
            .await?;
        let project = self
            .sessions
            .store()
            .find_project(&s.project_id)
            .await
            .map_err(store_status)?;
        let deleted = self.sessions.delete(&s.id).await?;
        Ok(Response::new(convert::session(&deleted, &project.name)))
    }

    type AttachStream = AttachStream;

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let s = self.owned(&who.account_id, &req.session_id).await?;
        Ok(Response::new(self.sessions.attach(
            s.id,
            req.from_seq,
            req.follow,
        )))
    }

    type WatchSessionStream =
        Pin<Box<dyn Stream<Item = Result<kortix_proto::v1::Session, Status>> + Send>>;

    async fn watch_session(
        &self,
        request: Request<WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        let who = caller(&request)?;
        let s = self
            .owned(&who.account_id, &request.into_inner().id)
            .await?;
        let project = self.to_pb(&s).await?.project_name;
        let updates = tokio_stream::wrappers::ReceiverStream::new(self.sessions.watch(s.id));
        Ok(Response::new(Box::pin(updates.map(move |update| {
            update.map(|s| convert::session(&s, &project))
        }))))
    }

    async fn send_prompt(
        &self,
        request: Request<SendPromptRequest>,
    ) -> Result<Response<SendPromptResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        if req.text.trim().is_empty() {
            return Err(Status::invalid_argument("prompt text is empty"));
        }
        if req.text.len() > MAX_PROMPT {
            return Err(Status::invalid_argument(format!(
                "prompt longer than {MAX_PROMPT} bytes"
            )));
        }
        let s = self.owned(&who.account_id, &req.session_id).await?;
        if s.status != SessionStatus::Running {
            return Err(Status::failed_precondition(format!(
                "session {} is {}; prompts go to running sessions",
                s.id, s.status
            )));
        }
        let prompt_id = crate::store::new_id();
        let frame = ControlFrame {
            frame: Some(control_frame::Frame::Prompt(Prompt {
                id: prompt_id.clone(),
                text: req.text,
                agent: req.agent,
            })),
        };
        self.sessions
            .hub()
            .send_control(&s.id, frame)
            .map_err(|e| Status::unavailable(format!("session {}: {e}", s.id)))?;
        Ok(Response::new(SendPromptResponse { prompt_id }))
    }
}
