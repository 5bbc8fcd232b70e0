//! A call's identity and its printable trace: the digest of (connector, tool, exact
//! arguments) an approval is keyed by, and a redacted preview of the arguments for the log.

use serde_json::Value;

/// Longest preview kept.
pub const MAX_PREVIEW: usize = 1024;
/// Longest string value shown in a preview.
const MAX_PREVIEW_STRING: usize = 120;
/// Argument names whose values never appear in a preview.
const SENSITIVE: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "authorization",
    "auth",
    "credential",
    "cookie",
    "private",
];

/// Hex SHA-256 over the connector, the tool and the arguments in canonical JSON (keys
/// sorted, no whitespace): the same call always has the same digest, whatever order the
/// model wrote the keys in.
pub fn call_digest(connector: &str, tool: &str, args: &Value) -> String {
    let mut text = String::new();
    canonical(args, &mut text);
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [connector, "\0", tool, "\0", text.as_str()] {
        ctx.update(part.as_bytes());
    }
    hex::encode(ctx.finish())
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The arguments as compact JSON with values of sensitive-looking names replaced and long
/// strings cut, at most [`MAX_PREVIEW`] bytes.
pub fn preview(args: &Value) -> String {
    let redacted = redact(args, false);
    super::tools::cut(&redacted.to_string(), MAX_PREVIEW)
}

fn redact(v: &Value, hide: bool) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redact(v, hide || is_sensitive(k))))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|i| redact(i, hide)).collect()),
        _ if hide => Value::String("[redacted]".into()),
        Value::String(s) => Value::String(super::tools::cut(s, MAX_PREVIEW_STRING)),
        other => other.clone(),
    }
}

fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    SENSITIVE.iter().any(|s| key.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_ignores_key_order_but_not_values() {
        let a = call_digest(
            "pets",
            "add",
            &json!({"name": "rex", "tags": ["a"], "n": 1}),
        );
        let b = call_digest(
            "pets",
            "add",
            &json!({"n": 1, "tags": ["a"], "name": "rex"}),
        );
        let c = call_digest(
            "pets",
            "add",
            &json!({"n": 2, "tags": ["a"], "name": "rex"}),
        );
        let d = call_digest(
            "pets",
            "remove",
            &json!({"n": 1, "tags": ["a"], "name": "rex"}),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn preview_hides_sensitive_values_and_cuts() {
        let p = preview(
            &json!({"name": "rex", "api_key": "k-123", "nested": {"Password": "p"},
                                "long": "x".repeat(500)}),
        );
        assert!(!p.contains("k-123") && !p.contains("\"p\""), "{p}");
        assert!(p.contains("[redacted]") && p.contains("rex"), "{p}");
        assert!(p.len() < 400, "{p}");
    }
}
