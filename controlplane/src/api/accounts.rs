//! `AccountService`: transport for [`crate::accounts::Accounts`].

use super::{authn::caller, convert};
use crate::accounts::Accounts as Domain;
use kortix_proto::v1::account_service_server::AccountService;
use kortix_proto::v1::*;
use tonic::{Request, Response, Status};

pub struct Accounts {
    accounts: Domain,
}

impl Accounts {
    pub fn new(accounts: Domain) -> Self {
        Self { accounts }
    }
}

#[tonic::async_trait]
impl AccountService for Accounts {
    async fn create_account(
        &self,
        request: Request<CreateAccountRequest>,
    ) -> Result<Response<CreateAccountResponse>, Status> {
        let who = caller(&request)?;
        let (account, token) = self
            .accounts
            .create(&who, &request.into_inner().name)
            .await?;
        Ok(Response::new(CreateAccountResponse {
            account: Some(convert::person(&account)),
            token,
        }))
    }

    async fn who_am_i(&self, request: Request<Empty>) -> Result<Response<Account>, Status> {
        let who = caller(&request)?;
        let account = self.accounts.who_am_i(&who).await?;
        Ok(Response::new(convert::person(&account)))
    }

    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let who = caller(&request)?;
        let req = request.into_inner();
        let (minted, project) = self
            .accounts
            .create_token(
                &who,
                crate::accounts::NewToken {
                    name: req.name,
                    project: req.project,
                    role: req.role,
                    expires_in_seconds: req.expires_in_seconds,
                },
            )
            .await?;
        let mut info = convert::token(&minted.info);
        info.project = project.map(|p| p.name).unwrap_or_default();
        Ok(Response::new(CreateTokenResponse {
            info: Some(info),
            token: minted.token,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        let who = caller(&request)?;
        let tokens = self.accounts.tokens(&who).await?;
        Ok(Response::new(ListTokensResponse {
            tokens: tokens.iter().map(convert::token).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<TokenInfo>, Status> {
        let who = caller(&request)?;
        let token = self
            .accounts
            .revoke_token(&who, &request.into_inner().id)
            .await?;
        Ok(Response::new(convert::token(&token)))
    }
}
