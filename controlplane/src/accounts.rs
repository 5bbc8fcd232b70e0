//! People, their bearer tokens, and accounts' members. Tokens are minted here and shown once;
//! the store keeps only their hashes.

use crate::auth::{Caller, TokenKind, generate_token, hash_token};
use crate::error::{DomainError, DomainResult, check_len};
use crate::permissions::{self, AccountRole};
use crate::store::{Account, ApiToken, Member, Person, Store};

const MAX_TOKEN_NAME: usize = 128;
/// Longest token id looked up (ids are UUIDs).
const MAX_TOKEN_ID: usize = 64;
/// Longest person name looked up (names are at most 64 bytes).
const MAX_PERSON_REF: usize = 128;

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

    /// The server admin creates a person with a personal account they own; the person gets
    /// a first token named `initial`. (The permission table has let only the server admin
    /// through.)
    pub async fn create(&self, _caller: &Caller, name: &str) -> DomainResult<(Person, String)> {
        let person = self.store.create_person(name, false).await?;
        let minted = self.mint(&person.id, "initial").await?;
        tracing::info!(person = %person.name, "person and personal account created");
        Ok((person, minted.token))
    }

    pub async fn who_am_i(&self, caller: &Caller) -> DomainResult<Person> {
        Ok(self.store.get_person(&caller.person_id).await?)
    }

    pub async fn create_token(&self, caller: &Caller, name: &str) -> DomainResult<MintedToken> {
        self.mint(&caller.person_id, name).await
    }

    pub async fn tokens(&self, caller: &Caller) -> DomainResult<Vec<ApiToken>> {
        Ok(self.store.list_api_tokens(&caller.person_id).await?)
    }

    pub async fn revoke_token(&self, caller: &Caller, id: &str) -> DomainResult<ApiToken> {
        check_len("the token id", id, MAX_TOKEN_ID)?;
        Ok(self
            .store
            .revoke_api_token(&caller.person_id, id, crate::clock::now_ms())
            .await?)
    }

    /// The members of `account` (empty: the caller's personal account).
    pub async fn members(
        &self,
        caller: &Caller,
        account: &str,
    ) -> DomainResult<(Account, Vec<Member>)> {
        let (account, _) = permissions::account(&self.store, caller, account).await?;
        let members = self.store.list_members(&account.id).await?;
        Ok((account, members))
    }

    /// Adds `person` to `account` with `role`, or changes their role. Only an owner may make
    /// or unmake owners; the last owner keeps the role.
    pub async fn add_member(
        &self,
        caller: &Caller,
        account: &str,
        person: &str,
        role: &str,
    ) -> DomainResult<(Account, Member)> {
        let role: AccountRole = role
            .parse()
            .map_err(|e: permissions::UnknownRole| DomainError::Invalid(e.to_string()))?;
        let (account, held) = permissions::account(&self.store, caller, account).await?;
        let person = self.person(person).await?;
        let current = self.store.member_role(&account.id, &person.id).await?;
        if (role == AccountRole::Owner || current.as_deref() == Some("owner"))
            && held < AccountRole::Owner
        {
            return Err(DomainError::PermissionDenied(format!(
                "making or unmaking an owner needs the account role owner in account '{}'; you are {held}",
                account.name
            )));
        }
        let member = self
            .store
            .set_member(&account.id, &person.id, role.as_str())
            .await?;
        tracing::info!(account = %account.name, person = %person.name, %role, "member set");
        Ok((account, member))
    }

    /// Removes `person` from `account`. Anyone may leave; removing others needs the account
    /// role admin (owner for an owner); the last owner cannot go.
    pub async fn remove_member(
        &self,
        caller: &Caller,
        account: &str,
        person: &str,
    ) -> DomainResult<(Account, Member)> {
        // Membership first, so that a stranger learns nothing about the account's people.
        let (account, held) = permissions::account(
            &self.store,
            &caller.doing(permissions::Action::ListMembers),
            account,
        )
        .await?;
        let person = self.person(person).await?;
        let leaving = person.id == caller.person_id;
        if !leaving {
            permissions::check::require_account_role(caller, &account, held)?;
        }
        let current = self.store.member_role(&account.id, &person.id).await?;
        if !leaving && current.as_deref() == Some("owner") && held < AccountRole::Owner {
            return Err(DomainError::PermissionDenied(format!(
                "removing an owner needs the account role owner in account '{}'; you are {held}",
                account.name
            )));
        }
        let member = match self.store.remove_member(&account.id, &person.id).await {
            Err(e) if e.is_not_found() => {
                return Err(DomainError::NotFound(format!(
                    "'{}' is not a member of account '{}'",
                    person.name, account.name
                )));
            }
            other => other?,
        };
        tracing::info!(account = %account.name, person = %person.name, "member removed");
        Ok((account, member))
    }

    /// A person by name.
    pub async fn person(&self, name: &str) -> DomainResult<Person> {
        check_len("the person's name", name, MAX_PERSON_REF)?;
        match self.store.get_person_by_name(name).await {
            Err(e) if e.is_not_found() => {
                Err(DomainError::NotFound(format!("person '{name}' not found")))
            }
            other => Ok(other?),
        }
    }

    async fn mint(&self, person_id: &str, name: &str) -> DomainResult<MintedToken> {
        if name.len() > MAX_TOKEN_NAME {
            return Err(DomainError::Invalid(format!(
                "token name longer than {MAX_TOKEN_NAME} bytes"
            )));
        }
        let token = generate_token(TokenKind::Person);
        let info = self
            .store
            .create_api_token(person_id, name, &hash_token(&token))
            .await?;
        Ok(MintedToken { info, token })
    }
}
