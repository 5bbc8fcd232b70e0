//! Certificates the CA signs: agent client certificates and the agent listener's own.

use super::{Ca, CaError, SPIFFE_PREFIX};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// Tolerates modest clock skew between the control plane and sandboxes.
const BACKDATE: Duration = Duration::minutes(5);
/// CSRs larger than this are not CSRs we issued the format for.
const MAX_CSR_BYTES: usize = 16 * 1024;

/// A freshly signed client certificate.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    /// Lower-case hex of the serial number, as recorded in the store.
    pub serial_hex: String,
    pub not_after_unix_s: i64,
}

/// The agent listener's certificate and key.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// Signs `csr_der` for `session_id`. Everything the CSR asks for except its public key is
    /// ignored: the subject, SANs and usages are the CA's choice.
    pub fn sign_session_csr(
        &self,
        csr_der: &[u8],
        session_id: &str,
        lifetime: std::time::Duration,
    ) -> Result<IssuedCert, CaError> {
        if csr_der.is_empty() || csr_der.len() > MAX_CSR_BYTES {
            return Err(CaError::BadCsr(format!(
                "CSR must be 1..={MAX_CSR_BYTES} bytes, got {}",
                csr_der.len()
            )));
        }
        let csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let uri = format!("{SPIFFE_PREFIX}{session_id}");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("session {session_id}"));
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            uri.try_into()
                .map_err(|e: rcgen::Error| CaError::BadCsr(e.to_string()))?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = OffsetDateTime::now_utc();
        let lifetime = Duration::try_from(lifetime).unwrap_or(Duration::hours(1));
        params.not_before = now - BACKDATE;
        params.not_after = now + lifetime;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            serial_hex: hex::encode(serial),
            not_after_unix_s: params.not_after.unix_timestamp(),
        })
    }

    /// Issues a server certificate for the agent listener covering `names` (DNS names or IPs).
    pub fn issue_server_cert(&self, names: &[String]) -> Result<ServerCert, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Kortix agent gateway");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(365);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// 16 random bytes with the top bit clear, so the DER integer stays positive and fixed-width.
fn random_serial() -> [u8; 16] {
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).expect("system RNG");
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    serial
}
