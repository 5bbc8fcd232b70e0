//! Where sessions run. A provider boots a sandbox that runs `kortix-agent` with the session's
//! bootstrap environment, and kills it when asked. Providers report sandbox exits on a channel
//! so the session lifecycle can tell a finished agent from a crashed one.

pub mod command;
pub mod daytona;
pub mod docker;
pub mod external;
pub mod local;
// Building a sandbox needs a raw `clone` into new namespaces and only raw system calls
// (mount, pivot, exec; no allocation, no locks) in the child, which no safe wrapper offers.
#[allow(unsafe_code)]
pub mod namespaces;
pub mod opencode_packages;
pub mod workspace_archive;

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
    /// The container engine (or sandbox service) refused or failed a request.
    #[error("{0}")]
    Engine(String),
}

/// Hardware and image a session asked for, resolved from the manifest.
#[derive(Debug, Clone, Default)]
pub struct SandboxResources {
    pub template: String,
    pub cpu: Option<u32>,
    pub memory_gib: Option<u32>,
    pub disk_gib: Option<u32>,
    pub snapshot_hash: Option<String>,
    /// The snapshot (image) to boot, for providers that build snapshots.
    pub snapshot: Option<String>,
    pub project_id: String,
}

/// The label naming the deployment (one control plane and its replicas: the digest of their
/// CA) a sandbox on a shared engine or Daytona organization belongs to, so two deployments
/// sharing one never reconcile — and remove — each other's sandboxes.
pub const LABEL_DEPLOYMENT: &str = "kortix.deployment";

/// Whether a sandbox whose [`LABEL_DEPLOYMENT`] is `label` is `deployment`'s to reconcile.
/// A sandbox without the label was made before deployments were labelled, when an engine
/// was assumed to serve one deployment: it stays ours, as it was then.
pub fn belongs_to(label: Option<&str>, deployment: &str) -> bool {
    label.is_none_or(|d| d == deployment)
}

/// The deployment id of a control plane whose CA has `ca_fingerprint` (its first 16 hex
/// digits: the CA is shared by the replicas of one deployment and by nothing else).
pub fn deployment_id(ca_fingerprint: &str) -> String {
    ca_fingerprint.chars().take(16).collect()
}

/// Everything a provider needs to boot one session's sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub session_id: String,
    /// `KORTIX_*` bootstrap variables (control plane URL, session id, bootstrap token, CA).
    pub env: BTreeMap<String, String>,
    pub resources: SandboxResources,
    /// npm packages the project's OpenCode config names for its providers that OpenCode does
    /// not bundle (see [`opencode_packages::provider_specs`]); a provider that shares
    /// OpenCode's packages installs these too.
    pub opencode_npm: Vec<String>,
}

impl SandboxSpec {
    /// A failure to boot this sandbox.
    pub fn boot_error(&self, message: String) -> SandboxError {
        SandboxError::Boot {
            session_id: self.session_id.clone(),
            message,
        }
    }

    /// The snapshot an image-booting provider boots.
    pub fn snapshot(&self) -> Result<String, SandboxError> {
        self.resources
            .snapshot
            .clone()
            .ok_or_else(|| self.boot_error("no snapshot to boot from".into()))
    }
}

/// How a sandbox ended, as seen by its provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxExit {
    pub session_id: String,
    /// `exit status 0`, `killed by signal 9`, ...
    pub status: String,
    pub success: bool,
}

/// What a provider can say about the sandboxes that exist right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Session ids of the live sandboxes this provider runs (including ones adopted from an
    /// earlier run of the control plane).
    pub sandboxes: Vec<String>,
    /// Whether the list covers every sandbox of every session (a container engine or Daytona
    /// listing by label). Only then may a live session missing from it be declared lost;
    /// otherwise (a local provider that sees only its own children) losses show up as exits
    /// and missed heartbeats instead.
    pub complete: bool,
}

/// Where a snapshot build's output lines go (the waiting sessions' records, a CLI stream).
pub type BuildLog = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Why a snapshot build failed: the engine's error and the last lines of the build log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BuildFailure(pub String);

/// A provider that runs sandboxes from images builds the snapshots they boot from.
pub trait SnapshotBuilder: Send + Sync + 'static {
    /// Builds the image `name` from a build context archive (a tar file) whose Dockerfile is
    /// at `dockerfile`, sending each output line to `log`. Returns the image's size in bytes.
    /// `hardware` is the template's: a builder whose sandboxes take their resources from
    /// the snapshot (Daytona) records it there; a container engine sets limits per container.
    fn build<'a>(
        &'a self,
        name: &'a str,
        context: &'a std::path::Path,
        dockerfile: &'a str,
        hardware: crate::snapshots::Hardware,
        log: BuildLog,
    ) -> BoxFuture<'a, Result<u64, BuildFailure>>;
    /// Whether the image `name` exists (an active row whose image was removed by hand is
    /// rebuilt rather than booted).
    fn exists<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, SandboxError>>;
    /// Removes the image `name`; removing a missing image is not an error.
    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), SandboxError>>;
    /// Whether a build here may name an image this builder built before (`COPY --from`):
    /// a container engine keeps its images; a remote builder sees only the build context.
    fn keeps_images(&self) -> bool {
        false
    }
}

pub trait SandboxProvider: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn boot(&self, spec: SandboxSpec) -> BoxFuture<'_, Result<(), SandboxError>>;
    /// Ends the sandbox now. Killing an unknown or already-ended sandbox is not an error.
    fn kill<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>>;
    /// Whether this provider still tracks a live sandbox for the session.
    fn is_running(&self, session_id: &str) -> bool;
    /// The live sandboxes, for reconciling them with the sessions in the store.
    fn inventory(&self) -> BoxFuture<'_, Result<Inventory, SandboxError>>;
    /// Whether this provider's sandboxes are ended (stopped, so their agents push and flush)
    /// when the control plane shuts down: children of this process are; sandboxes that an
    /// engine or an outside orchestrator runs outlive it and reconnect to the next replica.
    fn ends_with_control_plane(&self) -> bool;
    /// Whether the template's `disk` bounds the sandbox's filesystem (otherwise the
    /// session's records say it is not enforced).
    fn limits_disk(&self) -> bool {
        false
    }
    /// Forgets what is kept of an ended sandbox (its directory, logs, container). Called when
    /// the session's record is deleted; a no-op for sandboxes that keep nothing.
    fn discard<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>>;
    /// Periodic upkeep (removing what ended sandboxes left behind once it has been kept long
    /// enough). Called by the reconcile loop.
    fn housekeep(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// At shutdown: removes sandboxes started ahead of sessions (a warm pool), which no
    /// session will use once this replica is gone.
    fn release_spares(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod deployment_tests {
    use super::*;

    #[test]
    fn a_sandbox_is_ours_when_labelled_ours_or_unlabelled() {
        let ours = deployment_id("0123456789abcdef0123456789abcdef");
        assert_eq!(ours, "0123456789abcdef");
        assert!(belongs_to(Some(&ours), &ours));
        assert!(
            belongs_to(None, &ours),
            "made before deployments were labelled"
        );
        assert!(!belongs_to(Some("fedcba9876543210"), &ours));
    }
}
