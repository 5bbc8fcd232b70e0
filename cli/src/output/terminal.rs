//! Talking to the person at the terminal: hidden prompts, stdin input, progress spinners.

use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::client::CliError;

/// Largest value accepted on stdin (secrets, tokens).
pub const MAX_STDIN_BYTES: u64 = 1024 * 1024;

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// A secret value or token: prompted for without echo when stdin is a terminal, otherwise all
/// of stdin. One trailing newline is removed; an empty value is refused.
pub fn read_secret(prompt: &str, what: &str) -> Result<String, CliError> {
    let raw = if stdin_is_terminal() {
        read_hidden_line(prompt)?
    } else {
        read_stdin()?
    };
    let value = trim_one_newline(&raw);
    if value.is_empty() {
        return Err(CliError::Input(format!("refusing an empty {what}")));
    }
    Ok(value.to_owned())
}

/// Several secrets, one per line: prompted for one by one without echo on a terminal,
/// otherwise the first `prompts.len()` lines of stdin (more lines are refused). Empty values
/// are refused.
pub fn read_secret_lines(prompts: &[(&str, &str)]) -> Result<Vec<String>, CliError> {
    if stdin_is_terminal() {
        return prompts
            .iter()
            .map(|(prompt, what)| read_secret(prompt, what))
            .collect();
    }
    let all = read_stdin()?;
    let lines: Vec<&str> = all.lines().collect();
    if lines.len() != prompts.len() {
        return Err(CliError::Input(format!(
            "expected {} lines on stdin ({}), got {}",
            prompts.len(),
            prompts
                .iter()
                .map(|(_, what)| *what)
                .collect::<Vec<_>>()
                .join(", then "),
            lines.len()
        )));
    }
    lines
        .iter()
        .zip(prompts)
        .map(|(line, (_, what))| {
            let value = line.trim_end_matches('\r');
            if value.is_empty() {
                Err(CliError::Input(format!("refusing an empty {what}")))
            } else {
                Ok(value.to_owned())
            }
        })
        .collect()
}

/// Removes exactly one trailing `\n` or `\r\n`: values may legitimately end in other newlines.
pub fn trim_one_newline(text: &str) -> &str {
    text.strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text)
}

fn read_stdin() -> Result<String, CliError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CliError::file("<stdin>", "read", &e))?;
    if buf.len() as u64 > MAX_STDIN_BYTES {
        return Err(CliError::Input(format!(
            "stdin holds more than {MAX_STDIN_BYTES} bytes"
        )));
    }
    String::from_utf8(buf).map_err(|_| CliError::Input("stdin is not valid UTF-8".into()))
}

/// Reads one line from the terminal with echo turned off, restoring the mode afterwards.
fn read_hidden_line(prompt: &str) -> Result<String, CliError> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{prompt}");
    let _ = err.flush();
    let _echo = EchoOff::new();
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_STDIN_BYTES)
        .read_line(&mut line)
        .map_err(|e| CliError::file("<stdin>", "read", &e));
    let _ = writeln!(err);
    read?;
    Ok(line)
}

/// Turns terminal echo off for its lifetime.
struct EchoOff {
    saved: Option<libc::termios>,
}

impl EchoOff {
    fn new() -> Self {
        let fd = libc::STDIN_FILENO;
        // SAFETY: termios is plain old data; tcgetattr fills it or fails, and we only use it
        // after success.
        let mut term: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut term) } != 0 {
            return EchoOff { saved: None };
        }
        let saved = term;
        term.c_lflag &= !libc::ECHO;
        // SAFETY: fd is stdin and term a valid termios obtained from tcgetattr.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) } != 0 {
            return EchoOff { saved: None };
        }
        EchoOff { saved: Some(saved) }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: restores the termios read in `new` on the same fd.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}

/// The width of the terminal stdout is, or `None` when stdout is not a terminal (a pipe, a
/// file): output for programs and logs is never cut to fit a screen.
pub fn stdout_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    // SAFETY: winsize is plain old data that TIOCGWINSZ fills on success; it is read only then.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    Some(if ok && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    })
}

/// A spinner on stderr for long work, or a hidden one when output is JSON or stderr is not a
/// terminal (so scripts and logs never see control codes).
pub fn spinner(enabled: bool, message: String) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_exactly_one_newline() {
        assert_eq!(trim_one_newline("v\n"), "v");
        assert_eq!(trim_one_newline("v\r\n"), "v");
        assert_eq!(trim_one_newline("v\n\n"), "v\n");
        assert_eq!(trim_one_newline("v"), "v");
        assert_eq!(trim_one_newline("\n"), "");
    }
}
