//! The calling agent's identity: the URI SAN of the client certificate that the TLS layer
//! verified against the CA. Request fields never name the session.

use super::Gateway;
use crate::ca::{SessionIdentity, identity_from_cert};
use crate::error::DomainError;
use crate::store::Session;
use tonic::{Request, Status};

/// Identity of a client certificate, without the revocation check.
pub fn peer_identity<T>(request: &Request<T>) -> Result<SessionIdentity, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate from Enroll is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate from Enroll is required"))?;
    identity_from_cert(leaf.as_ref()).map_err(|e| Status::unauthenticated(e.to_string()))
}

impl Gateway {
    /// Identity of a client certificate that has not been revoked.
    pub(super) async fn identify<T>(
        &self,
        request: &Request<T>,
    ) -> Result<SessionIdentity, Status> {
        let who = peer_identity(request)?;
        let revoked = self
            .sessions
            .store()
            .is_cert_revoked(&who.serial_hex)
            .await
            .map_err(DomainError::from)?;
        if revoked {
            return Err(Status::unauthenticated(format!(
                "certificate {} for session {} is revoked",
                who.serial_hex, who.session_id
            )));
        }
        Ok(who)
    }

    /// The calling agent's session, refused (FAILED_PRECONDITION, which agents take as final)
    /// once it has ended.
    pub(super) async fn live_session(&self, session_id: &str) -> Result<Session, Status> {
        let session = self
            .sessions
            .store()
            .get_session(session_id)
            .await
            .map_err(DomainError::from)?;
        if session.status.is_terminal() {
            return Err(Status::failed_precondition(format!(
                "session {} has ended ({})",
                session.id, session.status
            )));
        }
        Ok(session)
    }
}
