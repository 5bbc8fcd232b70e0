//! SQLite's WAL checkpoints, off the writers' path.
//!
//! By default SQLite checkpoints inside the commit that pushes the WAL past 1,000 pages: that
//! commit copies megabytes into the database file and fsyncs it before it returns, so every
//! few hundred milliseconds of record ingest one group commit — and every ack waiting on it —
//! took several times longer than the rest. The store turns automatic checkpoints off and
//! this task copies the WAL back on its own connection instead, with `PASSIVE` checkpoints
//! that never wait for or block a writer.
//!
//! Under constant writes a passive checkpoint never catches up with the WAL's end — frames
//! keep arriving while it copies — and SQLite only rewinds a WAL whose every frame has been
//! copied. A `RESTART` checkpoint would force that, but it holds the write lock while it waits
//! for readers and for its busy handler: measured at 120,000 records/s it stalled every
//! writer for 1–2.3 s. Instead, once the WAL is past [`REWIND_ABOVE_PAGES`], this task raises
//! a [`RewindFlag`]; the record writer, between two of its own transactions, runs one more
//! passive checkpoint. Nothing can write during it, so it copies the last few frames this
//! task left behind and completes, and the next write transaction rewinds the WAL.
//!
//! SQLite fsyncs the database file only when a checkpoint completes, so every page the
//! incomplete passes copied would still be dirty in the page cache when the writer's pass
//! runs, and its fsync would write them all back while acks wait (measured: 70–90 ms for a
//! 256 MiB WAL). This task flushes the database file after each of its passes instead.

use sqlx::pool::CloseEvent;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the WAL is copied back into the database file.
const INTERVAL: Duration = Duration::from_millis(250);
/// WAL pages (4 KiB each) above which the WAL should be rewound (64 MiB).
const REWIND_ABOVE_PAGES: i64 = 16_384;
/// Pause after a failed checkpoint connection before trying again.
const RETRY: Duration = Duration::from_secs(5);
/// A checkpoint under heavy ingest can take seconds without harming anyone: it only reads
/// the WAL and writes the database file. sqlx's one-second slow-statement warning would
/// only be noise.
const SLOW: Duration = Duration::from_secs(30);

/// Raised by the checkpointer when the WAL has grown past [`REWIND_ABOVE_PAGES`]; taken by
/// the writer that finishes the checkpoint. Cheap to clone; clones share the flag.
#[derive(Clone, Debug, Default)]
pub(super) struct RewindFlag(Arc<AtomicBool>);

impl RewindFlag {
    pub(super) fn raise(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// True once per raise.
    pub(super) fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// `PRAGMA wal_checkpoint` answer: (busy, WAL pages, pages copied).
type Progress = (i64, i64, i64);

/// Checkpoints the database at `path` (which `connect` opens) until `closed` (the store's
/// pool closing).
pub(super) fn spawn(
    connect: SqliteConnectOptions,
    path: PathBuf,
    closed: CloseEvent,
    rewind: RewindFlag,
) {
    let connect = connect.log_slow_statements(log::LevelFilter::Warn, SLOW);
    tokio::spawn(async move {
        tokio::pin!(closed);
        let mut conn: Option<SqliteConnection> = None;
        let mut db_file: Option<Arc<File>> = None;
        // The last (WAL pages, pages copied): "copied" counts every frame copied since the
        // WAL was last rewound, so a repeat means this pass copied nothing.
        let mut last = (0, 0);
        loop {
            tokio::select! {
                _ = &mut closed => break,
                _ = tokio::time::sleep(INTERVAL) => {}
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match connect.connect().await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the SQLite checkpoint connection");
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                },
            };
            let started = Instant::now();
            match run(c, Mode::Passive).await {
                Ok((_, wal_pages, copied)) => {
                    tracing::trace!(wal_pages, copied, elapsed = ?started.elapsed(), "WAL checkpoint");
                    if copied > 0 && (wal_pages, copied) != last {
                        flush(&path, &mut db_file).await;
                    }
                    last = (wal_pages, copied);
                    if wal_pages > REWIND_ABOVE_PAGES {
                        rewind.raise();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SQLite WAL checkpoint failed; retrying");
                    conn = None;
                }
            }
        }
        if let Some(mut c) = conn {
            // Leave a short WAL behind for the next start; nothing else writes any more.
            let _ = run(&mut c, Mode::Truncate).await;
            let _ = c.close().await;
        }
    });
}

/// Writes the database file's dirty pages back (see the module comment). Durability does
/// not depend on it — the WAL holds every committed frame until a complete checkpoint has
/// synced the file — so a failure only costs the writer a longer pause later.
async fn flush(path: &std::path::Path, file: &mut Option<Arc<File>>) {
    let f = match file {
        Some(f) => f.clone(),
        None => match File::open(path) {
            Ok(f) => file.insert(Arc::new(f)).clone(),
            Err(e) => {
                tracing::debug!(error = %e, path = %path.display(), "cannot open the database file to flush it");
                return;
            }
        },
    };
    match tokio::task::spawn_blocking(move || f.sync_data()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, path = %path.display(), "flushing the database file failed");
            *file = None;
        }
        Err(e) => tracing::debug!(error = %e, "the database flush task failed"),
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Passive,
    Truncate,
}

async fn run(conn: &mut SqliteConnection, mode: Mode) -> Result<Progress, sqlx::Error> {
    // sqlx only takes static SQL text here, hence one literal per mode.
    let sql = match mode {
        Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Mode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    sqlx::query_as(sql).fetch_one(conn).await
}
