//! Which of the control plane's commands (prompts, stop) this agent has applied, so that one
//! sent again — its ack was lost, the stream moved to another replica, the agent restarted
//! and re-enrolled — is acked again and never applied twice.
//!
//! Commands carry a per-session seq and a floor: every command below the floor has been acked
//! and is never sent again. So the log keeps the floor and the seqs applied at or above it;
//! the control plane lets at most 64 commands of a session wait unacked, so the set stays
//! small. It lives in `commands-applied` in the session's spool directory (which outlives an
//! agent restart), rewritten through a temporary file and a rename after every command.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kortix_proto::v1::CommandRef;

/// File name inside the session's spool directory.
pub const FILE_NAME: &str = "commands-applied";
/// Applied seqs kept at most; past this the lowest are forgotten. Far above what the control
/// plane lets wait unacked.
const MAX_APPLIED: usize = 4096;
/// Longest file read (a floor and [`MAX_APPLIED`] seqs fit well within it).
const MAX_FILE_BYTES: u64 = 128 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("command log {path}: {source}")]
pub struct CommandLogError {
    path: PathBuf,
    source: io::Error,
}

/// The commands applied, persisted at `path` (none: kept in memory only).
#[derive(Debug, Default)]
pub struct CommandLog {
    path: Option<PathBuf>,
    floor: u64,
    applied: BTreeSet<u64>,
}

impl CommandLog {
    /// The log at `dir/`[`FILE_NAME`]; empty when there is none. A damaged file is an error:
    /// the caller decides whether to go on without it.
    pub fn open(dir: &Path) -> Result<Self, CommandLogError> {
        let path = dir.join(FILE_NAME);
        let err = |source| CommandLogError {
            path: path.clone(),
            source,
        };
        let mut log = CommandLog {
            path: Some(path.clone()),
            ..CommandLog::default()
        };
        let text = match fs::metadata(&path) {
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                return Err(err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("larger than {MAX_FILE_BYTES} bytes"),
                )));
            }
            Ok(_) => fs::read_to_string(&path).map_err(err)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(log),
            Err(e) => return Err(err(e)),
        };
        let mut numbers = text.split_ascii_whitespace().map(str::parse::<u64>);
        let bad = || {
            err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a floor followed by seqs",
            ))
        };
        log.floor = match numbers.next() {
            Some(Ok(floor)) => floor,
            None => return Ok(log),
            Some(Err(_)) => return Err(bad()),
        };
        for n in numbers {
            log.applied.insert(n.map_err(|_| bad())?);
        }
        log.trim();
        Ok(log)
    }

    /// A log that is not persisted (no spool directory).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Whether `command` is to be applied: false when it was applied before, or is below a
    /// floor (acked, so applied). Commands without a seq (queued by an older control plane)
    /// are always applied.
    pub fn is_new(&mut self, command: &CommandRef) -> bool {
        self.raise_floor(command.floor);
        command.seq == 0 || (command.seq >= self.floor && !self.applied.contains(&command.seq))
    }

    /// Records that `command` was applied, and persists the log.
    pub fn applied(&mut self, command: &CommandRef) -> Result<(), CommandLogError> {
        self.raise_floor(command.floor);
        if command.seq == 0 {
            return Ok(());
        }
        self.applied.insert(command.seq);
        self.trim();
        self.save()
    }

    fn raise_floor(&mut self, floor: u64) {
        if floor > self.floor {
            self.floor = floor;
            self.applied = self.applied.split_off(&floor);
        }
    }

    fn trim(&mut self) {
        self.applied = self.applied.split_off(&self.floor);
        while self.applied.len() > MAX_APPLIED {
            self.applied.pop_first();
        }
    }

    fn save(&self) -> Result<(), CommandLogError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut text = self.floor.to_string();
        for seq in &self.applied {
            text.push(' ');
            text.push_str(&seq.to_string());
        }
        text.push('\n');
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, path))
            .map_err(|source| CommandLogError {
                path: path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(seq: u64, floor: u64) -> CommandRef {
        CommandRef {
            id: format!("c{seq}"),
            seq,
            floor,
        }
    }

    #[test]
    fn a_command_is_applied_once_even_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = CommandLog::open(dir.path()).unwrap();
        for seq in [1, 2] {
            assert!(log.is_new(&cmd(seq, 1)));
            log.applied(&cmd(seq, 1)).unwrap();
        }
        assert!(!log.is_new(&cmd(2, 1)), "a resend is not new");

        // The agent restarts (re-enrolls): what it applied is still known.
        let mut log = CommandLog::open(dir.path()).unwrap();
        assert!(!log.is_new(&cmd(1, 1)));
        assert!(!log.is_new(&cmd(2, 1)));
        // Out of order: 4 arrives before 3; both are applied once.
        assert!(log.is_new(&cmd(4, 1)));
        log.applied(&cmd(4, 1)).unwrap();
        assert!(log.is_new(&cmd(3, 1)));
        log.applied(&cmd(3, 1)).unwrap();
        assert!(!log.is_new(&cmd(4, 1)));
    }

    #[test]
    fn the_floor_bounds_what_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = CommandLog::open(dir.path()).unwrap();
        for seq in 1..=10 {
            log.applied(&cmd(seq, 1)).unwrap();
        }
        // Everything below 8 was acked: forgotten, and never new again.
        log.applied(&cmd(11, 8)).unwrap();
        assert_eq!(
            log.applied.iter().copied().collect::<Vec<_>>(),
            [8, 9, 10, 11]
        );
        assert!(
            !log.is_new(&cmd(3, 1)),
            "below the floor: acked, so applied"
        );
        let saved = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(saved.trim(), "8 8 9 10 11");
        for seq in 12..(12 + MAX_APPLIED as u64) {
            log.applied(&cmd(seq, 8)).unwrap();
        }
        assert_eq!(log.applied.len(), MAX_APPLIED);
    }

    #[test]
    fn commands_without_a_seq_are_always_applied_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = CommandLog::open(dir.path()).unwrap();
        log.applied(&cmd(0, 0)).unwrap();
        assert!(log.is_new(&cmd(0, 0)));
        fs::write(dir.path().join(FILE_NAME), "3 x").unwrap();
        assert!(CommandLog::open(dir.path()).is_err());
        let mut memory = CommandLog::in_memory();
        memory.applied(&cmd(1, 1)).unwrap();
        assert!(!memory.is_new(&cmd(1, 1)));
    }
}
