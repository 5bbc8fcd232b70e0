//! Long output on a terminal goes through the user's pager (`KORTIX_PAGER`, then `PAGER`, then
//! `less`), like git does; piped or redirected output never does.

use std::io::{IsTerminal as _, Write as _};
use std::process::{Command, Stdio};

use crate::client::CliError;

/// The pager command to run, or `None` for none: not a terminal, or set to `""` or `cat`.
fn pager_command(kortix_pager: Option<String>, pager: Option<String>) -> Option<String> {
    let chosen = kortix_pager.or(pager).unwrap_or_else(|| "less".to_owned());
    let chosen = chosen.trim();
    (!chosen.is_empty() && chosen != "cat").then(|| chosen.to_owned())
}

/// Shows `text` (which may carry styles) through the pager when stdout is a terminal.
/// Returns `false` when no pager ran and the caller should print it itself.
pub fn page(text: &str) -> Result<bool, CliError> {
    if !std::io::stdout().is_terminal() {
        return Ok(false);
    }
    let Some(command) = pager_command(
        std::env::var("KORTIX_PAGER").ok(),
        std::env::var("PAGER").ok(),
    ) else {
        return Ok(false);
    };
    // Like git: quit when it fits one screen, keep colours, leave the screen as it was.
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(&command).stdin(Stdio::piped());
    if std::env::var_os("LESS").is_none() {
        cmd.env("LESS", "FRX");
    }
    let Ok(mut child) = cmd.spawn() else {
        // No shell or no pager: print instead.
        return Ok(false);
    };
    let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let shown = if colour {
        text.to_owned()
    } else {
        anstream::adapter::strip_str(text).to_string()
    };
    if let Some(mut stdin) = child.stdin.take() {
        // The reader quitting early (q in less) closes the pipe: that is not an error.
        let _ = stdin.write_all(shown.as_bytes());
    }
    child
        .wait()
        .map_err(|e| CliError::Input(format!("waiting for the pager {command:?}: {e}")))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kortix_pager_wins_and_cat_or_empty_means_none() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(pager_command(None, None).as_deref(), Some("less"));
        assert_eq!(pager_command(None, s("more")).as_deref(), Some("more"));
        assert_eq!(
            pager_command(s("bat -p"), s("more")).as_deref(),
            Some("bat -p")
        );
        assert_eq!(pager_command(s(""), s("more")), None);
        assert_eq!(pager_command(None, s("cat")), None);
    }
}
