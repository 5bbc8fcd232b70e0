//! `[[apps]]` (experimental, behind `KORTIX_APPS_EXPERIMENTAL=true`): deployable surfaces a
//! project's manifest declares, built and served by the control plane itself (the `local`
//! deploy provider).
//!
//! - [`sweep`]: the background deploy sweep. It deploys an enabled app when its
//!   manifest-derived hash ([`hash`]) changes and never otherwise; the hash is claimed in the
//!   store first, so however many replicas sweep, a hash is built once.
//! - [`deploy`]: one deployment, start to end: [`source`] (git checkout or https tarball) →
//!   [`build`] (the build command in a sandbox, its log kept; under `--sandbox docker` in a
//!   container of the project's snapshot, under `--sandbox daytona` in a Daytona sandbox of
//!   it, [`snapshot_build`]) → the output directory copied
//!   into the data directory ([`content`]) → the served pointer moved in the store. A failure
//!   anywhere leaves the previous deployment serving. Also rollbacks.
//! - [`content`]: deployment directories and the safe resolution of request paths in them.
//! - [`routes`]: `/apps/<project>/<slug>/…` and serving by `Host` header.
//! - [`access`]: what people may do (list, deploy, logs, rollback); its gRPC transport is
//!   `api::apps`.

pub mod access;
pub mod build;
pub mod content;
pub mod deploy;
pub mod hash;
pub mod routes;
pub mod snapshot_build;
pub mod source;
pub mod sweep;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::error::DomainError;
use crate::git::Repos;
use crate::manifests::Manifests;
use crate::sandbox::local::{Confinement, Isolation, confine};
use crate::store::Store;

pub use snapshot_build::{BuildBackend, SnapshotBuilds};
pub use sweep::DeploySweep;

/// The environment variable that turns apps on.
pub const FLAG: &str = "KORTIX_APPS_EXPERIMENTAL";

/// The refusal every apps surface gives while the flag is off.
pub fn disabled_message() -> String {
    format!(
        "apps are experimental and off on this control plane: start `kortix server` with {FLAG}=true to deploy and serve [[apps]]"
    )
}

/// Whether `value` (of [`FLAG`]) turns apps on: `true` or `1`, any case.
pub fn flag_on(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        let v = v.trim();
        v.eq_ignore_ascii_case("true") || v == "1"
    })
}

/// How apps are deployed (`ServerConfig::apps`).
#[derive(Debug, Clone)]
pub struct AppSettings {
    /// [`FLAG`]: off, nothing is deployed and `/apps` answers 404.
    pub enabled: bool,
    /// How often the deploy sweep looks at every project's manifest.
    pub sweep_interval: Duration,
    /// The longest a build command may run.
    pub build_timeout: Duration,
    /// The longest a source may take to fetch (clone or download).
    pub fetch_timeout: Duration,
    /// The largest tarball downloaded.
    pub max_tarball_bytes: u64,
    /// The most bytes (and files) a deployment's content may hold.
    pub max_content_bytes: u64,
    pub max_content_files: u64,
    /// Builds running at once on this replica.
    pub concurrent_builds: usize,
    /// Successful deployments whose content is kept per app (for rollbacks), besides the
    /// one served.
    pub keep_deployments: usize,
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            sweep_interval: Duration::from_secs(2),
            build_timeout: Duration::from_secs(15 * 60),
            fetch_timeout: Duration::from_secs(5 * 60),
            max_tarball_bytes: 256 << 20,
            max_content_bytes: 1 << 30,
            max_content_files: 100_000,
            concurrent_builds: 2,
            keep_deployments: 5,
        }
    }
}

/// The apps service. Cheap to clone.
#[derive(Clone)]
pub struct Apps {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    repos: Repos,
    manifests: Arc<Manifests>,
    settings: AppSettings,
    isolation: Isolation,
    /// `<data-dir>/apps`: deployments' content and builds' scratch directories.
    root: PathBuf,
    /// Names this replica's claims on builds.
    builder: String,
    /// Where the public listener is reached (the URLs `apps ls` shows).
    public_url: String,
    /// Decided on first use: probing namespaces forks a process.
    confinement: OnceLock<Confinement>,
    /// Where builds run when sessions run from snapshots on a container engine.
    snapshot_builds: OnceLock<SnapshotBuilds>,
    builds: tokio::sync::Semaphore,
}

impl Apps {
    pub fn new(
        store: Store,
        repos: Repos,
        manifests: Arc<Manifests>,
        settings: AppSettings,
        isolation: Isolation,
        data_dir: &Path,
        public_url: String,
    ) -> Self {
        let builds = tokio::sync::Semaphore::new(settings.concurrent_builds.max(1));
        Apps {
            inner: Arc::new(Inner {
                store,
                repos,
                manifests,
                settings,
                isolation,
                root: data_dir.join("apps"),
                builder: crate::store::new_id(),
                public_url,
                confinement: OnceLock::new(),
                snapshot_builds: OnceLock::new(),
                builds,
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.settings.enabled
    }

    /// [`DomainError::Precondition`] naming the flag while apps are off.
    pub fn require_enabled(&self) -> Result<(), DomainError> {
        if self.enabled() {
            Ok(())
        } else {
            Err(DomainError::Precondition(disabled_message()))
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn manifests(&self) -> &Manifests {
        &self.inner.manifests
    }

    pub(crate) fn repos(&self) -> &Repos {
        &self.inner.repos
    }

    pub fn settings(&self) -> &AppSettings {
        &self.inner.settings
    }

    pub(crate) fn builder_id(&self) -> &str {
        &self.inner.builder
    }

    /// `<data-dir>/apps`.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where the control plane serves an app.
    pub fn url(&self, project_name: &str, slug: &str) -> String {
        format!(
            "{}{}",
            self.inner.public_url.trim_end_matches('/'),
            app_path(project_name, slug)
        )
    }

    /// How builds are confined: the `local` provider's isolation settings.
    pub(crate) fn confinement(&self) -> &Confinement {
        self.inner.confinement.get_or_init(|| {
            let scratch = self.inner.root.join(".builds");
            confine(&self.inner.isolation, &scratch)
        })
    }

    /// Builds run in the project's snapshot (a container of it under `--sandbox docker`, a
    /// Daytona sandbox of it under `--sandbox daytona`), not in the local confinement.
    pub(crate) fn snapshot_builds(&self) -> Option<&SnapshotBuilds> {
        self.inner.snapshot_builds.get()
    }

    /// Builds from now on run in their project's snapshot. Set once, when the
    /// server is wired (a second call changes nothing).
    pub fn build_in_snapshots(self, builds: SnapshotBuilds) -> Self {
        let _ = self.inner.snapshot_builds.set(builds);
        self
    }

    pub(crate) fn build_slots(&self) -> &tokio::sync::Semaphore {
        &self.inner.builds
    }
}

/// The path an app is served at on the public listener.
pub fn app_path(project_name: &str, slug: &str) -> String {
    format!("/apps/{project_name}/{slug}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_reads_true_or_one() {
        assert!(flag_on(Some("true")));
        assert!(flag_on(Some(" TRUE ")));
        assert!(flag_on(Some("1")));
        for off in [None, Some(""), Some("false"), Some("yes"), Some("0")] {
            assert!(!flag_on(off), "{off:?}");
        }
        assert!(disabled_message().contains("KORTIX_APPS_EXPERIMENTAL=true"));
    }
}
