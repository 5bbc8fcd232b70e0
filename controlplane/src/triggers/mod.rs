//! Triggers: sessions started by a cron schedule, a signed webhook, or by hand.
//!
//! - [`cron_sweep`]: the background [`Sweeper`] that fires due cron occurrences.
//! - [`webhook`]: `POST /v1/webhooks/projects/{project}/{slug}` as an axum router.
//! - [`access`]: what people may do (list, fire by hand, list firings); its gRPC transport
//!   is `api::triggers`.
//! - [`firing`]: claim → render → start → record, shared by all three.
//! - [`schedule`], [`template`], [`signature`]: the pure pieces.
//!
//! `[[triggers]]` come from the manifest on each project's default branch, read through the
//! one cached reader in [`crate::manifests`].
//!
//! Exactly-once: every firing has a key (`cron:<scheduled-unix-s>`, `delivery:<id>`,
//! `signed:<digest of signature and body>`, `manual:<uuid>`) and is claimed in the store — an insert on
//! UNIQUE(project, slug, key) — *before* the session is started. Whoever loses the insert
//! does nothing, so any number of replicas sweep and receive webhooks side by side.

pub mod access;
pub mod cron_sweep;
pub mod firing;
pub mod schedule;
pub mod signature;
pub mod template;
pub mod webhook;

#[cfg(test)]
pub(crate) mod testkit;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::manifests::Manifests;
use crate::secrets::ProjectSecrets;
use crate::store::Store;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use access::{TriggerList, TriggerView};
pub use cron_sweep::{SweepConfig, SweepReport, Sweeper};
pub use firing::FireOutcome;

/// What a trigger asks the session service to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerStart {
    pub project_id: String,
    pub prompt: String,
    pub agent: String,
    /// `trigger:<slug>`.
    pub origin: String,
    /// Starting twice with the same key must yield the same session: the firing key, or for
    /// keys that may fire again after a while, the key and the firing's time.
    pub idempotency_key: String,
}

/// Starts sessions for triggers. Implemented by the session service.
pub trait SessionStarter: Send + Sync + 'static {
    /// The id of the started session, or why it could not start.
    fn start(&self, req: TriggerStart) -> BoxFuture<'_, Result<String, String>>;
}

/// Everything the sweeper, the webhook endpoint and the gRPC service share. Cheap to clone.
#[derive(Clone)]
pub struct Triggers {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    manifests: Arc<Manifests>,
    secrets: ProjectSecrets,
    starter: Arc<dyn SessionStarter>,
    clock: Arc<dyn Clock>,
}

impl Triggers {
    pub fn new(
        store: Store,
        manifests: Arc<Manifests>,
        secrets: ProjectSecrets,
        starter: Arc<dyn SessionStarter>,
    ) -> Self {
        Self::with_clock(store, manifests, secrets, starter, Arc::new(SystemClock))
    }

    /// [`Triggers::new`] reading the time from `clock` (tests drive time by hand).
    pub fn with_clock(
        store: Store,
        manifests: Arc<Manifests>,
        secrets: ProjectSecrets,
        starter: Arc<dyn SessionStarter>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Triggers {
            inner: Arc::new(Inner {
                store,
                manifests,
                secrets,
                starter,
                clock,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn manifests(&self) -> &Manifests {
        &self.inner.manifests
    }

    pub(crate) fn secrets(&self) -> &ProjectSecrets {
        &self.inner.secrets
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
