//! Enrollment: a one-time bootstrap token and a CSR buy a short-lived client certificate and
//! a single-use renewal secret; renewal over mTLS; and re-enrollment of a restarted agent of
//! a live session with that renewal secret (the bootstrap token stays single-use).

use super::Gateway;
use crate::auth::{TokenKind, check_token_format, generate_token, hash_token};
use crate::ca::{IssuedCert, SessionIdentity};
use crate::clock::now_ms;
use crate::error::DomainError;
use crate::store::SessionStatus;
use kortix_proto::v1::{EnrollRequest, EnrollResponse, ReenrollRequest, RenewRequest};
use tonic::Status;

/// Longest session id a Reenroll may name (ids are far shorter).
const MAX_SESSION_ID: usize = 128;
/// A Reenroll's answer may be lost on the way: the secret it replaced still re-enrolls for
/// this long, until the agent connects with what it was answered.
const PREVIOUS_SECRET_GRACE_MS: i64 = 10 * 60 * 1000;
/// Largest CSR taken (an EC or RSA-4096 CSR is far smaller).
const MAX_CSR: usize = 16 * 1024;

impl Gateway {
    pub(super) async fn do_enroll(&self, req: EnrollRequest) -> Result<EnrollResponse, Status> {
        if req.protocol_version == 0 {
            return Err(Status::invalid_argument("protocol_version is required"));
        }
        let token = req.bootstrap_token.trim();
        check_token_format(token, TokenKind::Bootstrap)
            .map_err(|e| Status::unauthenticated(format!("bootstrap token: {e}")))?;
        let store = self.sessions.store();
        let session_id = store
            .consume_bootstrap_token(&hash_token(token), now_ms())
            .await
            .map_err(DomainError::from)?;
        let session = store
            .get_session(&session_id)
            .await
            .map_err(DomainError::from)?;
        if !SessionStatus::BOOTING.contains(&session.status) {
            return Err(Status::failed_precondition(format!(
                "session {session_id} is {}, not provisioning or resuming",
                session.status
            )));
        }
        let issued = self.issue(&req.csr_der, &session_id).await?;
        let renewal_secret = generate_token(TokenKind::Renewal);
        store
            .set_renewal_secret(&session_id, &hash_token(&renewal_secret))
            .await
            .map_err(DomainError::from)?;
        tracing::info!(session = %session_id, agent_version = %req.agent_version, "agent enrolled");
        let mut response = self.response(session_id, issued);
        response.renewal_secret = renewal_secret;
        Ok(response)
    }

    /// A restarted agent of a live session: the renewal secret proves it is the same
    /// sandbox. Success rotates the secret and is audited; a wrong or used secret is
    /// PERMISSION_DENIED and changes nothing. The replaced secret stays good until the agent
    /// connects (or re-enrolls with the new one), for at most [`PREVIOUS_SECRET_GRACE_MS`]:
    /// an agent whose answer was lost has only that one.
    pub(super) async fn do_reenroll(
        &self,
        req: ReenrollRequest,
        from: &str,
    ) -> Result<EnrollResponse, Status> {
        if req.protocol_version == 0 {
            return Err(Status::invalid_argument("protocol_version is required"));
        }
        let session_id = req.session_id.trim();
        if session_id.is_empty() || session_id.len() > MAX_SESSION_ID {
            return Err(Status::invalid_argument(format!(
                "session_id must be 1 to {MAX_SESSION_ID} bytes"
            )));
        }
        if req.csr_der.len() > MAX_CSR {
            return Err(Status::invalid_argument(format!(
                "csr_der is larger than {MAX_CSR} bytes"
            )));
        }
        let secret = req.renewal_secret.trim();
        check_token_format(secret, TokenKind::Renewal)
            .map_err(|e| Status::permission_denied(format!("renewal secret: {e}")))?;
        let denied = || {
            Status::permission_denied(format!(
                "renewal secret refused for session {session_id}: it is not the session's \
                 current one (wrong, or already used by an earlier re-enrollment)"
            ))
        };
        let store = self.sessions.store();
        let old_hash = hash_token(secret);
        let previous_since = now_ms() - PREVIOUS_SECRET_GRACE_MS;
        // Checked first so that a refusal changes nothing (no certificate is signed).
        if !store
            .renewal_secret_matches(session_id, &old_hash, previous_since)
            .await
            .map_err(DomainError::from)?
        {
            tracing::warn!(session = %session_id, %from, "re-enrollment refused: wrong or used renewal secret");
            return Err(denied());
        }
        let session = self.live_session(session_id).await?;
        let ttl = self.sessions.config().cert_ttl;
        let issued = self
            .ca
            .sign_session_csr(&req.csr_der, &session.id, ttl)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Recorded before the secret turns over: an unused serial row is harmless, a rotated
        // secret without a certificate would strand the agent.
        store
            .record_issued_cert(
                &issued.serial_hex,
                &session.id,
                issued.not_after_unix_s * 1000,
            )
            .await
            .map_err(DomainError::from)?;
        let next = generate_token(TokenKind::Renewal);
        if !store
            .rotate_renewal_secret(
                &session.id,
                &old_hash,
                &hash_token(&next),
                now_ms(),
                previous_since,
            )
            .await
            .map_err(DomainError::from)?
        {
            // Another caller used the same secret between the check and here.
            let _ = store.revoke_cert(&issued.serial_hex, now_ms()).await;
            return Err(denied());
        }
        tracing::info!(session = %session.id, agent_version = %req.agent_version, %from, "agent re-enrolled with its renewal secret");
        if let Ok(project) = store.find_project(&session.project_id).await {
            let detail = format!(
                "certificate {} issued to a restarted agent (agent {})",
                issued.serial_hex, req.agent_version
            );
            crate::audit::record_agent(
                store,
                &session.id,
                from,
                crate::audit::Event::in_project("session.agent_reenroll", &project, &session.id)
                    .with_detail(&detail),
            )
            .await;
        }
        let mut response = self.response(session.id.clone(), issued);
        response.renewal_secret = next;
        Ok(response)
    }

    pub(super) async fn do_renew(
        &self,
        who: &SessionIdentity,
        req: RenewRequest,
    ) -> Result<EnrollResponse, Status> {
        self.live_session(&who.session_id).await?;
        let issued = self.issue(&req.csr_der, &who.session_id).await?;
        Ok(self.response(who.session_id.clone(), issued))
    }

    async fn issue(&self, csr_der: &[u8], session_id: &str) -> Result<IssuedCert, Status> {
        let ttl = self.sessions.config().cert_ttl;
        let issued = self
            .ca
            .sign_session_csr(csr_der, session_id, ttl)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.sessions
            .store()
            .record_issued_cert(
                &issued.serial_hex,
                session_id,
                issued.not_after_unix_s * 1000,
            )
            .await
            .map_err(DomainError::from)?;
        Ok(issued)
    }

    fn response(&self, session_id: String, issued: IssuedCert) -> EnrollResponse {
        let now = now_ms() / 1000;
        let lifetime = (issued.not_after_unix_s - now).max(0);
        EnrollResponse {
            session_id,
            certificate_chain_pem: format!("{}{}", issued.cert_pem, self.ca.cert_pem()),
            ca_certificate_pem: self.ca.cert_pem().to_string(),
            not_after_unix_s: issued.not_after_unix_s,
            renew_after_unix_s: now + lifetime * 2 / 3,
            renewal_secret: String::new(),
        }
    }
}
