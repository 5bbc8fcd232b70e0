//! The call log's journal: a call's row is appended to a file of this process before the
//! call is answered, so a crash of the process loses no row that the batched writer
//! ([`super::call_log`]) had not committed yet.
//!
//! The append is a `write` into the page cache, not an `fsync`: an fsync on the call path
//! was measured out (p99 28 ms on these disks, against a 2 ms goal for the whole broker).
//! So the journal covers a crash of the process (kill -9, a panic, OOM), which the kernel
//! outlives; a crash of the machine can still lose the last seconds of rows.
//!
//! Layout: `<root>/<journal id>/` holds a `lock` file (held with `flock` for the process's
//! life) and segments `<n>.jsonl`, one row per line. A segment is deleted once every row in
//! it is committed; the current one is truncated instead when nothing in it is pending.
//! Another process adopts a journal whose lock it can take (its owner is gone): it reads
//! every row back and, once they are stored, removes the directory. Rows carry their
//! `call_id`, and the store ignores a `call_id` it already has, so rows committed just
//! before a crash are not stored twice.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nix::fcntl::{Flock, FlockArg};

use crate::store::ConnectorCallRow;

/// Rows per segment before the next one is started.
const SEGMENT_ROWS: usize = 4096;
/// Longest line read back; a row is bounded far below (previews and errors are cut).
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("connector call journal {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError {
        path: path.to_owned(),
        source,
    }
}

/// This process's journal.
pub struct Journal {
    dir: PathBuf,
    state: Mutex<State>,
    _lock: Flock<File>,
}

struct State {
    seg: u64,
    file: File,
    rows_in_seg: usize,
    /// Rows written but not yet committed, per segment.
    pending: BTreeMap<u64, usize>,
}

/// A dead process's journal: its rows, and the directory to remove once they are stored.
pub struct Orphan {
    pub dir: PathBuf,
    pub rows: Vec<ConnectorCallRow>,
    _lock: Flock<File>,
}

impl Orphan {
    /// Removes the journal: its rows are stored.
    pub fn remove(self) -> Result<(), JournalError> {
        std::fs::remove_dir_all(&self.dir).map_err(at(&self.dir))
    }
}

fn segment_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:08}.jsonl"))
}

fn open_segment(dir: &Path, seg: u64) -> Result<File, JournalError> {
    let path = segment_path(dir, seg);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(at(&path))
}

/// Takes the journal's lock without waiting; `None` when a live process holds it.
fn try_lock(dir: &Path) -> Result<Option<Flock<File>>, JournalError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(at(&path))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(JournalError {
            path,
            source: e.into(),
        }),
    }
}

impl Journal {
    /// Starts a journal of this process under `root`.
    pub fn create(root: &Path) -> Result<Journal, JournalError> {
        // Made under a name that adopters skip and renamed once locked, so no other process
        // can take it for an orphan in between.
        let name = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        let (new, dir) = (root.join(format!(".new-{name}")), root.join(name));
        std::fs::create_dir_all(&new).map_err(at(&new))?;
        let lock = try_lock(&new)?.ok_or_else(|| JournalError {
            path: new.clone(),
            source: std::io::Error::other("a fresh journal is locked by another process"),
        })?;
        std::fs::rename(&new, &dir).map_err(at(&dir))?;
        let file = open_segment(&dir, 0)?;
        Ok(Journal {
            dir,
            state: Mutex::new(State {
                seg: 0,
                file,
                rows_in_seg: 0,
                pending: BTreeMap::new(),
            }),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `row` (one `write`), returning the segment it is in.
    pub fn append(&self, row: &ConnectorCallRow) -> Result<u64, JournalError> {
        let mut line = serde_json::to_vec(row).map_err(|e| JournalError {
            path: self.dir.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        let mut st = self.lock();
        if st.rows_in_seg >= SEGMENT_ROWS {
            let next = st.seg + 1;
            st.file = open_segment(&self.dir, next)?;
            st.seg = next;
            st.rows_in_seg = 0;
        }
        let seg = st.seg;
        st.file
            .write_all(&line)
            .map_err(at(&segment_path(&self.dir, seg)))?;
        st.rows_in_seg += 1;
        *st.pending.entry(seg).or_default() += 1;
        Ok(seg)
    }

    /// Notes that the rows of `segs` (one entry per row) are stored: segments left with
    /// nothing pending are removed, or truncated when current.
    pub fn committed(&self, segs: &[u64]) {
        let mut st = self.lock();
        for seg in segs {
            if let Some(n) = st.pending.get_mut(seg) {
                *n = n.saturating_sub(1);
            }
        }
        let done: Vec<u64> = st
            .pending
            .iter()
            .filter(|&(_, &n)| n == 0)
            .map(|(&s, _)| s)
            .collect();
        for seg in done {
            st.pending.remove(&seg);
            let path = segment_path(&self.dir, seg);
            let result = if seg == st.seg {
                st.rows_in_seg = 0;
                st.file.set_len(0)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = result {
                tracing::warn!(path = %path.display(), "clearing a committed journal segment: {e}");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The journals under `root` whose owner is gone (their lock is free), other than `own`.
/// A journal that cannot be read is logged and left for a later pass.
pub fn orphans(root: &Path, own: &Path) -> Vec<Orphan> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(root = %root.display(), "listing connector call journals: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let fresh = entry.file_name().to_string_lossy().starts_with(".new-");
        if dir == own || fresh || !dir.is_dir() {
            continue;
        }
        match adopt(&dir) {
            Ok(Some(orphan)) => out.push(orphan),
            Ok(None) => {}
            Err(e) => tracing::warn!("adopting a connector call journal: {e}"),
        }
    }
    out
}

fn adopt(dir: &Path) -> Result<Option<Orphan>, JournalError> {
    let Some(lock) = try_lock(dir)? else {
        return Ok(None);
    };
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(at(dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    segs.sort();
    let mut rows = Vec::new();
    for seg in segs {
        read_segment(&seg, &mut rows)?;
    }
    Ok(Some(Orphan {
        dir: dir.to_owned(),
        rows,
        _lock: lock,
    }))
}

/// Reads a segment's rows. The last line of a process killed mid-`write` may be cut short:
/// such a line (and any other that does not parse) is skipped with a warning.
fn read_segment(path: &Path, rows: &mut Vec<ConnectorCallRow>) -> Result<(), JournalError> {
    let file = File::open(path).map_err(at(path))?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(at(path))?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            tracing::warn!(path = %path.display(), "a journal line over {MAX_LINE} bytes: rest of the segment skipped");
            return Ok(());
        }
        match serde_json::from_slice::<ConnectorCallRow>(&line) {
            Ok(row) => rows.push(row),
            Err(e) => {
                tracing::warn!(path = %path.display(), "a journal line that does not parse, skipped: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: i64) -> ConnectorCallRow {
        ConnectorCallRow {
            call_id: format!("c{n}"),
            at_ms: n,
            project_id: "p".into(),
            session_id: "s".into(),
            tool: format!("t{n}"),
            status: "ok".into(),
            ..Default::default()
        }
    }

    fn segment_lens(dir: &Path) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn committed_rows_leave_the_journal_and_pending_ones_survive_their_process() {
        let root = tempfile::tempdir().unwrap();
        let journal = Journal::create(root.path()).unwrap();
        let segs: Vec<u64> = (0..SEGMENT_ROWS as i64 + 2)
            .map(|n| journal.append(&row(n)).unwrap())
            .collect();
        assert_eq!(segs[0], 0);
        assert_eq!(
            *segs.last().unwrap(),
            1,
            "a second segment past SEGMENT_ROWS"
        );

        // A live journal is nobody's orphan.
        assert!(orphans(root.path(), Path::new("/nonexistent")).is_empty());

        // The first segment committed: removed; the current one keeps its pending rows.
        journal.committed(&segs[..SEGMENT_ROWS]);
        let lens = segment_lens(journal.dir());
        assert_eq!(lens.len(), 1, "{lens:?}");
        assert!(lens[0].1 > 0);
        journal.committed(&segs[SEGMENT_ROWS..SEGMENT_ROWS + 1]);
        assert!(
            segment_lens(journal.dir())[0].1 > 0,
            "one row still pending"
        );
        journal.committed(&segs[SEGMENT_ROWS + 1..]);
        assert_eq!(
            segment_lens(journal.dir())[0].1,
            0,
            "truncated, not removed"
        );

        // Rows appended after a truncation land at the start of the file.
        journal.append(&row(7)).unwrap();
        journal.append(&row(8)).unwrap();
        let dir = journal.dir().to_owned();
        // A process killed in the middle of a write leaves half a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(segment_path(&dir, 1))
            .unwrap()
            .write_all(b"{\"call_id\":\"c9\",\"at_")
            .unwrap();
        drop(journal);

        let found = orphans(root.path(), Path::new("/nonexistent"));
        assert_eq!(found.len(), 1);
        let ids: Vec<&str> = found[0].rows.iter().map(|r| r.call_id.as_str()).collect();
        assert_eq!(ids, ["c7", "c8"]);
        assert_eq!(found[0].rows[1], row(8));
        // While one process holds an orphan, no other takes it.
        assert!(orphans(root.path(), Path::new("/nonexistent")).is_empty());
        for orphan in found {
            orphan.remove().unwrap();
        }
        assert!(!dir.exists());
        assert!(orphans(root.path(), Path::new("/nonexistent")).is_empty());
    }
}
