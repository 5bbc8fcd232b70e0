//! Who a client certificate speaks for.

use super::CaError;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

pub const SPIFFE_PREFIX: &str = "spiffe://kortix/session/";

/// The session a verified client certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIdentity {
    pub session_id: String,
    pub serial_hex: String,
    pub not_after_unix_s: i64,
}

/// Reads the session identity from a leaf certificate the TLS layer already verified against
/// the CA. Exactly one `spiffe://kortix/session/<id>` URI SAN is required.
pub fn identity_from_cert(der: &[u8]) -> Result<SessionIdentity, CaError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| CaError::BadCert(format!("unparsable: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CaError::BadCert(format!("bad SAN extension: {e}")))?
        .ok_or_else(|| CaError::BadCert("no subject alternative name".into()))?;
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => uri.strip_prefix(SPIFFE_PREFIX),
        _ => None,
    });
    let session_id = match (ids.next(), ids.next()) {
        (Some(id), None) if valid_session_id(id) => id.to_string(),
        (Some(_), None) => return Err(CaError::BadCert("malformed session id in SAN".into())),
        (None, _) => return Err(CaError::BadCert("no kortix session URI SAN".into())),
        (Some(_), Some(_)) => return Err(CaError::BadCert("more than one session URI SAN".into())),
    };
    Ok(SessionIdentity {
        session_id,
        serial_hex: hex::encode(cert.raw_serial()),
        not_after_unix_s: cert.validity().not_after.timestamp(),
    })
}

fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::super::Ca;
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn csr() -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn signed_cert_names_the_session_not_the_csr() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let issued = ca
            .sign_session_csr(&csr(), "s-abc123", std::time::Duration::from_secs(600))
            .unwrap();
        let der = super::super::store::pem_to_der(&issued.cert_pem).unwrap();
        let id = identity_from_cert(&der).unwrap();
        assert_eq!(id.session_id, "s-abc123");
        assert_eq!(id.serial_hex, issued.serial_hex);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(
            !san.value
                .general_names
                .iter()
                .any(|n| matches!(n, GeneralName::DNSName(_))),
            "requested DNS name must be ignored"
        );
    }

    #[test]
    fn ca_reloads_with_same_identity_and_refuses_loose_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fp = Ca::load_or_create(dir.path()).unwrap().fingerprint();
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(again.fingerprint(), fp);
        // A cert signed after reload chains to the same CA.
        let issued = again
            .sign_session_csr(&csr(), "s1", std::time::Duration::from_secs(60))
            .unwrap();
        let der = super::super::store::pem_to_der(&issued.cert_pem).unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let (_, ca_cert) = X509Certificate::from_der(again.cert_der()).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        let key = dir.path().join("ca.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Ca::load_or_create(dir.path()),
            Err(CaError::InsecureKeyFile { .. })
        ));
    }

    #[test]
    fn garbage_csr_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        for bad in [&b""[..], b"\x30\x03\x02\x01\x00", &[0u8; 20000][..]] {
            assert!(matches!(
                ca.sign_session_csr(bad, "s1", std::time::Duration::from_secs(60)),
                Err(CaError::BadCsr(_))
            ));
        }
        assert!(identity_from_cert(b"junk").is_err());
    }
}
