//! Accounts and their bearer tokens. Tokens are minted here and shown once; the store keeps
//! only their hashes.

use crate::auth::{Caller, TokenKind, generate_token, hash_token};
use crate::error::{DomainError, DomainResult, check_len};
use crate::store::{Account, ApiToken, Store};

const MAX_TOKEN_NAME: usize = 128;
/// Longest token id looked up (ids are UUIDs).
const MAX_TOKEN_ID: usize = 64;

/// A token as created: its record and its secret text, which exists nowhere else.
pub struct MintedToken {
    pub info: ApiToken,
    pub token: String,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    store: Store,
}

impl Accounts {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The admin creates an account, which gets a first token named `initial`.
    pub async fn create(&self, caller: &Caller, name: &str) -> DomainResult<(Account, String)> {
        if !caller.admin {
            return Err(DomainError::PermissionDenied(
                "only the admin token can create accounts".into(),
            ));
        }
        let account = self.store.create_account(name, false).await?;
        let minted = self.mint(&account.id, "initial").await?;
        tracing::info!(account = %account.name, "account created");
        Ok((account, minted.token))
    }

    pub async fn who_am_i(&self, caller: &Caller) -> DomainResult<Account> {
        Ok(self.store.get_account(&caller.account_id).await?)
    }

    pub async fn create_token(&self, caller: &Caller, name: &str) -> DomainResult<MintedToken> {
        self.mint(&caller.account_id, name).await
    }

    pub async fn tokens(&self, caller: &Caller) -> DomainResult<Vec<ApiToken>> {
        Ok(self.store.list_api_tokens(&caller.account_id).await?)
    }

    pub async fn revoke_token(&self, caller: &Caller, id: &str) -> DomainResult<ApiToken> {
        check_len("the token id", id, MAX_TOKEN_ID)?;
        Ok(self
            .store
            .revoke_api_token(&caller.account_id, id, crate::clock::now_ms())
            .await?)
    }

    async fn mint(&self, account_id: &str, name: &str) -> DomainResult<MintedToken> {
        if name.len() > MAX_TOKEN_NAME {
            return Err(DomainError::Invalid(format!(
                "token name longer than {MAX_TOKEN_NAME} bytes"
            )));
        }
        let token = generate_token(TokenKind::Person);
        let info = self
            .store
            .create_api_token(account_id, name, &hash_token(&token))
            .await?;
        Ok(MintedToken { info, token })
    }
}
