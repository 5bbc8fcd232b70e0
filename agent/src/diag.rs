//! The agent's own diagnostics on stderr, which the sandbox's log collector keeps.
//!
//! `KORTIX_LOG_FORMAT=json` writes one JSON object per line (`ts`, `level`, `target`,
//! `message`) like the control plane's `--log-format json`; anything else writes
//! `kortix-agent: <message>` for people. Read once: the format cannot change mid-run.

use std::io::Write as _;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pretty,
    Json,
}

fn format() -> Format {
    static FORMAT: OnceLock<Format> = OnceLock::new();
    *FORMAT.get_or_init(|| match std::env::var("KORTIX_LOG_FORMAT").as_deref() {
        Ok("json") => Format::Json,
        _ => Format::Pretty,
    })
}

/// `level` is `INFO`, `WARN` or `ERROR`.
pub fn emit(level: &str, message: &str) {
    let line = render(format(), level, message, &now_rfc3339());
    // stderr is unbuffered; one write per line keeps lines whole between threads.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn info(message: &str) {
    emit("INFO", message);
}

pub fn warn(message: &str) {
    emit("WARN", message);
}

pub fn error(message: &str) {
    emit("ERROR", message);
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn render(format: Format, level: &str, message: &str, ts: &str) -> String {
    match format {
        Format::Pretty => format!("kortix-agent: {message}\n"),
        Format::Json => {
            let obj = serde_json::json!({
                "timestamp": ts,
                "level": level,
                "target": "kortix_agent",
                "fields": { "message": message },
            });
            format!("{obj}\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_and_json_lines() {
        assert_eq!(
            render(Format::Pretty, "INFO", "cloned", "t"),
            "kortix-agent: cloned\n"
        );
        let line = render(
            Format::Json,
            "WARN",
            "quote \" and\nnewline",
            "2026-11-23T00:00:00Z",
        );
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["fields"]["message"], "quote \" and\nnewline");
        assert_eq!(v["timestamp"], "2026-11-23T00:00:00Z");
    }
}
