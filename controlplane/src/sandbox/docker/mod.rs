//! Sessions on a container engine through the Docker Engine API (`bollard`): Docker Engine,
//! or Podman's Docker-compatible service.
//!
//! - [`engine`]: connecting (`DOCKER_HOST`, `--docker-host`, the local socket).
//! - [`build`]: building snapshots (`POST /build` with the composed recipe as context).
//! - [`provider`]: one container per session, reconciled by label.
//! - [`exit_watch`]: the containers' exits, from the engine's event stream.
//! - [`pool`]: the warm pool, containers started ahead of sessions (`--warm-pool`).
//! - [`command`]: one command in a container of a snapshot (an app's build).

pub mod build;
pub mod command;
pub mod engine;
mod exit_watch;
pub mod pool;
pub mod provider;

pub use engine::DockerEngine;
pub use provider::{DockerConfig, DockerProvider};
