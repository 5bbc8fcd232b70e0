//! `ChangeRequestService`: transport for [`crate::change_requests::ChangeRequests`].

use super::{authn::caller, convert};
use crate::change_requests::{ChangeRequests as Domain, ListRequest, OpenRequest};
use crate::store::CrState;
use kortix_proto::v1 as pb;
use kortix_proto::v1::change_request_service_server::ChangeRequestService;
use tonic::{Request, Response, Status};

pub struct ChangeRequests {
    crs: Domain,
}

impl ChangeRequests {
    pub fn new(crs: Domain) -> Self {
        Self { crs }
    }
}

#[tonic::async_trait]
impl ChangeRequestService for ChangeRequests {
    async fn open_change_request(
        &self,
        request: Request<pb::OpenChangeRequestRequest>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let cr = self
            .crs
            .open(
                &who,
                OpenRequest {
                    project: req.project,
                    session_id: req.session_id,
                    branch: req.branch,
                    title: req.title,
                    body: req.body,
                },
            )
            .await?;
        Ok(Response::new(convert::change_request(&cr)))
    }

    async fn list_change_requests(
        &self,
        request: Request<pb::ListChangeRequestsRequest>,
    ) -> Result<Response<pb::ListChangeRequestsResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let state = match pb::ChangeRequestState::try_from(req.state).unwrap_or_default() {
            pb::ChangeRequestState::Unspecified => None,
            pb::ChangeRequestState::Open => Some(CrState::Open),
            pb::ChangeRequestState::Closed => Some(CrState::Closed),
            pb::ChangeRequestState::Merged => Some(CrState::Merged),
        };
        let page = req.page.unwrap_or_default();
        let listed = self
            .crs
            .list(
                &who,
                ListRequest {
                    project: req.project,
                    state,
                    page_size: page.page_size,
                    page_token: page.page_token,
                },
            )
            .await?;
        Ok(Response::new(pb::ListChangeRequestsResponse {
            change_requests: listed
                .change_requests
                .iter()
                .map(convert::change_request)
                .collect(),
            next_page_token: listed.next_page_token,
        }))
    }

    async fn get_change_request(
        &self,
        request: Request<pb::ChangeRequestRef>,
    ) -> Result<Response<pb::ChangeRequestDetail>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let d = self.crs.detail(&who, &r.project, r.number).await?;
        let totals = crate::changes::DiffTotals::of(&d.files);
        Ok(Response::new(pb::ChangeRequestDetail {
            change_request: Some(convert::change_request(&d.change_request)),
            merge_base: d.merge_base.map(|m| m.to_string()).unwrap_or_default(),
            files: d.files.iter().map(convert::file_change).collect(),
            insertions: totals.insertions.min(u32::MAX as u64) as u32,
            deletions: totals.deletions.min(u32::MAX as u64) as u32,
            mergeable: d.mergeable,
            conflicting_paths: d.conflicting_paths,
            commits_ahead: d.ahead_behind.ahead as u32,
            commits_behind: d.ahead_behind.behind as u32,
        }))
    }

    async fn get_diff(
        &self,
        request: Request<pb::ChangeRequestRef>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let d = self.crs.diff(&who, &r.project, r.number).await?;
        Ok(Response::new(pb::DiffResponse {
            diff: d.diff,
            files: d.files.iter().map(convert::file_change).collect(),
        }))
    }

    async fn merge_preview(
        &self,
        request: Request<pb::ChangeRequestRef>,
    ) -> Result<Response<pb::MergePreviewResponse>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let p = self.crs.preview_merge(&who, &r.project, r.number).await?;
        Ok(Response::new(pb::MergePreviewResponse {
            mergeable: p.mergeable,
            fast_forward: p.fast_forward,
            conflicting_paths: p.conflicting_paths,
            base_sha: p.base_sha.to_string(),
            head_sha: p.head_sha.to_string(),
        }))
    }

    async fn merge_change_request(
        &self,
        request: Request<pb::ChangeRequestRef>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let cr = self.crs.merge(&who, &r.project, r.number).await?;
        Ok(Response::new(convert::change_request(&cr)))
    }

    async fn close_change_request(
        &self,
        request: Request<pb::ChangeRequestRef>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let cr = self.crs.close(&who, &r.project, r.number).await?;
        Ok(Response::new(convert::change_request(&cr)))
    }

    async fn reopen_change_request(
        &self,
        request: Request<pb::ChangeRequestRef>,
    ) -> Result<Response<pb::ChangeRequest>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let cr = self.crs.reopen(&who, &r.project, r.number).await?;
        Ok(Response::new(convert::change_request(&cr)))
    }
}
