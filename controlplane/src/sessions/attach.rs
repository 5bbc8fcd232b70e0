//! Attach: a session's stored records from a seq, then live ones.
//!
//! The viewer task reads by seq: from the session's in-memory tail when the tail holds the
//! next seq it needs, otherwise from the store. Both hold only durable records and both are
//! read from `next`, so records written while the viewer connects appear exactly once, and
//! live viewers of a busy session cost no store queries. Each viewer has its own bounded
//! queue; one that does not drain it in time is ended with RESOURCE_EXHAUSTED (and the seq to
//! resume from) instead of buffering without bound or slowing anybody else.

use super::{Sessions, records};
use kortix_proto::v1::Record;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

/// Records read from the store per query.
const PAGE: u32 = 512;
/// Records buffered per viewer.
pub const VIEWER_QUEUE: usize = 1024;
/// A viewer that cannot take a record for this long is cut off.
pub const SLOW_VIEWER_TIMEOUT: Duration = Duration::from_secs(10);
/// While records keep coming, the session's state is re-read at most this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);

pub type AttachStream = tokio_stream::wrappers::ReceiverStream<Result<Record, Status>>;

impl Sessions {
    /// Streams session `id` from `from_seq` (0 and 1 both mean the beginning). With `follow`
    /// the stream continues with live records until the session has ended and every stored
    /// record was sent.
    pub fn attach(&self, id: String, from_seq: u64, follow: bool) -> AttachStream {
        let (tx, rx) = mpsc::channel(VIEWER_QUEUE);
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(status) = this.pump(&id, from_seq.max(1), follow, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    async fn pump(
        &self,
        id: &str,
        mut next: u64,
        follow: bool,
        tx: &mpsc::Sender<Result<Record, Status>>,
    ) -> Result<(), Status> {
        // Re-check the store this often even without wake-ups (see `SessionConfig`).
        let poll = self.config.store_poll;
        let mut wake = self.hub.subscribe(id);
        let tail = self.hub.tail(id);
        let closed = self.hub.closed();
        tokio::pin!(closed);
        let mut seen = *wake.borrow_and_update();
        let mut check_status = true;
        let mut status_read = tokio::time::Instant::now();
        let mut ended = false;
        loop {
            // Read the state before the records: if the session had ended by then, the
            // records read afterwards are complete. New records alone do not end a session,
            // so wake-ups for them skip this query.
            if check_status {
                status_read = tokio::time::Instant::now();
                ended = self
                    .store
                    .get_session(id)
                    .await
                    .map_err(crate::error::DomainError::from)?
                    .status
                    .is_terminal();
            }
            loop {
                let cached = tail.lock().expect("tail lock").read(next, PAGE as usize);
                let (page, full) = match cached {
                    Some(records) if !records.is_empty() => (records, true),
                    // Caught up with what this replica published. Woken for new records,
                    // that is everything; on a poll or state change, ask the store too, in
                    // case the agent now streams to another replica.
                    Some(_) if !check_status => break,
                    _ => {
                        let rows = self
                            .store
                            .read_records(id, next as i64, PAGE)
                            .await
                            .map_err(crate::error::DomainError::from)?;
                        let full = rows.len() as u32 == PAGE;
                        let records = rows
                            .iter()
                            .map(records::from_row)
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| Status::data_loss(e.to_string()))?;
                        (records, full)
                    }
                };
                for record in page {
                    let seq = record.seq;
                    // A viewer keeping up has room: skip arming a timer per record (with
                    // 100 viewers the timers were a tenth of the control plane's CPU).
                    let record = match tx.try_send(Ok(record)) {
                        Ok(()) => {
                            next = seq + 1;
                            continue;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                        Err(mpsc::error::TrySendError::Full(record)) => record,
                    };
                    match tx.send_timeout(record, SLOW_VIEWER_TIMEOUT).await {
                        Ok(()) => next = seq + 1,
                        Err(mpsc::error::SendTimeoutError::Closed(_)) => return Ok(()),
                        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                            crate::metrics::metrics().viewers_cut_off.inc();
                            return Err(Status::resource_exhausted(format!(
                                "viewer too slow: not reading for {} s; reattach from seq {next}",
                                SLOW_VIEWER_TIMEOUT.as_secs()
                            )));
                        }
                    }
                }
                if !full {
                    break;
                }
            }
            if !follow || ended {
                return Ok(());
            }
            tokio::select! {
                changed = wake.changed() => {
                    if changed.is_err() {
                        // The hub forgot the session (it cannot while we watch); poll.
                        tokio::time::sleep(poll).await;
                    }
                    let now = *wake.borrow_and_update();
                    // Unchanged means a bump: the session changed state. A bump coalesced
                    // with new records is caught by the periodic check.
                    check_status = now == seen || status_read.elapsed() >= STATUS_EVERY;
                    seen = now;
                }
                _ = tokio::time::sleep(poll) => check_status = true,
                _ = tx.closed() => return Ok(()),
                _ = &mut closed => {
                    return Err(Status::unavailable(format!(
                        "control plane shutting down; reattach from seq {next}"
                    )));
                }
            }
        }
    }
}
