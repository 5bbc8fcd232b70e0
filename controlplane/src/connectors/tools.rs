//! What a connector offers: tools with their argument schema, their risk, and how a call of
//! each reaches the upstream. Limits on what a catalog may hold live here too.

use serde_json::Value;

/// Largest spec (OpenAPI document, GraphQL SDL) or upstream tool list read.
pub const MAX_SPEC_BYTES: usize = 4 * 1024 * 1024;
/// Most tools one connector offers; the rest are left out, and that is said.
pub const MAX_TOOLS: usize = 256;
/// Longest tool description kept.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest tool name kept (MCP clients and models choke on longer ones).
pub const MAX_TOOL_NAME: usize = 128;

/// How much harm a call can do, which decides the default policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Risk {
    Read,
    Write,
    Destructive,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Read => "read",
            Risk::Write => "write",
            Risk::Destructive => "destructive",
        }
    }
}

/// Where an HTTP operation's parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamIn {
    Path,
    Query,
    Header,
}

/// One HTTP operation of an OpenAPI document (or the generic request of an `http`
/// connector without a spec).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpOperation {
    pub method: reqwest::Method,
    /// Path template relative to the base URL, `{name}` for path parameters.
    pub path: String,
    pub params: Vec<(String, ParamIn)>,
    /// Whether the operation takes a JSON body (argument `body`).
    pub body: bool,
}

/// A GraphQL operation on one root field: its document, and the arguments it declares as
/// variables.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphqlOperation {
    pub document: String,
    pub variables: Vec<String>,
}

/// How a tool's call reaches the upstream.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Http(HttpOperation),
    /// Any method and path under the base URL: `http` connectors without a spec.
    HttpGeneric,
    /// The upstream MCP server's tool of this name.
    Mcp(String),
    /// A query or mutation POSTed to the GraphQL endpoint.
    Graphql(GraphqlOperation),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub risk: Risk,
    pub target: Target,
}

/// A connector's tools as built from its definition, or why there are none.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    pub tools: Vec<Tool>,
    /// Where HTTP tools are sent (OpenAPI `servers`, `base_url`) or the MCP/GraphQL endpoint.
    pub base_url: String,
    /// Set when the connector cannot be used (pipedream, an unreachable spec, …).
    pub unavailable: Option<String>,
    /// Said to people listing the tools: what was left out to stay within the limits.
    pub notes: Vec<String>,
}

impl Catalog {
    pub fn unavailable(why: impl Into<String>) -> Catalog {
        Catalog {
            tools: Vec::new(),
            base_url: String::new(),
            unavailable: Some(why.into()),
            notes: Vec::new(),
        }
    }

    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// Keeps the catalog within [`MAX_TOOLS`] and names unique, saying what was dropped.
    pub fn bounded(mut tools: Vec<Tool>, base_url: String) -> Catalog {
        let mut notes = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let before = tools.len();
        tools.retain(|t| seen.insert(t.name.clone()));
        if tools.len() < before {
            notes.push(format!(
                "{} tools with duplicate names were left out",
                before - tools.len()
            ));
        }
        if tools.len() > MAX_TOOLS {
            notes.push(format!(
                "{} tools were left out: at most {MAX_TOOLS} per connector",
                tools.len() - MAX_TOOLS
            ));
            tools.truncate(MAX_TOOLS);
        }
        Catalog {
            tools,
            base_url,
            unavailable: None,
            notes,
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A tool name from free text: ASCII letters, digits, `_` and `-`, at most
/// [`MAX_TOOL_NAME`] bytes.
pub fn tool_name(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.contains("__") {
        out = out.replace("__", "_");
    }
    let trimmed = out.trim_matches('_');
    trimmed.chars().take(MAX_TOOL_NAME).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_and_cut() {
        assert_eq!(tool_name("get /pets/{petId}"), "get_pets_petId");
        assert_eq!(tool_name(&"x".repeat(500)).len(), MAX_TOOL_NAME);
        assert_eq!(cut("héllo world", 5), "h...");
        assert_eq!(cut("short", 10), "short");
    }
}
