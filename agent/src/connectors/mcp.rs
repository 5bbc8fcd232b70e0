//! `kortix-agent mcp [--socket PATH]`: an MCP server over stdio (newline-delimited JSON-RPC
//! 2.0) with three tools — `connectors` (what there is), `describe` (one tool's schema and
//! policy) and `call` (`{"connector", "tool", "args"}`) — each answered by the daemon.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::protocol::{Answer, ConnectorInfo, MAX_LINE_BYTES, Request};

pub const SOCKET_ENV: &str = "KORTIX_CONNECTOR_SOCKET";
const PROTOCOL_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];
/// How long one answer of the daemon may take (it bounds the control plane's call itself).
const DAEMON_TIMEOUT: Duration = Duration::from_secs(330);

/// Runs the server until stdin closes; returns the exit code.
pub fn run(args: &[String], stdin: &mut dyn BufRead, stdout: &mut dyn Write) -> i32 {
    let mut socket = std::env::var_os(SOCKET_ENV).map(PathBuf::from);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--socket" {
            socket = it.next().map(PathBuf::from);
        }
    }
    let Some(socket) = socket else {
        eprintln!("kortix-agent mcp: no daemon socket (--socket or {SOCKET_ENV})");
        return 2;
    };
    let daemon = |req: &Request| ask(&socket, req);
    serve(stdin, stdout, &daemon)
}

/// The JSON-RPC loop, over any daemon (tests pass their own).
pub fn serve(
    stdin: &mut dyn BufRead,
    stdout: &mut dyn Write,
    daemon: &dyn Fn(&Request) -> Answer,
) -> i32 {
    let mut line = Vec::new();
    loop {
        line.clear();
        match Read::take(&mut *stdin, MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) => return 0,
            Ok(_) => {}
            Err(e) => {
                eprintln!("kortix-agent mcp: reading stdin: {e}");
                return 1;
            }
        }
        if line.len() > MAX_LINE_BYTES {
            // The rest of an oversized line would be read as garbage messages: stop.
            let _ = write(stdout, &error(Value::Null, -32600, "message too large"));
            return 1;
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(batch)) => {
                let replies: Vec<Value> = batch.iter().filter_map(|m| handle(m, daemon)).collect();
                (!replies.is_empty()).then_some(Value::Array(replies))
            }
            Ok(msg) => handle(&msg, daemon),
            Err(e) => Some(error(Value::Null, -32700, &format!("parse error: {e}"))),
        };
        if let Some(reply) = reply
            && write(stdout, &reply).is_err()
        {
            return 0;
        }
    }
}

fn write(out: &mut dyn Write, v: &Value) -> std::io::Result<()> {
    let mut text = v.to_string();
    text.push('\n');
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// The reply to one message; `None` for notifications and replies sent to us.
fn handle(msg: &Value, daemon: &dyn Fn(&Request) -> Answer) -> Option<Value> {
    let id = msg.get("id").cloned();
    let Some(method) = msg.get("method").and_then(Value::as_str) else {
        return id.map(|id| error(id, -32600, "invalid request: no method"));
    };
    let id = id?;
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    Some(match method {
        "initialize" => {
            let asked = params.get("protocolVersion").and_then(Value::as_str);
            let version = asked
                .filter(|v| PROTOCOL_VERSIONS.contains(v))
                .unwrap_or(PROTOCOL_VERSIONS[0]);
            ok(
                id,
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "kortix-connectors", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": "External tools of this project, brokered by Kortix. Use `connectors` to see them, `describe` for one tool's arguments, `call` to run one. Credentials are added by the platform: never ask for them."
                }),
            )
        }
        "ping" => ok(id, json!({})),
        "tools/list" => ok(id, json!({"tools": meta_tools()})),
        "tools/call" => {
            let name = params.get("name").and_then(Value::as_str).unwrap_or("");
            let args = params.get("arguments").cloned().unwrap_or(json!({}));
            let (text, is_error) = call_meta(name, &args, daemon);
            ok(
                id,
                json!({"content": [{"type": "text", "text": text}], "isError": is_error}),
            )
        }
        other => error(id, -32601, &format!("method not found: {other}")),
    })
}

fn meta_tools() -> Value {
    json!([
        {
            "name": "connectors",
            "description": "Lists this project's connectors (external tools brokered by the platform) and their tools, with each tool's risk and policy.",
            "inputSchema": {"type": "object", "properties": {}},
            "annotations": {"readOnlyHint": true}
        },
        {
            "name": "describe",
            "description": "Shows one connector tool's argument schema and policy.",
            "inputSchema": {"type": "object", "properties": {
                "connector": {"type": "string"}, "tool": {"type": "string"}
            }, "required": ["connector", "tool"]},
            "annotations": {"readOnlyHint": true}
        },
        {
            "name": "call",
            "description": "Calls a connector tool. Tools whose policy is require_approval do not run at once: the answer says to stop and wait for a person's approval.",
            "inputSchema": {"type": "object", "properties": {
                "connector": {"type": "string"},
                "tool": {"type": "string"},
                "args": {"type": "object", "description": "the tool's arguments (see describe)"}
            }, "required": ["connector", "tool"]}
        }
    ])
}

/// Runs a meta-tool; the text the model reads and whether it is an error.
fn call_meta(name: &str, args: &Value, daemon: &dyn Fn(&Request) -> Answer) -> (String, bool) {
    let text_arg = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    match name {
        "connectors" => match daemon(&Request::List) {
            Answer::Connectors { connectors } => (summary(&connectors), false),
            other => unexpected(other),
        },
        "describe" => {
            let (c, t) = (text_arg("connector"), text_arg("tool"));
            match daemon(&Request::List) {
                Answer::Connectors { connectors } => {
                    match connectors
                        .iter()
                        .find(|x| x.slug == c)
                        .and_then(|x| x.tools.iter().find(|y| y.name == t))
                    {
                        Some(tool) => (
                            serde_json::to_string_pretty(tool).unwrap_or_default(),
                            false,
                        ),
                        None => (
                            format!("no tool {t:?} of connector {c:?}; see `connectors`"),
                            true,
                        ),
                    }
                }
                other => unexpected(other),
            }
        }
        "call" => {
            let req = Request::Call {
                connector: text_arg("connector"),
                tool: text_arg("tool"),
                args: args.get("args").cloned().unwrap_or(json!({})),
            };
            match daemon(&req) {
                Answer::Called { status, text } => {
                    let is_error = status == "error" || status == "denied";
                    (format!("[{status}] {text}"), is_error)
                }
                other => unexpected(other),
            }
        }
        other => (
            format!("unknown tool {other:?}: connectors, describe or call"),
            true,
        ),
    }
}

fn summary(connectors: &[ConnectorInfo]) -> String {
    let view: Vec<Value> = connectors
        .iter()
        .map(|c| {
            let mut v = json!({
                "connector": c.slug,
                "name": c.name,
                "provider": c.provider,
                "tools": c.tools.iter().map(|t| json!({
                    "name": t.name, "description": t.description, "risk": t.risk, "policy": t.policy
                })).collect::<Vec<_>>(),
            });
            if !c.unavailable.is_empty() {
                v["unavailable"] = Value::String(c.unavailable.clone());
            }
            v
        })
        .collect();
    serde_json::to_string_pretty(&view).unwrap_or_default()
}

fn unexpected(answer: Answer) -> (String, bool) {
    match answer {
        Answer::Failed { error } => (error, true),
        other => (format!("unexpected answer from the agent: {other:?}"), true),
    }
}

fn ok(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// One request to the daemon over its socket.
pub fn ask(socket: &Path, req: &Request) -> Answer {
    let go = || -> std::io::Result<Answer> {
        let mut stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(DAEMON_TIMEOUT))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut line = serde_json::to_string(req)?;
        line.push('\n');
        stream.write_all(line.as_bytes())?;
        let mut buf = Vec::new();
        stream.take(MAX_LINE_BYTES as u64).read_to_end(&mut buf)?;
        serde_json::from_slice(&buf).map_err(std::io::Error::other)
    };
    go().unwrap_or_else(|e| Answer::Failed {
        error: format!(
            "the Kortix agent did not answer ({}): {e}",
            socket.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::protocol::ToolInfo;

    fn daemon(req: &Request) -> Answer {
        match req {
            Request::List => Answer::Connectors {
                connectors: vec![ConnectorInfo {
                    slug: "pets".into(),
                    name: "Pets".into(),
                    provider: "openapi".into(),
                    unavailable: String::new(),
                    tools: vec![ToolInfo {
                        name: "getPet".into(),
                        description: "One pet".into(),
                        risk: "read".into(),
                        policy: "always_run".into(),
                        input_schema: json!({"type": "object"}),
                    }],
                }],
            },
            Request::Call { tool, .. } if tool == "getPet" => Answer::Called {
                status: "ok".into(),
                text: "{\"name\":\"rex\"}".into(),
            },
            Request::Call { .. } => Answer::Called {
                status: "denied".into(),
                text: "blocked".into(),
            },
        }
    }

    fn session(input: &str) -> Vec<Value> {
        let mut out = Vec::new();
        assert_eq!(serve(&mut input.as_bytes(), &mut out, &daemon), 0);
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn speaks_mcp_over_stdio() {
        let replies = session(concat!(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
            "\n",
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            "\n",
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            "\n",
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"connectors","arguments":{}}}"#,
            "\n",
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"call","arguments":{"connector":"pets","tool":"getPet","args":{"id":"1"}}}}"#,
            "\n",
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"call","arguments":{"connector":"pets","tool":"drop","args":{}}}}"#,
            "\n",
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"describe","arguments":{"connector":"pets","tool":"getPet"}}}"#,
            "\n",
            r#"{"jsonrpc":"2.0","id":7,"method":"nope"}"#,
            "\n",
            "not json\n",
        ));
        assert_eq!(replies.len(), 8, "{replies:?}");
        assert_eq!(replies[0]["result"]["protocolVersion"], "2025-03-26");
        let names: Vec<_> = replies[1]["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["connectors", "describe", "call"]);
        let listing = replies[2]["result"]["content"][0]["text"].as_str().unwrap();
        assert!(
            listing.contains("getPet") && listing.contains("always_run"),
            "{listing}"
        );
        assert_eq!(replies[3]["result"]["isError"], false);
        assert!(
            replies[3]["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("rex")
        );
        assert_eq!(replies[4]["result"]["isError"], true);
        assert!(
            replies[5]["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("\"risk\"")
        );
        assert_eq!(replies[6]["error"]["code"], -32601);
        assert_eq!(replies[7]["error"]["code"], -32700);
    }

    #[test]
    fn an_absent_daemon_is_a_tool_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let answer = ask(&dir.path().join("none.sock"), &Request::List);
        let Answer::Failed { error } = answer else {
            panic!("{answer:?}")
        };
        assert!(error.contains("none.sock"), "{error}");
    }
}
