//! A session record as `kortix sessions attach --json` prints it: `{"seq","ts","kind","data"}`.
//!
//! The timeline reads this shape rather than the wire messages so that anything holding the
//! JSON (the CLI, the console, a saved capture) can be interpreted the same way, and kinds
//! this build does not know pass through instead of being dropped.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// RFC 3339, as the record was stamped by the agent; absent when unknown.
    #[serde(default)]
    pub ts: Option<String>,
    pub kind: String,
    #[serde(default)]
    pub data: Value,
}

#[derive(Debug, thiserror::Error)]
#[error("not a session record: {0}")]
pub struct RecordError(#[from] serde_json::Error);

impl Record {
    /// One line of `kortix sessions attach --json`.
    pub fn from_json_line(line: &str) -> Result<Record, RecordError> {
        Ok(serde_json::from_str(line)?)
    }

    /// `data[key]` as a string, empty when absent or not a string.
    pub(crate) fn str(&self, key: &str) -> &str {
        self.data[key].as_str().unwrap_or_default()
    }
}

/// `value` as a string, empty when it is not one.
pub(crate) fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_attach_json_line() {
        let r = Record::from_json_line(
            r#"{"seq":3,"ts":"2025-01-01T00:00:00.000Z","kind":"log","data":{"stream":"agent","line":"hi"}}"#,
        )
        .unwrap();
        assert_eq!(r.seq, 3);
        assert_eq!(r.kind, "log");
        assert_eq!(r.str("line"), "hi");
        assert_eq!(r.str("missing"), "");
    }

    #[test]
    fn unknown_kinds_and_missing_fields_are_kept() {
        let r = Record::from_json_line(r#"{"seq":1,"kind":"approval"}"#).unwrap();
        assert_eq!(r.kind, "approval");
        assert!(r.ts.is_none() && r.data.is_null());
        assert!(Record::from_json_line("{}").is_err());
    }
}
