//! On-disk persistence of the CA key and certificate.

use super::{Ca, CaError};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

const KEY_FILE: &str = "ca.key";
const CERT_FILE: &str = "ca.crt";
/// The CA outlives any deployment we expect; leaf certificates are the short-lived ones.
const CA_LIFETIME: Duration = Duration::days(3650);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn load_or_create(dir: &Path) -> Result<Ca, CaError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let key_path = dir.join(KEY_FILE);
    let cert_path = dir.join(CERT_FILE);
    if key_path.exists() || cert_path.exists() {
        return load(dir, &key_path, &cert_path);
    }
    create(dir, &key_path, &cert_path)
}

fn load(dir: &Path, key_path: &Path, cert_path: &Path) -> Result<Ca, CaError> {
    let meta = std::fs::metadata(key_path).map_err(io_err(key_path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::InsecureKeyFile {
            path: key_path.to_path_buf(),
            mode,
        });
    }
    let key_pem = std::fs::read_to_string(key_path).map_err(io_err(key_path))?;
    let cert_pem = std::fs::read_to_string(cert_path).map_err(io_err(cert_path))?;
    let corrupt = |reason: String| CaError::Corrupt {
        dir: dir.to_path_buf(),
        reason,
    };
    let key = KeyPair::from_pem(&key_pem).map_err(|e| corrupt(format!("{KEY_FILE}: {e}")))?;
    let cert_der =
        pem_to_der(&cert_pem).ok_or_else(|| corrupt(format!("{CERT_FILE}: no PEM certificate")))?;
    let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), key)
        .map_err(|e| corrupt(format!("{CERT_FILE}: {e}")))?;
    Ok(Ca {
        cert_pem,
        cert_der,
        issuer,
        dir: dir.to_path_buf(),
    })
}

fn create(dir: &Path, key_path: &Path, cert_path: &Path) -> Result<Ca, CaError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Kortix session CA");
    dn.push(DnType::OrganizationName, "Kortix");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + CA_LIFETIME;
    let cert = params.self_signed(&key)?;
    write_private(key_path, key.serialize_pem().as_bytes())?;
    write_atomic(cert_path, cert.pem().as_bytes(), 0o644)?;
    let cert_der = cert.der().to_vec();
    Ok(Ca {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
        cert_der,
        dir: dir.to_path_buf(),
    })
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), CaError> {
    write_atomic(path, data, 0o600)
}

/// Write to a temp file in the same directory, then rename, so a crash never leaves half a key.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

pub(crate) fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let start = pem.find("-----BEGIN CERTIFICATE-----")?;
    let rest = &pem[start + "-----BEGIN CERTIFICATE-----".len()..];
    let end = rest.find("-----END CERTIFICATE-----")?;
    let b64: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}
