//! `AccountService`: accounts and their bearer tokens.

use super::{authn::caller, convert, store_status};
use crate::store::Store;
use kortix_proto::v1::account_service_server::AccountService;
use kortix_proto::v1::*;
use tonic::{Request, Response, Status};

const MAX_TOKEN_NAME: usize = 128;

pub struct Accounts {
    store: Store,
}

impl Accounts {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn mint(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<(crate::store::ApiToken, String), Status> {
        if name.len() > MAX_TOKEN_NAME {
            return Err(Status::invalid_argument(format!(
                "token name longer than {MAX_TOKEN_NAME} bytes"
            )));
        }
        let token = crate::auth::generate_token(crate::auth::TokenKind::Person);
        let info = self
            .store
            .create_api_token(account_id, name, &crate::auth::hash_token(&token))
            .await
            .map_err(store_status)?;
        Ok((info, token))
    }
}

#[tonic::async_trait]
impl AccountService for Accounts {
    async fn create_account(
        &self,
        request: Request<CreateAccountRequest>,
    ) -> Result<Response<CreateAccountResponse>, Status> {
        let who = caller(&request)?;
        if !who.admin {
            return Err(Status::permission_denied(
                "only the admin token can create accounts",
            ));
        }
        let name = request.into_inner().name;
        let account = self
            .store
            .create_account(&name, false)
            .await
            .map_err(store_status)?;
        let (_, token) = self.mint(&account.id, "initial").await?;
        tracing::info!(account = %account.name, "account created");
        Ok(Response::new(CreateAccountResponse {
            account: Some(convert::account(&account)),
            token,
        }))
    }

    async fn who_am_i(&self, request: Request<Empty>) -> Result<Response<Account>, Status> {
        let who = caller(&request)?;
        let account = self
            .store
            .get_account(&who.account_id)
            .await
            .map_err(store_status)?;
        Ok(Response::new(convert::account(&account)))
    }

    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let who = caller(&request)?;
        let name = request.into_inner().name;
        let (info, token) = self.mint(&who.account_id, &name).await?;
        Ok(Response::new(CreateTokenResponse {
            info: Some(convert::token(&info)),
            token,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        let who = caller(&request)?;
        let tokens = self
            .store
            .list_api_tokens(&who.account_id)
            .await
            .map_err(store_status)?;
        Ok(Response::new(ListTokensResponse {
            tokens: tokens.iter().map(convert::token).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<TokenInfo>, Status> {
        let who = caller(&request)?;
        let id = request.into_inner().id;
        let token = self
            .store
            .revoke_api_token(&who.account_id, &id, crate::sessions::now_ms())
            .await
            .map_err(store_status)?;
        Ok(Response::new(convert::token(&token)))
    }
}
