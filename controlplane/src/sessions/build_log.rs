//! Lines the control plane writes into a session's records before its sandbox boots (kind
//! `log`, stream `build`): the snapshot build's output, and what the provider cannot honour
//! of the template. They take the seqs after the session's `acked_seq`; the agent, which
//! starts numbering after the `acked_seq` it is told at bootstrap, continues from there.

use std::sync::Arc;
use std::time::Duration;

use kortix_proto::v1::{LogLine, LogStream, Record, record::Body};
use tokio::sync::mpsc;

use super::{SessionError, Sessions, now_ms, records};
use crate::sandbox::BuildLog;

/// Lines waiting to be stored; a build that outpaces the store loses lines (counted, and the
/// count is written), never memory.
const QUEUE: usize = 4096;
/// Lines per stored batch.
const BATCH: usize = 256;
/// How long a line may wait for more to share its batch.
const LINGER: Duration = Duration::from_millis(200);

impl Sessions {
    /// Appends `lines` to the session's records as `build` log lines.
    pub async fn append_build_log(&self, id: &str, lines: &[String]) -> Result<(), SessionError> {
        if lines.is_empty() {
            return Ok(());
        }
        let session = self.store.get_session(id).await?;
        let first = u64::try_from(session.acked_seq).unwrap_or(0) + 1;
        let ts = now_ms();
        let batch: Vec<Record> = lines
            .iter()
            .zip(first..)
            .map(|(line, seq)| Record {
                seq,
                ts_unix_ms: ts,
                body: Some(Body::Log(LogLine {
                    stream: LogStream::Build as i32,
                    line: line.clone(),
                })),
            })
            .collect();
        let rows = records::to_rows(&batch)
            .map_err(|e| SessionError::Internal(format!("session {id}: build log: {e}")))?;
        let acked = self.store.insert_records(id, &rows).await?;
        self.hub
            .publish(id, u64::try_from(acked).unwrap_or(0), &batch);
        Ok(())
    }

    /// A [`BuildLog`] that stores each line in the session's records, in batches, from a
    /// task of its own; the task ends when the returned log and its clones are dropped.
    pub(crate) fn build_log_for(&self, id: &str) -> (BuildLog, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let this = self.clone();
        let (sid, lost) = (id.to_owned(), dropped.clone());
        let writer = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                let Some(line) = rx.recv().await else { break };
                batch.push(line);
                let linger = tokio::time::sleep(LINGER);
                tokio::pin!(linger);
                while batch.len() < BATCH {
                    tokio::select! {
                        line = rx.recv() => match line {
                            Some(line) => batch.push(line),
                            None => break,
                        },
                        _ = &mut linger => break,
                    }
                }
                let n = lost.swap(0, std::sync::atomic::Ordering::Relaxed);
                if n > 0 {
                    batch.push(format!(
                        "({n} build lines were not kept: the store fell behind)"
                    ));
                }
                if let Err(e) = this.append_build_log(&sid, &batch).await {
                    tracing::warn!(session = %sid, error = %e, "storing build log lines");
                }
                batch.clear();
            }
        });
        let log: BuildLog = Arc::new(move |line: &str| {
            if tx.try_send(line.to_owned()).is_err() {
                dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        (log, writer)
    }
}
