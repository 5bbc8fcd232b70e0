//! Writing results: one JSON document for `--json`, readable text otherwise. Text goes through
//! `anstream`, which drops colour codes unless stdout is a terminal (and honours `NO_COLOR`).

pub mod json;
pub mod pager;
pub mod table;
// Turning terminal echo off for secret prompts is a `tcgetattr`/`tcsetattr` pair on stdin.
#[allow(unsafe_code)]
pub mod terminal;
pub mod time;

use std::io::Write as _;

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use crate::client::CliError;

pub const BOLD: Style = Style::new().bold();
pub const DIM: Style = Style::new().dimmed();
pub const GREEN: Style = AnsiColor::Green.on_default();
pub const RED: Style = AnsiColor::Red.on_default();
pub const YELLOW: Style = AnsiColor::Yellow.on_default();
pub const CYAN: Style = AnsiColor::Cyan.on_default();
pub const MAGENTA: Style = AnsiColor::Magenta.on_default();

/// `text` wrapped in `style`; the codes are stripped on the way out when not on a terminal.
pub fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// Prints `value` as the command's single JSON document.
pub fn print_json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Input(format!("cannot encode the result as JSON: {e}")))?;
    write_stdout(&text, true)
}

/// Prints `value` as one compact JSON line and flushes (streaming output).
pub fn print_json_line<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CliError::Input(format!("cannot encode the result as JSON: {e}")))?;
    write_stdout(&text, true)
}

/// Prints human text (may contain styles) followed by a newline unless it already ends in one.
pub fn print_text(text: &str) -> Result<(), CliError> {
    write_stdout(text, !text.ends_with('\n'))
}

fn write_stdout(text: &str, newline: bool) -> Result<(), CliError> {
    let mut out = anstream::stdout().lock();
    let result = out
        .write_all(text.as_bytes())
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    result.map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => CliError::BrokenPipe,
        _ => CliError::file("<stdout>", "write to", &e),
    })
}

/// A note for the user on stderr (never part of the JSON document).
pub fn note(text: &str) {
    let mut err = anstream::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// `-` for values the server left empty.
pub fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        value.to_owned()
    }
}

/// The first 7 characters of a commit id, like `git log --oneline`.
pub fn short_sha(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// The colour that goes with a session status or CR state.
pub fn status_style(status: &str) -> Style {
    match status {
        "running" | "open" => GREEN,
        "provisioning" | "stopping" => YELLOW,
        "failed" => RED,
        "merged" => MAGENTA,
        _ => DIM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_sha_handles_short_input() {
        assert_eq!(short_sha("0123456789abcdef"), "0123456");
        assert_eq!(short_sha("abc"), "abc");
        assert_eq!(short_sha(""), "");
    }

    #[test]
    fn paint_wraps_in_reset_codes() {
        assert_eq!(paint(BOLD, "x"), "\u{1b}[1mx\u{1b}[0m");
    }
}
