//! Project secrets: names and values are validated here, values are sealed with AES-256-GCM
//! under the control plane's master key (project id and name bound in as associated data, so
//! a ciphertext can't be moved to another project or name), and only ciphertext reaches the
//! store. [`ProjectSecrets`] is the one owner of setting, loading, decrypting and announcing
//! them.

mod keyfile;
mod master_key;
mod names;
mod project_secrets;
mod value;

pub use keyfile::write_private_file;
pub use master_key::{MASTER_KEY_FILE_NAME, MASTER_KEY_LEN, MasterKey, Sealed};
/// Same as [`validate_secret_name`].
pub use names::validate_secret_name as validate_name;
pub use names::{
    MAX_SECRET_VALUE_BYTES, RESERVED_NAMES, RESERVED_PREFIXES, validate_secret_name,
    validate_secret_value,
};
pub use project_secrets::{ProjectSecrets, SecretSet};
pub use value::SecretValue;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// `name` is quoted and cut (see [`crate::store::quoted`]).
    #[error("invalid secret name {name}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("secret {name}: value is {size} bytes, at most {max} allowed", max = MAX_SECRET_VALUE_BYTES)]
    TooLarge { name: String, size: usize },
    #[error("master key {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error("master key {}: {source}", path.display())]
    KeyIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sealing secret {name} failed")]
    Seal { name: String },
    /// Wrong key, wrong project/name, or damaged ciphertext: AEAD can't tell which.
    #[error(
        "secret {name} of project {project_id} cannot be decrypted (wrong master key or corrupted data)"
    )]
    Open { project_id: String, name: String },
}
