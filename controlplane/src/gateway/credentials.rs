//! Just-in-time git credentials: a token for this session's repo, pushable only to its branch.

use super::Gateway;
use crate::ca::SessionIdentity;
use crate::clock::now_ms;
use crate::error::DomainError;
use kortix_proto::v1::{GitCredentialRequest, GitCredentialResponse};
use tonic::Status;

/// The user name git shows for session pushes; the token is what authenticates.
pub const GIT_USERNAME: &str = "kortix-session";
const MAX_FIELD: usize = 4096;

impl Gateway {
    pub(super) async fn do_git_credential(
        &self,
        who: &SessionIdentity,
        req: GitCredentialRequest,
    ) -> Result<GitCredentialResponse, Status> {
        if req.host.len() > MAX_FIELD || req.path.len() > MAX_FIELD || req.protocol.len() > 16 {
            return Err(Status::invalid_argument(
                "credential request fields too long",
            ));
        }
        let session = self.live_session(&who.session_id).await?;
        let store = self.sessions.store();
        let token = crate::auth::generate_token(crate::auth::TokenKind::SessionGit);
        let expires_ms = now_ms() + self.sessions.config().git_token_ttl.as_millis() as i64;
        store
            .create_git_token(
                &crate::auth::hash_token(&token),
                &session.id,
                &session.project_id,
                &session.id,
                expires_ms,
            )
            .await
            .map_err(DomainError::from)?;
        Ok(GitCredentialResponse {
            username: GIT_USERNAME.to_string(),
            password: token,
            expires_unix_s: expires_ms / 1000,
        })
    }
}
