//! Triggers: sessions started by a cron schedule, a signed webhook, or by hand.
//!
//! - [`cron_sweep`]: the background [`Sweeper`] that fires due cron occurrences.
//! - [`webhook`]: `POST /v1/webhooks/projects/{project}/{slug}` as an axum router.
//! - [`service`]: the `TriggerService` gRPC implementation.
//! - [`firing`]: claim → render → start → record, shared by all three.
//! - [`manifests`]: `[[triggers]]` from the manifest on each project's default branch,
//!   cached by the branch head.
//! - [`schedule`], [`template`], [`signature`], [`clock`]: the pure pieces.
//!
//! Exactly-once: every firing has a key (`cron:<scheduled-unix-s>`, `delivery:<id>`,
//! `delivery-none:<uuid>`, `manual:<uuid>`) and is claimed in the store — an insert on
//! UNIQUE(project, slug, key) — *before* the session is started. Whoever loses the insert
//! does nothing, so any number of replicas sweep and receive webhooks side by side.

pub mod clock;
pub mod cron_sweep;
pub mod firing;
pub mod manifests;
pub mod schedule;
pub mod service;
pub mod signature;
pub mod template;
pub mod webhook;

#[cfg(test)]
mod testkit;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::git::Repos;
use crate::secrets::MasterKey;
use crate::store::Store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use cron_sweep::{SweepConfig, SweepReport, Sweeper};
pub use firing::FireOutcome;
pub use manifests::{ManifestCache, ProjectManifest};
pub use service::TriggerServiceImpl;

/// What a trigger asks the session service to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerStart {
    pub project_id: String,
    pub prompt: String,
    pub agent: String,
    /// `trigger:<slug>`.
    pub origin: String,
    /// The firing key; starting twice with the same key must yield the same session.
    pub idempotency_key: String,
}

/// Starts sessions for triggers. Implemented by the session service.
pub trait SessionStarter: Send + Sync + 'static {
    /// The id of the started session, or why it could not start.
    fn start(&self, req: TriggerStart) -> BoxFuture<'_, Result<String, String>>;
}

/// Why trigger machinery could not do its work (as opposed to a firing that failed, which
/// is recorded as a firing with outcome `failed`).
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("reading kortix.toml of project {project_id}: {source}")]
    Git {
        project_id: String,
        #[source]
        source: crate::git::RepoError,
    },
    #[error("opening secret {name} of project {project_id}: {reason}")]
    Secret {
        project_id: String,
        name: String,
        reason: String,
    },
    #[error("{0}")]
    Internal(String),
}

/// Everything the sweeper, the webhook endpoint and the gRPC service share. Cheap to clone.
#[derive(Clone)]
pub struct Triggers {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    manifests: ManifestCache,
    master_key: Arc<MasterKey>,
    starter: Arc<dyn SessionStarter>,
    clock: Arc<dyn Clock>,
}

impl Triggers {
    pub fn new(
        store: Store,
        repos: Repos,
        master_key: Arc<MasterKey>,
        starter: Arc<dyn SessionStarter>,
    ) -> Self {
        Self::with_clock(store, repos, master_key, starter, Arc::new(SystemClock))
    }

    /// [`Triggers::new`] reading the time from `clock` (tests drive time by hand).
    pub fn with_clock(
        store: Store,
        repos: Repos,
        master_key: Arc<MasterKey>,
        starter: Arc<dyn SessionStarter>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Triggers {
            inner: Arc::new(Inner {
                store,
                manifests: ManifestCache::new(repos),
                master_key,
                starter,
                clock,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn manifests(&self) -> &ManifestCache {
        &self.inner.manifests
    }

    pub(crate) fn master_key(&self) -> &MasterKey {
        &self.inner.master_key
    }

    pub(crate) fn starter(&self) -> &dyn SessionStarter {
        self.inner.starter.as_ref()
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.clock.now()
    }
}

/// Path of a trigger's webhook endpoint on the public listener.
pub fn webhook_path(project_name: &str, slug: &str) -> String {
    format!("/v1/webhooks/projects/{project_name}/{slug}")
}
