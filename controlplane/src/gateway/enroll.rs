//! Enrollment: a one-time bootstrap token and a CSR buy a short-lived client certificate.

use super::Gateway;
use crate::ca::{IssuedCert, SessionIdentity};
use crate::clock::now_ms;
use crate::error::DomainError;
use crate::store::SessionStatus;
use kortix_proto::v1::{EnrollRequest, EnrollResponse, RenewRequest};
use tonic::Status;

impl Gateway {
    pub(super) async fn do_enroll(&self, req: EnrollRequest) -> Result<EnrollResponse, Status> {
        if req.protocol_version == 0 {
            return Err(Status::invalid_argument("protocol_version is required"));
        }
        let token = req.bootstrap_token.trim();
        crate::auth::check_token_format(token, crate::auth::TokenKind::Bootstrap)
            .map_err(|e| Status::unauthenticated(format!("bootstrap token: {e}")))?;
        let store = self.sessions.store();
        let session_id = store
            .consume_bootstrap_token(&crate::auth::hash_token(token), now_ms())
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
        tracing::info!(session = %session_id, agent_version = %req.agent_version, "agent enrolled");
        Ok(self.response(session_id, issued))
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
        }
    }
}
