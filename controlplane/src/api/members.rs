//! `MemberService`: transport for the membership part of [`crate::accounts::Accounts`].

use super::{authn::caller, convert};
use crate::accounts::Accounts;
use kortix_proto::v1::member_service_server::MemberService;
use kortix_proto::v1::*;
use tonic::{Request, Response, Status};

pub struct Members {
    accounts: Accounts,
}

impl Members {
    pub fn new(accounts: Accounts) -> Self {
        Self { accounts }
    }
}

#[tonic::async_trait]
impl MemberService for Members {
    async fn list_members(
        &self,
        request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        let who = caller(&request)?;
        let (account, members) = self
            .accounts
            .members(&who, &request.into_inner().account)
            .await?;
        Ok(Response::new(ListMembersResponse {
            members: members
                .iter()
                .map(|m| convert::member(&account, m))
                .collect(),
        }))
    }

    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> Result<Response<Member>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let (account, member) = self
            .accounts
            .add_member(&who, &req.account, &req.person, &req.role)
            .await?;
        Ok(Response::new(convert::member(&account, &member)))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<Member>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let (account, member) = self
            .accounts
            .remove_member(&who, &req.account, &req.person)
            .await?;
        Ok(Response::new(convert::member(&account, &member)))
    }
}
