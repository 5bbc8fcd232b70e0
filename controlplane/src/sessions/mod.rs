//! Sessions: one OpenCode run in a disposable sandbox, on a branch named after the session.
//!
//! - [`lifecycle`]: start, stop, delete, and what happens when a sandbox exits.
//! - [`access`]: the same for people: ownership checks, project names, prompts.
//! - [`sweep`]: the periodic checks that keep a session from ever being a zombie (agent never
//!   connected, heartbeats lost, idle hibernation, stop deadlines), and, every ten minutes,
//!   the purge of expired credentials (`purge`).
//! - [`record_pipeline`]: agents' record batches → group commit → acks.
//! - [`heartbeats`]: heartbeats answered from memory, stored in batches.
//! - [`reconcile`]: the provider's sandboxes against the store's live sessions.
//! - [`attach`]: stored-then-live record streams for viewers.
//! - [`build_log`]: lines the control plane writes into a session's records before it boots
//!   (the snapshot build's output, what the provider does not honour).
//! - [`live`]: in-process wake-ups and the control channel to connected agents.
//! - [`tail`]: the newest durable records of watched sessions, for live viewers.
//! - [`records`]: the record encoding shared by the gateway and attach, and records in the
//!   shape `kortix-timeline` reads (for the console and Slack threads).
//! - [`watch`]: a session's state changes, for those who wait on them.
//! - [`resume`]: what a winding-down agent saved, resuming a stopped or hibernated session in
//!   a new sandbox, and what a killed sandbox lost.

pub mod access;
pub mod attach;
pub mod build_log;
pub mod cluster;
pub mod commands;
pub mod heartbeats;
pub mod lifecycle;
pub mod live;
mod purge;
pub mod reconcile;
pub mod record_pipeline;
pub mod records;
pub mod resume;
pub mod sweep;
pub mod tail;
mod trigger_starter;
pub mod watch;

use crate::git::Repos;
use crate::manifests::Manifests;
use crate::sandbox::SandboxProvider;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// Timings and addresses the session machinery runs with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Where sandboxes reach the agent gateway (`https://host:port`).
    pub agent_url: String,
    /// Where sandboxes reach the git endpoint (`http://host:port`).
    pub public_url: String,
    /// PEM of the CA, handed to sandboxes so they can verify the agent gateway.
    pub ca_cert_pem: String,
    /// A provisioning session whose agent has not connected by then fails.
    pub connect_deadline: Duration,
    /// How long a stopping agent gets before its sandbox is killed.
    pub stop_grace: Duration,
    /// Running sessions idle this long are hibernated; zero disables hibernation.
    pub idle_timeout: Duration,
    /// A running session with no heartbeat for this long has lost its agent.
    pub heartbeat_timeout: Duration,
    /// A session whose agent has connected must be `running` (OpenCode ready) within this
    /// long; the agent enforces it from its own start and reports OpenCode's last output, and
    /// the sweeper backs it up.
    pub start_deadline: Duration,
    /// After this control plane starts, agents get this long (beyond the heartbeat timeout)
    /// to notice and reconnect before the sweeper judges them: at least the agent's longest
    /// reconnect backoff.
    pub reconnect_grace: Duration,
    pub bootstrap_ttl: Duration,
    pub cert_ttl: Duration,
    pub git_token_ttl: Duration,
    pub sweep_interval: Duration,
    /// Attach and WatchSession re-read the store this often even without a wake-up: the
    /// floor for anything a wake-up missed (a lost notification, SQLite replicas sharing
    /// nothing).
    pub store_poll: Duration,
}

impl SessionConfig {
    pub fn new(agent_url: String, public_url: String, ca_cert_pem: String) -> Self {
        Self {
            agent_url,
            public_url,
            ca_cert_pem,
            connect_deadline: Duration::from_secs(180),
            stop_grace: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15 * 60),
            heartbeat_timeout: Duration::from_secs(90),
            start_deadline: Duration::from_secs(300),
            reconnect_grace: Duration::from_secs(45),
            bootstrap_ttl: Duration::from_secs(10 * 60),
            cert_ttl: Duration::from_secs(60 * 60),
            git_token_ttl: Duration::from_secs(10 * 60),
            sweep_interval: Duration::from_secs(1),
            store_poll: Duration::from_millis(500),
        }
    }
}

/// Session operations fail with the domain error (see [`crate::error`]).
pub use crate::error::DomainError as SessionError;

/// Shared state of the session machinery; cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    pub(crate) store: Store,
    pub(crate) repos: Repos,
    pub(crate) provider: Arc<dyn SandboxProvider>,
    pub(crate) hub: live::Hub,
    pub(crate) config: Arc<SessionConfig>,
    pub(crate) stops: lifecycle::PendingStops,
    pub(crate) pipeline: record_pipeline::RecordPipeline,
    pub(crate) heartbeats: Arc<heartbeats::HeartbeatBook>,
    /// When this control plane started: the sweeper gives agents time to reconnect first.
    pub(crate) started: std::time::Instant,
    pub(crate) started_ms: i64,
    /// Set at shutdown: no new sessions start on this replica.
    pub(crate) draining: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) manifests: Arc<Manifests>,
    pub(crate) purged: Arc<purge::PurgeClock>,
    /// Snapshots, for providers that boot images; `None` for the local and external ones.
    pub(crate) snapshots: Option<crate::snapshots::Snapshots>,
    /// This process among the replicas: names the agent streams it holds in the store.
    pub(crate) replica: Arc<str>,
    /// Callers waiting for their command's ack (`SendPrompt`).
    pub(crate) ack_waiters: Arc<commands::AckWaiters>,
}

impl Sessions {
    /// Must be called on a Tokio runtime: it starts the record pipeline's writers.
    pub fn new(
        store: Store,
        repos: Repos,
        provider: Arc<dyn SandboxProvider>,
        hub: live::Hub,
        manifests: Arc<Manifests>,
        config: SessionConfig,
    ) -> Self {
        Self {
            manifests,
            purged: Arc::default(),
            pipeline: record_pipeline::RecordPipeline::start(store.clone()),
            heartbeats: Arc::default(),
            store,
            repos,
            provider,
            hub,
            config: Arc::new(config),
            stops: Default::default(),
            started: std::time::Instant::now(),
            started_ms: now_ms(),
            draining: Arc::default(),
            snapshots: None,
            replica: crate::store::new_id().into(),
            ack_waiters: Arc::default(),
        }
    }

    /// Sessions boot from snapshots built by `snapshots` (for a provider that boots images).
    pub fn with_snapshots(mut self, snapshots: crate::snapshots::Snapshots) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    pub fn snapshots(&self) -> Option<&crate::snapshots::Snapshots> {
        self.snapshots.as_ref()
    }

    /// Stops taking new sessions (shutdown has begun); live ones are being ended.
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn hub(&self) -> &live::Hub {
        &self.hub
    }

    pub fn pipeline(&self) -> &record_pipeline::RecordPipeline {
        &self.pipeline
    }

    pub fn heartbeats(&self) -> &heartbeats::HeartbeatBook {
        &self.heartbeats
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }
}

pub(crate) use crate::clock::now_ms;
