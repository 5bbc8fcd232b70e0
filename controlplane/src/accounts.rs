//! People, their bearer tokens, and accounts' members. Tokens are minted here and shown once;
//! the store keeps only their hashes.

use crate::audit::{self, Event};
use crate::auth::{Authenticator, Caller, TokenKind, generate_token, hash_token};
use crate::error::{DomainError, DomainResult, check_len};
use crate::permissions::{self, AccountRole, ProjectRole};
use crate::store::{Account, ApiToken, Member, Person, Project, Store, TokenLimits};

const MAX_TOKEN_NAME: usize = 128;
/// Longest token id looked up (ids are UUIDs).
const MAX_TOKEN_ID: usize = 64;
/// Longest person name looked up (names are at most 64 bytes).
const MAX_PERSON_REF: usize = 128;

/// Longest token lifetime accepted: ten years.
pub const MAX_TOKEN_SECONDS: i64 = 10 * 365 * 24 * 3600;

/// What a caller asks for when creating a token.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    pub name: String,
    /// Empty: the person's full rights.
    pub project: String,
    /// Empty: the creator's role on `project`.
    pub role: String,
    /// 0: never expires.
    pub expires_in_seconds: i64,
}

/// A token as created: its record and its secret text, which exists nowhere else.
pub struct MintedToken {
    pub info: ApiToken,
    pub token: String,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    store: Store,
    /// Forgets revoked tokens (the replica's token cache).
    authenticator: Authenticator,
}

impl Accounts {
    pub fn new(store: Store, authenticator: Authenticator) -> Self {
        Self {
            store,
            authenticator,
        }
    }

    /// The server admin creates a person with a personal account they own; the person gets
    /// a first token named `initial`. (The permission table has let only the server admin
    /// through.)
    pub async fn create(&self, caller: &Caller, name: &str) -> DomainResult<(Person, String)> {
        let person = self.store.create_person(name, false).await?;
        let minted = self.mint(&person.id, "initial").await?;
        tracing::info!(person = %person.name, "person and personal account created");
        audit::record(
            &self.store,
            caller,
            Event::in_account("person.create", &person.id, &person.name),
        )
        .await;
        Ok((person, minted.token))
    }

    pub async fn who_am_i(&self, caller: &Caller) -> DomainResult<Person> {
        Ok(self.store.get_person(&caller.person_id).await?)
    }

    /// A token for the caller, optionally narrowed to one project and a role no higher than
    /// the caller's own there, and optionally expiring.
    pub async fn create_token(
        &self,
        caller: &Caller,
        req: NewToken,
    ) -> DomainResult<(MintedToken, Option<Project>)> {
        if !(0..=MAX_TOKEN_SECONDS).contains(&req.expires_in_seconds) {
            return Err(DomainError::Invalid(format!(
                "a token expires after 1 second to {MAX_TOKEN_SECONDS} seconds (or never: 0)"
            )));
        }
        let mut limits = TokenLimits {
            expires_ms: (req.expires_in_seconds > 0)
                .then(|| crate::clock::now_ms() + req.expires_in_seconds * 1000),
            ..TokenLimits::default()
        };
        let mut project = None;
        if req.project.is_empty() {
            if !req.role.is_empty() {
                return Err(DomainError::Invalid(
                    "a token's role needs a project (--project)".into(),
                ));
            }
        } else {
            let (p, held) = permissions::project_role(&self.store, caller, &req.project).await?;
            let role = if req.role.is_empty() {
                held
            } else {
                req.role
                    .parse::<ProjectRole>()
                    .map_err(|e| DomainError::Invalid(e.to_string()))?
            };
            if role > held {
                return Err(DomainError::PermissionDenied(format!(
                    "a token for project '{}' can be at most {held}, your role there; {role} needs the project role {role}",
                    p.name
                )));
            }
            limits.project_id = Some(p.id.clone());
            limits.role = Some(role.as_str().to_string());
            project = Some(p);
        }
        let minted = self
            .mint_limited(&caller.person_id, &req.name, limits)
            .await?;
        let detail = token_scope(&minted.info, project.as_ref());
        audit::record(
            &self.store,
            caller,
            Event::in_account(
                "token.create",
                caller.personal_account_id(),
                &minted.info.name,
            )
            .with_detail(&detail),
        )
        .await;
        Ok((minted, project))
    }

    pub async fn tokens(&self, caller: &Caller) -> DomainResult<Vec<ApiToken>> {
        Ok(self.store.list_api_tokens(&caller.person_id).await?)
    }

    pub async fn revoke_token(&self, caller: &Caller, id: &str) -> DomainResult<ApiToken> {
        check_len("the token id", id, MAX_TOKEN_ID)?;
        let revoked = self
            .store
            .revoke_api_token(&caller.person_id, id, crate::clock::now_ms())
            .await?;
        self.authenticator.token_revoked(&revoked.id).await;
        audit::record(
            &self.store,
            caller,
            Event::in_account("token.revoke", caller.personal_account_id(), &revoked.name)
                .with_detail(&revoked.id),
        )
        .await;
        Ok(revoked)
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
        audit::record(
            &self.store,
            caller,
            Event::in_account("member.set", &account.id, &person.name).with_detail(role.as_str()),
        )
        .await;
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
        audit::record(
            &self.store,
            caller,
            Event::in_account("member.remove", &account.id, &person.name).with_detail(&member.role),
        )
        .await;
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
        self.mint_limited(person_id, name, TokenLimits::default())
            .await
    }

    async fn mint_limited(
        &self,
        person_id: &str,
        name: &str,
        limits: TokenLimits,
    ) -> DomainResult<MintedToken> {
        if name.len() > MAX_TOKEN_NAME {
            return Err(DomainError::Invalid(format!(
                "token name longer than {MAX_TOKEN_NAME} bytes"
            )));
        }
        let token = generate_token(TokenKind::Person);
        let info = self
            .store
            .create_limited_api_token(person_id, name, &hash_token(&token), limits)
            .await?;
        Ok(MintedToken { info, token })
    }
}

/// A token's reach in words, for the audit log: `full`, or its project, role and expiry.
fn token_scope(token: &ApiToken, project: Option<&Project>) -> String {
    let mut scope = match (project, &token.role) {
        (Some(p), Some(role)) => format!("project {} as {role}", p.name),
        (Some(p), None) => format!("project {}", p.name),
        _ => "full".to_string(),
    };
    if let Some(at) = token.expires_ms {
        scope.push_str(&format!(", expires {}", crate::clock::iso8601_ms(at)));
    }
    scope
}
