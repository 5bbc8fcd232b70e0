//! Sessions on a container engine through the Docker Engine API (`bollard`): Docker Engine,
//! or Podman's Docker-compatible service.
//!
//! - [`engine`]: connecting (`DOCKER_HOST`, `--docker-host`, the local socket).
//! - [`build`]: building snapshots (`POST /build` with the composed recipe as context).

pub mod build;
pub mod engine;

pub use engine::DockerEngine;
