//! Between `kortix-agent mcp` and the daemon: one JSON request line, one JSON answer line,
//! then the connection closes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest request or answer line.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;
pub const SOCKET_NAME: &str = "connectors.sock";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The session's connectors and their tools.
    List,
    Call {
        connector: String,
        tool: String,
        #[serde(default)]
        args: Value,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolInfo {
    pub name: String,
    pub description: String,
    pub risk: String,
    pub policy: String,
    pub input_schema: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectorInfo {
    pub slug: String,
    pub name: String,
    pub provider: String,
    /// Empty when usable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unavailable: String,
    pub tools: Vec<ToolInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    Connectors {
        connectors: Vec<ConnectorInfo>,
    },
    Called {
        status: String,
        text: String,
    },
    /// The daemon could not ask the control plane (or the request was bad).
    Failed {
        error: String,
    },
}
