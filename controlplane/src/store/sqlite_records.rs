//! SQLite's record writes: one connection of their own, driven synchronously.
//!
//! Records are the one write path that runs at tens of thousands of rows a second. Through
//! sqlx every statement is a message to the connection's worker thread and back, and every
//! row's five values are bound through its argument buffers; a profile of 100 sessions
//! streaming put a group commit at ≈12 µs per row, most of it hand-offs between threads
//! rather than SQLite. Here one transaction runs start to end on the calling thread, with
//! cached prepared statements and one `step` per row.
//!
//! The statements are SQLite's half of [`super::records`]'s group commit; PostgreSQL keeps
//! its own (three statements for the whole group). Both compute `acked_seq` with the same
//! SQL expression.

use super::checkpoint::RewindFlag;
use super::records::{ADVANCE_ACKED_SQLITE_SQL, contiguous_end, storing};
use super::{Error, RecordRow, Result};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const INSERT_SQL: &str = "INSERT INTO records (session_id, seq, ts_ms, kind, body)
                          VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING";
const ACKED_SQL: &str = "SELECT acked_seq FROM sessions WHERE id = ?1";

/// The record-writing connection. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RecordWriter {
    conn: Arc<Mutex<Connection>>,
    rewind: RewindFlag,
}

impl std::fmt::Debug for RecordWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordWriter")
    }
}

impl RecordWriter {
    /// Opens the (already migrated) database at `path` with the pool's durability settings.
    pub(super) fn open(path: &Path, sync_full: bool, busy_timeout: Duration) -> Result<Self> {
        let ctx = |source| Error::Sqlite {
            context: format!("opening the record writer on {}", path.display()),
            source,
        };
        let conn = Connection::open(path).map_err(ctx)?;
        conn.busy_timeout(busy_timeout).map_err(ctx)?;
        let synchronous = if sync_full { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA foreign_keys = ON;"
        ))
        .map_err(ctx)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            rewind: RewindFlag::default(),
        })
    }

    /// The flag the checkpointer raises when this writer should finish a checkpoint.
    pub(super) fn rewind_flag(&self) -> RewindFlag {
        self.rewind.clone()
    }

    /// Stores the batches (already validated, in the order the caller wants them written) in
    /// one transaction. Per batch: the session's new `acked_seq`, or `None` for an unknown
    /// session. Blocks the thread; see [`run_blocking`].
    pub(super) fn insert(&self, batches: &[(&str, &[RecordRow])]) -> Result<Vec<Option<i64>>> {
        // A panic while holding the lock leaves no half-done transaction behind (dropping
        // the transaction rolls it back), so a poisoned lock is still a usable connection.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if self.rewind.take() {
            finish_checkpoint(&conn);
        }
        insert(&mut conn, batches).map_err(|source| Error::Sqlite {
            context: storing(batches),
            source,
        })
    }
}

/// Copies what the background checkpointer left in the WAL, so that the next write
/// transaction rewinds it (see [`super::checkpoint`]). No write can land while this writer
/// holds its lock (other writers are rare and short), so the passive checkpoint completes.
/// A failure only postpones the rewind: the checkpointer raises the flag again on its next
/// pass while the WAL is still long.
fn finish_checkpoint(conn: &Connection) {
    let started = std::time::Instant::now();
    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match done {
        Ok((0, wal_pages, copied)) if wal_pages == copied => {
            tracing::debug!(wal_pages, elapsed = ?started.elapsed(), "WAL fully checkpointed; the next write rewinds it");
        }
        // Busy: the background checkpoint was running. Or a reader still needs older frames.
        Ok((busy, wal_pages, copied)) => {
            tracing::debug!(
                busy,
                wal_pages,
                copied,
                "WAL checkpoint incomplete; the WAL stays long for now"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "SQLite WAL checkpoint on the record writer failed");
        }
    }
}

fn insert(
    conn: &mut Connection,
    batches: &[(&str, &[RecordRow])],
) -> rusqlite::Result<Vec<Option<i64>>> {
    // IMMEDIATE: take the write lock now, so no other writer slips in between the read of
    // acked_seq and the writes that depend on it.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut acked = Vec::with_capacity(batches.len());
    {
        let mut read_acked = tx.prepare_cached(ACKED_SQL)?;
        let mut insert = tx.prepare_cached(INSERT_SQL)?;
        let mut advance = tx.prepare_cached(ADVANCE_ACKED_SQLITE_SQL)?;
        for (session_id, records) in batches {
            let Some(prev) = read_acked
                .query_row([session_id], |r| r.get::<_, i64>(0))
                .optional()?
            else {
                acked.push(None);
                continue;
            };
            for r in *records {
                insert.execute(params![session_id, r.seq, r.ts_ms, r.kind, r.body])?;
            }
            let known = contiguous_end(prev, records.iter().map(|r| r.seq));
            let seq = advance.query_row(params![session_id, known], |r| r.get::<_, i64>(0))?;
            acked.push(Some(seq));
        }
    }
    tx.commit()?;
    Ok(acked)
}

/// Runs blocking store work from async code. On a multi-threaded runtime the worker hands
/// its other tasks to another thread first; a current-thread runtime (tests) has no other
/// thread to hand them to, and runs it in place.
pub(super) fn run_blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
