//! The Kortix control plane. `ARCHITECTURE.md` at the repository root has the full map and
//! the invariants; in short:
//!
//! Transport (no rules of their own):
//! - [`api`]: the public gRPC services — authenticate, convert, call one domain service.
//! - [`gateway`]: the agents' mTLS service; identity from the client certificate only.
//! - [`public`]: what the public listener serves; [`server`]: composition and lifecycle.
//!
//! Domain services (all fail with [`error::DomainError`]):
//! - [`accounts`], [`projects`], [`change_requests`], [`secrets`] (`ProjectSecrets`),
//!   [`sessions`], [`triggers`], [`snapshots`] (built once per content hash); [`manifests`]: the one reader of `kortix.toml` on a default
//!   branch.
//!
//! Infrastructure:
//! - [`store`]: every SQL statement, once for SQLite and PostgreSQL.
//! - [`git`]: bare repositories, compare-and-swap refs, smart HTTP hosting; [`changes`]: diffs
//!   and merges. Neither knows the store.
//! - [`auth`]: tokens and push rules; [`ca`]: the built-in CA; [`sandbox`]: where agents run.
//! - [`error`], [`clock`], [`metrics`], [`config`].

pub mod accounts;
pub mod api;
pub mod apps;
pub mod audit;
pub mod auth;
pub mod backoff;
pub mod ca;
pub mod change_requests;
pub mod changes;
pub mod channels;
pub mod clock;
pub mod config;
pub mod connectors;
pub mod console;
pub mod error;
pub mod gateway;
pub mod git;
pub mod leases;
pub mod manifests;
pub mod metrics;
pub mod permissions;
pub mod project_access;
pub mod projects;
pub mod public;
pub mod sandbox;
pub mod secrets;
pub mod server;
pub mod sessions;
pub mod snapshots;
pub mod store;
pub mod triggers;
