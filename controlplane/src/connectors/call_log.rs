//! The call log's writer, off the call path. A call's row is queued; one task writes what is
//! queued in batches, one transaction each (on SQLite with `synchronous=FULL`, one fsync per
//! batch instead of one per call). The queue is bounded: when it is full a call waits for
//! room, so no row is dropped for lack of it.
//!
//! What can be lost: a clean shutdown writes everything queued before the writer ends, and
//! rows of calls still finishing after that are written directly. A crash of the process
//! loses the rows still queued — at most [`QUEUE`], in practice the calls of the last few
//! milliseconds. The session's own `connector_call` records travel through the agent and
//! are not affected.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{ConnectorCallRow, Store};

/// Rows waiting to be written.
pub const QUEUE: usize = 4096;
/// Most rows in one transaction.
const BATCH: usize = 256;
/// Tries of one batch before its rows are given up (and that is logged as an error).
const ATTEMPTS: u32 = 4;

enum Msg {
    Row(Box<ConnectorCallRow>),
    /// Answered once every row queued before it is written (or given up).
    Flush(oneshot::Sender<()>),
    /// Write what is queued, take no more, answer, end.
    Close(oneshot::Sender<()>),
}

pub struct CallLog {
    tx: mpsc::Sender<Msg>,
    store: Store,
}

impl CallLog {
    /// Starts the writer on the current runtime.
    pub fn start(store: Store) -> CallLog {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store.clone(), rx));
        CallLog { tx, store }
    }

    /// Queues `row`, waiting for room when the queue is full; written directly once the
    /// writer has closed.
    pub async fn append(&self, row: ConnectorCallRow) {
        if let Err(mpsc::error::SendError(Msg::Row(row))) =
            self.tx.send(Msg::Row(Box::new(row))).await
        {
            write(&self.store, &[*row]).await;
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

async fn run(store: Store, mut rx: mpsc::Receiver<Msg>) {
    let mut closed = None;
    while let Some(first) = rx.recv().await {
        let (mut rows, mut acks) = (Vec::new(), Vec::new());
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Row(r) => rows.push(*r),
                Msg::Flush(ack) => acks.push(ack),
                Msg::Close(ack) => {
                    // Senders get their rows back from now on; what is queued still comes.
                    rx.close();
                    closed = Some(ack);
                }
            }
            next = if rows.len() < BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        write(&store, &rows).await;
        for ack in acks {
            let _ = ack.send(());
        }
    }
    if let Some(ack) = closed {
        let _ = ack.send(());
    }
}

/// Writes `rows` in one transaction, retrying with backoff and jitter; a batch that still
/// fails is logged, not kept (the calls happened either way).
async fn write(store: &Store, rows: &[ConnectorCallRow]) {
    if rows.is_empty() {
        return;
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store.append_connector_calls(rows).await {
            Ok(()) => return,
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
                return;
            }
        }
    }
}

/// 50 ms doubling per try, with up to as much again of jitter.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(50).saturating_mul(1 << attempt.min(6));
    base + base.mul_f64(rand::random::<f64>())
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
        let log = CallLog::start(store.clone());
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
}
