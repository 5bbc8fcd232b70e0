//! The public gRPC API for people (bearer tokens), one service per file. Transport only:
//! each handler authenticates ([`authn::caller`]), converts the request, calls one domain
//! service, and converts the answer (or the [`crate::error::DomainError`]) back.
//!
//! - [`authn`]: the layer that turns `authorization: Bearer …` into a [`crate::auth::Principal`]
//!   in the request extensions before any service runs.
//! - [`convert`]: domain values → wire messages.

pub mod access;
pub mod accounts;
pub mod apps;
pub mod audit;
pub mod authn;
pub mod change_requests;
pub mod channels;
pub mod connectors;
pub mod convert;
pub mod members;
pub mod projects;
pub mod secrets;
pub mod sessions;
pub mod snapshots;
pub mod triggers;
