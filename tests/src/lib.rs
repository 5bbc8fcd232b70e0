//! Shared test support: the one git test environment ([`git::GitEnv`]), the rule for tests
//! that need something of the machine ([`require`]: skip loudly, fail under CI), the pinned
//! OpenCode release, a scripted OpenAI-compatible model server for it, and the OpenCode
//! configuration that ties them, a real MCP server over the HTTP+SSE transport on the
//! official TypeScript SDK ([`mcp_sdk::McpSseServer`]), a scratch PostgreSQL database
//! ([`pg::Database`]), and a strict local Daytona backed by Podman
//! ([`daytona::DaytonaStandIn`]). The control plane's unit tests and the benchmarks use it
//! too.

pub mod daytona;
pub mod git;
pub mod mcp_sdk;
mod npm;
pub mod opencode;
pub mod pg;
pub mod pg_cluster;
pub mod podman;
pub mod require;
pub mod scripted_model;
pub mod slack;

pub use opencode::{
    OPENCODE_VERSION, OpencodeHome, opencode_bin, opencode_config, opencode_packages_dir,
};
pub use scripted_model::{ReceivedRequest, ScriptedModel, ToolCall, Turn};

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Install(String),
}

pub(crate) fn io_context(
    context: impl Into<String>,
) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}
