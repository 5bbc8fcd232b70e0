//! Sessions on Daytona through its REST API, exactly as Daytona documents it (the NestJS
//! controllers and DTOs of its `apps/api`): snapshots built by Daytona from the composed
//! recipe, one sandbox per session booted from them.
//!
//! - [`api`]: the wire types and what Daytona's states mean here.
//! - [`client`]: authentication, timeouts, response caps, retries with backoff and jitter.
//! - [`storage`]: build contexts through Daytona's object storage (S3, Signature V4).
//! - [`snapshots`]: building snapshots (`POST /snapshots`, polled until `active`).
//! - [`provider`]: one sandbox per session, reconciled by label.
//! - [`toolbox`]: a sandbox's toolbox through Daytona's toolbox proxy (execute, upload,
//!   download).
//! - [`command`]: an app's build in a sandbox of the project's snapshot, through the toolbox.

pub mod api;
pub mod client;
pub mod command;
pub mod provider;
pub mod snapshots;
pub mod storage;
pub mod toolbox;

pub use client::{ApiError, DaytonaClient, RetryPolicy};
pub use provider::{DaytonaConfig, DaytonaProvider};
pub use snapshots::DaytonaSnapshots;
