//! Where sessions run. A provider boots a sandbox that runs `kortix-agent` with the session's
//! bootstrap environment, and kills it when asked. Providers report sandbox exits on a channel
//! so the session lifecycle can tell a finished agent from a crashed one.

pub mod external;
pub mod local;
pub mod namespaces;

use futures::future::BoxFuture;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox for session {session_id}: {message}")]
    Boot { session_id: String, message: String },
    #[error("sandbox for session {session_id}: {source}")]
    Io {
        session_id: String,
        #[source]
        source: std::io::Error,
    },
}

/// Hardware and image a session asked for, resolved from the manifest.
#[derive(Debug, Clone, Default)]
pub struct SandboxResources {
    pub template: String,
    pub cpu: Option<u32>,
    pub memory_gib: Option<u32>,
    pub disk_gib: Option<u32>,
    pub snapshot_hash: Option<String>,
}

/// Everything a provider needs to boot one session's sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub session_id: String,
    /// `KORTIX_*` bootstrap variables (control plane URL, session id, bootstrap token, CA).
    pub env: BTreeMap<String, String>,
    pub resources: SandboxResources,
}

/// How a sandbox ended, as seen by its provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxExit {
    pub session_id: String,
    /// `exit status 0`, `killed by signal 9`, ...
    pub status: String,
    pub success: bool,
}

pub trait SandboxProvider: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn boot(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<(), SandboxError>>;
    /// Ends the sandbox now. Killing an unknown or already-ended sandbox is not an error.
    fn kill<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>>;
    /// Whether this provider still tracks a live sandbox for the session.
    fn is_running(&self, session_id: &str) -> bool;
}
