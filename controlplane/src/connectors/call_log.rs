//! The call log's writer, off the call path. A call's row is appended to this process's
//! journal ([`super::call_journal`]) and queued; one task writes what is queued in batches,
//! one transaction each (on SQLite with `synchronous=FULL`, one fsync per batch instead of
//! one per call). The queue is bounded: when it is full a call waits for room, so no row is
//! dropped for lack of it.
//!
//! What can be lost: nothing a crash of the process interrupts — the rows still queued are
//! in the journal, and the next process to start on this data directory (or a running one,
//! within [`ADOPT_EVERY`]) stores them. A batch the store refuses after [`ATTEMPTS`] tries
//! is kept (up to [`KEPT`] rows) and tried again every [`ADOPT_EVERY`]; its rows stay in
//! the journal meanwhile. Without a journal (none configured, or it could not be made)
//! a crash loses the rows still queued, as the log says at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::call_journal::{self, Journal};
use crate::backoff::{Backoff, Jitter};
use crate::store::{ConnectorCallRow, Store};

/// Rows waiting to be written.
pub const QUEUE: usize = 4096;
/// Most rows in one transaction.
const BATCH: usize = 256;
/// Tries of one batch before its rows are kept for a later pass.
const ATTEMPTS: u32 = 4;
/// Rows of refused batches kept in memory for a later pass; past this they wait in the
/// journal for the next process.
const KEPT: usize = 65_536;
/// How often refused rows are tried again and dead processes' journals looked for.
pub const ADOPT_EVERY: Duration = Duration::from_secs(60);

enum Msg {
    /// A row and the journal segment it is in (`None`: not journaled).
    Row(Box<ConnectorCallRow>, Option<u64>),
    /// Answered once every row queued before it is written (or kept for later).
    Flush(oneshot::Sender<()>),
    /// Write what is queued, take no more, answer, end.
    Close(oneshot::Sender<()>),
}

pub struct CallLog {
    tx: mpsc::Sender<Msg>,
    store: Store,
    journal: Option<Arc<Journal>>,
}

impl CallLog {
    /// Starts the writer on the current runtime, journaling under `journal_root` when given.
    /// Journals there of processes that are gone are stored first.
    pub fn start(store: Store, journal_root: Option<PathBuf>) -> CallLog {
        let journal = journal_root
            .as_deref()
            .and_then(|root| match Journal::create(root) {
                Ok(j) => Some(Arc::new(j)),
                Err(e) => {
                    tracing::error!(
                        "{e}: connector calls are logged without a journal, so a crash loses \
                     the rows still queued"
                    );
                    None
                }
            });
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            store: store.clone(),
            journal: journal.clone(),
            kept: Rows::default(),
        };
        tokio::spawn(writer.run(rx));
        CallLog { tx, store, journal }
    }

    /// Journals and queues `row`, waiting for room when the queue is full; written
    /// directly once the writer has closed.
    pub async fn append(&self, mut row: ConnectorCallRow) {
        if row.call_id.is_empty() {
            row.call_id = uuid::Uuid::new_v4().simple().to_string();
        }
        let seg = self.journal.as_ref().and_then(|j| match j.append(&row) {
            Ok(seg) => Some(seg),
            Err(e) => {
                tracing::warn!("{e}: this row is queued without it");
                None
            }
        });
        if let Err(mpsc::error::SendError(Msg::Row(row, seg))) =
            self.tx.send(Msg::Row(Box::new(row), seg)).await
            && write(&self.store, std::slice::from_ref(&row)).await
        {
            committed(self.journal.as_deref(), &[seg]);
        }
    }

    /// Returns once every row queued so far is written: readers of the log on this replica
    /// see their own calls.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Writes what is queued and ends the writer; later rows are written directly.
    pub async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// Tells the journal that the rows of `segs` (one entry per row) are stored.
fn committed(journal: Option<&Journal>, segs: &[Option<u64>]) {
    if let Some(journal) = journal {
        let segs: Vec<u64> = segs.iter().flatten().copied().collect();
        journal.committed(&segs);
    }
}

/// Rows and, row for row, their journal segments.
#[derive(Default)]
struct Rows {
    rows: Vec<ConnectorCallRow>,
    segs: Vec<Option<u64>>,
}

struct Writer {
    store: Store,
    journal: Option<Arc<Journal>>,
    /// Rows of batches the store refused, for the next pass.
    kept: Rows,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        self.adopt_orphans().await;
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + ADOPT_EVERY, ADOPT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closed = None;
        loop {
            let first = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => msg,
                    None => break,
                },
                _ = tick.tick() => {
                    self.retry_kept().await;
                    self.adopt_orphans().await;
                    continue;
                }
            };
            let (mut rows, mut acks) = (Rows::default(), Vec::new());
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Row(row, seg) => {
                        rows.rows.push(*row);
                        rows.segs.push(seg);
                    }
                    Msg::Flush(ack) => acks.push(ack),
                    Msg::Close(ack) => {
                        // Senders get their rows back from now on; what is queued still comes.
                        rx.close();
                        closed = Some(ack);
                    }
                }
                next = if rows.rows.len() < BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            self.store_rows(rows).await;
            for ack in acks {
                let _ = ack.send(());
            }
        }
        if let Some(ack) = closed {
            let _ = ack.send(());
        }
    }

    async fn store_rows(&mut self, batch: Rows) {
        if write(&self.store, &batch.rows).await {
            committed(self.journal.as_deref(), &batch.segs);
            return;
        }
        let room = KEPT.saturating_sub(self.kept.rows.len());
        if batch.rows.len() > room {
            tracing::error!(
                rows = batch.rows.len() - room,
                "connector calls not stored and over the {KEPT} kept for a retry: they \
                 wait in the journal for the next start"
            );
        }
        self.kept.rows.extend(batch.rows.into_iter().take(room));
        self.kept.segs.extend(batch.segs.into_iter().take(room));
    }

    async fn retry_kept(&mut self) {
        let kept = std::mem::take(&mut self.kept);
        for (rows, segs) in kept.rows.chunks(BATCH).zip(kept.segs.chunks(BATCH)) {
            if write(&self.store, rows).await {
                committed(self.journal.as_deref(), segs);
            } else {
                self.kept.rows.extend_from_slice(rows);
                self.kept.segs.extend_from_slice(segs);
            }
        }
    }

    /// Stores the rows of dead processes' journals and removes those journals.
    async fn adopt_orphans(&self) {
        // Every process journals in a directory of its own under the same root.
        let Some(own) = self.journal.as_ref().map(|j| j.dir().to_owned()) else {
            return;
        };
        let Some(root) = own.parent().map(Path::to_owned) else {
            return;
        };
        let found = tokio::task::spawn_blocking(move || call_journal::orphans(&root, &own))
            .await
            .unwrap_or_default();
        for orphan in found {
            let mut all = true;
            for chunk in orphan.rows.chunks(BATCH) {
                all &= write(&self.store, chunk).await;
            }
            if !all {
                // Left locked until this returns, then free for the next pass.
                continue;
            }
            tracing::info!(
                rows = orphan.rows.len(),
                dir = %orphan.dir.display(),
                "stored the connector calls of a process that ended without storing them"
            );
            if let Err(e) = orphan.remove() {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Writes `rows` in one transaction, retrying with backoff and jitter; false when it still
/// fails (logged).
async fn write(store: &Store, rows: &[ConnectorCallRow]) -> bool {
    if rows.is_empty() {
        return true;
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store.append_connector_calls(rows).await {
            Ok(()) => return true,
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(rows = rows.len(), attempt, "logging connector calls: {e}");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => {
                let sessions: std::collections::BTreeSet<&str> =
                    rows.iter().map(|r| r.session_id.as_str()).collect();
                tracing::error!(
                    rows = rows.len(),
                    ?sessions,
                    "connector calls not logged after {ATTEMPTS} tries: {e}"
                );
                return false;
            }
        }
    }
}

/// 50 ms doubling per try up to 3.2 s, plus up to as much again.
fn backoff(attempt: u32) -> Duration {
    const BACKOFF: Backoff = Backoff::new(
        Duration::from_millis(50),
        Duration::from_millis(3200),
        Jitter::Over(1.0),
    );
    BACKOFF.pause(attempt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    fn row(n: i64) -> ConnectorCallRow {
        ConnectorCallRow {
            at_ms: n,
            project_id: "p".into(),
            session_id: "s".into(),
            connector: "c".into(),
            tool: format!("t{n}"),
            status: "ok".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn queued_rows_are_written_by_flush_and_close() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("k.db"), StoreOptions::default())
            .await
            .unwrap();
        let log = CallLog::start(store.clone(), None);
        for n in 0..600 {
            log.append(row(n)).await;
        }
        log.flush().await;
        assert_eq!(
            store
                .list_connector_calls("p", "s", 1000)
                .await
                .unwrap()
                .len(),
            600
        );
        log.append(row(600)).await;
        log.close().await;
        // After the writer closed, rows go straight to the store.
        log.append(row(601)).await;
        let all = store.list_connector_calls("p", "s", 1000).await.unwrap();
        assert_eq!(all.len(), 602);
        assert_eq!(all[0].tool, "t601", "newest first");
    }

    #[tokio::test]
    async fn a_dead_process_journal_is_stored_once_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("journal");
        let store = Store::open_sqlite(&dir.path().join("k.db"), StoreOptions::default())
            .await
            .unwrap();

        // A process journals calls and dies before its writer stores them; one of them
        // had been stored (a commit that raced the crash).
        let dead = Journal::create(&root).unwrap();
        let rows: Vec<ConnectorCallRow> = (0..300)
            .map(|n| ConnectorCallRow {
                call_id: format!("dead-{n}"),
                ..row(n)
            })
            .collect();
        for r in &rows {
            dead.append(r).unwrap();
        }
        store.append_connector_calls(&rows[..1]).await.unwrap();
        let dead_dir = dead.dir().to_owned();
        drop(dead);

        // The next process stores them before anything it queues, once each.
        let log = CallLog::start(store.clone(), Some(root.clone()));
        log.append(row(1000)).await;
        log.flush().await;
        let all = store.list_connector_calls("p", "s", 0).await.unwrap();
        assert_eq!(all.len(), 301, "300 adopted (one already stored) + 1 new");
        assert!(!dead_dir.exists(), "the adopted journal is removed");

        // Its own journal is emptied as its rows are stored.
        let own: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().collect();
        assert_eq!(own.len(), 1);
        let segment = own[0].path().join("00000000.jsonl");
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), 0);
        log.close().await;
    }
}
