//! `ChannelService`: transport for [`crate::channels::slack::Slack`]'s binding. Credentials
//! go in; only URLs, names and times come back.

use super::authn::caller;
use crate::channels::slack::Slack;
use crate::channels::slack::binding::BindingView;
use kortix_proto::v1::channel_service_server::ChannelService;
use kortix_proto::v1::*;
use tonic::{Request, Response, Status};

pub struct Channels {
    slack: Slack,
}

impl Channels {
    pub fn new(slack: Slack) -> Self {
        Self { slack }
    }
}

fn binding(b: BindingView) -> ChannelBinding {
    ChannelBinding {
        kind: b.kind.to_string(),
        project: b.project,
        request_url: b.request_url,
        interactivity_url: b.interactivity_url,
        connected_by: b.connected_by,
        created_unix_ms: b.created_ms,
        updated_unix_ms: b.updated_ms,
        threads: b
            .threads
            .into_iter()
            .map(|t| ChannelThread {
                channel: t.channel,
                thread_ts: t.thread_ts,
                session_id: t.session_id,
                session_status: t.status,
                asked_by: t.asked_by,
                created_unix_ms: t.created_ms,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl ChannelService for Channels {
    async fn connect_slack(
        &self,
        request: Request<ConnectSlackRequest>,
    ) -> Result<Response<ConnectSlackResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let connected = self
            .slack
            .connect(&who, &req.project, &req.signing_secret, &req.bot_token)
            .await?;
        Ok(Response::new(ConnectSlackResponse {
            project: connected.project,
            request_url: connected.request_url,
            interactivity_url: connected.interactivity_url,
        }))
    }

    async fn list_channels(
        &self,
        request: Request<ListChannelsRequest>,
    ) -> Result<Response<ListChannelsResponse>, Status> {
        let who = caller(&request)?;
        let bindings = self.slack.list(&who, &request.into_inner().project).await?;
        Ok(Response::new(ListChannelsResponse {
            bindings: bindings.into_iter().map(binding).collect(),
        }))
    }

    async fn link_slack_user(
        &self,
        request: Request<LinkSlackUserRequest>,
    ) -> Result<Response<LinkSlackUserResponse>, Status> {
        let who = caller(&request)?;
        let linked = self
            .slack
            .redeem_link(&who, &request.into_inner().code)
            .await?;
        Ok(Response::new(LinkSlackUserResponse {
            project: linked.project,
            slack_user: linked.slack_user,
        }))
    }
}
