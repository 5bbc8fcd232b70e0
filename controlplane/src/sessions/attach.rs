//! Attach: a session's stored records from a seq, then live ones.
//!
//! The viewer task reads only from the store, by seq, and uses the hub purely as a wake-up.
//! History and live tail are therefore the same query, so records written while the viewer
//! connects appear exactly once. Each viewer has its own bounded queue; one that does not
//! drain it in time is ended with RESOURCE_EXHAUSTED (and the seq to resume from) instead of
//! buffering without bound or slowing anybody else.

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
/// Re-check the store this often even without wake-ups: agents connected to another replica
/// without LISTEN/NOTIFY, and sessions ended elsewhere.
const POLL: Duration = Duration::from_millis(500);

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
        let mut wake = self.hub.subscribe(id);
        let closed = self.hub.closed();
        tokio::pin!(closed);
        loop {
            // Read the state before the records: if the session had ended by then, the
            // records read afterwards are complete.
            let ended = self
                .store
                .get_session(id)
                .await
                .map_err(|e| Status::not_found(e.to_string()))?
                .status
                .is_terminal();
            wake.borrow_and_update();
            loop {
                let rows = self
                    .store
                    .read_records(id, next as i64, PAGE)
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?;
                let full = rows.len() as u32 == PAGE;
                for row in &rows {
                    let record =
                        records::from_row(row).map_err(|e| Status::data_loss(e.to_string()))?;
                    let seq = record.seq;
                    match tx.send_timeout(Ok(record), SLOW_VIEWER_TIMEOUT).await {
                        Ok(()) => next = seq + 1,
                        Err(mpsc::error::SendTimeoutError::Closed(_)) => return Ok(()),
                        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
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
                _ = wake.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
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
