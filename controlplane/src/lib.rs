//! The Kortix control plane.
//!
//! Where things live:
//! - [`store`]: accounts, tokens, projects, sessions, records, change requests, firings —
//!   one SQL layer over SQLite (default) and PostgreSQL.
//! - [`auth`]: bearer tokens for people and scoped git tokens for sessions.
//! - [`secrets`]: AEAD sealing of project secrets under the master key.
//! - [`git`]: bare repositories (create, import, read, compare-and-swap refs) and smart HTTP
//!   hosting through `git http-backend`.
//! - [`changes`]: change-request diff and merge over the bare repositories.
//! - [`metrics`]: the Prometheus endpoint.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod ca;
pub mod change_requests;
pub mod changes;
pub mod clock;
pub mod config;
pub mod error;
pub mod gateway;
pub mod git;
pub mod manifests;
pub mod metrics;
pub mod projects;
pub mod public;
pub mod sandbox;
pub mod secrets;
pub mod server;
pub mod sessions;
pub mod store;
pub mod triggers;
