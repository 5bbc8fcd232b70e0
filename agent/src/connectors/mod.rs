//! Connectors for OpenCode: `kortix-agent mcp` is an MCP server over stdio that OpenCode
//! launches (registered in the OpenCode config the daemon adds, never in the repository);
//! it asks the daemon over a private unix socket, and the daemon asks the control plane's
//! broker over its mTLS identity. Credentials stay in the control plane: the sandbox only
//! ever sees tool names, schemas and answers.
//!
//! - [`protocol`]: one JSON line each way between `kortix-agent mcp` and the daemon.
//! - [`server`]: the daemon's socket, forwarding to `AgentGateway` and recording each call.
//! - [`mcp`]: the MCP server (JSON-RPC over stdio) with the `connectors`, `describe` and
//!   `call` tools.
//! - [`opencode_config`]: the OpenCode config layer that registers it.

pub mod mcp;
pub mod opencode_config;
pub mod protocol;
pub mod server;
