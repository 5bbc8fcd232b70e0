//! A sandbox booted before its session exists (the docker provider's warm pool) starts its
//! agent with `KORTIX_ASSIGNMENT_FILE` instead of the session's variables. The agent holds no
//! credential and does nothing until the control plane writes that file — a JSON object of
//! the session's `KORTIX_*` variables (control plane, session id, single-use bootstrap token,
//! CA) — then reads it, removes it, and boots exactly as a sandbox started for that session.
//! So a pooled sandbox proves who it is the same way a fresh one does, and is used once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

/// The environment variable naming the file; its presence puts the agent in this mode.
pub const ENV: &str = "KORTIX_ASSIGNMENT_FILE";

/// Largest assignment read (the CA certificate is most of it).
pub const MAX_BYTES: u64 = 64 * 1024;

/// How often the file is looked for: the latency it adds to a session's start.
const POLL: Duration = Duration::from_millis(5);

/// A file that exists but does not parse may still be being written; it must parse within
/// this long of being first seen.
const WRITE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    #[error("reading the assignment {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the assignment {path} is {len} bytes, over the {MAX_BYTES}-byte limit")]
    TooLarge { path: PathBuf, len: u64 },
    #[error("the assignment {path} is not a JSON object of strings: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("the assignment {path} sets {name}, which is not a KORTIX_ variable")]
    NotOurs { path: PathBuf, name: String },
    #[error("waiting for the assignment: {0}")]
    Signals(std::io::Error),
}

/// Waits for the assignment. `Ok(None)`: the sandbox was asked to stop (SIGTERM, SIGINT)
/// before it was assigned, which is a clean end.
pub async fn wait(path: &Path) -> Result<Option<BTreeMap<String, String>>, AssignmentError> {
    let mut term = signal(SignalKind::terminate()).map_err(AssignmentError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AssignmentError::Signals)?;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first_seen: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(None),
            _ = int.recv() => return Ok(None),
            _ = tick.tick() => {}
        }
        match read(path) {
            Ok(Some(vars)) => {
                // The bootstrap token is single-use, but it need not stay readable either.
                let _ = std::fs::remove_file(path);
                return Ok(Some(vars));
            }
            Ok(None) => {}
            Err(AssignmentError::Malformed { .. })
                if first_seen
                    .get_or_insert_with(tokio::time::Instant::now)
                    .elapsed()
                    < WRITE_GRACE => {}
            Err(e) => return Err(e),
        }
    }
}

/// The assignment if the file is there (`None` if not yet).
fn read(path: &Path) -> Result<Option<BTreeMap<String, String>>, AssignmentError> {
    let read_err = |source| AssignmentError::Read {
        path: path.to_owned(),
        source,
    };
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    if len > MAX_BYTES {
        return Err(AssignmentError::TooLarge {
            path: path.to_owned(),
            len,
        });
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let vars: BTreeMap<String, String> =
        serde_json::from_slice(&bytes).map_err(|e| AssignmentError::Malformed {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if let Some(name) = vars.keys().find(|k| !k.starts_with("KORTIX_")) {
        return Err(AssignmentError::NotOurs {
            path: path.to_owned(),
            name: name.clone(),
        });
    }
    Ok(Some(vars))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_agent_waits_for_its_assignment_then_takes_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("assignment.json");
        let waiting = tokio::spawn({
            let path = path.clone();
            async move { wait(&path).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // Written in two steps, as an archive extraction may: the half is not taken.
        let full = r#"{"KORTIX_SESSION_ID":"s1","KORTIX_BOOTSTRAP_TOKEN":"kbt_x"}"#;
        std::fs::write(&path, &full[..20]).unwrap();
        tokio::time::sleep(POLL * 4).await;
        assert!(!waiting.is_finished(), "a partial assignment was taken");
        std::fs::write(&path, full).unwrap();
        let vars = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(vars["KORTIX_SESSION_ID"], "s1");
        assert_eq!(vars["KORTIX_BOOTSTRAP_TOKEN"], "kbt_x");
        assert!(!path.exists(), "the token stays behind in the sandbox");
    }

    #[test]
    fn an_assignment_may_only_set_kortix_variables_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, r#"{"KORTIX_SESSION_ID":"s","LD_PRELOAD":"/x.so"}"#).unwrap();
        assert!(matches!(
            read(&path),
            Err(AssignmentError::NotOurs { name, .. }) if name == "LD_PRELOAD"
        ));
        std::fs::write(&path, r#"["not", "an", "object"]"#).unwrap();
        assert!(matches!(
            read(&path),
            Err(AssignmentError::Malformed { .. })
        ));
        std::fs::write(&path, vec![b' '; MAX_BYTES as usize + 1]).unwrap();
        assert!(matches!(read(&path), Err(AssignmentError::TooLarge { .. })));
        assert!(read(&dir.path().join("absent")).unwrap().is_none());
    }
}
