//! A real MCP server over the older HTTP+SSE transport: `tests/mcp-sse-server/server.mjs`,
//! built on the official TypeScript SDK ([`MCP_SDK_VERSION`] of `@modelcontextprotocol/sdk`,
//! installed from npm by the tests themselves beside the pinned OpenCode), run with `node`
//! and killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use crate::{HarnessError, io_context, npm};

pub const MCP_SDK_VERSION: &str = "1.32.2";

/// How long the server has to say its port.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The npm prefix holding [`MCP_SDK_VERSION`], installing it if needed.
pub fn mcp_sdk_prefix() -> Result<PathBuf, HarnessError> {
    static PREFIX: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PREFIX
        .get_or_init(|| {
            npm::install_locked(
                &format!("mcp-sdk-{MCP_SDK_VERSION}"),
                "@modelcontextprotocol/sdk",
                MCP_SDK_VERSION,
                installed,
            )
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(HarnessError::Install)
}

/// The prefix, when it holds the pinned SDK and the zod it is used with.
fn installed(prefix: &Path) -> Option<PathBuf> {
    let modules = prefix.join("node_modules");
    let sdk =
        std::fs::read_to_string(modules.join("@modelcontextprotocol/sdk/package.json")).ok()?;
    let version = serde_json::from_str::<serde_json::Value>(&sdk).ok()?["version"].clone();
    (version == MCP_SDK_VERSION && modules.join("zod/package.json").is_file())
        .then(|| prefix.to_owned())
}

/// Why Node.js cannot run the server here (`node` or `npm` missing), if it cannot.
pub fn node_unavailable() -> Option<String> {
    for tool in ["node", "npm"] {
        match Command::new(tool).arg("--version").output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Some(format!("`{tool} --version` failed ({})", o.status)),
            Err(e) => return Some(format!("cannot run `{tool}`: {e}")),
        }
    }
    None
}

/// The server script, in this crate's source tree.
pub fn server_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp-sse-server/server.mjs")
}

/// The running server on 127.0.0.1: `GET /sse` (its event stream, which wants
/// `Authorization: Bearer <token>`), `GET /mute` (a stream that never names an endpoint) and
/// `GET /seen` (the Authorization headers it was sent and the tool calls it ran, as JSON).
pub struct McpSseServer {
    child: Child,
    pub port: u16,
}

impl McpSseServer {
    /// Installs the SDK if needed, starts the server with `token` as its bearer token and
    /// waits until it says its port.
    pub fn start(token: &str) -> Result<Self, HarnessError> {
        let prefix = mcp_sdk_prefix()?;
        let mut child = Command::new("node")
            .arg(server_script())
            .arg(&prefix)
            .arg(token)
            // The server exits when its stdin closes, so it never outlives the test process.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io_context("running node (is Node.js installed?)"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.strip_prefix("port=") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        let mut server = McpSseServer { child, port: 0 };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(port)) => {
                server.port = port;
                Ok(server)
            }
            Ok(None) => Err(HarnessError::Install(
                "the MCP SSE server printed an unreadable port".into(),
            )),
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                Err(HarnessError::Install(format!(
                    "the MCP SSE server ({}) did not say its port within {START_TIMEOUT:?} (exit status {status:?})",
                    server_script().display()
                )))
            }
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for McpSseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
