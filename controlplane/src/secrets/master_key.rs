//! The master key that seals every project secret, kept in the data directory.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::{SecretValue, SecretsError, write_private_file};

/// File name of the key inside the data directory.
pub const MASTER_KEY_FILE_NAME: &str = "master.key";
/// Raw key length (AES-256).
pub const MASTER_KEY_LEN: usize = 32;
/// Domain separation for the associated data, so a future format can't be confused with this one.
const AAD_DOMAIN: &[u8] = b"kortix/secret/v1\0";

/// A sealed secret: a fresh 96-bit nonce and the ciphertext with its tag appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// AES-256-GCM key for project secrets. Cheap to clone; never printed.
#[derive(Clone)]
pub struct MasterKey {
    key: Arc<LessSafeKey>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Loads the key at `path`, or creates it (32 random bytes, mode 0600) if there is none.
    /// Refuses a file of the wrong size or one that group or others can read.
    pub fn load_or_create(path: &Path) -> Result<MasterKey, SecretsError> {
        // Two tries: if another process creates the file between our open and our create,
        // the second open reads theirs.
        for _ in 0..2 {
            match MasterKey::load(path) {
                Err(SecretsError::KeyIo { source, .. })
                    if source.kind() == io::ErrorKind::NotFound => {}
                other => return other,
            }
            let mut raw = Zeroizing::new([0u8; MASTER_KEY_LEN]);
            aws_lc_rs::rand::fill(raw.as_mut()).map_err(|_| SecretsError::KeyFile {
                path: path.to_path_buf(),
                reason: "the system random number generator failed".to_string(),
            })?;
            match write_private_file(path, raw.as_ref(), false) {
                Ok(()) => return MasterKey::from_bytes(raw.as_ref()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(SecretsError::KeyIo {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
        }
        MasterKey::load(path)
    }

    /// Loads an existing key file, with the same checks as [`MasterKey::load_or_create`].
    pub fn load(path: &Path) -> Result<MasterKey, SecretsError> {
        let io_err = |source| SecretsError::KeyIo {
            path: path.to_path_buf(),
            source,
        };
        let bad = |reason: String| SecretsError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(bad("not a regular file".to_string()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "is readable by group or others (mode {mode:03o}); run `chmod 600` on it"
            )));
        }
        if meta.len() != MASTER_KEY_LEN as u64 {
            return Err(bad(format!(
                "is {} bytes, expected exactly {MASTER_KEY_LEN}",
                meta.len()
            )));
        }
        let mut raw = Zeroizing::new(Vec::with_capacity(MASTER_KEY_LEN + 1));
        file.take(MASTER_KEY_LEN as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(io_err)?;
        if raw.len() != MASTER_KEY_LEN {
            return Err(bad(format!(
                "is {} bytes, expected exactly {MASTER_KEY_LEN}",
                raw.len()
            )));
        }
        MasterKey::from_bytes(&raw).map_err(|_| bad("unusable key material".to_string()))
    }

    /// A key from raw bytes (exactly 32).
    pub fn from_bytes(raw: &[u8]) -> Result<MasterKey, SecretsError> {
        let unbound = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| SecretsError::KeyFile {
            path: Default::default(),
            reason: format!("key must be {MASTER_KEY_LEN} bytes"),
        })?;
        Ok(MasterKey {
            key: Arc::new(LessSafeKey::new(unbound)),
        })
    }

    /// A random key that lives only in memory.
    pub fn generate() -> Result<MasterKey, SecretsError> {
        let mut raw = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        aws_lc_rs::rand::fill(raw.as_mut()).map_err(|_| SecretsError::KeyFile {
            path: Default::default(),
            reason: "the system random number generator failed".to_string(),
        })?;
        MasterKey::from_bytes(raw.as_ref())
    }

    /// Encrypts `plaintext` for secret `name` of project `project_id`. The name is
    /// validated; the value is size-checked.
    pub fn seal(
        &self,
        project_id: &str,
        name: &str,
        plaintext: &str,
    ) -> Result<Sealed, SecretsError> {
        super::validate_secret_name(name)?;
        self.seal_bound(project_id, name, plaintext)
    }

    /// [`MasterKey::seal`] for values that are not project secrets (connector credentials):
    /// `binding` is any text naming what the value belongs to, and [`MasterKey::open`] with
    /// the same binding opens it. The value is size-checked.
    pub fn seal_bound(
        &self,
        project_id: &str,
        name: &str,
        plaintext: &str,
    ) -> Result<Sealed, SecretsError> {
        super::validate_secret_value(name, plaintext)?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SecretsError::Seal {
            name: name.to_string(),
        })?;
        // Room for the tag up front, so appending it never reallocates and leaves a stray
        // copy of the plaintext in freed memory.
        let mut buf = Vec::with_capacity(plaintext.len() + AES_256_GCM.tag_len());
        buf.extend_from_slice(plaintext.as_bytes());
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(project_id, name)),
                &mut buf,
            )
            .map_err(|_| SecretsError::Seal {
                name: name.to_string(),
            })?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext: buf,
        })
    }

    /// Decrypts a secret sealed by [`MasterKey::seal`] for the same project and name.
    pub fn open(
        &self,
        project_id: &str,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<SecretValue, SecretsError> {
        let fail = || SecretsError::Open {
            project_id: project_id.to_string(),
            name: name.to_string(),
        };
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let len = self
            .key
            .open_in_place(
                nonce,
                Aad::from(associated_data(project_id, name)),
                &mut buf,
            )
            .map_err(|_| fail())?
            .len();
        buf.truncate(len);
        match String::from_utf8(std::mem::take(&mut *buf)) {
            Ok(text) => Ok(SecretValue::new(text)),
            Err(e) => {
                zeroize::Zeroize::zeroize(&mut e.into_bytes());
                Err(fail())
            }
        }
    }
}

/// Binds a ciphertext to its project and name. Both parts are length-prefixed, so no
/// (project, name) pair can produce another pair's bytes.
fn associated_data(project_id: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 9 + project_id.len() + name.len());
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(&(project_id.len() as u32).to_be_bytes());
    aad.extend_from_slice(project_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&(name.len() as u32).to_be_bytes());
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn roundtrips() {
        let key = MasterKey::generate().unwrap();
        let sealed = key.seal("p1", "API_KEY", "s3cr3t value ✓").unwrap();
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert_eq!(sealed.ciphertext.len(), "s3cr3t value ✓".len() + 16);
        let opened = key
            .open("p1", "API_KEY", &sealed.nonce, &sealed.ciphertext)
            .unwrap();
        assert_eq!(opened.expose(), "s3cr3t value ✓");
        let empty = key.seal("p1", "EMPTY", "").unwrap();
        assert_eq!(
            key.open("p1", "EMPTY", &empty.nonce, &empty.ciphertext)
                .unwrap()
                .expose(),
            ""
        );
    }

    #[test]
    fn nonces_are_fresh() {
        let key = MasterKey::generate().unwrap();
        let a = key.seal("p1", "A", "same").unwrap();
        let b = key.seal("p1", "A", "same").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn other_project_or_name_cannot_open() {
        let key = MasterKey::generate().unwrap();
        let s = key.seal("p1", "API_KEY", "v").unwrap();
        assert!(matches!(
            key.open("p2", "API_KEY", &s.nonce, &s.ciphertext),
            Err(SecretsError::Open { .. })
        ));
        assert!(key.open("p1", "OTHER", &s.nonce, &s.ciphertext).is_err());
        // Moving bytes between the two fields must not produce the same associated data.
        assert_ne!(associated_data("p1A", "B"), associated_data("p1", "AB"));
        assert!(key.open("p1A", "PI_KEY", &s.nonce, &s.ciphertext).is_err());
    }

    #[test]
    fn corrupted_or_foreign_ciphertext_fails() {
        let key = MasterKey::generate().unwrap();
        let s = key.seal("p1", "API_KEY", "value").unwrap();
        for i in 0..s.ciphertext.len() {
            let mut bad = s.ciphertext.clone();
            bad[i] ^= 0x01;
            assert!(
                key.open("p1", "API_KEY", &s.nonce, &bad).is_err(),
                "flip at {i}"
            );
        }
        let mut bad_nonce = s.nonce.clone();
        bad_nonce[0] ^= 1;
        assert!(
            key.open("p1", "API_KEY", &bad_nonce, &s.ciphertext)
                .is_err()
        );
        assert!(
            key.open("p1", "API_KEY", &s.nonce[..11], &s.ciphertext)
                .is_err()
        );
        assert!(
            key.open("p1", "API_KEY", &s.nonce, &s.ciphertext[..10])
                .is_err()
        );
        assert!(key.open("p1", "API_KEY", &s.nonce, &[]).is_err());
        let other = MasterKey::generate().unwrap();
        assert!(
            other
                .open("p1", "API_KEY", &s.nonce, &s.ciphertext)
                .is_err()
        );
    }

    #[test]
    fn seal_validates() {
        let key = MasterKey::generate().unwrap();
        assert!(matches!(
            key.seal("p", "KORTIX_X", "v"),
            Err(SecretsError::InvalidName { .. })
        ));
        assert!(matches!(
            key.seal(
                "p",
                "BIG",
                &"x".repeat(super::super::MAX_SECRET_VALUE_BYTES + 1)
            ),
            Err(SecretsError::TooLarge { .. })
        ));
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEY_FILE_NAME);
        let key = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), 32);
        let sealed = key.seal("p", "A", "v").unwrap();
        let again = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(
            again
                .open("p", "A", &sealed.nonce, &sealed.ciphertext)
                .unwrap()
                .expose(),
            "v"
        );
        assert_eq!(format!("{again:?}"), "MasterKey(<redacted>)");
    }

    #[test]
    fn concurrent_creation_agrees_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEY_FILE_NAME);
        let keys: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| MasterKey::load_or_create(&path).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let sealed = keys[0].seal("p", "A", "v").unwrap();
        for k in &keys {
            assert_eq!(
                k.open("p", "A", &sealed.nonce, &sealed.ciphertext)
                    .unwrap()
                    .expose(),
                "v"
            );
        }
    }

    #[test]
    fn refuses_readable_or_wrong_sized_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEY_FILE_NAME);
        MasterKey::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = MasterKey::load_or_create(&path).unwrap_err().to_string();
        assert!(
            err.contains("readable by group or others") && err.contains("640"),
            "{err}"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
        assert!(MasterKey::load(&path).is_err());

        let short = dir.path().join("short.key");
        write_private_file(&short, &[7u8; 31], false).unwrap();
        let err = MasterKey::load_or_create(&short).unwrap_err().to_string();
        assert!(err.contains("31 bytes"), "{err}");
        let long = dir.path().join("long.key");
        write_private_file(&long, &[7u8; 33], false).unwrap();
        assert!(MasterKey::load(&long).is_err());
        // A wrong file is never replaced by a fresh key.
        assert_eq!(fs::read(&short).unwrap(), [7u8; 31]);
        assert!(matches!(
            MasterKey::load(&dir.path().join("missing")),
            Err(SecretsError::KeyIo { .. })
        ));
    }
}
