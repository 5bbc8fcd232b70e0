//! Hold mode (`KORTIX_AGENT_HOLD=1`): the snapshot's entrypoint kept up with nothing to do,
//! for a sandbox that is not a session's — an app's build under `--sandbox daytona`, whose
//! commands arrive through Daytona's toolbox, not through the agent. The agent neither
//! enrolls nor reads any credential: it refuses to hold when a session's bootstrap is in its
//! environment (the two are exclusive, so a misconfigured session fails instead of idling),
//! reaps orphans when it is PID 1 (the toolbox's commands leave some), and exits cleanly on
//! SIGTERM or SIGINT.

use crate::process::{ReapMode, Reaper};

/// The variable a hold-mode sandbox is created with.
pub const HOLD_ENV: &str = "KORTIX_AGENT_HOLD";

/// A session's bootstrap variables, which hold mode refuses.
const SESSION_VARS: [&str; 3] = [
    "KORTIX_BOOTSTRAP_TOKEN",
    "KORTIX_SESSION_ID",
    "KORTIX_CONTROL_PLANE",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HoldError {
    #[error("{HOLD_ENV} must be \"1\" or \"true\", not {0:?}")]
    Invalid(String),
    #[error("{HOLD_ENV} is set beside a session's {0}: hold mode never enrolls")]
    WithSession(&'static str),
}

/// Whether hold mode is asked for, read through `get` (tests need not touch the process
/// environment).
pub fn requested(get: impl Fn(&str) -> Option<String>) -> Result<bool, HoldError> {
    let on = match get(HOLD_ENV).as_deref().map(str::trim) {
        None | Some("" | "0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => return Err(HoldError::Invalid(other.to_owned())),
    };
    if on
        && let Some(var) = SESSION_VARS
            .into_iter()
            .find(|v| get(v).is_some_and(|x| !x.trim().is_empty()))
    {
        return Err(HoldError::WithSession(var));
    }
    Ok(on)
}

/// Holds until SIGTERM or SIGINT; `reap_orphans` when PID 1 or a child subreaper.
pub async fn run(reap_orphans: bool) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let _reaper = if reap_orphans {
        Some(Reaper::start(ReapMode::AllChildren)?)
    } else {
        None
    };
    crate::diag::info("holding: no session; waiting for SIGTERM");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn hold_is_asked_for_explicitly_and_never_beside_a_session() {
        assert_eq!(requested(env(&[])), Ok(false));
        assert_eq!(requested(env(&[(HOLD_ENV, "0")])), Ok(false));
        assert_eq!(requested(env(&[(HOLD_ENV, "1")])), Ok(true));
        assert_eq!(requested(env(&[(HOLD_ENV, "true")])), Ok(true));
        assert_eq!(
            requested(env(&[(HOLD_ENV, "yes")])),
            Err(HoldError::Invalid("yes".into()))
        );
        assert_eq!(
            requested(env(&[(HOLD_ENV, "1"), ("KORTIX_BOOTSTRAP_TOKEN", "t")])),
            Err(HoldError::WithSession("KORTIX_BOOTSTRAP_TOKEN"))
        );
        // A session without hold mode is none of its business.
        assert_eq!(
            requested(env(&[("KORTIX_BOOTSTRAP_TOKEN", "t")])),
            Ok(false)
        );
    }
}
