//! The OpenCode config layer that registers `kortix-agent mcp` as the local MCP server
//! `kortix`. It goes to OpenCode through `OPENCODE_CONFIG_CONTENT`, which OpenCode merges
//! over the project's own config (its config dir stays as it is, and nothing is written
//! into the repository). An inline config the environment already has is kept and
//! extended.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

pub const CONFIG_CONTENT_ENV: &str = "OPENCODE_CONFIG_CONTENT";
/// The MCP server's name; OpenCode prefixes its tools with it (`kortix_call`, …).
pub const SERVER_NAME: &str = "kortix";

/// Adds the `kortix` MCP server to the environment's inline OpenCode config.
pub fn register(
    env: &mut BTreeMap<String, String>,
    agent_bin: &Path,
    socket: &Path,
) -> Result<(), String> {
    let mut config = match env.get(CONFIG_CONTENT_ENV) {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(format!(
                    "{CONFIG_CONTENT_ENV} in the sandbox's environment is not a JSON object; connectors are not offered to OpenCode"
                ));
            }
        },
        None => json!({}),
    };
    let server = json!({
        "type": "local",
        "command": [agent_bin.display().to_string(), "mcp", "--socket", socket.display().to_string()],
        "enabled": true
    });
    match config.get_mut("mcp").and_then(Value::as_object_mut) {
        Some(mcp) => {
            mcp.insert(SERVER_NAME.into(), server);
        }
        None => config["mcp"] = json!({ SERVER_NAME: server }),
    }
    env.insert(CONFIG_CONTENT_ENV.into(), config.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_keeps_what_was_there() {
        let mut env = BTreeMap::new();
        register(
            &mut env,
            Path::new("/bin/kortix-agent"),
            Path::new("/run/c.sock"),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&env[CONFIG_CONTENT_ENV]).unwrap();
        assert_eq!(
            v["mcp"]["kortix"]["command"],
            json!(["/bin/kortix-agent", "mcp", "--socket", "/run/c.sock"])
        );
        env.insert(
            CONFIG_CONTENT_ENV.into(),
            r#"{"model":"x/y","mcp":{"other":{"type":"remote","url":"http://h"}}}"#.into(),
        );
        register(&mut env, Path::new("/a"), Path::new("/s")).unwrap();
        let v: Value = serde_json::from_str(&env[CONFIG_CONTENT_ENV]).unwrap();
        assert_eq!(v["model"], "x/y");
        assert_eq!(v["mcp"]["other"]["type"], "remote");
        assert_eq!(v["mcp"]["kortix"]["type"], "local");
        env.insert(CONFIG_CONTENT_ENV.into(), "[1]".into());
        assert!(register(&mut env, Path::new("/a"), Path::new("/s")).is_err());
    }
}
